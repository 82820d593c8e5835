//! `kmsfs kms <Action> [--Param value …]`: the KMS actions from the command line,
//! with `tccli kms`'s action and parameter names and its JSON output.

/// Runs one `kmsfs kms` invocation; returns the process exit code.
pub fn run(_kms: Option<&str>, args: &[String]) -> anyhow::Result<i32> {
    if args.first().map(String::as_str) == Some("serve") {
        return crate::serve_cli::run(_kms, &args[1..]);
    }
    anyhow::bail!("kmsfs kms: not built yet")
}

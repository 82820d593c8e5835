//! `kmsfs kms serve --listen ADDR`: the KMS as a Tencent Cloud API 3.0 HTTP server.

/// Runs the server until SIGTERM; returns the process exit code.
pub fn run(_kms: Option<&str>, _args: &[String]) -> anyhow::Result<i32> {
    anyhow::bail!("kmsfs kms serve: not built yet")
}

//! The command line: every subcommand's arguments and its run, and `mount.fuse.kmsfs`.
//! The only layer where `anyhow` reports and exit codes are made; it calls the tools,
//! the daemon and the volume below it.

pub mod audit;
pub mod fs;
pub mod kms;
pub mod migrate;
pub mod mount;
pub mod mount_helper;
pub mod serve;

/// The arguments of a `kmsfs kms` subcommand (`name`, e.g. "kmsfs kms serve"), parsed
/// by clap; or, where clap printed help or an error instead, the exit code: --help and
/// --version print and succeed, errors print usage and fail.
pub(crate) fn parse_subcommand<T: clap::Parser>(name: &str, args: &[String]) -> Result<T, i32> {
    T::try_parse_from(std::iter::once(name.to_owned()).chain(args.iter().cloned())).map_err(|e| {
        let code = if e.use_stderr() { 2 } else { 0 };
        let _ = e.print();
        code
    })
}

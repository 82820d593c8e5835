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

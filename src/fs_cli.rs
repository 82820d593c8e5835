//! `kmsfs init | mount | umount | stats`: the filesystem commands.

use clap::Args;

/// `kmsfs init BACKING`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The backing directory that will hold the encrypted files.
    pub backing: std::path::PathBuf,
}

/// `kmsfs mount BACKING MOUNTPOINT`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// The backing directory.
    pub backing: std::path::PathBuf,
    /// Where the plaintext view appears.
    pub mountpoint: std::path::PathBuf,
}

/// `kmsfs umount MOUNTPOINT`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mountpoint.
    pub mountpoint: std::path::PathBuf,
}

/// `kmsfs stats MOUNTPOINT`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The mountpoint.
    pub mountpoint: std::path::PathBuf,
}

/// Runs `kmsfs init`.
pub fn init(_kms: Option<&str>, _a: InitArgs) -> anyhow::Result<i32> {
    anyhow::bail!("kmsfs init: not built yet")
}

/// Runs `kmsfs mount`.
pub fn mount(_kms: Option<&str>, _a: MountArgs) -> anyhow::Result<i32> {
    anyhow::bail!("kmsfs mount: not built yet")
}

/// Runs `kmsfs umount`.
pub fn umount(_a: UmountArgs) -> anyhow::Result<i32> {
    anyhow::bail!("kmsfs umount: not built yet")
}

/// Runs `kmsfs stats`.
pub fn stats(_a: StatsArgs) -> anyhow::Result<i32> {
    anyhow::bail!("kmsfs stats: not built yet")
}

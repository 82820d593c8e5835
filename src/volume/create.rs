//! Making a volume: what a new volume is made with (the flags `kmsfs init`, `mount --init`
//! and `kmsfs encrypt` share), the KMS connection, and the checks before a directory
//! becomes a volume.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use crate::format::{DEFAULT_BLOCK_SIZE, DEFAULT_HEADER_SIZE};
use crate::volume::{self, DekPolicy, InitOptions, PolicyMode};

/// Options for making a volume.
#[derive(Debug, Args, Clone)]
pub struct InitFlags {
    /// Use this existing CMK (key id or alias/NAME) instead of creating one.
    #[arg(long, value_name = "KEY_ID|alias/NAME")]
    pub key: Option<String>,
    /// How new files get data keys: one DEK shared by many files (rotated by age and
    /// count), or a fresh DEK per file.
    #[arg(long, value_enum, default_value = "shared")]
    pub dek_policy: PolicyMode,
    /// Shared policy: a DEK serves new files for at most this many seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    pub dek_max_age: u64,
    /// Shared policy: a DEK serves at most this many new files.
    #[arg(long, default_value_t = 100_000)]
    pub dek_max_files: u64,
    /// Encrypt file names and symlink targets too (AES-SIV, a random IV per directory),
    /// not only contents. Names up to 255 bytes, symlink targets up to 4,095 (long ones in
    /// side files). Chosen once, at init.
    #[arg(long)]
    pub encrypt_names: bool,
    /// Make blocks without the final-block flag (feature content-final-v1), as kmsfs
    /// made them before it: a file cut at a block boundary then reads as a shorter file,
    /// undetected. For a volume older kmsfs builds must read; new volumes have the flag.
    #[arg(long)]
    pub no_final_flag: bool,
}

impl InitFlags {
    pub fn options(&self) -> InitOptions {
        InitOptions {
            key: self.key.clone(),
            policy: DekPolicy {
                mode: self.dek_policy,
                max_age_secs: self.dek_max_age,
                max_files: self.dek_max_files,
            },
            block_size: DEFAULT_BLOCK_SIZE,
            header_size: DEFAULT_HEADER_SIZE,
            encrypt_names: self.encrypt_names,
            final_flag: !self.no_final_flag,
        }
    }
}

/// Connects to the KMS named by `--kms` (or its default).
pub fn connect(kms: Option<&str>) -> anyhow::Result<Arc<dyn kms_core::Kms>> {
    kms_core::connect(kms).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the KMS: {e}; pass --kms (or set $KMSFS_KMS) to a key-store \
             directory or an http(s):// URL of a running KMS server"
        )
    })
}

/// Makes `backing` (created if missing, else it must be empty) a new volume, as
/// `kmsfs init` and `kmsfs encrypt` do.
pub fn init_backing(
    k: &dyn kms_core::Kms,
    kms: Option<&str>,
    backing: &Path,
    flags: &InitFlags,
) -> anyhow::Result<volume::VolumeConfig> {
    std::fs::create_dir_all(backing).with_context(|| {
        format!(
            "cannot create {}; check the parent directory exists and is writable",
            backing.display()
        )
    })?;
    if !dir_is_empty(backing)? {
        bail!(
            "{} is not empty; a new volume needs a new or empty directory \
             (pick another path, or empty this one first)",
            backing.display()
        );
    }
    volume::init_volume(k, kms, backing, &flags.options())
}

/// Whether directory `p` has no entries.
pub fn dir_is_empty(p: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .next()
        .is_none())
}

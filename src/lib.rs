//! `kmsfs`: a transparent-encryption FUSE filesystem whose data keys come from a KMS.
//!
//! The `kmsfs` binary (src/main.rs) only parses the command line and calls into
//! these modules. They are a library so that fuzz targets and tests can reach the
//! on-disk parsers ([`format`], [`volume`]) directly; the API is not stable.
//!
//! - [`format`]: the file header and block codec.
//! - [`aead`]: the block AEAD and the small crypto helpers.
//! - [`volume`]: the volume config, its MAC and the DEK policy.
//! - [`names`]: name and symlink-target encryption (an optional volume feature).
//! - [`dek_cache`]: the cache of unwrapped data keys.
//! - [`fs_error`]: errno mapping of KMS and integrity errors.
//! - [`fsck`]: the offline volume checker; [`rewrap`]: re-wrapping every DEK under a new CMK.
//! - [`metrics`]: the daemon's counters behind `kmsfs stats`.
//! - [`fuse`]: the FUSE daemon.
//! - [`fs_cli`], [`kms_cli`], [`serve_cli`], [`encrypt`]: the subcommands; [`mount_helper`]:
//!   `mount.fuse.kmsfs`, the helper mount(8) runs for `-t fuse.kmsfs` and fstab lines.

pub mod aead;
pub mod audit_cli;
pub mod dek_cache;
pub mod encrypt;
pub mod format;
pub mod fs_cli;
pub mod fs_error;
pub mod fsck;
pub mod fuse;
pub mod kms_cli;
pub mod metrics;
pub mod migrate_cli;
pub mod mount_helper;
pub mod names;
pub mod rewrap;
pub mod serve_cli;
pub mod volume;

//! `kmsfs`: a transparent-encryption FUSE filesystem whose data keys come from a KMS.
//!
//! The `kmsfs` binary (src/main.rs) only parses the command line and calls into
//! these modules. They are a library so that fuzz targets and tests can reach the
//! on-disk parsers ([`format`], [`volume`]) directly; the API is not stable.
//!
//! The layers, each a folder; imports only go down (docs/ARCHITECTURE.md):
//! - [`cli`]: the subcommands and `mount.fuse.kmsfs`;
//! - [`tools`]: fsck, rewrap and encrypt, offline on a backing directory;
//! - [`fuse`]: the FUSE daemon;
//! - [`volume`]: a volume's config and its MAC, its KMS and DEK policy, the DEK cache,
//!   encrypted names, the daemon's counters;
//! - [`backing`]: IO on the backing directory (syscalls, nodes, plaintext through blocks)
//!   and the error type behind every errno;
//! - [`format`]: the file header and block codec and the AEAD: pure code, no IO.

pub mod backing;
pub mod cli;
pub mod format;
pub mod fuse;
pub mod tools;
pub mod volume;

//! Name encryption, the optional volume feature [`FEATURE`] (`kmsfs init --encrypt-names`),
//! and long names and targets, the feature [`FEATURE_LONG`] that new volumes with
//! encrypted names get beside it.
//!
//! Every name in the backing directory is `base64url(AES-SIV(name))`, without padding,
//! with the directory's IV as associated data: AES-SIV (RFC 5297) is deterministic, so a
//! lookup encrypts the name it is asked for and opens that entry, while the per-directory
//! IV keeps one name in two directories from encrypting alike. The IV is 16 random bytes in
//! the file [`DIRIV_NAME`] inside the directory (a file, not an xattr, so that a copy of
//! the backing directory by any tool keeps it; gocryptfs does the same). Symlink targets
//! are AES-SIV-sealed with a random 16-byte nonce as associated data, so their length, and
//! so `st_size`, follows from the stored length alone.
//!
//! The key is derived from the volume's config DEK (which only the KMS unwraps, and which
//! a rewrap re-wraps without changing): `HKDF-SHA256[salt = volume uuid]` with one label per
//! half of the 64-byte AES-SIV key.
//!
//! A stored name is at most 255 bytes. Without [`FEATURE_LONG`] a plaintext name is so at
//! most [`MAX_SHORT_NAME`] (175) bytes and a symlink target at most what the backing fs
//! takes of its stored form (3,039 bytes on ext4). With it, names go up to [`MAX_NAME`]
//! (255) and targets to [`MAX_TARGET`] (4,095), the way gocryptfs stores long names, with
//! more care:
//!
//! - a stored name longer than 255 bytes is kept as the entry [`long_name_of`]
//!   (`kmsfs.longname.<base64url(SHA-256(stored name))>`, 58 bytes), beside a side file
//!   `<that>.name` that holds the stored name. The side file is written to a temp file,
//!   fsynced and renamed into place, and the directory fsynced, before the entry is made;
//!   it goes after the entry. Its content must hash to the entry's name, be longer than
//!   255 bytes (a name that fits is always stored as itself, so one name has one stored
//!   form) and open under the directory's IV; else the entry is not listed, and looking
//!   it up by name writes the side file again (the entry's name, a hash of the stored
//!   name, proves it) or, on a read-only mount, answers EIO;
//! - a stored target that the backing fs does not take as a symlink's target is kept in a
//!   side file at the backing root, [`long_link_of`] (`kmsfs.longlink.<base64url(SHA-256(
//!   stored target))>`), written and fsynced (file and root) before the symlink, whose
//!   backing target is then that name. Each stored target has its own random nonce, so each
//!   side file belongs to one backing symlink (with all its hard links); it goes when the
//!   last of them goes.
//!
//! What stays visible on disk: the tree's shape, the length of each name to within 3 bytes
//! (of a long name: that it is longer than 175 bytes, and its length within 3 bytes in the
//! side file), sizes, times, owners, modes, xattrs.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::io::OwnedFd;

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use zeroize::Zeroizing;

use crate::backing::nodes::make_symlink;
use crate::backing::sys;
use crate::format::aead;

/// The volume feature flag.
pub const FEATURE: &str = "names-siv-v1";
/// The volume feature of long names and long symlink targets (side files). New volumes
/// with encrypted names get it; it requires [`FEATURE`], and a kmsfs that does not know it
/// refuses the volume (it would not see long names, nor read long targets).
pub const FEATURE_LONG: &str = "names-long-v1";
/// The per-directory IV file. Never a valid encrypted name (`.` is not in base64url).
pub const DIRIV_NAME: &str = "kmsfs.diriv";
/// Length of a directory IV and of a symlink nonce.
pub const IV_LEN: usize = 16;
/// Longest plaintext name with [`FEATURE_LONG`] (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Longest plaintext name without [`FEATURE_LONG`]: its encrypted form, base64url of
/// 16 + 175 bytes, is 255.
pub const MAX_SHORT_NAME: usize = 175;
/// Longest stored name kept as the entry's own name (NAME_MAX of the backing fs).
pub const MAX_STORED: usize = 255;
/// Longest symlink target (PATH_MAX less its NUL), and longest backing symlink target
/// this daemon makes.
pub const MAX_TARGET: usize = 4095;
/// Prefix of a long name's entry.
pub const LONG_NAME_PREFIX: &str = "kmsfs.longname.";
/// Suffix of a long name's side file (after the entry's name).
pub const SIDE_SUFFIX: &str = ".name";
/// Suffix of a side file's temp file while it is written (after the side file's name,
/// followed by `.` and 16 random hex digits).
pub const TEMP_SUFFIX: &str = ".tmp";
/// Prefix of a long link: the backing target of the symlink, and its side file's name at
/// the backing root.
pub const LONG_LINK_PREFIX: &str = "kmsfs.longlink.";
/// Length of a long name, and of a long link: the prefix and base64url(SHA-256).
pub const LONG_REF_LEN: usize = 15 + HASH_B64_LEN;
/// A directory's IV.
pub type DirIv = [u8; IV_LEN];

const LABEL_MAC: &[u8] = b"kmsfs v1 names siv mac";
const LABEL_CTR: &[u8] = b"kmsfs v1 names siv ctr";
/// Domain of symlink targets (names use the directory IV alone).
const LINK_DOMAIN: &[u8] = b"symlink";
const TAG_LEN: usize = 16;
/// base64url-nopad of a SHA-256.
const HASH_B64_LEN: usize = 43;
/// Most bytes a long name's side file holds: a 255-byte name's stored form is 362.
const MAX_SIDE_NAME: u64 = 512;
/// Most bytes a long link's side file holds: a 4,095-byte target's stored form is 5,503.
const MAX_SIDE_LINK: u64 = 8192;

/// The name key of a volume.
pub struct NameKey {
    key: Zeroizing<[u8; 64]>,
    /// Long names and targets ([`FEATURE_LONG`]).
    long: bool,
}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameKey(..)")
    }
}

/// Why a name cannot be stored.
#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    /// Longer than [`NameKey::max_name`] (or a target longer than [`MAX_TARGET`]).
    TooLong,
    /// The random source failed.
    Random,
}

/// The backing form of a plaintext name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredName {
    /// The entry's name in the backing directory.
    pub entry: OsString,
    /// For a long name, the full stored name, which its side file holds.
    pub long: Option<OsString>,
}

/// What an entry of a backing directory is, on a volume with encrypted names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind<'a> {
    /// The directory's IV ([`DIRIV_NAME`]), or a temp file of one being written.
    DirIv,
    /// A stored name (or anything else that is not one of the kinds below: it opens or not).
    Name,
    /// A long name: the name is in its side file.
    Long,
    /// The side file of the long name `.0` (or that side file's temp file).
    Side(&'a OsStr),
    /// A long link's side file (at the backing root only).
    LinkSide,
}

/// Why the name of a backing entry cannot be read.
#[derive(Debug)]
pub enum BadName {
    /// The stored name does not open under the directory's IV (or opens to a name no
    /// directory may hold).
    DoesNotDecrypt,
    /// A long name without its side file.
    NoSideFile,
    /// A long name whose side file cannot be read or is not its own.
    BadSideFile(std::io::Error),
}

impl std::fmt::Display for BadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadName::DoesNotDecrypt => f.write_str("name does not decrypt"),
            BadName::NoSideFile => write!(f, "long name without its {SIDE_SUFFIX} side file"),
            BadName::BadSideFile(e) => {
                write!(f, "long name whose {SIDE_SUFFIX} side file is bad ({e})")
            }
        }
    }
}

impl NameKey {
    /// The name key of the volume `uuid` whose config DEK is `config_dek`, for names of at
    /// most [`MAX_SHORT_NAME`] bytes (see [`NameKey::with_long_names`]).
    pub fn derive(config_dek: &[u8], uuid: &str) -> NameKey {
        let mut key = Zeroizing::new([0u8; 64]);
        key[..32].copy_from_slice(&aead::hkdf_sha256(config_dek, uuid.as_bytes(), LABEL_MAC)[..]);
        key[32..].copy_from_slice(&aead::hkdf_sha256(config_dek, uuid.as_bytes(), LABEL_CTR)[..]);
        NameKey { key, long: false }
    }

    /// The same key, with long names and targets ([`FEATURE_LONG`]) on or off.
    pub fn with_long_names(mut self, on: bool) -> NameKey {
        self.long = on;
        self
    }

    /// Whether long names and targets are on ([`FEATURE_LONG`]).
    pub fn long_names(&self) -> bool {
        self.long
    }

    /// The longest plaintext name: [`MAX_NAME`] with long names, else [`MAX_SHORT_NAME`].
    pub fn max_name(&self) -> usize {
        if self.long {
            MAX_NAME
        } else {
            MAX_SHORT_NAME
        }
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new(self.key.as_slice().into())
    }

    /// The stored form of `name` in the directory with IV `iv`: itself when it fits
    /// [`MAX_STORED`], else (long names) a long name and the side file's content.
    pub fn encrypt_name(&self, iv: &DirIv, name: &OsStr) -> Result<StoredName, NameError> {
        if name.len() > self.max_name() {
            return Err(NameError::TooLong);
        }
        let sealed = self
            .siv()
            .encrypt([&iv[..]], name.as_bytes())
            .map_err(|_| NameError::TooLong)?;
        let full = OsString::from(B64URL.encode(sealed));
        if full.len() <= MAX_STORED {
            return Ok(StoredName {
                entry: full,
                long: None,
            });
        }
        if !self.long {
            return Err(NameError::TooLong);
        }
        Ok(StoredName {
            entry: long_name_of(&full),
            long: Some(full),
        })
    }

    /// The plaintext of stored name `stored` in the directory with IV `iv`; `None` when it
    /// is not one of ours (another key or directory, changed, or not a valid name).
    pub fn decrypt_name(&self, iv: &DirIv, stored: &OsStr) -> Option<OsString> {
        let sealed = B64URL.decode(stored.as_bytes()).ok()?;
        if sealed.len() <= TAG_LEN {
            return None;
        }
        let plain = self.siv().decrypt([&iv[..]], &sealed).ok()?;
        valid_name(&plain).then(|| OsString::from_vec(plain))
    }

    /// What the backing entry `entry` is (of a directory; [`EntryKind::LinkSide`] means
    /// something only at the root). Long names, side files and long links are known only
    /// with [`FEATURE_LONG`]; without it they are names that do not decrypt.
    pub fn kind_of<'a>(&self, entry: &'a OsStr) -> EntryKind<'a> {
        let b = entry.as_bytes();
        if b == DIRIV_NAME.as_bytes() || is_diriv_temp(entry) {
            return EntryKind::DirIv;
        }
        if !self.long {
            return EntryKind::Name;
        }
        if is_ref(b, LONG_LINK_PREFIX) {
            return EntryKind::LinkSide;
        }
        if b.len() >= LONG_REF_LEN && is_ref(&b[..LONG_REF_LEN], LONG_NAME_PREFIX) {
            let rest = &b[LONG_REF_LEN..];
            if rest.is_empty() {
                return EntryKind::Long;
            }
            if rest == SIDE_SUFFIX.as_bytes() || is_side_temp(rest) {
                return EntryKind::Side(OsStr::from_bytes(&b[..LONG_REF_LEN]));
            }
        }
        EntryKind::Name
    }

    /// The plaintext name of backing entry `entry` (of kind [`EntryKind::Name`] or
    /// [`EntryKind::Long`]) in directory `dir` (any fd) whose IV is `iv`.
    pub fn read_name(&self, iv: &DirIv, dir: RawFd, entry: &OsStr) -> Result<OsString, BadName> {
        if self.kind_of(entry) != EntryKind::Long {
            return self.decrypt_name(iv, entry).ok_or(BadName::DoesNotDecrypt);
        }
        let full = read_side_name(dir, entry).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => BadName::NoSideFile,
            _ => BadName::BadSideFile(e),
        })?;
        self.decrypt_name(iv, &full).ok_or(BadName::DoesNotDecrypt)
    }

    /// The stored form of symlink target `target` (TooLong past [`MAX_TARGET`]).
    pub fn encrypt_target(&self, target: &OsStr) -> Result<OsString, NameError> {
        if target.len() > MAX_TARGET {
            return Err(NameError::TooLong);
        }
        let mut nonce = [0u8; IV_LEN];
        aead::random(&mut nonce).map_err(|_| NameError::Random)?;
        let sealed = self
            .siv()
            .encrypt([LINK_DOMAIN, &nonce[..]], target.as_bytes())
            .map_err(|_| NameError::TooLong)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(OsString::from(B64URL.encode(out)))
    }

    /// The plaintext of stored symlink target `stored`; `None` when it does not open.
    pub fn decrypt_target(&self, stored: &OsStr) -> Option<OsString> {
        let raw = B64URL.decode(stored.as_bytes()).ok()?;
        if raw.len() < IV_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(IV_LEN);
        let plain = self.siv().decrypt([LINK_DOMAIN, nonce], sealed).ok()?;
        Some(OsString::from_vec(plain))
    }

    /// Whether `backing_target`, read from a backing symlink, is a long link (with
    /// [`FEATURE_LONG`]): the name of its side file at the backing root.
    pub fn is_long_link(&self, backing_target: &[u8]) -> bool {
        self.long && is_ref(backing_target, LONG_LINK_PREFIX)
    }
}

/// Whether `rest` (what follows a long name's entry) names a temp file of its side file:
/// `.name.tmp` (before temp names were unique) or `.name.tmp.` and 16 hex digits.
fn is_side_temp(rest: &[u8]) -> bool {
    let Some(t) = rest.strip_prefix(SIDE_SUFFIX.as_bytes()) else {
        return false;
    };
    let Some(t) = t.strip_prefix(TEMP_SUFFIX.as_bytes()) else {
        return false;
    };
    match t.strip_prefix(b".") {
        None => t.is_empty(),
        Some(hex) => hex.len() == 16 && hex.iter().all(u8::is_ascii_hexdigit),
    }
}

/// `prefix ‖ base64url(SHA-256(full))`.
fn hashed(prefix: &str, full: &OsStr) -> OsString {
    let h = B64URL.encode(aead::sha256(full.as_bytes()));
    OsString::from(format!("{prefix}{h}"))
}

/// Whether `b` is `prefix` and 43 base64url characters.
fn is_ref(b: &[u8], prefix: &str) -> bool {
    b.len() == LONG_REF_LEN
        && b.starts_with(prefix.as_bytes())
        && b[prefix.len()..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// The entry of a long name whose full stored form is `full`:
/// `kmsfs.longname.<base64url(SHA-256(full))>`.
pub fn long_name_of(full: &OsStr) -> OsString {
    hashed(LONG_NAME_PREFIX, full)
}

/// The side file of long-name entry `entry`: `<entry>.name`.
pub fn side_name(entry: &OsStr) -> OsString {
    let mut s = entry.to_owned();
    s.push(SIDE_SUFFIX);
    s
}

/// The long link of stored target `stored`: `kmsfs.longlink.<base64url(SHA-256(stored))>`,
/// the backing symlink's target and its side file's name at the backing root.
pub fn long_link_of(stored: &OsStr) -> OsString {
    hashed(LONG_LINK_PREFIX, stored)
}

fn eio() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EIO)
}

/// Reads `name` in directory `dir`: a regular file of at most `max` bytes. Its type is
/// checked before it is opened for reading (an `O_PATH` fd, not following a symlink,
/// then reopened), so a FIFO, a device node or a symlink put there is EIO and never
/// opened.
fn read_small(dir: RawFd, name: &OsStr, max: u64) -> std::io::Result<Vec<u8>> {
    let path = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    let st = sys::fstat(path.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 > max {
        return Err(eio());
    }
    let f = sys::reopen(path.as_raw_fd(), libc::O_RDONLY | libc::O_NONBLOCK)?;
    let mut out = Vec::with_capacity(st.st_size as usize);
    f.take(max + 1).read_to_end(&mut out).map_err(|_| eio())?;
    if out.len() as u64 > max {
        return Err(eio());
    }
    Ok(out)
}

/// The full stored name in the side file of long-name entry `entry` in directory `dir`:
/// ENOENT without one, EIO unless it is a regular file whose content hashes to `entry`
/// and is longer than [`MAX_STORED`].
pub fn read_side_name(dir: RawFd, entry: &OsStr) -> std::io::Result<OsString> {
    let full = OsString::from_vec(read_small(dir, &side_name(entry), MAX_SIDE_NAME)?);
    if full.len() <= MAX_STORED || long_name_of(&full) != entry {
        return Err(eio());
    }
    Ok(full)
}

/// A fresh temp name for `name`: `<name>.tmp.<16 random hex digits>`, so that writers
/// of one file (two daemons in shared storage, two threads) never share one.
fn temp_name(name: &OsStr) -> std::io::Result<OsString> {
    let mut r = [0u8; 8];
    aead::random(&mut r).map_err(|_| eio())?;
    let mut tmp = name.to_owned();
    tmp.push(TEMP_SUFFIX);
    tmp.push(".");
    for b in r {
        tmp.push(format!("{b:02x}"));
    }
    Ok(tmp)
}

/// Makes `content` the file `name` in directory `dir` atomically: written to a temp file
/// of its own ([`temp_name`]), fsynced, renamed over `name`, and the directory fsynced.
/// Mode 0400.
fn replace_synced(dir: RawFd, name: &OsStr, content: &[u8]) -> std::io::Result<()> {
    let tmp = temp_name(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let mut f: File = sys::openat(dir, &tmp, flags, 0o400)?.into();
    let r = f
        .write_all(content)
        .and_then(|_| f.sync_all())
        .and_then(|_| sys::renameat2(dir, &tmp, dir, name, 0));
    if let Err(e) = r {
        let _ = sys::unlinkat(dir, &tmp, 0);
        return Err(e);
    }
    sync_dir(dir)
}

/// fsync of directory `dir` (any fd, `O_PATH` will do).
pub fn sync_dir(dir: RawFd) -> std::io::Result<()> {
    sys::reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?.sync_all()
}

/// Gives long-name entry `entry` in directory `dir` its side file holding `full`, on
/// disk (fsynced, the directory too) before the caller makes the entry. One already
/// there with that content is kept as it is, without a sync (its writer synced it before
/// renaming it into place); any other is replaced atomically.
pub fn write_side_name(dir: RawFd, entry: &OsStr, full: &OsStr) -> std::io::Result<()> {
    if side_name_is(dir, entry, full) {
        return Ok(());
    }
    replace_synced(dir, &side_name(entry), full.as_bytes())
}

/// Whether the side file of long-name entry `entry` in directory `dir` holds `full`.
pub fn side_name_is(dir: RawFd, entry: &OsStr, full: &OsStr) -> bool {
    read_side_name(dir, entry).ok().as_deref() == Some(full)
}

/// Removes the side file of long-name entry `entry` in directory `dir` (none is fine).
pub fn remove_side_name(dir: RawFd, entry: &OsStr) -> std::io::Result<()> {
    match sys::unlinkat(dir, &side_name(entry), 0) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// Writes the side file of long link `link` at the backing root `root`, holding stored
/// target `stored`: a new file (its name is a hash of a target with a random nonce),
/// fsynced, the root too, before the caller makes the symlink.
pub fn write_long_link(root: RawFd, link: &OsStr, stored: &OsStr) -> std::io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let mut f: File = sys::openat(root, link, flags, 0o400)?.into();
    if let Err(e) = f.write_all(stored.as_bytes()).and_then(|_| f.sync_all()) {
        let _ = sys::unlinkat(root, link, 0);
        return Err(e);
    }
    sync_dir(root)
}

/// The stored target in the side file of long link `link` at the backing root `root`:
/// ENOENT without one, EIO unless its content hashes to `link`.
pub fn read_long_link(root: RawFd, link: &OsStr) -> std::io::Result<OsString> {
    let stored = OsString::from_vec(read_small(root, link, MAX_SIDE_LINK)?);
    if long_link_of(&stored) != link {
        return Err(eio());
    }
    Ok(stored)
}

/// Removes the side file of long link `link` at the backing root `root` (none is fine).
pub fn remove_long_link(root: RawFd, link: &OsStr) -> std::io::Result<()> {
    match sys::unlinkat(root, link, 0) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// Reads the IV of the backing directory `dir` (an fd, `O_PATH` will do). ENOENT when it
/// has none; EIO when it is not a regular file of [`IV_LEN`] bytes (opened non-blocking,
/// so a FIFO put there cannot hang the caller).
pub fn read_diriv(dir: RawFd) -> std::io::Result<DirIv> {
    let raw = read_small(dir, OsStr::new(DIRIV_NAME), IV_LEN as u64)?;
    raw.try_into().map_err(|_| eio())
}

/// Gives the backing directory `dir` a new random IV (EEXIST if it has one), fsynced
/// (ext4 may commit the entries named under it before its data otherwise); mode 0400,
/// owned by the daemon.
pub fn create_diriv(dir: RawFd) -> std::io::Result<DirIv> {
    let mut iv = [0u8; IV_LEN];
    aead::random(&mut iv).map_err(|_| std::io::Error::from_raw_os_error(libc::EIO))?;
    write_diriv(dir, &iv)?;
    Ok(iv)
}

/// Writes `iv` as the IV of the backing directory `dir` (EEXIST if it has one). Atomic,
/// also for other daemons on shared storage: written to a temp file of its own
/// (`kmsfs.diriv.tmp.<16 hex>`), synced, then hard-linked as [`DIRIV_NAME`] (a link,
/// unlike `rename`, never replaces one there, on NFS too), so no reader ever sees a
/// partial IV and of two writers one wins.
pub fn write_diriv(dir: RawFd, iv: &DirIv) -> std::io::Result<()> {
    let tmp = temp_name(OsStr::new(DIRIV_NAME))?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut f: File = sys::openat(dir, &tmp, flags, 0o400)?.into();
    // Synced: names made under it may be fsynced before anything else syncs it.
    let r = f
        .write_all(iv)
        .and_then(|_| f.sync_all())
        .and_then(|_| sys::linkat_fd(f.as_raw_fd(), dir, OsStr::new(DIRIV_NAME)));
    let _ = sys::unlinkat(dir, &tmp, 0);
    r
}

/// Whether `name` is a temp file of a directory's IV being written ([`write_diriv`]).
pub fn is_diriv_temp(name: &OsStr) -> bool {
    name.as_bytes()
        .strip_prefix(DIRIV_NAME.as_bytes())
        .is_some_and(|rest| {
            rest.strip_prefix(TEMP_SUFFIX.as_bytes())
                .and_then(|t| t.strip_prefix(b"."))
                .is_some_and(|hex| hex.len() == 16 && hex.iter().all(u8::is_ascii_hexdigit))
        })
}

/// The plaintext length of a symlink target stored in `stored_len` bytes (what `lstat`
/// says of the link in the mount).
pub fn target_len(stored_len: u64) -> u64 {
    (stored_len / 4 * 3 + stored_len % 4 * 3 / 4).saturating_sub((IV_LEN + TAG_LEN) as u64)
}

/// A name a directory may hold: not empty, `.` or `..`, no `/` or NUL.
fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n != b"." && n != b".." && !n.iter().any(|&b| b == b'/' || b == 0)
}

/// With long names, when stored target `stored` is too long for any backing symlink
/// (longer than [`MAX_TARGET`]): writes its long link's side file at the backing root
/// `root` ([`write_long_link`]) and returns the long link, the target to give the
/// symlink; else `None` ([`make_stored_symlink`] then decides).
pub fn write_long_link_first(
    root: RawFd,
    k: &NameKey,
    stored: &OsStr,
) -> std::io::Result<Option<OsString>> {
    if !k.long_names() || stored.len() <= MAX_TARGET {
        return Ok(None);
    }
    let link = long_link_of(stored);
    write_long_link(root, &link, stored)?;
    Ok(Some(link))
}

/// Creates symlink `name` in backing directory `dir` (encrypted names, key `k`) whose
/// stored target is `stored`, owned by `uid:gid`; returns its `O_PATH` fd. The stored
/// target is the backing symlink's own where the backing fs takes it; else, with long
/// names, the symlink is a long link whose side file goes at the backing root `root`.
pub fn make_stored_symlink(
    root: RawFd,
    dir: RawFd,
    name: &OsStr,
    k: &NameKey,
    stored: &OsStr,
    uid: u32,
    gid: u32,
) -> std::io::Result<OwnedFd> {
    let too_long = || std::io::Error::from_raw_os_error(libc::ENAMETOOLONG);
    if stored.len() <= MAX_TARGET {
        match make_symlink(dir, name, stored, uid, gid) {
            Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) && k.long_names() => {}
            r => return r,
        }
    } else if !k.long_names() {
        return Err(too_long());
    }
    let link = long_link_of(stored);
    write_long_link(root, &link, stored)?;
    make_symlink(dir, name, &link, uid, gid).inspect_err(|_| {
        let _ = remove_long_link(root, &link);
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> NameKey {
        NameKey::derive(&[7u8; 32], "9b1c1d7e-0000-4000-8000-000000000000")
    }

    /// A temporary directory, open, and the fd side files are made at (valid while the
    /// `File` is kept).
    fn open_temp_dir() -> (tempfile::TempDir, File, RawFd) {
        let dir = tempfile::tempdir().unwrap();
        let d = File::open(dir.path()).unwrap();
        let fd = d.as_raw_fd();
        (dir, d, fd)
    }

    #[test]
    fn names_round_trip_and_fit_name_max() {
        let k = key();
        let iv = [1u8; IV_LEN];
        for n in [
            "a",
            "hello world.txt",
            "ünïcödé",
            &"x".repeat(MAX_SHORT_NAME),
        ] {
            let s = k.encrypt_name(&iv, OsStr::new(n)).unwrap();
            assert_eq!(s.long, None);
            let s = s.entry;
            assert!(s.len() <= 255, "{n}: {}", s.len());
            assert!(!s.as_bytes().contains(&b'.') && !s.as_bytes().contains(&b'/'));
            assert_eq!(k.decrypt_name(&iv, &s).unwrap(), OsStr::new(n));
        }
        assert_eq!(
            k.encrypt_name(&iv, OsStr::new(&"x".repeat(MAX_SHORT_NAME + 1))),
            Err(NameError::TooLong)
        );
        assert_eq!(k.max_name(), MAX_SHORT_NAME);
    }

    #[test]
    fn a_name_is_bound_to_its_key_and_directory() {
        let k = key();
        let (a, b) = ([1u8; IV_LEN], [2u8; IV_LEN]);
        let s = k.encrypt_name(&a, OsStr::new("report.pdf")).unwrap().entry;
        assert_eq!(
            s,
            k.encrypt_name(&a, OsStr::new("report.pdf")).unwrap().entry
        );
        assert_ne!(
            s,
            k.encrypt_name(&b, OsStr::new("report.pdf")).unwrap().entry
        );
        assert!(k.decrypt_name(&b, &s).is_none());
        let other = NameKey::derive(&[8u8; 32], "9b1c1d7e-0000-4000-8000-000000000000");
        assert!(other.decrypt_name(&a, &s).is_none());
        let mut bytes = s.into_vec();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        assert!(k.decrypt_name(&a, OsStr::from_bytes(&bytes)).is_none());
        for junk in ["", "kmsfs.conf", "AAAA", "!!!"] {
            assert!(k.decrypt_name(&a, OsStr::new(junk)).is_none(), "{junk}");
        }
    }

    #[test]
    fn targets_round_trip_with_fresh_nonces_and_known_length() {
        let k = key();
        for t in ["", "../x", "/etc/passwd", &"d/".repeat(1000)] {
            let s1 = k.encrypt_target(OsStr::new(t)).unwrap();
            let s2 = k.encrypt_target(OsStr::new(t)).unwrap();
            assert_ne!(s1, s2);
            assert_eq!(target_len(s1.len() as u64), t.len() as u64, "{t}");
            assert_eq!(k.decrypt_target(&s1).unwrap(), OsStr::new(t));
        }
        assert!(k.decrypt_target(OsStr::new("short")).is_none());
    }

    #[test]
    fn invalid_plaintexts_are_refused_on_decrypt() {
        let k = key();
        let iv = [3u8; IV_LEN];
        for bad in [&b"."[..], b"..", b"a/b", b"a\0b"] {
            let sealed = k.siv().encrypt([&iv[..]], bad).unwrap();
            let s = OsString::from(B64URL.encode(sealed));
            assert!(k.decrypt_name(&iv, &s).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn long_names_past_175_bytes_up_to_255() {
        let k = key().with_long_names(true);
        assert_eq!(k.max_name(), MAX_NAME);
        let iv = [4u8; IV_LEN];
        let s = k.encrypt_name(&iv, OsStr::new(&"x".repeat(175))).unwrap();
        assert_eq!((s.entry.len(), s.long), (255, None), "175 bytes still fit");
        for n in [176, 200, 255] {
            let name = "é".repeat(n / 2) + &"x".repeat(n % 2);
            assert_eq!(name.len(), n);
            let s = k.encrypt_name(&iv, OsStr::new(&name)).unwrap();
            let full = s.long.clone().unwrap();
            assert!(full.len() > MAX_STORED, "{n}");
            assert_eq!(s.entry.len(), LONG_REF_LEN);
            assert_eq!(s.entry, long_name_of(&full));
            assert_eq!(k.kind_of(&s.entry), EntryKind::Long);
            assert_eq!(k.kind_of(&side_name(&s.entry)), EntryKind::Side(&s.entry));
            assert_eq!(k.decrypt_name(&iv, &full).unwrap(), OsStr::new(&name));
            // Deterministic: a lookup finds what a create made.
            assert_eq!(k.encrypt_name(&iv, OsStr::new(&name)).unwrap(), s);
        }
        assert_eq!(
            k.encrypt_name(&iv, OsStr::new(&"x".repeat(256))),
            Err(NameError::TooLong)
        );
        // Without the feature, the same names are too long and the kinds are plain names.
        let old = key();
        assert_eq!(
            old.encrypt_name(&iv, OsStr::new(&"x".repeat(176))),
            Err(NameError::TooLong)
        );
        let s = k.encrypt_name(&iv, OsStr::new(&"x".repeat(200))).unwrap();
        assert_eq!(old.kind_of(&s.entry), EntryKind::Name);
        assert!(!old.is_long_link(long_link_of(OsStr::new("t")).as_bytes()));
    }

    #[test]
    fn kinds_of_backing_entries() {
        let k = key().with_long_names(true);
        let h = "A".repeat(43);
        let long = format!("kmsfs.longname.{h}");
        let cases = [
            ("kmsfs.diriv", EntryKind::DirIv),
            ("kmsfs.diriv.tmp.00112233445566ff", EntryKind::DirIv),
            ("kmsfs.diriv.tmp.00112233445566f", EntryKind::Name),
            ("kmsfs.diriv.tmp", EntryKind::Name),
            (long.as_str(), EntryKind::Long),
            (&format!("{long}.name"), EntryKind::Side(OsStr::new(&long))),
            (
                &format!("{long}.name.tmp"),
                EntryKind::Side(OsStr::new(&long)),
            ),
            (&format!("kmsfs.longlink.{h}"), EntryKind::LinkSide),
            (
                &format!("kmsfs.longname.{}", "A".repeat(42)),
                EntryKind::Name,
            ),
            (
                &format!("kmsfs.longname.{}", "A".repeat(44)),
                EntryKind::Name,
            ),
            (
                &format!("kmsfs.longname.{}=", "A".repeat(42)),
                EntryKind::Name,
            ),
            (&format!("{long}.nam"), EntryKind::Name),
            (&format!("{long}.name.tmp2"), EntryKind::Name),
            (
                &format!("{long}.name.tmp.0123456789abcdef"),
                EntryKind::Side(OsStr::new(&long)),
            ),
            (
                &format!("{long}.name.tmp.0123456789abcdeg"),
                EntryKind::Name,
            ),
            (&format!("{long}.name.tmp.0123456789abcde"), EntryKind::Name),
            (&format!("{long}.name.tmp."), EntryKind::Name),
            ("AAAA", EntryKind::Name),
        ];
        for (n, want) in cases {
            assert_eq!(k.kind_of(OsStr::new(n)), want, "{n}");
        }
    }

    #[test]
    fn side_files_are_checked_never_trusted() {
        let k = key().with_long_names(true);
        let (dir, _d, fd) = open_temp_dir();
        let iv = [5u8; IV_LEN];
        let name = "n".repeat(230);
        let s = k.encrypt_name(&iv, OsStr::new(&name)).unwrap();
        let full = s.long.clone().unwrap();
        assert!(matches!(
            k.read_name(&iv, fd, &s.entry),
            Err(BadName::NoSideFile)
        ));
        write_side_name(fd, &s.entry, &full).unwrap();
        write_side_name(fd, &s.entry, &full).unwrap();
        assert_eq!(k.read_name(&iv, fd, &s.entry).unwrap(), OsStr::new(&name));
        assert!(matches!(
            k.read_name(&[6u8; IV_LEN], fd, &s.entry),
            Err(BadName::DoesNotDecrypt)
        ));
        let side = dir.path().join(side_name(&s.entry));
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&side, mode).unwrap();
        // Another name's stored form, a cut one, junk, a huge one, a FIFO: all EIO.
        let other = k.encrypt_name(&iv, OsStr::new(&"m".repeat(230))).unwrap();
        let mut cut = full.as_bytes().to_vec();
        cut.pop();
        for bad in [
            other.long.unwrap().into_vec(),
            cut,
            b"junk".to_vec(),
            vec![b'A'; 100_000],
        ] {
            std::fs::write(&side, &bad).unwrap();
            match k.read_name(&iv, fd, &s.entry) {
                Err(BadName::BadSideFile(e)) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
                r => panic!("{r:?}"),
            }
        }
        // A rewrite repairs it (atomically: no temp file stays).
        write_side_name(fd, &s.entry, &full).unwrap();
        assert_eq!(k.read_name(&iv, fd, &s.entry).unwrap(), OsStr::new(&name));
        remove_side_name(fd, &s.entry).unwrap();
        remove_side_name(fd, &s.entry).unwrap();
        std::fs::create_dir(&side).unwrap();
        assert!(matches!(
            k.read_name(&iv, fd, &s.entry),
            Err(BadName::BadSideFile(_))
        ));
        std::fs::remove_dir(&side).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn target_len_never_overflows() {
        assert_eq!(target_len(u64::MAX), u64::MAX / 4 * 3 + 2 - 32);
        assert_eq!(target_len(0), 0);
        for n in 0..200u64 {
            assert_eq!(target_len(n), (n * 3 / 4).saturating_sub(32), "{n}");
        }
    }

    #[test]
    fn side_files_of_fifos_and_devices_are_eio_and_never_opened() {
        let (dir, _d, fd) = open_temp_dir();
        let entry = long_name_of(OsStr::new(&"A".repeat(300)));
        let side = dir.path().join(side_name(&entry));
        let c = std::ffi::CString::new(side.as_os_str().as_bytes()).unwrap();
        // A FIFO (an open for reading without O_NONBLOCK would hang), then, as root, a
        // character device.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_side_name(fd, &entry).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        std::fs::remove_file(&side).unwrap();
        let dev = libc::makedev(1, 3);
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) } == 0 {
            let e = read_side_name(fd, &entry).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO));
        }
    }

    #[test]
    fn concurrent_side_file_writers_never_share_a_temp_file() {
        let k = key().with_long_names(true);
        let (dir, _d, fd) = open_temp_dir();
        let iv = [7u8; IV_LEN];
        let s = k.encrypt_name(&iv, OsStr::new(&"w".repeat(240))).unwrap();
        let full = s.long.clone().unwrap();
        let other = k.encrypt_name(&iv, OsStr::new(&"v".repeat(240))).unwrap();
        let wrong = other.long.unwrap();
        // Two writers of one side file, each finding it wrong (another's content) and
        // replacing it: with one shared temp name, one removes or renames the other's.
        std::thread::scope(|sc| {
            for t in 0..2 {
                let (entry, full, wrong) = (&s.entry, &full, &wrong);
                sc.spawn(move || {
                    for i in 0..200 {
                        let c = if (i + t) % 2 == 0 { full } else { wrong };
                        replace_synced(fd, &side_name(entry), c.as_bytes()).unwrap();
                    }
                });
            }
        });
        write_side_name(fd, &s.entry, &full).unwrap();
        assert_eq!(
            k.read_name(&iv, fd, &s.entry).unwrap(),
            OsStr::new(&"w".repeat(240))
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![side_name(&s.entry)], "no temp file stays");
    }

    #[test]
    fn long_links_hold_targets_up_to_path_max() {
        let k = key().with_long_names(true);
        let (dir, _d, fd) = open_temp_dir();
        let t = "t/".repeat(2047) + "x";
        assert_eq!(t.len(), MAX_TARGET);
        let stored = k.encrypt_target(OsStr::new(&t)).unwrap();
        assert_eq!(target_len(stored.len() as u64), MAX_TARGET as u64);
        let link = long_link_of(&stored);
        assert!(k.is_long_link(link.as_bytes()));
        assert!(!k.is_long_link(stored.as_bytes()));
        write_long_link(fd, &link, &stored).unwrap();
        assert_eq!(
            write_long_link(fd, &link, &stored)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EEXIST)
        );
        let back = read_long_link(fd, &link).unwrap();
        assert_eq!(k.decrypt_target(&back).unwrap(), OsStr::new(&t));
        let other = long_link_of(OsStr::new("x"));
        assert_eq!(
            read_long_link(fd, &other).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        std::fs::rename(dir.path().join(&link), dir.path().join(&other)).unwrap();
        assert_eq!(
            read_long_link(fd, &other).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        remove_long_link(fd, &other).unwrap();
        remove_long_link(fd, &other).unwrap();
        assert_eq!(
            k.encrypt_target(OsStr::new(&(t + "y"))),
            Err(NameError::TooLong)
        );
    }
}

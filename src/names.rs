//! Name encryption, the optional volume feature [`FEATURE`] (`kmsfs init --encrypt-names`).
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
//! A stored name is at most 255 bytes, so a plaintext name at most [`MAX_NAME`] (175):
//! `statfs` says so, longer names get ENAMETOOLONG (eCryptfs has the same kind of limit;
//! gocryptfs stores long names in side files). What stays visible on disk: the tree's
//! shape, the length of each name to within 3 bytes, sizes, times, owners, modes, xattrs.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use zeroize::Zeroizing;

use crate::aead;
use crate::fuse::sys;

/// The volume feature flag.
pub const FEATURE: &str = "names-siv-v1";
/// The per-directory IV file. Never a valid encrypted name (`.` is not in base64url).
pub const DIRIV_NAME: &str = "kmsfs.diriv";
/// Length of a directory IV and of a symlink nonce.
pub const IV_LEN: usize = 16;
/// Longest plaintext name: its encrypted form, base64url of 16 + 175 bytes, is 255.
pub const MAX_NAME: usize = 175;
/// A directory's IV.
pub type DirIv = [u8; IV_LEN];

const LABEL_MAC: &[u8] = b"kmsfs v1 names siv mac";
const LABEL_CTR: &[u8] = b"kmsfs v1 names siv ctr";
/// Domain of symlink targets (names use the directory IV alone).
const LINK_DOMAIN: &[u8] = b"symlink";
const TAG_LEN: usize = 16;

/// The name key of a volume.
pub struct NameKey {
    key: Zeroizing<[u8; 64]>,
}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameKey(..)")
    }
}

/// Why a name cannot be stored.
#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    /// Longer than [`MAX_NAME`] (or a target longer than the backing fs takes).
    TooLong,
    /// The random source failed.
    Random,
}

impl NameKey {
    /// The name key of the volume `uuid` whose config DEK is `config_dek`.
    pub fn derive(config_dek: &[u8], uuid: &str) -> NameKey {
        let mut key = Zeroizing::new([0u8; 64]);
        key[..32].copy_from_slice(&aead::hkdf_sha256(config_dek, uuid.as_bytes(), LABEL_MAC)[..]);
        key[32..].copy_from_slice(&aead::hkdf_sha256(config_dek, uuid.as_bytes(), LABEL_CTR)[..]);
        NameKey { key }
    }

    /// The name key of volume `cfg` (config DEK `config_dek`), if it encrypts names.
    pub fn of_volume(cfg: &crate::volume::VolumeConfig, config_dek: &[u8]) -> Option<NameKey> {
        cfg.features
            .iter()
            .any(|f| f == FEATURE)
            .then(|| NameKey::derive(config_dek, &cfg.uuid))
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new(self.key.as_slice().into())
    }

    /// The stored form of `name` in the directory with IV `iv`.
    pub fn encrypt_name(&self, iv: &DirIv, name: &OsStr) -> Result<OsString, NameError> {
        if name.len() > MAX_NAME {
            return Err(NameError::TooLong);
        }
        let sealed = self
            .siv()
            .encrypt([&iv[..]], name.as_bytes())
            .map_err(|_| NameError::TooLong)?;
        Ok(OsString::from(B64URL.encode(sealed)))
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

    /// The stored form of symlink target `target`.
    pub fn encrypt_target(&self, target: &OsStr) -> Result<OsString, NameError> {
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
}

/// Reads the IV of the backing directory `dir` (an fd, `O_PATH` will do). ENOENT when it
/// has none; EIO when it is not a regular file of [`IV_LEN`] bytes (opened non-blocking,
/// so a FIFO put there cannot hang the caller).
pub fn read_diriv(dir: RawFd) -> std::io::Result<DirIv> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let mut f: File = sys::openat(dir, OsStr::new(DIRIV_NAME), flags, 0)
        .map_err(|e| match e.raw_os_error() {
            // A symlink in its place (O_NOFOLLOW).
            Some(libc::ELOOP) => std::io::Error::from_raw_os_error(libc::EIO),
            _ => e,
        })?
        .into();
    let md = f.metadata()?;
    if !md.is_file() || md.len() != IV_LEN as u64 {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    let mut iv = [0u8; IV_LEN];
    let mut rest = Vec::new();
    f.read_exact(&mut iv)
        .and_then(|_| f.read_to_end(&mut rest))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EIO))?;
    if !rest.is_empty() {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(iv)
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

/// Writes `iv` as the IV of the backing directory `dir` (EEXIST if it has one).
pub fn write_diriv(dir: RawFd, iv: &DirIv) -> std::io::Result<()> {
    let name = OsStr::new(DIRIV_NAME);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut f: File = sys::openat(dir, name, flags, 0o400)?.into();
    // Synced: names made under it may be fsynced before anything else syncs it.
    if let Err(e) = f.write_all(iv).and_then(|_| f.sync_all()) {
        let _ = sys::unlinkat(dir, name, 0);
        return Err(e);
    }
    Ok(())
}

/// The plaintext length of a symlink target stored in `stored_len` bytes (what `lstat`
/// says of the link in the mount).
pub fn target_len(stored_len: u64) -> u64 {
    (stored_len * 3 / 4).saturating_sub((IV_LEN + TAG_LEN) as u64)
}

/// A name a directory may hold: not empty, `.` or `..`, no `/` or NUL.
fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n != b"." && n != b".." && !n.iter().any(|&b| b == b'/' || b == 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> NameKey {
        NameKey::derive(&[7u8; 32], "9b1c1d7e-0000-4000-8000-000000000000")
    }

    #[test]
    fn names_round_trip_and_fit_name_max() {
        let k = key();
        let iv = [1u8; IV_LEN];
        for n in ["a", "hello world.txt", "ünïcödé", &"x".repeat(MAX_NAME)] {
            let s = k.encrypt_name(&iv, OsStr::new(n)).unwrap();
            assert!(s.len() <= 255, "{n}: {}", s.len());
            assert!(!s.as_bytes().contains(&b'.') && !s.as_bytes().contains(&b'/'));
            assert_eq!(k.decrypt_name(&iv, &s).unwrap(), OsStr::new(n));
        }
        assert_eq!(
            k.encrypt_name(&iv, OsStr::new(&"x".repeat(MAX_NAME + 1))),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn a_name_is_bound_to_its_key_and_directory() {
        let k = key();
        let (a, b) = ([1u8; IV_LEN], [2u8; IV_LEN]);
        let s = k.encrypt_name(&a, OsStr::new("report.pdf")).unwrap();
        assert_eq!(s, k.encrypt_name(&a, OsStr::new("report.pdf")).unwrap());
        assert_ne!(s, k.encrypt_name(&b, OsStr::new("report.pdf")).unwrap());
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
}

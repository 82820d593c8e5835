//! The symmetric crypto seam of kms-core (asymmetric keys are in [`crate::asym`]): AES-GCM, HMAC-SHA256, SHA-256 and the
//! system random number generator, all from `ring`.
//!
//! Every other module goes through these functions, so swapping the
//! implementation is one change here; the known-answer tests in `blob.rs` and
//! `tests/` pin the bytes any implementation must produce.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{ErrorCode, KmsError, KmsResult};

/// AES-256 key length in bytes.
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// An AES-256-GCM key. `Debug` never shows the key.
pub struct AeadKey(LessSafeKey);

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadKey").finish_non_exhaustive()
    }
}

impl AeadKey {
    /// Makes a key from 32 raw bytes.
    pub fn new(bytes: &[u8; KEY_LEN]) -> Self {
        // AES_256_GCM accepts exactly 32 bytes, which the type guarantees.
        match UnboundKey::new(&AES_256_GCM, bytes) {
            Ok(k) => AeadKey(LessSafeKey::new(k)),
            Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
        }
    }

    /// Makes an AES-128-GCM key from 16 raw bytes (imported 128-bit material).
    pub fn new_128(bytes: &[u8; 16]) -> Self {
        match UnboundKey::new(&AES_128_GCM, bytes) {
            Ok(k) => AeadKey(LessSafeKey::new(k)),
            Err(_) => unreachable!("AES-128-GCM takes a 16-byte key"),
        }
    }

    /// AES-GCM\[key\](nonce, ad, buf): encrypts `buf` in place and appends the tag.
    ///
    /// # Security
    /// A (key, nonce) pair **MUST NOT** be used twice; callers draw nonces at random.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], ad: &[u8], buf: &mut Vec<u8>) -> KmsResult<()> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(ad),
                buf.as_mut_slice(),
            )
            .map_err(|_| {
                KmsError::new(
                    ErrorCode::FailedOperationEncryptionError,
                    "AES-GCM refused the input",
                )
            })?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens `ct ‖ tag` in place; returns the plaintext slice, or `None` when the
    /// input does not authenticate (no detail, no partial plaintext).
    pub fn open<'a>(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        ct_and_tag: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        if ct_and_tag.len() < TAG_LEN {
            return None;
        }
        self.0
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(ad),
                ct_and_tag,
            )
            .ok()
    }
}

fn rng() -> &'static SystemRandom {
    static RNG: std::sync::OnceLock<SystemRandom> = std::sync::OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Errors
/// `InternalError` if the system RNG fails (it does not on Linux once booted).
pub fn random_bytes(buf: &mut [u8]) -> KmsResult<()> {
    rng().fill(buf).map_err(|_| {
        KmsError::new(
            ErrorCode::InternalError,
            "the system random number generator failed",
        )
    })
}

/// SHA-256(data).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// HMAC-SHA256\[key\](data).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let t = ring::hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(t.as_ref());
    out
}

/// Constant-time check that `tag` = HMAC-SHA256\[key\](data).
pub fn hmac_sha256_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, data, tag).is_ok()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn aes_256_gcm_matches_a_nist_vector() {
        // NIST GCM test case 14 (AES-256, zero key, zero IV, one zero block).
        let key = AeadKey::new(&[0u8; 32]);
        let mut buf = vec![0u8; 16];
        key.seal(&[0u8; 12], b"", &mut buf).unwrap();
        assert_eq!(
            hex(&buf),
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
        let pt = key.open(&[0u8; 12], b"", &mut buf).unwrap();
        assert_eq!(pt, &[0u8; 16]);
    }

    #[test]
    fn open_rejects_short_and_modified_input() {
        let key = AeadKey::new(&[7u8; 32]);
        let mut buf = b"hello".to_vec();
        key.seal(&[1u8; 12], b"ad", &mut buf).unwrap();
        let mut short = buf[..10].to_vec();
        assert!(key.open(&[1u8; 12], b"ad", &mut short).is_none());
        let mut wrong_ad = buf.clone();
        assert!(key.open(&[1u8; 12], b"ae", &mut wrong_ad).is_none());
        buf[0] ^= 1;
        assert!(key.open(&[1u8; 12], b"ad", &mut buf).is_none());
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! The one AEAD seam of the filesystem: XAES-256-GCM for blocks, HKDF-SHA256 for
//! per-file keys, HMAC-SHA256 for the volume config.
//!
//! XAES-256-GCM (C2SP, <https://c2sp.org/XAES-256-GCM>) takes a 192-bit nonce:
//! its first 96 bits derive a per-message AES-256 key from the file key with
//! three AES block calls (an SP 800-108 counter-mode KDF over CMAC), its last
//! 96 bits are the AES-256-GCM nonce under that derived key. Random nonces are
//! then safe for about 2^80 messages per file key instead of 2^32, so a file
//! rewritten for years needs no bound on its block writes.
//!
//! Implementation choice (one place): `aes` (RustCrypto, AES-NI) for the three
//! block calls, `ring` for AES-256-GCM, HKDF and HMAC. Every implementation
//! this seam has used must pass the vectors in the tests below.

use std::fmt;

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use zeroize::{Zeroize, Zeroizing};

/// Length of an XAES-256-GCM nonce.
pub const NONCE_LEN: usize = 24;
/// Length of a GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of every key used here.
pub const KEY_LEN: usize = 32;

/// An AEAD tag or MAC did not verify. Carries no detail on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntegrityError;

impl fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication failed")
    }
}

/// An XAES-256-GCM key: the AES-256 key schedule and the CMAC subkey K1.
pub struct XaesKey {
    aes: aes::Aes256,
    k1: [u8; 16],
}

impl fmt::Debug for XaesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XaesKey").finish_non_exhaustive()
    }
}

impl Drop for XaesKey {
    fn drop(&mut self) {
        self.k1.zeroize();
        // aes::Aes256 zeroizes its round keys on drop (feature "zeroize" is default-on).
    }
}

/// The AES-256-GCM key derived for one nonce prefix (the first 96 bits of an XAES nonce),
/// kept while consecutive messages share the prefix: the blocks of one request then pay
/// for one derivation (three AES block calls and a GCM key setup) instead of one each.
#[derive(Default)]
pub struct Derived(Option<([u8; 12], LessSafeKey)>);

impl XaesKey {
    /// Prepares `key` for XAES-256-GCM.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let aes = aes::Aes256::new(GenericArray::from_slice(key));
        let mut l = GenericArray::from([0u8; 16]);
        aes.encrypt_block(&mut l);
        let mut k1 = [0u8; 16];
        let msb = l[0] >> 7;
        for i in 0..16 {
            let next = if i + 1 < 16 { l[i + 1] >> 7 } else { 0 };
            k1[i] = (l[i] << 1) | next;
        }
        k1[15] ^= 0x87 * msb;
        l.as_mut_slice().zeroize();
        XaesKey { aes, k1 }
    }

    /// The per-message AES-256-GCM key for the first 12 bytes of a nonce.
    fn derive(&self, n: &[u8]) -> Result<LessSafeKey, IntegrityError> {
        let mut kx = Zeroizing::new([0u8; KEY_LEN]);
        for (i, half) in kx.chunks_exact_mut(16).enumerate() {
            let mut m = GenericArray::from([0u8; 16]);
            m[1] = (i + 1) as u8;
            m[2] = b'X';
            m[4..16].copy_from_slice(&n[..12]);
            for (a, b) in m.iter_mut().zip(self.k1.iter()) {
                *a ^= b;
            }
            self.aes.encrypt_block(&mut m);
            half.copy_from_slice(&m);
            m.as_mut_slice().zeroize();
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &kx[..]).map_err(|_| IntegrityError)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// The derived key of `nonce`'s prefix, from `cache` when it holds that prefix.
    fn derived<'c>(
        &self,
        cache: &'c mut Derived,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<&'c LessSafeKey, IntegrityError> {
        let mut prefix = [0u8; 12];
        prefix.copy_from_slice(&nonce[..12]);
        let hit = matches!(&cache.0, Some((p, _)) if *p == prefix);
        if !hit {
            cache.0 = Some((prefix, self.derive(&prefix)?));
        }
        match &cache.0 {
            Some((_, k)) => Ok(k),
            None => Err(IntegrityError),
        }
    }

    /// Encrypts `in_out` in place; returns the tag.
    #[cfg(test)]
    pub fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], IntegrityError> {
        self.seal_cached(&mut Derived::default(), nonce, ad, in_out)
    }

    /// [`XaesKey::seal`], deriving the per-prefix key only when `cache` holds another.
    pub fn seal_cached(
        &self,
        cache: &mut Derived,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], IntegrityError> {
        let key = self.derived(cache, nonce)?;
        let n = Nonce::try_assume_unique_for_key(&nonce[12..]).map_err(|_| IntegrityError)?;
        let tag = key
            .seal_in_place_separate_tag(n, Aad::from(ad), in_out)
            .map_err(|_| IntegrityError)?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// Decrypts `in_out` in place if `tag` verifies; on failure `in_out` holds no plaintext.
    #[cfg(test)]
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), IntegrityError> {
        self.open_cached(&mut Derived::default(), nonce, ad, in_out, tag)
    }

    /// [`XaesKey::open`], deriving the per-prefix key only when `cache` holds another.
    pub fn open_cached(
        &self,
        cache: &mut Derived,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), IntegrityError> {
        let key = self.derived(cache, nonce)?;
        let n = Nonce::try_assume_unique_for_key(&nonce[12..]).map_err(|_| IntegrityError)?;
        let t = Tag::from(*tag);
        key.open_in_place_separate_tag(n, Aad::from(ad), t, in_out, 0..)
            .map(|_| ())
            .map_err(|_| {
                in_out.zeroize();
                IntegrityError
            })
    }
}

struct Len(usize);
impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256\[salt, info\](ikm) → 32 bytes.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    let infos = [info];
    // 32 bytes is far below HKDF-SHA256's 255*32 limit: expand cannot fail.
    if let Ok(okm) = prk.expand(&infos, Len(KEY_LEN)) {
        let _ = okm.fill(&mut out[..]);
    }
    out
}

/// HMAC-SHA256(key, msg).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&k, msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time HMAC-SHA256 check.
pub fn hmac_sha256_verify(key: &[u8], msg: &[u8], mac: &[u8]) -> Result<(), IntegrityError> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, msg, mac).map_err(|_| IntegrityError)
}

/// SHA-256(data).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Fills `buf` from the OS CSPRNG.
pub fn random(buf: &mut [u8]) -> Result<(), IntegrityError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| IntegrityError)
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses lowercase or uppercase hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    // Lowercase only, as `hex` writes: one spelling per byte string (from_str_radix
    // alone would also take `+f` and `AB`).
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn xaes_seal(key: [u8; 32], nonce: &[u8; 24], pt: &[u8], ad: &[u8]) -> Vec<u8> {
        let k = XaesKey::new(&key);
        let mut buf = pt.to_vec();
        let tag = k.seal(nonce, ad, &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        buf
    }

    /// The two vectors of the C2SP XAES-256-GCM specification.
    #[test]
    fn xaes_c2sp_vectors() {
        let n = b"ABCDEFGHIJKLMNOPQRSTUVWX";
        assert_eq!(
            hex(&xaes_seal([1; 32], n, b"XAES-256-GCM", b"")),
            "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"
        );
        assert_eq!(
            hex(&xaes_seal(
                [3; 32],
                n,
                b"XAES-256-GCM",
                b"c2sp.org/XAES-256-GCM"
            )),
            "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d"
        );
    }

    #[test]
    fn xaes_open_rejects_any_flip() {
        let k = XaesKey::new(&[7; 32]);
        let n = [9u8; 24];
        let mut buf = b"hello block".to_vec();
        let tag = k.seal(&n, b"ad", &mut buf).unwrap();
        let ct = buf.clone();
        let mut ok = ct.clone();
        k.open(&n, b"ad", &mut ok, &tag).unwrap();
        assert_eq!(ok, b"hello block");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(k.open(&n, b"ad", &mut bad, &tag).is_err());
        }
        let mut bad_n = n;
        bad_n[0] ^= 1;
        assert!(k.open(&bad_n, b"ad", &mut ct.clone(), &tag).is_err());
        let mut bad_n = n;
        bad_n[23] ^= 1;
        assert!(k.open(&bad_n, b"ad", &mut ct.clone(), &tag).is_err());
        assert!(k.open(&n, b"ae", &mut ct.clone(), &tag).is_err());
    }

    /// RFC 5869 test case 1.
    #[test]
    fn hkdf_rfc5869_case1() {
        let ikm = [0x0b; 22];
        assert_eq!(unhex("00ff7a"), Some(vec![0, 255, 0x7a]));
        for bad in ["+f", "AB", "0", "0g", " 1"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
        let salt = unhex("000102030405060708090a0b0c").unwrap();
        let info = unhex("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_sha256(&ikm, &salt, &info);
        assert_eq!(
            hex(&okm[..]),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_rfc4231_case2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(b"Jefe", b"what do ya want for nothing?", &mac).is_ok());
        assert!(hmac_sha256_verify(b"Jefe", b"what do ya want for nothing!", &mac).is_err());
    }
}

/// Throughput of the block AEAD, XAES-256-GCM against plain AES-256-GCM at 4 KiB:
/// `cargo test --release --bin kmsfs -- --ignored aead_throughput --nocapture`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod bench {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn aead_throughput() {
        let k = XaesKey::new(&[7; 32]);
        let gcm = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
        let mut buf = vec![0u8; 4096];
        let n = 100_000;
        let t = Instant::now();
        for i in 0..n {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let _ = k.seal(&nonce, b"ad", &mut buf).unwrap();
        }
        let xaes = (n * 4096) as f64 / t.elapsed().as_secs_f64() / 1e6;
        let t = Instant::now();
        for i in 0..n {
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let _ = gcm
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(b"ad"),
                    &mut buf,
                )
                .unwrap();
        }
        let plain = (n * 4096) as f64 / t.elapsed().as_secs_f64() / 1e6;
        println!(
            "4 KiB blocks, one core: XAES-256-GCM {xaes:.0} MB/s, AES-256-GCM {plain:.0} MB/s"
        );
    }
}

//! Post-quantum keys: ML-KEM-768 encryption (KEM-DEM with AES-256-GCM) and ML-DSA-65
//! signatures, the NIST level-3 parameter sets of FIPS 203 and FIPS 204.
//!
//! Seed 002 describes Tencent's "Kyber-KEM with AES-256 (KEM-DEM)" and "Dilithium" at
//! level 3. Tencent's service may use the pre-standard round-3 algorithms (its example
//! signature has the length of a round-3 Dilithium5 signature); kmsfs uses the
//! standards. Nothing is lost by the difference: PostQuantumCryptoEncrypt's blob is
//! opaque (only PostQuantumCryptoDecrypt opens it) and signatures are verified by the
//! KMS. GetPublicKey gives the public keys as SubjectPublicKeyInfo with the FIPS OIDs.
//!
//! A key is stored as its seed (64 bytes for ML-KEM, d ‖ z; 32 bytes for ML-DSA, ξ),
//! the encoding both standards recommend; the expanded keys live only in memory and
//! are zeroized on drop by the crates.
//!
//! The PostQuantumCryptoEncrypt blob (docs/FORMAT.md, "KMS formats"):
//!
//! ```text
//! off        len   field
//! 0          2     magic "KM"
//! 2          1     blob format version = 2 (post-quantum)
//! 3          1     L = length of the key id (1..=64)
//! 4          L     key id, ASCII
//! 4+L        4     key version, u32 big-endian
//! 8+L        1088  ML-KEM-768 ciphertext
//! 1096+L     12    AES-GCM nonce (random)
//! 1108+L     n     ciphertext (n = plaintext length)
//! 1108+L+n   16    AES-GCM tag
//! ```
//!
//! The AES-256-GCM key is the KEM's 32-byte shared secret, used for this one message;
//! the associated data is the header `[0, 1108+L)`, so the key id, version and KEM
//! ciphertext cannot be swapped.

use std::fmt;

use ml_dsa::MlDsa65;
use ml_kem::{Decapsulate as _, MlKem768};
use p256::pkcs8::EncodePublicKey as _;
use zeroize::Zeroizing;

use crate::blob::{BLOB_MAGIC, MAX_KEY_ID_LEN};
use crate::crypto::{self, AeadKey, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::{ErrorCode, KmsError, KmsResult};

/// The blob format version of a post-quantum blob.
pub const PQ_BLOB_VERSION: u8 = 2;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Length of an ML-KEM seed.
pub const KEM_SEED_LEN: usize = 64;
/// Length of an ML-DSA seed.
pub const DSA_SEED_LEN: usize = 32;
/// Length of an ML-DSA-65 signature.
pub const DSA_SIGNATURE_LEN: usize = 3309;

fn internal(msg: &str) -> KmsError {
    KmsError::new(ErrorCode::InternalError, msg)
}

fn bad_blob() -> KmsError {
    KmsError::new(
        ErrorCode::InvalidParameterValueInvalidCiphertext,
        "CiphertextBlob is not a post-quantum ciphertext of this KMS",
    )
}

/// An ML-KEM-768 decapsulation key.
pub struct KemKey {
    seed: Zeroizing<[u8; KEM_SEED_LEN]>,
    dk: ml_kem::DecapsulationKey<MlKem768>,
}

impl fmt::Debug for KemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KemKey(ML-KEM-768, <secret>)")
    }
}

impl KemKey {
    /// A new random key.
    ///
    /// # Errors
    /// `InternalError` when the system RNG fails.
    pub fn generate() -> KmsResult<KemKey> {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        crypto::random_bytes(&mut seed[..])?;
        Self::from_seed(&seed[..]).ok_or_else(|| internal("ML-KEM key generation failed"))
    }

    /// The key of a stored seed; `None` unless it is 64 bytes.
    pub fn from_seed(seed: &[u8]) -> Option<KemKey> {
        let seed: [u8; KEM_SEED_LEN] = seed.try_into().ok()?;
        let dk = ml_kem::DecapsulationKey::<MlKem768>::from_seed(seed.into());
        Some(KemKey {
            seed: Zeroizing::new(seed),
            dk,
        })
    }

    /// The seed, for the store.
    pub fn seed(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.seed.to_vec())
    }

    /// The encapsulation key as DER SubjectPublicKeyInfo (OID id-alg-ml-kem-768).
    ///
    /// # Errors
    /// `InternalError` if encoding fails.
    pub fn public_key_der(&self) -> KmsResult<Vec<u8>> {
        self.dk
            .encapsulation_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| internal("cannot encode the ML-KEM public key"))
    }

    /// Seals `plaintext` for this key as key `key_id` version `version` (the blob above).
    ///
    /// # Errors
    /// `InternalError` when the system RNG fails; `InvalidParameterValue` for a key id
    /// a blob cannot name.
    pub fn seal(&self, key_id: &str, version: u32, plaintext: &[u8]) -> KmsResult<Vec<u8>> {
        if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
            return Err(KmsError::new(
                ErrorCode::InvalidParameterValue,
                "key id too long for a blob",
            ));
        }
        let mut m = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; NONCE_LEN];
        crypto::random_bytes(&mut m[..])?;
        crypto::random_bytes(&mut nonce)?;
        let (ct, shared) = self
            .dk
            .encapsulation_key()
            .encapsulate_deterministic(&(*m).into());
        let shared = Zeroizing::new(<[u8; KEY_LEN]>::from(shared));
        let mut out = Vec::with_capacity(
            4 + key_id.len() + 4 + KEM_CIPHERTEXT_LEN + NONCE_LEN + plaintext.len() + TAG_LEN,
        );
        out.extend_from_slice(&BLOB_MAGIC);
        out.push(PQ_BLOB_VERSION);
        out.push(key_id.len() as u8);
        out.extend_from_slice(key_id.as_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(ct.as_slice());
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        AeadKey::new(&shared).seal(&nonce, &out, &mut body)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a blob that [`parse_blob`] framed for this key.
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidCiphertext` for anything that does not authenticate.
    pub fn open(&self, blob: &PqBlob<'_>) -> KmsResult<Zeroizing<Vec<u8>>> {
        let ct = ml_kem::Ciphertext::<MlKem768>::try_from(blob.kem_ciphertext)
            .map_err(|_| bad_blob())?;
        // ML-KEM decapsulation never fails: a wrong ciphertext gives a pseudo-random
        // key (implicit rejection), which the AEAD tag then refuses.
        let shared = Zeroizing::new(<[u8; KEY_LEN]>::from(self.dk.decapsulate(&ct)));
        let mut buf = Zeroizing::new(blob.sealed.to_vec());
        let pt = AeadKey::new(&shared)
            .open(&blob.nonce, blob.header, &mut buf)
            .ok_or_else(bad_blob)?;
        Ok(Zeroizing::new(pt.to_vec()))
    }
}

/// A post-quantum blob split into its parts (nothing verified yet but the framing).
#[derive(Debug, Clone, Copy)]
pub struct PqBlob<'a> {
    /// The key that sealed it.
    pub key_id: &'a str,
    /// The key version.
    pub key_version: u32,
    /// The ML-KEM ciphertext.
    pub kem_ciphertext: &'a [u8],
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The associated data.
    pub header: &'a [u8],
    /// `ciphertext ‖ tag`.
    pub sealed: &'a [u8],
}

/// Frames a post-quantum blob. Never panics, whatever the input.
///
/// # Errors
/// `InvalidParameterValue.InvalidCiphertext` for anything that is not one.
pub fn parse_blob(blob: &[u8]) -> KmsResult<PqBlob<'_>> {
    if blob.len() < 4 || blob[..2] != BLOB_MAGIC || blob[2] != PQ_BLOB_VERSION {
        return Err(bad_blob());
    }
    let l = blob[3] as usize;
    if l == 0 || l > MAX_KEY_ID_LEN {
        return Err(bad_blob());
    }
    let header_len = 4 + l + 4 + KEM_CIPHERTEXT_LEN + NONCE_LEN;
    if blob.len() < header_len + TAG_LEN {
        return Err(bad_blob());
    }
    let key_id = std::str::from_utf8(&blob[4..4 + l])
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(bad_blob)?;
    let mut v = [0u8; 4];
    v.copy_from_slice(&blob[4 + l..8 + l]);
    let kem_at = 8 + l;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&blob[kem_at + KEM_CIPHERTEXT_LEN..header_len]);
    Ok(PqBlob {
        key_id,
        key_version: u32::from_be_bytes(v),
        kem_ciphertext: &blob[kem_at..kem_at + KEM_CIPHERTEXT_LEN],
        nonce,
        header: &blob[..header_len],
        sealed: &blob[header_len..],
    })
}

/// An ML-DSA-65 signing key.
pub struct DsaKey {
    seed: Zeroizing<[u8; DSA_SEED_LEN]>,
    sk: ml_dsa::SigningKey<MlDsa65>,
}

impl fmt::Debug for DsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DsaKey(ML-DSA-65, <secret>)")
    }
}

impl DsaKey {
    /// A new random key.
    ///
    /// # Errors
    /// `InternalError` when the system RNG fails.
    pub fn generate() -> KmsResult<DsaKey> {
        let mut seed = Zeroizing::new([0u8; DSA_SEED_LEN]);
        crypto::random_bytes(&mut seed[..])?;
        Self::from_seed(&seed[..]).ok_or_else(|| internal("ML-DSA key generation failed"))
    }

    /// The key of a stored seed; `None` unless it is 32 bytes.
    pub fn from_seed(seed: &[u8]) -> Option<DsaKey> {
        let seed: [u8; DSA_SEED_LEN] = seed.try_into().ok()?;
        let sk = ml_dsa::SigningKey::<MlDsa65>::from_seed(&seed.into());
        Some(DsaKey {
            seed: Zeroizing::new(seed),
            sk,
        })
    }

    /// The seed, for the store.
    pub fn seed(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.seed.to_vec())
    }

    /// The verifying key as DER SubjectPublicKeyInfo (OID id-ml-dsa-65).
    ///
    /// # Errors
    /// `InternalError` if encoding fails.
    pub fn public_key_der(&self) -> KmsResult<Vec<u8>> {
        let vk: &ml_dsa::VerifyingKey<MlDsa65> = self.sk.as_ref();
        vk.to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| internal("cannot encode the ML-DSA public key"))
    }

    /// A hedged (randomized) ML-DSA signature of `message`, empty context.
    ///
    /// # Errors
    /// `FailedOperation.SignError` when the RNG or the signer fails.
    pub fn sign(&self, message: &[u8]) -> KmsResult<Vec<u8>> {
        self.sk
            .expanded_key()
            .sign_randomized(message, &[], &mut crate::asym::SysRng)
            .map(|s| s.encode().to_vec())
            .map_err(|_| {
                KmsError::new(ErrorCode::FailedOperationSignError, "ML-DSA signing failed")
            })
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ml_dsa::Signature::<MlDsa65>::try_from(signature) else {
            return false;
        };
        let vk: &ml_dsa::VerifyingKey<MlDsa65> = self.sk.as_ref();
        vk.verify_with_context(message, &[], &sig)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kem_blob_round_trips_and_refuses_every_flipped_byte_class() {
        let k = KemKey::generate().unwrap();
        let blob = k.seal("k-1", 1, b"post-quantum secret").unwrap();
        let p = parse_blob(&blob).unwrap();
        assert_eq!((p.key_id, p.key_version), ("k-1", 1));
        assert_eq!(&k.open(&p).unwrap()[..], b"post-quantum secret");
        // The key from its stored seed opens it too.
        let again = KemKey::from_seed(&k.seed()).unwrap();
        assert_eq!(&again.open(&p).unwrap()[..], b"post-quantum secret");
        // A flipped byte in the version, the KEM ciphertext, the nonce, the body or the tag.
        for at in [
            8,
            12,
            600,
            4 + 3 + 4 + KEM_CIPHERTEXT_LEN + 3,
            blob.len() - 20,
            blob.len() - 1,
        ] {
            let mut bad = blob.clone();
            bad[at] ^= 1;
            let r = parse_blob(&bad).and_then(|p| k.open(&p));
            assert_eq!(
                r.unwrap_err().code,
                ErrorCode::InvalidParameterValueInvalidCiphertext,
                "byte {at}"
            );
        }
        // Another key cannot open it.
        let other = KemKey::generate().unwrap();
        assert!(other.open(&parse_blob(&blob).unwrap()).is_err());
        // Framing: every prefix is refused without a panic.
        for n in 0..blob.len() {
            let _ = parse_blob(&blob[..n]).and_then(|p| k.open(&p));
        }
        assert!(k.public_key_der().unwrap().len() > 1184);
    }

    #[test]
    fn dsa_signs_and_verifies_and_refuses_a_changed_message_or_signature() {
        let k = DsaKey::generate().unwrap();
        let sig = k.sign(b"message").unwrap();
        assert_eq!(sig.len(), DSA_SIGNATURE_LEN);
        assert!(k.verify(b"message", &sig));
        let again = DsaKey::from_seed(&k.seed()).unwrap();
        assert!(again.verify(b"message", &sig));
        assert!(!k.verify(b"messagf", &sig));
        let mut bad = sig.clone();
        bad[100] ^= 1;
        assert!(!k.verify(b"message", &bad));
        assert!(!k.verify(b"message", &sig[..100]));
        assert!(!DsaKey::generate().unwrap().verify(b"message", &sig));
        assert!(k.public_key_der().unwrap().len() > 1952);
    }
}

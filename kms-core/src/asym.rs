//! Asymmetric key material: RSA-2048 (decryption with OAEP-SHA256, OAEP-SHA1 and
//! PKCS#1 v1.5; signatures with PSS and PKCS#1 v1.5 over SHA-256), ECDSA P-256
//! with SHA-256 and SM2DSA signatures, as `openssl` produces and checks them.
//!
//! The second crypto seam of kms-core, beside [`crate::crypto`]: `rsa` 0.10 (the
//! constant-time release, RUSTSEC-2023-0071) and `p256` 0.14, with the system RNG
//! of [`crate::crypto::random_bytes`].
//!
//! # Security
//! - Private keys zeroize on drop and never reach `Debug`, logs or errors.
//! - Every RSA decryption failure is one [`DecryptFailed`] without detail. PKCS#1
//!   v1.5 decryption never fails on bad padding: `rsa` 0.10 answers with a
//!   deterministic synthetic plaintext (implicit rejection), so a padding oracle
//!   sees a plaintext either way. docs/THREAT-MODEL.md, "KMS: RSA private-key
//!   operations", says what remains.

use std::fmt;

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rsa::rand_core::{TryCryptoRng, TryRng};
use rsa::{Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, PrivateKey, Pss};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::{ErrorCode, KmsError, KmsResult};

/// RSA modulus size of ASYMMETRIC_*_RSA_2048 keys and of the BYOK wrapping key.
pub const RSA_BITS: usize = 2048;
/// RSA-2048 ciphertext and signature length in bytes.
pub const RSA_LEN: usize = RSA_BITS / 8;
/// SHA-256 digest length (MessageType DIGEST).
pub const DIGEST_LEN: usize = 32;

/// The system CSPRNG (ring's, via [`crate::crypto::random_bytes`]) as a `rand_core`
/// RNG for key generation, blinding and salts.
pub(crate) struct SysRng;

/// The system RNG failed.
#[derive(Debug)]
pub(crate) struct RngFailed;

impl fmt::Display for RngFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the system random number generator failed")
    }
}

impl std::error::Error for RngFailed {}

impl TryRng for SysRng {
    type Error = RngFailed;

    fn try_next_u32(&mut self) -> Result<u32, RngFailed> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RngFailed> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngFailed> {
        crate::crypto::random_bytes(dst).map_err(|_| RngFailed)
    }
}

impl TryCryptoRng for SysRng {}

fn internal(msg: &str) -> KmsError {
    KmsError::new(ErrorCode::InternalError, msg)
}

/// An RSA decryption failed. Carries nothing: every cause looks the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptFailed;

/// The RSA encryption schemes of AsymmetricRsaDecrypt and GetParametersForImport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaEncryption {
    /// `RSAES_OAEP_SHA_256`: OAEP, SHA-256 for the label hash and MGF1 (openssl
    /// `-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256`, with or without
    /// `rsa_mgf1_md:sha256`).
    OaepSha256,
    /// `RSAES_OAEP_SHA_1`: OAEP with SHA-1 (openssl `rsa_oaep_md:sha1`).
    OaepSha1,
    /// `RSAES_PKCS1_V1_5` (openssl `rsa_padding_mode:pkcs1`), with implicit rejection.
    Pkcs1V15,
}

impl RsaEncryption {
    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<RsaEncryption> {
        match s {
            "RSAES_OAEP_SHA_256" => Some(RsaEncryption::OaepSha256),
            "RSAES_OAEP_SHA_1" => Some(RsaEncryption::OaepSha1),
            "RSAES_PKCS1_V1_5" => Some(RsaEncryption::Pkcs1V15),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RsaEncryption::OaepSha256 => "RSAES_OAEP_SHA_256",
            RsaEncryption::OaepSha1 => "RSAES_OAEP_SHA_1",
            RsaEncryption::Pkcs1V15 => "RSAES_PKCS1_V1_5",
        }
    }
}

/// The DER inside a PEM block (its `-----` lines dropped), or of plain base64.
fn pem_or_base64_der(key: &str) -> KmsResult<Vec<u8>> {
    use base64::Engine as _;
    let body: String = key
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| {
            KmsError::new(
                ErrorCode::InvalidParameterValue,
                "EncryptionPublicKey: not PEM or base64",
            )
        })
}

/// Encrypts `plaintext` to a caller's RSA public key (GenerateDataKey's and Decrypt's
/// `EncryptionPublicKey`): `key` is PEM (`PUBLIC KEY`, SubjectPublicKeyInfo, or `RSA
/// PUBLIC KEY`, PKCS#1) or the base64 of either DER, of 2048 to 4096 bits.
///
/// # Errors
/// `InvalidParameterValue` for a key that does not parse or has another size;
/// `InternalError` if the RNG fails.
pub fn encrypt_to_public_key(
    key: &str,
    scheme: RsaEncryption,
    plaintext: &[u8],
) -> KmsResult<Vec<u8>> {
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let bad = |why: &str| {
        KmsError::new(
            ErrorCode::InvalidParameterValue,
            format!("EncryptionPublicKey: {why}"),
        )
    };
    let der = pem_or_base64_der(key)?;
    let pk = rsa::PublicKey::from_public_key_der(&der)
        .or_else(|_| rsa::PublicKey::from_pkcs1_der(&der))
        .map_err(|_| bad("not an RSA public key (SubjectPublicKeyInfo or PKCS#1)"))?;
    if !(2048..=4096).contains(&(pk.n().bit_width() as usize)) {
        return Err(bad("an RSA key of 2048 to 4096 bits is needed"));
    }
    let r = match scheme {
        RsaEncryption::OaepSha256 => pk.encrypt(&mut SysRng, Oaep::<Sha256>::new(), plaintext),
        RsaEncryption::OaepSha1 => pk.encrypt(&mut SysRng, Oaep::<sha1::Sha1>::new(), plaintext),
        RsaEncryption::Pkcs1V15 => pk.encrypt(&mut SysRng, Pkcs1v15Encrypt, plaintext),
    };
    r.map_err(|_| internal("RSA encryption to the caller's key failed"))
}

/// Encrypts `plaintext` to a caller's SM2 public key (PEM or base64 DER
/// SubjectPublicKeyInfo): `asn1` gives the C1C3C2 ASN.1 layout (`SM2_C1C3C2_ASN1`), else
/// the raw concatenation C1 ‖ C3 ‖ C2 (`SM2`, C1 an uncompressed point).
///
/// # Errors
/// `InvalidParameterValue` for a key that does not parse; `InternalError` if the RNG or
/// the encryption fails.
pub fn sm2_encrypt_to_public_key(key: &str, asn1: bool, plaintext: &[u8]) -> KmsResult<Vec<u8>> {
    use sm2::pkcs8::DecodePublicKey as _;
    let der = pem_or_base64_der(key)?;
    let pk = sm2::PublicKey::from_public_key_der(&der).map_err(|_| {
        KmsError::new(
            ErrorCode::InvalidParameterValue,
            "EncryptionPublicKey: not an SM2 public key (SubjectPublicKeyInfo)",
        )
    })?;
    let ek = sm2::pke::EncryptingKey::new(pk);
    let r = if asn1 {
        ek.encrypt_der(&mut SysRng, plaintext)
    } else {
        ek.encrypt(&mut SysRng, plaintext)
    };
    r.map_err(|_| internal("SM2 encryption to the caller's key failed"))
}

/// The signature algorithms of SignByAsymmetricKey / VerifyByAsymmetricKey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignAlgorithm {
    /// `RSA_PSS_SHA_256`: RSASSA-PSS, SHA-256, MGF1-SHA-256; signs with a 32-byte
    /// salt, verifies any salt length (openssl signs with the maximum by default).
    RsaPssSha256,
    /// `RSA_PKCS1_SHA_256`: RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// `ECC_P256_R1`: ECDSA over NIST P-256 with SHA-256, DER-encoded signatures.
    EccP256,
    /// `SM2DSA`: SM2 signatures (GM/T 0003-2012) with SM3 and the distinguishing
    /// id [`SM2_DISTID`], DER-encoded. RAW messages are hashed as SM3(Z ‖ M); a
    /// DIGEST is that 32-byte value.
    Sm2Dsa,
}

/// The SM2 distinguishing identifier (GM/T 0009 default; gmssl `-id`, openssl
/// `-pkeyopt distid:`).
pub const SM2_DISTID: &str = "1234567812345678";

impl SignAlgorithm {
    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<SignAlgorithm> {
        match s {
            "RSA_PSS_SHA_256" => Some(SignAlgorithm::RsaPssSha256),
            "RSA_PKCS1_SHA_256" => Some(SignAlgorithm::RsaPkcs1Sha256),
            "ECC_P256_R1" => Some(SignAlgorithm::EccP256),
            "SM2DSA" => Some(SignAlgorithm::Sm2Dsa),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SignAlgorithm::RsaPssSha256 => "RSA_PSS_SHA_256",
            SignAlgorithm::RsaPkcs1Sha256 => "RSA_PKCS1_SHA_256",
            SignAlgorithm::EccP256 => "ECC_P256_R1",
            SignAlgorithm::Sm2Dsa => "SM2DSA",
        }
    }
}

/// SHA-256(data), the digest every signature algorithm here signs.
pub fn sha256(data: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(data).into()
}

/// PEM of a DER SubjectPublicKeyInfo: `-----BEGIN PUBLIC KEY-----`, 64-column
/// base64, a final newline (as openssl writes it).
pub fn public_key_pem(spki_der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut s = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END PUBLIC KEY-----\n");
    s
}

/// An RSA-2048 private key. `Debug` shows nothing; zeroized on drop (by `rsa`).
pub struct RsaKey(PrivateKey);

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaKey").finish_non_exhaustive()
    }
}

impl RsaKey {
    /// A fresh RSA-2048 key (e = 65537) from the system RNG.
    ///
    /// # Errors
    /// `InternalError` if the RNG fails.
    pub fn generate() -> KmsResult<RsaKey> {
        PrivateKey::new(&mut SysRng, RSA_BITS)
            .map(RsaKey)
            .map_err(|_| internal("RSA key generation failed"))
    }

    /// The key as PKCS#8 DER (what the store wraps). **Secret.**
    ///
    /// # Errors
    /// `InternalError` if encoding fails.
    pub fn to_pkcs8_der(&self) -> KmsResult<Zeroizing<Vec<u8>>> {
        self.0
            .to_pkcs8_der()
            .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|_| internal("RSA key encoding failed"))
    }

    /// Parses PKCS#8 DER; only 2048-bit keys are accepted.
    pub fn from_pkcs8_der(der: &[u8]) -> Option<RsaKey> {
        use rsa::traits::PublicKeyParts as _;
        let k = PrivateKey::from_pkcs8_der(der).ok()?;
        (k.size() == RSA_LEN).then_some(RsaKey(k))
    }

    /// The public key as DER SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// `InternalError` if encoding fails.
    pub fn public_key_der(&self) -> KmsResult<Vec<u8>> {
        self.0
            .to_public_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| internal("RSA public key encoding failed"))
    }

    /// Decrypts `ciphertext` (exactly [`RSA_LEN`] bytes) with blinding.
    ///
    /// # Errors
    /// [`DecryptFailed`] for every cause, with no detail. PKCS#1 v1.5 with bad
    /// padding does not fail: it returns a synthetic plaintext (implicit rejection).
    pub fn decrypt(
        &self,
        scheme: RsaEncryption,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptFailed> {
        if ciphertext.len() != RSA_LEN {
            return Err(DecryptFailed);
        }
        let r = match scheme {
            RsaEncryption::OaepSha256 => {
                self.0
                    .decrypt_blinded(&mut SysRng, Oaep::<Sha256>::new(), ciphertext)
            }
            RsaEncryption::OaepSha1 => {
                self.0
                    .decrypt_blinded(&mut SysRng, Oaep::<sha1::Sha1>::new(), ciphertext)
            }
            RsaEncryption::Pkcs1V15 => {
                self.0
                    .decrypt_blinded(&mut SysRng, Pkcs1v15Encrypt, ciphertext)
            }
        };
        r.map(Zeroizing::new).map_err(|_| DecryptFailed)
    }

    /// Signs a SHA-256 digest (blinded; PSS with a 32-byte random salt).
    ///
    /// # Errors
    /// `FailedOperation.SignError` for an ECC algorithm or a failed operation.
    pub fn sign_digest(&self, alg: SignAlgorithm, digest: &[u8; DIGEST_LEN]) -> KmsResult<Vec<u8>> {
        let r = match alg {
            SignAlgorithm::RsaPssSha256 => {
                self.0
                    .sign_with_rng(&mut SysRng, Pss::<Sha256>::new(), digest)
            }
            SignAlgorithm::RsaPkcs1Sha256 => {
                self.0
                    .sign_with_rng(&mut SysRng, Pkcs1v15Sign::new::<Sha256>(), digest)
            }
            SignAlgorithm::EccP256 | SignAlgorithm::Sm2Dsa => {
                return Err(KmsError::new(
                    ErrorCode::FailedOperationSignError,
                    "an RSA key signs only with RSA_PSS_SHA_256 or RSA_PKCS1_SHA_256",
                ))
            }
        };
        r.map_err(|_| KmsError::new(ErrorCode::FailedOperationSignError, "RSA signing failed"))
    }

    /// Whether `sig` is a valid signature of `digest` (PSS: any salt length).
    pub fn verify_digest(&self, alg: SignAlgorithm, digest: &[u8; DIGEST_LEN], sig: &[u8]) -> bool {
        let public = self.0.as_public_key();
        match alg {
            SignAlgorithm::RsaPssSha256 => {
                let pss = Pss::<Sha256> {
                    blinded: false,
                    digest: Sha256::new(),
                    salt_len: None,
                };
                public.verify(pss, digest, sig).is_ok()
            }
            SignAlgorithm::RsaPkcs1Sha256 => public
                .verify(Pkcs1v15Sign::new::<Sha256>(), digest, sig)
                .is_ok(),
            SignAlgorithm::EccP256 | SignAlgorithm::Sm2Dsa => false,
        }
    }
}

/// An ECDSA P-256 private key. `Debug` shows nothing; zeroized on drop (by `p256`).
pub struct EcKey(p256::ecdsa::SigningKey);

impl fmt::Debug for EcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcKey").finish_non_exhaustive()
    }
}

impl EcKey {
    /// A fresh P-256 key from the system RNG.
    ///
    /// # Errors
    /// `InternalError` if the RNG fails.
    pub fn generate() -> KmsResult<EcKey> {
        use rsa::Generate as _;
        p256::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng)
            .map(EcKey)
            .map_err(|_| internal("the system random number generator failed"))
    }

    /// The key as PKCS#8 DER (what the store wraps). **Secret.**
    ///
    /// # Errors
    /// `InternalError` if encoding fails.
    pub fn to_pkcs8_der(&self) -> KmsResult<Zeroizing<Vec<u8>>> {
        self.0
            .to_pkcs8_der()
            .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|_| internal("EC key encoding failed"))
    }

    /// Parses PKCS#8 DER of a P-256 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Option<EcKey> {
        p256::ecdsa::SigningKey::from_pkcs8_der(der).ok().map(EcKey)
    }

    /// The public key as DER SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// `InternalError` if encoding fails.
    pub fn public_key_der(&self) -> KmsResult<Vec<u8>> {
        self.0
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| internal("EC public key encoding failed"))
    }

    /// Signs a SHA-256 digest: a DER ECDSA signature (RFC 6979 nonce).
    ///
    /// # Errors
    /// `FailedOperation.SignError` for an RSA algorithm or a failed operation.
    pub fn sign_digest(&self, alg: SignAlgorithm, digest: &[u8; DIGEST_LEN]) -> KmsResult<Vec<u8>> {
        if alg != SignAlgorithm::EccP256 {
            return Err(KmsError::new(
                ErrorCode::FailedOperationSignError,
                "an ECC key signs only with ECC_P256_R1",
            ));
        }
        let sig: p256::ecdsa::DerSignature = self.0.sign_prehash(digest).map_err(|_| {
            KmsError::new(ErrorCode::FailedOperationSignError, "ECDSA signing failed")
        })?;
        Ok(sig.as_bytes().to_vec())
    }

    /// Whether `sig` (DER) is a valid signature of `digest`.
    pub fn verify_digest(&self, alg: SignAlgorithm, digest: &[u8; DIGEST_LEN], sig: &[u8]) -> bool {
        if alg != SignAlgorithm::EccP256 {
            return false;
        }
        match p256::ecdsa::DerSignature::from_bytes(sig) {
            Ok(s) => self.0.verifying_key().verify_prehash(digest, &s).is_ok(),
            Err(_) => false,
        }
    }
}

/// An SM2 private key: the 32-byte secret scalar, zeroized on drop.
///
/// # Security
/// `sm2` 0.14's `SigningKey` does not zeroize its scalar when dropped, so none is
/// kept: one is made on the stack for each signature and dropped at once.
pub struct Sm2Key {
    secret: Zeroizing<[u8; 32]>,
    public: sm2::dsa::VerifyingKey,
}

impl fmt::Debug for Sm2Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm2Key").finish_non_exhaustive()
    }
}

impl Sm2Key {
    /// A fresh SM2 key from the system RNG.
    ///
    /// # Errors
    /// `InternalError` if the RNG fails.
    pub fn generate() -> KmsResult<Sm2Key> {
        for _ in 0..16 {
            let mut secret = Zeroizing::new([0u8; 32]);
            crate::crypto::random_bytes(&mut secret[..])?;
            if let Some(k) = Sm2Key::from_secret(&secret[..]) {
                return Ok(k);
            }
        }
        Err(internal("SM2 key generation failed"))
    }

    /// The key from its 32-byte secret scalar (what the store wraps).
    pub fn from_secret(secret: &[u8]) -> Option<Sm2Key> {
        let sk = sm2::dsa::SigningKey::from_slice(SM2_DISTID, secret).ok()?;
        let mut s = Zeroizing::new([0u8; 32]);
        s.copy_from_slice(secret);
        Some(Sm2Key {
            secret: s,
            public: sk.verifying_key().clone(),
        })
    }

    /// Decrypts an SM2 ciphertext in the C1C3C2 ASN.1 layout (GM/T 0009: `SEQUENCE {
    /// x, y, hash, ciphertext }`, what `openssl pkeyutl -encrypt` makes with an SM2 key and
    /// what AsymmetricSm2Decrypt takes).
    ///
    /// # Errors
    /// [`DecryptFailed`] for every cause, with no detail.
    ///
    /// # Security
    /// As for signatures, `sm2`'s `DecryptingKey` does not zeroize its scalar: one lives
    /// on the stack for this call only.
    pub fn decrypt_der(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptFailed> {
        let dk =
            sm2::pke::DecryptingKey::from_slice(&self.secret[..]).map_err(|_| DecryptFailed)?;
        dk.decrypt_der(ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| DecryptFailed)
    }

    /// The 32-byte secret scalar. **Secret.**
    pub fn secret(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_vec())
    }

    /// The public key as DER SubjectPublicKeyInfo (id-ecPublicKey, curve SM2).
    ///
    /// # Errors
    /// `InternalError` if encoding fails.
    pub fn public_key_der(&self) -> KmsResult<Vec<u8>> {
        self.public
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| internal("SM2 public key encoding failed"))
    }

    /// Signs a RAW message (SM3(Z ‖ M) is computed here) or a 32-byte DIGEST;
    /// a DER signature.
    ///
    /// # Errors
    /// `FailedOperation.SignError` for another algorithm or a failed operation.
    pub fn sign(&self, alg: SignAlgorithm, msg: &[u8], is_digest: bool) -> KmsResult<Vec<u8>> {
        use sm2::dsa::signature::Signer as _;
        let fail = |m: &str| KmsError::new(ErrorCode::FailedOperationSignError, m);
        if alg != SignAlgorithm::Sm2Dsa {
            return Err(fail("an SM2 key signs only with SM2DSA"));
        }
        let sk = sm2::dsa::SigningKey::from_slice(SM2_DISTID, &self.secret[..])
            .map_err(|_| fail("damaged SM2 key"))?;
        let sig: sm2::dsa::Signature = if is_digest {
            sk.sign_prehash(msg)
        } else {
            sk.try_sign(msg)
        }
        .map_err(|_| fail("SM2 signing failed"))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    /// Whether `sig` (DER) is an SM2DSA signature of the RAW message or DIGEST.
    pub fn verify(&self, alg: SignAlgorithm, msg: &[u8], is_digest: bool, sig: &[u8]) -> bool {
        use sm2::dsa::signature::Verifier as _;
        if alg != SignAlgorithm::Sm2Dsa {
            return false;
        }
        let Ok(s) = sm2::dsa::Signature::from_der(sig) else {
            return false;
        };
        if is_digest {
            self.public.verify_prehash(msg, &s).is_ok()
        } else {
            self.public.verify(msg, &s).is_ok()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_round_trip_and_pem_shape() {
        let k = EcKey::generate().unwrap();
        let d = sha256(b"test");
        let sig = k.sign_digest(SignAlgorithm::EccP256, &d).unwrap();
        assert!(k.verify_digest(SignAlgorithm::EccP256, &d, &sig));
        assert!(!k.verify_digest(SignAlgorithm::EccP256, &sha256(b"tesu"), &sig));
        let der = k.to_pkcs8_der().unwrap();
        let k2 = EcKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(k2.public_key_der().unwrap(), k.public_key_der().unwrap());
        let pem = public_key_pem(&k.public_key_der().unwrap());
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(format!("{k:?}").len() < 20);
    }
}

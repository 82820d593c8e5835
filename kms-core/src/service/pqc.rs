//! The post-quantum actions: PostQuantumCryptoEncrypt/Decrypt (ML-KEM-768 + AES-256-GCM,
//! `ASYMMETRIC_Encrypt_Decrypt_Kyber_AES` keys) and PostQuantumCryptoSign/Verify
//! (ML-DSA-65, `ASYMMETRIC_SIGN_VERIFY_DILITHIUM` keys). The cryptography is in
//! [`crate::pqc`]; this file holds the wire types and the key-state rules.

use base64::Engine as _;
use serde::Serialize;

use super::{
    check_usage_and_state, decode_b64, err, plaintext_field, require, state_error, KmsService,
    SecretString, B64, ENABLED, ENABLED_OR_ARCHIVED,
};
use crate::key::KeyUsage;
use crate::pqc::{self, DsaKey};
use crate::store::{LoadedKey, Material, Snapshot};
use crate::{CallContext, ErrorCode, KmsResult};

/// The largest PlainText of PostQuantumCryptoEncrypt and Message of
/// PostQuantumCryptoSign (4 KB, as the SDK documents).
pub const MAX_PQ_INPUT: usize = 4096;

tencent_request! {
    /// PostQuantumCryptoEncrypt. Note the capital T of `PlainText`, as the SDK spells it.
    PqEncryptRequest {
        /// A Kyber_AES key.
        key_id: String,
        /// base64 of at most 4 KB. **Secret.**
        plain_text: SecretString,
    }
}

/// PostQuantumCryptoEncrypt's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PqEncryptResponse {
    /// base64 of the opaque blob ([`crate::pqc`]).
    pub ciphertext_blob: String,
    /// The key.
    pub key_id: String,
}

tencent_request! {
    /// PostQuantumCryptoDecrypt: the blob names its key.
    PqDecryptRequest {
        /// base64 of a PostQuantumCryptoEncrypt blob.
        ciphertext_blob: String,
        /// As Decrypt's: the PlainText is returned encrypted to this public key.
        encryption_public_key: String,
        /// As Decrypt's.
        encryption_algorithm: String,
    }
}

/// PostQuantumCryptoDecrypt's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PqDecryptResponse {
    /// The key.
    pub key_id: String,
    /// base64 of the plaintext, or of it encrypted to EncryptionPublicKey. **Secret.**
    pub plain_text: SecretString,
}

tencent_request! {
    /// PostQuantumCryptoSign.
    PqSignRequest {
        /// base64 of at most 4096 bytes (the message itself: ML-DSA signs messages).
        message: String,
        /// A Dilithium key.
        key_id: String,
    }
}

/// PostQuantumCryptoSign's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PqSignResponse {
    /// base64 of the ML-DSA-65 signature.
    pub signature: String,
}

tencent_request! {
    /// PostQuantumCryptoVerify.
    PqVerifyRequest {
        /// A Dilithium key.
        key_id: String,
        /// base64 of a signature.
        signature_value: String,
        /// base64 of the message.
        message: String,
    }
}

/// PostQuantumCryptoVerify's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PqVerifyResponse {
    /// Whether the signature is the key's signature of the message.
    pub signature_valid: bool,
}

fn too_long(what: &str) -> crate::KmsError {
    err(
        ErrorCode::InvalidParameterValue,
        format!("{what} is longer than {MAX_PQ_INPUT} bytes"),
    )
}

impl KmsService {
    /// PostQuantumCryptoEncrypt: seals PlainText for an Enabled Kyber_AES key.
    ///
    /// # Errors
    /// `InvalidParameterValue` (not base64, over 4 KB), `.InvalidKeyUsage`, the key's
    /// state error.
    pub fn post_quantum_crypto_encrypt(
        &self,
        ctx: &CallContext,
        req: PqEncryptRequest,
    ) -> KmsResult<PqEncryptResponse> {
        self.audited_key(ctx, "PostQuantumCryptoEncrypt", &req.key_id, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let pt = decode_b64(
                req.plain_text
                    .as_deref()
                    .ok_or_else(|| err(ErrorCode::MissingParameter, "PlainText is required"))?,
                ErrorCode::InvalidParameterValue,
                "PlainText",
            )?;
            if pt.len() > MAX_PQ_INPUT {
                return Err(too_long("PlainText"));
            }
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_usage_and_state(
                &k.rec,
                &[KeyUsage::AsymmetricEncryptDecryptKyberAes],
                "PostQuantumCryptoEncrypt",
                ENABLED,
            )?;
            let Material::Kem(kem) = Self::asym_material(k)? else {
                return Err(state_error(&k.rec));
            };
            let blob = kem.seal(&k.rec.key_id, k.rec.current_version(), &pt)?;
            Ok((
                PqEncryptResponse {
                    ciphertext_blob: B64.encode(blob),
                    key_id: k.rec.key_id.clone(),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// PostQuantumCryptoDecrypt: opens a blob of PostQuantumCryptoEncrypt (the key may
    /// be Enabled or Archived, as for Decrypt).
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidCiphertext` for a blob that is not one or does not
    /// authenticate; the key's state error; EncryptionPublicKey's errors.
    pub fn post_quantum_crypto_decrypt(
        &self,
        ctx: &CallContext,
        req: PqDecryptRequest,
    ) -> KmsResult<PqDecryptResponse> {
        self.audited(ctx, "PostQuantumCryptoDecrypt", "", |now| {
            let raw = super::decode_blob(require(&req.ciphertext_blob, "CiphertextBlob")?)?;
            let (pk, alg) = (
                req.encryption_public_key.as_deref(),
                req.encryption_algorithm.as_deref(),
            );
            // Checked before the key is used: a refused algorithm decrypts nothing.
            plaintext_field(b"check", pk, alg)?;
            let blob = pqc::parse_blob(&raw)?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, blob.key_id, now)?;
            check_usage_and_state(
                &k.rec,
                &[KeyUsage::AsymmetricEncryptDecryptKyberAes],
                "PostQuantumCryptoDecrypt",
                ENABLED_OR_ARCHIVED,
            )?;
            let material = (blob.key_version as usize)
                .checked_sub(1)
                .and_then(|i| k.material.get(i))
                .ok_or_else(|| {
                    err(
                        ErrorCode::InvalidParameterValueInvalidCiphertext,
                        "CiphertextBlob names a key version this key does not have",
                    )
                })?;
            let Material::Kem(kem) = &**material else {
                return Err(state_error(&k.rec));
            };
            let pt = kem.open(&blob)?;
            Ok((
                PqDecryptResponse {
                    key_id: k.rec.key_id.clone(),
                    plain_text: plaintext_field(&pt, pk, alg)?,
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// PostQuantumCryptoSign: an ML-DSA-65 signature of Message by an Enabled
    /// Dilithium key.
    ///
    /// # Errors
    /// `InvalidParameterValue` (not base64, over 4096 bytes), `.InvalidKeyUsage`, the
    /// key's state error.
    pub fn post_quantum_crypto_sign(
        &self,
        ctx: &CallContext,
        req: PqSignRequest,
    ) -> KmsResult<PqSignResponse> {
        self.audited_key(ctx, "PostQuantumCryptoSign", &req.key_id, |now| {
            let (k_id, msg) = self.dsa_inputs(&req.key_id, &req.message)?;
            let snap = self.fresh(now)?;
            let (k, dsa) = Self::enabled_dsa_key(&snap, k_id, now, "PostQuantumCryptoSign")?;
            Ok((
                PqSignResponse {
                    signature: B64.encode(dsa.sign(&msg)?),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// PostQuantumCryptoVerify: whether SignatureValue is the key's signature of
    /// Message (Enabled keys).
    ///
    /// # Errors
    /// As PostQuantumCryptoSign; a malformed signature is `SignatureValid: false`.
    pub fn post_quantum_crypto_verify(
        &self,
        ctx: &CallContext,
        req: PqVerifyRequest,
    ) -> KmsResult<PqVerifyResponse> {
        self.audited_key(ctx, "PostQuantumCryptoVerify", &req.key_id, |now| {
            let (k_id, msg) = self.dsa_inputs(&req.key_id, &req.message)?;
            let sig = decode_b64(
                require(&req.signature_value, "SignatureValue")?,
                ErrorCode::InvalidParameterValue,
                "SignatureValue",
            )?;
            let snap = self.fresh(now)?;
            let (k, dsa) = Self::enabled_dsa_key(&snap, k_id, now, "PostQuantumCryptoVerify")?;
            Ok((
                PqVerifyResponse {
                    signature_valid: dsa.verify(&msg, &sig),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// The Enabled Dilithium key `key` names and its ML-DSA material, for `action`
    /// (PostQuantumCryptoSign or PostQuantumCryptoVerify).
    fn enabled_dsa_key<'a>(
        snap: &'a Snapshot,
        key: &str,
        now: u64,
        action: &str,
    ) -> KmsResult<(&'a LoadedKey, &'a DsaKey)> {
        let k = Self::lookup(snap, key, now)?;
        check_usage_and_state(
            &k.rec,
            &[KeyUsage::AsymmetricSignVerifyDilithium],
            action,
            ENABLED,
        )?;
        let Material::Dsa(dsa) = Self::asym_material(k)? else {
            return Err(state_error(&k.rec));
        };
        Ok((k, dsa))
    }

    /// KeyId and the decoded Message of a sign or verify request.
    fn dsa_inputs<'a>(
        &self,
        key_id: &'a Option<String>,
        message: &Option<String>,
    ) -> KmsResult<(&'a str, Vec<u8>)> {
        let key = require(key_id, "KeyId")?;
        let msg = decode_b64(
            require(message, "Message")?,
            ErrorCode::InvalidParameterValue,
            "Message",
        )?;
        if msg.is_empty() {
            return Err(err(ErrorCode::InvalidParameterValue, "Message is empty"));
        }
        if msg.len() > MAX_PQ_INPUT {
            return Err(too_long("Message"));
        }
        Ok((key, msg.to_vec()))
    }
}

//! Asymmetric keys: ListAlgorithms, GetPublicKey, AsymmetricRsaDecrypt,
//! AsymmetricSm2Decrypt, SignByAsymmetricKey and VerifyByAsymmetricKey.

use super::*;

/// A message to sign or verify, checked: RAW (1–4096 bytes) or a 32-byte DIGEST.
struct Message<'a> {
    bytes: &'a [u8],
    is_digest: bool,
}

impl Message<'_> {
    /// What RSA and ECDSA sign: SHA-256 of a RAW message, or the DIGEST as given.
    fn sha256(&self) -> [u8; asym::DIGEST_LEN] {
        match <[u8; asym::DIGEST_LEN]>::try_from(self.bytes) {
            Ok(d) if self.is_digest => d,
            _ => asym::sha256(self.bytes),
        }
    }
}

/// Checks a message against its MessageType; returns whether it is a DIGEST.
/// RAW: 1–4096 bytes (hashed by the KMS: SHA-256, or SM3(Z ‖ M) for SM2);
/// DIGEST: exactly 32 bytes, as given.
fn check_message(message: &[u8], message_type: Option<&str>) -> KmsResult<bool> {
    match message_type {
        None | Some("") | Some("RAW") => {
            if message.is_empty() || message.len() > MAX_SIGN_MESSAGE {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!(
                        "a RAW Message must be 1 to {MAX_SIGN_MESSAGE} bytes; sign the digest of a longer one with MessageType DIGEST"
                    ),
                ));
            }
            Ok(false)
        }
        Some("DIGEST") if message.len() == asym::DIGEST_LEN => Ok(true),
        Some("DIGEST") => Err(err(
            ErrorCode::InvalidParameterValue,
            format!(
                "a DIGEST Message must be exactly {} bytes, not {}",
                asym::DIGEST_LEN,
                message.len()
            ),
        )),
        Some(t) => Err(err(
            ErrorCode::InvalidParameterValue,
            format!("MessageType must be RAW or DIGEST, not {t:?}"),
        )),
    }
}

/// ListAlgorithms' symmetric encryption: each key usage with its algorithm.
const SYMMETRIC_ALGORITHMS: &[(KeyUsage, &str)] = &[(KeyUsage::EncryptDecrypt, "AES_256")];

/// ListAlgorithms' asymmetric encryption.
const ASYMMETRIC_ALGORITHMS: &[(KeyUsage, &str)] = &[
    (KeyUsage::AsymmetricDecryptRsa2048, "RSA_2048"),
    (KeyUsage::AsymmetricDecryptSm2, "SM2"),
    (KeyUsage::AsymmetricEncryptDecryptKyberAes, "Kyber_AES"),
];

/// ListAlgorithms' signatures.
const SIGN_VERIFY_ALGORITHMS: &[(KeyUsage, &str)] = &[
    (KeyUsage::AsymmetricSignVerifyRsa2048, "RSA_2048"),
    (KeyUsage::AsymmetricSignVerifyEcc, "ECC"),
    (KeyUsage::AsymmetricSignVerifySm2, "SM2"),
    (KeyUsage::AsymmetricSignVerifyDilithium, "Dilithium"),
];

fn algorithm_infos(table: &[(KeyUsage, &str)]) -> Vec<AlgorithmInfo> {
    table
        .iter()
        .map(|(usage, algorithm)| AlgorithmInfo {
            key_usage: usage.as_str().to_owned(),
            algorithm: (*algorithm).to_owned(),
        })
        .collect()
}

impl KmsService {
    /// ListAlgorithms: the key usages and algorithms this KMS supports.
    ///
    /// # Errors
    /// None in practice.
    pub fn list_algorithms(
        &self,
        ctx: &CallContext,
        _req: Empty,
    ) -> KmsResult<ListAlgorithmsResponse> {
        self.audited(ctx, "ListAlgorithms", "", |_| {
            Ok((
                ListAlgorithmsResponse {
                    symmetric_algorithms: algorithm_infos(SYMMETRIC_ALGORITHMS),
                    asymmetric_algorithms: algorithm_infos(ASYMMETRIC_ALGORITHMS),
                    asymmetric_sign_verify_algorithms: algorithm_infos(SIGN_VERIFY_ALGORITHMS),
                },
                String::new(),
            ))
        })
    }

    /// The newest material of an asymmetric key.
    pub(super) fn asym_material(k: &LoadedKey) -> KmsResult<&Material> {
        k.material
            .last()
            .map(|m| &**m)
            .ok_or_else(|| state_error(&k.rec))
    }

    /// GetPublicKey: the public half of an asymmetric key, as base64 DER
    /// SubjectPublicKeyInfo and as PEM.
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidKeyUsage` for a symmetric key; the state error
    /// of a key neither Enabled nor Archived.
    pub fn get_public_key(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<GetPublicKeyResponse> {
        self.audited_key(ctx, "GetPublicKey", &req.key_id, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_usage_and_state(
                &k.rec,
                ASYMMETRIC_USAGES,
                "GetPublicKey",
                ENABLED_OR_ARCHIVED,
            )?;
            let der = match Self::asym_material(k)? {
                Material::Rsa(r) => r.public_key_der()?,
                Material::Ec(e) => e.public_key_der()?,
                Material::Sm2(k) => k.public_key_der()?,
                Material::Kem(k) => k.public_key_der()?,
                Material::Dsa(k) => k.public_key_der()?,
                Material::Aead(_) => return Err(state_error(&k.rec)),
            };
            Ok((
                GetPublicKeyResponse {
                    key_id: k.rec.key_id.clone(),
                    public_key: B64.encode(&der),
                    public_key_pem: asym::public_key_pem(&der),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// AsymmetricRsaDecrypt: decrypts what was encrypted with the public key of an
    /// ASYMMETRIC_DECRYPT_RSA_2048 key.
    ///
    /// # Security
    /// Every failure is the same `FailedOperation.DecryptError`; with
    /// `RSAES_PKCS1_V1_5` bad padding is not a failure at all: the answer is a
    /// synthetic plaintext (implicit rejection, `rsa` 0.10), so the response
    /// cannot serve as a padding oracle (docs/THREAT-MODEL.md).
    ///
    /// # Errors
    /// `InvalidParameterValue` (Algorithm, Ciphertext not base64 or not 256
    /// bytes), `.InvalidKeyUsage`, the key's state error,
    /// `FailedOperation.DecryptError`.
    pub fn asymmetric_rsa_decrypt(
        &self,
        ctx: &CallContext,
        req: AsymmetricRsaDecryptRequest,
    ) -> KmsResult<AsymmetricRsaDecryptResponse> {
        let alg = match req.algorithm.as_deref() {
            None | Some("") => None,
            Some(a) => Some(RsaEncryption::parse(a).ok_or_else(|| {
                err(
                    ErrorCode::InvalidParameterValue,
                    format!("Algorithm must be RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1 or RSAES_PKCS1_V1_5, not {a:?}"),
                )
            })),
        };
        self.asym_decrypt(
            ctx,
            "AsymmetricRsaDecrypt",
            &req.key_id,
            &req.ciphertext,
            KeyUsage::AsymmetricDecryptRsa2048,
            |ct| {
                if ct.len() != asym::RSA_LEN {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!(
                            "Ciphertext must be {} bytes (RSA-2048), not {}",
                            asym::RSA_LEN,
                            ct.len()
                        ),
                    ));
                }
                match &alg {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(err(
                        ErrorCode::MissingParameter,
                        "the parameter Algorithm is required",
                    )),
                }
            },
            |m, ct| match (m, &alg) {
                (Material::Rsa(rsa), Some(Ok(a))) => rsa.decrypt(*a, ct).ok(),
                _ => None,
            },
        )
    }

    /// AsymmetricSm2Decrypt: decrypts a C1C3C2 ASN.1 ciphertext (what `openssl pkeyutl
    /// -encrypt` makes with the key from GetPublicKey) of at most 256 bytes.
    ///
    /// # Errors
    /// `InvalidParameterValue` (not base64, too long), `InvalidParameterValue.InvalidKeyUsage`
    /// (not an ASYMMETRIC_DECRYPT_SM2 key), the key's state error,
    /// `FailedOperation.DecryptError`.
    pub fn asymmetric_sm2_decrypt(
        &self,
        ctx: &CallContext,
        req: AsymmetricSm2DecryptRequest,
    ) -> KmsResult<AsymmetricRsaDecryptResponse> {
        self.asym_decrypt(
            ctx,
            "AsymmetricSm2Decrypt",
            &req.key_id,
            &req.ciphertext,
            KeyUsage::AsymmetricDecryptSm2,
            |ct| {
                if ct.len() > MAX_SM2_CIPHERTEXT {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!(
                            "Ciphertext is {} bytes; at most {MAX_SM2_CIPHERTEXT}",
                            ct.len()
                        ),
                    ));
                }
                Ok(())
            },
            |m, ct| match m {
                Material::Sm2(sm2) => sm2.decrypt_der(ct).ok(),
                _ => None,
            },
        )
    }

    /// The common part of AsymmetricRsaDecrypt and AsymmetricSm2Decrypt: the inputs
    /// (`check` sees the ciphertext first), the key's usage and state (Enabled or
    /// Archived), then `open` with the key's material; `None` from it is
    /// `FailedOperation.DecryptError`.
    #[allow(clippy::too_many_arguments)]
    fn asym_decrypt(
        &self,
        ctx: &CallContext,
        action: &str,
        key_id: &Option<String>,
        ciphertext: &Option<String>,
        usage: KeyUsage,
        check: impl FnOnce(&[u8]) -> KmsResult<()>,
        open: impl FnOnce(&Material, &[u8]) -> Option<Zeroizing<Vec<u8>>>,
    ) -> KmsResult<AsymmetricRsaDecryptResponse> {
        self.audited_key(ctx, action, key_id, |now| {
            let key = require(key_id, "KeyId")?;
            let ct = decode_b64(
                require(ciphertext, "Ciphertext")?,
                ErrorCode::InvalidParameterValue,
                "Ciphertext",
            )?;
            check(&ct)?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_usage_and_state(&k.rec, &[usage], action, ENABLED_OR_ARCHIVED)?;
            let pt = open(Self::asym_material(k)?, &ct).ok_or_else(|| {
                err(
                    ErrorCode::FailedOperationDecryptError,
                    "the Ciphertext does not decrypt under this key",
                )
            })?;
            Ok((
                AsymmetricRsaDecryptResponse {
                    key_id: k.rec.key_id.clone(),
                    plaintext: SecretString::from(B64.encode(&pt[..])),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// Parses a signature Algorithm and checks it fits the key.
    fn sign_algorithm(rec: &KeyRecord, alg: &str) -> KmsResult<SignAlgorithm> {
        let a = SignAlgorithm::parse(alg);
        let fits = matches!(
            (rec.usage, a),
            (
                KeyUsage::AsymmetricSignVerifyRsa2048,
                Some(SignAlgorithm::RsaPssSha256 | SignAlgorithm::RsaPkcs1Sha256),
            ) | (
                KeyUsage::AsymmetricSignVerifyEcc,
                Some(SignAlgorithm::EccP256)
            ) | (
                KeyUsage::AsymmetricSignVerifySm2,
                Some(SignAlgorithm::Sm2Dsa)
            )
        );
        match a {
            Some(a) if fits => Ok(a),
            _ => Err(err(
                ErrorCode::InvalidParameterValue,
                format!(
                    "Algorithm {alg:?} does not fit key {} ({}): RSA keys sign with \
                     RSA_PSS_SHA_256 or RSA_PKCS1_SHA_256, ECC keys with ECC_P256_R1, SM2 keys \
                     with SM2DSA",
                    rec.key_id,
                    rec.usage.as_str()
                ),
            )),
        }
    }

    /// The common part of SignByAsymmetricKey and VerifyByAsymmetricKey: checks the
    /// inputs, the key's usage and state (one of `states`) and the algorithm, then
    /// runs `op` on the key's material, the algorithm and the digest to sign.
    #[allow(clippy::too_many_arguments)]
    fn with_signing_key<R>(
        &self,
        ctx: &CallContext,
        action: &str,
        key_id: &Option<String>,
        algorithm: &Option<String>,
        message: &Option<SecretString>,
        message_type: Option<&str>,
        states: &[KeyState],
        op: impl FnOnce(&Material, SignAlgorithm, &Message<'_>) -> KmsResult<R>,
    ) -> KmsResult<R> {
        self.audited_key(ctx, action, key_id, |now| {
            let key = require(key_id, "KeyId")?;
            let alg_s = require(algorithm, "Algorithm")?;
            let msg = message.as_ref().ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter Message is required",
                )
            })?;
            let msg = decode_b64(msg, ErrorCode::InvalidParameterValue, "Message")?;
            let is_digest = check_message(&msg, message_type)?;
            let message = Message {
                bytes: &msg,
                is_digest,
            };
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_usage_and_state(&k.rec, SIGN_USAGES, action, states)?;
            let alg = Self::sign_algorithm(&k.rec, alg_s)?;
            let r = op(Self::asym_material(k)?, alg, &message)?;
            Ok((r, k.rec.key_id.clone()))
        })
    }

    /// SignByAsymmetricKey: signs a RAW message (≤ 4096 bytes, hashed with
    /// SHA-256 here) or a DIGEST (its 32-byte SHA-256) with an
    /// ASYMMETRIC_SIGN_VERIFY_RSA_2048 or _ECC key, as openssl verifies it.
    ///
    /// # Errors
    /// `InvalidParameterValue` (Algorithm, Message, MessageType),
    /// `.InvalidKeyUsage`, the state error of a key not Enabled,
    /// `FailedOperation.SignError`.
    pub fn sign_by_asymmetric_key(
        &self,
        ctx: &CallContext,
        req: SignByAsymmetricKeyRequest,
    ) -> KmsResult<SignByAsymmetricKeyResponse> {
        self.with_signing_key(
            ctx,
            "SignByAsymmetricKey",
            &req.key_id,
            &req.algorithm,
            &req.message,
            req.message_type.as_deref(),
            &[KeyState::Enabled],
            |m, alg, msg| {
                let sig = match m {
                    Material::Rsa(r) => r.sign_digest(alg, &msg.sha256())?,
                    Material::Ec(e) => e.sign_digest(alg, &msg.sha256())?,
                    Material::Sm2(k) => k.sign(alg, msg.bytes, msg.is_digest)?,
                    Material::Aead(_) | Material::Kem(_) | Material::Dsa(_) => {
                        return Err(err(
                            ErrorCode::FailedOperationSignError,
                            "not a signing key",
                        ))
                    }
                };
                Ok(SignByAsymmetricKeyResponse {
                    signature: B64.encode(sig),
                })
            },
        )
    }

    /// VerifyByAsymmetricKey: whether SignatureValue is a signature of the message
    /// under the key. RSA-PSS signatures of any salt length verify (openssl's
    /// default is the maximum). A malformed signature is simply not valid.
    ///
    /// # Errors
    /// As [`KmsService::sign_by_asymmetric_key`] (Archived keys verify too);
    /// `InvalidParameterValue` when SignatureValue is not base64.
    pub fn verify_by_asymmetric_key(
        &self,
        ctx: &CallContext,
        req: VerifyByAsymmetricKeyRequest,
    ) -> KmsResult<VerifyByAsymmetricKeyResponse> {
        self.with_signing_key(
            ctx,
            "VerifyByAsymmetricKey",
            &req.key_id,
            &req.algorithm,
            &req.message,
            req.message_type.as_deref(),
            &[KeyState::Enabled, KeyState::Archived],
            |m, alg, msg| {
                let sig = decode_b64(
                    require(&req.signature_value, "SignatureValue")?,
                    ErrorCode::InvalidParameterValue,
                    "SignatureValue",
                )?;
                let signature_valid = match m {
                    Material::Rsa(r) => r.verify_digest(alg, &msg.sha256(), &sig),
                    Material::Ec(e) => e.verify_digest(alg, &msg.sha256(), &sig),
                    Material::Sm2(k) => k.verify(alg, msg.bytes, msg.is_digest, &sig),
                    Material::Aead(_) | Material::Kem(_) | Material::Dsa(_) => false,
                };
                Ok(VerifyByAsymmetricKeyResponse { signature_valid })
            },
        )
    }
}

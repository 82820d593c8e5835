//! Symmetric cryptography under a CMK: Encrypt, Decrypt, ReEncrypt,
//! GenerateDataKey, and GenerateRandom.

use super::*;

impl KmsService {
    /// Encrypt: at most 4 KiB under the key's newest version.
    ///
    /// # Errors
    /// The key's state error, `InvalidParameterValue.InvalidPlaintext`,
    /// `InvalidParameterValue` (context).
    pub fn encrypt(&self, ctx: &CallContext, req: EncryptRequest) -> KmsResult<EncryptResponse> {
        self.audited_key(ctx, "Encrypt", &req.key_id, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let pt_b64 = req.plaintext.as_ref().ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter Plaintext is required",
                )
            })?;
            let pt = Zeroizing::new(B64.decode(pt_b64.trim()).map_err(|_| {
                err(
                    ErrorCode::InvalidParameterValueInvalidPlaintext,
                    "Plaintext is not base64",
                )
            })?);
            if pt.is_empty() || pt.len() > MAX_PLAINTEXT {
                return Err(err(
                    ErrorCode::InvalidParameterValueInvalidPlaintext,
                    format!("Plaintext must be 1 to {MAX_PLAINTEXT} bytes"),
                ));
            }
            let context = parse_context(req.encryption_context.as_deref())?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_can_encrypt(&k.rec, now)?;
            let blob = Self::seal_current(k, &pt, &blob::canonical_context(&context))?;
            Ok((
                EncryptResponse {
                    ciphertext_blob: B64.encode(blob),
                    key_id: k.rec.key_id.clone(),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// Decrypt: the blob names its key and version.
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidCiphertext` (malformed, altered, wrong
    /// context, unknown key); the key's state error (`ResourceUnavailable.CmkDisabled`, …).
    pub fn decrypt(&self, ctx: &CallContext, req: DecryptRequest) -> KmsResult<DecryptResponse> {
        self.audited(ctx, "Decrypt", "", |now| {
            let raw = decode_blob(require(&req.ciphertext_blob, "CiphertextBlob")?)?;
            let context = parse_context(req.encryption_context.as_deref())?;
            // Checked before the key is used: a refused algorithm decrypts nothing.
            plaintext_field(
                b"check",
                req.encryption_public_key.as_deref(),
                req.encryption_algorithm.as_deref(),
            )?;
            let snap = self.fresh(now)?;
            let (pt, k) = Self::open_blob(&snap, now, &raw, &context)?;
            Ok((
                DecryptResponse {
                    key_id: k.rec.key_id.clone(),
                    plaintext: plaintext_field(
                        &pt[..],
                        req.encryption_public_key.as_deref(),
                        req.encryption_algorithm.as_deref(),
                    )?,
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// ReEncrypt: opens the blob and seals it again under the destination key's
    /// newest version (the source key by default).
    ///
    /// # Errors
    /// Decrypt's errors for the source; Encrypt's for the destination.
    pub fn re_encrypt(
        &self,
        ctx: &CallContext,
        req: ReEncryptRequest,
    ) -> KmsResult<ReEncryptResponse> {
        self.audited_key(ctx, "ReEncrypt", &req.destination_key_id, |now| {
            let raw = decode_blob(require(&req.ciphertext_blob, "CiphertextBlob")?)?;
            let src_ctx = parse_context(req.source_encryption_context.as_deref())?;
            let dst_ctx = parse_context(req.destination_encryption_context.as_deref())?;
            let snap = self.fresh(now)?;
            let (pt, src) = Self::open_blob(&snap, now, &raw, &src_ctx)?;
            let dst = match req.destination_key_id.as_deref() {
                None | Some("") => src,
                Some(d) => Self::lookup(&snap, d, now)?,
            };
            check_can_encrypt(&dst.rec, now)?;
            // As the service documents: the same key, not rotated since, and the same
            // context is no re-encryption; the blob comes back as it was.
            let current = blob::parse(&raw)?.key_version == dst.rec.current_version();
            let unchanged = dst.rec.key_id == src.rec.key_id
                && current
                && blob::canonical_context(&src_ctx) == blob::canonical_context(&dst_ctx);
            let out = if unchanged {
                raw.to_vec()
            } else {
                Self::seal_current(dst, &pt, &blob::canonical_context(&dst_ctx))?
            };
            Ok((
                ReEncryptResponse {
                    ciphertext_blob: B64.encode(out),
                    key_id: dst.rec.key_id.clone(),
                    source_key_id: src.rec.key_id.clone(),
                    re_encrypted: !unchanged,
                },
                dst.rec.key_id.clone(),
            ))
        })
    }

    fn data_key_len(spec: Option<&str>, n: Option<u64>) -> KmsResult<usize> {
        match (n, spec) {
            (Some(n), _) => {
                if n == 0 || n > MAX_RANDOM as u64 {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!("NumberOfBytes must be 1 to {MAX_RANDOM}"),
                    ));
                }
                Ok(n as usize)
            }
            (None, Some("AES_256")) => Ok(32),
            (None, Some("AES_128")) => Ok(16),
            (None, Some(s)) => Err(err(
                ErrorCode::InvalidParameterValue,
                format!("KeySpec must be AES_128 or AES_256, not {s:?}"),
            )),
            (None, None) => Err(err(
                ErrorCode::MissingParameter,
                "KeySpec or NumberOfBytes is required",
            )),
        }
    }

    pub(super) fn data_key(
        &self,
        now: u64,
        key: &str,
        len: usize,
        context: &EncryptionContext,
    ) -> KmsResult<DataKey> {
        let snap = self.fresh(now)?;
        let k = Self::lookup(&snap, key, now)?;
        check_can_encrypt(&k.rec, now)?;
        // One getrandom for the data key and the blob's nonce.
        let mut dek = Zeroizing::new(vec![0u8; len + NONCE_LEN]);
        crypto::random_bytes(&mut dek)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&dek[len..]);
        dek.truncate(len);
        let blob = Self::seal_current_with(k, &dek, &blob::canonical_context(context), &nonce)?;
        Ok(DataKey {
            key_id: k.rec.key_id.clone(),
            plaintext: dek,
            ciphertext_blob: blob,
        })
    }

    /// GenerateDataKey: a random data key, in plaintext and sealed under the CMK.
    ///
    /// # Errors
    /// The key's state error; `InvalidParameterValue` (size, context).
    pub fn generate_data_key_action(
        &self,
        ctx: &CallContext,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        self.audited_key(ctx, "GenerateDataKey", &req.key_id, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let len = Self::data_key_len(req.key_spec.as_deref(), req.number_of_bytes)?;
            let context = parse_context(req.encryption_context.as_deref())?;
            let (pk, alg) = (
                req.encryption_public_key.as_deref(),
                req.encryption_algorithm.as_deref(),
            );
            // Checked before a data key is made: a refused algorithm makes none.
            plaintext_field(b"check", pk, alg)?;
            let hosting = data_keys::Hosting::parse(
                req.is_hosted_by_kms,
                req.data_key_name.as_deref(),
                req.description.as_deref(),
                req.tags.as_ref(),
            )?;
            if hosting.is_some() && !context.is_empty() {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    "a hosted data key (IsHostedByKms 1) takes no EncryptionContext",
                ));
            }
            let dk = self.data_key(now, key, len, &context)?;
            let id = dk.key_id.clone();
            let data_key_id = match hosting {
                Some(h) => {
                    Some(self.host_generated(ctx, now, h, &dk.key_id, len, &dk.ciphertext_blob)?)
                }
                None => None,
            };
            let hosted = data_key_id.is_some();
            Ok((
                GenerateDataKeyResponse {
                    key_id: dk.key_id.clone(),
                    plaintext: plaintext_field(&dk.plaintext[..], pk, alg)?,
                    ciphertext_blob: B64.encode(&dk.ciphertext_blob),
                    data_key_id,
                    tag_code: hosted.then_some(0),
                    tag_msg: hosted.then(String::new),
                },
                id,
            ))
        })
    }

    /// GenerateRandom: 1–1024 random bytes.
    ///
    /// # Errors
    /// `InvalidParameterValue` for a size outside 1–1024.
    pub fn generate_random(
        &self,
        ctx: &CallContext,
        req: GenerateRandomRequest,
    ) -> KmsResult<GenerateRandomResponse> {
        self.audited(ctx, "GenerateRandom", "", |_| {
            let n = match req.number_of_bytes {
                Some(n) if (1..=MAX_RANDOM as u64).contains(&n) => n as usize,
                Some(_) => {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!("NumberOfBytes must be 1 to {MAX_RANDOM}"),
                    ))
                }
                None => {
                    return Err(err(
                        ErrorCode::MissingParameter,
                        "the parameter NumberOfBytes is required",
                    ))
                }
            };
            let mut buf = Zeroizing::new(vec![0u8; n]);
            crypto::random_bytes(&mut buf)?;
            Ok((
                GenerateRandomResponse {
                    plaintext: SecretString::from(B64.encode(&buf[..])),
                },
                String::new(),
            ))
        })
    }
}

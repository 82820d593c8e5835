//! Bring your own key: GetParametersForImport, ImportKeyMaterial and
//! DeleteImportedKeyMaterial for EXTERNAL keys (CreateKey Type 2).

use super::*;

impl KmsService {
    /// GetParametersForImport: a fresh RSA-2048 wrapping key and import token for
    /// an EXTERNAL key, valid 24 hours; they replace any earlier pair, which is
    /// refused from now on.
    ///
    /// # Errors
    /// `UnsupportedOperation.NotExternalCmk`, `InvalidParameterValue`
    /// (WrappingAlgorithm, WrappingKeySpec), the state error of a key pending
    /// deletion or archived.
    pub fn get_parameters_for_import(
        &self,
        ctx: &CallContext,
        req: GetParametersForImportRequest,
    ) -> KmsResult<GetParametersForImportResponse> {
        self.audited_key(ctx, "GetParametersForImport", &req.key_id, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let alg_s = require(&req.wrapping_algorithm, "WrappingAlgorithm")?;
            let alg = RsaEncryption::parse(alg_s).ok_or_else(|| {
                err(
                    ErrorCode::InvalidParameterValue,
                    format!("WrappingAlgorithm must be RSAES_PKCS1_V1_5, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256, not {alg_s:?}"),
                )
            })?;
            match req.wrapping_key_spec.as_deref() {
                None | Some("") | Some("RSA_2048") => {}
                Some(s) => {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!("WrappingKeySpec must be RSA_2048, not {s:?}"),
                    ))
                }
            }
            let check = |rec: &KeyRecord| -> KmsResult<()> {
                check_external(rec)?;
                if matches!(rec.state, KeyState::PendingDelete | KeyState::Archived) {
                    return Err(state_error(rec));
                }
                Ok(())
            };
            // Refuse cheaply before paying for an RSA key generation.
            let snap = self.fresh(now)?;
            check(&Self::lookup(&snap, key, now)?.rec)?;
            drop(snap);
            let wrapping = RsaKey::generate()?;
            let der = wrapping.to_pkcs8_der()?;
            let public = wrapping.public_key_der()?;
            let mut t = [0u8; 32];
            crypto::random_bytes(&mut t)?;
            let token = B64.encode(t);
            let valid_to = now + IMPORT_PARAMETERS_TTL;
            let key_id = self.store.transact(now, |txn| {
                let i = txn.resolve(key).ok_or_else(|| not_found(key))?;
                check(&txn.keys[i])?;
                let key_id = txn.keys[i].key_id.clone();
                let wrapped_key = txn.wrap_import_key(&key_id, &der)?;
                txn.keys[i].import = Some(ImportParams {
                    wrapping_algorithm: alg.as_str().to_owned(),
                    token_sha256: crypto::hex(&crypto::sha256(token.as_bytes())),
                    valid_to,
                    wrapped_key,
                });
                Ok(key_id)
            })?;
            Ok((
                GetParametersForImportResponse {
                    key_id: key_id.clone(),
                    import_token: token,
                    public_key: B64.encode(&public),
                    parameters_valid_to: valid_to,
                },
                key_id,
            ))
        })
    }

    /// ImportKeyMaterial: 128- or 256-bit material, encrypted under the wrapping key
    /// of the latest GetParametersForImport, becomes the EXTERNAL key's material
    /// (AES-128-GCM or AES-256-GCM) until `ValidTo` (0: never). A key that ever had
    /// material takes only the same material again; an Enabled key re-imports it
    /// to change `ValidTo`.
    ///
    /// # Errors
    /// `UnsupportedOperation.NotExternalCmk`; `ResourceUnavailable.TokenExpired`
    /// (no parameters, not the latest token, or past ParametersValidTo);
    /// `InvalidParameterValue.InvalidImportKeyMaterial` (not base64 or not 256
    /// bytes); `InvalidParameter.DecryptMaterialError` (does not decrypt to 16 or
    /// 32 bytes — one error for every cause); `InvalidParameterValue.MaterialNotMatch`;
    /// `InvalidParameterValue` (ValidTo); the state error of a key pending
    /// deletion or archived.
    pub fn import_key_material(
        &self,
        ctx: &CallContext,
        req: ImportKeyMaterialRequest,
    ) -> KmsResult<Empty> {
        use subtle::ConstantTimeEq as _;
        self.modify(ctx, "ImportKeyMaterial", &req.key_id, |rec, now, txn| {
            check_external(rec)?;
            if matches!(rec.state, KeyState::PendingDelete | KeyState::Archived) {
                return Err(state_error(rec));
            }
            let enc = require(&req.encrypted_key_material, "EncryptedKeyMaterial")?;
            let token = req.import_token.as_ref().filter(|t| !t.is_empty()).ok_or_else(|| {
                err(ErrorCode::MissingParameter, "the parameter ImportToken is required")
            })?;
            let expired = || {
                err(
                    ErrorCode::ResourceUnavailableTokenExpired,
                    format!(
                        "the ImportToken is not the latest one GetParametersForImport gave for key {}, \
                         or it has expired: call GetParametersForImport again",
                        rec.key_id
                    ),
                )
            };
            let params = rec.import.clone().ok_or_else(expired)?;
            let presented = crypto::hex(&crypto::sha256(token.as_bytes()));
            if !bool::from(presented.as_bytes().ct_eq(params.token_sha256.as_bytes()))
                || now >= params.valid_to
            {
                return Err(expired());
            }
            let valid_to = req.valid_to.unwrap_or(0);
            if valid_to != 0 && (valid_to <= now || valid_to > MAX_VALID_TO) {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!("ValidTo must be 0 (never) or a Unix time after now and at most {MAX_VALID_TO}"),
                ));
            }
            let ct = decode_b64(
                enc,
                ErrorCode::InvalidParameterValueInvalidImportKeyMaterial,
                "EncryptedKeyMaterial",
            )?;
            if ct.len() != asym::RSA_LEN {
                return Err(err(
                    ErrorCode::InvalidParameterValueInvalidImportKeyMaterial,
                    format!(
                        "EncryptedKeyMaterial must be {} bytes (RSA-2048), not {}",
                        asym::RSA_LEN,
                        ct.len()
                    ),
                ));
            }
            let alg = RsaEncryption::parse(&params.wrapping_algorithm)
                .ok_or_else(|| err(ErrorCode::InternalError, "damaged import parameters"))?;
            let wrapping = txn.unwrap_import_key(&rec.key_id, &params.wrapped_key)?;
            // One error for every failure: bad OAEP padding, and PKCS#1 v1.5's
            // synthetic plaintext (implicit rejection), which has the wrong length
            // but for a chance of about 2 in 245.
            let material = match wrapping.decrypt(alg, &ct) {
                Ok(m) if m.len() == 16 || m.len() == 32 => m,
                _ => {
                    return Err(err(
                        ErrorCode::InvalidParameterDecryptMaterialError,
                        format!(
                            "EncryptedKeyMaterial does not decrypt to 128- or 256-bit key material with the \
                             wrapping key and algorithm ({}) of the ImportToken",
                            params.wrapping_algorithm
                        ),
                    ))
                }
            };
            let check = txn.material_check(&rec.key_id, &material);
            if let Some(prev) = &rec.material_check {
                if !bool::from(prev.as_bytes().ct_eq(check.as_bytes())) {
                    return Err(err(
                        ErrorCode::InvalidParameterValueMaterialNotMatch,
                        format!(
                            "key {} already had key material: only the same material can be imported again",
                            rec.key_id
                        ),
                    ));
                }
            }
            if rec.versions.is_empty() {
                let (v, c) = txn.imported_version(&rec.key_id, &material)?;
                rec.versions = vec![v];
                rec.material_check = Some(c);
            }
            rec.valid_to = valid_to;
            if rec.state == KeyState::PendingImport {
                rec.state = KeyState::Enabled;
            }
            Ok(Empty {})
        })
    }

    /// DeleteImportedKeyMaterial: the EXTERNAL key's material is removed from the
    /// store and the key goes to PendingImport: it refuses Encrypt, Decrypt and
    /// GenerateDataKey (`ResourceUnavailable.CmkStateNotSupport`) until the same
    /// material is imported again.
    ///
    /// # Errors
    /// `UnsupportedOperation.NotExternalCmk`; the state error of a key pending
    /// deletion or archived.
    pub fn delete_imported_key_material(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<Empty> {
        self.modify(
            ctx,
            "DeleteImportedKeyMaterial",
            &req.key_id,
            |rec, _, _| {
                check_external(rec)?;
                if matches!(rec.state, KeyState::PendingDelete | KeyState::Archived) {
                    return Err(state_error(rec));
                }
                delete_imported_material(rec);
                Ok(Empty {})
            },
        )
    }
}

//! The key lifecycle: CreateKey, DescribeKey(s), ListKeys, ListKeyDetail, the state
//! machine (EnableKey(s), DisableKey(s), ArchiveKey, CancelKeyArchive,
//! ScheduleKeyDeletion, CancelKeyDeletion), GetServiceStatus and GetRegions.

use super::*;

impl KmsService {
    // ------------------------------------------------------------ actions

    /// CreateKey: a new key. ENCRYPT_DECRYPT gets fresh AES-256 material, or with
    /// Type 2 none (EXTERNAL, PendingImport until ImportKeyMaterial);
    /// ASYMMETRIC_DECRYPT_RSA_2048 and ASYMMETRIC_SIGN_VERIFY_RSA_2048 an RSA-2048
    /// key pair; ASYMMETRIC_SIGN_VERIFY_ECC a P-256 key pair;
    /// ASYMMETRIC_SIGN_VERIFY_SM2 an SM2 key pair.
    ///
    /// # Errors
    /// `MissingParameter` (no Alias), `InvalidParameterValue.InvalidAlias`,
    /// `.AliasAlreadyExists`, `.InvalidKeyUsage`, `.InvalidType`;
    /// `UnsupportedOperation` for ASYMMETRIC_DECRYPT_SM2 and ECDSA384 and for
    /// Type 2 with an asymmetric usage.
    pub fn create_key(
        &self,
        ctx: &CallContext,
        req: CreateKeyRequest,
    ) -> KmsResult<CreateKeyResponse> {
        self.audited(ctx, "CreateKey", "", |now| {
            self.create_key_at(ctx, &req, now)
        })
    }

    /// CreateKey's work at `now`, without its audit line (the caller writes one: the
    /// Tencent action above, or the Alibaba adapter's CreateKey).
    pub(crate) fn create_key_at(
        &self,
        ctx: &CallContext,
        req: &CreateKeyRequest,
        now: u64,
    ) -> KmsResult<(CreateKeyResponse, String)> {
        let alias = require(&req.alias, "Alias")?.to_owned();
        validate_alias(&alias)?;
        let description = req.description.clone().unwrap_or_default();
        check_description(&description)?;
        if let Some(u) = req
            .key_usage
            .as_deref()
            .filter(|u| REGION_UNSUPPORTED_USAGES.contains(u))
        {
            return Err(err(
                ErrorCode::UnsupportedOperationUnsupportedKeyUsageInCurrentRegion,
                format!("KeyUsage {u} is not offered by this KMS (ListAlgorithms lists what is)"),
            ));
        }
        let tags = parse_tags(req.tags.as_ref())?;
        let usage = match req.key_usage.as_deref() {
            None | Some("") => KeyUsage::EncryptDecrypt,
            Some(u) => KeyUsage::parse(u).ok_or_else(|| {
                err(
                    ErrorCode::InvalidParameterValueInvalidKeyUsage,
                    format!("unknown KeyUsage {u:?}"),
                )
            })?,
        };
        if usage != KeyUsage::EncryptDecrypt && !ASYMMETRIC_USAGES.contains(&usage) {
            return Err(err(
                ErrorCode::UnsupportedOperation,
                format!(
                    "KeyUsage {} is not supported by this KMS (it makes ENCRYPT_DECRYPT, \
                     ASYMMETRIC_DECRYPT_RSA_2048, ASYMMETRIC_DECRYPT_SM2, \
                     ASYMMETRIC_SIGN_VERIFY_RSA_2048, ASYMMETRIC_SIGN_VERIFY_ECC and \
                     ASYMMETRIC_SIGN_VERIFY_SM2 keys)",
                    usage.as_str()
                ),
            ));
        }
        let origin = match req.key_type {
            None | Some(1) => Origin::TencentKms,
            Some(2) if usage == KeyUsage::EncryptDecrypt => Origin::External,
            Some(2) => {
                return Err(err(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "Type 2 (EXTERNAL key material) is for ENCRYPT_DECRYPT keys, not {}",
                        usage.as_str()
                    ),
                ))
            }
            Some(t) => {
                return Err(err(
                    ErrorCode::InvalidParameterValueInvalidType,
                    format!("Type must be 1 or 2, not {t}"),
                ))
            }
        };
        // Asymmetric keys are made before the store lock is taken: RSA-2048
        // generation takes a noticeable time.
        let asym_material = match usage {
            KeyUsage::AsymmetricDecryptRsa2048 | KeyUsage::AsymmetricSignVerifyRsa2048 => {
                Some((MaterialKind::Rsa2048, RsaKey::generate()?.to_pkcs8_der()?))
            }
            KeyUsage::AsymmetricSignVerifyEcc => {
                Some((MaterialKind::EcP256, EcKey::generate()?.to_pkcs8_der()?))
            }
            KeyUsage::AsymmetricSignVerifySm2 | KeyUsage::AsymmetricDecryptSm2 => {
                Some((MaterialKind::Sm2, Sm2Key::generate()?.secret()))
            }
            KeyUsage::AsymmetricEncryptDecryptKyberAes => {
                Some((MaterialKind::MlKem768, KemKey::generate()?.seed()))
            }
            KeyUsage::AsymmetricSignVerifyDilithium => {
                Some((MaterialKind::MlDsa65, DsaKey::generate()?.seed()))
            }
            _ => None,
        };
        let key_id = uuid::Uuid::new_v4().to_string();
        let rec = self.store.transact(now, |txn| {
            if txn.keys.iter().any(|k| k.alias == alias) {
                return Err(err(
                    ErrorCode::InvalidParameterValueAliasAlreadyExists,
                    format!("the alias {alias:?} is already used"),
                ));
            }
            let (state, versions) = match (&asym_material, origin) {
                (_, Origin::External) => (KeyState::PendingImport, Vec::new()),
                (Some((kind, der)), _) => (
                    KeyState::Enabled,
                    vec![txn.new_asym_version(&key_id, 1, *kind, der)?],
                ),
                (None, _) => (KeyState::Enabled, vec![txn.new_aes_version(&key_id, 1)?]),
            };
            let rec = KeyRecord {
                key_id: key_id.clone(),
                alias: alias.clone(),
                description: description.clone(),
                create_time: now,
                state,
                usage,
                origin,
                creator: ctx.principal.clone(),
                rotation_enabled: false,
                rotate_days: 0,
                next_rotate_time: 0,
                last_rotate_time: 0,
                deletion_date: 0,
                valid_to: 0,
                versions,
                material_check: None,
                import: None,
                tags: tags.clone(),
            };
            txn.keys.push(rec.clone());
            Ok(rec)
        })?;
        Ok((
            CreateKeyResponse {
                key_id: rec.key_id.clone(),
                alias: rec.alias,
                create_time: rec.create_time,
                description: rec.description,
                key_state: rec.state.as_str().to_owned(),
                key_usage: rec.usage.as_str().to_owned(),
                tag_code: 0,
                tag_msg: String::new(),
            },
            rec.key_id,
        ))
    }

    /// DescribeKey.
    ///
    /// # Errors
    /// `ResourceUnavailable.CmkNotFound`.
    pub fn describe_key(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<DescribeKeyResponse> {
        self.audited_key(ctx, "DescribeKey", &req.key_id, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            Ok((
                DescribeKeyResponse {
                    key_metadata: KeyMetadata::from(&k.rec),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// DescribeKeys: the metadata of the listed keys that exist.
    ///
    /// # Errors
    /// `InvalidParameterValue` for 0 or more than 100 ids,
    /// `InvalidParameterValue.DuplicatedKeyId`.
    pub fn describe_keys(
        &self,
        ctx: &CallContext,
        req: DescribeKeysRequest,
    ) -> KmsResult<KeyMetadatasResponse> {
        self.audited(ctx, "DescribeKeys", "", |now| {
            let ids = req.key_ids.as_deref().unwrap_or_default();
            if ids.is_empty() {
                return Err(err(
                    ErrorCode::MissingParameter,
                    "the parameter KeyIds is required",
                ));
            }
            if ids.len() > 100 {
                return Err(err(ErrorCode::InvalidParameterValue, "at most 100 KeyIds"));
            }
            for (i, a) in ids.iter().enumerate() {
                if ids[..i].contains(a) {
                    return Err(err(
                        ErrorCode::InvalidParameterValueDuplicatedKeyId,
                        format!("KeyId {a:?} appears twice"),
                    ));
                }
            }
            let snap = self.fresh(now)?;
            let key_metadatas = ids
                .iter()
                .filter_map(|id| Self::lookup(&snap, id, now).ok())
                .map(|k| KeyMetadata::from(&k.rec))
                .collect();
            Ok((
                KeyMetadatasResponse {
                    key_metadatas,
                    total_count: None,
                },
                String::new(),
            ))
        })
    }

    pub(super) fn page(offset: Option<u64>, limit: Option<u64>) -> KmsResult<(usize, usize)> {
        let limit = limit.unwrap_or(10);
        if limit == 0 || limit > 200 {
            return Err(err(
                ErrorCode::InvalidParameterValue,
                "Limit must be 1 to 200",
            ));
        }
        Ok((
            usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX),
            limit as usize,
        ))
    }

    /// ListKeys: key ids, oldest first.
    ///
    /// # Errors
    /// `InvalidParameterValue` for a Limit outside 1–200.
    pub fn list_keys(
        &self,
        ctx: &CallContext,
        req: ListKeysRequest,
    ) -> KmsResult<ListKeysResponse> {
        self.audited(ctx, "ListKeys", "", |now| {
            let (offset, limit) = Self::page(req.offset, req.limit)?;
            let snap = self.fresh(now)?;
            let live: Vec<&LoadedKey> = if req.role.unwrap_or(0) == 0 {
                snap.keys.iter().filter(|k| !expired(&k.rec, now)).collect()
            } else {
                Vec::new()
            };
            Ok((
                ListKeysResponse {
                    total_count: live.len() as u64,
                    keys: live
                        .iter()
                        .skip(offset)
                        .take(limit)
                        .map(|k| KeyIdEntry {
                            key_id: k.rec.key_id.clone(),
                        })
                        .collect(),
                },
                String::new(),
            ))
        })
    }

    /// ListKeyDetail: key metadata with filters.
    ///
    /// # Errors
    /// `InvalidParameterValue` for bad filters or Limit.
    pub fn list_key_detail(
        &self,
        ctx: &CallContext,
        req: ListKeyDetailRequest,
    ) -> KmsResult<KeyMetadatasResponse> {
        self.audited(ctx, "ListKeyDetail", "", |now| {
            let (offset, limit) = Self::page(req.offset, req.limit)?;
            let state = match req.key_state.unwrap_or(0) {
                0 => None,
                1 => Some(KeyState::Enabled),
                2 => Some(KeyState::Disabled),
                3 => Some(KeyState::PendingDelete),
                4 => Some(KeyState::PendingImport),
                5 => Some(KeyState::Archived),
                _ => {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        "KeyState must be 0 to 5",
                    ))
                }
            };
            let origin = parse_origin_filter(req.origin.as_deref())?;
            let usage = match req.key_usage.as_deref() {
                None | Some("") => Some(KeyUsage::EncryptDecrypt),
                Some("ALL") => None,
                Some(u) => Some(KeyUsage::parse(u).ok_or_else(|| {
                    err(
                        ErrorCode::InvalidParameterValueInvalidKeyUsage,
                        format!("unknown KeyUsage {u:?}"),
                    )
                })?),
            };
            let search = req.search_key_alias.clone().unwrap_or_default();
            let tag_filters = parse_tag_filters(req.tag_filters.as_ref())?;
            let snap = self.fresh(now)?;
            let mut keys: Vec<&KeyRecord> = snap
                .keys
                .iter()
                .map(|k| &k.rec)
                .filter(|r| !expired(r, now))
                .filter(|_| req.role.unwrap_or(0) == 0)
                .filter(|r| state.is_none_or(|s| r.state == s))
                .filter(|r| origin.is_none_or(|o| r.origin == o))
                .filter(|r| usage.is_none_or(|u| r.usage == u))
                .filter(|r| {
                    search.is_empty() || r.alias.contains(&search) || r.key_id.contains(&search)
                })
                .filter(|r| tags_match(&r.tags, &tag_filters))
                .collect();
            if req.order_type.unwrap_or(0) == 0 {
                keys.reverse();
            }
            Ok((
                KeyMetadatasResponse {
                    total_count: Some(keys.len() as u64),
                    key_metadatas: keys
                        .into_iter()
                        .skip(offset)
                        .take(limit)
                        .map(KeyMetadata::from)
                        .collect(),
                },
                String::new(),
            ))
        })
    }

    /// A state change `from` → `to`, a no-op when the key is already in `to`; any
    /// other state answers its state error.
    fn transition(
        &self,
        ctx: &CallContext,
        action: &str,
        key_id: &Option<String>,
        from: KeyState,
        to: KeyState,
    ) -> KmsResult<Empty> {
        self.modify(ctx, action, key_id, |rec, _, _| {
            if rec.state == from || rec.state == to {
                rec.state = to;
                Ok(Empty {})
            } else {
                Err(state_error(rec))
            }
        })
    }

    /// EnableKey: Disabled → Enabled (no-op when Enabled).
    ///
    /// # Errors
    /// `ResourceUnavailable.KeyPendingDelete`, `.CmkArchived`, `.CmkStateNotSupport`.
    pub fn enable_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Disabled, KeyState::Enabled);
        self.transition(ctx, "EnableKey", &req.key_id, from, to)
    }

    /// DisableKey: Enabled → Disabled (no-op when Disabled). A disabled key
    /// refuses Encrypt, Decrypt, GenerateDataKey and ReEncrypt.
    ///
    /// # Errors
    /// `ResourceUnavailable.KeyPendingDelete`, `.CmkArchived`, `.CmkStateNotSupport`.
    pub fn disable_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Enabled, KeyState::Disabled);
        self.transition(ctx, "DisableKey", &req.key_id, from, to)
    }

    /// The transition of [`Self::transition`] for several keys, all or none: one
    /// transaction, so a key that is missing or in a state that refuses it fails the call
    /// and no key changes.
    fn transition_many(
        &self,
        ctx: &CallContext,
        action: &str,
        key_ids: &Option<Vec<String>>,
        from: KeyState,
        to: KeyState,
    ) -> KmsResult<Empty> {
        let hint = key_ids.as_ref().map(|v| v.join(",")).unwrap_or_default();
        self.audited(ctx, action, &hint, |now| {
            let ids = key_ids.as_deref().unwrap_or_default();
            if ids.is_empty() {
                return Err(err(
                    ErrorCode::MissingParameter,
                    "the parameter KeyIds is required",
                ));
            }
            if ids.len() > MAX_BATCH_KEYS {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!("KeyIds names {} keys; at most {MAX_BATCH_KEYS}", ids.len()),
                ));
            }
            self.store.transact(now, |txn| {
                for key in ids {
                    let i = txn.resolve(key).ok_or_else(|| not_found(key))?;
                    let rec = &mut txn.keys[i];
                    if rec.state != from && rec.state != to {
                        return Err(state_error(rec));
                    }
                    rec.state = to;
                }
                Ok((Empty {}, hint.clone()))
            })
        })
    }

    /// EnableKeys: EnableKey for up to 100 keys, all or none.
    ///
    /// # Errors
    /// `MissingParameter`, `InvalidParameterValue` (over 100 keys), and the errors of
    /// EnableKey for the first key that refuses (then no key changes).
    pub fn enable_keys(&self, ctx: &CallContext, req: KeyIdsRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Disabled, KeyState::Enabled);
        self.transition_many(ctx, "EnableKeys", &req.key_ids, from, to)
    }

    /// DisableKeys: DisableKey for up to 100 keys, all or none.
    ///
    /// # Errors
    /// As [`Self::enable_keys`].
    pub fn disable_keys(&self, ctx: &CallContext, req: KeyIdsRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Enabled, KeyState::Disabled);
        self.transition_many(ctx, "DisableKeys", &req.key_ids, from, to)
    }

    /// GetServiceStatus.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn get_service_status(&self, ctx: &CallContext, _req: Empty) -> KmsResult<ServiceStatus> {
        self.audited(ctx, "GetServiceStatus", "", |now| {
            let snap = self.fresh(now)?;
            let n = snap
                .keys
                .iter()
                .filter(|k| k.rec.state != KeyState::PendingDelete)
                .count();
            Ok((
                ServiceStatus {
                    service_enabled: true,
                    invalid_type: 1,
                    user_level: 0,
                    exclusive_vsm_enabled: false,
                    exclusive_hsm_enabled: false,
                    cmk_user_count: n as u64,
                    is_allowed_data_key_hosted: false,
                    is_allowed_sync: false,
                },
                String::new(),
            ))
        })
    }

    /// GetRegions: the region this KMS answers for (`ap-guangzhou` unless the server was
    /// told otherwise, [`KmsService::region`]).
    ///
    /// # Errors
    /// None in practice (the call is audited).
    pub fn get_regions(&self, ctx: &CallContext, _req: Empty) -> KmsResult<Regions> {
        self.audited(ctx, "GetRegions", "", |_| {
            Ok((
                Regions {
                    regions: vec![self.region()],
                },
                String::new(),
            ))
        })
    }

    /// The region name this KMS gives (`KMSFS_KMS_REGION`, else `ap-guangzhou`, the
    /// region the Tencent examples use): clients send one and the service echoes it.
    pub fn region(&self) -> String {
        std::env::var("KMSFS_KMS_REGION")
            .ok()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "ap-guangzhou".to_owned())
    }

    /// ArchiveKey: Enabled → Archived (decrypt only).
    ///
    /// # Errors
    /// The state error of any other state.
    pub fn archive_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Enabled, KeyState::Archived);
        self.transition(ctx, "ArchiveKey", &req.key_id, from, to)
    }

    /// CancelKeyArchive: Archived → Enabled.
    ///
    /// # Errors
    /// The state error of any other state.
    pub fn cancel_key_archive(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Archived, KeyState::Enabled);
        self.transition(ctx, "CancelKeyArchive", &req.key_id, from, to)
    }

    /// ScheduleKeyDeletion: Disabled → PendingDelete for 7–30 days, then purged.
    ///
    /// # Errors
    /// `InvalidParameter.InvalidPendingWindowInDays`,
    /// `ResourceUnavailable.CmkShouldBeDisabled` (Enabled or Archived key),
    /// `ResourceUnavailable.KeyPendingDelete`.
    pub fn schedule_key_deletion(
        &self,
        ctx: &CallContext,
        req: ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        let days = req.pending_window_in_days;
        self.modify(ctx, "ScheduleKeyDeletion", &req.key_id, |rec, now, _| {
            let days = days.ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter PendingWindowInDays is required",
                )
            })?;
            if !(7..=30).contains(&days) {
                return Err(err(
                    ErrorCode::InvalidParameterInvalidPendingWindowInDays,
                    format!("PendingWindowInDays must be 7 to 30, not {days}"),
                ));
            }
            match rec.state {
                KeyState::Disabled | KeyState::PendingImport => {}
                KeyState::Enabled | KeyState::Archived => {
                    return Err(err(
                        ErrorCode::ResourceUnavailableCmkShouldBeDisabled,
                        format!(
                            "key {} must be disabled before its deletion is scheduled",
                            rec.key_id
                        ),
                    ))
                }
                _ => return Err(state_error(rec)),
            }
            rec.state = KeyState::PendingDelete;
            rec.deletion_date = now + days * DAY;
            Ok(ScheduleKeyDeletionResponse {
                deletion_date: rec.deletion_date,
                key_id: rec.key_id.clone(),
            })
        })
    }

    /// CancelKeyDeletion: PendingDelete → Disabled.
    ///
    /// # Errors
    /// `ResourceUnavailable.CmkNotPendingDelete`.
    pub fn cancel_key_deletion(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyIdResponse> {
        self.modify(ctx, "CancelKeyDeletion", &req.key_id, |rec, _, _| {
            if rec.state != KeyState::PendingDelete {
                return Err(err(
                    ErrorCode::ResourceUnavailableCmkNotPendingDelete,
                    format!("key {} is not pending deletion", rec.key_id),
                ));
            }
            end_pending_delete(rec, KeyState::Disabled);
            Ok(KeyIdResponse {
                key_id: rec.key_id.clone(),
            })
        })
    }
}

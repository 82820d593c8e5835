//! Data keys hosted by the KMS: GenerateDataKey with `IsHostedByKms = 1`, ImportDataKey,
//! and the thirteen actions that describe, list, enable, disable, read, rename, and
//! schedule or cancel the deletion of them.
//!
//! A hosted data key is stored as the CiphertextBlob that GenerateDataKey returns for
//! it (under its CMK, with an empty EncryptionContext), never in clear: reading it back
//! (GetDataKeyPlaintext) decrypts that blob, so it needs the CMK Enabled or Archived,
//! exactly as Decrypt does. A data key's own state (Enabled, Disabled, PendingDelete)
//! is checked first. Deletion is scheduled 7 to 30 days ahead and purged by the same
//! maintenance that purges CMKs.

use base64::Engine as _;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{
    check_description, decode_b64, decode_blob, err, is_key_id_shaped, parse_tag_filters,
    parse_tags, plaintext_field, require, tags_match, Empty, KmsService, B64, DAY, MAX_BATCH_KEYS,
};
use crate::key::{DataKeyRecord, DataKeyState, Origin};
use crate::store::Txn;
use crate::{blob, CallContext, EncryptionContext, ErrorCode, KmsError, KmsResult};

mod wire;

pub use wire::*;

/// The most data keys one store hosts.
pub const MAX_DATA_KEYS: usize = 10_000;
/// The longest data key description, in bytes (the SDK's "最大100字节").
pub const MAX_DATA_KEY_DESCRIPTION: usize = 100;

/// What GenerateDataKey asks of hosting (`IsHostedByKms`, `DataKeyName`,
/// `Description`, `Tags`), checked before a data key is made.
pub(super) struct Hosting {
    name: String,
    description: String,
    tags: Vec<crate::key::Tag>,
}

impl Hosting {
    /// `None` when the data key is not to be hosted.
    pub(super) fn parse(
        hosted: Option<u64>,
        name: Option<&str>,
        description: Option<&str>,
        tags: Option<&Value>,
    ) -> KmsResult<Option<Hosting>> {
        match hosted.unwrap_or(0) {
            0 => Ok(None),
            1 => {
                let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
                    err(
                        ErrorCode::MissingParameter,
                        "DataKeyName is required when IsHostedByKms is 1",
                    )
                })?;
                validate_name(name)?;
                let description = description.unwrap_or_default().to_owned();
                check_data_key_description(&description)?;
                Ok(Some(Hosting {
                    name: name.to_owned(),
                    description,
                    tags: parse_tags(tags)?,
                }))
            }
            n => Err(err(
                ErrorCode::InvalidParameterValue,
                format!("IsHostedByKms must be 0 or 1, not {n}"),
            )),
        }
    }
}

/// A data key name: 1–60 letters, digits, `-` and `_`, starting with a letter or a
/// digit (the rule of CMK aliases).
fn validate_name(name: &str) -> KmsResult<()> {
    let ok = (1..=60).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        return Err(err(
            ErrorCode::InvalidParameterValueInvalidDataKeyName,
            "DataKeyName must be 1 to 60 letters, digits, - and _, starting with a letter or digit",
        ));
    }
    Ok(())
}

fn check_data_key_description(d: &str) -> KmsResult<()> {
    check_description(d)?;
    if d.len() > MAX_DATA_KEY_DESCRIPTION {
        return Err(err(
            ErrorCode::InvalidParameterValue,
            format!("Description is longer than {MAX_DATA_KEY_DESCRIPTION} bytes"),
        ));
    }
    Ok(())
}

/// The data key `id` among `keys`, or its not-found error.
fn find_data_key<'a>(keys: &'a [DataKeyRecord], id: &str) -> KmsResult<&'a DataKeyRecord> {
    keys.iter()
        .find(|d| d.data_key_id == id)
        .ok_or_else(|| not_found(id))
}

/// As [`find_data_key`], to change it.
fn find_data_key_mut<'a>(
    keys: &'a mut [DataKeyRecord],
    id: &str,
) -> KmsResult<&'a mut DataKeyRecord> {
    keys.iter_mut()
        .find(|d| d.data_key_id == id)
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> KmsError {
    if !is_key_id_shaped(id) {
        return err(
            ErrorCode::InvalidParameterValueInvalidDataKeyId,
            format!("{id:?} is not a data key id"),
        );
    }
    err(
        ErrorCode::ResourceUnavailableDataKeyNotFound,
        format!("no data key {id:?} in this KMS"),
    )
}

/// The error for an operation a data key's state forbids.
fn state_error(d: &DataKeyRecord) -> KmsError {
    match d.state {
        DataKeyState::Disabled => err(
            ErrorCode::ResourceUnavailableDataKeyDisabled,
            format!("data key {} is disabled", d.data_key_id),
        ),
        DataKeyState::PendingDelete => err(
            ErrorCode::ResourceUnavailableDataKeyPendingDelete,
            format!("data key {} is pending deletion", d.data_key_id),
        ),
        DataKeyState::Enabled => err(
            ErrorCode::ResourceUnavailableDataKeyStateNotSupport,
            format!("data key {} is enabled", d.data_key_id),
        ),
    }
}

/// Adds a hosted data key to the store in `txn`, refusing a taken name and a full store.
fn host(txn: &mut Txn<'_>, rec: DataKeyRecord) -> KmsResult<()> {
    if txn.data_keys.iter().any(|d| d.name == rec.name) {
        return Err(err(
            ErrorCode::InvalidParameterValueDataKeyNameAlreadyExists,
            format!("the data key name {:?} is already used", rec.name),
        ));
    }
    if txn.data_keys.len() >= MAX_DATA_KEYS {
        return Err(err(
            ErrorCode::LimitExceededDataKeyLimitExceeded,
            format!("this KMS hosts at most {MAX_DATA_KEYS} data keys"),
        ));
    }
    txn.data_keys.push(rec);
    Ok(())
}

fn parse_state_filter(n: Option<u64>) -> KmsResult<Option<DataKeyState>> {
    match n.unwrap_or(0) {
        0 => Ok(None),
        1 => Ok(Some(DataKeyState::Enabled)),
        2 => Ok(Some(DataKeyState::Disabled)),
        3 => Ok(Some(DataKeyState::PendingDelete)),
        _ => Err(err(
            ErrorCode::InvalidParameterValue,
            "KeyState must be 0 to 3",
        )),
    }
}

impl KmsService {
    /// Stores a data key GenerateDataKey just made (`IsHostedByKms = 1`); returns its id.
    pub(super) fn host_generated(
        &self,
        ctx: &CallContext,
        now: u64,
        hosting: Hosting,
        key_id: &str,
        len: usize,
        blob: &[u8],
    ) -> KmsResult<String> {
        let data_key_id = uuid::Uuid::new_v4().to_string();
        self.store.transact(now, |txn| {
            if txn.resolve(key_id).is_none() {
                return Err(super::not_found(key_id));
            }
            host(
                txn,
                DataKeyRecord {
                    data_key_id: data_key_id.clone(),
                    key_id: key_id.to_owned(),
                    name: hosting.name,
                    description: hosting.description,
                    len: len as u32,
                    create_time: now,
                    state: DataKeyState::Enabled,
                    origin: Origin::TencentKms,
                    creator: ctx.principal.clone(),
                    deletion_date: 0,
                    blob: B64.encode(blob),
                    tags: hosting.tags,
                },
            )
        })?;
        Ok(data_key_id)
    }

    fn metadata(&self, d: &DataKeyRecord, snap: &crate::store::Snapshot) -> DataKeyMetadata {
        DataKeyMetadata {
            data_key_id: d.data_key_id.clone(),
            key_id: d.key_id.clone(),
            key_name: snap
                .by_id(&d.key_id)
                .map(|k| k.rec.alias.clone())
                .unwrap_or_default(),
            data_key_name: d.name.clone(),
            number_of_bytes: u64::from(d.len),
            create_time: d.create_time,
            description: d.description.clone(),
            key_state: d.state.as_str().to_owned(),
            creator_uin: 0,
            owner: "user".to_owned(),
            deletion_date: d.deletion_date,
            origin: d.origin.as_str().to_owned(),
            resource_id: format!("creatorUin/0/{}", d.data_key_id),
        }
    }

    /// ImportDataKey: hosts a data key given as a CiphertextBlob of this KMS (ImportType
    /// 1; the blob must open, so it is this KMS's and its CMK usable) or in plaintext
    /// (ImportType 2; sealed under KeyId, which must be Enabled).
    ///
    /// # Errors
    /// `MissingParameter`, `InvalidParameterValue` (ImportType, material, a KeyId that
    /// is not the blob's), `.InvalidDataKeyName`, `.DataKeyNameAlreadyExists`,
    /// `InvalidParameterValue.InvalidCiphertext`, the CMK's state error.
    pub fn import_data_key(
        &self,
        ctx: &CallContext,
        req: ImportDataKeyRequest,
    ) -> KmsResult<ImportDataKeyResponse> {
        self.audited_key(ctx, "ImportDataKey", &req.key_id, |now| {
            let name = require(&req.data_key_name, "DataKeyName")?;
            validate_name(name)?;
            let description = req.description.clone().unwrap_or_default();
            check_data_key_description(&description)?;
            let tags = parse_tags(req.tags.as_ref())?;
            let material = req
                .import_key_material
                .as_deref()
                .ok_or_else(|| err(ErrorCode::MissingParameter, "ImportKeyMaterial is required"))?;
            let snap = self.fresh(now)?;
            let no_context = EncryptionContext::new();
            let (key_id, len, blob) = match req.import_type {
                Some(1) => {
                    let raw = decode_blob(material)?;
                    let (pt, k) = Self::open_blob(&snap, now, &raw, &no_context)?;
                    if let Some(want) = req.key_id.as_deref().filter(|k| !k.is_empty()) {
                        let named = Self::lookup(&snap, want, now)?;
                        if named.rec.key_id != k.rec.key_id {
                            return Err(err(
                                ErrorCode::InvalidParameterValue,
                                "KeyId is not the key of ImportKeyMaterial",
                            ));
                        }
                    }
                    (k.rec.key_id.clone(), pt.len(), raw)
                }
                Some(2) => {
                    let key = require(&req.key_id, "KeyId")?;
                    let pt = decode_b64(
                        material,
                        ErrorCode::InvalidParameterValue,
                        "ImportKeyMaterial",
                    )?;
                    if pt.is_empty() || pt.len() > super::MAX_RANDOM {
                        return Err(err(
                            ErrorCode::InvalidParameterValue,
                            "ImportKeyMaterial must be a data key of 1 to 1024 bytes",
                        ));
                    }
                    let k = Self::lookup(&snap, key, now)?;
                    super::check_can_encrypt(&k.rec, now)?;
                    let blob = Self::seal_current(k, &pt, &blob::canonical_context(&no_context))?;
                    (k.rec.key_id.clone(), pt.len(), blob)
                }
                Some(t) => {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!("ImportType must be 1 (ciphertext) or 2 (plaintext), not {t}"),
                    ))
                }
                None => return Err(err(ErrorCode::MissingParameter, "ImportType is required")),
            };
            let data_key_id = uuid::Uuid::new_v4().to_string();
            self.store.transact(now, |txn| {
                host(
                    txn,
                    DataKeyRecord {
                        data_key_id: data_key_id.clone(),
                        key_id: key_id.clone(),
                        name: name.to_owned(),
                        description: description.clone(),
                        len: len as u32,
                        create_time: now,
                        state: DataKeyState::Enabled,
                        origin: Origin::External,
                        creator: ctx.principal.clone(),
                        deletion_date: 0,
                        blob: B64.encode(&blob),
                        tags: tags.clone(),
                    },
                )
            })?;
            Ok((
                ImportDataKeyResponse {
                    key_id,
                    data_key_id: data_key_id.clone(),
                    tag_code: 0,
                    tag_msg: String::new(),
                },
                data_key_id,
            ))
        })
    }

    /// DescribeDataKey.
    ///
    /// # Errors
    /// `ResourceUnavailable.DataKeyNotFound`, `InvalidParameterValue.InvalidDataKeyId`.
    pub fn describe_data_key(
        &self,
        ctx: &CallContext,
        req: DataKeyIdRequest,
    ) -> KmsResult<DescribeDataKeyResponse> {
        self.audited_key(ctx, "DescribeDataKey", &req.data_key_id, |now| {
            let id = require(&req.data_key_id, "DataKeyId")?;
            let snap = self.fresh(now)?;
            let d = find_data_key(&snap.data_keys, id)?;
            Ok((
                DescribeDataKeyResponse {
                    data_key_metadata: self.metadata(d, &snap),
                },
                id.to_owned(),
            ))
        })
    }

    /// DescribeDataKeys: up to 100 data keys; unknown ids are left out, as DescribeKeys
    /// does.
    ///
    /// # Errors
    /// `MissingParameter`, `InvalidParameterValue` (over 100 ids),
    /// `.DuplicatedDataKeyId`.
    pub fn describe_data_keys(
        &self,
        ctx: &CallContext,
        req: DataKeyIdsRequest,
    ) -> KmsResult<DataKeyMetadatasResponse> {
        self.audited(ctx, "DescribeDataKeys", "", |now| {
            let ids = batch_ids(&req.data_key_ids)?;
            let snap = self.fresh(now)?;
            let data_key_metadatas = ids
                .iter()
                .filter_map(|id| snap.data_keys.iter().find(|d| &d.data_key_id == id))
                .map(|d| self.metadata(d, &snap))
                .collect();
            Ok((
                DataKeyMetadatasResponse {
                    data_key_metadatas,
                    total_count: None,
                },
                String::new(),
            ))
        })
    }

    /// ListDataKeys: data key ids, oldest first.
    ///
    /// # Errors
    /// `InvalidParameterValue` for a Limit outside 1–200.
    pub fn list_data_keys(
        &self,
        ctx: &CallContext,
        req: ListDataKeysRequest,
    ) -> KmsResult<ListDataKeysResponse> {
        self.audited(ctx, "ListDataKeys", "", |now| {
            let (offset, limit) = Self::page(req.offset, req.limit)?;
            let snap = self.fresh(now)?;
            let mine = req.role.unwrap_or(0) == 0;
            let all: Vec<&DataKeyRecord> = snap.data_keys.iter().filter(|_| mine).collect();
            Ok((
                ListDataKeysResponse {
                    total_count: all.len() as u64,
                    data_keys: all
                        .into_iter()
                        .skip(offset)
                        .take(limit)
                        .map(|d| DataKeyEntry {
                            data_key_id: d.data_key_id.clone(),
                        })
                        .collect(),
                },
                String::new(),
            ))
        })
    }

    /// ListDataKeyDetail: data keys with their metadata, filtered and ordered as asked.
    ///
    /// # Errors
    /// `InvalidParameterValue` (Limit, KeyState, Origin, TagFilters).
    pub fn list_data_key_detail(
        &self,
        ctx: &CallContext,
        req: ListDataKeyDetailRequest,
    ) -> KmsResult<DataKeyMetadatasResponse> {
        self.audited(ctx, "ListDataKeyDetail", "", |now| {
            let (offset, limit) = Self::page(req.offset, req.limit)?;
            let state = parse_state_filter(req.key_state)?;
            let origin = super::parse_origin_filter(req.origin.as_deref())?;
            let tag_filters = parse_tag_filters(req.tag_filters.as_ref())?;
            let search = req.search_key_alias.clone().unwrap_or_default();
            let snap = self.fresh(now)?;
            // KeyId may be an alias: it names the CMK's id.
            let cmk = req.key_id.as_deref().filter(|k| !k.is_empty()).map(|k| {
                snap.find(k)
                    .map(|k| k.rec.key_id.clone())
                    .unwrap_or_else(|| k.to_owned())
            });
            let mut found: Vec<&DataKeyRecord> = snap
                .data_keys
                .iter()
                .filter(|_| req.role.unwrap_or(0) == 0)
                .filter(|d| state.is_none_or(|s| d.state == s))
                .filter(|d| origin.is_none_or(|o| d.origin == o))
                .filter(|d| cmk.as_ref().is_none_or(|k| &d.key_id == k))
                .filter(|d| req.data_key_len.is_none_or(|n| u64::from(d.len) == n))
                .filter(|d| {
                    search.is_empty() || d.name.contains(&search) || d.data_key_id.contains(&search)
                })
                .filter(|d| tags_match(&d.tags, &tag_filters))
                .collect();
            if req.order_type.unwrap_or(0) == 0 {
                found.reverse();
            }
            Ok((
                DataKeyMetadatasResponse {
                    total_count: Some(found.len() as u64),
                    data_key_metadatas: found
                        .into_iter()
                        .skip(offset)
                        .take(limit)
                        .map(|d| self.metadata(d, &snap))
                        .collect(),
                },
                String::new(),
            ))
        })
    }

    /// One change to one data key, under the store lock.
    fn modify_data_key<R>(
        &self,
        ctx: &CallContext,
        action: &str,
        id: &Option<String>,
        f: impl FnOnce(&mut DataKeyRecord, u64) -> KmsResult<R>,
    ) -> KmsResult<R> {
        self.audited_key(ctx, action, id, |now| {
            let id = require(id, "DataKeyId")?;
            self.store.transact(now, |txn| {
                let d = find_data_key_mut(&mut txn.data_keys, id)?;
                let mut rec = d.clone();
                let r = f(&mut rec, now)?;
                *d = rec;
                Ok((r, id.to_owned()))
            })
        })
    }

    /// `from` → `to` for one data key; a no-op when it already is `to`.
    fn data_key_transition(
        &self,
        ctx: &CallContext,
        action: &str,
        id: &Option<String>,
        from: DataKeyState,
        to: DataKeyState,
    ) -> KmsResult<Empty> {
        self.modify_data_key(ctx, action, id, |d, _| {
            if d.state != from && d.state != to {
                return Err(state_error(d));
            }
            d.state = to;
            Ok(Empty {})
        })
    }

    /// The same for up to 100 data keys, all or none.
    fn data_keys_transition(
        &self,
        ctx: &CallContext,
        action: &str,
        ids: &Option<Vec<String>>,
        from: DataKeyState,
        to: DataKeyState,
    ) -> KmsResult<Empty> {
        let hint = ids.as_ref().map(|v| v.join(",")).unwrap_or_default();
        self.audited(ctx, action, &hint, |now| {
            let ids = batch_ids(ids)?;
            self.store.transact(now, |txn| {
                for id in ids {
                    let d = find_data_key_mut(&mut txn.data_keys, id)?;
                    if d.state != from && d.state != to {
                        return Err(state_error(d));
                    }
                    d.state = to;
                }
                Ok((Empty {}, hint.clone()))
            })
        })
    }

    /// EnableDataKey.
    ///
    /// # Errors
    /// Not found; `ResourceUnavailable.DataKeyPendingDelete`.
    pub fn enable_data_key(&self, ctx: &CallContext, req: DataKeyIdRequest) -> KmsResult<Empty> {
        self.data_key_transition(
            ctx,
            "EnableDataKey",
            &req.data_key_id,
            DataKeyState::Disabled,
            DataKeyState::Enabled,
        )
    }

    /// DisableDataKey.
    ///
    /// # Errors
    /// Not found; `ResourceUnavailable.DataKeyPendingDelete`.
    pub fn disable_data_key(&self, ctx: &CallContext, req: DataKeyIdRequest) -> KmsResult<Empty> {
        self.data_key_transition(
            ctx,
            "DisableDataKey",
            &req.data_key_id,
            DataKeyState::Enabled,
            DataKeyState::Disabled,
        )
    }

    /// EnableDataKeys: EnableDataKey for up to 100, all or none.
    ///
    /// # Errors
    /// As EnableDataKey, for the first that refuses; `MissingParameter`.
    pub fn enable_data_keys(&self, ctx: &CallContext, req: DataKeyIdsRequest) -> KmsResult<Empty> {
        self.data_keys_transition(
            ctx,
            "EnableDataKeys",
            &req.data_key_ids,
            DataKeyState::Disabled,
            DataKeyState::Enabled,
        )
    }

    /// DisableDataKeys: DisableDataKey for up to 100, all or none.
    ///
    /// # Errors
    /// As DisableDataKey, for the first that refuses; `MissingParameter`.
    pub fn disable_data_keys(&self, ctx: &CallContext, req: DataKeyIdsRequest) -> KmsResult<Empty> {
        self.data_keys_transition(
            ctx,
            "DisableDataKeys",
            &req.data_key_ids,
            DataKeyState::Enabled,
            DataKeyState::Disabled,
        )
    }

    /// The blob of an Enabled data key.
    fn hosted_blob(&self, now: u64, id: &str) -> KmsResult<(Vec<u8>, String)> {
        let snap = self.fresh(now)?;
        let d = find_data_key(&snap.data_keys, id)?;
        if d.state != DataKeyState::Enabled {
            return Err(state_error(d));
        }
        let raw = B64.decode(&d.blob).map_err(|_| {
            err(
                ErrorCode::InternalError,
                format!("data key {id}: its stored blob is not base64 (damaged store)"),
            )
        })?;
        Ok((raw, d.key_id.clone()))
    }

    /// GetDataKeyCiphertextBlob: the CiphertextBlob of an Enabled data key.
    ///
    /// # Errors
    /// Not found; the data key's state error.
    pub fn get_data_key_ciphertext_blob(
        &self,
        ctx: &CallContext,
        req: DataKeyIdRequest,
    ) -> KmsResult<GetDataKeyCiphertextBlobResponse> {
        self.audited_key(ctx, "GetDataKeyCiphertextBlob", &req.data_key_id, |now| {
            let id = require(&req.data_key_id, "DataKeyId")?;
            let (raw, _) = self.hosted_blob(now, id)?;
            Ok((
                GetDataKeyCiphertextBlobResponse {
                    ciphertext_blob: B64.encode(raw),
                },
                id.to_owned(),
            ))
        })
    }

    /// GetDataKeyPlaintext: an Enabled data key, decrypted by its CMK (which must
    /// allow Decrypt), in clear or encrypted to EncryptionPublicKey.
    ///
    /// # Errors
    /// Not found; the data key's state error; the CMK's state error; EncryptionPublicKey's.
    pub fn get_data_key_plaintext(
        &self,
        ctx: &CallContext,
        req: GetDataKeyPlaintextRequest,
    ) -> KmsResult<GetDataKeyPlaintextResponse> {
        self.audited_key(ctx, "GetDataKeyPlaintext", &req.data_key_id, |now| {
            let id = require(&req.data_key_id, "DataKeyId")?;
            let (pk, alg) = (
                req.encryption_public_key.as_deref(),
                req.encryption_algorithm.as_deref(),
            );
            plaintext_field(b"check", pk, alg)?;
            let (raw, _) = self.hosted_blob(now, id)?;
            let snap = self.fresh(now)?;
            let (pt, _) = Self::open_blob(&snap, now, &raw, &EncryptionContext::new())?;
            let pt = Zeroizing::new(pt.to_vec());
            Ok((
                GetDataKeyPlaintextResponse {
                    plaintext: plaintext_field(&pt, pk, alg)?,
                },
                id.to_owned(),
            ))
        })
    }

    /// ScheduleDataKeyDeletion: PendingDelete, purged after 7 to 30 days.
    ///
    /// # Errors
    /// Not found; `InvalidParameter.InvalidPendingWindowInDays`;
    /// `ResourceUnavailable.DataKeyPendingDelete`.
    pub fn schedule_data_key_deletion(
        &self,
        ctx: &CallContext,
        req: ScheduleDataKeyDeletionRequest,
    ) -> KmsResult<ScheduleDataKeyDeletionResponse> {
        let days = req.pending_window_in_days.unwrap_or(0);
        if !(7..=30).contains(&days) {
            return Err(err(
                ErrorCode::InvalidParameterInvalidPendingWindowInDays,
                "PendingWindowInDays must be 7 to 30",
            ));
        }
        self.modify_data_key(
            ctx,
            "ScheduleDataKeyDeletion",
            &req.data_key_id,
            |d, now| {
                if d.state == DataKeyState::PendingDelete {
                    return Err(state_error(d));
                }
                d.state = DataKeyState::PendingDelete;
                d.deletion_date = now + days * DAY;
                Ok(ScheduleDataKeyDeletionResponse {
                    deletion_date: d.deletion_date,
                    data_key_id: d.data_key_id.clone(),
                })
            },
        )
    }

    /// CancelDataKeyDeletion: back to Disabled, as CancelKeyDeletion does for a CMK.
    ///
    /// # Errors
    /// Not found; `ResourceUnavailable.DataKeyNotPendingDelete`.
    pub fn cancel_data_key_deletion(
        &self,
        ctx: &CallContext,
        req: DataKeyIdRequest,
    ) -> KmsResult<DataKeyIdResponse> {
        self.modify_data_key(ctx, "CancelDataKeyDeletion", &req.data_key_id, |d, _| {
            if d.state != DataKeyState::PendingDelete {
                return Err(err(
                    ErrorCode::ResourceUnavailableDataKeyNotPendingDelete,
                    format!("data key {} is not pending deletion", d.data_key_id),
                ));
            }
            d.state = DataKeyState::Disabled;
            d.deletion_date = 0;
            Ok(DataKeyIdResponse {
                data_key_id: d.data_key_id.clone(),
            })
        })
    }

    /// UpdateDataKeyName.
    ///
    /// # Errors
    /// Not found; `.InvalidDataKeyName`; `.DataKeyNameAlreadyExists`.
    pub fn update_data_key_name(
        &self,
        ctx: &CallContext,
        req: UpdateDataKeyNameRequest,
    ) -> KmsResult<Empty> {
        self.audited_key(ctx, "UpdateDataKeyName", &req.data_key_id, |now| {
            let id = require(&req.data_key_id, "DataKeyId")?;
            let name = require(&req.data_key_name, "DataKeyName")?;
            validate_name(name)?;
            self.store.transact(now, |txn| {
                if txn
                    .data_keys
                    .iter()
                    .any(|d| d.name == name && d.data_key_id != id)
                {
                    return Err(err(
                        ErrorCode::InvalidParameterValueDataKeyNameAlreadyExists,
                        format!("the data key name {name:?} is already used"),
                    ));
                }
                let d = find_data_key_mut(&mut txn.data_keys, id)?;
                d.name = name.to_owned();
                Ok((Empty {}, id.to_owned()))
            })
        })
    }

    /// UpdateDataKeyDescription.
    ///
    /// # Errors
    /// Not found; `InvalidParameterValue` (over 100 bytes).
    pub fn update_data_key_description(
        &self,
        ctx: &CallContext,
        req: UpdateDataKeyDescriptionRequest,
    ) -> KmsResult<Empty> {
        let description = req.description.clone().unwrap_or_default();
        check_data_key_description(&description)?;
        self.modify_data_key(ctx, "UpdateDataKeyDescription", &req.data_key_id, |d, _| {
            d.description = description;
            Ok(Empty {})
        })
    }
}

/// The `DataKeyIds` of a batch: 1 to 100, no duplicates.
fn batch_ids(ids: &Option<Vec<String>>) -> KmsResult<&[String]> {
    let ids = ids.as_deref().unwrap_or_default();
    if ids.is_empty() {
        return Err(err(
            ErrorCode::MissingParameter,
            "the parameter DataKeyIds is required",
        ));
    }
    if ids.len() > MAX_BATCH_KEYS {
        return Err(err(
            ErrorCode::InvalidParameterValue,
            format!(
                "DataKeyIds names {} data keys; at most {MAX_BATCH_KEYS}",
                ids.len()
            ),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(err(
                ErrorCode::InvalidParameterValueDuplicatedDataKeyId,
                format!("DataKeyIds lists {id:?} twice"),
            ));
        }
    }
    Ok(ids)
}

//! The Alibaba Cloud KMS API (2016-01-20) adapter of the embedded KMS: how a core
//! error reads on the Alibaba wire (its `Code` and HTTP status, ALIYUN-KMS-API.md §5),
//! the flat error body both Alibaba SDKs parse, and the actions themselves
//! ([`KmsService::call_aliyun`]), written on the core's keys, states and crypto, not
//! on the Tencent wire types.
//!
//! One key store serves both APIs. How a key reads through this one (docs/KMS.md,
//! "One key store, two clouds"): the same KeyId; KeySpec `Aliyun_AES_256`, `RSA_2048`
//! or `EC_P256` and KeyUsage `ENCRYPT/DECRYPT` or `SIGN/VERIFY` from the Tencent usage;
//! states Enabled, Disabled, PendingDeletion, PendingImport (a Tencent-archived key
//! reads as Disabled); a KeyVersionId per material version, a UUID derived from the key
//! id and version number; one alias per key (a key made here gets a placeholder alias
//! `acs-auto-…` on the Tencent side until CreateAlias names it).
//!
//! The actions are here; `wire.rs` holds the error codes, statuses and bodies, and
//! `model.rs` how a key, its versions and the request's parameters read on this API.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::{check_can_encrypt, err, parse_context, parse_tags, KmsService, B64, DAY};
use crate::asym::{self, RsaEncryption, SignAlgorithm};
use crate::blob;
use crate::http::acs::AuthError;
use crate::key::{KeyRecord, KeyState, KeyUsage, Origin, Tag};
use crate::store::{LoadedKey, Material, Snapshot};
use crate::{CallContext, EncryptionContext, ErrorCode, KmsError, KmsResult};

mod model;
mod wire;

pub use model::key_version_id;
use model::*;
use wire::*;
pub use wire::{
    auth_error_response, error_body, kms_error_response, success_body, wire_error, WireError,
};

/// The largest Encrypt plaintext of the Alibaba API (seed 004: 6 KB per call).
pub const MAX_ALIYUN_PLAINTEXT: usize = 6 * 1024;
/// The prefix of the placeholder alias a key made through this API gets.
pub const AUTO_ALIAS_PREFIX: &str = "acs-auto-";
/// The region in ARNs.
const ARN_REGION: &str = "local";

/// The actions of this adapter.
pub const ALIYUN_ACTIONS: &[&str] = &[
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "UpdateKeyDescription",
    "CreateKeyVersion",
    "ListKeyVersions",
    "DescribeKeyVersion",
    "CreateAlias",
    "ListAliases",
    "DeleteAlias",
    "TagResource",
    "UntagResource",
    "ListResourceTags",
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncrypt",
    "GetPublicKey",
    "AsymmetricEncrypt",
    "AsymmetricDecrypt",
    "AsymmetricSign",
    "AsymmetricVerify",
];

impl KmsService {
    /// Finds a key named as Alibaba names it; Alibaba's not-found codes.
    fn aliyun_lookup<'a>(snap: &'a Snapshot, key: &str, now: u64) -> KmsResult<&'a LoadedKey> {
        let key = key_ref(key);
        Self::lookup(snap, key, now).map_err(|_| match key.strip_prefix("alias/") {
            Some(a) => aliyun(
                "Forbidden.AliasNotFound",
                format!("The specified Alias alias/{a} is not found."),
            ),
            None => aliyun(
                "Forbidden.KeyNotFound",
                format!("The specified Key {key} is not found."),
            ),
        })
    }

    /// The material of `KeyVersionId` of an asymmetric key (required, as Alibaba
    /// requires it on GetPublicKey and the Asymmetric* actions).
    fn aliyun_version<'a>(k: &'a LoadedKey, p: &Params<'_>) -> KmsResult<(u32, &'a Material)> {
        let want = p.need("KeyVersionId")?;
        (1..=k.rec.current_version())
            .find(|v| key_version_id(&k.rec.key_id, *v) == want)
            .and_then(|v| k.material.get(v as usize - 1).map(|m| (v, &**m)))
            .ok_or_else(|| {
                aliyun(
                    "Forbidden.ResourceNotFound",
                    format!(
                        "The key version {want} of key {} is not found.",
                        k.rec.key_id
                    ),
                )
            })
    }

    /// Runs one action of the Alibaba API; the response has no RequestId (the server
    /// adds it).
    ///
    /// # Errors
    /// Core errors, and Alibaba's own codes as [`ErrorCode::Other`]; [`wire_error`]
    /// gives each its Alibaba code and HTTP status.
    pub fn call_aliyun(
        &self,
        ctx: &CallContext,
        action: &str,
        params: &[(String, String)],
    ) -> KmsResult<Value> {
        let p = Params(params);
        if !ALIYUN_ACTIONS.contains(&action) {
            let e = aliyun(
                "InvalidApi.NotFound",
                format!("Specified api {action:?} is not found (Alibaba KMS 2016-01-20)."),
            );
            let _ = self.audited::<()>(ctx, action, "", |_| Err(e.clone()));
            return Err(e);
        }
        let hint = p.get("KeyId").map(key_ref).unwrap_or("").to_owned();
        self.audited(ctx, action, &hint, |now| {
            let v = self.aliyun_action(ctx, action, &p, now)?;
            let key = v
                .get("KeyId")
                .and_then(Value::as_str)
                .or_else(|| v.pointer("/KeyMetadata/KeyId").and_then(Value::as_str))
                .unwrap_or(&hint)
                .to_owned();
            Ok((v, key))
        })
    }

    /// Encrypt's and ReEncrypt's last step: seals `pt` under the newest version of `k`
    /// (an Enabled symmetric key; a DryRun stops before) and answers the blob.
    fn aliyun_seal(
        p: &Params<'_>,
        k: &LoadedKey,
        now: u64,
        pt: &[u8],
        context: &EncryptionContext,
    ) -> KmsResult<Value> {
        check_can_encrypt(&k.rec, now).map_err(symmetric_only)?;
        Self::dry_run(p)?;
        let blob = Self::seal_current(k, pt, &blob::canonical_context(context))?;
        Ok(json!({
            "CiphertextBlob": B64.encode(blob),
            "KeyId": k.rec.key_id,
            "KeyVersionId": key_version_id(&k.rec.key_id, k.rec.current_version()),
        }))
    }

    fn dry_run(p: &Params<'_>) -> KmsResult<()> {
        if p.flag("DryRun") {
            return Err(aliyun(
                "DryRunOperationError",
                "The request would have succeeded; DryRun was set.",
            ));
        }
        Ok(())
    }

    fn aliyun_action(
        &self,
        ctx: &CallContext,
        action: &str,
        p: &Params<'_>,
        now: u64,
    ) -> KmsResult<Value> {
        match action {
            "CreateKey" => self.ali_create_key(ctx, p, now),
            "DescribeKey" => {
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                Ok(json!({ "KeyMetadata": metadata(&k.rec) }))
            }
            "ListKeys" => {
                let (number, size, skip, take) = page(p)?;
                let snap = self.fresh(now)?;
                let keys: Vec<&KeyRecord> = snap
                    .keys
                    .iter()
                    .map(|k| &k.rec)
                    .filter(|r| !super::expired(r, now))
                    .collect();
                let list: Vec<Value> = keys
                    .iter()
                    .skip(skip)
                    .take(take)
                    .map(|r| json!({"KeyId": r.key_id, "KeyArn": arn(&r.key_id)}))
                    .collect();
                Ok(json!({
                    "Keys": {"Key": list},
                    "PageNumber": number, "PageSize": size, "TotalCount": keys.len(),
                }))
            }
            "EnableKey" | "DisableKey" => {
                let to = if action == "EnableKey" {
                    KeyState::Enabled
                } else {
                    KeyState::Disabled
                };
                self.ali_modify(p, now, |rec| {
                    if !matches!(rec.state, KeyState::Enabled | KeyState::Disabled) {
                        return Err(aliyun(
                            "Rejected.StateModifiedFailed",
                            format!("The key {} is {}.", rec.key_id, key_state(rec)),
                        ));
                    }
                    rec.state = to;
                    Ok(())
                })
            }
            "ScheduleKeyDeletion" => {
                let days = p.int("PendingWindowInDays")?.ok_or_else(|| {
                    aliyun(
                        "MissingParameter",
                        "The parameter \"PendingWindowInDays\" is needed but not provided.",
                    )
                })?;
                if !(7..=366).contains(&days) {
                    return Err(aliyun(
                        "InvalidParameter",
                        "The specified parameter \"PendingWindowInDays\" is not valid (7 to 366).",
                    ));
                }
                self.ali_modify(p, now, |rec| {
                    if rec.state == KeyState::PendingDelete {
                        return Err(aliyun(
                            "Rejected.StateModifiedFailed",
                            format!("The key {} is already PendingDeletion.", rec.key_id),
                        ));
                    }
                    rec.state = KeyState::PendingDelete;
                    rec.deletion_date = now + days * DAY;
                    Ok(())
                })
            }
            "CancelKeyDeletion" => self.ali_modify(p, now, |rec| {
                if rec.state != KeyState::PendingDelete {
                    return Err(aliyun(
                        "Rejected.StateModifiedFailed",
                        format!("The key {} is not PendingDeletion.", rec.key_id),
                    ));
                }
                // Alibaba's CancelKeyDeletion gives back an Enabled key.
                super::end_pending_delete(rec, KeyState::Enabled);
                Ok(())
            }),
            "UpdateKeyDescription" => {
                let d = p.get("Description").unwrap_or("").to_owned();
                super::check_description(&d)?;
                self.ali_modify(p, now, |rec| {
                    rec.description = d;
                    Ok(())
                })
            }
            "CreateKeyVersion" => self.ali_create_key_version(p, now),
            "ListKeyVersions" => {
                let (number, size, skip, take) = page(p)?;
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                let list: Vec<Value> = k
                    .rec
                    .versions
                    .iter()
                    .skip(skip)
                    .take(take)
                    .map(|v| version_entry(&k.rec, v.version))
                    .collect();
                Ok(json!({
                    "KeyVersions": {"KeyVersion": list},
                    "PageNumber": number, "PageSize": size, "TotalCount": k.rec.versions.len(),
                }))
            }
            "DescribeKeyVersion" => {
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                let (v, _) = Self::aliyun_version(k, p)?;
                Ok(json!({ "KeyVersion": version_entry(&k.rec, v) }))
            }
            "CreateAlias" => {
                let name = p.need("AliasName")?;
                let short = name.strip_prefix("alias/").ok_or_else(|| {
                    aliyun("InvalidParameter", "AliasName must start with alias/")
                })?;
                if short.starts_with("acs") {
                    return Err(aliyun(
                        "InvalidParameter",
                        "AliasName may not start with alias/acs (reserved)",
                    ));
                }
                super::validate_alias(short)?;
                let short = short.to_owned();
                self.ali_modify_txn(p, now, move |txn, i| {
                    if txn.keys.iter().any(|k| k.alias == short) {
                        return Err(KmsError::new(
                            ErrorCode::InvalidParameterValueAliasAlreadyExists,
                            format!("The alias alias/{short} already exists."),
                        ));
                    }
                    let rec = &mut txn.keys[i];
                    if !rec.alias.starts_with(AUTO_ALIAS_PREFIX) {
                        return Err(aliyun(
                            "Rejected.LimitExceeded",
                            format!(
                                "key {} already has the alias alias/{}: this KMS keeps one alias per key",
                                rec.key_id, rec.alias
                            ),
                        ));
                    }
                    rec.alias = short;
                    Ok(())
                })
            }
            "DeleteAlias" => {
                let name = p.need("AliasName")?;
                let short = name.strip_prefix("alias/").unwrap_or(name).to_owned();
                self.store.transact(now, |txn| {
                    let rec = txn
                        .keys
                        .iter_mut()
                        .find(|k| k.alias == short && !short.starts_with(AUTO_ALIAS_PREFIX))
                        .ok_or_else(|| {
                            aliyun(
                                "Forbidden.AliasNotFound",
                                format!("The specified Alias alias/{short} is not found."),
                            )
                        })?;
                    rec.alias = auto_alias()?;
                    Ok(json!({}))
                })
            }
            "ListAliases" => {
                let (number, size, skip, take) = page(p)?;
                let snap = self.fresh(now)?;
                let all: Vec<(String, &str)> = snap
                    .keys
                    .iter()
                    .filter(|k| !super::expired(&k.rec, now))
                    .filter_map(|k| shown_alias(&k.rec).map(|a| (a, k.rec.key_id.as_str())))
                    .collect();
                let list: Vec<Value> = all
                    .iter()
                    .skip(skip)
                    .take(take)
                    .map(|(a, id)| {
                        json!({"AliasName": a, "KeyId": id,
                               "AliasArn": format!("acs:kms:{ARN_REGION}:0:{a}")})
                    })
                    .collect();
                Ok(json!({
                    "Aliases": {"Alias": list},
                    "PageNumber": number, "PageSize": size, "TotalCount": all.len(),
                }))
            }
            "TagResource" => {
                let tags = parse_tags(Some(&json_param(p, "Tags")?))?;
                self.ali_modify(p, now, |rec| {
                    for t in tags {
                        rec.tags.retain(|o| o.key != t.key);
                        rec.tags.push(t);
                    }
                    if rec.tags.len() > super::MAX_TAGS {
                        return Err(aliyun("Rejected.LimitExceeded", "too many tags"));
                    }
                    Ok(())
                })
            }
            "UntagResource" => {
                let keys: Vec<String> =
                    serde_json::from_value(json_param(p, "TagKeys")?).map_err(|_| {
                        aliyun("InvalidParameter", "TagKeys must be a JSON list of strings")
                    })?;
                self.ali_modify(p, now, |rec| {
                    rec.tags.retain(|t| !keys.contains(&t.key));
                    Ok(())
                })
            }
            "ListResourceTags" => {
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                let tags: Vec<Value> = k
                    .rec
                    .tags
                    .iter()
                    .map(|t: &Tag| json!({"KeyId": k.rec.key_id, "TagKey": t.key, "TagValue": t.value}))
                    .collect();
                Ok(json!({ "Tags": {"Tag": tags} }))
            }
            "Encrypt" => {
                let pt = p.b64("Plaintext")?;
                if pt.is_empty() || pt.len() > MAX_ALIYUN_PLAINTEXT {
                    return Err(aliyun(
                        "InvalidParameter",
                        format!(
                            "Plaintext must be 1 to {MAX_ALIYUN_PLAINTEXT} bytes (6 KB per call)"
                        ),
                    ));
                }
                let context = parse_context(p.get("EncryptionContext"))?;
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                Self::aliyun_seal(p, k, now, &pt, &context)
            }
            "Decrypt" => {
                let raw = super::decode_blob(p.need("CiphertextBlob")?).map_err(invalid)?;
                let context = parse_context(p.get("EncryptionContext"))?;
                let snap = self.fresh(now)?;
                let version = blob::parse(&raw).map_err(invalid)?.key_version;
                Self::dry_run(p)?;
                let (pt, k) = Self::open_blob(&snap, now, &raw, &context).map_err(invalid)?;
                Ok(json!({
                    "KeyId": k.rec.key_id,
                    "KeyVersionId": key_version_id(&k.rec.key_id, version),
                    "Plaintext": B64.encode(&pt[..]),
                }))
            }
            "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
                let len = match (p.int("NumberOfBytes")?, p.get("KeySpec")) {
                    (Some(n), _) if (1..=1024).contains(&n) => n as usize,
                    (Some(_), _) => {
                        return Err(aliyun(
                            "InvalidParameter",
                            "NumberOfBytes must be 1 to 1024",
                        ))
                    }
                    (None, None | Some("AES_256")) => 32,
                    (None, Some("AES_128")) => 16,
                    (None, Some(_)) => {
                        return Err(aliyun(
                            "InvalidParameter",
                            "KeySpec must be AES_256 or AES_128",
                        ))
                    }
                };
                let context = parse_context(p.get("EncryptionContext"))?;
                let key = key_ref(p.need("KeyId")?).to_owned();
                {
                    let snap = self.fresh(now)?;
                    let k = Self::aliyun_lookup(&snap, &key, now)?;
                    check_can_encrypt(&k.rec, now).map_err(symmetric_only)?;
                }
                Self::dry_run(p)?;
                let dk = self.data_key(now, &key, len, &context)?;
                let version = blob::parse(&dk.ciphertext_blob)?.key_version;
                let mut v = json!({
                    "CiphertextBlob": B64.encode(&dk.ciphertext_blob),
                    "KeyId": dk.key_id,
                    "KeyVersionId": key_version_id(&dk.key_id, version),
                });
                if action == "GenerateDataKey" {
                    v["Plaintext"] = json!(B64.encode(&dk.plaintext[..]));
                }
                Ok(v)
            }
            "ReEncrypt" => {
                let raw = super::decode_blob(p.need("CiphertextBlob")?).map_err(invalid)?;
                let src_ctx = parse_context(p.get("SourceEncryptionContext"))?;
                let dst_ctx = parse_context(p.get("DestinationEncryptionContext"))?;
                let snap = self.fresh(now)?;
                let (pt, _) = Self::open_blob(&snap, now, &raw, &src_ctx).map_err(invalid)?;
                let dst = Self::aliyun_lookup(&snap, p.need("DestinationKeyId")?, now)?;
                Self::aliyun_seal(p, dst, now, &pt, &dst_ctx)
            }
            "GetPublicKey" => {
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                let (v, m) = Self::aliyun_version(k, p)?;
                ali_check_usable(&k.rec)?;
                Self::dry_run(p)?;
                Ok(json!({
                    "KeyId": k.rec.key_id,
                    "KeyVersionId": key_version_id(&k.rec.key_id, v),
                    "PublicKey": asym::public_key_pem(&public_der(m)?),
                }))
            }
            "AsymmetricEncrypt" | "AsymmetricDecrypt" => {
                let alg = p.need("Algorithm")?;
                let scheme = match alg {
                    "RSAES_OAEP_SHA_256" => RsaEncryption::OaepSha256,
                    "RSAES_OAEP_SHA_1" => RsaEncryption::OaepSha1,
                    _ => {
                        return Err(aliyun(
                            "InvalidParameter",
                            format!(
                                "Algorithm {alg:?} is not RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1"
                            ),
                        ))
                    }
                };
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                let (v, m) = Self::aliyun_version(k, p)?;
                if k.rec.usage != KeyUsage::AsymmetricDecryptRsa2048 {
                    return Err(aliyun(
                        "Rejected.UnsupportedOperation",
                        format!("key {} is not an RSA ENCRYPT/DECRYPT key", k.rec.key_id),
                    ));
                }
                ali_check_usable(&k.rec)?;
                let Material::Rsa(rsa) = m else {
                    return Err(invalid(err(ErrorCode::InvalidParameter, "not an RSA key")));
                };
                let vid = key_version_id(&k.rec.key_id, v);
                if action == "AsymmetricEncrypt" {
                    let pt = p.b64("Plaintext")?;
                    let max = if scheme == RsaEncryption::OaepSha256 {
                        190
                    } else {
                        214
                    };
                    if pt.is_empty() || pt.len() > max {
                        return Err(aliyun(
                            "InvalidParameter",
                            format!("Plaintext must be 1 to {max} bytes for {alg} with RSA_2048"),
                        ));
                    }
                    Self::dry_run(p)?;
                    let pem = asym::public_key_pem(&rsa.public_key_der()?);
                    let ct = asym::encrypt_to_public_key(&pem, scheme, &pt)?;
                    Ok(
                        json!({"CiphertextBlob": B64.encode(ct), "KeyId": k.rec.key_id, "KeyVersionId": vid}),
                    )
                } else {
                    let ct = p.b64("CiphertextBlob")?;
                    Self::dry_run(p)?;
                    let pt = rsa.decrypt(scheme, &ct).map_err(|_| {
                        aliyun("InvalidParameter", "The CiphertextBlob does not decrypt under this key version and algorithm.")
                    })?;
                    Ok(
                        json!({"Plaintext": B64.encode(&pt[..]), "KeyId": k.rec.key_id, "KeyVersionId": vid}),
                    )
                }
            }
            "AsymmetricSign" | "AsymmetricVerify" => {
                let alg = p.need("Algorithm")?;
                let sign_alg = match alg {
                    "RSA_PSS_SHA_256" => SignAlgorithm::RsaPssSha256,
                    "RSA_PKCS1_SHA_256" => SignAlgorithm::RsaPkcs1Sha256,
                    "ECDSA_SHA_256" => SignAlgorithm::EccP256,
                    _ => {
                        return Err(aliyun(
                            "InvalidParameter",
                            format!("Algorithm {alg:?} is not RSA_PSS_SHA_256, RSA_PKCS1_SHA_256 or ECDSA_SHA_256"),
                        ))
                    }
                };
                let digest: [u8; asym::DIGEST_LEN] =
                    p.b64("Digest")?[..].try_into().map_err(|_| {
                        aliyun(
                            "InvalidParameter",
                            "Digest must be the base64 of a 32-byte SHA-256 hash",
                        )
                    })?;
                let snap = self.fresh(now)?;
                let k = Self::aliyun_lookup(&snap, p.need("KeyId")?, now)?;
                let (v, m) = Self::aliyun_version(k, p)?;
                ali_check_usable(&k.rec)?;
                let vid = key_version_id(&k.rec.key_id, v);
                let wrong = || {
                    aliyun(
                        "Rejected.UnsupportedOperation",
                        format!("key {} does not sign with {alg}", k.rec.key_id),
                    )
                };
                let sign_usage = matches!(
                    k.rec.usage,
                    KeyUsage::AsymmetricSignVerifyRsa2048 | KeyUsage::AsymmetricSignVerifyEcc
                );
                if !sign_usage {
                    return Err(wrong());
                }
                if action == "AsymmetricSign" {
                    Self::dry_run(p)?;
                    let sig = match (m, sign_alg) {
                        (
                            Material::Rsa(r),
                            SignAlgorithm::RsaPssSha256 | SignAlgorithm::RsaPkcs1Sha256,
                        ) => r.sign_digest(sign_alg, &digest)?,
                        (Material::Ec(e), SignAlgorithm::EccP256) => {
                            e.sign_digest(sign_alg, &digest)?
                        }
                        _ => return Err(wrong()),
                    };
                    Ok(
                        json!({"Value": B64.encode(sig), "KeyId": k.rec.key_id, "KeyVersionId": vid}),
                    )
                } else {
                    let sig = p.b64("Value")?;
                    Self::dry_run(p)?;
                    let ok = match (m, sign_alg) {
                        (
                            Material::Rsa(r),
                            SignAlgorithm::RsaPssSha256 | SignAlgorithm::RsaPkcs1Sha256,
                        ) => r.verify_digest(sign_alg, &digest, &sig),
                        (Material::Ec(e), SignAlgorithm::EccP256) => {
                            e.verify_digest(sign_alg, &digest, &sig)
                        }
                        _ => return Err(wrong()),
                    };
                    Ok(json!({"Value": ok, "KeyId": k.rec.key_id, "KeyVersionId": vid}))
                }
            }
            _ => Err(aliyun("InvalidApi.NotFound", format!("no action {action}"))),
        }
    }

    fn ali_create_key(&self, ctx: &CallContext, p: &Params<'_>, now: u64) -> KmsResult<Value> {
        let spec = p.get("KeySpec").unwrap_or("Aliyun_AES_256");
        let usage = p.get("KeyUsage");
        let usage = match (spec, usage) {
            ("Aliyun_AES_256", None | Some("ENCRYPT/DECRYPT")) => KeyUsage::EncryptDecrypt,
            ("RSA_2048", Some("ENCRYPT/DECRYPT")) => KeyUsage::AsymmetricDecryptRsa2048,
            ("RSA_2048", None | Some("SIGN/VERIFY")) => KeyUsage::AsymmetricSignVerifyRsa2048,
            ("EC_P256", None | Some("SIGN/VERIFY")) => KeyUsage::AsymmetricSignVerifyEcc,
            ("Aliyun_SM4" | "RSA_3072" | "EC_P256K" | "EC_SM2", _) => {
                return Err(aliyun(
                    "Rejected.UnsupportedOperation",
                    format!("KeySpec {spec} is not offered by this KMS (Aliyun_AES_256, RSA_2048 and EC_P256 are)"),
                ))
            }
            _ => {
                return Err(aliyun(
                    "InvalidParameter",
                    format!("KeySpec {spec:?} with KeyUsage {usage:?} is not valid"),
                ))
            }
        };
        let origin = match p.get("Origin") {
            None | Some("Aliyun_KMS") => 1,
            Some("EXTERNAL") if usage == KeyUsage::EncryptDecrypt => 2,
            Some(o) => {
                return Err(aliyun(
                    "InvalidParameter",
                    format!("Origin {o:?} is not valid for KeySpec {spec}"),
                ))
            }
        };
        if p.get("ProtectionLevel")
            .is_some_and(|l| l != "SOFTWARE" && l != "HSM")
        {
            return Err(aliyun(
                "InvalidParameter",
                "ProtectionLevel must be SOFTWARE or HSM",
            ));
        }
        let tags = match p.get("Tags") {
            Some(_) => Some(json_param(p, "Tags")?),
            None => None,
        };
        let req = super::CreateKeyRequest {
            alias: Some(auto_alias()?),
            description: p.get("Description").map(str::to_owned),
            key_usage: Some(usage.as_str().to_owned()),
            key_type: Some(origin),
            tags,
        };
        let rotation = match p.get("RotationInterval") {
            Some(i) => parse_interval(i)?,
            None => 365,
        };
        // The core's CreateKey without its audit line: this request's line is the
        // adapter's (one line per call, with the new key's id).
        let (made, _) = self.create_key_at(ctx, &req, now)?;
        if p.flag("EnableAutomaticRotation") && usage == KeyUsage::EncryptDecrypt && origin == 1 {
            let days = rotation;
            self.store.transact(now, |txn| {
                if let Some(rec) = txn.keys.iter_mut().find(|k| k.key_id == made.key_id) {
                    rec.rotation_enabled = true;
                    rec.rotate_days = days;
                    rec.next_rotate_time = now + u64::from(days) * DAY;
                }
                Ok(())
            })?;
        }
        let snap = self.fresh(now)?;
        let k = Self::aliyun_lookup(&snap, &made.key_id, now)?;
        Ok(json!({ "KeyMetadata": metadata(&k.rec) }))
    }

    fn ali_create_key_version(&self, p: &Params<'_>, now: u64) -> KmsResult<Value> {
        let key = key_ref(p.need("KeyId")?).to_owned();
        let (kind, usage) = {
            let snap = self.fresh(now)?;
            let k = Self::aliyun_lookup(&snap, &key, now)?;
            if k.rec.state != KeyState::Enabled {
                return Err(super::state_error(&k.rec));
            }
            let kind = k.rec.versions.last().map(|v| v.kind);
            (kind, k.rec.usage)
        };
        // Asymmetric keys only, as Alibaba: symmetric keys rotate by policy.
        let der = match (kind, usage) {
            (Some(crate::key::MaterialKind::Rsa2048), _) => {
                asym::RsaKey::generate()?.to_pkcs8_der()?
            }
            (Some(crate::key::MaterialKind::EcP256), _) => {
                asym::EcKey::generate()?.to_pkcs8_der()?
            }
            _ => {
                return Err(aliyun(
                    "Rejected.UnsupportedOperation",
                    format!(
                        "CreateKeyVersion is for RSA_2048 and EC_P256 keys; key {key} is {}",
                        usage.as_str()
                    ),
                ))
            }
        };
        let kind = kind.unwrap_or(crate::key::MaterialKind::Rsa2048);
        self.store.transact(now, |txn| {
            let i = txn
                .resolve(&key)
                .ok_or_else(|| aliyun("Forbidden.KeyNotFound", "gone"))?;
            let next = txn.keys[i].current_version() + 1;
            if next > 50 {
                return Err(aliyun(
                    "Rejected.LimitExceeded",
                    "a key has at most 50 versions",
                ));
            }
            let key_id = txn.keys[i].key_id.clone();
            let v = txn.new_asym_version(&key_id, next, kind, &der)?;
            txn.keys[i].versions.push(v);
            txn.keys[i].last_rotate_time = now;
            Ok(json!({ "KeyVersion": version_entry(&txn.keys[i], next) }))
        })
    }

    /// One change to the key `KeyId` names, under the store lock.
    fn ali_modify(
        &self,
        p: &Params<'_>,
        now: u64,
        f: impl FnOnce(&mut KeyRecord) -> KmsResult<()>,
    ) -> KmsResult<Value> {
        self.ali_modify_txn(p, now, |txn, i| f(&mut txn.keys[i]))
    }

    fn ali_modify_txn(
        &self,
        p: &Params<'_>,
        now: u64,
        f: impl FnOnce(&mut crate::store::Txn<'_>, usize) -> KmsResult<()>,
    ) -> KmsResult<Value> {
        let key = key_ref(p.need("KeyId")?).to_owned();
        self.store.transact(now, |txn| {
            let i = txn
                .resolve(&key)
                .filter(|&i| !super::expired(&txn.keys[i], now))
                .ok_or_else(|| {
                    aliyun(
                        "Forbidden.KeyNotFound",
                        format!("The specified Key {key} is not found."),
                    )
                })?;
            f(txn, i)?;
            Ok(json!({ "KeyId": txn.keys[i].key_id }))
        })
    }
}

/// Crypto on an asymmetric key: Enabled only.
fn ali_check_usable(rec: &KeyRecord) -> KmsResult<()> {
    if rec.state != KeyState::Enabled {
        return Err(super::state_error(rec));
    }
    Ok(())
}

fn public_der(m: &Material) -> KmsResult<Vec<u8>> {
    match m {
        Material::Rsa(r) => r.public_key_der(),
        Material::Ec(e) => e.public_key_der(),
        Material::Sm2(k) => k.public_key_der(),
        Material::Kem(k) => k.public_key_der(),
        Material::Dsa(k) => k.public_key_der(),
        Material::Aead(_) => Err(aliyun(
            "Rejected.UnsupportedOperation",
            "a symmetric key has no public key",
        )),
    }
}

/// Encrypt, GenerateDataKey and ReEncrypt on an asymmetric key: Alibaba's code.
fn symmetric_only(e: KmsError) -> KmsError {
    if e.code == ErrorCode::InvalidParameterValueInvalidKeyUsage {
        return aliyun("Rejected.UnsupportedOperation", e.message);
    }
    e
}

/// A ciphertext that does not open: `InvalidParameter` (Alibaba documents no code).
fn invalid(e: KmsError) -> KmsError {
    if matches!(
        e.code,
        ErrorCode::InvalidParameterValueInvalidCiphertext | ErrorCode::InvalidParameterValue
    ) {
        return aliyun("InvalidParameter", e.message);
    }
    e
}

fn json_param(p: &Params<'_>, name: &str) -> KmsResult<Value> {
    serde_json::from_str(p.need(name)?).map_err(|_| {
        aliyun(
            "InvalidParameter",
            format!("The specified parameter \"{name}\" is not valid JSON."),
        )
    })
}

/// `RotationInterval`: `7d` or `604800s`, 7 to 365 days.
fn parse_interval(v: &str) -> KmsResult<u32> {
    let bad = || {
        aliyun(
            "InvalidParameter",
            "RotationInterval must be 7d to 365d (or in seconds, 604800s…)",
        )
    };
    let days = if let Some(d) = v.strip_suffix('d') {
        d.parse::<u64>().map_err(|_| bad())?
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse::<u64>().map_err(|_| bad())? / DAY
    } else {
        return Err(bad());
    };
    if !(7..=365).contains(&days) {
        return Err(bad());
    }
    Ok(days as u32)
}

/// A fresh placeholder alias for a key made through this API.
fn auto_alias() -> KmsResult<String> {
    let mut b = [0u8; 12];
    crate::crypto::random_bytes(&mut b)?;
    Ok(format!("{AUTO_ALIAS_PREFIX}{}", crate::crypto::hex(&b)))
}

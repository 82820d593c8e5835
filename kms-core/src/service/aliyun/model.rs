//! How a key reads through the Alibaba API: the request's business parameters,
//! KeyVersionIds, ARNs, KeySpec and KeyUsage from the Tencent usage, states, the key
//! metadata and version entries, and paging.

use super::*;

/// The business parameters of one request.
pub(super) struct Params<'a>(pub(super) &'a [(String, String)]);

impl Params<'_> {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn need(&self, name: &str) -> KmsResult<&str> {
        self.get(name).ok_or_else(|| {
            aliyun(
                "MissingParameter",
                format!("The parameter \"{name}\" is needed but not provided."),
            )
        })
    }

    pub(super) fn int(&self, name: &str) -> KmsResult<Option<u64>> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    aliyun(
                        "InvalidParameter",
                        format!("The specified parameter \"{name}\" is not valid."),
                    )
                })
            })
            .transpose()
    }

    /// Booleans arrive as `True`/`False` from the new SDK, `true`/`false` from others.
    pub(super) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    pub(super) fn b64(&self, name: &str) -> KmsResult<Zeroizing<Vec<u8>>> {
        let v = self.need(name)?;
        B64.decode(v.trim()).map(Zeroizing::new).map_err(|_| {
            aliyun(
                "InvalidParameter",
                format!("The specified parameter \"{name}\" is not valid base64."),
            )
        })
    }
}

/// The KeyVersionId of version `version` of `key_id`: a UUID derived from both, so
/// every server and both APIs name a version alike without storing anything.
pub fn key_version_id(key_id: &str, version: u32) -> String {
    let mut input = b"kmsfs key version\0".to_vec();
    input.extend_from_slice(key_id.as_bytes());
    input.extend_from_slice(&version.to_be_bytes());
    let h = crate::crypto::hex(&crate::crypto::sha256(&input));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// `KeyId` as Alibaba takes it: an id, `alias/NAME`, or an ARN `acs:kms:…:key/ID`.
pub(super) fn key_ref(v: &str) -> &str {
    match v.strip_prefix("acs:kms:") {
        Some(rest) => rest.rsplit_once(":key/").map_or(v, |(_, id)| id),
        None => v,
    }
}

pub(super) fn utc(secs: u64) -> String {
    if secs == 0 {
        return String::new();
    }
    let t = crate::clock::rfc3339_millis(secs.saturating_mul(1000));
    format!("{}Z", &t[..19.min(t.len())])
}

pub(super) fn arn(key_id: &str) -> String {
    format!("acs:kms:{ARN_REGION}:0:key/{key_id}")
}

/// Alibaba's KeySpec and KeyUsage of a key.
pub(super) fn spec_and_usage(u: KeyUsage) -> (&'static str, &'static str) {
    match u {
        KeyUsage::EncryptDecrypt => ("Aliyun_AES_256", "ENCRYPT/DECRYPT"),
        KeyUsage::AsymmetricDecryptRsa2048 => ("RSA_2048", "ENCRYPT/DECRYPT"),
        KeyUsage::AsymmetricSignVerifyRsa2048 => ("RSA_2048", "SIGN/VERIFY"),
        KeyUsage::AsymmetricSignVerifyEcc => ("EC_P256", "SIGN/VERIFY"),
        KeyUsage::AsymmetricDecryptSm2 => ("EC_SM2", "ENCRYPT/DECRYPT"),
        KeyUsage::AsymmetricSignVerifySm2 => ("EC_SM2", "SIGN/VERIFY"),
        KeyUsage::AsymmetricEncryptDecryptKyberAes => ("ML_KEM_768", "ENCRYPT/DECRYPT"),
        KeyUsage::AsymmetricSignVerifyDilithium => ("ML_DSA_65", "SIGN/VERIFY"),
        _ => ("", ""),
    }
}

pub(super) fn key_state(rec: &KeyRecord) -> &'static str {
    match rec.state {
        KeyState::Enabled => "Enabled",
        KeyState::Disabled | KeyState::Archived => "Disabled",
        KeyState::PendingDelete => "PendingDeletion",
        KeyState::PendingImport => "PendingImport",
    }
}

pub(super) fn metadata(rec: &KeyRecord) -> Value {
    let (spec, usage) = spec_and_usage(rec.usage);
    let mut m = json!({
        "Arn": arn(&rec.key_id),
        "AutomaticRotation": if rec.rotation_enabled { "Enabled" } else { "Disabled" },
        "CreationDate": utc(rec.create_time),
        "Creator": rec.creator,
        "DeleteDate": utc(rec.deletion_date),
        "DeletionProtection": "Disabled",
        "Description": rec.description,
        "KeyId": rec.key_id,
        "KeySpec": spec,
        "KeyState": key_state(rec),
        "KeyUsage": usage,
        "LastRotationDate": utc(rec.last_rotate_time),
        "MaterialExpireTime": utc(rec.valid_to),
        "NextRotationDate": utc(rec.next_rotate_time),
        "Origin": match rec.origin { Origin::External => "EXTERNAL", _ => "Aliyun_KMS" },
        "ProtectionLevel": "SOFTWARE",
        "RotationInterval": if rec.rotate_days > 0 { format!("{}s", u64::from(rec.rotate_days) * DAY) } else { String::new() },
    });
    if rec.usage == KeyUsage::EncryptDecrypt && rec.current_version() > 0 {
        m["PrimaryKeyVersion"] = json!(key_version_id(&rec.key_id, rec.current_version()));
    }
    m
}

pub(super) fn version_entry(rec: &KeyRecord, version: u32) -> Value {
    let created = rec
        .versions
        .iter()
        .find(|v| v.version == version)
        .map_or(0, |v| v.created);
    json!({
        "KeyId": rec.key_id,
        "KeyVersionId": key_version_id(&rec.key_id, version),
        "CreationDate": utc(created),
    })
}

pub(super) fn page(p: &Params<'_>) -> KmsResult<(u64, u64, usize, usize)> {
    let number = p.int("PageNumber")?.unwrap_or(1);
    let size = p.int("PageSize")?.unwrap_or(10);
    if number == 0 || !(1..=100).contains(&size) {
        return Err(aliyun(
            "InvalidParameter",
            "PageNumber must be at least 1 and PageSize 1 to 100",
        ));
    }
    let skip = usize::try_from((number - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    Ok((number, size, skip, size as usize))
}

/// The alias a key shows through this API (`alias/NAME`), if it has a real one.
pub(super) fn shown_alias(rec: &KeyRecord) -> Option<String> {
    (!rec.alias.is_empty() && !rec.alias.starts_with(AUTO_ALIAS_PREFIX))
        .then(|| format!("alias/{}", rec.alias))
}

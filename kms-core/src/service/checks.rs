//! The checks every action shares: the error helpers, key state (what a state
//! allows at a given time), key usage, and the decoding of common parameters
//! (base64, CiphertextBlob, EncryptionContext, required strings).

use super::*;

pub(super) fn err(code: ErrorCode, msg: impl Into<String>) -> KmsError {
    KmsError::new(code, msg)
}

/// The error for a key that is not in the store: `InvalidParameterValue.InvalidKeyId`
/// when `key` cannot be a key id at all (not `alias/NAME`, not a key id's shape), as
/// the service answers; `ResourceUnavailable.CmkNotFound` otherwise.
pub(super) fn not_found(key: &str) -> KmsError {
    if !key.starts_with("alias/") && !is_key_id_shaped(key) {
        return err(
            ErrorCode::InvalidParameterValueInvalidKeyId,
            format!("{key:?} is not a key id (a UUID) or alias/NAME"),
        );
    }
    err(
        ErrorCode::ResourceUnavailableCmkNotFound,
        format!("no key {key:?} in this KMS"),
    )
}

/// The `Origin` filter of ListKeyDetail and ListDataKeyDetail (`None`: any).
pub(super) fn parse_origin_filter(o: Option<&str>) -> KmsResult<Option<Origin>> {
    match o {
        None | Some("") | Some("ALL") => Ok(None),
        Some("TENCENT_KMS") => Ok(Some(Origin::TencentKms)),
        Some("EXTERNAL") => Ok(Some(Origin::External)),
        Some(o) => Err(err(
            ErrorCode::InvalidParameterValue,
            format!("unknown Origin {o:?}"),
        )),
    }
}

/// Whether `s` has the shape of a key id: a UUID, 8-4-4-4-12 hex digits.
pub(super) fn is_key_id_shaped(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The error for an operation the key's state forbids.
pub(super) fn state_error(rec: &KeyRecord) -> KmsError {
    let (code, what) = match rec.state {
        KeyState::Disabled => (ErrorCode::ResourceUnavailableCmkDisabled, "is disabled"),
        KeyState::PendingDelete => (
            ErrorCode::ResourceUnavailableKeyPendingDelete,
            "is pending deletion",
        ),
        KeyState::Archived => (ErrorCode::ResourceUnavailableCmkArchived, "is archived"),
        KeyState::PendingImport => (
            ErrorCode::ResourceUnavailableCmkStateNotSupport,
            "has no key material (PendingImport)",
        ),
        KeyState::Enabled => (
            ErrorCode::ResourceUnavailableCmkStateNotSupport,
            "is enabled",
        ),
    };
    err(code, format!("key {} {what}", rec.key_id))
}

pub(super) fn check_symmetric(rec: &KeyRecord) -> KmsResult<()> {
    if rec.usage != KeyUsage::EncryptDecrypt {
        return Err(err(
            ErrorCode::InvalidParameterValueInvalidKeyUsage,
            format!(
                "key {} is {}, not ENCRYPT_DECRYPT",
                rec.key_id,
                rec.usage.as_str()
            ),
        ));
    }
    Ok(())
}

/// The key's state at `now`: imported material whose `ValidTo` has passed is
/// gone (PendingImport) even before a write removes it from the store.
pub(super) fn state_at(rec: &KeyRecord, now: u64) -> KeyState {
    if imported_material_expired(rec, now) && rec.state != KeyState::PendingDelete {
        KeyState::PendingImport
    } else {
        rec.state
    }
}

/// The state error of `rec` as it is at `now`.
pub(super) fn state_error_at(rec: &KeyRecord, now: u64) -> KmsError {
    let mut r = rec.clone();
    r.state = state_at(rec, now);
    state_error(&r)
}

/// The key may make new ciphertexts.
pub(super) fn check_can_encrypt(rec: &KeyRecord, now: u64) -> KmsResult<()> {
    if state_at(rec, now) != KeyState::Enabled {
        return Err(state_error_at(rec, now));
    }
    check_symmetric(rec)
}

/// The key may open ciphertexts (Enabled or Archived).
pub(super) fn check_can_decrypt(rec: &KeyRecord, now: u64) -> KmsResult<()> {
    if !matches!(state_at(rec, now), KeyState::Enabled | KeyState::Archived) {
        return Err(state_error_at(rec, now));
    }
    check_symmetric(rec)
}

/// The key has one of `usages`.
pub(super) fn check_usage(rec: &KeyRecord, usages: &[KeyUsage], what: &str) -> KmsResult<()> {
    if !usages.contains(&rec.usage) {
        return Err(err(
            ErrorCode::InvalidParameterValueInvalidKeyUsage,
            format!(
                "key {} is {}: {what} needs a key of usage {}",
                rec.key_id,
                rec.usage.as_str(),
                usages
                    .iter()
                    .map(|u| u.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    Ok(())
}

/// The key has one of `usages` and is in one of `states`: the usage error first,
/// then the key's state error. `states` are the stored ones (see [`ENABLED`],
/// [`ENABLED_OR_ARCHIVED`]).
pub(super) fn check_usage_and_state(
    rec: &KeyRecord,
    usages: &[KeyUsage],
    what: &str,
    states: &[KeyState],
) -> KmsResult<()> {
    check_usage(rec, usages, what)?;
    if !states.contains(&rec.state) {
        return Err(state_error(rec));
    }
    Ok(())
}

/// The states in which a key makes new ciphertexts and signatures.
pub(super) const ENABLED: &[KeyState] = &[KeyState::Enabled];

/// The states in which a key opens ciphertexts, verifies and shows its public key.
pub(super) const ENABLED_OR_ARCHIVED: &[KeyState] = &[KeyState::Enabled, KeyState::Archived];

/// The asymmetric usages this KMS makes keys for.
pub(super) const ASYMMETRIC_USAGES: &[KeyUsage] = &[
    KeyUsage::AsymmetricDecryptRsa2048,
    KeyUsage::AsymmetricDecryptSm2,
    KeyUsage::AsymmetricSignVerifyRsa2048,
    KeyUsage::AsymmetricSignVerifyEcc,
    KeyUsage::AsymmetricSignVerifySm2,
    KeyUsage::AsymmetricEncryptDecryptKyberAes,
    KeyUsage::AsymmetricSignVerifyDilithium,
];

/// Usages of the API's documentation this KMS does not make keys for; CreateKey
/// answers `UnsupportedOperation.UnsupportedKeyUsageInCurrentRegion` for them, as the
/// service does where a region lacks an algorithm.
pub(super) const REGION_UNSUPPORTED_USAGES: &[&str] = &[
    "ASYMMETRIC_SIGN_VERIFY_ECDSA384",
    "ASYMMETRIC_SIGN_VERIFY_RSA_3072",
    "ASYMMETRIC_DECRYPT_RSA_3072",
];

/// The signing usages.
pub(super) const SIGN_USAGES: &[KeyUsage] = &[
    KeyUsage::AsymmetricSignVerifyRsa2048,
    KeyUsage::AsymmetricSignVerifyEcc,
    KeyUsage::AsymmetricSignVerifySm2,
];

/// Cancels a key's pending deletion: it goes back to `restored`, or to PendingImport
/// when it has no material (an EXTERNAL key whose material was never imported or is
/// gone).
pub(super) fn end_pending_delete(rec: &mut KeyRecord, restored: KeyState) {
    rec.state = if rec.versions.is_empty() {
        KeyState::PendingImport
    } else {
        restored
    };
    rec.deletion_date = 0;
}

/// The key is EXTERNAL.
pub(super) fn check_external(rec: &KeyRecord) -> KmsResult<()> {
    if rec.origin != Origin::External {
        return Err(err(
            ErrorCode::UnsupportedOperationNotExternalCmk,
            format!(
                "key {} is not an EXTERNAL key (CreateKey Type 2)",
                rec.key_id
            ),
        ));
    }
    Ok(())
}

pub(super) fn decode_b64(s: &str, code: ErrorCode, name: &str) -> KmsResult<Zeroizing<Vec<u8>>> {
    B64.decode(s.trim())
        .map(Zeroizing::new)
        .map_err(|_| err(code, format!("{name} is not base64")))
}

pub(super) fn expired(rec: &KeyRecord, now: u64) -> bool {
    rec.state == KeyState::PendingDelete && rec.deletion_date <= now
}

pub(super) fn parse_context(s: Option<&str>) -> KmsResult<EncryptionContext> {
    match s {
        None | Some("") => Ok(EncryptionContext::new()),
        Some(s) if s.len() > MAX_CONTEXT => Err(err(
            ErrorCode::InvalidParameterValue,
            format!("EncryptionContext is longer than {MAX_CONTEXT} bytes"),
        )),
        Some(s) => EncryptionContext::from_json(s),
    }
}

pub(super) fn decode_blob(s: &str) -> KmsResult<Vec<u8>> {
    B64.decode(s.trim()).map_err(|_| {
        err(
            ErrorCode::InvalidParameterValueInvalidCiphertext,
            "CiphertextBlob is not base64",
        )
    })
}

pub(super) fn require<'a>(v: &'a Option<String>, name: &str) -> KmsResult<&'a str> {
    match v.as_deref() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(err(
            ErrorCode::MissingParameter,
            format!("the parameter {name} is required"),
        )),
    }
}

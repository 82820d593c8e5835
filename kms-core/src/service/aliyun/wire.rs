//! How the Alibaba API reads on the wire: a core error's `Code` and HTTP status
//! (ALIYUN-KMS-API.md §5), the flat error body both Alibaba SDKs parse, and the
//! success body.

use super::*;

/// An error as the Alibaba API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireError {
    /// The `Code` of the error body.
    pub code: &'static str,
    /// The HTTP status.
    pub status: u16,
}

pub(super) const fn wire(code: &'static str, status: u16) -> WireError {
    WireError { code, status }
}

/// The Alibaba code and status of a core error. The key-state refusals are 409
/// (`Rejected.*`); an unknown key is `Forbidden.KeyNotFound` 404; a ciphertext that
/// does not open is `InvalidParameter` 400 (Alibaba documents no code for it).
pub fn wire_error(e: &KmsError) -> WireError {
    use ErrorCode as C;
    match &e.code {
        C::AuthInvalidAuthorization => wire("IncompleteSignature", 400),
        C::AuthSecretIdNotFound => wire("InvalidAccessKeyId.NotFound", 404),
        C::AuthSignatureExpire => wire("InvalidTimeStamp.Expired", 400),
        C::AuthSignatureFailure => wire("SignatureDoesNotMatch", 400),
        C::AuthTokenFailure => wire("InvalidSecurityToken", 400),
        C::AuthUnauthorizedOperation | C::UnauthorizedOperation => {
            wire("Forbidden.NoPermission", 403)
        }
        C::InvalidAction => wire("InvalidApi.NotFound", 404),
        C::NoSuchVersion => wire("InvalidVersion", 400),
        C::MissingParameter => wire("MissingParameter", 400),
        C::RequestLimitExceeded => wire("Throttling", 400),
        C::LimitExceeded | C::LimitExceededCmkLimitExceeded | C::LimitExceededKeyLimitExceeded => {
            wire("Rejected.LimitExceeded", 400)
        }
        C::UnsupportedOperation
        | C::UnsupportedOperationExternalCmkCanNotRotate
        | C::UnsupportedOperationNotExternalCmk
        | C::UnsupportedOperationRotateNotSupported
        | C::UnsupportedOperationUnsupportedKeyUsageInCurrentRegion
        | C::InvalidParameterValueInvalidKeyUsage => wire("Rejected.UnsupportedOperation", 400),
        C::InvalidParameterValueAliasAlreadyExists => wire("AliasAlreadyExists", 400),
        C::InvalidParameter
        | C::InvalidParameterValue
        | C::FailedOperationDecryptError
        | C::InvalidParameterDecryptMaterialError
        | C::InvalidParameterInvalidPendingWindowInDays
        | C::InvalidParameterValueInvalidAlias
        | C::InvalidParameterValueInvalidCiphertext
        | C::InvalidParameterValueInvalidKeyId
        | C::InvalidParameterValueInvalidPlaintext
        | C::InvalidParameterValueInvalidType
        | C::InvalidParameterValueMaterialNotMatch
        | C::InvalidParameterValueInvalidImportKeyMaterial
        | C::InvalidParameterValueDuplicatedKeyId
        | C::ResourceUnavailableTokenExpired
        | C::InvalidParameterValueTagKeysDuplicated
        | C::InvalidParameterValueDataKeyNameAlreadyExists
        | C::InvalidParameterValueDuplicatedDataKeyId
        | C::InvalidParameterValueInvalidDataKeyId
        | C::InvalidParameterValueInvalidDataKeyName => wire("InvalidParameter", 400),
        C::LimitExceededDataKeyLimitExceeded => wire("Rejected.LimitExceeded", 400),
        C::ResourceUnavailableDataKeyNotFound => wire("Forbidden.ResourceNotFound", 404),
        C::ResourceUnavailableDataKeyDisabled => wire("Rejected.Disabled", 409),
        C::ResourceUnavailableDataKeyPendingDelete => wire("Rejected.PendingDeletion", 409),
        C::ResourceUnavailableDataKeyNotPendingDelete
        | C::ResourceUnavailableDataKeyStateNotSupport => wire("Rejected.StateModifiedFailed", 409),
        C::ResourceUnavailableCmkNotFound | C::ResourceNotFound => {
            wire("Forbidden.KeyNotFound", 404)
        }
        // Alibaba has no archived state: an archived key refuses as a disabled one.
        C::ResourceUnavailableCmkDisabled
        | C::ResourceUnavailableKeyDisabled
        | C::ResourceUnavailableCmkArchived => wire("Rejected.Disabled", 409),
        C::ResourceUnavailableKeyPendingDelete => wire("Rejected.PendingDeletion", 409),
        C::ResourceUnavailableCmkNotPendingDelete
        | C::ResourceUnavailableCmkShouldBeDisabled
        | C::ResourceUnavailableCmkStateNotSupport => wire("Rejected.StateModifiedFailed", 409),
        C::Other(code) => ALIYUN_CODES
            .iter()
            .find(|w| w.code == code)
            .copied()
            .unwrap_or(wire("InternalFailure", 500)),
        C::FailedOperation
        | C::InternalError
        | C::FailedOperationEncryptionError
        | C::FailedOperationSignError
        | C::FailedOperationVerifyError => wire("InternalFailure", 500),
    }
}

/// The flat error body of §5: `RequestId`, `HostId`, `Code`, `Message`, `Recommend`.
pub fn error_body(request_id: &str, host: &str, code: &str, message: &str) -> Vec<u8> {
    let v = json!({
        "RequestId": request_id,
        "HostId": host,
        "Code": code,
        "Message": message,
        "Recommend": "",
    });
    // A json! object of strings always serialises.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The status and body of a refused signature.
pub fn auth_error_response(request_id: &str, host: &str, e: &AuthError) -> (u16, Vec<u8>) {
    (e.status, error_body(request_id, host, e.code, &e.message))
}

/// The status and body of a core error.
pub fn kms_error_response(request_id: &str, host: &str, e: &KmsError) -> (u16, Vec<u8>) {
    let w = wire_error(e);
    (w.status, error_body(request_id, host, w.code, &e.message))
}

/// Codes of the Alibaba API that have no core equivalent, with their statuses; the
/// adapter raises them as [`ErrorCode::Other`].
pub(super) const ALIYUN_CODES: &[WireError] = &[
    wire("Forbidden.AliasNotFound", 404),
    wire("Forbidden.KeyNotFound", 404),
    wire("Forbidden.ResourceNotFound", 404),
    wire("InvalidParameter", 400),
    wire("MissingParameter", 400),
    wire("Rejected.UnsupportedOperation", 400),
    wire("Rejected.LimitExceeded", 400),
    wire("Rejected.StateModifiedFailed", 409),
    wire("DryRunOperationError", 400),
    wire("InvalidApi.NotFound", 404),
];

pub(super) fn aliyun(code: &'static str, msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::Other(code.to_owned()), msg)
}

/// The success body: the action's fields and `RequestId`.
pub fn success_body(request_id: &str, v: Value) -> Vec<u8> {
    let mut m = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("RequestId".into(), Value::String(request_id.to_owned()));
    serde_json::to_vec(&Value::Object(m)).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_core_code_has_a_client_or_server_status() {
        for (code, name) in ErrorCode::TABLE {
            let w = wire_error(&KmsError::new(code.clone(), "m"));
            assert!((400..600).contains(&w.status), "{name} -> {w:?}");
            assert!(!w.code.is_empty());
        }
    }

    #[test]
    fn key_state_refusals_are_409_and_a_missing_key_404() {
        for (code, want) in [
            (
                ErrorCode::ResourceUnavailableCmkDisabled,
                "Rejected.Disabled",
            ),
            (
                ErrorCode::ResourceUnavailableKeyPendingDelete,
                "Rejected.PendingDeletion",
            ),
            (
                ErrorCode::ResourceUnavailableCmkNotPendingDelete,
                "Rejected.StateModifiedFailed",
            ),
        ] {
            assert_eq!(wire_error(&KmsError::new(code, "m")), wire(want, 409));
        }
        let e = KmsError::new(ErrorCode::ResourceUnavailableCmkNotFound, "no key");
        assert_eq!(wire_error(&e), wire("Forbidden.KeyNotFound", 404));
    }

    #[test]
    fn error_body_is_the_flat_shape_the_sdks_read() {
        let e = KmsError::new(
            ErrorCode::ResourceUnavailableCmkDisabled,
            "key k is disabled",
        );
        let (status, body) = kms_error_response("rid", "127.0.0.1:1", &e);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 409);
        assert_eq!(v["Code"], "Rejected.Disabled");
        assert_eq!(v["Message"], "key k is disabled");
        assert_eq!(v["RequestId"], "rid");
        assert!(v.get("Response").is_none());
    }
}

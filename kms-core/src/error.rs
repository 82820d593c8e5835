//! Errors as the Tencent Cloud KMS API reports them: a code such as
//! `ResourceUnavailable.CmkDisabled` and a human message.
//!
//! A [`KmsError`] never carries key material or plaintext: messages name keys by id
//! and say what was wrong with a parameter, never its value when that value is secret.

use std::fmt;

/// One Tencent Cloud API error code (common codes and the KMS 2019-01-18 codes).
///
/// `as_str` gives the exact wire spelling. Codes this crate does not know (a newer
/// server) are kept verbatim in [`ErrorCode::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    // --- common ---
    /// The `Authorization` header is missing or malformed.
    AuthInvalidAuthorization,
    /// No principal has this SecretId.
    AuthSecretIdNotFound,
    /// The request timestamp is outside the server's clock window.
    AuthSignatureExpire,
    /// The TC3 signature does not match.
    AuthSignatureFailure,
    /// The temporary-credential token is invalid.
    AuthTokenFailure,
    /// Authenticated, but CAM-style authorisation refused the call.
    AuthUnauthorizedOperation,
    /// The operation failed for a reason not covered by a more specific code.
    FailedOperation,
    /// A fault inside the KMS (I/O, a damaged store). Retryable.
    InternalError,
    /// The action name is unknown.
    InvalidAction,
    /// A parameter is malformed (wrong type, bad JSON).
    InvalidParameter,
    /// A parameter has a value outside what the action accepts.
    InvalidParameterValue,
    /// A quota is exhausted.
    LimitExceeded,
    /// A required parameter is absent.
    MissingParameter,
    /// The `X-TC-Version` is not 2019-01-18.
    NoSuchVersion,
    /// The principal's rate limit was hit. Retryable with backoff.
    RequestLimitExceeded,
    /// The principal may not run this action on this key.
    UnauthorizedOperation,
    /// The action is not supported for this key or configuration.
    UnsupportedOperation,
    // --- KMS ---
    /// Decryption failed (the ciphertext does not authenticate under the key).
    FailedOperationDecryptError,
    /// Encryption failed.
    FailedOperationEncryptionError,
    /// Signing failed.
    FailedOperationSignError,
    /// Signature verification could not run.
    FailedOperationVerifyError,
    /// Imported key material could not be decrypted with the import wrapping key.
    InvalidParameterDecryptMaterialError,
    /// `PendingWindowInDays` is outside 7–30.
    InvalidParameterInvalidPendingWindowInDays,
    /// The alias is already used by another key.
    InvalidParameterValueAliasAlreadyExists,
    /// The alias does not follow the naming rules.
    InvalidParameterValueInvalidAlias,
    /// The CiphertextBlob is malformed, truncated, tampered with, or its context does not match.
    InvalidParameterValueInvalidCiphertext,
    /// The KeyId is malformed.
    InvalidParameterValueInvalidKeyId,
    /// The key's usage does not allow this operation.
    InvalidParameterValueInvalidKeyUsage,
    /// The plaintext is empty, too long, or not base64.
    InvalidParameterValueInvalidPlaintext,
    /// The key Type is not 1 or 2.
    InvalidParameterValueInvalidType,
    /// Imported material differs from the material the key had before.
    InvalidParameterValueMaterialNotMatch,
    /// The imported key material is malformed.
    InvalidParameterValueInvalidImportKeyMaterial,
    /// A KeyId appears twice in one request.
    InvalidParameterValueDuplicatedKeyId,
    /// Too many CMKs.
    LimitExceededCmkLimitExceeded,
    /// Too many keys.
    LimitExceededKeyLimitExceeded,
    /// No key has this id (or it was purged).
    ResourceUnavailableCmkNotFound,
    /// The key is disabled.
    ResourceUnavailableCmkDisabled,
    /// The key is archived (it may only decrypt).
    ResourceUnavailableCmkArchived,
    /// CancelKeyDeletion on a key that is not pending deletion.
    ResourceUnavailableCmkNotPendingDelete,
    /// The key must be disabled first (ScheduleKeyDeletion).
    ResourceUnavailableCmkShouldBeDisabled,
    /// The key's state does not allow this operation.
    ResourceUnavailableCmkStateNotSupport,
    /// The key is disabled.
    ResourceUnavailableKeyDisabled,
    /// The key is pending deletion.
    ResourceUnavailableKeyPendingDelete,
    /// The ImportToken is not the latest one, or it expired (ImportKeyMaterial).
    ResourceUnavailableTokenExpired,
    /// External keys cannot be rotated.
    UnsupportedOperationExternalCmkCanNotRotate,
    /// The operation needs an EXTERNAL (Type 2) key.
    UnsupportedOperationNotExternalCmk,
    /// Rotation is not supported for this key.
    UnsupportedOperationRotateNotSupported,
    /// The key usage is not offered here.
    UnsupportedOperationUnsupportedKeyUsageInCurrentRegion,
    /// A tag key is given twice.
    InvalidParameterValueTagKeysDuplicated,
    /// Another data key has this name.
    InvalidParameterValueDataKeyNameAlreadyExists,
    /// A data key id is listed twice.
    InvalidParameterValueDuplicatedDataKeyId,
    /// Not a data key id.
    InvalidParameterValueInvalidDataKeyId,
    /// Not a valid data key name.
    InvalidParameterValueInvalidDataKeyName,
    /// Too many hosted data keys.
    LimitExceededDataKeyLimitExceeded,
    /// The data key is disabled.
    ResourceUnavailableDataKeyDisabled,
    /// No such data key.
    ResourceUnavailableDataKeyNotFound,
    /// The data key is not pending deletion.
    ResourceUnavailableDataKeyNotPendingDelete,
    /// The data key is pending deletion.
    ResourceUnavailableDataKeyPendingDelete,
    /// The data key's state forbids this.
    ResourceUnavailableDataKeyStateNotSupport,
    /// A resource does not exist.
    ResourceNotFound,
    /// A code this crate does not know, kept verbatim.
    Other(String),
}

impl ErrorCode {
    pub(crate) const TABLE: &'static [(ErrorCode, &'static str)] = &[
        (
            ErrorCode::AuthInvalidAuthorization,
            "AuthFailure.InvalidAuthorization",
        ),
        (
            ErrorCode::AuthSecretIdNotFound,
            "AuthFailure.SecretIdNotFound",
        ),
        (
            ErrorCode::AuthSignatureExpire,
            "AuthFailure.SignatureExpire",
        ),
        (
            ErrorCode::AuthSignatureFailure,
            "AuthFailure.SignatureFailure",
        ),
        (ErrorCode::AuthTokenFailure, "AuthFailure.TokenFailure"),
        (
            ErrorCode::AuthUnauthorizedOperation,
            "AuthFailure.UnauthorizedOperation",
        ),
        (ErrorCode::FailedOperation, "FailedOperation"),
        (ErrorCode::InternalError, "InternalError"),
        (ErrorCode::InvalidAction, "InvalidAction"),
        (ErrorCode::InvalidParameter, "InvalidParameter"),
        (ErrorCode::InvalidParameterValue, "InvalidParameterValue"),
        (ErrorCode::LimitExceeded, "LimitExceeded"),
        (ErrorCode::MissingParameter, "MissingParameter"),
        (ErrorCode::NoSuchVersion, "NoSuchVersion"),
        (ErrorCode::RequestLimitExceeded, "RequestLimitExceeded"),
        (ErrorCode::UnauthorizedOperation, "UnauthorizedOperation"),
        (ErrorCode::UnsupportedOperation, "UnsupportedOperation"),
        (
            ErrorCode::FailedOperationDecryptError,
            "FailedOperation.DecryptError",
        ),
        (
            ErrorCode::FailedOperationEncryptionError,
            "FailedOperation.EncryptionError",
        ),
        (
            ErrorCode::FailedOperationSignError,
            "FailedOperation.SignError",
        ),
        (
            ErrorCode::FailedOperationVerifyError,
            "FailedOperation.VerifyError",
        ),
        (
            ErrorCode::InvalidParameterDecryptMaterialError,
            "InvalidParameter.DecryptMaterialError",
        ),
        (
            ErrorCode::InvalidParameterInvalidPendingWindowInDays,
            "InvalidParameter.InvalidPendingWindowInDays",
        ),
        (
            ErrorCode::InvalidParameterValueAliasAlreadyExists,
            "InvalidParameterValue.AliasAlreadyExists",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidAlias,
            "InvalidParameterValue.InvalidAlias",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidCiphertext,
            "InvalidParameterValue.InvalidCiphertext",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidKeyId,
            "InvalidParameterValue.InvalidKeyId",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidKeyUsage,
            "InvalidParameterValue.InvalidKeyUsage",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidPlaintext,
            "InvalidParameterValue.InvalidPlaintext",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidType,
            "InvalidParameterValue.InvalidType",
        ),
        (
            ErrorCode::InvalidParameterValueMaterialNotMatch,
            "InvalidParameterValue.MaterialNotMatch",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidImportKeyMaterial,
            "InvalidParameterValue.InvalidImportKeyMaterial",
        ),
        (
            ErrorCode::InvalidParameterValueDuplicatedKeyId,
            "InvalidParameterValue.DuplicatedKeyId",
        ),
        (
            ErrorCode::LimitExceededCmkLimitExceeded,
            "LimitExceeded.CmkLimitExceeded",
        ),
        (
            ErrorCode::LimitExceededKeyLimitExceeded,
            "LimitExceeded.KeyLimitExceeded",
        ),
        (
            ErrorCode::ResourceUnavailableCmkNotFound,
            "ResourceUnavailable.CmkNotFound",
        ),
        (
            ErrorCode::ResourceUnavailableCmkDisabled,
            "ResourceUnavailable.CmkDisabled",
        ),
        (
            ErrorCode::ResourceUnavailableCmkArchived,
            "ResourceUnavailable.CmkArchived",
        ),
        (
            ErrorCode::ResourceUnavailableCmkNotPendingDelete,
            "ResourceUnavailable.CmkNotPendingDelete",
        ),
        (
            ErrorCode::ResourceUnavailableCmkShouldBeDisabled,
            "ResourceUnavailable.CmkShouldBeDisabled",
        ),
        (
            ErrorCode::ResourceUnavailableCmkStateNotSupport,
            "ResourceUnavailable.CmkStateNotSupport",
        ),
        (
            ErrorCode::ResourceUnavailableKeyDisabled,
            "ResourceUnavailable.KeyDisabled",
        ),
        (
            ErrorCode::ResourceUnavailableKeyPendingDelete,
            "ResourceUnavailable.KeyPendingDelete",
        ),
        (
            ErrorCode::ResourceUnavailableTokenExpired,
            "ResourceUnavailable.TokenExpired",
        ),
        (
            ErrorCode::UnsupportedOperationExternalCmkCanNotRotate,
            "UnsupportedOperation.ExternalCmkCanNotRotate",
        ),
        (
            ErrorCode::UnsupportedOperationNotExternalCmk,
            "UnsupportedOperation.NotExternalCmk",
        ),
        (
            ErrorCode::UnsupportedOperationRotateNotSupported,
            "UnsupportedOperation.RotateNotSupported",
        ),
        (ErrorCode::ResourceNotFound, "ResourceNotFound"),
        (
            ErrorCode::UnsupportedOperationUnsupportedKeyUsageInCurrentRegion,
            "UnsupportedOperation.UnsupportedKeyUsageInCurrentRegion",
        ),
        (
            ErrorCode::InvalidParameterValueTagKeysDuplicated,
            "InvalidParameterValue.TagKeysDuplicated",
        ),
        (
            ErrorCode::InvalidParameterValueDataKeyNameAlreadyExists,
            "InvalidParameterValue.DataKeyNameAlreadyExists",
        ),
        (
            ErrorCode::InvalidParameterValueDuplicatedDataKeyId,
            "InvalidParameterValue.DuplicatedDataKeyId",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidDataKeyId,
            "InvalidParameterValue.InvalidDataKeyId",
        ),
        (
            ErrorCode::InvalidParameterValueInvalidDataKeyName,
            "InvalidParameterValue.InvalidDataKeyName",
        ),
        (
            ErrorCode::LimitExceededDataKeyLimitExceeded,
            "LimitExceeded.DataKeyLimitExceeded",
        ),
        (
            ErrorCode::ResourceUnavailableDataKeyDisabled,
            "ResourceUnavailable.DataKeyDisabled",
        ),
        (
            ErrorCode::ResourceUnavailableDataKeyNotFound,
            "ResourceUnavailable.DataKeyNotFound",
        ),
        (
            ErrorCode::ResourceUnavailableDataKeyNotPendingDelete,
            "ResourceUnavailable.DataKeyNotPendingDelete",
        ),
        (
            ErrorCode::ResourceUnavailableDataKeyPendingDelete,
            "ResourceUnavailable.DataKeyPendingDelete",
        ),
        (
            ErrorCode::ResourceUnavailableDataKeyStateNotSupport,
            "ResourceUnavailable.DataKeyStateNotSupport",
        ),
    ];

    /// The exact wire spelling, e.g. `"ResourceUnavailable.CmkDisabled"`.
    pub fn as_str(&self) -> &str {
        if let ErrorCode::Other(s) = self {
            return s;
        }
        Self::TABLE
            .iter()
            .find(|(c, _)| c == self)
            .map(|(_, s)| *s)
            .unwrap_or("InternalError")
    }

    /// Parses a wire code; unknown codes become [`ErrorCode::Other`].
    pub fn parse(s: &str) -> ErrorCode {
        Self::TABLE
            .iter()
            .find(|(_, w)| *w == s)
            .map(|(c, _)| c.clone())
            .unwrap_or_else(|| ErrorCode::Other(s.to_owned()))
    }

    /// Whether a client should retry the call with backoff (seed 002, "Implementing
    /// Exponential Backoff"): throttling and internal faults.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::RequestLimitExceeded | ErrorCode::InternalError
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a KMS action: a Tencent error code and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct KmsError {
    /// The Tencent error code.
    pub code: ErrorCode,
    /// What went wrong, for a human. Never contains secrets.
    pub message: String,
}

impl KmsError {
    /// Makes an error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        KmsError {
            code,
            message: message.into(),
        }
    }
}

/// Results of KMS actions.
pub type KmsResult<T> = Result<T, KmsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_spelling() {
        for (code, wire) in ErrorCode::TABLE {
            assert_eq!(code.as_str(), *wire);
            assert_eq!(&ErrorCode::parse(wire), code);
        }
        assert_eq!(
            ErrorCode::parse("Foo.Bar"),
            ErrorCode::Other("Foo.Bar".into())
        );
        assert_eq!(ErrorCode::Other("Foo.Bar".into()).as_str(), "Foo.Bar");
    }
}

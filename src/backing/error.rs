//! The filesystem's error type. errno is made from it in one place only:
//! `fuse::errno` (src/fuse/mod.rs).

use std::io;

use kms_core::{ErrorCode, KmsError};

use crate::format::HeaderError;

/// What went wrong in a filesystem operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The backing filesystem said no; its errno reaches the application.
    #[error("backing I/O: {0}")]
    Io(#[from] io::Error),
    /// A block, header or config failed authentication or is malformed.
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// A file header is unreadable.
    #[error("bad file header: {0}")]
    Header(#[from] HeaderError),
    /// The KMS refused the key (disabled, pending deletion, not found…).
    #[error("the KMS refused key {key_id}: {code}: {message}")]
    KeyDenied {
        /// The CMK, as far as known.
        key_id: String,
        /// The Tencent error code.
        code: String,
        /// The KMS's message.
        message: String,
    },
    /// The KMS failed for another reason (unreachable, internal error).
    #[error("KMS error: {0}")]
    Kms(KmsError),
    /// An offset or size beyond what the format can represent.
    #[error("file too large")]
    TooBig,
    /// A plain errno for conditions decided by the filesystem itself.
    #[error("errno {0}")]
    Errno(i32),
}

/// Shorthand for results of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// Classifies a KMS error for key `key_id`.
    pub fn from_kms(key_id: &str, e: KmsError) -> FsError {
        if is_refusal(&e.code) {
            FsError::KeyDenied {
                key_id: key_id.to_owned(),
                code: e.code.as_str().to_owned(),
                message: e.message.clone(),
            }
        } else {
            FsError::Kms(e)
        }
    }

    /// The last OS error as an `FsError`.
    pub fn last_os() -> FsError {
        FsError::Io(io::Error::last_os_error())
    }
}

/// Whether a KMS error means "this key will not serve you" (→ EACCES) rather than a fault.
pub fn is_refusal(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ResourceUnavailableCmkDisabled
            | ErrorCode::ResourceUnavailableCmkNotFound
            | ErrorCode::InvalidParameterValueInvalidKeyId
            | ErrorCode::ResourceUnavailableCmkArchived
            | ErrorCode::ResourceUnavailableCmkStateNotSupport
            | ErrorCode::ResourceUnavailableKeyDisabled
            | ErrorCode::ResourceUnavailableKeyPendingDelete
            | ErrorCode::ResourceNotFound
            | ErrorCode::UnauthorizedOperation
            | ErrorCode::AuthUnauthorizedOperation
    )
}

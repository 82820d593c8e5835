//! kms-core: a local key management service that speaks the Tencent Cloud KMS API
//! (version 2019-01-18).
//!
//! # Design overview
//!
//! ```text
//!   kmsfs daemon ──┐                      ┌── tccli / tencentcloud-sdk-python
//!   kmsfs kms ─────┤ dyn Kms::call        │      (HTTP, TC3-HMAC-SHA256)
//!                  ▼                      ▼
//!        KmsService (embedded)  ◀──  http server  ◀── RemoteKms (http client, dyn Kms)
//!                  │
//!          key store (durable, encrypted at rest under a root key) + audit log
//! ```
//!
//! Every action is one Rust method on the service, with the Tencent action name,
//! fields and error codes. The [`Kms`] trait is the one seam every caller uses:
//! an action name and its JSON parameters in, the `Response` fields out. The
//! embedded service and the HTTP client both implement it, so the filesystem and
//! the CLI do not care where the KMS runs.
//!
//! Secrets (key material, plaintexts, data keys) never reach logs, errors or
//! `Debug` output, and key types zeroize on drop.

pub mod error;

pub use error::{ErrorCode, KmsError, KmsResult};

/// Who is calling, for authorisation and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The principal: a SecretId over HTTP, `local:<user>` in-process.
    pub principal: String,
    /// The request id returned in the response and written to the audit log.
    pub request_id: String,
}

/// A KMS, wherever it runs: the seam between callers and implementations.
pub trait Kms: Send + Sync {
    /// Runs `action` (a Tencent action name such as `"GenerateDataKey"`) with its
    /// parameters as the API's JSON request object, and returns the fields of the
    /// API's `Response` object *without* `RequestId`.
    ///
    /// # Errors
    /// A [`KmsError`] with the Tencent code the API would return.
    fn call(
        &self,
        ctx: &CallContext,
        action: &str,
        params: &serde_json::Value,
    ) -> KmsResult<serde_json::Value>;
}

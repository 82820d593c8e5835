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
//!
//! # Using it
//!
//! ```
//! use kms_core::{CallContext, EncryptionContext, Kms};
//! # let dir = std::env::temp_dir().join(format!("kms-core-doc-{}", std::process::id()));
//! # let store = dir.to_str().unwrap();
//! // A store directory (embedded KMS, made on first use), or None for the default.
//! let kms = kms_core::connect(Some(store))?;
//! let ctx = CallContext::local();
//! let r = kms.call(&ctx, "CreateKey", &serde_json::json!({"Alias": "vol"}))?;
//! let key_id = r["KeyId"].as_str().unwrap_or_default();
//!
//! let ec = EncryptionContext::single("kmsfs-volume", "2f0c…");
//! let dk = kms.generate_data_key(&ctx, key_id, 32, &ec)?;
//! let again = kms.decrypt_data_key(&ctx, &dk.ciphertext_blob, &ec)?;
//! assert_eq!(&again.plaintext[..], &dk.plaintext[..]);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), kms_core::KmsError>(())
//! ```
//!
//! The modules: [`service`] (the actions), [`store`] (the key store on disk),
//! [`blob`] (the CiphertextBlob), [`audit`], [`crypto`] (the symmetric crypto seam),
//! [`asym`] (RSA-2048 and ECDSA P-256: asymmetric keys and the BYOK wrapping key),
//! [`key`] (the key model), [`clock`], [`migrate`] (moving a store between a directory and
//! PostgreSQL). docs/FORMAT.md and docs/KMS.md describe
//! the bytes on disk and how to operate the store.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod asym;
pub mod audit;
pub mod blob;
pub mod clock;
mod connect;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod http;
pub mod key;
pub mod migrate;
pub mod pqc;
pub mod service;
pub mod store;

pub use connect::{connect, default_store_dir, is_remote_url};
pub use envelope::{DataKey, EncryptionContext};
pub use error::{ErrorCode, KmsError, KmsResult};
pub use service::{KmsOptions, KmsService};

/// Who is calling, for authorisation and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The principal: a SecretId over HTTP, `local:<user>` in-process.
    pub principal: String,
    /// The request id returned in the response and written to the audit log.
    pub request_id: String,
}

impl CallContext {
    /// A context for an in-process caller: principal `local:<user>` (from
    /// `$USER`, else `local:uid=N`), and a fresh request id (a UUID).
    pub fn local() -> CallContext {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("uid={}", rustix::process::getuid().as_raw()));
        CallContext {
            principal: format!("local:{user}"),
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// A context with this principal and a fresh request id.
    pub fn new(principal: impl Into<String>) -> CallContext {
        CallContext {
            principal: principal.into(),
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }
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

    /// GenerateDataKey: a fresh data key of `bytes` bytes, in plaintext and wrapped
    /// under the CMK `key_id` (an id or `alias/NAME`), bound to `context`.
    ///
    /// The default goes through [`Kms::call`]; the embedded service overrides it with
    /// a direct call that never puts the plaintext in a JSON value.
    fn generate_data_key(
        &self,
        ctx: &CallContext,
        key_id: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> KmsResult<DataKey> {
        envelope::generate_data_key_via_call(self, ctx, key_id, bytes, context)
    }

    /// Decrypt of a data key: unwraps `ciphertext_blob` (raw bytes, as
    /// [`DataKey::ciphertext_blob`]) under the CMK and version the blob names.
    ///
    /// # Errors
    /// `ResourceUnavailable.CmkDisabled` and friends when the CMK refuses;
    /// `InvalidParameterValue.InvalidCiphertext` when the blob or the context is wrong.
    fn decrypt_data_key(
        &self,
        ctx: &CallContext,
        ciphertext_blob: &[u8],
        context: &EncryptionContext,
    ) -> KmsResult<DataKey> {
        envelope::decrypt_data_key_via_call(self, ctx, ciphertext_blob, context)
    }

    /// Records in the audit log a call that a front end (the HTTP server) refused
    /// before or after the service ran it: a principal without rights, a rate limit.
    /// `key_id` is the key the call named, or empty.
    ///
    /// The default does nothing: only a KMS that keeps an audit log records it.
    fn audit_refusal(&self, ctx: &CallContext, action: &str, key_id: &str, error: &KmsError) {
        let _ = (ctx, action, key_id, error);
    }

    /// Runs `action` of the Alibaba Cloud KMS API (2016-01-20) with its business
    /// parameters (query ∪ form body, decoded), and returns the response's fields
    /// without `RequestId`.
    ///
    /// The default refuses: only the embedded service speaks Alibaba's API (a server in
    /// front of a remote KMS forwards Tencent calls only).
    ///
    /// # Errors
    /// A [`KmsError`]; `service::aliyun::wire_error` gives its Alibaba code and status.
    fn call_aliyun(
        &self,
        ctx: &CallContext,
        action: &str,
        params: &[(String, String)],
    ) -> KmsResult<serde_json::Value> {
        let _ = (ctx, params);
        Err(KmsError::new(
            ErrorCode::UnsupportedOperation,
            format!("{action}: this KMS does not serve the Alibaba Cloud API"),
        ))
    }
}

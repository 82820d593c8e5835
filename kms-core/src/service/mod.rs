//! The embedded KMS: one Rust method per Tencent KMS action, on typed requests
//! and responses, over the durable key store, with an audit line per call.
//!
//! [`KmsService`] implements [`Kms`]: `call` parses the JSON parameters into the
//! typed request, runs the method and serialises the response; the typed
//! `generate_data_key` / `decrypt_data_key` skip JSON altogether.
//!
//! This file holds the service itself (opening the store, snapshots, the audited
//! call, sealing and opening blobs) and the [`Kms`] impl; the actions are in
//! `impl KmsService` blocks beside it, one file per job:
//!
//! | file | job |
//! | --- | --- |
//! | `checks.rs` | error helpers, key state and usage checks, common parameter decoding |
//! | `keys.rs` | key lifecycle: CreateKey, Describe/List, the state machine, deletion |
//! | `aliases.rs` | aliases, descriptions, tags and tag filters |
//! | `rotation.rs` | rotation settings and RotateKey |
//! | `symmetric.rs` | Encrypt, Decrypt, ReEncrypt, GenerateDataKey, GenerateRandom |
//! | `asymmetric.rs` | public keys, RSA/SM2 decryption, signing and verifying |
//! | `import.rs` | bring your own key (EXTERNAL keys) |
//! | `pqc.rs` | ML-KEM and ML-DSA actions |
//! | `data_keys/` | hosted data keys (`data_keys/wire.rs`: their requests and responses) |
//! | `tencent.rs`, `aliyun/` | the two cloud APIs' wire types and dispatch (`aliyun/wire.rs`: error codes and bodies; `aliyun/model.rs`: how a key reads there) |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::asym::{self, EcKey, RsaEncryption, RsaKey, SignAlgorithm, Sm2Key};
use crate::audit::{Audit, Line};
use crate::blob;
use crate::clock::{rfc3339_millis, Clock, SystemClock};
use crate::crypto::{self, NONCE_LEN};
use crate::key::{ImportParams, KeyRecord, KeyState, KeyUsage, MaterialKind, Origin, Tag};
use crate::pqc::{DsaKey, KemKey};
use crate::store::{
    delete_imported_material, imported_material_expired, LoadedKey, Material, RootKeySource,
    Snapshot, Store, AUDIT_FILE, ROOT_KEY_FILE,
};
use crate::{CallContext, DataKey, EncryptionContext, ErrorCode, Kms, KmsError, KmsResult};

/// Declares a request type of the Tencent API (the core's own wire): PascalCase JSON
/// as tccli and tencentcloud-sdk-python send it, `Default` for an empty body, and every
/// parameter an `Option`, so that a missing one is the action's `MissingParameter`
/// (see `require`), never a parse error.
macro_rules! tencent_request {
    ($(#[$doc:meta])* $name:ident {
        $($(#[$field_attr:meta])* $field:ident: $ty:ty,)*
    }) => {
        $(#[$doc])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name {
            $($(#[$field_attr])* pub $field: Option<$ty>,)*
        }
    };
}

mod aliases;
pub mod aliyun;
mod asymmetric;
mod checks;
pub mod data_keys;
mod import;
mod keys;
pub mod pqc;
mod rotation;
mod symmetric;
pub mod tencent;

use aliases::*;
pub use aliases::{validate_alias, MAX_TAGS};
use checks::*;

pub use tencent::*;
use tencent::{changes_store, plaintext_field};

/// The largest Encrypt plaintext, in bytes.
pub const MAX_PLAINTEXT: usize = 4096;
/// The longest EncryptionContext string, in bytes.
pub const MAX_CONTEXT: usize = 1024;
/// The longest Description, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;
/// GenerateDataKey / GenerateRandom: the most bytes per call.
pub const MAX_RANDOM: usize = 1024;
/// Seconds in a day.
const DAY: u64 = 86_400;
/// SignByAsymmetricKey / VerifyByAsymmetricKey: the longest RAW message, in bytes.
pub const MAX_SIGN_MESSAGE: usize = 4096;
/// How long GetParametersForImport's token and wrapping key stay valid, in seconds.
pub const IMPORT_PARAMETERS_TTL: u64 = DAY;
/// The latest ValidTo ImportKeyMaterial accepts (as the Tencent API).
pub const MAX_VALID_TO: u64 = 2_147_443_200;

/// Environment variable: a passphrase protecting the store instead of `root.key`.
pub const ENV_PASSPHRASE: &str = "KMSFS_KMS_PASSPHRASE";
/// Environment variable: where the root key file lives (default `<store>/root.key`).
pub const ENV_ROOT_KEY: &str = "KMSFS_KMS_ROOT_KEY";

/// How to open a store.
pub struct KmsOptions {
    /// Where the root key comes from; `None`: `$KMSFS_KMS_PASSPHRASE` if set,
    /// else the file `$KMSFS_KMS_ROOT_KEY`, else `<store>/root.key`.
    pub root_key: Option<RootKeySource>,
    /// The clock (tests inject a [`crate::clock::ManualClock`]).
    pub clock: Arc<dyn Clock>,
}

impl Default for KmsOptions {
    fn default() -> Self {
        KmsOptions {
            root_key: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for KmsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsOptions")
            .field("root_key", &self.root_key)
            .finish_non_exhaustive()
    }
}

/// The embedded KMS over a key-store directory.
///
/// Cheap to share (`Arc<KmsService>`); every method takes `&self` and is safe to
/// call from many threads and many processes at once.
pub struct KmsService {
    store: Store,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for KmsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsService")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A secret string (base64 of a plaintext or key), zeroized on drop and
/// redacted in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(pub Zeroizing<String>);

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }
}

impl std::ops::Deref for SecretString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(..)")
    }
}

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString::from)
    }
}

// ---------------------------------------------------------------- requests

fn default_store_root_source(dir: &Path) -> RootKeySource {
    if let Ok(p) = std::env::var(ENV_PASSPHRASE) {
        if !p.is_empty() {
            return RootKeySource::Passphrase(Zeroizing::new(p));
        }
    }
    match std::env::var_os(ENV_ROOT_KEY) {
        Some(p) if !p.is_empty() => RootKeySource::File(PathBuf::from(p)),
        _ => RootKeySource::File(dir.join(ROOT_KEY_FILE)),
    }
}

impl KmsService {
    /// Opens (or, on first use, creates) the store in `dir`, with the root key
    /// from the environment (see [`KmsOptions::root_key`]) and the system clock.
    ///
    /// # Errors
    /// `InternalError` naming the file when the store or root key cannot be read,
    /// is damaged, or does not match.
    pub fn open(dir: &Path) -> KmsResult<KmsService> {
        Self::open_with(dir, KmsOptions::default())
    }

    /// Opens the store in `dir` with explicit options.
    ///
    /// # Errors
    /// As [`KmsService::open`].
    pub fn open_with(dir: &Path, opts: KmsOptions) -> KmsResult<KmsService> {
        let source = opts
            .root_key
            .unwrap_or_else(|| default_store_root_source(dir));
        let store = Store::open(dir, source)?;
        Ok(KmsService {
            audit: Audit::new(&dir.join(AUDIT_FILE)),
            store,
            clock: opts.clock,
        })
    }

    /// Opens the key store in the PostgreSQL database `url` (`store/pg.rs`); the root
    /// key source is local, under `dir`, as for a store directory; the audit log is
    /// in the database (`audit_pg.rs`).
    ///
    /// # Errors
    /// `InternalError` when the database cannot be reached or the root key does not match.
    pub fn open_pg(url: &str, dir: &Path, opts: KmsOptions) -> KmsResult<KmsService> {
        let source = opts
            .root_key
            .unwrap_or_else(|| default_store_root_source(dir));
        Ok(KmsService {
            audit: Audit::pg(url),
            store: Store::open_pg(url, dir, source)?,
            clock: opts.clock,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// A fresh snapshot; runs due purges and rotations first.
    fn fresh(&self, now: u64) -> KmsResult<Arc<Snapshot>> {
        let snap = self.store.snapshot()?;
        if snap.next_due <= now {
            match self.store.transact(now, |_| Ok(())) {
                Ok(()) => return self.store.snapshot(),
                Err(e) => tracing::warn!(error = %e, "cannot purge or rotate due keys"),
            }
        }
        Ok(snap)
    }

    fn lookup<'a>(snap: &'a Snapshot, key: &str, now: u64) -> KmsResult<&'a LoadedKey> {
        match snap.find(key) {
            Some(k) if !expired(&k.rec, now) => Ok(k),
            _ => Err(not_found(key)),
        }
    }

    /// Runs `f` and writes the audit line: key id from the result when it
    /// succeeds, else `key_hint`.
    fn audited<R>(
        &self,
        ctx: &CallContext,
        action: &str,
        key_hint: &str,
        f: impl FnOnce(u64) -> KmsResult<(R, String)>,
    ) -> KmsResult<R> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let r = f(self.clock.now());
        let (outcome, key) = match &r {
            Ok((_, k)) => ("Success", k.as_str()),
            Err(e) => (e.code.as_str(), key_hint),
        };
        let durable = r.is_ok() && changes_store(action);
        self.audit.append(
            Line {
                time: rfc3339_millis(now_ms),
                principal: &ctx.principal,
                action,
                key_id: key,
                outcome,
                request_id: &ctx.request_id,
                prev: String::new(),
            },
            durable,
        );
        r.map(|(v, _)| v)
    }

    /// [`Self::audited`] for a call about the key (or data key) its request names:
    /// a call that fails before it resolves one is audited under the id as given.
    fn audited_key<R>(
        &self,
        ctx: &CallContext,
        action: &str,
        key: &Option<String>,
        f: impl FnOnce(u64) -> KmsResult<(R, String)>,
    ) -> KmsResult<R> {
        self.audited(ctx, action, key.as_deref().unwrap_or_default(), f)
    }

    fn seal_current(k: &LoadedKey, plaintext: &[u8], context: &[u8]) -> KmsResult<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        crypto::random_bytes(&mut nonce)?;
        Self::seal_current_with(k, plaintext, context, &nonce)
    }

    /// Seals under the key's newest version with a nonce the caller drew at random.
    fn seal_current_with(
        k: &LoadedKey,
        plaintext: &[u8],
        context: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> KmsResult<Vec<u8>> {
        let v = k.rec.current_version();
        let key = k
            .material
            .get((v as usize).wrapping_sub(1))
            .and_then(|m| m.aead())
            .ok_or_else(|| state_error(&k.rec))?;
        blob::seal(key, &k.rec.key_id, v, nonce, plaintext, context)
    }

    /// Opens a blob: framing, key lookup, state, then AES-GCM.
    fn open_blob<'a>(
        snap: &'a Snapshot,
        now: u64,
        raw: &[u8],
        context: &EncryptionContext,
    ) -> KmsResult<(Zeroizing<Vec<u8>>, &'a LoadedKey)> {
        let parsed = blob::parse(raw)?;
        let k = match snap.by_id(parsed.key_id) {
            Some(k) if !expired(&k.rec, now) => k,
            _ => {
                return Err(err(
                    ErrorCode::InvalidParameterValueInvalidCiphertext,
                    format!(
                        "the CiphertextBlob names key {}, which this KMS does not have (deleted, from another KMS, or the blob was altered)",
                        parsed.key_id
                    ),
                ))
            }
        };
        check_can_decrypt(&k.rec, now)?;
        let material = (parsed.key_version as usize)
            .checked_sub(1)
            .and_then(|i| k.material.get(i))
            .and_then(|m| m.aead())
            .ok_or_else(|| {
                err(
                    ErrorCode::InvalidParameterValueInvalidCiphertext,
                    "the CiphertextBlob names a key version that does not exist",
                )
            })?;
        let pt = blob::open(material, &parsed, &blob::canonical_context(context))?;
        Ok((pt, k))
    }

    /// One state-changing action on one key, under the store lock.
    fn modify<R>(
        &self,
        ctx: &CallContext,
        action: &str,
        key: &Option<String>,
        f: impl FnOnce(&mut KeyRecord, u64, &crate::store::Txn<'_>) -> KmsResult<R>,
    ) -> KmsResult<R> {
        self.audited_key(ctx, action, key, |now| {
            let key = require(key, "KeyId")?;
            self.store.transact(now, |txn| {
                let i = txn.resolve(key).ok_or_else(|| not_found(key))?;
                let mut rec = txn.keys[i].clone();
                let r = f(&mut rec, now, txn)?;
                let id = rec.key_id.clone();
                txn.keys[i] = rec;
                Ok((r, id))
            })
        })
    }
}

impl Kms for KmsService {
    fn call(&self, ctx: &CallContext, action: &str, params: &Value) -> KmsResult<Value> {
        self.dispatch(ctx, action, params)
    }

    fn call_aliyun(
        &self,
        ctx: &CallContext,
        action: &str,
        params: &[(String, String)],
    ) -> KmsResult<Value> {
        KmsService::call_aliyun(self, ctx, action, params)
    }

    fn audit_refusal(&self, ctx: &CallContext, action: &str, key_id: &str, error: &KmsError) {
        // The line is written the way `audited` writes a failed call.
        let _ = self.audited::<()>(ctx, action, key_id, |_| Err(error.clone()));
    }

    fn generate_data_key(
        &self,
        ctx: &CallContext,
        key_id: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> KmsResult<DataKey> {
        self.audited(ctx, "GenerateDataKey", key_id, |now| {
            if bytes == 0 || bytes > MAX_RANDOM {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!("NumberOfBytes must be 1 to {MAX_RANDOM}"),
                ));
            }
            let dk = self.data_key(now, key_id, bytes, context)?;
            let id = dk.key_id.clone();
            Ok((dk, id))
        })
    }

    fn decrypt_data_key(
        &self,
        ctx: &CallContext,
        ciphertext_blob: &[u8],
        context: &EncryptionContext,
    ) -> KmsResult<DataKey> {
        self.audited(ctx, "Decrypt", "", |now| {
            let snap = self.fresh(now)?;
            let (pt, k) = Self::open_blob(&snap, now, ciphertext_blob, context)?;
            let id = k.rec.key_id.clone();
            Ok((
                DataKey {
                    key_id: id.clone(),
                    plaintext: pt,
                    ciphertext_blob: ciphertext_blob.to_vec(),
                },
                id,
            ))
        })
    }
}

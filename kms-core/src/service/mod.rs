//! The embedded KMS: one Rust method per Tencent KMS action, on typed requests
//! and responses, over the durable key store, with an audit line per call.
//!
//! [`KmsService`] implements [`Kms`]: `call` parses the JSON parameters into the
//! typed request, runs the method and serialises the response; the typed
//! `generate_data_key` / `decrypt_data_key` skip JSON altogether.

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

pub mod aliyun;
pub mod data_keys;
pub mod pqc;
pub mod tencent;

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

fn err(code: ErrorCode, msg: impl Into<String>) -> KmsError {
    KmsError::new(code, msg)
}

/// The error for a key that is not in the store: `InvalidParameterValue.InvalidKeyId`
/// when `key` cannot be a key id at all (not `alias/NAME`, not a key id's shape), as
/// the service answers; `ResourceUnavailable.CmkNotFound` otherwise.
fn not_found(key: &str) -> KmsError {
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
fn parse_origin_filter(o: Option<&str>) -> KmsResult<Option<Origin>> {
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
fn is_key_id_shaped(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The most tags a key or data key carries.
pub const MAX_TAGS: usize = 50;

/// `Tags` of CreateKey, GenerateDataKey and ImportDataKey: `[{"TagKey", "TagValue"}]`.
fn parse_tags(v: Option<&Value>) -> KmsResult<Vec<Tag>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Wire {
        tag_key: Option<String>,
        tag_value: Option<String>,
    }
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let wire: Vec<Wire> = serde_json::from_value(v.clone()).map_err(|_| {
        err(
            ErrorCode::InvalidParameter,
            "Tags must be a list of {\"TagKey\", \"TagValue\"}",
        )
    })?;
    if wire.len() > MAX_TAGS {
        return Err(err(
            ErrorCode::LimitExceeded,
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut tags: Vec<Tag> = Vec::with_capacity(wire.len());
    for w in wire {
        let key = w.tag_key.unwrap_or_default();
        if key.is_empty() || key.len() > 255 {
            return Err(err(
                ErrorCode::InvalidParameterValue,
                "a TagKey must be 1 to 255 bytes",
            ));
        }
        if tags.iter().any(|t| t.key == key) {
            return Err(err(
                ErrorCode::InvalidParameterValueTagKeysDuplicated,
                format!("TagKey {key:?} is given twice"),
            ));
        }
        let value = w.tag_value.unwrap_or_default();
        if value.len() > 255 {
            return Err(err(
                ErrorCode::InvalidParameterValue,
                "a TagValue must be at most 255 bytes",
            ));
        }
        tags.push(Tag { key, value });
    }
    Ok(tags)
}

/// One filter of `TagFilters`: a key and, when non-empty, the values that match.
struct TagFilter {
    key: String,
    values: Vec<String>,
}

/// `TagFilters` of ListKeyDetail and ListDataKeyDetail: `[{"TagKey", "TagValue": [..]}]`.
fn parse_tag_filters(v: Option<&Value>) -> KmsResult<Vec<TagFilter>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Wire {
        tag_key: Option<String>,
        tag_value: Option<Vec<String>>,
    }
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let wire: Vec<Wire> = serde_json::from_value(v.clone()).map_err(|_| {
        err(
            ErrorCode::InvalidParameter,
            "TagFilters must be a list of {\"TagKey\", \"TagValue\": [..]}",
        )
    })?;
    wire.into_iter()
        .map(|w| match w.tag_key.filter(|k| !k.is_empty()) {
            Some(key) => Ok(TagFilter {
                key,
                values: w.tag_value.unwrap_or_default(),
            }),
            None => Err(err(
                ErrorCode::InvalidParameterValue,
                "every TagFilter needs a TagKey",
            )),
        })
        .collect()
}

/// Whether `tags` pass every filter: the filter's key is present and, if the
/// filter lists values, its value is one of them.
fn tags_match(tags: &[Tag], filters: &[TagFilter]) -> bool {
    filters.iter().all(|f| {
        tags.iter()
            .any(|t| t.key == f.key && (f.values.is_empty() || f.values.contains(&t.value)))
    })
}

/// The error for an operation the key's state forbids.
fn state_error(rec: &KeyRecord) -> KmsError {
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

fn check_symmetric(rec: &KeyRecord) -> KmsResult<()> {
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
fn state_at(rec: &KeyRecord, now: u64) -> KeyState {
    if imported_material_expired(rec, now) && rec.state != KeyState::PendingDelete {
        KeyState::PendingImport
    } else {
        rec.state
    }
}

/// The state error of `rec` as it is at `now`.
fn state_error_at(rec: &KeyRecord, now: u64) -> KmsError {
    let mut r = rec.clone();
    r.state = state_at(rec, now);
    state_error(&r)
}

/// The key may make new ciphertexts.
fn check_can_encrypt(rec: &KeyRecord, now: u64) -> KmsResult<()> {
    if state_at(rec, now) != KeyState::Enabled {
        return Err(state_error_at(rec, now));
    }
    check_symmetric(rec)
}

/// The key may open ciphertexts (Enabled or Archived).
fn check_can_decrypt(rec: &KeyRecord, now: u64) -> KmsResult<()> {
    if !matches!(state_at(rec, now), KeyState::Enabled | KeyState::Archived) {
        return Err(state_error_at(rec, now));
    }
    check_symmetric(rec)
}

/// The key has one of `usages`.
fn check_usage(rec: &KeyRecord, usages: &[KeyUsage], what: &str) -> KmsResult<()> {
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

/// The asymmetric usages this KMS makes keys for.
const ASYMMETRIC_USAGES: &[KeyUsage] = &[
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
const REGION_UNSUPPORTED_USAGES: &[&str] = &[
    "ASYMMETRIC_SIGN_VERIFY_ECDSA384",
    "ASYMMETRIC_SIGN_VERIFY_RSA_3072",
    "ASYMMETRIC_DECRYPT_RSA_3072",
];

/// The signing usages.
const SIGN_USAGES: &[KeyUsage] = &[
    KeyUsage::AsymmetricSignVerifyRsa2048,
    KeyUsage::AsymmetricSignVerifyEcc,
    KeyUsage::AsymmetricSignVerifySm2,
];

/// The key is EXTERNAL.
fn check_external(rec: &KeyRecord) -> KmsResult<()> {
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

fn decode_b64(s: &str, code: ErrorCode, name: &str) -> KmsResult<Zeroizing<Vec<u8>>> {
    B64.decode(s.trim())
        .map(Zeroizing::new)
        .map_err(|_| err(code, format!("{name} is not base64")))
}

/// A message to sign or verify, checked: RAW (1–4096 bytes) or a 32-byte DIGEST.
struct Message<'a> {
    bytes: &'a [u8],
    is_digest: bool,
}

impl Message<'_> {
    /// What RSA and ECDSA sign: SHA-256 of a RAW message, or the DIGEST as given.
    fn sha256(&self) -> [u8; asym::DIGEST_LEN] {
        match <[u8; asym::DIGEST_LEN]>::try_from(self.bytes) {
            Ok(d) if self.is_digest => d,
            _ => asym::sha256(self.bytes),
        }
    }
}

/// Checks a message against its MessageType; returns whether it is a DIGEST.
/// RAW: 1–4096 bytes (hashed by the KMS: SHA-256, or SM3(Z ‖ M) for SM2);
/// DIGEST: exactly 32 bytes, as given.
fn check_message(message: &[u8], message_type: Option<&str>) -> KmsResult<bool> {
    match message_type {
        None | Some("") | Some("RAW") => {
            if message.is_empty() || message.len() > MAX_SIGN_MESSAGE {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!(
                        "a RAW Message must be 1 to {MAX_SIGN_MESSAGE} bytes; sign the digest of a longer one with MessageType DIGEST"
                    ),
                ));
            }
            Ok(false)
        }
        Some("DIGEST") if message.len() == asym::DIGEST_LEN => Ok(true),
        Some("DIGEST") => Err(err(
            ErrorCode::InvalidParameterValue,
            format!(
                "a DIGEST Message must be exactly {} bytes, not {}",
                asym::DIGEST_LEN,
                message.len()
            ),
        )),
        Some(t) => Err(err(
            ErrorCode::InvalidParameterValue,
            format!("MessageType must be RAW or DIGEST, not {t:?}"),
        )),
    }
}

fn expired(rec: &KeyRecord, now: u64) -> bool {
    rec.state == KeyState::PendingDelete && rec.deletion_date <= now
}

fn parse_context(s: Option<&str>) -> KmsResult<EncryptionContext> {
    match s {
        None | Some("") => Ok(EncryptionContext::new()),
        Some(s) if s.len() > MAX_CONTEXT => Err(err(
            ErrorCode::InvalidParameterValue,
            format!("EncryptionContext is longer than {MAX_CONTEXT} bytes"),
        )),
        Some(s) => EncryptionContext::from_json(s),
    }
}

fn decode_blob(s: &str) -> KmsResult<Vec<u8>> {
    B64.decode(s.trim()).map_err(|_| {
        err(
            ErrorCode::InvalidParameterValueInvalidCiphertext,
            "CiphertextBlob is not base64",
        )
    })
}

fn require<'a>(v: &'a Option<String>, name: &str) -> KmsResult<&'a str> {
    match v.as_deref() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(err(
            ErrorCode::MissingParameter,
            format!("the parameter {name} is required"),
        )),
    }
}

/// Checks an alias: 1–60 of `[A-Za-z0-9_-]`, starting with a letter or digit,
/// not `kms-…` (reserved). `alias/NAME` names the key wherever a KeyId is taken
/// (an extension: Tencent's KeyId is the key id only); a bare alias is not
/// accepted there, so an alias can never be mistaken for a key id.
pub fn validate_alias(alias: &str) -> KmsResult<()> {
    let bad = |why: &str| {
        err(
            ErrorCode::InvalidParameterValueInvalidAlias,
            format!("invalid Alias {alias:?}: {why}"),
        )
    };
    if alias.is_empty() || alias.len() > 60 {
        return Err(bad("it must be 1 to 60 characters"));
    }
    if !alias
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("only letters, digits, '-' and '_' are allowed"));
    }
    if !alias.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("it must start with a letter or a digit"));
    }
    if alias.starts_with("kms-") {
        return Err(bad("the prefix kms- is reserved"));
    }
    Ok(())
}

fn check_description(d: &str) -> KmsResult<()> {
    if d.len() > MAX_DESCRIPTION {
        return Err(err(
            ErrorCode::InvalidParameterValue,
            format!("Description is longer than {MAX_DESCRIPTION} bytes"),
        ));
    }
    Ok(())
}

fn check_rotatable(rec: &KeyRecord) -> KmsResult<()> {
    if rec.origin == Origin::External {
        return Err(err(
            ErrorCode::UnsupportedOperationExternalCmkCanNotRotate,
            format!("key {} has imported material and cannot rotate", rec.key_id),
        ));
    }
    if rec.usage != KeyUsage::EncryptDecrypt {
        return Err(err(
            ErrorCode::UnsupportedOperationRotateNotSupported,
            format!(
                "key {} is {}: only ENCRYPT_DECRYPT keys rotate",
                rec.key_id,
                rec.usage.as_str()
            ),
        ));
    }
    if rec.state != KeyState::Enabled {
        return Err(state_error(rec));
    }
    Ok(())
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

    /// Opens the key store in the PostgreSQL database `url` (`store_pg.rs`); the root
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

    // ------------------------------------------------------------ actions

    /// CreateKey: a new key. ENCRYPT_DECRYPT gets fresh AES-256 material, or with
    /// Type 2 none (EXTERNAL, PendingImport until ImportKeyMaterial);
    /// ASYMMETRIC_DECRYPT_RSA_2048 and ASYMMETRIC_SIGN_VERIFY_RSA_2048 an RSA-2048
    /// key pair; ASYMMETRIC_SIGN_VERIFY_ECC a P-256 key pair;
    /// ASYMMETRIC_SIGN_VERIFY_SM2 an SM2 key pair.
    ///
    /// # Errors
    /// `MissingParameter` (no Alias), `InvalidParameterValue.InvalidAlias`,
    /// `.AliasAlreadyExists`, `.InvalidKeyUsage`, `.InvalidType`;
    /// `UnsupportedOperation` for ASYMMETRIC_DECRYPT_SM2 and ECDSA384 and for
    /// Type 2 with an asymmetric usage.
    pub fn create_key(
        &self,
        ctx: &CallContext,
        req: CreateKeyRequest,
    ) -> KmsResult<CreateKeyResponse> {
        self.audited(ctx, "CreateKey", "", |now| {
            self.create_key_at(ctx, &req, now)
        })
    }

    /// CreateKey's work at `now`, without its audit line (the caller writes one: the
    /// Tencent action above, or the Alibaba adapter's CreateKey).
    pub(crate) fn create_key_at(
        &self,
        ctx: &CallContext,
        req: &CreateKeyRequest,
        now: u64,
    ) -> KmsResult<(CreateKeyResponse, String)> {
        let alias = require(&req.alias, "Alias")?.to_owned();
        validate_alias(&alias)?;
        let description = req.description.clone().unwrap_or_default();
        check_description(&description)?;
        if let Some(u) = req
            .key_usage
            .as_deref()
            .filter(|u| REGION_UNSUPPORTED_USAGES.contains(u))
        {
            return Err(err(
                ErrorCode::UnsupportedOperationUnsupportedKeyUsageInCurrentRegion,
                format!("KeyUsage {u} is not offered by this KMS (ListAlgorithms lists what is)"),
            ));
        }
        let tags = parse_tags(req.tags.as_ref())?;
        let usage = match req.key_usage.as_deref() {
            None | Some("") => KeyUsage::EncryptDecrypt,
            Some(u) => KeyUsage::parse(u).ok_or_else(|| {
                err(
                    ErrorCode::InvalidParameterValueInvalidKeyUsage,
                    format!("unknown KeyUsage {u:?}"),
                )
            })?,
        };
        if usage != KeyUsage::EncryptDecrypt && !ASYMMETRIC_USAGES.contains(&usage) {
            return Err(err(
                ErrorCode::UnsupportedOperation,
                format!(
                    "KeyUsage {} is not supported by this KMS (it makes ENCRYPT_DECRYPT, \
                     ASYMMETRIC_DECRYPT_RSA_2048, ASYMMETRIC_DECRYPT_SM2, \
                     ASYMMETRIC_SIGN_VERIFY_RSA_2048, ASYMMETRIC_SIGN_VERIFY_ECC and \
                     ASYMMETRIC_SIGN_VERIFY_SM2 keys)",
                    usage.as_str()
                ),
            ));
        }
        let origin = match req.key_type {
            None | Some(1) => Origin::TencentKms,
            Some(2) if usage == KeyUsage::EncryptDecrypt => Origin::External,
            Some(2) => {
                return Err(err(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "Type 2 (EXTERNAL key material) is for ENCRYPT_DECRYPT keys, not {}",
                        usage.as_str()
                    ),
                ))
            }
            Some(t) => {
                return Err(err(
                    ErrorCode::InvalidParameterValueInvalidType,
                    format!("Type must be 1 or 2, not {t}"),
                ))
            }
        };
        // Asymmetric keys are made before the store lock is taken: RSA-2048
        // generation takes a noticeable time.
        let asym_material = match usage {
            KeyUsage::AsymmetricDecryptRsa2048 | KeyUsage::AsymmetricSignVerifyRsa2048 => {
                Some((MaterialKind::Rsa2048, RsaKey::generate()?.to_pkcs8_der()?))
            }
            KeyUsage::AsymmetricSignVerifyEcc => {
                Some((MaterialKind::EcP256, EcKey::generate()?.to_pkcs8_der()?))
            }
            KeyUsage::AsymmetricSignVerifySm2 | KeyUsage::AsymmetricDecryptSm2 => {
                Some((MaterialKind::Sm2, Sm2Key::generate()?.secret()))
            }
            KeyUsage::AsymmetricEncryptDecryptKyberAes => {
                Some((MaterialKind::MlKem768, KemKey::generate()?.seed()))
            }
            KeyUsage::AsymmetricSignVerifyDilithium => {
                Some((MaterialKind::MlDsa65, DsaKey::generate()?.seed()))
            }
            _ => None,
        };
        let key_id = uuid::Uuid::new_v4().to_string();
        let rec = self.store.transact(now, |txn| {
            if txn.keys.iter().any(|k| k.alias == alias) {
                return Err(err(
                    ErrorCode::InvalidParameterValueAliasAlreadyExists,
                    format!("the alias {alias:?} is already used"),
                ));
            }
            let (state, versions) = match (&asym_material, origin) {
                (_, Origin::External) => (KeyState::PendingImport, Vec::new()),
                (Some((kind, der)), _) => (
                    KeyState::Enabled,
                    vec![txn.new_asym_version(&key_id, 1, *kind, der)?],
                ),
                (None, _) => (KeyState::Enabled, vec![txn.new_aes_version(&key_id, 1)?]),
            };
            let rec = KeyRecord {
                key_id: key_id.clone(),
                alias: alias.clone(),
                description: description.clone(),
                create_time: now,
                state,
                usage,
                origin,
                creator: ctx.principal.clone(),
                rotation_enabled: false,
                rotate_days: 0,
                next_rotate_time: 0,
                last_rotate_time: 0,
                deletion_date: 0,
                valid_to: 0,
                versions,
                material_check: None,
                import: None,
                tags: tags.clone(),
            };
            txn.keys.push(rec.clone());
            Ok(rec)
        })?;
        Ok((
            CreateKeyResponse {
                key_id: rec.key_id.clone(),
                alias: rec.alias,
                create_time: rec.create_time,
                description: rec.description,
                key_state: rec.state.as_str().to_owned(),
                key_usage: rec.usage.as_str().to_owned(),
                tag_code: 0,
                tag_msg: String::new(),
            },
            rec.key_id,
        ))
    }

    /// DescribeKey.
    ///
    /// # Errors
    /// `ResourceUnavailable.CmkNotFound`.
    pub fn describe_key(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<DescribeKeyResponse> {
        let hint = req.key_id.clone().unwrap_or_default();
        self.audited(ctx, "DescribeKey", &hint, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            Ok((
                DescribeKeyResponse {
                    key_metadata: KeyMetadata::from(&k.rec),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// DescribeKeys: the metadata of the listed keys that exist.
    ///
    /// # Errors
    /// `InvalidParameterValue` for 0 or more than 100 ids,
    /// `InvalidParameterValue.DuplicatedKeyId`.
    pub fn describe_keys(
        &self,
        ctx: &CallContext,
        req: DescribeKeysRequest,
    ) -> KmsResult<KeyMetadatasResponse> {
        self.audited(ctx, "DescribeKeys", "", |now| {
            let ids = req.key_ids.as_deref().unwrap_or_default();
            if ids.is_empty() {
                return Err(err(
                    ErrorCode::MissingParameter,
                    "the parameter KeyIds is required",
                ));
            }
            if ids.len() > 100 {
                return Err(err(ErrorCode::InvalidParameterValue, "at most 100 KeyIds"));
            }
            for (i, a) in ids.iter().enumerate() {
                if ids[..i].contains(a) {
                    return Err(err(
                        ErrorCode::InvalidParameterValueDuplicatedKeyId,
                        format!("KeyId {a:?} appears twice"),
                    ));
                }
            }
            let snap = self.fresh(now)?;
            let key_metadatas = ids
                .iter()
                .filter_map(|id| Self::lookup(&snap, id, now).ok())
                .map(|k| KeyMetadata::from(&k.rec))
                .collect();
            Ok((
                KeyMetadatasResponse {
                    key_metadatas,
                    total_count: None,
                },
                String::new(),
            ))
        })
    }

    fn page(offset: Option<u64>, limit: Option<u64>) -> KmsResult<(usize, usize)> {
        let limit = limit.unwrap_or(10);
        if limit == 0 || limit > 200 {
            return Err(err(
                ErrorCode::InvalidParameterValue,
                "Limit must be 1 to 200",
            ));
        }
        Ok((
            usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX),
            limit as usize,
        ))
    }

    /// ListKeys: key ids, oldest first.
    ///
    /// # Errors
    /// `InvalidParameterValue` for a Limit outside 1–200.
    pub fn list_keys(
        &self,
        ctx: &CallContext,
        req: ListKeysRequest,
    ) -> KmsResult<ListKeysResponse> {
        self.audited(ctx, "ListKeys", "", |now| {
            let (offset, limit) = Self::page(req.offset, req.limit)?;
            let snap = self.fresh(now)?;
            let live: Vec<&LoadedKey> = if req.role.unwrap_or(0) == 0 {
                snap.keys.iter().filter(|k| !expired(&k.rec, now)).collect()
            } else {
                Vec::new()
            };
            Ok((
                ListKeysResponse {
                    total_count: live.len() as u64,
                    keys: live
                        .iter()
                        .skip(offset)
                        .take(limit)
                        .map(|k| KeyIdEntry {
                            key_id: k.rec.key_id.clone(),
                        })
                        .collect(),
                },
                String::new(),
            ))
        })
    }

    /// ListKeyDetail: key metadata with filters.
    ///
    /// # Errors
    /// `InvalidParameterValue` for bad filters or Limit.
    pub fn list_key_detail(
        &self,
        ctx: &CallContext,
        req: ListKeyDetailRequest,
    ) -> KmsResult<KeyMetadatasResponse> {
        self.audited(ctx, "ListKeyDetail", "", |now| {
            let (offset, limit) = Self::page(req.offset, req.limit)?;
            let state = match req.key_state.unwrap_or(0) {
                0 => None,
                1 => Some(KeyState::Enabled),
                2 => Some(KeyState::Disabled),
                3 => Some(KeyState::PendingDelete),
                4 => Some(KeyState::PendingImport),
                5 => Some(KeyState::Archived),
                _ => {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        "KeyState must be 0 to 5",
                    ))
                }
            };
            let origin = parse_origin_filter(req.origin.as_deref())?;
            let usage = match req.key_usage.as_deref() {
                None | Some("") => Some(KeyUsage::EncryptDecrypt),
                Some("ALL") => None,
                Some(u) => Some(KeyUsage::parse(u).ok_or_else(|| {
                    err(
                        ErrorCode::InvalidParameterValueInvalidKeyUsage,
                        format!("unknown KeyUsage {u:?}"),
                    )
                })?),
            };
            let search = req.search_key_alias.clone().unwrap_or_default();
            let tag_filters = parse_tag_filters(req.tag_filters.as_ref())?;
            let snap = self.fresh(now)?;
            let mut keys: Vec<&KeyRecord> = snap
                .keys
                .iter()
                .map(|k| &k.rec)
                .filter(|r| !expired(r, now))
                .filter(|_| req.role.unwrap_or(0) == 0)
                .filter(|r| state.is_none_or(|s| r.state == s))
                .filter(|r| origin.is_none_or(|o| r.origin == o))
                .filter(|r| usage.is_none_or(|u| r.usage == u))
                .filter(|r| {
                    search.is_empty() || r.alias.contains(&search) || r.key_id.contains(&search)
                })
                .filter(|r| tags_match(&r.tags, &tag_filters))
                .collect();
            if req.order_type.unwrap_or(0) == 0 {
                keys.reverse();
            }
            Ok((
                KeyMetadatasResponse {
                    total_count: Some(keys.len() as u64),
                    key_metadatas: keys
                        .into_iter()
                        .skip(offset)
                        .take(limit)
                        .map(KeyMetadata::from)
                        .collect(),
                },
                String::new(),
            ))
        })
    }

    /// One state-changing action on one key, under the store lock.
    fn modify<R>(
        &self,
        ctx: &CallContext,
        action: &str,
        key: &Option<String>,
        f: impl FnOnce(&mut KeyRecord, u64, &crate::store::Txn<'_>) -> KmsResult<R>,
    ) -> KmsResult<R> {
        let hint = key.clone().unwrap_or_default();
        self.audited(ctx, action, &hint, |now| {
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

    /// A state change `from` → `to`, a no-op when the key is already in `to`; any
    /// other state answers its state error.
    fn transition(
        &self,
        ctx: &CallContext,
        action: &str,
        key_id: &Option<String>,
        from: KeyState,
        to: KeyState,
    ) -> KmsResult<Empty> {
        self.modify(ctx, action, key_id, |rec, _, _| {
            if rec.state == from || rec.state == to {
                rec.state = to;
                Ok(Empty {})
            } else {
                Err(state_error(rec))
            }
        })
    }

    /// EnableKey: Disabled → Enabled (no-op when Enabled).
    ///
    /// # Errors
    /// `ResourceUnavailable.KeyPendingDelete`, `.CmkArchived`, `.CmkStateNotSupport`.
    pub fn enable_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Disabled, KeyState::Enabled);
        self.transition(ctx, "EnableKey", &req.key_id, from, to)
    }

    /// DisableKey: Enabled → Disabled (no-op when Disabled). A disabled key
    /// refuses Encrypt, Decrypt, GenerateDataKey and ReEncrypt.
    ///
    /// # Errors
    /// `ResourceUnavailable.KeyPendingDelete`, `.CmkArchived`, `.CmkStateNotSupport`.
    pub fn disable_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Enabled, KeyState::Disabled);
        self.transition(ctx, "DisableKey", &req.key_id, from, to)
    }

    /// The transition of [`Self::transition`] for several keys, all or none: one
    /// transaction, so a key that is missing or in a state that refuses it fails the call
    /// and no key changes.
    fn transition_many(
        &self,
        ctx: &CallContext,
        action: &str,
        key_ids: &Option<Vec<String>>,
        from: KeyState,
        to: KeyState,
    ) -> KmsResult<Empty> {
        let hint = key_ids.as_ref().map(|v| v.join(",")).unwrap_or_default();
        self.audited(ctx, action, &hint, |now| {
            let ids = key_ids.as_deref().unwrap_or_default();
            if ids.is_empty() {
                return Err(err(
                    ErrorCode::MissingParameter,
                    "the parameter KeyIds is required",
                ));
            }
            if ids.len() > MAX_BATCH_KEYS {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!("KeyIds names {} keys; at most {MAX_BATCH_KEYS}", ids.len()),
                ));
            }
            self.store.transact(now, |txn| {
                for key in ids {
                    let i = txn.resolve(key).ok_or_else(|| not_found(key))?;
                    let rec = &mut txn.keys[i];
                    if rec.state != from && rec.state != to {
                        return Err(state_error(rec));
                    }
                    rec.state = to;
                }
                Ok((Empty {}, hint.clone()))
            })
        })
    }

    /// EnableKeys: EnableKey for up to 100 keys, all or none.
    ///
    /// # Errors
    /// `MissingParameter`, `InvalidParameterValue` (over 100 keys), and the errors of
    /// EnableKey for the first key that refuses (then no key changes).
    pub fn enable_keys(&self, ctx: &CallContext, req: KeyIdsRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Disabled, KeyState::Enabled);
        self.transition_many(ctx, "EnableKeys", &req.key_ids, from, to)
    }

    /// DisableKeys: DisableKey for up to 100 keys, all or none.
    ///
    /// # Errors
    /// As [`Self::enable_keys`].
    pub fn disable_keys(&self, ctx: &CallContext, req: KeyIdsRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Enabled, KeyState::Disabled);
        self.transition_many(ctx, "DisableKeys", &req.key_ids, from, to)
    }

    /// GetServiceStatus.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn get_service_status(&self, ctx: &CallContext, _req: Empty) -> KmsResult<ServiceStatus> {
        self.audited(ctx, "GetServiceStatus", "", |now| {
            let snap = self.fresh(now)?;
            let n = snap
                .keys
                .iter()
                .filter(|k| k.rec.state != KeyState::PendingDelete)
                .count();
            Ok((
                ServiceStatus {
                    service_enabled: true,
                    invalid_type: 1,
                    user_level: 0,
                    exclusive_vsm_enabled: false,
                    exclusive_hsm_enabled: false,
                    cmk_user_count: n as u64,
                    is_allowed_data_key_hosted: false,
                    is_allowed_sync: false,
                },
                String::new(),
            ))
        })
    }

    /// GetRegions: the region this KMS answers for (`ap-guangzhou` unless the server was
    /// told otherwise, [`KmsService::region`]).
    ///
    /// # Errors
    /// None in practice (the call is audited).
    pub fn get_regions(&self, ctx: &CallContext, _req: Empty) -> KmsResult<Regions> {
        self.audited(ctx, "GetRegions", "", |_| {
            Ok((
                Regions {
                    regions: vec![self.region()],
                },
                String::new(),
            ))
        })
    }

    /// The region name this KMS gives (`KMSFS_KMS_REGION`, else `ap-guangzhou`, the
    /// region the Tencent examples use): clients send one and the service echoes it.
    pub fn region(&self) -> String {
        std::env::var("KMSFS_KMS_REGION")
            .ok()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "ap-guangzhou".to_owned())
    }

    /// ArchiveKey: Enabled → Archived (decrypt only).
    ///
    /// # Errors
    /// The state error of any other state.
    pub fn archive_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Enabled, KeyState::Archived);
        self.transition(ctx, "ArchiveKey", &req.key_id, from, to)
    }

    /// CancelKeyArchive: Archived → Enabled.
    ///
    /// # Errors
    /// The state error of any other state.
    pub fn cancel_key_archive(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        let (from, to) = (KeyState::Archived, KeyState::Enabled);
        self.transition(ctx, "CancelKeyArchive", &req.key_id, from, to)
    }

    /// ScheduleKeyDeletion: Disabled → PendingDelete for 7–30 days, then purged.
    ///
    /// # Errors
    /// `InvalidParameter.InvalidPendingWindowInDays`,
    /// `ResourceUnavailable.CmkShouldBeDisabled` (Enabled or Archived key),
    /// `ResourceUnavailable.KeyPendingDelete`.
    pub fn schedule_key_deletion(
        &self,
        ctx: &CallContext,
        req: ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        let days = req.pending_window_in_days;
        self.modify(ctx, "ScheduleKeyDeletion", &req.key_id, |rec, now, _| {
            let days = days.ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter PendingWindowInDays is required",
                )
            })?;
            if !(7..=30).contains(&days) {
                return Err(err(
                    ErrorCode::InvalidParameterInvalidPendingWindowInDays,
                    format!("PendingWindowInDays must be 7 to 30, not {days}"),
                ));
            }
            match rec.state {
                KeyState::Disabled | KeyState::PendingImport => {}
                KeyState::Enabled | KeyState::Archived => {
                    return Err(err(
                        ErrorCode::ResourceUnavailableCmkShouldBeDisabled,
                        format!(
                            "key {} must be disabled before its deletion is scheduled",
                            rec.key_id
                        ),
                    ))
                }
                _ => return Err(state_error(rec)),
            }
            rec.state = KeyState::PendingDelete;
            rec.deletion_date = now + days * DAY;
            Ok(ScheduleKeyDeletionResponse {
                deletion_date: rec.deletion_date,
                key_id: rec.key_id.clone(),
            })
        })
    }

    /// CancelKeyDeletion: PendingDelete → Disabled.
    ///
    /// # Errors
    /// `ResourceUnavailable.CmkNotPendingDelete`.
    pub fn cancel_key_deletion(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyIdResponse> {
        self.modify(ctx, "CancelKeyDeletion", &req.key_id, |rec, _, _| {
            if rec.state != KeyState::PendingDelete {
                return Err(err(
                    ErrorCode::ResourceUnavailableCmkNotPendingDelete,
                    format!("key {} is not pending deletion", rec.key_id),
                ));
            }
            rec.state = if rec.versions.is_empty() {
                KeyState::PendingImport
            } else {
                KeyState::Disabled
            };
            rec.deletion_date = 0;
            Ok(KeyIdResponse {
                key_id: rec.key_id.clone(),
            })
        })
    }

    /// UpdateAlias.
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidAlias`, `.AliasAlreadyExists`,
    /// `ResourceUnavailable.KeyPendingDelete`.
    pub fn update_alias(&self, ctx: &CallContext, req: UpdateAliasRequest) -> KmsResult<Empty> {
        let alias = req.alias.clone();
        let hint = req.key_id.clone().unwrap_or_default();
        self.audited(ctx, "UpdateAlias", &hint, |now| {
            let alias = require(&alias, "Alias")?.to_owned();
            validate_alias(&alias)?;
            let key = require(&req.key_id, "KeyId")?;
            self.store.transact(now, |txn| {
                let i = txn.resolve(key).ok_or_else(|| not_found(key))?;
                if txn.keys[i].state == KeyState::PendingDelete {
                    return Err(state_error(&txn.keys[i]));
                }
                if txn
                    .keys
                    .iter()
                    .enumerate()
                    .any(|(j, k)| j != i && k.alias == alias)
                {
                    return Err(err(
                        ErrorCode::InvalidParameterValueAliasAlreadyExists,
                        format!("the alias {alias:?} is already used"),
                    ));
                }
                txn.keys[i].alias = alias;
                Ok((Empty {}, txn.keys[i].key_id.clone()))
            })
        })
    }

    /// UpdateKeyDescription.
    ///
    /// # Errors
    /// `InvalidParameterValue` (too long), `ResourceUnavailable.KeyPendingDelete`.
    pub fn update_key_description(
        &self,
        ctx: &CallContext,
        req: UpdateKeyDescriptionRequest,
    ) -> KmsResult<Empty> {
        let d = req.description.clone();
        self.modify(ctx, "UpdateKeyDescription", &req.key_id, |rec, _, _| {
            let d = d.ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter Description is required",
                )
            })?;
            check_description(&d)?;
            if rec.state == KeyState::PendingDelete {
                return Err(state_error(rec));
            }
            rec.description = d;
            Ok(Empty {})
        })
    }

    /// EnableKeyRotation: automatic rotation every RotateDays (7–365, default 365).
    ///
    /// # Errors
    /// `InvalidParameterValue` (RotateDays), the state error of a non-Enabled key,
    /// `UnsupportedOperation.ExternalCmkCanNotRotate` / `.RotateNotSupported`.
    pub fn enable_key_rotation(
        &self,
        ctx: &CallContext,
        req: EnableKeyRotationRequest,
    ) -> KmsResult<Empty> {
        let days = req.rotate_days;
        self.modify(ctx, "EnableKeyRotation", &req.key_id, |rec, now, _| {
            let days = days.unwrap_or(365);
            if !(7..=365).contains(&days) {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!("RotateDays must be 7 to 365, not {days}"),
                ));
            }
            check_rotatable(rec)?;
            rec.rotation_enabled = true;
            rec.rotate_days = days as u32;
            rec.next_rotate_time = now + days * DAY;
            Ok(Empty {})
        })
    }

    /// DisableKeyRotation.
    ///
    /// # Errors
    /// As [`KmsService::enable_key_rotation`].
    pub fn disable_key_rotation(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        self.modify(ctx, "DisableKeyRotation", &req.key_id, |rec, _, _| {
            check_rotatable(rec)?;
            rec.rotation_enabled = false;
            rec.next_rotate_time = 0;
            Ok(Empty {})
        })
    }

    /// GetKeyRotationStatus.
    ///
    /// # Errors
    /// `ResourceUnavailable.CmkNotFound`.
    pub fn get_key_rotation_status(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyRotationStatusResponse> {
        let hint = req.key_id.clone().unwrap_or_default();
        self.audited(ctx, "GetKeyRotationStatus", &hint, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let snap = self.fresh(now)?;
            let r = &Self::lookup(&snap, key, now)?.rec;
            Ok((
                KeyRotationStatusResponse {
                    key_rotation_enabled: r.rotation_enabled,
                    next_rotate_time: if r.rotation_enabled {
                        r.next_rotate_time
                    } else {
                        0
                    },
                    rotate_days: u64::from(r.rotate_days),
                    last_rotate_time: r.last_rotate_time,
                },
                r.key_id.clone(),
            ))
        })
    }

    /// RotateKey: new material for new ciphertexts now; older versions still
    /// decrypt. At most once per 24 hours per key.
    ///
    /// # Errors
    /// `LimitExceeded` within 24 h of the last rotation; as
    /// [`KmsService::enable_key_rotation`].
    pub fn rotate_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        self.modify(ctx, "RotateKey", &req.key_id, |rec, now, txn| {
            check_rotatable(rec)?;
            if rec.last_rotate_time > 0 && now < rec.last_rotate_time + DAY {
                return Err(err(
                    ErrorCode::LimitExceeded,
                    format!("key {} was rotated less than 24 hours ago", rec.key_id),
                ));
            }
            let v = txn.new_aes_version(&rec.key_id, rec.current_version() + 1)?;
            rec.versions.push(v);
            rec.last_rotate_time = now;
            if rec.rotation_enabled {
                rec.next_rotate_time = now + u64::from(rec.rotate_days) * DAY;
            }
            Ok(Empty {})
        })
    }

    /// Encrypt: at most 4 KiB under the key's newest version.
    ///
    /// # Errors
    /// The key's state error, `InvalidParameterValue.InvalidPlaintext`,
    /// `InvalidParameterValue` (context).
    pub fn encrypt(&self, ctx: &CallContext, req: EncryptRequest) -> KmsResult<EncryptResponse> {
        let hint = req.key_id.clone().unwrap_or_default();
        self.audited(ctx, "Encrypt", &hint, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let pt_b64 = req.plaintext.as_ref().ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter Plaintext is required",
                )
            })?;
            let pt = Zeroizing::new(B64.decode(pt_b64.trim()).map_err(|_| {
                err(
                    ErrorCode::InvalidParameterValueInvalidPlaintext,
                    "Plaintext is not base64",
                )
            })?);
            if pt.is_empty() || pt.len() > MAX_PLAINTEXT {
                return Err(err(
                    ErrorCode::InvalidParameterValueInvalidPlaintext,
                    format!("Plaintext must be 1 to {MAX_PLAINTEXT} bytes"),
                ));
            }
            let context = parse_context(req.encryption_context.as_deref())?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_can_encrypt(&k.rec, now)?;
            let blob = Self::seal_current(k, &pt, &blob::canonical_context(&context))?;
            Ok((
                EncryptResponse {
                    ciphertext_blob: B64.encode(blob),
                    key_id: k.rec.key_id.clone(),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// Decrypt: the blob names its key and version.
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidCiphertext` (malformed, altered, wrong
    /// context, unknown key); the key's state error (`ResourceUnavailable.CmkDisabled`, …).
    pub fn decrypt(&self, ctx: &CallContext, req: DecryptRequest) -> KmsResult<DecryptResponse> {
        self.audited(ctx, "Decrypt", "", |now| {
            let raw = decode_blob(require(&req.ciphertext_blob, "CiphertextBlob")?)?;
            let context = parse_context(req.encryption_context.as_deref())?;
            // Checked before the key is used: a refused algorithm decrypts nothing.
            plaintext_field(
                b"check",
                req.encryption_public_key.as_deref(),
                req.encryption_algorithm.as_deref(),
            )?;
            let snap = self.fresh(now)?;
            let (pt, k) = Self::open_blob(&snap, now, &raw, &context)?;
            Ok((
                DecryptResponse {
                    key_id: k.rec.key_id.clone(),
                    plaintext: plaintext_field(
                        &pt[..],
                        req.encryption_public_key.as_deref(),
                        req.encryption_algorithm.as_deref(),
                    )?,
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// ReEncrypt: opens the blob and seals it again under the destination key's
    /// newest version (the source key by default).
    ///
    /// # Errors
    /// Decrypt's errors for the source; Encrypt's for the destination.
    pub fn re_encrypt(
        &self,
        ctx: &CallContext,
        req: ReEncryptRequest,
    ) -> KmsResult<ReEncryptResponse> {
        let hint = req.destination_key_id.clone().unwrap_or_default();
        self.audited(ctx, "ReEncrypt", &hint, |now| {
            let raw = decode_blob(require(&req.ciphertext_blob, "CiphertextBlob")?)?;
            let src_ctx = parse_context(req.source_encryption_context.as_deref())?;
            let dst_ctx = parse_context(req.destination_encryption_context.as_deref())?;
            let snap = self.fresh(now)?;
            let (pt, src) = Self::open_blob(&snap, now, &raw, &src_ctx)?;
            let dst = match req.destination_key_id.as_deref() {
                None | Some("") => src,
                Some(d) => Self::lookup(&snap, d, now)?,
            };
            check_can_encrypt(&dst.rec, now)?;
            // As the service documents: the same key, not rotated since, and the same
            // context is no re-encryption; the blob comes back as it was.
            let current = blob::parse(&raw)?.key_version == dst.rec.current_version();
            let unchanged = dst.rec.key_id == src.rec.key_id
                && current
                && blob::canonical_context(&src_ctx) == blob::canonical_context(&dst_ctx);
            let out = if unchanged {
                raw.to_vec()
            } else {
                Self::seal_current(dst, &pt, &blob::canonical_context(&dst_ctx))?
            };
            Ok((
                ReEncryptResponse {
                    ciphertext_blob: B64.encode(out),
                    key_id: dst.rec.key_id.clone(),
                    source_key_id: src.rec.key_id.clone(),
                    re_encrypted: !unchanged,
                },
                dst.rec.key_id.clone(),
            ))
        })
    }

    fn data_key_len(spec: Option<&str>, n: Option<u64>) -> KmsResult<usize> {
        match (n, spec) {
            (Some(n), _) => {
                if n == 0 || n > MAX_RANDOM as u64 {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!("NumberOfBytes must be 1 to {MAX_RANDOM}"),
                    ));
                }
                Ok(n as usize)
            }
            (None, Some("AES_256")) => Ok(32),
            (None, Some("AES_128")) => Ok(16),
            (None, Some(s)) => Err(err(
                ErrorCode::InvalidParameterValue,
                format!("KeySpec must be AES_128 or AES_256, not {s:?}"),
            )),
            (None, None) => Err(err(
                ErrorCode::MissingParameter,
                "KeySpec or NumberOfBytes is required",
            )),
        }
    }

    fn data_key(
        &self,
        now: u64,
        key: &str,
        len: usize,
        context: &EncryptionContext,
    ) -> KmsResult<DataKey> {
        let snap = self.fresh(now)?;
        let k = Self::lookup(&snap, key, now)?;
        check_can_encrypt(&k.rec, now)?;
        // One getrandom for the data key and the blob's nonce.
        let mut dek = Zeroizing::new(vec![0u8; len + NONCE_LEN]);
        crypto::random_bytes(&mut dek)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&dek[len..]);
        dek.truncate(len);
        let blob = Self::seal_current_with(k, &dek, &blob::canonical_context(context), &nonce)?;
        Ok(DataKey {
            key_id: k.rec.key_id.clone(),
            plaintext: dek,
            ciphertext_blob: blob,
        })
    }

    /// GenerateDataKey: a random data key, in plaintext and sealed under the CMK.
    ///
    /// # Errors
    /// The key's state error; `InvalidParameterValue` (size, context).
    pub fn generate_data_key_action(
        &self,
        ctx: &CallContext,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyResponse> {
        let hint = req.key_id.clone().unwrap_or_default();
        self.audited(ctx, "GenerateDataKey", &hint, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let len = Self::data_key_len(req.key_spec.as_deref(), req.number_of_bytes)?;
            let context = parse_context(req.encryption_context.as_deref())?;
            let (pk, alg) = (
                req.encryption_public_key.as_deref(),
                req.encryption_algorithm.as_deref(),
            );
            // Checked before a data key is made: a refused algorithm makes none.
            plaintext_field(b"check", pk, alg)?;
            let hosting = data_keys::Hosting::parse(
                req.is_hosted_by_kms,
                req.data_key_name.as_deref(),
                req.description.as_deref(),
                req.tags.as_ref(),
            )?;
            if hosting.is_some() && !context.is_empty() {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    "a hosted data key (IsHostedByKms 1) takes no EncryptionContext",
                ));
            }
            let dk = self.data_key(now, key, len, &context)?;
            let id = dk.key_id.clone();
            let data_key_id = match hosting {
                Some(h) => {
                    Some(self.host_generated(ctx, now, h, &dk.key_id, len, &dk.ciphertext_blob)?)
                }
                None => None,
            };
            let hosted = data_key_id.is_some();
            Ok((
                GenerateDataKeyResponse {
                    key_id: dk.key_id.clone(),
                    plaintext: plaintext_field(&dk.plaintext[..], pk, alg)?,
                    ciphertext_blob: B64.encode(&dk.ciphertext_blob),
                    data_key_id,
                    tag_code: hosted.then_some(0),
                    tag_msg: hosted.then(String::new),
                },
                id,
            ))
        })
    }

    /// ListAlgorithms: the key usages and algorithms this KMS supports.
    ///
    /// # Errors
    /// None in practice.
    pub fn list_algorithms(
        &self,
        ctx: &CallContext,
        _req: Empty,
    ) -> KmsResult<ListAlgorithmsResponse> {
        self.audited(ctx, "ListAlgorithms", "", |_| {
            Ok((
                ListAlgorithmsResponse {
                    symmetric_algorithms: vec![AlgorithmInfo {
                        key_usage: KeyUsage::EncryptDecrypt.as_str().to_owned(),
                        algorithm: "AES_256".to_owned(),
                    }],
                    asymmetric_algorithms: vec![
                        AlgorithmInfo {
                            key_usage: KeyUsage::AsymmetricDecryptRsa2048.as_str().to_owned(),
                            algorithm: "RSA_2048".to_owned(),
                        },
                        AlgorithmInfo {
                            key_usage: KeyUsage::AsymmetricDecryptSm2.as_str().to_owned(),
                            algorithm: "SM2".to_owned(),
                        },
                        AlgorithmInfo {
                            key_usage: KeyUsage::AsymmetricEncryptDecryptKyberAes
                                .as_str()
                                .to_owned(),
                            algorithm: "Kyber_AES".to_owned(),
                        },
                    ],
                    asymmetric_sign_verify_algorithms: vec![
                        AlgorithmInfo {
                            key_usage: KeyUsage::AsymmetricSignVerifyRsa2048.as_str().to_owned(),
                            algorithm: "RSA_2048".to_owned(),
                        },
                        AlgorithmInfo {
                            key_usage: KeyUsage::AsymmetricSignVerifyEcc.as_str().to_owned(),
                            algorithm: "ECC".to_owned(),
                        },
                        AlgorithmInfo {
                            key_usage: KeyUsage::AsymmetricSignVerifySm2.as_str().to_owned(),
                            algorithm: "SM2".to_owned(),
                        },
                        AlgorithmInfo {
                            key_usage: KeyUsage::AsymmetricSignVerifyDilithium.as_str().to_owned(),
                            algorithm: "Dilithium".to_owned(),
                        },
                    ],
                },
                String::new(),
            ))
        })
    }

    /// The newest material of an asymmetric key.
    fn asym_material(k: &LoadedKey) -> KmsResult<&Material> {
        k.material
            .last()
            .map(|m| &**m)
            .ok_or_else(|| state_error(&k.rec))
    }

    /// GetPublicKey: the public half of an asymmetric key, as base64 DER
    /// SubjectPublicKeyInfo and as PEM.
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidKeyUsage` for a symmetric key; the state error
    /// of a key neither Enabled nor Archived.
    pub fn get_public_key(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<GetPublicKeyResponse> {
        let hint = req.key_id.clone().unwrap_or_default();
        self.audited(ctx, "GetPublicKey", &hint, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_usage(&k.rec, ASYMMETRIC_USAGES, "GetPublicKey")?;
            if !matches!(k.rec.state, KeyState::Enabled | KeyState::Archived) {
                return Err(state_error(&k.rec));
            }
            let der = match Self::asym_material(k)? {
                Material::Rsa(r) => r.public_key_der()?,
                Material::Ec(e) => e.public_key_der()?,
                Material::Sm2(k) => k.public_key_der()?,
                Material::Kem(k) => k.public_key_der()?,
                Material::Dsa(k) => k.public_key_der()?,
                Material::Aead(_) => return Err(state_error(&k.rec)),
            };
            Ok((
                GetPublicKeyResponse {
                    key_id: k.rec.key_id.clone(),
                    public_key: B64.encode(&der),
                    public_key_pem: asym::public_key_pem(&der),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// AsymmetricRsaDecrypt: decrypts what was encrypted with the public key of an
    /// ASYMMETRIC_DECRYPT_RSA_2048 key.
    ///
    /// # Security
    /// Every failure is the same `FailedOperation.DecryptError`; with
    /// `RSAES_PKCS1_V1_5` bad padding is not a failure at all: the answer is a
    /// synthetic plaintext (implicit rejection, `rsa` 0.10), so the response
    /// cannot serve as a padding oracle (docs/THREAT-MODEL.md).
    ///
    /// # Errors
    /// `InvalidParameterValue` (Algorithm, Ciphertext not base64 or not 256
    /// bytes), `.InvalidKeyUsage`, the key's state error,
    /// `FailedOperation.DecryptError`.
    pub fn asymmetric_rsa_decrypt(
        &self,
        ctx: &CallContext,
        req: AsymmetricRsaDecryptRequest,
    ) -> KmsResult<AsymmetricRsaDecryptResponse> {
        let alg = match req.algorithm.as_deref() {
            None | Some("") => None,
            Some(a) => Some(RsaEncryption::parse(a).ok_or_else(|| {
                err(
                    ErrorCode::InvalidParameterValue,
                    format!("Algorithm must be RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1 or RSAES_PKCS1_V1_5, not {a:?}"),
                )
            })),
        };
        self.asym_decrypt(
            ctx,
            "AsymmetricRsaDecrypt",
            &req.key_id,
            &req.ciphertext,
            KeyUsage::AsymmetricDecryptRsa2048,
            |ct| {
                if ct.len() != asym::RSA_LEN {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!(
                            "Ciphertext must be {} bytes (RSA-2048), not {}",
                            asym::RSA_LEN,
                            ct.len()
                        ),
                    ));
                }
                match &alg {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(err(
                        ErrorCode::MissingParameter,
                        "the parameter Algorithm is required",
                    )),
                }
            },
            |m, ct| match (m, &alg) {
                (Material::Rsa(rsa), Some(Ok(a))) => rsa.decrypt(*a, ct).ok(),
                _ => None,
            },
        )
    }

    /// AsymmetricSm2Decrypt: decrypts a C1C3C2 ASN.1 ciphertext (what `openssl pkeyutl
    /// -encrypt` makes with the key from GetPublicKey) of at most 256 bytes.
    ///
    /// # Errors
    /// `InvalidParameterValue` (not base64, too long), `InvalidParameterValue.InvalidKeyUsage`
    /// (not an ASYMMETRIC_DECRYPT_SM2 key), the key's state error,
    /// `FailedOperation.DecryptError`.
    pub fn asymmetric_sm2_decrypt(
        &self,
        ctx: &CallContext,
        req: AsymmetricSm2DecryptRequest,
    ) -> KmsResult<AsymmetricRsaDecryptResponse> {
        self.asym_decrypt(
            ctx,
            "AsymmetricSm2Decrypt",
            &req.key_id,
            &req.ciphertext,
            KeyUsage::AsymmetricDecryptSm2,
            |ct| {
                if ct.len() > MAX_SM2_CIPHERTEXT {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!(
                            "Ciphertext is {} bytes; at most {MAX_SM2_CIPHERTEXT}",
                            ct.len()
                        ),
                    ));
                }
                Ok(())
            },
            |m, ct| match m {
                Material::Sm2(sm2) => sm2.decrypt_der(ct).ok(),
                _ => None,
            },
        )
    }

    /// The common part of AsymmetricRsaDecrypt and AsymmetricSm2Decrypt: the inputs
    /// (`check` sees the ciphertext first), the key's usage and state (Enabled or
    /// Archived), then `open` with the key's material; `None` from it is
    /// `FailedOperation.DecryptError`.
    #[allow(clippy::too_many_arguments)]
    fn asym_decrypt(
        &self,
        ctx: &CallContext,
        action: &str,
        key_id: &Option<String>,
        ciphertext: &Option<String>,
        usage: KeyUsage,
        check: impl FnOnce(&[u8]) -> KmsResult<()>,
        open: impl FnOnce(&Material, &[u8]) -> Option<Zeroizing<Vec<u8>>>,
    ) -> KmsResult<AsymmetricRsaDecryptResponse> {
        let hint = key_id.clone().unwrap_or_default();
        self.audited(ctx, action, &hint, |now| {
            let key = require(key_id, "KeyId")?;
            let ct = decode_b64(
                require(ciphertext, "Ciphertext")?,
                ErrorCode::InvalidParameterValue,
                "Ciphertext",
            )?;
            check(&ct)?;
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_usage(&k.rec, &[usage], action)?;
            if !matches!(k.rec.state, KeyState::Enabled | KeyState::Archived) {
                return Err(state_error(&k.rec));
            }
            let pt = open(Self::asym_material(k)?, &ct).ok_or_else(|| {
                err(
                    ErrorCode::FailedOperationDecryptError,
                    "the Ciphertext does not decrypt under this key",
                )
            })?;
            Ok((
                AsymmetricRsaDecryptResponse {
                    key_id: k.rec.key_id.clone(),
                    plaintext: SecretString::from(B64.encode(&pt[..])),
                },
                k.rec.key_id.clone(),
            ))
        })
    }

    /// Parses a signature Algorithm and checks it fits the key.
    fn sign_algorithm(rec: &KeyRecord, alg: &str) -> KmsResult<SignAlgorithm> {
        let a = SignAlgorithm::parse(alg);
        let fits = matches!(
            (rec.usage, a),
            (
                KeyUsage::AsymmetricSignVerifyRsa2048,
                Some(SignAlgorithm::RsaPssSha256 | SignAlgorithm::RsaPkcs1Sha256),
            ) | (
                KeyUsage::AsymmetricSignVerifyEcc,
                Some(SignAlgorithm::EccP256)
            ) | (
                KeyUsage::AsymmetricSignVerifySm2,
                Some(SignAlgorithm::Sm2Dsa)
            )
        );
        match a {
            Some(a) if fits => Ok(a),
            _ => Err(err(
                ErrorCode::InvalidParameterValue,
                format!(
                    "Algorithm {alg:?} does not fit key {} ({}): RSA keys sign with \
                     RSA_PSS_SHA_256 or RSA_PKCS1_SHA_256, ECC keys with ECC_P256_R1, SM2 keys \
                     with SM2DSA",
                    rec.key_id,
                    rec.usage.as_str()
                ),
            )),
        }
    }

    /// The common part of SignByAsymmetricKey and VerifyByAsymmetricKey: checks the
    /// inputs, the key's usage and state (one of `states`) and the algorithm, then
    /// runs `op` on the key's material, the algorithm and the digest to sign.
    #[allow(clippy::too_many_arguments)]
    fn with_signing_key<R>(
        &self,
        ctx: &CallContext,
        action: &str,
        key_id: &Option<String>,
        algorithm: &Option<String>,
        message: &Option<SecretString>,
        message_type: Option<&str>,
        states: &[KeyState],
        op: impl FnOnce(&Material, SignAlgorithm, &Message<'_>) -> KmsResult<R>,
    ) -> KmsResult<R> {
        let hint = key_id.clone().unwrap_or_default();
        self.audited(ctx, action, &hint, |now| {
            let key = require(key_id, "KeyId")?;
            let alg_s = require(algorithm, "Algorithm")?;
            let msg = message.as_ref().ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter Message is required",
                )
            })?;
            let msg = decode_b64(msg, ErrorCode::InvalidParameterValue, "Message")?;
            let is_digest = check_message(&msg, message_type)?;
            let message = Message {
                bytes: &msg,
                is_digest,
            };
            let snap = self.fresh(now)?;
            let k = Self::lookup(&snap, key, now)?;
            check_usage(&k.rec, SIGN_USAGES, action)?;
            if !states.contains(&k.rec.state) {
                return Err(state_error(&k.rec));
            }
            let alg = Self::sign_algorithm(&k.rec, alg_s)?;
            let r = op(Self::asym_material(k)?, alg, &message)?;
            Ok((r, k.rec.key_id.clone()))
        })
    }

    /// SignByAsymmetricKey: signs a RAW message (≤ 4096 bytes, hashed with
    /// SHA-256 here) or a DIGEST (its 32-byte SHA-256) with an
    /// ASYMMETRIC_SIGN_VERIFY_RSA_2048 or _ECC key, as openssl verifies it.
    ///
    /// # Errors
    /// `InvalidParameterValue` (Algorithm, Message, MessageType),
    /// `.InvalidKeyUsage`, the state error of a key not Enabled,
    /// `FailedOperation.SignError`.
    pub fn sign_by_asymmetric_key(
        &self,
        ctx: &CallContext,
        req: SignByAsymmetricKeyRequest,
    ) -> KmsResult<SignByAsymmetricKeyResponse> {
        self.with_signing_key(
            ctx,
            "SignByAsymmetricKey",
            &req.key_id,
            &req.algorithm,
            &req.message,
            req.message_type.as_deref(),
            &[KeyState::Enabled],
            |m, alg, msg| {
                let sig = match m {
                    Material::Rsa(r) => r.sign_digest(alg, &msg.sha256())?,
                    Material::Ec(e) => e.sign_digest(alg, &msg.sha256())?,
                    Material::Sm2(k) => k.sign(alg, msg.bytes, msg.is_digest)?,
                    Material::Aead(_) | Material::Kem(_) | Material::Dsa(_) => {
                        return Err(err(
                            ErrorCode::FailedOperationSignError,
                            "not a signing key",
                        ))
                    }
                };
                Ok(SignByAsymmetricKeyResponse {
                    signature: B64.encode(sig),
                })
            },
        )
    }

    /// VerifyByAsymmetricKey: whether SignatureValue is a signature of the message
    /// under the key. RSA-PSS signatures of any salt length verify (openssl's
    /// default is the maximum). A malformed signature is simply not valid.
    ///
    /// # Errors
    /// As [`KmsService::sign_by_asymmetric_key`] (Archived keys verify too);
    /// `InvalidParameterValue` when SignatureValue is not base64.
    pub fn verify_by_asymmetric_key(
        &self,
        ctx: &CallContext,
        req: VerifyByAsymmetricKeyRequest,
    ) -> KmsResult<VerifyByAsymmetricKeyResponse> {
        self.with_signing_key(
            ctx,
            "VerifyByAsymmetricKey",
            &req.key_id,
            &req.algorithm,
            &req.message,
            req.message_type.as_deref(),
            &[KeyState::Enabled, KeyState::Archived],
            |m, alg, msg| {
                let sig = decode_b64(
                    require(&req.signature_value, "SignatureValue")?,
                    ErrorCode::InvalidParameterValue,
                    "SignatureValue",
                )?;
                let signature_valid = match m {
                    Material::Rsa(r) => r.verify_digest(alg, &msg.sha256(), &sig),
                    Material::Ec(e) => e.verify_digest(alg, &msg.sha256(), &sig),
                    Material::Sm2(k) => k.verify(alg, msg.bytes, msg.is_digest, &sig),
                    Material::Aead(_) | Material::Kem(_) | Material::Dsa(_) => false,
                };
                Ok(VerifyByAsymmetricKeyResponse { signature_valid })
            },
        )
    }

    /// GetParametersForImport: a fresh RSA-2048 wrapping key and import token for
    /// an EXTERNAL key, valid 24 hours; they replace any earlier pair, which is
    /// refused from now on.
    ///
    /// # Errors
    /// `UnsupportedOperation.NotExternalCmk`, `InvalidParameterValue`
    /// (WrappingAlgorithm, WrappingKeySpec), the state error of a key pending
    /// deletion or archived.
    pub fn get_parameters_for_import(
        &self,
        ctx: &CallContext,
        req: GetParametersForImportRequest,
    ) -> KmsResult<GetParametersForImportResponse> {
        let hint = req.key_id.clone().unwrap_or_default();
        self.audited(ctx, "GetParametersForImport", &hint, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let alg_s = require(&req.wrapping_algorithm, "WrappingAlgorithm")?;
            let alg = RsaEncryption::parse(alg_s).ok_or_else(|| {
                err(
                    ErrorCode::InvalidParameterValue,
                    format!("WrappingAlgorithm must be RSAES_PKCS1_V1_5, RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256, not {alg_s:?}"),
                )
            })?;
            match req.wrapping_key_spec.as_deref() {
                None | Some("") | Some("RSA_2048") => {}
                Some(s) => {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!("WrappingKeySpec must be RSA_2048, not {s:?}"),
                    ))
                }
            }
            let check = |rec: &KeyRecord| -> KmsResult<()> {
                check_external(rec)?;
                if matches!(rec.state, KeyState::PendingDelete | KeyState::Archived) {
                    return Err(state_error(rec));
                }
                Ok(())
            };
            // Refuse cheaply before paying for an RSA key generation.
            let snap = self.fresh(now)?;
            check(&Self::lookup(&snap, key, now)?.rec)?;
            drop(snap);
            let wrapping = RsaKey::generate()?;
            let der = wrapping.to_pkcs8_der()?;
            let public = wrapping.public_key_der()?;
            let mut t = [0u8; 32];
            crypto::random_bytes(&mut t)?;
            let token = B64.encode(t);
            let valid_to = now + IMPORT_PARAMETERS_TTL;
            let key_id = self.store.transact(now, |txn| {
                let i = txn.resolve(key).ok_or_else(|| not_found(key))?;
                check(&txn.keys[i])?;
                let key_id = txn.keys[i].key_id.clone();
                let wrapped_key = txn.wrap_import_key(&key_id, &der)?;
                txn.keys[i].import = Some(ImportParams {
                    wrapping_algorithm: alg.as_str().to_owned(),
                    token_sha256: crypto::hex(&crypto::sha256(token.as_bytes())),
                    valid_to,
                    wrapped_key,
                });
                Ok(key_id)
            })?;
            Ok((
                GetParametersForImportResponse {
                    key_id: key_id.clone(),
                    import_token: token,
                    public_key: B64.encode(&public),
                    parameters_valid_to: valid_to,
                },
                key_id,
            ))
        })
    }

    /// ImportKeyMaterial: 128- or 256-bit material, encrypted under the wrapping key
    /// of the latest GetParametersForImport, becomes the EXTERNAL key's material
    /// (AES-128-GCM or AES-256-GCM) until `ValidTo` (0: never). A key that ever had
    /// material takes only the same material again; an Enabled key re-imports it
    /// to change `ValidTo`.
    ///
    /// # Errors
    /// `UnsupportedOperation.NotExternalCmk`; `ResourceUnavailable.TokenExpired`
    /// (no parameters, not the latest token, or past ParametersValidTo);
    /// `InvalidParameterValue.InvalidImportKeyMaterial` (not base64 or not 256
    /// bytes); `InvalidParameter.DecryptMaterialError` (does not decrypt to 16 or
    /// 32 bytes — one error for every cause); `InvalidParameterValue.MaterialNotMatch`;
    /// `InvalidParameterValue` (ValidTo); the state error of a key pending
    /// deletion or archived.
    pub fn import_key_material(
        &self,
        ctx: &CallContext,
        req: ImportKeyMaterialRequest,
    ) -> KmsResult<Empty> {
        use subtle::ConstantTimeEq as _;
        self.modify(ctx, "ImportKeyMaterial", &req.key_id, |rec, now, txn| {
            check_external(rec)?;
            if matches!(rec.state, KeyState::PendingDelete | KeyState::Archived) {
                return Err(state_error(rec));
            }
            let enc = require(&req.encrypted_key_material, "EncryptedKeyMaterial")?;
            let token = req.import_token.as_ref().filter(|t| !t.is_empty()).ok_or_else(|| {
                err(ErrorCode::MissingParameter, "the parameter ImportToken is required")
            })?;
            let expired = || {
                err(
                    ErrorCode::ResourceUnavailableTokenExpired,
                    format!(
                        "the ImportToken is not the latest one GetParametersForImport gave for key {}, \
                         or it has expired: call GetParametersForImport again",
                        rec.key_id
                    ),
                )
            };
            let params = rec.import.clone().ok_or_else(expired)?;
            let presented = crypto::hex(&crypto::sha256(token.as_bytes()));
            if !bool::from(presented.as_bytes().ct_eq(params.token_sha256.as_bytes()))
                || now >= params.valid_to
            {
                return Err(expired());
            }
            let valid_to = req.valid_to.unwrap_or(0);
            if valid_to != 0 && (valid_to <= now || valid_to > MAX_VALID_TO) {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!("ValidTo must be 0 (never) or a Unix time after now and at most {MAX_VALID_TO}"),
                ));
            }
            let ct = decode_b64(
                enc,
                ErrorCode::InvalidParameterValueInvalidImportKeyMaterial,
                "EncryptedKeyMaterial",
            )?;
            if ct.len() != asym::RSA_LEN {
                return Err(err(
                    ErrorCode::InvalidParameterValueInvalidImportKeyMaterial,
                    format!(
                        "EncryptedKeyMaterial must be {} bytes (RSA-2048), not {}",
                        asym::RSA_LEN,
                        ct.len()
                    ),
                ));
            }
            let alg = RsaEncryption::parse(&params.wrapping_algorithm)
                .ok_or_else(|| err(ErrorCode::InternalError, "damaged import parameters"))?;
            let wrapping = txn.unwrap_import_key(&rec.key_id, &params.wrapped_key)?;
            // One error for every failure: bad OAEP padding, and PKCS#1 v1.5's
            // synthetic plaintext (implicit rejection), which has the wrong length
            // but for a chance of about 2 in 245.
            let material = match wrapping.decrypt(alg, &ct) {
                Ok(m) if m.len() == 16 || m.len() == 32 => m,
                _ => {
                    return Err(err(
                        ErrorCode::InvalidParameterDecryptMaterialError,
                        format!(
                            "EncryptedKeyMaterial does not decrypt to 128- or 256-bit key material with the \
                             wrapping key and algorithm ({}) of the ImportToken",
                            params.wrapping_algorithm
                        ),
                    ))
                }
            };
            let check = txn.material_check(&rec.key_id, &material);
            if let Some(prev) = &rec.material_check {
                if !bool::from(prev.as_bytes().ct_eq(check.as_bytes())) {
                    return Err(err(
                        ErrorCode::InvalidParameterValueMaterialNotMatch,
                        format!(
                            "key {} already had key material: only the same material can be imported again",
                            rec.key_id
                        ),
                    ));
                }
            }
            if rec.versions.is_empty() {
                let (v, c) = txn.imported_version(&rec.key_id, &material)?;
                rec.versions = vec![v];
                rec.material_check = Some(c);
            }
            rec.valid_to = valid_to;
            if rec.state == KeyState::PendingImport {
                rec.state = KeyState::Enabled;
            }
            Ok(Empty {})
        })
    }

    /// DeleteImportedKeyMaterial: the EXTERNAL key's material is removed from the
    /// store and the key goes to PendingImport: it refuses Encrypt, Decrypt and
    /// GenerateDataKey (`ResourceUnavailable.CmkStateNotSupport`) until the same
    /// material is imported again.
    ///
    /// # Errors
    /// `UnsupportedOperation.NotExternalCmk`; the state error of a key pending
    /// deletion or archived.
    pub fn delete_imported_key_material(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<Empty> {
        self.modify(
            ctx,
            "DeleteImportedKeyMaterial",
            &req.key_id,
            |rec, _, _| {
                check_external(rec)?;
                if matches!(rec.state, KeyState::PendingDelete | KeyState::Archived) {
                    return Err(state_error(rec));
                }
                delete_imported_material(rec);
                Ok(Empty {})
            },
        )
    }

    /// GenerateRandom: 1–1024 random bytes.
    ///
    /// # Errors
    /// `InvalidParameterValue` for a size outside 1–1024.
    pub fn generate_random(
        &self,
        ctx: &CallContext,
        req: GenerateRandomRequest,
    ) -> KmsResult<GenerateRandomResponse> {
        self.audited(ctx, "GenerateRandom", "", |_| {
            let n = match req.number_of_bytes {
                Some(n) if (1..=MAX_RANDOM as u64).contains(&n) => n as usize,
                Some(_) => {
                    return Err(err(
                        ErrorCode::InvalidParameterValue,
                        format!("NumberOfBytes must be 1 to {MAX_RANDOM}"),
                    ))
                }
                None => {
                    return Err(err(
                        ErrorCode::MissingParameter,
                        "the parameter NumberOfBytes is required",
                    ))
                }
            };
            let mut buf = Zeroizing::new(vec![0u8; n]);
            crypto::random_bytes(&mut buf)?;
            Ok((
                GenerateRandomResponse {
                    plaintext: SecretString::from(B64.encode(&buf[..])),
                },
                String::new(),
            ))
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

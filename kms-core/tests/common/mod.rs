//! Helpers shared by the kms-core integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use kms_core::clock::ManualClock;
use kms_core::store::RootKeySource;
use kms_core::{CallContext, ErrorCode, Kms, KmsOptions, KmsResult, KmsService};
use serde_json::{json, Value};

pub mod programs;

/// 2026-11-23T00:00:00Z.
pub const T0: u64 = 1_795_392_000;

/// Writes a store directory from bytes: `root.key` holding `root` (in its file format)
/// and `keys.kms` holding `keys_kms`.
pub fn write_store(dir: &Path, root: &[u8; 32], keys_kms: &[u8]) {
    let mut rk = b"kmsfs-rk\x00\x01".to_vec();
    rk.extend_from_slice(root);
    std::fs::write(dir.join("root.key"), rk).unwrap();
    std::fs::write(dir.join("keys.kms"), keys_kms).unwrap();
}

pub fn ctx() -> CallContext {
    CallContext::new("local:test")
}

pub fn open_with_clock(dir: &Path, clock: Arc<ManualClock>) -> KmsService {
    KmsService::open_with(
        dir,
        KmsOptions {
            root_key: Some(RootKeySource::File(dir.join("root.key"))),
            clock,
        },
    )
    .expect("open store")
}

pub fn open(dir: &Path) -> (KmsService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    (open_with_clock(dir, clock.clone()), clock)
}

/// A service on a store in a new temporary directory; keep the directory as long as
/// the service (bind it first: `let (d, kms, clock) = open_tmp();`).
pub fn open_tmp() -> (tempfile::TempDir, KmsService, Arc<ManualClock>) {
    let d = tempfile::tempdir().unwrap();
    let (kms, clock) = open(d.path());
    (d, kms, clock)
}

/// `TotalCount` of ListKeys.
pub fn key_count(kms: &dyn Kms) -> Value {
    call(kms, "ListKeys", json!({})).unwrap()["TotalCount"].clone()
}

pub fn call(kms: &dyn Kms, action: &str, params: Value) -> KmsResult<Value> {
    kms.call(&ctx(), action, &params)
}

/// The string field `f` of `v`.
pub fn s(v: &Value, f: &str) -> String {
    v[f].as_str()
        .unwrap_or_else(|| panic!("no {f} in {v}"))
        .to_owned()
}

pub fn code(r: KmsResult<Value>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.code,
    }
}

pub fn create(kms: &dyn Kms, alias: &str) -> String {
    let r = call(kms, "CreateKey", json!({"Alias": alias})).expect("CreateKey");
    r["KeyId"].as_str().expect("KeyId").to_owned()
}

pub fn encrypt(kms: &dyn Kms, key: &str, pt: &[u8], ctx_json: Option<&str>) -> KmsResult<String> {
    use base64::Engine as _;
    let mut p =
        json!({"KeyId": key, "Plaintext": base64::engine::general_purpose::STANDARD.encode(pt)});
    if let Some(c) = ctx_json {
        p["EncryptionContext"] = json!(c);
    }
    call(kms, "Encrypt", p).map(|r| r["CiphertextBlob"].as_str().unwrap_or_default().to_owned())
}

pub fn decrypt(kms: &dyn Kms, blob: &str, ctx_json: Option<&str>) -> KmsResult<Vec<u8>> {
    use base64::Engine as _;
    let mut p = json!({"CiphertextBlob": blob});
    if let Some(c) = ctx_json {
        p["EncryptionContext"] = json!(c);
    }
    call(kms, "Decrypt", p).map(|r| {
        base64::engine::general_purpose::STANDARD
            .decode(r["Plaintext"].as_str().unwrap_or_default())
            .expect("base64")
    })
}

pub fn b64d(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

//! Helpers shared by the kms-core integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use kms_core::clock::ManualClock;
use kms_core::store::RootKeySource;
use kms_core::{CallContext, ErrorCode, Kms, KmsOptions, KmsResult, KmsService};
use serde_json::{json, Value};

/// 2026-11-23T00:00:00Z.
pub const T0: u64 = 1_795_392_000;

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

pub fn call(kms: &dyn Kms, action: &str, params: Value) -> KmsResult<Value> {
    kms.call(&ctx(), action, &params)
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

//! docs/FORMAT.md is true and complete: a Python decoder written from it alone
//! (tests/vectors/decode_store.py) reads a store this crate made and decrypts
//! its blobs, with key material and plaintexts this test chose.
//!
//! Needs python3 with pyca/cryptography (scripts/install-deps.sh installs it);
//! without them the test fails and says what to install.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::programs::assert_success;
use common::*;
use kms_core::{CallContext, EncryptionContext, Kms};
use serde_json::json;

fn python_ok() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography.hazmat.primitives.ciphers.aead"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn decode(dir: &std::path::Path, blob_b64: &str, ctx: &str) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/decode_store.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(blob_b64)
        .arg(ctx)
        .output()
        .unwrap();
    assert_success("the decoder", &o);
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn python_decoder_reads_the_store_and_blobs() {
    assert!(
        python_ok(),
        "python3 with pyca/cryptography is needed: run scripts/install-deps.sh"
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (d, kms, clock) = open_tmp();
    create(&kms, "first");
    let key = create(&kms, "py");
    let ctx = r#"{"zeta":"1","alpha":"2","é":"ü","kmsfs-volume":"4b1c"}"#;
    let marker = b"independent decoder marker \x00\xff";
    let blob1 = encrypt(&kms, &key, marker, Some(ctx)).unwrap();
    let out = decode(d.path(), &blob1, ctx);
    assert_eq!(
        out,
        vec![key.clone(), "1".into(), kms_core::crypto::hex(marker)]
    );

    clock.advance(1);
    call(&kms, "RotateKey", json!({"KeyId": key})).unwrap();
    let c = CallContext::local();
    let ec = EncryptionContext::single("kmsfs-volume", "4b1c");
    let dk = kms.generate_data_key(&c, &key, 32, &ec).unwrap();
    let out = decode(d.path(), &b64.encode(&dk.ciphertext_blob), &ec.to_json());
    assert_eq!(
        out,
        vec![
            key.clone(),
            "2".into(),
            kms_core::crypto::hex(&dk.plaintext)
        ]
    );
    // The old blob still decodes after the store was rewritten.
    assert_eq!(
        decode(d.path(), &blob1, ctx)[2],
        kms_core::crypto::hex(marker)
    );
}

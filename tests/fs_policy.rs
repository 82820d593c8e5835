//! DEK policies and the DEK cache, counted from outside the daemon: wrapped DEKs read
//! from the backing files' headers, KMS calls read from the KMS's audit log.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use fsmount::{audit_count, init_volume, kmsfs, Mounted};

/// The wrapped DEK in slot 0 of a backing file's header.
fn wrapped_dek(p: &Path) -> Vec<u8> {
    let b = fs::read(p).unwrap();
    let len = u16::from_be_bytes([b[36], b[37]]) as usize;
    b[38..38 + len].to_vec()
}

#[test]
fn shared_policy_rotates_by_count_and_the_cache_saves_kms_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, backing) = (dir.path().join("kms"), dir.path().join("b"));
    init_volume(&kms, &backing, &["--dek-max-files", "2"]);
    // init: CreateKey + one GenerateDataKey (the config key).
    assert_eq!(audit_count(&kms, "CreateKey"), 1);
    assert_eq!(audit_count(&kms, "GenerateDataKey"), 1);
    let mut m = Mounted::existing(&kms, &backing, &[]).unwrap();
    for i in 0..5 {
        fs::write(m.p(&format!("f{i}")), format!("file {i}")).unwrap();
    }
    let deks: Vec<_> = (0..5)
        .map(|i| wrapped_dek(&m.b(&format!("f{i}"))))
        .collect();
    assert_eq!(deks[0], deks[1]);
    assert_eq!(deks[2], deks[3]);
    assert_ne!(deks[1], deks[2]);
    assert_ne!(deks[3], deks[4]);
    assert_eq!(deks.iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(audit_count(&kms, "GenerateDataKey"), 1 + 3);
    // Remount: reading the 5 files unwraps each distinct DEK once (plus the config key).
    m.unmount();
    let before = audit_count(&kms, "Decrypt");
    m.mount(&[]).unwrap();
    for _ in 0..3 {
        for i in 0..5 {
            assert_eq!(
                fs::read_to_string(m.p(&format!("f{i}"))).unwrap(),
                format!("file {i}")
            );
        }
    }
    assert_eq!(audit_count(&kms, "Decrypt") - before, 1 + 3);
    let s = kmsfs()
        .arg("stats")
        .arg("--json")
        .arg(&m.mnt)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["kms_calls"], 3, "{v}");
    assert!(v["hits"].as_u64().unwrap() >= 2, "{v}");
}

#[test]
fn per_file_policy_generates_a_dek_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, backing) = (dir.path().join("kms"), dir.path().join("b"));
    init_volume(&kms, &backing, &["--dek-policy", "per-file"]);
    let conf = fs::read_to_string(backing.join("kmsfs.conf")).unwrap();
    assert!(conf.contains("\"mode\":\"per-file\""), "{conf}");
    let m = Mounted::existing(&kms, &backing, &[]).unwrap();
    for i in 0..4 {
        fs::write(m.p(&format!("f{i}")), b"x").unwrap();
    }
    let deks: HashSet<_> = (0..4)
        .map(|i| wrapped_dek(&m.b(&format!("f{i}"))))
        .collect();
    assert_eq!(deks.len(), 4);
    assert_eq!(audit_count(&kms, "GenerateDataKey"), 1 + 4);
    // The wrapped DEK is the KMS's CiphertextBlob exactly: it decrypts with the volume context.
    let uuid = conf
        .split("\"uuid\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let blob = wrapped_dek(&m.b("f0"));
    use base64::Engine as _;
    let r = m.kms_call(
        "Decrypt",
        serde_json::json!({
            "CiphertextBlob": base64::engine::general_purpose::STANDARD.encode(&blob),
            "EncryptionContext": format!("{{\"kmsfs-volume\":\"{uuid}\"}}"),
        }),
    );
    assert!(r["Plaintext"].as_str().is_some());
}

//! `kmsfs kms` as users run it: the real binary, tccli-shaped output, and a
//! second process (the CLI) changing a store that this process holds open.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kms_core::{CallContext, EncryptionContext, ErrorCode, Kms, KmsService};
use serde_json::Value;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "kmsfs-test-{name}-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn store(&self) -> PathBuf {
        self.0.join("kms")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    kms_core::crypto::random_bytes(&mut b).unwrap();
    kms_core::crypto::hex(&b)
}

fn kmsfs(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .arg("--kms")
        .arg(store)
        .arg("kms")
        .args(args)
        .env_remove("KMSFS_KMS")
        .env_remove("KMSFS_KMS_PASSPHRASE")
        .env_remove("KMSFS_KMS_ROOT_KEY")
        .output()
        .unwrap()
}

fn ok_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn cli_prints_tccli_style_json_and_errors() {
    let s = Scratch::new("cli");
    let o = kmsfs(
        &s.store(),
        &["CreateKey", "--Alias", "test", "--Description", "d"],
    );
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    let r = ok_json(&o);
    // The Response object itself (no wrapper), 4-space indent, RequestId last.
    assert!(text.starts_with("{\n    \"KeyId\": "), "{text}");
    assert!(r.get("Response").is_none());
    assert_eq!(r["Alias"], "test");
    assert_eq!(r["KeyState"], "Enabled");
    assert!(r["RequestId"].as_str().unwrap().len() == 36);
    let key = r["KeyId"].as_str().unwrap().to_owned();

    let g = ok_json(&kmsfs(
        &s.store(),
        &[
            "GenerateDataKey",
            "--KeyId",
            &key,
            "--KeySpec",
            "AES_256",
            "--EncryptionContext",
            r#"{"a":"b"}"#,
        ],
    ));
    let d = ok_json(&kmsfs(
        &s.store(),
        &[
            "Decrypt",
            "--CiphertextBlob",
            g["CiphertextBlob"].as_str().unwrap(),
            "--EncryptionContext",
            r#"{"a":"b"}"#,
        ],
    ));
    assert_eq!(d["Plaintext"], g["Plaintext"]);
    assert_eq!(d["KeyId"], Value::from(key.clone()));
    let e = ok_json(&kmsfs(
        &s.store(),
        &[
            "Encrypt",
            "--KeyId",
            "alias/test",
            "--Plaintext",
            "aGVsbG8=",
        ],
    ));
    let d = ok_json(&kmsfs(
        &s.store(),
        &[
            "Decrypt",
            "--CiphertextBlob",
            e["CiphertextBlob"].as_str().unwrap(),
        ],
    ));
    assert_eq!(d["Plaintext"], "aGVsbG8=");
    let r = ok_json(&kmsfs(
        &s.store(),
        &["GenerateRandom", "--NumberOfBytes", "32"],
    ));
    assert_eq!(r["Plaintext"].as_str().unwrap().len(), 44);
    let r = ok_json(&kmsfs(
        &s.store(),
        &["DescribeKeys", "--KeyIds", &format!(r#"["{key}"]"#)],
    ));
    assert_eq!(r["KeyMetadatas"][0]["KeyId"], Value::from(key.clone()));
    let r = ok_json(&kmsfs(&s.store(), &["DisableKey", "--KeyId", &key]));
    assert_eq!(
        r.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["RequestId"]
    );

    // Errors: the Tencent code and message on stderr, non-zero exit.
    let o = kmsfs(
        &s.store(),
        &["Encrypt", "--KeyId", &key, "--Plaintext", "aGVsbG8="],
    );
    assert_eq!(o.status.code(), Some(255));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("code:ResourceUnavailable.CmkDisabled"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let o = kmsfs(
        &s.store(),
        &[
            "ScheduleKeyDeletion",
            "--KeyId",
            &key,
            "--PendingWindowInDays",
            "6",
        ],
    );
    assert!(String::from_utf8(o.stderr)
        .unwrap()
        .contains("InvalidParameter.InvalidPendingWindowInDays"));
    let r = ok_json(&kmsfs(
        &s.store(),
        &[
            "ScheduleKeyDeletion",
            "--KeyId",
            &key,
            "--PendingWindowInDays",
            "7",
        ],
    ));
    assert!(r["DeletionDate"].as_u64().unwrap() > 0);

    // Usage errors and help.
    let o = kmsfs(&s.store(), &["ListKeys", "--Bogus", "1"]);
    assert!(!o.status.success());
    let o = kmsfs(&s.store(), &[]);
    let help = String::from_utf8(o.stdout).unwrap();
    for a in [
        "CreateKey",
        "GenerateDataKey",
        "ScheduleKeyDeletion",
        "RotateKey",
        "serve",
    ] {
        assert!(help.contains(a), "{help}");
    }
    let o = kmsfs(&s.store(), &["--help"]);
    assert!(String::from_utf8(o.stdout).unwrap().contains("Decrypt"));

    // The audit log of all these calls verifies; an edited one does not.
    let o = kmsfs(&s.store(), &["verify-audit"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8(o.stdout)
        .unwrap()
        .contains("hash chain intact"));
    let log = s.store().join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"DisableKey\"", "\"EnableKey\"", 1)).unwrap();
    let o = kmsfs(&s.store(), &["verify-audit"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_key_disabled_by_the_cli_is_refused_to_a_running_process() {
    let s = Scratch::new("two");
    let kms = KmsService::open(&s.store()).unwrap();
    let ctx = CallContext::local();
    let r = kms
        .call(&ctx, "CreateKey", &serde_json::json!({"Alias": "vol"}))
        .unwrap();
    let key = r["KeyId"].as_str().unwrap().to_owned();
    let ec = EncryptionContext::single("kmsfs-volume", "x");
    let dk = kms.generate_data_key(&ctx, &key, 32, &ec).unwrap();
    kms.decrypt_data_key(&ctx, &dk.ciphertext_blob, &ec)
        .unwrap();

    ok_json(&kmsfs(&s.store(), &["DisableKey", "--KeyId", &key]));
    let e = kms
        .decrypt_data_key(&ctx, &dk.ciphertext_blob, &ec)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceUnavailableCmkDisabled);
    let e = kms.generate_data_key(&ctx, &key, 32, &ec).unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceUnavailableCmkDisabled);

    ok_json(&kmsfs(&s.store(), &["EnableKey", "--KeyId", "alias/vol"]));
    let back = kms
        .decrypt_data_key(&ctx, &dk.ciphertext_blob, &ec)
        .unwrap();
    assert_eq!(&back.plaintext[..], &dk.plaintext[..]);

    // A rotation made by the CLI: the running process seals under version 2
    // at once, and old blobs still open.
    ok_json(&kmsfs(&s.store(), &["RotateKey", "--KeyId", &key]));
    let dk2 = kms.generate_data_key(&ctx, &key, 32, &ec).unwrap();
    assert_eq!(
        kms_core::blob::parse(&dk2.ciphertext_blob)
            .unwrap()
            .key_version,
        2
    );
    kms.decrypt_data_key(&ctx, &dk.ciphertext_blob, &ec)
        .unwrap();
}

/// The `fdatasync` calls a `kmsfs kms` run made on the store's audit log, seen by strace.
fn audit_syncs(store: &Path, args: &[&str]) -> (Value, usize) {
    let trace = store.with_extension("strace");
    let o = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_kmsfs"))
        .arg("kms")
        .args(args)
        .env("KMSFS_KMS", store)
        .env_remove("KMSFS_KMS_CREDENTIALS")
        .output()
        .expect("strace is installed by scripts/install-deps.sh");
    let text = std::fs::read_to_string(&trace).unwrap();
    let syncs = text
        .lines()
        .filter(|l| l.contains("sync(") && l.contains("/audit.log>"))
        .count();
    (ok_json(&o), syncs)
}

#[test]
fn audit_lines_of_store_changes_reach_the_disk_before_the_call_returns() {
    let s = Scratch::new("audit-sync");
    let store = s.store();
    let (created, syncs) = audit_syncs(&store, &["CreateKey", "--Alias", "durable"]);
    let key = created["KeyId"].as_str().unwrap().to_string();
    assert_eq!(syncs, 1, "CreateKey's audit line is flushed once");
    let (_, syncs) = audit_syncs(&store, &["DisableKey", "--KeyId", &key]);
    assert_eq!(syncs, 1, "DisableKey's audit line is flushed once");
    let (_, syncs) = audit_syncs(&store, &["EnableKey", "--KeyId", &key]);
    assert_eq!(syncs, 1);
    // Crypto calls, the daemon's hot path, are not flushed one by one.
    let (_, syncs) = audit_syncs(&store, &["Encrypt", "--KeyId", &key, "--Plaintext", "aGk="]);
    assert_eq!(syncs, 0, "Encrypt's audit line is not flushed");
    let (_, syncs) = audit_syncs(&store, &["DescribeKey", "--KeyId", &key]);
    assert_eq!(syncs, 0);
    let log = std::fs::read(store.join("audit.log")).unwrap();
    assert_eq!(kms_core::audit::verify_chain(&log), Ok(5));
}

//! The key store on disk: damage is reported (never repaired or reset), the root
//! key is never regenerated, secrets never reach a file, the audit chain holds.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::*;
use kms_core::clock::ManualClock;
use kms_core::store::RootKeySource;
use kms_core::{CallContext, EncryptionContext, ErrorCode, Kms, KmsOptions, KmsService};
use serde_json::json;
use zeroize::Zeroizing;

fn open_err(dir: &std::path::Path) -> kms_core::KmsError {
    KmsService::open_with(
        dir,
        KmsOptions {
            root_key: Some(RootKeySource::File(dir.join("root.key"))),
            clock: Arc::new(ManualClock::new(T0)),
        },
    )
    .unwrap_err()
}

#[test]
fn a_damaged_store_is_reported_and_left_alone() {
    let (d, kms, _) = open_tmp();
    let key = create(&kms, "k");
    let path = d.path().join("keys.kms");
    let good = std::fs::read(&path).unwrap();
    // Generation 1 is the empty store; CreateKey wrote generation 2.
    assert_eq!(good[48..56], 2u64.to_be_bytes());

    // Truncated.
    std::fs::write(&path, &good[..good.len() - 5]).unwrap();
    let e = open_err(d.path());
    assert_eq!(e.code, ErrorCode::InternalError);
    assert!(e.message.contains("keys.kms"), "{}", e.message);
    // The running instance reports it too, and writes refuse to touch it.
    let e = call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap_err();
    assert_eq!(e.code, ErrorCode::InternalError);
    assert!(call(&kms, "CreateKey", json!({"Alias": "k2"})).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), &good[..good.len() - 5]);

    // One flipped bit in the body: authentication fails.
    let mut bad = good.clone();
    bad[100] ^= 0x04;
    std::fs::write(&path, &bad).unwrap();
    let e = open_err(d.path());
    assert!(e.message.contains("fails authentication"), "{}", e.message);
    assert_eq!(std::fs::read(&path).unwrap(), bad);

    // Empty file, wrong magic.
    std::fs::write(&path, b"").unwrap();
    assert!(open_err(d.path()).message.contains("truncated"));
    std::fs::write(&path, vec![b'x'; 200]).unwrap();
    assert!(open_err(d.path()).message.contains("not a kmsfs key store"));

    // Restored from "backup": everything is back.
    std::fs::write(&path, &good).unwrap();
    assert_eq!(
        call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"]["KeyId"],
        json!(key)
    );
}

#[test]
fn the_root_key_is_never_regenerated() {
    let top = tempfile::tempdir().unwrap();
    let d = top.path().join("new-store");
    let d = &d;
    {
        let (kms, _) = open(d);
        create(&kms, "k");
    }
    let rk = d.join("root.key");
    let original = std::fs::read(&rk).unwrap();
    assert_eq!(
        std::fs::metadata(&rk).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(d).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(d.join("keys.kms"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    std::fs::remove_file(&rk).unwrap();
    let e = open_err(d);
    assert_eq!(e.code, ErrorCode::InternalError);
    assert!(e.message.contains("root.key"), "{}", e.message);
    assert!(
        !rk.exists(),
        "a new root key was made over an existing store"
    );

    // A different root key is recognised as wrong.
    let mut other = original.clone();
    other[20] ^= 1;
    std::fs::write(&rk, &other).unwrap();
    assert!(open_err(d).message.contains("does not belong"));
    std::fs::write(&rk, &original).unwrap();
    let (kms, _) = open(d);
    assert_eq!(key_count(&kms), json!(1));
}

#[test]
fn passphrase_store() {
    let d = tempfile::tempdir().unwrap();
    let with = |p: &str| {
        KmsService::open_with(
            d.path(),
            KmsOptions {
                root_key: Some(RootKeySource::Passphrase(Zeroizing::new(p.to_owned()))),
                clock: Arc::new(ManualClock::new(T0)),
            },
        )
    };
    let kms = with("correct horse").unwrap();
    let key = create(&kms, "p");
    let blob = encrypt(&kms, &key, b"pp", None).unwrap();
    drop(kms);
    assert!(!d.path().join("root.key").exists());
    assert!(with("wrong horse")
        .unwrap_err()
        .message
        .contains("does not belong"));
    let e = open_err(d.path());
    assert!(e.message.contains("KMSFS_KMS_PASSPHRASE"), "{}", e.message);
    let kms = with("correct horse").unwrap();
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"pp");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_or_data_key_reaches_any_file() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (d, kms, _) = open_tmp();
    let key = create(&kms, "m");
    let marker = b"MARKER-7f3a9c-plaintext-that-must-never-be-stored".to_vec();
    let blob = encrypt(&kms, &key, &marker, Some(r#"{"x":"y"}"#)).unwrap();
    assert_eq!(decrypt(&kms, &blob, Some(r#"{"x":"y"}"#)).unwrap(), marker);
    let c = CallContext::local();
    let ec = EncryptionContext::single("kmsfs-volume", "vol");
    let dk = kms.generate_data_key(&c, &key, 32, &ec).unwrap();
    kms.decrypt_data_key(&c, &dk.ciphertext_blob, &ec).unwrap();
    let r = call(
        &kms,
        "GenerateDataKey",
        json!({"KeyId": key, "KeySpec": "AES_256"}),
    )
    .unwrap();
    let dek2 = b64d(r["Plaintext"].as_str().unwrap());
    call(
        &kms,
        "Decrypt",
        json!({"CiphertextBlob": r["CiphertextBlob"]}),
    )
    .unwrap();
    call(&kms, "RotateKey", json!({"KeyId": key})).unwrap();
    call(
        &kms,
        "ReEncrypt",
        json!({"CiphertextBlob": blob, "SourceEncryptionContext": r#"{"x":"y"}"#}),
    )
    .unwrap();

    let needles: Vec<(String, Vec<u8>)> = vec![
        ("marker".into(), marker.clone()),
        ("marker b64".into(), b64.encode(&marker).into_bytes()),
        ("dek".into(), dk.plaintext.to_vec()),
        ("dek b64".into(), b64.encode(&dk.plaintext[..]).into_bytes()),
        (
            "dek hex".into(),
            kms_core::crypto::hex(&dk.plaintext).into_bytes(),
        ),
        ("dek2".into(), dek2.clone()),
        ("dek2 b64".into(), b64.encode(&dek2).into_bytes()),
    ];
    let mut files = 0;
    for entry in std::fs::read_dir(d.path()).unwrap() {
        let p = entry.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        files += 1;
        for (what, n) in &needles {
            assert!(!contains(&bytes, n), "{what} found in {}", p.display());
        }
    }
    assert!(files >= 4);
    let audit = std::fs::read(d.path().join("audit.log")).unwrap();
    assert!(contains(&audit, b"\"action\":\"GenerateDataKey\""));
}

#[test]
fn audit_log_is_one_chained_line_per_call_across_instances() {
    let (d, a, _) = open_tmp();
    let (b, _) = open(d.path());
    let key = create(&a, "au");
    let mut n = 1;
    for i in 0..20 {
        let k: &dyn Kms = if i % 3 == 0 { &a } else { &b };
        let _ = encrypt(k, &key, b"x", None);
        let _ = call(
            k,
            "DescribeKey",
            json!({"KeyId": "00000000-0000-4000-8000-00000000000f"}),
        );
        n += 2;
    }
    let c = CallContext::new("local:auditor");
    a.call(&c, "NoSuchAction", &json!({})).unwrap_err();
    n += 1;
    let log = std::fs::read(d.path().join("audit.log")).unwrap();
    assert_eq!(kms_core::audit::verify_chain(&log), Ok(n));
    let text = String::from_utf8(log.clone()).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["principal"], "local:auditor");
    assert_eq!(last["request_id"], json!(c.request_id));
    assert_eq!(last["outcome"], "InvalidAction");
    assert!(text.contains("ResourceUnavailable.CmkNotFound"));
    // Deleting or editing a line breaks the chain at the next line.
    let lines: Vec<&str> = text.lines().collect();
    let without: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert_eq!(kms_core::audit::verify_chain(without.as_bytes()), Err(6));
    let edited = text.replacen("\"Encrypt\"", "\"Decrypt\"", 1);
    assert!(kms_core::audit::verify_chain(edited.as_bytes()).is_err());
}

#[test]
fn a_lost_store_is_not_silently_recreated_but_an_interrupted_first_use_is() {
    let top = tempfile::tempdir().unwrap();
    let d = top.path().join("s");
    {
        let (kms, _) = open(&d);
        create(&kms, "k");
    }
    std::fs::remove_file(d.join("keys.kms")).unwrap();
    let e = open_err(&d);
    assert!(e.message.contains("missing"), "{}", e.message);
    assert!(!d.join("keys.kms").exists());

    // First use is keys.kms (empty, generation 1), then root.key: a crash between
    // the two leaves a store that never held a key, which the next open remakes.
    let v = top.path().join("v");
    drop(open(&v));
    std::fs::remove_file(v.join("root.key")).unwrap();
    let (kms, _) = open(&v);
    create(&kms, "fresh");
    assert!(v.join("root.key").exists());
    drop(kms);
    // Once it held a key, it is never remade.
    std::fs::remove_file(v.join("root.key")).unwrap();
    assert!(open_err(&v).message.contains("root.key"));
}

#[test]
fn every_flip_or_cut_of_the_store_file_is_refused() {
    let (d, kms, _) = open_tmp();
    create(&kms, "a");
    create(&kms, "b");
    drop(kms);
    let path = d.path().join("keys.kms");
    let good = std::fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let e = open_err(d.path());
        assert_eq!(e.code, ErrorCode::InternalError, "flip at {i}");
        assert!(
            e.message.contains("keys.kms") || e.message.contains("root key"),
            "flip at {i}: {}",
            e.message
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bad,
            "flip at {i} rewrote the store"
        );
    }
    for n in (0..good.len()).step_by(7) {
        std::fs::write(&path, &good[..n]).unwrap();
        assert_eq!(
            open_err(d.path()).code,
            ErrorCode::InternalError,
            "cut at {n}"
        );
    }
    std::fs::write(&path, &good).unwrap();
    let (kms, _) = open(d.path());
    assert_eq!(key_count(&kms), json!(2));
}

#[test]
fn a_stuck_lock_holder_blocks_no_reader_and_the_audit_log_only_briefly() {
    use std::time::{Duration, Instant};
    let (d, kms, _) = open_tmp();
    let key = create(&kms, "l");
    let blob = encrypt(&kms, &key, b"x", None).unwrap();

    // Another process "stopped" while holding the store lock: reads go on.
    let lock = std::fs::File::open(d.path().join("lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let t = Instant::now();
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"x");
    call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    drop(lock);

    // ... holding the audit log's lock: calls wait at most the audit timeout.
    let audit = std::fs::File::open(d.path().join("audit.log")).unwrap();
    rustix::fs::flock(&audit, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let t = Instant::now();
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"x");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(audit);
    let log = std::fs::read_to_string(d.path().join("audit.log")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"Decrypt\"")).count(), 2);
}

/// The states a power loss can leave between the steps of a write (temp file
/// written or half-written, rename not yet durable) all open to the old or the
/// new store, and a leftover temp file is ignored and then overwritten.
#[test]
fn leftover_temp_files_from_an_interrupted_write_are_ignored() {
    let (d, kms, _) = open_tmp();
    let key = create(&kms, "t");
    drop(kms);
    let good = std::fs::read(d.path().join("keys.kms")).unwrap();
    for leftover in [&good[..good.len() / 2], &good[..], b"garbage".as_slice()] {
        std::fs::write(d.path().join("keys.kms.tmp"), leftover).unwrap();
        std::fs::write(d.path().join(".root.key.tmp.12345"), b"half").unwrap();
        let (kms, _) = open(d.path());
        assert_eq!(
            call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"]["KeyId"],
            json!(key)
        );
        create(&kms, &format!("n{}", leftover.len()));
        assert!(!d.path().join("keys.kms.tmp").exists());
    }
    let (kms, _) = open(d.path());
    assert_eq!(key_count(&kms), json!(4));
}

#[test]
fn a_torn_last_audit_line_is_terminated_and_chained_over() {
    use std::io::Write as _;
    let (d, kms, _) = open_tmp();
    create(&kms, "a");
    let path = d.path().join("audit.log");
    let torn = br#"{"time":"2026-11-23T00:00:00.000Z","principal":"local:x","act"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(torn)
        .unwrap();
    let (other, _) = open(d.path()); // a fresh process-like writer
    call(&other, "ListKeys", json!({})).unwrap();
    let log = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines[lines.len() - 2], &torn[..]);
    let last: serde_json::Value = serde_json::from_slice(lines[lines.len() - 1]).unwrap();
    assert_eq!(
        last["prev"],
        json!(kms_core::crypto::hex(&kms_core::crypto::sha256(torn)))
    );
    // The verifier reports the torn line.
    assert_eq!(kms_core::audit::verify_chain(&log), Err(lines.len() - 1));
}

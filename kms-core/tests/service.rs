//! KmsService through the `Kms` seam: round trips and the key state machine.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kms_core::{blob, EncryptionContext, ErrorCode as E, Kms};
use serde_json::json;

#[test]
fn encrypt_decrypt_round_trip_with_context() {
    let (_d, kms, _) = open_tmp();
    let key = create(&kms, "test");
    let blob = encrypt(&kms, &key, b"hello world", Some(r#"{"a":"1","b":"2"}"#)).unwrap();
    assert_eq!(
        decrypt(&kms, &blob, Some(r#"{"b":"2","a":"1"}"#)).unwrap(),
        b"hello world"
    );
    // Wrong, missing or extra context fails.
    for bad in [
        Some(r#"{"a":"1"}"#),
        None,
        Some(r#"{"a":"1","b":"3"}"#),
        Some(r#"{"a":"1","b":"2","c":"3"}"#),
    ] {
        assert_eq!(
            code(decrypt(&kms, &blob, bad).map(|_| json!(0))),
            E::InvalidParameterValueInvalidCiphertext
        );
    }
    // By alias/NAME; a bare alias is not a key id.
    let b2 = encrypt(&kms, "alias/test", b"x", None).unwrap();
    assert_eq!(decrypt(&kms, &b2, None).unwrap(), b"x");
    assert_eq!(
        code(encrypt(&kms, "test", b"y", None).map(|_| json!(0))),
        E::InvalidParameterValueInvalidKeyId
    );
    let r = call(&kms, "Decrypt", json!({"CiphertextBlob": b2})).unwrap();
    assert_eq!(r["KeyId"], json!(key));
}

#[test]
fn generate_data_key_typed_and_json() {
    let (_d, kms, _) = open_tmp();
    let key = create(&kms, "dek");
    let c = kms_core::CallContext::local();
    let vctx = EncryptionContext::single("kmsfs-volume", "v1");
    let dk = kms.generate_data_key(&c, &key, 32, &vctx).unwrap();
    assert_eq!(dk.plaintext.len(), 32);
    assert_eq!(dk.key_id, key);
    let back = kms
        .decrypt_data_key(&c, &dk.ciphertext_blob, &vctx)
        .unwrap();
    assert_eq!(&back.plaintext[..], &dk.plaintext[..]);
    let other = EncryptionContext::single("kmsfs-volume", "v2");
    assert_eq!(
        kms.decrypt_data_key(&c, &dk.ciphertext_blob, &other)
            .unwrap_err()
            .code,
        E::InvalidParameterValueInvalidCiphertext
    );
    // The default (JSON) implementations agree with the typed ones.
    let dk2 =
        kms_core::envelope::generate_data_key_via_call(&kms, &c, "alias/dek", 16, &vctx).unwrap();
    assert_eq!(dk2.plaintext.len(), 16);
    let back2 =
        kms_core::envelope::decrypt_data_key_via_call(&kms, &c, &dk2.ciphertext_blob, &vctx)
            .unwrap();
    assert_eq!(&back2.plaintext[..], &dk2.plaintext[..]);
    // KeySpec and NumberOfBytes.
    let r = call(
        &kms,
        "GenerateDataKey",
        json!({"KeyId": key, "KeySpec": "AES_128"}),
    )
    .unwrap();
    assert_eq!(b64d(r["Plaintext"].as_str().unwrap()).len(), 16);
    let r = call(
        &kms,
        "GenerateDataKey",
        json!({"KeyId": key, "KeySpec": "AES_128", "NumberOfBytes": 64}),
    )
    .unwrap();
    assert_eq!(b64d(r["Plaintext"].as_str().unwrap()).len(), 64);
    assert_eq!(
        code(call(
            &kms,
            "GenerateDataKey",
            json!({"KeyId": key, "NumberOfBytes": 1025})
        )),
        E::InvalidParameterValue
    );
    assert_eq!(
        code(call(
            &kms,
            "GenerateDataKey",
            json!({"KeyId": key, "NumberOfBytes": 0})
        )),
        E::InvalidParameterValue
    );
    assert_eq!(
        code(call(&kms, "GenerateDataKey", json!({"KeyId": key}))),
        E::MissingParameter
    );
}

#[test]
fn disable_refuses_everything_and_enable_restores() {
    let (_d, kms, _) = open_tmp();
    let key = create(&kms, "k");
    let blob = encrypt(&kms, &key, b"secret", None).unwrap();
    call(&kms, "DisableKey", json!({"KeyId": key})).unwrap();
    let st = call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap();
    assert_eq!(st["KeyMetadata"]["KeyState"], "Disabled");
    assert_eq!(
        code(encrypt(&kms, &key, b"x", None).map(|_| json!(0))),
        E::ResourceUnavailableCmkDisabled
    );
    assert_eq!(
        code(decrypt(&kms, &blob, None).map(|_| json!(0))),
        E::ResourceUnavailableCmkDisabled
    );
    assert_eq!(
        code(call(
            &kms,
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256"})
        )),
        E::ResourceUnavailableCmkDisabled
    );
    assert_eq!(
        code(call(&kms, "ReEncrypt", json!({"CiphertextBlob": blob}))),
        E::ResourceUnavailableCmkDisabled
    );
    let c = kms_core::CallContext::local();
    assert_eq!(
        kms.decrypt_data_key(&c, &b64d(&blob), &EncryptionContext::new())
            .unwrap_err()
            .code,
        E::ResourceUnavailableCmkDisabled
    );
    call(&kms, "EnableKey", json!({"KeyId": key})).unwrap();
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"secret");
    encrypt(&kms, &key, b"x", None).unwrap();
}

#[test]
fn scheduled_deletion_state_machine_and_purge() {
    let (d, kms, clock) = open_tmp();
    let key = create(&kms, "gone");
    let blob = encrypt(&kms, &key, b"data", None).unwrap();
    let sched = |days: u64| {
        call(
            &kms,
            "ScheduleKeyDeletion",
            json!({"KeyId": key, "PendingWindowInDays": days}),
        )
    };
    assert_eq!(code(sched(7)), E::ResourceUnavailableCmkShouldBeDisabled);
    call(&kms, "DisableKey", json!({"KeyId": key})).unwrap();
    assert_eq!(
        code(sched(6)),
        E::InvalidParameterInvalidPendingWindowInDays
    );
    assert_eq!(
        code(sched(31)),
        E::InvalidParameterInvalidPendingWindowInDays
    );
    assert_eq!(
        code(call(&kms, "CancelKeyDeletion", json!({"KeyId": key}))),
        E::ResourceUnavailableCmkNotPendingDelete
    );
    let r = sched(7).unwrap();
    assert_eq!(r["DeletionDate"], json!(T0 + 7 * 86_400));
    assert_eq!(r["KeyId"], json!(key));
    let md = call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap();
    assert_eq!(md["KeyMetadata"]["KeyState"], "PendingDelete");
    assert_eq!(md["KeyMetadata"]["DeletionDate"], json!(T0 + 7 * 86_400));
    assert_eq!(
        code(decrypt(&kms, &blob, None).map(|_| json!(0))),
        E::ResourceUnavailableKeyPendingDelete
    );
    assert_eq!(
        code(encrypt(&kms, &key, b"x", None).map(|_| json!(0))),
        E::ResourceUnavailableKeyPendingDelete
    );
    assert_eq!(
        code(call(&kms, "EnableKey", json!({"KeyId": key}))),
        E::ResourceUnavailableKeyPendingDelete
    );
    assert_eq!(
        code(call(&kms, "DisableKey", json!({"KeyId": key}))),
        E::ResourceUnavailableKeyPendingDelete
    );
    assert_eq!(code(sched(10)), E::ResourceUnavailableKeyPendingDelete);
    // Cancel restores to Disabled.
    let r = call(&kms, "CancelKeyDeletion", json!({"KeyId": key})).unwrap();
    assert_eq!(r["KeyId"], json!(key));
    let md = call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap();
    assert_eq!(md["KeyMetadata"]["KeyState"], "Disabled");
    assert_eq!(md["KeyMetadata"]["DeletionDate"], json!(0));
    call(&kms, "EnableKey", json!({"KeyId": key})).unwrap();
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"data");
    // Schedule again and let the window pass: the key is purged from the store.
    call(&kms, "DisableKey", json!({"KeyId": key})).unwrap();
    sched(7).unwrap();
    clock.advance(7 * 86_400 - 1);
    assert_eq!(
        call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"]["KeyState"],
        "PendingDelete"
    );
    clock.advance(1);
    assert_eq!(
        code(call(&kms, "DescribeKey", json!({"KeyId": key}))),
        E::ResourceUnavailableCmkNotFound
    );
    assert_eq!(
        code(decrypt(&kms, &blob, None).map(|_| json!(0))),
        E::InvalidParameterValueInvalidCiphertext
    );
    let ls = call(&kms, "ListKeys", json!({})).unwrap();
    assert_eq!(ls["TotalCount"], json!(0));
    let raw = std::fs::read(d.path().join("keys.kms")).unwrap();
    assert!(
        !raw.windows(key.len()).any(|w| w == key.as_bytes()),
        "purged key still in the store file"
    );
    // The alias is free again.
    create(&kms, "gone");
}

#[test]
fn rotation_keeps_old_versions_and_reencrypt_moves_to_newest() {
    let (_d, kms, clock) = open_tmp();
    let key = create(&kms, "rot");
    let old = encrypt(&kms, &key, b"v1 data", Some(r#"{"f":"1"}"#)).unwrap();
    assert_eq!(blob::parse(&b64d(&old)).unwrap().key_version, 1);
    call(&kms, "RotateKey", json!({"KeyId": key})).unwrap();
    let new = encrypt(&kms, &key, b"v2 data", None).unwrap();
    assert_eq!(blob::parse(&b64d(&new)).unwrap().key_version, 2);
    assert_eq!(
        decrypt(&kms, &old, Some(r#"{"f":"1"}"#)).unwrap(),
        b"v1 data"
    );
    assert_eq!(decrypt(&kms, &new, None).unwrap(), b"v2 data");
    // At most once a day.
    assert_eq!(
        code(call(&kms, "RotateKey", json!({"KeyId": key}))),
        E::LimitExceeded
    );
    // ReEncrypt moves the old blob to version 2, with a new context.
    let r = call(
        &kms,
        "ReEncrypt",
        json!({"CiphertextBlob": old, "SourceEncryptionContext": r#"{"f":"1"}"#, "DestinationEncryptionContext": r#"{"g":"2"}"#}),
    )
    .unwrap();
    assert_eq!(r["ReEncrypted"], json!(true));
    assert_eq!(r["SourceKeyId"], json!(key));
    let moved = r["CiphertextBlob"].as_str().unwrap();
    assert_eq!(blob::parse(&b64d(moved)).unwrap().key_version, 2);
    assert_eq!(
        decrypt(&kms, moved, Some(r#"{"g":"2"}"#)).unwrap(),
        b"v1 data"
    );
    // ReEncrypt to another key.
    let other = create(&kms, "other");
    let r = call(
        &kms,
        "ReEncrypt",
        json!({"CiphertextBlob": new, "DestinationKeyId": "alias/other"}),
    )
    .unwrap();
    assert_eq!(r["KeyId"], json!(other));
    assert_eq!(
        decrypt(&kms, r["CiphertextBlob"].as_str().unwrap(), None).unwrap(),
        b"v2 data"
    );
    // Automatic rotation.
    let st = call(&kms, "GetKeyRotationStatus", json!({"KeyId": key})).unwrap();
    assert_eq!(st["KeyRotationEnabled"], json!(false));
    assert_eq!(
        code(call(
            &kms,
            "EnableKeyRotation",
            json!({"KeyId": key, "RotateDays": 6})
        )),
        E::InvalidParameterValue
    );
    call(
        &kms,
        "EnableKeyRotation",
        json!({"KeyId": key, "RotateDays": 7}),
    )
    .unwrap();
    let st = call(&kms, "GetKeyRotationStatus", json!({"KeyId": key})).unwrap();
    assert_eq!(st["KeyRotationEnabled"], json!(true));
    assert_eq!(st["NextRotateTime"], json!(T0 + 7 * 86_400));
    clock.advance(7 * 86_400);
    let b3 = encrypt(&kms, &key, b"v3", None).unwrap();
    assert_eq!(blob::parse(&b64d(&b3)).unwrap().key_version, 3);
    assert_eq!(
        decrypt(&kms, &old, Some(r#"{"f":"1"}"#)).unwrap(),
        b"v1 data"
    );
    call(&kms, "DisableKeyRotation", json!({"KeyId": key})).unwrap();
    assert_eq!(
        call(&kms, "GetKeyRotationStatus", json!({"KeyId": key})).unwrap()["KeyRotationEnabled"],
        json!(false)
    );
    // A disabled key does not rotate.
    call(&kms, "DisableKey", json!({"KeyId": key})).unwrap();
    assert_eq!(
        code(call(&kms, "RotateKey", json!({"KeyId": key}))),
        E::ResourceUnavailableCmkDisabled
    );
}

#[test]
fn tampered_and_truncated_blobs_are_invalid_ciphertext() {
    let (_d, kms, _) = open_tmp();
    let key = create(&kms, "t");
    let blob = b64d(&encrypt(&kms, &key, b"0123456789abcdef", None).unwrap());
    let c = kms_core::CallContext::local();
    let ec = EncryptionContext::new();
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        assert_eq!(
            kms.decrypt_data_key(&c, &b, &ec).unwrap_err().code,
            E::InvalidParameterValueInvalidCiphertext,
            "flip at {i}"
        );
        assert_eq!(
            kms.decrypt_data_key(&c, &blob[..i], &ec).unwrap_err().code,
            E::InvalidParameterValueInvalidCiphertext,
            "cut at {i}"
        );
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert_eq!(
        kms.decrypt_data_key(&c, &longer, &ec).unwrap_err().code,
        E::InvalidParameterValueInvalidCiphertext
    );
    assert_eq!(
        code(call(
            &kms,
            "Decrypt",
            json!({"CiphertextBlob": "%%%not base64"})
        )),
        E::InvalidParameterValueInvalidCiphertext
    );
}

#[test]
fn describe_list_alias_and_description() {
    let (_d, kms, _) = open_tmp();
    let a = create(&kms, "a1");
    let b = create(&kms, "b1");
    assert_eq!(
        code(call(&kms, "CreateKey", json!({"Alias": "a1"}))),
        E::InvalidParameterValueAliasAlreadyExists
    );
    assert_eq!(
        code(call(&kms, "CreateKey", json!({}))),
        E::MissingParameter
    );
    for bad in ["kms-x", "-x", "a b", &"x".repeat(61), "alias/x"] {
        assert_eq!(
            code(call(&kms, "CreateKey", json!({"Alias": bad}))),
            E::InvalidParameterValueInvalidAlias,
            "{bad}"
        );
    }
    assert_eq!(
        code(call(
            &kms,
            "CreateKey",
            json!({"Alias": "z", "KeyUsage": "NOPE"})
        )),
        E::InvalidParameterValueInvalidKeyUsage
    );
    assert_eq!(
        code(call(&kms, "CreateKey", json!({"Alias": "z", "Type": 3}))),
        E::InvalidParameterValueInvalidType
    );
    assert_eq!(
        code(call(
            &kms,
            "CreateKey",
            json!({"Alias": "z", "KeyUsage": "ASYMMETRIC_SIGN_VERIFY_ECDSA384"})
        )),
        E::UnsupportedOperationUnsupportedKeyUsageInCurrentRegion
    );
    let r = call(
        &kms,
        "CreateKey",
        json!({"Alias": "c1", "Description": "third"}),
    )
    .unwrap();
    assert_eq!(r["KeyState"], "Enabled");
    assert_eq!(r["KeyUsage"], "ENCRYPT_DECRYPT");
    assert_eq!(r["Description"], "third");
    assert_eq!(r["CreateTime"], json!(T0));
    let c = r["KeyId"].as_str().unwrap().to_owned();
    let ls = call(&kms, "ListKeys", json!({"Offset": 1, "Limit": 1})).unwrap();
    assert_eq!(ls["TotalCount"], json!(3));
    assert_eq!(ls["Keys"], json!([{"KeyId": b}]));
    assert_eq!(
        code(call(&kms, "ListKeys", json!({"Limit": 201}))),
        E::InvalidParameterValue
    );
    let ds = call(&kms, "DescribeKeys", json!({"KeyIds": [a, c, "nope"]})).unwrap();
    assert_eq!(ds["KeyMetadatas"].as_array().unwrap().len(), 2);
    assert_eq!(
        code(call(&kms, "DescribeKeys", json!({"KeyIds": [a, a]}))),
        E::InvalidParameterValueDuplicatedKeyId
    );
    call(&kms, "UpdateAlias", json!({"KeyId": a, "Alias": "renamed"})).unwrap();
    assert_eq!(
        code(call(
            &kms,
            "UpdateAlias",
            json!({"KeyId": a, "Alias": "b1"})
        )),
        E::InvalidParameterValueAliasAlreadyExists
    );
    call(
        &kms,
        "UpdateKeyDescription",
        json!({"KeyId": "alias/renamed", "Description": "desc"}),
    )
    .unwrap();
    let md = call(&kms, "DescribeKey", json!({"KeyId": "alias/renamed"})).unwrap();
    assert_eq!(md["KeyMetadata"]["KeyId"], json!(a));
    assert_eq!(md["KeyMetadata"]["Description"], "desc");
    assert_eq!(md["KeyMetadata"]["Origin"], "TENCENT_KMS");
    assert_eq!(md["KeyMetadata"]["Type"], json!(1));
    assert_eq!(
        code(call(&kms, "DescribeKey", json!({"KeyId": "a1"}))),
        E::InvalidParameterValueInvalidKeyId
    );
    assert_eq!(
        code(call(
            &kms,
            "DescribeKey",
            json!({"KeyId": "00000000-0000-4000-8000-00000000000a"})
        )),
        E::ResourceUnavailableCmkNotFound
    );
    assert_eq!(
        code(call(&kms, "DescribeKey", json!({}))),
        E::MissingParameter
    );
    // ListKeyDetail: newest first, filters.
    call(&kms, "DisableKey", json!({"KeyId": b})).unwrap();
    let ld = call(&kms, "ListKeyDetail", json!({"KeyState": 2})).unwrap();
    assert_eq!(ld["TotalCount"], json!(1));
    assert_eq!(ld["KeyMetadatas"][0]["KeyId"], json!(b));
    let ld = call(&kms, "ListKeyDetail", json!({})).unwrap();
    assert_eq!(ld["KeyMetadatas"][0]["KeyId"], json!(c));
    let ld = call(&kms, "ListKeyDetail", json!({"SearchKeyAlias": "ren"})).unwrap();
    assert_eq!(ld["KeyMetadatas"][0]["KeyId"], json!(a));
    assert_eq!(
        code(call(&kms, "NoSuchAction", json!({}))),
        E::InvalidAction
    );
    let la = call(&kms, "ListAlgorithms", json!({})).unwrap();
    assert_eq!(
        la["SymmetricAlgorithms"],
        json!([{"KeyUsage": "ENCRYPT_DECRYPT", "Algorithm": "AES_256"}])
    );
    assert_eq!(
        code(call(&kms, "DescribeKey", json!({"KeyId": 5}))),
        E::InvalidParameter
    );
}

#[test]
fn archive_only_decrypts() {
    let (_d, kms, _) = open_tmp();
    let key = create(&kms, "arch");
    let blob = encrypt(&kms, &key, b"a", None).unwrap();
    call(&kms, "ArchiveKey", json!({"KeyId": key})).unwrap();
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"a");
    assert_eq!(
        code(encrypt(&kms, &key, b"x", None).map(|_| json!(0))),
        E::ResourceUnavailableCmkArchived
    );
    assert_eq!(
        code(call(
            &kms,
            "ScheduleKeyDeletion",
            json!({"KeyId": key, "PendingWindowInDays": 7})
        )),
        E::ResourceUnavailableCmkShouldBeDisabled
    );
    call(&kms, "CancelKeyArchive", json!({"KeyId": key})).unwrap();
    encrypt(&kms, &key, b"x", None).unwrap();
}

#[test]
fn encrypt_limits_and_generate_random() {
    let (_d, kms, _) = open_tmp();
    let key = create(&kms, "lim");
    encrypt(&kms, &key, &[7u8; 4096], None).unwrap();
    assert_eq!(
        code(encrypt(&kms, &key, &[7u8; 4097], None).map(|_| json!(0))),
        E::InvalidParameterValueInvalidPlaintext
    );
    assert_eq!(
        code(call(
            &kms,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": "***"})
        )),
        E::InvalidParameterValueInvalidPlaintext
    );
    assert_eq!(
        code(encrypt(&kms, &key, b"x", Some("[1]")).map(|_| json!(0))),
        E::InvalidParameterValue
    );
    let long_ctx = format!(r#"{{"k":"{}"}}"#, "v".repeat(1100));
    assert_eq!(
        code(encrypt(&kms, &key, b"x", Some(&long_ctx)).map(|_| json!(0))),
        E::InvalidParameterValue
    );
    let r = call(&kms, "GenerateRandom", json!({"NumberOfBytes": 32})).unwrap();
    assert_eq!(b64d(r["Plaintext"].as_str().unwrap()).len(), 32);
    assert_eq!(
        code(call(&kms, "GenerateRandom", json!({"NumberOfBytes": 1025}))),
        E::InvalidParameterValue
    );
    assert_eq!(
        code(call(
            &kms,
            "Encrypt",
            json!({"KeyId": "nope", "Plaintext": "eA=="})
        )),
        E::InvalidParameterValueInvalidKeyId
    );
}

#[test]
fn a_second_instance_sees_changes_on_its_next_call() {
    let (d, a, _) = open_tmp();
    let (b, _) = open(d.path());
    let key = create(&a, "shared");
    let blob = encrypt(&b, &key, b"both", None).unwrap();
    call(&a, "DisableKey", json!({"KeyId": key})).unwrap();
    assert_eq!(
        code(decrypt(&b, &blob, None).map(|_| json!(0))),
        E::ResourceUnavailableCmkDisabled
    );
    call(&b, "EnableKey", json!({"KeyId": key})).unwrap();
    assert_eq!(decrypt(&a, &blob, None).unwrap(), b"both");
}

#[test]
fn threads_decrypting_while_the_key_flips_see_only_success_or_cmk_disabled() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (d, kms, _) = open_tmp();
    let key = create(&kms, "mt");
    let c = kms_core::CallContext::local();
    let ec = EncryptionContext::single("kmsfs-volume", "mt");
    let dk = kms.generate_data_key(&c, &key, 32, &ec).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let (mut ok, mut refused) = (0, 0);
                    // The key ends enabled: run until stopped and at least one success.
                    while !stop.load(Ordering::Relaxed) || ok == 0 {
                        match kms.decrypt_data_key(&c, &dk.ciphertext_blob, &ec) {
                            Ok(k) => {
                                assert_eq!(&k.plaintext[..], &dk.plaintext[..]);
                                ok += 1;
                            }
                            Err(e) => {
                                assert_eq!(e.code, E::ResourceUnavailableCmkDisabled);
                                refused += 1;
                            }
                        }
                    }
                    (ok, refused)
                })
            })
            .collect();
        for _ in 0..10 {
            call(&kms, "DisableKey", json!({"KeyId": key})).unwrap();
            // Once DisableKey has returned, no thread may decrypt.
            assert_eq!(
                kms.decrypt_data_key(&c, &dk.ciphertext_blob, &ec)
                    .unwrap_err()
                    .code,
                E::ResourceUnavailableCmkDisabled
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
            call(&kms, "EnableKey", json!({"KeyId": key})).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let (ok, _refused) = w.join().unwrap();
            assert!(ok > 0);
        }
    });
    let log = std::fs::read(d.path().join("audit.log")).unwrap();
    assert!(kms_core::audit::verify_chain(&log).is_ok());
}

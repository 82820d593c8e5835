//! Post-quantum keys, hosted data keys, tags and the ListKeyDetail filters, through
//! the `Kms` seam on a real store directory; and the store format each writes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use kms_core::{ErrorCode as E, Kms};
use serde_json::{json, Value};

/// The format version in the header of `keys.kms`.
fn store_format(dir: &Path) -> u16 {
    let b = std::fs::read(dir.join("keys.kms")).unwrap();
    u16::from_be_bytes([b[8], b[9]])
}

fn create_usage(kms: &dyn Kms, alias: &str, usage: &str) -> String {
    let v = call(kms, "CreateKey", json!({"Alias": alias, "KeyUsage": usage})).unwrap();
    s(&v, "KeyId")
}

#[test]
fn post_quantum_encrypt_decrypt_sign_verify_and_their_refusals() {
    let (d, kms, _) = open_tmp();
    create(&kms, "plain");
    assert_eq!(store_format(d.path()), 2, "no version-3 content yet");
    let kem = create_usage(&kms, "pq-enc", "ASYMMETRIC_Encrypt_Decrypt_Kyber_AES");
    assert_eq!(store_format(d.path()), 3, "ML-KEM material is version 3");
    let dsa = create_usage(&kms, "pq-sign", "ASYMMETRIC_SIGN_VERIFY_DILITHIUM");

    // ListAlgorithms names both; GetPublicKey gives SubjectPublicKeyInfo.
    let algs = call(&kms, "ListAlgorithms", json!({})).unwrap().to_string();
    assert!(
        algs.contains("Kyber_AES") && algs.contains("Dilithium"),
        "{algs}"
    );
    for (k, min) in [(&kem, 1184), (&dsa, 1952)] {
        let pk = call(&kms, "GetPublicKey", json!({"KeyId": k})).unwrap();
        assert!(b64d(&s(&pk, "PublicKey")).len() > min);
        assert!(s(&pk, "PublicKeyPem").starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    // Encrypt, then decrypt with no KeyId: the blob names its key.
    let enc = call(
        &kms,
        "PostQuantumCryptoEncrypt",
        json!({"KeyId": "alias/pq-enc", "PlainText": "cG9zdC1xdWFudHVt"}),
    )
    .unwrap();
    assert_eq!(s(&enc, "KeyId"), kem);
    let blob = s(&enc, "CiphertextBlob");
    let dec = call(
        &kms,
        "PostQuantumCryptoDecrypt",
        json!({"CiphertextBlob": blob}),
    )
    .unwrap();
    assert_eq!(
        (s(&dec, "KeyId"), s(&dec, "PlainText")),
        (kem.clone(), "cG9zdC1xdWFudHVt".into())
    );
    // A tampered blob, a symmetric blob and a wrong usage are refused.
    let mut raw = b64d(&blob);
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let tampered = kms_b64(&raw);
    assert_eq!(
        code(call(
            &kms,
            "PostQuantumCryptoDecrypt",
            json!({"CiphertextBlob": tampered})
        )),
        E::InvalidParameterValueInvalidCiphertext
    );
    let sym = encrypt(&kms, "alias/plain", b"x", None).unwrap();
    assert_eq!(
        code(call(
            &kms,
            "PostQuantumCryptoDecrypt",
            json!({"CiphertextBlob": sym})
        )),
        E::InvalidParameterValueInvalidCiphertext
    );
    assert_eq!(
        code(call(&kms, "Decrypt", json!({"CiphertextBlob": blob}))),
        E::InvalidParameterValueInvalidCiphertext
    );
    assert_eq!(
        code(call(
            &kms,
            "PostQuantumCryptoEncrypt",
            json!({"KeyId": dsa, "PlainText": "eA=="})
        )),
        E::InvalidParameterValueInvalidKeyUsage
    );
    let big = kms_b64(&[7u8; 4097]);
    assert_eq!(
        code(call(
            &kms,
            "PostQuantumCryptoEncrypt",
            json!({"KeyId": kem, "PlainText": big})
        )),
        E::InvalidParameterValue
    );
    // Disabled: neither way.
    call(&kms, "DisableKey", json!({"KeyId": kem})).unwrap();
    assert_eq!(
        code(call(
            &kms,
            "PostQuantumCryptoDecrypt",
            json!({"CiphertextBlob": blob})
        )),
        E::ResourceUnavailableCmkDisabled
    );
    call(&kms, "EnableKey", json!({"KeyId": kem})).unwrap();

    // Sign and verify; a changed message or signature is not valid.
    let msg = kms_b64(b"a message signed after quantum computers");
    let sig = s(
        &call(
            &kms,
            "PostQuantumCryptoSign",
            json!({"KeyId": dsa, "Message": msg}),
        )
        .unwrap(),
        "Signature",
    );
    assert_eq!(b64d(&sig).len(), 3309, "ML-DSA-65");
    let verify = |m: &str, sg: &str| {
        call(
            &kms,
            "PostQuantumCryptoVerify",
            json!({"KeyId": dsa, "Message": m, "SignatureValue": sg}),
        )
        .unwrap()["SignatureValid"]
            .clone()
    };
    assert_eq!(verify(&msg, &sig), json!(true));
    assert_eq!(verify(&kms_b64(b"another message"), &sig), json!(false));
    let mut bad = b64d(&sig);
    bad[10] ^= 1;
    assert_eq!(verify(&msg, &kms_b64(&bad)), json!(false));
    assert_eq!(
        code(call(
            &kms,
            "PostQuantumCryptoSign",
            json!({"KeyId": kem, "Message": msg})
        )),
        E::InvalidParameterValueInvalidKeyUsage
    );

    // A second service on the same directory reads the version-3 store.
    drop(kms);
    let (again, _) = open(d.path());
    let dec = call(
        &again,
        "PostQuantumCryptoDecrypt",
        json!({"CiphertextBlob": blob}),
    )
    .unwrap();
    assert_eq!(s(&dec, "PlainText"), "cG9zdC1xdWFudHVt");
}

#[test]
fn hosted_data_keys_live_through_their_state_machine_and_purge() {
    let (d, kms, clock) = open_tmp();
    let cmk = create(&kms, "dk-cmk");
    // Not hosted: no DataKeyId, and the store stays version 2.
    let plain = call(
        &kms,
        "GenerateDataKey",
        json!({"KeyId": cmk, "KeySpec": "AES_256"}),
    )
    .unwrap();
    assert!(plain.get("DataKeyId").is_none(), "{plain}");
    assert_eq!(store_format(d.path()), 2);
    // Hosted needs a name.
    assert_eq!(
        code(call(
            &kms,
            "GenerateDataKey",
            json!({"KeyId": cmk, "KeySpec": "AES_256", "IsHostedByKms": 1})
        )),
        E::MissingParameter
    );
    let g = call(
        &kms,
        "GenerateDataKey",
        json!({"KeyId": cmk, "KeySpec": "AES_256", "IsHostedByKms": 1,
               "DataKeyName": "orders-dek", "Description": "orders table",
               "Tags": [{"TagKey": "team", "TagValue": "db"}]}),
    )
    .unwrap();
    assert_eq!(store_format(d.path()), 3);
    let id = s(&g, "DataKeyId");
    assert_eq!(g["TagCode"], json!(0));
    let pt = s(&g, "Plaintext");
    // The store file never holds the data key in clear (nor its base64).
    let store = std::fs::read(d.path().join("keys.kms")).unwrap();
    let dk = b64d(&pt);
    assert!(!store.windows(dk.len()).any(|w| w == dk.as_slice()));
    assert!(!store.windows(pt.len()).any(|w| w == pt.as_bytes()));
    // Same name again: refused.
    assert_eq!(
        code(call(
            &kms,
            "GenerateDataKey",
            json!({"KeyId": cmk, "NumberOfBytes": 16, "IsHostedByKms": 1, "DataKeyName": "orders-dek"})
        )),
        E::InvalidParameterValueDataKeyNameAlreadyExists
    );

    let md = call(&kms, "DescribeDataKey", json!({"DataKeyId": id})).unwrap();
    let m = &md["DataKeyMetadata"];
    assert_eq!(
        (
            m["KeyId"].clone(),
            m["KeyName"].clone(),
            m["DataKeyName"].clone()
        ),
        (json!(cmk), json!("dk-cmk"), json!("orders-dek"))
    );
    assert_eq!(
        (m["NumberOfBytes"].clone(), m["KeyState"].clone()),
        (json!(32), json!("Enabled"))
    );
    assert_eq!(m["Origin"], "TENCENT_KMS");
    let got = call(&kms, "GetDataKeyPlaintext", json!({"DataKeyId": id})).unwrap();
    assert_eq!(s(&got, "Plaintext"), pt);
    let blob = s(
        &call(&kms, "GetDataKeyCiphertextBlob", json!({"DataKeyId": id})).unwrap(),
        "CiphertextBlob",
    );
    assert_eq!(
        s(
            &call(&kms, "Decrypt", json!({"CiphertextBlob": blob})).unwrap(),
            "Plaintext"
        ),
        pt
    );

    // Import: the ciphertext of a GenerateDataKey, and a plaintext data key.
    let imp = call(
        &kms,
        "ImportDataKey",
        json!({"DataKeyName": "imported-ct", "ImportType": 1,
               "ImportKeyMaterial": s(&plain, "CiphertextBlob")}),
    )
    .unwrap();
    let ct_id = s(&imp, "DataKeyId");
    assert_eq!(s(&imp, "KeyId"), cmk);
    let got = call(&kms, "GetDataKeyPlaintext", json!({"DataKeyId": ct_id})).unwrap();
    assert_eq!(s(&got, "Plaintext"), s(&plain, "Plaintext"));
    let imp2 = call(
        &kms,
        "ImportDataKey",
        json!({"DataKeyName": "imported-pt", "ImportType": 2, "KeyId": cmk,
               "ImportKeyMaterial": "AAECAwQFBgcICQoLDA0ODw=="}),
    )
    .unwrap();
    let pt_id = s(&imp2, "DataKeyId");
    let got = call(&kms, "GetDataKeyPlaintext", json!({"DataKeyId": pt_id})).unwrap();
    assert_eq!(s(&got, "Plaintext"), "AAECAwQFBgcICQoLDA0ODw==");
    assert_eq!(
        code(call(
            &kms,
            "ImportDataKey",
            json!({"DataKeyName": "x", "ImportType": 1, "ImportKeyMaterial": "AAAA"})
        )),
        E::InvalidParameterValueInvalidCiphertext
    );

    // Lists and filters.
    let l = call(&kms, "ListDataKeys", json!({})).unwrap();
    assert_eq!(l["TotalCount"], json!(3));
    let ld = call(&kms, "ListDataKeyDetail", json!({"Origin": "EXTERNAL"})).unwrap();
    assert_eq!(ld["TotalCount"], json!(2));
    let ld = call(
        &kms,
        "ListDataKeyDetail",
        json!({"SearchKeyAlias": "orders"}),
    )
    .unwrap();
    assert_eq!(ld["DataKeyMetadatas"][0]["DataKeyId"], json!(id));
    let ld = call(&kms, "ListDataKeyDetail", json!({"DataKeyLen": 16})).unwrap();
    assert_eq!(ld["TotalCount"], json!(1));
    let ld = call(
        &kms,
        "ListDataKeyDetail",
        json!({"TagFilters": [{"TagKey": "team", "TagValue": ["db"]}]}),
    )
    .unwrap();
    assert_eq!(
        (
            ld["TotalCount"].clone(),
            ld["DataKeyMetadatas"][0]["DataKeyId"].clone()
        ),
        (json!(1), json!(id))
    );
    let ds = call(
        &kms,
        "DescribeDataKeys",
        json!({"DataKeyIds": [id, ct_id, "00000000-0000-4000-8000-000000000000"]}),
    )
    .unwrap();
    assert_eq!(ds["DataKeyMetadatas"].as_array().unwrap().len(), 2);
    assert_eq!(
        code(call(
            &kms,
            "DescribeDataKeys",
            json!({"DataKeyIds": [id, id]})
        )),
        E::InvalidParameterValueDuplicatedDataKeyId
    );
    assert_eq!(
        code(call(&kms, "DescribeDataKey", json!({"DataKeyId": "nope"}))),
        E::InvalidParameterValueInvalidDataKeyId
    );
    assert_eq!(
        code(call(
            &kms,
            "DescribeDataKey",
            json!({"DataKeyId": "00000000-0000-4000-8000-000000000000"})
        )),
        E::ResourceUnavailableDataKeyNotFound
    );

    // Rename and describe.
    call(
        &kms,
        "UpdateDataKeyName",
        json!({"DataKeyId": id, "DataKeyName": "orders-v2"}),
    )
    .unwrap();
    assert_eq!(
        code(call(
            &kms,
            "UpdateDataKeyName",
            json!({"DataKeyId": ct_id, "DataKeyName": "orders-v2"})
        )),
        E::InvalidParameterValueDataKeyNameAlreadyExists
    );
    call(
        &kms,
        "UpdateDataKeyDescription",
        json!({"DataKeyId": id, "Description": "v2"}),
    )
    .unwrap();
    let m = call(&kms, "DescribeDataKey", json!({"DataKeyId": id})).unwrap();
    assert_eq!(
        (
            m["DataKeyMetadata"]["DataKeyName"].clone(),
            m["DataKeyMetadata"]["Description"].clone()
        ),
        (json!("orders-v2"), json!("v2"))
    );

    // Disable: the data key is refused, then enabled again; batch all-or-none.
    call(&kms, "DisableDataKey", json!({"DataKeyId": id})).unwrap();
    assert_eq!(
        code(call(&kms, "GetDataKeyPlaintext", json!({"DataKeyId": id}))),
        E::ResourceUnavailableDataKeyDisabled
    );
    call(&kms, "EnableDataKeys", json!({"DataKeyIds": [id, ct_id]})).unwrap();
    call(&kms, "GetDataKeyPlaintext", json!({"DataKeyId": id})).unwrap();
    call(&kms, "DisableDataKeys", json!({"DataKeyIds": [id, ct_id]})).unwrap();
    call(&kms, "EnableDataKey", json!({"DataKeyId": id})).unwrap();
    // A disabled CMK refuses its hosted data keys.
    call(&kms, "DisableKey", json!({"KeyId": cmk})).unwrap();
    assert_eq!(
        code(call(&kms, "GetDataKeyPlaintext", json!({"DataKeyId": id}))),
        E::ResourceUnavailableCmkDisabled
    );
    call(&kms, "EnableKey", json!({"KeyId": cmk})).unwrap();

    // Deletion: scheduled, refused meanwhile, cancelled to Disabled, then purged.
    assert_eq!(
        code(call(
            &kms,
            "ScheduleDataKeyDeletion",
            json!({"DataKeyId": id, "PendingWindowInDays": 3})
        )),
        E::InvalidParameterInvalidPendingWindowInDays
    );
    let sd = call(
        &kms,
        "ScheduleDataKeyDeletion",
        json!({"DataKeyId": id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    assert_eq!(sd["DataKeyId"], json!(id));
    assert_eq!(
        code(call(&kms, "GetDataKeyPlaintext", json!({"DataKeyId": id}))),
        E::ResourceUnavailableDataKeyPendingDelete
    );
    assert_eq!(
        code(call(
            &kms,
            "CancelDataKeyDeletion",
            json!({"DataKeyId": pt_id})
        )),
        E::ResourceUnavailableDataKeyNotPendingDelete
    );
    call(&kms, "CancelDataKeyDeletion", json!({"DataKeyId": id})).unwrap();
    let m = call(&kms, "DescribeDataKey", json!({"DataKeyId": id})).unwrap();
    assert_eq!(m["DataKeyMetadata"]["KeyState"], "Disabled");
    call(
        &kms,
        "ScheduleDataKeyDeletion",
        json!({"DataKeyId": id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    clock.advance(7 * 86_400 + 1);
    assert_eq!(
        code(call(&kms, "DescribeDataKey", json!({"DataKeyId": id}))),
        E::ResourceUnavailableDataKeyNotFound
    );
    assert_eq!(
        call(&kms, "ListDataKeys", json!({})).unwrap()["TotalCount"],
        json!(2)
    );
    // The survivors are still there for a new service on the directory.
    drop(kms);
    let (again, _) = open(d.path());
    let got = call(&again, "GetDataKeyPlaintext", json!({"DataKeyId": pt_id})).unwrap();
    assert_eq!(s(&got, "Plaintext"), "AAECAwQFBgcICQoLDA0ODw==");
}

#[test]
fn tags_list_key_detail_defaults_and_malformed_ids() {
    let (d, kms, _) = open_tmp();
    let tagged = call(
        &kms,
        "CreateKey",
        json!({"Alias": "tagged", "Tags": [{"TagKey": "env", "TagValue": "prod"}]}),
    )
    .unwrap();
    let tagged = s(&tagged, "KeyId");
    assert_eq!(store_format(d.path()), 3, "tags are version 3");
    let other = create(&kms, "other");
    let sign = create_usage(&kms, "signer", "ASYMMETRIC_SIGN_VERIFY_ECC");
    let ids = |v: Value| -> Vec<String> {
        v["KeyMetadatas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["KeyId"].as_str().unwrap().to_owned())
            .collect()
    };
    // No KeyUsage: ENCRYPT_DECRYPT keys only, as the API documents; ALL: every key.
    let l = call(&kms, "ListKeyDetail", json!({"OrderType": 1})).unwrap();
    assert_eq!(ids(l), [tagged.clone(), other.clone()]);
    let l = call(
        &kms,
        "ListKeyDetail",
        json!({"KeyUsage": "ALL", "OrderType": 1}),
    )
    .unwrap();
    assert_eq!(ids(l), [tagged.clone(), other.clone(), sign.clone()]);
    // SearchKeyAlias matches key ids too.
    let l = call(
        &kms,
        "ListKeyDetail",
        json!({"SearchKeyAlias": &other[..8]}),
    )
    .unwrap();
    assert_eq!(ids(l), std::slice::from_ref(&other));
    // TagFilters.
    let f = |filters: Value| {
        ids(call(
            &kms,
            "ListKeyDetail",
            json!({"KeyUsage": "ALL", "TagFilters": filters}),
        )
        .unwrap())
    };
    assert_eq!(
        f(json!([{"TagKey": "env", "TagValue": ["prod"]}])),
        std::slice::from_ref(&tagged)
    );
    assert_eq!(f(json!([{"TagKey": "env"}])), std::slice::from_ref(&tagged));
    assert!(f(json!([{"TagKey": "env", "TagValue": ["dev"]}])).is_empty());
    assert!(f(json!([{"TagKey": "no-such-tag"}])).is_empty());
    assert_eq!(
        code(call(
            &kms,
            "CreateKey",
            json!({"Alias": "dup", "Tags": [{"TagKey": "a"}, {"TagKey": "a"}]})
        )),
        E::InvalidParameterValueTagKeysDuplicated
    );
    // Usages this KMS does not make: the precise error.
    for u in [
        "ASYMMETRIC_SIGN_VERIFY_ECDSA384",
        "ASYMMETRIC_SIGN_VERIFY_RSA_3072",
    ] {
        assert_eq!(
            code(call(
                &kms,
                "CreateKey",
                json!({"Alias": "x", "KeyUsage": u})
            )),
            E::UnsupportedOperationUnsupportedKeyUsageInCurrentRegion,
            "{u}"
        );
    }
    // Malformed ids vs unknown ids.
    assert_eq!(
        code(call(
            &kms,
            "Encrypt",
            json!({"KeyId": "not a key", "Plaintext": "eA=="})
        )),
        E::InvalidParameterValueInvalidKeyId
    );
    assert_eq!(
        code(call(
            &kms,
            "Encrypt",
            json!({"KeyId": "00000000-0000-4000-8000-000000000000", "Plaintext": "eA=="})
        )),
        E::ResourceUnavailableCmkNotFound
    );
    assert_eq!(
        code(call(
            &kms,
            "Encrypt",
            json!({"KeyId": "alias/none", "Plaintext": "eA=="})
        )),
        E::ResourceUnavailableCmkNotFound
    );
}

fn kms_b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

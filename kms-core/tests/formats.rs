//! Known-answer tests pinning the CiphertextBlob and key-store formats
//! (docs/FORMAT.md, "KMS formats"). The expected bytes were computed
//! independently with Python's `cryptography` (tests/vectors/make_vectors.py).
#![allow(clippy::unwrap_used)]

mod common;

use kms_core::crypto::{hex, sha256, AeadKey};
use kms_core::{blob, store, EncryptionContext, Kms};
use proptest::prelude::*;

const KEY_ID: &str = "6f1f0c8e-2b7a-4b8e-9c1d-1234567890ab";
const BLOB_HEX: &str = "4b4d012436663166306338652d326237612d346238652d396331642d31323334353637383930616200000001000102030405060708090a0b788ec5750883419167ccf3e9a1cc8349bb58e9a03da2c3789e7eeb758c532441d6";
const ROOT: [u8; 32] = [0x33; 32];
const WRAPPED: &str =
    "REREREREREREREREOxenrqHN0wAN/zGbsE5EnsQe4LNmiBc4jpNFYSmHLsuwk2tGuA/A5PorQiJj4cHB";
const BODY: &str = r#"{"keys":[{"key_id":"6f1f0c8e-2b7a-4b8e-9c1d-1234567890ab","alias":"golden","description":"","create_time":1795392000,"state":"Enabled","usage":"ENCRYPT_DECRYPT","origin":"TENCENT_KMS","creator":"local:test","rotation_enabled":false,"rotate_days":0,"next_rotate_time":0,"last_rotate_time":0,"deletion_date":0,"valid_to":0,"versions":[{"version":1,"created":1795392000,"kind":"AES_256","wrapped":"REREREREREREREREOxenrqHN0wAN/zGbsE5EnsQe4LNmiBc4jpNFYSmHLsuwk2tGuA/A5PorQiJj4cHB"}]}]}"#;
const STORE_SHA256: &str = "a9ebf16abc30f2ecfecef9b37b390d4e1a2967960877c617b2d61b8b13757682";

fn vector_context() -> EncryptionContext {
    EncryptionContext::from_json(r#"{"kmsfs-volume":"v1","a":"b"}"#).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn blob_known_answer() {
    let key = AeadKey::new(&[0x11; 32]);
    let nonce: [u8; 12] = core::array::from_fn(|i| i as u8);
    let ctx = blob::canonical_context(&vector_context());
    let b = blob::seal(&key, KEY_ID, 1, &nonce, b"kmsfs test vector", &ctx).unwrap();
    assert_eq!(hex(&b), BLOB_HEX);
    let p = blob::parse(&b).unwrap();
    assert_eq!(p.key_id, KEY_ID);
    assert_eq!(p.key_version, 1);
    assert_eq!(p.nonce, nonce);
    assert_eq!(
        &blob::open(&key, &p, &ctx).unwrap()[..],
        b"kmsfs test vector"
    );
    assert_eq!(b.len(), blob::overhead(KEY_ID.len()) + 17);
}

#[test]
fn store_known_answer_and_golden_store_opens() {
    let wrapped = store::test_vector_wrap(&ROOT, KEY_ID, 1, &[0x11; 32], &[0x44; 12]).unwrap();
    assert_eq!(wrapped, WRAPPED);
    let file = store::test_vector_store_file(&ROOT, 7, BODY.as_bytes());
    assert_eq!(hex(&sha256(&file)), STORE_SHA256);
    assert_eq!(file.len(), 577);

    // A store made from the vectors alone opens, and the blob vector decrypts.
    let d = tempfile::tempdir().unwrap();
    let mut rk = b"kmsfs-rk\x00\x01".to_vec();
    rk.extend_from_slice(&ROOT);
    std::fs::write(d.path().join("root.key"), &rk).unwrap();
    std::fs::write(d.path().join("keys.kms"), &file).unwrap();
    let (kms, _) = common::open(d.path());
    let c = kms_core::CallContext::local();
    let dk = kms
        .decrypt_data_key(&c, &unhex(BLOB_HEX), &vector_context())
        .unwrap();
    assert_eq!(&dk.plaintext[..], b"kmsfs test vector");
    assert_eq!(dk.key_id, KEY_ID);
    // The store was only read.
    assert_eq!(std::fs::read(d.path().join("keys.kms")).unwrap(), file);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Flipping any bits or cutting a blob anywhere never panics and never decrypts.
    #[test]
    fn altered_blobs_never_decrypt(
        pt in proptest::collection::vec(any::<u8>(), 1..64),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        cut in proptest::option::of(any::<usize>()),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let key = AeadKey::new(&[0x11; 32]);
        let ctx = blob::canonical_context(&vector_context());
        let good = blob::seal(&key, KEY_ID, 1, &[9u8; 12], &pt, &ctx).unwrap();
        let mut b = good.clone();
        for (at, x) in &flips {
            let i = at % b.len();
            b[i] ^= x;
        }
        if let Some(c) = cut {
            b.truncate(c % b.len());
        }
        b.extend_from_slice(&extra);
        prop_assume!(b != good);
        if let Ok(p) = blob::parse(&b) {
            prop_assert!(blob::open(&key, &p, &ctx).is_err());
        }
    }
}

/// The same through the service, with random bytes only (no framing at all).
#[test]
fn random_garbage_is_invalid_ciphertext() {
    let d = tempfile::tempdir().unwrap();
    let (kms, _) = common::open(d.path());
    common::create(&kms, "g");
    let c = kms_core::CallContext::local();
    let mut r = [0u8; 200];
    for n in 0..200 {
        kms_core::crypto::random_bytes(&mut r[..n]).unwrap();
        let e = kms
            .decrypt_data_key(&c, &r[..n], &EncryptionContext::new())
            .unwrap_err();
        assert_eq!(
            e.code,
            kms_core::ErrorCode::InvalidParameterValueInvalidCiphertext
        );
    }
}

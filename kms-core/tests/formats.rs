//! Known-answer tests pinning the CiphertextBlob and key-store formats
//! (docs/FORMAT.md, "KMS formats"). The expected bytes were computed
//! independently with Python's `cryptography` (tests/vectors/make_vectors.py).
#![allow(clippy::unwrap_used)]

mod common;

use kms_core::crypto::{hex, sha256, AeadKey};
use kms_core::{blob, store, DataKey, EncryptionContext, Kms};
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

/// The data key `kms` opens from the vector blob `blob_hex` under the vector context.
fn vector_data_key(kms: &dyn Kms, blob_hex: &str) -> DataKey {
    kms.decrypt_data_key(
        &kms_core::CallContext::local(),
        &unhex(blob_hex),
        &vector_context(),
    )
    .unwrap()
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
    let wrapped = store::test_vector_wrap_kind(
        &ROOT,
        KEY_ID,
        1,
        kms_core::key::MaterialKind::Aes256,
        &[0x11; 32],
        &[0x44; 12],
    )
    .unwrap();
    assert_eq!(wrapped, WRAPPED);
    let file = store::test_vector_store_file(&ROOT, 7, BODY.as_bytes());
    assert_eq!(hex(&sha256(&file)), STORE_SHA256);
    assert_eq!(file.len(), 577);

    // A store made from the vectors alone opens, and the blob vector decrypts.
    let d = tempfile::tempdir().unwrap();
    common::write_store(d.path(), &ROOT, &file);
    let (kms, _) = common::open(d.path());
    let dk = vector_data_key(&kms, BLOB_HEX);
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
    let (_d, kms, _) = common::open_tmp();
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

// ---- store format 2 (docs/FORMAT.md): imported 128-bit material of an EXTERNAL key.

const WRAPPED_AES_128: &str = "RERERERERERERERECCSUnZL+4DM+zAKog313rb06SZC6ffJtQy6XmQYE4pg=";
const MATERIAL_CHECK: &str = "ec1741fbd8be75d0bbb0b6bb5df115d08ac686a92fd16b8a8150363406bc3b76";
const BODY2: &str = r#"{"keys":[{"key_id":"6f1f0c8e-2b7a-4b8e-9c1d-1234567890ab","alias":"golden2","description":"","create_time":1795392000,"state":"Enabled","usage":"ENCRYPT_DECRYPT","origin":"EXTERNAL","creator":"local:test","rotation_enabled":false,"rotate_days":0,"next_rotate_time":0,"last_rotate_time":0,"deletion_date":0,"valid_to":0,"versions":[{"version":1,"created":1795392000,"kind":"AES_128","wrapped":"RERERERERERERERECCSUnZL+4DM+zAKog313rb06SZC6ffJtQy6XmQYE4pg="}],"material_check":"ec1741fbd8be75d0bbb0b6bb5df115d08ac686a92fd16b8a8150363406bc3b76"}]}"#;
const STORE2_SHA256: &str = "7dc52a183964c05d544dd6c500275e8385b67d7aef6a4dd6a89913e4defff682";
const BLOB_AES_128_HEX: &str = "4b4d012436663166306338652d326237612d346238652d396331642d31323334353637383930616200000001000102030405060708090a0bb457109ffc3c4ddf7376fe7525cd7a410b380fbd7d7366edea539796dff620b75c";

#[test]
fn store_format_2_known_answer_imported_128_bit_material() {
    use kms_core::key::MaterialKind;
    let w = store::test_vector_wrap_kind(
        &ROOT,
        KEY_ID,
        1,
        MaterialKind::Aes128,
        &[0x22; 16],
        &[0x44; 12],
    )
    .unwrap();
    assert_eq!(w, WRAPPED_AES_128);
    assert_eq!(
        store::test_vector_material_check(&ROOT, KEY_ID, &[0x22; 16]),
        MATERIAL_CHECK
    );
    let file = store::test_vector_store_file_version(&ROOT, 2, 8, BODY2.as_bytes());
    assert_eq!(hex(&sha256(&file)), STORE2_SHA256);
    assert_eq!(file.len(), 639);
    let key = AeadKey::new_128(&[0x22; 16]);
    let nonce: [u8; 12] = core::array::from_fn(|i| i as u8);
    let ctx = blob::canonical_context(&vector_context());
    let b = blob::seal(&key, KEY_ID, 1, &nonce, b"kmsfs test vector", &ctx).unwrap();
    assert_eq!(hex(&b), BLOB_AES_128_HEX);

    let d = tempfile::tempdir().unwrap();
    common::write_store(d.path(), &ROOT, &file);
    let (kms, _) = common::open(d.path());
    let dk = vector_data_key(&kms, BLOB_AES_128_HEX);
    assert_eq!(&dk.plaintext[..], b"kmsfs test vector");
    let md = common::call(&kms, "DescribeKey", serde_json::json!({"KeyId": KEY_ID})).unwrap();
    assert_eq!(md["KeyMetadata"]["Origin"], "EXTERNAL");
    assert_eq!(std::fs::read(d.path().join("keys.kms")).unwrap(), file);
}

/// A store written by format version 1 opens; the first change writes it as
/// version 2, which still holds the old key and opens again; a version this
/// crate does not know is refused with a message that names it.
#[test]
fn a_version_1_store_opens_and_is_upgraded_by_the_first_write() {
    let d = tempfile::tempdir().unwrap();
    let v1 = store::test_vector_store_file(&ROOT, 7, BODY.as_bytes());
    assert_eq!(&v1[8..10], &[0, 1]);
    common::write_store(d.path(), &ROOT, &v1);
    let (kms, _) = common::open(d.path());
    common::create(&kms, "after-upgrade");
    drop(kms);
    let v2 = std::fs::read(d.path().join("keys.kms")).unwrap();
    // Written as version 2: nothing in it needs version 3 (post-quantum material, tags,
    // hosted data keys), so a kmsfs that reads at most version 2 still opens it.
    assert_eq!(&v2[8..10], &[0, 2]);
    assert_eq!(store::STORE_FORMAT_VERSION, 3);
    let (kms, _) = common::open(d.path());
    let dk = vector_data_key(&kms, BLOB_HEX);
    assert_eq!(&dk.plaintext[..], b"kmsfs test vector");
    drop(kms);

    // A version this crate does not know (a newer kmsfs wrote it) is refused by name.
    let v4 = store::test_vector_store_file_version(&ROOT, 4, 7, BODY.as_bytes());
    let d4 = tempfile::tempdir().unwrap();
    common::write_store(d4.path(), &ROOT, &v4);
    let e = kms_core::KmsService::open(d4.path()).unwrap_err();
    assert!(e.message.contains("format version 4"), "{}", e.message);
}

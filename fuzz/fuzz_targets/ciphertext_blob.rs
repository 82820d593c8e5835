//! The KMS's two parsers of stored bytes: the CiphertextBlob (`blob::parse`, then
//! `blob::open` under a fixed key) and the key store file (`store::parse_store_file`).
//!
//! Input: one mode byte, then bytes. Mode 0: a CiphertextBlob. Mode 1: a whole
//! `keys.kms`. Mode 2: a `keys.kms` body (JSON), framed and MAC'ed under the fixed
//! root key so the body parser and the material unwrapping are reached.

#![no_main]

use kms_core::blob;
use kms_core::crypto::{AeadKey, TAG_LEN};
use kms_core::store;
use libfuzzer_sys::fuzz_target;

const ROOT_KEY: [u8; 32] = [5u8; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(p) = blob::parse(rest) else {
                return;
            };
            assert_eq!(p.header.len() + p.sealed.len(), rest.len());
            assert!((1..=blob::MAX_KEY_ID_LEN).contains(&p.key_id.len()));
            assert!(p.sealed.len() >= TAG_LEN, "a blob without room for its tag");
            assert!(rest.starts_with(p.header));
            // Arbitrary bytes never authenticate under a key the input cannot know.
            let key = AeadKey::new(&[3u8; 32]);
            assert!(blob::open(&key, &p, b"").is_err(), "a forged blob opened");
        }
        1 => {
            let _ = store::parse_store_file(&ROOT_KEY, rest);
        }
        _ => {
            let file = store::test_vector_store_file(&ROOT_KEY, 1, rest);
            let _ = store::parse_store_file(&ROOT_KEY, &file);
        }
    }
});

//! Encrypted names (`kmsfs::volume::names`) on arbitrary bytes: a stored name or symlink target
//! read from the backing directory never panics the decoder, and only what this key
//! sealed opens. The input as a plaintext name: sealing fits NAME_MAX up to
//! MAX_SHORT_NAME bytes, takes a long name (a 58-byte entry) up to MAX_NAME with long
//! names on, opens back to the same bytes (when it is a name a directory may hold), and
//! never opens under another directory's IV. The input as a backing entry's name is
//! classified without panicking.

#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use kmsfs::volume::names::{NameKey, LONG_REF_LEN, MAX_NAME, MAX_SHORT_NAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = NameKey::derive(&[0x5a; 32], "00000000-0000-4000-8000-000000000000");
    let long =
        NameKey::derive(&[0x5a; 32], "00000000-0000-4000-8000-000000000000").with_long_names(true);
    let iv = [0x11; 16];
    let raw = OsStr::from_bytes(data);
    // As read from disk: random bytes never authenticate.
    assert!(key.decrypt_name(&iv, raw).is_none(), "a forged name opened");
    assert!(key.decrypt_target(raw).is_none(), "a forged target opened");
    let _ = long.kind_of(raw);
    let _ = long.is_long_link(data);
    // As a name to store.
    match long.encrypt_name(&iv, raw) {
        Ok(s) if data.len() > MAX_SHORT_NAME => {
            assert!(data.len() <= MAX_NAME);
            assert_eq!(s.entry.len(), LONG_REF_LEN);
            let full = s.long.expect("a long name");
            assert_eq!(kmsfs::volume::names::long_name_of(&full), s.entry);
        }
        Ok(s) => assert_eq!(s.long, None),
        Err(_) => assert!(data.len() > MAX_NAME),
    }
    match key.encrypt_name(&iv, raw) {
        Ok(stored) => {
            let stored = stored.entry;
            assert!(data.len() <= MAX_SHORT_NAME);
            assert!(stored.len() <= 255, "stored name of {} bytes", stored.len());
            assert!(!stored.as_bytes().contains(&b'/') && !stored.as_bytes().contains(&0));
            let valid = !data.is_empty()
                && data != b"."
                && data != b".."
                && !data.contains(&b'/')
                && !data.contains(&0);
            let back = key.decrypt_name(&iv, &stored);
            assert_eq!(back.as_deref().map(OsStr::as_bytes), valid.then_some(data));
            assert!(key.decrypt_name(&[0x12; 16], &stored).is_none());
        }
        Err(_) => assert!(data.len() > MAX_SHORT_NAME),
    }
    if let Ok(stored) = key.encrypt_target(raw) {
        let back = key.decrypt_target(&stored).expect("a sealed target opens");
        assert_eq!(back.as_bytes(), data);
        assert_eq!(
            kmsfs::volume::names::target_len(stored.len() as u64),
            data.len() as u64
        );
    }
});

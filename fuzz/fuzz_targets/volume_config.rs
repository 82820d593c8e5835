//! `volume::parse_config` on arbitrary bytes (`kmsfs.conf` is read before its MAC
//! can be checked). On success: the config re-encodes to the same bytes and parses
//! back equal, and its
//! geometry's size arithmetic holds for sizes taken from the input.

#![no_main]

use kmsfs::format::BlockNo;
use kmsfs::volume;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((cfg, body, mac)) = volume::parse_config(data) else {
        return;
    };
    // The encoding is canonical (the MAC's hex digits parse in lowercase only, as
    // encoding writes them).
    let again = volume::encode_config(&body, &mac);
    assert!(again == data, "encode(parse(x)) != x");
    assert_eq!(
        again[..body.len()],
        data[..body.len()],
        "the body must stay byte for byte"
    );
    let (cfg2, body2, mac2) = volume::parse_config(&again).expect("a re-encoded config parses");
    assert_eq!(
        (cfg2, body2, mac2),
        (cfg.clone(), body.clone(), mac.clone())
    );
    let g = cfg.geometry();
    // Sizes from the input's own bytes: every plaintext size maps to a backing size
    // that maps back, and no size makes the arithmetic panic.
    for chunk in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        let n = u64::from_le_bytes(b);
        let _ = g.plain_size(n);
        let _ = g.plain_size_lossy(n);
        let _ = g.block_offset(BlockNo(n));
        if let Some(backing) = g.backing_size(n) {
            assert_eq!(g.plain_size(backing), Some(n), "size round trip");
        }
    }
});

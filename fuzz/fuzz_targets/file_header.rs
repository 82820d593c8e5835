//! `FileHeader::parse` and `slot_states` on arbitrary bytes and header sizes.
//!
//! Input: one mode byte, then the header. Even mode: the header size is the
//! header's own length (so the slots are reached); odd mode: the size is the next
//! four bytes (big-endian), whatever they say. On success the header must agree
//! with `slot_states`, re-encode, and parse back to the same value.

#![no_main]

use kmsfs::format::{self, FileHeader, SlotState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (header_size, buf) = if mode % 2 == 0 {
        (u32::try_from(rest.len()).unwrap_or(u32::MAX), rest)
    } else if let (Some(size), Some(buf)) = (rest.get(..4), rest.get(4..)) {
        (
            u32::from_be_bytes([size[0], size[1], size[2], size[3]]),
            buf,
        )
    } else {
        return;
    };
    let states = format::slot_states(buf, header_size);
    let Ok(h) = FileHeader::parse(buf, header_size) else {
        return;
    };
    let states = states.expect("parse accepted a header that slot_states rejects");
    let best = states
        .iter()
        .filter_map(|s| match s {
            SlotState::Valid { generation, .. } => Some(*generation),
            _ => None,
        })
        .max();
    assert_eq!(
        best,
        Some(h.generation),
        "parse did not pick the newest valid slot"
    );
    assert!(states.iter().any(|s| matches!(s,
        SlotState::Valid { generation, wrapped_dek }
            if *generation == h.generation && *wrapped_dek == h.wrapped_dek)));
    let bytes = h.encode(header_size).expect("a parsed header re-encodes");
    assert_eq!(bytes.len(), header_size as usize);
    let again = FileHeader::parse(&bytes, header_size).expect("a re-encoded header parses");
    assert_eq!(again, h);
});

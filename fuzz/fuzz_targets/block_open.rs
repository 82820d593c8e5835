//! `ContentKey::open_block` with a fixed key on arbitrary stored-block bytes.
//!
//! Input: one selector byte, then bytes. Selector bit 0 clear: the bytes are a stored
//! block, opened as block 0. Set: the bytes are a plaintext, sealed as block 0 with a
//! fixed nonce, then modified at a position and by a value taken from the input
//! (or opened as another block, or under another file id): open must fail. An
//! unmodified block must open to its plaintext. Selector bit 1 set: the key has the
//! final-block flag (feature content-final-v1) and bit 2 says whether the block is the
//! file's last: a block sealed as last opens as last and as not last; one sealed as not
//! last opens only as not last (as last it is `NotFinal`); a hole is refused as the last
//! block. Never a panic.

#![no_main]

use kmsfs::format::{BlockFault, BlockNo, ContentKey, FileId};
use libfuzzer_sys::fuzz_target;

const DEK: [u8; 32] = [7u8; 32];
const BLOCK_SIZE: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let flag = sel & 2 != 0;
    let last = sel & 4 != 0;
    let key = ContentKey::derive(&DEK, FileId([1u8; 16]), BLOCK_SIZE).with_final_flag(flag);
    let mut out = Vec::new();
    if sel & 1 == 0 {
        // Arbitrary bytes: a hole (all zero) or an authentication failure; a forgery
        // would need the key.
        let r = key.open_block(BlockNo(0), last, rest, &mut out);
        if rest.iter().all(|&b| b == 0) && flag && last {
            assert_eq!(r, Err(BlockFault::HoleAtEnd));
            assert!(out.is_empty());
        } else if rest.iter().all(|&b| b == 0) {
            assert!(r.is_ok());
            assert!(out.iter().all(|&b| b == 0));
        } else {
            assert!(r.is_err(), "arbitrary bytes opened as a block");
            assert!(out.is_empty(), "plaintext left behind by a failed open");
        }
        return;
    }
    let Some((edit, plain)) = rest.split_first_chunk::<3>() else {
        return;
    };
    let plain = &plain[..plain.len().min(BLOCK_SIZE as usize)];
    if plain.is_empty() {
        return; // never stored: a block holds at least one byte
    }
    let mut stored = Vec::new();
    key.seal_block_with_nonce(BlockNo(0), last, &[9u8; 24], plain, &mut stored)
        .expect("seal");
    key.open_block(BlockNo(0), last, &stored, &mut out)
        .expect("an untouched block opens");
    assert_eq!(out, plain);
    out.clear();
    if flag {
        // Sealed as last: also opens where the file goes on. Sealed as not last: refused
        // as the file's end, and nothing left behind.
        let r = key.open_block(BlockNo(0), !last, &stored, &mut out);
        if last {
            assert!(r.is_ok() && out == plain);
        } else {
            assert_eq!(r, Err(BlockFault::NotFinal));
            assert!(
                out.is_empty(),
                "plaintext left behind by a refused last block"
            );
        }
        out.clear();
    }
    let [kind, pos, val] = *edit;
    match kind % 4 {
        0 | 1 => {
            // Flip bits of one byte (val 0 → 0x80 so it always changes).
            let i = (usize::from(pos) * 257 + usize::from(kind)) % stored.len();
            stored[i] ^= if val == 0 { 0x80 } else { val };
            assert!(key
                .open_block(BlockNo(0), false, &stored, &mut out)
                .is_err());
        }
        2 => {
            // Opened as another block number (a block swap within the file).
            let b = BlockNo(u64::from(val) + 1);
            assert!(key.open_block(b, false, &stored, &mut out).is_err());
        }
        _ => {
            // Under another file's key (a cross-file swap).
            let other = ContentKey::derive(&DEK, FileId([2u8; 16]), BLOCK_SIZE);
            assert!(other
                .open_block(BlockNo(0), false, &stored, &mut out)
                .is_err());
        }
    }
    assert!(out.is_empty(), "plaintext left behind by a failed open");
});

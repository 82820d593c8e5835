//! Block seal/open throughput (issue 6, item 2): the daemon's own block codec
//! (`format::ContentKey`, XAES-256-GCM over `aead`) at the volume's block size, one
//! block per call and a 1 MiB request of 4 KiB blocks (as the daemon seals a FUSE
//! write), beside `openssl speed -evp aes-256-gcm` at the same size when openssl is
//! installed. Single thread. `cargo bench --bench aead`; `BENCH_SECS` sets the time per
//! row (default 1 s).
#![allow(dead_code)]

use kmsfs::format::{self, aead};

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use format::{BlockNo, ContentKey, FileId, DEFAULT_BLOCK_SIZE};

/// Runs `f` (which handles `bytes` plaintext bytes) for about `secs`; returns MB/s.
fn rate(bytes: usize, secs: f64, mut f: impl FnMut()) -> f64 {
    // Warm up (caches, CPU frequency), then measure whole batches.
    for _ in 0..16 {
        f();
    }
    let limit = Duration::from_secs_f64(secs);
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < limit {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    (n as f64 * bytes as f64) / t.elapsed().as_secs_f64() / 1e6
}

/// openssl's single-core AES-256-GCM figure at `bytes`, in MB/s, if openssl is present.
fn openssl(bytes: usize) -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-evp", "aes-256-gcm", "-seconds", "1", "-bytes"])
        .arg(bytes.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "AES-256-GCM    2508634.42k": thousands of bytes per second.
    let line = text.lines().rev().find(|l| l.starts_with("AES-256-GCM"))?;
    let k: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(k / 1000.0)
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let bs = DEFAULT_BLOCK_SIZE as usize;
    let key = ContentKey::derive(&[7u8; 32], FileId([9u8; 16]), bs as u64).with_final_flag(true);
    let plain: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let stored_bs = bs + format::BLOCK_OVERHEAD as usize;

    // One block per call, buffers reused (the daemon's per-block work).
    let mut out = Vec::with_capacity(stored_bs);
    let seal_4k = rate(bs, secs, || {
        out.clear();
        key.seal_block(BlockNo(3), false, black_box(&plain[..bs]), &mut out)
            .expect("seal");
    });
    let sealed_block = out.clone();
    let mut opened = Vec::with_capacity(bs);
    let open_4k = rate(bs, secs, || {
        opened.clear();
        key.open_block(BlockNo(3), false, black_box(&sealed_block), &mut opened)
            .expect("open");
    });

    // A 1 MiB request: 256 blocks sealed into one buffer, opened into one buffer.
    let blocks = plain.len() / bs;
    let mut big = Vec::with_capacity(blocks * stored_bs);
    // As the daemon does: one sealer (one nonce prefix) per request, one derived-key
    // cache per read.
    let seal_1m = rate(plain.len(), secs, || {
        big.clear();
        let mut sealer = key.sealer().expect("sealer");
        for (i, c) in plain.chunks(bs).enumerate() {
            sealer
                .seal(BlockNo(i as u64), false, black_box(c), &mut big)
                .expect("seal");
        }
    });
    let sealed_big = big.clone();
    let mut back = Vec::with_capacity(plain.len());
    let open_1m = rate(plain.len(), secs, || {
        back.clear();
        let mut derived = aead::Derived::default();
        for (i, c) in sealed_big.chunks(stored_bs).enumerate() {
            key.open_block_cached(
                &mut derived,
                BlockNo(i as u64),
                false,
                black_box(c),
                &mut back,
            )
            .expect("open");
        }
    });
    assert_eq!(back, plain, "round trip");

    let ossl = openssl(bs);
    let vs = |x: f64| {
        ossl.map_or(String::new(), |o| {
            format!("  ({:.0} % of openssl)", 100.0 * x / o)
        })
    };
    println!("block seal/open, XAES-256-GCM, {bs}-byte blocks, one thread");
    println!("  (1 block per call: a key derivation each; 1 MiB request: one per request)");
    println!(
        "  seal, 1 block per call : {seal_4k:8.0} MB/s{}",
        vs(seal_4k)
    );
    println!(
        "  open, 1 block per call : {open_4k:8.0} MB/s{}",
        vs(open_4k)
    );
    println!(
        "  seal, 1 MiB request    : {seal_1m:8.0} MB/s{}",
        vs(seal_1m)
    );
    println!(
        "  open, 1 MiB request    : {open_1m:8.0} MB/s{}",
        vs(open_1m)
    );
    match ossl {
        Some(o) => println!("  openssl speed -evp aes-256-gcm -bytes {bs}: {o:8.0} MB/s"),
        None => println!("  openssl: not installed"),
    }
}

//! Property tests through a real mount: random writes, truncates, hole punches, zero
//! ranges and fallocates against an in-memory model, after which a copy of the backing
//! file cut at a block boundary must fail to read (the final-block flag); random byte
//! flips in backing files give EIO, never wrong data. `KMSFS_PROP_CASES=N` for a longer
//! run (default 48 cases of up to 25 operations).

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use fsmount::Mounted;
use proptest::prelude::*;

fn mount() -> &'static Mounted {
    // One mount for all cases of this test binary; unmounted at exit by the atexit hook.
    static M: OnceLock<Mounted> = OnceLock::new();
    M.get_or_init(|| {
        extern "C" fn unmount_at_exit() {
            if let Some(m) = M.get() {
                let _ = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg(&m.mnt)
                    .status();
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&m.mnt)
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(unmount_at_exit) };
        Mounted::new(&[])
    })
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        off: u64,
        len: usize,
        seed: u8,
    },
    Truncate(u64),
    /// fallocate: `mode` 0 (may grow), PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE (may grow) or
    /// ZERO_RANGE|KEEP_SIZE.
    Fallocate {
        mode: i32,
        off: u64,
        len: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let modes = [
        0,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_ZERO_RANGE,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
    ];
    prop_oneof![
        6 => (0u64..40_000, 1usize..12_000, any::<u8>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => (0u64..45_000).prop_map(Op::Truncate),
        3 => (0usize..4, 0u64..40_000, 1u64..20_000)
            .prop_map(move |(m, off, len)| Op::Fallocate { mode: modes[m], off, len }),
        1 => Just(Op::Reopen),
    ]
}

/// The model of a fallocate: the range reads as zeros where the mode zeroes it, and the
/// size grows unless KEEP_SIZE.
fn fallocate_model(model: &mut Vec<u8>, mode: i32, off: u64, len: u64) {
    let (off, end) = (off as usize, (off + len) as usize);
    if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && model.len() < end {
        model.resize(end, 0);
    }
    if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
        let end = end.min(model.len());
        if off < end {
            model[off..end].fill(0);
        }
    }
}

fn cases() -> u32 {
    std::env::var("KMSFS_PROP_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}

static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_writes_and_truncates_match_a_model(ops in proptest::collection::vec(op(), 1..25)) {
        let m = mount();
        let n = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = m.p(&format!("model-{n}"));
        let mut model: Vec<u8> = Vec::new();
        let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        for o in &ops {
            match *o {
                Op::Write { off, len, seed } => {
                    let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add((i % 251) as u8) | 1).collect();
                    f.write_all_at(&data, off).unwrap();
                    let end = off as usize + len;
                    if model.len() < end { model.resize(end, 0); }
                    model[off as usize..end].copy_from_slice(&data);
                }
                Op::Truncate(n) => {
                    f.set_len(n).unwrap();
                    model.resize(n as usize, 0);
                }
                Op::Fallocate { mode, off, len } => {
                    use std::os::fd::AsRawFd;
                    // SAFETY: fallocate on an open fd, plain integer arguments.
                    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
                    prop_assert_eq!(r, 0, "fallocate {:#x} {} {}: {}", mode, off, len, std::io::Error::last_os_error());
                    fallocate_model(&mut model, mode, off, len);
                }
                Op::Reopen => {
                    f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
                }
            }
            prop_assert_eq!(f.metadata().unwrap().len(), model.len() as u64);
        }
        let mut got = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut got).unwrap();
        prop_assert!(got == model, "content differs after {:?}", ops);
        // The final-block flag: the file's backing cut back by one block, at a block
        // boundary, fails to read (whatever the operations left at its end).
        const BS: u64 = 4096;
        let blocks = (model.len() as u64).div_ceil(BS);
        if blocks >= 2 {
            let raw = fs::read(m.b(&format!("model-{n}"))).unwrap();
            let cut = format!("model-{n}.cut");
            fs::write(m.b(&cut), &raw[..(1024 + (blocks - 1) * (BS + 40)) as usize]).unwrap();
            let r = fs::read(m.p(&cut)).map(|v| v.len());
            prop_assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)), "cut after {:?}", ops);
            fs::remove_file(m.p(&cut)).unwrap();
        }
        // Unaligned reads agree too.
        if model.len() > 10 {
            let mut buf = vec![0u8; model.len() / 3];
            f.read_exact_at(&mut buf, 7).unwrap();
            prop_assert!(buf[..] == model[7..7 + buf.len()]);
        }
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn flipped_bytes_give_eio_never_wrong_data(len in 1usize..20_000, pos_frac in 0.0f64..1.0, bit in 0u8..8) {
        let m = mount();
        let n = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("flip-{n}");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + n as usize) as u8).collect();
        fs::write(m.p(&name), &data).unwrap();
        let raw = OpenOptions::new().read(true).write(true).open(m.b(&name)).unwrap();
        let blen = raw.metadata().unwrap().len();
        let pos = ((blen as f64) * pos_frac) as u64 % blen;
        let mut b = [0u8; 1];
        raw.read_exact_at(&mut b, pos).unwrap();
        raw.write_all_at(&[b[0] ^ (1 << bit)], pos).unwrap();
        drop(raw);
        // Fresh open (no page cache of the old plaintext is kept across opens).
        match File::open(m.p(&name)) {
            Err(e) => prop_assert_eq!(e.raw_os_error(), Some(libc::EIO)),
            Ok(mut f) => {
                let mut got = Vec::new();
                match f.read_to_end(&mut got) {
                    Err(e) => prop_assert_eq!(e.raw_os_error(), Some(libc::EIO)),
                    Ok(_) => {
                        // Never wrong data. A read may succeed only when the flip hit the
                        // inactive (empty) header slot 1, bytes 528..1024, which a reader
                        // must tolerate (a torn rewrap of that slot).
                        prop_assert!(got == data, "flip at {} of {}: WRONG DATA", pos, blen);
                        prop_assert!((528..1024).contains(&pos), "flip at {} of {} not detected", pos, blen);
                    }
                }
            }
        }
        fs::remove_file(m.p(&name)).unwrap();
    }
}

//! Property tests through a real mount: random writes and truncates against an
//! in-memory model; random byte flips in backing files give EIO, never wrong data.

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
    Write { off: u64, len: usize, seed: u8 },
    Truncate(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..40_000, 1usize..12_000, any::<u8>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => (0u64..45_000).prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
    ]
}

static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

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
                Op::Reopen => {
                    f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
                }
            }
            prop_assert_eq!(f.metadata().unwrap().len(), model.len() as u64);
        }
        let mut got = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut got).unwrap();
        prop_assert!(got == model, "content differs after {:?}", ops);
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

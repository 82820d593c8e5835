//! `kmsfs fsck`: a clean volume passes with the right counts; each kind of damage is
//! reported with its file and block, and the exit status says so.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use fsmount::{pattern, Mounted};
use serde_json::Value;

/// Runs `kmsfs fsck --json`; (exit code, report).
fn fsck(kms: &Path, backing: &Path) -> (i32, Value) {
    let out = fsmount::run_fsck(kms, backing, &["--json"]);
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck printed no JSON ({e}), exit {code}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

/// The problems reported for `path`: (severity, kind, block).
fn problems(v: &Value, path: &str) -> Vec<(String, String, Option<u64>)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["path"] == path)
        .map(|p| {
            (
                p["severity"].as_str().unwrap().to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
                p["block"].as_u64(),
            )
        })
        .collect()
}

fn p(sev: &str, kind: &str, block: Option<u64>) -> (String, String, Option<u64>) {
    (sev.to_owned(), kind.to_owned(), block)
}

#[test]
fn clean_volume_passes_and_each_damage_is_reported_with_file_and_block() {
    let mut m = Mounted::new(&[]);
    let data = pattern(1, 5 * 4096 + 100); // 6 blocks, the last partial
    for n in ["bad-tag", "cut", "torn", "header", "zeroed", "slot1"] {
        fs::write(m.p(n), &data).unwrap();
    }
    fs::create_dir(m.p("dir")).unwrap();
    fs::write(m.p("dir/small"), b"ten bytes!").unwrap();
    fs::write(m.p("empty"), b"").unwrap();
    fs::hard_link(m.p("dir/small"), m.p("link")).unwrap();
    // Sparse: 4 TiB of hole, then one block; fsck skips the hole (it does not read it).
    let sparse = File::create(m.p("sparse")).unwrap();
    sparse.write_all_at(b"far", 1 << 42).unwrap();
    drop(sparse);
    // Read-only while mounted: fsck does not need the volume lock.
    let (code, v) = fsck(&m.kms, &m.backing);
    assert_eq!(code, 0, "{v:#}");
    m.unmount();
    let (code, v) = fsck(&m.kms, &m.backing);
    assert_eq!(code, 0, "{v:#}");
    // 6 files of 6 blocks, dir/small (1 block), empty, sparse (1 block after 2^30
    // holes); the hard link counted once.
    assert_eq!(v["files"], 9, "{v:#}");
    assert_eq!(v["blocks"], 6 * 6 + 1 + 1, "{v:#}");
    assert_eq!(v["bytes"], 6 * data.len() as u64 + 10 + 3, "{v:#}");
    assert_eq!(v["holes"], 1u64 << 30, "{v:#}");
    assert_eq!(
        (v["errors"].as_u64(), v["warnings"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        v["deks_unwrapped"], 1,
        "shared DEK policy: one DEK, unwrapped once"
    );

    let rw = |n: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.b(n))
            .unwrap()
    };
    let block = |b: u64| 1024 + b * 4136;
    // A flipped ciphertext byte in block 2.
    let f = rw("bad-tag");
    let mut x = [0u8; 1];
    f.read_exact_at(&mut x, block(2) + 500).unwrap();
    f.write_all_at(&[x[0] ^ 0x40], block(2) + 500).unwrap();
    // Cut mid-block: the last block (5) loses 7 bytes.
    let f = rw("cut");
    f.set_len(f.metadata().unwrap().len() - 7).unwrap();
    // Torn: block 5 keeps only 20 bytes, less than its 40-byte overhead.
    rw("torn").set_len(block(5) + 20).unwrap();
    // A corrupt header (the magic).
    rw("header").write_all_at(b"X", 2).unwrap();
    // Block 3 zeroed in the middle of the data.
    rw("zeroed").write_all_at(&[0u8; 4136], block(3)).unwrap();
    // Slot 1 (unused) scribbled on: the file still reads, fsck warns.
    rw("slot1").write_all_at(b"junk", 1024 - 100).unwrap();
    // A file copied in from another volume: its DEK belongs to that volume.
    let other = m.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    {
        let m2 = Mounted::existing(&m.kms, &other, &[]).unwrap();
        fs::write(m2.p("alien"), b"from another volume").unwrap();
    }
    fs::copy(other.join("alien"), m.b("dir/alien")).unwrap();

    let (code, v) = fsck(&m.kms, &m.backing);
    assert_eq!(code, 4, "{v:#}");
    // Each damaged file: its one problem.
    for (file, want) in [
        ("bad-tag", p("error", "bad-tag", Some(2))),
        ("cut", p("error", "bad-tag", Some(5))),
        ("torn", p("error", "torn-tail", Some(5))),
        ("header", p("error", "header", None)),
        ("zeroed", p("warning", "zero-block", Some(3))),
        ("slot1", p("warning", "header-slot", None)),
    ] {
        assert_eq!(problems(&v, file), [want], "{file}: {v:#}");
    }
    let alien = problems(&v, "dir/alien");
    assert!(
        alien.len() == 1
            && alien[0].0 == "error"
            && ["dek-refused", "kms"].contains(&alien[0].1.as_str()),
        "{v:#}"
    );
    assert!(problems(&v, "dir/small").is_empty() && problems(&v, "empty").is_empty());
    assert_eq!(v["errors"], 5, "{v:#}");
    assert_eq!(v["warnings"], 2, "{v:#}");
    // The text report names file and block too.
    let out = fsmount::run_fsck(&m.kms, &m.backing, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("error: bad-tag block 2: block fails authentication"),
        "{text}"
    );
    assert!(
        text.contains("warning: zeroed block 3: all-zero block"),
        "{text}"
    );
    assert!(text.contains("5 errors, 2 warnings"), "{text}");

    // The mount agrees: the slot-1 file reads, the zeroed block reads as zeros
    // (the AEAD cannot see it: that is why fsck warns), the bad block is EIO.
    m.mount(&[]).unwrap();
    assert_eq!(fs::read(m.p("slot1")).unwrap(), data);
    let z = fs::read(m.p("zeroed")).unwrap();
    assert_eq!(&z[3 * 4096..4 * 4096], &[0u8; 4096][..]);
    let e = fs::read(m.p("bad-tag")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    m.unmount();

    // Only a warning left: exit 2.
    for n in ["bad-tag", "cut", "torn", "header", "dir/alien", "slot1"] {
        fs::remove_file(m.b(n)).unwrap();
    }
    let (code, v) = fsck(&m.kms, &m.backing);
    assert_eq!(code, 2, "{v:#}");
    // A tampered config: reported, nothing else checked.
    let conf = m.b("kmsfs.conf");
    let orig = fs::read_to_string(&conf).unwrap();
    fs::write(
        &conf,
        orig.replace("\"max_files\":100000", "\"max_files\":100001"),
    )
    .unwrap();
    let (code, v) = fsck(&m.kms, &m.backing);
    assert_eq!(code, 4, "{v:#}");
    assert_eq!(
        problems(&v, "kmsfs.conf"),
        [p("error", "config", None)],
        "{v:#}"
    );
    assert_eq!(v["files"], 0);
}

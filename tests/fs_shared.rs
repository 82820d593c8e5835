//! Shared storage: two kmsfs daemons (two processes, each with its own DEK cache) serve
//! ONE backing directory at the same time, with one `kmsfs kms serve` on 127.0.0.1 as
//! their KMS. Each sees what the other writes, appends, truncates, renames and unlinks,
//! and concurrent partial-block writes from both never lose each other's bytes (the
//! daemons' OFD byte-range locks). KMS calls are counted from the server's request log.
//! Needs /dev/fuse and root, like the other mount tests.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
mod kms_http_support;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use fsmount::{pattern, Mounted};
use kms_http_support::{count_requests, ServerProc, SECRET_ID, SECRET_KEY};

/// A daemon on `backing` whose KMS is the server at `url`; unmounted on drop.
fn mount(url: &str, backing: &Path, extra: &[&str]) -> Mounted {
    Mounted::remote(url, backing, extra, SECRET_ID, SECRET_KEY)
}

fn read_all(f: &mut fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

const KIB: usize = 1024;
/// The file written by both daemons at once: 512 blocks of 4 KiB.
const BLOCKS: usize = 512;

/// The 1-KiB slot `s` of block `b`: slots 0 and 2 are daemon A's, 1 and 3 B's.
fn slot(b: usize, s: usize) -> Vec<u8> {
    pattern(1_000_003 + (b * 4 + s) as u64, KIB)
}

/// Daemon `who` (0 = A, 1 = B) writes each of its two 1-KiB slots of every block once,
/// in the same order as the other: both are in the same block at about the same time.
fn write_slots(m: &Mounted, who: usize, start: &std::sync::Barrier) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("blocks.bin"))
        .unwrap();
    start.wait();
    for b in 0..BLOCKS {
        for s in [who, who + 2] {
            f.write_all_at(&slot(b, s), (b * 4 * KIB + s * KIB) as u64)
                .unwrap();
        }
    }
}

#[test]
fn two_daemons_share_one_backing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProc::in_dir(tmp.path(), None);
    let backing = tmp.path().join("backing");
    fs::create_dir_all(&backing).unwrap();
    // A makes the volume; B then mounts it while A stays mounted. Both spellings of the option.
    let a = mount(&server.url, &backing, &["-o", "shared_storage"]);
    let b = mount(&server.url, &backing, &["--shared-storage"]);
    let decrypts = || count_requests(&server.log_lines(), "Decrypt", SECRET_ID, "OK");

    // A writes, B reads byte for byte, and the other way round. B has its own DEK cache:
    // reading A's file costs it a Decrypt at the server.
    let big = pattern(1, 300_000);
    let d0 = decrypts();
    fs::write(a.p("a.bin"), &big).unwrap();
    assert_eq!(fs::read(b.p("a.bin")).unwrap(), big);
    let d1 = decrypts();
    assert!(d1 > d0, "B read A's file without a Decrypt at the server");
    fs::write(b.p("b.txt"), b"written by daemon B").unwrap();
    assert_eq!(fs::read(a.p("b.txt")).unwrap(), b"written by daemon B");
    assert!(count_requests(&server.log_lines(), "GenerateDataKey", SECRET_ID, "OK") >= 1);

    // Appends from both to one file, in turns: each by a fresh O_APPEND open, then through
    // files both keep open (the kernel's size of B's file is then A's append behind).
    let mut want = Vec::new();
    for i in 0..10 {
        let (m, who) = if i % 2 == 0 { (&a, "A") } else { (&b, "B") };
        let line = format!("line {i} appended by {who}\n");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(m.p("log.txt"))
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
        want.extend_from_slice(line.as_bytes());
    }
    let mut fa = fs::OpenOptions::new()
        .append(true)
        .open(a.p("log.txt"))
        .unwrap();
    let mut fb = fs::OpenOptions::new()
        .append(true)
        .open(b.p("log.txt"))
        .unwrap();
    for i in 10..20 {
        let (f, who) = if i % 2 == 0 {
            (&mut fa, "A")
        } else {
            (&mut fb, "B")
        };
        let line = format!("line {i} appended by {who} (kept open)\n");
        f.write_all(line.as_bytes()).unwrap();
        want.extend_from_slice(line.as_bytes());
    }
    drop((fa, fb));
    assert_eq!(
        String::from_utf8_lossy(&fs::read(a.p("log.txt")).unwrap()),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(fs::read(b.p("log.txt")).unwrap(), want);

    // Both daemons write disjoint 1-KiB ranges inside the same 4-KiB blocks, at once:
    // each write is a read-modify-write of its block, which the locks serialise.
    fs::write(a.p("blocks.bin"), vec![0u8; BLOCKS * 4 * KIB]).unwrap();
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| write_slots(&a, 0, &start));
        s.spawn(|| write_slots(&b, 1, &start));
    });
    let mut expect = Vec::with_capacity(BLOCKS * 4 * KIB);
    for blk in 0..BLOCKS {
        for s in 0..4 {
            expect.extend_from_slice(&slot(blk, s));
        }
    }
    for (m, who) in [(&a, "A"), (&b, "B")] {
        let got = fs::read(m.p("blocks.bin")).unwrap();
        assert_eq!(got.len(), expect.len());
        let lost: Vec<(usize, usize)> = (0..BLOCKS * 4)
            .filter(|i| got[i * KIB..(i + 1) * KIB] != expect[i * KIB..(i + 1) * KIB])
            .map(|i| (i / 4, i % 4))
            .collect();
        assert!(
            lost.is_empty(),
            "read through {who}: {} of {} 1-KiB ranges lost (block, slot): {lost:?}",
            lost.len(),
            BLOCKS * 4
        );
    }

    // Truncation in A, seen by B: through a fresh open, and through a file B keeps open
    // while A truncates it to nothing and writes it anew (a new header, a new file key).
    let mut held = fs::File::open(b.p("a.bin")).unwrap();
    assert_eq!(read_all(&mut held), big);
    fs::OpenOptions::new()
        .write(true)
        .open(a.p("a.bin"))
        .unwrap()
        .set_len(5000)
        .unwrap();
    assert_eq!(fs::metadata(b.p("a.bin")).unwrap().len(), 5000);
    assert_eq!(fs::read(b.p("a.bin")).unwrap(), &big[..5000]);
    assert_eq!(read_all(&mut held), &big[..5000]);
    let renewed = pattern(2, 9000);
    fs::write(a.p("a.bin"), &renewed).unwrap();
    assert_eq!(read_all(&mut held), renewed);
    assert_eq!(fs::read(b.p("a.bin")).unwrap(), renewed);
    drop(held);

    // Rename and unlink in A, seen by B (which looked the names up before).
    assert!(b.p("b.txt").exists());
    fs::rename(a.p("b.txt"), a.p("c.txt")).unwrap();
    assert!(!b.p("b.txt").exists(), "B still sees the old name");
    assert_eq!(fs::read(b.p("c.txt")).unwrap(), b"written by daemon B");
    fs::remove_file(a.p("c.txt")).unwrap();
    assert!(!b.p("c.txt").exists(), "B still sees the unlinked file");
    let names = |m: &Mounted| {
        let mut v: Vec<String> = fs::read_dir(m.p(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&a), names(&b));
    assert_eq!(names(&b), ["a.bin", "blocks.bin", "log.txt"]);
    drop((a, b));
}

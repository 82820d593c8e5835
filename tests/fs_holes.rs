//! Holes: `cp --sparse=always` of a 1 GiB file with three data extents through the mount
//! keeps it sparse on the backing disk; SEEK_DATA / SEEK_HOLE report the extents;
//! `fallocate --punch-hole` and `--zero-range` (whole blocks punched in the backing file,
//! partial ones re-sealed) read as zeros, also after a remount, and fsck finds the volume
//! clean. Every expectation is checked against the same operations on the plain disk.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;

use fsmount::{pattern, run_fsck, run_ok, Mounted};

const MIB: u64 = 1 << 20;
const EXTENTS: [(u64, u64); 3] = [(0, MIB), (400 * MIB, 401 * MIB), (1023 * MIB, 1024 * MIB)];

/// (start, end) of each data extent of `p`, by SEEK_DATA / SEEK_HOLE.
fn extents(p: &Path) -> Vec<(u64, u64)> {
    let f = File::open(p).unwrap();
    let size = f.metadata().unwrap().len() as i64;
    let mut out = Vec::new();
    let mut at = 0i64;
    while at < size {
        // SAFETY: lseek on our fd.
        let d = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if d < 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENXIO)
            );
            break;
        }
        // SAFETY: as above.
        let h = unsafe { libc::lseek(f.as_raw_fd(), d, libc::SEEK_HOLE) };
        assert!(h > d, "SEEK_HOLE {h} after SEEK_DATA {d}");
        out.push((d as u64, h as u64));
        at = h;
    }
    out
}

fn fallocate(args: &[&str], p: &Path) {
    run_ok(Command::new("fallocate").args(args).arg(p));
}

/// Whether the two files hold the same bytes (cmp, without reading them into memory).
fn same(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

/// The regions the test changes (around each extent, and the end), compared byte for byte
/// (the whole 1 GiB is compared once, after the remount).
fn same_regions(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let size = fa.metadata().unwrap().len();
    if size != fb.metadata().unwrap().len() {
        return false;
    }
    [0, 399 * MIB, 1022 * MIB].iter().all(|&at| {
        let n = (3 * MIB).min(size - at) as usize;
        let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
        fa.read_exact_at(&mut x, at).unwrap();
        fb.read_exact_at(&mut y, at).unwrap();
        x == y
    })
}

#[test]
fn sparse_copies_seek_data_hole_punch_and_zero_range() {
    let mut m = Mounted::new(&[]);
    let src = m.dir.path().join("src");
    let f = File::create(&src).unwrap();
    f.set_len(1024 * MIB).unwrap();
    for (i, (a, b)) in EXTENTS.iter().enumerate() {
        f.write_all_at(&pattern(i as u64, (b - a) as usize), *a)
            .unwrap();
    }
    drop(f);
    assert_eq!(extents(&src), EXTENTS, "the source (ext4)");

    let dst = m.p("dst");
    run_ok(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&src)
            .arg(&dst),
    );
    assert!(same_regions(&src, &dst));
    let stored = fs::metadata(m.b("dst")).unwrap().blocks() * 512;
    assert!(
        stored < 8 * MIB,
        "the backing file takes {stored} bytes for 3 MiB of data"
    );
    assert_eq!(
        extents(&dst),
        EXTENTS,
        "SEEK_DATA/SEEK_HOLE through the mount"
    );

    // The same changes on the plain disk and through the mount: a punch with partial
    // blocks at both ends, one of whole blocks, a zero range, one at the end, one that
    // grows the file.
    for (args, what) in [
        (
            vec!["--punch-hole", "-o", "1000", "-l", "70000"],
            "punch, partial edges",
        ),
        (
            vec![
                "--punch-hole",
                "-o",
                &*format!("{}", 400 * MIB + 8192),
                "-l",
                "65536",
            ],
            "punch, whole blocks",
        ),
        (
            vec![
                "--zero-range",
                "-o",
                &*format!("{}", 400 * MIB + 300_000),
                "-l",
                "5000",
            ],
            "zero range",
        ),
        (
            vec![
                "--punch-hole",
                "-o",
                &*format!("{}", 1024 * MIB - 10_000),
                "-l",
                "10000",
            ],
            "punch to the end",
        ),
        (
            vec![
                "--zero-range",
                "-o",
                &*format!("{}", 1024 * MIB),
                "-l",
                "100000",
            ],
            "zero range, growing",
        ),
    ] {
        let a: Vec<&str> = args.iter().map(|s| &**s).collect();
        fallocate(&a, &src);
        fallocate(&a, &dst);
        assert_eq!(
            fs::metadata(&dst).unwrap().len(),
            fs::metadata(&src).unwrap().len(),
            "{what}"
        );
        assert!(same_regions(&src, &dst), "{what}: contents differ");
    }
    // A write into a punched range, then a remount: everything from the backing files.
    let w = OpenOptions::new().write(true).open(&dst).unwrap();
    w.write_all_at(b"after the punch", 2000).unwrap();
    drop(w);
    let w = OpenOptions::new().write(true).open(&src).unwrap();
    w.write_all_at(b"after the punch", 2000).unwrap();
    drop(w);
    m.unmount();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    m.mount(&[]).unwrap();
    assert!(same(&src, &m.p("dst")), "after the remount");
    let ext = extents(&m.p("dst"));
    assert_eq!(ext.first().map(|e| e.0), Some(0));
    assert!(
        ext.iter()
            .all(|(a, b)| a % 4096 == 0 && (b % 4096 == 0 || *b == 1024 * MIB + 100_000)),
        "{ext:?}"
    );
    let stored = fs::metadata(m.b("dst")).unwrap().blocks() * 512;
    assert!(stored < 8 * MIB, "{stored}");
}

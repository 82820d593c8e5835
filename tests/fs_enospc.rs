//! A full backing disk: a volume on an 8 MiB tmpfs or a 16 MiB loop ext4, written until ENOSPC. The
//! application must see ENOSPC (never EIO), files fsynced before must stay intact (byte
//! for byte and by `kmsfs fsck`), an overwrite at ENOSPC must not destroy the block it
//! overwrites, and freeing space must make the volume writable again.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fsmount::{kmsfs_on, pattern, Mounted};

/// A test's scratch directory (its small filesystem goes at `small`).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kmsfs-enospc")
        .tempdir()
        .unwrap()
}

/// A small filesystem mounted for the test, unmounted on drop (also when the test fails).
struct SmallFs(PathBuf);

impl SmallFs {
    /// An 8 MiB tmpfs.
    fn tmpfs(at: &Path) -> SmallFs {
        fs::create_dir_all(at).unwrap();
        fsmount::sh(&format!(
            "mount -t tmpfs -o size=8m kmsfs-enospc {}",
            at.display()
        ));
        SmallFs(at.to_owned())
    }

    /// A 16 MiB ext4 on a loop device (`mount -o loop` frees the device on unmount).
    fn ext4(at: &Path, image: &Path) -> SmallFs {
        fs::create_dir_all(at).unwrap();
        fsmount::sh(&format!(
            "truncate -s 16m {img} && mkfs.ext4 -q -F {img} && mount -o loop {img} {at}",
            img = image.display(),
            at = at.display()
        ));
        SmallFs(at.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn errno(r: std::io::Result<()>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// One problem `kmsfs fsck --json` reports: (path, kind, block).
type Problem = (String, String, Option<u64>);

/// `kmsfs fsck --json`: its exit code and problems.
fn fsck(m: &Mounted) -> (Option<i32>, Vec<Problem>) {
    let out = kmsfs_on(&m.kms)
        .args(["fsck", "--json"])
        .arg(&m.backing)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let probs = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
                p["block"].as_u64(),
            )
        })
        .collect();
    (out.status.code(), probs)
}

/// `kmsfs fsck` exits 0 and finds nothing (`when`: for the message).
fn assert_fsck_clean(m: &Mounted, when: &str) {
    let (code, probs) = fsck(m);
    assert_eq!(
        (code, probs.clone()),
        (Some(0), vec![]),
        "fsck {when}: {probs:?}"
    );
}

#[test]
fn full_tmpfs_gives_enospc_keeps_fsynced_files_and_recovers() {
    let dir = scratch_dir();
    let _small = SmallFs::tmpfs(&dir.path().join("small"));
    fill_and_check(dir.path());
}

#[test]
fn full_loop_ext4_gives_enospc_keeps_fsynced_files_and_recovers() {
    let dir = scratch_dir();
    let _small = SmallFs::ext4(&dir.path().join("small"), &dir.path().join("ext4.img"));
    fill_and_check(dir.path());
}

/// The volume lives in `dir/small/backing` (a small filesystem), its KMS in `dir/kms`.
fn fill_and_check(dir: &Path) {
    let backing = dir.join("small/backing");
    fs::create_dir(&backing).unwrap();
    let mut m = Mounted::existing(&dir.join("kms"), &backing, &[]).unwrap();

    // Before the disk fills: fsynced files, read back exactly.
    let keep = pattern(1, 1_000_000);
    let over = pattern(2, 64 * 4096);
    let tail = pattern(6, 3 * 4096 + 1234); // a partial last block, fsynced
    for (name, data) in [("keep", &keep), ("over", &over), ("tail", &tail)] {
        let f = File::create(m.p(name)).unwrap();
        f.write_all_at(data, 0).unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep);

    // Fill: odd-sized appends until the backing tmpfs is full, then smaller and smaller
    // ones, so that not even one more page fits.
    let mut fill = File::create(m.p("fill")).unwrap();
    let mut written = 0usize;
    for size in [10_000, 4096, 1000, 100, 1] {
        let e = loop {
            let chunk = pattern(written as u64, size + written % 7);
            match fill.write(&chunk) {
                Ok(n) => written += n,
                Err(e) => break e,
            }
            assert!(
                written < 32 << 20,
                "wrote 32 MiB into a 16 MiB filesystem without an error"
            );
        };
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "filling by {size}: {e}"
        );
    }
    eprintln!("ENOSPC after {written} bytes");
    // Again: still ENOSPC, not EIO (the failed write must not leave a torn block behind).
    let again = fill.write_all(&[1u8; 10_000]);
    assert_eq!(errno(again), Some(libc::ENOSPC), "a second write at ENOSPC");
    // A new file cannot get its header written either: ENOSPC.
    let mut newf = File::create(m.p("new")).unwrap();
    let r = newf
        .write_all(&[5u8; 100_000])
        .and_then(|_| newf.sync_all());
    assert_eq!(errno(r), Some(libc::ENOSPC), "a new file at ENOSPC");

    // Appending to a fsynced partial last block re-seals it longer: at ENOSPC that must
    // fail before the block is rewritten (a short pwrite would tear the fsynced bytes).
    let t = OpenOptions::new().append(true).open(m.p("tail")).unwrap();
    assert_eq!(
        errno(t.write_all_at(&[9u8; 5000], 0)),
        Some(libc::ENOSPC),
        "append to tail"
    );
    drop(t);
    assert_eq!(
        fs::read(m.p("tail")).unwrap(),
        tail,
        "tail after an append at ENOSPC"
    );

    // Overwrite blocks of "over" at ENOSPC: in place (full and partial blocks). Each
    // either succeeds or fails with ENOSPC, and the file reads back as old or new bytes.
    let newer = pattern(3, 64 * 4096);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("over"))
        .unwrap();
    let mut expect = over.clone();
    for (off, len) in [
        (0usize, 4096usize),
        (5 * 4096 + 100, 3000),
        (10 * 4096, 3 * 4096 + 17),
    ] {
        match f.write_all_at(&newer[off..off + len], off as u64) {
            Ok(()) => expect[off..off + len].copy_from_slice(&newer[off..off + len]),
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "overwrite at {off}: {e}"
            ),
        }
    }
    assert_eq!(
        fs::read(m.p("over")).unwrap(),
        expect,
        "over after overwrites at ENOSPC"
    );
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep, "keep after ENOSPC");
    let got = fs::read(m.p("fill")).unwrap();
    assert!(got.len() >= written, "fill lost acknowledged bytes");
    drop((fill, newf, f));
    m.unmount();
    assert_fsck_clean(&m, "at ENOSPC");

    // Free space: writable again.
    m.mount(&[]).unwrap();
    fs::remove_file(m.p("fill")).unwrap();
    let more = pattern(4, 500_000);
    let f = File::create(m.p("after")).unwrap();
    f.write_all_at(&more, 0).unwrap();
    f.sync_all().unwrap();
    assert_eq!(fs::read(m.p("after")).unwrap(), more);
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep);
    drop(f);
    m.unmount();
    assert_fsck_clean(&m, "after freeing space");
}

/// `-o writeback_cache`: writes land in the page cache, so a full disk is reported by
/// `fsync` (and `close`), as ENOSPC, never EIO and never not at all; fsynced files stay
/// intact and freeing space makes the volume writable again.
#[test]
fn writeback_cache_reports_a_full_disk_at_fsync() {
    let dir = scratch_dir();
    let _small = SmallFs::tmpfs(&dir.path().join("small"));
    let backing = dir.path().join("small/backing");
    fs::create_dir(&backing).unwrap();
    let wb = ["-o", "writeback_cache"];
    let mut m = Mounted::existing(&dir.path().join("kms"), &backing, &wb).unwrap();

    // The success it interrupts: 1 MB written and fsynced, on disk, read back.
    let keep = pattern(1, 1_000_000);
    let f = File::create(m.p("keep")).unwrap();
    f.write_all_at(&keep, 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(fs::metadata(m.b("keep")).unwrap().len() > 1_000_000);

    // 12 MB into an 8 MiB disk: write() takes it (the page cache), fsync cannot.
    let big = pattern(3, 12_000_000);
    let f = File::create(m.p("big")).unwrap();
    f.write_all_at(&big, 0).unwrap();
    assert_eq!(errno(f.sync_all()), Some(libc::ENOSPC), "fsync of 12 MB");
    drop(f);
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep, "keep at ENOSPC");
    m.unmount();
    let (code, probs) = fsck(&m);
    assert!(
        probs.iter().all(|(path, _, _)| path.ends_with("big")),
        "fsck at ENOSPC: only the unsynced file may be short: {probs:?} (exit {code:?})"
    );

    // Free space: writable again, through the cache and fsync.
    m.mount(&wb).unwrap();
    fs::remove_file(m.p("big")).unwrap();
    let more = pattern(4, 500_000);
    let f = File::create(m.p("after")).unwrap();
    f.write_all_at(&more, 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.unmount();
    m.mount(&[]).unwrap();
    assert_eq!(fs::read(m.p("after")).unwrap(), more);
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep);
}

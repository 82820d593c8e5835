//! Bad input and faults: tampered blocks and headers, a refused key, a tampered or
//! unknown config, a second mount, a full backing disk.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use fsmount::{kmsfs, kmsfs_on, paths_in, pattern, Mounted};

fn read_err(p: &std::path::Path, off: u64, len: usize) -> Option<i32> {
    let f = File::open(p).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)
        .err()
        .and_then(|e| e.raw_os_error())
}

#[test]
fn tampered_and_truncated_blocks_fail_with_eio_and_a_log_line() {
    let (m, data, raw) = Mounted::with_file_f(9, 5 * 4096);
    // Flip one ciphertext byte of block 2 in the backing file.
    let off = 1024 + 2 * 4136 + 100;
    let mut b = [0u8; 1];
    raw.read_exact_at(&mut b, off).unwrap();
    raw.write_all_at(&[b[0] ^ 0x01], off).unwrap();
    // Block 2 fails, blocks 0, 1, 3, 4 still read.
    assert_eq!(read_err(&m.p("f"), 2 * 4096, 10), Some(libc::EIO));
    let f = File::open(m.p("f")).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, data[4096..8192]);
    f.read_exact_at(&mut buf, 3 * 4096).unwrap();
    assert_eq!(buf, data[3 * 4096..4 * 4096]);
    let log = m.log_text();
    assert!(
        log.contains(&format!("file=/f block=2 key_id={}", m.cmk())),
        "log must name file (in the mount), block and key: {log}"
    );
    // Swap blocks 0 and 1: both fail.
    let mut b0 = vec![0u8; 4136];
    let mut b1 = vec![0u8; 4136];
    raw.read_exact_at(&mut b0, 1024).unwrap();
    raw.read_exact_at(&mut b1, 1024 + 4136).unwrap();
    raw.write_all_at(&b1, 1024).unwrap();
    raw.write_all_at(&b0, 1024 + 4136).unwrap();
    assert_eq!(read_err(&m.p("f"), 0, 10), Some(libc::EIO));
    assert_eq!(read_err(&m.p("f"), 4096, 10), Some(libc::EIO));
    // A block copied from another file fails too.
    fs::write(m.p("g"), &data).unwrap();
    let rawg = File::open(m.b("g")).unwrap();
    let mut g3 = vec![0u8; 4136];
    rawg.read_exact_at(&mut g3, 1024 + 3 * 4136).unwrap();
    raw.write_all_at(&g3, 1024 + 3 * 4136).unwrap();
    assert_eq!(read_err(&m.p("f"), 3 * 4096, 10), Some(libc::EIO));
    // Truncating the backing file mid-block: the last block fails.
    fs::write(m.p("t"), &data[..10_000]).unwrap();
    let rt = OpenOptions::new().write(true).open(m.b("t")).unwrap();
    let len = rt.metadata().unwrap().len();
    rt.set_len(len - 7).unwrap();
    drop(rt);
    std::thread::sleep(Duration::from_millis(1100)); // attribute cache
    assert_eq!(read_err(&m.p("t"), 8192, 100), Some(libc::EIO));
    // ... and to a torn length (inside the block overhead).
    let rt = OpenOptions::new().write(true).open(m.b("t")).unwrap();
    rt.set_len(1024 + 2 * 4136 + 20).unwrap();
    drop(rt);
    std::thread::sleep(Duration::from_millis(1100));
    let mut all = Vec::new();
    let r = File::open(m.p("t")).unwrap().read_to_end(&mut all);
    assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::EIO));
    let s = fsmount::sh(&format!(
        "{} stats --json {}",
        env!("CARGO_BIN_EXE_kmsfs"),
        m.mnt.display()
    ));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert!(v["integrity_failures"].as_u64().unwrap() >= 5, "{s}");
}

#[test]
fn corrupt_header_fails_open_with_eio() {
    let m = Mounted::new(&[]);
    fs::write(m.p("h"), b"some content").unwrap();
    fs::write(m.p("h2"), b"some content").unwrap();
    let raw = OpenOptions::new().write(true).open(m.b("h")).unwrap();
    raw.write_all_at(b"X", 3).unwrap(); // magic
    let raw2 = OpenOptions::new().write(true).open(m.b("h2")).unwrap();
    raw2.write_all_at(b"\xff\xff", 40).unwrap(); // the slot's blob
    for n in ["h", "h2"] {
        let e = File::open(m.p(n)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{n}");
    }
    let log = m.log_text();
    assert!(
        log.contains("cannot open file header") && log.contains("file=/h "),
        "{log}"
    );
}

#[test]
fn refused_key_gives_eacces_and_names_the_key() {
    refused_key(&[]);
}

/// With the page cache holding writes, the refusal comes back from fsync.
#[test]
fn refused_key_gives_eacces_with_writeback_cache() {
    refused_key(&["-o", "writeback_cache"]);
}

fn refused_key(extra: &[&str]) {
    let m = Mounted::new(&[&["--dek-cache-max-age", "1"], extra].concat());
    fs::write(m.p("f"), b"before the key was disabled").unwrap();
    // A file that stays open, with its plaintext in the kernel's page cache.
    let held = File::open(m.p("f")).unwrap();
    let mut buf = [0u8; 6];
    held.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"before");
    let cmk = m.cmk();
    m.kms_call("DisableKey", serde_json::json!({ "KeyId": cmk }));
    // Past the 1 s maximum age (with its jitter) and the expiry scan's period, with room
    // for a loaded machine.
    std::thread::sleep(Duration::from_millis(2500));
    let e = File::open(m.p("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    // Past the DEK age bound, the open file is refused too (no cached key, no cached pages).
    let e = held.read_exact_at(&mut buf, 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    // New files cannot get a key either.
    let mut f = File::create(m.p("new")).unwrap();
    let e = f.write_all(b"x").and_then(|_| f.sync_all()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let log = m.log_text();
    assert!(log.contains(&cmk) && log.contains("CmkDisabled"), "{log}");
    // Re-enabled: readable again.
    m.kms_call("EnableKey", serde_json::json!({ "KeyId": cmk }));
    assert_eq!(fs::read(m.p("f")).unwrap(), b"before the key was disabled");
}

#[test]
fn config_tamper_unknown_feature_second_mount_and_hint() {
    let mut m = Mounted::new(&[]);
    fs::write(m.p("f"), b"data").unwrap();
    // A second mount of the same backing dir is refused.
    let other = m.dir.path().join("mnt2");
    fs::create_dir(&other).unwrap();
    let out = kmsfs_on(&m.kms)
        .args(["mount"])
        .arg(&m.backing)
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already mounted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmount();
    let conf = m.b("kmsfs.conf");
    let orig = fs::read_to_string(&conf).unwrap();
    let try_mount = |m: &mut Mounted| m.mount(&[]);
    // Tampered body: MAC mismatch; an unknown feature flag; a KMS hint that does not
    // match the host's KMS.
    for (from, to, said) in [
        ("\"block_size\":4096", "\"block_size\":8192", "tampered"),
        (
            "\"features\":[",
            "\"features\":[\"from-the-future\",",
            "from-the-future",
        ),
        (
            "\"kms_hint\":\"embedded\"",
            "\"kms_hint\":\"https://evil.example\"",
            "evil.example",
        ),
    ] {
        fs::write(&conf, orig.replace(from, to)).unwrap();
        let e = try_mount(&mut m).unwrap_err();
        assert!(e.contains(said), "{e}");
    }
    // Restored: mounts and reads.
    fs::write(&conf, &orig).unwrap();
    try_mount(&mut m).unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), b"data");
}

#[test]
fn background_mount_umount_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let [kms, backing, mnt] = paths_in(dir.path(), ["kms", "b", "m"]);
    fs::create_dir(&mnt).unwrap();
    // An empty directory becomes a new volume on its first mount (a missing one is refused).
    fs::create_dir(&backing).unwrap();
    // `kmsfs mount` without -f: returns once the background daemon serves the mount.
    let mount = || fsmount::run_ok(kmsfs_on(&kms).arg("mount").arg(&backing).arg(&mnt));
    mount();
    struct Guard(std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            if fsmount::is_mounted(&self.0) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
        }
    }
    let _g = Guard(mnt.clone());
    assert!(
        fsmount::is_mounted(&mnt),
        "mount returned before the mount was ready"
    );
    fs::write(mnt.join("x"), b"hello").unwrap();
    assert_eq!(fs::read(mnt.join("x")).unwrap(), b"hello");
    let s = kmsfs()
        .arg("stats")
        .arg("--json")
        .arg(&mnt)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["deks_generated"], 1);
    let pid = fsmount::getxattr(&mnt, "user.kmsfs.pid").expect("daemon pid xattr");
    fsmount::run_ok(kmsfs().arg("umount").arg(&mnt));
    assert!(!fsmount::is_mounted(&mnt));
    if let Ok(pid) = pid.trim().parse::<i32>() {
        // Gone, or a zombie waiting for a reaper that is not us.
        let st = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            st.is_empty() || st.contains(") Z "),
            "daemon still running after umount: {st}"
        );
    }
    // SIGTERM unmounts cleanly too.
    mount();
    let pid = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(pid.contains(&*mnt.to_string_lossy()));
    let pid: i32 = fsmount::getxattr(&mnt, "user.kmsfs.pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling our daemon.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = std::time::Instant::now();
    while fsmount::is_mounted(&mnt) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!fsmount::is_mounted(&mnt), "SIGTERM did not unmount");
    // The mount helper mode never initialises a volume.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = kmsfs_on(&kms)
        .arg("mount")
        .arg("--no-init")
        .arg(&empty)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn full_backing_disk_gives_enospc_and_keeps_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    fsmount::sh(&format!(
        "mount -t tmpfs -o size=2m tmpfs {}",
        small.display()
    ));
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _u = Umount(small.clone());
    let backing = small.join("b");
    fs::create_dir(&backing).unwrap();
    let kms = dir.path().join("kms");
    let m = Mounted::existing(&kms, &backing, &[]).unwrap();
    let keep = pattern(5, 100_000);
    fs::write(m.p("keep"), &keep).unwrap();
    let mut f = File::create(m.p("fill")).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = f.write_all(&chunk) {
            err = Some(e);
            break;
        }
    }
    let err = err
        .or_else(|| f.sync_all().err())
        .expect("writing 6 MiB into 2 MiB must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep);
    let mut s = String::new();
    File::open(m.p("keep"))
        .unwrap()
        .seek(SeekFrom::Start(0))
        .unwrap();
    let _ = File::open(m.p("keep")).unwrap().read_to_string(&mut s);
}

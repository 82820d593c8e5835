//! `kmsfs rewrap`, on real mounts: headers are read straight from the backing files,
//! KMS calls counted from the KMS's audit log.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
mod kms_http_support;
#[path = "common/powercut.rs"]
mod powercut;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fsmount::{audit_count, init_volume, kmsfs, kmsfs_on, pattern, run_fsck, run_ok, Mounted};
use powercut::{mix, seeded};

/// Header geometry of the default volume (docs/FORMAT.md): prefix 32 bytes, two slots.
const PREFIX: usize = 32;
const SLOT: usize = (1024 - PREFIX) / 2;

/// The active slot of a backing file's header: (generation, wrapped DEK). The checksum
/// is not checked here; a torn slot is never left by these tests.
fn active_slot(p: &Path) -> (u32, Vec<u8>) {
    let b = fs::read(p).unwrap();
    (0..2)
        .filter_map(|i| {
            let s = &b[PREFIX + i * SLOT..PREFIX + (i + 1) * SLOT];
            let gen = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
            let len = u16::from_be_bytes([s[4], s[5]]) as usize;
            (len > 0).then(|| (gen, s[6..6 + len].to_vec()))
        })
        .max_by_key(|(g, _)| *g)
        .unwrap()
}

/// The key id and version a KMS CiphertextBlob names ("KM", 1, L, key id, version).
fn blob_key(blob: &[u8]) -> (String, u32) {
    let l = blob[3] as usize;
    let id = String::from_utf8(blob[4..4 + l].to_vec()).unwrap();
    let v = &blob[4 + l..8 + l];
    (id, u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// Content of test file `i`: small, distinct, sometimes more than one block.
fn content(i: usize) -> Vec<u8> {
    pattern(i as u64, 1 + (i * 37) % 5000)
}

fn rel(i: usize) -> String {
    format!("d{:02}/f{:04}", i % 20, i)
}

/// A volume at `dir/b` on the KMS at `dir/kms`, made with `kmsfs init ARGS`, and mounted.
fn mounted_volume(dir: &Path, args: &[&str]) -> (PathBuf, PathBuf, Mounted) {
    let (kms, backing) = (dir.join("kms"), dir.join("b"));
    init_volume(&kms, &backing, args);
    let m = Mounted::existing(&kms, &backing, &[]).unwrap();
    (kms, backing, m)
}

/// A mounted volume holding files 0..n (`rel`, `content`), a DEK per `per_dek` of them:
/// its KMS, backing directory, mount and CMK.
fn volume_of_files(dir: &Path, per_dek: usize, n: usize) -> (PathBuf, PathBuf, Mounted, String) {
    let per_dek = per_dek.to_string();
    let (kms, backing, m) = mounted_volume(dir, &["--dek-max-files", &per_dek]);
    let cmk = m.cmk();
    write_files(&m, 0..n);
    (kms, backing, m, cmk)
}

fn write_files(m: &Mounted, range: std::ops::Range<usize>) {
    for d in 0..20 {
        fs::create_dir_all(m.p(&format!("d{d:02}"))).unwrap();
    }
    for i in range {
        fs::write(m.p(&rel(i)), content(i)).unwrap();
    }
}

fn check_files(m: &Mounted, range: std::ops::Range<usize>) {
    for i in range {
        let got = fs::read(m.p(&rel(i))).unwrap_or_else(|e| panic!("{}: {e}", rel(i)));
        assert!(got == content(i), "{}: content differs", rel(i));
    }
}

fn rewrap_cmd(kms: &Path, backing: &Path, extra: &[&str]) -> Command {
    let mut c = kmsfs();
    c.arg("--kms")
        .arg(kms)
        .arg("rewrap")
        .arg(backing)
        .arg("--json")
        .args(extra);
    c
}

/// Runs a rewrap to the end: (exit code, JSON summary, stderr).
fn rewrap(kms: &Path, backing: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = rewrap_cmd(kms, backing, extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rewrap printed no JSON ({e}): {stderr}"));
    (out.status.code().unwrap_or(-1), v, stderr)
}

/// The lock file a running (or killed) rewrap leaves at the backing root.
const LOCK: &str = "kmsfs.rewrap.lock";

/// Runs a rewrap that must stop before it does anything: (exit code, stderr).
fn rewrap_refused(kms: &Path, backing: &Path) -> (Option<i32>, String) {
    let out = rewrap_cmd(kms, backing, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.stdout.is_empty(), "it printed a summary; {err}");
    (out.status.code(), err)
}

/// Every regular file under `dir` that has a header (non-empty), config and rewrap lock
/// excluded.
fn backing_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            v.extend(backing_files(&e.path()));
        } else if t.is_file()
            && e.file_name() != "kmsfs.conf"
            && e.file_name() != LOCK
            && e.metadata().unwrap().len() > 0
        {
            v.push(e.path());
        }
    }
    v
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// How many of `files` have had their header re-wrapped (generation past 1).
fn moved_headers(files: &[PathBuf]) -> usize {
    files.iter().filter(|p| active_slot(p).0 > 1).count()
}

/// A child process that is killed (SIGKILL) and reaped when dropped, also when the test
/// fails halfway.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a rewrap throttled to `rate` files/s and returns once it has moved at least
/// `moved` of `files`' headers, still running.
fn start_slow_rewrap(
    kms: &Path,
    backing: &Path,
    rate: u32,
    files: &[PathBuf],
    moved: usize,
) -> Killed {
    let mut child = Killed(
        rewrap_cmd(kms, backing, &["--rate-limit", &rate.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while moved_headers(files) < moved {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the rewrap ended too soon"
        );
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// The config's and every one of `files`' bytes.
fn volume_bytes(backing: &Path, files: &[PathBuf]) -> Vec<Vec<u8>> {
    std::iter::once(backing.join("kmsfs.conf"))
        .chain(files.iter().cloned())
        .map(|p| fs::read(p).unwrap())
        .collect()
}

/// Asserts that the config and `files` hold the bytes [`volume_bytes`] read before.
fn assert_unchanged(backing: &Path, files: &[PathBuf], before: &[Vec<u8>]) {
    let now = volume_bytes(backing, files);
    let paths = std::iter::once(backing.join("kmsfs.conf")).chain(files.iter().cloned());
    for ((p, was), is) in paths.zip(before).zip(&now) {
        assert!(was == is, "{} changed", p.display());
    }
}

/// Asserts that every one of `files` has its DEK wrapped under `key` (id, version).
fn assert_all_under(files: &[PathBuf], key: &(String, u32)) {
    for p in files {
        assert_eq!(&blob_key(&active_slot(p).1), key, "{}", p.display());
    }
}

#[test]
fn rewrap_a_mounted_volume_to_a_new_cmk_then_disable_the_old_one() {
    const N: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let (kms, backing, mut m, old_cmk) = volume_of_files(dir.path(), 100, N);
    let old_deks: HashSet<Vec<u8>> = backing_files(&backing)
        .iter()
        .map(|p| active_slot(p).1)
        .collect();
    assert_eq!(old_deks.len(), N / 100, "shared DEKs, 100 files each");
    let new_cmk = m.kms_call("CreateKey", serde_json::json!({"Alias": "rewrap-target"}))["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let re_before = audit_count(&kms, "ReEncrypt");

    // Rewrap while the mount is in use: files keep being written (and some deleted)
    // during the run.
    let t0 = Instant::now();
    let child = rewrap_cmd(
        &kms,
        &backing,
        &["--to-key", "alias/rewrap-target", "--rate-limit", "1500"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut during = 0usize;
    let mut deleted = HashSet::new();
    let mut child: Child = child;
    while child.try_wait().unwrap().is_none() {
        fs::write(m.p(&format!("during{during}")), content(10_000 + during)).unwrap();
        if during % 3 == 2 {
            fs::remove_file(m.p(&format!("during{}", during - 2))).unwrap();
            deleted.insert(during - 2);
        }
        during += 1;
        std::thread::sleep(Duration::from_millis(5));
        assert!(t0.elapsed() < Duration::from_secs(120), "rewrap hangs");
    }
    let out = child.wait_with_output().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rewrap failed: {stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("rewrap of {N} files while mounted ({during} written meanwhile): {secs:.2} s\n{s}");
    assert!(during > 0);
    assert_eq!(s["target_key"], new_cmk.as_str(), "{s}");
    assert_eq!(s["config"], "rewrapped");
    assert_eq!(n(&s, "failed"), 0, "{s}");
    let scanned = n(&s, "files_scanned");
    assert!(scanned >= N as u64 && scanned <= (N + during) as u64, "{s}");
    assert_eq!(
        n(&s, "rewrapped") + n(&s, "already_current") + n(&s, "empty"),
        scanned
    );
    assert!(n(&s, "rewrapped") >= N as u64, "{s}");
    // Shared DEKs: one ReEncrypt per distinct wrapped DEK, plus one for the config key.
    let distinct = n(&s, "distinct_deks_rewrapped");
    assert!(
        distinct >= old_deks.len() as u64 && distinct <= old_deks.len() as u64 + 2,
        "{s}"
    );
    assert_eq!(
        audit_count(&kms, "ReEncrypt") - re_before,
        1 + distinct as usize
    );
    assert_eq!(m.cmk(), new_cmk, "the config names the new CMK");
    // The config was replaced, the one-mount lock still holds.
    let second = Mounted::existing(&kms, &backing, &[])
        .err()
        .unwrap_or_default();
    assert!(second.contains("already mounted"), "second mount: {second}");

    // Files written after the rewrap get DEKs under the new CMK: the daemon reloaded.
    for i in 0..50 {
        fs::write(m.p(&format!("after{i}")), content(20_000 + i)).unwrap();
    }
    assert!(m.log_text().contains("reloaded"), "{}", m.log_text());
    for p in backing_files(&backing) {
        let (gen, blob) = active_slot(&p);
        assert_eq!(
            blob_key(&blob).0,
            new_cmk,
            "{} (generation {gen})",
            p.display()
        );
    }

    // The old CMK goes away; a fresh mount reads everything, byte for byte.
    m.kms_call("DisableKey", serde_json::json!({ "KeyId": old_cmk }));
    m.unmount();
    m.mount(&[]).unwrap();
    check_files(&m, 0..N);
    for i in (0..during).filter(|i| !deleted.contains(i)) {
        assert!(fs::read(m.p(&format!("during{i}"))).unwrap() == content(10_000 + i));
    }
    for i in 0..50 {
        assert!(fs::read(m.p(&format!("after{i}"))).unwrap() == content(20_000 + i));
    }
}

#[test]
fn rotate_in_place_killed_halfway_then_rerun_completes() {
    const N: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let (kms, backing, mut m, cmk) = volume_of_files(dir.path(), 10, N);
    fs::write(m.p("empty"), b"").unwrap();
    m.unmount();
    m.kms_call("RotateKey", serde_json::json!({ "KeyId": cmk }));
    let files = backing_files(&backing);
    assert_eq!(files.len(), N);

    // Offline, throttled so that it is still running when killed.
    let mut child = start_slow_rewrap(&kms, &backing, 800, &files, 300);
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let done = moved_headers(&files);
    eprintln!("killed after {done} of {N} headers");
    assert!((300..N).contains(&done), "{done}");

    // Every file reads before the rerun: half under version 1, half under version 2.
    m.mount(&[]).unwrap();
    check_files(&m, 0..N);
    m.unmount();

    let (code, s, err) = rewrap(&kms, &backing, &[]);
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(
        s["config"], "current",
        "the killed run had moved the config first"
    );
    assert_eq!(
        (s["target_key"].as_str().unwrap(), n(&s, "target_version")),
        (cmk.as_str(), 2)
    );
    assert_eq!(n(&s, "files_scanned"), N as u64 + 1, "{s}");
    assert_eq!(n(&s, "rewrapped"), (N - done) as u64, "{s}");
    assert_eq!(n(&s, "already_current"), done as u64, "{s}");
    assert_eq!(n(&s, "empty"), 1, "{s}");
    assert_eq!(n(&s, "failed"), 0, "{s}");
    assert_all_under(&files, &(cmk.clone(), 2));

    // A rerun is a no-op: no header and no config byte changes.
    let before = volume_bytes(&backing, &files);
    let (code, s, _) = rewrap(&kms, &backing, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        (n(&s, "rewrapped"), n(&s, "already_current")),
        (0, N as u64),
        "{s}"
    );
    assert_eq!(s["config"], "current");
    assert_unchanged(&backing, &files, &before);
    m.mount(&[]).unwrap();
    check_files(&m, 0..N);
}

#[test]
fn a_corrupt_header_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, backing, mut m) = mounted_volume(dir.path(), &[]);
    for i in 0..5 {
        fs::write(m.p(&format!("f{i}")), content(i)).unwrap();
    }
    m.unmount();
    // Flip a bit in f2's file id: both slot checksums fail, the header is unreadable.
    let bad = backing.join("f2");
    let mut b = fs::read(&bad).unwrap();
    b[20] ^= 1;
    fs::write(&bad, &b).unwrap();
    let target = m.kms_call("CreateKey", serde_json::json!({"Alias": "corrupt-target"}))["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, s, _) = rewrap(&kms, &backing, &["--to-key", &target]);
    assert_eq!(code, 4, "a failed file fails the run: {s}");
    assert_eq!((n(&s, "rewrapped"), n(&s, "failed")), (4, 1), "{s}");
    assert_eq!(s["failures"][0]["path"], "f2");
    assert!(
        s["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("header"),
        "{s}"
    );
    assert_eq!(fs::read(&bad).unwrap(), b, "the corrupt file is untouched");
    // Text mode names the file on stderr.
    let out = kmsfs_on(&kms).arg("rewrap").arg(&backing).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("f2: unreadable header"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4 already current, 0 empty, 1 failed"),
        "{text}"
    );
    m.mount(&[]).unwrap();
    for i in [0, 1, 3, 4] {
        assert_eq!(fs::read(m.p(&format!("f{i}"))).unwrap(), content(i));
    }
    assert!(fs::read(m.p("f2")).is_err());
}

/// `kmsfs --kms URL kms ACTION ARGS…` against the server: the response JSON.
fn remote_kms(url: &str, args: &[&str]) -> serde_json::Value {
    let out = run_ok(kmsfs().arg("--kms").arg(url).arg("kms").args(args));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rewrap_through_the_remote_kms_while_mounted() {
    use kms_http_support::{count_requests, ServerProc, SECRET_ID, SECRET_KEY};
    std::env::remove_var("KMSFS_KMS_CREDENTIALS");
    std::env::set_var("TENCENTCLOUD_SECRET_ID", SECRET_ID);
    std::env::set_var("TENCENTCLOUD_SECRET_KEY", SECRET_KEY);
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProc::in_dir(tmp.path(), None);
    let backing = tmp.path().join("backing");
    fs::create_dir_all(&backing).unwrap();
    let url = server.url.clone();
    let mut m = Mounted::existing(Path::new(&url), &backing, &["--dek-policy", "per-file"])
        .unwrap_or_else(|e| panic!("mount via {url}: {e}"));
    let old_cmk = m.cmk();
    for i in 0..20 {
        fs::write(m.p(&format!("f{i}")), content(i)).unwrap();
    }
    let new_cmk = remote_kms(&url, &["CreateKey", "--Alias", "remote-target"])["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, s, err) = rewrap(
        Path::new(&url),
        &backing,
        &["--to-key", "alias/remote-target"],
    );
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(
        (n(&s, "rewrapped"), n(&s, "distinct_deks_rewrapped")),
        (20, 20),
        "{s}"
    );
    // Counted at the server: one ReEncrypt per DEK plus the config's.
    let lines = server.log_lines();
    assert_eq!(count_requests(&lines, "ReEncrypt", SECRET_ID, "OK"), 21);
    fs::write(m.p("after"), b"after the rewrap").unwrap();
    assert_eq!(blob_key(&active_slot(&m.b("after")).1).0, new_cmk);
    remote_kms(&url, &["DisableKey", "--KeyId", &old_cmk]);
    m.unmount();
    m.mount(&[]).unwrap();
    for i in 0..20 {
        assert_eq!(fs::read(m.p(&format!("f{i}"))).unwrap(), content(i));
    }
    assert_eq!(fs::read(m.p("after")).unwrap(), b"after the rewrap");
}

/// Takes (`F_OFD_SETLK`, F_WRLCK) or releases (F_UNLCK) the header lock `kmsfs rewrap`
/// uses, on an open backing file.
fn ofd_header_lock(f: &fs::File, kind: i32) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a zeroed flock is valid; fcntl on an fd we own.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_len = 1024;
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
        0
    );
}

#[test]
fn the_daemon_creates_and_truncates_headers_under_the_rewrap_lock() {
    let m = Mounted::new(&[]);
    fs::write(m.p("e"), b"").unwrap();
    fs::write(m.p("t"), b"to be truncated").unwrap();
    for (name, op) in [("e", "first write"), ("t", "truncate to zero")] {
        let raw = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.b(name))
            .unwrap();
        ofd_header_lock(&raw, libc::F_WRLCK);
        let p = m.p(name);
        let t = std::thread::spawn(move || match name {
            "e" => fs::write(&p, b"first bytes").unwrap(),
            _ => fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(0)
                .unwrap(),
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(!t.is_finished(), "{op} went ahead under the rewrap's lock");
        assert_eq!(raw.metadata().unwrap().len() == 0, name == "e", "{op}");
        ofd_header_lock(&raw, libc::F_UNLCK);
        t.join().unwrap();
    }
    assert_eq!(fs::read(m.p("e")).unwrap(), b"first bytes");
    assert_eq!(fs::metadata(m.b("t")).unwrap().len(), 0);
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn is_stopped(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
}

/// Lines in the KMS audit log: every call, successful or not.
fn audit_lines(kms: &Path) -> usize {
    fs::read_to_string(kms.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn a_second_rewrap_is_refused_while_one_runs_and_a_killed_one_leaves_no_lock() {
    const N: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (kms, backing, m, cmk) = volume_of_files(dir.path(), 10, N);
    m.kms_call("RotateKey", serde_json::json!({ "KeyId": cmk }));
    let files = backing_files(&backing);
    assert_eq!(files.len(), N);
    let lock = backing.join(LOCK);

    // A slow rewrap of the mounted volume, stopped (SIGSTOP, the lock still held) once it
    // has moved some headers, so that nothing changes while the second one tries.
    let mut first = start_slow_rewrap(&kms, &backing, 100, &files, 20);
    let pid = first.0.id();
    let t0 = Instant::now();
    // SAFETY: kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
    while !is_stopped(pid) {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    let line = fs::read_to_string(&lock).unwrap();
    assert!(
        line.starts_with(&format!("kmsfs-rewrap pid={pid} ")),
        "{line}"
    );

    // The lock file is not part of the volume: the mount does not show it.
    let listed: Vec<_> = fs::read_dir(m.p(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!listed.iter().any(|n| n == LOCK), "{listed:?}");
    let looked_up = fs::symlink_metadata(m.p(LOCK)).unwrap_err();
    assert_eq!(looked_up.kind(), std::io::ErrorKind::NotFound);

    // The second rewrap is refused, names the first, and changes nothing, not even a KMS
    // call.
    let moved = moved_headers(&files);
    let before = volume_bytes(&backing, &files);
    let calls = audit_lines(&kms);
    let (code, err) = rewrap_refused(&kms, &backing);
    eprintln!("second rewrap: {err}");
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("another kmsfs rewrap of this volume is running")
            && err.contains(&format!("(pid {pid} on host ")),
        "{err}"
    );
    assert_eq!(audit_lines(&kms), calls, "the refused run called the KMS");
    assert_unchanged(&backing, &files, &before);
    assert_eq!(
        fs::read_to_string(&lock).unwrap(),
        line,
        "the lock line changed"
    );

    // kill -9 of the first: its lock file stays, unlocked, and fsck ignores it.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(lock.exists());
    assert_eq!(moved_headers(&files), moved);
    eprintln!("killed after {moved} of {N} headers");
    assert!((20..N).contains(&moved), "{moved}");
    let out = run_fsck(&kms, &backing, &[]);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(!report.contains(LOCK), "{report}");

    // A third run takes the lock over and finishes; it removes the lock file.
    let (code, s, err) = rewrap(&kms, &backing, &[]);
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["config"], "current", "the first run had moved the config");
    assert_eq!(
        (
            n(&s, "rewrapped"),
            n(&s, "already_current"),
            n(&s, "failed")
        ),
        ((N - moved) as u64, moved as u64, 0),
        "{s}"
    );
    assert_all_under(&files, &(cmk, 2));
    assert!(!lock.exists(), "the finished run left its lock file");
    check_files(&m, 0..N);
}

#[test]
fn rewrap_leaves_alone_a_volume_file_with_the_lock_name_and_a_non_volume() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, backing) = (dir.path().join("kms"), dir.path().join("b"));
    init_volume(&kms, &backing, &[]);
    // A file with the name, not written by a rewrap (say a volume file from before the
    // name was reserved): refused, untouched, not removed.
    fs::write(backing.join(LOCK), b"KMSF...").unwrap();
    let (code, err) = rewrap_refused(&kms, &backing);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not a kmsfs rewrap lock"), "{err}");
    assert_eq!(fs::read(backing.join(LOCK)).unwrap(), b"KMSF...");
    // Not a volume: no lock file is left there.
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let (code, err) = rewrap_refused(&kms, &plain);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not a kmsfs volume"), "{err}");
    assert_eq!(fs::read_dir(&plain).unwrap().count(), 0);
}

/// A power cut in the middle of a rewrap, simulated as tests/fs_crash.rs simulates one. The
/// run's only writes are one header slot per file (then `fdatasync`) and the config (a
/// temporary file, fsync, rename, fsync of the directory), so a cut leaves each file as it
/// was before the run (S), as it is after (C), or with its slot write torn (S and C mixed
/// sector by sector), and the config old, new, or old beside a temporary file cut short.
/// Each round builds such a volume at random (any subset of files, not only a prefix of the
/// run's order): every file reads back exactly through a mount, fsck finds nothing but
/// corrupt spare slots on the torn files, and a rerun completes with every header under
/// the target key and fsck clean.
#[test]
fn a_power_cut_at_any_point_of_a_rewrap_loses_no_file() {
    const N: usize = 120;
    let rounds = 6;
    let (seed, mut rng) = seeded("rewrap power cut");
    let mut m = Mounted::new(&[]);
    write_files(&m, 0..N);
    m.unmount();
    let files = backing_files(&m.backing);
    let rels: Vec<PathBuf> = files
        .iter()
        .map(|p| p.strip_prefix(&m.backing).unwrap().to_owned())
        .collect();
    let before = volume_bytes(&m.backing, &files);
    let target = m.kms_call("CreateKey", serde_json::json!({"Alias": "cut-target"}))["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, s, err) = rewrap(&m.kms, &m.backing, &["--to-key", &target]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["config"], "rewrapped", "{s}");
    assert_eq!(n(&s, "rewrapped"), files.len() as u64, "{s}");
    let after = volume_bytes(&m.backing, &files);
    let key = blob_key(&active_slot(&files[0]).1);
    assert_eq!(key.0, target);
    // volume_bytes: the config first, then the files.
    for (i, (was, is)) in before.iter().zip(&after).enumerate() {
        assert!(
            was != is,
            "the rewrap did not change item {i}: the cut would test nothing"
        );
    }
    let (mut torn_total, mut old_total, mut new_total) = (0, 0, 0);
    for round in 0..rounds {
        let what = format!("round {round} (seed {seed})");
        let dir = m.dir.path().join(format!("cut{round}"));
        fs::create_dir(&dir).unwrap();
        fsmount::sh(&format!(
            "cp -a {}/. {}",
            m.backing.display(),
            dir.display()
        ));
        let mut torn = BTreeSet::new();
        for (i, rel) in rels.iter().enumerate() {
            let (s, c) = (&before[i + 1], &after[i + 1]);
            let bytes = match rng.below(3) {
                0 => {
                    old_total += 1;
                    s.clone()
                }
                1 => {
                    new_total += 1;
                    c.clone()
                }
                _ => {
                    torn.insert(rel.to_string_lossy().into_owned());
                    mix(s, c, 512, 50, &mut rng)
                }
            };
            fs::write(dir.join(rel), bytes).unwrap();
        }
        torn_total += torn.len();
        let config = match rng.below(3) {
            0 => "new",
            1 => {
                fs::write(dir.join("kmsfs.conf"), &before[0]).unwrap();
                "old"
            }
            _ => {
                fs::write(dir.join("kmsfs.conf"), &before[0]).unwrap();
                let cut = rng.below(after[0].len() as u64) as usize;
                fs::write(dir.join(".kmsfs.conf.tmp"), &after[0][..cut]).unwrap();
                "old, the new one cut short beside it"
            }
        };
        let what = format!("{what}, config {config}, {} torn", torn.len());
        {
            let cut = Mounted::existing(&m.kms, &dir, &[])
                .unwrap_or_else(|e| panic!("{what}: mount: {e}"));
            for i in 0..N {
                let got =
                    fs::read(cut.p(&rel(i))).unwrap_or_else(|e| panic!("{what}: {}: {e}", rel(i)));
                assert!(got == content(i), "{what}: {}: content differs", rel(i));
            }
        }
        let out = run_fsck(&m.kms, &dir, &["--json"]);
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: fsck: {e}"));
        assert_eq!(n(&v, "errors"), 0, "{what}: {v:#}");
        for p in v["problems"].as_array().unwrap() {
            let path = p["path"].as_str().unwrap();
            assert!(
                p["kind"] == "header-slot" && torn.contains(path),
                "{what}: fsck reports a problem on a file whose slot write was not torn: {p}"
            );
        }
        let (code, s, err) = rewrap(&m.kms, &dir, &["--to-key", &target]);
        assert_eq!(code, 0, "{what}: the rerun: {err}");
        assert_eq!(
            s["config"],
            if config == "new" {
                "current"
            } else {
                "rewrapped"
            },
            "{what}: {s}"
        );
        assert!(
            !dir.join(".kmsfs.conf.tmp").exists(),
            "{what}: the rerun left the temporary config"
        );
        assert_all_under(&backing_files(&dir), &key);
        let out = run_fsck(&m.kms, &dir, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: fsck after the rerun: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!(
        "rewrap power cut: {rounds} cuts, {N} files each: {old_total} left old, {new_total} \
         new, {torn_total} with the slot write torn; every file read back, every rerun clean"
    );
    assert!(
        torn_total > 0,
        "no slot write was torn: the rounds test nothing"
    );
}

//! Many more live inodes than the daemon may open fds: the kernel keeps every inode it
//! looked up, and the daemon must not hold one fd per inode (RLIMIT_NOFILE is often
//! 1024–4096 for a daemon, and an untar keeps tens of thousands of inodes alive).

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use fsmount::{getxattr, pattern, sh, Mounted};

/// The daemon's fd limit for this test (soft and hard), set after the mount.
const MAX_FDS: usize = 256;
/// The fd budget the daemon is given (`-o max_fds`), under that limit.
const BUDGET: &str = "max_fds=200";
const DIRS: usize = 3;
const PER_DIR: usize = 1000;

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn name(i: usize) -> String {
    format!("d{}/f{i}", i % DIRS)
}

fn data(i: usize) -> Vec<u8> {
    // Sizes from 0 to just over two blocks.
    pattern(i as u64, (i * 37) % 8300)
}

#[test]
fn thousands_of_inodes_under_a_low_fd_limit() {
    thousands_of_inodes(Mounted::new(&["-o", BUDGET]));
}

/// The same, every inode reached by name (no file handles, as an ordinary user's daemon).
#[test]
fn thousands_of_inodes_under_a_low_fd_limit_without_file_handles() {
    thousands_of_inodes(Mounted::without_handles(&["-o", BUDGET]));
}

fn thousands_of_inodes(m: Mounted) {
    let pid = m.pid().unwrap();
    sh(&format!("prlimit --pid {pid} --nofile={MAX_FDS}:{MAX_FDS}"));
    let mut max_seen = 0;
    let sample = |max_seen: &mut usize| {
        let n = open_fds(pid);
        *max_seen = (*max_seen).max(n);
        assert!(n < MAX_FDS, "the daemon holds {n} fds (limit {MAX_FDS})");
    };

    for d in 0..DIRS {
        fs::create_dir(m.p(&format!("d{d}"))).unwrap();
    }
    for i in 0..DIRS * PER_DIR {
        fs::write(m.p(&name(i)), data(i)).unwrap_or_else(|e| panic!("create {}: {e}", name(i)));
        if i % 250 == 0 {
            sample(&mut max_seen);
        }
    }
    // The kernel still remembers (nearly) all of them: far more inodes than fds.
    let stats: serde_json::Value =
        serde_json::from_str(&getxattr(&m.mnt, "user.kmsfs.stats").unwrap()).unwrap();
    let inodes = stats["inodes"].as_u64().unwrap();
    assert!(inodes > 2 * MAX_FDS as u64, "only {inodes} live inodes");

    // ls -l, stat and read back every file.
    for d in 0..DIRS {
        let out = sh(&format!("ls -l {}", m.p(&format!("d{d}")).display()));
        assert_eq!(out.lines().filter(|l| l.starts_with('-')).count(), PER_DIR);
    }
    for i in 0..DIRS * PER_DIR {
        let md = fs::symlink_metadata(m.p(&name(i))).unwrap();
        assert_eq!(md.len(), data(i).len() as u64, "{}", name(i));
        assert_eq!(md.nlink(), 1);
        assert_eq!(fs::read(m.p(&name(i))).unwrap(), data(i), "{}", name(i));
        if i % 250 == 0 {
            sample(&mut max_seen);
        }
    }

    // Renames (across directories), hard links, chmod and truncate by path.
    for i in (0..DIRS * PER_DIR).step_by(30) {
        let to = format!("d{}/r{i}", (i + 1) % DIRS);
        fs::rename(m.p(&name(i)), m.p(&to)).unwrap();
        assert_eq!(fs::read(m.p(&to)).unwrap(), data(i));
        assert!(fs::symlink_metadata(m.p(&name(i))).is_err());
    }
    for i in (1..DIRS * PER_DIR).step_by(30) {
        let to = format!("d{}/l{i}", (i + 2) % DIRS);
        fs::hard_link(m.p(&name(i)), m.p(&to)).unwrap();
        assert_eq!(fs::metadata(m.p(&to)).unwrap().nlink(), 2);
        assert_eq!(
            fs::metadata(m.p(&to)).unwrap().ino(),
            fs::metadata(m.p(&name(i))).unwrap().ino()
        );
        let mut f = OpenOptions::new().append(true).open(m.p(&to)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let mut want = data(i);
        want.extend_from_slice(b"tail");
        assert_eq!(fs::read(m.p(&name(i))).unwrap(), want);
        fs::set_permissions(m.p(&name(i)), fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(fs::metadata(m.p(&to)).unwrap().mode() & 0o777, 0o640);
    }
    sample(&mut max_seen);

    // Unlinked while open: still readable, writable and stat-able through the open file.
    let mut open = Vec::new();
    for i in (2..DIRS * PER_DIR).step_by(60) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.p(&name(i)))
            .unwrap();
        fs::remove_file(m.p(&name(i))).unwrap();
        assert!(fs::symlink_metadata(m.p(&name(i))).is_err());
        open.push((i, f));
    }
    std::thread::sleep(Duration::from_millis(1100)); // past the attribute TTL
    for (i, f) in &mut open {
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, data(*i), "unlinked {}", name(*i));
        f.write_all(b"more").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        got.clear();
        f.read_to_end(&mut got).unwrap();
        let mut want = data(*i);
        want.extend_from_slice(b"more");
        assert_eq!(got, want);
        let md = f.metadata().unwrap();
        assert_eq!(md.len(), want.len() as u64);
        assert_eq!(md.nlink(), 0);
    }
    sample(&mut max_seen);
    drop(open);

    // A file deleted behind the daemon's back: an error (ESTALE/ENOENT), or, while the
    // daemon still holds an fd of it, the deleted file (no links), never a crash.
    let victim = name(4);
    let c = CString::new(m.p(&victim).as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string; the fd is closed below.
    let pfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    assert!(pfd >= 0);
    fs::remove_file(m.b(&victim)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is writable; pfd is ours.
    let r = unsafe { libc::fstat(pfd, st.as_mut_ptr()) };
    let e = std::io::Error::last_os_error().raw_os_error();
    // SAFETY: pfd is ours.
    unsafe { libc::close(pfd) };
    // SAFETY: initialised when fstat succeeded.
    let nlink = (r == 0).then(|| unsafe { st.assume_init() }.st_nlink);
    assert!(
        (r < 0 && matches!(e, Some(libc::ESTALE) | Some(libc::ENOENT))) || nlink == Some(0),
        "fstat of a file deleted in the backing dir: {r} {e:?} nlink {nlink:?}"
    );
    assert!(fs::symlink_metadata(m.p(&victim)).is_err());

    // Still fine afterwards: a last pass over what is left.
    let mut n = 0;
    for d in 0..DIRS {
        for e in fs::read_dir(m.p(&format!("d{d}"))).unwrap() {
            let e = e.unwrap();
            let mut f = File::open(e.path()).unwrap();
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).unwrap();
            n += 1;
        }
    }
    assert!(n > DIRS * PER_DIR - 100, "{n} files left");
    sample(&mut max_seen);
    eprintln!("{inodes} live inodes; at most {max_seen} daemon fds (limit {MAX_FDS})");
}

/// A backing inode number freed while the kernel still remembers its inode is soon
/// reused by a new file: the new file must get its own inode, not the stale one.
#[test]
fn reused_backing_inode_numbers_are_new_files() {
    reused_numbers(Mounted::new(&["-o", "max_fds=64"]));
}

/// The same without file handles: only names (and the fds held) tell files apart.
#[test]
fn reused_backing_inode_numbers_are_new_files_without_file_handles() {
    reused_numbers(Mounted::without_handles(&["-o", "max_fds=64"]));
}

fn reused_numbers(m: Mounted) {
    let mut reused = 0;
    // Read after each unlink, so the daemon's fd cache (16 fds at max_fds=64) lets go of
    // the unlinked file and the backing fs may hand its number out again.
    for i in 0..24 {
        fs::write(m.p(&format!("filler{i}")), b"filler").unwrap();
    }
    for k in 0..40 {
        let old = m.p(&format!("old{k}"));
        fs::write(&old, b"old").unwrap();
        let old_bino = fs::metadata(m.b(&format!("old{k}"))).unwrap().ino();
        // An O_PATH fd keeps the kernel's inode (no FORGET) across the unlink.
        let c = CString::new(old.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string; the fd is closed below.
        let pfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        assert!(pfd >= 0);
        fs::remove_file(&old).unwrap();
        for i in 0..24 {
            assert_eq!(fs::read(m.p(&format!("filler{i}"))).unwrap(), b"filler");
        }
        for j in 0..4 {
            let rel = format!("new{k}_{j}");
            if j % 2 == 0 {
                fs::write(m.p(&rel), b"new").unwrap();
                fs::set_permissions(m.p(&rel), fs::Permissions::from_mode(0o600)).unwrap();
                assert_eq!(fs::read(m.p(&rel)).unwrap(), b"new");
            } else {
                fs::create_dir(m.p(&rel)).unwrap();
                fs::set_permissions(m.p(&rel), fs::Permissions::from_mode(0o700)).unwrap();
                fs::write(m.p(&format!("{rel}/x")), b"x").unwrap();
            }
            if fs::metadata(m.b(&rel)).unwrap().ino() == old_bino {
                reused += 1;
            }
        }
        // The deleted file stays deleted: its inode did not become one of the new files.
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: st is writable; pfd is ours.
        if unsafe { libc::fstat(pfd, st.as_mut_ptr()) } == 0 {
            // SAFETY: fstat succeeded.
            let st = unsafe { st.assume_init() };
            assert_eq!(st.st_nlink, 0, "old{k}, deleted, came back as a new file");
        }
        // SAFETY: pfd is ours.
        unsafe { libc::close(pfd) };
    }
    eprintln!("{reused} backing inode numbers reused while remembered");
}

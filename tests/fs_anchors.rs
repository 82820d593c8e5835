//! Inodes reached by name (no file handles, as an ordinary user's daemon): with a cache of
//! 16 fds (`-o max_fds=64`), every entry is re-opened from its parent again and again, so
//! the names the daemon keeps must follow renames (of files and of directories above
//! them), hard links, unlinks, replacing renames and exchanges, and a name that now
//! holds another file must never be taken for the old one.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use fsmount::Mounted;

const SIBLINGS: usize = 120;

/// Touches `SIBLINGS` other files, so none of the fds cached before stays cached.
fn churn(m: &Mounted) {
    for i in 0..SIBLINGS {
        let p = m.p(&format!("churn/d{}/f{i}", i % 40));
        assert_eq!(fs::read(&p).unwrap(), format!("churn {i}").as_bytes());
    }
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let (a, b) = (
        CString::new(from.as_os_str().as_bytes()).unwrap(),
        CString::new(to.as_os_str().as_bytes()).unwrap(),
    );
    // SAFETY: valid C strings; renameat2 takes no other memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn names_follow_every_namespace_change_through_a_tiny_fd_cache() {
    let m = Mounted::without_handles(&["-o", "max_fds=64"]);
    let pid = m.pid().unwrap();
    assert!(
        m.log_text().contains("file handles unusable"),
        "the daemon has file handles: {}",
        m.log_text()
    );
    for i in 0..SIBLINGS {
        let d = m.p(&format!("churn/d{}", i % 40));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), format!("churn {i}")).unwrap();
    }

    // A deep file, its directory renamed twice above it (across directories).
    fs::create_dir_all(m.p("a/b/c/d/e")).unwrap();
    fs::create_dir(m.p("x")).unwrap();
    fs::write(m.p("a/b/c/d/e/f"), b"deep").unwrap();
    let deep = fs::File::open(m.p("a/b/c/d/e/f")).unwrap();
    drop(deep);
    churn(&m);
    fs::rename(m.p("a/b"), m.p("x/y")).unwrap();
    churn(&m);
    assert_eq!(fs::read(m.p("x/y/c/d/e/f")).unwrap(), b"deep");
    fs::rename(m.p("x/y/c"), m.p("c2")).unwrap();
    churn(&m);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("c2/d/e/f"))
        .unwrap();
    f.write_all(b"er").unwrap();
    drop(f);
    churn(&m);
    assert_eq!(fs::read(m.p("c2/d/e/f")).unwrap(), b"deeper");
    assert!(fs::metadata(m.p("a/b")).is_err() && fs::metadata(m.p("x/y/c")).is_err());

    // Hard links: the name the file was made by goes; the other still leads to it.
    fs::create_dir(m.p("p")).unwrap();
    fs::create_dir(m.p("q")).unwrap();
    fs::write(m.p("p/h"), b"linked").unwrap();
    fs::hard_link(m.p("p/h"), m.p("q/h2")).unwrap();
    churn(&m);
    fs::remove_file(m.p("p/h")).unwrap();
    churn(&m);
    let md = fs::metadata(m.p("q/h2")).unwrap();
    assert_eq!((md.nlink(), md.len()), (1, 6));
    assert_eq!(fs::read(m.p("q/h2")).unwrap(), b"linked");

    // A rename over another file: the replaced file, still open, keeps its content; the
    // name now leads to the moved one.
    fs::write(m.p("r1"), b"moved").unwrap();
    fs::write(m.p("r2"), b"replaced file").unwrap();
    let mut held = fs::File::open(m.p("r2")).unwrap();
    fs::rename(m.p("r1"), m.p("r2")).unwrap();
    churn(&m);
    assert_eq!(fs::read(m.p("r2")).unwrap(), b"moved");
    let mut s = String::new();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(s, "replaced file");
    assert_eq!(held.metadata().unwrap().nlink(), 0);
    drop(held);

    // RENAME_EXCHANGE of two directories: each one's files are found under the other name.
    fs::create_dir(m.p("e1")).unwrap();
    fs::create_dir(m.p("e2")).unwrap();
    fs::write(m.p("e1/one"), b"1").unwrap();
    fs::write(m.p("e2/two"), b"2").unwrap();
    churn(&m);
    renameat2(&m.p("e1"), &m.p("e2"), libc::RENAME_EXCHANGE).unwrap();
    churn(&m);
    assert_eq!(fs::read(m.p("e2/one")).unwrap(), b"1");
    assert_eq!(fs::read(m.p("e1/two")).unwrap(), b"2");
    fs::write(m.p("e2/one2"), b"11").unwrap();
    churn(&m);
    assert_eq!(fs::read(m.p("e2/one2")).unwrap(), b"11");
    assert_eq!(fs::metadata(m.p("e2/one2")).unwrap().nlink(), 1);

    // A directory emptied and removed, another made under the same name.
    fs::remove_file(m.p("e1/two")).unwrap();
    fs::remove_dir(m.p("e1")).unwrap();
    fs::create_dir(m.p("e1")).unwrap();
    fs::write(m.p("e1/new"), b"n").unwrap();
    churn(&m);
    assert_eq!(fs::read(m.p("e1/new")).unwrap(), b"n");

    // A name that now holds another file (swapped behind the daemon's back) is not the
    // old file: the kernel's inode of the old one, kept by an O_PATH fd, gets ESTALE or
    // the old file, never the new one.
    fs::write(m.p("swap"), b"old, 13 bytes").unwrap();
    let c = CString::new(m.p("swap").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string; the fd is closed below.
    let pfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    assert!(pfd >= 0);
    churn(&m);
    fs::rename(m.b("swap"), m.b("swap.aside")).unwrap();
    fs::write(m.b("swap"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // past the attribute TTL
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is writable; pfd is ours.
    let r = unsafe { libc::fstat(pfd, st.as_mut_ptr()) };
    let e = std::io::Error::last_os_error().raw_os_error();
    // SAFETY: pfd is ours.
    unsafe { libc::close(pfd) };
    if r == 0 {
        // SAFETY: fstat succeeded.
        let size = unsafe { st.assume_init() }.st_size;
        assert_eq!(
            size, 13,
            "the old file's inode answered with another file's size"
        );
    } else {
        assert_eq!(e, Some(libc::ESTALE), "fstat of a swapped file");
    }

    let fds = open_fds(pid);
    assert!(fds <= 64, "the daemon holds {fds} fds (budget 64)");
    let stats: serde_json::Value =
        serde_json::from_str(&fsmount::getxattr(&m.mnt, "user.kmsfs.stats").unwrap()).unwrap();
    assert_eq!(stats["fd_cache_capacity"].as_u64(), Some(16), "{stats}");
    assert!(stats["cached_fds"].as_u64().unwrap() <= 16, "{stats}");
}

//! What the fast paths must not change: set-user-ID/set-group-ID still fall on writes,
//! truncates and chowns (the daemon clears them itself under FUSE_HANDLE_KILLPRIV_V2),
//! xattr answers follow every set and remove (the daemon remembers names), and with
//! `-o writeback_cache` written data stays in the page cache until close and then lands
//! whole. Modes and sizes are read from the backing files, outside the daemon.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use fsmount::{as_nobody, backing_size, pattern, Mounted};

/// Runs `cmd` as nobody, asserting success.
fn nobody_ok(cmd: &str) {
    let out = as_nobody(cmd);
    assert!(out.status.success(), "{cmd}: {out:?}");
}

/// Permission bits and set-ID bits of a backing file.
fn backing_mode(m: &Mounted, name: &str) -> u32 {
    fs::metadata(m.b(name)).unwrap().mode() & 0o7777
}

fn set_mode(m: &Mounted, name: &str, mode: u32) {
    fs::set_permissions(m.p(name), fs::Permissions::from_mode(mode)).unwrap();
    assert_eq!(backing_mode(m, name), mode, "{name} before");
}

#[test]
fn set_id_bits_fall_on_writes_truncates_and_chowns_as_on_a_local_filesystem() {
    let m = Mounted::new(&["-o", "allow_other"]);
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let mnt = m.mnt.display();
    for n in ["root", "write", "trunc", "sgid", "chown"] {
        fs::write(m.p(n), b"0123456789").unwrap();
    }

    // Root (CAP_FSETID) writes and truncates: the bits stay, as on ext4.
    set_mode(&m, "root", 0o6777);
    let f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("root"))
        .unwrap();
    (&f).write_all(b"more").unwrap();
    f.set_len(3).unwrap();
    drop(f);
    assert_eq!(
        backing_mode(&m, "root"),
        0o6777,
        "root writes and truncates"
    );

    // Anybody else: set-user-ID falls, and set-group-ID where group-executable.
    set_mode(&m, "write", 0o6777);
    nobody_ok(&format!("printf more >> {mnt}/write"));
    assert_eq!(backing_mode(&m, "write"), 0o777, "a user's write");
    assert_eq!(fs::read(m.p("write")).unwrap(), b"0123456789more");

    set_mode(&m, "trunc", 0o6777);
    nobody_ok(&format!("truncate -s 4 {mnt}/trunc"));
    assert_eq!(backing_mode(&m, "trunc"), 0o777, "a user's truncate");
    assert_eq!(fs::read(m.p("trunc")).unwrap(), b"0123");

    // Set-group-ID without group execute marks mandatory locking: it stays for a member
    // of the file's group (nobody's own here).
    std::os::unix::fs::chown(m.p("sgid"), None, Some(65534)).unwrap();
    set_mode(&m, "sgid", 0o6766);
    nobody_ok(&format!("printf more >> {mnt}/sgid"));
    assert_eq!(backing_mode(&m, "sgid"), 0o2766, "sgid without g+x");

    // chown, even to the same owner and by root, drops both (g+x).
    set_mode(&m, "chown", 0o6755);
    std::os::unix::fs::chown(m.p("chown"), None, None).unwrap();
    assert_eq!(backing_mode(&m, "chown"), 0o755, "chown(-1, -1)");
}

/// Makes `file` (ten bytes, group `gid`, `mode`), runs `op` on it ("truncate" or
/// "append") with `runner` in front; returns the mode after.
fn set_id_after(runner: &str, op: &str, file: &Path, gid: u32, mode: u32) -> u32 {
    fs::write(file, b"0123456789").unwrap();
    std::os::unix::fs::chown(file, Some(0), Some(gid)).unwrap();
    fs::set_permissions(file, fs::Permissions::from_mode(mode)).unwrap();
    let f = file.display();
    let cmd = match op {
        "truncate" => format!("{runner} truncate -s 4 {f}"),
        _ => format!("{runner} sh -c 'printf more >> {f}'"),
    };
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {out:?}");
    fs::metadata(file).unwrap().mode() & 0o7777
}

#[test]
fn set_id_bits_after_writes_and_truncates_match_ext4() {
    let m = Mounted::new(&["-o", "allow_other"]);
    let native = m.dir.path().join("native");
    fs::create_dir(&native).unwrap();
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    let nobody_fsetid = format!("{nobody} --inh-caps=+fsetid --ambient-caps=+fsetid");
    // CAP_FSETID held in a user namespace of its own counts for nothing here.
    let nobody_userns = format!("{nobody} unshare -r");
    let cases: [(&str, &str, u32, u32, u32); 10] = [
        (&nobody_userns, "truncate", 0, 0o6777, 0o777),
        // root without CAP_FSETID: the bits fall.
        (
            "setpriv --bounding-set=-fsetid",
            "truncate",
            0,
            0o6777,
            0o777,
        ),
        // nobody with CAP_FSETID: they stay.
        (&nobody_fsetid, "truncate", 0, 0o6777, 0o6777),
        ("", "truncate", 0, 0o6777, 0o6777),
        // Set-group-ID without group execute (mandatory locking, no privilege): it stays
        // for a member of the file's group, falls for anybody else.
        (nobody, "truncate", 65534, 0o2666, 0o2666),
        (nobody, "truncate", 0, 0o2666, 0o666),
        (nobody, "append", 65534, 0o2666, 0o2666),
        (nobody, "append", 0, 0o2666, 0o666),
        // With group execute it falls for members too.
        (nobody, "append", 65534, 0o2777, 0o777),
        (&nobody_fsetid, "append", 0, 0o6777, 0o6777),
    ];
    for dir in [&native, &m.mnt] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
        for (i, (runner, op, gid, mode, want)) in cases.iter().enumerate() {
            let f = dir.join(format!("f{i}"));
            let got = set_id_after(runner, op, &f, *gid, *mode);
            assert_eq!(
                got,
                *want,
                "{}: {runner} {op}, {mode:o} gid {gid}: {got:o}",
                f.display()
            );
        }
    }
}

fn getxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (cp, cn) = (
        CString::new(p.as_os_str().as_bytes()).unwrap(),
        CString::new(name).unwrap(),
    );
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a writable buffer of the length given.
    let n = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    Ok(buf[..n as usize].to_vec())
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let (cp, cn) = (
        CString::new(p.as_os_str().as_bytes()).unwrap(),
        CString::new(name).unwrap(),
    );
    // SAFETY: valid C strings and a value of the length given.
    let r = unsafe {
        libc::setxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}

#[test]
fn xattr_answers_follow_sets_removes_and_names_already_on_disk() {
    let mut m = Mounted::new(&[]);
    fs::write(m.p("f"), b"x").unwrap();
    m.unmount();
    // A name set on the backing file while unmounted is listed on first use.
    setxattr(&m.b("f"), "user.before", b"b");
    m.mount(&[]).unwrap();
    let f = m.p("f");
    assert_eq!(getxattr(&f, "user.before"), Ok(b"b".to_vec()));
    // Absent names: ENODATA, the answer the kernel asks for before writes and in `ls -l`.
    for absent in [
        "user.later",
        "security.capability",
        "system.posix_acl_access",
    ] {
        assert_eq!(getxattr(&f, absent), Err(libc::ENODATA), "{absent}");
    }
    fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"y")
        .unwrap();
    // Set through the mount after the names were known: visible at once.
    setxattr(&f, "user.later", b"v1");
    assert_eq!(getxattr(&f, "user.later"), Ok(b"v1".to_vec()));
    setxattr(&f, "user.later", b"v2");
    assert_eq!(getxattr(&f, "user.later"), Ok(b"v2".to_vec()));
    let (cp, cn) = (
        CString::new(f.as_os_str().as_bytes()).unwrap(),
        CString::new("user.before").unwrap(),
    );
    // SAFETY: valid C strings.
    assert_eq!(unsafe { libc::removexattr(cp.as_ptr(), cn.as_ptr()) }, 0);
    assert_eq!(getxattr(&f, "user.before"), Err(libc::ENODATA));
    assert_eq!(
        getxattr(&m.b("f"), "user.before"),
        Err(libc::ENODATA),
        "backing"
    );
    assert_eq!(
        getxattr(&m.b("f"), "user.later"),
        Ok(b"v2".to_vec()),
        "backing"
    );
    assert_eq!(fs::read(&f).unwrap(), b"xy");
}

/// Writes 256 KiB in 4 KiB pieces to `name` and reports the backing file's size just
/// before close, then checks what landed.
fn write_then_close(m: &Mounted, name: &str) -> u64 {
    let data = pattern(7, 256 << 10);
    let f = fs::File::create(m.p(name)).unwrap();
    for (i, chunk) in data.chunks(4096).enumerate() {
        f.write_all_at(chunk, (i * 4096) as u64).unwrap();
    }
    let before_close = fs::metadata(m.b(name)).unwrap().len();
    drop(f);
    assert_eq!(
        fs::metadata(m.b(name)).unwrap().len(),
        backing_size(data.len() as u64),
        "{name}: backing size after close"
    );
    assert_eq!(fs::read(m.p(name)).unwrap(), data, "{name}");
    before_close
}

#[test]
fn writeback_cache_holds_writes_until_close_and_then_loses_nothing() {
    // Without it, every write is on disk when write() returns.
    let m = Mounted::new(&[]);
    assert_eq!(write_then_close(&m, "through"), backing_size(256 << 10));
    drop(m);

    let mut m = Mounted::new(&["-o", "writeback_cache"]);
    assert!(
        write_then_close(&m, "cached") < backing_size(256 << 10),
        "writeback_cache: the pages wait in the kernel until close"
    );
    // Random overwrites, a truncate in the middle of a block, an extension past a hole,
    // appends: all equal to a model after a remount (read from disk, not the cache).
    let mut model = pattern(8, 300_000);
    let p = m.p("mixed");
    fs::write(&p, &model).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    for i in 0..200u64 {
        let off = (i * 7919 * 13) % 290_000;
        let piece = pattern(100 + i, 1 + (i as usize * 37) % 9000);
        f.write_all_at(&piece, off).unwrap();
        let end = off as usize + piece.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&piece);
    }
    f.set_len(123_457).unwrap();
    model.truncate(123_457);
    f.write_all_at(b"tail", 400_000).unwrap();
    model.resize(400_000, 0);
    model.extend_from_slice(b"tail");
    drop(f);
    let mut a = fs::OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"appended").unwrap();
    model.extend_from_slice(b"appended");
    drop(a);
    assert_eq!(fs::read(&p).unwrap(), model, "through the cache");
    m.unmount();
    m.mount(&["-o", "writeback_cache"]).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), model.len() as u64);
    assert_eq!(fs::read(&p).unwrap(), model, "after a remount");
}

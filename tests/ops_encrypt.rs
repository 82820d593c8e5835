//! `kmsfs encrypt SRC BACKING`: a real tree (hard links, symlinks, xattrs, odd modes,
//! other owners, holes, odd names) encrypted offline, then mounted and compared with the
//! original through the mount, content and metadata.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
#[path = "common/powercut.rs"]
mod powercut;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fsmount::{kmsfs_on, paths_in, pattern, Mounted};
use powercut::LoopDisk;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, v: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(c(p).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Every xattr of `p`, sorted (not following symlinks).
fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let cp = c(p);
    let mut names = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: valid C strings and buffer.
        let n =
            unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(n >= 0);
        v.truncate(n as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

const MARKERS: [&str; 3] = [
    "PLAINTEXT-MARKER-ALPHA",
    "PLAINTEXT-MARKER-BRAVO",
    "PLAINTEXT-MARKER-ZULU",
];

/// Builds the source tree; returns the relative paths of the hard-linked pair.
fn build_tree(src: &Path) -> (&'static str, &'static str) {
    let d = |rel: &str| {
        let p = src.join(rel);
        fs::create_dir_all(&p).unwrap();
        p
    };
    let w = |rel: &str, data: &[u8]| fs::write(src.join(rel), data).unwrap();
    d("a/b/c");
    w(
        "a/b/c/deep.txt",
        format!("deep {}\n", MARKERS[0]).as_bytes(),
    );
    w("a/linked", format!("linked {}\n", MARKERS[1]).as_bytes());
    fs::hard_link(src.join("a/linked"), src.join("a/b/also linked")).unwrap();
    std::os::unix::fs::symlink("b/c/deep.txt", src.join("a/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", src.join("dangling")).unwrap();
    w("with xattrs", b"x");
    set_xattr(&src.join("with xattrs"), "user.color", b"blue");
    set_xattr(&src.join("with xattrs"), "user.bin", &[0, 1, 2, 255]);
    set_xattr(&d("xdir"), "user.dir", b"on a dir");
    w("mode0000", b"locked");
    fs::set_permissions(src.join("mode0000"), fs::Permissions::from_mode(0o000)).unwrap();
    w("mode0711", b"#!/bin/sh\n");
    fs::set_permissions(src.join("mode0711"), fs::Permissions::from_mode(0o711)).unwrap();
    fs::set_permissions(d("setgid"), fs::Permissions::from_mode(0o2755)).unwrap();
    fs::set_permissions(d("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(d("dir0711"), fs::Permissions::from_mode(0o711)).unwrap();
    w("nobody's", b"owned by nobody");
    std::os::unix::fs::lchown(src.join("nobody's"), Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::lchown(src.join("sticky"), Some(65534), Some(100)).unwrap();
    // A sparse file: 8 MiB hole, 5 bytes, 1 MiB trailing hole.
    let f = fs::File::create(src.join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"SPARS", 8 << 20).unwrap();
    f.set_len((9 << 20) + 5).unwrap();
    w("empty", b"");
    let mut big = pattern(7, 5 << 20);
    big[1000..1000 + MARKERS[2].len()].copy_from_slice(MARKERS[2].as_bytes());
    w("big 5MiB", &big);
    w("spaces in name", b"s");
    w("ünïcødé-名前", b"u");
    w("new\nline", b"n");
    let fifo = c(&src.join("fifo"));
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    // A character device (the tests run as root), like /dev/null.
    let dev = c(&src.join("char-dev"));
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o640, libc::makedev(1, 3)) };
    assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    // Times last (setting them on a directory before filling it would be undone).
    for (i, rel) in [
        "a/b/c/deep.txt",
        "big 5MiB",
        "sparse",
        "empty",
        "a/b",
        "sticky",
    ]
    .iter()
    .enumerate()
    {
        let ts = libc::timespec {
            tv_sec: 981_000_000 + i as i64 * 86_400,
            tv_nsec: 123_456_789,
        };
        let at = libc::timespec {
            tv_sec: 970_000_000,
            tv_nsec: 5,
        };
        // SAFETY: valid C string and two timespecs.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c(&src.join(rel)).as_ptr(),
                [at, ts].as_ptr(),
                0,
            )
        };
        assert_eq!(r, 0);
    }
    ("a/linked", "a/b/also linked")
}

/// Every relative path under `root`, sorted.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(r.clone());
            }
            out.push(r);
        }
    }
    out.sort();
    out
}

/// Compares `src` with the mounted volume, entry by entry; returns the differences.
fn compare(src: &Path, mnt: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let (sl, ml) = (walk(src), walk(mnt));
    if sl != ml {
        diffs.push(format!("entries differ:\n{sl:?}\n{ml:?}"));
        return diffs;
    }
    for rel in std::iter::once(PathBuf::new()).chain(sl) {
        let (s, m) = (src.join(&rel), mnt.join(&rel));
        let (a, b) = (
            fs::symlink_metadata(&s).unwrap(),
            fs::symlink_metadata(&m).unwrap(),
        );
        let mut check = |what: &str, x: u64, y: u64| {
            if x != y {
                diffs.push(format!("{}: {what} {x:o} vs {y:o}", rel.display()));
            }
        };
        check("mode", a.mode() as u64, b.mode() as u64);
        check("uid", a.uid() as u64, b.uid() as u64);
        check("gid", a.gid() as u64, b.gid() as u64);
        check("rdev", a.rdev(), b.rdev());
        check("mtime", a.mtime() as u64, b.mtime() as u64);
        check("mtime_nsec", a.mtime_nsec() as u64, b.mtime_nsec() as u64);
        if !a.is_dir() {
            check("size", a.len(), b.len());
            check("nlink", a.nlink(), b.nlink());
        }
        if a.file_type().is_symlink() {
            if fs::read_link(&s).unwrap() != fs::read_link(&m).unwrap() {
                diffs.push(format!("{}: symlink target", rel.display()));
            }
        } else if xattrs(&s) != xattrs(&m) {
            diffs.push(format!(
                "{}: xattrs {:?} vs {:?}",
                rel.display(),
                xattrs(&s),
                xattrs(&m)
            ));
        }
        if a.is_file() && fs::read(&s).unwrap() != fs::read(&m).unwrap() {
            diffs.push(format!("{}: content", rel.display()));
        }
    }
    diffs
}

fn encrypt(kms: &Path, args: &[&Path], extra: &[&str]) -> Output {
    kmsfs_on(kms)
        .arg("encrypt")
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    for rel in walk(dir) {
        let p = dir.join(rel);
        if fs::symlink_metadata(&p).unwrap().is_file() {
            v.extend(fs::read(&p).unwrap());
        }
    }
    v
}

#[test]
fn encrypted_tree_matches_the_source_through_the_mount() {
    let t = tempfile::tempdir().unwrap();
    let [src, backing, kms] = paths_in(t.path(), ["src", "backing", "kms"]);
    fs::create_dir(&src).unwrap();
    let (l1, l2) = build_tree(&src);
    let before = walk(&src);

    let out = encrypt(&kms, &[&src, &backing], &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let sum: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["mismatches"].as_array().unwrap().len(), 0, "{sum}");
    assert_eq!(sum["hard_links"], 1, "{sum}");
    assert_eq!(sum["symlinks"], 3, "{sum}");
    assert_eq!(sum["source_deleted"], false);
    // Without the flag the source is untouched.
    assert_eq!(walk(&src), before);

    // No plaintext marker reaches the backing directory; the holes stay holes there.
    let raw = all_bytes(&backing);
    for m in MARKERS {
        assert!(
            !raw.windows(m.len()).any(|w| w == m.as_bytes()),
            "{m} in the backing dir"
        );
    }
    let sparse = fs::metadata(backing.join("sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file fully allocated: {} blocks",
        sparse.blocks()
    );

    let m = Mounted::existing(&kms, &backing, &[]).unwrap();
    let diffs = compare(&src, &m.mnt);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    // The hard-linked pair is one inode in the mount, and stays linked: a write through
    // one name shows through the other.
    let (a, b) = (
        fs::metadata(m.p(l1)).unwrap(),
        fs::metadata(m.p(l2)).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    fs::write(m.p(l1), b"rewritten").unwrap();
    assert_eq!(fs::read(m.p(l2)).unwrap(), b"rewritten");
    assert_eq!(
        fs::read_link(m.p("abs-link")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(fs::metadata(m.p("nobody's")).unwrap().uid(), 65534);
}

#[test]
fn delete_source_only_after_a_clean_verification() {
    let t = tempfile::tempdir().unwrap();
    let (src, kms) = (t.path().join("src"), t.path().join("kms"));
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"keep me").unwrap();

    // A BACKING that is not empty is refused before anything is written; the source stays.
    let full = t.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("other"), b"x").unwrap();
    let out = encrypt(&kms, &[&src, &full], &["--delete-source-after-verify"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    assert_eq!(fs::read(src.join("d/f")).unwrap(), b"keep me");

    // The config's name in the source's root cannot be stored: a clear error, source kept.
    fs::write(src.join("kmsfs.conf"), b"mine").unwrap();
    let out = encrypt(
        &kms,
        &[&src, &t.path().join("b1")],
        &["--delete-source-after-verify"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("reserved"), "{}", text(&out));
    assert!(text(&out).contains("kmsfs.conf"), "{}", text(&out));
    assert!(src.join("kmsfs.conf").exists());
    fs::remove_file(src.join("kmsfs.conf")).unwrap();

    // A difference the volume cannot avoid: a hard link to a file outside SRC keeps a link
    // count of 2 there, 1 in the volume. Reported, exit 2, and the source is not deleted.
    fs::write(t.path().join("outside"), b"shared").unwrap();
    fs::hard_link(t.path().join("outside"), src.join("d/inside")).unwrap();
    let out = encrypt(
        &kms,
        &[&src, &t.path().join("b0")],
        &["--delete-source-after-verify", "--json"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let sum: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mism = sum["mismatches"].as_array().unwrap();
    assert_eq!(mism.len(), 1, "{sum}");
    assert!(mism[0].as_str().unwrap().contains("d/inside"), "{sum}");
    assert!(mism[0].as_str().unwrap().contains("link count"), "{sum}");
    assert_eq!(sum["source_deleted"], false);
    assert!(text(&out).contains("left untouched"), "{}", text(&out));
    assert_eq!(fs::read(src.join("d/f")).unwrap(), b"keep me");
    assert_eq!(fs::read(src.join("d/inside")).unwrap(), b"shared");
    fs::remove_file(t.path().join("outside")).unwrap();

    // Verified clean: the source goes, the volume holds it; and the volume's filesystem was
    // synced before the first byte of the source was deleted (seen by strace: a power cut
    // after the delete must not find the volume only in the page cache).
    let backing = t.path().join("b2");
    let trace = t.path().join("encrypt.strace");
    let out = Command::new("strace")
        .args(["-f", "-e", "trace=syncfs,unlink,unlinkat,rmdir", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_kmsfs"))
        .arg("--kms")
        .arg(&kms)
        .arg("encrypt")
        .arg(&src)
        .arg(&backing)
        .arg("--delete-source-after-verify")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!src.exists(), "source still there: {}", text(&out));
    let calls = fs::read_to_string(&trace).unwrap();
    let synced = calls
        .lines()
        .position(|l| l.contains("syncfs(") && l.ends_with("= 0"));
    let first_delete = calls
        .lines()
        .position(|l| (l.contains("unlink") || l.contains("rmdir")) && l.contains("= 0"));
    assert!(
        matches!((synced, first_delete), (Some(s), Some(d)) if s < d),
        "no syncfs before the source was deleted:\n{calls}"
    );
    let m = Mounted::existing(&kms, &backing, &[]).unwrap();
    assert_eq!(fs::read(m.p("d/f")).unwrap(), b"keep me");
}

/// A power cut the moment `kmsfs encrypt --delete-source-after-verify` has returned: the
/// source is gone, so the volume must already be on the disk, not only in the page cache.
/// The volume is made on a loop-mounted ext4 and the disk after the cut is a copy of its
/// image taken at once (the kernel writes dirty pages back after up to 30 s, and commits
/// ext4's journal every 5 s). Mounted after journal recovery, the copy holds every file.
#[test]
fn a_power_cut_after_the_source_is_deleted_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let kms = t.path().join("kms");
    let src = t.path().join("src");
    let mut want = BTreeMap::new();
    for i in 0..200u64 {
        let rel = format!("d{}/f{i:03}", i % 7);
        let data = pattern(i, (i as usize * 997) % 40_000);
        fs::create_dir_all(src.join(format!("d{}", i % 7))).unwrap();
        fs::write(src.join(&rel), &data).unwrap();
        want.insert(rel, data);
    }
    let disk = LoopDisk::new(&t.path().join("disk.img"), &t.path().join("disk"), 64);
    let backing = disk.at.join("vol");
    let out = encrypt(&kms, &[&src, &backing], &["--delete-source-after-verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let cut = disk.cut(&t.path().join("cut.img"), &t.path().join("cut"));
    assert!(!src.exists(), "the source was not deleted: {}", text(&out));
    let m = Mounted::existing(&kms, &cut.at.join("vol"), &[])
        .unwrap_or_else(|e| panic!("the volume after the cut does not mount: {e}"));
    for (rel, data) in &want {
        let got = fs::read(m.p(rel)).unwrap_or_else(|e| panic!("after the cut, {rel}: {e}"));
        assert!(&got == data, "after the cut, {rel} differs");
    }
    drop(m);
    let out = fsmount::run_fsck(&kms, &cut.at.join("vol"), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck after the cut: {}",
        text(&out)
    );
}

//! Every file operation through a real kmsfs mount, checked with std::fs, libc and
//! ordinary programs.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use fsmount::{as_nobody, backing_size, bsize, pattern, sh, Mounted};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn sizes_roundtrip_and_empty_files_are_empty_on_disk() {
    let m = Mounted::new(&[]);
    for (i, n) in [0usize, 1, 100, 4095, 4096, 4097, 8192, 100_000, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}");
        let data = pattern(i as u64, n);
        fs::write(m.p(&name), &data).unwrap();
        assert_eq!(fs::read(m.p(&name)).unwrap(), data, "size {n}");
        assert_eq!(fs::metadata(m.p(&name)).unwrap().len(), n as u64);
        assert_eq!(
            bsize(&m.b(&name)),
            backing_size(n as u64),
            "backing size of {n}"
        );
    }
    // The config is never visible.
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("kmsfs.conf")), "{names:?}");
    assert!(fs::metadata(m.p("kmsfs.conf")).is_err());
    assert!(File::create(m.p("kmsfs.conf")).is_err());
}

#[test]
fn offsets_append_trunc_wronly_sparse_fallocate() {
    let m = Mounted::new(&[]);
    let p = m.p("f");
    let mut model = pattern(1, 10_000);
    fs::write(&p, &model).unwrap();
    // Overwrite in the middle, across a block boundary, write-only.
    {
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(4000)).unwrap();
        f.write_all(&[0xAA; 200]).unwrap();
        model[4000..4200].fill(0xAA);
    }
    assert_eq!(fs::read(&p).unwrap(), model);
    // O_APPEND.
    {
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"tail").unwrap();
        model.extend_from_slice(b"tail");
    }
    assert_eq!(fs::read(&p).unwrap(), model);
    // Truncate down mid-block, then up (hole), via set_len.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(5000).unwrap();
    model.truncate(5000);
    assert_eq!(fs::read(&p).unwrap(), model);
    f.set_len(20_000).unwrap();
    model.resize(20_000, 0);
    assert_eq!(fs::read(&p).unwrap(), model);
    assert_eq!(bsize(&m.b("f")), backing_size(20_000));
    drop(f);
    // O_TRUNC.
    {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        assert_eq!(bsize(&m.b("f")), 0);
        f.write_all(b"new").unwrap();
    }
    assert_eq!(fs::read(&p).unwrap(), b"new");
    // Sparse: write far past the end.
    {
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(1 << 30)).unwrap();
        f.write_all(b"far").unwrap();
        f.sync_all().unwrap();
    }
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), (1 << 30) + 3);
    assert!(
        md.blocks() < 1000,
        "sparse file uses {} blocks",
        md.blocks()
    );
    let mut f = File::open(&p).unwrap();
    let mut buf = [0u8; 8];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..3], b"new");
    assert_eq!(&buf[3..], &[0; 5]);
    f.seek(SeekFrom::Start((1 << 30) - 2)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"\0\0far");
    // Zeros written by an application are encrypted like data (never an all-zero block).
    fs::write(m.p("zeros"), vec![0u8; 8192]).unwrap();
    let raw = fs::read(m.b("zeros")).unwrap();
    assert!(raw[1024..].chunks(4136).all(|b| b.iter().any(|&x| x != 0)));
    // fallocate grows the file with zeros.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(m.p("fa"))
        .unwrap();
    // SAFETY: fallocate on an open fd.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 10_000) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(f.metadata().unwrap().len(), 10_000);
    assert_eq!(fs::read(m.p("fa")).unwrap(), vec![0u8; 10_000]);
    f.sync_data().unwrap();
    // Concurrent writers of one file (different blocks) keep it consistent.
    let p2 = m.p("conc");
    fs::write(&p2, vec![0u8; 64 * 4096]).unwrap();
    let ts: Vec<_> = (0..4u8)
        .map(|t| {
            let p2 = p2.clone();
            std::thread::spawn(move || {
                let f = OpenOptions::new().write(true).open(&p2).unwrap();
                for i in 0..64u64 {
                    if i % 4 == t as u64 {
                        // Unaligned writes that straddle blocks.
                        std::os::unix::fs::FileExt::write_all_at(&f, &[t + 1; 4096], i * 4096)
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    let got = fs::read(&p2).unwrap();
    for i in 0..64usize {
        assert!(got[i * 4096..(i + 1) * 4096]
            .iter()
            .all(|&x| x == (i % 4) as u8 + 1));
    }
}

#[test]
fn namespace_operations() {
    let m = Mounted::new(&[]);
    fs::create_dir(m.p("d")).unwrap();
    fs::create_dir(m.p("d/e")).unwrap();
    fs::write(m.p("d/a"), b"AAA").unwrap();
    fs::write(m.p("b"), b"BBB").unwrap();
    // rename over an existing file, across directories.
    fs::rename(m.p("d/a"), m.p("b")).unwrap();
    assert_eq!(fs::read(m.p("b")).unwrap(), b"AAA");
    assert!(!m.p("d/a").exists());
    fs::rename(m.p("b"), m.p("d/e/b")).unwrap();
    assert_eq!(fs::read(m.p("d/e/b")).unwrap(), b"AAA");
    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    fs::write(m.p("x"), b"X").unwrap();
    fs::write(m.p("y"), b"Y").unwrap();
    let rn = |a: &str, b: &str, flags: u32| {
        // SAFETY: valid C strings.
        unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                c(&m.p(a)).as_ptr(),
                libc::AT_FDCWD,
                c(&m.p(b)).as_ptr(),
                flags,
            )
        }
    };
    assert_eq!(rn("x", "y", libc::RENAME_NOREPLACE), -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(rn("x", "y", libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(m.p("x")).unwrap(), b"Y");
    assert_eq!(fs::read(m.p("y")).unwrap(), b"X");
    // Hard links share content and header.
    fs::hard_link(m.p("x"), m.p("x2")).unwrap();
    assert_eq!(fs::metadata(m.p("x")).unwrap().nlink(), 2);
    fs::write(m.p("x2"), b"through the link").unwrap();
    assert_eq!(fs::read(m.p("x")).unwrap(), b"through the link");
    assert_eq!(
        fs::metadata(m.p("x")).unwrap().ino(),
        fs::metadata(m.p("x2")).unwrap().ino()
    );
    // An unlinked file stays readable and writable while open.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("y"))
        .unwrap();
    fs::remove_file(m.p("y")).unwrap();
    assert!(!m.p("y").exists());
    f.write_all(b"still here").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    drop(f);
    // Symlinks.
    std::os::unix::fs::symlink("d/e/b", m.p("l")).unwrap();
    assert_eq!(fs::read_link(m.p("l")).unwrap().to_str(), Some("d/e/b"));
    assert_eq!(fs::read(m.p("l")).unwrap(), b"AAA");
    assert!(fs::symlink_metadata(m.p("l"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Symlink targets pass through (content encryption only).
    assert_eq!(fs::read_link(m.b("l")).unwrap().to_str(), Some("d/e/b"));
    // rmdir of a non-empty dir fails; of an empty one works.
    assert!(fs::remove_dir(m.p("d")).is_err());
    fs::remove_file(m.p("d/e/b")).unwrap();
    fs::remove_dir(m.p("d/e")).unwrap();
    fs::remove_dir(m.p("d")).unwrap();
    // chmod, chown, utimens.
    fs::set_permissions(m.p("x"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(m.p("x")).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(m.p("x"), Some(65534), Some(65534)).unwrap();
    let md = fs::metadata(m.p("x")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(m.p("x"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    assert_eq!(fs::metadata(m.p("x")).unwrap().mtime(), 1_000_000_000);
    // mknod: fifo and socket.
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c(&m.p("fifo")).as_ptr(), 0o644) }, 0);
    assert!(fs::metadata(m.p("fifo")).unwrap().file_type().is_fifo());
    let sock = std::os::unix::net::UnixListener::bind(m.p("sock")).unwrap();
    assert!(fs::metadata(m.p("sock")).unwrap().file_type().is_socket());
    drop(sock);
    // xattrs.
    let name = CString::new("user.test").unwrap();
    let px = c(&m.p("x"));
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(
            libc::setxattr(px.as_ptr(), name.as_ptr(), b"v1".as_ptr().cast(), 2, 0),
            0
        );
        let mut buf = [0u8; 16];
        assert_eq!(
            libc::getxattr(px.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16),
            2
        );
        assert_eq!(&buf[..2], b"v1");
        let n = libc::listxattr(px.as_ptr(), buf.as_mut_ptr().cast(), 16);
        assert!(n > 0 && buf[..n as usize].starts_with(b"user.test"));
        assert_eq!(libc::removexattr(px.as_ptr(), name.as_ptr()), 0);
        assert_eq!(
            libc::getxattr(px.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16),
            -1
        );
    }
    // statfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    assert_eq!(unsafe { libc::statvfs(c(&m.mnt).as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0 && st.f_bsize > 0);
    // A big directory lists completely.
    fs::create_dir(m.p("big")).unwrap();
    for i in 0..3000 {
        File::create(m.p(&format!("big/file-with-a-longish-name-{i:05}"))).unwrap();
    }
    assert_eq!(fs::read_dir(m.p("big")).unwrap().count(), 3000);
    // readdir's d_ino agrees with stat's st_ino.
    for e in fs::read_dir(m.p("big")).unwrap().take(50) {
        let e = e.unwrap();
        use std::os::unix::fs::DirEntryExt;
        assert_eq!(e.ino(), fs::symlink_metadata(e.path()).unwrap().ino());
    }
}

#[test]
fn locks_and_mmap() {
    let m = Mounted::new(&[]);
    let p = m.p("f");
    fs::write(&p, pattern(3, 3 * 4096 + 10)).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let g = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // SAFETY: flock on open fds.
    unsafe {
        assert_eq!(libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0);
        assert_eq!(
            libc::flock(g.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
            -1
        );
        assert_eq!(libc::flock(f.as_raw_fd(), libc::LOCK_UN), 0);
        assert_eq!(libc::flock(g.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB), 0);
    }
    // POSIX lock from a child process conflicts with ours.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: fcntl on an open fd.
    assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) }, 0);
    let out = sh(&format!(
        "flock -n -x {} true; python3 -c \"import fcntl,os;f=os.open('{}',os.O_RDWR)\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\nexcept OSError: print('busy')\"",
        p.display(),
        p.display()
    ));
    assert!(out.contains("busy"), "{out}");
    // mmap: read, write through a shared mapping, msync, read back through read().
    let len = 3 * 4096 + 10;
    // SAFETY: mapping an open file of at least len bytes; unmapped below.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED);
        let s = std::slice::from_raw_parts_mut(ptr as *mut u8, len);
        assert_eq!(&s[..100], &pattern(3, 100)[..]);
        s[5000..5010].copy_from_slice(b"MMAPWRITE!");
        assert_eq!(libc::msync(ptr, len, libc::MS_SYNC), 0);
        libc::munmap(ptr, len);
    }
    drop((f, g));
    let got = fs::read(&p).unwrap();
    assert_eq!(&got[5000..5010], b"MMAPWRITE!");
    assert_eq!(got.len(), len);
}

#[test]
fn ordinary_programs_cp_dd_tar_git_sqlite() {
    let m = Mounted::new(&[]);
    let mnt = m.mnt.display().to_string();
    let src = m.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("f{i}")), pattern(i, 1000 * i as usize + 7)).unwrap();
    }
    sh(&format!("cp -a {} {mnt}/copy", src.display()));
    sh(&format!("diff -r {} {mnt}/copy", src.display()));
    sh(&format!(
        "dd if=/dev/urandom of={mnt}/dd bs=64k count=40 status=none && dd if={mnt}/dd of={mnt}/dd2 bs=7777 status=none && cmp {mnt}/dd {mnt}/dd2"
    ));
    sh(&format!(
        "dd if=/dev/zero of={mnt}/dd bs=1000 seek=3 count=5 conv=notrunc status=none"
    ));
    sh(&format!(
        "cd {mnt} && tar cf t.tar copy && mkdir x && tar xf t.tar -C x && diff -r copy x/copy"
    ));
    if sh("command -v git || true").trim().is_empty() {
        panic!("git is needed for this test");
    }
    sh(&format!(
        "cd {mnt} && git init -q repo && cd repo && git config user.email t@t && git config user.name t \
         && cp -r ../copy . && git add . && git commit -qm one && echo change >> copy/f1 \
         && git commit -qam two && git log --oneline | wc -l | grep -q 2 && git fsck --strict 2>&1"
    ));
    if !sh("command -v sqlite3 || true").trim().is_empty() {
        let out = sh(&format!(
            "cd {mnt} && sqlite3 db.sqlite 'create table t(a,b); \
             with recursive c(x) as (select 1 union all select x+1 from c where x<20000) \
             insert into t select x, hex(randomblob(50)) from c; \
             update t set b = upper(b) where a % 7 = 0; delete from t where a % 5 = 0; \
             pragma integrity_check; select count(*) from t;'"
        ));
        assert_eq!(out.trim(), "ok\n16000".trim(), "{out}");
    }
}

#[test]
fn plaintext_never_reaches_the_backing_dir() {
    let m = Mounted::new(&[]);
    let marker = b"KMSFS-PLAINTEXT-MARKER-0123456789";
    let mut data = Vec::new();
    for i in 0..2000 {
        data.extend_from_slice(marker);
        data.extend_from_slice(format!("{i}").as_bytes());
    }
    fs::write(m.p("secret"), &data).unwrap();
    let mut f = OpenOptions::new().write(true).open(m.p("secret")).unwrap();
    f.seek(SeekFrom::Start(12345)).unwrap();
    f.write_all(marker).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::write(m.p("small"), marker).unwrap();
    sh("sync");
    let out = std::process::Command::new("grep")
        .args(["-r", "-a", "-c", "KMSFS-PLAINTEXT-MARKER"])
        .arg(&m.backing)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.lines().all(|l| l.ends_with(":0")),
        "marker found in backing dir: {s}"
    );
    // And the content does come back.
    assert_eq!(&fs::read(m.p("small")).unwrap(), marker);
}

#[test]
fn allow_other_permissions_and_ownership() {
    let m = Mounted::new(&["-o", "allow_other"]);
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(&*m.mnt.to_string_lossy()))
        .unwrap()
        .to_owned();
    assert!(
        line.contains("allow_other") && line.contains("default_permissions"),
        "{line}"
    );
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(m.p("private"), b"root only").unwrap();
    fs::set_permissions(m.p("private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.p("public"), b"everyone").unwrap();
    fs::set_permissions(m.p("public"), fs::Permissions::from_mode(0o644)).unwrap();
    let mnt = m.mnt.display();
    let r = as_nobody(&format!("cat {mnt}/public"));
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stdout, b"everyone");
    let r = as_nobody(&format!("cat {mnt}/private"));
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("Permission denied"));
    let r = as_nobody(&format!("echo x > {mnt}/public"));
    assert!(!r.status.success());
    let r = as_nobody(&format!("chmod 777 {mnt}/public"));
    assert!(!r.status.success(), "non-owner chmod must fail");
    // Files and directories are created as the calling user.
    let r = as_nobody(&format!(
        "echo mine > {mnt}/byNobody && mkdir {mnt}/dirNobody && ln -s x {mnt}/lnNobody"
    ));
    assert!(r.status.success(), "{r:?}");
    for n in ["byNobody", "dirNobody", "lnNobody"] {
        let md = fs::symlink_metadata(m.b(n)).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534), "{n}");
    }
    assert_eq!(fs::read(m.p("byNobody")).unwrap(), b"mine\n");
}

/// O_TMPFILE is not offered yet: fuser 0.18 (the newest release) does not dispatch
/// FUSE_TMPFILE, so the kernel answers EOPNOTSUPP — the answer programs test for before
/// they fall back to a named temporary file that they unlink, which works: it is shown
/// here with Python's `tempfile.TemporaryFile` (O_TMPFILE first, then mkstemp + unlink)
/// and an open, unlinked file that is written, read and grown after the unlink.
#[test]
fn o_tmpfile_answers_eopnotsupp_and_the_fallback_works() {
    let m = Mounted::new(&[]);
    let dir = c(&m.mnt);
    // SAFETY: open(2) of a directory path with O_TMPFILE; the result is checked.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    let e = std::io::Error::last_os_error();
    if fd >= 0 {
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(fd) };
    }
    assert_eq!((fd, e.raw_os_error()), (-1, Some(libc::EOPNOTSUPP)));
    let out = sh(&format!(
        "python3 -c 'import tempfile; f = tempfile.TemporaryFile(dir=\"{}\"); \
         f.write(b\"x\" * 100000); f.seek(0); print(len(f.read()))'",
        m.mnt.display()
    ));
    assert_eq!(out.trim(), "100000");
    let p = m.p("unlinked");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    fs::remove_file(&p).unwrap();
    let data = pattern(3, 50_000);
    f.write_all(&data).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        fs::read_dir(&m.mnt).unwrap().count(),
        0,
        "nothing left in the directory"
    );
}

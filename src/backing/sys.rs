//! Thin, safe wrappers over the `*at` system calls the daemon uses on the backing
//! directory. Every path is one name relative to a directory fd, opened with
//! `O_NOFOLLOW`; an fd's own file is reached through `/proc/self/fd/N`.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The `/proc/self/fd/N` path of an fd.
pub fn proc_path(fd: RawFd) -> CString {
    // A decimal number never contains NUL.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub fn openat(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid C string; the returned fd is owned by us.
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reopens an `O_PATH` fd with real access `flags` (via /proc/self/fd).
pub fn reopen(fd: RawFd, flags: i32) -> io::Result<File> {
    let p = proc_path(fd);
    // SAFETY: valid C string.
    let r = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { File::from_raw_fd(r) })
}

/// `fstatat(fd, "", AT_EMPTY_PATH)`: works on `O_PATH` fds.
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is writable memory for one stat.
    check(unsafe {
        libc::fstatat(
            fd,
            c"".as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: initialised by a successful fstatat.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never a symlink's target.
pub fn fstatat_nofollow(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: valid C string; st is writable memory for one stat.
    check(unsafe { libc::fstatat(dir, c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    // SAFETY: initialised by a successful fstatat.
    Ok(unsafe { st.assume_init() })
}

/// `lseek(fd, off, whence)` (SEEK_DATA / SEEK_HOLE on a backing file).
pub fn lseek(fd: RawFd, off: u64, whence: i32) -> io::Result<u64> {
    let off = i64::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on an fd the caller owns; no memory is passed.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// `mkdirat`.
pub fn mkdirat(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// `mknodat`.
pub fn mknodat(dir: RawFd, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
        .map(|_| ())
}

/// `symlinkat(target, dir, name)`.
pub fn symlinkat(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(|_| ())
}

/// `unlinkat(dir, name, flags)`.
pub fn unlinkat(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(|_| ())
}

/// `renameat2`.
pub fn renameat2(
    olddir: RawFd,
    old: &OsStr,
    newdir: RawFd,
    new: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: valid C strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            olddir,
            o.as_ptr(),
            newdir,
            n.as_ptr(),
            flags,
        ) as libc::c_int
    })
    .map(|_| ())
}

/// Hard link of an fd's file as `newdir/name`.
pub fn linkat_fd(fd: RawFd, newdir: RawFd, name: &OsStr) -> io::Result<()> {
    let p = proc_path(fd);
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            newdir,
            c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(|_| ())
}

/// `readlinkat(fd, "")` of an `O_PATH` fd on a symlink.
pub fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The backing path of an fd, for log lines.
pub fn fd_path(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("fd {fd}"))
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`; `u32::MAX` leaves one unchanged.
pub fn fchown_fd(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: empty C string.
    check(unsafe {
        libc::fchownat(
            fd,
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub fn lchownat(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(|_| ())
}

/// chmod of an fd's file.
pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    let p = proc_path(fd);
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// utimensat of an fd's file; `None` leaves a time unchanged.
pub fn utimens_fd(
    fd: RawFd,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> io::Result<()> {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let ts = [atime.unwrap_or(omit), mtime.unwrap_or(omit)];
    // SAFETY: ts is two timespecs; empty path with AT_EMPTY_PATH acts on the fd itself.
    check(unsafe {
        libc::utimensat(
            fd,
            c"".as_ptr(),
            ts.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

/// `pread` the whole range (short only at EOF).
pub fn pread_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `pwrite` all of `buf`.
pub fn pwrite_all(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, off)
}

/// `fstatvfs`.
pub fn statvfs_fd(fd: RawFd) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: writable statvfs.
    check(unsafe { libc::fstatvfs(fd, st.as_mut_ptr()) })?;
    // SAFETY: initialised.
    Ok(unsafe { st.assume_init() })
}

fn xattr_path(fd: RawFd) -> CString {
    proc_path(fd)
}

/// getxattr of an fd's file into a buffer of `size` (0: ask for the size).
pub fn getxattr_fd(fd: RawFd, name: &OsStr, size: usize) -> io::Result<Vec<u8>> {
    let p = xattr_path(fd);
    let c = cstr(name)?;
    let mut buf = vec![0u8; size];
    // SAFETY: buf writable for size bytes (null when 0 is allowed: size 0 queries).
    let n = unsafe { libc::getxattr(p.as_ptr(), c.as_ptr(), out_ptr(&mut buf), size) };
    xattr_result(n, size, buf)
}

/// The out-buffer argument of getxattr/listxattr: null for a size query.
fn out_ptr(buf: &mut [u8]) -> *mut libc::c_void {
    if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    }
}

/// The result of a getxattr/listxattr call that returned `n` into `buf` of `size`
/// bytes: with `size == 0` the caller asked only for the length, answered as that
/// many zero bytes.
fn xattr_result(n: isize, size: usize, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if size == 0 {
        return Ok(vec![0u8; n as usize]);
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// listxattr of an fd's file.
pub fn listxattr_fd(fd: RawFd, size: usize) -> io::Result<Vec<u8>> {
    let p = xattr_path(fd);
    let mut buf = vec![0u8; size];
    // SAFETY: as getxattr.
    let n = unsafe { libc::listxattr(p.as_ptr(), out_ptr(&mut buf).cast(), size) };
    xattr_result(n, size, buf)
}

/// All xattr names of an fd's file (NUL-terminated, as listxattr returns them): one
/// syscall for the usual file with few or none, a size query and a retry otherwise.
pub fn listxattr_all(fd: RawFd) -> io::Result<Vec<u8>> {
    match listxattr_fd(fd, 256) {
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => loop {
            let want = listxattr_fd(fd, 0)?.len();
            match listxattr_fd(fd, want) {
                // Grown in between: ask again.
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
                r => return r,
            }
        },
        r => r,
    }
}

/// setxattr of an fd's file.
pub fn setxattr_fd(fd: RawFd, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let p = xattr_path(fd);
    let c = cstr(name)?;
    // SAFETY: valid pointers and lengths.
    check(unsafe {
        libc::setxattr(
            p.as_ptr(),
            c.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

/// removexattr of an fd's file.
pub fn removexattr_fd(fd: RawFd, name: &OsStr) -> io::Result<()> {
    let p = xattr_path(fd);
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(p.as_ptr(), c.as_ptr()) }).map(|_| ())
}

/// `fallocate` on a real fd.
pub fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an owned fd.
    check(unsafe { libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(|_| ())
}

/// The largest file handle the kernel hands out (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawFileHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// A Linux file handle (`name_to_handle_at`): names a backing file without holding an fd.
#[derive(Clone, PartialEq, Eq)]
pub struct FileHandle {
    handle_type: libc::c_int,
    bytes: Box<[u8]>,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandle")
            .field("type", &self.handle_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// `name_to_handle_at(fd, "", AT_EMPTY_PATH)`: the handle of an fd's own file and the id
/// of the mount it was reached through. Symlinks are never followed.
pub fn name_to_handle_fd(fd: RawFd) -> io::Result<(FileHandle, i32)> {
    let mut raw = RawFileHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a `struct file_handle` whose `handle_bytes` says how much room
    // follows; the empty path with AT_EMPTY_PATH names the fd itself.
    check(unsafe {
        libc::name_to_handle_at(
            fd,
            c"".as_ptr(),
            (&mut raw as *mut RawFileHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let len = raw.handle_bytes as usize;
    if len > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
    }
    Ok((
        FileHandle {
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..len].into(),
        },
        mount_id,
    ))
}

/// `open_by_handle_at(mount_fd, handle, flags | O_CLOEXEC)`. A file deleted since the
/// handle was made gives `ESTALE`. Needs `CAP_DAC_READ_SEARCH` (else `EPERM`).
pub fn open_by_handle(mount_fd: RawFd, h: &FileHandle, flags: i32) -> io::Result<OwnedFd> {
    if h.bytes.len() > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::ESTALE));
    }
    let mut raw = RawFileHandle {
        handle_bytes: h.bytes.len() as libc::c_uint,
        handle_type: h.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..h.bytes.len()].copy_from_slice(&h.bytes);
    // SAFETY: `raw` is a valid `struct file_handle` of `handle_bytes` bytes; the fd is ours.
    let fd = check(unsafe {
        libc::open_by_handle_at(
            mount_fd,
            (&mut raw as *mut RawFileHandle).cast::<libc::file_handle>(),
            flags | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open_by_handle_at.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What an OFD lock request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// `fcntl(F_OFD_SETLKW)`: an open-file-description byte-range lock on `start..start+len`
/// (`len == 0`: to the end of the file and beyond), waiting for conflicting locks of other
/// open file descriptions (also those of other processes) to go away. Locks of one open
/// file description never conflict with each other; a new one replaces them on its range.
pub fn ofd_lock(f: &File, kind: LockKind, start: u64, len: u64) -> io::Result<()> {
    let l_type = match kind {
        LockKind::Read => libc::F_RDLCK,
        LockKind::Write => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    };
    // SAFETY: a zeroed flock is valid; every field used is set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = i64::try_from(start).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    fl.l_len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    fl.l_pid = 0; // required for OFD locks
    loop {
        // SAFETY: fl is a valid flock for the duration of the call; the fd is ours.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLKW, &mut fl) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether process `pid` has `gid` among its supplementary groups (`/proc/PID/status`).
pub fn in_group(pid: u32, gid: u32) -> io::Result<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let groups = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or_default();
    Ok(groups.split_whitespace().any(|g| g.parse() == Ok(gid)))
}

/// Whether process `pid` has capability `cap` in its effective set (`/proc/PID/status`),
/// counted only in this process's user namespace (the kernel checks a caller from another
/// one against the initial namespace, where it holds nothing). ESRCH for pid 0 (a caller in
/// a PID namespace this process does not see).
pub fn has_cap(pid: u32, cap: u32) -> io::Result<bool> {
    if pid == 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    if std::fs::read_link(format!("/proc/{pid}/ns/user"))?
        != std::fs::read_link("/proc/self/ns/user")?
    {
        return Ok(false);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(cap < 64 && eff & (1 << cap) != 0)
}

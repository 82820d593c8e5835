//! Making nodes in the backing directory without following symlinks, owned by the
//! caller: used by the daemon and by `kmsfs encrypt`.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};

use crate::backing::error::{FsError, FsResult};
use crate::backing::sys;

/// Creates directory, device, fifo or socket `name` in backing directory `dir`, owned by
/// `uid:gid`, and returns its `O_PATH` fd. The daemon's `mknod`/`mkdir` and
/// `kmsfs encrypt` lay out entries through this (and [`create_file`], [`make_symlink`]).
pub fn make_node(
    dir: RawFd,
    name: &OsStr,
    mode: u32,
    rdev: u64,
    uid: u32,
    gid: u32,
) -> std::io::Result<OwnedFd> {
    let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir {
        sys::mkdirat(dir, name, mode & 0o7777)?;
    } else {
        sys::mknodat(dir, name, mode, rdev)?;
    }
    let fd = sys::openat(dir, name, libc::O_PATH, 0)?;
    if let Err(e) = own_new_entry(fd.as_raw_fd(), mode, uid, gid) {
        let _ = sys::unlinkat(dir, name, if is_dir { libc::AT_REMOVEDIR } else { 0 });
        return Err(e);
    }
    Ok(fd)
}

/// Creates regular file `name` in backing directory `dir` (`O_EXCL`, opened read-write),
/// owned by `uid:gid`. Its content is then written with [`content::write`].
pub fn create_file(
    dir: RawFd,
    name: &OsStr,
    mode: u32,
    uid: u32,
    gid: u32,
) -> std::io::Result<File> {
    let file: File = sys::openat(
        dir,
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
        mode & 0o7777,
    )?
    .into();
    if let Err(e) = own_new_entry(file.as_raw_fd(), mode | libc::S_IFREG, uid, gid) {
        let _ = sys::unlinkat(dir, name, 0);
        return Err(e);
    }
    Ok(file)
}

/// Creates symlink `name` → `target` in backing directory `dir`, owned by `uid:gid`;
/// returns its `O_PATH` fd.
pub fn make_symlink(
    dir: RawFd,
    name: &OsStr,
    target: &OsStr,
    uid: u32,
    gid: u32,
) -> std::io::Result<OwnedFd> {
    sys::symlinkat(target, dir, name)?;
    if let Err(e) = sys::lchownat(dir, name, uid, gid) {
        let _ = sys::unlinkat(dir, name, 0);
        return Err(e);
    }
    sys::openat(dir, name, libc::O_PATH, 0)
}

/// Opens the backing root as an `O_PATH` directory fd.
pub fn open_root(path: &std::path::Path) -> FsResult<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| FsError::Errno(libc::EINVAL))?;
    // SAFETY: valid C string; fd owned on success.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(FsError::last_os());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { std::os::unix::io::FromRawFd::from_raw_fd(fd) })
}

/// Chowns a just-created entry; chown clears set-id bits on non-directories, so those of
/// `mode` are put back.
fn own_new_entry(fd: RawFd, mode: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    let restore =
        mode & (libc::S_ISUID | libc::S_ISGID) != 0 && mode & libc::S_IFMT != libc::S_IFDIR;
    // The mode as made: a default ACL of the directory may have narrowed the bits asked for.
    let made = if restore {
        sys::fstat(fd)?.st_mode & 0o7777
    } else {
        0
    };
    sys::fchown_fd(fd, uid, gid)?;
    if restore {
        // chown cleared the set-ID bits.
        let _ = sys::chmod_fd(fd, made);
    }
    Ok(())
}

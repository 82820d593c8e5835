//! Making nodes in the backing directory without following symlinks, owned by the
//! caller: used by the daemon and by `kmsfs encrypt`.

#![allow(clippy::wildcard_imports)]

use super::*;

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

/// Creates symlink `name` in backing directory `dir` (encrypted names, key `k`) whose
/// stored target is `stored`, owned by `uid:gid`; returns its `O_PATH` fd. The stored
/// target is the backing symlink's own where the backing fs takes it; else, with long
/// names, the symlink is a long link whose side file goes at the backing root `root`.
pub fn make_stored_symlink(
    root: RawFd,
    dir: RawFd,
    name: &OsStr,
    k: &NameKey,
    stored: &OsStr,
    uid: u32,
    gid: u32,
) -> std::io::Result<OwnedFd> {
    let too_long = || std::io::Error::from_raw_os_error(libc::ENAMETOOLONG);
    if stored.len() <= names::MAX_TARGET {
        match make_symlink(dir, name, stored, uid, gid) {
            Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) && k.long_names() => {}
            r => return r,
        }
    } else if !k.long_names() {
        return Err(too_long());
    }
    let link = names::long_link_of(stored);
    names::write_long_link(root, &link, stored)?;
    make_symlink(dir, name, &link, uid, gid).inspect_err(|_| {
        let _ = names::remove_long_link(root, &link);
    })
}

//! Attributes and permissions: stat to FileAttr, setattr, the set-ID rules (a caller's
//! CAP_FSETID, read from /proc), POSIX ACLs and xattrs.

#![allow(clippy::wildcard_imports)]

use super::*;

impl KmsFs {
    /// The mode a new entry is made with from the `mode` and `umask` of the request: with
    /// ACLs the kernel leaves the umask to us (FUSE_DONT_MASK), to be skipped where the
    /// parent has a default ACL (the backing filesystem applies that ACL instead).
    pub(super) fn new_mode(&self, parent: &Inode, mode: u32, umask: u32) -> FsResult<u32> {
        if self.posix_acl && !self.has_xattr(parent, OsStr::from_bytes(ACL_DEFAULT))? {
            return Ok(mode & !(umask & 0o777));
        }
        Ok(mode)
    }

    /// With ACLs off (`noacl`, shared storage), a default ACL already on the backing
    /// parent `pdir` must not apply to the entry just made at `fd`: the backing filesystem
    /// gave it an ACL nobody sees or enforces and narrowed its mode. Both are undone.
    pub(super) fn undo_inherited_acl(&self, pdir: RawFd, fd: RawFd, mode: u32) -> FsResult<()> {
        if self.posix_acl {
            return Ok(());
        }
        let absent = |e: &std::io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
            )
        };
        match sys::getxattr_fd(pdir, OsStr::from_bytes(ACL_DEFAULT), 0) {
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        for name in [ACL_ACCESS, ACL_DEFAULT] {
            match sys::removexattr_fd(fd, OsStr::from_bytes(name)) {
                Err(e) if !absent(&e) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(sys::chmod_fd(fd, mode & 0o7777)?)
    }

    pub(super) fn attr_of(&self, ino: u64, st: &libc::stat) -> FileAttr {
        let kind = kind_of(st.st_mode);
        let geo = &self.vol.geo;
        let (size, blocks) = if kind == FileType::RegularFile {
            let size = geo.plain_size_lossy(st.st_size as u64);
            let blocks = (st.st_blocks as u64).saturating_mul(geo.block_size) / geo.stored_block();
            (size, blocks.min(size.div_ceil(512)))
        } else if kind == FileType::Symlink && self.names().is_some() {
            (names::target_len(st.st_size as u64), st.st_blocks as u64)
        } else {
            (st.st_size as u64, st.st_blocks as u64)
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: ts(st.st_atime, st.st_atime_nsec),
            mtime: ts(st.st_mtime, st.st_mtime_nsec),
            ctime: ts(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: geo.block_size as u32,
            flags: 0,
        }
    }

    /// [`Self::attr_of`] of `inode`, whose backing stat is `st`: a long link's size is
    /// its target's.
    pub(super) fn attr_at(&self, inode: &Inode, st: &libc::stat) -> FileAttr {
        let mut a = self.attr_of(inode.ino, st);
        if a.kind == FileType::Symlink && st.st_size as usize == names::LONG_REF_LEN {
            if let Some(n) = self.long_link_len(inode) {
                a.size = n;
            }
        }
        a
    }

    pub(super) fn getattr_ino(&self, inode: &Inode) -> FsResult<FileAttr> {
        let st = sys::fstat(self.fd_of(inode)?.raw())?;
        Ok(self.attr_at(inode, &st))
    }

    /// Chowns a just-created entry to the caller (setgid directories pass their group).
    pub(super) fn owner_for(&self, req: &Request, parent: &Inode) -> FsResult<(u32, u32)> {
        let pst = sys::fstat(self.fd_of(parent)?.raw())?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            req.gid()
        };
        Ok((req.uid(), gid))
    }

    /// What a setattr asking for `changes` does with set-user-ID/set-group-ID. With
    /// FUSE_HANDLE_KILLPRIV_V2 the kernel leaves them to us on truncate and chown(-1, -1)
    /// (it then sends a setattr that sets nothing). fuser 0.18 hides FATTR_KILL_SUIDGID,
    /// the kernel's "caller lacks CAP_FSETID": the caller's capabilities are read from
    /// /proc where a truncated file has them.
    pub(super) fn kill_suidgid(&self, req: &Request, changes: &AttrChanges) -> KillSuidgid {
        match (self.kill_priv, changes.is_empty(), changes.size) {
            (false, _, _) => KillSuidgid::No,
            (true, true, _) => KillSuidgid::Always(Caller::of(req)),
            (true, false, Some(_)) => KillSuidgid::UnlessFsetid(Caller::of(req)),
            (true, false, None) => KillSuidgid::No,
        }
    }

    pub(super) fn do_setattr(
        &self,
        ino: INodeNo,
        changes: &AttrChanges,
        fh: Option<FileHandle>,
        kill_suidgid: KillSuidgid,
    ) -> FsResult<FileAttr> {
        let inode = self.inode(ino)?;
        if kill_suidgid != KillSuidgid::No || !changes.is_empty() {
            self.check_writable()?;
        }
        // One backing fd for the whole request.
        let fd = self.fd_of(&inode)?;
        if let Some(size) = changes.size {
            let st = sys::fstat(fd.raw())?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => {}
                libc::S_IFDIR => return Err(err(libc::EISDIR)),
                _ => return Err(err(libc::EINVAL)),
            }
            let h = fh.and_then(|fh| self.handle(fh).ok());
            match h.as_ref().map(|h| &h.kind) {
                Some(HandleKind::File(f)) => self.truncate_file(&inode, f, size)?,
                _ => {
                    let f = sys::reopen(fd.raw(), libc::O_RDWR)?;
                    self.truncate_file(&inode, &f, size)?;
                }
            }
        }
        if changes.mode.is_none() {
            match kill_suidgid {
                KillSuidgid::No => {}
                KillSuidgid::Always(c) => {
                    drop_suidgid(fd.raw(), |gid| c.in_group(gid) || c.has_fsetid())?
                }
                KillSuidgid::UnlessFsetid(c) => {
                    let st = sys::fstat(fd.raw())?;
                    if st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 && !c.has_fsetid() {
                        drop_suidgid(fd.raw(), |gid| c.in_group(gid))?;
                    }
                }
            }
        }
        if changes.uid.is_some() || changes.gid.is_some() {
            let (uid, gid) = (changes.uid, changes.gid);
            sys::fchown_fd(fd.raw(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        if let Some(mode) = changes.mode {
            sys::chmod_fd(fd.raw(), mode & 0o7777)?;
        }
        if changes.atime.is_some() || changes.mtime.is_some() {
            let (atime, mtime) = (changes.atime, changes.mtime);
            sys::utimens_fd(fd.raw(), atime.map(to_timespec), mtime.map(to_timespec))?;
        }
        let st = sys::fstat(fd.raw())?;
        Ok(self.attr_at(&inode, &st))
    }

    pub(super) fn do_getxattr(&self, ino: INodeNo, name: &OsStr, size: u32) -> FsResult<Vec<u8>> {
        if ino == INodeNo::ROOT {
            if name.as_bytes() == STATS_XATTR.as_bytes() {
                return Ok(self.stats_json());
            }
            if name.as_bytes() == PID_XATTR.as_bytes() {
                return Ok(std::process::id().to_string().into_bytes());
            }
        }
        self.acl_allowed(name)?;
        let inode = self.inode(ino)?;
        if !self.shared && !self.has_xattr(&inode, name)? {
            return Err(err(libc::ENODATA));
        }
        let v = sys::getxattr_fd(self.fd_of(&inode)?.raw(), name, size as usize)?;
        Ok(v)
    }

    /// EOPNOTSUPP for an ACL xattr where ACLs are off (see [`KmsFs::with_posix_acl`]).
    pub(super) fn acl_allowed(&self, name: &OsStr) -> FsResult<()> {
        if !self.posix_acl && is_acl(name) {
            return Err(err(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    /// Whether the backing file of `inode` may have xattr `name` (false: it has not),
    /// from its cached name list, listed on first use. Outside this daemon names only
    /// disappear (the backing kernel drops `security.capability` on our writes and
    /// chowns): a stale name costs one getxattr answering ENODATA, never a wrong answer.
    pub(super) fn has_xattr(&self, inode: &Inode, name: &OsStr) -> FsResult<bool> {
        let mut names = inode.xattr_names.lock();
        if names.is_none() {
            let list = sys::listxattr_all(self.fd_of(inode)?.raw())?;
            *names = Some(list.into_boxed_slice());
        }
        let list = names.as_deref().unwrap_or_default();
        Ok(list.split(|&b| b == 0).any(|n| n == name.as_bytes()))
    }

    /// Runs `change` (a setxattr or removexattr of `name` on `ino`'s backing file) with
    /// the inode's name list held and forgotten: the next getxattr lists the names again.
    pub(super) fn change_xattr(
        &self,
        ino: INodeNo,
        name: &OsStr,
        change: impl FnOnce(RawFd) -> std::io::Result<()>,
    ) -> FsResult<()> {
        self.check_writable()?;
        self.acl_allowed(name)?;
        let inode = self.inode(ino)?;
        let mut names = inode.xattr_names.lock();
        *names = None;
        Ok(change(self.fd_of(&inode)?.raw())?)
    }

    /// The names of `ino`'s xattrs, NUL-terminated; ACLs this mount does not enforce
    /// are not shown.
    pub(super) fn do_listxattr(&self, ino: INodeNo, size: u32) -> FsResult<Vec<u8>> {
        let inode = self.inode(ino)?;
        let fd = self.fd_of(&inode)?;
        if self.posix_acl {
            return Ok(sys::listxattr_fd(fd.raw(), size as usize)?);
        }
        let all = sys::listxattr_all(fd.raw())?;
        let mut names = Vec::with_capacity(all.len());
        for n in all.split_inclusive(|&b| b == 0) {
            if !is_acl(OsStr::from_bytes(n.strip_suffix(&[0]).unwrap_or(n))) {
                names.extend_from_slice(n);
            }
        }
        Ok(names)
    }
}

pub(super) fn is_acl(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n == ACL_ACCESS || n == ACL_DEFAULT
}

pub(super) fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub(super) fn ts(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-sec) as u64) + Duration::from_nanos(nsec as u64)
    }
}

pub(super) fn to_timespec(t: TimeOrNow) -> libc::timespec {
    match t {
        TimeOrNow::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = -(d.subsec_nanos() as i64);
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        },
    }
}

/// Clears set-user-ID and set-group-ID of the file `fd` reaches, as a local filesystem
/// does when a caller without CAP_FSETID writes or truncates (or anyone chowns):
/// set-group-ID stays only where it is not group-executable (it then marks mandatory
/// locking, not a privilege) and `keeps_sgid(file's gid)` says the caller may keep it
/// (a member of that group, or, on chown, holding CAP_FSETID).
pub(super) fn drop_suidgid(fd: RawFd, keeps_sgid: impl FnOnce(u32) -> bool) -> FsResult<()> {
    let st = sys::fstat(fd)?;
    let mode = st.st_mode;
    let mut keep = mode & 0o7777 & !(libc::S_ISUID | libc::S_ISGID);
    if mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP == 0 && keeps_sgid(st.st_gid) {
        keep |= libc::S_ISGID;
    }
    if keep != mode & 0o7777 {
        sys::chmod_fd(fd, keep)?;
    }
    Ok(())
}

/// Who made a request, as far as set-ID decisions need to know.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Caller {
    pid: u32,
    uid: u32,
    gid: u32,
}

impl Caller {
    pub(super) fn of(req: &Request) -> Caller {
        Caller {
            pid: req.pid(),
            uid: req.uid(),
            gid: req.gid(),
        }
    }

    /// Whether the caller is in group `gid` (its fsgid or a supplementary group).
    pub(super) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || sys::in_group(self.pid, gid).unwrap_or(false)
    }

    /// Whether the caller holds CAP_FSETID over the files here: in its effective set and
    /// in the daemon's user namespace. Where /proc cannot tell (pid 0: the caller is in a
    /// PID namespace the daemon does not see), root stands for it.
    pub(super) fn has_fsetid(&self) -> bool {
        sys::has_cap(self.pid, CAP_FSETID).unwrap_or(self.uid == 0)
    }
}

/// What a setattr asks to change (fuser hands each over as an argument of its own).
#[derive(Clone, Copy)]
pub(super) struct AttrChanges {
    pub(super) mode: Option<u32>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) size: Option<u64>,
    pub(super) atime: Option<TimeOrNow>,
    pub(super) mtime: Option<TimeOrNow>,
}

impl AttrChanges {
    /// Nothing to set: chown(-1, -1), or the kernel asking us to clear set-ID bits.
    fn is_empty(&self) -> bool {
        [self.mode, self.uid, self.gid].iter().all(Option::is_none)
            && self.size.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
}

/// What a setattr does with set-user-ID/set-group-ID (see [`drop_suidgid`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KillSuidgid {
    No,
    /// chown(-1, -1).
    Always(Caller),
    /// A truncate: unless the caller has CAP_FSETID.
    UnlessFsetid(Caller),
}

/// After an access ACL was set on the file `fd` reaches: clears its set-group-ID bit if
/// the caller is neither in the file's group nor has CAP_FSETID, as a local filesystem does (the
/// backing filesystem saw the daemon, root, set it). The kernel would ask this with
/// FUSE_SETXATTR_EXT, which fuser does not speak.
pub(super) fn acl_drop_sgid(req: &Request, fd: RawFd) -> std::io::Result<()> {
    let st = sys::fstat(fd)?;
    let caller = Caller::of(req);
    if st.st_mode & libc::S_ISGID == 0 || caller.in_group(st.st_gid) || caller.has_fsetid() {
        return Ok(());
    }
    sys::chmod_fd(fd, st.st_mode & 0o7777 & !libc::S_ISGID)
}

//! The namespace: lookups and the inode table's bookkeeping, creating nodes, renames,
//! links, symlinks, and directory listings.

#![allow(clippy::wildcard_imports)]

use super::*;

impl KmsFs {
    /// Registers (or finds) the inode of `fd`, just opened as backing name `name` in
    /// directory `parent`, and counts one lookup.
    pub(super) fn remember(
        &self,
        fd: OwnedFd,
        parent: &Arc<Inode>,
        name: &OsStr,
    ) -> FsResult<(Arc<Inode>, libc::stat)> {
        let st = sys::fstat(fd.as_raw_fd())?;
        let key = (st.st_dev, st.st_ino);
        let anchor = self.anchor_for(fd.as_raw_fd());
        let fd = Arc::new(fd);
        let mut t = self.inodes.write();
        if let Some(ino) = t.by_key.get(&key) {
            if let Some(i) = t.by_ino.get(ino) {
                // An inode that holds no fd may have had its backing file deleted and its
                // number reused: that is another file.
                if self.same_file(i, &anchor, parent, name) {
                    i.lookups.fetch_add(1, Ordering::Relaxed);
                    i.add_name(parent, name);
                    let i = i.clone();
                    drop(t);
                    self.fds.insert(i.ino, fd);
                    return Ok((i, st));
                }
            }
        }
        // The backing inode number where it is free (stat and readdir then agree, and numbers
        // are stable across mounts); otherwise one from a range no backing fs uses in practice.
        let ino = if st.st_ino > 1 && !t.by_ino.contains_key(&st.st_ino) {
            st.st_ino
        } else {
            self.next_ino.fetch_add(1, Ordering::Relaxed)
        };
        let inode = Arc::new(Inode::new(
            ino,
            key,
            anchor,
            Some((parent.clone(), name.to_owned())),
            1,
        ));
        t.by_key.insert(key, ino);
        t.by_ino.insert(ino, inode.clone());
        drop(t);
        self.fds.insert(ino, fd);
        Ok((inode, st))
    }

    /// Whether `known`, an inode with the same (st_dev, st_ino) as a file just found as
    /// `name` in `parent` (with anchor `new`), is that file and not an earlier one whose
    /// number was reused.
    pub(super) fn same_file(
        &self,
        known: &Inode,
        new: &Anchor,
        parent: &Inode,
        name: &OsStr,
    ) -> bool {
        match (&known.anchor, new) {
            (Anchor::Root(_), _) => true,
            // Handles carry the inode generation.
            (Anchor::Handle(a), Anchor::Handle(b)) => a == b,
            // A cached fd or a file open through the mount pins the backing inode: its
            // number cannot have been reused. Else a name it is known by must still lead
            // to it (the daemon drops names it unlinks or renames away).
            _ => {
                self.fds.contains(known.ino)
                    || known.is_open()
                    || known.has_name(parent.ino, name)
                    || self.fds.resolve(known).is_ok()
            }
        }
    }

    pub(super) fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> FsResult<FileAttr> {
        if self.reserved(parent.0, name) {
            return Err(err(libc::ENOENT));
        }
        owned_name_ok(name)?;
        let p = self.inode(parent)?;
        let bname = self.backing_name(&p, name)?;
        let pfd = self.fd_of(&p)?;
        // The name is opened and recorded with no rename or unlink in between.
        let _ns = self.fds.ns_shared();
        let fd = sys::openat(pfd.raw(), &bname, libc::O_PATH, 0)?;
        self.check_side(pfd.raw(), &bname)?;
        let (inode, st) = self.remember(fd, &p, &bname)?;
        Ok(self.attr_at(&inode, &st))
    }

    /// Drops inode `ino` from the table if the kernel forgot it and nothing uses it, and
    /// then the parents only it kept (an inode holds its parents: its names lead through
    /// them).
    pub(super) fn drop_if_unused(&self, ino: u64) {
        // Closed once the table is unlocked (see [`FdCache::insert`]).
        let mut closing = Vec::new();
        let mut t = self.inodes.write();
        let mut todo = vec![ino];
        while let Some(ino) = todo.pop() {
            let remove = match t.by_ino.get(&ino) {
                Some(i) => {
                    ino != INodeNo::ROOT.0
                        && i.lookups.load(Ordering::Relaxed) == 0
                        && Arc::strong_count(i) == 1
                }
                None => false,
            };
            if !remove {
                continue;
            }
            let Some(i) = t.by_ino.remove(&ino) else {
                continue;
            };
            if t.by_key.get(&i.key) == Some(&ino) {
                t.by_key.remove(&i.key);
            }
            closing.extend(self.fds.remove(ino));
            let parents = i.take_names();
            drop(i);
            for (p, _) in parents {
                let pino = p.ino;
                drop(p);
                todo.push(pino);
            }
        }
        drop(t);
        drop(closing);
    }

    /// The known inode at backing name `name` of directory `dir`, if any (for the
    /// bookkeeping of its names around an unlink, rename or rmdir).
    pub(super) fn known_at(&self, dir: RawFd, name: &OsStr) -> Option<Arc<Inode>> {
        let st = sys::fstatat_nofollow(dir, name).ok()?;
        let t = self.inodes.read();
        let ino = t.by_key.get(&(st.st_dev, st.st_ino))?;
        t.by_ino.get(ino).cloned()
    }

    pub(super) fn do_forget(&self, ino: u64, n: u64) {
        if let Some(i) = self.inodes.read().by_ino.get(&ino) {
            let _ = i
                .lookups
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
        }
        self.drop_if_unused(ino);
    }

    pub(super) fn do_mknod(&self, req: &Request, new: NewEntry, rdev: u32) -> FsResult<FileAttr> {
        self.check_writable()?;
        if self.reserved(new.parent.0, new.name) {
            return Err(err(libc::EPERM));
        }
        let p = self.inode(new.parent)?;
        let mode = self.new_mode(&p, new.mode, new.umask)?;
        let bname = self.backing_name(&p, new.name)?;
        let pdir = self.fd_of(&p)?;
        let (uid, gid) = self.owner_for(req, &p)?;
        let make = || Ok(make_node(pdir.raw(), &bname, mode, rdev as u64, uid, gid)?);
        self.make_entry(pdir.raw(), &bname, make, |fd| {
            self.undo_inherited_acl(pdir.raw(), fd.as_raw_fd(), mode)?;
            let iv = if mode & libc::S_IFMT == libc::S_IFDIR {
                match self.new_dir_iv(fd.as_raw_fd()) {
                    Ok(iv) => iv,
                    Err(e) => {
                        let _ = sys::unlinkat(pdir.raw(), &bname, libc::AT_REMOVEDIR);
                        self.drop_side_if_unused(pdir.raw(), &bname);
                        return Err(e);
                    }
                }
            } else {
                None
            };
            let (inode, st) = self.remember(fd, &p, &bname)?;
            if let Some(iv) = iv {
                let _ = inode.diriv.set(iv);
            }
            Ok(self.attr_at(&inode, &st))
        })
    }

    pub(super) fn do_unlink(&self, parent: INodeNo, name: &OsStr) -> FsResult<()> {
        self.check_writable()?;
        if self.reserved(parent.0, name) {
            return Err(err(libc::ENOENT));
        }
        let p = self.inode(parent)?;
        let name = self.backing_name(&p, name)?;
        let pdir = self.fd_of(&p)?;
        // A long name's entry and side file go as one against creates.
        let _g = name.long.is_some().then(|| self.names_lock.write());
        let _ns = self.fds.ns_exclusive();
        let gone = self.known_at(pdir.raw(), &name);
        let link = self.long_link_at(pdir.raw(), &name);
        sys::unlinkat(pdir.raw(), &name, 0)?;
        self.remove_side(pdir.raw(), &name);
        self.release_long_link(link);
        if let Some(i) = gone {
            i.remove_name(p.ino, &name);
        }
        Ok(())
    }

    pub(super) fn do_rmdir(&self, parent: INodeNo, name: &OsStr) -> FsResult<()> {
        self.check_writable()?;
        let p = self.inode(parent)?;
        let pdir = self.fd_of(&p)?;
        // Before the lock: a directory whose IV must be made takes it shared.
        let name = self.backing_name(&p, name)?;
        let _g = self.names().map(|_| self.names_lock.write());
        let _ns = self.fds.ns_exclusive();
        let gone = self.known_at(pdir.raw(), &name);
        match self.names() {
            None => sys::unlinkat(pdir.raw(), &name, libc::AT_REMOVEDIR)?,
            Some(k) => {
                self.rmdir_named(k, pdir.raw(), &name)?;
                self.remove_side(pdir.raw(), &name);
            }
        }
        if let Some(i) = gone {
            i.remove_name(p.ino, &name);
        }
        Ok(())
    }

    pub(super) fn do_opendir(&self, ino: INodeNo) -> FsResult<u64> {
        let inode = self.inode(ino)?;
        let entries = self.list_dir(&inode)?;
        let stream = DirStream {
            entries: Mutex::new(Arc::new(entries)),
            read: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(self.new_handle(inode, HandleKind::Dir(stream)))
    }

    /// The listing to serve a read of directory handle `h` at `offset` from: a fresh one
    /// when the read starts over at 0 after an earlier read.
    pub(super) fn dir_entries(&self, h: &Handle, offset: u64) -> FsResult<Arc<Vec<DirEntryRec>>> {
        let HandleKind::Dir(d) = &h.kind else {
            return Err(err(libc::ENOTDIR));
        };
        if offset == 0 && d.read.swap(true, Ordering::Relaxed) {
            let fresh = Arc::new(self.list_dir(&h.inode)?);
            *d.entries.lock() = fresh.clone();
            return Ok(fresh);
        }
        d.read.store(true, Ordering::Relaxed);
        Ok(d.entries.lock().clone())
    }

    /// The entries of directory `inode`, `.` and `..` first; names that do not decrypt
    /// (encrypted names) are left out and counted in a warning.
    pub(super) fn list_dir(&self, inode: &Inode) -> FsResult<Vec<DirEntryRec>> {
        let dir = sys::reopen(self.fd_of(inode)?.raw(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut entries = vec![
            DirEntryRec {
                ino: inode.ino,
                kind: FileType::Directory,
                name: ".".into(),
                backing: ".".into(),
            },
            DirEntryRec {
                ino: inode.ino,
                kind: FileType::Directory,
                name: "..".into(),
                backing: "..".into(),
            },
        ];
        let names = match self.names() {
            Some(k) => Some((k, self.diriv(inode)?)),
            None => None,
        };
        let mut strangers = 0u64;
        let mut broken = 0u64;
        let rd = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        for e in rd {
            let e = e?;
            let backing = e.file_name();
            if is_reserved(inode.ino, &backing) {
                continue;
            }
            let name = match names {
                None => backing.clone(),
                Some((k, iv)) => match k.kind_of(&backing) {
                    EntryKind::DirIv | EntryKind::Side(_) => continue,
                    EntryKind::LinkSide if inode.ino == INodeNo::ROOT.0 => continue,
                    _ => match k.read_name(&iv, dir.as_raw_fd(), &backing) {
                        Ok(n) => n,
                        Err(BadName::DoesNotDecrypt) => {
                            strangers += 1;
                            continue;
                        }
                        Err(e) => {
                            broken += 1;
                            tracing::error!(
                                dir = %self.path_hint(dir.as_raw_fd()),
                                entry = ?backing,
                                "{e}: not listed (EIO on lookup)"
                            );
                            continue;
                        }
                    },
                },
            };
            let kind = match e.file_type() {
                Ok(t) => FileType::from_std(t).unwrap_or(FileType::RegularFile),
                Err(_) => FileType::RegularFile,
            };
            let bino = std::os::unix::fs::DirEntryExt::ino(&e);
            entries.push(DirEntryRec {
                ino: bino.max(2),
                kind,
                name,
                backing,
            });
        }
        if broken > 0 {
            self.vol.count_integrity_failure();
        }
        if strangers > 0 {
            tracing::warn!(
                dir = %self.path_hint(dir.as_raw_fd()),
                count = strangers,
                "directory entries whose names do not decrypt are not listed"
            );
        }
        drop(dir);
        Ok(entries)
    }

    pub(super) fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        if self.reserved(parent.0, name) || self.reserved(newparent.0, newname) {
            return Err(err(libc::EPERM));
        }
        owned_name_ok(newname)?;
        let p = self.inode(parent)?;
        let np = self.inode(newparent)?;
        let (pfd, npfd) = (self.fd_of(&p)?, self.fd_of(&np)?);
        // The backing names (and so the directories' IVs) before the namespace lock is
        // taken exclusively: a directory whose IV must be made takes it shared.
        let (name, newname) = (
            self.backing_name(&p, name)?,
            self.backing_name(&np, newname)?,
        );
        // Long names: both names stay where they are in an exchange; otherwise the new
        // name's side file comes first (written and synced before any lock is taken,
        // checked again under them), and the old one's goes after.
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if !exchange {
            self.put_side(npfd.raw(), &newname)?;
        }
        let _g = self.names().map(|_| self.names_lock.write());
        // From here to the end, no name is opened or recorded elsewhere.
        let _ns = self.fds.ns_exclusive();
        let moved = self.known_at(pfd.raw(), &name);
        let replaced = self.known_at(npfd.raw(), &newname);
        let mut link = None;
        if !exchange {
            self.keep_side(npfd.raw(), &newname)?;
            link = self.long_link_at(npfd.raw(), &newname);
        }
        if let Err(e) = self.rename_backing(&pfd, &name, &npfd, &newname, flags) {
            if !exchange {
                self.drop_side_if_unused(npfd.raw(), &newname);
            }
            return Err(e);
        }
        if !exchange {
            self.recheck_side(npfd.raw(), &newname)?;
            // A rename onto another name of the same file leaves both.
            self.drop_old_side(pfd.raw(), npfd.raw(), &name);
            self.release_long_link(link);
        }
        // Names follow (a rename onto another name of the same file changes nothing).
        if let (Some(m), Some(r)) = (&moved, &replaced) {
            if Arc::ptr_eq(m, r) {
                return Ok(());
            }
        }
        if let Some(m) = &moved {
            m.remove_name(p.ino, &name);
            m.add_name(&np, &newname);
        }
        if let Some(r) = &replaced {
            r.remove_name(np.ino, &newname);
            if flags & libc::RENAME_EXCHANGE != 0 {
                r.add_name(&p, &name);
            }
        }
        Ok(())
    }

    /// The backing side of a rename (with encrypted names, an empty directory in the way
    /// gives up its IV first).
    pub(super) fn rename_backing(
        &self,
        pfd: &InodeFd,
        name: &OsStr,
        npfd: &InodeFd,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        if self.names().is_none() {
            sys::renameat2(pfd.raw(), name, npfd.raw(), newname, flags)?;
            return Ok(());
        }
        match sys::renameat2(pfd.raw(), name, npfd.raw(), newname, flags) {
            // An empty directory in the way still holds its IV: drop it and try again
            // (the kernel let this rename replace a directory only with a directory).
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTEMPTY)
                    || e.raw_os_error() == Some(libc::EEXIST) =>
            {
                if flags & (libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
                    return Err(e.into());
                }
                let target = sys::openat(
                    npfd.raw(),
                    newname,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                let tfd = target.as_raw_fd();
                let iv = match self.names() {
                    Some(k) => take_iv(k, tfd)?,
                    None => None,
                };
                sys::renameat2(pfd.raw(), name, npfd.raw(), newname, flags).map_err(|e| {
                    put_back_iv(tfd, iv);
                    FsError::from(e)
                })
            }
            r => Ok(r?),
        }
    }

    /// The checks before `name` is added to `parent` (create, link, symlink): a writable
    /// mount, not the volume config's name, and short enough to be a name.
    pub(super) fn may_add_name(&self, parent: INodeNo, name: &OsStr) -> FsResult<()> {
        self.check_writable()?;
        if self.reserved(parent.0, name) {
            return Err(err(libc::EPERM));
        }
        owned_name_ok(name)
    }

    pub(super) fn do_link(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> FsResult<FileAttr> {
        self.may_add_name(newparent, newname)?;
        let inode = self.inode(ino)?;
        let np = self.inode(newparent)?;
        let newname = self.backing_name(&np, newname)?;
        let (fd, npfd) = (self.fd_of(&inode)?, self.fd_of(&np)?);
        let make = || Ok(sys::linkat_fd(fd.raw(), npfd.raw(), &newname)?);
        self.make_entry(npfd.raw(), &newname, make, |()| {
            inode.add_name(&np, &newname);
            inode.lookups.fetch_add(1, Ordering::Relaxed);
            self.getattr_ino(&inode)
        })
    }

    pub(super) fn do_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &OsStr,
    ) -> FsResult<FileAttr> {
        self.may_add_name(parent, name)?;
        let p = self.inode(parent)?;
        let name = self.backing_name(&p, name)?;
        let stored = match self.names() {
            None => None,
            Some(k) => Some(k.encrypt_target(target).map_err(|e| match e {
                NameError::TooLong => err(libc::ENAMETOOLONG),
                NameError::Random => err(libc::EIO),
            })?),
        };
        let pdir = self.fd_of(&p)?;
        let (uid, gid) = self.owner_for(req, &p)?;
        self.put_side(pdir.raw(), &name)?;
        // A target too long for any symlink: its long link's file, written and synced
        // before any lock is taken too (and removed if the symlink is not made).
        let pre = match (self.names(), &stored) {
            (Some(k), Some(s)) => self
                .with_root(|root| names::write_long_link_first(root, k, s))
                .inspect_err(|_| self.drop_side_if_unused(pdir.raw(), &name))?,
            _ => None,
        };
        let made = {
            let _g = self.names_lock.read_recursive();
            let _ns = self.fds.ns_shared();
            self.keep_side(pdir.raw(), &name)
                .and_then(|_| match (self.names(), &stored, &pre) {
                    (_, _, Some(link)) => Ok(make_symlink(pdir.raw(), &name, link, uid, gid)?),
                    (Some(k), Some(stored), None) => self.with_root(|root| {
                        make_stored_symlink(root, pdir.raw(), &name, k, stored, uid, gid)
                    }),
                    _ => Ok(make_symlink(pdir.raw(), &name, target, uid, gid)?),
                })
        };
        let fd = made.inspect_err(|_| {
            if let Some(link) = &pre {
                let _ = self.with_root(|root| names::remove_long_link(root, link));
            }
            self.drop_side_if_unused(pdir.raw(), &name)
        })?;
        self.recheck_side(pdir.raw(), &name)?;
        let (inode, st) = self.remember(fd, &p, &name)?;
        Ok(self.attr_at(&inode, &st))
    }

    pub(super) fn do_readlink(&self, inode: &Inode) -> FsResult<Vec<u8>> {
        let fd = self.fd_of(inode)?;
        let stored = sys::readlink_fd(fd.raw())?;
        let Some(k) = self.names() else {
            return Ok(stored);
        };
        let stored = if k.is_long_link(&stored) {
            let link = OsStr::from_bytes(&stored);
            match self.with_root(|root| names::read_long_link(root, link)) {
                Ok(s) => s.into_vec(),
                Err(e) => {
                    self.vol.count_integrity_failure();
                    tracing::error!(
                        link = %self.path_hint(fd.raw()),
                        side = ?link,
                        "the side file of a long symlink target cannot be read: {e}"
                    );
                    return Err(err(libc::EIO));
                }
            }
        } else {
            stored
        };
        match k.decrypt_target(OsStr::from_bytes(&stored)) {
            Some(t) => Ok(t.into_vec()),
            None => {
                self.vol.count_integrity_failure();
                tracing::error!(link = %self.path_hint(fd.raw()), "symlink target does not decrypt (changed, or not of this volume)");
                Err(err(libc::EIO))
            }
        }
    }

    /// READDIRPLUS: each entry sent is also a lookup (counted, so the kernel's FORGET
    /// balances it); an entry gone since the listing was taken is left out.
    pub(super) fn do_readdirplus(
        &self,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(errno(&e)),
        };
        let entries = match self.dir_entries(&h, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let dir = match self.fd_of(&h.inode) {
            Ok(d) => d,
            Err(e) => return reply.error(errno(&e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let off = (i + 1) as u64;
            if i < 2 {
                // "." and "..": the kernel neither links nor counts them.
                let attr = match self.getattr_ino(&h.inode) {
                    Ok(a) => a,
                    Err(e) => return reply.error(errno(&e)),
                };
                if reply.add(
                    INodeNo(h.inode.ino),
                    off,
                    &e.name,
                    &self.ttl,
                    &attr,
                    Generation(0),
                ) {
                    break;
                }
                continue;
            }
            // As a lookup (one counted per entry sent); an entry gone since opendir is
            // left out.
            let ns = self.fds.ns_shared();
            let Ok((inode, st)) = sys::openat(dir.raw(), &e.backing, libc::O_PATH, 0)
                .map_err(FsError::from)
                .and_then(|fd| self.remember(fd, &h.inode, &e.backing))
            else {
                continue;
            };
            drop(ns);
            let attr = self.attr_at(&inode, &st);
            if reply.add(
                INodeNo(inode.ino),
                off,
                &e.name,
                &self.ttl,
                &attr,
                Generation(0),
            ) {
                // Not sent: not counted.
                drop(inode);
                self.do_forget(attr.ino.0, 1);
                break;
            }
        }
        reply.ok();
    }
}

/// A mknod, mkdir or create: the new entry's parent, name, and the mode and umask
/// the caller asked for.
#[derive(Clone, Copy)]
pub(super) struct NewEntry<'a> {
    pub(super) parent: INodeNo,
    pub(super) name: &'a OsStr,
    pub(super) mode: u32,
    pub(super) umask: u32,
}

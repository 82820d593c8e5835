//! Encrypted names in the daemon: a directory's IV, the backing name of an entry,
//! long names' side files and long symlink targets (the names-siv-v1 and names-long-v1
//! features; the codec is in crate::volume::names).

#![allow(clippy::wildcard_imports)]

use super::*;

/// How long, in shared storage, a directory without an IV is waited for (another
/// daemon's mkdir or rmdir in progress) before EIO.
const SHARED_IV_WAIT: Duration = Duration::from_secs(2);

impl KmsFs {
    /// The name key, on a volume with encrypted names.
    pub(super) fn names(&self) -> Option<&NameKey> {
        self.vol.names.as_ref()
    }

    /// The IV of directory `dir` (encrypted names), read once per inode. A directory that
    /// has none gets one if it holds nothing else (a mkdir cut short by a crash);
    /// otherwise its names cannot be read or made: EIO, logged.
    ///
    /// In shared storage it is read every time (another daemon may have removed the
    /// directory and made another with the same inode number), and never made here:
    /// a directory without one is another daemon's mkdir before its IV, or its rmdir
    /// (or rename over it) with the IV taken out for a moment, so it is waited for, up to
    /// [`SHARED_IV_WAIT`]; one still missing is EIO (a mount without shared storage, or
    /// rmdir and mkdir, repairs it).
    pub(super) fn diriv(&self, dir: &Inode) -> FsResult<DirIv> {
        if self.shared {
            return self.shared_diriv(dir);
        }
        if let Some(iv) = dir.diriv.get() {
            return Ok(*iv);
        }
        let fd = self.fd_of(dir)?;
        let iv = match names::read_diriv(fd.raw()) {
            Ok(iv) => iv,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let _g = self.names_lock.read_recursive();
                if !only_entries(fd.raw(), dir.ino, &[])? {
                    tracing::error!(
                        dir = %self.path_hint(fd.raw()),
                        "directory has entries but no {DIRIV_NAME}: its names cannot be decrypted"
                    );
                    return Err(err(libc::EIO));
                }
                match names::create_diriv(fd.raw()) {
                    Ok(iv) => iv,
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        names::read_diriv(fd.raw())?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => {
                tracing::error!(dir = %self.path_hint(fd.raw()), "cannot read {DIRIV_NAME}: {e}");
                return Err(e.into());
            }
        };
        Ok(*dir.diriv.get_or_init(|| iv))
    }

    /// [`Self::diriv`] in shared storage.
    fn shared_diriv(&self, dir: &Inode) -> FsResult<DirIv> {
        let fd = self.fd_of(dir)?;
        let t0 = std::time::Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            match names::read_diriv(fd.raw()) {
                Ok(iv) => return Ok(iv),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    tracing::error!(dir = %self.path_hint(fd.raw()), "cannot read {DIRIV_NAME}: {e}");
                    return Err(e.into());
                }
            }
            // Removed meanwhile (by another daemon): gone, not broken.
            if sys::fstat(fd.raw())?.st_nlink == 0 {
                return Err(err(libc::ENOENT));
            }
            if t0.elapsed() >= SHARED_IV_WAIT {
                tracing::error!(
                    dir = %self.path_hint(fd.raw()),
                    "directory without {DIRIV_NAME} (shared storage does not make one for an \
                     existing directory; rmdir it if empty, or mount without shared_storage \
                     to repair it)"
                );
                return Err(err(libc::EIO));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The backing name of `name` in directory `dir`: the name itself, or its encrypted
    /// form (ENAMETOOLONG past [`NameKey::max_name`]).
    pub(super) fn backing_name<'n>(&self, dir: &Inode, name: &'n OsStr) -> FsResult<Backing<'n>> {
        let Some(k) = self.names() else {
            return Ok(Backing {
                entry: Cow::Borrowed(name),
                long: None,
            });
        };
        let iv = self.diriv(dir)?;
        match k.encrypt_name(&iv, name) {
            Ok(s) => Ok(Backing {
                entry: Cow::Owned(s.entry),
                long: s.long,
            }),
            Err(NameError::TooLong) => Err(err(libc::ENAMETOOLONG)),
            Err(NameError::Random) => Err(err(libc::EIO)),
        }
    }

    /// Runs `f` on the backing root's fd.
    pub(super) fn with_root<T>(&self, f: impl FnOnce(RawFd) -> std::io::Result<T>) -> FsResult<T> {
        let root = self.inode(INodeNo::ROOT)?;
        let fd = self.fd_of(&root)?;
        Ok(f(fd.raw())?)
    }

    /// Before the entry of long name `b` is made in backing directory `dir`: its side file,
    /// on disk first.
    pub(super) fn put_side(&self, dir: RawFd, b: &Backing) -> FsResult<()> {
        let Some(full) = &b.long else {
            return Ok(());
        };
        names::write_side_name(dir, &b.entry, full).map_err(|e| {
            // ENOENT: the directory was removed meanwhile (by another daemon).
            if e.raw_os_error() == Some(libc::ENOENT) {
                return FsError::from(e);
            }
            tracing::error!(
                dir = %self.path_hint(dir),
                entry = ?b.entry,
                "cannot write the side file of a long name: {e}"
            );
            FsError::from(e)
        })
    }

    /// Under the namespace locks, before the entry of long name `b` is made in `dir`: its
    /// side file, which [`Self::put_side`] wrote before the locks, is still there (an
    /// unlink or rename of the same name may have removed it meanwhile; then it is
    /// written again, synced, under the locks).
    pub(super) fn keep_side(&self, dir: RawFd, b: &Backing) -> FsResult<()> {
        match &b.long {
            Some(full) if !names::side_name_is(dir, &b.entry, full) => self.put_side(dir, b),
            _ => Ok(()),
        }
    }

    /// After long name `b` was renamed away from `pdir` to `npdir`: its side file goes,
    /// once the rename is on disk (both directories synced), so that a crash never leaves
    /// the old entry without its side file. A rename onto another name of the same file
    /// leaves the old name, and its side file.
    pub(super) fn drop_old_side(&self, pdir: RawFd, npdir: RawFd, b: &Backing) {
        if b.long.is_none()
            || !matches!(sys::fstatat_nofollow(pdir, &b.entry),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT))
        {
            return;
        }
        let synced = names::sync_dir(npdir).and_then(|_| {
            if sys::fstat(pdir).map(|s| (s.st_dev, s.st_ino))?
                == sys::fstat(npdir).map(|s| (s.st_dev, s.st_ino))?
            {
                Ok(())
            } else {
                names::sync_dir(pdir)
            }
        });
        if let Err(e) = synced {
            tracing::warn!(
                dir = %self.path_hint(pdir),
                "cannot sync a rename; the old name's side file stays (an orphan fsck reports): {e}"
            );
            return;
        }
        self.remove_side(pdir, b);
    }

    /// After making the entry of long name `b` in `dir` failed: its side file goes, unless
    /// an entry has that name (whose side file it is).
    pub(super) fn drop_side_if_unused(&self, dir: RawFd, b: &Backing) {
        if b.long.is_some()
            && matches!(sys::fstatat_nofollow(dir, &b.entry),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT))
        {
            self.remove_side(dir, b);
        }
    }

    /// After the entry of long name `b` left `dir`: its side file (a failure leaves an
    /// orphan, which fsck reports and rmdir removes).
    pub(super) fn remove_side(&self, dir: RawFd, b: &Backing) {
        if b.long.is_none() {
            return;
        }
        if let Err(e) = names::remove_side_name(dir, &b.entry) {
            tracing::warn!(
                dir = %self.path_hint(dir),
                entry = ?b.entry,
                "cannot remove the side file of a removed long name: {e}"
            );
        }
        // Another daemon may have made the name again meanwhile, its side file (the same
        // bytes) before its entry: then the entry needs it back.
        if self.shared && sys::fstatat_nofollow(dir, &b.entry).is_ok() {
            let _ = self.put_side(dir, b);
        }
    }

    /// Checks, on a lookup of long name `b` whose entry is in `dir`, that its side file is
    /// there and its own. One missing or wrong (the listing does not show the entry) is
    /// written again: the entry's name is the hash of the stored name the lookup was
    /// asked for, which proves that name is the entry's. EIO on a read-only mount, or
    /// when it cannot be written.
    pub(super) fn check_side(&self, dir: RawFd, b: &Backing) -> FsResult<()> {
        let Some(full) = &b.long else {
            return Ok(());
        };
        let why = match names::read_side_name(dir, &b.entry) {
            Ok(f) if &f == full => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => "missing".to_string(),
            Err(e) => e.to_string(),
            Ok(_) => "another name's".to_string(),
        };
        self.vol.count_integrity_failure();
        let fixed = self.check_writable().and_then(|_| self.put_side(dir, b));
        match &fixed {
            Ok(()) => tracing::warn!(
                dir = %self.path_hint(dir),
                entry = ?b.entry,
                "long name whose side file was bad ({why}): written again from the name \
                 looked up, which hashes to the entry"
            ),
            Err(e) => tracing::error!(
                dir = %self.path_hint(dir),
                entry = ?b.entry,
                "long name whose side file is bad ({why}), and cannot be written again ({e}): EIO"
            ),
        }
        fixed.map_err(|_| err(libc::EIO))
    }

    /// The long link at `name` in backing directory `dir`, if that is one (before the
    /// name goes: [`Self::release_long_link`] after).
    pub(super) fn long_link_at(&self, dir: RawFd, name: &OsStr) -> Option<LongLink> {
        let k = self.names().filter(|k| k.long_names())?;
        let is_ref = |st: libc::stat| {
            st.st_mode & libc::S_IFMT == libc::S_IFLNK && st.st_size as usize == names::LONG_REF_LEN
        };
        // One syscall for what is not a long link (nearly everything).
        if !is_ref(sys::fstatat_nofollow(dir, name).ok()?) {
            return None;
        }
        let fd = sys::openat(dir, name, libc::O_PATH, 0).ok()?;
        if !is_ref(sys::fstat(fd.as_raw_fd()).ok()?) {
            return None;
        }
        let t = sys::readlink_fd(fd.as_raw_fd()).ok()?;
        k.is_long_link(&t)
            .then(|| LongLink(fd, OsString::from_vec(t)))
    }

    /// After a name of long link `l` went (unlink, rename over it): its side file goes
    /// with the last name.
    pub(super) fn release_long_link(&self, l: Option<LongLink>) {
        let Some(LongLink(fd, link)) = l else {
            return;
        };
        if !matches!(sys::fstat(fd.as_raw_fd()), Ok(st) if st.st_nlink == 0) {
            return;
        }
        if let Err(e) = self.with_root(|root| names::remove_long_link(root, &link)) {
            tracing::warn!(
                link = ?link,
                "cannot remove the side file of a removed long symlink: {e}"
            );
        }
    }

    /// The size in the mount of `inode`, a symlink whose backing target may be a long link
    /// (`None`: not one, or its side file cannot be read, which readlink reports).
    pub(super) fn long_link_len(&self, inode: &Inode) -> Option<u64> {
        let k = self.names().filter(|k| k.long_names())?;
        let t = sys::readlink_fd(self.fd_of(inode).ok()?.raw()).ok()?;
        if !k.is_long_link(&t) {
            return None;
        }
        let st = self
            .with_root(|root| sys::fstatat_nofollow(root, OsStr::from_bytes(&t)))
            .ok()?;
        Some(names::target_len(st.st_size as u64))
    }

    /// Gives the directory just made at `fd` (an `O_PATH` fd) its IV, on a volume with
    /// encrypted names.
    pub(super) fn new_dir_iv(&self, fd: RawFd) -> FsResult<Option<DirIv>> {
        if self.names().is_none() {
            return Ok(None);
        }
        match names::create_diriv(fd) {
            // One is there already (only the daemon that made a directory gives it an
            // IV in shared storage, so not another daemon's; but it is the directory's).
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(Some(names::read_diriv(fd)?)),
            r => Ok(Some(r?)),
        }
    }

    /// Makes the entry `b` in backing directory `dir`, the way every new name is made: a
    /// long name's side file written and synced before any lock is taken
    /// ([`Self::put_side`]); under the name and namespace locks, the side file still there
    /// ([`Self::keep_side`]), `make` (on failure the side file goes again, unless an entry
    /// has the name), the side file checked again in shared storage, then `then` with what
    /// `make` made, still under the locks (the inode bookkeeping it does is ordered
    /// against renames and unlinks).
    pub(super) fn make_entry<M, T>(
        &self,
        dir: RawFd,
        b: &Backing,
        make: impl FnOnce() -> FsResult<M>,
        then: impl FnOnce(M) -> FsResult<T>,
    ) -> FsResult<T> {
        self.put_side(dir, b)?;
        let _g = self.names_lock.read_recursive();
        let _ns = self.fds.ns_shared();
        self.keep_side(dir, b)?;
        let made = make().inspect_err(|_| self.drop_side_if_unused(dir, b))?;
        self.recheck_side(dir, b)?;
        then(made)
    }

    /// In shared storage, after the entry of long name `b` was made in `dir`: another
    /// daemon's unlink or rename of the same name may have removed its side file between
    /// [`Self::keep_side`] and the entry; then it is written again.
    pub(super) fn recheck_side(&self, dir: RawFd, b: &Backing) -> FsResult<()> {
        if self.shared {
            self.keep_side(dir, b)?;
        }
        Ok(())
    }

    /// rmdir on a volume with encrypted names: the directory's IV goes first (it must hold
    /// nothing else), and comes back if the rmdir fails.
    pub(super) fn rmdir_named(&self, k: &NameKey, pdir: RawFd, bname: &OsStr) -> FsResult<()> {
        let child = sys::openat(
            pdir,
            bname,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        let cfd = child.as_raw_fd();
        let iv = take_iv(k, cfd)?;
        sys::unlinkat(pdir, bname, libc::AT_REMOVEDIR).map_err(|e| {
            put_back_iv(cfd, iv);
            FsError::from(e)
        })
    }
}

/// Removes the IV of the backing directory `dir` (encrypted names, key `k`) so that it
/// can be removed or replaced: ENOTEMPTY unless the IV is all it holds, but for side files
/// of long names whose entries are gone (a crash between an entry's removal and its side
/// file's), which go too. Returns the IV, for [`put_back_iv`] should the removal fail.
pub(super) fn take_iv(k: &NameKey, dir: RawFd) -> FsResult<Option<DirIv>> {
    let d = sys::reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut orphans = Vec::new();
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))? {
        let name = e?.file_name();
        match k.kind_of(&name) {
            EntryKind::DirIv if name.as_bytes() == DIRIV_NAME.as_bytes() => {}
            // Its entry would be listed too, and refuse; an IV's temp file is a crash's.
            EntryKind::Side(_) | EntryKind::DirIv => orphans.push(name),
            _ => return Err(err(libc::ENOTEMPTY)),
        }
    }
    drop(d);
    for o in orphans {
        match sys::unlinkat(dir, &o, 0) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e.into()),
            _ => {}
        }
    }
    let iv = names::read_diriv(dir).ok();
    match sys::unlinkat(dir, OsStr::new(DIRIV_NAME), 0) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e.into()),
        _ => Ok(iv),
    }
}

/// Puts back what [`take_iv`] took from `dir`, whose removal failed.
pub(super) fn put_back_iv(dir: RawFd, iv: Option<DirIv>) {
    if let Some(iv) = iv {
        if let Err(e) = names::write_diriv(dir, &iv) {
            tracing::error!("cannot put back {DIRIV_NAME} after a failed rmdir/rename: {e}");
        }
    }
}

pub(super) fn owned_name_ok(name: &OsStr) -> FsResult<()> {
    if name.len() > 255 {
        return Err(err(libc::ENAMETOOLONG));
    }
    Ok(())
}

/// Whether the backing directory `dir` (any fd) holds nothing but `allowed` (and, for
/// the root, `ino` 1, the volume config).
pub(super) fn only_entries(dir: RawFd, ino: u64, allowed: &[&str]) -> std::io::Result<bool> {
    let d = sys::reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))? {
        let name = e?.file_name();
        if !is_reserved(ino, &name)
            && !names::is_diriv_temp(&name)
            && !allowed.iter().any(|a| name.as_bytes() == a.as_bytes())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

//! File content through the daemon: opening files, their content keys, reads, writes,
//! copy_file_range, truncation, holes and lseek (the block work is in [`crate::backing::content`]).

#![allow(clippy::wildcard_imports)]

use super::*;

impl KmsFs {
    /// The content key of an open regular file, reading the header if needed.
    /// `None` for a file that is empty on disk.
    /// With `verify`, the header is read again and compared with the cached one (on open).
    pub(super) fn content_key(
        &self,
        inode: &Inode,
        f: &File,
        verify: bool,
    ) -> FsResult<Option<Arc<ContentKey>>> {
        let max_age = self.vol.cache.max_age();
        let mut reread: Option<Vec<u8>> = None;
        {
            let g = inode.ckey.lock();
            if let Some(c) = g.as_ref() {
                if c.at.elapsed() < max_age {
                    if !verify {
                        return Ok(Some(c.key.clone()));
                    }
                    if content::backing_len(f)? == 0 {
                        drop(g);
                        *inode.ckey.lock() = None;
                        return Ok(None);
                    }
                    let h = content::read_header(f, &self.vol.geo)?;
                    if h == c.header {
                        return Ok(Some(c.key.clone()));
                    }
                    reread = Some(h);
                }
            }
        }
        let hdr = match reread {
            Some(h) => h,
            None => {
                let blen = content::backing_len(f)?;
                if blen == 0 {
                    *inode.ckey.lock() = None;
                    return Ok(None);
                }
                content::read_header(f, &self.vol.geo).inspect_err(|e| {
                    self.vol.count_bad_header();
                    tracing::error!(file = %self.path_of(inode), key_id = %self.vol.cmk(),
                        "cannot open file header: {e}");
                })?
            }
        };
        let key = match self.vol.open_header(&hdr) {
            Ok(k) => Arc::new(k),
            Err(e) => {
                let path = self.path_of(inode);
                match &e {
                    FsError::KeyDenied {
                        key_id,
                        code,
                        message,
                    } => tracing::error!(
                        file = %path, key_id = %key_id, reason = %code,
                        "the KMS refused this file's data key: {message}"
                    ),
                    other => tracing::error!(file = %path, key_id = %self.vol.header_key_id(&hdr),
                        "cannot open file header: {other}"),
                }
                return Err(e);
            }
        };
        *inode.ckey.lock() = Some(CachedKey {
            key: key.clone(),
            at: Instant::now(),
            header: hdr,
            seen: None,
        });
        Ok(Some(key))
    }

    pub(super) fn log_bad_block(&self, inode: &Inode, r: Result<BadBlock, FsError>) -> FsError {
        match r {
            Ok(BadBlock(b, fault)) => {
                self.vol.count_bad_block();
                let what = match fault {
                    BlockFault::Tag => {
                        "block failed authentication (tampered, truncated or corrupt); returning EIO"
                    }
                    BlockFault::NotFinal => {
                        "the file ends at a block sealed as not its last: cut at a block boundary, \
                         or a crash interrupted an append (kmsfs fsck); returning EIO"
                    }
                    BlockFault::HoleAtEnd => {
                        "the file ends in a hole: cut and padded with zeros, or an append lost \
                         in a power cut (kmsfs fsck); returning EIO"
                    }
                };
                tracing::error!(
                    file = %self.path_of(inode),
                    block = b,
                    key_id = %self.key_id_of(inode),
                    "{what}"
                );
                err(libc::EIO)
            }
            Err(e) => {
                if matches!(e, FsError::Integrity(_)) {
                    self.vol.count_bad_block();
                    tracing::error!(file = %self.path_of(inode), key_id = %self.key_id_of(inode),
                        "integrity: {e}");
                }
                e
            }
        }
    }

    pub(super) fn new_handle(&self, inode: Arc<Inode>, kind: HandleKind) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let is_file = matches!(kind, HandleKind::File(_));
        let h = Arc::new(Handle { inode, kind });
        if is_file {
            self.fds.count_open_file(true);
            let mut open = h.inode.open.lock();
            open.retain(|w| w.strong_count() > 0);
            open.push(Arc::downgrade(&h));
        }
        self.handles.write().insert(fh, h);
        fh
    }

    pub(super) fn open_backing(&self, inode: &Inode, flags: i32) -> FsResult<File> {
        let acc = flags & libc::O_ACCMODE;
        let want = if self.read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR // O_WRONLY too: partial-block writes must read
        };
        match self.reopen_inode(inode, want) {
            Ok(f) => Ok(f),
            Err(_) if acc == libc::O_RDONLY && want != libc::O_RDONLY => {
                self.reopen_inode(inode, libc::O_RDONLY)
            }
            Err(e) => Err(e),
        }
    }

    /// `inode`'s backing file opened with real access `flags`: straight from its file
    /// handle when it has one, else by reopening its `O_PATH` fd.
    pub(super) fn reopen_inode(&self, inode: &Inode, flags: i32) -> FsResult<File> {
        if let (Anchor::Handle(h), Some(m)) = (&inode.anchor, self.fds.handle_mount()) {
            match sys::open_by_handle(m.fd.as_raw_fd(), h, flags | libc::O_NOFOLLOW) {
                Ok(fd) => return Ok(fd.into()),
                // Unlinked but open: `fd_of` reaches it through the open file.
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sys::reopen(self.fd_of(inode)?.raw(), flags)?)
    }

    pub(super) fn do_open(&self, ino: INodeNo, flags: i32) -> FsResult<u64> {
        let inode = self.inode(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            self.check_writable()?;
        }
        let f = self.open_backing(&inode, flags)?;
        if flags & libc::O_TRUNC != 0 {
            self.empty_file(&inode, &f)?;
        } else {
            // A bad header or a refused key fails the open.
            self.content_key(&inode, &f, true)?;
        }
        Ok(self.new_handle(inode, HandleKind::File(f)))
    }

    pub(super) fn do_create(
        &self,
        req: &Request,
        new: NewEntry,
        flags: i32,
    ) -> FsResult<(FileAttr, u64)> {
        self.may_add_name(new.parent, new.name)?;
        let p = self.inode(new.parent)?;
        let mode = self.new_mode(&p, new.mode, new.umask)?;
        let bname = self.backing_name(&p, new.name)?;
        let name = &*bname;
        let pdir = self.fd_of(&p)?;
        let (uid, gid) = self.owner_for(req, &p)?;
        // Made here, or (without O_EXCL) opened when it exists.
        let make = || -> FsResult<(File, bool)> {
            match create_file(pdir.raw(), name, mode, uid, gid) {
                Ok(f) => Ok((f, true)),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                    Ok((
                        sys::openat(pdir.raw(), name, libc::O_RDWR, 0)?.into(),
                        false,
                    ))
                }
                Err(e) => Err(e.into()),
            }
        };
        self.make_entry(pdir.raw(), &bname, make, |(file, made)| {
            if made {
                self.undo_inherited_acl(pdir.raw(), file.as_raw_fd(), mode)?;
            }
            let pfd = sys::openat(pdir.raw(), name, libc::O_PATH, 0)?;
            let (inode, st) = self.remember(pfd, &p, name)?;
            if flags & libc::O_TRUNC != 0 {
                self.empty_file(&inode, &file)?;
            }
            let attr = self.attr_at(&inode, &st);
            let fh = self.new_handle(inode, HandleKind::File(file));
            Ok((attr, fh))
        })
    }

    pub(super) fn do_fsync(&self, fh: FileHandle, datasync: bool) -> FsResult<()> {
        match &self.handle(fh)?.kind {
            HandleKind::File(f) => {
                if datasync {
                    f.sync_data()?;
                } else {
                    f.sync_all()?;
                }
                Ok(())
            }
            HandleKind::Dir(_) => Ok(()),
        }
    }

    pub(super) fn do_read(&self, fh: FileHandle, off: u64, size: u32) -> FsResult<Vec<u8>> {
        let h = self.handle(fh)?;
        let HandleKind::File(f) = &h.kind else {
            return Err(err(libc::EISDIR));
        };
        if self.shared {
            // Exclusive: the OFD locks of this handle's file are one set (see `shared`).
            let _g = h.inode.content.write();
            let _l = shared::lock_read(f, &self.vol.geo, off, size)?;
            let key = self.current_key(&h.inode, f)?;
            return self.read_counted(&h.inode, f, key, off, size);
        }
        let _g = h.inode.content.read();
        let key = self.content_key(&h.inode, f, false)?;
        self.read_counted(&h.inode, f, key, off, size)
    }

    /// Reads with `key` and counts the plaintext bytes for `kmsfs stats`.
    pub(super) fn read_counted(
        &self,
        inode: &Inode,
        f: &File,
        key: Option<Arc<ContentKey>>,
        off: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        let d = content::read(f, key.as_deref(), &self.vol.geo, off, size)
            .map_err(|r| self.log_bad_block(inode, r))?;
        Metrics::add(&self.vol.metrics.bytes_read, d.len() as u64);
        Ok(d)
    }

    /// The header lock of a backing file (`kmsfs rewrap` takes it too, src/tools/rewrap.rs),
    /// held where a header is created or truncated away.
    pub(super) fn header_lock<'f>(&self, f: &'f File) -> FsResult<HeaderLock<'f>> {
        Ok(volume::lock_header(f, self.vol.geo.header_size)?)
    }

    /// The content key for a read or write: the cached one, but in shared storage checked
    /// against the header on disk whenever the backing file's size or ctime changed since
    /// the last check (another daemon may have truncated it and written a new header).
    pub(super) fn current_key(&self, inode: &Inode, f: &File) -> FsResult<Option<Arc<ContentKey>>> {
        if !self.shared {
            return self.content_key(inode, f, false);
        }
        let st = sys::fstat(f.as_raw_fd())?;
        let now = (st.st_size, st.st_ctime, st.st_ctime_nsec);
        if let Some(c) = inode.ckey.lock().as_ref() {
            if c.seen == Some(now) && c.at.elapsed() < self.vol.cache.max_age() {
                return Ok(Some(c.key.clone()));
            }
        }
        let key = self.content_key(inode, f, true)?;
        if let Some(c) = inode.ckey.lock().as_mut() {
            c.seen = Some(now);
        }
        Ok(key)
    }

    /// Truncates an open file to 0 (its header goes too: the next write makes another),
    /// under the header lock (a rewrap must not write a slot into the emptied file).
    pub(super) fn empty_file(&self, inode: &Inode, f: &File) -> FsResult<()> {
        let _g = inode.content.write();
        let _l = self.shared.then(|| shared::lock_all(f)).transpose()?;
        let _hl = self.header_lock(f)?;
        f.set_len(0)?;
        *inode.ckey.lock() = None;
        Ok(())
    }

    /// The key for a write: the existing one, or a new header for an empty file (with
    /// the header lock, to be held until the header is written).
    #[allow(clippy::type_complexity)]
    pub(super) fn key_for_write<'f>(
        &self,
        inode: &Inode,
        f: &'f File,
    ) -> FsResult<(Arc<ContentKey>, Option<Vec<u8>>, Option<HeaderLock<'f>>)> {
        match self.current_key(inode, f)? {
            Some(k) => Ok((k, None, None)),
            None => {
                let lock = self.header_lock(f)?;
                let (hdr, key) = self.vol.new_file().inspect_err(|e| {
                    if let FsError::KeyDenied {
                        key_id,
                        code,
                        message,
                    } = e
                    {
                        tracing::error!(file = %self.path_of(inode), key_id = %key_id,
                            reason = %code, "the KMS refused a new data key: {message}");
                    }
                })?;
                Ok((Arc::new(key), Some(hdr), Some(lock)))
            }
        }
    }

    /// Writes `data` at `off`; `append` (the file was opened `O_APPEND`) in shared
    /// storage writes at the end of the backing file as it is under the locks instead,
    /// since the kernel's idea of the size may predate another daemon's append.
    ///
    /// `kill_suidgid`: the writer, who lacks CAP_FSETID (`FUSE_WRITE_KILL_SUIDGID`), so
    /// the file loses set-user-ID and set-group-ID (see [`drop_suidgid`]) before the data
    /// changes, as a local filesystem does (our pwrite, as root, would keep them).
    pub(super) fn do_write(
        &self,
        fh: FileHandle,
        off: u64,
        data: &[u8],
        append: bool,
        kill_suidgid: Option<Caller>,
    ) -> FsResult<u32> {
        self.check_writable()?;
        let h = self.handle(fh)?;
        let HandleKind::File(f) = &h.kind else {
            return Err(err(libc::EISDIR));
        };
        let _g = h.inode.content.write();
        if let Some(c) = kill_suidgid {
            drop_suidgid(f.as_raw_fd(), |gid| c.in_group(gid))?;
        }
        let mut off = off;
        let _l = if self.shared && !data.is_empty() {
            let at = (!append).then_some(off);
            let (l, plain) = shared::lock_write(f, &self.vol.geo, at, data.len() as u64)?;
            off = at.unwrap_or(plain);
            Some(l)
        } else {
            None
        };
        let (key, hdr, _hl) = self.key_for_write(&h.inode, f)?;
        content::write(f, &key, &self.vol.geo, hdr.as_deref(), off, data)
            .map_err(|r| self.log_bad_block(&h.inode, r))?;
        if let Some(header) = hdr {
            *h.inode.ckey.lock() = Some(CachedKey {
                key,
                at: Instant::now(),
                header,
                seen: None,
            });
        }
        Metrics::add(&self.vol.metrics.bytes_written, data.len() as u64);
        Ok(data.len() as u32)
    }

    /// `copy_file_range` within the mount: each 1 MiB piece decrypted from the source and
    /// sealed into the destination here, instead of the kernel's fallback, which reads the
    /// plaintext out to the caller and writes it back in (twice through /dev/fuse). At
    /// most [`MAX_COPY`] per call (callers loop); a short count at the source's end.
    pub(super) fn do_copy_file_range(
        &self,
        req: &Request,
        (fh_in, off_in): (FileHandle, u64),
        (fh_out, off_out): (FileHandle, u64),
        len: u64,
    ) -> FsResult<u32> {
        self.check_writable()?;
        let caller = Caller::of(req);
        // As for a write by this caller: set-ID bits go unless it has CAP_FSETID.
        let kill = (!caller.has_fsetid()).then_some(caller);
        let len = len.min(MAX_COPY);
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(u64::from(MAX_WRITE)) as u32;
            let r = self.do_read(fh_in, off_in + done, want).and_then(|data| {
                if data.is_empty() {
                    return Ok(0);
                }
                let off = off_out + done;
                self.do_write(fh_out, off, &data, false, kill)
            });
            match r {
                Ok(0) => break,
                Ok(n) => {
                    done += u64::from(n);
                    if n < want {
                        break;
                    }
                }
                // What was copied stands; the error comes with the next call.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done as u32)
    }

    pub(super) fn truncate_file(&self, inode: &Inode, f: &File, size: u64) -> FsResult<()> {
        if size == 0 {
            return self.empty_file(inode, f);
        }
        let _g = inode.content.write();
        let _l = self.shared.then(|| shared::lock_all(f)).transpose()?;
        let (key, hdr, _hl) = self.key_for_write(inode, f)?;
        content::truncate(f, Some(&key), &self.vol.geo, hdr.as_deref(), size)
            .map_err(|r| self.log_bad_block(inode, r))?;
        if let Some(header) = hdr {
            *inode.ckey.lock() = Some(CachedKey {
                key,
                at: Instant::now(),
                header,
                seen: None,
            });
        }
        Ok(())
    }

    /// `fallocate` PUNCH_HOLE / ZERO_RANGE: plaintext `off..end`, clipped to the file,
    /// reads as zeros ([`content::zero_range`]).
    pub(super) fn zero_range(&self, inode: &Inode, f: &File, off: u64, end: u64) -> FsResult<()> {
        let _g = inode.content.write();
        let _l = self.shared.then(|| shared::lock_all(f)).transpose()?;
        let geo = &self.vol.geo;
        let blen = content::backing_len(f)?;
        let plain = geo.plain_size_lossy(blen);
        let end = end.min(plain);
        if off >= end {
            return Ok(());
        }
        let key = self.current_key(inode, f)?.ok_or_else(|| err(libc::EIO))?;
        content::zero_range(f, &key, geo, blen, off, end).map_err(|r| self.log_bad_block(inode, r))
    }

    /// `lseek` SEEK_DATA / SEEK_HOLE, answered from the backing file's extents: data is a
    /// block any of whose stored bytes are backing data; a hole is a block whose stored
    /// bytes all lie in a backing hole (and the end of the file).
    pub(super) fn do_lseek(&self, fh: FileHandle, offset: u64, whence: i32) -> FsResult<u64> {
        let h = self.handle(fh)?;
        let HandleKind::File(f) = &h.kind else {
            return Err(err(libc::EISDIR));
        };
        let _g = h.inode.content.read();
        let geo = &self.vol.geo;
        let blen = content::backing_len(f)?;
        let plain = geo.plain_size_lossy(blen);
        if offset >= plain {
            return Err(err(libc::ENXIO));
        }
        let bs = geo.block_size;
        let fd = f.as_raw_fd();
        // The block whose stored bytes hold backing offset `boff`.
        let block_at = |boff: u64| boff.saturating_sub(geo.header_size) / geo.stored_block();
        let start_of = |b: u64| geo.block_offset(BlockNo(b)).ok_or(FsError::TooBig);
        // The next backing data at or after `boff` (`blen` if none).
        let next_data = |boff: u64| match sys::lseek(fd, boff, libc::SEEK_DATA) {
            Ok(d) => Ok(d.min(blen)),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(blen),
            Err(e) => Err(FsError::from(e)),
        };
        // Whether block `b`'s stored bytes are all zeros: a hole, even where it shares a
        // backing fs block with its neighbour's data (stored blocks are not fs-aligned).
        let zero_block = |b: u64| -> FsResult<bool> {
            let (from, to) = (start_of(b)?, start_of(b + 1)?.min(blen));
            let mut buf = vec![0u8; to.saturating_sub(from) as usize];
            let n = sys::pread_full(f, &mut buf, from)?;
            Ok(buf[..n].iter().all(|&x| x == 0))
        };
        match whence {
            libc::SEEK_DATA => {
                let mut b = offset / bs;
                // Runs of zero blocks that the backing fs keeps as data (written zeros) are
                // looked through for a while, then reported as data (allowed: a hole may
                // always be called data).
                for _ in 0..64 {
                    let d = next_data(start_of(b)?)?;
                    if d >= blen {
                        return Err(err(libc::ENXIO));
                    }
                    b = block_at(d).max(b);
                    if b * bs >= plain {
                        return Err(err(libc::ENXIO));
                    }
                    if !zero_block(b)? {
                        break;
                    }
                    b += 1;
                }
                Ok((b * bs).max(offset).min(plain))
            }
            libc::SEEK_HOLE => {
                let mut b = offset / bs;
                loop {
                    let start = start_of(b)?;
                    if start >= blen {
                        return Ok(plain);
                    }
                    let end = start_of(b + 1)?.min(blen);
                    let d = next_data(start)?;
                    if d >= end || zero_block(b)? {
                        return Ok((b * bs).max(offset).min(plain));
                    }
                    // Data in this block: on from the block where the data run ends.
                    let hole = sys::lseek(fd, d, libc::SEEK_HOLE)?.min(blen);
                    b = block_at(hole).max(b + 1);
                }
            }
            _ => Err(err(libc::EINVAL)),
        }
    }

    /// FALLOCATE: reserve space (mode 0, KEEP_SIZE), PUNCH_HOLE and ZERO_RANGE.
    pub(super) fn do_fallocate(
        &self,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FsResult<()> {
        self.check_writable()?;
        let h = self.handle(fh)?;
        let HandleKind::File(f) = &h.kind else {
            return Err(err(libc::EISDIR));
        };
        let end = offset.checked_add(length).ok_or(FsError::TooBig)?;
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => {}
            libc::FALLOC_FL_PUNCH_HOLE if keep => {
                return self.zero_range(&h.inode, f, offset, end);
            }
            libc::FALLOC_FL_ZERO_RANGE => {
                let plain = self.vol.geo.plain_size_lossy(content::backing_len(f)?);
                self.zero_range(&h.inode, f, offset, end)?;
                if !keep && end > plain {
                    // The new part is a hole: zeros.
                    self.truncate_file(&h.inode, f, end)?;
                }
                return Ok(());
            }
            _ => return Err(err(libc::EOPNOTSUPP)),
        }
        let blen = content::backing_len(f)?;
        let plain = self.vol.geo.plain_size_lossy(blen);
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > plain {
            self.truncate_file(&h.inode, f, end)?;
        }
        // Reserve the backing space (best effort; tmpfs and others may not support it).
        if let Some(bend) = self.vol.geo.backing_size(end) {
            match sys::fallocate(f, libc::FALLOC_FL_KEEP_SIZE, 0, bend) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            return Err(FsError::TooBig);
        }
        Ok(())
    }
}

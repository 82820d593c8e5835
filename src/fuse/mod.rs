//! The FUSE daemon: `impl fuser::Filesystem` over a backing directory.
//!
//! Every handler calls an inner function returning [`FsResult`] and replies once;
//! [`errno`] is the only place an errno is made. Inodes reach their backing files through
//! [`inodes`]: by name from their parent (and by file handle where the backing fs and the
//! daemon's privileges allow), through a bounded cache of `O_PATH|O_NOFOLLOW` fds, so the
//! daemon's fds stay under a fixed budget however many inodes the kernel keeps, and no
//! symlink planted in the backing directory is ever followed.

mod attrs;
mod enc_names;
mod entries;
pub mod inodes;
mod io;
pub mod shared;
mod stats;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};

use crate::backing::content::{self, BadBlock};
use crate::backing::error::{FsError, FsResult};
use crate::backing::nodes::{create_file, make_node, make_symlink};
use crate::backing::sys;
use crate::format::{BlockFault, BlockNo, ContentKey};
use crate::volume::metrics::Metrics;
use crate::volume::names::make_stored_symlink;
use crate::volume::names::{self, BadName, DirIv, EntryKind, NameError, NameKey, DIRIV_NAME};
use crate::volume::{self, is_reserved, HeaderLock, Volume};
use inodes::{Anchor, FdCache, HandleMount, Inode};
pub use stats::KeyExpiry;
#[allow(clippy::wildcard_imports)]
use {attrs::*, enc_names::*};

/// Virtual xattr on the mount root: the daemon's counters as JSON.
pub const STATS_XATTR: &str = "user.kmsfs.stats";
/// Virtual xattr on the mount root: the daemon's pid.
pub const PID_XATTR: &str = "user.kmsfs.pid";

/// How long the kernel may trust attributes and entries we reply (0 in shared storage).
const TTL: Duration = Duration::from_secs(1);

/// The largest write request asked of the kernel (it caps them at 256 pages).
const MAX_WRITE: u32 = 1 << 20;

/// The most one `copy_file_range` request copies (the reply's count is 32 bits; callers
/// such as cp loop until done).
const MAX_COPY: u64 = 64 << 20;

/// The one place errno is made.
pub fn errno(e: &FsError) -> Errno {
    match e {
        FsError::Io(io) => Errno::from_i32(io.raw_os_error().unwrap_or(libc::EIO)),
        FsError::Integrity(_) | FsError::Header(_) | FsError::Kms(_) => Errno::EIO,
        FsError::KeyDenied { .. } => Errno::EACCES,
        FsError::TooBig => Errno::EFBIG,
        FsError::Errno(n) => Errno::from_i32(*n),
    }
}

fn err(n: i32) -> FsError {
    FsError::Errno(n)
}

/// The backing file of an inode, for one operation.
enum InodeFd<'a> {
    /// The root's own `O_PATH` fd.
    Held(&'a OwnedFd),
    /// An `O_PATH` fd from the fd cache (closed when evicted and no longer in use).
    Cached(Arc<OwnedFd>),
    /// The fd of a FUSE file handle open on the inode.
    Open(Arc<Handle>),
}

impl InodeFd<'_> {
    fn raw(&self) -> RawFd {
        match self {
            InodeFd::Held(fd) => fd.as_raw_fd(),
            InodeFd::Cached(fd) => fd.as_raw_fd(),
            InodeFd::Open(h) => match &h.kind {
                HandleKind::File(f) => f.as_raw_fd(),
                // Never stored: only file handles are remembered in `Inode::open`.
                HandleKind::Dir(_) => -1,
            },
        }
    }
}

struct CachedKey {
    key: Arc<ContentKey>,
    at: Instant,
    header: Vec<u8>,
    /// Shared storage: the backing file's (size, ctime) when the header was last checked.
    seen: Option<(i64, i64, i64)>,
}

#[derive(Default)]
struct InodeTable {
    by_ino: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

struct DirEntryRec {
    ino: u64,
    kind: FileType,
    /// The name in the mount.
    name: OsString,
    /// The name in the backing directory (the same unless names are encrypted).
    backing: OsString,
}

/// The backing form of a name, for one operation.
struct Backing<'n> {
    /// The entry's name in the backing directory.
    entry: Cow<'n, OsStr>,
    /// A long name's full stored form, which its side file holds (encrypted names).
    long: Option<OsString>,
}

impl std::ops::Deref for Backing<'_> {
    type Target = OsStr;
    fn deref(&self) -> &OsStr {
        &self.entry
    }
}

/// A long link's backing symlink (encrypted names): an `O_PATH` fd on it (its link
/// count says when the last name is gone) and the name of its side file at the root.
struct LongLink(OwnedFd, OsString);

enum HandleKind {
    File(File),
    Dir(DirStream),
}

/// An open directory: the listing its reads are served from. Taken at opendir, and again
/// when a read starts over at offset 0 (`rewinddir`, `seekdir(0)`), as POSIX asks of a
/// rewound stream; a reader that does not rewind keeps stable offsets and sees each
/// entry at most once, whatever is created or removed meanwhile.
struct DirStream {
    entries: Mutex<Arc<Vec<DirEntryRec>>>,
    /// A read was served from the current listing.
    read: std::sync::atomic::AtomicBool,
}

struct Handle {
    inode: Arc<Inode>,
    kind: HandleKind,
}

/// The filesystem.
pub struct KmsFs {
    vol: Arc<Volume>,
    inodes: Arc<RwLock<InodeTable>>,
    next_ino: AtomicU64,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    read_only: bool,
    /// The open fds of inodes, within the mount's fd budget (see [`inodes`]).
    fds: FdCache,
    /// Other daemons share the backing directory (see [`shared`]).
    shared: bool,
    /// Entry and attribute timeout given to the kernel.
    ttl: Duration,
    /// FUSE_HANDLE_KILLPRIV_V2 was offered (not in shared storage): the kernel asks no
    /// `security.capability` before each write and no getattr before each chown, and
    /// leaves clearing set-user-ID/set-group-ID to us (see [`drop_suidgid`]).
    kill_priv: bool,
    /// `-o writeback_cache` (never in shared storage): see [`KmsFs::with_writeback_cache`].
    writeback: bool,
    /// POSIX ACLs are enforced (FUSE_POSIX_ACL): see [`KmsFs::with_posix_acl`].
    posix_acl: bool,
    /// Encrypted names: held (recursively) shared by everything that adds a name to a
    /// directory or gives one its IV, exclusive by what removes a directory's IV (rmdir,
    /// and rename, which may replace an empty directory), so that no name is made under
    /// an IV on its way out.
    names_lock: RwLock<()>,
}

/// The xattrs that hold POSIX ACLs (`setfacl`, `getfacl`).
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

impl KmsFs {
    /// A filesystem over `backing` (an `O_PATH` directory fd) for volume `vol`.
    pub fn new(vol: Arc<Volume>, backing_root: OwnedFd, read_only: bool) -> FsResult<Self> {
        let st = sys::fstat(backing_root.as_raw_fd())?;
        let handle_mount = handle_mount(&backing_root);
        let root = Arc::new(Inode::new(
            INodeNo::ROOT.0,
            (st.st_dev, st.st_ino),
            Anchor::Root(backing_root),
            None,
            1 << 40,
        ));
        let mut t = InodeTable::default();
        t.by_key.insert(root.key, root.ino);
        t.by_ino.insert(root.ino, root);
        Ok(KmsFs {
            vol,
            inodes: Arc::new(RwLock::new(t)),
            next_ino: AtomicU64::new(1 << 62),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            read_only,
            fds: FdCache::new(inodes::DEFAULT_MAX_FDS, handle_mount),
            shared: false,
            ttl: TTL,
            kill_priv: false,
            writeback: false,
            posix_acl: false,
            names_lock: RwLock::new(()),
        })
    }

    /// At most about `max_fds` open fds (`-o max_fds=N`), files open through the mount
    /// aside (each holds one): see [`inodes`].
    pub fn with_max_fds(mut self, max_fds: usize) -> Self {
        let hm = self.fds.handle_mount_take();
        self.fds = FdCache::new(max_fds, hm);
        self
    }

    /// Shared storage (`-o shared_storage`): other daemons change the backing directory
    /// too. The kernel caches no entries or attributes (timeout 0) and drops a file's
    /// cached pages when its size or mtime changed; a file's header is checked again
    /// whenever its backing size or ctime changed; content changes take OFD byte-range
    /// locks on the backing file; appends go to the end of the backing file as it is.
    pub fn with_shared_storage(mut self, on: bool) -> Self {
        self.shared = on;
        self.ttl = if on { Duration::ZERO } else { TTL };
        self
    }

    /// `-o writeback_cache`: the kernel keeps written pages in its cache and sends them
    /// in large batches later (at the latest on fsync and close), keeping the size and
    /// times of files itself meanwhile. Small and random writes cost a page copy instead
    /// of a request each; the price is that a full disk or a refused key is reported by
    /// fsync or close, not by the write. Not with shared storage, where another daemon
    /// may change a file under the kernel's cached size.
    pub fn with_writeback_cache(mut self, on: bool) -> Self {
        if on && self.shared {
            tracing::warn!("writeback_cache is ignored with shared storage");
        }
        self.writeback = on && !self.shared;
        self
    }

    /// POSIX ACLs (on unless `-o noacl`; never with shared storage). The kernel enforces
    /// them beside the mode bits and caches them per inode; they live as the backing
    /// files' own ACLs, so the backing filesystem keeps them consistent with the mode
    /// (chmod rewrites the mask, a new entry inherits its directory's default ACL, which
    /// then takes the place of the umask). Off, ACLs are refused (EOPNOTSUPP) as on a
    /// filesystem mounted `noacl`: an ACL the kernel would not enforce is never stored.
    /// Not with shared storage: the kernel would keep ACLs another daemon has changed.
    pub fn with_posix_acl(mut self, on: bool) -> Self {
        self.posix_acl = on && !self.shared;
        self
    }

    /// Whether mount name `name` in `parent` is refused for being the volume config's
    /// backing name ([`is_reserved`]); with encrypted names no name is.
    fn reserved(&self, parent: u64, name: &OsStr) -> bool {
        self.names().is_none() && is_reserved(parent, name)
    }

    /// The backing path of `fd` for a log line (its /proc link, lossy).
    fn path_hint(&self, fd: RawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// The backing file of `inode` for one operation (`ESTALE` once it was deleted).
    fn fd_of<'a>(&self, inode: &'a Inode) -> FsResult<InodeFd<'a>> {
        if let Anchor::Root(fd) = &inode.anchor {
            return Ok(InodeFd::Held(fd));
        }
        // A file open through the mount is reached through that open file: it still
        // works once unlinked, and takes nothing from the fd cache while a program writes.
        if let Some(open) = inode.open.lock().iter().find_map(Weak::upgrade) {
            return Ok(InodeFd::Open(open));
        }
        Ok(InodeFd::Cached(self.fds.resolve(inode)?))
    }

    /// The path of `inode` relative to the mount (`/dir/file`), for log lines.
    fn path_of(&self, inode: &Inode) -> String {
        match self.fd_of(inode) {
            Ok(fd) => {
                let p = sys::fd_path(fd.raw());
                let root = self.vol.backing().to_string_lossy();
                match p.strip_prefix(root.as_ref()) {
                    Some(rel) if rel.starts_with('/') => rel.to_owned(),
                    Some("") => "/".to_owned(),
                    _ => p,
                }
            }
            Err(_) => format!("inode {}", inode.ino),
        }
    }

    /// The CMK of an inode's cached header, for log lines (the volume's CMK if none).
    fn key_id_of(&self, inode: &Inode) -> String {
        match inode.ckey.lock().as_ref() {
            Some(c) => self.vol.header_key_id(&c.header),
            None => self.vol.cmk(),
        }
    }

    /// How the inode of a just-opened `O_PATH` fd is anchored besides its names: by its
    /// file handle when handles work on the backing mount.
    fn anchor_for(&self, fd: RawFd) -> Anchor {
        let Some(m) = self.fds.handle_mount() else {
            return Anchor::Path;
        };
        match sys::name_to_handle_fd(fd) {
            Ok((h, mount_id)) if mount_id == m.mount_id => Anchor::Handle(h),
            _ => Anchor::Path,
        }
    }

    fn inode(&self, ino: INodeNo) -> FsResult<Arc<Inode>> {
        self.inodes
            .read()
            .by_ino
            .get(&ino.0)
            .cloned()
            .ok_or(err(libc::ESTALE))
    }

    fn handle(&self, fh: FileHandle) -> FsResult<Arc<Handle>> {
        self.handles
            .read()
            .get(&fh.0)
            .cloned()
            .ok_or(err(libc::EBADF))
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.read_only {
            return Err(err(libc::EROFS));
        }
        Ok(())
    }
}

/// Capability number of CAP_FSETID (linux/capability.h).
const CAP_FSETID: u32 = 4;

impl Filesystem for KmsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Writes arrive as whole 1 MiB requests (the kernel's 256-page cap), each sealed
        // in one buffer and written by one pwrite.
        let _ = config.set_max_write(MAX_WRITE);
        // Lookups and readdirs of one directory may run in parallel (the backing fs
        // serialises what must be).
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        if !self.shared {
            // Entries come with their attributes (`ls -l`, `du`, `rm -r` need no lookup
            // per entry); the kernel falls back to plain readdir where nobody stats.
            let _ = config.add_capabilities(
                InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO,
            );
        }
        if !self.shared {
            // Set-user-ID/set-group-ID are cleared here on write and truncate; the
            // backing kernel clears them on chown and drops `security.capability` on
            // our writes, truncates and chowns, as for any file.
            self.kill_priv = config
                .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                .is_ok();
        }
        if self.posix_acl {
            // The kernel checks ACLs beside the mode (cached per inode) and leaves the
            // umask of new entries to us, so a default ACL can replace it.
            if let Err(e) =
                config.add_capabilities(InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK)
            {
                tracing::warn!("the kernel lacks FUSE_POSIX_ACL ({e:?}): ACLs are refused");
                self.posix_acl = false;
            }
        }
        if self.writeback {
            if let Err(e) = config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE) {
                tracing::warn!(
                    "the kernel lacks FUSE_WRITEBACK_CACHE ({e:?}): writes go straight through"
                );
                self.writeback = false;
            }
        }
        if self.shared {
            // Cached pages are dropped when a getattr finds another size or mtime.
            if let Err(e) = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA) {
                tracing::warn!("the kernel lacks FUSE_AUTO_INVAL_DATA ({e:?}): shared storage may serve stale pages of files kept open");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.do_forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino).and_then(|i| self.getattr_ino(&i)) {
            Ok(a) => reply.attr(&self.ttl, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves set-user-ID/set-group-ID to us
        // on truncate and chown(-1, -1) (it then sends a setattr that sets nothing).
        // fuser 0.18 hides FATTR_KILL_SUIDGID, the kernel's "caller lacks CAP_FSETID":
        // the caller's capabilities are read from /proc where a truncated file has them.
        let empty = [mode.is_none(), uid.is_none(), gid.is_none(), size.is_none()]
            .into_iter()
            .all(|none| none)
            && atime.is_none()
            && mtime.is_none();
        let kill = match (self.kill_priv, empty, size) {
            (false, _, _) => KillSuidgid::No,
            (true, true, _) => KillSuidgid::Always(Caller::of(req)),
            (true, false, Some(_)) => KillSuidgid::UnlessFsetid(Caller::of(req)),
            (true, false, None) => KillSuidgid::No,
        };
        match self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh, kill) {
            Ok(a) => reply.attr(&self.ttl, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inode(ino).and_then(|i| self.do_readlink(&i)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mknod(req, parent, name, mode, umask, rdev) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mknod(req, parent, name, libc::S_IFDIR | (mode & 0o7777), umask, 0) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.check_writable().and_then(|_| {
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
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.check_writable().and_then(|_| {
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
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        match self.do_symlink(req, parent, link_name, target.as_os_str()) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent, name, newparent, newname, flags.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.do_link(ino, newparent, newname) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(fh, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let append = self.shared && flags.0 & libc::O_APPEND != 0;
        let kill = write_flags
            .contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            .then(|| Caller::of(req));
        match self.do_write(fh, offset, data, append, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = u64::try_from(offset)
            .map_err(|_| err(libc::ENXIO))
            .and_then(|off| self.do_lseek(fh, off, whence));
        match r {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.do_copy_file_range(req, (fh_in, offset_in), (fh_out, offset_out), len) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do on close(): writes are on disk when acknowledged and locks are
        // the kernel's. ENOSYS tells the kernel so once, and it sends no FLUSH again (one
        // request less per file closed).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.handles.write().remove(&fh.0);
        if let Some(h) = h {
            let inode = h.inode.clone();
            if matches!(h.kind, HandleKind::File(_)) {
                self.fds.count_open_file(false);
            }
            drop(h);
            // The last handle of the file: its content key and header (about 2 KiB) go
            // too, or every file ever written stays keyed while the kernel keeps its
            // inode (25,000 extracted files: +58 MiB). The next open derives it again
            // from the DEK cache.
            if inode.open.lock().iter().all(|w| w.strong_count() == 0) {
                *inode.ckey.lock() = None;
            }
        }
        self.drop_if_unused(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.handle(fh).and_then(|h| match &h.kind {
            HandleKind::File(f) => {
                if datasync {
                    f.sync_data()?;
                } else {
                    f.sync_all()?;
                }
                Ok(())
            }
            HandleKind::Dir(_) => Ok(()),
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.handle(fh).and_then(|h| self.dir_entries(&h, offset));
        let entries = match r {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.do_readdirplus(fh, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.write().remove(&fh.0);
        self.drop_if_unused(ino.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.inode(ino).and_then(|i| {
            let d = sys::reopen(self.fd_of(&i)?.raw(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            Ok(d.sync_all()?)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs() {
            Ok(s) => {
                let g = &self.vol.geo;
                let scale = |n: u64| n.saturating_mul(g.block_size) / g.stored_block();
                reply.statfs(
                    scale(s.f_blocks),
                    scale(s.f_bfree),
                    scale(s.f_bavail),
                    s.f_files,
                    s.f_ffree,
                    s.f_bsize as u32,
                    s.f_namemax as u32,
                    s.f_frsize as u32,
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.check_writable().and_then(|_| {
            self.acl_allowed(name)?;
            let i = self.inode(ino)?;
            self.change_xattrs(&i, |fd| {
                sys::setxattr_fd(fd, name, value, flags)?;
                if name.as_bytes() == ACL_ACCESS {
                    acl_drop_sgid(req, fd)?;
                }
                Ok(())
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.do_getxattr(ino, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.inode(ino).and_then(|i| {
            let fd = self.fd_of(&i)?;
            if self.posix_acl {
                return Ok(sys::listxattr_fd(fd.raw(), size as usize)?);
            }
            // ACLs this mount does not enforce are not shown.
            let all = sys::listxattr_all(fd.raw())?;
            let mut names = Vec::with_capacity(all.len());
            for n in all.split_inclusive(|&b| b == 0) {
                if !is_acl(OsStr::from_bytes(n.strip_suffix(&[0]).unwrap_or(n))) {
                    names.extend_from_slice(n);
                }
            }
            Ok(names)
        });
        reply_xattr(reply, size, r);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.check_writable().and_then(|_| {
            self.acl_allowed(name)?;
            let i = self.inode(ino)?;
            self.change_xattrs(&i, |fd| sys::removexattr_fd(fd, name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks permissions.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(req, parent, name, mode, umask, flags) {
            Ok((a, fh)) => reply.created(
                &self.ttl,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls (isatty() probes land here): "not a typewriter", without a log line.
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.do_fallocate(fh, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// File handles on the backing mount of `root`, if the backing fs makes them and
/// `open_by_handle_at` is permitted (it needs `CAP_DAC_READ_SEARCH`).
fn handle_mount(root: &OwnedFd) -> Option<HandleMount> {
    let probe = || -> std::io::Result<HandleMount> {
        let fd: OwnedFd = sys::reopen(root.as_raw_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?.into();
        let (h, mount_id) = sys::name_to_handle_fd(root.as_raw_fd())?;
        let back = sys::open_by_handle(fd.as_raw_fd(), &h, libc::O_PATH)?;
        let (a, b) = (sys::fstat(root.as_raw_fd())?, sys::fstat(back.as_raw_fd())?);
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Err(std::io::Error::from_raw_os_error(libc::ESTALE));
        }
        Ok(HandleMount { fd, mount_id })
    };
    match probe() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::info!(
                "file handles unusable on the backing fs ({e}): inodes are reached by name"
            );
            None
        }
    }
}

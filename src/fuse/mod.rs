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
mod reply;
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
use {attrs::*, enc_names::*, entries::NewEntry, reply::*};

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
        self.reply_entry(reply, self.do_lookup(parent, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.do_forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(reply, self.inode(ino).and_then(|i| self.getattr_ino(&i)));
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
        let changes = AttrChanges {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let kill = self.kill_suidgid(req, &changes);
        self.reply_attr(reply, self.do_setattr(ino, &changes, fh, kill));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        reply_data(reply, self.inode(ino).and_then(|i| self.do_readlink(&i)));
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
        let new = NewEntry {
            parent,
            name,
            mode,
            umask,
        };
        self.reply_entry(reply, self.do_mknod(req, new, rdev));
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
        let new = NewEntry {
            parent,
            name,
            mode: libc::S_IFDIR | (mode & 0o7777),
            umask,
        };
        self.reply_entry(reply, self.do_mknod(req, new, 0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_unlink(parent, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_rmdir(parent, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.do_symlink(req, parent, link_name, target.as_os_str()),
        );
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
        reply_empty(
            reply,
            self.do_rename(parent, name, newparent, newname, flags.bits()),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(reply, self.do_link(ino, newparent, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        reply_opened(reply, self.do_open(ino, flags.0));
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
        reply_data(reply, self.do_read(fh, offset, size));
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
        reply_written(reply, self.do_write(fh, offset, data, append, kill));
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
        let r = self.do_copy_file_range(req, (fh_in, offset_in), (fh_out, offset_out), len);
        reply_written(reply, r);
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
        reply_empty(reply, self.do_fsync(fh, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply_opened(reply, self.do_opendir(ino));
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
        reply_empty(reply, r);
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
        let r = self.change_xattr(ino, name, |fd| {
            sys::setxattr_fd(fd, name, value, flags)?;
            if name.as_bytes() == ACL_ACCESS {
                acl_drop_sgid(req, fd)?;
            }
            Ok(())
        });
        reply_empty(reply, r);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.do_getxattr(ino, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.do_listxattr(ino, size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.change_xattr(ino, name, |fd| sys::removexattr_fd(fd, name));
        reply_empty(reply, r);
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
        let new = NewEntry {
            parent,
            name,
            mode,
            umask,
        };
        match self.do_create(req, new, flags) {
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
        reply_empty(reply, self.do_fallocate(fh, offset, length, mode));
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

//! The inode store: how each inode the kernel remembers reaches its backing file, with a
//! fixed budget of open fds however many inodes that is.
//!
//! The kernel keeps an inode for every entry it looked up until it forgets it (an untar
//! of 100,000 entries keeps 100,000), while an ordinary user's daemon may hold 1,024 fds.
//! So no inode holds an fd of its own, except the root:
//!
//! - every inode knows where it is: its `(parent inode, backing name)` pairs, kept current
//!   by the daemon's own create, lookup, link, rename, unlink and rmdir (a file has one per
//!   hard link the daemon has seen; a directory has one);
//! - where the backing fs makes file handles and `open_by_handle_at` is permitted (root, or
//!   `CAP_DAC_READ_SEARCH`), it also holds its handle, which survives renames made behind
//!   the daemon's back;
//! - an operation asks [`FdCache::resolve`] for an `O_PATH` fd: the cache (an LRU of at
//!   most [`FdCache::capacity`] fds) answers at once for hot inodes (directories above all:
//!   every lookup under one touches it); otherwise the handle is opened, or the names are
//!   walked down from the nearest cached ancestor with `openat(parent, name, O_NOFOLLOW)`
//!   and each step checked against the inode's `(st_dev, st_ino)`, so a name that now
//!   holds another file is never taken for the old one.
//!
//! A cached fd pins its backing inode (its number cannot be reused) and follows it
//! through renames; evicting it only closes an fd (an operation in flight keeps its own
//! `Arc` until it ends).

use std::ffi::{OsStr, OsString};
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use lru::LruCache;
use parking_lot::{Mutex, RwLock};

use super::{sys, CachedKey, Handle};
use crate::backing::error::{FsError, FsResult};
use crate::volume::names::DirIv;

/// The fd budget of a mount unless `-o max_fds=N` says otherwise: half the usual soft
/// limit of an ordinary user (1,024), leaving the rest to files open through the mount.
pub const DEFAULT_MAX_FDS: usize = 512;

/// Fds of the daemon outside the cache: stdio, /dev/fuse (one per worker thread), the
/// backing root and the file-handle mount fd, the log file, the KMS store and its lock,
/// sockets, and what operations in flight open for a moment.
const RESERVED_FDS: usize = 48;

/// The fewest fds the cache keeps, whatever else is open.
const MIN_CACHED: usize = 16;

/// The most names remembered per inode (hard links): any one that still resolves will do.
const MAX_NAMES: usize = 16;

/// The deepest directory chain walked by name (PATH_MAX allows 2,048 levels).
const MAX_DEPTH: usize = 4096;

/// How an inode reaches its backing file (besides its names).
pub(super) enum Anchor {
    /// The root: an `O_PATH` fd held for the life of the mount.
    Root(OwnedFd),
    /// A file handle on the backing mount (survives renames outside the daemon).
    Handle(sys::FileHandle),
    /// Only its names.
    Path,
}

/// An inode: how to reach the backing file, and its per-file state.
pub struct Inode {
    pub(super) ino: u64,
    /// The backing file's `(st_dev, st_ino)`.
    pub(super) key: (u64, u64),
    pub(super) anchor: Anchor,
    /// Where the inode is: `(parent, backing name)`, the newest first.
    names: Mutex<Vec<(Arc<Inode>, OsString)>>,
    /// The FUSE file handles open on this inode (pruned as new ones open): their fds
    /// still reach a file that was unlinked while open, which no name or file handle does.
    pub(super) open: Mutex<Vec<Weak<Handle>>>,
    pub(super) lookups: AtomicU64,
    /// Held shared by reads, exclusive by writes/truncates (read-modify-write).
    pub(super) content: RwLock<()>,
    /// The content key, once the header was read (or written), when, and the header bytes.
    pub(super) ckey: Mutex<Option<CachedKey>>,
    /// The backing file's xattr names (listxattr's NUL-terminated list), once asked and
    /// while only this daemon changes them (never in shared storage). The kernel asks
    /// for names that are nearly never there over and over — `security.capability`
    /// before writes and chowns, `security.selinux` and the POSIX ACLs in every `ls -l`
    /// — and the answer "not there" comes from this list without a syscall. Held while
    /// the mount sets or removes an xattr, so no listing in flight outlives the change.
    pub(super) xattr_names: Mutex<Option<Box<[u8]>>>,
    /// A directory's IV, once read (volumes with encrypted names).
    pub(super) diriv: OnceLock<DirIv>,
}

impl Inode {
    /// A new inode with one lookup, found at `name` in `parent` (`None`: the root).
    pub(super) fn new(
        ino: u64,
        key: (u64, u64),
        anchor: Anchor,
        at: Option<(Arc<Inode>, OsString)>,
        lookups: u64,
    ) -> Inode {
        Inode {
            ino,
            key,
            anchor,
            names: Mutex::new(at.into_iter().collect()),
            open: Mutex::new(Vec::new()),
            lookups: AtomicU64::new(lookups),
            content: RwLock::new(()),
            ckey: Mutex::new(None),
            xattr_names: Mutex::new(None),
            diriv: OnceLock::new(),
        }
    }

    /// Records that the inode is (also) `name` in `parent`.
    pub(super) fn add_name(&self, parent: &Arc<Inode>, name: &OsStr) {
        let mut n = self.names.lock();
        if let Some(i) = n.iter().position(|(p, b)| p.ino == parent.ino && b == name) {
            let e = n.remove(i);
            n.insert(0, e);
            return;
        }
        n.insert(0, (parent.clone(), name.to_owned()));
        n.truncate(MAX_NAMES);
    }

    /// Records that `name` in directory `parent` is no longer this inode.
    pub(super) fn remove_name(&self, parent: u64, name: &OsStr) {
        self.names
            .lock()
            .retain(|(p, b)| !(p.ino == parent && b == name));
    }

    /// Whether the inode is known as `name` in directory `parent`.
    pub(super) fn has_name(&self, parent: u64, name: &OsStr) -> bool {
        self.names
            .lock()
            .iter()
            .any(|(p, b)| p.ino == parent && b == name)
    }

    /// Takes the inode's names (it is leaving the table): the parents it kept alive.
    pub(super) fn take_names(&self) -> Vec<(Arc<Inode>, OsString)> {
        std::mem::take(&mut *self.names.lock())
    }

    fn names_snapshot(&self) -> Vec<(Arc<Inode>, OsString)> {
        self.names.lock().clone()
    }

    /// Whether an fd of a FUSE file handle open on the inode pins its backing file.
    pub(super) fn is_open(&self) -> bool {
        self.open.lock().iter().any(|w| w.strong_count() > 0)
    }
}

/// The open `O_PATH` fds of inodes, at most [`FdCache::capacity`] of them less one per
/// file open through the mount (those hold a backing fd each).
pub(super) struct FdCache {
    lru: Mutex<LruCache<u64, Arc<OwnedFd>>>,
    capacity: usize,
    /// Files open through the mount (each holds a backing fd).
    open_files: AtomicUsize,
    /// File handles of the backing mount, when usable.
    handle_mount: Option<HandleMount>,
    /// The namespace lock: held shared while a name is opened and recorded (lookups,
    /// creates, links, resolutions by name), exclusive while a rename, unlink or rmdir
    /// changes the backing directory and the names that follow it, so that no name is
    /// recorded or resolved half-way through such a change (a lookup racing a rename
    /// could otherwise record the old name again).
    ns: RwLock<()>,
}

/// File handles of the backing mount.
pub(super) struct HandleMount {
    /// A real (not `O_PATH`) fd of the backing root: `open_by_handle_at`'s mount fd.
    pub(super) fd: OwnedFd,
    /// The backing root's mount id: handles from other mounts are not kept.
    pub(super) mount_id: i32,
}

impl FdCache {
    /// A cache for a daemon whose fds should stay under `max_fds`.
    pub(super) fn new(max_fds: usize, handle_mount: Option<HandleMount>) -> FdCache {
        let capacity = max_fds.saturating_sub(RESERVED_FDS).max(MIN_CACHED);
        FdCache {
            lru: Mutex::new(LruCache::unbounded()),
            capacity,
            open_files: AtomicUsize::new(0),
            handle_mount,
            ns: RwLock::new(()),
        }
    }

    /// The most fds the cache holds (with no file open through the mount).
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many fds the cache holds now.
    pub(super) fn len(&self) -> usize {
        self.lru.lock().len()
    }

    /// The backing mount's file handles, if inodes have them.
    pub(super) fn handle_mount(&self) -> Option<&HandleMount> {
        self.handle_mount.as_ref()
    }

    /// Shared hold of the namespace lock (see the field); recursive, so a resolution inside
    /// a lookup may take it again.
    pub(super) fn ns_shared(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.ns.read_recursive()
    }

    /// Exclusive hold of the namespace lock, for a rename, unlink or rmdir and the
    /// bookkeeping of its names. Nothing that resolves an inode may run under it.
    pub(super) fn ns_exclusive(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.ns.write()
    }

    /// A file was opened (`true`) or closed through the mount. An open takes one fd from
    /// the budget: the cache gives one back at once.
    pub(super) fn count_open_file(&self, opened: bool) {
        if opened {
            self.open_files.fetch_add(1, Ordering::Relaxed);
            let limit = self.limit();
            let mut evicted = Vec::new();
            {
                let mut lru = self.lru.lock();
                while lru.len() > limit {
                    match lru.pop_lru() {
                        Some((_, old)) => evicted.push(old),
                        None => break,
                    }
                }
            }
            drop(evicted);
        } else {
            let _ = self
                .open_files
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(1))
                });
        }
    }

    fn limit(&self) -> usize {
        self.capacity
            .saturating_sub(self.open_files.load(Ordering::Relaxed))
            .max(MIN_CACHED)
    }

    /// Keeps `fd` as the fd of inode `ino`, evicting the least recently used past the limit.
    /// The evicted fds are closed after the lock is released: closing the last fd of an
    /// unlinked file frees its backing inode, which takes a while.
    pub(super) fn insert(&self, ino: u64, fd: Arc<OwnedFd>) {
        let limit = self.limit();
        let mut evicted = Vec::new();
        {
            let mut lru = self.lru.lock();
            if let Some(old) = lru.put(ino, fd) {
                evicted.push(old);
            }
            while lru.len() > limit {
                match lru.pop_lru() {
                    Some((_, old)) => evicted.push(old),
                    None => break,
                }
            }
        }
        drop(evicted);
    }

    /// Takes the fd of inode `ino` out (it left the table); the caller closes it by
    /// dropping it, outside its own locks.
    #[must_use]
    pub(super) fn remove(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.lru.lock().pop(&ino)
    }

    /// Whether inode `ino` has a cached fd (which pins its backing file).
    pub(super) fn contains(&self, ino: u64) -> bool {
        self.lru.lock().contains(&ino)
    }

    /// Takes the file-handle mount out (the cache is being rebuilt with another budget).
    pub(super) fn handle_mount_take(&mut self) -> Option<HandleMount> {
        self.handle_mount.take()
    }

    fn get(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.lru.lock().get(&ino).cloned()
    }

    /// Closes half the cached fds: the process ran out of fds (files opened through the
    /// mount, or a limit lower than the budget).
    fn shed(&self) {
        let mut evicted = Vec::new();
        let keep = {
            let mut lru = self.lru.lock();
            let keep = lru.len() / 2;
            while lru.len() > keep {
                match lru.pop_lru() {
                    Some((_, old)) => evicted.push(old),
                    None => break,
                }
            }
            keep
        };
        drop(evicted);
        tracing::warn!(
            kept = keep,
            "out of file descriptors: closed half the cached backing fds"
        );
    }

    /// Runs `open`, and once more after shedding half the cache if it ran out of fds.
    fn open_retrying(
        &self,
        open: impl Fn() -> std::io::Result<OwnedFd>,
    ) -> std::io::Result<OwnedFd> {
        match open() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                self.shed();
                open()
            }
            r => r,
        }
    }

    /// An `O_PATH` fd of `inode`'s backing file (`ESTALE` once no name or handle of it
    /// leads to it any more).
    pub(super) fn resolve(&self, inode: &Inode) -> FsResult<Arc<OwnedFd>> {
        if let Some(fd) = self.get(inode.ino) {
            return Ok(fd);
        }
        let _ns = self.ns_shared();
        let fd = Arc::new(self.open_inode(inode)?);
        self.insert(inode.ino, fd.clone());
        Ok(fd)
    }

    fn open_inode(&self, inode: &Inode) -> FsResult<OwnedFd> {
        match &inode.anchor {
            Anchor::Root(fd) => Ok(self.open_retrying(|| fd.try_clone())?),
            Anchor::Handle(h) => {
                let Some(m) = &self.handle_mount else {
                    return Err(FsError::Errno(libc::ESTALE));
                };
                Ok(self.open_retrying(|| {
                    sys::open_by_handle(m.fd.as_raw_fd(), h, libc::O_PATH | libc::O_NOFOLLOW)
                })?)
            }
            Anchor::Path => self.open_by_names(inode),
        }
    }

    /// Walks `inode`'s names: each parent resolved (iteratively, up to the nearest cached
    /// ancestor), then `openat(parent, name)` checked against the inode's key. Names that
    /// lead elsewhere are dropped.
    fn open_by_names(&self, inode: &Inode) -> FsResult<OwnedFd> {
        // A rename moves a name between the renameat2 and the bookkeeping: one more
        // pass over the names as they are then.
        for _ in 0..2 {
            let names = inode.names_snapshot();
            for (parent, name) in &names {
                let pfd = match self.resolve_dir(parent) {
                    Ok(fd) => fd,
                    Err(_) => continue,
                };
                match self.open_checked(pfd.as_raw_fd(), name, inode.key) {
                    Ok(Some(fd)) => return Ok(fd),
                    Ok(None) => inode.remove_name(parent.ino, name),
                    Err(e) => return Err(e),
                }
            }
            if inode.names_snapshot().len() == names.len() {
                break;
            }
        }
        Err(FsError::Errno(libc::ESTALE))
    }

    /// `openat(dir, name, O_PATH|O_NOFOLLOW)` if it is the file `key`; `None` if the name is
    /// gone or another file.
    fn open_checked(&self, dir: RawFd, name: &OsStr, key: (u64, u64)) -> FsResult<Option<OwnedFd>> {
        match self.open_retrying(|| sys::openat(dir, name, libc::O_PATH, 0)) {
            Ok(fd) => {
                let st = sys::fstat(fd.as_raw_fd())?;
                Ok(((st.st_dev, st.st_ino) == key).then_some(fd))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The fd of directory `dir`: from the cache, its handle, or down its names from the
    /// nearest ancestor that has one (a directory has one name). Each directory opened on
    /// the way is cached.
    fn resolve_dir(&self, dir: &Arc<Inode>) -> FsResult<Arc<OwnedFd>> {
        let mut chain: Vec<Arc<Inode>> = Vec::new();
        let mut cur = dir.clone();
        let mut base = loop {
            if let Some(fd) = self.get(cur.ino) {
                break fd;
            }
            // Names changed behind the daemon's back (shared storage) can form a cycle of
            // first names: then the directory cannot be reached by name.
            if chain.len() > MAX_DEPTH || chain.iter().any(|c| c.ino == cur.ino) {
                return Err(FsError::Errno(libc::ESTALE));
            }
            if !matches!(cur.anchor, Anchor::Path) {
                let fd = Arc::new(self.open_inode(&cur)?);
                self.insert(cur.ino, fd.clone());
                break fd;
            }
            let parent = match cur.names.lock().first() {
                Some((p, _)) => p.clone(),
                None => return Err(FsError::Errno(libc::ESTALE)),
            };
            chain.push(cur);
            cur = parent;
        };
        while let Some(d) = chain.pop() {
            let first = d.names.lock().first().cloned();
            let Some((_, name)) = first else {
                return Err(FsError::Errno(libc::ESTALE));
            };
            let fd = match self.open_checked(base.as_raw_fd(), &name, d.key)? {
                Some(fd) => Arc::new(fd),
                // Renamed behind the daemon's back (shared storage): its other names, if any.
                None => Arc::new(self.open_by_names(&d)?),
            };
            self.insert(d.ino, fd.clone());
            base = fd;
        }
        Ok(base)
    }
}

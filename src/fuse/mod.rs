//! The FUSE daemon: `impl fuser::Filesystem` over a backing directory.
//!
//! Every handler calls an inner function returning [`FsResult`] and replies once;
//! [`errno`] is the only place an errno is made. Inodes reach their backing files through
//! [`inodes`]: by name from their parent (and by file handle where the backing fs and the
//! daemon's privileges allow), through a bounded cache of `O_PATH|O_NOFOLLOW` fds, so the
//! daemon's fds stay under a fixed budget however many inodes the kernel keeps, and no
//! symlink planted in the backing directory is ever followed.

pub mod content;
pub mod inodes;
pub mod shared;
pub mod sys;

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

use crate::format::{BlockNo, ContentKey};
use crate::fs_error::{FsError, FsResult};
use crate::metrics::Metrics;
use crate::names::{self, BadName, DirIv, EntryKind, NameError, NameKey, DIRIV_NAME};
use crate::volume::{self, HeaderLock, Volume, CONFIG_NAME};
use content::BadBlock;
use inodes::{Anchor, FdCache, HandleMount, Inode};

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

fn is_acl(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n == ACL_ACCESS || n == ACL_DEFAULT
}

fn kind_of(mode: u32) -> FileType {
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

fn ts(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-sec) as u64) + Duration::from_nanos(nsec as u64)
    }
}

fn to_timespec(t: TimeOrNow) -> libc::timespec {
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

/// Whether `name` in directory `parent` is the volume config (or its temp file, or the
/// rewrap lock), which the mount hides.
pub fn is_reserved(parent: u64, name: &OsStr) -> bool {
    parent == INodeNo::ROOT.0
        && (name.as_bytes() == CONFIG_NAME.as_bytes()
            || name.as_bytes() == format!(".{CONFIG_NAME}.tmp").as_bytes()
            || name.as_bytes() == volume::REWRAP_LOCK_NAME.as_bytes())
}

/// Whether the backing directory `dir` (any fd) holds nothing but `allowed` (and, for
/// the root, `ino` 1, the volume config).
fn only_entries(dir: RawFd, ino: u64, allowed: &[&str]) -> std::io::Result<bool> {
    let d = sys::reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))? {
        let name = e?.file_name();
        if !is_reserved(ino, &name) && !allowed.iter().any(|a| name.as_bytes() == a.as_bytes()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Removes the IV of the backing directory `dir` (encrypted names, key `k`) so that it
/// can be removed or replaced: ENOTEMPTY unless the IV is all it holds, but for side files
/// of long names whose entries are gone (a crash between an entry's removal and its side
/// file's), which go too. Returns the IV, for [`put_back_iv`] should the removal fail.
fn take_iv(k: &NameKey, dir: RawFd) -> FsResult<Option<DirIv>> {
    let d = sys::reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut orphans = Vec::new();
    for e in std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))? {
        let name = e?.file_name();
        match k.kind_of(&name) {
            EntryKind::DirIv => {}
            // Its entry would be listed too, and refuse.
            EntryKind::Side(_) => orphans.push(name),
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
fn put_back_iv(dir: RawFd, iv: Option<DirIv>) {
    if let Some(iv) = iv {
        if let Err(e) = names::write_diriv(dir, &iv) {
            tracing::error!("cannot put back {DIRIV_NAME} after a failed rmdir/rename: {e}");
        }
    }
}

fn owned_name_ok(name: &OsStr) -> FsResult<()> {
    if name.len() > 255 {
        return Err(err(libc::ENAMETOOLONG));
    }
    Ok(())
}

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

    /// The mode a new entry is made with from the `mode` and `umask` of the request: with
    /// ACLs the kernel leaves the umask to us (FUSE_DONT_MASK), to be skipped where the
    /// parent has a default ACL (the backing filesystem applies that ACL instead).
    fn new_mode(&self, parent: &Inode, mode: u32, umask: u32) -> FsResult<u32> {
        if self.posix_acl && !self.has_xattr(parent, OsStr::from_bytes(ACL_DEFAULT))? {
            return Ok(mode & !(umask & 0o777));
        }
        Ok(mode)
    }

    /// Whether mount name `name` in `parent` is refused for being the volume config's
    /// backing name ([`is_reserved`]); with encrypted names no name is.
    fn reserved(&self, parent: u64, name: &OsStr) -> bool {
        self.names().is_none() && is_reserved(parent, name)
    }

    /// With ACLs off (`noacl`, shared storage), a default ACL already on the backing
    /// parent `pdir` must not apply to the entry just made at `fd`: the backing filesystem
    /// gave it an ACL nobody sees or enforces and narrowed its mode. Both are undone.
    fn undo_inherited_acl(&self, pdir: RawFd, fd: RawFd, mode: u32) -> FsResult<()> {
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

    /// The name key, on a volume with encrypted names.
    fn names(&self) -> Option<&NameKey> {
        self.vol.names.as_ref()
    }

    /// The IV of directory `dir` (encrypted names), read once per inode. A directory that
    /// has none gets one if it holds nothing else (a mkdir cut short by a crash);
    /// otherwise its names cannot be read or made: EIO, logged.
    fn diriv(&self, dir: &Inode) -> FsResult<DirIv> {
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

    /// The backing path of `fd` for a log line (its /proc link, lossy).
    fn path_hint(&self, fd: RawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// The backing name of `name` in directory `dir`: the name itself, or its encrypted
    /// form (ENAMETOOLONG past [`NameKey::max_name`]).
    fn backing_name<'n>(&self, dir: &Inode, name: &'n OsStr) -> FsResult<Backing<'n>> {
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
    fn with_root<T>(&self, f: impl FnOnce(RawFd) -> std::io::Result<T>) -> FsResult<T> {
        let root = self.inode(INodeNo::ROOT)?;
        let fd = self.fd_of(&root)?;
        Ok(f(fd.raw())?)
    }

    /// Before the entry of long name `b` is made in backing directory `dir`: its side file,
    /// on disk first.
    fn put_side(&self, dir: RawFd, b: &Backing) -> FsResult<()> {
        let Some(full) = &b.long else {
            return Ok(());
        };
        names::write_side_name(dir, &b.entry, full).map_err(|e| {
            tracing::error!(
                dir = %self.path_hint(dir),
                entry = ?b.entry,
                "cannot write the side file of a long name: {e}"
            );
            FsError::from(e)
        })
    }

    /// After making the entry of long name `b` in `dir` failed: its side file goes, unless
    /// an entry has that name (whose side file it is).
    fn drop_side_if_unused(&self, dir: RawFd, b: &Backing) {
        if b.long.is_some()
            && matches!(sys::fstatat_nofollow(dir, &b.entry),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT))
        {
            self.remove_side(dir, b);
        }
    }

    /// After the entry of long name `b` left `dir`: its side file (a failure leaves an
    /// orphan, which fsck reports and rmdir removes).
    fn remove_side(&self, dir: RawFd, b: &Backing) {
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
    }

    /// Checks, on a lookup of long name `b` whose entry is in `dir`, that its side file is
    /// there and its own: EIO otherwise, as the listing does not show it.
    fn check_side(&self, dir: RawFd, b: &Backing) -> FsResult<()> {
        let Some(full) = &b.long else {
            return Ok(());
        };
        match names::read_side_name(dir, &b.entry) {
            Ok(f) if &f == full => Ok(()),
            r => {
                self.vol.count_integrity_failure();
                let why = match r {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => "missing".to_string(),
                    Err(e) => e.to_string(),
                    Ok(_) => "another name's".to_string(),
                };
                tracing::error!(
                    dir = %self.path_hint(dir),
                    entry = ?b.entry,
                    "long name whose side file is bad ({why}): EIO"
                );
                Err(err(libc::EIO))
            }
        }
    }

    /// The long link at `name` in backing directory `dir`, if that is one (before the
    /// name goes: [`Self::release_long_link`] after).
    fn long_link_at(&self, dir: RawFd, name: &OsStr) -> Option<LongLink> {
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
    fn release_long_link(&self, l: Option<LongLink>) {
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
    fn long_link_len(&self, inode: &Inode) -> Option<u64> {
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
    fn new_dir_iv(&self, fd: RawFd) -> FsResult<Option<DirIv>> {
        if self.names().is_none() {
            return Ok(None);
        }
        Ok(Some(names::create_diriv(fd)?))
    }

    /// rmdir on a volume with encrypted names: the directory's IV goes first (it must hold
    /// nothing else), and comes back if the rmdir fails.
    fn rmdir_named(&self, k: &NameKey, pdir: RawFd, bname: &OsStr) -> FsResult<()> {
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

    /// A handle for the key-expiry thread (see [`KeyExpiry`]).
    pub fn key_expiry(&self) -> KeyExpiry {
        KeyExpiry {
            inodes: self.inodes.clone(),
            max_age: self.vol.cache.max_age(),
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

    fn attr_of(&self, ino: u64, st: &libc::stat) -> FileAttr {
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
    fn attr_at(&self, inode: &Inode, st: &libc::stat) -> FileAttr {
        let mut a = self.attr_of(inode.ino, st);
        if a.kind == FileType::Symlink && st.st_size as usize == names::LONG_REF_LEN {
            if let Some(n) = self.long_link_len(inode) {
                a.size = n;
            }
        }
        a
    }

    /// Registers (or finds) the inode of `fd`, just opened as backing name `name` in
    /// directory `parent`, and counts one lookup.
    fn remember(
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
    fn same_file(&self, known: &Inode, new: &Anchor, parent: &Inode, name: &OsStr) -> bool {
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

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> FsResult<FileAttr> {
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
    fn drop_if_unused(&self, ino: u64) {
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
    fn known_at(&self, dir: RawFd, name: &OsStr) -> Option<Arc<Inode>> {
        let st = sys::fstatat_nofollow(dir, name).ok()?;
        let t = self.inodes.read();
        let ino = t.by_key.get(&(st.st_dev, st.st_ino))?;
        t.by_ino.get(ino).cloned()
    }

    fn do_forget(&self, ino: u64, n: u64) {
        if let Some(i) = self.inodes.read().by_ino.get(&ino) {
            let _ = i
                .lookups
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
        }
        self.drop_if_unused(ino);
    }

    fn getattr_ino(&self, inode: &Inode) -> FsResult<FileAttr> {
        let st = sys::fstat(self.fd_of(inode)?.raw())?;
        Ok(self.attr_at(inode, &st))
    }

    /// Chowns a just-created entry to the caller (setgid directories pass their group).
    fn owner_for(&self, req: &Request, parent: &Inode) -> FsResult<(u32, u32)> {
        let pst = sys::fstat(self.fd_of(parent)?.raw())?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            req.gid()
        };
        Ok((req.uid(), gid))
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.read_only {
            return Err(err(libc::EROFS));
        }
        Ok(())
    }

    fn do_mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> FsResult<FileAttr> {
        self.check_writable()?;
        if self.reserved(parent.0, name) {
            return Err(err(libc::EPERM));
        }
        let p = self.inode(parent)?;
        let mode = self.new_mode(&p, mode, umask)?;
        let _g = self.names_lock.read_recursive();
        let bname = self.backing_name(&p, name)?;
        let pdir = self.fd_of(&p)?;
        let (uid, gid) = self.owner_for(req, &p)?;
        let _ns = self.fds.ns_shared();
        self.put_side(pdir.raw(), &bname)?;
        let fd = make_node(pdir.raw(), &bname, mode, rdev as u64, uid, gid).map_err(|e| {
            self.drop_side_if_unused(pdir.raw(), &bname);
            FsError::from(e)
        })?;
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
    }

    /// The content key of an open regular file, reading the header if needed.
    /// `None` for a file that is empty on disk.
    /// With `verify`, the header is read again and compared with the cached one (on open).
    fn content_key(
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

    fn log_bad_block(&self, inode: &Inode, r: Result<BadBlock, FsError>) -> FsError {
        match r {
            Ok(BadBlock(b)) => {
                self.vol.count_bad_block();
                tracing::error!(
                    file = %self.path_of(inode),
                    block = b,
                    key_id = %self.key_id_of(inode),
                    "block failed authentication (tampered, truncated or corrupt); returning EIO"
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

    fn new_handle(&self, inode: Arc<Inode>, kind: HandleKind) -> u64 {
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

    fn open_backing(&self, inode: &Inode, flags: i32) -> FsResult<File> {
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
    fn reopen_inode(&self, inode: &Inode, flags: i32) -> FsResult<File> {
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

    fn do_open(&self, ino: INodeNo, flags: i32) -> FsResult<u64> {
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

    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(FileAttr, u64)> {
        self.check_writable()?;
        if self.reserved(parent.0, name) {
            return Err(err(libc::EPERM));
        }
        owned_name_ok(name)?;
        let p = self.inode(parent)?;
        let mode = self.new_mode(&p, mode, umask)?;
        let _g = self.names_lock.read_recursive();
        let bname = self.backing_name(&p, name)?;
        let name = &*bname;
        let pdir = self.fd_of(&p)?;
        let (uid, gid) = self.owner_for(req, &p)?;
        let _ns = self.fds.ns_shared();
        self.put_side(pdir.raw(), &bname)?;
        let file: File = match create_file(pdir.raw(), name, mode, uid, gid) {
            Ok(f) => {
                self.undo_inherited_acl(pdir.raw(), f.as_raw_fd(), mode)?;
                f
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                sys::openat(pdir.raw(), name, libc::O_RDWR, 0)?.into()
            }
            Err(e) => {
                self.drop_side_if_unused(pdir.raw(), &bname);
                return Err(e.into());
            }
        };
        let pfd = sys::openat(pdir.raw(), name, libc::O_PATH, 0)?;
        let (inode, st) = self.remember(pfd, &p, name)?;
        if flags & libc::O_TRUNC != 0 {
            self.empty_file(&inode, &file)?;
        }
        let attr = self.attr_at(&inode, &st);
        let fh = self.new_handle(inode, HandleKind::File(file));
        Ok((attr, fh))
    }

    fn do_read(&self, fh: FileHandle, off: u64, size: u32) -> FsResult<Vec<u8>> {
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
    fn read_counted(
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

    /// The header lock of a backing file (`kmsfs rewrap` takes it too, src/rewrap.rs),
    /// held where a header is created or truncated away.
    fn header_lock<'f>(&self, f: &'f File) -> FsResult<HeaderLock<'f>> {
        Ok(volume::lock_header(f, self.vol.geo.header_size)?)
    }

    /// The content key for a read or write: the cached one, but in shared storage checked
    /// against the header on disk whenever the backing file's size or ctime changed since
    /// the last check (another daemon may have truncated it and written a new header).
    fn current_key(&self, inode: &Inode, f: &File) -> FsResult<Option<Arc<ContentKey>>> {
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
    fn empty_file(&self, inode: &Inode, f: &File) -> FsResult<()> {
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
    fn key_for_write<'f>(
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
    fn do_write(
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
    fn do_copy_file_range(
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

    fn truncate_file(&self, inode: &Inode, f: &File, size: u64) -> FsResult<()> {
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

    /// `fallocate` PUNCH_HOLE / ZERO_RANGE: plaintext `off..end` (within the file) reads as
    /// zeros. Whole blocks become holes in the backing file (a stored block of zeros reads
    /// as zeros: [`crate::format`]), the last block too when the range reaches the end of
    /// the file; partial blocks at either edge are re-sealed with zeros.
    fn zero_range(&self, inode: &Inode, f: &File, off: u64, end: u64) -> FsResult<()> {
        let _g = inode.content.write();
        let _l = self.shared.then(|| shared::lock_all(f)).transpose()?;
        let geo = &self.vol.geo;
        let blen = content::backing_len(f)?;
        let plain = geo.plain_size_lossy(blen);
        let end = end.min(plain);
        if off >= end {
            return Ok(());
        }
        let bs = geo.block_size;
        let first_whole = off.div_ceil(bs);
        let whole_end = if end == plain {
            end.div_ceil(bs)
        } else {
            end / bs
        };
        let key = self.current_key(inode, f)?.ok_or_else(|| err(libc::EIO))?;
        let zeros = |from: u64, to: u64| -> FsResult<()> {
            if from >= to {
                return Ok(());
            }
            let z = vec![0u8; (to - from) as usize];
            content::write(f, &key, geo, None, from, &z).map_err(|r| self.log_bad_block(inode, r))
        };
        if first_whole >= whole_end {
            // No whole block in the range: zeros written into the one or two it touches.
            return zeros(off, end);
        }
        zeros(off, first_whole * bs)?;
        let (from, to) = (
            geo.block_offset(BlockNo(first_whole))
                .ok_or(FsError::TooBig)?,
            geo.block_offset(BlockNo(whole_end))
                .ok_or(FsError::TooBig)?
                .min(blen),
        );
        punch_backing(f, from, to)?;
        zeros((whole_end * bs).max(off), end)
    }

    /// `lseek` SEEK_DATA / SEEK_HOLE, answered from the backing file's extents: data is a
    /// block any of whose stored bytes are backing data; a hole is a block whose stored
    /// bytes all lie in a backing hole (and the end of the file).
    fn do_lseek(&self, fh: FileHandle, offset: u64, whence: i32) -> FsResult<u64> {
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

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
        kill_suidgid: KillSuidgid,
    ) -> FsResult<FileAttr> {
        let inode = self.inode(ino)?;
        if kill_suidgid != KillSuidgid::No
            || mode.is_some()
            || uid.is_some()
            || gid.is_some()
            || size.is_some()
            || atime.is_some()
            || mtime.is_some()
        {
            self.check_writable()?;
        }
        // One backing fd for the whole request.
        let fd = self.fd_of(&inode)?;
        if let Some(size) = size {
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
        if mode.is_none() {
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
        if uid.is_some() || gid.is_some() {
            sys::fchown_fd(fd.raw(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        if let Some(mode) = mode {
            sys::chmod_fd(fd.raw(), mode & 0o7777)?;
        }
        if atime.is_some() || mtime.is_some() {
            sys::utimens_fd(fd.raw(), atime.map(to_timespec), mtime.map(to_timespec))?;
        }
        let st = sys::fstat(fd.raw())?;
        Ok(self.attr_at(&inode, &st))
    }

    fn do_opendir(&self, ino: INodeNo) -> FsResult<u64> {
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
    fn dir_entries(&self, h: &Handle, offset: u64) -> FsResult<Arc<Vec<DirEntryRec>>> {
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
    fn list_dir(&self, inode: &Inode) -> FsResult<Vec<DirEntryRec>> {
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

    fn do_rename(
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
        let _g = self.names().map(|_| self.names_lock.write());
        let (name, newname) = (
            self.backing_name(&p, name)?,
            self.backing_name(&np, newname)?,
        );
        // From here to the end, no name is opened or recorded elsewhere.
        let _ns = self.fds.ns_exclusive();
        let moved = self.known_at(pfd.raw(), &name);
        let replaced = self.known_at(npfd.raw(), &newname);
        // Long names: both names stay where they are in an exchange; otherwise the new
        // name's side file comes first, and the old one's goes after.
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let mut link = None;
        if !exchange {
            self.put_side(npfd.raw(), &newname)?;
            link = self.long_link_at(npfd.raw(), &newname);
        }
        if let Err(e) = self.rename_backing(&pfd, &name, &npfd, &newname, flags) {
            if !exchange {
                self.drop_side_if_unused(npfd.raw(), &newname);
            }
            return Err(e);
        }
        if !exchange {
            // A rename onto another name of the same file leaves both.
            self.drop_side_if_unused(pfd.raw(), &name);
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
    fn rename_backing(
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

    fn do_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> FsResult<FileAttr> {
        self.check_writable()?;
        if self.reserved(newparent.0, newname) {
            return Err(err(libc::EPERM));
        }
        owned_name_ok(newname)?;
        let inode = self.inode(ino)?;
        let np = self.inode(newparent)?;
        let _g = self.names_lock.read_recursive();
        let newname = self.backing_name(&np, newname)?;
        let (fd, npfd) = (self.fd_of(&inode)?, self.fd_of(&np)?);
        let _ns = self.fds.ns_shared();
        self.put_side(npfd.raw(), &newname)?;
        if let Err(e) = sys::linkat_fd(fd.raw(), npfd.raw(), &newname) {
            self.drop_side_if_unused(npfd.raw(), &newname);
            return Err(e.into());
        }
        inode.add_name(&np, &newname);
        inode.lookups.fetch_add(1, Ordering::Relaxed);
        self.getattr_ino(&inode)
    }

    fn do_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &OsStr,
    ) -> FsResult<FileAttr> {
        self.check_writable()?;
        if self.reserved(parent.0, name) {
            return Err(err(libc::EPERM));
        }
        owned_name_ok(name)?;
        let p = self.inode(parent)?;
        let _g = self.names_lock.read_recursive();
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
        let _ns = self.fds.ns_shared();
        self.put_side(pdir.raw(), &name)?;
        let made = match (self.names(), &stored) {
            (Some(k), Some(stored)) => self.with_root(|root| {
                make_stored_symlink(root, pdir.raw(), &name, k, stored, uid, gid)
            }),
            _ => make_symlink(pdir.raw(), &name, target, uid, gid).map_err(FsError::from),
        };
        let fd = made.inspect_err(|_| self.drop_side_if_unused(pdir.raw(), &name))?;
        let (inode, st) = self.remember(fd, &p, &name)?;
        Ok(self.attr_at(&inode, &st))
    }

    fn do_readlink(&self, inode: &Inode) -> FsResult<Vec<u8>> {
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

    fn do_statfs(&self) -> FsResult<libc::statvfs> {
        let root = self.inode(INodeNo::ROOT)?;
        let mut st = sys::statvfs_fd(self.fd_of(&root)?.raw())?;
        if let Some(k) = self.names() {
            st.f_namemax = st.f_namemax.min(k.max_name() as _);
        }
        Ok(st)
    }

    fn stats_json(&self) -> Vec<u8> {
        let s = self.vol.cache.snapshot();
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        let m = serde_json::to_value(self.vol.metrics.snapshot()).unwrap_or_default();
        if let (Some(o), Some(m)) = (v.as_object_mut(), m.as_object()) {
            o.extend(m.clone());
            o.insert("volume".into(), self.vol.config.uuid.clone().into());
            o.insert("cmk".into(), self.vol.cmk().into());
            let handles = self.handles.read();
            o.insert("open_handles".into(), (handles.len() as u64).into());
            let files = handles
                .values()
                .filter(|h| matches!(h.kind, HandleKind::File(_)))
                .count();
            o.insert("open_files".into(), (files as u64).into());
            o.insert(
                "inodes".into(),
                (self.inodes.read().by_ino.len() as u64).into(),
            );
            o.insert("cached_fds".into(), (self.fds.len() as u64).into());
            o.insert(
                "fd_cache_capacity".into(),
                (self.fds.capacity() as u64).into(),
            );
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn do_getxattr(&self, ino: INodeNo, name: &OsStr, size: u32) -> FsResult<Vec<u8>> {
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
    fn acl_allowed(&self, name: &OsStr) -> FsResult<()> {
        if !self.posix_acl && is_acl(name) {
            return Err(err(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    /// Whether the backing file of `inode` may have xattr `name` (false: it has not),
    /// from its cached name list, listed on first use. Outside this daemon names only
    /// disappear (the backing kernel drops `security.capability` on our writes and
    /// chowns): a stale name costs one getxattr answering ENODATA, never a wrong answer.
    fn has_xattr(&self, inode: &Inode, name: &OsStr) -> FsResult<bool> {
        let mut names = inode.xattr_names.lock();
        if names.is_none() {
            let list = sys::listxattr_all(self.fd_of(inode)?.raw())?;
            *names = Some(list.into_boxed_slice());
        }
        let list = names.as_deref().unwrap_or_default();
        Ok(list.split(|&b| b == 0).any(|n| n == name.as_bytes()))
    }

    /// Runs `change` (a setxattr or removexattr of `inode`'s backing file) with the
    /// inode's name list held and forgotten: the next getxattr lists the names again.
    fn change_xattrs(
        &self,
        inode: &Inode,
        change: impl FnOnce(RawFd) -> std::io::Result<()>,
    ) -> FsResult<()> {
        let mut names = inode.xattr_names.lock();
        *names = None;
        Ok(change(self.fd_of(inode)?.raw())?)
    }
}

/// Enforces the DEK age bound on files that stay open: a file's derived key older than
/// the DEK cache's maximum age is dropped (the next read or write asks the KMS again, and
/// fails if the CMK was disabled) and the kernel's cached plaintext pages of that file are
/// invalidated, so they are not served past the bound either.
pub struct KeyExpiry {
    inodes: Arc<RwLock<InodeTable>>,
    max_age: Duration,
}

impl KeyExpiry {
    /// Runs forever (a daemon thread), scanning every quarter of the maximum age.
    pub fn run(self, notifier: fuser::Notifier) {
        let period = (self.max_age / 4).max(Duration::from_millis(200));
        loop {
            std::thread::sleep(period);
            let expired: Vec<u64> = {
                let t = self.inodes.read();
                t.by_ino
                    .values()
                    .filter(|i| {
                        let mut g = i.ckey.lock();
                        let old = g.as_ref().is_some_and(|c| c.at.elapsed() >= self.max_age);
                        if old {
                            *g = None;
                        }
                        old
                    })
                    .map(|i| i.ino)
                    .collect()
            };
            for ino in expired {
                if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                    tracing::debug!(ino, "page cache invalidation: {e}");
                }
            }
        }
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, r: FsResult<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Clears set-user-ID and set-group-ID of the file `fd` reaches, as a local filesystem
/// does when a caller without CAP_FSETID writes or truncates (or anyone chowns):
/// set-group-ID stays only where it is not group-executable (it then marks mandatory
/// locking, not a privilege) and `keeps_sgid(file's gid)` says the caller may keep it
/// (a member of that group, or, on chown, holding CAP_FSETID).
fn drop_suidgid(fd: RawFd, keeps_sgid: impl FnOnce(u32) -> bool) -> FsResult<()> {
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
struct Caller {
    pid: u32,
    uid: u32,
    gid: u32,
}

impl Caller {
    fn of(req: &Request) -> Caller {
        Caller {
            pid: req.pid(),
            uid: req.uid(),
            gid: req.gid(),
        }
    }

    /// Whether the caller is in group `gid` (its fsgid or a supplementary group).
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || sys::in_group(self.pid, gid).unwrap_or(false)
    }

    /// Whether the caller holds CAP_FSETID over the files here: in its effective set and
    /// in the daemon's user namespace. Where /proc cannot tell (pid 0: the caller is in a
    /// PID namespace the daemon does not see), root stands for it.
    fn has_fsetid(&self) -> bool {
        sys::has_cap(self.pid, CAP_FSETID).unwrap_or(self.uid == 0)
    }
}

/// What a setattr does with set-user-ID/set-group-ID (see [`drop_suidgid`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum KillSuidgid {
    No,
    /// chown(-1, -1).
    Always(Caller),
    /// A truncate: unless the caller has CAP_FSETID.
    UnlessFsetid(Caller),
}

/// Capability number of CAP_FSETID (linux/capability.h).
const CAP_FSETID: u32 = 4;

/// After an access ACL was set on the file `fd` reaches: clears its set-group-ID bit if
/// the caller is neither in the file's group nor has CAP_FSETID, as a local filesystem does (the
/// backing filesystem saw the daemon, root, set it). The kernel would ask this with
/// FUSE_SETXATTR_EXT, which fuser does not speak.
fn acl_drop_sgid(req: &Request, fd: RawFd) -> std::io::Result<()> {
    let st = sys::fstat(fd)?;
    let caller = Caller::of(req);
    if st.st_mode & libc::S_ISGID == 0 || caller.in_group(st.st_gid) || caller.has_fsetid() {
        return Ok(());
    }
    sys::chmod_fd(fd, st.st_mode & 0o7777 & !libc::S_ISGID)
}

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
            let _g = self.names().map(|_| self.names_lock.write());
            let name = self.backing_name(&p, name)?;
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
        let r = self.check_writable().and_then(|_| {
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
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// Makes backing bytes `from..to` a hole (all zeros): punched where the backing fs can,
/// else written as zeros.
fn punch_backing(f: &File, from: u64, to: u64) -> FsResult<()> {
    if to <= from {
        return Ok(());
    }
    match sys::fallocate(
        f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        from,
        to - from,
    ) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let z = vec![0u8; (to - from).min(1 << 20) as usize];
            let mut at = from;
            while at < to {
                let n = (to - at).min(z.len() as u64) as usize;
                sys::pwrite_all(f, &z[..n], at)?;
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

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

/// Opens the backing root as an `O_PATH` directory fd.
pub fn open_root(path: &std::path::Path) -> FsResult<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| err(libc::EINVAL))?;
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

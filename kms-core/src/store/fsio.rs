//! The file side of the store: the identity of a `keys.kms` version, the per-operation
//! flock with a deadline, and durable writes (fsync of files and directories).

use super::*;

/// What identifies one version of `keys.kms`: (device, inode) changes on every
/// replace (the snapshot holds its file open, so the inode cannot be reused);
/// size and mtime catch in-place edits (damage) too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

pub(super) fn file_id(md: &fs::Metadata) -> FileId {
    FileId {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec(),
    }
}

/// How long a writer waits for the store lock before giving up.
pub const STORE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `flock(LOCK_EX)` with a deadline: a process stopped while holding a lock
/// (SIGSTOP, a debugger) must not hang every other process forever.
///
/// # Errors
/// `WouldBlock` after `timeout`; other I/O errors as they come.
pub(crate) fn lock_with_timeout(f: &File, timeout: std::time::Duration) -> std::io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        match flock(f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                if std::time::Instant::now() >= deadline {
                    return Err(std::io::Error::from(std::io::ErrorKind::WouldBlock));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Holds an exclusive flock until dropped.
pub(super) struct LockGuard(File);

impl LockGuard {
    pub(super) fn acquire(path: &Path) -> KmsResult<LockGuard> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_err("cannot open lock file", path, e))?;
        lock_with_timeout(&f, STORE_LOCK_TIMEOUT).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                internal(format!(
                    "key store lock {} is held by another process for more than {} s (a stopped kmsfs?)",
                    path.display(),
                    STORE_LOCK_TIMEOUT.as_secs()
                ))
            } else {
                io_err("cannot lock", path, e)
            }
        })?;
        Ok(LockGuard(f))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// fsync a directory, so a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> KmsResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot fsync directory", dir, e))
}

/// Writes `bytes` to a new 0600 file at `path` opened with `opts`, and fsyncs it
/// before returning (the caller renames or links it into place).
pub(super) fn write_synced(
    opts: &mut OpenOptions,
    path: &Path,
    bytes: &[u8],
    what: &str,
) -> KmsResult<()> {
    let mut f = opts
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(&format!("cannot create {what} file"), path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&format!("cannot write {what} file"), path, e))
}

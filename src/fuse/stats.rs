//! What the daemon tells about itself: statfs, the counters behind `kmsfs stats`, and
//! the thread that expires per-file keys past the DEK age bound.

#![allow(clippy::wildcard_imports)]

use super::*;

impl KmsFs {
    /// A handle for the key-expiry thread (see [`KeyExpiry`]).
    pub fn key_expiry(&self) -> KeyExpiry {
        KeyExpiry {
            inodes: self.inodes.clone(),
            max_age: self.vol.cache.max_age(),
        }
    }

    /// STATFS: the backing filesystem's, with NAME_MAX narrowed to what encrypted names allow.
    pub(super) fn do_statfs(&self) -> FsResult<libc::statvfs> {
        let root = self.inode(INodeNo::ROOT)?;
        let mut st = sys::statvfs_fd(self.fd_of(&root)?.raw())?;
        if let Some(k) = self.names() {
            st.f_namemax = st.f_namemax.min(k.max_name() as _);
        }
        Ok(st)
    }

    /// The counters behind `kmsfs stats` (the virtual xattr [`STATS_XATTR`]), as JSON.
    pub(super) fn stats_json(&self) -> Vec<u8> {
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

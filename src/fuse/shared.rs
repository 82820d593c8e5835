//! Shared storage (`-o shared_storage`): several daemons, in several processes or on
//! several hosts, serving one backing directory at once.
//!
//! Each daemon serialises its own operations on a file with the inode's content lock;
//! across daemons, the backing file's byte ranges are locked with open-file-description
//! locks (`F_OFD_SETLKW`, as gocryptfs does for its `-sharedstorage`): a read holds the
//! header and the blocks it reads shared, a write holds the header shared and the blocks
//! it read-modify-writes exclusively (to the end of the file when it grows the file, which
//! also rewrites the old partial last block), and a truncation or the creation of a header
//! holds the whole file exclusively. Every lock of an operation is released when it ends.
//!
//! Locks of one open file description never conflict with each other, so the caller must
//! hold the inode's content lock exclusively for the whole operation (also for reads):
//! the single unlock at the end would otherwise drop another thread's range.

use std::fs::File;

use crate::backing::content;
use crate::backing::error::{FsError, FsResult};
use crate::backing::sys::{self, LockKind};
use crate::format::{BlockNo, Geometry};

/// The OFD locks of one operation on one open backing file, all released on drop.
pub struct RangeLocks<'a> {
    f: &'a File,
}

impl Drop for RangeLocks<'_> {
    fn drop(&mut self) {
        if let Err(e) = sys::ofd_lock(self.f, LockKind::Unlock, 0, 0) {
            tracing::error!("cannot release a byte-range lock of the backing file: {e}");
        }
    }
}

impl<'a> RangeLocks<'a> {
    fn lock(&self, kind: LockKind, start: u64, end: Option<u64>) -> FsResult<()> {
        let len = end.map_or(0, |e| e.saturating_sub(start));
        sys::ofd_lock(self.f, kind, start, len).map_err(|e| {
            tracing::error!("cannot lock a byte range of the backing file: {e}");
            FsError::Io(e)
        })
    }
}

fn offset(geo: &Geometry, b: u64) -> FsResult<u64> {
    geo.block_offset(BlockNo(b)).ok_or(FsError::TooBig)
}

/// The whole file, exclusively: truncation, which may remove the header and let the next
/// write create another.
pub fn lock_all(f: &File) -> FsResult<RangeLocks<'_>> {
    let g = RangeLocks { f };
    g.lock(LockKind::Write, 0, None)?;
    Ok(g)
}

/// Reading `size` plaintext bytes at `off`: the header and the blocks, shared.
pub fn lock_read<'a>(f: &'a File, geo: &Geometry, off: u64, size: u32) -> FsResult<RangeLocks<'a>> {
    let g = RangeLocks { f };
    g.lock(LockKind::Read, 0, Some(geo.header_size))?;
    if size > 0 {
        let end = off.saturating_add(size as u64);
        let bs = geo.block_size;
        let (first, last) = (off / bs, (end - 1) / bs);
        g.lock(
            LockKind::Read,
            offset(geo, first)?,
            Some(offset(geo, last + 1)?),
        )?;
    }
    Ok(g)
}

/// Writing `len` plaintext bytes at `off` (`None`: at the end of the file, an append).
/// Returns the locks and the plaintext size under them (where an append writes).
///
/// The blocks the write touches are locked exclusively; when the write starts beyond or
/// reaches past the end of the file, from the old last block on (a partial one is
/// rewritten) to infinity, so that no other writer or truncation changes the size while
/// it runs; an empty file is locked whole (this write creates its header). The size is
/// read again under the locks, and the locks widened until they cover what it implies.
pub fn lock_write<'a>(
    f: &'a File,
    geo: &Geometry,
    off: Option<u64>,
    len: u64,
) -> FsResult<(RangeLocks<'a>, u64)> {
    let g = RangeLocks { f };
    let bs = geo.block_size;
    // The exclusive range held: (start, end), `None` = to infinity.
    let mut held: Option<(u64, Option<u64>)> = None;
    loop {
        let blen = content::backing_len(f)?;
        let plain = geo.plain_size_lossy(blen);
        let off = off.unwrap_or(plain);
        let end = off.checked_add(len).ok_or(FsError::TooBig)?;
        let want: (u64, Option<u64>) = if blen == 0 {
            (0, None)
        } else if end > plain || off > plain {
            // From the old last block on: a write that grows the file re-seals it (padded,
            // or as no longer last with the final-block flag).
            (
                offset(geo, (off / bs).min(plain.saturating_sub(1) / bs))?,
                None,
            )
        } else {
            let last = end.saturating_sub(1) / bs;
            (offset(geo, off / bs)?, Some(offset(geo, last + 1)?))
        };
        let covers = |(s, e): (u64, Option<u64>)| {
            s <= want.0
                && match (e, want.1) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(e), Some(w)) => w <= e,
                }
        };
        let next = match held {
            Some(h) if covers(h) => return Ok((g, plain)),
            // The size changed before the locks were taken: release them all (never wait
            // while holding a block range) and take the union.
            Some((s, e)) => {
                sys::ofd_lock(f, LockKind::Unlock, 0, 0)?;
                (s.min(want.0), e.zip(want.1).map(|(a, b)| a.max(b)))
            }
            None => want,
        };
        if next.0 >= geo.header_size {
            g.lock(LockKind::Read, 0, Some(geo.header_size))?;
        }
        g.lock(LockKind::Write, next.0, next.1)?;
        held = Some(next);
    }
}

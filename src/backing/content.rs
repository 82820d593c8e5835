//! Reading and writing a file's plaintext through its backing file: block
//! decryption, read-modify-write of partial blocks, truncation. Callers hold the
//! inode's content lock (shared for reads, exclusive for writes and truncates).

use std::fs::File;

use crate::backing::error::{FsError, FsResult};
use crate::backing::sys;
use crate::format::aead::Derived;
use crate::format::{BlockFault, BlockNo, ContentKey, Geometry};

/// Where a block failed and how, for the log line.
#[derive(Debug)]
pub struct BadBlock(pub u64, pub BlockFault);

/// Backing length of an open file.
pub fn backing_len(f: &File) -> FsResult<u64> {
    Ok(f.metadata()?.len())
}

/// Reads and decrypts blocks `first..=last` (clipped to the backing length) into plaintext.
/// An error names the first block that failed. The file's last block (by the backing
/// length) is opened as such: with the final-block flag it must say it is last.
fn read_blocks(
    f: &File,
    key: &ContentKey,
    geo: &Geometry,
    blen: u64,
    first: u64,
    last: u64,
) -> Result<Vec<u8>, Result<BadBlock, FsError>> {
    let start = geo
        .block_offset(BlockNo(first))
        .ok_or(Err(FsError::TooBig))?;
    let end = geo
        .block_offset(BlockNo(last + 1))
        .ok_or(Err(FsError::TooBig))?
        .min(blen);
    if end <= start {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; (end - start) as usize];
    let n = sys::pread_full(f, &mut buf, start).map_err(|e| Err(FsError::Io(e)))?;
    buf.truncate(n);
    let sb = geo.stored_block() as usize;
    let file_last = geo.last_block(blen);
    let mut out = Vec::with_capacity(buf.len());
    let mut derived = Derived::default();
    for (i, chunk) in buf.chunks(sb).enumerate() {
        let b = BlockNo(first + i as u64);
        key.open_block_cached(&mut derived, b, Some(b) == file_last, chunk, &mut out)
            .map_err(|fault| Ok(BadBlock(b.0, fault)))?;
    }
    Ok(out)
}

/// Outcome of a content operation that may hit a bad block.
pub type ContentResult<T> = Result<T, Result<BadBlock, FsError>>;

/// Reads up to `size` plaintext bytes at `off`.
pub fn read(
    f: &File,
    key: Option<&ContentKey>,
    geo: &Geometry,
    off: u64,
    size: u32,
) -> ContentResult<Vec<u8>> {
    let blen = backing_len(f).map_err(Err)?;
    let plain = geo.plain_size_lossy(blen);
    if off >= plain || size == 0 {
        return Ok(Vec::new());
    }
    let Some(key) = key else {
        return Err(Err(FsError::Errno(libc::EIO)));
    };
    let end = off.saturating_add(size as u64).min(plain);
    let bs = geo.block_size;
    let first = off / bs;
    let last = (end - 1) / bs;
    let mut data = read_blocks(f, key, geo, blen, first, last)?;
    let lo = (off - first * bs) as usize;
    let hi = ((end - first * bs) as usize).min(data.len());
    if lo >= hi {
        return Ok(Vec::new());
    }
    // In place: no second buffer (an aligned read moves nothing).
    data.truncate(hi);
    data.drain(..lo);
    Ok(data)
}

/// Plaintext of one block (empty beyond EOF).
fn read_block(
    f: &File,
    key: &ContentKey,
    geo: &Geometry,
    blen: u64,
    b: u64,
) -> ContentResult<Vec<u8>> {
    read_blocks(f, key, geo, blen, b, b)
}

/// Seals one block at its place (as the file's last block when `last`).
fn write_block(
    f: &File,
    key: &ContentKey,
    geo: &Geometry,
    b: u64,
    last: bool,
    plain: &[u8],
) -> ContentResult<()> {
    let mut out = Vec::with_capacity(plain.len() + 40);
    key.seal_block(BlockNo(b), last, plain, &mut out)
        .map_err(|_| Err(FsError::Errno(libc::EIO)))?;
    let off = geo.block_offset(BlockNo(b)).ok_or(Err(FsError::TooBig))?;
    sys::pwrite_all(f, &out, off).map_err(|e| Err(FsError::Io(e)))
}

/// Reserves backing space `from..end` (beyond the current end) before a write that grows
/// the backing file and rewrites data it held, so that a full disk fails the write with
/// ENOSPC before any byte is written (instead of a short pwrite tearing a block that held
/// acknowledged data, or applying half the write). A filesystem without fallocate keeps
/// the old behaviour.
fn reserve(f: &File, from: u64, end: u64) -> ContentResult<()> {
    if end <= from {
        return Ok(());
    }
    match sys::fallocate(f, libc::FALLOC_FL_KEEP_SIZE, from, end - from) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(Err(FsError::Io(e))),
    }
}

/// Writes `data` at plaintext offset `off`. `header` is `Some(bytes)` when the file is
/// empty on disk and this write creates its header (written in the same pwrite as
/// block 0 when the write touches block 0).
pub fn write(
    f: &File,
    key: &ContentKey,
    geo: &Geometry,
    header: Option<&[u8]>,
    off: u64,
    data: &[u8],
) -> ContentResult<()> {
    if data.is_empty() {
        return Ok(());
    }
    let end = off
        .checked_add(data.len() as u64)
        .ok_or(Err(FsError::TooBig))?;
    geo.backing_size(end).ok_or(Err(FsError::TooBig))?;
    let blen = if header.is_some() {
        0
    } else {
        backing_len(f).map_err(Err)?
    };
    let plain = match geo.plain_size(blen) {
        Some(p) => p,
        None => return Err(Err(FsError::Integrity("torn last block".into()))),
    };
    let bs = geo.block_size;
    let first = off / bs;
    let wend = geo
        .backing_size(end.max(plain))
        .ok_or(Err(FsError::TooBig))?;
    if end > plain && (!plain.is_multiple_of(bs) || off < plain) {
        // The file grows and the same pwrite rewrites data it held (its partial last block
        // re-sealed longer, or whole blocks before the old end): reserve what this write
        // adds to the backing file (the padded old last block, the written blocks; a gap
        // before them stays a hole) before writing any of it, so that a full disk fails
        // it before anything changed.
        let wstart = geo
            .block_offset(BlockNo(first))
            .ok_or(Err(FsError::TooBig))?;
        if plain / bs < first {
            let pad_end = geo
                .block_offset(BlockNo(plain / bs + 1))
                .ok_or(Err(FsError::TooBig))?;
            reserve(f, blen, pad_end)?;
        }
        reserve(f, blen.max(wstart), wend)?;
        return write_blocks(f, key, geo, header, off, data, blen, plain);
    }
    // Either nothing grows (blocks overwritten in place) or every byte written lies past
    // the old end (the header and blocks of an empty file, whole blocks appended): no
    // reservation, one syscall less per write. A full disk fails the pwrite instead, and
    // cutting the backing file back to its old length leaves it as it was.
    let r = write_blocks(f, key, geo, header, off, data, blen, plain);
    if r.is_err() && wend > blen {
        if let Err(e) = f.set_len(blen) {
            tracing::warn!("could not cut a failed write back to the old end: {e}");
        }
    }
    r
}

/// [`write`]'s blocks, once space is reserved where it must be: the backing file is
/// `blen` bytes long and holds `plain` plaintext bytes.
#[allow(clippy::too_many_arguments)]
fn write_blocks(
    f: &File,
    key: &ContentKey,
    geo: &Geometry,
    header: Option<&[u8]>,
    off: u64,
    data: &[u8],
    blen: u64,
    plain: u64,
) -> ContentResult<()> {
    let end = off + data.len() as u64;
    let bs = geo.block_size;
    let first = off / bs;
    let last = (end - 1) / bs;
    // The file's last block after this write.
    let new_last = (end.max(plain) - 1) / bs;
    // With the final-block flag, the old last block, when this write grows the file past
    // it without rewriting it, is re-sealed as not last, after the new blocks are written
    // (docs/FORMAT.md, "Blocks": a crash in between leaves it saying "last" where the file
    // goes on, which reads fine). Its plaintext is read now, while it is the last block,
    // so a file that was cut refuses the append (EIO) instead of hiding the cut.
    let old_last = (plain > 0).then(|| (plain - 1) / bs);
    let mut reseal = match old_last {
        Some(b) if key.final_flag() && b < first => Some((b, read_block(f, key, geo, blen, b)?)),
        _ => None,
    };
    // A partial last block that the write leaves behind as an interior block is
    // padded to a full block first (its tail becomes zeros). It is still the last
    // block until the write lands.
    if !plain.is_multiple_of(bs) && plain / bs < first {
        let b = plain / bs;
        let mut p = match reseal.take() {
            Some((_, p)) => p,
            None => read_block(f, key, geo, blen, b)?,
        };
        p.resize(bs as usize, 0);
        write_block(f, key, geo, b, true, &p)?;
        if key.final_flag() {
            reseal = Some((b, p));
        }
    }
    let mut out = Vec::with_capacity(
        header.map_or(0, |h| h.len()) + ((last - first + 1) * geo.stored_block()) as usize,
    );
    let start_off = if let (Some(h), 0) = (header, first) {
        out.extend_from_slice(h);
        0
    } else {
        if let Some(h) = header {
            // Header first: a file never holds blocks without a header.
            sys::pwrite_all(f, h, 0).map_err(|e| Err(FsError::Io(e)))?;
        }
        geo.block_offset(BlockNo(first))
            .ok_or(Err(FsError::TooBig))?
    };
    let mut plainbuf = Vec::with_capacity(bs as usize);
    let mut sealer = key.sealer().map_err(|_| Err(FsError::Errno(libc::EIO)))?;
    for b in first..=last {
        let bstart = b * bs;
        let lo = (off.max(bstart) - bstart) as usize;
        let hi = (end.min(bstart + bs) - bstart) as usize;
        let old_end = plain.saturating_sub(bstart).min(bs) as usize; // plaintext bytes already in the block
        plainbuf.clear();
        let covers_old = lo == 0 && hi >= old_end;
        if !covers_old && old_end > 0 {
            plainbuf = read_block(f, key, geo, blen, b)?;
        }
        if plainbuf.len() < hi {
            plainbuf.resize(hi, 0);
        }
        let src = &data[(bstart + lo as u64 - off) as usize..(bstart + hi as u64 - off) as usize];
        plainbuf[lo..hi].copy_from_slice(src);
        sealer
            .seal(BlockNo(b), b == new_last, &plainbuf, &mut out)
            .map_err(|_| Err(FsError::Errno(libc::EIO)))?;
    }
    sys::pwrite_all(f, &out, start_off).map_err(|e| Err(FsError::Io(e)))?;
    if let Some((b, p)) = reseal {
        write_block(f, key, geo, b, false, &p)?;
    }
    Ok(())
}

/// Sets the plaintext size. `key` must be `Some` when the file is not empty or grows
/// (for an empty file that grows, `header` holds the new header).
pub fn truncate(
    f: &File,
    key: Option<&ContentKey>,
    geo: &Geometry,
    header: Option<&[u8]>,
    new: u64,
) -> ContentResult<()> {
    let nb = geo.backing_size(new).ok_or(Err(FsError::TooBig))?;
    let blen = backing_len(f).map_err(Err)?;
    let bs = geo.block_size;
    if new == 0 {
        return f.set_len(0).map_err(|e| Err(FsError::Io(e)));
    }
    let Some(key) = key else {
        return Err(Err(FsError::Errno(libc::EIO)));
    };
    if blen == 0 {
        let h = header.ok_or(Err(FsError::Errno(libc::EIO)))?;
        if key.final_flag() {
            // The file ends in a sealed block of zeros, not a hole (a file with the
            // final-block flag never ends in one): written with the header.
            return grow_sealed(f, key, geo, Some(h), 0, new);
        }
        reserve(f, 0, h.len() as u64)?;
        sys::pwrite_all(f, h, 0).map_err(|e| Err(FsError::Io(e)))?;
        return f.set_len(nb).map_err(|e| Err(FsError::Io(e)));
    }
    let plain = geo
        .plain_size(blen)
        .ok_or(Err(FsError::Integrity("torn last block".into())))?;
    if new == plain {
        return Ok(());
    }
    if new < plain {
        if !new.is_multiple_of(bs) {
            let b = new / bs;
            let mut p = read_block(f, key, geo, blen, b)?;
            p.truncate((new % bs) as usize);
            f.set_len(nb).map_err(|e| Err(FsError::Io(e)))?;
            write_block(f, key, geo, b, true, &p)?;
            return Ok(());
        }
        if key.final_flag() {
            // The new last block says so before the cut: a crash in between leaves it
            // saying "last" where the file goes on, which reads fine.
            let b = new / bs - 1;
            let p = read_block(f, key, geo, blen, b)?;
            write_block(f, key, geo, b, true, &p)?;
        }
        return f.set_len(nb).map_err(|e| Err(FsError::Io(e)));
    }
    if key.final_flag() && (new - 1) / bs > (plain - 1) / bs {
        return grow_sealed(f, key, geo, None, plain, new);
    }
    // Grow: re-seal a partial last block to its new length, the rest are holes.
    if !plain.is_multiple_of(bs) {
        let b = plain / bs;
        let mut p = read_block(f, key, geo, blen, b)?;
        let want = (new - b * bs).min(bs) as usize;
        p.resize(want, 0);
        let bend = geo
            .backing_size(b * bs + want as u64)
            .ok_or(Err(FsError::TooBig))?;
        reserve(f, blen, bend)?;
        write_block(f, key, geo, b, b == (new - 1) / bs, &p)?;
    }
    f.set_len(nb).map_err(|e| Err(FsError::Io(e)))
}

/// Grows a file with the final-block flag from `plain` to `new` bytes past its last
/// block: the new last block is sealed zeros (the blocks between stay holes, unless there
/// is one: it would not become a hole, see [`zero_range`]), written like any
/// write, so the old last block is padded and re-sealed as [`write`] does.
fn grow_sealed(
    f: &File,
    key: &ContentKey,
    geo: &Geometry,
    header: Option<&[u8]>,
    plain: u64,
    new: u64,
) -> ContentResult<()> {
    let bs = geo.block_size;
    let new_last = (new - 1) / bs;
    let first = match plain.checked_sub(1).map(|p| p / bs) {
        Some(old_last) if new_last == old_last + 2 => old_last + 1,
        _ => new_last,
    };
    let from = first * bs;
    write(f, key, geo, header, from, &vec![0u8; (new - from) as usize])
}

/// PUNCH_HOLE / ZERO_RANGE of plaintext `off..end` (within the file, which is `blen`
/// bytes on disk): it reads as zeros. Whole blocks become holes in the backing file (a
/// stored block of zeros reads as zeros: [`crate::format`]), the last block too when the
/// range reaches the end of the file, except with the final-block flag: it is re-sealed as
/// zeros; partial blocks at either edge are re-sealed with zeros.
pub fn zero_range(
    f: &File,
    key: &ContentKey,
    geo: &Geometry,
    blen: u64,
    off: u64,
    end: u64,
) -> ContentResult<()> {
    let bs = geo.block_size;
    let plain = geo.plain_size_lossy(blen);
    let first_whole = off.div_ceil(bs);
    let whole_end = if end != plain {
        end / bs
    } else if key.final_flag() {
        // A file with the final-block flag never ends in a hole.
        (plain - 1) / bs
    } else {
        end.div_ceil(bs)
    };
    let zeros = |from: u64, to: u64| -> ContentResult<()> {
        if from >= to {
            return Ok(());
        }
        write(f, key, geo, None, from, &vec![0u8; (to - from) as usize])
    };
    if whole_end < first_whole + 2 {
        // Fewer than two whole blocks: zeros written into the blocks the range touches.
        // One punched block would rarely become a hole: a stored block (4,136 bytes) is
        // not aligned to the backing fs's pages and mostly spans parts of two, which stay
        // allocated, and fsck would take the zeros between two written neighbours for a
        // zeroed block ([`grow_sealed`] avoids one-block holes too).
        return zeros(off, end);
    }
    zeros(off, first_whole * bs)?;
    let offset = |b: u64| geo.block_offset(BlockNo(b)).ok_or(Err(FsError::TooBig));
    punch_backing(f, offset(first_whole)?, offset(whole_end)?.min(blen)).map_err(Err)?;
    zeros((whole_end * bs).max(off), end)
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

/// Reads the header bytes of a non-empty file.
pub fn read_header(f: &File, geo: &Geometry) -> FsResult<Vec<u8>> {
    let mut h = vec![0u8; geo.header_size as usize];
    let n = sys::pread_full(f, &mut h, 0)?;
    if n != h.len() {
        return Err(FsError::Integrity(format!(
            "file is {n} bytes, shorter than its header"
        )));
    }
    Ok(h)
}

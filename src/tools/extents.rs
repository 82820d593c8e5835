//! Where a backing file holds data: FIEMAP's written extents, else SEEK_DATA/SEEK_HOLE.
//! `kmsfs fsck` uses them to skip holes without reading them and to tell a hole from a
//! zeroed block.

use std::fs::File;
use std::os::unix::io::AsRawFd;

/// The data extents of `f`, as `[start, end)` pairs: written extents from FIEMAP where
/// the filesystem has it (ext4, xfs, btrfs: preallocated, unwritten extents count as
/// holes, as they read as zeros), else SEEK_DATA/SEEK_HOLE (tmpfs: preallocated pages
/// count as data there). A filesystem with neither reports the whole file as data.
pub fn data_extents(f: &File, len: u64) -> Vec<(u64, u64)> {
    fiemap_written(f, len).unwrap_or_else(|| seek_data_extents(f, len))
}

/// `struct fiemap` with room for this many extents per call.
const FIEMAP_EXTENTS: usize = 256;
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; FIEMAP_EXTENTS],
}

/// Written (not unwritten) extents via FS_IOC_FIEMAP; `None` if unsupported.
fn fiemap_written(f: &File, len: u64) -> Option<Vec<(u64, u64)>> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0u64;
    let mut fm = Box::new(Fiemap {
        start: 0,
        length: 0,
        flags: 0,
        mapped_extents: 0,
        extent_count: FIEMAP_EXTENTS as u32,
        reserved: 0,
        extents: [FiemapExtent::default(); FIEMAP_EXTENTS],
    });
    while pos < len {
        fm.start = pos;
        fm.length = len - pos;
        fm.flags = FIEMAP_FLAG_SYNC;
        fm.mapped_extents = 0;
        fm.extent_count = FIEMAP_EXTENTS as u32;
        // SAFETY: FS_IOC_FIEMAP with a correctly laid out, writable struct fiemap.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, &mut *fm as *mut Fiemap) };
        if r != 0 {
            return None;
        }
        let n = (fm.mapped_extents as usize).min(FIEMAP_EXTENTS);
        if n == 0 {
            break;
        }
        let mut last = false;
        for e in &fm.extents[..n] {
            let end = e.logical.saturating_add(e.length).min(len);
            if e.flags & FIEMAP_EXTENT_UNWRITTEN == 0 && end > e.logical {
                match v.last_mut() {
                    Some(l) if l.1 >= e.logical => l.1 = l.1.max(end),
                    _ => v.push((e.logical, end)),
                }
            }
            pos = pos.max(e.logical.saturating_add(e.length));
            last |= e.flags & FIEMAP_EXTENT_LAST != 0;
        }
        if last {
            break;
        }
    }
    Some(v)
}

fn seek_data_extents(f: &File, len: u64) -> Vec<(u64, u64)> {
    let fd = f.as_raw_fd();
    let mut v = Vec::new();
    let mut off: i64 = 0;
    while (off as u64) < len {
        // SAFETY: lseek on an fd we own.
        let d = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if d < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return vec![(0, len)];
        }
        // SAFETY: as above.
        let h = unsafe { libc::lseek(fd, d, libc::SEEK_HOLE) };
        if h < 0 {
            return vec![(0, len)];
        }
        v.push((d as u64, h as u64));
        off = h;
    }
    v
}

/// Whether every byte of `[start, end)` lies in a data extent.
pub fn within_data(ext: &[(u64, u64)], start: u64, end: u64) -> bool {
    let mut pos = start;
    for &(s, e) in ext {
        if e <= pos {
            continue;
        }
        if s > pos {
            return false;
        }
        pos = e;
        if pos >= end {
            return true;
        }
    }
    pos >= end
}

#[cfg(test)]
mod tests {
    use super::within_data;

    #[test]
    fn within_data_covers_gaps_and_joins() {
        let ext = [(0, 100), (100, 200), (300, 400)];
        assert!(within_data(&ext, 10, 150));
        assert!(within_data(&ext, 0, 200));
        assert!(!within_data(&ext, 150, 250));
        assert!(!within_data(&ext, 250, 320));
        assert!(within_data(&ext, 300, 400));
        assert!(!within_data(&ext, 350, 450));
        assert!(!within_data(&[], 0, 1));
    }
}

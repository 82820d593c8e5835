//! `copy_file_range` inside a mount (what cp, coreutils 9, does first) is served by the
//! daemon: decrypted once and sealed once, the kernel's read-write fallback not used; the
//! copy is byte-exact, also at unaligned offsets into an existing file and past the
//! source's end (a short count).

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::process::Command;

use fsmount::{pattern, Mounted};

fn copy_range(
    from: &File,
    off_in: i64,
    to: &File,
    off_out: i64,
    len: usize,
) -> std::io::Result<usize> {
    let (mut a, mut b) = (off_in, off_out);
    // SAFETY: both fds are open; the offsets are ours.
    let r =
        unsafe { libc::copy_file_range(from.as_raw_fd(), &mut a, to.as_raw_fd(), &mut b, len, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn copies(extra: &[&str]) {
    let m = Mounted::new(extra);
    let data = pattern(7, (8 << 20) + 12_345);
    fs::write(m.p("a"), &data).unwrap();

    // cp (it calls copy_file_range; the kernel would fall back to reading the plaintext
    // out through /dev/fuse and writing it back in). Counted from outside, by the kernel's
    // IO accounting of the daemon: the backing file read once and written once, not
    // twice more through /dev/fuse.
    let pid = m.pid().unwrap();
    let io = || -> u64 {
        fs::read_to_string(format!("/proc/{pid}/io"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("rchar:") || l.starts_with("wchar:"))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let before = io();
    fsmount::run_ok(Command::new("cp").arg(m.p("a")).arg(m.p("b")));
    let moved = io() - before;
    let size = data.len() as u64;
    assert!(
        moved >= 2 * size && moved < 3 * size,
        "the daemon moved {moved} bytes to copy {size}: not one read and one write"
    );
    assert_eq!(fs::read(m.p("b")).unwrap(), data);

    // Unaligned ranges into an existing file; a range past the source's end is short.
    let base = pattern(9, 300_000);
    fs::write(m.p("c"), &base).unwrap();
    let from = File::open(m.p("a")).unwrap();
    let to = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("c"))
        .unwrap();
    assert_eq!(
        copy_range(&from, 5_000, &to, 12_345, 100_000).unwrap(),
        100_000
    );
    let mut want = base.clone();
    want[12_345..112_345].copy_from_slice(&data[5_000..105_000]);
    let end = data.len() as i64 - 1_000;
    assert_eq!(copy_range(&from, end, &to, 290_000, 50_000).unwrap(), 1_000);
    want[290_000..291_000].copy_from_slice(&data[data.len() - 1_000..]);
    assert_eq!(copy_range(&from, data.len() as i64, &to, 0, 10).unwrap(), 0);
    drop((from, to));
    assert_eq!(fs::read(m.p("c")).unwrap(), want);
    assert!(
        !m.log_text().contains("Not Implemented"),
        "{}",
        m.log_text()
    );
    drop(m);
}

#[test]
fn copy_file_range_is_served_by_the_daemon() {
    copies(&[]);
}

#[test]
fn copy_file_range_with_writeback_cache() {
    copies(&["-o", "writeback_cache"]);
}

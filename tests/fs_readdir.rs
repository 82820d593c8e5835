//! Directory streams as POSIX has them, through libc's opendir/readdir/rewinddir/seekdir
//! (not a shell `ls`): a rewound stream shows what was created since it was opened; a
//! stream that is not rewound sees no entry twice while another thread creates and
//! removes entries. On a default mount, with shared storage and with encrypted names.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fsmount::Mounted;

/// A libc directory stream, closed on drop.
struct Dir(*mut libc::DIR);

impl Dir {
    fn open(p: &Path) -> Dir {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(!d.is_null(), "opendir {}", p.display());
        Dir(d)
    }

    /// The next name, or None at the end.
    fn next(&mut self) -> Option<String> {
        // SAFETY: a stream of ours; errno is cleared to tell the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: as above.
        let e = unsafe { libc::readdir(self.0) };
        if e.is_null() {
            // SAFETY: reading errno.
            let errno = unsafe { *libc::__errno_location() };
            assert_eq!(errno, 0, "readdir failed");
            return None;
        }
        // SAFETY: d_name is NUL-terminated inside the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) };
        Some(name.to_string_lossy().into_owned())
    }

    fn all(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next()).collect()
    }

    fn rewind(&mut self) {
        // SAFETY: a stream of ours.
        unsafe { libc::rewinddir(self.0) };
    }

    fn seek0(&mut self) {
        // SAFETY: a stream of ours; 0 is the position of its start.
        unsafe { libc::seekdir(self.0, 0) };
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: a stream of ours, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// Names other than `.` and `..`.
fn names(v: Vec<String>) -> Vec<String> {
    v.into_iter().filter(|n| n != "." && n != "..").collect()
}

fn rewound_streams_show_new_entries(m: &Mounted) {
    let d = m.p("d");
    fs::create_dir(&d).unwrap();
    let mut dir = Dir::open(&d);
    assert!(names(dir.all()).is_empty());
    for i in 0..1000 {
        fs::write(d.join(format!("entry-{i:04}")), b"x").unwrap();
    }
    // Not rewound: still at the end.
    assert!(dir.next().is_none());
    dir.rewind();
    let got = names(dir.all());
    assert_eq!(got.len(), 1000, "after rewinddir");
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 1000);
    for i in 0..1000 {
        fs::write(d.join(format!("more-{i:04}")), b"y").unwrap();
    }
    for i in (0..1000).step_by(2) {
        fs::remove_file(d.join(format!("entry-{i:04}"))).unwrap();
    }
    dir.seek0();
    let got: HashSet<String> = names(dir.all()).into_iter().collect();
    assert_eq!(got.len(), 1500, "after seekdir(0)");
    assert!(got.contains("more-0999") && got.contains("entry-0001") && !got.contains("entry-0000"));
}

fn a_reader_that_does_not_rewind_sees_no_entry_twice(m: &Mounted) {
    let d = m.p("busy");
    fs::create_dir(&d).unwrap();
    for i in 0..3000 {
        fs::write(d.join(format!("old-{i:04}")), b"x").unwrap();
    }
    let writer_dir = d.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..1500 {
            fs::write(writer_dir.join(format!("new-{i:04}")), b"y").unwrap();
            fs::remove_file(writer_dir.join(format!("old-{:04}", 2999 - i))).unwrap();
        }
    });
    let mut dir = Dir::open(&d);
    let mut seen = HashSet::new();
    let mut n = 0;
    while let Some(name) = dir.next() {
        assert!(seen.insert(name.clone()), "{name} returned twice");
        n += 1;
        if n % 200 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    writer.join().unwrap();
    // Every entry that stayed all along was seen.
    for i in 0..1500 {
        assert!(seen.contains(&format!("old-{i:04}")), "old-{i:04} missed");
    }
}

#[test]
fn directory_streams_default_mount() {
    let m = Mounted::new(&[]);
    rewound_streams_show_new_entries(&m);
    a_reader_that_does_not_rewind_sees_no_entry_twice(&m);
}

#[test]
fn directory_streams_encrypted_names() {
    let m = Mounted::new(&["--encrypt-names"]);
    rewound_streams_show_new_entries(&m);
    a_reader_that_does_not_rewind_sees_no_entry_twice(&m);
}

#[test]
fn directory_streams_shared_storage() {
    let m = Mounted::new(&["-o", "shared_storage"]);
    rewound_streams_show_new_entries(&m);
    a_reader_that_does_not_rewind_sees_no_entry_twice(&m);
}

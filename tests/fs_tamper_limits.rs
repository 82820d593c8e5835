//! What format version 1 does **not** detect (docs/THREAT-MODEL.md, "What is not
//! detected"): each test performs the attack on the backing files of a real mount and
//! shows that it goes unnoticed — by the mount and by `kmsfs fsck`. When one of these
//! is closed, its test must be turned into a detection test.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use fsmount::{backing_size, pattern, Mounted};

const HEADER: u64 = 1024;
const STORED: u64 = 4096 + 40;

/// `kmsfs fsck` exit status of the mounted volume (read-only while mounted).
fn fsck_status(m: &Mounted) -> i32 {
    fsmount::run_fsck(&m.kms, &m.backing, &[])
        .status
        .code()
        .unwrap_or(-1)
}

/// Lets the kernel's attribute cache of the mount expire after a backing change.
fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn a_block_rolled_back_to_its_older_version_reads_without_error() {
    let m = Mounted::new(&[]);
    let v1 = pattern(1, 3 * 4096);
    fs::write(m.p("f"), &v1).unwrap();
    // The attacker keeps block 1 as stored now…
    let raw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.b("f"))
        .unwrap();
    let mut old = vec![0u8; STORED as usize];
    raw.read_exact_at(&mut old, HEADER + STORED).unwrap();
    // …the user rewrites it (detection first: the rewrite reads back)…
    let v2 = pattern(2, 4096);
    let f = OpenOptions::new().write(true).open(m.p("f")).unwrap();
    f.write_all_at(&v2, 4096).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(m.p("f")).unwrap()[4096..8192], v2[..]);
    // …and the attacker puts the old block back: it authenticates.
    raw.write_all_at(&old, HEADER + STORED).unwrap();
    settle();
    assert_eq!(
        fs::read(m.p("f")).unwrap(),
        v1,
        "the rolled-back block reads as v1"
    );
    assert_eq!(fsck_status(&m), 0, "fsck cannot see a block rollback");
}

#[test]
fn a_whole_file_rolled_back_reads_without_error() {
    let m = Mounted::new(&[]);
    let v1 = pattern(3, 10_000);
    fs::write(m.p("f"), &v1).unwrap();
    let old = fs::read(m.b("f")).unwrap();
    let v2 = pattern(4, 20_000);
    fs::write(m.p("f"), &v2).unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), v2);
    fs::write(m.b("f"), &old).unwrap();
    settle();
    assert_eq!(
        fs::read(m.p("f")).unwrap(),
        v1,
        "the old file, header and all, reads"
    );
    assert_eq!(fsck_status(&m), 0, "fsck cannot see a file rollback");
}

#[test]
fn a_file_cut_at_a_block_boundary_reads_as_a_shorter_file() {
    let m = Mounted::new(&[]);
    let data = pattern(5, 3 * 4096 + 500);
    fs::write(m.p("f"), &data).unwrap();
    // Cut inside the last block: detected (EIO), as tests/fs_faults.rs shows.
    // Cut at a block boundary: whole trailing blocks gone, a valid shorter file.
    let raw = OpenOptions::new().write(true).open(m.b("f")).unwrap();
    raw.set_len(HEADER + 2 * STORED).unwrap();
    drop(raw);
    settle();
    assert_eq!(fs::metadata(m.p("f")).unwrap().len(), 2 * 4096);
    assert_eq!(fs::read(m.p("f")).unwrap(), data[..2 * 4096]);
    assert_eq!(
        fsck_status(&m),
        0,
        "fsck cannot see a cut at a block boundary"
    );
}

#[test]
fn names_sizes_modes_and_tree_are_plaintext_in_the_backing() {
    let m = Mounted::new(&[]);
    fs::create_dir(m.p("payroll")).unwrap();
    fs::write(m.p("payroll/salaries-2026.csv"), pattern(6, 12_345)).unwrap();
    fs::set_permissions(
        m.p("payroll/salaries-2026.csv"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("salaries-2026.csv", m.p("payroll/latest")).unwrap();
    let b = fs::metadata(m.b("payroll/salaries-2026.csv")).unwrap();
    assert_eq!(b.mode() & 0o7777, 0o640, "mode is kept as is");
    assert_eq!(
        b.len(),
        backing_size(12_345),
        "the plaintext size follows from it"
    );
    assert_eq!(
        fs::read_link(m.b("payroll/latest")).unwrap().to_str(),
        Some("salaries-2026.csv"),
        "symlink targets are plaintext"
    );
    // Renaming and deleting in the backing directory is not detected either.
    fs::rename(m.b("payroll/salaries-2026.csv"), m.b("payroll/renamed.csv")).unwrap();
    settle();
    assert_eq!(
        fs::read(m.p("payroll/renamed.csv")).unwrap(),
        pattern(6, 12_345)
    );
}

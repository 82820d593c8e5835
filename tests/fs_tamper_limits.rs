//! What the format does **not** detect (docs/THREAT-MODEL.md, "What is not detected"):
//! each test performs the attack on the backing files of a real mount and shows that it
//! goes unnoticed — by the mount and by `kmsfs fsck`. When one of these is closed, its
//! test is turned into a detection test: a cut at a block boundary is detected on a volume
//! with the final-block flag (new volumes), and still not on one without it.
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

/// Once the kernel sees the rolled-back backing file: "f" reads as `v1` again without
/// error (`reads` says what was rolled back), and fsck cannot see the `what` rollback.
fn assert_rollback_unseen(m: &Mounted, v1: &[u8], reads: &str, what: &str) {
    settle();
    assert_eq!(fs::read(m.p("f")).unwrap(), v1, "{reads}");
    assert_eq!(fsck_status(m), 0, "fsck cannot see a {what} rollback");
}

#[test]
fn a_block_rolled_back_to_its_older_version_reads_without_error() {
    let (m, v1, raw) = Mounted::with_file_f(1, 3 * 4096);
    // The attacker keeps block 1 as stored now…
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
    assert_rollback_unseen(&m, &v1, "the rolled-back block reads as v1", "block");
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
    assert_rollback_unseen(&m, &v1, "the old file, header and all, reads", "file");
}

/// The kinds of problem `kmsfs fsck --json` reports for the volume.
fn fsck_kinds(m: &Mounted) -> Vec<(String, Option<u64>)> {
    let out = fsmount::run_fsck(&m.kms, &m.backing, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["kind"].as_str().unwrap().to_owned(), p["block"].as_u64()))
        .collect()
}

fn read_errno(path: &std::path::Path) -> Option<i32> {
    fs::read(path).err().and_then(|e| e.raw_os_error())
}

/// Closed by the final-block flag (feature content-final-v1, which new volumes have): a
/// file cut at a block boundary ends in a block sealed as "not last".
#[test]
fn a_file_cut_at_a_block_boundary_fails_to_read_and_fsck_names_it() {
    let m = Mounted::new(&[]);
    let conf = fs::read_to_string(m.b("kmsfs.conf")).unwrap();
    assert!(
        conf.contains("content-final-v1"),
        "a new volume has the flag"
    );
    let data = pattern(5, 3 * 4096 + 500);
    fs::write(m.p("f"), &data).unwrap();
    fs::write(m.p("whole"), &data[..3 * 4096]).unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), data);
    assert_eq!(fs::read(m.p("whole")).unwrap(), data[..3 * 4096]);
    assert_eq!(fsck_status(&m), 0, "clean before the cut");
    let cut = |name: &str, len: u64| {
        let raw = OpenOptions::new().write(true).open(m.b(name)).unwrap();
        raw.set_len(len).unwrap();
    };
    // Cut at a block boundary: the new last block says it is not last.
    cut("f", HEADER + 2 * STORED);
    // The same file cut, then padded with a block of zeros (a hole): no tag to say "last".
    cut("whole", HEADER + 2 * STORED);
    cut("whole", HEADER + 3 * STORED);
    settle();
    assert_eq!(fs::metadata(m.p("f")).unwrap().len(), 2 * 4096);
    assert_eq!(read_errno(&m.p("f")), Some(libc::EIO), "the cut file reads");
    assert_eq!(
        read_errno(&m.p("whole")),
        Some(libc::EIO),
        "the padded file reads"
    );
    // The blocks before the cut still read.
    let mut head = vec![0u8; 4096];
    fs::File::open(m.p("f"))
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert_eq!(head, data[..4096]);
    // An append would hide the cut: refused too.
    let f = OpenOptions::new().append(true).open(m.p("f")).unwrap();
    let e = f.write_all_at(b"more", 2 * 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    drop(f);
    let mut kinds = fsck_kinds(&m);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("hole-at-end".to_owned(), Some(2)),
            ("not-final".to_owned(), Some(1))
        ]
    );
    assert_eq!(fsck_status(&m), 4);
    // The way out: truncate below the bad block (or rewrite the file).
    let f = OpenOptions::new().write(true).open(m.p("f")).unwrap();
    f.set_len(4096).unwrap();
    drop(f);
    fs::write(m.p("whole"), b"rewritten").unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), data[..4096]);
    assert_eq!(fs::read(m.p("whole")).unwrap(), b"rewritten");
    assert_eq!(fsck_status(&m), 0, "clean after the repair");
    // The daemon's log names the cause.
    let log = fs::read_to_string(&m.log).unwrap();
    assert!(log.contains("sealed as not its last"), "{log}");
    assert!(log.contains("ends in a hole"), "{log}");
}

/// A volume made without the flag (`kmsfs init --no-final-flag`, as volumes were made
/// before it): a file cut at a block boundary reads as a valid shorter file.
#[test]
fn without_the_final_flag_a_file_cut_at_a_block_boundary_reads_as_a_shorter_file() {
    let t = tempfile::tempdir().unwrap();
    let (kms, backing) = (t.path().join("kms"), t.path().join("backing"));
    fs::create_dir(&backing).unwrap();
    fsmount::init_volume(&kms, &backing, &["--no-final-flag"]);
    let m = Mounted::existing(&kms, &backing, &[]).unwrap();
    let conf = fs::read_to_string(m.b("kmsfs.conf")).unwrap();
    assert!(!conf.contains("content-final-v1"));
    let data = pattern(5, 3 * 4096 + 500);
    fs::write(m.p("f"), &data).unwrap();
    assert_eq!(fs::read(m.p("f")).unwrap(), data);
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

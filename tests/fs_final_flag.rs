//! The final-block flag (feature `content-final-v1`, docs/FORMAT.md "The final-block
//! flag") holds however a file got its length: grown by appends of whole and partial
//! blocks, by writes past the end, by truncate and fallocate, shrunk to and inside a block
//! boundary, punched at the end, copied with copy_file_range. For each way the file reads
//! back as written and fsck is clean; then a copy of its backing file cut at each block
//! boundary fails to read (EIO), which it would not if a write had left an old last block
//! sealed as last.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;

use fsmount::{pattern, run_ok, Mounted};

const BS: u64 = 4096;
const HEADER: u64 = 1024;
const STORED: u64 = BS + 40;

/// Applies one way of making a file of known content; returns that content.
fn make(m: &Mounted, name: &str, how: &str) -> Vec<u8> {
    let p = m.p(name);
    let mut model: Vec<u8> = Vec::new();
    let write_at = |model: &mut Vec<u8>, f: &File, off: u64, data: &[u8]| {
        f.write_all_at(data, off).unwrap();
        let end = off as usize + data.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(data);
    };
    let f = File::create(&p).unwrap();
    match how {
        "appends of whole blocks" => {
            for i in 0..5 {
                write_at(&mut model, &f, i * BS, &pattern(i, BS as usize));
            }
        }
        "appends of 1000 bytes" => {
            let mut a = OpenOptions::new().append(true).open(&p).unwrap();
            for i in 0..25u64 {
                let d = pattern(10 + i, 1000);
                a.write_all(&d).unwrap();
                model.extend_from_slice(&d);
            }
        }
        "writes past the end" => {
            write_at(&mut model, &f, 0, &pattern(1, 100));
            write_at(&mut model, &f, 5 * BS + 7, &pattern(2, 100));
            write_at(&mut model, &f, 2 * BS, &pattern(3, BS as usize));
        }
        "truncate up" => {
            write_at(&mut model, &f, 0, &pattern(4, 5000));
            f.set_len(3 * BS).unwrap();
            f.set_len(5 * BS + 1).unwrap();
            model.resize((5 * BS + 1) as usize, 0);
        }
        "truncate down to a block boundary" => {
            write_at(&mut model, &f, 0, &pattern(9, 5 * BS as usize + 300));
            f.set_len(3 * BS).unwrap();
            model.truncate((3 * BS) as usize);
        }
        "truncate down" => {
            write_at(&mut model, &f, 0, &pattern(5, 5 * BS as usize + 300));
            f.set_len(3 * BS).unwrap();
            f.set_len(2 * BS + 10).unwrap();
            model.truncate((2 * BS + 10) as usize);
        }
        "fallocate up" => {
            write_at(&mut model, &f, 0, &pattern(6, 3 * BS as usize));
            run_ok(Command::new("fallocate").args(["-l", "20000"]).arg(&p));
            model.resize(20000, 0);
        }
        "punch to the end" => {
            write_at(&mut model, &f, 0, &pattern(7, 6 * BS as usize - 5));
            run_ok(
                Command::new("fallocate")
                    .args(["--punch-hole", "-o", "5000", "-l", "1000000"])
                    .arg(&p),
            );
            model[5000..].fill(0);
        }
        "copy_file_range" => {
            let src = m.p("cfr-source");
            fs::write(&src, pattern(8, 3 * BS as usize + 77)).unwrap();
            run_ok(Command::new("cp").arg(&src).arg(&p));
            model = fs::read(&src).unwrap();
            fs::remove_file(&src).unwrap();
        }
        _ => unreachable!("{how}"),
    }
    drop(f);
    model
}

#[test]
fn every_way_of_setting_the_length_keeps_a_cut_detectable() {
    let m = Mounted::new(&[]);
    let ways = [
        "appends of whole blocks",
        "appends of 1000 bytes",
        "writes past the end",
        "truncate up",
        "truncate down to a block boundary",
        "truncate down",
        "fallocate up",
        "punch to the end",
        "copy_file_range",
    ];
    let mut made = Vec::new();
    for (i, how) in ways.iter().enumerate() {
        let name = format!("f{i}");
        let want = make(&m, &name, how);
        assert_eq!(fs::read(m.p(&name)).unwrap(), want, "{how}: reads back");
        made.push((name, want, *how));
    }
    // No error; a one-block hole between written blocks ("writes past the end" makes one)
    // is a warning fsck cannot avoid (docs/THREAT-MODEL.md), nothing else is.
    let out = fsmount::run_fsck(&m.kms, &m.backing, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], 0, "{v:#}");
    for p in v["problems"].as_array().unwrap() {
        assert!(p["kind"] == "zero-block" && p["path"] == "f2", "{v:#}");
    }
    let mut cuts = 0;
    for (name, want, how) in &made {
        let raw = fs::read(m.b(name)).unwrap();
        let blocks = (want.len() as u64).div_ceil(BS);
        for k in 1..blocks {
            // A copy of the backing file is the same file (its header names its key).
            let cut = format!("{name}.cut{k}");
            fs::write(m.b(&cut), &raw[..(HEADER + k * STORED) as usize]).unwrap();
            let mut head = vec![0u8; ((k - 1) * BS) as usize];
            let f = File::open(m.p(&cut)).unwrap();
            f.read_exact_at(&mut head, 0).unwrap();
            assert_eq!(head, want[..head.len()], "{how}, cut at {k}: blocks before");
            let r = fs::read(m.p(&cut)).map(|v| v.len());
            assert_eq!(
                r.map_err(|e| e.raw_os_error()),
                Err(Some(libc::EIO)),
                "{how}: cut at block {k} of {blocks} reads (Ok: its length)"
            );
            cuts += 1;
        }
    }
    assert!(cuts >= 30, "{cuts} cuts tried");
}

/// The two states a crash can leave an append in (docs/FORMAT.md, "The final-block
/// flag"), made from the backing file of a real append. A kill -9 between its writes
/// keeps the new blocks and the old last block still sealed as last: the file reads
/// whole and fsck is clean. A power cut may keep the re-seal and lose the new blocks:
/// the file then ends at a block sealed as not last, and fsck names it as `not-final`,
/// saying its data is intact.
#[test]
fn the_states_a_crash_leaves_an_append_in() {
    let m = Mounted::new(&[]);
    let before = pattern(20, 3 * BS as usize);
    fs::write(m.p("f"), &before).unwrap();
    let old = fs::read(m.b("f")).unwrap();
    let more = pattern(21, 2 * BS as usize);
    let mut f = OpenOptions::new().append(true).open(m.p("f")).unwrap();
    f.write_all(&more).unwrap();
    drop(f);
    let new = fs::read(m.b("f")).unwrap();
    let b2 = (HEADER + 2 * STORED) as usize..(HEADER + 3 * STORED) as usize;
    assert_ne!(
        old[b2.clone()],
        new[b2.clone()],
        "the append re-sealed block 2"
    );
    // Killed before the re-seal: new blocks, old block 2.
    let mut killed = new.clone();
    killed[b2.clone()].copy_from_slice(&old[b2.clone()]);
    fs::write(m.b("killed"), &killed).unwrap();
    // Power cut that kept the re-seal only: old length, new block 2.
    fs::write(m.b("cut"), &new[..b2.end]).unwrap();
    // Power cut that kept the new length only: the new blocks read as zeros (holes), and
    // the old block 2, still sealed as last.
    fs::write(m.b("lost"), &killed[..b2.end]).unwrap();
    File::options()
        .write(true)
        .open(m.b("lost"))
        .unwrap()
        .set_len(killed.len() as u64)
        .unwrap();
    let whole: Vec<u8> = [before.clone(), more].concat();
    assert_eq!(fs::read(m.p("killed")).unwrap(), whole);
    let r = fs::read(m.p("cut")).map(|v| v.len());
    assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
    let out = fsmount::run_fsck(&m.kms, &m.backing, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut problems = v["problems"].as_array().unwrap().clone();
    problems.sort_by_key(|p| p["path"].as_str().unwrap().to_owned());
    assert_eq!(problems.len(), 2, "{v:#}");
    assert_eq!(problems[1]["path"], "lost");
    assert_eq!(problems[1]["kind"], "hole-at-end");
    assert_eq!(problems[1]["block"], 4);
    assert_eq!(problems[0]["path"], "cut");
    assert_eq!(problems[0]["kind"], "not-final");
    assert_eq!(problems[0]["block"], 2);
    assert!(problems[0]["message"].as_str().unwrap().contains("intact"));
    // Keeping the file as the crash left it: refused while mounted, then done unmounted.
    let out = fsmount::run_fsck(&m.kms, &m.backing, &["--accept-ends"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "--accept-ends on a mounted volume"
    );
    assert!(fs::read(m.p("cut")).is_err(), "nothing changed");
    let mut m = m;
    m.unmount();
    let out = fsmount::run_fsck(&m.kms, &m.backing, &["--accept-ends"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("repaired: cut block 2"), "{text}");
    assert!(text.contains("repaired: lost block 4"), "{text}");
    let v: serde_json::Value =
        serde_json::from_slice(&fsmount::run_fsck(&m.kms, &m.backing, &["--json"]).stdout).unwrap();
    assert_eq!(v["errors"], 0, "{v:#}");
    m.mount(&[]).unwrap();
    assert_eq!(
        fs::read(m.p("cut")).unwrap(),
        before,
        "the data up to the cut, intact"
    );
    assert_eq!(fs::read(m.p("killed")).unwrap(), whole);
    let mut zeros = before.clone();
    zeros.resize(whole.len(), 0);
    assert_eq!(fs::read(m.p("lost")).unwrap(), zeros);
}

//! Crash safety, counted from outside the daemon.
//!
//! - `kill9_during_writes_*`: a writer thread overwrites and appends through the mount,
//!   fsyncing now and then; the daemon is killed with SIGKILL at a random moment, the
//!   mount lazily unmounted and the volume remounted. Every file must open; every block
//!   not written since the file's last successful fsync must read back exactly; a block
//!   written since may read as any version written to it (or the fsynced one) or fail
//!   authentication (EIO: torn by the kill) — never as other bytes; and `kmsfs fsck`
//!   must report exactly such blocks, nothing else.
//! - `power_loss_*`: kill -9 keeps the backing page cache, so it never loses a completed
//!   pwrite. To model a power cut, the test keeps each backing file as it was at its last
//!   fsync (S) and as it is at the cut (C), and builds a backing volume whose files mix S
//!   and C sector by sector (or page by page) at random, with either length: any subset
//!   of the un-fsynced writes reached the disk, in any order, torn at any sector. The
//!   same checks hold.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
#[path = "common/powercut.rs"]
mod powercut;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fsmount::Mounted;
use powercut::{mix, seeded, LoopDisk, Rng};

const BS: usize = 4096;

/// What the test knows about one file.
#[derive(Clone, Debug)]
struct Model {
    name: String,
    /// Content after every write issued so far.
    cur: Vec<u8>,
    /// Content at the last fsync that returned success.
    durable: Vec<u8>,
    /// Blocks written since that fsync: every content the block had after a write.
    dirty: BTreeMap<usize, Vec<Vec<u8>>>,
}

impl Model {
    fn new(name: &str, content: Vec<u8>) -> Model {
        Model {
            name: name.into(),
            durable: content.clone(),
            cur: content,
            dirty: BTreeMap::new(),
        }
    }

    fn block(v: &[u8], b: usize) -> &[u8] {
        let lo = (b * BS).min(v.len());
        let hi = ((b + 1) * BS).min(v.len());
        &v[lo..hi]
    }

    /// Records a write before it is issued (an interrupted one may have landed too).
    fn write(&mut self, off: usize, data: &[u8]) {
        let old = self.cur.len();
        let end = off + data.len();
        if end > old {
            self.cur.resize(end, 0);
        }
        self.cur[off..end].copy_from_slice(data);
        // A write that grows the file rewrites the old last block too: padded when it was
        // partial, re-sealed as no longer last when it was full (the final-block flag that
        // new volumes have, docs/FORMAT.md).
        let first = off.min(old.saturating_sub(1)) / BS;
        for b in first..end.div_ceil(BS) {
            let v = Self::block(&self.cur, b).to_vec();
            self.dirty.entry(b).or_default().push(v);
        }
    }

    fn synced(&mut self) {
        self.durable = self.cur.clone();
        self.dirty.clear();
    }
}

/// What one check saw.
#[derive(Default, Debug)]
struct Seen {
    torn: BTreeSet<(String, u64)>,
    bytes_verified: u64,
    blocks_verified: u64,
    /// Power loss only: appended data whose new length reached the disk but whose bytes
    /// did not reads as zeros. (kill -9 never loses a completed pwrite.)
    lost_appends_allowed: bool,
}

/// Reads every block of every file through the mount and checks it against the model.
fn check_mounted(m: &Mounted, models: &[Model], seen: &mut Seen, what: &str) {
    for md in models {
        let f = File::open(m.p(&md.name))
            .unwrap_or_else(|e| panic!("{what}: {} does not open: {e}", md.name));
        let plain = f.metadata().unwrap().len() as usize;
        assert!(
            plain >= md.durable.len(),
            "{what}: {} is {plain} bytes, shorter than its fsynced {} bytes",
            md.name,
            md.durable.len()
        );
        for b in 0..plain.div_ceil(BS) {
            let want = (BS).min(plain - b * BS);
            let mut buf = vec![0u8; want];
            let mut got = 0;
            let r = loop {
                match f.read_at(&mut buf[got..], (b * BS + got) as u64) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        got += n;
                        if got == want {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(got);
            let durable = Model::block(&md.durable, b);
            match (r, md.dirty.get(&b)) {
                (Ok(()), None) => {
                    assert!(
                        buf == durable,
                        "{what}: {} block {b} was fsynced and not written since, but reads back \
                         different ({} bytes, want {})",
                        md.name,
                        buf.len(),
                        durable.len()
                    );
                    seen.bytes_verified += buf.len() as u64;
                    seen.blocks_verified += 1;
                }
                (Ok(()), Some(versions)) => {
                    let zeros_past_durable = seen.lost_appends_allowed
                        && b * BS >= md.durable.len()
                        && buf.iter().all(|&x| x == 0);
                    assert!(
                        buf == durable || versions.contains(&buf) || zeros_past_durable,
                        "{what}: {} block {b} reads {} bytes that were never written there",
                        md.name,
                        buf.len()
                    );
                    seen.bytes_verified += buf.len() as u64;
                    seen.blocks_verified += 1;
                }
                (Err(e), dirty) => {
                    assert_eq!(
                        e.raw_os_error(),
                        Some(libc::EIO),
                        "{what}: {} block {b}: {e}",
                        md.name
                    );
                    assert!(
                        dirty.is_some(),
                        "{what}: {} block {b} fails authentication but was fsynced and not written since",
                        md.name
                    );
                    seen.torn.insert((md.name.clone(), b as u64));
                }
            }
        }
    }
}

/// Runs `kmsfs fsck --json` on an unmounted volume: every problem must be a bad tag or
/// torn tail on a block written since its file's last fsync, and every block the mount
/// found torn must be among them.
fn check_fsck(kms: &Path, backing: &Path, models: &[Model], seen: &Seen, what: &str) -> usize {
    let out = fsmount::run_fsck(kms, backing, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: fsck: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut found = BTreeSet::new();
    for p in v["problems"].as_array().unwrap() {
        let path = p["path"].as_str().unwrap().to_owned();
        let kind = p["kind"].as_str().unwrap();
        let b = p["block"].as_u64();
        let md = models.iter().find(|m| m.name == path);
        let dirty = md.is_some_and(|m| b.is_some_and(|b| m.dirty.contains_key(&(b as usize))));
        // Unsynced appended data that never reached the disk reads as zeros (the power
        // cut kept the new length but not the data): fsck warns, the mount reads zeros.
        let past_durable = seen.lost_appends_allowed
            && md.is_some_and(|m| b.is_some_and(|b| b as usize * BS >= m.durable.len()));
        // A crash between an append's new blocks and its re-seal of the old last block, in
        // the order a power cut may keep them, leaves the file ending at a block sealed as
        // not last, or in a hole: fsck names both (the final-block flag, docs/FORMAT.md).
        let ok = dirty
            && (matches!(kind, "bad-tag" | "torn-tail" | "not-final" | "hole-at-end")
                || (kind == "zero-block" && past_durable));
        assert!(
            ok,
            "{what}: fsck reports a problem on data that was fsynced: {p}"
        );
        if kind != "zero-block" {
            found.insert((path, b.unwrap_or(0)));
        }
    }
    let missed: Vec<_> = seen.torn.difference(&found).collect();
    assert!(
        missed.is_empty(),
        "{what}: torn blocks fsck did not report: {missed:?}\n{v:#}"
    );
    let warnings = v["warnings"].as_u64().unwrap_or(0);
    let want = if !found.is_empty() {
        4
    } else if warnings > 0 {
        2
    } else {
        0
    };
    assert_eq!(out.status.code(), Some(want), "{what}: {v:#}");
    found.len()
}

/// Brings every file back to a known state after a check: truncate (a torn tail makes a
/// file unwritable until it is truncated), rewrite the model's current content, fsync.
fn reset(m: &Mounted, models: &mut [Model]) {
    for md in models.iter_mut() {
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.p(&md.name))
            .unwrap();
        f.write_all_at(&md.cur, 0).unwrap();
        f.sync_all().unwrap();
        md.synced();
    }
}

/// The files: three overwritten in place, one appended to.
fn initial(m: &Mounted, rng: &mut Rng) -> Vec<Model> {
    let mut models = Vec::new();
    for (i, size) in [64 * BS, 64 * BS, 7 * BS + 1000, 3000]
        .into_iter()
        .enumerate()
    {
        let name = if i == 3 {
            "log".to_owned()
        } else {
            format!("f{i}")
        };
        let data = rng.bytes(size);
        let f = File::create(m.p(&name)).unwrap();
        f.write_all_at(&data, 0).unwrap();
        f.sync_all().unwrap();
        models.push(Model::new(&name, data));
    }
    File::open(&m.mnt).unwrap().sync_all().unwrap();
    models
}

/// One random step on the models and the files: an overwrite (aligned or not, up to
/// 64 KiB), an append to `log`, or an fsync. Errors end the writer (the daemon died).
fn step(files: &[File], models: &mut [Model], rng: &mut Rng) -> std::io::Result<()> {
    let i = rng.below(models.len() as u64) as usize;
    let md = &mut models[i];
    match rng.below(10) {
        0 => {
            files[i].sync_all()?;
            md.synced();
        }
        _ if md.name == "log" => {
            let n = 1 + rng.below(20_000) as usize;
            let data = rng.bytes(n);
            let off = md.cur.len();
            md.write(off, &data);
            files[i].write_all_at(&data, off as u64)?;
        }
        _ => {
            let len = md.cur.len();
            let n = (1 + rng.below(64 * 1024) as usize).min(len);
            let mut off = rng.below((len - n + 1) as u64) as usize;
            if rng.below(2) == 0 {
                off -= off % BS;
            }
            let n = n.min(len - off);
            let data = rng.bytes(n);
            md.write(off, &data);
            files[i].write_all_at(&data, off as u64)?;
        }
    }
    Ok(())
}

fn open_all(m: &Mounted, models: &[Model]) -> Vec<File> {
    models
        .iter()
        .map(|md| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(m.p(&md.name))
                .unwrap()
        })
        .collect()
}

#[test]
fn kill9_during_writes_loses_no_fsynced_block_and_fsck_names_the_torn_ones() {
    let rounds = 20;
    let (seed, mut rng) = seeded("kill9");
    let mut m = Mounted::new(&[]);
    let mut models = initial(&m, &mut rng);
    // The success the kills interrupt: an orderly unmount leaves a clean volume.
    let clean = |m: &mut Mounted, models: &[Model], what: &str| {
        m.unmount();
        check_fsck(&m.kms, &m.backing, models, &Seen::default(), what);
    };
    clean(&mut m, &models, "before any kill");
    m.mount(&[]).unwrap();
    let (mut torn_total, mut bytes, mut writes_total) = (0, 0, 0u64);
    for round in 0..rounds {
        let what = format!("kill -9 round {round} (seed {seed})");
        let stop = Arc::new(AtomicBool::new(false));
        let files = open_all(&m, &models);
        let mut ms = models.clone();
        let mut wrng = Rng(rng.next() | 1);
        let st = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                if step(&files, &mut ms, &mut wrng).is_err() {
                    break;
                }
                n += 1;
            }
            (ms, n)
        });
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        let pid = m.pid().expect("daemon pid") as i32;
        // SAFETY: killing the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        stop.store(true, Ordering::Relaxed);
        let _ = fsmount::sh(&format!("umount -l {} || true", m.mnt.display()));
        let (ms, n) = writer.join().unwrap();
        models = ms;
        writes_total += n;
        m.unmount(); // reaps the killed daemon
        m.mount(&[]).expect("remount after kill -9");
        let mut seen = Seen::default();
        check_mounted(&m, &models, &mut seen, &what);
        m.unmount();
        torn_total += check_fsck(&m.kms, &m.backing, &models, &seen, &what);
        bytes += seen.bytes_verified;
        m.mount(&[]).unwrap();
        reset(&m, &mut models);
    }
    clean(&mut m, &models, "after the last reset");
    eprintln!(
        "kill -9: {rounds} crashes survived, {writes_total} operations, {bytes} bytes verified \
         after the crashes, {torn_total} torn blocks (all written at the kill, all named by fsck)"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fsmount::sh(&format!("cp -a {}/. {}", from.display(), to.display()));
}

#[test]
fn power_loss_drops_unsynced_writes_at_any_sector_and_keeps_fsynced_blocks() {
    let rounds = 16;
    let (seed, mut rng) = seeded("power-loss");
    let m = Mounted::new(&[]);
    let mut models = initial(&m, &mut rng);
    let backing_of = |md: &Model| fs::read(m.b(&md.name)).unwrap();
    // S: each backing file as of its file's last fsync.
    let mut snap: Vec<Vec<u8>> = models.iter().map(backing_of).collect();
    let (mut torn_total, mut bytes, mut intact_new) = (0, 0u64, 0u64);
    for round in 0..rounds {
        let what = format!("power-loss round {round} (seed {seed})");
        let files = open_all(&m, &models);
        for _ in 0..(5 + rng.below(60)) {
            let before: Vec<usize> = models.iter().map(|x| x.dirty.len()).collect();
            step(&files, &mut models, &mut rng).unwrap();
            // An fsync that emptied a dirty set: that file's S moves on.
            for (i, md) in models.iter().enumerate() {
                if md.dirty.is_empty() && before[i] > 0 {
                    snap[i] = backing_of(md);
                }
            }
        }
        drop(files);
        // The power cut: C is what the daemon wrote; the disk keeps a random mix of S and C.
        let crash: Vec<Vec<u8>> = models.iter().map(backing_of).collect();
        let dir = m.dir.path().join(format!("cut{round}"));
        fs::create_dir(&dir).unwrap();
        copy_dir(&m.backing, &dir);
        let grain = if rng.below(2) == 0 { 512 } else { BS };
        let p_new = [10, 50, 90][rng.below(3) as usize];
        for (i, md) in models.iter().enumerate() {
            fs::write(
                dir.join(&md.name),
                mix(&snap[i], &crash[i], grain, p_new, &mut rng),
            )
            .unwrap();
        }
        let mut seen = Seen {
            lost_appends_allowed: true,
            ..Seen::default()
        };
        {
            let cut = Mounted::existing(&m.kms, &dir, &[]).expect("mount the power-cut volume");
            check_mounted(&cut, &models, &mut seen, &what);
        }
        torn_total += check_fsck(&m.kms, &dir, &models, &seen, &what);
        bytes += seen.bytes_verified;
        intact_new +=
            models.iter().map(|md| md.dirty.len() as u64).sum::<u64>() - seen.torn.len() as u64;
        fs::remove_dir_all(&dir).unwrap();
        // The live volume goes on from C, made durable.
        for md in models.iter_mut() {
            File::open(m.p(&md.name)).unwrap().sync_all().unwrap();
            md.synced();
        }
        snap = models.iter().map(backing_of).collect();
    }
    eprintln!(
        "power loss: {rounds} cuts survived, {bytes} bytes verified, {torn_total} torn blocks \
         (all unsynced, all named by fsck), {intact_new} unsynced blocks intact (old or new)"
    );
    assert!(
        torn_total > 0,
        "the simulation never tore a block: it tests nothing"
    );
}

/// A real power cut on a real disk: the backing directory on a loop-mounted ext4, and the
/// disk after the cut a copy of its image taken while everything is still mounted (what the
/// kernel has not written back yet is lost, as in a cut). What was made durable through the
/// mount the way a careful application does it — a new file fsynced and its directory
/// fsynced, a file replaced by a rename and the directory fsynced, an overwrite fsynced —
/// is there after journal recovery, on a plain-names and on an encrypted-names volume
/// (where a new directory's IV must be durable too). Writes never fsynced are only
/// written, so that the cut has something to lose.
#[test]
fn a_real_power_cut_keeps_what_was_made_durable_through_the_mount() {
    for names in [&[][..], &["--encrypt-names"][..]] {
        let what = if names.is_empty() {
            "plain names"
        } else {
            "encrypted names"
        };
        let t = tempfile::tempdir().unwrap();
        let kms = t.path().join("kms");
        let disk = LoopDisk::new(&t.path().join("disk.img"), &t.path().join("disk"), 128);
        let backing = disk.at.join("vol");
        fs::create_dir(&backing).unwrap();
        fsmount::init_volume(&kms, &backing, names);
        let mut durable: Vec<(String, Vec<u8>)> = Vec::new();
        let cut = {
            let m = Mounted::existing(&kms, &backing, &[]).unwrap();
            let sync_dir = |rel: &str| File::open(m.p(rel)).unwrap().sync_all().unwrap();
            // Made durable before the cut.
            fs::create_dir(m.p("kept")).unwrap();
            sync_dir("");
            for i in 0..20u64 {
                let (rel, data) = (
                    format!("kept/f{i}"),
                    fsmount::pattern(i, 1000 + 3000 * i as usize),
                );
                let mut f = File::create(m.p(&rel)).unwrap();
                std::io::Write::write_all(&mut f, &data).unwrap();
                f.sync_all().unwrap();
                durable.push((rel, data));
            }
            sync_dir("kept");
            let new = fsmount::pattern(99, 50_000);
            fs::write(m.p("kept/replaced.tmp"), &new).unwrap();
            File::open(m.p("kept/replaced.tmp"))
                .unwrap()
                .sync_all()
                .unwrap();
            fs::rename(m.p("kept/replaced.tmp"), m.p("kept/f0")).unwrap();
            sync_dir("kept");
            durable[0].1 = new;
            let f = OpenOptions::new().write(true).open(m.p("kept/f5")).unwrap();
            let patch = fsmount::pattern(55, 5000);
            f.write_all_at(&patch, 4000).unwrap();
            f.sync_data().unwrap();
            durable[5].1[4000..9000].copy_from_slice(&patch);
            // Only written: the cut may lose them.
            fs::create_dir(m.p("lost")).unwrap();
            for i in 0..20u64 {
                fs::write(
                    m.p(&format!("lost/f{i}")),
                    fsmount::pattern(100 + i, 20_000),
                )
                .unwrap();
            }
            disk.cut(&t.path().join("cut.img"), &t.path().join("cut"))
        };
        let m = Mounted::existing(&kms, &cut.at.join("vol"), &[])
            .unwrap_or_else(|e| panic!("{what}: the volume after the cut does not mount: {e}"));
        for (rel, data) in &durable {
            let got =
                fs::read(m.p(rel)).unwrap_or_else(|e| panic!("{what}: after the cut, {rel}: {e}"));
            assert!(&got == data, "{what}: after the cut, {rel} differs");
        }
        let lost = fs::read_dir(m.p("lost")).map_or(0, |d| 20 - d.count());
        eprintln!(
            "{what}: {} durable files intact after the cut; {lost} of the 20 unsynced files missing",
            durable.len()
        );
    }
}

//! Many entries through a mount whose daemon may hold 1,024 fds (soft and hard, so
//! raising the limit cannot hide anything): tar, `ls -lR`, `du -s`, `find -exec`, `rm -rf`
//! with no error, while the daemon's open fds, read from /proc every 100 ms, stay under
//! its budget. Once as an ordinary user (fusermount3, no file handles) with 101,450
//! entries, once as root without CAP_DAC_READ_SEARCH (no `open_by_handle_at`: every inode
//! reached by name) with 20,290 entries: the same code path (no file handles), still about
//! 40 times the fd budget, in a fifth of the time.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
#[path = "common/user.rs"]
mod user;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fsmount::paths_in;
use user::{open_fds, peak_rss_kib, User};

/// The daemon's default fd budget (`-o max_fds`, src/fuse/inodes.rs).
const BUDGET: usize = 512;

/// A tree to extract: its shape (for tests/common/make_tree_tar.py) and its tar and
/// manifest, made once per test binary.
struct Tree {
    /// TOP directories, each of SUB directories of FILES files, SYMLINKS symlinks and
    /// HARDLINKS hard links.
    shape: [&'static str; 5],
    made: OnceLock<(PathBuf, String, usize)>,
}

/// 50 × 26 directories of 70 files, 4 symlinks and 3 hard links each: 101,450 entries.
static FULL: Tree = Tree {
    shape: ["50", "26", "70", "4", "3"],
    made: OnceLock::new(),
};

/// 10 × 26 directories of the same: 20,290 entries, about 40 times the fd budget.
static SMALL: Tree = Tree {
    shape: ["10", "26", "70", "4", "3"],
    made: OnceLock::new(),
};

impl Tree {
    /// The tar, the manifest's `sha256sum` lines, and the number of entries.
    fn tar(&self) -> &(PathBuf, String, usize) {
        self.made.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!(
                "kmsfs-tree-{}-{}",
                std::process::id(),
                self.shape.join("x")
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let (tar, man) = (dir.join("tree.tar"), dir.join("manifest"));
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/make_tree_tar.py");
            let st = Command::new("python3")
                .arg(script)
                .arg(&tar)
                .arg(&man)
                .args(self.shape)
                .status()
                .unwrap();
            assert!(st.success());
            Command::new("chmod")
                .args(["-R", "a+rX"])
                .arg(&dir)
                .status()
                .unwrap();
            let m = std::fs::read_to_string(&man).unwrap();
            let entries = m
                .lines()
                .find_map(|l| l.strip_prefix("# entries "))
                .unwrap()
                .parse()
                .unwrap();
            let sums: String = m
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            (tar, sums, entries)
        })
    }
}

/// Removes a directory tree when dropped (also when the test fails).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Samples a process's open fds every 100 ms until dropped; the most seen.
struct FdWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FdWatch {
    fn start(pid: u32) -> FdWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(open_fds(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        FdWatch {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
            .chars()
            .take(2000)
            .collect::<String>(),
        String::from_utf8_lossy(&o.stderr)
            .chars()
            .take(4000)
            .collect::<String>()
    )
}

/// Extracts `tree` in `mnt` and works on it through `run` (a shell as the mounting user),
/// asserting no step fails or prints an error.
fn workload(tree: &Tree, run: &dyn Fn(&str) -> Output, mnt: &Path, pid: u32) {
    let (tar, sums, entries) = tree.tar();
    // Each tree is extracted once: its tar (100 MiB for FULL) goes when the test ends.
    let _tar_dir = RemoveOnDrop(tar.parent().unwrap().to_path_buf());
    let m = mnt.display();
    let watch = FdWatch::start(pid);
    let step = |name: &str, cmd: &str| -> String {
        let o = run(cmd);
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{name} failed (daemon fds seen so far: {}): {}",
            watch.max(),
            text(&o)
        );
        eprintln!("{name}: ok (daemon fds so far at most {})", watch.max());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    step("tar xf", &format!("cd {m} && tar xf {}", tar.display()));
    let stats = step("kmsfs stats", &format!("kmsfs stats --json {m}"));
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let inodes = v["inodes"].as_u64().unwrap();
    // The kernel keeps far more inodes than the daemon may hold fds.
    assert!(inodes > 10 * BUDGET as u64, "only {inodes} live inodes");
    let listed = step("ls -lR", &format!("cd {m} && ls -lR . | grep -c '^[-dl]'"));
    assert_eq!(
        listed.trim().parse::<usize>().unwrap(),
        *entries,
        "ls -lR entries"
    );
    let du = step("du -s", &format!("du -s {m}"));
    assert!(
        du.split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let got = step(
        "find -exec sha256sum",
        &format!("cd {m} && find . -type f -exec sha256sum {{}} + | sort -k2"),
    );
    if got != *sums {
        let n = got.lines().zip(sums.lines()).position(|(a, b)| a != b);
        panic!(
            "contents differ from the tar (first at line {n:?}: {:?} vs {:?}); {} vs {} files",
            n.and_then(|n| got.lines().nth(n)),
            n.and_then(|n| sums.lines().nth(n)),
            got.lines().count(),
            sums.lines().count()
        );
    }
    step("rm -rf", &format!("cd {m} && rm -rf t*"));
    let left = step("ls -A", &format!("ls -A {m}"));
    assert_eq!(left.trim(), "", "left after rm -rf");
    let max = watch.max();
    drop(watch);
    eprintln!(
        "{entries} entries, {inodes} live inodes after tar; daemon fds at most {max} (budget {BUDGET}); peak RSS {} KiB",
        peak_rss_kib(pid)
    );
    assert!(max > 0, "no fd sample of pid {pid}");
    assert!(max <= BUDGET, "the daemon held {max} fds (budget {BUDGET})");
}

fn pid_of(out: &str) -> u32 {
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no daemon pid in {out:?}"))
}

/// A mount of the test user's, unmounted (as the user) on drop.
struct UserMount<'u> {
    user: &'u User,
    dir: PathBuf,
    plain: PathBuf,
    log: PathBuf,
}

impl Drop for UserMount<'_> {
    fn drop(&mut self) {
        if fsmount::is_mounted(&self.plain) {
            let _ = self
                .user
                .sh(&format!("kmsfs umount {}", self.plain.display()));
        }
        if fsmount::is_mounted(&self.plain) {
            let _ = self
                .user
                .sh(&format!("fusermount3 -uz {}", self.plain.display()));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn an_ordinary_user_works_100k_entries_under_1024_fds() {
    let u = User::get();
    let d = u.tempdir("scale");
    let m = UserMount {
        user: &u,
        plain: d.join("plain"),
        log: d.join("daemon.log"),
        dir: d.clone(),
    };
    let enc = d.join("enc");
    u.sh_ok(&format!(
        "mkdir {e} {p} && kmsfs mount --log-file {l} {e} {p}",
        e = enc.display(),
        p = m.plain.display(),
        l = m.log.display()
    ));
    let pid = pid_of(&u.sh_ok(&format!(
        "getfattr --only-values -n user.kmsfs.pid {}",
        m.plain.display()
    )));
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        nofile.split_whitespace().filter(|w| *w == "1024").count() == 2,
        "{nofile}"
    );
    let run = |cmd: &str| u.sh(cmd);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        workload(&FULL, &run, &m.plain, pid)
    }));
    let logged = std::fs::read_to_string(&m.log).unwrap_or_default();
    if let Err(e) = r {
        eprintln!("daemon log:\n{logged}");
        std::panic::resume_unwind(e);
    }
    assert!(
        logged.contains("file handles unusable"),
        "the user's daemon had file handles?\n{logged}"
    );
}

#[test]
fn root_without_file_handles_works_20k_entries_under_1024_fds() {
    let d = tempfile::Builder::new()
        .prefix("kmsfs-scale")
        .tempdir()
        .unwrap();
    let [kms, enc, plain] = paths_in(d.path(), ["kms", "enc", "plain"]);
    let log = d.path().join("daemon.log");
    std::fs::create_dir_all(&enc).unwrap();
    std::fs::create_dir_all(&plain).unwrap();
    let out = Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .args([
            "setpriv",
            "--inh-caps=-dac_read_search",
            "--bounding-set=-dac_read_search",
        ])
        .arg(env!("CARGO_BIN_EXE_kmsfs"))
        .arg("--kms")
        .arg(&kms)
        .args(["mount", "--log-file"])
        .arg(&log)
        .arg(&enc)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let pid = pid_of(&fsmount::getxattr(&plain, "user.kmsfs.pid").unwrap());
    let bin = Path::new(env!("CARGO_BIN_EXE_kmsfs"))
        .parent()
        .unwrap()
        .to_owned();
    let run = |cmd: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin:/usr/sbin:/sbin", bin.display()),
            )
            .output()
            .unwrap()
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        workload(&SMALL, &run, &plain, pid)
    }));
    let _ = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .arg("umount")
        .arg(&plain)
        .status();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    if r.is_err() {
        eprintln!("daemon log:\n{logged}");
    }
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    assert!(
        logged.contains("file handles unusable"),
        "the daemon had file handles (CAP_DAC_READ_SEARCH not dropped?)\n{logged}"
    );
}

//! Test helper for the filesystem tests: a real kmsfs mount in a temp dir, on the
//! embedded KMS, that is always unmounted (Drop), also when the test fails.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The kmsfs binary under test.
pub fn kmsfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmsfs"))
}

/// `dir`/NAME for each of `names`: the paths a test lays out in its scratch directory.
pub fn paths_in<const N: usize>(dir: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|n| dir.join(n))
}

/// The kmsfs command on the KMS store `kms` (`kmsfs --kms KMS …`).
pub fn kmsfs_on(kms: &Path) -> Command {
    let mut c = kmsfs();
    c.arg("--kms").arg(kms);
    c
}

/// A mounted volume.
pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub kms: PathBuf,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Runs the daemon (`prlimit … setpriv …`), else nothing: see [`Mounted::without_handles`].
    launcher: &'static [&'static str],
}

/// The daemon as an ordinary user's is, but as root: no `CAP_DAC_READ_SEARCH` (so no
/// `open_by_handle_at`: every inode reached by name) and 1,024 fds, soft and hard.
pub const NO_HANDLES: &[&str] = &[
    "prlimit",
    "--nofile=1024:1024",
    "setpriv",
    "--inh-caps=-dac_read_search",
    "--bounding-set=-dac_read_search",
];

/// Whether `p` is a mountpoint (its device differs from its parent's).
pub fn is_mounted(p: &Path) -> bool {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.to_string_lossy().to_string();
    s.lines()
        .any(|l| l.split(' ').nth(4).map(|m| m == want).unwrap_or(false))
}

impl Mounted {
    /// A fresh volume, mounted with extra args (e.g. `["-o", "allow_other"]`).
    pub fn new(extra: &[&str]) -> Mounted {
        Mounted::launched(&[], extra)
    }

    /// A fresh volume mounted by a daemon without file handles and with 1,024 fds
    /// ([`NO_HANDLES`]).
    pub fn without_handles(extra: &[&str]) -> Mounted {
        Mounted::launched(NO_HANDLES, extra)
    }

    fn launched(launcher: &'static [&'static str], extra: &[&str]) -> Mounted {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-test")
            .tempdir()
            .expect("tempdir");
        let kms = dir.path().join("kms");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let log = dir.path().join("daemon.log");
        let mut m = Mounted {
            dir,
            kms,
            backing,
            mnt,
            log,
            child: None,
            launcher,
        };
        m.mount(extra).expect("mount");
        m
    }

    /// Mounts an existing backing dir with an existing KMS store.
    pub fn existing(kms: &Path, backing: &Path, extra: &[&str]) -> Result<Mounted, String> {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-test")
            .tempdir()
            .expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let log = dir.path().join("daemon.log");
        let mut m = Mounted {
            dir,
            kms: kms.to_owned(),
            backing: backing.to_owned(),
            mnt,
            log,
            child: None,
            launcher: &[],
        };
        m.mount(extra)?;
        Ok(m)
    }

    /// Mounts `backing` with the `kmsfs kms serve` at `url` as its KMS, credentials given
    /// in the environment as a host would give them (set once per test process).
    pub fn remote(url: &str, backing: &Path, extra: &[&str], id: &str, key: &str) -> Mounted {
        static CREDENTIALS: std::sync::Once = std::sync::Once::new();
        CREDENTIALS.call_once(|| {
            std::env::remove_var("KMSFS_KMS_CREDENTIALS");
            std::env::set_var("TENCENTCLOUD_SECRET_ID", id);
            std::env::set_var("TENCENTCLOUD_SECRET_KEY", key);
        });
        Mounted::existing(Path::new(url), backing, extra)
            .unwrap_or_else(|e| panic!("kmsfs mount via {url}: {e}"))
    }

    /// (Re)mounts in the foreground (`mount -f`) and waits until the mount is live.
    pub fn mount(&mut self, extra: &[&str]) -> Result<(), String> {
        let logf = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match self.launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_kmsfs"));
                c
            }
            None => kmsfs(),
        };
        let mut child = cmd
            .arg("--kms")
            .arg(&self.kms)
            .arg("mount")
            .arg("-f")
            .arg(&self.backing)
            .arg(&self.mnt)
            .args(extra)
            .env("KMSFS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        loop {
            if is_mounted(&self.mnt) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("daemon exited {st}: {}", self.log_text()));
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("mount timed out: {}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmounts and waits for the daemon to exit.
    pub fn unmount(&mut self) {
        if is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(mut c) = self.child.take() {
            let t0 = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if t0.elapsed() > Duration::from_secs(10) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// A path inside the backing dir.
    pub fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }

    /// The opening of a tamper test: a fresh default mount holding one file `f` of `len`
    /// [`pattern`] bytes (seed `seed`): the mount, those bytes, and `f`'s backing file
    /// opened read-write ([`Mounted::raw`]).
    pub fn with_file_f(seed: u64, len: usize) -> (Mounted, Vec<u8>, File) {
        let m = Mounted::new(&[]);
        let data = pattern(seed, len);
        std::fs::write(m.p("f"), &data).unwrap();
        let raw = m.raw("f");
        (m, data, raw)
    }

    /// A backing file opened read-write, to tamper with behind the daemon's back.
    pub fn raw(&self, rel: &str) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.b(rel))
            .unwrap()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Runs a KMS action on this test's key store, in-process (the daemon sees the
    /// change: the store is shared through its directory).
    pub fn kms_call(&self, action: &str, params: serde_json::Value) -> serde_json::Value {
        use kms_core::Kms;
        let k = kms_core::KmsService::open(&self.kms).expect("open the test KMS store");
        k.call(&kms_core::CallContext::local(), action, &params)
            .unwrap_or_else(|e| panic!("{action}: {e}"))
    }

    /// The volume's CMK id from its config.
    pub fn cmk(&self) -> String {
        let s = std::fs::read_to_string(self.b("kmsfs.conf")).unwrap();
        let body = s.lines().next().unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["cmk"].as_str().unwrap().to_owned()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The backing size of a plaintext size (4096-byte blocks, 40 bytes overhead, 1024 header).
pub fn backing_size(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    1024 + (plain / 4096) * 4136
        + if !plain.is_multiple_of(4096) {
            plain % 4096 + 40
        } else {
            0
        }
}

/// The backing file's size.
pub fn bsize(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().size()
}

/// Runs `cmd`, asserting it exits 0 (the message shows its output); its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `kmsfs --kms KMS fsck EXTRA… BACKING` (it exits non-zero on findings, so no
/// assertion here); its output.
pub fn run_fsck(kms: &Path, backing: &Path, extra: &[&str]) -> std::process::Output {
    kmsfs_on(kms)
        .arg("fsck")
        .args(extra)
        .arg(backing)
        .output()
        .unwrap()
}

/// Runs `cmd` in sh as uid/gid 65534 (nobody) with no supplementary groups.
pub fn as_nobody(cmd: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .output()
        .unwrap()
}

/// Runs a shell command, asserting success; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out = run_ok(Command::new("sh").arg("-c").arg(cmd));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// getxattr(path, name) as a string.
pub fn getxattr(p: &Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    String::from_utf8(buf).ok()
}

/// How many successful calls of `action` the KMS audit log of store `kms` holds.
pub fn audit_count(kms: &Path, action: &str) -> usize {
    std::fs::read_to_string(kms.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"action\":\"{action}\"")) && l.contains("\"Success\""))
        .count()
}

/// `kmsfs --kms KMS init BACKING ARGS…`, asserting success.
pub fn init_volume(kms: &Path, backing: &Path, args: &[&str]) {
    let out = run_ok(
        kmsfs()
            .arg("--kms")
            .arg(kms)
            .arg("init")
            .arg(backing)
            .args(args),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("initialised volume"));
}

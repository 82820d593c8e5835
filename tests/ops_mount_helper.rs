//! Mounting the way admins do: mount(8) with `-t fuse.kmsfs` and an fstab line through
//! the `mount.fuse.kmsfs` helper, `kmsfs umount` waiting for the daemon, and the example
//! systemd units checked by `systemd-analyze verify`.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fsmount::{is_mounted, kmsfs, kmsfs_on};

const HELPER: &str = "/sbin/mount.fuse.kmsfs";

/// /sbin/mount.fuse.kmsfs installed by scripts/install-mount-helper.sh for the test;
/// Drop removes it (or puts back what was there) and unmounts what the test mounted.
struct Helper {
    previous: Option<PathBuf>,
    mounts: Vec<PathBuf>,
    /// One test at a time owns the system's helper symlink.
    _only: std::sync::MutexGuard<'static, ()>,
}

static HELPER_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Helper {
    fn install() -> Helper {
        let only = HELPER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let previous = fs::read_link(HELPER).ok();
        let out = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/install-mount-helper.sh"
        ))
        .args(["--bin", env!("CARGO_BIN_EXE_kmsfs"), "--dir", "/sbin"])
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        Helper {
            previous,
            mounts: Vec::new(),
            _only: only,
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        for m in &self.mounts {
            if is_mounted(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        let _ = fs::remove_file(HELPER);
        if let Some(p) = &self.previous {
            let _ = std::os::unix::fs::symlink(p, HELPER);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// `mount -t fuse.kmsfs BACKING MNT -o OPTS`: mount(8) runs the helper.
fn mount_t_kmsfs(backing: &Path, mnt: &Path, opts: &str) -> Output {
    run(Command::new("mount")
        .args(["-t", "fuse.kmsfs"])
        .arg(backing)
        .arg(mnt)
        .args(["-o", opts]))
}

/// `mount -o remount,HOW MNT`, which must succeed.
fn remount(mnt: &Path, how: &str) {
    let out = run(Command::new("mount")
        .args(["-o", &format!("remount,{how}")])
        .arg(mnt));
    assert!(out.status.success(), "remount,{how}: {}", text(&out));
}

/// The filesystem type of mountpoint `p` in /proc/self/mountinfo.
fn fs_type(p: &Path) -> Option<String> {
    let s = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_string_lossy();
    s.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let dash = f.iter().position(|x| *x == "-")?;
        (f[4] == want).then(|| f[dash + 1].to_owned())
    })
}

/// The daemon pid a kmsfs mount reports.
fn daemon_pid(mnt: &Path) -> i32 {
    fsmount::getxattr(mnt, "user.kmsfs.pid")
        .unwrap()
        .parse()
        .unwrap()
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn volume(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (kms, backing, mnt) = (dir.join("kms"), dir.join("enc"), dir.join("plain"));
    let out = run(kmsfs().arg("--kms").arg(&kms).arg("init").arg(&backing));
    assert!(out.status.success(), "{}", text(&out));
    fs::create_dir(&mnt).unwrap();
    (kms, backing, mnt)
}

#[test]
fn mount_t_fuse_kmsfs_and_an_fstab_line() {
    let t = tempfile::tempdir().unwrap();
    let (kms, backing, mnt) = volume(t.path());
    let mut h = Helper::install();
    h.mounts.push(mnt.clone());

    // mount -t fuse.kmsfs, with options for mount(8)/systemd that kmsfs must drop.
    let opts = format!(
        "kms={},allow_other,nofail,_netdev,x-systemd.automount,noatime",
        kms.display()
    );
    let out = mount_t_kmsfs(&backing, &mnt, &opts);
    assert!(out.status.success(), "mount -t fuse.kmsfs: {}", text(&out));
    assert!(is_mounted(&mnt));
    assert_eq!(fs_type(&mnt).as_deref(), Some("fuse.kmsfs"));
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&*mnt.to_string_lossy()))
        .unwrap();
    assert!(line.starts_with(&*backing.to_string_lossy()), "{line}");
    assert!(line.contains("allow_other"), "{line}");
    fs::write(mnt.join("hello"), b"through mount(8)").unwrap();
    let pid = daemon_pid(&mnt);
    let out = run(Command::new("umount").arg(&mnt));
    assert!(out.status.success(), "umount: {}", text(&out));
    assert!(!is_mounted(&mnt));
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the daemon outlived umount");

    // An fstab line, mounted by its mountpoint (a private fstab: /etc stays untouched).
    let fstab = t.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# kmsfs test\n{} {} fuse.kmsfs kms={},nofail,noauto 0 0\n",
            backing.display(),
            mnt.display(),
            kms.display()
        ),
    )
    .unwrap();
    let out = run(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    assert!(out.status.success(), "mount MNT from fstab: {}", text(&out));
    assert_eq!(fs_type(&mnt).as_deref(), Some("fuse.kmsfs"));
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"through mount(8)");
    let out = run(kmsfs().arg("umount").arg(&mnt));
    assert!(out.status.success(), "{}", text(&out));

    // mount(8)'s fake mode does nothing; a directory that is no volume fails with
    // mount(8)'s "mount failure" status and says what to do.
    let out = run(Command::new("mount")
        .args(["-f", "-t", "fuse.kmsfs"])
        .arg(&backing)
        .arg(&mnt)
        .args(["-o", &format!("kms={}", kms.display())]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(&mnt));
    let empty = t.path().join("not-a-volume");
    fs::create_dir(&empty).unwrap();
    let out = mount_t_kmsfs(&empty, &mnt, &format!("kms={}", kms.display()));
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    assert!(text(&out).contains("not a kmsfs volume"), "{}", text(&out));
    assert!(text(&out).contains("kmsfs init"), "{}", text(&out));
    assert!(!is_mounted(&mnt));
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}

/// Every helper option docs/OPERATIONS.md names, through mount(8); then `mount -o
/// remount,ro` (writes refused with EROFS, the daemon still serving reads) and `remount,rw`
/// (writes again), the mount's other flags kept; a clean unmount logs no warning.
#[test]
fn remount_ro_rw_and_every_helper_option_through_mount8() {
    let t = tempfile::tempdir().unwrap();
    let (kms, backing, mnt) = volume(t.path());
    let log = t.path().join("daemon.log");
    let mut h = Helper::install();
    h.mounts.push(mnt.clone());
    let opts = format!(
        "kms={},log_file={},threads=2,dek_cache_size=64,dek_cache_max_age=60,max_fds=128,noatime,nofail",
        kms.display(),
        log.display()
    );
    let out = mount_t_kmsfs(&backing, &mnt, &opts);
    assert!(
        out.status.success(),
        "mount -t fuse.kmsfs -o {opts}: {}",
        text(&out)
    );
    let stats: serde_json::Value =
        serde_json::from_str(&fsmount::getxattr(&mnt, "user.kmsfs.stats").unwrap()).unwrap();
    assert_eq!(
        stats["fd_cache_capacity"].as_u64(),
        Some(128 - 48),
        "{stats}"
    );
    assert!(log.is_file(), "log_file= wrote no log");
    let pid = daemon_pid(&mnt);
    fs::write(mnt.join("before"), b"rw").unwrap();
    // The mount's flags in /proc/mounts begin with `want`.
    let assert_flags = |want: &str| {
        let mounts = fs::read_to_string("/proc/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(&*mnt.to_string_lossy()))
            .unwrap()
            .to_owned();
        let flags = line.split(' ').nth(3).unwrap();
        assert!(flags.starts_with(want), "{flags}");
    };
    assert_flags("rw,nosuid,nodev,noatime");

    remount(&mnt, "ro");
    assert_flags("ro,nosuid,nodev,noatime");
    let e = fs::write(mnt.join("while-ro"), b"no").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert_eq!(fs::read(mnt.join("before")).unwrap(), b"rw");
    assert_eq!(daemon_pid(&mnt), pid, "remount started another daemon");

    remount(&mnt, "rw");
    assert_flags("rw,nosuid,nodev,noatime");
    fs::write(mnt.join("after"), b"rw again").unwrap();
    assert_eq!(fs::read(mnt.join("after")).unwrap(), b"rw again");

    let out = run(kmsfs().arg("umount").arg(&mnt));
    assert!(out.status.success(), "{}", text(&out));
    let logged = fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("mounted") && logged.contains("unmounted, exiting"),
        "{logged}"
    );
    assert!(
        !logged.contains("WARN"),
        "a clean unmount logged a warning:\n{logged}"
    );
}

#[test]
fn umount_returns_after_the_daemon_exited() {
    let t = tempfile::tempdir().unwrap();
    let (kms, backing, mnt) = volume(t.path());
    let out = run(kmsfs_on(&kms).arg("mount").arg(&backing).arg(&mnt));
    assert!(out.status.success(), "{}", text(&out));
    assert!(is_mounted(&mnt));
    let pid = daemon_pid(&mnt);
    assert!(alive(pid));
    fs::write(mnt.join("f"), vec![7u8; 1 << 20]).unwrap();
    let out = run(kmsfs().arg("umount").arg(&mnt));
    assert!(out.status.success(), "{}", text(&out));
    // No waiting here: kmsfs umount returned only once the daemon was gone.
    assert!(!alive(pid), "kmsfs umount returned while the daemon ran");
    assert!(!is_mounted(&mnt));
    // Unmounting what is not mounted says so and what to check.
    let out = run(kmsfs().arg("umount").arg(&mnt));
    assert!(!out.status.success());
    assert!(text(&out).contains("not mounted"), "{}", text(&out));
}

#[test]
fn systemd_units_verify() {
    let t = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    // systemd-analyze checks that ExecStart's binary exists: point it at the one under test.
    for (src, dst) in [
        ("kmsfs@.service", "kmsfs@mnt-plain.service"),
        ("mnt-plain.mount", "mnt-plain.mount"),
    ] {
        let s = fs::read_to_string(dir.join(src))
            .unwrap()
            .replace("/usr/local/bin/kmsfs", env!("CARGO_BIN_EXE_kmsfs"));
        fs::write(t.path().join(dst), s).unwrap();
    }
    let out = run(Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "./kmsfs@mnt-plain.service",
            "./mnt-plain.mount",
        ])
        .current_dir(t.path()));
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    // The check can fail: a unit whose name does not match its mountpoint is refused.
    fs::rename(
        t.path().join("mnt-plain.mount"),
        t.path().join("mnt-other.mount"),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./mnt-other.mount"])
        .current_dir(t.path()));
    assert!(!out.status.success());
}

#[test]
fn foreground_mount_notifies_systemd_when_live() {
    use std::os::unix::net::UnixDatagram;
    let t = tempfile::tempdir().unwrap();
    let (kms, backing, mnt) = volume(t.path());
    let sock_path = t.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = kmsfs_on(&kms)
        .args(["mount", "-f"])
        .arg(&backing)
        .arg(&mnt)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("no READY=1 from kmsfs mount -f");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(is_mounted(&mnt), "READY=1 before the mount was live");
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", child.id())), "{msg}");
    fs::write(mnt.join("f"), b"x").unwrap();
    let out = run(kmsfs().arg("umount").arg(&mnt));
    assert!(out.status.success(), "{}", text(&out));
    assert!(child.wait().unwrap().success());
}

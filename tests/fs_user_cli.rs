//! Every user-facing command as an ordinary user (no capabilities, 1,024 fds, mounts
//! through the setuid fusermount3, the embedded KMS in ~/.local/share/kmsfs/kms): kms
//! actions, init, mount, stats, a busy, a lazy and a dead unmount, fsck, rewrap, encrypt,
//! `-o allow_other` with and without `user_allow_other`, an fstab line with the `user`
//! option mounted through mount(8), the systemd user unit, and the messages that tell a
//! user what to do when something is missing.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
#[path = "common/user.rs"]
mod user;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::RwLock;

use user::User;

/// Taken exclusively by tests that change machine state user mounts depend on
/// (/dev/fuse's mode, /etc/fuse.conf, /etc/fstab), shared by the others.
static MACHINE: RwLock<()> = RwLock::new(());

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A directory of the user's with `enc` and `plain`, whatever is mounted there unmounted
/// (as the user) and removed on drop.
struct Work<'u> {
    u: &'u User,
    dir: PathBuf,
}

impl<'u> Work<'u> {
    fn new(u: &'u User, tag: &str) -> Work<'u> {
        let dir = u.tempdir(tag);
        u.sh_ok(&format!("cd {} && mkdir enc plain", dir.display()));
        Work { u, dir }
    }

    fn p(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        for l in std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
        {
            if let Some(m) = l.split(' ').nth(1) {
                if m.starts_with(&self.dir.display().to_string()) {
                    let _ = self.u.sh(&format!("fusermount3 -uz {m}"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process of the user's whose working directory is `dir` (which keeps its mount busy).
fn hold_busy(u: &User, dir: &str) -> std::process::Child {
    let c = Command::new("setpriv")
        .arg(format!("--reuid={}", u.uid))
        .arg(format!("--regid={}", u.uid))
        .arg("--init-groups")
        .args(["sh", "-c", &format!("cd {dir} && exec sleep 60")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    c
}

fn daemon_pid(u: &User, mnt: &str) -> u32 {
    u.sh_ok(&format!("getfattr --only-values -n user.kmsfs.pid {mnt}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_ordinary_user_runs_every_command() {
    let _g = MACHINE.read().unwrap();
    let u = User::get();
    let w = Work::new(&u, "cli");
    let (enc, plain) = (w.p("enc"), w.p("plain"));

    // The KMS, tccli style, in the user's default store.
    let alias = format!("user-{}", std::process::id());
    let created = u.sh_ok(&format!("kmsfs kms CreateKey --Alias {alias}"));
    let v: serde_json::Value = serde_json::from_str(&created).unwrap();
    let key_id = v["KeyId"].as_str().unwrap().to_owned();
    let store = u.home.join(".local/share/kmsfs/kms");
    let md = std::fs::metadata(store.join("keys.kms")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.mode() & 0o777), (u.uid, 0o600));
    let ct = u.sh_ok(&format!(
        "kmsfs kms Encrypt --KeyId alias/{alias} --Plaintext $(printf secret | base64)"
    ));
    let blob = serde_json::from_str::<serde_json::Value>(&ct).unwrap()["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    let pt = u.sh_ok(&format!("kmsfs kms Decrypt --CiphertextBlob {blob}"));
    assert!(pt.contains(&fsmount_b64("secret")), "{pt}");

    // init, mount, files, stats.
    let init = u.sh_ok(&format!("kmsfs init {enc}"));
    assert!(init.contains("initialised volume"), "{init}");
    u.sh_ok(&format!("kmsfs mount {enc} {plain}"));
    u.sh_ok(&format!(
        "cd {plain} && mkdir -p d/e && seq 1 100000 > d/e/numbers && echo hi > hello && ln -s hello link"
    ));
    let stats = u.sh_ok(&format!("kmsfs stats {plain}"));
    assert!(stats.contains("volume") && stats.contains("cmk"), "{stats}");

    // A busy mount: the message says what to do; closing the file lets it go.
    let mut busy = hold_busy(&u, &format!("{plain}/d"));
    let o = u.sh(&format!("kmsfs umount {plain}"));
    assert!(!o.status.success(), "umount of a busy mount succeeded");
    let said = out(&o);
    assert!(
        said.contains("in use")
            && said.contains("--lazy")
            && !said.contains("Operation not permitted"),
        "{said}"
    );
    assert!(fsmount::is_mounted(Path::new(&plain)));
    busy.kill().unwrap();
    busy.wait().unwrap();
    u.sh_ok(&format!("kmsfs umount {plain}"));
    assert!(!fsmount::is_mounted(Path::new(&plain)));

    // fsck, then rewrap under the user's new key, fsck again, and the files read back.
    let o = u.sh(&format!("kmsfs fsck {enc}"));
    assert!(o.status.success(), "fsck: {}", out(&o));
    let o = u.sh(&format!("kmsfs rewrap {enc} --to-key alias/{alias}"));
    assert!(o.status.success(), "rewrap: {}", out(&o));
    let o = u.sh(&format!("kmsfs fsck {enc}"));
    assert!(o.status.success(), "fsck after rewrap: {}", out(&o));
    u.sh_ok(&format!("kmsfs mount {enc} {plain}"));
    let sum = u.sh_ok(&format!(
        "seq 1 100000 | cmp - {plain}/d/e/numbers && cat {plain}/link"
    ));
    assert_eq!(sum.trim(), "hi");
    let st: serde_json::Value =
        serde_json::from_str(&u.sh_ok(&format!("kmsfs stats --json {plain}"))).unwrap();
    assert_eq!(st["cmk"].as_str(), Some(key_id.as_str()), "{st}");

    // A dead mount (the daemon killed): mount says how to clear it; umount clears it.
    let pid = daemon_pid(&u, &plain);
    kill9(pid);
    let o = u.sh(&format!("ls {plain}"));
    assert!(
        out(&o).contains("Transport endpoint is not connected"),
        "{}",
        out(&o)
    );
    let o = u.sh(&format!("kmsfs mount {enc} {plain}"));
    assert!(
        !o.status.success()
            && out(&o).contains("dead FUSE mount")
            && out(&o).contains("kmsfs umount"),
        "{}",
        out(&o)
    );
    u.sh_ok(&format!("kmsfs umount {plain}"));
    u.sh_ok(&format!("kmsfs mount {enc} {plain} && cat {plain}/hello"));

    // A lazy unmount of a busy mount: detached at once.
    let mut busy = hold_busy(&u, &format!("{plain}/d"));
    u.sh_ok(&format!("kmsfs umount --lazy {plain}"));
    assert!(!fsmount::is_mounted(Path::new(&plain)));
    busy.kill().unwrap();
    busy.wait().unwrap();

    // encrypt an existing tree of the user's into a new volume, verified, then mounted.
    let src = w.p("src");
    u.sh_ok(&format!(
        "mkdir -p {src}/a && seq 1 5000 > {src}/a/n && echo x > {src}/x && ln {src}/x {src}/a/xlink && ln -s a/n {src}/s"
    ));
    let o = u.sh(&format!("kmsfs encrypt {src} {}", w.p("enc2")));
    assert!(o.status.success(), "encrypt: {}", out(&o));
    u.sh_ok(&format!("mkdir {p2} && kmsfs mount {e2} {p2} && diff -r --no-dereference {src} {p2} && kmsfs umount {p2}", p2 = w.p("plain2"), e2 = w.p("enc2")));
}

/// `printf S | base64`.
fn fsmount_b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn kill9(pid: u32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What a user is told when a mount cannot work, each shown after the mount that works.
#[test]
fn messages_tell_an_ordinary_user_what_to_do() {
    let _g = MACHINE.write().unwrap();
    let u = User::get();
    let w = Work::new(&u, "msg");
    let (enc, plain) = (w.p("enc"), w.p("plain"));
    u.sh_ok(&format!(
        "kmsfs mount {enc} {plain} && kmsfs umount {plain}"
    ));

    // A mountpoint the user cannot write.
    let theirs = tempfile::Builder::new()
        .prefix("kmsfs-root")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        theirs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = u.sh(&format!("kmsfs mount {enc} {}", theirs.path().display()));
    assert!(!o.status.success());
    assert!(
        out(&o).contains("you cannot mount on") && out(&o).contains("mkdir ~/plain"),
        "{}",
        out(&o)
    );

    // No fusermount3 to be found.
    let bin = Path::new(env!("CARGO_BIN_EXE_kmsfs")).parent().unwrap();
    let o = u.sh(&format!(
        "env PATH={} {} mount {enc} {plain}",
        bin.display(),
        env!("CARGO_BIN_EXE_kmsfs")
    ));
    assert!(!o.status.success());
    assert!(
        out(&o).contains("fusermount3 is not installed") && out(&o).contains("fuse3"),
        "{}",
        out(&o)
    );

    // /dev/fuse not open to users.
    let restore = || {
        Command::new("chmod")
            .args(["0666", "/dev/fuse"])
            .status()
            .unwrap();
    };
    Command::new("chmod")
        .args(["0600", "/dev/fuse"])
        .status()
        .unwrap();
    let o = u.sh(&format!("kmsfs mount {enc} {plain}"));
    restore();
    assert!(!o.status.success());
    assert!(
        out(&o).contains("/dev/fuse is not readable and writable by you")
            && out(&o).contains("chmod 0666 /dev/fuse"),
        "{}",
        out(&o)
    );
    assert!(!fsmount::is_mounted(Path::new(&plain)));
}

/// /etc/fuse.conf and /etc/fstab changed for one test and put back as they were.
struct EtcFile {
    path: &'static str,
    was: Option<Vec<u8>>,
}

impl EtcFile {
    fn append(path: &'static str, line: &str) -> EtcFile {
        let was = std::fs::read(path).ok();
        let mut now = was.clone().unwrap_or_default();
        if !now.is_empty() && !now.ends_with(b"\n") {
            now.push(b'\n');
        }
        now.extend_from_slice(line.as_bytes());
        now.push(b'\n');
        std::fs::write(path, now).unwrap();
        EtcFile { path, was }
    }
}

impl Drop for EtcFile {
    fn drop(&mut self) {
        match &self.was {
            Some(b) => std::fs::write(self.path, b).unwrap(),
            None => {
                let _ = std::fs::remove_file(self.path);
            }
        }
    }
}

#[test]
fn allow_other_and_an_fstab_user_mount() {
    let _g = MACHINE.write().unwrap();
    let u = User::get();
    let w = Work::new(&u, "etc");
    let (enc, plain) = (w.p("enc"), w.p("plain"));
    // Others may traverse to the mountpoint.
    Command::new("chmod")
        .args([
            "o+x",
            &u.home.display().to_string(),
            &w.dir.display().to_string(),
        ])
        .status()
        .unwrap();
    u.sh_ok(&format!(
        "kmsfs mount {enc} {plain} && echo open > {plain}/open && echo mine > {plain}/mine && chmod 600 {plain}/mine && chmod 755 {plain} && kmsfs umount {plain}"
    ));

    // Without user_allow_other: refused, and the message says what to ask for.
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    assert!(
        !conf.lines().any(|l| l.trim() == "user_allow_other"),
        "fuse.conf already allows it"
    );
    let o = u.sh(&format!("kmsfs mount -o allow_other {enc} {plain}"));
    assert!(!o.status.success());
    assert!(
        out(&o).contains("user_allow_other") && out(&o).contains("/etc/fuse.conf"),
        "{}",
        out(&o)
    );
    // Without allow_other, nobody else (not even root) sees in.
    u.sh_ok(&format!("kmsfs mount {enc} {plain}"));
    let o = fsmount::as_nobody(&format!("cat {plain}/open"));
    assert!(
        !o.status.success(),
        "another user read a mount without allow_other"
    );
    u.sh_ok(&format!("kmsfs umount {plain}"));
    {
        let _conf = EtcFile::append("/etc/fuse.conf", "user_allow_other");
        u.sh_ok(&format!("kmsfs mount -o allow_other {enc} {plain}"));
        let o = fsmount::as_nobody(&format!("cat {plain}/open"));
        assert_eq!(out(&o).trim(), "open");
        // default_permissions comes with it: the mode still decides.
        let o = fsmount::as_nobody(&format!("cat {plain}/mine"));
        assert!(
            !o.status.success() && out(&o).contains("Permission denied"),
            "{}",
            out(&o)
        );
        let o = fsmount::as_nobody(&format!("echo x > {plain}/new"));
        assert!(!o.status.success());
        u.sh_ok(&format!("kmsfs umount {plain}"));
    }

    // An fstab line with `user`: the user mounts and unmounts it with mount(8)/umount(8)
    // (through the mount helper, which finds the user's default KMS with no HOME set).
    let helper = Path::new("/sbin/mount.fuse.kmsfs");
    let had_helper = helper.exists();
    let st = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/install-mount-helper.sh"
    ))
    .arg("--bin")
    .arg(env!("CARGO_BIN_EXE_kmsfs"))
    .status()
    .unwrap();
    assert!(st.success());
    let r = std::panic::catch_unwind(|| {
        let _fstab = EtcFile::append(
            "/etc/fstab",
            &format!("{enc} {plain} fuse.kmsfs user,noauto 0 0"),
        );
        u.sh_ok(&format!("mount {plain}"));
        assert!(fsmount::is_mounted(Path::new(&plain)));
        let got = u.sh_ok(&format!("cat {plain}/mine"));
        assert_eq!(got.trim(), "mine");
        let line = std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .find(|l| l.contains(&plain))
            .unwrap()
            .to_owned();
        assert!(
            line.contains(&format!("user_id={}", u.uid))
                && line.contains("nosuid")
                && line.contains("nodev"),
            "{line}"
        );
        u.sh_ok(&format!("umount {plain}"));
        assert!(!fsmount::is_mounted(Path::new(&plain)));
    });
    if !had_helper {
        let _ = std::fs::remove_file(helper);
    }
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// The systemd user unit of contrib/systemd is valid (`systemd-analyze --user verify`,
/// with ExecStart pointing at the binary under test).
#[test]
fn the_systemd_user_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/user/kmsfs@.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("%h") && text.contains("WantedBy=default.target"),
        "not a user unit"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_kmsfs");
    std::fs::write(
        dir.path().join("kmsfs@.service"),
        text.replace("%h/.cargo/bin/kmsfs", bin),
    )
    .unwrap();
    let inst = dir.path().join("kmsfs@secret.service");
    std::os::unix::fs::symlink("kmsfs@.service", &inst).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&inst)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let said = out(&o);
    assert!(
        o.status.success() && !said.contains("kmsfs@"),
        "systemd-analyze verify: {said}"
    );
}

//! Test helper: an ordinary user (no capabilities, 1,024 fds, mounts through the setuid
//! fusermount3) who runs kmsfs commands, as most people do.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::fsmount::run_ok as run;

/// The account the tests use; made once, kept between runs.
pub const USER: &str = "kmsfs-user";

/// An ordinary user with a home, able to mount (`/dev/fuse` 0666, as Debian ships it).
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub home: PathBuf,
}

impl User {
    /// The test user, made if missing, with `/dev/fuse` usable by all.
    pub fn get() -> User {
        if Command::new("id")
            .arg(USER)
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            // Several tests may race to create it: one wins, the others find it.
            let _ = Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", USER])
                .output();
        }
        let id = run(Command::new("id").args(["-u", USER]));
        let uid: u32 = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
        let home = PathBuf::from(format!("/home/{USER}"));
        assert!(home.is_dir(), "{} has no home", USER);
        run(Command::new("chmod").args(["0666", "/dev/fuse"]));
        User {
            name: USER,
            uid,
            home,
        }
    }

    /// A fresh directory of the user's under their home.
    pub fn tempdir(&self, tag: &str) -> PathBuf {
        let d = self
            .home
            .join(format!("t-{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        run(Command::new("chown").arg(self.name).arg(&d));
        d
    }

    /// `sh -c CMD` as the user, in a login-like environment (HOME, no XDG_DATA_HOME: the
    /// embedded KMS lands in ~/.local/share/kmsfs/kms), with the kmsfs under test first on
    /// PATH, no capabilities and the fd limit of most distributions (1,024, soft and hard).
    pub fn sh(&self, cmd: &str) -> Output {
        let bin = Path::new(env!("CARGO_BIN_EXE_kmsfs")).parent().unwrap();
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .arg("--init-groups")
            .arg("--inh-caps=-all")
            .args(["prlimit", "--nofile=1024:1024"])
            .args(["env", "-i"])
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={}", self.name))
            .arg(format!(
                "PATH={}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                bin.display()
            ))
            .arg("LANG=C.UTF-8")
            .args(["sh", "-c", cmd])
            .current_dir(&self.home)
            .output()
            .unwrap()
    }

    /// [`User::sh`], asserting exit 0; its stdout.
    pub fn sh_ok(&self, cmd: &str) -> String {
        let out = self.sh(cmd);
        assert!(
            out.status.success(),
            "as {}: {cmd}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut b)
    });
    u64::from_le_bytes(b) % 1_000_000
}

/// The open fds of process `pid` (from /proc, outside the daemon).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The peak RSS of process `pid` in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

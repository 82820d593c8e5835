//! Shared by the tests/kms_http*.rs tests: the real `kmsfs kms serve` binary on
//! 127.0.0.1 (port 0), a temporary store, and a guard that always stops the server.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The principal every test server knows (env principal when no config is given).
pub const SECRET_ID: &str = "AKIDkmsfsTestAdmin";
/// Its key.
pub const SECRET_KEY: &str = "kmsfs-test-admin-secret-key";

/// Writes a principals config in `dir`: the admin ([`SECRET_ID`], allowed everything)
/// followed by `more` (further `[[principal]]` tables); returns its path.
pub fn write_principals(dir: &Path, more: &str) -> PathBuf {
    let path = dir.join("principals.toml");
    let text = format!(
        "[[principal]]\nsecret_id = \"{SECRET_ID}\"\nsecret_key = \"{SECRET_KEY}\"\n\n{more}"
    );
    std::fs::write(&path, text).expect("write the principals config");
    path
}

/// A running `kmsfs kms serve`; dropping it kills the process.
pub struct ServerProc {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Where the server's stderr (its per-request log) goes.
    pub log: PathBuf,
}

impl ServerProc {
    /// Starts the server on `store` with an optional principals config; `log` receives
    /// stderr (appended, so a restarted server adds to it).
    pub fn start(store: &Path, config: Option<&Path>, log: &Path) -> ServerProc {
        ServerProc::start_on("127.0.0.1:0", store, config, log)
    }

    /// As [`ServerProc::start`], listening on `listen` (e.g. the port a killed server had).
    pub fn start_on(listen: &str, store: &Path, config: Option<&Path>, log: &Path) -> ServerProc {
        ServerProc::start_env(listen, store, config, log, &[])
    }

    /// As [`ServerProc::start_on`], with more environment variables.
    pub fn start_env(
        listen: &str,
        store: &Path,
        config: Option<&Path>,
        log: &Path,
        env: &[(&str, &str)],
    ) -> ServerProc {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the server log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsfs"));
        cmd.arg("--kms")
            .arg(store)
            .args(["kms", "serve", "--listen", listen])
            .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
            .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "info")
            .env_remove("KMSFS_KMS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().expect("start kmsfs kms serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let url = match (read, line.trim().strip_prefix("listening on ")) {
            (Ok(_), Some(url)) => url.to_owned(),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kmsfs kms serve did not start (stdout {line:?}); its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        };
        let addr = url.trim_start_matches("http://").to_owned();
        ServerProc {
            child: Some(child),
            url,
            addr,
            log: log.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// kill -9, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit; returns the exit status code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// The server's log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Log lines of requests with this action, principal and outcome code.
pub fn count_requests(lines: &[String], action: &str, principal: &str, outcome: &str) -> usize {
    let (a, p, o) = (
        format!("action={action} "),
        format!("principal={principal} "),
        format!("outcome={outcome} "),
    );
    lines
        .iter()
        .filter(|l| l.contains(&a) && l.contains(&p) && l.contains(&o))
        .count()
}

/// A program the test needs, or a failure that says how to install it.
pub fn require_program(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run scripts/install-kms-clients.sh (it installs tccli, \
         tencentcloud-sdk-python and pycryptodome from PyPI)"
    );
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

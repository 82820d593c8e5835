//! Shared by the tests/kms_*.rs tests that talk to a real server or a real client: the
//! real `kmsfs kms serve` binary on 127.0.0.1 (port 0), a temporary store, a guard that
//! always stops the server, the principals file, a configured tccli, the Python SDK
//! scripts, openssl (with the kms-core tests, kms-core/tests/common/programs.rs), and a
//! `RemoteKms` for the admin principal.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kms_core::http::tc3::SecretKey;
use kms_core::http::{RemoteConfig, RemoteKms, RetryPolicy};
use kms_core::{CallContext, Kms as _};
use serde_json::{json, Value};

#[path = "../../kms-core/tests/common/programs.rs"]
mod programs;
// Each test uses some of them (as with `dead_code` above).
#[allow(unused_imports)]
pub use programs::{assert_success, openssl, openssl_encrypt_to_public_key_bin};

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

/// A server as [`ServerProc::in_dir`] (no principals config) in a new temporary
/// directory; keep the directory alive as long as the server (declare it first).
pub fn server_in_tmp() -> (tempfile::TempDir, ServerProc) {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProc::in_dir(tmp.path(), None);
    (tmp, server)
}

/// A running `kmsfs kms serve`; dropping it kills the process.
pub struct ServerProc {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (`https://` with a certificate).
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Where the server's stderr (its per-request log) goes.
    pub log: PathBuf,
    /// Its key store.
    pub store: PathBuf,
    /// What it was started with besides the address, for [`ServerProc::again_on`].
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl ServerProc {
    /// Starts the server on `store` with an optional principals config; `log` receives
    /// stderr (appended, so a restarted server adds to it).
    pub fn start(store: &Path, config: Option<&Path>, log: &Path) -> ServerProc {
        ServerProc::start_on("127.0.0.1:0", store, config, log)
    }

    /// The server on `dir/store`, its log in `dir/server.log`, with an optional
    /// principals config (the usual setup of a test).
    pub fn in_dir(dir: &Path, config: Option<&Path>) -> ServerProc {
        ServerProc::start(&dir.join("store"), config, &dir.join("server.log"))
    }

    /// As [`ServerProc::start`], listening on `listen` (e.g. the port a killed server had).
    pub fn start_on(listen: &str, store: &Path, config: Option<&Path>, log: &Path) -> ServerProc {
        ServerProc::start_with(listen, store, config, log, &[], &[])
    }

    /// As [`ServerProc::start_on`], with more environment variables and more arguments to
    /// `kms serve` (e.g. `--cert`).
    pub fn start_with(
        listen: &str,
        store: &Path,
        config: Option<&Path>,
        log: &Path,
        env: &[(&str, &str)],
        args: &[&str],
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
            .args(args)
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
            store: store.to_owned(),
            config: config.map(Path::to_path_buf),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// A new server as this one was started (store, config, log, environment and
    /// arguments), listening on `listen`: after a kill, on a new port or on the old one.
    pub fn again_on(&self, listen: &str) -> ServerProc {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        ServerProc::start_with(
            listen,
            &self.store,
            self.config.as_deref(),
            &self.log,
            &env,
            &args,
        )
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

/// `kmsfs --kms KMS kms ARGS…` (`KMS` a store or a server's URL), to be run.
pub fn kms_cli(kms: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsfs"));
    cmd.arg("--kms").arg(kms).arg("kms").args(args);
    cmd
}

/// The JSON a `kmsfs kms` command printed, which must have succeeded.
pub fn ok_json(out: &Output) -> Value {
    assert_success("kmsfs kms", out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The call context of a remote client (the server fills in the principal).
pub fn ctx() -> CallContext {
    CallContext {
        principal: String::new(),
        request_id: String::new(),
    }
}

/// A `RemoteKms` on `url` signing as `id` / `key`, with `retry`.
pub fn client(url: &str, id: &str, key: &str, retry: RetryPolicy) -> RemoteKms {
    let mut cfg = RemoteConfig::new(url, id, SecretKey::new(key));
    cfg.retry = retry;
    RemoteKms::new(cfg).unwrap()
}

/// A `RemoteKms` on `url` signing as the admin ([`SECRET_ID`]), default retries.
pub fn admin(url: &str) -> RemoteKms {
    client(url, SECRET_ID, SECRET_KEY, RetryPolicy::default())
}

/// CreateKey with `alias` through `kms`; the new key id.
pub fn create_key(kms: &RemoteKms, alias: &str) -> String {
    let v = kms
        .call(&ctx(), "CreateKey", &json!({ "Alias": alias }))
        .unwrap();
    v["KeyId"].as_str().unwrap().to_owned()
}

/// tccli in a temporary HOME, with the endpoint configured once as KMS-API.md says.
/// Commands run back to back, as a script runs them: tccli does not sign the action, so
/// two calls with one body in one second carry one signature, and the server serves both
/// (docs/SERVER.md, "Replay").
pub struct Tccli<'a> {
    home: &'a Path,
}

impl<'a> Tccli<'a> {
    /// tccli with its own HOME, its region and the endpoint set once (KMS-API.md).
    pub fn configured(home: &'a Path, server: &ServerProc) -> Tccli<'a> {
        std::fs::create_dir_all(home).unwrap();
        let t = Tccli { home };
        for args in [
            ["configure", "set", "region", "ap-guangzhou"],
            [
                "configure",
                "set",
                "kms.endpoint",
                &format!("http://{}", server.addr),
            ],
        ] {
            assert!(t.raw(&args).status.success(), "tccli {args:?}");
        }
        t
    }

    /// `tccli ARGS…` as the admin; its output, whatever the status.
    pub fn raw(&self, args: &[&str]) -> Output {
        Command::new("tccli")
            .args(args)
            .env("HOME", self.home)
            .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
            .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
            .env_remove("TENCENTCLOUD_REGION")
            .output()
            .expect("run tccli")
    }

    /// `tccli kms ACTION ARGS…`, which must succeed; its JSON output.
    pub fn ok(&self, action: &str, args: &[&str]) -> Value {
        let mut all = vec!["kms", action];
        all.extend_from_slice(args);
        let out = self.raw(&all);
        assert!(
            out.status.success(),
            "tccli kms {action} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "tccli kms {action}: output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `tccli kms ACTION ARGS…`, which must fail with `code`.
    pub fn fails(&self, action: &str, args: &[&str], code: &str) {
        let mut all = vec!["kms", action];
        all.extend_from_slice(args);
        let out = self.raw(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("code:{code} ")),
            "tccli kms {action} {args:?}: expected {code}; status {:?}, stdout {}, stderr {stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Python modules the test needs (`import_line`, e.g. `"import a, b"`), or a failure
/// that says `missing`.
pub fn require_python_modules(import_line: &str, missing: &str) {
    require_program("python3");
    let ok = Command::new("python3")
        .args(["-c", import_line])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{missing}");
}

/// tencentcloud-sdk-python and pycryptodome, or a failure that says how to install them.
pub fn require_tencent_sdk() {
    require_python_modules(
        "import tencentcloud.kms.v20190118.kms_client, Crypto.Cipher.AES",
        "tencentcloud-sdk-python or pycryptodome is not installed: run scripts/install-kms-clients.sh",
    );
}

/// Runs `tests/clients/SCRIPT` with the Tencent SDK against `server` as the admin
/// (`KMS_ENDPOINT`), with `envs`; it must succeed; its stdout.
pub fn python_client(script: &str, server: &ServerProc, envs: &[(&str, &str)]) -> String {
    let out = Command::new("python3")
        .arg(repo().join("tests/clients").join(script))
        .env("KMS_ENDPOINT", &server.addr)
        .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
        .envs(envs.iter().copied())
        .output()
        .expect("run python3");
    assert_success(script, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

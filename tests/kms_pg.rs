//! Two real `kmsfs kms serve` on one real PostgreSQL (a throwaway cluster made with
//! Debian's `postgresql` package: initdb + pg_ctl on a temporary directory and a free
//! port on 127.0.0.1, as the `postgres` user when run as root), driven by the real
//! HTTP client: keys made on A are used on B, DisableKey on A refuses Decrypt on B at
//! once, conflicting changes racing through A and B leave one outcome, and a restarted
//! PostgreSQL is reconnected to by the servers themselves.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
mod kms_http_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use kms_core::http::tc3::SecretKey;
use kms_core::http::{FailoverKms, RemoteConfig, RemoteKms};
use kms_core::{ErrorCode, Kms};
use kms_http_support::{admin as client, create_key, ctx, ServerProc, SECRET_ID, SECRET_KEY};
use serde_json::{json, Value};

/// A PostgreSQL cluster in a temporary directory, stopped (immediately) on drop.
struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run scripts/install-deps.sh")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl PgCluster {
    fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the cluster directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = PgCluster {
            bin,
            data,
            port,
            _dir: dir,
        };
        c.run(
            "initdb",
            &[
                "-D",
                c.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        c.pg_ctl("start");
        c
    }

    /// Runs a PostgreSQL program as the cluster's owner; panics with its output on failure.
    fn run(&self, prog: &str, args: &[&str]) {
        let path = self.bin.join(prog);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        fsmount::run_ok(cmd.args(args).current_dir("/").stdin(Stdio::null()));
    }

    fn pg_ctl(&self, action: &str) {
        let opts = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log");
        let mut args = vec![
            action,
            "-D",
            self.data.to_str().unwrap(),
            "-w",
            "-m",
            "fast",
        ];
        if action != "stop" {
            args.extend(["-o", &opts, "-l", log.to_str().unwrap()]);
        }
        self.run("pg_ctl", &args);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "sh" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec!["-c", "exec \"$0\" \"$@\""]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["stop", "-D", self.data.to_str().unwrap(), "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// CreateKey `alias` through `kms`, then Encrypt "hello" under it; the CiphertextBlob.
fn key_with_blob(kms: &RemoteKms, alias: &str) -> String {
    kms.call(&ctx(), "CreateKey", &json!({ "Alias": alias }))
        .unwrap();
    kms.call(
        &ctx(),
        "Encrypt",
        &json!({ "KeyId": format!("alias/{alias}"), "Plaintext": "aGVsbG8=" }),
    )
    .unwrap()["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Two servers on one database, sharing one root key file.
struct Pair {
    a: ServerProc,
    b: ServerProc,
    _tmp: tempfile::TempDir,
    pg: PgCluster,
}

fn start_server(pg_url: &str, tmp: &Path, name: &str) -> ServerProc {
    let root_key = tmp.join("root.key");
    let home = tmp.join(name);
    std::fs::create_dir_all(&home).unwrap();
    ServerProc::start_with(
        "127.0.0.1:0",
        Path::new(pg_url),
        None,
        &tmp.join(format!("{name}.log")),
        &[
            ("KMSFS_KMS_ROOT_KEY", root_key.to_str().unwrap()),
            ("XDG_DATA_HOME", home.to_str().unwrap()),
        ],
        &[],
    )
}

fn pair() -> Pair {
    let pg = PgCluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = start_server(&pg.url(), tmp.path(), "a");
    let b = start_server(&pg.url(), tmp.path(), "b");
    Pair {
        a,
        b,
        _tmp: tmp,
        pg,
    }
}

fn code(r: Result<Value, kms_core::KmsError>) -> Result<Value, ErrorCode> {
    r.map_err(|e| e.code)
}

#[test]
fn keys_made_on_a_serve_on_b_and_disable_on_a_refuses_on_b_at_once() {
    let p = pair();
    let (a, b) = (client(&p.a.url), client(&p.b.url));
    let key = create_key(&a, "shared");
    let dk = a
        .call(
            &ctx(),
            "GenerateDataKey",
            &json!({ "KeyId": "alias/shared", "KeySpec": "AES_256" }),
        )
        .unwrap();
    let blob = dk["CiphertextBlob"].as_str().unwrap().to_owned();
    // B knows the key A made, by id and by alias, and decrypts what A wrapped.
    let d = b
        .call(&ctx(), "DescribeKey", &json!({ "KeyId": "alias/shared" }))
        .unwrap();
    assert_eq!(d["KeyMetadata"]["KeyId"], key.as_str());
    let pt = b
        .call(&ctx(), "Decrypt", &json!({ "CiphertextBlob": blob }))
        .unwrap();
    assert_eq!(pt["Plaintext"], dk["Plaintext"]);
    // DisableKey on A: the very next Decrypt on B is refused.
    a.call(&ctx(), "DisableKey", &json!({ "KeyId": key }))
        .unwrap();
    let refused = code(b.call(&ctx(), "Decrypt", &json!({ "CiphertextBlob": blob })));
    assert_eq!(
        refused.unwrap_err(),
        ErrorCode::ResourceUnavailableCmkDisabled
    );
    // And EnableKey on B serves it again on A.
    b.call(&ctx(), "EnableKey", &json!({ "KeyId": key }))
        .unwrap();
    let pt = a
        .call(&ctx(), "Decrypt", &json!({ "CiphertextBlob": blob }))
        .unwrap();
    assert_eq!(pt["Plaintext"], dk["Plaintext"]);
}

/// Runs `fa` against A and `fb` against B at the same moment; returns both results.
fn race(
    p: &Pair,
    fa: impl FnOnce(&RemoteKms) -> Result<Value, ErrorCode> + Send,
    fb: impl FnOnce(&RemoteKms) -> Result<Value, ErrorCode> + Send,
) -> (Result<Value, ErrorCode>, Result<Value, ErrorCode>) {
    let (a, b) = (client(&p.a.url), client(&p.b.url));
    let go = Arc::new(Barrier::new(2));
    std::thread::scope(|s| {
        let g = Arc::clone(&go);
        let ha = s.spawn(move || {
            g.wait();
            fa(&a)
        });
        let g = Arc::clone(&go);
        let hb = s.spawn(move || {
            g.wait();
            fb(&b)
        });
        (ha.join().unwrap(), hb.join().unwrap())
    })
}

#[test]
fn conflicting_changes_through_a_and_b_leave_one_outcome() {
    const ROUNDS: usize = 6;
    let p = pair();
    let admin = client(&p.a.url);
    for round in 0..ROUNDS {
        // Two CreateKey with one alias: exactly one wins, the other is told the alias exists.
        let alias = format!("race-{round}");
        let create = |alias: String| {
            move |k: &RemoteKms| code(k.call(&ctx(), "CreateKey", &json!({ "Alias": alias })))
        };
        let (ra, rb) = race(&p, create(alias.clone()), create(alias.clone()));
        let wins: Vec<_> = [&ra, &rb].into_iter().filter(|r| r.is_ok()).collect();
        assert_eq!(wins.len(), 1, "round {round}: {ra:?} {rb:?}");
        let lost = if ra.is_ok() { &rb } else { &ra };
        assert_eq!(
            lost.as_ref().unwrap_err(),
            &ErrorCode::InvalidParameterValueAliasAlreadyExists
        );
        let key = wins[0].as_ref().unwrap()["KeyId"]
            .as_str()
            .unwrap()
            .to_owned();

        // Two RotateKey: one rotation (at most one per 24 h), two versions.
        let rotate = |key: String| {
            move |k: &RemoteKms| code(k.call(&ctx(), "RotateKey", &json!({ "KeyId": key })))
        };
        let (ra, rb) = race(&p, rotate(key.clone()), rotate(key.clone()));
        assert_eq!(
            usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
        let lost = if ra.is_ok() { &rb } else { &ra };
        assert_eq!(lost.as_ref().unwrap_err(), &ErrorCode::LimitExceeded);

        // DisableKey racing ScheduleKeyDeletion (which needs a disabled key): either
        // Disable ran first and the key is pending deletion, or Schedule ran first, was
        // refused, and the key is disabled; never a mix.
        let k1 = key.clone();
        let k2 = key.clone();
        let (rd, rs) = race(
            &p,
            move |k| code(k.call(&ctx(), "DisableKey", &json!({ "KeyId": k1 }))),
            move |k| {
                code(k.call(
                    &ctx(),
                    "ScheduleKeyDeletion",
                    &json!({ "KeyId": k2, "PendingWindowInDays": 7 }),
                ))
            },
        );
        assert!(rd.is_ok(), "round {round}: DisableKey {rd:?}");
        let d = admin
            .call(&ctx(), "DescribeKey", &json!({ "KeyId": key }))
            .unwrap();
        let state = d["KeyMetadata"]["KeyState"].as_str().unwrap().to_owned();
        match rs {
            Ok(_) => assert_eq!(state, "PendingDelete", "round {round}"),
            Err(e) => {
                assert_eq!(
                    e,
                    ErrorCode::ResourceUnavailableCmkShouldBeDisabled,
                    "round {round}"
                );
                assert_eq!(state, "Disabled", "round {round}");
            }
        }
    }
    // One key per alias, seen alike through both servers.
    let list = |k: &RemoteKms| {
        let v = k
            .call(&ctx(), "ListKeys", &json!({ "Limit": 200 }))
            .unwrap();
        let mut ids: Vec<String> = v["Keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["KeyId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let (la, lb) = (list(&admin), list(&client(&p.b.url)));
    assert_eq!(la.len(), ROUNDS);
    assert_eq!(la, lb);
}

#[test]
fn servers_reconnect_to_a_restarted_database_by_themselves() {
    let p = pair();
    let (a, b) = (client(&p.a.url), client(&p.b.url));
    let blob = key_with_blob(&a, "before");
    p.pg.pg_ctl("restart");
    // Both servers lost their connection; the next requests (with the client's
    // bounded retries of InternalError) reconnect and serve.
    for k in [&a, &b] {
        let pt = k
            .call(&ctx(), "Decrypt", &json!({ "CiphertextBlob": blob }))
            .unwrap();
        assert_eq!(pt["Plaintext"], "aGVsbG8=");
    }
    b.call(&ctx(), "CreateKey", &json!({ "Alias": "after" }))
        .unwrap();
    let d = a
        .call(&ctx(), "DescribeKey", &json!({ "KeyId": "alias/after" }))
        .unwrap();
    assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
}

#[test]
fn a_server_killed_under_load_fails_clients_and_a_mount_over_to_the_other() {
    const CLIENTS: usize = 3;
    const OPS_AFTER_KILL: usize = 15;
    const CAP: usize = 500;
    let mut p = pair();
    let both = format!("{},{}", p.a.url, p.b.url);
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let mount = fsmount::Mounted::remote(
        &both,
        &backing,
        &["--dek-policy", "per-file"],
        SECRET_ID,
        SECRET_KEY,
    );
    std::fs::write(mount.p("before"), b"written before the kill").unwrap();
    let admin = client(&p.a.url);
    let key = create_key(&admin, "load");

    let ops = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let acked = Mutex::new(Vec::<String>::new());
    let files = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let (ops, killed, failures, acked, key, both) =
                (&ops, &killed, &failures, &acked, &key, &both);
            s.spawn(move || {
                // The client lists A first: every request goes to A until it dies.
                let k = FailoverKms::new(RemoteConfig::new(
                    both,
                    SECRET_ID,
                    SecretKey::new(SECRET_KEY),
                ))
                .unwrap();
                let mut after = 0;
                for i in 0..CAP {
                    let was_killed = killed.load(Ordering::SeqCst);
                    let r = k
                        .call(
                            &ctx(),
                            "GenerateDataKey",
                            &json!({ "KeyId": key, "KeySpec": "AES_256" }),
                        )
                        .and_then(|dk| {
                            let pt = k.call(
                                &ctx(),
                                "Decrypt",
                                &json!({ "CiphertextBlob": dk["CiphertextBlob"] }),
                            )?;
                            assert_eq!(pt["Plaintext"], dk["Plaintext"]);
                            Ok(())
                        })
                        .and_then(|()| {
                            if i % 5 == 0 {
                                let alias = format!("c{t}-{i}");
                                let v =
                                    match k.call(&ctx(), "CreateKey", &json!({ "Alias": alias })) {
                                        // CreateKey is not idempotent: when A committed it and
                                        // died before answering, the client's retry on B finds
                                        // the alias (which only this request uses) taken. The
                                        // key is there; it is acknowledged through its alias.
                                        Err(e) if e.to_string().contains("AliasAlreadyExists") => {
                                            let d = k.call(
                                                &ctx(),
                                                "DescribeKey",
                                                &json!({ "KeyId": format!("alias/{alias}") }),
                                            )?;
                                            d["KeyMetadata"].clone()
                                        }
                                        r => r?,
                                    };
                                acked
                                    .lock()
                                    .unwrap()
                                    .push(v["KeyId"].as_str().unwrap().to_owned());
                            }
                            Ok(())
                        });
                    if let Err(e) = r {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("client {t} op {i}: {e}"));
                    }
                    ops.fetch_add(1, Ordering::SeqCst);
                    if was_killed {
                        after += 1;
                        if after >= OPS_AFTER_KILL {
                            break;
                        }
                    }
                }
            });
        }
        {
            let (killed, failures, files, mount) = (&killed, &failures, &files, &mount);
            s.spawn(move || {
                let mut after = 0;
                for i in 0..CAP {
                    let was_killed = killed.load(Ordering::SeqCst);
                    let name = format!("f{i}");
                    let data = format!("file {i} through the mount");
                    let r = std::fs::write(mount.p(&name), data.as_bytes())
                        .and_then(|()| std::fs::read(mount.p(&name)))
                        .map(|back| assert_eq!(back, data.as_bytes()));
                    match r {
                        Ok(()) => {
                            files.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("mount {name}: {e}")),
                    }
                    if was_killed {
                        after += 1;
                        if after >= OPS_AFTER_KILL {
                            break;
                        }
                    }
                }
            });
        }
        // Kill A under load: after the clients have done some work through it.
        while ops.load(Ordering::SeqCst) < 10 * CLIENTS {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        p.a.kill9();
        killed.store(true, Ordering::SeqCst);
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "requests failed beyond their retries: {failures:#?}"
    );
    // Every acknowledged key is served by the survivor; the mount read and created files.
    let b = client(&p.b.url);
    let acked = acked.into_inner().unwrap();
    assert!(!acked.is_empty());
    for id in &acked {
        let d = b
            .call(&ctx(), "DescribeKey", &json!({ "KeyId": id }))
            .unwrap();
        assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
    }
    assert!(files.load(Ordering::SeqCst) >= OPS_AFTER_KILL);
    assert_eq!(
        std::fs::read(mount.p("before")).unwrap(),
        b"written before the kill"
    );
    // A served before it died; B took over, the mount's new file included.
    use kms_http_support::count_requests;
    assert!(count_requests(&p.a.log_lines(), "GenerateDataKey", SECRET_ID, "OK") > 0);
    let on_b = || count_requests(&p.b.log_lines(), "GenerateDataKey", SECRET_ID, "OK");
    let before = on_b();
    assert!(before > 0);
    std::fs::write(mount.p("after"), b"created on the survivor").unwrap();
    assert_eq!(
        on_b(),
        before + 1,
        "the mount's GenerateDataKey did not reach B"
    );
    drop(mount);
}

impl PgCluster {
    /// Runs one SQL statement with psql (over TCP, as `postgres`); returns its output.
    fn psql(&self, sql: &str) -> String {
        let out = fsmount::run_ok(
            Command::new(self.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-At",
                    "-c",
                    sql,
                ])
                .stdin(Stdio::null()),
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// `kmsfs kms ARGS` with `env`, no KMS environment inherited; returns (exit code, stdout, stderr).
fn kmsfs_kms(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .arg("kms")
        .args(args)
        .env_remove("KMSFS_KMS")
        .env_remove("KMSFS_KMS_STORE")
        .env_remove("KMSFS_KMS_ROOT_KEY")
        .env_remove("KMSFS_KMS_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_servers_write_one_audit_chain_in_the_database_and_tampering_is_found() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 25;
    let p = pair();
    let url = p.pg.url();
    let admin = client(&p.a.url);
    let key = create_key(&admin, "audited");
    // Half the clients on A, half on B, all at once.
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let server = if t % 2 == 0 { &p.a.url } else { &p.b.url };
            let key = &key;
            s.spawn(move || {
                let k = client(server);
                for _ in 0..ROUNDS {
                    let dk = k
                        .call(
                            &ctx(),
                            "GenerateDataKey",
                            &json!({ "KeyId": key, "KeySpec": "AES_256" }),
                        )
                        .unwrap();
                    k.call(
                        &ctx(),
                        "Decrypt",
                        &json!({ "CiphertextBlob": dk["CiphertextBlob"] }),
                    )
                    .unwrap();
                }
            });
        }
    });
    let lines = 1 + THREADS * ROUNDS * 2;
    // Every call is one line of one chain: seq 1..n, from both servers.
    assert_eq!(
        p.pg.psql("SELECT count(*), min(seq), max(seq) FROM kmsfs_audit")
            .trim(),
        format!("{lines}|1|{lines}")
    );
    let actions = p.pg.psql(
        "SELECT convert_from(line, 'UTF8')::json->>'action', count(*) FROM kmsfs_audit GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(
        actions.trim(),
        format!(
            "CreateKey|1\nDecrypt|{n}\nGenerateDataKey|{n}",
            n = THREADS * ROUNDS
        )
    );
    // No server wrote a local audit.log.
    assert!(!p._tmp.path().join("a/kmsfs/kms/audit.log").exists());
    assert!(!p._tmp.path().join("b/kmsfs/kms/audit.log").exists());

    let intact = format!("{lines} lines, hash chain intact");
    let (code, out, err) = kmsfs_kms(&["verify-audit", "--store", &url], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&intact), "{out}");
    // KMSFS_KMS_STORE names the database as well.
    let (code, out, _) = kmsfs_kms(&["verify-audit"], &[("KMSFS_KMS_STORE", &url)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&intact), "{out}");

    // An edited line breaks the chain at the next line.
    let edit = |from: &str, to: &str| {
        p.pg.psql(&format!(
            "UPDATE kmsfs_audit SET line = convert_to(replace(convert_from(line, 'UTF8'), '{from}', '{to}'), 'UTF8') WHERE seq = 10"
        ))
    };
    edit("\"outcome\":\"Success\"", "\"outcome\":\"Failure\"");
    let (code, out, _) = kmsfs_kms(&["verify-audit", "--store", &url], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken at seq 11"), "{out}");
    edit("\"outcome\":\"Failure\"", "\"outcome\":\"Success\"");
    let (code, out, _) = kmsfs_kms(&["verify-audit", "--store", &url], &[]);
    assert_eq!(code, 0, "restored: {out}");
    // The last line deleted: the head row still names it.
    p.pg.psql(&format!("DELETE FROM kmsfs_audit WHERE seq = {lines}"));
    let (code, out, _) = kmsfs_kms(&["verify-audit", "--store", &url], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chain head"), "{out}");
    // A line in the middle deleted: the seq is missing.
    p.pg.psql("DELETE FROM kmsfs_audit WHERE seq = 20");
    let (code, out, _) = kmsfs_kms(&["verify-audit", "--store", &url], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 20 is missing"), "{out}");
}

#[test]
fn decrypt_in_a_loop_survives_a_postgres_restart() {
    const CLIENTS: usize = 3;
    let mut p = pair();
    let admin = client(&p.a.url);
    let blob = key_with_blob(&admin, "restart");
    let restarted = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let (before, after) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let (restarted, stop, failures, before, after, blob) =
                (&restarted, &stop, &failures, &before, &after, &blob);
            let server = p.a.url.clone();
            s.spawn(move || {
                // One server; the client's default retry budget (6 attempts, 10 s).
                let k = client(&server);
                while !stop.load(Ordering::SeqCst) {
                    let was_restarted = restarted.load(Ordering::SeqCst);
                    match k.call(&ctx(), "Decrypt", &json!({ "CiphertextBlob": blob })) {
                        Ok(v) => {
                            assert_eq!(v["Plaintext"], "aGVsbG8=");
                            if was_restarted {
                                after.fetch_add(1, Ordering::SeqCst);
                            } else {
                                before.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) => failures.lock().unwrap().push(format!("client {t}: {e}")),
                    }
                }
            });
        }
        while before.load(Ordering::SeqCst) < 20 * CLIENTS {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        p.pg.pg_ctl("restart");
        restarted.store(true, Ordering::SeqCst);
        let t = std::time::Instant::now();
        while after.load(Ordering::SeqCst) < 20 * CLIENTS
            && t.elapsed() < std::time::Duration::from_secs(30)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "calls failed beyond the client's retries: {failures:#?}"
    );
    assert!(after.load(Ordering::SeqCst) >= 20 * CLIENTS);
    // The database really went away under the clients: the server answered some of
    // their attempts InternalError (which they retried), then served them again on a
    // connection it made by itself.
    let log = p.a.log_lines();
    let refused = kms_http_support::count_requests(&log, "Decrypt", SECRET_ID, "InternalError");
    assert!(
        refused > 0,
        "no Decrypt met the restart (was the database restarted?)"
    );
    // SIGTERM stops it cleanly (exit 0), its database connections closed off the
    // server's runtime.
    assert_eq!(p.a.terminate(std::time::Duration::from_secs(15)), Some(0));
    assert_eq!(p.b.terminate(std::time::Duration::from_secs(15)), Some(0));
    let (code, out, _) = kmsfs_kms(&["verify-audit", "--store", &p.pg.url()], &[]);
    assert_eq!(code, 0, "{out}");
}

/// The key records of the `keys.kms` in `dir` under the root key file `root_key`.
fn records(dir: &Path, root_key: &Path) -> Vec<kms_core::key::KeyRecord> {
    let rk = std::fs::read(root_key).unwrap();
    let root: [u8; 32] = rk[10..].try_into().unwrap();
    let bytes = std::fs::read(dir.join("keys.kms")).unwrap();
    kms_core::store::parse_store_file(&root, &bytes).unwrap()
}

fn audit_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn migrate_a_file_store_to_postgres_and_back_keeps_every_key_and_the_audit_chain() {
    let pg = PgCluster::start();
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let src_root = src.join("root.key");
    // A file store with a key in each state, a rotated key, an described key, and
    // ciphertexts made before the migration.
    let (k1, k2, k3, blob1, blob2) = {
        let kms = kms_core::KmsService::open_with(
            &src,
            kms_core::KmsOptions {
                root_key: Some(kms_core::store::RootKeySource::File(src_root.clone())),
                ..Default::default()
            },
        )
        .unwrap();
        let c = kms_core::CallContext::local();
        let call = |a: &str, p: Value| kms.call(&c, a, &p).unwrap();
        let id = |v: Value| v["KeyId"].as_str().unwrap().to_owned();
        let k1 = id(call("CreateKey", json!({ "Alias": "app" })));
        let enc = |k: &str| {
            call("Encrypt", json!({ "KeyId": k, "Plaintext": "c2VjcmV0" }))["CiphertextBlob"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let blob1 = enc(&k1);
        call("RotateKey", json!({ "KeyId": k1 }));
        let blob2 = enc(&k1);
        let k2 = id(call("CreateKey", json!({ "Alias": "old" })));
        call("DisableKey", json!({ "KeyId": k2 }));
        let k3 = id(call("CreateKey", json!({ "Alias": "gone" })));
        call("DisableKey", json!({ "KeyId": k3 }));
        call(
            "ScheduleKeyDeletion",
            json!({ "KeyId": k3, "PendingWindowInDays": 7 }),
        );
        call(
            "CreateKey",
            json!({ "Alias": "described", "Description": "a description" }),
        );
        (k1, k2, k3, blob1, blob2)
    };
    // The ciphertexts made before the migration, decrypted through a server's client.
    let decrypts_both = |k: &RemoteKms| {
        for blob in [&blob1, &blob2] {
            let pt = k
                .call(&ctx(), "Decrypt", &json!({ "CiphertextBlob": blob }))
                .unwrap();
            assert_eq!(pt["Plaintext"], "c2VjcmV0");
        }
    };
    let before = records(&src, &src_root);
    assert_eq!(before.len(), 4);
    let src_audit = audit_lines(&src);
    assert!(src_audit.len() >= 10);

    // File → PostgreSQL.
    let local = tmp.path().join("local");
    let local_env = [("XDG_DATA_HOME", local.to_str().unwrap())];
    let (code, out, err) = kmsfs_kms(
        &["migrate", "--from", src.to_str().unwrap(), "--to", &url],
        &local_env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 keys copied and verified"), "{out}");
    assert!(
        out.contains(&format!(
            "audit chain: {} lines, identical, intact",
            src_audit.len()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("KMSFS_KMS_ROOT_KEY={}", src_root.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("key {k1} alias app Enabled versions 2")),
        "{out}"
    );
    // A second run finds the database holding keys, and refuses without --force.
    let (code, out, err) = kmsfs_kms(
        &["migrate", "--from", src.to_str().unwrap(), "--to", &url],
        &local_env,
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("--force"), "{err}");
    let (code, out, err) = kmsfs_kms(
        &[
            "migrate",
            "--from",
            src.to_str().unwrap(),
            "--to",
            &url,
            "--force",
        ],
        &local_env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = kmsfs_kms(&["verify-audit", "--store", &url], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{} lines", src_audit.len())), "{out}");

    // A server on the database decrypts what was encrypted before, and sees each state.
    std::fs::copy(&src_root, tmp.path().join("root.key")).unwrap();
    {
        let server = start_server(&url, tmp.path(), "s");
        let k = client(&server.url);
        decrypts_both(&k);
        let state = |key: &str| {
            k.call(&ctx(), "DescribeKey", &json!({ "KeyId": key }))
                .unwrap()["KeyMetadata"]["KeyState"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(state(&k2), "Disabled");
        assert_eq!(state(&k3), "PendingDelete");
    }
    let server_lines = 4;

    // PostgreSQL → a new directory; the servers' root key (the local default) is
    // copied into it, so it is a store of its own.
    let local2 = tmp.path().join("local2");
    std::fs::create_dir_all(local2.join("kmsfs/kms")).unwrap();
    std::fs::copy(&src_root, local2.join("kmsfs/kms/root.key")).unwrap();
    let local2_env = [("XDG_DATA_HOME", local2.to_str().unwrap())];
    // Not into the source directory: it holds keys.
    let (code, _, err) = kmsfs_kms(
        &["migrate", "--from", &url, "--to", src.to_str().unwrap()],
        &local2_env,
    );
    assert_ne!(code, 0);
    assert!(err.contains("already holds keys"), "{err}");
    let dst = tmp.path().join("dst");
    let (code, out, err) = kmsfs_kms(
        &["migrate", "--from", &url, "--to", dst.to_str().unwrap()],
        &local2_env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read(dst.join("root.key")).unwrap(),
        std::fs::read(&src_root).unwrap()
    );
    // Every key, version, alias and state as it was; the audit chain as it was, with
    // the server's lines after it, intact.
    assert_eq!(records(&dst, &dst.join("root.key")), before);
    assert_eq!(audit_lines(&src), src_audit);
    let dst_audit = audit_lines(&dst);
    assert_eq!(dst_audit.len(), src_audit.len() + server_lines);
    assert_eq!(dst_audit[..src_audit.len()], src_audit[..]);
    let (code, out, _) = kmsfs_kms(&["verify-audit", "--store", dst.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{} lines", dst_audit.len())), "{out}");

    // A server on the migrated directory decrypts the ciphertexts made before.
    let server = ServerProc::start(&dst, None, &tmp.path().join("dst.log"));
    decrypts_both(&client(&server.url));
}

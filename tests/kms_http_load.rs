//! The real `kmsfs kms serve` under concurrent RemoteKms clients: a low rate limit that
//! every request gets through with backoff, a kill -9 under load that loses no
//! acknowledged key, a clean SIGTERM, and HTTPS. Every loop is bounded in count and
//! time, and talks only to 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod kms_http_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_core::http::tc3::SecretKey;
use kms_core::http::{RemoteConfig, RemoteKms, RetryPolicy};
use kms_core::{EncryptionContext, ErrorCode, Kms};
use kms_http_support::{
    admin, assert_success, client, count_requests, create_key, ctx, kms_cli, ok_json,
    server_in_tmp, write_principals, ServerProc, SECRET_ID, SECRET_KEY,
};
use serde_json::{json, Value};

/// Audit-log lines (the service's own record, in the store) for this principal,
/// action and outcome.
fn audited(store: &std::path::Path, principal: &str, action: &str, outcome: &str) -> usize {
    std::fs::read_to_string(store.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["principal"] == principal && v["action"] == action && v["outcome"] == outcome)
        .count()
}

#[test]
fn rate_limited_clients_all_complete_through_backoff() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 10;
    let tmp = tempfile::tempdir().unwrap();
    let config = write_principals(
        tmp.path(),
        r#"
[[principal]]
secret_id = "AKIDload"
secret_key = "load-secret"
actions = ["GenerateDataKey", "Decrypt"]
rate = 20.0
burst = 5
"#,
    );
    let server = ServerProc::in_dir(tmp.path(), Some(&config));
    let key = create_key(&admin(&server.url), "load");
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let kms = client(
                &server.url,
                "AKIDload",
                "load-secret",
                RetryPolicy {
                    max_attempts: 40,
                    max_elapsed: Duration::from_secs(60),
                    base: Duration::from_millis(50),
                    cap: Duration::from_secs(1),
                },
            );
            let key = key.clone();
            std::thread::spawn(move || {
                let ec = EncryptionContext::single("kmsfs-volume", format!("load-{t}"));
                for _ in 0..ROUNDS {
                    let dk = kms.generate_data_key(&ctx(), &key, 32, &ec).unwrap();
                    let back = kms
                        .decrypt_data_key(&ctx(), &dk.ciphertext_blob, &ec)
                        .unwrap();
                    assert_eq!(*back.plaintext, *dk.plaintext);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client thread failed");
    }
    let took = started.elapsed();
    let n = THREADS * ROUNDS;
    // Counted at the server: its request log and the service's audit log.
    let log = server.log_lines();
    assert_eq!(count_requests(&log, "GenerateDataKey", "AKIDload", "OK"), n);
    assert_eq!(count_requests(&log, "Decrypt", "AKIDload", "OK"), n);
    let throttled = count_requests(&log, "GenerateDataKey", "AKIDload", "RequestLimitExceeded")
        + count_requests(&log, "Decrypt", "AKIDload", "RequestLimitExceeded");
    assert!(
        throttled > 0,
        "the rate limit never answered RequestLimitExceeded"
    );
    assert_eq!(
        audited(&server.store, "AKIDload", "GenerateDataKey", "Success"),
        n
    );
    assert_eq!(audited(&server.store, "AKIDload", "Decrypt", "Success"), n);
    // 2n requests at 20/s with a burst of 5 cannot finish faster than the limit allows.
    let floor = Duration::from_secs_f64((2 * n - 5) as f64 / 20.0 * 0.9);
    assert!(
        took >= floor,
        "{took:?} < {floor:?}: the rate limit did not hold"
    );
    eprintln!(
        "{} requests in {took:?}, {throttled} throttled attempts",
        2 * n
    );
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_key() {
    let (_tmp, mut server) = server_in_tmp();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let kms = client(
                &server.url,
                SECRET_ID,
                SECRET_KEY,
                RetryPolicy {
                    max_attempts: 3,
                    max_elapsed: Duration::from_millis(500),
                    base: Duration::from_millis(20),
                    cap: Duration::from_millis(100),
                },
            );
            let acked = acked.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut i = 0;
                while Instant::now() < deadline {
                    i += 1;
                    let alias = format!("crash-{t}-{i}");
                    match kms.call(&ctx(), "CreateKey", &json!({ "Alias": alias })) {
                        Ok(v) => acked
                            .lock()
                            .unwrap()
                            .push(v["KeyId"].as_str().unwrap().to_owned()),
                        Err(e) => return e,
                    }
                }
                panic!("the server was never killed");
            })
        })
        .collect();
    // Let the clients create keys for a while, then crash the server mid-stream.
    let t = Instant::now();
    while acked.lock().unwrap().len() < 30 && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    for w in workers {
        let e = w.join().expect("client thread");
        assert_eq!(e.code, ErrorCode::InternalError, "{e}");
        assert!(e.message.contains("gave up after"), "{e}");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 30,
        "only {} keys before the kill",
        acked.len()
    );

    let server = server.again_on("127.0.0.1:0");
    let kms = admin(&server.url);
    for key in &acked {
        let d = kms
            .call(&ctx(), "DescribeKey", &json!({ "KeyId": key }))
            .unwrap_or_else(|e| panic!("acknowledged key {key} is gone after kill -9: {e}"));
        assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
        // And it still works.
        kms.call(
            &ctx(),
            "Encrypt",
            &json!({"KeyId": key, "Plaintext": "aGk="}),
        )
        .unwrap();
    }
    let listed = kms
        .call(&ctx(), "ListKeys", &json!({"Limit": 200}))
        .unwrap();
    assert!(listed["TotalCount"].as_u64().unwrap() >= acked.len() as u64);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let (_tmp, mut server) = server_in_tmp();
    let kms = admin(&server.url);
    create_key(&kms, "before-sigterm");
    let url = server.url.clone();
    assert_eq!(server.terminate(Duration::from_secs(15)), Some(0));
    let log = server.log_lines().join("\n");
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("stopped"),
        "{log}"
    );
    // The port is closed: a client gives up quickly with a clear error.
    let gone = client(
        &url,
        SECRET_ID,
        SECRET_KEY,
        RetryPolicy {
            max_attempts: 2,
            max_elapsed: Duration::from_secs(1),
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
        },
    );
    let e = gone.call(&ctx(), "ListKeys", &json!({})).unwrap_err();
    assert!(e.message.contains("cannot reach the KMS"), "{e}");
}

#[test]
fn https_with_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    // A private CA and a server certificate for 127.0.0.1 signed by it.
    let (ca, cert, key) = (
        tmp.path().join("ca.pem"),
        tmp.path().join("cert.pem"),
        tmp.path().join("key.pem"),
    );
    let ext = tmp.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let d = tmp.path().display().to_string();
    let script = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
           -subj /CN=kmsfs-test-ca -keyout ca.key -out ca.pem; \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr; \
         openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
           -extfile ext.cnf -out cert.pem"
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl is needed to make test certificates");
    assert_success("openssl", &out);
    let server = ServerProc::start_with(
        "127.0.0.1:0",
        &tmp.path().join("store"),
        None,
        &tmp.path().join("server.log"),
        &[],
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let url = server.url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let mut cfg = RemoteConfig::new(&url, SECRET_ID, SecretKey::new(SECRET_KEY));
    cfg.ca_file = Some(ca.clone());
    let kms = RemoteKms::new(cfg).unwrap();
    let k = create_key(&kms, "over-tls");
    let dk = kms
        .generate_data_key(&ctx(), &k, 32, &EncryptionContext::new())
        .unwrap();
    assert_eq!(dk.plaintext.len(), 32);

    // The Python SDK over HTTPS, trusting the CA.
    let out = std::process::Command::new("python3")
        .arg(kms_http_support::repo().join("tests/clients/https_sdk.py"))
        .env("KMS_ENDPOINT", url.trim_start_matches("https://"))
        .env("KMS_CA", &ca)
        .env("KMS_KEY_ID", &k)
        .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
        .output()
        .expect("python3 (scripts/install-kms-clients.sh installs the SDK)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("HTTPS OK"),
        "the Python SDK over HTTPS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the CA the client refuses the server (and does not retry a TLS failure
    // into a long wait).
    let mut cfg = RemoteConfig::new(&url, SECRET_ID, SecretKey::new(SECRET_KEY));
    cfg.retry.max_elapsed = Duration::from_secs(2);
    let untrusted = RemoteKms::new(cfg).unwrap();
    let t = Instant::now();
    let e = untrusted.call(&ctx(), "ListKeys", &json!({})).unwrap_err();
    assert!(e.message.contains("invalid peer certificate"), "{e}");
    assert!(
        !e.message.contains("gave up after"),
        "a TLS failure was retried: {e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(server);
}

#[test]
fn the_kmsfs_cli_talks_to_the_server_through_a_url() {
    let (tmp, server) = server_in_tmp();
    let cli = |args: &[&str], with_credentials: bool| {
        let mut c = kms_cli(&server.url, args);
        c.env_remove("KMSFS_KMS_CREDENTIALS")
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY");
        if with_credentials {
            c.env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
                .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY);
        }
        c.output().unwrap()
    };
    let v = ok_json(&cli(&["CreateKey", "--Alias", "from-cli"], true));
    assert_eq!(v["Alias"], "from-cli");
    let log = server.log_lines();
    assert_eq!(count_requests(&log, "CreateKey", SECRET_ID, "OK"), 1);
    // Without credentials: a clear error naming what to set, and no request sent.
    let out = cli(&["ListKeys"], false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TENCENTCLOUD_SECRET_ID"), "{err}");
    assert_eq!(
        count_requests(&server.log_lines(), "ListKeys", SECRET_ID, "OK"),
        0
    );
    // With credentials from a file named by KMSFS_KMS_CREDENTIALS.
    let creds = tmp.path().join("credentials.toml");
    std::fs::write(
        &creds,
        format!("secret_id = \"{SECRET_ID}\"\nsecret_key = \"{SECRET_KEY}\"\n"),
    )
    .unwrap();
    let out = kms_cli(&server.url, &["ListKeys"])
        .env("KMSFS_KMS_CREDENTIALS", &creds)
        .env_remove("TENCENTCLOUD_SECRET_ID")
        .env_remove("TENCENTCLOUD_SECRET_KEY")
        .output()
        .unwrap();
    assert_eq!(ok_json(&out)["TotalCount"], 1);
}

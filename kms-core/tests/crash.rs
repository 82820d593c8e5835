//! Processes killed with SIGKILL while writing the store lose nothing they
//! acknowledged and never leave a store that fails to open; two processes
//! writing at once lose no updates.
//!
//! The writer is this test binary itself, re-run with `--ignored --exact
//! writer_child` and the store directory in `KMS_TEST_WRITER_DIR`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

const ENV_DIR: &str = "KMS_TEST_WRITER_DIR";
const ENV_PREFIX: &str = "KMS_TEST_WRITER_PREFIX";
const ENV_COUNT: &str = "KMS_TEST_WRITER_COUNT";

/// The child: CreateKey in a loop, printing `ACK <KeyId>` once each returns.
#[test]
#[ignore = "run by the crash tests as a child process"]
fn writer_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let prefix = std::env::var(ENV_PREFIX).unwrap();
    let count: usize = std::env::var(ENV_COUNT).unwrap().parse().unwrap();
    let kms = kms_core::KmsService::open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    let mut i = 0;
    while count == 0 || i < count {
        let r = common::call(&kms, "CreateKey", json!({"Alias": format!("{prefix}-{i}")})).unwrap();
        writeln!(out, "ACK {}", r["KeyId"].as_str().unwrap()).unwrap();
        out.flush().unwrap();
        i += 1;
    }
}

fn spawn_writer(dir: &Path, prefix: &str, count: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_PREFIX, prefix)
        .env(ENV_COUNT, count.to_string())
        .env_remove("KMSFS_KMS_PASSPHRASE")
        .env_remove("KMSFS_KMS_ROOT_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Collects the `ACK` lines a child prints, until its stdout closes.
fn collect_acks(child: &mut Child) -> std::thread::JoinHandle<Vec<String>> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                // The harness may print "test writer_child ... " on the same line.
                l.find("ACK ").map(|i| l[i + 4..].trim().to_owned())
            })
            .collect()
    })
}

fn random_ms(lo: u64, hi: u64) -> u64 {
    let mut b = [0u8; 8];
    kms_core::crypto::random_bytes(&mut b).unwrap();
    lo + u64::from_le_bytes(b) % (hi - lo)
}

fn check_all(dir: &Path, acked: &[String]) {
    let (kms, _) = common::open(dir);
    for id in acked {
        let md = common::call(&kms, "DescribeKey", json!({"KeyId": id}))
            .unwrap_or_else(|e| panic!("acknowledged key {id} lost: {e}"));
        assert_eq!(md["KeyMetadata"]["KeyState"], "Enabled");
        let blob = common::encrypt(&kms, id, b"still here", None).unwrap();
        assert_eq!(common::decrypt(&kms, &blob, None).unwrap(), b"still here");
    }
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_key() {
    let d = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut acked = Vec::new();
    let mut rounds = 0;
    while rounds < 30 && started.elapsed() < Duration::from_secs(40) {
        let mut child = spawn_writer(d.path(), &format!("r{rounds}"), 0);
        let acks = collect_acks(&mut child);
        std::thread::sleep(Duration::from_millis(random_ms(5, 150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(acks.join().unwrap());
        rounds += 1;
        // The store opens after every kill, with every acknowledged key.
        let (kms, _) = common::open(d.path());
        let total = common::call(&kms, "ListKeys", json!({"Limit": 1})).unwrap()["TotalCount"]
            .as_u64()
            .unwrap();
        assert!(
            total as usize >= acked.len(),
            "{total} keys, {} acknowledged",
            acked.len()
        );
    }
    eprintln!("{rounds} rounds, {} acknowledged keys", acked.len());
    assert!(rounds >= 10, "only {rounds} rounds");
    assert!(!acked.is_empty(), "no writer ever acknowledged a key");
    check_all(d.path(), &acked);
    let log = std::fs::read(d.path().join("audit.log")).unwrap();
    // Killed writers may leave a torn last line, but every complete line parses.
    let complete = log
        .split(|&b| b == b'\n')
        .filter(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok())
        .count();
    assert!(complete >= acked.len());
}

#[test]
fn two_writer_processes_lose_no_update() {
    let d = tempfile::tempdir().unwrap();
    // Make the store first so both children find it.
    drop(common::open(d.path()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut children: Vec<_> = (0..2)
        .map(|w| {
            let mut c = spawn_writer(d.path(), &format!("w{w}"), 25);
            let h = collect_acks(&mut c);
            (c, h)
        })
        .collect();
    for (c, _) in children.iter_mut() {
        assert!(c.wait().unwrap().success());
    }
    for (_, h) in children {
        acked.lock().unwrap().extend(h.join().unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 50);
    let (kms, _) = common::open(d.path());
    let total = common::call(&kms, "ListKeys", json!({})).unwrap()["TotalCount"]
        .as_u64()
        .unwrap();
    assert_eq!(total, 50);
    check_all(d.path(), &acked);
    let log = std::fs::read(d.path().join("audit.log")).unwrap();
    // 50 CreateKey in the children, then ListKeys and 50 × (DescribeKey, Encrypt, Decrypt) here.
    assert_eq!(kms_core::audit::verify_chain(&log), Ok(50 + 1 + 150));
}

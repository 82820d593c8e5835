//! `kmsfs stats` after a known workload: every counter checked against a number counted
//! outside the daemon — bytes the test wrote and read, blocks and headers it tampered
//! with on disk, files it holds open, KMS calls in the KMS's audit log.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use fsmount::{audit_count, kmsfs, pattern, run_ok, Mounted};

fn stats(m: &Mounted) -> serde_json::Value {
    let out = run_ok(kmsfs().arg("stats").arg("--json").arg(&m.mnt));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// (file, block, key_id) of every "block failed authentication" line in the daemon log.
fn bad_block_lines(log: &str) -> Vec<(String, u64, String)> {
    let field = |l: &str, k: &str| {
        l.split(&format!(" {k}="))
            .nth(1)
            .map(|r| r.split(' ').next().unwrap_or("").to_owned())
    };
    log.lines()
        .filter(|l| l.contains("block failed authentication"))
        .map(|l| {
            (
                field(l, "file").unwrap(),
                field(l, "block").unwrap().parse().unwrap(),
                field(l, "key_id").unwrap(),
            )
        })
        .collect()
}

#[test]
fn stats_match_the_workload_counted_from_outside() {
    let t0 = Instant::now();
    let m = Mounted::new(&["--dek-policy", "per-file", "--dek-cache-size", "2"]);
    let cmk = m.cmk();
    let sizes = [10_000usize, 5_000, 1, 8_192, 123, 20_000];
    let mut written = 0u64;
    for (i, sz) in sizes.iter().enumerate() {
        fs::write(m.p(&format!("f{i}")), pattern(i as u64, *sz)).unwrap();
        written += *sz as u64;
    }
    let mut read = 0u64;
    for (i, sz) in sizes.iter().enumerate() {
        let d = fs::read(m.p(&format!("f{i}"))).unwrap();
        assert_eq!(d.len(), *sz);
        read += d.len() as u64;
    }
    let s = stats(&m);
    assert_eq!(n(&s, "bytes_written"), written, "{s}");
    assert_eq!(n(&s, "bytes_read"), read, "{s}");
    assert_eq!(n(&s, "integrity_failures"), 0, "{s}");

    // Tamper on disk: one byte in block 1 of f0 and in block 0 and 2 of f5; f1's header.
    let tampered: BTreeSet<(String, u64)> = [("f0", 1u64), ("f5", 0), ("f5", 2)]
        .iter()
        .map(|(f, b)| {
            let p = m.b(f);
            let off = 1024 + b * 4136 + 100;
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap();
            let mut x = [0u8];
            file.read_exact_at(&mut x, off).unwrap();
            file.write_all_at(&[x[0] ^ 0x40], off).unwrap();
            (format!("/{f}"), *b)
        })
        .collect();
    let hdr = m.b("f1");
    let mut h = fs::read(&hdr).unwrap();
    h[0] ^= 1;
    fs::write(&hdr, &h).unwrap();
    // Read the tampered blocks through the mount (fresh opens: the kernel asks the daemon).
    for (f, b) in &tampered {
        let file = fs::File::open(m.p(f.trim_start_matches('/'))).unwrap();
        let mut buf = vec![0u8; 4096];
        let e = file.read_at(&mut buf, b * 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{f} block {b}");
    }
    let e = fs::File::open(m.p("f1")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));

    // Two files held open.
    let mut a = fs::File::open(m.p("f2")).unwrap();
    let _b = fs::File::open(m.p("f3")).unwrap();
    let mut one = Vec::new();
    a.read_to_end(&mut one).unwrap();
    read += one.len() as u64;
    // FUSE releases arrive asynchronously after close: wait for the earlier ones.
    let t = Instant::now();
    let s = loop {
        let s = stats(&m);
        if n(&s, "open_files") == 2 || t.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("{}", serde_json::to_string_pretty(&s).unwrap());
    assert_eq!(n(&s, "open_files"), 2, "{s}");
    assert_eq!(n(&s, "bytes_read"), read, "{s}");
    assert_eq!(n(&s, "bytes_written"), written, "{s}");

    // Integrity: every failure logged with file (mount-relative), block and key id; the
    // logged blocks are exactly the tampered ones, and the counter counts the log lines.
    let log = m.log_text();
    let lines = bad_block_lines(&log);
    let logged: BTreeSet<(String, u64)> = lines.iter().map(|(f, b, _)| (f.clone(), *b)).collect();
    assert_eq!(logged, tampered, "{log}");
    assert!(lines.iter().all(|(_, _, k)| *k == cmk), "{log}");
    assert_eq!(n(&s, "bad_blocks"), lines.len() as u64, "{s}");
    let header_lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("cannot open file header"))
        .collect();
    assert!(!header_lines.is_empty(), "{log}");
    for l in &header_lines {
        assert!(
            l.contains("file=/f1") && l.contains(&format!("key_id={cmk}")),
            "{l}"
        );
    }
    assert_eq!(n(&s, "bad_headers"), header_lines.len() as u64, "{s}");
    assert_eq!(
        n(&s, "integrity_failures"),
        n(&s, "bad_blocks") + n(&s, "bad_headers")
    );

    // KMS calls, from the audit log: all but init's config key and the mount's unwrap
    // of it were the daemon's data-key calls. Each one inserted a distinct DEK into a
    // cache of 2: the rest were evicted.
    let kms = audit_count(&m.kms, "GenerateDataKey") + audit_count(&m.kms, "Decrypt") - 2;
    assert_eq!(n(&s, "kms_calls"), kms as u64, "{s}");
    assert_eq!(n(&s, "kms_failures"), 0, "{s}");
    assert_eq!(n(&s, "deks_generated"), sizes.len() as u64, "{s}");
    assert_eq!(n(&s, "evictions"), kms as u64 - 2, "{s}");
    assert_eq!(n(&s, "expirations"), 0, "{s}");
    let lat = &s["kms_latency"];
    assert_eq!(lat["count"].as_u64(), Some(kms as u64), "{s}");
    let (mean, p99, max) = (
        lat["mean_ms"].as_f64().unwrap(),
        lat["p99_ms"].as_f64().unwrap(),
        lat["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < mean && mean <= max && p99 <= max, "{s}");
    assert!(n(&s, "uptime_secs") <= t0.elapsed().as_secs(), "{s}");

    // The text form names the same numbers.
    let out = kmsfs().arg("stats").arg(&m.mnt).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        text.contains(&format!("bytes written   {written}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "({} bad blocks, {} bad headers)",
            lines.len(),
            header_lines.len()
        )),
        "{text}"
    );
}

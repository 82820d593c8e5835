//! Real kmsfs mounts whose KMS is a `kmsfs kms serve` on 127.0.0.1: several daemons
//! (processes, each with its own DEK cache) sharing one server, and a mount that keeps
//! serving cached DEKs while the server is down. KMS calls are counted at the server
//! (its request log), not from the daemons' own counters. Needs /dev/fuse and root,
//! like the other mount tests.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
mod kms_http_support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use fsmount::Mounted;
use kms_http_support::{count_requests, server_in_tmp, SECRET_ID, SECRET_KEY};

/// A daemon on `backing` whose KMS is the server at `url`; unmounted on drop.
fn mount(url: &str, backing: &Path, extra: &[&str]) -> Mounted {
    Mounted::remote(url, backing, extra, SECRET_ID, SECRET_KEY)
}

#[test]
fn daemons_share_one_server_and_read_what_the_others_wrote() {
    let (tmp, server) = server_in_tmp();
    let (ba, bb) = (tmp.path().join("backing-a"), tmp.path().join("backing-b"));
    fs::create_dir_all(&ba).unwrap();
    fs::create_dir_all(&bb).unwrap();

    // Two daemons at once, two volumes, one server.
    let mut a = mount(&server.url, &ba, &[]);
    let b = mount(&server.url, &bb, &[]);
    fs::write(a.p("a.txt"), b"written by daemon A").unwrap();
    fs::write(b.p("b.txt"), b"written by daemon B").unwrap();
    assert_eq!(fs::read(a.p("a.txt")).unwrap(), b"written by daemon A");
    assert_eq!(fs::read(b.p("b.txt")).unwrap(), b"written by daemon B");
    // Each volume got its CMK and its data keys from the server.
    let lines = server.log_lines();
    assert_eq!(count_requests(&lines, "CreateKey", SECRET_ID, "OK"), 2);
    assert!(count_requests(&lines, "GenerateDataKey", SECRET_ID, "OK") >= 2);

    // Another daemon (a fresh process with an empty DEK cache) on A's backing dir reads
    // what A wrote, through Decrypt at the server, and writes for A to read.
    a.unmount();
    let decrypts_before = count_requests(&server.log_lines(), "Decrypt", SECRET_ID, "OK");
    let mut c = mount(&server.url, &ba, &[]);
    assert_eq!(fs::read(c.p("a.txt")).unwrap(), b"written by daemon A");
    fs::write(c.p("c.txt"), b"written by daemon C").unwrap();
    let decrypts_after = count_requests(&server.log_lines(), "Decrypt", SECRET_ID, "OK");
    assert!(
        decrypts_after > decrypts_before,
        "daemon C read A's file without a Decrypt at the server"
    );
    c.unmount();
    a.mount(&[]).unwrap();
    assert_eq!(fs::read(a.p("c.txt")).unwrap(), b"written by daemon C");
    assert_eq!(fs::read(a.p("a.txt")).unwrap(), b"written by daemon A");
    drop(b);
}

#[test]
fn cached_deks_keep_serving_while_the_server_is_down() {
    let (tmp, mut server) = server_in_tmp();
    let backing = tmp.path().join("backing");
    fs::create_dir_all(&backing).unwrap();
    // A DEK per file; written by one daemon, then read by a fresh one (empty DEK cache)
    // that opens only f2 before the server goes away.
    let args = ["--dek-policy", "per-file"];
    let mut first = mount(&server.url, &backing, &args);
    fs::write(first.p("f1"), b"one").unwrap();
    fs::write(first.p("f2"), b"two").unwrap();
    first.unmount();
    let m = mount(&server.url, &backing, &args);
    assert_eq!(fs::read(m.p("f2")).unwrap(), b"two");

    server.kill9();
    // f2's DEK is cached: still readable with the KMS gone.
    assert_eq!(fs::read(m.p("f2")).unwrap(), b"two");
    // f1's is not: a clear error, in seconds (the client's retry budget), and a log line.
    let t = Instant::now();
    let e = fs::read(m.p("f1")).expect_err("f1 read without its DEK");
    let took = t.elapsed();
    assert!(
        matches!(e.raw_os_error(), Some(libc_eio) if libc_eio == 5 || libc_eio == 13),
        "expected EIO or EACCES, got {e}"
    );
    assert!(took < Duration::from_secs(30), "the read waited {took:?}");
    let log = m.log_text();
    assert!(
        log.contains("cannot reach the KMS"),
        "the daemon's log does not say why f1 failed:\n{log}"
    );
    eprintln!("f1: {e} after {took:?}; daemon log:\n{log}");

    // The server comes back on the same address and store: f1 reads again.
    let _server = server.again_on(&server.addr);
    assert_eq!(fs::read(m.p("f1")).unwrap(), b"one");
}

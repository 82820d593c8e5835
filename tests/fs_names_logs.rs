//! On a volume with encrypted names, no plaintext name or symlink target reaches the
//! daemon's log at any level (`KMSFS_LOG=trace`): fuser's per-request debug lines name
//! them, and are shown to do so on a plain-names volume first; long names and targets
//! (side files) neither. And `--encrypt-names`
//! cannot be asked of an existing plain-names volume.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fsmount::{is_mounted, kmsfs, run_ok};

/// Mounts a fresh volume at trace level, runs `work` in it, unmounts; the daemon's log.
fn traced(dir: &Path, extra: &[&str], work: impl FnOnce(&Path)) -> String {
    let (kms, backing, mnt, log) = (
        dir.join("kms"),
        dir.join("enc"),
        dir.join("plain"),
        dir.join("daemon.log"),
    );
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let mut child = kmsfs()
        .arg("--kms")
        .arg(&kms)
        .args(["mount", "-f"])
        .args(extra)
        .arg(&backing)
        .arg(&mnt)
        .env("KMSFS_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !is_mounted(&mnt) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no mount: {}",
            fs::read_to_string(&log).unwrap()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "daemon exited: {}",
            fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mnt)));
    run_ok(kmsfs().arg("umount").arg(&mnt));
    let _ = child.wait();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    fs::read_to_string(&log).unwrap()
}

fn names_work<'a>(names: &'a [&'a str; 4]) -> impl FnOnce(&Path) + 'a {
    move |m: &Path| {
        fs::write(m.join(names[0]), b"content").unwrap();
        fs::create_dir(m.join(names[1])).unwrap();
        std::os::unix::fs::symlink(names[2], m.join(names[1]).join("link")).unwrap();
        fs::rename(m.join(names[0]), m.join(names[1]).join(names[3])).unwrap();
        let listed: Vec<_> = fs::read_dir(m.join(names[1]))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            fs::read_link(m.join(names[1]).join("link")).unwrap(),
            Path::new(names[2])
        );
        assert!(fs::metadata(m.join("NoSuchNameFoxtrot")).is_err());
    }
}

#[test]
fn no_plaintext_name_reaches_a_trace_log_of_an_encrypted_names_volume() {
    // Control: a plain-names volume's trace log names what the requests name.
    let plain = tempfile::tempdir().unwrap();
    let names = [
        "PlainNameAlpha.txt",
        "PlainDirBravo",
        "PlainTargetCharlie",
        "PlainRenamedDelta",
    ];
    let log = traced(plain.path(), &[], names_work(&names));
    for n in names.iter().chain(&["NoSuchNameFoxtrot"]) {
        assert!(log.contains(n), "the control log does not name {n}:\n{log}");
    }

    let secret = tempfile::tempdir().unwrap();
    let names = [
        "SecretNameAlpha.txt",
        "SecretDirBravo",
        "SecretTargetCharlie",
        "SecretRenamedDelta",
    ];
    let log = traced(secret.path(), &["--encrypt-names"], names_work(&names));
    assert!(log.contains("mounted") && log.lines().count() > 10, "{log}");
    for n in names.iter().chain(&["NoSuchNameFoxtrot"]) {
        assert!(!log.contains(n), "{n} is in the log:\n{log}");
    }
}

#[test]
fn no_long_name_or_target_reaches_a_trace_log_either() {
    // Long names (side files) and a 4,000-byte target (a long link), through the same work.
    let pad = |tag: &str, n: usize| format!("{tag}{}", "z".repeat(n - tag.len()));
    let owned = [
        pad("LongSecretNameAlpha", 255),
        pad("LongSecretDirBravo", 200),
        pad("LongSecretTargetCharlie/", 4000),
        pad("LongSecretRenamedDelta", 176),
    ];
    let names = [
        owned[0].as_str(),
        owned[1].as_str(),
        owned[2].as_str(),
        owned[3].as_str(),
    ];
    let secret = tempfile::tempdir().unwrap();
    let log = traced(secret.path(), &["--encrypt-names"], names_work(&names));
    assert!(log.contains("mounted") && log.lines().count() > 10, "{log}");
    for tag in [
        "LongSecretNameAlpha",
        "LongSecretDirBravo",
        "LongSecretTargetCharlie",
        "LongSecretRenamedDelta",
        "NoSuchNameFoxtrot",
        "zzzzzzzz",
    ] {
        assert!(!log.contains(tag), "{tag} is in the log:\n{log}");
    }
}

#[test]
fn encrypt_names_is_refused_on_an_existing_plain_names_volume() {
    let t = tempfile::tempdir().unwrap();
    let _ = traced(t.path(), &[], |m| fs::write(m.join("f"), b"x").unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .arg("--kms")
        .arg(t.path().join("kms"))
        .args(["mount", "--encrypt-names"])
        .arg(t.path().join("enc"))
        .arg(t.path().join("plain"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted: {said}");
    assert!(
        said.contains("plain names") && said.contains("kmsfs encrypt"),
        "{said}"
    );
    assert!(!is_mounted(&t.path().join("plain")));
}

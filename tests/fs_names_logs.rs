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

use fsmount::{is_mounted, kmsfs, kmsfs_on, paths_in, run_ok};

/// Mounts a fresh volume at trace level, runs `work` in it, unmounts; the daemon's log.
fn traced(dir: &Path, extra: &[&str], work: impl FnOnce(&Path)) -> String {
    let [kms, backing, mnt, log] = paths_in(dir, ["kms", "enc", "plain", "daemon.log"]);
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let mut child = kmsfs_on(&kms)
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

/// The four names the work below uses (a file, a directory, a symlink target, a new
/// name), each starting with `prefix`, so each log can be searched for its own.
fn names_of(prefix: &str) -> [String; 4] {
    ["NameAlpha.txt", "DirBravo", "TargetCharlie", "RenamedDelta"].map(|n| format!("{prefix}{n}"))
}

fn names_work(names: &[String; 4]) -> impl FnOnce(&Path) + '_ {
    move |m: &Path| {
        fs::write(m.join(&names[0]), b"content").unwrap();
        fs::create_dir(m.join(&names[1])).unwrap();
        std::os::unix::fs::symlink(&names[2], m.join(&names[1]).join("link")).unwrap();
        fs::rename(m.join(&names[0]), m.join(&names[1]).join(&names[3])).unwrap();
        let listed: Vec<_> = fs::read_dir(m.join(&names[1]))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            fs::read_link(m.join(&names[1]).join("link")).unwrap(),
            Path::new(&names[2])
        );
        assert!(fs::metadata(m.join("NoSuchNameFoxtrot")).is_err());
    }
}

#[test]
fn no_plaintext_name_reaches_a_trace_log_of_an_encrypted_names_volume() {
    // Control: a plain-names volume's trace log names what the requests name.
    let plain = tempfile::tempdir().unwrap();
    let names = names_of("Plain");
    let log = traced(plain.path(), &[], names_work(&names));
    for n in names
        .iter()
        .map(String::as_str)
        .chain(["NoSuchNameFoxtrot"])
    {
        assert!(log.contains(n), "the control log does not name {n}:\n{log}");
    }

    let secret = tempfile::tempdir().unwrap();
    let names = names_of("Secret");
    let log = traced(secret.path(), &["--encrypt-names"], names_work(&names));
    assert!(log.contains("mounted") && log.lines().count() > 10, "{log}");
    for n in names
        .iter()
        .map(String::as_str)
        .chain(["NoSuchNameFoxtrot"])
    {
        assert!(!log.contains(n), "{n} is in the log:\n{log}");
    }
}

#[test]
fn no_long_name_or_target_reaches_a_trace_log_either() {
    // Long names (side files) and a 4,000-byte target (a long link), through the same work.
    let pad = |tag: &str, n: usize| format!("{tag}{}", "z".repeat(n - tag.len()));
    let names = [
        pad("LongSecretNameAlpha", 255),
        pad("LongSecretDirBravo", 200),
        pad("LongSecretTargetCharlie/", 4000),
        pad("LongSecretRenamedDelta", 176),
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

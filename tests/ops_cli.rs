//! The command line people use: examples in every `--help`, shell completion run by a
//! real bash, man pages rendered by man(1), and errors that say what to do next.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs;
use std::process::{Command, Output};

use fsmount::{kmsfs, kmsfs_on};

const SUBCOMMANDS: [&str; 9] = [
    "init",
    "mount",
    "umount",
    "stats",
    "fsck",
    "encrypt",
    "kms",
    "completions",
    "man",
];

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that a command failed and that what it printed says `what`.
fn refused_saying(out: &Output, what: &str) {
    assert!(!out.status.success(), "succeeded: {}", text(out));
    assert!(text(out).contains(what), "{}", text(out));
}

#[test]
fn every_subcommand_help_has_examples() {
    let top = kmsfs().arg("--help").output().unwrap();
    assert!(top.status.success());
    assert!(text(&top).contains("EXAMPLES:"), "{}", text(&top));
    for sub in SUBCOMMANDS {
        // `kmsfs kms --help` belongs to the KMS actions; `kmsfs help kms` is clap's page.
        let out = kmsfs().args(["help", sub]).output().unwrap();
        assert!(out.status.success(), "{sub}: {}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("EXAMPLES:"),
            "kmsfs help {sub} has no examples:\n{t}"
        );
        assert!(t.contains(&format!("kmsfs {sub}")), "{sub}: {t}");
    }
}

#[test]
fn bash_completion_completes_subcommands() {
    let out = kmsfs().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kmsfs.bash");
    fs::write(&script, &out.stdout).unwrap();
    // Drive the completion function as bash does on <TAB>.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let prog = format!(
            "source {}; complete -p kmsfs >/dev/null || exit 9; COMP_WORDS=({}); COMP_CWORD={}; \
             COMP_LINE='{line}'; COMP_POINT={}; _kmsfs kmsfs '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let o = Command::new("bash").arg("-c").arg(prog).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(complete("kmsfs mo").trim(), "mount");
    let en = complete("kmsfs en");
    assert_eq!(en.trim(), "encrypt");
    let opts = complete("kmsfs encrypt --del");
    assert_eq!(opts.trim(), "--delete-source-after-verify");
    for shell in ["zsh", "fish"] {
        let o = kmsfs().args(["completions", shell]).output().unwrap();
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn man_pages_render_with_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = kmsfs()
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let main = dir.path().join("kmsfs.1");
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&main)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", text(&rendered));
    let page = String::from_utf8_lossy(&rendered.stdout);
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("kmsfs-{sub}(1)")),
            "kmsfs.1 lacks {sub}:\n{page}"
        );
        let p = dir.path().join(format!("kmsfs-{sub}.1"));
        let r = Command::new("man")
            .arg("-l")
            .arg(&p)
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(r.status.success(), "{sub}: {}", text(&r));
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("EXAMPLES"),
            "{sub}"
        );
    }
    assert!(page.contains("EXAMPLES"));
}

#[test]
fn mount_errors_say_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let kms = t.path().join("kms");
    let backing = t.path().join("enc");
    let out = kmsfs_on(&kms).arg("init").arg(&backing).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mount = |mnt: &std::path::Path, extra: &[&str]| {
        kmsfs_on(&kms)
            .arg("mount")
            .arg(&backing)
            .arg(mnt)
            .args(extra)
            .output()
            .unwrap()
    };

    // A mountpoint holding files is refused (they would be hidden) with the way out.
    let full = t.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("precious"), b"x").unwrap();
    let out = mount(&full, &[]);
    refused_saying(&out, "not empty");
    assert!(text(&out).contains("-o nonempty"), "{}", text(&out));
    // ... and the way out works.
    let out = mount(&full, &["-o", "nonempty"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = kmsfs().arg("umount").arg(&full).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(full.join("precious").exists());

    // A dead mount (daemon killed): mounting again says to unmount it first, and that works.
    let dead = t.path().join("dead");
    fs::create_dir(&dead).unwrap();
    let out = mount(&dead, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let pid: i32 = fsmount::getxattr(&dead, "user.kmsfs.pid")
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: kill of the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let t0 = std::time::Instant::now();
    while fs::metadata(&dead).is_ok() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = mount(&dead, &[]);
    refused_saying(&out, "dead FUSE mount");
    assert!(text(&out).contains("kmsfs umount"), "{}", text(&out));
    let out = kmsfs().arg("umount").arg(&dead).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = mount(&dead, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = kmsfs().arg("umount").arg(&dead).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // A file as mountpoint.
    let file = t.path().join("file");
    fs::write(&file, b"").unwrap();
    let out = mount(&file, &[]);
    refused_saying(&out, "not a directory");

    // Not a volume, with --no-init: points at kmsfs init.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = kmsfs_on(&kms)
        .args(["mount", "--no-init"])
        .arg(&empty)
        .arg(&mnt)
        .output()
        .unwrap();
    refused_saying(&out, "kmsfs init");

    // The CMK disabled: the message says how to enable it.
    let cfg = fs::read_to_string(backing.join("kmsfs.conf")).unwrap();
    let v: serde_json::Value = serde_json::from_str(cfg.lines().next().unwrap()).unwrap();
    let cmk = v["cmk"].as_str().unwrap();
    let out = kmsfs_on(&kms)
        .args(["kms", "DisableKey", "--KeyId", cmk])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = mount(&mnt, &[]);
    refused_saying(&out, "EnableKey");

    // An HTTP KMS nobody listens on: check that it runs.
    let out = kmsfs()
        .args(["--kms", "http://127.0.0.1:9"])
        .arg("mount")
        .arg(&backing)
        .arg(&mnt)
        .output()
        .unwrap();
    refused_saying(&out, "--kms");
}

/// A mistyped backing path is not a new volume: `kmsfs mount` refuses it (no terminal to
/// ask on), names `kmsfs init`, and makes no CMK; `--init` makes it; an existing empty
/// directory is still initialised on first mount (the README's flow).
#[test]
fn a_mistyped_backing_path_is_refused_not_made_a_volume() {
    let dir = tempfile::tempdir().unwrap();
    let (kms, mnt) = (dir.path().join("kms"), dir.path().join("m"));
    fs::create_dir(&mnt).unwrap();
    let mount = |backing: &std::path::Path, extra: &[&str]| {
        kmsfs_on(&kms)
            .arg("mount")
            .args(extra)
            .arg(backing)
            .arg(&mnt)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let umount = || fsmount::run_ok(kmsfs().arg("umount").arg(&mnt));

    // The README's flow: an empty directory becomes a volume, and its CMK is made.
    let good = dir.path().join("enc");
    fs::create_dir(&good).unwrap();
    let out = mount(&good, &[]);
    assert!(out.status.success(), "{}", text(&out));
    umount();
    let keys = fsmount::audit_count(&kms, "CreateKey");
    assert_eq!(keys, 1);

    let typo = dir.path().join("ecn");
    let out = mount(&typo, &[]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("does not exist") && said.contains("kmsfs init") && said.contains("--init"),
        "{said}"
    );
    assert!(!typo.exists(), "the mistyped path was created");
    assert!(!fsmount::is_mounted(&mnt));
    assert_eq!(
        fsmount::audit_count(&kms, "CreateKey"),
        keys,
        "a stray CMK was made"
    );

    let out = mount(&typo, &["--init"]);
    assert!(out.status.success(), "{}", text(&out));
    umount();
    assert!(typo.join("kmsfs.conf").is_file());
    assert_eq!(fsmount::audit_count(&kms, "CreateKey"), keys + 1);
}

//! Encrypted names (`--encrypt-names`) through a real mount: a tree copied in with tar
//! comes back identical (`diff -r`, also after a remount), while the backing directory
//! holds no plaintext name or symlink target; each directory has its own IV, so one name
//! in two directories is stored differently; renames (across directories, over an empty
//! directory), rmdir, hard links and long names behave as on a local filesystem; names
//! changed on disk are hidden and reported by fsck, never shown wrong.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use fsmount::{kmsfs, run_fsck, run_ok, sh, Mounted};

/// Every path under `root` (files, dirs, links), relative.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path().strip_prefix(root).unwrap().to_owned());
        }
    }
    out
}

/// A source tree with the names that matter.
fn make_source(src: &Path) -> Vec<String> {
    let long = "L".repeat(175);
    let names = vec![
        "README.md".to_string(),
        "secret plans 2027.txt".into(),
        "ünïcödé — names".into(),
        long.clone(),
        ".hidden".into(),
        "-dash".into(),
    ];
    for d in ["", "docs", "docs/deep/er", "other"] {
        fs::create_dir_all(src.join(d)).unwrap();
        for n in &names {
            fs::write(src.join(d).join(n), format!("{d}/{n}\n").repeat(100)).unwrap();
        }
    }
    symlink(
        "docs/deep/er/secret plans 2027.txt",
        src.join("link-to-plans"),
    )
    .unwrap();
    symlink("/nonexistent/dangling target", src.join("dangling")).unwrap();
    fs::hard_link(src.join("README.md"), src.join("other/hardlink")).unwrap();
    names
}

fn assert_no_plaintext_on_disk(backing: &Path, names: &[String]) {
    for p in tree(backing) {
        let bytes = p.as_os_str().as_bytes();
        for n in names
            .iter()
            .map(String::as_bytes)
            .chain([&b"docs"[..], b"deep", b"link-to"])
        {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "plaintext name {:?} in backing path {}",
                String::from_utf8_lossy(n),
                p.display()
            );
        }
        let full = backing.join(&p);
        if full.symlink_metadata().unwrap().file_type().is_symlink() {
            let t = fs::read_link(&full).unwrap();
            assert!(
                !t.as_os_str().as_bytes().contains(&b'/'),
                "target {}",
                t.display()
            );
        }
    }
}

#[test]
fn a_tree_round_trips_while_the_disk_holds_no_plaintext_name() {
    let mut m = Mounted::new(&["--encrypt-names", "-o", "allow_other"]);
    let src = m.dir.path().join("src");
    let names = make_source(&src);
    sh(&format!(
        "tar -C {} -cf - . | tar -C {} -xpf -",
        src.display(),
        m.mnt.display()
    ));
    let diff = format!(
        "diff -r --no-dereference {} {}",
        src.display(),
        m.mnt.display()
    );
    sh(&diff);
    assert_eq!(tree(&m.mnt), tree(&src));
    assert_eq!(
        fs::read_link(m.p("link-to-plans")).unwrap(),
        Path::new("docs/deep/er/secret plans 2027.txt")
    );
    let lmd = fs::symlink_metadata(m.p("link-to-plans")).unwrap();
    assert_eq!(lmd.len(), "docs/deep/er/secret plans 2027.txt".len() as u64);
    assert_eq!(
        fs::metadata(m.p("README.md")).unwrap().ino(),
        fs::metadata(m.p("other/hardlink")).unwrap().ino()
    );
    assert_eq!(
        sh(&format!("stat -f -c %l {}", m.mnt.display())).trim(),
        "175"
    );
    let too_long = fs::write(m.p(&"x".repeat(176)), b"").unwrap_err();
    assert_eq!(too_long.raw_os_error(), Some(libc::ENAMETOOLONG));

    // On disk: no name, no target, an IV per directory; one name, two directories, two
    // stored names.
    assert_no_plaintext_on_disk(&m.backing, &names);
    let mut dirs = 0;
    for p in tree(&m.backing).into_iter().chain([PathBuf::new()]) {
        let full = m.backing.join(&p);
        if full.symlink_metadata().unwrap().is_dir() {
            assert_eq!(
                fs::metadata(full.join("kmsfs.diriv")).unwrap().len(),
                16,
                "{}",
                p.display()
            );
            dirs += 1;
        }
    }
    assert_eq!(dirs, 5, "root, docs, docs/deep, docs/deep/er, other");
    let top: BTreeSet<_> = fs::read_dir(&m.backing)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let docs_dir = fs::read_dir(&m.backing)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && fs::read_dir(p).unwrap().any(|e| e.unwrap().path().is_dir()))
        .unwrap();
    let in_docs: BTreeSet<_> = fs::read_dir(&docs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        top.intersection(&in_docs).count(),
        1,
        "only kmsfs.diriv is common: {top:?} {in_docs:?}"
    );

    // Renames across directories, of a directory, over an empty directory; rmdir.
    fs::rename(m.p("docs/README.md"), m.p("other/moved.md")).unwrap();
    fs::rename(m.p("docs/deep"), m.p("other/deep")).unwrap();
    fs::create_dir(m.p("empty")).unwrap();
    fs::rename(m.p("other/deep"), m.p("empty")).unwrap();
    assert!(m.p("empty/er/-dash").is_file());
    let full = fs::create_dir(m.p("full")).and_then(|_| fs::write(m.p("full/x"), b"x"));
    full.unwrap();
    let e = fs::rename(m.p("empty"), m.p("full")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    assert_eq!(
        fs::remove_dir(m.p("full")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        fs::read(m.p("full/x")).unwrap(),
        b"x",
        "the refused rmdir left the directory usable"
    );
    fs::remove_file(m.p("full/x")).unwrap();
    fs::remove_dir(m.p("full")).unwrap();
    assert!(!m.p("full").exists());
    let after: BTreeSet<_> = tree(&m.mnt);

    m.unmount();
    m.mount(&[]).unwrap();
    assert_eq!(tree(&m.mnt), after, "after a remount");
    assert_eq!(
        fs::read_to_string(m.p("empty/er/ünïcödé — names")).unwrap(),
        "docs/deep/er/ünïcödé — names\n".repeat(100)
    );
    m.unmount();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert!(out.status.success(), "fsck: {out:?}");
    let out = kmsfs()
        .arg("--kms")
        .arg(&m.kms)
        .args(["rewrap", "--json"])
        .arg(&m.backing)
        .output()
        .unwrap();
    assert!(out.status.success(), "rewrap: {out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["failed"], 0, "{j}");
}

/// The backing entry of mount path `rel` (found by inode number).
fn backing_of(m: &Mounted, rel: &str) -> PathBuf {
    let ino = fs::symlink_metadata(m.p(rel)).unwrap().ino();
    tree(&m.backing)
        .into_iter()
        .map(|p| m.backing.join(p))
        .find(|p| fs::symlink_metadata(p).unwrap().ino() == ino)
        .unwrap()
}

#[test]
fn names_changed_on_disk_are_hidden_and_reported_never_shown_wrong() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    for d in ["a", "b", "c", "d"] {
        fs::create_dir(m.p(d)).unwrap();
        fs::write(m.p(&format!("{d}/same")), d).unwrap();
    }
    fs::write(m.p("a/moved"), b"moved").unwrap();
    symlink("a/same", m.p("link")).unwrap();
    let moved = backing_of(&m, "a/moved");
    let b_dir = backing_of(&m, "b");
    let c_dir = backing_of(&m, "c");
    let d_dir = backing_of(&m, "d");
    let link = backing_of(&m, "link");
    m.unmount();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert_eq!(out.status.code(), Some(0), "clean first: {out:?}");

    // An encrypted name moved to another directory, a stray file, a symlink whose target
    // was swapped for another one's, a directory that lost its IV.
    fs::rename(&moved, b_dir.join(moved.file_name().unwrap())).unwrap();
    fs::write(m.backing.join("stray"), b"x").unwrap();
    let other = fs::read_link(&link).unwrap();
    let mut t = other.into_os_string().into_vec();
    t[20] = if t[20] == b'A' { b'B' } else { b'A' };
    fs::remove_file(&link).unwrap();
    symlink(std::ffi::OsStr::from_bytes(&t), &link).unwrap();
    fs::remove_file(c_dir.join("kmsfs.diriv")).unwrap();
    // A FIFO in place of an IV must not hang the daemon.
    fs::remove_file(d_dir.join("kmsfs.diriv")).unwrap();
    sh(&format!("mkfifo {}", d_dir.join("kmsfs.diriv").display()));

    let out = run_fsck(&m.kms, &m.backing, &[]);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("stray: name does not decrypt"), "{text}");
    assert!(
        text.contains("c: directory without a readable kmsfs.diriv"),
        "{text}"
    );

    m.mount(&[]).unwrap();
    let listed = |d: &str| -> BTreeSet<String> {
        fs::read_dir(m.p(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        listed(""),
        ["a", "b", "c", "d", "link"].map(String::from).into()
    );
    assert_eq!(listed("a"), ["same"].map(String::from).into());
    assert_eq!(
        listed("b"),
        ["same"].map(String::from).into(),
        "the moved name is hidden"
    );
    assert_eq!(fs::read(m.p("b/same")).unwrap(), b"b");
    assert_eq!(
        fs::read_link(m.p("link")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(
        fs::read_dir(m.p("c")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(
        fs::read(m.p("c/same")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    let ls = std::process::Command::new("timeout")
        .arg("10")
        .arg("ls")
        .arg(m.p("d"))
        .output()
        .unwrap();
    assert_eq!(ls.status.code(), Some(2), "EIO, not a hang (124): {ls:?}");
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains("Input/output error"),
        "{ls:?}"
    );
    assert!(m.log_text().contains("no kmsfs.diriv"), "{}", m.log_text());
}

#[test]
fn an_empty_directory_that_lost_its_iv_gets_a_new_one() {
    // What a crash between mkdir and the IV's write leaves.
    let mut m = Mounted::new(&["--encrypt-names"]);
    fs::create_dir(m.p("d")).unwrap();
    let d = backing_of(&m, "d");
    m.unmount();
    fs::remove_file(d.join("kmsfs.diriv")).unwrap();
    m.mount(&[]).unwrap();
    fs::write(m.p("d/f"), b"fine").unwrap();
    assert_eq!(fs::metadata(d.join("kmsfs.diriv")).unwrap().len(), 16);
    m.unmount();
    m.mount(&[]).unwrap();
    assert_eq!(fs::read(m.p("d/f")).unwrap(), b"fine");
}

#[test]
fn encrypted_names_are_chosen_at_init_and_laid_out_by_encrypt_too() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    let conf = fs::read_to_string(m.backing.join("kmsfs.conf")).unwrap();
    assert!(conf.contains("\"names-siv-v1\""), "{conf}");
    m.unmount();
    let mut shared = Mounted::existing(&m.kms, &m.backing, &["-o", "shared_storage"]);
    assert!(
        matches!(&shared, Err(e) if e.contains("not supported on a volume with encrypted names"))
    );
    if let Ok(s) = shared.as_mut() {
        s.unmount();
    }
    let plain = Mounted::new(&[]);
    let conf = fs::read_to_string(plain.backing.join("kmsfs.conf")).unwrap();
    assert!(!conf.contains("names-siv"), "{conf}");
    // kmsfs encrypt lays out a tree with encrypted names and verifies it; a root name that
    // is the config's on disk is a plain name here.
    let src = m.dir.path().join("src");
    let names = make_source(&src);
    fs::write(src.join("kmsfs.conf"), b"mine").unwrap();
    let dst = m.dir.path().join("dst");
    let out = kmsfs()
        .arg("--kms")
        .arg(&m.kms)
        .args(["encrypt", "--encrypt-names", "--json"])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sum: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["mismatches"].as_array().unwrap().len(), 0, "{sum}");
    assert_no_plaintext_on_disk(&dst, &names);
    let e = Mounted::existing(&m.kms, &dst, &[]).unwrap();
    // Looked up first (no listing has shown it to the kernel yet).
    assert_eq!(fs::read(e.p("kmsfs.conf")).unwrap(), b"mine");
    sh(&format!(
        "diff -r --no-dereference {} {}",
        src.display(),
        e.mnt.display()
    ));
    let long = src.join("x".repeat(176));
    fs::write(&long, b"").unwrap();
    let out = kmsfs()
        .arg("--kms")
        .arg(&m.kms)
        .args(["encrypt", "--encrypt-names"])
        .arg(&src)
        .arg(m.dir.path().join("dst2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 175 bytes"),
        "{out:?}"
    );
}

/// The tree as the mount shows it, in the format of tests/common/fs_names.py.
fn listing(mnt: &Path) -> String {
    let mut lines: Vec<String> = tree(mnt)
        .into_iter()
        .map(|p| {
            let full = mnt.join(&p);
            let md = fs::symlink_metadata(&full).unwrap();
            let show = p.to_string_lossy().into_owned();
            if md.is_dir() {
                format!("{show}\td")
            } else if md.file_type().is_symlink() {
                format!("{show}\tl\t{}", fs::read_link(&full).unwrap().display())
            } else if md.is_file() {
                format!("{show}\tf")
            } else {
                format!("{show}\to")
            }
        })
        .collect();
    lines.sort();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn docs_format_md_is_enough_to_read_the_names() {
    let m = Mounted::new(&["--encrypt-names"]);
    let src = m.dir.path().join("src");
    make_source(&src);
    sh(&format!(
        "tar -C {} -cf - . | tar -C {} -xf -",
        src.display(),
        m.mnt.display()
    ));
    let conf = fs::read_to_string(m.backing.join("kmsfs.conf")).unwrap();
    let body: serde_json::Value = serde_json::from_str(conf.lines().next().unwrap()).unwrap();
    let r = m.kms_call(
        "Decrypt",
        serde_json::json!({
            "CiphertextBlob": body["config_dek"],
            "EncryptionContext": format!("{{\"kmsfs-volume\":\"{}\"}}", body["uuid"].as_str().unwrap()),
        }),
    );
    let dek = base64::engine::general_purpose::STANDARD
        .decode(r["Plaintext"].as_str().unwrap())
        .unwrap();
    let dek_hex: String = dek.iter().map(|b| format!("{b:02x}")).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/fs_names.py");
    let out = run_ok(
        std::process::Command::new("python3")
            .arg(script)
            .arg(&m.backing)
            .arg(&dek_hex),
    );
    let want = listing(&m.mnt);
    assert!(
        want.contains("link-to-plans\tl\tdocs/deep/er/secret plans 2027.txt\n"),
        "{want}"
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

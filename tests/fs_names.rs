//! Encrypted names (`--encrypt-names`) through a real mount: a tree copied in with tar
//! comes back identical (`diff -r`, also after a remount), while the backing directory
//! holds no plaintext name or symlink target; each directory has its own IV, so one name
//! in two directories is stored differently; renames (across directories, over an empty
//! directory), rmdir, hard links and long names behave as on a local filesystem; names
//! changed on disk are hidden and reported by fsck, never shown wrong.
//!
//! Long names and targets (feature `names-long-v1`): names of 176 to 255 bytes and
//! symlink targets of 4,095 round-trip through tar, also after a remount; renames between
//! short and long names, hard links, unlink and rmdir keep each long name's side file
//! beside its entry and leave none behind; a missing or wrong side file hides its entry
//! (EIO read-only; a lookup by name writes it again) and is
//! reported by fsck, an orphan is reported; volumes made before the feature keep 175.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use fsmount::{kmsfs_on, run_fsck, run_ok, sh, Mounted};

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

/// A name of exactly `n` bytes starting with `tag` (multi-byte characters in it).
fn name_of(tag: &str, n: usize) -> String {
    let mut s = format!("{tag}-ü");
    while s.len() < n {
        s.push(if s.len() % 7 == 0 { 'é' } else { 'x' });
        if s.len() > n {
            s.pop();
            s.push('y');
        }
    }
    assert_eq!(s.len(), n);
    s
}

/// A symlink target of exactly `n` bytes.
/// The `listing` line of a symlink `dir`/`link` (255-byte names: `name_of(tag, 255)`) to
/// the 4,095-byte target, below `prefix`.
fn long_link_line(prefix: &str, dir: &str, link: &str) -> String {
    format!(
        "{prefix}{}/{}\tl\t{}\n",
        name_of(dir, 255),
        name_of(link, 255),
        target_of(4095)
    )
}

fn target_of(n: usize) -> String {
    let mut t = "../far away/".repeat(n / 12 + 1);
    t.truncate(n - 1);
    t.push('Z');
    t
}

/// A source tree with the names that matter: short ones, 175 bytes (the longest that is
/// its own entry), 176, 200 and 255 bytes (long names); a 255-byte directory; symlinks
/// of 3,039 bytes (the longest inline one) and 4,095 bytes (a long link).
fn make_source(src: &Path) -> Vec<String> {
    let long = "L".repeat(175);
    let names = vec![
        "README.md".to_string(),
        "secret plans 2027.txt".into(),
        "ünïcödé — names".into(),
        long.clone(),
        ".hidden".into(),
        "-dash".into(),
        name_of("long176", 176),
        name_of("long200", 200),
        name_of("long255", 255),
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
    let ldir = src.join("other").join(name_of("dir255", 255));
    fs::create_dir(&ldir).unwrap();
    fs::write(ldir.join(name_of("in-dir255", 255)), b"deep and long").unwrap();
    symlink(target_of(4095), ldir.join(name_of("link255", 255))).unwrap();
    symlink(target_of(3039), src.join("inline-3039")).unwrap();
    symlink(target_of(4095), src.join("link-4095")).unwrap();
    fs::hard_link(
        src.join(name_of("long255", 255)),
        src.join("docs").join(name_of("hard255", 255)),
    )
    .unwrap();
    names
}

/// The long names, their side files and the long links of a volume's backing tree,
/// counted after checking that each long name has its side file and each side file its
/// entry (no temp file), and that the long links at the root are exactly those the
/// symlinks name: `(long names, long links)`.
fn side_files(backing: &Path) -> (usize, usize) {
    let (mut longs, mut named_links) = (0, BTreeSet::new());
    let mut stack = vec![backing.to_owned()];
    while let Some(d) = stack.pop() {
        let here: BTreeSet<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        for n in &here {
            let full = d.join(n);
            let md = fs::symlink_metadata(&full).unwrap();
            if md.is_dir() {
                stack.push(full.clone());
            }
            if md.file_type().is_symlink() {
                let t = fs::read_link(&full).unwrap().into_os_string();
                let t = t.into_string().unwrap();
                if t.starts_with("kmsfs.longlink.") {
                    named_links.insert(t);
                }
            }
            if let Some(entry) = n.strip_suffix(".name") {
                assert!(here.contains(entry), "orphan side file {}", full.display());
            } else if n.starts_with("kmsfs.longname.") {
                assert_eq!(n.len(), 58, "{n}");
                assert!(here.contains(&format!("{n}.name")), "no side file: {n}");
                longs += 1;
            }
            assert!(!n.ends_with(".tmp"), "temp file left: {}", full.display());
        }
    }
    let at_root: BTreeSet<String> = fs::read_dir(backing)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("kmsfs.longlink."))
        .collect();
    assert_eq!(at_root, named_links, "long links at the root vs named");
    (longs, at_root.len())
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
        "255"
    );
    let too_long = fs::write(m.p(&"x".repeat(256)), b"").unwrap_err();
    assert_eq!(too_long.raw_os_error(), Some(libc::ENAMETOOLONG));
    assert_eq!(fs::symlink_metadata(m.p("link-4095")).unwrap().len(), 4095);
    // 3 long names in each of 4 directories, the 255-byte directory and 2 in it, the hard
    // link; 2 symlinks of 4,095 bytes.
    assert_eq!(side_files(&m.backing), (3 * 4 + 1 + 2 + 1, 2));

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
    assert_eq!(
        dirs, 6,
        "root, docs, docs/deep, docs/deep/er, other, other/dir255…"
    );
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
    let out = kmsfs_on(&m.kms)
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
    assert!(conf.contains("\"names-long-v1\""), "{conf}");
    m.unmount();
    let plain = Mounted::new(&[]);
    let conf = fs::read_to_string(plain.backing.join("kmsfs.conf")).unwrap();
    assert!(!conf.contains("names-siv"), "{conf}");
    // kmsfs encrypt lays out a tree with encrypted names and verifies it; a root name that
    // is the config's on disk is a plain name here.
    let src = m.dir.path().join("src");
    let names = make_source(&src);
    fs::write(src.join("kmsfs.conf"), b"mine").unwrap();
    let dst = m.dir.path().join("dst");
    let out = kmsfs_on(&m.kms)
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
    // Names of 176 to 255 bytes, a 4,095-byte target: long names and links as the
    // mount makes them.
    assert_eq!(side_files(&dst), (3 * 4 + 1 + 2 + 1, 2));
    assert_eq!(
        fs::read_link(e.p("link-4095")).unwrap(),
        Path::new(&target_of(4095))
    );
    let conf = fs::read_to_string(dst.join("kmsfs.conf")).unwrap();
    assert!(conf.contains("\"names-long-v1\""), "{conf}");
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
    let dek = config_dek(&m);
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
    // 255-byte names and a 4,095-byte target (long names and a long link) are in it.
    let l255 = long_link_line("other/", "dir255", "link255");
    assert!(want.contains(&l255), "{want}");
    assert!(
        want.contains(&format!("docs/{}\tf\n", name_of("hard255", 255))),
        "{want}"
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

/// The volume's config DEK, unwrapped through the test's KMS.
fn config_dek(m: &Mounted) -> Vec<u8> {
    let conf = fs::read_to_string(m.backing.join("kmsfs.conf")).unwrap();
    let body: serde_json::Value = serde_json::from_str(conf.lines().next().unwrap()).unwrap();
    let r = m.kms_call(
        "Decrypt",
        serde_json::json!({
            "CiphertextBlob": body["config_dek"],
            "EncryptionContext": format!("{{\"kmsfs-volume\":\"{}\"}}", body["uuid"].as_str().unwrap()),
        }),
    );
    base64::engine::general_purpose::STANDARD
        .decode(r["Plaintext"].as_str().unwrap())
        .unwrap()
}

/// Tars `from` into `tarball` and untars that into `to` (a new directory).
fn tar_copy(from: &Path, tarball: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    sh(&format!(
        "tar -C '{}' -cf '{}' . && tar -C '{}' -xpf '{}'",
        from.display(),
        tarball.display(),
        to.display(),
        tarball.display()
    ));
}

/// `diff -r` of two trees (FIFOs, which diff cannot compare, compared by [`listing`]).
fn diff(a: &Path, b: &Path) {
    sh(&format!(
        "diff -r --no-dereference -x 'fifo-*' '{}' '{}'",
        a.display(),
        b.display()
    ));
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> Option<i32> {
    r.unwrap_err().raw_os_error()
}

#[test]
fn names_of_255_bytes_and_targets_of_4095_round_trip_through_tar_also_after_a_remount() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    // Made in the mount: files, directories, symlinks, a FIFO and a hard link with names of
    // 176, 200 and 255 bytes, targets of 4,095 bytes under long and short names.
    for n in [176, 200, 255] {
        fs::write(m.p(&name_of("file", n)), format!("{n}\n")).unwrap();
        let d = name_of("dir", n);
        fs::create_dir(m.p(&d)).unwrap();
        fs::write(m.p(&format!("{d}/{}", name_of("inner", n))), b"inner").unwrap();
        symlink(target_of(4095), m.p(&format!("{d}/{}", name_of("link", n)))).unwrap();
    }
    symlink(target_of(4095), m.p("short-name-link")).unwrap();
    symlink(target_of(100), m.p(&name_of("short-target", 255))).unwrap();
    fs::hard_link(
        m.p(&name_of("file", 255)),
        m.p(&format!("{}/{}", name_of("dir", 176), name_of("hard", 255))),
    )
    .unwrap();
    sh(&format!(
        "mkfifo '{}'",
        m.p(&name_of("fifo", 255)).display()
    ));
    let lmd = fs::symlink_metadata(m.p("short-name-link")).unwrap();
    assert_eq!(lmd.len(), 4095);
    assert_eq!(
        fs::read_link(m.p("short-name-link")).unwrap(),
        Path::new(&target_of(4095))
    );
    assert_eq!(fs::metadata(m.p(&name_of("file", 255))).unwrap().nlink(), 2);
    let made = listing(&m.mnt);
    let l255 = long_link_line("", "dir", "link");
    assert!(made.contains(&l255), "{made}");
    assert_eq!(made.lines().count(), 3 * 4 + 4, "{made}");
    // 3 files, 3 dirs, 3 inner files, 3 links (in dirs), a short-target link, a FIFO and
    // a hard link have long names; 4 links have 4,095-byte targets.
    assert_eq!(side_files(&m.backing), (15, 4));

    // Out through tar, into a fresh directory.
    let out = m.dir.path().join("out");
    tar_copy(&m.mnt, &m.dir.path().join("1.tar"), &out);
    diff(&m.mnt, &out);
    assert_eq!(listing(&out), made);

    // After a remount: the same tree, out again; and back in through tar.
    m.unmount();
    m.mount(&[]).unwrap();
    assert_eq!(listing(&m.mnt), made);
    let out2 = m.dir.path().join("out2");
    tar_copy(&m.mnt, &m.dir.path().join("2.tar"), &out2);
    diff(&out, &out2);
    let back = m.p("back");
    tar_copy(&out, &m.dir.path().join("3.tar"), &back);
    diff(&out, &back);
    assert_eq!(side_files(&m.backing), (30, 8));

    // 256 bytes is too long, whatever the operation; a 4,096-byte target too.
    let n256 = m.p(&name_of("x", 256));
    assert_eq!(errno_of(fs::write(&n256, b"")), Some(libc::ENAMETOOLONG));
    assert_eq!(errno_of(fs::create_dir(&n256)), Some(libc::ENAMETOOLONG));
    assert_eq!(errno_of(symlink("t", &n256)), Some(libc::ENAMETOOLONG));
    assert_eq!(
        errno_of(fs::rename(m.p(&name_of("file", 200)), &n256)),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        errno_of(fs::hard_link(m.p(&name_of("file", 200)), &n256)),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        errno_of(symlink(target_of(4096), m.p("t4096"))),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        sh(&format!("stat -f -c %l {}", m.mnt.display())).trim(),
        "255"
    );
    assert!(fs::read(m.p(&name_of("file", 200))).is_ok());
    m.unmount();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert!(out.status.success(), "fsck: {out:?}");
}

/// `renameat2(RENAME_EXCHANGE)` of two paths.
fn exchange(a: &Path, b: &Path) {
    let (a, b) = (
        std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap(),
        std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap(),
    );
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn renames_links_unlinks_and_rmdirs_keep_each_side_file_beside_its_entry() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    let (l1, l2, l3) = (
        name_of("one", 255),
        name_of("two", 200),
        name_of("three", 176),
    );
    let mnt = m.mnt.clone();
    let at = |d: &str, n: &str| mnt.join(d).join(n);
    fs::create_dir(m.p("a")).unwrap();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(at("a", &l1), b"1").unwrap();
    assert_eq!(side_files(&m.backing), (1, 0));

    // Long to short in one directory, short to long across, long to long across.
    fs::rename(at("a", &l1), at("a", "short")).unwrap();
    assert!(!at("a", &l1).exists());
    assert_eq!(side_files(&m.backing), (0, 0));
    fs::rename(at("a", "short"), at("b", &l2)).unwrap();
    assert_eq!(side_files(&m.backing), (1, 0));
    fs::rename(at("b", &l2), at("a", &l3)).unwrap();
    assert!(!at("b", &l2).exists());
    assert_eq!(fs::read(at("a", &l3)).unwrap(), b"1");
    assert_eq!(side_files(&m.backing), (1, 0));

    // A long-named directory with a long-named file in it, moved across under a new
    // long name.
    let (d1, d2) = (name_of("dir-one", 230), name_of("dir-two", 240));
    fs::create_dir(at("b", &d1)).unwrap();
    fs::write(m.p(&format!("b/{d1}/{l1}")), b"in").unwrap();
    fs::rename(at("b", &d1), at("a", &d2)).unwrap();
    assert_eq!(fs::read(m.p(&format!("a/{d2}/{l1}"))).unwrap(), b"in");
    assert_eq!(side_files(&m.backing), (3, 0));

    // Over an existing long name: one side file stays, the source's goes.
    fs::write(at("b", &l1), b"new").unwrap();
    fs::rename(at("b", &l1), at("a", &l3)).unwrap();
    assert_eq!(fs::read(at("a", &l3)).unwrap(), b"new");
    assert_eq!(side_files(&m.backing), (3, 0));

    // Hard links: long to long across directories, long to short; each name its own
    // side file; unlinking one leaves the others whole.
    fs::hard_link(at("a", &l3), at("b", &l2)).unwrap();
    fs::hard_link(at("b", &l2), at("a", "short2")).unwrap();
    assert_eq!(fs::metadata(at("a", "short2")).unwrap().nlink(), 3);
    assert_eq!(side_files(&m.backing), (4, 0));
    fs::rename(at("a", &l3), at("b", &l2)).unwrap();
    assert!(
        at("a", &l3).exists() && at("b", &l2).exists(),
        "same file: no-op"
    );
    fs::remove_file(at("a", &l3)).unwrap();
    assert_eq!(side_files(&m.backing), (3, 0));
    assert_eq!(fs::read(at("b", &l2)).unwrap(), b"new");
    assert_eq!(fs::metadata(at("a", "short2")).unwrap().nlink(), 2);

    // An exchange keeps both names (and their side files) in place.
    let (x1, x2) = (name_of("x1", 210), name_of("x2", 220));
    fs::write(at("a", &x1), b"x1").unwrap();
    fs::write(at("b", &x2), b"x2").unwrap();
    exchange(&at("a", &x1), &at("b", &x2));
    assert_eq!(fs::read(at("a", &x1)).unwrap(), b"x2");
    assert_eq!(fs::read(at("b", &x2)).unwrap(), b"x1");
    assert_eq!(side_files(&m.backing), (5, 0));

    // Long links: the side file lives while a hard link does; a rename over the last
    // name removes it.
    let ln = name_of("lnk", 250);
    symlink(target_of(4095), at("a", &ln)).unwrap();
    fs::hard_link(at("a", &ln), at("b", "lnk2")).unwrap();
    assert_eq!(side_files(&m.backing), (6, 1));
    fs::remove_file(at("a", &ln)).unwrap();
    assert_eq!(side_files(&m.backing), (5, 1));
    assert_eq!(
        fs::read_link(at("b", "lnk2")).unwrap(),
        Path::new(&target_of(4095))
    );
    symlink(target_of(4000), at("b", &ln)).unwrap();
    assert_eq!(side_files(&m.backing), (6, 2));
    fs::rename(at("b", &ln), at("b", "lnk2")).unwrap();
    assert_eq!(side_files(&m.backing), (5, 1));
    assert_eq!(
        fs::read_link(at("b", "lnk2")).unwrap(),
        Path::new(&target_of(4000))
    );
    fs::write(at("a", "f"), b"f").unwrap();
    fs::rename(at("a", "f"), at("b", "lnk2")).unwrap();
    assert_eq!(side_files(&m.backing), (5, 0));

    // rmdir of a long name, and of a directory that held long names.
    let before = listing(&m.mnt);
    m.unmount();
    m.mount(&[]).unwrap();
    assert_eq!(listing(&m.mnt), before);
    fs::remove_file(m.p(&format!("a/{d2}/{l1}"))).unwrap();
    fs::remove_dir(at("a", &d2)).unwrap();
    for (d, n) in [("a", &x1), ("b", &x2), ("b", &l2)] {
        fs::remove_file(at(d, n)).unwrap();
    }
    for p in ["a/short2", "b/lnk2"] {
        fs::remove_file(m.p(p)).unwrap();
    }
    fs::remove_dir(m.p("a")).unwrap();
    fs::remove_dir(m.p("b")).unwrap();
    assert_eq!(side_files(&m.backing), (0, 0));
    let left: BTreeSet<_> = fs::read_dir(&m.backing)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left,
        ["kmsfs.conf", "kmsfs.diriv"].map(String::from).into(),
        "nothing left behind"
    );
    m.unmount();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert!(out.status.success(), "fsck: {out:?}");
}

/// The backing side file of mount path `rel`, a long name.
fn side_of(m: &Mounted, rel: &str) -> PathBuf {
    let mut p = backing_of(m, rel).into_os_string();
    p.push(".name");
    PathBuf::from(p)
}

/// Writes three long names (each holding its name) and `d/` with one long name; returns
/// the three names.
fn three_long_names_and_an_orphan(m: &Mounted) -> (String, String, String) {
    let (gone, wrong, kept) = (
        name_of("gone", 200),
        name_of("wrong", 210),
        name_of("kept", 220),
    );
    for n in [&gone, &wrong, &kept] {
        fs::write(m.p(n), n.as_bytes()).unwrap();
    }
    fs::create_dir(m.p("d")).unwrap();
    fs::write(m.p(&format!("d/{}", name_of("orphan", 230))), b"o").unwrap();
    (gone, wrong, kept)
}

#[test]
fn a_missing_or_wrong_side_file_answers_eio_and_fsck_reports_it_and_orphans() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    let (gone, wrong, kept) = three_long_names_and_an_orphan(&m);
    symlink(target_of(4095), m.p("ll")).unwrap();
    symlink(target_of(4090), m.p("ll2")).unwrap();
    let (gone_side, wrong_side, kept_side) =
        (side_of(&m, &gone), side_of(&m, &wrong), side_of(&m, &kept));
    let orphan = backing_of(&m, &format!("d/{}", name_of("orphan", 230)));
    let ll = m.backing.join(fs::read_link(backing_of(&m, "ll")).unwrap());
    let ll2 = m
        .backing
        .join(fs::read_link(backing_of(&m, "ll2")).unwrap());
    m.unmount();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert_eq!(out.status.code(), Some(0), "clean first: {out:?}");

    // A side file lost, one swapped for another name's, an entry gone without its side
    // file, a long link's side file lost, one no symlink names.
    fs::remove_file(&gone_side).unwrap();
    fs::write(&wrong_side, fs::read(&kept_side).unwrap()).unwrap();
    fs::remove_file(&orphan).unwrap();
    fs::remove_file(&ll).unwrap();
    let stray = m.backing.join(format!("kmsfs.longlink.{}", "A".repeat(43)));
    fs::copy(&ll2, &stray).unwrap();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    for want in [
        "long name without its .name side file",
        "long name whose .name side file is bad",
        "side file of a long name whose entry is gone",
        "its side file is missing; readlink answers EIO",
        "side file of a long symlink target that no symlink names",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }

    // Read-only, a lookup of a long name whose side file is bad cannot repair it: EIO.
    m.mount(&["-o", "ro"]).unwrap();
    assert_eq!(errno_of(fs::read(m.p(&gone))), Some(libc::EIO));
    assert_eq!(errno_of(fs::read(m.p(&wrong))), Some(libc::EIO));
    m.unmount();
    m.mount(&[]).unwrap();
    let listed = || -> BTreeSet<String> {
        fs::read_dir(&m.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    assert_eq!(
        listed(),
        [kept.as_str(), "d", "ll", "ll2"].map(String::from).into()
    );
    // Looked up by name, each proves itself (its entry is the hash of its stored form):
    // its side file is written again, and it is listed, and can go.
    assert_eq!(fs::read(m.p(&gone)).unwrap(), gone.as_bytes());
    assert_eq!(fs::read(m.p(&wrong)).unwrap(), wrong.as_bytes());
    assert!(fs::read(&gone_side).unwrap().len() > 255);
    assert_eq!(
        listed(),
        [
            gone.as_str(),
            wrong.as_str(),
            kept.as_str(),
            "d",
            "ll",
            "ll2"
        ]
        .map(String::from)
        .into()
    );
    fs::remove_file(m.p(&gone)).unwrap();
    assert!(!gone_side.exists());
    assert_eq!(fs::read(m.p(&kept)).unwrap(), kept.as_bytes());
    assert_eq!(errno_of(fs::read_link(m.p("ll"))), Some(libc::EIO));
    assert_eq!(
        fs::read_link(m.p("ll2")).unwrap(),
        Path::new(&target_of(4090))
    );
    // The directory whose only long name lost its entry is empty, and goes.
    assert_eq!(fs::read_dir(m.p("d")).unwrap().count(), 0);
    fs::remove_dir(m.p("d")).unwrap();
    // The daemon is still there, and said why in its log (without the names).
    assert!(fs::metadata(m.p(&kept)).is_ok());
    let log = m.log_text();
    assert!(log.contains("side file"), "{log}");
    for tag in ["gone-ü", "wrong-ü", "kept-ü"] {
        assert!(!log.contains(tag), "a name in the log: {log}");
    }
}

#[test]
fn a_volume_made_before_long_names_keeps_its_175_byte_limit() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    fs::write(m.p(&"s".repeat(175)), b"175").unwrap();
    symlink(target_of(3039), m.p("inline")).unwrap();
    let dek = config_dek(&m);
    m.unmount();
    // The config as a kmsfs before names-long-v1 wrote it.
    let path = m.backing.join("kmsfs.conf");
    let conf = fs::read_to_string(&path).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(conf.lines().next().unwrap()).unwrap();
    let uuid = body["uuid"].as_str().unwrap().to_owned();
    body["features"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f != "names-long-v1");
    let body = serde_json::to_vec(&body).unwrap();
    let k =
        kmsfs::format::aead::hkdf_sha256(&dek, uuid.as_bytes(), kmsfs::volume::CONFIG_MAC_LABEL);
    let mac = kmsfs::format::aead::hmac_sha256(&k[..], &body);
    fs::write(&path, kmsfs::volume::encode_config(&body, &mac)).unwrap();

    m.mount(&[]).unwrap();
    assert_eq!(
        sh(&format!("stat -f -c %l {}", m.mnt.display())).trim(),
        "175"
    );
    assert_eq!(fs::read(m.p(&"s".repeat(175))).unwrap(), b"175");
    assert_eq!(
        fs::read_link(m.p("inline")).unwrap(),
        Path::new(&target_of(3039))
    );
    assert_eq!(
        errno_of(fs::write(m.p(&"s".repeat(176)), b"")),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        errno_of(symlink(target_of(3040), m.p("too-long"))),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(side_files(&m.backing), (0, 0));
    m.unmount();
    let conf = fs::read_to_string(&path).unwrap();
    assert!(!conf.contains("names-long-v1"), "{conf}");
}

/// The fsync-family calls the daemon `pid` makes while `f` runs, seen by strace.
fn syncs_during(pid: u32, dir: &Path, f: impl FnOnce()) -> usize {
    let out = dir.join(format!("syncs-{}.strace", std::process::id()));
    let mut st = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .spawn()
        .expect("strace is installed by scripts/install-deps.sh");
    // strace writes nothing until attached: wait for its attach to show in /proc.
    let t0 = std::time::Instant::now();
    while fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .contains("TracerPid:\t0")
    {
        assert!(t0.elapsed().as_secs() < 10, "strace did not attach");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    f();
    // SAFETY: our own child.
    unsafe { libc::kill(st.id() as i32, libc::SIGINT) };
    st.wait().unwrap();
    let text = fs::read_to_string(&out).unwrap_or_default();
    let _ = fs::remove_file(&out);
    text.lines().filter(|l| l.contains("sync")).count()
}

#[test]
fn opening_an_existing_long_name_with_o_creat_syncs_nothing() {
    let m = Mounted::new(&["--encrypt-names"]);
    let long = name_of("creat", 230);
    fs::write(m.p(&long), b"x").unwrap();
    let pid = m.pid().unwrap();
    let open = || {
        for _ in 0..3 {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(m.p(&long))
                .unwrap();
        }
    };
    // One per open before: the side file was fsynced again, and its directory.
    assert_eq!(syncs_during(pid, m.dir.path(), open), 0);
    // A new long name still syncs its side file and the directory before its entry.
    let made = syncs_during(pid, m.dir.path(), || {
        fs::write(m.p(&name_of("new", 231)), b"y").unwrap()
    });
    assert!(made >= 2, "{made}");
    assert_eq!(fs::read(m.p(&long)).unwrap(), b"x");
}

#[test]
fn fsck_repair_renames_long_names_that_lost_their_side_file_and_removes_orphans() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    let (gone, wrong, kept) = three_long_names_and_an_orphan(&m);
    symlink(target_of(4090), m.p("ll")).unwrap();
    let (gone_side, wrong_side, kept_side) =
        (side_of(&m, &gone), side_of(&m, &wrong), side_of(&m, &kept));
    let orphan = backing_of(&m, &format!("d/{}", name_of("orphan", 230)));
    let ll = m.backing.join(fs::read_link(backing_of(&m, "ll")).unwrap());
    m.unmount();
    fs::remove_file(&gone_side).unwrap();
    fs::write(&wrong_side, fs::read(&kept_side).unwrap()).unwrap();
    fs::remove_file(&orphan).unwrap();
    let mut temp = kept_side.clone().into_os_string();
    temp.push(".tmp.0123456789abcdef");
    fs::write(&temp, b"half").unwrap();
    let stray = m.backing.join(format!("kmsfs.longlink.{}", "A".repeat(43)));
    fs::copy(&ll, &stray).unwrap();

    let text = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    // Mounted: fsck says what it would do, but an orphan long link is not called safe
    // to delete (a symlink being made may name it), and --repair is refused.
    m.mount(&[]).unwrap();
    let out = run_fsck(&m.kms, &m.backing, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("kmsfs fsck --repair"), "{t}");
    assert!(
        t.contains("not known to be an orphan (the volume is mounted)"),
        "{t}"
    );
    let out = run_fsck(&m.kms, &m.backing, &["--repair"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("already mounted"), "{}", text(&out));
    assert!(stray.exists() && temp.to_str().is_some());
    m.unmount();

    // Unmounted: each problem repaired, none left.
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert!(
        !text(&out).contains("not known to be an orphan"),
        "{}",
        text(&out)
    );
    let out = run_fsck(&m.kms, &m.backing, &["--repair"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert_eq!(t.matches("repaired: ").count(), 5, "{t}");
    assert!(!stray.exists() && !Path::new(&temp).exists());
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The mount shows the two long names under new names, content kept; they go.
    m.mount(&[]).unwrap();
    let mut lost: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("lost-longname-"))
        .collect();
    lost.sort();
    assert_eq!(lost.len(), 2, "{lost:?}");
    let mut contents: Vec<Vec<u8>> = lost.iter().map(|n| fs::read(m.p(n)).unwrap()).collect();
    contents.sort();
    let mut want = vec![gone.clone().into_bytes(), wrong.clone().into_bytes()];
    want.sort();
    assert_eq!(contents, want);
    for n in &lost {
        fs::remove_file(m.p(n)).unwrap();
    }
    assert_eq!(fs::read(m.p(&kept)).unwrap(), kept.as_bytes());
    assert_eq!(
        fs::read_link(m.p("ll")).unwrap(),
        Path::new(&target_of(4090))
    );
    fs::remove_dir(m.p("d")).unwrap();
}

/// Every path under mount `mnt`, with each regular file's content.
fn snapshot(mnt: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    tree(mnt)
        .into_iter()
        .map(|p| {
            let full = mnt.join(&p);
            let c = fs::symlink_metadata(&full)
                .unwrap()
                .is_file()
                .then(|| fs::read(&full).unwrap());
            (p, c)
        })
        .collect()
}

/// What a namespace operation racing with another daemon's may answer: anything but EIO
/// (or another error that says the names broke).
fn racing_ok<T>(r: std::io::Result<T>, what: &str) {
    if let Err(e) = r {
        let ok = [
            libc::EEXIST,
            libc::ENOENT,
            libc::ENOTEMPTY,
            libc::ENOTDIR,
            libc::EISDIR,
        ];
        assert!(
            e.raw_os_error().is_some_and(|n| ok.contains(&n)),
            "{what}: {e}"
        );
    }
}

#[test]
fn two_daemons_share_a_volume_with_encrypted_names() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    m.unmount();
    let a = Mounted::existing(&m.kms, &m.backing, &["-o", "shared_storage"]).unwrap();
    let b = Mounted::existing(&m.kms, &m.backing, &["-o", "shared_storage"]).unwrap();

    // Made in A, seen in B, short and long names, and the other way round.
    let long = name_of("shared", 240);
    fs::create_dir(a.p("d")).unwrap();
    fs::write(a.p("d/f"), b"from a").unwrap();
    fs::create_dir(a.p(&long)).unwrap();
    fs::write(a.p(&format!("{long}/{long}")), b"long").unwrap();
    symlink(target_of(4000), a.p("ll")).unwrap();
    assert_eq!(fs::read(b.p("d/f")).unwrap(), b"from a");
    assert_eq!(fs::read(b.p(&format!("{long}/{long}"))).unwrap(), b"long");
    assert_eq!(
        fs::read_link(b.p("ll")).unwrap(),
        Path::new(&target_of(4000))
    );
    fs::write(b.p("d/g"), b"from b").unwrap();
    fs::rename(b.p("d/f"), b.p(&format!("{long}/f"))).unwrap();
    assert_eq!(fs::read(a.p("d/g")).unwrap(), b"from b");
    assert_eq!(fs::read(a.p(&format!("{long}/f"))).unwrap(), b"from a");
    // A directory B removed and A makes again (maybe with the same inode number) takes
    // A's new IV, not one A remembered.
    fs::create_dir(a.p("again")).unwrap();
    fs::write(a.p("again/x"), b"1").unwrap();
    fs::remove_file(b.p("again/x")).unwrap();
    fs::remove_dir(b.p("again")).unwrap();
    fs::create_dir(b.p("again")).unwrap();
    fs::write(a.p("again/y"), b"2").unwrap();
    assert_eq!(fs::read(b.p("again/y")).unwrap(), b"2");

    // Both at once: the same directories made, filled, renamed and removed through both
    // (names short and long); no EIO, and both see the same tree at the end.
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|sc| {
        for (who, m) in [(0, &a), (1, &b)] {
            let start = &start;
            sc.spawn(move || {
                start.wait();
                for i in 0..60 {
                    let d = format!("c{}", i % 7);
                    let ld = name_of(&format!("lc{}", i % 5), 200);
                    racing_ok(fs::create_dir(m.p(&d)), "mkdir");
                    racing_ok(fs::create_dir(m.p(&ld)), "mkdir long");
                    let f = format!("{d}/{}", name_of(&format!("f{who}"), 180 + i % 70));
                    racing_ok(fs::write(m.p(&f), f.as_bytes()), "create");
                    let g = format!("{ld}/g{who}-{i}");
                    racing_ok(fs::rename(m.p(&f), m.p(&g)), "rename");
                    racing_ok(fs::read_dir(m.p(&d)).map(|r| r.count()), "readdir");
                    if i % 3 == who {
                        racing_ok(fs::remove_file(m.p(&g)), "unlink");
                        racing_ok(fs::remove_dir(m.p(&d)), "rmdir");
                        racing_ok(fs::remove_dir(m.p(&ld)), "rmdir long");
                    }
                }
            });
        }
    });
    let (sa, sb) = (snapshot(&a.mnt), snapshot(&b.mnt));
    assert_eq!(sa, sb);
    assert!(sa.len() > 10, "{sa:?}");
    // Each file moved holds the path it was made at, whose name went with it.
    for (p, c) in &sa {
        if let Some(c) = c.as_ref().filter(|_| p.to_string_lossy().starts_with("lc")) {
            let made = String::from_utf8(c.clone()).unwrap();
            assert!(
                made.starts_with('c') && made.contains("/f"),
                "{p:?}: {made}"
            );
        }
    }
    for l in [&a, &b] {
        assert!(!l.log_text().contains("ERROR"), "{}", l.log_text());
    }
    drop((a, b));
    let out = run_fsck(&m.kms, &m.backing, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_orphan_long_link_is_removed_only_after_a_complete_walk() {
    let mut m = Mounted::new(&["--encrypt-names"]);
    symlink(target_of(4090), m.p("ll")).unwrap();
    let ll = m.backing.join(fs::read_link(backing_of(&m, "ll")).unwrap());
    m.unmount();
    let stray = m.backing.join(format!("kmsfs.longlink.{}", "B".repeat(43)));
    fs::copy(&ll, &stray).unwrap();
    // A tree deeper than PATH_MAX: fsck cannot list its bottom, where a symlink naming
    // the file could be.
    let deep = m.backing.join("deep");
    fs::create_dir(&deep).unwrap();
    sh(&format!(
        "cd {} && python3 -c 'import os\nfor i in range(25): os.mkdir(\"x\" * 200); os.chdir(\"x\" * 200)'",
        deep.display()
    ));
    let text = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    let out = run_fsck(&m.kms, &m.backing, &["--repair"]);
    let t = text(&out);
    assert!(
        t.contains("not known to be an orphan (not every directory could be read)"),
        "{t}"
    );
    assert!(stray.exists(), "{t}");
    fs::remove_dir_all(&deep).unwrap();
    let out = run_fsck(&m.kms, &m.backing, &["--repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!stray.exists() && ll.exists());
}

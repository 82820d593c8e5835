//! POSIX ACLs through a real mount, side by side with the same steps on the local
//! filesystem the backing directory lives on (ext4 here): `setfacl`/`getfacl` give the
//! same ACLs and modes on both (default ACLs inherited in place of the umask, chmod
//! rewriting the mask, set-group-ID dropped when a non-member sets an ACL), and the
//! kernel enforces them against a real other user, also after a remount. Where a mount
//! would not enforce them (`-o noacl`, `-o shared_storage`) they are refused.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use fsmount::{as_nobody, sh, Mounted};

/// Whether nobody (uid/gid 65534, no other groups) can run `cmd`.
fn nobody_can(cmd: &str) -> bool {
    as_nobody(cmd).status.success()
}

/// Every entry under `dir` (sorted): its ACL as `getfacl -n` prints it, mode, owner.
fn acls(dir: &Path) -> String {
    sh(&format!(
        "cd {} && find . -mindepth 1 | sort | while read -r p; do \
           getfacl -p -n \"$p\"; stat -c '%n %a %u:%g' \"$p\"; done",
        dir.display()
    ))
}

/// The steps, run as root in `dir` (on the mount and on the local filesystem).
fn make_acls(dir: &Path) {
    sh(&format!(
        "set -e; cd {}
         setfacl -m u:nobody:--- f
         setfacl -m u:nobody:r g
         (umask 077; touch plain; mkdir pdir)
         mkdir d; setfacl -d -m u:nobody:rwx d
         (umask 077; touch d/inh; mkdir d/sub; mkfifo d/fifo; ln -s inh d/link)
         (umask 022; printf x > d/w; chmod g-w d/w)
         (umask 077; python3 -c 'import os; os.close(os.open(\"d/suid\", os.O_CREAT, 0o4777))')
         touch h; setfacl -m u:nobody:r h; setfacl -b h
         touch s t; chown nobody:root s; chown nobody:nogroup t; chmod 2775 s t
         setpriv --reuid=65534 --regid=65534 --clear-groups setfacl -m u:root:r s t",
        dir.display()
    ));
}

/// What nobody can do in `dir` once the ACLs are set.
fn check_enforced(dir: &Path) {
    let d = dir.display();
    // (what nobody runs, whether it may, why)
    for (cmd, allowed, why) in [
        (format!("cat {d}/f"), false, "f: u:nobody:--- denies"),
        (format!("cat {d}/g"), true, "g: u:nobody:r grants"),
        (
            format!("echo more >> {d}/d/inh"),
            true,
            "d/inh: the inherited u:nobody:rwx, mask rw-",
        ),
        (
            format!("echo more >> {d}/d/w"),
            false,
            "d/w: chmod g-w narrowed the mask",
        ),
        (
            format!("touch {d}/d/sub/new"),
            true,
            "d/sub: a directory inherits the default ACL as its access ACL",
        ),
    ] {
        assert_eq!(nobody_can(&cmd), allowed, "{d}/{why}");
    }
}

#[test]
fn acls_behave_as_on_the_local_filesystem_and_are_enforced() {
    let mut m = Mounted::new(&["-o", "allow_other"]);
    let native = m.dir.path().join("native");
    fs::create_dir(&native).unwrap();
    for dir in [&native, &m.mnt] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(dir.join("f"), b"secret\n").unwrap();
        fs::set_permissions(dir.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join("g"), b"secret\n").unwrap();
        fs::set_permissions(dir.join("g"), fs::Permissions::from_mode(0o600)).unwrap();
        // Before any ACL, the mode alone decides.
        let d = dir.display();
        assert!(nobody_can(&format!("cat {d}/f")), "{d}/f is 0644");
        assert!(!nobody_can(&format!("cat {d}/g")), "{d}/g is 0600");
    }

    for dir in [&native, &m.mnt] {
        make_acls(dir);
    }
    let want = acls(&native);
    assert!(want.contains("user:65534:rwx\t#effective:rw-"), "{want}");
    assert!(want.contains("./s 775 65534:0"), "{want}");
    assert!(want.contains("./t 2775 65534:65534"), "{want}");
    assert!(want.contains("./d/suid 4775 0:0"), "{want}");
    assert_eq!(acls(&m.mnt), want, "ACLs and modes on the mount vs ext4");
    check_enforced(&native);
    check_enforced(&m.mnt);

    m.unmount();
    m.mount(&["-o", "allow_other"]).unwrap();
    assert_eq!(acls(&m.mnt), acls(&native), "after a remount");
    check_enforced(&m.mnt);
}

/// setfacl on `dir`/`name`: its exit status and stderr.
fn setfacl(dir: &Path, name: &str) -> (bool, String) {
    let out = Command::new("setfacl")
        .args(["-m", "u:nobody:r"])
        .arg(dir.join(name))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn acls_are_refused_where_the_mount_would_not_enforce_them() {
    let mut m = Mounted::new(&["-o", "allow_other"]);
    fs::write(m.p("granted"), b"secret\n").unwrap();
    fs::write(m.p("new"), b"x").unwrap();
    fs::set_permissions(m.p("granted"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        setfacl(&m.mnt, "granted").0,
        "the default mount stores ACLs"
    );
    let mnt = m.mnt.display().to_string();
    assert!(nobody_can(&format!("cat {mnt}/granted")));
    // A default ACL, which new entries inherit while ACLs are on.
    fs::create_dir(m.p("inh")).unwrap();
    sh(&format!("setfacl -d -m u:nobody:rwx,o::- {mnt}/inh"));
    sh(&format!(
        "cd {mnt}/inh && umask 022 && touch on && mkdir ond"
    ));
    let (backing, mnt_path) = (m.backing.clone(), m.mnt.clone());
    let backing_acl = move |name: &str| {
        sh(&format!(
            "getfattr -m system.posix_acl -d {}",
            backing.join(name).display()
        ))
    };
    assert!(backing_acl("inh/on").contains("posix_acl_access"));
    let mode = move |name: &str| {
        fs::symlink_metadata(mnt_path.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!((mode("inh/on"), mode("inh/ond")), (0o660, 0o770));

    for opts in ["allow_other,noacl", "allow_other,shared_storage"] {
        m.unmount();
        m.mount(&["-o", opts]).unwrap();
        // Other xattrs still work.
        sh(&format!("setfattr -n user.note -v {opts} {mnt}/new"));
        assert_eq!(
            sh(&format!("getfattr --only-values -n user.note {mnt}/new")),
            opts
        );
        let (ok, stderr) = setfacl(&m.mnt, "new");
        assert!(
            !ok && stderr.contains("Operation not supported"),
            "{opts}: {stderr}"
        );
        // The ACL stored before is neither shown nor obeyed: the mode decides.
        // (getfacl falls back to the mode where a filesystem has no ACLs.)
        let shown = sh(&format!("getfacl -n {mnt}/granted"));
        assert!(
            shown.contains("group::r--") && !shown.contains("user:65534"),
            "{opts}: {shown}"
        );
        let listed = sh(&format!("getfattr -d -m - {mnt}/granted"));
        assert!(!listed.contains("posix_acl"), "{opts}: {listed}");
        assert!(!nobody_can(&format!("cat {mnt}/granted")), "{opts}");
        // The default ACL on disk does not apply either: the umask alone shapes new
        // entries, which get no ACL.
        let (f, d) = (format!("inh/f-{opts}"), format!("inh/d-{opts}"));
        sh(&format!(
            "cd {mnt} && umask 022 && touch '{f}' && mkdir '{d}'"
        ));
        assert_eq!((mode(&f), mode(&d)), (0o644, 0o755), "{opts}");
        for n in [&f, &d] {
            assert_eq!(backing_acl(n), "", "{opts}: {n}");
        }
    }

    // The ACL itself was kept on disk: back on a default mount it applies again.
    m.unmount();
    m.mount(&["-o", "allow_other"]).unwrap();
    assert!(nobody_can(&format!("cat {mnt}/granted")));
}

//! `mount.fuse.kmsfs`: the kmsfs binary called by mount(8) for `-t fuse.kmsfs` and
//! fstab lines of that type (installed as a symlink, scripts/install-mount-helper.sh).
//!
//! mount(8) runs `/sbin/mount.fuse.kmsfs SOURCE TARGET [-sfnv] [-N NS] [-o OPTS]`; this
//! module turns that into the arguments of `kmsfs mount --no-init SOURCE TARGET`, which
//! daemonises and returns once the mount is live. `-o` options of kmsfs itself (`kms=`,
//! `log_file=`, `threads=`, `dek_cache_size=`, `dek_cache_max_age=`) become its flags;
//! options meant for mount(8) or systemd only are dropped; the rest are mount options.
//! `-o remount,…` (`mount -o remount,ro MNT`) changes the live mount instead: the kernel
//! remounts it read-only or read-write ([`remount`]), the daemon keeps serving.

use std::ffi::OsString;
use std::path::Path;

use anyhow::bail;

/// Exit status mount(8) documents for "mount failure".
pub const EXIT_MOUNT_FAILURE: i32 = 32;

/// Whether the binary was called as the mount helper (by the name in `argv0`).
pub fn called_as_helper(argv0: &OsString) -> bool {
    let name = Path::new(argv0).file_name().unwrap_or_default();
    name == "mount.fuse.kmsfs" || name == "mount.kmsfs"
}

/// Options for mount(8), fstab or systemd, not for the filesystem.
fn mount8_only(o: &str) -> bool {
    matches!(
        o,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "relatime"
            | "norelatime"
            | "strictatime"
            | "lazytime"
            | "nolazytime"
    ) || o.starts_with("x-")
        || o.starts_with("comment=")
        || o.starts_with("helper=")
}

/// What the helper was asked to do.
#[derive(Debug, PartialEq)]
pub enum HelperCall {
    /// Run kmsfs with these arguments (argv[0] included); `verbose` echoes them.
    Mount { args: Vec<OsString>, verbose: bool },
    /// `-f`: pretend (mount(8)'s fake mode): nothing to do.
    Fake,
    /// `-o remount,…`: change the flags of the live mount at `target` (`ro` or `rw`, and
    /// the per-mount `nosuid`/`nodev`/`noexec`/`noatime` given; the others are kept).
    Remount { target: OsString, opts: Vec<String> },
}

/// Translates the helper's arguments (after argv[0]) into kmsfs's.
pub fn translate(argv: &[OsString]) -> anyhow::Result<HelperCall> {
    let mut pos: Vec<OsString> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let (mut fake, mut verbose) = (false, false);
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => match it.next() {
                Some(v) => opts.push(v.to_string_lossy().into_owned()),
                None => bail!("-o needs a value"),
            },
            "-t" => {
                it.next();
            }
            "-N" => bail!("mount namespaces (-N) are not supported by mount.fuse.kmsfs"),
            "-f" => fake = true,
            "-v" => verbose = true,
            "-n" | "-s" | "-r" | "-w" => {}
            x if x.starts_with("-o") => opts.push(x[2..].to_owned()),
            x if x.starts_with('-') && x.len() > 1 => {
                bail!("unknown option {x}; usage: mount.fuse.kmsfs BACKING MOUNTPOINT [-o OPTS]")
            }
            _ => pos.push(a.clone()),
        }
    }
    if pos.len() != 2 {
        bail!("usage: mount.fuse.kmsfs BACKING MOUNTPOINT [-o kms=PATH|URL,OPTS]");
    }
    if fake {
        return Ok(HelperCall::Fake);
    }
    let all: Vec<String> = opts
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if all.iter().any(|o| o == "remount") {
        return Ok(HelperCall::Remount {
            target: pos[1].clone(),
            opts: all,
        });
    }
    let mut args: Vec<OsString> = vec!["kmsfs".into()];
    let mut mount_opts: Vec<String> = Vec::new();
    // `--kms` is kmsfs's (before the subcommand), the others `mount`'s (after it).
    let mut global: Vec<OsString> = Vec::new();
    let mut flags: Vec<OsString> = Vec::new();
    for o in all.iter().map(String::as_str) {
        if mount8_only(o) {
            continue;
        }
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        let flag = match k {
            "kms" => "--kms",
            "log_file" => "--log-file",
            "threads" => "--threads",
            "dek_cache_size" => "--dek-cache-size",
            "dek_cache_max_age" => "--dek-cache-max-age",
            _ => {
                mount_opts.push(o.to_owned());
                continue;
            }
        };
        if v.is_empty() {
            bail!("mount option {k}= needs a value");
        }
        let to = if k == "kms" { &mut global } else { &mut flags };
        to.push(flag.into());
        to.push(v.into());
    }
    args.extend(global);
    args.push("mount".into());
    args.push("--no-init".into());
    args.extend(flags);
    args.push(pos[0].clone());
    args.push(pos[1].clone());
    if !mount_opts.iter().any(|o| o.starts_with("fsname=")) {
        // /proc/mounts then names the backing directory as the source, as fstab does.
        let mut f = OsString::from("fsname=");
        f.push(&pos[0]);
        args.push("-o".into());
        args.push(f);
    }
    if !mount_opts.is_empty() {
        args.push("-o".into());
        args.push(mount_opts.join(",").into());
    }
    Ok(HelperCall::Mount { args, verbose })
}

/// `mount(2)` with `MS_REMOUNT` on `target`: read-only with `ro`, read-write with `rw`,
/// `nosuid`/`nodev`/`noexec`/`noatime` (and their opposites) as given, every other flag of
/// the mount as it is now (the kernel replaces a mount's flags by those passed). The FUSE
/// superblock accepts it; the daemon keeps serving, and the kernel refuses writes with
/// EROFS while the mount is read-only. Needs root (fusermount3 cannot remount).
pub fn remount(target: &Path, opts: &[String]) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: a zeroed statvfs is a valid out-parameter; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        bail!(
            "cannot remount {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    let have = |f: u64| st.f_flag & f != 0;
    let mut flags: libc::c_ulong = libc::MS_REMOUNT;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_SYNCHRONOUS, libc::MS_SYNCHRONOUS),
    ] {
        if have(st_flag) {
            flags |= ms_flag;
        }
    }
    for o in opts {
        let (set, clear) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noatime" => (libc::MS_NOATIME, libc::MS_RELATIME),
            "atime" => (0, libc::MS_NOATIME),
            "relatime" => (libc::MS_RELATIME, libc::MS_NOATIME),
            _ => (0, 0),
        };
        flags = (flags | set) & !clear;
    }
    // SAFETY: valid C string; no source, type or data for a remount.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            bail!(
                "cannot remount {}: {e}; remounting needs root (fusermount3 cannot): \
                 unmount it and mount it again with -o ro or rw",
                target.display()
            );
        }
        bail!("cannot remount {}: {e}", target.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(a: &[&str]) -> HelperCall {
        translate(&a.iter().map(OsString::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn maps_kms_drops_mount8_options_keeps_the_rest() {
        let HelperCall::Mount { args, verbose } = t(&[
            "/srv/enc",
            "/mnt/plain",
            "-n",
            "-v",
            "-o",
            "rw,kms=/var/lib/kms,nofail,_netdev,x-systemd.automount,allow_other,noauto",
        ]) else {
            panic!("not a mount")
        };
        assert!(verbose);
        let s: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            s,
            [
                "kmsfs",
                "--kms",
                "/var/lib/kms",
                "mount",
                "--no-init",
                "/srv/enc",
                "/mnt/plain",
                "-o",
                "fsname=/srv/enc",
                "-o",
                "rw,allow_other"
            ]
        );
        assert_eq!(t(&["a", "b", "-f", "-o", "kms=x"]), HelperCall::Fake);
        // kmsfs's own options: --kms before the subcommand, the others after it.
        let HelperCall::Mount { args, .. } = t(&[
            "/srv/enc",
            "/mnt/plain",
            "-o",
            "log_file=/var/log/k.log,kms=/k,threads=2,ro",
        ]) else {
            panic!("not a mount")
        };
        let s: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            s[..10],
            [
                "kmsfs",
                "--kms",
                "/k",
                "mount",
                "--no-init",
                "--log-file",
                "/var/log/k.log",
                "--threads",
                "2",
                "/srv/enc"
            ]
        );
        assert_eq!(
            t(&["/srv/enc", "/mnt/plain", "-o", "remount,ro"]),
            HelperCall::Remount {
                target: "/mnt/plain".into(),
                opts: vec!["remount".into(), "ro".into()]
            }
        );
        assert!(translate(&[OsString::from("only-one")]).is_err());
        assert!(called_as_helper(&"/sbin/mount.fuse.kmsfs".into()));
        assert!(!called_as_helper(&"/usr/bin/kmsfs".into()));
    }
}

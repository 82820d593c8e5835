//! `mount.fuse.kmsfs`: the kmsfs binary called by mount(8) for `-t fuse.kmsfs` and
//! fstab lines of that type (installed as a symlink, scripts/install-mount-helper.sh).
//!
//! mount(8) runs `/sbin/mount.fuse.kmsfs SOURCE TARGET [-sfnv] [-N NS] [-o OPTS]`; this
//! module turns that into the arguments of `kmsfs mount --no-init SOURCE TARGET`, which
//! daemonises and returns once the mount is live. `-o` options of kmsfs itself (`kms=`,
//! `log_file=`, `threads=`, `dek_cache_size=`, `dek_cache_max_age=`) become its flags;
//! options meant for mount(8) or systemd only are dropped; the rest are mount options.

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
    let mut args: Vec<OsString> = vec!["kmsfs".into()];
    let mut mount_opts: Vec<String> = Vec::new();
    let mut flags: Vec<OsString> = Vec::new();
    for o in opts
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
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
        flags.push(flag.into());
        flags.push(v.into());
    }
    args.extend(flags);
    args.push("mount".into());
    args.push("--no-init".into());
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
        assert!(translate(&[OsString::from("only-one")]).is_err());
        assert!(called_as_helper(&"/sbin/mount.fuse.kmsfs".into()));
        assert!(!called_as_helper(&"/usr/bin/kmsfs".into()));
    }
}

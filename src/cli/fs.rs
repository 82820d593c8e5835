//! `kmsfs init | umount | stats`: the filesystem commands other than `mount` (cli/mount.rs).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::fuse;
use crate::volume::create::{connect, init_backing, InitFlags};

/// `kmsfs init BACKING`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The backing directory that will hold the encrypted files (created if missing).
    pub backing: PathBuf,
    #[command(flatten)]
    pub init: InitFlags,
}

/// `kmsfs umount MOUNTPOINT`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mountpoint.
    pub mountpoint: PathBuf,
    /// Detach the mount now even if files on it are in use; the daemon exits once the
    /// last of them is closed (`fusermount3 -uz`, `umount -l`).
    #[arg(short = 'l', long)]
    pub lazy: bool,
}

/// `kmsfs stats MOUNTPOINT`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The mountpoint.
    pub mountpoint: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Adds what to do next to a KMS refusal or failure met while opening a volume.
pub fn with_next_step(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    let hint = if text.contains("CmkDisabled") || text.contains("KeyDisabled") {
        "the volume's CMK is disabled: enable it again (kmsfs kms EnableKey --KeyId ID) \
         if that was not intended"
    } else if text.contains("PendingDelete") {
        "the volume's CMK is scheduled for deletion: cancel it \
         (kmsfs kms CancelKeyDeletion --KeyId ID) before it is too late"
    } else if text.contains("CmkArchived") {
        "the volume's CMK is archived: kmsfs kms CancelKeyArchive --KeyId ID"
    } else if text.contains("InternalError") || text.contains("connect") {
        "the KMS did not answer: check that the KMS server is running and that --kms \
         (or $KMSFS_KMS) names it, then retry"
    } else {
        return e;
    };
    e.context(hint)
}

/// Runs `kmsfs init`.
pub fn init(kms: Option<&str>, a: InitArgs) -> anyhow::Result<i32> {
    let k = connect(kms)?;
    let cfg = init_backing(k.as_ref(), kms, &a.backing, &a.init)?;
    println!(
        "kmsfs: initialised volume {} in {} (CMK {}, DEK policy {:?})",
        cfg.uuid,
        a.backing.display(),
        cfg.cmk,
        cfg.dek_policy.mode
    );
    Ok(0)
}

/// Sets `HOME` from the passwd entry of the real user where the environment has none
/// (mount(8) runs the helper of an fstab `user` mount with a scrubbed environment), so the
/// default KMS store of that user (`~/.local/share/kmsfs/kms`) is found. Call it first
/// in `main`, before any thread starts.
pub fn ensure_home() {
    if std::env::var_os("HOME").is_some_and(|h| !h.is_empty()) {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buf outlives the call and every use of pw's strings below; out is checked.
    let r = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if r != 0 || out.is_null() || pw.pw_dir.is_null() {
        return;
    }
    // SAFETY: pw_dir points to a NUL-terminated string inside buf.
    let dir = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) };
    let home = Path::new(std::ffi::OsStr::from_bytes(dir.to_bytes()));
    if home.is_absolute() {
        std::env::set_var("HOME", home);
    }
}

pub(crate) fn getxattr_path(p: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        bail!("{} is not a kmsfs mount ({e})", p.display());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// Runs `kmsfs umount`.
pub fn umount(a: UmountArgs) -> anyhow::Result<i32> {
    // A dead mount (ENOTCONN) cannot be canonicalised; its absolute path still names it.
    let mp = a
        .mountpoint
        .canonicalize()
        .or_else(|_| std::path::absolute(&a.mountpoint))
        .unwrap_or(a.mountpoint.clone());
    if !is_mountpoint(&mp) {
        bail!(
            "{} is not mounted (nothing to unmount); `grep fuse.kmsfs /proc/mounts` lists \
             kmsfs mounts",
            mp.display()
        );
    }
    let pid: Option<i32> = getxattr_path(&mp, fuse::PID_XATTR)
        .ok()
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok());
    let busy = |e: &str| {
        format!(
            "cannot unmount {m}: {e}; files on it are still in use: `fuser -vm {m}` lists the \
             processes: close them and retry, or `kmsfs umount --lazy {m}` detaches it now \
             (the daemon exits when the last file is closed)",
            m = mp.display()
        )
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fusermount = std::process::Command::new("fusermount3")
        .arg(if a.lazy { "-uz" } else { "-u" })
        .arg(&mp)
        .stderr(std::process::Stdio::piped())
        .output();
    let said = match &fusermount {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Some(format!("fusermount3: {e}")),
    };
    if let Some(said) = said {
        if !root {
            // Only fusermount3 may unmount for a user: its own words, and what to do.
            if said.contains("busy") {
                bail!(busy(&said));
            }
            bail!(
                "cannot unmount {}: {said}{}",
                mp.display(),
                if said.contains("not found") || said.contains("No such file") {
                    " (install the fuse3 package)"
                } else {
                    ""
                }
            );
        }
        let c = CString::new(mp.as_os_str().as_bytes())?;
        let flags = if a.lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                bail!(busy(&e.to_string()));
            }
            bail!("cannot unmount {}: {e}", mp.display());
        }
    }
    if a.lazy {
        // The daemon serves what is still open; it exits when the kernel lets it go.
        return Ok(0);
    }
    if let Some(pid) = pid {
        let t0 = Instant::now();
        // SAFETY: kill with signal 0 only probes.
        while unsafe { libc::kill(pid, 0) } == 0 && is_kmsfs(pid) {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "unmounted, but the daemon (pid {pid}) has not exited after 30 s; it may \
                     still be flushing: check its --log-file, and wait or `kill {pid}`"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(0)
}

/// Whether `p` is a mountpoint, per /proc/self/mountinfo.
pub(crate) fn is_mountpoint(p: &Path) -> bool {
    // mountinfo escapes space, tab, newline and backslash as octal.
    let mut want = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => want.extend(format!("\\{b:03o}").bytes()),
            _ => want.push(b),
        }
    }
    let want = &want[..];
    std::fs::read("/proc/self/mountinfo")
        .map(|s| {
            s.split(|b| *b == b'\n')
                .any(|l| l.split(|b| *b == b' ').nth(4) == Some(want))
        })
        .unwrap_or(true)
}

/// Whether `pid` is a live kmsfs process (not a zombie). The daemon's pid as it reports
/// it is only meaningful in its own PID namespace: in another one the number may name an
/// unrelated process, which this keeps `umount` from waiting for (or naming).
fn is_kmsfs(pid: i32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    // "kmsfs", or the mount helper's names ("mount.kmsfs", "mount.fuse.kmsf…", 15 bytes).
    comm.contains("kmsf")
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// Runs `kmsfs stats`.
pub fn stats(a: StatsArgs) -> anyhow::Result<i32> {
    let raw = getxattr_path(&a.mountpoint, fuse::STATS_XATTR)?;
    let v: serde_json::Value = serde_json::from_slice(&raw).context("bad stats from the daemon")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
    let lat = |k: &str| {
        v["kms_latency"]
            .get(k)
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0)
    };
    let up = n("uptime_secs");
    println!("volume          {}", s("volume"));
    println!("cmk             {}", s("cmk"));
    println!(
        "uptime          {}h{:02}m{:02}s",
        up / 3600,
        up / 60 % 60,
        up % 60
    );
    println!(
        "open files      {} (handles {}, inodes {})",
        n("open_files"),
        n("open_handles"),
        n("inodes")
    );
    println!("bytes read      {}", n("bytes_read"));
    println!("bytes written   {}", n("bytes_written"));
    println!(
        "DEK cache       {} hits, {} misses, {} evictions, {} expired; {} of {} cached, max age {} s",
        n("hits"),
        n("misses"),
        n("evictions"),
        n("expirations"),
        n("cached_deks"),
        n("capacity"),
        n("max_age_secs")
    );
    println!(
        "KMS calls       {} ({} failed, {} DEKs generated); latency mean {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        n("kms_calls"),
        n("kms_failures"),
        n("deks_generated"),
        lat("mean_ms"),
        lat("p99_ms"),
        lat("max_ms")
    );
    println!(
        "integrity       {} failures ({} bad blocks, {} bad headers)",
        n("integrity_failures"),
        n("bad_blocks"),
        n("bad_headers")
    );
    Ok(0)
}

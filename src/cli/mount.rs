//! `kmsfs mount`: the options, the checks before mounting, the daemon process (hardened,
//! in the foreground or in the background with a readiness pipe) and its FUSE session.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use fuser::{Config, MountOption, SessionACL};

use crate::backing::nodes::open_root;
use crate::cli::fs::{getxattr_path, is_mountpoint, with_next_step};
use crate::fuse::{self, KmsFs};
use crate::volume::create::{connect, dir_is_empty, InitFlags};
use crate::volume::{self, CacheOptions, PolicyMode, Volume, CONFIG_NAME};

/// Environment variable carrying the readiness pipe of a background mount.
const READY_FD_ENV: &str = "KMSFS_READY_FD";

/// `kmsfs mount BACKING MOUNTPOINT`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// The backing directory (a new or empty one is initialised first).
    pub backing: PathBuf,
    /// Where the plaintext view appears.
    pub mountpoint: PathBuf,
    /// Stay in the foreground (log to stderr) instead of serving in the background.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Mount options, comma-separated: allow_other (implies default_permissions), ro,
    /// suid, dev, exec/noexec, atime/noatime, sync, fsname=…, shared_storage (other
    /// daemons serve the same backing directory at once), writeback_cache (writes land
    /// in the page cache and reach the disk in large batches: faster, but a full disk or a
    /// refused key is reported by fsync and close, not by write; see docs/OPERATIONS.md),
    /// noacl (POSIX ACLs refused; by default they are stored and enforced, except with
    /// shared_storage), max_fds=N (the daemon's fd budget, default 512; each file open
    /// through the mount holds one more), and other FUSE options.
    /// Default: nosuid,nodev,default_permissions.
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Log file of a background daemon (default: none).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// FUSE worker threads. More than cores pays: a request finds a thread already
    /// waiting on an idle core (4 KiB random IO here, 2 cores: 1 thread 14k, 2 threads 25k,
    /// 4 threads 31k operations/s).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// DEK cache capacity (entries).
    #[arg(long, default_value_t = 1024)]
    pub dek_cache_size: usize,
    /// Maximum age of a cached DEK, in seconds: after it, the KMS is asked again (so a
    /// disabled CMK locks files within this time).
    #[arg(long, default_value_t = 300)]
    pub dek_cache_max_age: u64,
    /// Refuse to initialise a new volume (as a mount helper must).
    #[arg(long, conflicts_with = "init_new")]
    pub no_init: bool,
    /// Create BACKING and a new volume in it if BACKING does not exist (without this, a
    /// missing BACKING is refused, or asked about on a terminal: a mistyped path must not
    /// become an empty new volume). An existing empty directory is initialised either way.
    #[arg(long = "init", id = "init_new")]
    pub init_new: bool,
    /// Other kmsfs daemons serve the same backing directory at the same time (same as
    /// `-o shared_storage`; see docs/SERVER.md, "Shared storage").
    #[arg(long)]
    pub shared_storage: bool,
    #[command(flatten)]
    pub init: InitFlags,
}

/// The `subtype=` option, as a kernel option: fuser's own `Subtype` reaches only
/// fusermount3, not the mount(2) call it makes as root, so /proc/mounts said `fuse`;
/// as a plain option the kernel (root) and fusermount3 (users) both see it, and the
/// mount's type is `fuse.kmsfs` either way.
fn subtype(name: &str) -> MountOption {
    MountOption::CUSTOM(format!("subtype={name}"))
}

/// Parsed `-o` options.
struct MountOpts {
    fuse: Vec<MountOption>,
    acl: SessionACL,
    read_only: bool,
    /// `shared_storage`: other daemons share the backing directory.
    shared: bool,
    /// `writeback_cache`: the kernel caches writes (see [`KmsFs::with_writeback_cache`]).
    writeback: bool,
    /// POSIX ACLs (`noacl` turns them off; see [`KmsFs::with_posix_acl`]).
    posix_acl: bool,
    /// `max_fds=N`: the daemon's fd budget (see [`KmsFs::with_max_fds`]).
    max_fds: Option<usize>,
}

fn parse_opts(list: &[String], backing: &Path) -> anyhow::Result<MountOpts> {
    let mut suid = false;
    let mut dev = false;
    let mut fuse = vec![
        MountOption::FSName(format!("kmsfs:{}", backing.display())),
        subtype("kmsfs"),
        MountOption::DefaultPermissions,
    ];
    let mut acl = SessionACL::Owner;
    let mut read_only = false;
    let mut shared = false;
    let mut writeback = false;
    let mut posix_acl = true;
    let mut max_fds = None;
    for o in list
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        match o {
            "allow_other" => acl = SessionACL::All,
            "allow_root" => acl = SessionACL::RootAndOwner,
            "default_permissions" | "nonempty" => {}
            "shared_storage" => shared = true,
            "writeback_cache" => writeback = true,
            "no_writeback_cache" => writeback = false,
            "acl" => posix_acl = true,
            "noacl" => posix_acl = false,
            "ro" => {
                read_only = true;
                fuse.push(MountOption::RO);
            }
            "rw" => fuse.push(MountOption::RW),
            "suid" => suid = true,
            "nosuid" => suid = false,
            "dev" => dev = true,
            "nodev" => dev = false,
            "exec" => fuse.push(MountOption::Exec),
            "noexec" => fuse.push(MountOption::NoExec),
            "atime" => fuse.push(MountOption::Atime),
            "noatime" => fuse.push(MountOption::NoAtime),
            "sync" => fuse.push(MountOption::Sync),
            "async" => fuse.push(MountOption::Async),
            "dirsync" => fuse.push(MountOption::DirSync),
            x if x.starts_with("max_fds=") => {
                let n: usize = x[8..]
                    .parse()
                    .ok()
                    .filter(|&n| n >= 64)
                    .with_context(|| format!("-o {x}: give a number of fds, at least 64"))?;
                max_fds = Some(n);
            }
            x if x.starts_with("fsname=") => {
                fuse.retain(|m| !matches!(m, MountOption::FSName(_)));
                fuse.push(MountOption::FSName(x[7..].into()))
            }
            x if x.starts_with("subtype=") => {
                fuse.retain(|m| !matches!(m, MountOption::CUSTOM(c) if c.starts_with("subtype=")));
                fuse.push(subtype(&x[8..]))
            }
            x => fuse.push(MountOption::CUSTOM(x.into())),
        }
    }
    fuse.push(if suid {
        MountOption::Suid
    } else {
        MountOption::NoSuid
    });
    fuse.push(if dev {
        MountOption::Dev
    } else {
        MountOption::NoDev
    });
    Ok(MountOpts {
        fuse,
        acl,
        read_only,
        shared,
        writeback,
        posix_acl,
        max_fds,
    })
}

/// Runs `kmsfs mount`.
pub fn mount(kms: Option<&str>, mut a: MountArgs) -> anyhow::Result<i32> {
    if !a.no_init && !a.init_new && !a.backing.exists() {
        confirm_new_backing(&a.backing)?;
        a.init_new = true;
    }
    if !a.foreground {
        return spawn_background(kms, &a);
    }
    // Foreground (or the re-executed background child, which reports over READY_FD).
    let ready_fd: Option<RawFd> = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse().ok());
    std::env::remove_var(READY_FD_ENV);
    let r = serve(kms, &a, ready_fd);
    if let (Err(e), Some(fd)) = (&r, ready_fd) {
        // SAFETY: the fd was handed to us by our parent for this purpose.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = write!(f, "error: {e:#}");
        return Ok(1);
    }
    r
}

/// Set once the mounted volume turns out to encrypt names: fuser's per-request debug lines
/// (`fuser::request`, at `KMSFS_LOG=debug`) carry the plaintext names and symlink targets
/// of lookups, creates and renames, and are then dropped whatever the log level.
static NAMES_ARE_SECRET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn init_logging_to(file: Option<&Path>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let redact = tracing_subscriber::filter::filter_fn(|m| {
        !(m.target().starts_with("fuser::request")
            && NAMES_ARE_SECRET.load(std::sync::atomic::Ordering::Relaxed))
    });
    // fuser 0.18 tries to unmount again once the kernel has ended a session (its check of
    // the /dev/fuse fd takes POLLERR, the sign of an ended connection, for "still mounted")
    // and warns "Failed to umount filesystem: Invalid argument" after every clean
    // unmount; its other session messages are errors. `serve` says itself if a mount
    // outlives its session.
    let filter = EnvFilter::try_from_env("KMSFS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,fuser::session=error"));
    match file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    }) {
        Some(f) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .finish()
                .with(redact)
                .try_init();
        }
        None => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .finish()
                .with(redact)
                .try_init();
        }
    }
}

fn serve(kms: Option<&str>, a: &MountArgs, ready_fd: Option<RawFd>) -> anyhow::Result<i32> {
    init_logging_to(a.log_file.as_deref());
    let backing_given = &a.backing;
    if !backing_given.exists() {
        if !a.init_new {
            bail!(
                "{} does not exist; check the path, or create a volume there with `kmsfs init`",
                backing_given.display()
            );
        }
        std::fs::create_dir_all(backing_given)
            .with_context(|| format!("cannot create {}", backing_given.display()))?;
    }
    let backing = backing_given
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", backing_given.display()))?;
    let missing = matches!(std::fs::symlink_metadata(&a.mountpoint),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    if missing && !a.no_init {
        std::fs::create_dir_all(&a.mountpoint)
            .with_context(|| format!("cannot create mountpoint {}", a.mountpoint.display()))?;
    }
    let mountpoint = a.mountpoint.canonicalize().map_err(|e| {
        let m = a.mountpoint.display();
        anyhow::anyhow!("mountpoint {m}: {e}; create the directory first (mkdir -p {m})")
    })?;
    if mountpoint.starts_with(&backing) || backing.starts_with(&mountpoint) {
        bail!(
            "the mountpoint and the backing directory must not contain each other; \
             put them side by side (e.g. /srv/enc and /mnt/plain)"
        );
    }
    check_mount_prerequisites(&mountpoint, &a.options)?;
    let k = connect(kms)?;
    let mut init_msg = String::new();
    if !backing.join(CONFIG_NAME).exists() {
        if a.no_init {
            bail!(
                "{} is not a kmsfs volume (no {CONFIG_NAME}); check the path, or make it a \
                 volume first with `kmsfs init {}`",
                backing.display(),
                backing.display()
            );
        }
        if !dir_is_empty(&backing)? {
            bail!(
                "{} is neither a kmsfs volume nor empty; use an empty directory for a new volume",
                backing.display()
            );
        }
        let cfg = volume::init_volume(k.as_ref(), kms, &backing, &a.init.options())?;
        let msg = format!(
            "kmsfs: {} is a new volume {}; created CMK {} in the KMS ({})",
            backing.display(),
            cfg.uuid,
            cfg.cmk,
            kms.unwrap_or("default embedded store")
        );
        eprintln!("{msg}");
        init_msg = msg;
    }
    let opts = parse_opts(&a.options, &backing)?;
    let shared = opts.shared || a.shared_storage;
    let vol = Arc::new(
        Volume::open_with(
            k,
            kms,
            &backing,
            CacheOptions {
                capacity: a.dek_cache_size,
                max_age: Duration::from_secs(a.dek_cache_max_age.max(1)),
            },
            shared,
        )
        .map_err(with_next_step)?,
    );
    if vol.names.is_some() {
        NAMES_ARE_SECRET.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if a.init.encrypt_names && init_msg.is_empty() && vol.names.is_none() {
        // The flag chooses how a new volume stores names; this one exists, with plain names.
        bail!(
            "{} is a volume with plain names: --encrypt-names applies only when a volume is \
             made (kmsfs init, or the first mount of an empty directory). To encrypt names, \
             make a new volume with --encrypt-names and copy the files into it (kmsfs \
             encrypt), or mount this one without the flag",
            backing.display()
        );
    }
    harden_process();
    let root = open_root(&backing).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fs = KmsFs::new(vol, root, opts.read_only)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_shared_storage(shared)
        .with_writeback_cache(opts.writeback)
        .with_posix_acl(opts.posix_acl)
        .with_max_fds(fd_budget(opts.max_fds));
    let mut config = Config::default();
    config.mount_options = opts.fuse;
    config.acl = opts.acl;
    config.n_threads = Some(a.threads.max(1));
    config.clone_fd = a.threads > 1;
    // Block SIGINT/SIGTERM in every thread; one thread waits for them and unmounts.
    let set = block_signals();
    let expiry = fs.key_expiry();
    let mut session = fuser::Session::new(fs, &mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    let notifier = session.notifier();
    std::thread::spawn(move || expiry.run(notifier));
    tracing::info!(backing = %backing.display(), mountpoint = %mountpoint.display(), "mounted");
    if let Some(fd) = ready_fd {
        // SAFETY: our parent's pipe.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = write!(f, "ready\n{init_msg}");
        drop(f);
        detach_stdio();
    } else {
        notify_systemd_ready(&mountpoint);
    }
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: set is a valid sigset; sig receives the signal number.
        unsafe { libc::sigwait(&set, &mut sig) };
        tracing::info!(signal = sig, "unmounting");
        if let Err(e) = unmounter.unmount() {
            tracing::error!("unmount failed: {e}");
        }
    });
    session.run().context("FUSE session failed")?;
    if is_mountpoint(&mountpoint) && getxattr_path(&mountpoint, fuse::PID_XATTR).is_err() {
        tracing::warn!(mountpoint = %mountpoint.display(), "the FUSE session ended but the mountpoint is still mounted");
    }
    tracing::info!("unmounted, exiting");
    Ok(0)
}

/// A `kmsfs mount` of a BACKING that does not exist: on a terminal, asks whether to make
/// a new volume there; otherwise (scripts, services) refuses, naming `kmsfs init` and
/// `--init`. A mistyped path must not silently become an empty volume with a new CMK.
fn confirm_new_backing(backing: &Path) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let refuse = || {
        anyhow::anyhow!(
            "{b} does not exist: check the path; to make a new volume there, run \
             `kmsfs init {b}` first (or mount with --init, or `mkdir {b}`: an empty directory \
             becomes a new volume on its first mount)",
            b = backing.display()
        )
    };
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(refuse());
    }
    eprint!(
        "kmsfs: {} does not exist. Create it as a new encrypted volume (with a new CMK)? [y/N] ",
        backing.display()
    );
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// What mounting needs before any KMS call: /dev/fuse, fusermount3 (without root), and
/// an empty directory as mountpoint (unless `-o nonempty`). Each error says what to do.
fn check_mount_prerequisites(mountpoint: &Path, options: &[String]) -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "/dev/fuse is missing: load the FUSE module (modprobe fuse) or, in a container, \
             pass the device in (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
        );
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !on_path("fusermount3") {
        bail!(
            "fusermount3 is not installed; mounting without root needs it: \
             ask an administrator to install the fuse3 package (apt-get install fuse3)"
        );
    }
    if !root && !accessible(Path::new("/dev/fuse"), libc::R_OK | libc::W_OK) {
        bail!(
            "/dev/fuse is not readable and writable by you, so you cannot mount FUSE \
             filesystems: ask an administrator to `chmod 0666 /dev/fuse` (the mode Debian \
             and most distributions give it) or to add you to the group that owns it"
        );
    }
    let others = options
        .iter()
        .flat_map(|s| s.split(','))
        .any(|o| o == "allow_other" || o == "allow_root");
    if !root && others && !user_allow_other() {
        bail!(
            "-o allow_other (or allow_root) needs the line `user_allow_other` in \
             /etc/fuse.conf when you mount without root: ask an administrator to add it, \
             or mount without the option (only you then see the files)"
        );
    }
    let m = mountpoint.display();
    if !root && mountpoint.is_dir() && !accessible(mountpoint, libc::W_OK) {
        bail!(
            "you cannot mount on {m}: without root, fusermount3 mounts only on a directory \
             you can write (typically one you own); use one of yours, e.g. `mkdir ~/plain`"
        );
    }
    match std::fs::metadata(mountpoint) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => bail!("the mountpoint {m} is not a directory; mount on a directory"),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "{m} is a dead FUSE mount (its daemon exited): run `kmsfs umount {m}` \
             (or `umount -l {m}`), then mount again"
        ),
        Err(e) => bail!("cannot use the mountpoint {m}: {e}"),
    }
    let nonempty = options
        .iter()
        .flat_map(|s| s.split(','))
        .any(|o| o == "nonempty");
    if !nonempty && !dir_is_empty(mountpoint)? {
        bail!(
            "the mountpoint {} is not empty: the mount would hide its files; use an empty \
             directory, or pass -o nonempty to mount over them anyway",
            mountpoint.display()
        );
    }
    Ok(())
}

/// Whether /etc/fuse.conf lets users mount with allow_other (fusermount3 reads it so:
/// the word on a line by itself).
fn user_allow_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .map(|c| c.lines().any(|l| l.trim() == "user_allow_other"))
        .unwrap_or(false)
}

/// `access(2)` with the real uid: whether we may `mode` (R_OK, W_OK, X_OK) `p`.
fn accessible(p: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid C string.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// Whether `prog` is found on PATH, or where exec looks without one (mount(8) runs its
/// helpers for users with a scrubbed environment).
fn on_path(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(prog).is_file())
}

/// Tells systemd that a foreground mount is live (`Type=notify` units): `READY=1` on
/// `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Without it, nothing.
fn notify_systemd_ready(mountpoint: &Path) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(Path::new(&target)),
    };
    let msg = format!(
        "READY=1\nMAINPID={}\nSTATUS=kmsfs mounted on {}\n",
        std::process::id(),
        mountpoint.display()
    );
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(msg.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {}: {e}", target.to_string_lossy());
    }
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on this thread (inherited
    // by threads spawned later).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// DEK plaintext stays out of swap and core dumps: no dumps, locked memory (as root).
fn harden_process() {
    // SAFETY: plain prctl/umask/mlockall/setrlimit calls with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::umask(0);
        if libc::geteuid() == 0
            && libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) != 0
        {
            tracing::warn!("mlockall failed; DEKs could be swapped out");
        }
        // Files open through the mount hold a backing fd each (inodes share a bounded
        // cache, see fuse::inodes): raise the fd limit as far as allowed (root: up to
        // fs.nr_open), as the Go runtime does for gocryptfs.
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if libc::geteuid() == 0 && nr_open > rl.rlim_max {
                let want = libc::rlimit {
                    rlim_cur: nr_open,
                    rlim_max: nr_open,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    return;
                }
            }
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// The fd budget of the daemon: `-o max_fds=N`, else [`fuse::inodes::DEFAULT_MAX_FDS`],
/// and never more than three quarters of the fd limit (raised to its hard limit by
/// [`harden_process`]), which files open through the mount share.
fn fd_budget(asked: Option<usize>) -> usize {
    let want = asked.unwrap_or(fuse::inodes::DEFAULT_MAX_FDS);
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return want;
    }
    let cap = usize::try_from(rl.rlim_cur / 4 * 3).unwrap_or(usize::MAX);
    if want > cap {
        tracing::warn!(
            asked = want,
            limit = rl.rlim_cur,
            "fd budget lowered to three quarters of RLIMIT_NOFILE"
        );
    }
    want.min(cap)
}

fn detach_stdio() {
    // SAFETY: dup2 of /dev/null over 0, 1 (and 2 unless logging goes there).
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::close(fd);
        }
    }
}

fn spawn_background(kms: Option<&str>, a: &MountArgs) -> anyhow::Result<i32> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let (rd, wr) = (fds[0], fds[1]);
    let exe = std::env::current_exe().context("cannot find the kmsfs executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("mount")
        .arg("-f")
        .arg(&a.backing)
        .arg(&a.mountpoint);
    for o in &a.options {
        cmd.arg("-o").arg(o);
    }
    if let Some(l) = &a.log_file {
        cmd.arg("--log-file").arg(l);
    }
    cmd.arg("--threads").arg(a.threads.to_string());
    cmd.arg("--dek-cache-size")
        .arg(a.dek_cache_size.to_string());
    cmd.arg("--dek-cache-max-age")
        .arg(a.dek_cache_max_age.to_string());
    if a.no_init {
        cmd.arg("--no-init");
    }
    if a.init_new {
        cmd.arg("--init");
    }
    if a.shared_storage {
        cmd.arg("--shared-storage");
    }
    if let Some(k) = &a.init.key {
        cmd.arg("--key").arg(k);
    }
    cmd.arg("--dek-policy").arg(match a.init.dek_policy {
        PolicyMode::Shared => "shared",
        PolicyMode::PerFile => "per-file",
    });
    cmd.arg("--dek-max-age").arg(a.init.dek_max_age.to_string());
    cmd.arg("--dek-max-files")
        .arg(a.init.dek_max_files.to_string());
    if a.init.encrypt_names {
        cmd.arg("--encrypt-names");
    }
    if let Some(k) = kms {
        cmd.env("KMSFS_KMS", k);
    }
    cmd.env(READY_FD_ENV, wr.to_string());
    // The daemon must not hold our stdout/stderr: callers wait for their EOF. Its
    // errors before readiness come back over the pipe; later ones go to --log-file.
    cmd.stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::null());
    // SAFETY: in the child between fork and exec: only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // Keep the write end across exec.
            let fl = libc::fcntl(wr, libc::F_GETFD);
            libc::fcntl(wr, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the kmsfs daemon")?;
    // SAFETY: we own both ends; close our write end so EOF arrives if the child dies.
    unsafe { libc::close(wr) };
    // SAFETY: read end owned here.
    let mut r = unsafe { std::fs::File::from_raw_fd(rd) };
    let mut msg = String::new();
    let _ = r.read_to_string(&mut msg);
    if let Some(info) = msg.strip_prefix("ready") {
        if !info.trim().is_empty() {
            eprintln!("{}", info.trim());
        }
        return Ok(0);
    }
    let status = child.try_wait().ok().flatten();
    if let Some(e) = msg.strip_prefix("error: ") {
        bail!("{e}");
    }
    bail!("the kmsfs daemon exited before the mount was ready ({status:?})")
}

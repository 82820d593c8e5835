//! `kmsfs rewrap BACKING [--to-key KEY]`: re-wraps every file header's DEK (and the
//! config DEK) under the newest version of the volume's CMK, or under another CMK, with
//! the KMS's ReEncrypt. File content is never rewritten: the DEK plaintext does not
//! change, only its wrapping.
//!
//! Crash safety, per file: the new wrapped DEK goes into the header's *inactive* slot
//! with generation + 1, in one `pwrite` of that slot only, then `fdatasync`. Until the
//! write is complete and its checksum verifies, the old slot carries the file; after it,
//! the new one does. A `kill -9` at any point leaves every file readable, and a rerun
//! skips the headers already under the target key version (idempotent, resumable).
//!
//! Order: the config first, then the files. A config under the new CMK with files still
//! under the old one mounts and reads (as long as the old CMK decrypts, which a rewrap
//! needs anyway); a running daemon notices the replaced config (one stat before each new
//! DEK), reloads it and generates new DEKs under the new CMK from then on. Files first
//! would let the daemon keep handing out old-CMK DEKs for the whole run. The files pass
//! is followed by re-check passes that catch headers the daemon created meanwhile, until
//! a pass finds nothing to do.
//!
//! Races with the daemon are excluded by an OFD lock on the header bytes, taken here
//! around each read-check-write and by the daemon where it creates or truncates away a
//! header; and a slot written against a stale prefix (another file id) fails its
//! checksum, so it could never be picked.
//!
//! One rewrap per volume at a time: a run holds an flock on
//! [`volume::REWRAP_LOCK_NAME`] at the backing root from before it reads the config to
//! its end ([`RunLock`]); a second run finds it taken and exits [`EXIT_BUSY`], naming
//! the first, before it changes anything.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::{IsTerminal, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use kms_core::{CallContext, EncryptionContext, Kms};
use serde::Serialize;

use crate::format::{self, FileHeader};
use crate::tools::walk::{walk_volume, Walked};
use crate::volume::{self, CONTEXT_KEY};

/// `kmsfs rewrap BACKING`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  kmsfs kms RotateKey --KeyId KEY && kmsfs rewrap /srv/vault     # move to the newest version
  kmsfs rewrap /srv/vault --to-key alias/vault-2026              # move to another CMK
  kmsfs rewrap /srv/vault --json | jq .failed

Safe while the volume is mounted, and after an interruption (rerun it: it resumes).
One rewrap of a volume runs at a time: a second one exits 3 at once, naming the first
(pid, host), and changes nothing. The lock (an flock on BACKING/kmsfs.rewrap.lock) dies
with its process: after a kill -9, just rerun.
The old CMK must still decrypt until the rewrap has finished; disable it afterwards.
Exit status: 0 every header is under the target key, 4 some files failed (listed), 3
another rewrap of the volume is running (nothing changed), 1 the volume cannot be
rewrapped at all.")]
pub struct RewrapArgs {
    /// The backing directory of the volume (mounted or not).
    pub backing: PathBuf,
    /// Re-wrap under this CMK (key id or alias/NAME) and make it the volume's CMK.
    /// Default: the volume's CMK, newest version (after RotateKey).
    #[arg(long, value_name = "KEY_ID|alias/NAME")]
    pub to_key: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Re-wrap at most this many files per second (0: no limit), to spare the KMS and
    /// the disk on a busy system.
    #[arg(long, value_name = "FILES_PER_SEC", default_value_t = 0)]
    pub rate_limit: u64,
}

/// Exit status when another `kmsfs rewrap` of the volume is running (it holds the lock).
pub const EXIT_BUSY: i32 = 3;

/// A file that could not be re-wrapped, and why. Its bytes were left as they were.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// Path relative to the backing directory (= relative to the mount).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The end-of-run summary (`--json`).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The volume UUID.
    pub volume: String,
    /// The key id every header is moved to.
    pub target_key: String,
    /// Its version.
    pub target_version: u32,
    /// `rewrapped` or `current`: what happened to the config DEK.
    pub config: &'static str,
    /// Regular files seen (hard links once).
    pub files_scanned: u64,
    /// Headers re-wrapped by this run.
    pub rewrapped: u64,
    /// Headers already under the target key version.
    pub already_current: u64,
    /// Files empty on disk (no header: nothing to re-wrap).
    pub empty: u64,
    /// Files that failed (unreadable header, KMS refusal, I/O); left untouched.
    pub failed: u64,
    /// Distinct wrapped DEKs re-wrapped with ReEncrypt (files sharing a DEK count once).
    pub distinct_deks_rewrapped: u64,
    /// Passes over the volume (the first, then re-checks for files created meanwhile).
    pub passes: u32,
    /// Seconds the run took.
    pub elapsed_secs: f64,
    /// Every failure.
    pub failures: Vec<Failure>,
}

/// What happened to one file (in the last pass that changed its state).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Rewrapped,
    Current,
    Empty,
    /// Path relative to the backing directory, and why.
    Failed(String, String),
}

impl Outcome {
    fn index(&self) -> usize {
        match self {
            Outcome::Rewrapped => 0,
            Outcome::Current => 1,
            Outcome::Empty => 2,
            Outcome::Failed(..) => 3,
        }
    }
}

/// A file's (dev, ino), when it could be opened, and what happened to it.
type FileResult = (Option<(u64, u64)>, Result<Outcome, String>);

/// The most passes before giving up on a volume that keeps getting old-key headers.
const MAX_PASSES: u32 = 5;

struct Rewrapper {
    kms: std::sync::Arc<dyn Kms>,
    context: EncryptionContext,
    header_size: u32,
    dest_key: String,
    target: (String, u32),
    /// Wrapped DEK → its re-wrapped form (or why the KMS would not), each asked once.
    memo: HashMap<Vec<u8>, Result<Vec<u8>, String>>,
    /// (dev, ino) → outcome (the path is kept for failures only).
    files: HashMap<(u64, u64), Outcome>,
    /// Files per outcome ([`Outcome::index`]).
    counts: [u64; 4],
    progress: Progress,
    rate_limit: u64,
    /// The name key of a volume with encrypted names (to skip IVs and name paths).
    names: Option<crate::volume::names::NameKey>,
}

/// Runs `kmsfs rewrap`.
pub fn run(kms_spec: Option<&str>, a: RewrapArgs) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    // Not a volume: say so rather than leave a lock file in the directory.
    if !a.backing.join(volume::CONFIG_NAME).is_file() {
        bail!(
            "{} is not a kmsfs volume (no {})",
            a.backing.display(),
            volume::CONFIG_NAME
        );
    }
    // Taken before the config is read: no run acts on a config another run replaces.
    let _lock = match RunLock::acquire(&a.backing)? {
        Ok(lock) => lock,
        Err(holder) => {
            eprintln!(
                "kmsfs rewrap: {}: another kmsfs rewrap of this volume is running ({holder}); \
                 nothing was changed. Wait for it to finish, or stop it and rerun (a stopped \
                 rewrap resumes).",
                a.backing.display()
            );
            return Ok(EXIT_BUSY);
        }
    };
    let kms =
        kms_core::connect(kms_spec).map_err(|e| anyhow::anyhow!("cannot open the KMS: {e}"))?;
    let (cfg, config_dek) = volume::read_verified_config(kms.as_ref(), kms_spec, &a.backing)?;
    let context = EncryptionContext::single(CONTEXT_KEY, cfg.uuid.clone());
    let dest_key = a.to_key.clone().unwrap_or_else(|| cfg.cmk.clone());
    let old_blob = B64
        .decode(&cfg.config_dek)
        .context("config DEK is not base64")?;
    // The config first (see the module doc). Its ReEncrypt also tells the target key id
    // (an alias resolved) and version.
    let new_blob = re_encrypt(kms.as_ref(), &context, &old_blob, &dest_key)
        .map_err(|e| anyhow::anyhow!("the KMS would not re-wrap the config key: {e}"))?;
    let target = blob_version(&new_blob).context("the KMS returned an unreadable blob")?;
    let config_current = blob_version(&old_blob).as_ref() == Some(&target);
    if !config_current {
        let mut new_cfg = cfg.clone();
        new_cfg.cmk = target.0.clone();
        new_cfg.config_dek = B64.encode(&new_blob);
        let bytes = volume::sign_config(&new_cfg, &config_dek)?;
        volume::write_config_file(&a.backing, &bytes)?;
    }
    let mut r = Rewrapper {
        kms,
        context,
        header_size: cfg.header_size,
        dest_key,
        target: target.clone(),
        memo: HashMap::new(),
        files: HashMap::new(),
        counts: [0; 4],
        progress: Progress::new(std::io::stderr().is_terminal()),
        rate_limit: a.rate_limit,
        names: cfg.name_key(&config_dek),
    };
    let mut passes = 0;
    loop {
        passes += 1;
        let changed = r.pass(&a.backing, passes);
        if changed == 0 || passes >= MAX_PASSES {
            break;
        }
    }
    r.progress.finish();
    let mut s = Summary {
        volume: cfg.uuid.clone(),
        target_key: target.0,
        target_version: target.1,
        config: if config_current {
            "current"
        } else {
            "rewrapped"
        },
        passes,
        distinct_deks_rewrapped: r.memo.values().filter(|v| v.is_ok()).count() as u64,
        ..Summary::default()
    };
    [s.rewrapped, s.already_current, s.empty, s.failed] = r.counts;
    s.files_scanned = r.counts.iter().sum();
    s.failures = r
        .files
        .into_values()
        .filter_map(|o| match o {
            Outcome::Failed(path, reason) => Some(Failure { path, reason }),
            _ => None,
        })
        .collect();
    s.failures.sort_by(|x, y| x.path.cmp(&y.path));
    s.elapsed_secs = t0.elapsed().as_secs_f64();
    print_summary(&s, a.json)?;
    Ok(if s.failed > 0 { 4 } else { 0 })
}

fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    for f in &s.failures {
        eprintln!("kmsfs rewrap: {}: {} (left untouched)", f.path, f.reason);
    }
    println!(
        "kmsfs rewrap: volume {}: target {} version {} (config {}); {} files scanned, {} rewrapped, \
         {} already current, {} empty, {} failed; {} distinct DEKs re-wrapped; {} passes, {:.1} s",
        s.volume,
        s.target_key,
        s.target_version,
        s.config,
        s.files_scanned,
        s.rewrapped,
        s.already_current,
        s.empty,
        s.failed,
        s.distinct_deks_rewrapped,
        s.passes,
        s.elapsed_secs
    );
    Ok(())
}

/// The map key of a path whose inode is unknown (it could not be opened or listed).
fn path_key(rel: &str) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rel.hash(&mut h);
    (u64::MAX, h.finish())
}

/// The key id and version a CiphertextBlob names.
fn blob_version(blob: &[u8]) -> Option<(String, u32)> {
    kms_core::blob::parse(blob)
        .ok()
        .map(|p| (p.key_id.to_owned(), p.key_version))
}

/// ReEncrypt of `blob` under `dest`'s newest version, same EncryptionContext.
fn re_encrypt(
    kms: &dyn Kms,
    context: &EncryptionContext,
    blob: &[u8],
    dest: &str,
) -> Result<Vec<u8>, kms_core::KmsError> {
    let ctx = context.to_json();
    let r = kms.call(
        &CallContext::local(),
        "ReEncrypt",
        &serde_json::json!({
            "CiphertextBlob": B64.encode(blob),
            "DestinationKeyId": dest,
            "SourceEncryptionContext": ctx,
            "DestinationEncryptionContext": ctx,
        }),
    )?;
    r.get("CiphertextBlob")
        .and_then(|v| v.as_str())
        .and_then(|b| B64.decode(b).ok())
        .ok_or_else(|| {
            kms_core::KmsError::new(
                kms_core::ErrorCode::InternalError,
                "ReEncrypt returned no CiphertextBlob",
            )
        })
}

impl Rewrapper {
    /// One pass over the volume; returns how many headers it re-wrapped.
    fn pass(&mut self, backing: &Path, n: u32) -> u64 {
        let mut changed = 0;
        let started = Instant::now();
        let mut done = 0u64;
        let names = self.names.take();
        walk_volume(backing, names.as_ref(), &mut |w| {
            let (key, o) = match w {
                Walked::File { path, rel } => match self.file(path) {
                    // Deleted since it was listed: nothing to re-wrap.
                    None => return,
                    Some((key, Err(reason))) => (
                        key.unwrap_or_else(|| path_key(rel)),
                        Outcome::Failed(rel.to_owned(), reason),
                    ),
                    Some((key, Ok(o))) => (key.unwrap_or_else(|| path_key(rel)), o),
                },
                Walked::Error { rel, message } => {
                    (path_key(rel), Outcome::Failed(rel.to_owned(), message))
                }
                // Names are not rewrap's business (fsck reports them).
                Walked::Name { .. } => return,
            };
            if o == Outcome::Rewrapped {
                changed += 1;
                done += 1;
                self.throttle(started, done);
            }
            match self.files.get_mut(&key) {
                None => {
                    self.counts[o.index()] += 1;
                    self.files.insert(key, o);
                }
                // A header re-wrapped by an earlier pass stays counted as re-wrapped.
                Some(Outcome::Rewrapped) if o == Outcome::Current => {}
                Some(e) => {
                    self.counts[e.index()] -= 1;
                    self.counts[o.index()] += 1;
                    *e = o;
                }
            }
            self.progress.tick(n, &self.counts);
        });
        self.names = names;
        changed
    }

    fn throttle(&self, started: Instant, done: u64) {
        if self.rate_limit == 0 {
            return;
        }
        let due = Duration::from_secs_f64(done as f64 / self.rate_limit as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    /// Re-wraps one file's header; returns its (dev, ino) if known and what happened,
    /// or `None` when the file no longer exists.
    fn file(&mut self, path: &Path) -> Option<FileResult> {
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some((None, Err(format!("cannot open: {e}")))),
        };
        let key = match f.metadata() {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) => return Some((None, Err(format!("cannot stat: {e}")))),
        };
        Some((Some(key), self.header(&f)))
    }

    fn header(&mut self, f: &std::fs::File) -> Result<Outcome, String> {
        let hs = self.header_size;
        // The whole read-check-write under the header lock (the daemon takes it to
        // create a header or to truncate a file to zero).
        let _lock = volume::lock_header(f, hs as u64)
            .map_err(|e| format!("cannot lock the header: {e}"))?;
        let len = f.metadata().map_err(|e| format!("cannot stat: {e}"))?.len();
        if len == 0 {
            return Ok(Outcome::Empty);
        }
        if len < hs as u64 {
            return Err(format!(
                "impossible length {len}, shorter than the {hs}-byte header"
            ));
        }
        let mut buf = vec![0u8; hs as usize];
        f.read_exact_at(&mut buf, 0)
            .map_err(|e| format!("cannot read the header: {e}"))?;
        let h = FileHeader::parse(&buf, hs).map_err(|e| format!("unreadable header: {e}"))?;
        if blob_version(&h.wrapped_dek).as_ref() == Some(&self.target) {
            return Ok(Outcome::Current);
        }
        let new = self.rewrapped(&h.wrapped_dek)?;
        let (off, slot, gen) = format::next_slot(&buf, hs, &new).ok_or_else(|| {
            format!(
                "the re-wrapped DEK ({} bytes) does not fit a header slot, or the generation is exhausted",
                new.len()
            )
        })?;
        f.write_all_at(&slot, off)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("cannot write the new header slot: {e}"))?;
        // Read it back: the header must now parse to the new generation and blob.
        f.read_exact_at(&mut buf, 0)
            .map_err(|e| format!("cannot read the header back: {e}"))?;
        match FileHeader::parse(&buf, hs) {
            Ok(p) if p.generation == gen && p.wrapped_dek == new && p.file_id == h.file_id => {
                Ok(Outcome::Rewrapped)
            }
            _ => Err("the header did not read back as written (changed meanwhile?)".into()),
        }
    }

    /// The re-wrapped form of `wrapped`, asking the KMS once per distinct wrapped DEK.
    fn rewrapped(&mut self, wrapped: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(r) = self.memo.get(wrapped) {
            return r.clone();
        }
        let r =
            re_encrypt(self.kms.as_ref(), &self.context, wrapped, &self.dest_key).map_err(|e| {
                let from = volume::blob_key_id(wrapped, "?");
                format!("the KMS would not re-wrap this file's DEK (CMK {from}): {e}")
            });
        self.memo.insert(wrapped.to_vec(), r.clone());
        r
    }
}

/// The one-rewrap-per-volume lock: an exclusive `flock` on [`volume::REWRAP_LOCK_NAME`] at
/// the backing root, held for the whole run.
///
/// The kernel drops it when the process ends, however it ends: a killed run leaves the file
/// unlocked, and the next run takes it. It is neither the daemon's one-mount lock (an flock
/// on the backing directory) nor the header locks (OFD locks on backing files), so a rewrap
/// still runs beside a mount, or beside `shared_storage` mounts on other hosts. The file
/// holds one line, `kmsfs-rewrap pid=PID host=HOST started=UNIX_SECS`, for the message of a
/// refused run. The holder removes it when done, before it lets go of the lock; a run that
/// opened the file meanwhile then locks a removed file, sees that the name no longer leads
/// to it, and starts over.
#[derive(Debug)]
struct RunLock {
    file: File,
    path: PathBuf,
}

/// The first word of the lock file, which tells it from a file of the volume.
const LOCK_MAGIC: &str = "kmsfs-rewrap";

impl RunLock {
    /// Takes the lock of the volume at `backing`; `Err` describes the run that holds it.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked, or is not a lock file.
    fn acquire(backing: &Path) -> anyhow::Result<Result<RunLock, String>> {
        let path = backing.join(volume::REWRAP_LOCK_NAME);
        // Each retry follows a run that finished and removed the file meanwhile.
        for _ in 0..100 {
            let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
            let (file, writable) = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o644)
                .custom_flags(flags)
                .open(&path)
            {
                Ok(f) => (f, true),
                // Left by a killed run of another user (root): lock it all the same.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(flags)
                        .open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    (f, false)
                }
                Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
            };
            let md = file.metadata()?;
            if !md.is_file() {
                bail!("{} is not a regular file", path.display());
            }
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(Err(holder(&file))),
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
            match std::fs::symlink_metadata(&path) {
                Ok(now) if (now.dev(), now.ino()) == (md.dev(), md.ino()) => {}
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
            }
            let mut old = Vec::new();
            (&file).take(4096).read_to_end(&mut old)?;
            if !old.is_empty() && !old.starts_with(LOCK_MAGIC.as_bytes()) {
                bail!(
                    "{} is not a kmsfs rewrap lock (a file of the volume, from before this \
                     name was reserved?); rename it in the backing directory and rerun",
                    path.display()
                );
            }
            if writable {
                let started = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let line = format!(
                    "{LOCK_MAGIC} pid={} host={} started={started}\n",
                    std::process::id(),
                    hostname()
                );
                file.set_len(0)
                    .and_then(|()| file.write_all_at(line.as_bytes(), 0))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            return Ok(Ok(RunLock { file, path }));
        }
        bail!(
            "{} keeps being replaced: is something starting and stopping rewraps in a loop?",
            path.display()
        );
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked (see the type doc); closing the file unlocks it.
        let ours = |m: std::fs::Metadata| {
            self.file
                .metadata()
                .is_ok_and(|f| (f.dev(), f.ino()) == (m.dev(), m.ino()))
        };
        if std::fs::symlink_metadata(&self.path).is_ok_and(ours) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Who holds the lock on `file`, from its line: "pid 123 on host h, started 5 s ago".
fn holder(file: &File) -> String {
    let mut line = String::new();
    // The holder writes its line right after it takes the lock: allow it a moment.
    for _ in 0..10 {
        line.clear();
        let mut buf = [0u8; 512];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        line.push_str(String::from_utf8_lossy(&buf[..n]).trim());
        if line.contains("pid=") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
    };
    let Some(pid) = field("pid") else {
        return "its pid is unknown".into();
    };
    let mut s = format!("pid {pid} on host {}", field("host").unwrap_or("?"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some(t) = field("started").and_then(|t| t.parse::<u64>().ok()) {
        s.push_str(&format!(", started {} s ago", now.saturating_sub(t)));
    }
    s
}

/// This host's name (for the lock line), "?" when unknown.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "?".into())
}

/// The progress line on a terminal's stderr: counts and rate, at most 5 times a second.
struct Progress {
    on: bool,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn new(on: bool) -> Self {
        Progress {
            on,
            started: Instant::now(),
            last: None,
        }
    }

    fn tick(&mut self, pass: u32, n: &[u64; 4]) {
        if !self.on
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let files: u64 = n.iter().sum();
        let rate = files as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r\x1b[Kkmsfs rewrap: pass {pass}: {} files, {} rewrapped, {} current, {} empty, {} failed ({rate:.0} files/s)",
            files,
            n[0],
            n[1],
            n[2],
            n[3]
        );
    }

    fn finish(&mut self) {
        if self.on && self.last.is_some() {
            eprintln!();
        }
    }
}

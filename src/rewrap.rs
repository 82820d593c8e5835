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

use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use kms_core::{CallContext, EncryptionContext, Kms};
use serde::Serialize;

use crate::format::{self, FileHeader};
use crate::fsck::{walk_volume, Walked};
use crate::volume::{self, CONTEXT_KEY};

/// `kmsfs rewrap BACKING`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  kmsfs kms RotateKey --KeyId KEY && kmsfs rewrap /srv/vault     # move to the newest version
  kmsfs rewrap /srv/vault --to-key alias/vault-2026              # move to another CMK
  kmsfs rewrap /srv/vault --json | jq .failed

Safe while the volume is mounted, and after an interruption (rerun it: it resumes).
The old CMK must still decrypt until the rewrap has finished; disable it afterwards.
Exit status: 0 every header is under the target key, 4 some files failed (listed), 1 the
volume cannot be rewrapped at all.")]
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
    names: Option<crate::names::NameKey>,
}

/// Runs `kmsfs rewrap`.
pub fn run(kms_spec: Option<&str>, a: RewrapArgs) -> anyhow::Result<i32> {
    let t0 = Instant::now();
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
        names: cfg
            .features
            .iter()
            .any(|f| f == crate::names::FEATURE)
            .then(|| crate::names::NameKey::derive(&config_dek, &cfg.uuid)),
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

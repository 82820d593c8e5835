//! `kmsfs fsck BACKING`: verify a volume offline — the config MAC, every file header
//! (both slots) and every stored block, with the DEKs from the KMS. It reports each
//! problem with the file's path and block number and changes no byte, unless asked to
//! repair (`--repair`, on an unmounted volume) what a crash or a lost file left among
//! the names: orphan side files and their temp files are removed, a long name whose side
//! file is lost or wrong is renamed to a name the mount shows (`lost-longname-<hash>`,
//! its content kept), and an orphan long link is removed when the whole tree was walked.
//!
//! Severity: an *error* is something a read through the mount would fail on (bad tag,
//! torn tail, unreadable header, a DEK the KMS refuses); a *warning* is something that
//! reads fine but may hide damage (an all-zero block inside a data extent reads as a
//! hole; a corrupt spare header slot).
//!
//! Exit status: 0 clean, 2 warnings only, 4 errors found (fsck(8)'s "errors left
//! uncorrected"), 1 when the volume cannot be checked at all.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use kms_core::{CallContext, EncryptionContext, Kms};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::format::aead;
use crate::format::{self, BlockFault, BlockNo, ContentKey, FileHeader, Geometry, SlotState};
use crate::tools::extents::{data_extents, within_data};
use crate::tools::walk::{walk_volume, Fix, Walked};
use crate::volume::{self, VolumeConfig, CONFIG_NAME, CONTEXT_KEY};

/// `kmsfs fsck BACKING`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// The backing directory of the volume. Best checked unmounted: files that change
    /// during the check may show as problems (without `--repair` fsck only reads, so a
    /// mounted volume is safe).
    pub backing: PathBuf,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// Repair what can be repaired safely (encrypted names): remove orphan side files,
    /// their temp files and orphan long links; rename a long name whose side file is lost
    /// or wrong to `lost-longname-<hash>` in its directory. Refused while the volume is
    /// mounted; holds its mount lock meanwhile.
    #[arg(long)]
    pub repair: bool,
    /// Keep files that end where a crash left them: a file whose last block is sealed as
    /// not last (`not-final`) or is a hole (`hole-at-end`) gets that block re-sealed as its
    /// last, so it reads again as it is on disk. Only when you know no one cut the file
    /// (a power cut interrupted writes to it): the check cannot tell a crash from a cut.
    /// Refused while the volume is mounted; holds its mount lock meanwhile.
    #[arg(long)]
    pub accept_ends: bool,
}

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A read through the mount fails (EIO/EACCES) or the volume cannot be trusted.
    Error,
    /// Reads succeed, but the bytes may not be what was written.
    Warning,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Short machine-readable kind: `config`, `header`, `header-slot`, `dek-refused`,
    /// `kms`, `bad-tag`, `torn-tail`, `zero-block`, `io`, and on a volume with the
    /// final-block flag `not-final` (the file ends at a block sealed as not last) and
    /// `hole-at-end` (it ends in a hole).
    pub kind: &'static str,
    /// Path relative to the backing directory (empty for the volume itself).
    pub path: String,
    /// The block number, when the problem is one block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    /// What is wrong, for a human.
    pub message: String,
    /// What `--repair` did about it (then it no longer counts as an error or warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

/// The whole report.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The volume UUID.
    pub volume: String,
    /// Regular files checked (hard links counted once).
    pub files: u64,
    /// Stored blocks that verified (holes excluded).
    pub blocks: u64,
    /// All-zero stored blocks read as holes.
    pub holes: u64,
    /// Plaintext bytes that verified.
    pub bytes: u64,
    /// DEKs unwrapped (each distinct wrapped DEK once).
    pub deks_unwrapped: u64,
    /// Errors found.
    pub errors: u64,
    /// Warnings found.
    pub warnings: u64,
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
}

impl Report {
    fn add(
        &mut self,
        severity: Severity,
        kind: &'static str,
        path: &str,
        block: Option<u64>,
        message: String,
    ) {
        match severity {
            Severity::Error => self.errors += 1,
            Severity::Warning => self.warnings += 1,
        }
        self.problems.push(Problem {
            severity,
            kind,
            path: path.to_owned(),
            block,
            message,
            repaired: None,
        });
    }

    /// The exit status: 0 clean, 2 warnings only, 4 errors.
    pub fn exit_code(&self) -> i32 {
        if self.errors > 0 {
            4
        } else if self.warnings > 0 {
            2
        } else {
            0
        }
    }
}

/// Stored blocks read per pread.
const BLOCKS_PER_READ: u64 = 256;

/// A DEK's plaintext, or the problem kind and message of why the KMS would not unwrap it.
type DekResult = Result<Zeroizing<Vec<u8>>, (&'static str, String)>;

struct Checker {
    kms: Arc<dyn Kms>,
    context: EncryptionContext,
    cfg: VolumeConfig,
    geo: Geometry,
    /// Wrapped DEK → its plaintext, or why the KMS refused it (each asked once).
    deks: HashMap<Vec<u8>, DekResult>,
    report: Report,
    /// `--accept-ends`: re-seal the last block of a file that ends where a crash left it.
    accept_ends: bool,
}

/// Runs `kmsfs fsck`.
pub fn run(kms_spec: Option<&str>, a: FsckArgs) -> anyhow::Result<i32> {
    let kms =
        kms_core::connect(kms_spec).map_err(|e| anyhow::anyhow!("cannot open the KMS: {e}"))?;
    let _lock = if a.repair || a.accept_ends {
        Some(volume::lock_unmounted(&a.backing)?)
    } else {
        None
    };
    let report = check_and_repair(kms, kms_spec, &a.backing, a.repair, a.accept_ends)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            let sev = match p.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let at = match p.block {
                Some(b) => format!("{} block {b}", p.path),
                None if p.path.is_empty() => "volume".to_owned(),
                None => p.path.clone(),
            };
            match &p.repaired {
                Some(r) => println!("repaired: {at}: {} ({}): {r}", p.message, p.kind),
                None => println!("{sev}: {at}: {} ({})", p.message, p.kind),
            }
        }
        println!(
            "kmsfs fsck: volume {}: {} files, {} blocks verified ({} bytes), {} holes, {} DEKs; {} errors, {} warnings",
            report.volume,
            report.files,
            report.blocks,
            report.bytes,
            report.holes,
            report.deks_unwrapped,
            report.errors,
            report.warnings
        );
    }
    Ok(report.exit_code())
}

/// Checks the volume at `backing`. `Err` only when it cannot be checked at all (no
/// config, no KMS); every finding is in the report.
pub fn check(kms: Arc<dyn Kms>, kms_spec: Option<&str>, backing: &Path) -> anyhow::Result<Report> {
    check_and_repair(kms, kms_spec, backing, false, false)
}

/// [`check`], and with `repair` (the caller holds the volume's mount lock), the repairs
/// of `--repair`, and with `accept_ends` those of `--accept-ends`, each noted in its
/// problem.
fn check_and_repair(
    kms: Arc<dyn Kms>,
    kms_spec: Option<&str>,
    backing: &Path,
    repair: bool,
    accept_ends: bool,
) -> anyhow::Result<Report> {
    // Mounted before or after the walk: what looks orphaned may be in use.
    let mounted_before = !repair && volume::is_mounted(backing);
    let conf = backing.join(CONFIG_NAME);
    let bytes = std::fs::read(&conf).with_context(|| {
        format!(
            "{} is not a kmsfs volume (cannot read {CONFIG_NAME})",
            backing.display()
        )
    })?;
    let (cfg, body, mac) = volume::parse_config(&bytes)?;
    let host_hint = volume::kms_hint(kms_spec);
    if !volume::kms_hint_matches(&cfg.kms_hint, &host_hint) {
        anyhow::bail!(
            "the volume was made with KMS {:?} but this host says {:?}; pass the right --kms",
            cfg.kms_hint,
            host_hint
        );
    }
    let context = EncryptionContext::single(CONTEXT_KEY, cfg.uuid.clone());
    let mut report = Report {
        volume: cfg.uuid.clone(),
        ..Report::default()
    };
    let blob = B64
        .decode(&cfg.config_dek)
        .context("config DEK is not base64")?;
    let (mac_ok, config_dek) = match kms.decrypt_data_key(&CallContext::local(), &blob, &context) {
        Ok(dk) => {
            let ok = aead::hmac_sha256_verify(
                &volume::mac_key(&dk.plaintext, &cfg.uuid)[..],
                &body,
                &mac,
            )
            .is_ok();
            (ok, Zeroizing::new(dk.plaintext.to_vec()))
        }
        Err(e) => {
            report.add(
                Severity::Error,
                "config",
                CONFIG_NAME,
                None,
                format!(
                    "the KMS would not unwrap the config key (CMK {}): {e}",
                    cfg.cmk
                ),
            );
            return Ok(report);
        }
    };
    if !mac_ok {
        report.add(
            Severity::Error,
            "config",
            CONFIG_NAME,
            None,
            "config MAC mismatch: the config has been tampered with; its geometry cannot be trusted, files not checked".into(),
        );
        return Ok(report);
    }
    let mut c = Checker {
        kms,
        context,
        geo: cfg.geometry(),
        cfg,
        deks: HashMap::new(),
        report,
        accept_ends,
    };
    let names = c.cfg.name_key(&config_dek);
    let mut fixes = Vec::new();
    let complete = walk_volume(backing, names.as_ref(), &mut |w| match w {
        Walked::File { path, rel } => c.file(path, rel),
        Walked::Error { rel, message } => c.report.add(Severity::Error, "io", rel, None, message),
        Walked::Name {
            rel,
            message,
            error,
            fix,
        } => {
            let sev = if error {
                Severity::Error
            } else {
                Severity::Warning
            };
            c.report.add(sev, "name", rel, None, message);
            if let Some(f) = fix {
                fixes.push((c.report.problems.len() - 1, f));
            }
        }
    });
    let mounted = !repair && (mounted_before || volume::is_mounted(backing));
    let cmd = format!("kmsfs fsck --repair {}", backing.display());
    for (i, fix) in fixes {
        let p = &mut c.report.problems[i];
        let sure = complete && !mounted;
        if matches!(fix, Fix::RemoveOrphanLink(_)) && !sure {
            let why = if mounted {
                "the volume is mounted"
            } else {
                "not every directory could be read"
            };
            p.message += &format!(
                "; not known to be an orphan ({why}): keep it, and run `{cmd}` on the \
                 unmounted volume, which removes it only after a complete walk"
            );
            continue;
        }
        if !repair {
            p.message += &format!("; `{cmd}` {}", fix.what());
            continue;
        }
        match fix.apply(names.as_ref()) {
            Ok(done) => {
                p.repaired = Some(done);
                match p.severity {
                    Severity::Error => c.report.errors -= 1,
                    Severity::Warning => c.report.warnings -= 1,
                }
            }
            Err(e) => p.message += &format!("; cannot repair: {e}"),
        }
    }
    Ok(c.report)
}

impl Checker {
    fn dek(&mut self, wrapped: &[u8]) -> DekResult {
        if let Some(r) = self.deks.get(wrapped) {
            return r.clone();
        }
        let r = match self
            .kms
            .decrypt_data_key(&CallContext::local(), wrapped, &self.context)
        {
            Ok(dk) => {
                self.report.deks_unwrapped += 1;
                Ok(dk.plaintext)
            }
            Err(e) if crate::backing::error::is_refusal(&e.code) => Err((
                "dek-refused",
                format!(
                    "the KMS refuses this file's DEK (CMK {}): {e}",
                    self.cfg.cmk
                ),
            )),
            Err(e) => Err((
                "kms",
                format!("the KMS could not unwrap this file's DEK: {e}"),
            )),
        };
        self.deks.insert(wrapped.to_vec(), r.clone());
        r
    }

    fn file(&mut self, path: &Path, rel: &str) {
        self.report.files += 1;
        let (f, len) = match open_walked_file(path) {
            Ok(x) => x,
            Err(message) => {
                self.report.add(Severity::Error, "io", rel, None, message);
                return;
            }
        };
        if len == 0 {
            return;
        }
        let hs = self.geo.header_size;
        if len < hs {
            self.report.add(
                Severity::Error,
                "header",
                rel,
                None,
                format!("impossible length {len}: shorter than the {hs}-byte header (torn header write?)"),
            );
            return;
        }
        let mut hdr = vec![0u8; hs as usize];
        if let Err(e) = f.read_exact_at(&mut hdr, 0) {
            self.report.add(
                Severity::Error,
                "io",
                rel,
                None,
                format!("cannot read the header: {e}"),
            );
            return;
        }
        let header = match FileHeader::parse(&hdr, self.cfg.header_size) {
            Ok(h) => h,
            Err(e) => {
                self.report.add(
                    Severity::Error,
                    "header",
                    rel,
                    None,
                    format!("unreadable header: {e}"),
                );
                return;
            }
        };
        // Both slots: a written slot that does not verify is worth a warning even when
        // the other one carries the file.
        if let Some(states) = format::slot_states(&hdr, self.cfg.header_size) {
            for (i, s) in states.iter().enumerate() {
                match s {
                    SlotState::Corrupt => self.report.add(
                        Severity::Warning,
                        "header-slot",
                        rel,
                        None,
                        format!("header slot {i} is corrupt (torn or tampered); the file uses the other slot"),
                    ),
                    SlotState::Valid { generation, wrapped_dek } if *generation != header.generation => {
                        if let Err((_, m)) = self.dek(wrapped_dek) {
                            self.report.add(
                                Severity::Warning,
                                "header-slot",
                                rel,
                                None,
                                format!("spare header slot {i} (generation {generation}): {m}"),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        let dek = match self.dek(&header.wrapped_dek) {
            Ok(d) => d,
            Err((kind, m)) => {
                self.report.add(Severity::Error, kind, rel, None, m);
                return;
            }
        };
        let key = ContentKey::derive(&dek, header.file_id, self.geo.block_size)
            .with_final_flag(self.cfg.final_flag());
        let found = self.report.problems.len();
        self.blocks(&f, &key, len, rel);
        if self.accept_ends {
            self.accept_end(path, &key, len, found);
        }
    }

    /// `--accept-ends` for the file at `path`: its last block, if `blocks` found it
    /// `not-final` or `hole-at-end` (problems from index `found` on), re-sealed as last.
    fn accept_end(&mut self, path: &Path, key: &ContentKey, len: u64, found: usize) {
        let Some(i) = (found..self.report.problems.len())
            .find(|&i| matches!(self.report.problems[i].kind, "not-final" | "hole-at-end"))
        else {
            return;
        };
        let Some(b) = self.report.problems[i].block else {
            return;
        };
        let r = (|| -> anyhow::Result<()> {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)?;
            anyhow::ensure!(f.metadata()?.len() == len, "the file changed");
            let off = self.geo.block_offset(BlockNo(b)).context("offset")?;
            let mut stored = vec![0u8; len.saturating_sub(off) as usize];
            f.read_exact_at(&mut stored, off)?;
            let mut plain = Vec::new();
            if stored.iter().all(|&x| x == 0) {
                plain.resize(
                    stored.len().saturating_sub(format::BLOCK_OVERHEAD as usize),
                    0,
                );
            } else {
                key.open_block(BlockNo(b), false, &stored, &mut plain)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            anyhow::ensure!(!plain.is_empty(), "a torn block");
            let mut sealed = Vec::with_capacity(stored.len());
            key.seal_block(BlockNo(b), true, &plain, &mut sealed)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            f.write_all_at(&sealed, off)?;
            f.sync_all()?;
            Ok(())
        })();
        let p = &mut self.report.problems[i];
        match r {
            Ok(()) => {
                p.repaired =
                    Some("its last block re-sealed as last: the file reads as it is".into());
                self.report.errors -= 1;
            }
            Err(e) => p.message += &format!("; cannot accept the end: {e}"),
        }
    }

    fn blocks(&mut self, f: &File, key: &ContentKey, len: u64, rel: &str) {
        let geo = self.geo;
        let sb = geo.stored_block();
        let rest = len - geo.header_size;
        let full = rest / sb;
        let rem = rest % sb;
        let torn = rem != 0 && rem <= format::BLOCK_OVERHEAD;
        // Blocks to authenticate: the full ones plus a partial last one (unless torn).
        let nblocks = full + u64::from(rem != 0 && !torn);
        let extents = data_extents(f, len);
        let mut b = 0u64;
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(geo.block_size as usize);
        // The block the file ends at (a torn tail is reported on its own, below).
        let last = nblocks.checked_sub(1).filter(|_| !torn);
        let hole_at_end = |r: &mut Report| {
            let Some(lb) = last.filter(|_| key.final_flag()) else {
                return;
            };
            r.add(
                Severity::Error,
                "hole-at-end",
                rel,
                Some(lb),
                "the file ends in a hole, which a volume with the final-block flag never writes: \
                 cut at a block boundary and padded with zeros (tampering), or the data of an \
                 append a power cut lost; the blocks before it are intact \
                 (`kmsfs fsck --accept-ends` seals it as a last block of zeros, if no one cut the file)"
                    .into(),
            );
        };
        while b < nblocks {
            // Blocks wholly inside a hole read as zeros: count them, do not read them
            // (a sparse file may be petabytes long).
            let at = geo.header_size + b * sb;
            match extents.iter().find(|e| e.1 > at) {
                None => {
                    self.report.holes += nblocks - b;
                    hole_at_end(&mut self.report);
                    break;
                }
                Some(&(data, _)) if data >= at + sb => {
                    let k = ((data - geo.header_size) / sb).min(nblocks);
                    self.report.holes += k - b;
                    if k == nblocks {
                        hole_at_end(&mut self.report);
                    }
                    b = k;
                    continue;
                }
                Some(_) => {}
            }
            let n = (nblocks - b).min(BLOCKS_PER_READ);
            let start = geo.header_size + b * sb;
            let end = (start + n * sb).min(len);
            buf.resize((end - start) as usize, 0);
            if let Err(e) = f.read_exact_at(&mut buf, start) {
                self.report.add(
                    Severity::Error,
                    "io",
                    rel,
                    Some(b),
                    format!("cannot read blocks {b}..{}: {e}", b + n),
                );
                return;
            }
            for (i, chunk) in buf.chunks(sb as usize).enumerate() {
                let bn = b + i as u64;
                let off = start + i as u64 * sb;
                let is_last = Some(bn) == last;
                if chunk.iter().all(|&x| x == 0) {
                    self.report.holes += 1;
                    if is_last && key.final_flag() {
                        hole_at_end(&mut self.report);
                        continue;
                    }
                    let bend = off + chunk.len() as u64;
                    if within_data(&extents, off, bend) {
                        self.report.add(
                            Severity::Warning,
                            "zero-block",
                            rel,
                            Some(bn),
                            format!(
                                "all-zero block inside a data extent (backing bytes {off}..{bend}): reads as zeros; \
                                 a zeroed (tampered) block, or a one-block hole between written neighbours"
                            ),
                        );
                    }
                    continue;
                }
                out.clear();
                match key.open_block(BlockNo(bn), is_last, chunk, &mut out) {
                    Ok(()) => {
                        self.report.blocks += 1;
                        self.report.bytes += out.len() as u64;
                    }
                    Err(BlockFault::NotFinal) => self.report.add(
                        Severity::Error,
                        "not-final",
                        rel,
                        Some(bn),
                        "the file ends at a block that authenticates as one that is not last: \
                         cut at a block boundary (tampering), or a crash interrupted an append \
                         or a truncate (a false alarm then: its data is intact); reads of this \
                         block fail until the file is truncated below it or rewritten, or until \
                         `kmsfs fsck --accept-ends` re-seals it as last (if no one cut the file)"
                            .into(),
                    ),
                    Err(BlockFault::HoleAtEnd) => hole_at_end(&mut self.report),
                    Err(BlockFault::Tag) => {
                        let hint = if is_last && rem != 0 {
                            " (the last, partial block: tampered, or cut short / torn by a crash)"
                        } else {
                            " (tampered, swapped, or torn by a crash while it was being written)"
                        };
                        self.report.add(
                            Severity::Error,
                            "bad-tag",
                            rel,
                            Some(bn),
                            format!("block fails authentication{hint}"),
                        );
                    }
                }
            }
            b += n;
        }
        if torn {
            self.report.add(
                Severity::Error,
                "torn-tail",
                rel,
                Some(full),
                format!(
                    "impossible backing length {len}: the last block has {rem} bytes, not more than its \
                     {}-byte overhead (torn or truncated)",
                    format::BLOCK_OVERHEAD
                ),
            );
        }
    }
}

/// A file of the walk opened for reading (no symlink followed, no FIFO waited on) and
/// its length; or what failed, for an "io" problem.
fn open_walked_file(path: &Path) -> Result<(std::fs::File, u64), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let len = f.metadata().map_err(|e| format!("cannot stat: {e}"))?.len();
    Ok((f, len))
}

//! Moving a key store between a directory and a PostgreSQL database, with its audit
//! chain (`kmsfs kms migrate --from DIR --to postgres://…`, and back).
//!
//! ```text
//! source ──read, check (MAC, every version's material)──▶ Image + audit lines (chain verified)
//!        ──write──▶ destination keys.kms / kmsfs_store row, audit.log / kmsfs_audit
//!        ──read back, check, compare record by record and line by line──▶ Report
//! ```
//!
//! The `keys.kms` bytes move as they are: key material stays wrapped under the root
//! key, so both ends need the same root key (`KMSFS_KMS_ROOT_KEY`, the directory's
//! `root.key`, or `KMSFS_KMS_PASSPHRASE`). Into a directory without a root key of its
//! own (and no `KMSFS_KMS_ROOT_KEY`), the source's root key file is copied as its
//! `root.key`. Into a database that already holds a row, the generation is raised past
//! the one there, so that servers still running reload. Nothing secret is ever logged
//! or reported: the report names keys, versions, states and aliases.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::audit::ChainVerifier;
use crate::store::{is_postgres_url, RootKeySource, AUDIT_FILE, ROOT_KEY_FILE};
use crate::{ErrorCode, KmsError, KmsResult};

use crate::key::KeyRecord;
use crate::store::Store;

/// One end of a migration.
pub(crate) enum End<'a> {
    /// A store directory.
    Dir(&'a Path),
    /// A PostgreSQL database URL.
    Pg(&'a str),
}

/// A checked store: its bytes, header generation and records.
pub(crate) struct Image {
    /// The `keys.kms` bytes, as read.
    pub bytes: Vec<u8>,
    /// Its key records, every version's material authenticated.
    pub records: Vec<KeyRecord>,
}

fn clone_source(s: &RootKeySource) -> RootKeySource {
    match s {
        RootKeySource::File(p) => RootKeySource::File(p.clone()),
        RootKeySource::Passphrase(p) => RootKeySource::Passphrase(p.clone()),
    }
}

fn internal(msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::InternalError, msg)
}

/// What was moved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// One entry per key, in store order.
    pub keys: Vec<KeyReport>,
    /// Lines of the audit chain, identical at both ends and verified.
    pub audit_lines: u64,
    /// Where the destination's root key must come from (a path; never the key).
    pub root_key_note: String,
}

/// One key, identical at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyReport {
    /// The key id.
    pub key_id: String,
    /// Its alias ("" for none).
    pub alias: String,
    /// Its state (`Enabled`, `Disabled`, `PendingDelete`, …).
    pub state: String,
    /// How many versions of material it has.
    pub versions: usize,
}

/// The root key source of a store, from the environment as `KmsService::open` takes it.
fn root_source(dir: &Path) -> RootKeySource {
    if let Ok(p) = std::env::var(crate::service::ENV_PASSPHRASE) {
        if !p.is_empty() {
            return RootKeySource::Passphrase(Zeroizing::new(p));
        }
    }
    match std::env::var_os(crate::service::ENV_ROOT_KEY) {
        Some(p) if !p.is_empty() => RootKeySource::File(PathBuf::from(p)),
        _ => RootKeySource::File(dir.join(ROOT_KEY_FILE)),
    }
}

fn end_of(spec: &str) -> KmsResult<End<'_>> {
    if crate::is_remote_url(spec) {
        return Err(KmsError::new(
            ErrorCode::InvalidParameter,
            format!("migrate moves a store (a directory or postgres:// URL), not a server: {spec}"),
        ));
    }
    if spec.is_empty() {
        return Err(KmsError::new(
            ErrorCode::InvalidParameter,
            "migrate needs --from and --to",
        ));
    }
    Ok(if is_postgres_url(spec) {
        End::Pg(spec)
    } else {
        End::Dir(Path::new(spec))
    })
}

fn describe(end: &End<'_>) -> String {
    match end {
        End::Dir(d) => d.display().to_string(),
        End::Pg(u) => crate::audit::db_label(u),
    }
}

/// The audit lines at `end` (each without its newline), after checking their chain.
fn read_audit(end: &End<'_>) -> KmsResult<Vec<Vec<u8>>> {
    match end {
        End::Dir(d) => {
            let path = d.join(AUDIT_FILE);
            let log = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(internal(format!("cannot read {}: {e}", path.display()))),
            };
            let mut chain = ChainVerifier::default();
            let mut lines = Vec::new();
            for (i, line) in log.split(|&b| b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                chain.push(line).map_err(|()| {
                    internal(format!(
                        "{}: hash chain broken at line {} (edited, deleted or torn lines); \
                         migrate copies only an intact chain",
                        path.display(),
                        i + 1
                    ))
                })?;
                lines.push(line.to_vec());
            }
            Ok(lines)
        }
        End::Pg(url) => {
            let log = crate::audit::PgAuditLog::new(url);
            let rows = log.read_all()?;
            if let Err(b) = crate::audit::check_rows(&rows) {
                return Err(internal(format!(
                    "{} kmsfs_audit: {b}; migrate copies only an intact chain",
                    log.label()
                )));
            }
            Ok(rows.lines.into_iter().map(|(_, l)| l).collect())
        }
    }
}

fn audit_is_empty(end: &End<'_>) -> KmsResult<bool> {
    match end {
        End::Dir(d) => Ok(std::fs::metadata(d.join(AUDIT_FILE)).map_or(true, |m| m.len() == 0)),
        End::Pg(url) => crate::audit::PgAuditLog::new(url).is_empty(),
    }
}

fn write_audit(end: &End<'_>, lines: &[Vec<u8>]) -> KmsResult<()> {
    match end {
        End::Dir(d) => {
            let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
            for l in lines {
                out.extend_from_slice(l);
                out.push(b'\n');
            }
            let path = d.join(AUDIT_FILE);
            let tmp = d.join(".audit.log.migrate.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let _ = std::fs::remove_file(&tmp);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&out)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(d)?.sync_all()
            };
            write().map_err(|e| internal(format!("cannot write {}: {e}", path.display())))
        }
        End::Pg(url) => crate::audit::PgAuditLog::new(url).replace_all(lines),
    }
}

/// Copies the key store `from` into `to` (each a directory or a `postgres://` URL),
/// with its audit chain, then reads the destination back and checks it key by key
/// and line by line. `local_dir` is where a PostgreSQL store's local root key file
/// lives by default (`default_store_dir`).
///
/// # Errors
/// `InvalidParameter` for a server URL or a missing end; `InternalError` when the
/// source does not load or its audit chain is broken, when the destination holds keys
/// or audit lines and `force` is not set, when the root key of a destination
/// directory is another, and when the destination read back differs.
pub fn migrate(from: &str, to: &str, force: bool, local_dir: &Path) -> KmsResult<Report> {
    let (src, dst) = (end_of(from)?, end_of(to)?);
    if from == to {
        return Err(KmsError::new(
            ErrorCode::InvalidParameter,
            "--from and --to name the same store",
        ));
    }
    let src_source = root_source(match &src {
        End::Dir(d) => d,
        End::Pg(_) => local_dir,
    });
    let src_key_file = Store::migrate_key_file(&src, &src_source, local_dir);
    if let End::Dir(d) = &src {
        if !d.join(crate::store::STORE_FILE).exists() {
            return Err(internal(format!("no key store in {}", d.display())));
        }
    }
    let image = Store::migrate_read(&src, &src_source, &src_key_file)?;
    let lines = read_audit(&src)?;

    if !force && (Store::migrate_holds_keys(&dst)? || !audit_is_empty(&dst)?) {
        return Err(internal(format!(
            "{} already holds keys or audit lines; give --force to replace them",
            describe(&dst)
        )));
    }

    // The root key the destination will be opened with: a directory's own (the
    // source's root key file copied there when it has none), a database's servers'
    // (the source's, which they must be given).
    let (dst_source, dst_key_file, copy_to, note) = match &dst {
        End::Dir(d) => {
            let s = root_source(d);
            let kf = Store::migrate_key_file(&dst, &s, local_dir);
            let copy = matches!(&src_source, RootKeySource::File(_))
                && matches!(&s, RootKeySource::File(p) if *p == d.join(ROOT_KEY_FILE) && !p.exists());
            let note = match &s {
                RootKeySource::Passphrase(_) => {
                    "KMSFS_KMS_PASSPHRASE (as for the source)".to_owned()
                }
                RootKeySource::File(p) if copy => {
                    format!("{} (copied from {})", p.display(), src_key_file.display())
                }
                RootKeySource::File(p) => p.display().to_string(),
            };
            if !copy {
                // Refuse before writing anything a destination that would not open.
                Store::migrate_check(&image, &s, &kf)?;
            }
            (s, kf, copy.then(|| d.join(ROOT_KEY_FILE)), note)
        }
        End::Pg(_) => {
            let note = match &src_source {
                RootKeySource::Passphrase(_) => {
                    "every server needs KMSFS_KMS_PASSPHRASE (as for the source)".to_owned()
                }
                RootKeySource::File(_) => format!(
                    "every server needs this root key: KMSFS_KMS_ROOT_KEY={} (a copy on each host)",
                    src_key_file.display()
                ),
            };
            (clone_source(&src_source), src_key_file.clone(), None, note)
        }
    };

    Store::migrate_write(&dst, &image, &src_source, &src_key_file, copy_to.as_deref())?;
    write_audit(&dst, &lines)?;

    // Read back: the destination loads under its root key, holds the same records,
    // and the same, intact, audit chain.
    let back = Store::migrate_read(&dst, &dst_source, &dst_key_file)?;
    if back.records.len() != image.records.len() {
        return Err(internal(format!(
            "{} holds {} keys after the copy, the source {}",
            describe(&dst),
            back.records.len(),
            image.records.len()
        )));
    }
    let mut keys = Vec::with_capacity(image.records.len());
    for (a, b) in image.records.iter().zip(&back.records) {
        if a != b {
            return Err(internal(format!(
                "key {} differs after the copy to {}",
                a.key_id,
                describe(&dst)
            )));
        }
        keys.push(KeyReport {
            key_id: a.key_id.clone(),
            alias: a.alias.clone(),
            state: a.state.as_str().to_owned(),
            versions: a.versions.len(),
        });
    }
    let back_lines = read_audit(&dst)?;
    if back_lines != lines {
        return Err(internal(format!(
            "the audit chain at {} differs from the source's after the copy",
            describe(&dst)
        )));
    }
    Ok(Report {
        keys,
        audit_lines: lines.len() as u64,
        root_key_note: note,
    })
}

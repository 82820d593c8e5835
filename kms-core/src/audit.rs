//! The audit log: one JSON line per call, hash-chained, never a secret.
//!
//! ```text
//! {"time":"2026-11-23T15:17:16.123Z","principal":"local:root","action":"Decrypt",
//!  "key_id":"…","outcome":"Success","request_id":"…","prev":"<64 hex>"}
//! ```
//!
//! `prev` is the SHA-256 (hex) of the previous line's bytes without its newline;
//! the first line has 64 zeros. A line is appended with one `write(2)` on an
//! `O_APPEND` file under an exclusive flock of the log; a writer that finds the
//! file longer than it left it (another process wrote) reads the tail to chain
//! from the true last line. Lines of calls that changed the key store (CreateKey,
//! DisableKey, ImportKeyMaterial…) are fdatasync'ed before the call returns, as the
//! store change itself was; lines of crypto and read-only calls are not (the hot
//! path would pay a disk flush per Decrypt): a power loss can lose the last of
//! those, never corrupt earlier ones. A torn last line (a crash mid-write) is
//! terminated and chained over.
//!
//! With a PostgreSQL key store the log is a table in that database instead
//! (`audit_pg.rs`): the same lines and chain, one chain for every server.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::crypto;

#[path = "audit_pg.rs"]
mod pg;
pub(crate) use pg::{check_rows, drop_client, PgAuditLog, MIGRATION_AUDIT};
pub use pg::{db_label, verify_pg, ChainBreak};

/// One audit record.
#[derive(Serialize)]
pub(crate) struct Line<'a> {
    pub time: String,
    pub principal: &'a str,
    pub action: &'a str,
    pub key_id: &'a str,
    pub outcome: &'a str,
    pub request_id: &'a str,
    pub prev: String,
}

/// How long a call waits for the audit log's lock.
const AUDIT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

struct State {
    file: File,
    /// Where the file ended after our last append (u64::MAX: unknown).
    end: u64,
    last_hash: [u8; 32],
}

/// The audit log of one store: a file, or a table in the store's database.
pub(crate) struct Audit {
    path: PathBuf,
    state: Mutex<Option<State>>,
    /// `Some`: the log is the database's `kmsfs_audit` (`path` is unused).
    db: Option<PgAuditLog>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.db {
            Some(db) => f.debug_struct("Audit").field("db", &db.label()).finish(),
            None => f.debug_struct("Audit").field("path", &self.path).finish(),
        }
    }
}

fn tail_hash(file: &mut File, size: u64) -> std::io::Result<([u8; 32], bool)> {
    if size == 0 {
        return Ok(([0u8; 32], true));
    }
    let start = size.saturating_sub(8192);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((size - start) as usize);
    file.take(size - start).read_to_end(&mut buf)?;
    let complete = buf.last() == Some(&b'\n');
    let body = if complete {
        &buf[..buf.len() - 1]
    } else {
        &buf[..]
    };
    let line = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None => body,
    };
    Ok((crypto::sha256(line), complete))
}

impl Audit {
    /// The audit log at `path` (opened on first use).
    pub fn new(path: &Path) -> Audit {
        Audit {
            path: path.to_path_buf(),
            state: Mutex::new(None),
            db: None,
        }
    }

    /// The audit log in the PostgreSQL database `url` (connected on first use; the
    /// key store has migrated the schema by then).
    pub fn pg(url: &str) -> Audit {
        let db = PgAuditLog::new(url);
        Audit {
            path: PathBuf::from(db.label()),
            state: Mutex::new(None),
            db: Some(db),
        }
    }

    /// Appends one line, flushed to disk when `durable`; failures are logged (the
    /// call's outcome stands).
    pub fn append(&self, mut line: Line<'_>, durable: bool) {
        if let Some(db) = &self.db {
            if let Err(e) = db.append(&line, durable) {
                tracing::error!(error = %e.message, "cannot write the audit log");
            }
            return;
        }
        if let Err(e) = self.try_append(&mut line, durable) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
        }
    }

    fn try_append(&self, line: &mut Line<'_>, durable: bool) -> std::io::Result<()> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)?;
            *guard = Some(State {
                file,
                end: u64::MAX,
                last_hash: [0u8; 32],
            });
        }
        let st = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("audit state"))?;
        // A process stopped while holding the log's lock must not stop every
        // call of every other process: after the timeout, append unlocked (the
        // chain may then show a break, which the verifier reports).
        let locked = match crate::store::lock_with_timeout(&st.file, AUDIT_LOCK_TIMEOUT) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::error!(path = %self.path.display(), "audit log lock held too long; appending without it");
                st.end = u64::MAX;
                false
            }
            Err(e) => return Err(e),
        };
        let result = (|| {
            let size = st.file.metadata()?.len();
            let mut prefix = "";
            if size != st.end {
                let (h, complete) = tail_hash(&mut st.file, size)?;
                st.last_hash = h;
                if !complete {
                    prefix = "\n";
                }
            }
            line.prev = crypto::hex(&st.last_hash);
            let json = serde_json::to_string(line).map_err(std::io::Error::other)?;
            let mut out = Vec::with_capacity(json.len() + 2);
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(json.as_bytes());
            out.push(b'\n');
            st.file.write_all(&out)?;
            if durable {
                st.file.sync_data()?;
            }
            st.end = size + out.len() as u64;
            st.last_hash = crypto::sha256(json.as_bytes());
            Ok(())
        })();
        if result.is_err() {
            st.end = u64::MAX;
        }
        if locked {
            let _ = rustix::fs::flock(&st.file, rustix::fs::FlockOperation::Unlock);
        }
        result
    }
}

/// Checks a hash chain one line at a time (the file log's and the database's).
#[derive(Default)]
pub(crate) struct ChainVerifier {
    prev: [u8; 32],
    lines: u64,
}

impl ChainVerifier {
    /// Checks the next line (its bytes without the newline): JSON whose `prev` is the
    /// hex SHA-256 of the line before (64 zeros for the first).
    pub fn push(&mut self, line: &[u8]) -> Result<(), ()> {
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|_| ())?;
        if v.get("prev").and_then(|p| p.as_str()) != Some(crypto::hex(&self.prev).as_str()) {
            return Err(());
        }
        self.prev = crypto::sha256(line);
        self.lines += 1;
        Ok(())
    }

    /// The SHA-256 of the last line pushed (zeros before the first).
    pub fn last_hash(&self) -> [u8; 32] {
        self.prev
    }

    /// How many lines were pushed.
    pub fn lines(&self) -> u64 {
        self.lines
    }
}

/// Checks the hash chain of an audit log's bytes; returns the number of lines,
/// or the 1-based number of the first line whose `prev` does not match.
pub fn verify_chain(log: &[u8]) -> Result<usize, usize> {
    let mut chain = ChainVerifier::default();
    for (i, line) in log.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        chain.push(line).map_err(|()| i + 1)?;
    }
    Ok(chain.lines() as usize)
}

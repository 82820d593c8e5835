//! The audit log in PostgreSQL: one hash chain, in one total order, across every
//! server of a key set.
//!
//! ```text
//! kmsfs_audit      (seq bigint PRIMARY KEY, line bytea)      one row per audit line
//! kmsfs_audit_head (id = 1, seq, hash, prev)                 the chain's head
//! ```
//!
//! A row's `line` holds exactly the bytes of one line of the file log (`audit.rs`,
//! without the newline): the same JSON, whose `prev` is the SHA-256 (hex) of the line
//! before in `seq` order (64 zeros for seq 1). `kmsfs_audit_head` holds the last
//! `seq`, the SHA-256 of its line and that line's `prev`.
//!
//! An append is one statement (so one implicit transaction): it updates the head row,
//! which locks it until commit, computing the new line from the head's hash, and inserts
//! that line with `seq = head.seq + 1`. Appends from every server therefore queue on the
//! head row, and each one sees the line committed just before it: one order, no gap, no
//! fork. The server sends the line up to `"prev":"`; the database appends the hex hash
//! and `"}`, and hashes the bytes (`sha256(bytea)`), so the line is never re-encoded
//! on the way. The verifier recomputes every hash on the client.
//!
//! Durability is that of the file log: lines of calls that changed the key store are
//! committed synchronously (`synchronous_commit = on`); others asynchronously (a crash
//! of the database can lose the last of those, never break the chain: the lost ones
//! are a suffix, as each commit follows the one it chained to).

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, Config, NoTls};

use crate::crypto;
use crate::{ErrorCode, KmsError, KmsResult};

/// The SQL of migration 2 (`store/pg.rs` runs it): the audit table and its head row.
pub(crate) const MIGRATION_AUDIT: &str = "
    CREATE TABLE kmsfs_audit (
        seq bigint PRIMARY KEY CHECK (seq > 0),
        line bytea NOT NULL);
    CREATE TABLE kmsfs_audit_head (
        id smallint PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash bytea NOT NULL,
        prev bytea NOT NULL);
    INSERT INTO kmsfs_audit_head (id, seq, hash, prev)
        VALUES (1, 0, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'))";

/// One append: `$1` is the line up to and including `"prev":"`, `$2` is `"}`.
const APPEND: &str = "
    WITH h AS (
        UPDATE kmsfs_audit_head
           SET seq = seq + 1,
               prev = hash,
               hash = sha256($1 || convert_to(encode(hash, 'hex'), 'UTF8') || $2)
         WHERE id = 1
     RETURNING seq, prev)
    INSERT INTO kmsfs_audit (seq, line)
    SELECT seq, $1 || convert_to(encode(prev, 'hex'), 'UTF8') || $2 FROM h";

/// How every serialised line ends before `prev` is filled in.
const PREV_EMPTY_TAIL: &str = "\"prev\":\"\"}";

/// `postgres://host:port/db` of a URL, without user or password, for messages.
pub fn db_label(url: &str) -> String {
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, h)| h))
        .unwrap_or("");
    format!("postgres://{}", host.split('?').next().unwrap_or(""))
}

fn internal(msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::InternalError, msg)
}

fn pg_err(label: &str, what: &str, e: &postgres::Error) -> KmsError {
    internal(format!("audit log ({label}): {what}: {e}"))
}

/// Columns 0 and 1 of `row` as a sequence number and bytes (the chain head row and
/// each audit line have this shape); `what` names them in the errors.
fn seq_and_bytes(label: &str, row: &postgres::Row, what: [&str; 2]) -> KmsResult<(i64, Vec<u8>)> {
    let seq = row.try_get(0).map_err(|e| pg_err(label, what[0], &e))?;
    let bytes = row.try_get(1).map_err(|e| pg_err(label, what[1], &e))?;
    Ok((seq, bytes))
}

/// Drops a connection on a thread of its own. `postgres::Client` drives its own tokio
/// runtime, and dropping it on a thread that runs another runtime (the HTTP server's,
/// when it drops the service at shutdown) panics, which aborts the process.
pub(crate) fn drop_client(client: &Mutex<Option<Client>>) {
    let c = client.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(c) = c {
        let _ = std::thread::spawn(move || drop(c)).join();
    }
}

/// The audit table as read: `(seq, line)` in `seq` order, and the head row.
pub(crate) struct Rows {
    pub lines: Vec<(i64, Vec<u8>)>,
    pub head_seq: i64,
    pub head_hash: Vec<u8>,
}

/// A parsed URL and, once used, one connection (made anew after it is lost).
pub(crate) struct PgAuditLog {
    config: Result<Config, String>,
    label: String,
    client: Mutex<Option<Client>>,
}

impl Drop for PgAuditLog {
    fn drop(&mut self) {
        drop_client(&self.client);
    }
}

impl std::fmt::Debug for PgAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditLog")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl PgAuditLog {
    /// The audit log in the database `url`; connects on first use. A URL that does
    /// not parse is reported by every use (the key store refuses it first).
    pub fn new(url: &str) -> PgAuditLog {
        let config = Config::from_str(url)
            .map(|mut c| {
                c.connect_timeout(Duration::from_secs(5));
                c.keepalives_idle(Duration::from_secs(30));
                c
            })
            .map_err(|e| format!("not a PostgreSQL URL: {e}"));
        PgAuditLog {
            config,
            label: db_label(url),
            client: Mutex::new(None),
        }
    }

    /// `postgres://host:port/db`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `f` on the connection (connecting first if there is none); when it fails
    /// because the connection was lost, once more on a new connection.
    fn with<R>(&self, mut f: impl FnMut(&mut Client) -> KmsResult<R>) -> KmsResult<R> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempt = 0;
        loop {
            attempt += 1;
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = None;
                let config = self.config.as_ref().map_err(|e| internal(e.clone()))?;
                let mut c = config
                    .connect(NoTls)
                    .map_err(|e| pg_err(&self.label, "cannot connect", &e))?;
                c.batch_execute("SET synchronous_commit = off")
                    .map_err(|e| pg_err(&self.label, "set synchronous_commit", &e))?;
                *guard = Some(c);
            }
            let client = guard.as_mut().ok_or_else(|| internal("no connection"))?;
            let r = f(client);
            if client.is_closed() {
                *guard = None;
                if r.is_err() && attempt == 1 {
                    continue;
                }
            }
            return r;
        }
    }

    /// Appends `line` (its `prev` is filled in by the chain); committed synchronously
    /// when `durable`.
    ///
    /// A line whose commit was lost with the connection is sent once more on a new
    /// connection: it may then appear twice (same request id), never not at all
    /// when the database came back.
    pub fn append(&self, line: &super::Line<'_>, durable: bool) -> KmsResult<()> {
        let json = serde_json::to_string(line)
            .map_err(|e| internal(format!("serialise audit line: {e}")))?;
        let head = json
            .strip_suffix(PREV_EMPTY_TAIL)
            .ok_or_else(|| internal("audit line does not end with an empty prev"))?;
        let mut prefix = Vec::with_capacity(head.len() + 8);
        prefix.extend_from_slice(head.as_bytes());
        prefix.extend_from_slice(b"\"prev\":\"");
        let tail: &[u8] = b"\"}";
        self.with(|c| {
            let inserted = if durable {
                let mut tx = c
                    .transaction()
                    .map_err(|e| pg_err(&self.label, "begin", &e))?;
                tx.batch_execute("SET LOCAL synchronous_commit = on")
                    .map_err(|e| pg_err(&self.label, "set synchronous_commit", &e))?;
                let n = tx
                    .execute(APPEND, &[&prefix, &tail])
                    .map_err(|e| pg_err(&self.label, "append", &e))?;
                tx.commit().map_err(|e| pg_err(&self.label, "commit", &e))?;
                n
            } else {
                c.execute(APPEND, &[&prefix, &tail])
                    .map_err(|e| pg_err(&self.label, "append", &e))?
            };
            if inserted != 1 {
                return Err(internal(format!(
                    "audit log ({}): the chain head row is missing",
                    self.label
                )));
            }
            Ok(())
        })
    }

    /// Every line, in `seq` order, with the head row, read in one snapshot. For the
    /// verifier and `kmsfs kms migrate`; the caller checks the sequence.
    pub fn read_all(&self) -> KmsResult<Rows> {
        self.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| pg_err(&self.label, "begin", &e))?;
            let head = tx
                .query_opt("SELECT seq, hash FROM kmsfs_audit_head WHERE id = 1", &[])
                .map_err(|e| pg_err(&self.label, "read the chain head", &e))?
                .ok_or_else(|| {
                    internal(format!(
                        "audit log ({}): the chain head row is missing",
                        self.label
                    ))
                })?;
            let (head_seq, head_hash) =
                seq_and_bytes(&self.label, &head, ["chain head seq", "chain head hash"])?;
            let rows = tx
                .query("SELECT seq, line FROM kmsfs_audit ORDER BY seq", &[])
                .map_err(|e| pg_err(&self.label, "read the audit lines", &e))?;
            let mut lines = Vec::with_capacity(rows.len());
            for r in rows {
                lines.push(seq_and_bytes(&self.label, &r, ["audit seq", "audit line"])?);
            }
            tx.commit().map_err(|e| pg_err(&self.label, "commit", &e))?;
            Ok(Rows {
                lines,
                head_seq,
                head_hash,
            })
        })
    }

    /// Whether the table holds any line.
    pub fn is_empty(&self) -> KmsResult<bool> {
        self.with(|c| {
            c.query_one("SELECT NOT EXISTS (SELECT 1 FROM kmsfs_audit)", &[])
                .and_then(|r| r.try_get::<_, bool>(0))
                .map_err(|e| pg_err(&self.label, "count the audit lines", &e))
        })
    }

    /// Replaces the whole chain by `lines` (each the bytes of one line, without its
    /// newline), verbatim, in one transaction that holds the head row; for `kmsfs kms
    /// migrate`. The lines are not checked here: the caller verifies the result.
    pub fn replace_all(&self, lines: &[Vec<u8>]) -> KmsResult<()> {
        self.with(|c| {
            let mut tx = c
                .transaction()
                .map_err(|e| pg_err(&self.label, "begin", &e))?;
            tx.batch_execute(
                "SET LOCAL synchronous_commit = on;
                 SELECT 1 FROM kmsfs_audit_head WHERE id = 1 FOR UPDATE;
                 DELETE FROM kmsfs_audit",
            )
            .map_err(|e| pg_err(&self.label, "clear the audit table", &e))?;
            let insert = tx
                .prepare("INSERT INTO kmsfs_audit (seq, line) VALUES ($1, $2)")
                .map_err(|e| pg_err(&self.label, "prepare", &e))?;
            let mut hash = [0u8; 32];
            let mut prev = [0u8; 32];
            for (i, line) in lines.iter().enumerate() {
                let seq = i64::try_from(i + 1).map_err(|_| internal("too many lines"))?;
                tx.execute(&insert, &[&seq, line])
                    .map_err(|e| pg_err(&self.label, "insert an audit line", &e))?;
                prev = hash;
                hash = crypto::sha256(line);
            }
            let n = i64::try_from(lines.len()).map_err(|_| internal("too many lines"))?;
            tx.execute(
                "UPDATE kmsfs_audit_head SET seq = $1, hash = $2, prev = $3 WHERE id = 1",
                &[&n, &&hash[..], &&prev[..]],
            )
            .map_err(|e| pg_err(&self.label, "write the chain head", &e))?;
            tx.commit().map_err(|e| pg_err(&self.label, "commit", &e))
        })
    }
}

/// What [`verify_pg`] found wrong, at which `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainBreak {
    /// The line at `seq` does not chain to the line before it (that line, or this
    /// one, was edited, or lines between were deleted), or is not JSON.
    Prev {
        /// The row's `seq`.
        seq: i64,
    },
    /// A `seq` is missing (rows deleted) or out of place: `found` where `expected` was due.
    Gap {
        /// The `seq` due next.
        expected: i64,
        /// The `seq` found.
        found: i64,
    },
    /// The head row does not name the last line (lines deleted at the end, or the
    /// last line edited).
    Head {
        /// The head's `seq`.
        head_seq: i64,
        /// The last line's `seq` (0: none).
        last_seq: i64,
    },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Prev { seq } => write!(
                f,
                "hash chain broken at seq {seq} (a line before it was deleted or edited, or it was)"
            ),
            ChainBreak::Gap { expected, found } => write!(
                f,
                "seq {expected} is missing (found {found} in its place): lines were deleted"
            ),
            ChainBreak::Head { head_seq, last_seq } => write!(
                f,
                "the chain head names seq {head_seq} and another hash, the last line is seq {last_seq}: \
                 lines at the end were deleted or edited"
            ),
        }
    }
}

/// Checks the audit chain in the database `url`: seq 1, 2, … without gaps, every
/// line's `prev` the hash of the line before, and the head row naming the last line
/// and its hash. Returns the number of lines.
///
/// # Errors
/// `Ok(Err(break))` when the chain is broken; `Err` when the database cannot be read.
pub fn verify_pg(url: &str) -> KmsResult<Result<u64, ChainBreak>> {
    Ok(check_rows(&PgAuditLog::new(url).read_all()?))
}

/// The checks of [`verify_pg`] on rows already read.
pub(crate) fn check_rows(rows: &Rows) -> Result<u64, ChainBreak> {
    let mut chain = super::ChainVerifier::default();
    let mut last = 0i64;
    for (seq, line) in &rows.lines {
        let expected = last + 1;
        if *seq != expected {
            return Err(ChainBreak::Gap {
                expected,
                found: *seq,
            });
        }
        if chain.push(line).is_err() {
            return Err(ChainBreak::Prev { seq: *seq });
        }
        last = *seq;
    }
    if rows.head_seq != last || rows.head_hash[..] != chain.last_hash()[..] {
        return Err(ChainBreak::Head {
            head_seq: rows.head_seq,
            last_seq: last,
        });
    }
    Ok(chain.lines())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A chain of `n` lines as the database would hold it, and its head.
    fn chain(n: usize) -> Rows {
        let mut prev = [0u8; 32];
        let mut lines = Vec::new();
        for i in 0..n {
            let line = format!(
                "{{\"action\":\"Decrypt\",\"request_id\":\"r{i}\",\"prev\":\"{}\"}}",
                crate::crypto::hex(&prev)
            )
            .into_bytes();
            prev = crate::crypto::sha256(&line);
            lines.push((i as i64 + 1, line));
        }
        Rows {
            head_seq: n as i64,
            head_hash: prev.to_vec(),
            lines,
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_damage_is_named() {
        assert_eq!(check_rows(&chain(0)), Ok(0));
        assert_eq!(check_rows(&chain(5)), Ok(5));

        let mut edited = chain(5);
        edited.lines[1].1[12] ^= 1;
        assert_eq!(check_rows(&edited), Err(ChainBreak::Prev { seq: 3 }));

        let mut gap = chain(5);
        gap.lines.remove(2);
        assert_eq!(
            check_rows(&gap),
            Err(ChainBreak::Gap {
                expected: 3,
                found: 4
            })
        );

        let mut tail = chain(5);
        tail.lines.pop();
        assert_eq!(
            check_rows(&tail),
            Err(ChainBreak::Head {
                head_seq: 5,
                last_seq: 4
            })
        );

        // The last line edited: nothing after it, but the head keeps its hash.
        let mut last = chain(5);
        last.lines[4].1[12] ^= 1;
        assert!(matches!(check_rows(&last), Err(ChainBreak::Head { .. })));

        // Not JSON at all.
        let mut junk = chain(3);
        junk.lines[0].1 = b"\xff\xfe".to_vec();
        assert_eq!(check_rows(&junk), Err(ChainBreak::Prev { seq: 1 }));
    }
}

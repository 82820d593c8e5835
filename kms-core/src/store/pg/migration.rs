//! The store side of `kmsfs kms migrate` (`migrate.rs`): reading, checking and
//! writing the bytes of a `keys.kms` in a directory or in the PostgreSQL row, with
//! the store's own checks (framing, root-key check, MAC, every version's material).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::super::{
    decode_file, encode_file, existing_root, internal, io_err, read_root_key_file, sync_dir,
    unwrap_material, write_synced, Header, KeyRecord, KmsResult, LockGuard, RootKeySource,
    RootKeys, Store, LOCK_FILE, ROOT_KEY_FILE, STORE_FILE, STORE_HEADER_LEN,
};
use super::{generation_of, pg_err, PgStore, MIGRATE_LOCK};
use crate::migrate::{End, Image};

/// The root key file a store of source "file" uses, given `source` (as `Store::open`).
fn key_file_of(source: &RootKeySource, local_dir: &Path) -> PathBuf {
    match source {
        RootKeySource::File(p) => p.clone(),
        RootKeySource::Passphrase(_) => std::env::var_os("KMSFS_KMS_ROOT_KEY")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| local_dir.join(ROOT_KEY_FILE)),
    }
}

/// Checks `bytes` as a store load does, under the root key `source` gives; returns
/// the root keys, header and records.
fn check(
    label: &Path,
    bytes: &[u8],
    source: &RootKeySource,
    key_file: &Path,
) -> KmsResult<(RootKeys, Header, Vec<KeyRecord>)> {
    let (h, _) = Header::parse(label, bytes)?;
    let root = existing_root(&h, source, key_file, label)?;
    let (h, body) = decode_file(&root, label, bytes)?;
    for rec in &body.keys {
        unwrap_material(&root, label, rec)?;
    }
    Ok((root, h, body.keys))
}

/// How many keys the `keys.kms` bytes hold, read without authentication (only to
/// tell an empty destination from one holding keys); `None` when unreadable.
fn unchecked_key_count(bytes: &[u8]) -> Option<usize> {
    let (_, end) = Header::parse(Path::new(STORE_FILE), bytes).ok()?;
    let body: super::super::Body =
        serde_json::from_slice(bytes.get(STORE_HEADER_LEN..end)?).ok()?;
    Some(body.keys.len())
}

fn pg_open(url: &str) -> KmsResult<PgStore> {
    let pg = PgStore::connect(url)?;
    pg.migrate()?;
    Ok(pg)
}

fn pg_row(pg: &PgStore) -> KmsResult<Option<(u64, Vec<u8>)>> {
    pg.with(|c| {
        let row = c
            .query_opt("SELECT generation, body FROM kmsfs_store WHERE id = 1", &[])
            .map_err(|e| pg_err("read the store", e))?;
        match row {
            None => Ok(None),
            Some(r) => {
                let g: i64 = r.try_get(0).map_err(|e| pg_err("read the store", e))?;
                let b: Vec<u8> = r.try_get(1).map_err(|e| pg_err("read the store", e))?;
                Ok(Some((generation_of(g)?, b)))
            }
        }
    })
}

impl Store {
    /// The root key source of the store at `end` (as a server or `kmsfs kms` would
    /// open it, `local_dir` being where a PostgreSQL store's local files live), and
    /// the root key file it names.
    pub(crate) fn migrate_key_file(
        end: &End<'_>,
        source: &RootKeySource,
        local_dir: &Path,
    ) -> PathBuf {
        match end {
            End::Dir(d) => key_file_of(source, d),
            End::Pg(_) => key_file_of(source, local_dir),
        }
    }

    /// Reads and checks the store at `end` under `source`.
    ///
    /// # Errors
    /// `InternalError` when there is no store there, or it does not load.
    pub(crate) fn migrate_read(
        end: &End<'_>,
        source: &RootKeySource,
        key_file: &Path,
    ) -> KmsResult<Image> {
        let (label, bytes) = match end {
            End::Dir(d) => {
                let path = d.join(STORE_FILE);
                let bytes = fs::read(&path).map_err(|e| io_err("cannot read", &path, e))?;
                (path, bytes)
            }
            End::Pg(url) => {
                let pg = pg_open(url)?;
                let (generation, bytes) = pg_row(&pg)?.ok_or_else(|| {
                    internal(format!("no key store in the database {}", pg.label))
                })?;
                let (h, _) = Header::parse(Path::new(&pg.label), &bytes)?;
                if h.generation != generation {
                    return Err(internal(format!(
                        "key store {}: the row's generation {generation} is not its body's {} (tampered)",
                        pg.label, h.generation
                    )));
                }
                (PathBuf::from(&pg.label), bytes)
            }
        };
        let (_, _, records) = check(&label, &bytes, source, key_file)?;
        Ok(Image { bytes, records })
    }

    /// Checks that `image` loads under `source` (before anything is written).
    pub(crate) fn migrate_check(
        image: &Image,
        source: &RootKeySource,
        key_file: &Path,
    ) -> KmsResult<()> {
        check(Path::new(STORE_FILE), &image.bytes, source, key_file).map(drop)
    }

    /// Whether the store at `end` holds at least one key (a store that cannot be
    /// read counts as holding keys).
    pub(crate) fn migrate_holds_keys(end: &End<'_>) -> KmsResult<bool> {
        match end {
            End::Dir(d) => match fs::read(d.join(STORE_FILE)) {
                Ok(b) => Ok(unchecked_key_count(&b) != Some(0)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err("cannot read", &d.join(STORE_FILE), e)),
            },
            End::Pg(url) => {
                let pg = pg_open(url)?;
                Ok(pg_row(&pg)?.is_some_and(|(_, b)| unchecked_key_count(&b) != Some(0)))
            }
        }
    }

    /// Writes `image` (checked under `source`) as the store at `end`, replacing what is
    /// there. In a directory: `keys.kms` replaced atomically under the store's lock,
    /// and, when `copy_root_key_to` is given, the root key file copied there first. In
    /// the database: the row replaced under the migration lock; its generation is
    /// raised past the one there (so running servers reload), which re-encodes the
    /// bytes with the same records.
    ///
    /// # Errors
    /// `InternalError` on I/O or database errors.
    pub(crate) fn migrate_write(
        end: &End<'_>,
        image: &Image,
        source: &RootKeySource,
        key_file: &Path,
        copy_root_key_to: Option<&Path>,
    ) -> KmsResult<()> {
        let (root, h, _) = check(Path::new(STORE_FILE), &image.bytes, source, key_file)?;
        match end {
            End::Dir(d) => {
                if !d.exists() {
                    fs::create_dir_all(d).map_err(|e| io_err("cannot create", d, e))?;
                    fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                        .map_err(|e| io_err("cannot chmod", d, e))?;
                }
                let _lock = LockGuard::acquire(&d.join(LOCK_FILE))?;
                if let Some(dst) = copy_root_key_to {
                    let key = read_root_key_file(key_file)?;
                    if !dst.exists() {
                        super::super::create_root_key_file(dst, &key)?;
                    }
                }
                let tmp = d.join(".keys.kms.migrate.tmp");
                let _ = fs::remove_file(&tmp);
                write_synced(
                    OpenOptions::new().write(true).create_new(true),
                    &tmp,
                    &image.bytes,
                    "key store",
                )?;
                let path = d.join(STORE_FILE);
                fs::rename(&tmp, &path).map_err(|e| io_err("cannot replace", &path, e))?;
                sync_dir(d)
            }
            End::Pg(url) => {
                let pg = pg_open(url)?;
                pg.with(|c| {
                    let mut tx = c.transaction().map_err(|e| pg_err("begin", e))?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
                        .map_err(|e| pg_err("lock", e))?;
                    let old = tx
                        .query_opt(
                            "SELECT generation FROM kmsfs_store WHERE id = 1 FOR UPDATE",
                            &[],
                        )
                        .map_err(|e| pg_err("lock the store", e))?;
                    let bytes = match old {
                        Some(r) => {
                            let old = generation_of(
                                r.try_get(0).map_err(|e| pg_err("read the store", e))?,
                            )?;
                            if old >= h.generation {
                                let mut h2 = h;
                                h2.generation = old + 1;
                                let (_, end) = Header::parse(Path::new(STORE_FILE), &image.bytes)?;
                                encode_file(&root, &h2, &image.bytes[STORE_HEADER_LEN..end])
                            } else {
                                image.bytes.clone()
                            }
                        }
                        None => image.bytes.clone(),
                    };
                    let (h2, _) = Header::parse(Path::new(STORE_FILE), &bytes)?;
                    let g = i64::try_from(h2.generation)
                        .map_err(|_| internal("key store generation overflow"))?;
                    tx.execute(
                        "INSERT INTO kmsfs_store (id, generation, body) VALUES (1, $1, $2)
                         ON CONFLICT (id) DO UPDATE SET generation = $1, body = $2",
                        &[&g, &bytes],
                    )
                    .map_err(|e| pg_err("write the store", e))?;
                    tx.commit().map_err(|e| pg_err("commit", e))
                })
            }
        }
    }
}

//! The PostgreSQL backend of [`Store`]: several `kmsfs kms serve` share one key set.
//!
//! The database holds exactly the bytes of a `keys.kms` (docs/FORMAT.md: header, JSON
//! body with every key's material wrapped under the root key, HMAC-SHA256) in one row
//! with its generation:
//!
//! ```text
//! kmsfs_meta  (one = true, schema_version)      versioned schema, migrated at start
//! kmsfs_store (id = 1, generation, body bytea)  the whole store, as keys.kms
//! kmsfs_audit, kmsfs_audit_head                  the audit log, one hash chain (audit_pg.rs)
//! ```
//!
//! so the database never sees key material in plaintext, and a dump without the root
//! key reveals no key. A transaction is one PostgreSQL transaction that locks the row
//! (`SELECT … FOR UPDATE`), applies the change and commits: two servers can never
//! both win conflicting changes, the second sees the first's result. A snapshot costs
//! one `SELECT generation` per request and reloads only when the generation moved, so
//! a change made through one server is seen by the next request to any other.
//! A lost connection (a restarted PostgreSQL) is made anew by the next request.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::{Client, Config, NoTls};

use super::{
    create_root_key_file, decode_file, encode_file, existing_root, internal, new_root, Body,
    FileId, Header, KmsResult, RootKeySource, Snapshot, Store, Txn, ROOT_KEY_FILE,
};

mod migration;

/// The schema version this crate's migrations reach.
pub const PG_SCHEMA_VERSION: i32 = 2;

/// Migration `n` (1-based) takes the schema from version `n - 1` to `n`: 1 the store
/// row, 2 the audit log (`audit_pg.rs`).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE kmsfs_store (
        id smallint PRIMARY KEY CHECK (id = 1),
        generation bigint NOT NULL,
        body bytea NOT NULL)",
    crate::audit::MIGRATION_AUDIT,
];

/// The advisory lock key under which schema migrations and store creation run.
const MIGRATE_LOCK: i64 = 0x6b6d_7366_7300;

/// Whether `spec` names a PostgreSQL store (`postgres://…` or `postgresql://…`).
pub fn is_postgres_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

fn pg_err(what: &str, e: postgres::Error) -> crate::KmsError {
    internal(format!("key store (PostgreSQL): {what}: {e}"))
}

/// One connection to the database, made anew after it is lost.
pub(crate) struct PgStore {
    config: Config,
    /// `postgres://host:port/db`, without user or password, for messages.
    label: String,
    client: Mutex<Option<Client>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        crate::audit::drop_client(&self.client);
    }
}

impl PgStore {
    fn connect(url: &str) -> KmsResult<PgStore> {
        let mut config = Config::from_str(url)
            .map_err(|e| internal(format!("key store URL is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(5));
        config.keepalives_idle(Duration::from_secs(30));
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, h)| h))
            .unwrap_or("");
        let label = format!("postgres://{}", host.split('?').next().unwrap_or(""));
        let pg = PgStore {
            config,
            label,
            client: Mutex::new(None),
        };
        pg.with(|_| Ok(()))?;
        Ok(pg)
    }

    /// Runs `f` on the connection, connecting first if there is none; a closed
    /// connection is dropped, so the next call reconnects.
    fn with<R>(&self, f: impl FnOnce(&mut Client) -> KmsResult<R>) -> KmsResult<R> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let c = self
                .config
                .connect(NoTls)
                .map_err(|e| pg_err(&format!("cannot connect to {}", self.label), e))?;
            *guard = Some(c);
        }
        let client = guard.as_mut().ok_or_else(|| internal("no connection"))?;
        let r = f(client);
        if client.is_closed() {
            *guard = None;
        }
        r
    }

    /// Runs `f` once, and once more on a new connection if the first lost its
    /// connection (a restarted database). Only for reads.
    fn read<R>(&self, f: impl Fn(&mut Client) -> KmsResult<R>) -> KmsResult<R> {
        match self.with(&f) {
            Err(_)
                if self
                    .client
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none() =>
            {
                self.with(&f)
            }
            r => r,
        }
    }

    /// Brings the schema to [`PG_SCHEMA_VERSION`], one migration at a time, under
    /// an advisory lock (servers starting at once migrate once).
    fn migrate(&self) -> KmsResult<()> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(|e| pg_err("begin", e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
                .map_err(|e| pg_err("lock", e))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS kmsfs_meta (
                     one boolean PRIMARY KEY DEFAULT true CHECK (one),
                     schema_version integer NOT NULL);
                 INSERT INTO kmsfs_meta (one, schema_version) VALUES (true, 0)
                     ON CONFLICT (one) DO NOTHING",
            )
            .map_err(|e| pg_err("create kmsfs_meta", e))?;
            let v: i32 = tx
                .query_one("SELECT schema_version FROM kmsfs_meta", &[])
                .map_err(|e| pg_err("read the schema version", e))?
                .get(0);
            if v > PG_SCHEMA_VERSION {
                return Err(internal(format!(
                    "key store {} has schema version {v}; this kmsfs knows up to {PG_SCHEMA_VERSION} \
                     (a newer kmsfs migrated it)",
                    self.label
                )));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
                tx.batch_execute(sql)
                    .map_err(|e| pg_err(&format!("schema migration {}", i + 1), e))?;
                tracing::info!(store = %self.label, version = i + 1, "key store schema migrated");
            }
            tx.execute(
                "UPDATE kmsfs_meta SET schema_version = $1",
                &[&PG_SCHEMA_VERSION.max(v)],
            )
            .map_err(|e| pg_err("record the schema version", e))?;
            tx.commit().map_err(|e| pg_err("commit the migration", e))
        })
    }
}

fn generation_of(v: i64) -> KmsResult<u64> {
    u64::try_from(v).map_err(|_| internal("key store (PostgreSQL): negative generation"))
}

impl Store {
    /// Opens the key store in the PostgreSQL database `url`, migrating its schema and,
    /// on first use, creating an empty store (and the root key file, if the root key
    /// source names one that does not exist yet). `local_dir` holds what stays on
    /// this host: the default root key file and the audit log.
    ///
    /// # Errors
    /// `InternalError` when the database cannot be reached, its schema is newer, or
    /// the root key does not belong to the store there.
    pub fn open_pg(url: &str, local_dir: &Path, source: RootKeySource) -> KmsResult<Store> {
        let pg = PgStore::connect(url)?;
        pg.migrate()?;
        let label = PathBuf::from(&pg.label);
        let key_file = match &source {
            RootKeySource::File(p) => p.clone(),
            RootKeySource::Passphrase(_) => std::env::var_os("KMSFS_KMS_ROOT_KEY")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| local_dir.join(ROOT_KEY_FILE)),
        };
        let (root, header) = pg.with(|c| {
            let mut tx = c.transaction().map_err(|e| pg_err("begin", e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
                .map_err(|e| pg_err("lock", e))?;
            let row = tx
                .query_opt("SELECT body FROM kmsfs_store WHERE id = 1", &[])
                .map_err(|e| pg_err("read the store", e))?;
            if let Some(row) = row {
                let bytes: Vec<u8> = row.get(0);
                let (h, _) = Header::parse(&label, &bytes)?;
                return Ok((existing_root(&h, &source, &key_file, &label)?, h));
            }
            let mut new_key_file = None;
            let (root, mut h) = new_root(&source, &mut new_key_file)?;
            if let Some((p, key)) = new_key_file {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        internal(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                create_root_key_file(&p, &key)?;
            }
            h.generation = 1;
            let json = serde_json::to_vec(&Body::default())
                .map_err(|e| internal(format!("serialise store: {e}")))?;
            let bytes = encode_file(&root, &h, &json);
            tx.execute(
                "INSERT INTO kmsfs_store (id, generation, body) VALUES (1, 1, $1)",
                &[&bytes],
            )
            .map_err(|e| pg_err("create the store", e))?;
            tx.commit().map_err(|e| pg_err("commit", e))?;
            tracing::info!(store = %pg.label, "created an empty key store");
            Ok((root, h))
        })?;
        let store = Store {
            dir: local_dir.to_path_buf(),
            store_path: label,
            lock_path: local_dir.join(super::LOCK_FILE),
            root,
            header,
            current: std::sync::RwLock::new(Arc::new(Snapshot::empty_placeholder()?)),
            pg: Some(pg),
        };
        let pg = store.pg.as_ref().ok_or_else(|| internal("no database"))?;
        store.pg_snapshot(pg)?;
        Ok(store)
    }

    /// The current snapshot: one `SELECT generation`, and a reload when it moved.
    pub(super) fn pg_snapshot(&self, pg: &PgStore) -> KmsResult<Arc<Snapshot>> {
        let generation = pg.read(|c| {
            c.query_one("SELECT generation FROM kmsfs_store WHERE id = 1", &[])
                .map_err(|e| pg_err("read the generation", e))
                .and_then(|r| generation_of(r.get(0)))
        })?;
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.generation == generation {
                return Ok(Arc::clone(&cur));
            }
        }
        let (generation, bytes) = pg.read(|c| {
            let r = c
                .query_one("SELECT generation, body FROM kmsfs_store WHERE id = 1", &[])
                .map_err(|e| pg_err("read the store", e))?;
            Ok((generation_of(r.get(0))?, r.get::<_, Vec<u8>>(1)))
        })?;
        self.pg_install(generation, &bytes)
    }

    /// Decodes the row `(generation, bytes)` into a snapshot and makes it current
    /// unless a newer one already is.
    fn pg_install(&self, generation: u64, bytes: &[u8]) -> KmsResult<Arc<Snapshot>> {
        let (h, body) = decode_file(&self.root, &self.store_path, bytes)?;
        if h.generation != generation {
            return Err(internal(format!(
                "key store {}: the row's generation {generation} is not its body's {} (tampered)",
                self.store_path.display(),
                h.generation
            )));
        }
        self.pg_install_records(generation, body)
    }

    fn pg_install_records(&self, generation: u64, body: Body) -> KmsResult<Arc<Snapshot>> {
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.generation == generation {
                return Ok(Arc::clone(&cur));
            }
        }
        let snap = Arc::new(self.build(None, FileId::default(), generation, body)?);
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.generation < generation {
            *cur = Arc::clone(&snap);
        }
        Ok(snap)
    }

    /// One transaction: lock the store row, apply `f` (and due maintenance), write
    /// and commit if anything changed.
    pub(super) fn pg_transact<R>(
        &self,
        pg: &PgStore,
        now: u64,
        f: impl FnOnce(&mut Txn<'_>) -> KmsResult<R>,
    ) -> KmsResult<R> {
        let (r, written) = pg.with(|c| {
            let mut tx = c.transaction().map_err(|e| pg_err("begin", e))?;
            let row = tx
                .query_one(
                    "SELECT generation, body FROM kmsfs_store WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .map_err(|e| pg_err("lock the store", e))?;
            let generation = generation_of(row.get(0))?;
            let snap = self.pg_install(generation, row.get::<_, &[u8]>(1))?;
            let mut written = None;
            let r = self.apply(&snap, now, f, |g, body| {
                let mut h = self.header;
                h.version = body.format();
                h.generation = g + 1;
                let json = serde_json::to_vec(&body)
                    .map_err(|e| internal(format!("serialise store: {e}")))?;
                let bytes = encode_file(&self.root, &h, &json);
                let next = i64::try_from(h.generation)
                    .map_err(|_| internal("key store generation overflow"))?;
                tx.execute(
                    "UPDATE kmsfs_store SET generation = $1, body = $2 WHERE id = 1",
                    &[&next, &bytes],
                )
                .map_err(|e| pg_err("write the store", e))?;
                written = Some((h.generation, body));
                Ok(())
            });
            if written.is_some() {
                tx.commit().map_err(|e| pg_err("commit", e))?;
            }
            Ok((r, written))
        })?;
        if let Some((generation, body)) = written {
            self.pg_install_records(generation, body)?;
        }
        r
    }
}

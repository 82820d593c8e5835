//! The embedded key store: one authenticated file of key records, key material
//! wrapped under a root key kept in a separate file (or derived from a passphrase).
//!
//! Files in the store directory (docs/FORMAT.md, "KMS formats", has the bytes):
//!
//! | file | what |
//! |---|---|
//! | `keys.kms` | the store: header, JSON body of [`KeyRecord`]s, HMAC-SHA256 |
//! | `root.key` | the 32-byte root key (0600), unless a passphrase is used |
//! | `lock` | flock'ed for one read-modify-write of `keys.kms` at a time |
//! | `audit.log` | the audit log (see `audit.rs`) |
//!
//! Updates are atomic (write `keys.kms.tmp`, fsync, rename, fsync the directory)
//! and run under an exclusive flock of `lock` held for that one operation. Every
//! call checks freshness with one `stat` of `keys.kms`: a snapshot keeps the file
//! it was loaded from open, so its inode number cannot be reused, and a changed
//! (device, inode) pair means another writer replaced the file.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the store: snapshots, transactions, maintenance (purge, rotation) |
//! | `codec.rs` | the bytes, shared by both backends: header, body, MAC, material wrapping |
//! | `root_key.rs` | the root key file and the passphrase (scrypt) |
//! | `fsio.rs` | the file backend's flock, file identity and durable writes |
//! | `pg.rs` | the PostgreSQL backend; `pg/migration.rs` is `kmsfs kms migrate`'s side |

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::asym::{EcKey, RsaKey, Sm2Key};
use crate::crypto::{self, AeadKey, KEY_LEN, NONCE_LEN};
use crate::key::{
    DataKeyRecord, DataKeyState, KeyRecord, KeyState, KeyVersionRecord, MaterialKind, Origin,
};
use crate::pqc::{DsaKey, KemKey};
use crate::{ErrorCode, KmsError, KmsResult};

mod codec;
mod fsio;
mod pg;
mod root_key;

pub(crate) use codec::Material;
use codec::*;
pub use codec::{
    material_ad, parse_store_file, test_vector_material_check, test_vector_store_file,
    test_vector_store_file_version, test_vector_wrap_kind,
};
pub use fsio::STORE_LOCK_TIMEOUT;
use fsio::*;
pub(crate) use fsio::{lock_with_timeout, sync_dir};
use root_key::*;

/// The key-store file in the store directory.
pub const STORE_FILE: &str = "keys.kms";
/// The root-key file in the store directory (default location).
pub const ROOT_KEY_FILE: &str = "root.key";
/// The lock file in the store directory.
pub const LOCK_FILE: &str = "lock";
/// The audit log in the store directory.
pub const AUDIT_FILE: &str = "audit.log";
const TMP_FILE: &str = "keys.kms.tmp";

/// First 8 bytes of `keys.kms`.
pub const STORE_MAGIC: [u8; 8] = *b"kmsfs-ks";
/// The newest store format version this crate reads and writes. Version 2 adds
/// material kinds (`AES_128`, `RSA_2048`, `EC_P256`, `SM2`) and the `material_check`
/// and `import` fields of a key record; version 3 adds post-quantum material
/// (`ML_KEM_768`, `ML_DSA_65`), key tags and hosted data keys. A store is written as
/// the oldest version that holds it, never older than 2 ([`Body::format`]): a store
/// without version-3 content stays readable by a kmsfs that reads version 2, and one
/// with it is refused by that kmsfs rather than silently stripped by its next change.
pub const STORE_FORMAT_VERSION: u16 = 3;
/// The oldest store format version this crate reads.
pub const STORE_FORMAT_MIN_VERSION: u16 = 1;
/// First 8 bytes of `root.key`.
pub const ROOT_KEY_MAGIC: [u8; 8] = *b"kmsfs-rk";
/// The root-key file format version.
pub const ROOT_KEY_VERSION: u16 = 1;
/// Length of `root.key`: magic, version, key.
pub const ROOT_KEY_FILE_LEN: usize = 8 + 2 + KEY_LEN;
/// Length of the `keys.kms` header.
pub const STORE_HEADER_LEN: usize = 64;
/// Length of the trailing MAC.
pub const STORE_MAC_LEN: usize = 32;

/// Root key source byte: the key file.
pub const SOURCE_FILE: u8 = 1;
/// Root key source byte: scrypt of a passphrase.
pub const SOURCE_PASSPHRASE: u8 = 2;

/// HMAC label: root key check value.
pub const LABEL_CHECK: &[u8] = b"kmsfs-kms root-check v1";
/// HMAC label: the key that authenticates `keys.kms`.
pub const LABEL_MAC: &[u8] = b"kmsfs-kms store-mac v1";
/// HMAC label: the key that wraps key material.
pub const LABEL_WRAP: &[u8] = b"kmsfs-kms material-wrap v1";
/// HMAC label: the key of imported material's check value (`material_check`).
pub const LABEL_MATERIAL_CHECK: &[u8] = b"kmsfs-kms material-check v1";
/// Prefix of the associated data of wrapped material.
pub const MATERIAL_AD_PREFIX: &[u8] = b"kmsfs-kms material v1\0";
/// The version number under which a BYOK wrapping key is wrapped (never a real
/// material version, which start at 1).
pub const IMPORT_KEY_VERSION: u32 = 0;

/// scrypt parameters for new passphrase stores: N = 2^15, r = 8, p = 1.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u16 = 8;
const SCRYPT_P: u16 = 1;

/// Where the root key comes from.
pub enum RootKeySource {
    /// A 0600 file, made on first use (default: `<store>/root.key`).
    File(PathBuf),
    /// A passphrase, run through scrypt with a salt kept in the store header.
    Passphrase(Zeroizing<String>),
}

impl std::fmt::Debug for RootKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootKeySource::File(p) => f.debug_tuple("File").field(p).finish(),
            RootKeySource::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

fn internal(msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::InternalError, msg)
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> KmsError {
    internal(format!("key store: {what} {}: {e}", path.display()))
}

/// A key with its material unwrapped.
#[derive(Debug)]
pub(crate) struct LoadedKey {
    pub rec: KeyRecord,
    /// Material of version `n` at index `n - 1`.
    pub material: Vec<Arc<Material>>,
}

/// The store as one process sees it at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The file this snapshot was read from, kept open so its inode stays unique.
    _file: Option<File>,
    file_id: FileId,
    /// The generation in the file's header.
    generation: u64,
    pub keys: Vec<LoadedKey>,
    /// Hosted data keys, oldest first.
    pub data_keys: Vec<DataKeyRecord>,
    by_id: HashMap<String, usize>,
    by_alias: HashMap<String, usize>,
    /// The earliest time at which a purge or an automatic rotation is due.
    pub next_due: u64,
}

impl Snapshot {
    /// Finds a key by id or `alias/NAME`.
    pub fn find(&self, key: &str) -> Option<&LoadedKey> {
        let i = match key.strip_prefix("alias/") {
            Some(alias) => self.by_alias.get(alias),
            None => self.by_id.get(key),
        };
        i.and_then(|&i| self.keys.get(i))
    }

    /// Finds a key by exact id.
    pub fn by_id(&self, key_id: &str) -> Option<&LoadedKey> {
        self.by_id.get(key_id).and_then(|&i| self.keys.get(i))
    }

    fn records(&self) -> Body {
        Body {
            keys: self.keys.iter().map(|k| k.rec.clone()).collect(),
            data_keys: self.data_keys.clone(),
        }
    }
}

/// One read-modify-write of the store, under its lock.
pub(crate) struct Txn<'a> {
    /// The records; edit freely.
    pub keys: Vec<KeyRecord>,
    /// The hosted data keys; edit freely.
    pub data_keys: Vec<DataKeyRecord>,
    /// The time of the transaction.
    pub now: u64,
    root: &'a RootKeys,
}

impl Txn<'_> {
    fn body(&self) -> Body {
        Body {
            keys: self.keys.clone(),
            data_keys: self.data_keys.clone(),
        }
    }

    /// Makes new random AES-256 material for `key_id` version `version`, wrapped.
    pub fn new_aes_version(&self, key_id: &str, version: u32) -> KmsResult<KeyVersionRecord> {
        let mut material = Zeroizing::new([0u8; KEY_LEN]);
        crypto::random_bytes(&mut material[..])?;
        wrap_material(
            self.root,
            key_id,
            version,
            MaterialKind::Aes256,
            &material[..],
            self.now,
        )
    }

    /// Wraps the PKCS#8 DER of a new asymmetric key as `key_id` version `version`.
    pub fn new_asym_version(
        &self,
        key_id: &str,
        version: u32,
        kind: MaterialKind,
        pkcs8_der: &[u8],
    ) -> KmsResult<KeyVersionRecord> {
        wrap_material(self.root, key_id, version, kind, pkcs8_der, self.now)
    }

    /// Wraps imported material (16 or 32 bytes) as `key_id` version 1; returns it
    /// with its `material_check`.
    pub fn imported_version(
        &self,
        key_id: &str,
        material: &[u8],
    ) -> KmsResult<(KeyVersionRecord, String)> {
        let kind = match material.len() {
            16 => MaterialKind::Aes128,
            32 => MaterialKind::Aes256,
            _ => return Err(internal("imported material must be 16 or 32 bytes")),
        };
        let v = wrap_material(self.root, key_id, 1, kind, material, self.now)?;
        Ok((v, material_check(self.root, key_id, material)))
    }

    /// The `material_check` of `material` for `key_id`.
    pub fn material_check(&self, key_id: &str, material: &[u8]) -> String {
        material_check(self.root, key_id, material)
    }

    /// Wraps a BYOK wrapping key (PKCS#8 DER) for `key_id`.
    pub fn wrap_import_key(&self, key_id: &str, pkcs8_der: &[u8]) -> KmsResult<String> {
        let mut nonce = [0u8; NONCE_LEN];
        crypto::random_bytes(&mut nonce)?;
        wrap_with_nonce(
            self.root,
            key_id,
            IMPORT_KEY_VERSION,
            MaterialKind::Rsa2048,
            pkcs8_der,
            &nonce,
        )
    }

    /// Unwraps the BYOK wrapping key of `key_id`.
    pub fn unwrap_import_key(&self, key_id: &str, wrapped: &str) -> KmsResult<RsaKey> {
        open_wrapped(
            self.root,
            key_id,
            IMPORT_KEY_VERSION,
            MaterialKind::Rsa2048,
            wrapped,
        )
        .and_then(|der| RsaKey::from_pkcs8_der(&der))
        .ok_or_else(|| {
            internal(format!(
                "key store: the import wrapping key of key {key_id} does not authenticate (damaged store)"
            ))
        })
    }

    /// Index of the key named by an id or `alias/NAME`.
    pub fn resolve(&self, key: &str) -> Option<usize> {
        match key.strip_prefix("alias/") {
            Some(alias) => self.keys.iter().position(|k| k.alias == alias),
            None => self.keys.iter().position(|k| k.key_id == key),
        }
    }
}

/// The embedded key store.
pub(crate) struct Store {
    dir: PathBuf,
    store_path: PathBuf,
    lock_path: PathBuf,
    root: RootKeys,
    header: Header,
    current: RwLock<Arc<Snapshot>>,
    /// The PostgreSQL backend (`store/pg.rs`); `None`: the store file.
    pg: Option<pg::PgStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `dir`, creating the directory, root key and an empty
    /// store on first use. Never replaces an existing store or root key.
    pub fn open(dir: &Path, source: RootKeySource) -> KmsResult<Store> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| io_err("cannot chmod", dir, e))?;
        }
        let store_path = dir.join(STORE_FILE);
        let lock_path = dir.join(LOCK_FILE);
        let _lock = LockGuard::acquire(&lock_path)?;
        // The root key file a store of source 1 uses.
        let key_file = match &source {
            RootKeySource::File(p) => p.clone(),
            RootKeySource::Passphrase(_) => std::env::var_os("KMSFS_KMS_ROOT_KEY")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join(ROOT_KEY_FILE)),
        };
        let existing = match fs::read(&store_path) {
            Ok(bytes) => {
                let (h, end) = Header::parse(&store_path, &bytes)?;
                // First use writes keys.kms before root.key: a crash in between
                // leaves a store that never held a key and has no root key. Only
                // that store is made anew; any other is never replaced.
                let virgin = h.source == SOURCE_FILE
                    && h.generation == 1
                    && !key_file.exists()
                    && serde_json::from_slice::<Body>(&bytes[STORE_HEADER_LEN..end])
                        .is_ok_and(|b| b.keys.is_empty());
                (!virgin).then_some(h)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if matches!(&source, RootKeySource::File(p) if *p == dir.join(ROOT_KEY_FILE) && p.exists())
                {
                    return Err(internal(format!(
                        "key store {} is missing but its root key {} exists: restore keys.kms from a backup \
                         (if this directory never held keys, move the root key away to start a new store)",
                        store_path.display(),
                        key_file.display()
                    )));
                }
                None
            }
            Err(e) => return Err(io_err("cannot read", &store_path, e)),
        };
        let mut new_key_file = None;
        let (root, header) = if let Some(h) = existing {
            (existing_root(&h, &source, &key_file, &store_path)?, h)
        } else {
            new_root(&source, &mut new_key_file)?
        };
        let fresh = new_key_file.is_some() || header.generation == 0;
        let placeholder = Snapshot::empty_placeholder()?;
        let store = Store {
            dir: dir.to_path_buf(),
            store_path,
            lock_path,
            root,
            header,
            current: RwLock::new(Arc::new(placeholder)),
            pg: None,
        };
        if fresh {
            // keys.kms first (empty, durable), then the root key file: every
            // crash point leaves either nothing, a virgin store made anew on the
            // next open, or a complete store.
            store.write(0, Body::default())?;
            if let Some((p, key)) = new_key_file {
                create_root_key_file(&p, &key)?;
            }
        } else {
            store.reload()?;
        }
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current snapshot, reloaded first if another process changed the store.
    /// Costs one `stat` when nothing changed.
    pub fn snapshot(&self) -> KmsResult<Arc<Snapshot>> {
        if let Some(pg) = &self.pg {
            return self.pg_snapshot(pg);
        }
        let md = fs::metadata(&self.store_path)
            .map_err(|e| io_err("cannot stat", &self.store_path, e))?;
        let id = file_id(&md);
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.file_id == id {
                return Ok(Arc::clone(&cur));
            }
        }
        self.reload()
    }

    fn reload(&self) -> KmsResult<Arc<Snapshot>> {
        let mut f =
            File::open(&self.store_path).map_err(|e| io_err("cannot open", &self.store_path, e))?;
        let md = f
            .metadata()
            .map_err(|e| io_err("cannot stat", &self.store_path, e))?;
        let mut bytes = Vec::with_capacity(md.len() as usize);
        f.read_to_end(&mut bytes)
            .map_err(|e| io_err("cannot read", &self.store_path, e))?;
        let (h, body) = decode_file(&self.root, &self.store_path, &bytes)?;
        let snap = Arc::new(self.build(Some(f), file_id(&md), h.generation, body)?);
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = Arc::clone(&snap);
        Ok(snap)
    }

    fn build(
        &self,
        file: Option<File>,
        file_id: FileId,
        generation: u64,
        body: Body,
    ) -> KmsResult<Snapshot> {
        let Body {
            keys: recs,
            data_keys,
        } = body;
        let mut keys = Vec::with_capacity(recs.len());
        let mut by_id = HashMap::with_capacity(recs.len());
        let mut by_alias = HashMap::with_capacity(recs.len());
        let mut next_due = u64::MAX;
        // Material already unwrapped (same key, same wrapped versions) is reused:
        // a reload after another process's DisableKey costs no crypto.
        let prev = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        for (i, rec) in recs.into_iter().enumerate() {
            let material = match prev.by_id(&rec.key_id) {
                Some(k) if k.rec.versions == rec.versions => k.material.clone(),
                _ => unwrap_material(&self.root, &self.store_path, &rec)?,
            };
            by_id.insert(rec.key_id.clone(), i);
            if !rec.alias.is_empty() {
                by_alias.insert(rec.alias.clone(), i);
            }
            if rec.state == KeyState::PendingDelete && rec.deletion_date > 0 {
                next_due = next_due.min(rec.deletion_date);
            }
            if rec.rotation_enabled && rec.state == KeyState::Enabled && rec.next_rotate_time > 0 {
                next_due = next_due.min(rec.next_rotate_time);
            }
            if imported_material_expires(&rec) {
                next_due = next_due.min(rec.valid_to);
            }
            keys.push(LoadedKey { rec, material });
        }
        for d in &data_keys {
            if d.state == DataKeyState::PendingDelete && d.deletion_date > 0 {
                next_due = next_due.min(d.deletion_date);
            }
        }
        Ok(Snapshot {
            _file: file,
            file_id,
            generation,
            keys,
            data_keys,
            by_id,
            by_alias,
            next_due,
        })
    }

    /// Writes `body` as generation `generation + 1`: temp file, fsync, rename,
    /// fsync dir. The caller holds the lock.
    fn write(&self, generation: u64, body: Body) -> KmsResult<Arc<Snapshot>> {
        let json =
            serde_json::to_vec(&body).map_err(|e| internal(format!("serialise store: {e}")))?;
        let mut h = self.header;
        h.version = body.format();
        h.generation = generation + 1;
        let bytes = encode_file(&self.root, &h, &json);
        let tmp = self.dir.join(TMP_FILE);
        write_synced(
            OpenOptions::new().write(true).create(true).truncate(true),
            &tmp,
            &bytes,
            "store",
        )?;
        fs::rename(&tmp, &self.store_path)
            .map_err(|e| io_err("cannot replace", &self.store_path, e))?;
        sync_dir(&self.dir)?;
        let f =
            File::open(&self.store_path).map_err(|e| io_err("cannot open", &self.store_path, e))?;
        let md = f
            .metadata()
            .map_err(|e| io_err("cannot stat", &self.store_path, e))?;
        let snap = Arc::new(self.build(Some(f), file_id(&md), h.generation, body)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&snap);
        Ok(snap)
    }

    /// One read-modify-write under the store lock: `f` edits the records; purges
    /// and automatic rotations that are due run too; the store is written only
    /// if something changed.
    pub fn transact<R>(
        &self,
        now: u64,
        f: impl FnOnce(&mut Txn<'_>) -> KmsResult<R>,
    ) -> KmsResult<R> {
        if let Some(pg) = &self.pg {
            return self.pg_transact(pg, now, f);
        }
        let _lock = LockGuard::acquire(&self.lock_path)?;
        let snap = self.snapshot()?;
        self.apply(&snap, now, f, |g, body| self.write(g, body).map(drop))
    }

    /// The body of a transaction over `snap`: due maintenance, then `f`; `write`
    /// stores changed records as the generation after the one it is given.
    fn apply<R>(
        &self,
        snap: &Snapshot,
        now: u64,
        f: impl FnOnce(&mut Txn<'_>) -> KmsResult<R>,
        mut write: impl FnMut(u64, Body) -> KmsResult<()>,
    ) -> KmsResult<R> {
        let before = snap.records();
        let mut txn = Txn {
            keys: before.keys.clone(),
            data_keys: before.data_keys.clone(),
            now,
            root: &self.root,
        };
        maintain(&mut txn)?;
        let maintained = txn.body();
        let r = match f(&mut txn) {
            Ok(r) => r,
            Err(e) => {
                // Drop f's partial edits, but persist due purges and rotations.
                if maintained != before {
                    write(snap.generation, maintained)?;
                }
                return Err(e);
            }
        };
        let after = txn.body();
        if after != before {
            write(snap.generation, after)?;
        }
        Ok(r)
    }
}

/// An EXTERNAL key whose material has a `ValidTo`.
fn imported_material_expires(rec: &KeyRecord) -> bool {
    rec.origin == Origin::External && rec.valid_to > 0 && !rec.versions.is_empty()
}

/// Whether the imported material of `rec` has expired at `now` (it is then
/// treated as deleted, even before a write removes it).
pub(crate) fn imported_material_expired(rec: &KeyRecord, now: u64) -> bool {
    imported_material_expires(rec) && rec.valid_to <= now
}

/// Removes the material of an EXTERNAL key (DeleteImportedKeyMaterial, or its
/// `ValidTo` passed): the key goes to PendingImport (a key pending deletion
/// stays so); `material_check` is kept.
pub(crate) fn delete_imported_material(rec: &mut KeyRecord) {
    rec.versions.clear();
    rec.valid_to = 0;
    if rec.state != KeyState::PendingDelete {
        rec.state = KeyState::PendingImport;
    }
}

pub use pg::{is_postgres_url, PG_SCHEMA_VERSION};

/// Purges keys whose deletion date has passed, deletes imported material whose
/// `ValidTo` has passed, and rotates keys whose rotation is due.
fn maintain(txn: &mut Txn<'_>) -> KmsResult<()> {
    let now = txn.now;
    txn.keys
        .retain(|k| !(k.state == KeyState::PendingDelete && k.deletion_date <= now));
    txn.data_keys
        .retain(|d| !(d.state == DataKeyState::PendingDelete && d.deletion_date <= now));
    for k in txn.keys.iter_mut() {
        if imported_material_expired(k, now) {
            delete_imported_material(k);
        }
    }
    for i in 0..txn.keys.len() {
        let k = &txn.keys[i];
        if k.rotation_enabled
            && k.state == KeyState::Enabled
            && k.next_rotate_time > 0
            && k.next_rotate_time <= now
        {
            let v = txn.new_aes_version(&k.key_id, k.current_version() + 1)?;
            let days = u64::from(txn.keys[i].rotate_days.max(1));
            let k = &mut txn.keys[i];
            k.versions.push(v);
            k.last_rotate_time = now;
            k.next_rotate_time = now + days * 86_400;
        }
    }
    Ok(())
}

impl Snapshot {
    fn empty_placeholder() -> KmsResult<Snapshot> {
        Ok(Snapshot {
            _file: None,
            file_id: FileId::default(),
            generation: 0,
            keys: Vec::new(),
            data_keys: Vec::new(),
            by_id: HashMap::new(),
            by_alias: HashMap::new(),
            next_due: u64::MAX,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The golden v1 volume's key store (tests/golden/v1/kms) and its root key.
    const GOLDEN: &[u8] = include_bytes!("../../../tests/golden/v1/kms/keys.kms");
    const GOLDEN_ROOT: &[u8] = include_bytes!("../../../tests/golden/v1/kms/root.key");

    #[test]
    fn parse_store_file_reads_the_golden_store_and_refuses_any_change() {
        let root: [u8; KEY_LEN] = GOLDEN_ROOT[10..].try_into().unwrap();
        let keys = parse_store_file(&root, GOLDEN).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].versions.len(), 1);
        // One flipped bit anywhere (header, body, MAC) and the file is refused.
        for i in [0, 9, 20, 40, 50, STORE_HEADER_LEN + 3, GOLDEN.len() - 1] {
            let mut bad = GOLDEN.to_vec();
            bad[i] ^= 1;
            assert!(parse_store_file(&root, &bad).is_err(), "byte {i}");
        }
        assert!(parse_store_file(&root, &GOLDEN[..GOLDEN.len() - 1]).is_err());
        assert!(parse_store_file(&[0u8; KEY_LEN], GOLDEN).is_err());
        // A well-framed body that is not a key list, and a record whose material does
        // not authenticate, are refused too.
        let framed = test_vector_store_file(&root, 1, br#"{"keys":7}"#);
        assert!(parse_store_file(&root, &framed).is_err());
        let body = &GOLDEN[STORE_HEADER_LEN..GOLDEN.len() - STORE_MAC_LEN];
        let text = String::from_utf8(body.to_vec()).unwrap();
        let wrapped = keys[0].versions[0].wrapped.clone();
        let forged = text.replace(&wrapped, &B64.encode([0u8; 60]));
        let framed = test_vector_store_file(&root, 1, forged.as_bytes());
        let e = parse_store_file(&root, &framed).unwrap_err();
        assert!(e.message.contains("does not authenticate"), "{}", e.message);
    }
}

//! The root key: its file (`root.key`, 0600, never replaced), the passphrase
//! (scrypt) alternative, and the root keys of an existing or a new store.

use super::*;

pub(super) fn read_root_key_file(path: &Path) -> KmsResult<Zeroizing<[u8; KEY_LEN]>> {
    let mut f = File::open(path).map_err(|e| io_err("cannot open root key", path, e))?;
    if let Ok(md) = f.metadata() {
        if md.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "root key file is readable by group or others; chmod 600 it");
        }
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(ROOT_KEY_FILE_LEN));
    f.read_to_end(&mut buf)
        .map_err(|e| io_err("cannot read root key", path, e))?;
    if buf.len() != ROOT_KEY_FILE_LEN
        || buf[0..8] != ROOT_KEY_MAGIC
        || buf[8..10] != ROOT_KEY_VERSION.to_be_bytes()
    {
        return Err(internal(format!(
            "root key file {} is damaged or not a kmsfs root key; restore it from a backup",
            path.display()
        )));
    }
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    k.copy_from_slice(&buf[10..]);
    Ok(k)
}

/// Writes a new root key file (0600, fsync'ed, linked into place so that an
/// existing file is never replaced, directory fsync'ed).
pub(super) fn create_root_key_file(path: &Path, key: &[u8; KEY_LEN]) -> KmsResult<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".root.key.tmp.{}", std::process::id()));
    let mut content = Zeroizing::new(Vec::with_capacity(ROOT_KEY_FILE_LEN));
    content.extend_from_slice(&ROOT_KEY_MAGIC);
    content.extend_from_slice(&ROOT_KEY_VERSION.to_be_bytes());
    content.extend_from_slice(key);
    let _ = fs::remove_file(&tmp);
    write_synced(
        OpenOptions::new().write(true).create_new(true),
        &tmp,
        &content,
        "root key",
    )?;
    // link(2) never replaces an existing file.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked.map_err(|e| io_err("cannot create root key", path, e))?;
    sync_dir(parent)
}

pub(super) fn scrypt_root(pass: &str, h: &Header) -> KmsResult<Zeroizing<[u8; KEY_LEN]>> {
    if pass.is_empty() {
        return Err(internal("KMSFS_KMS_PASSPHRASE is empty"));
    }
    let params = scrypt::Params::new(h.log_n, u32::from(h.r), u32::from(h.p), KEY_LEN)
        .map_err(|_| internal("key store header has invalid scrypt parameters (damaged store)"))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    scrypt::scrypt(pass.as_bytes(), &h.salt, &params, &mut out[..])
        .map_err(|_| internal("scrypt failed"))?;
    Ok(out)
}

/// The root keys of an existing store with header `h`, from `source` (a store
/// made with a root key file keeps using `key_file`).
pub(super) fn existing_root(
    h: &Header,
    source: &RootKeySource,
    key_file: &Path,
    store_path: &Path,
) -> KmsResult<RootKeys> {
    let key = match (h.source, source) {
        (SOURCE_PASSPHRASE, RootKeySource::Passphrase(p)) => scrypt_root(p, h)?,
        (SOURCE_PASSPHRASE, RootKeySource::File(_)) => {
            return Err(internal(format!(
                "key store {} is protected by a passphrase: set KMSFS_KMS_PASSPHRASE",
                store_path.display()
            )))
        }
        // A store made with a root key file keeps using it, even when a
        // passphrase is set in the environment.
        (SOURCE_FILE, _) => read_root_key_file(key_file).map_err(|e| {
            internal(format!(
                "{}; the store {} cannot be opened without it (a new root key is never made for an existing store)",
                e.message,
                store_path.display()
            ))
        })?,
        (s, _) => {
            return Err(internal(format!(
                "key store {} names an unknown root key source {s} (damaged store)",
                store_path.display()
            )))
        }
    };
    let root = RootKeys::derive(&key);
    if root.check != h.check {
        return Err(internal(format!(
            "the root key does not belong to key store {} (wrong root key file or passphrase)",
            store_path.display()
        )));
    }
    Ok(root)
}

/// The root keys and header of a new store; a root key file to create is left in
/// `new_key_file`.
#[allow(clippy::type_complexity)]
pub(super) fn new_root(
    source: &RootKeySource,
    new_key_file: &mut Option<(PathBuf, Zeroizing<[u8; KEY_LEN]>)>,
) -> KmsResult<(RootKeys, Header)> {
    let mut h = Header {
        version: STORE_FORMAT_VERSION,
        source: SOURCE_FILE,
        log_n: 0,
        r: 0,
        p: 0,
        salt: [0u8; 16],
        check: [0u8; 16],
        generation: 0,
    };
    let key = match source {
        // A root key file shared by several stores ($KMSFS_KMS_ROOT_KEY).
        RootKeySource::File(p) if p.exists() => read_root_key_file(p)?,
        RootKeySource::File(p) => {
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            crypto::random_bytes(&mut key[..])?;
            *new_key_file = Some((p.clone(), key.clone()));
            key
        }
        RootKeySource::Passphrase(p) => {
            h.source = SOURCE_PASSPHRASE;
            h.log_n = SCRYPT_LOG_N;
            h.r = SCRYPT_R;
            h.p = SCRYPT_P;
            crypto::random_bytes(&mut h.salt)?;
            scrypt_root(p, &h)?
        }
    };
    let root = RootKeys::derive(&key);
    h.check = root.check;
    Ok((root, h))
}

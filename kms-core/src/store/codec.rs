//! The bytes of a store, shared by the file and the PostgreSQL backends: the keys
//! derived from the root key, the header and body of `keys.kms`, its MAC, and the
//! wrapping of key material (docs/FORMAT.md, "KMS formats").

use super::*;

/// Keys derived from the root key.
pub(crate) struct RootKeys {
    pub(super) wrap: AeadKey,
    pub(super) mac: Zeroizing<[u8; 32]>,
    pub(super) material_check: Zeroizing<[u8; 32]>,
    pub(super) check: [u8; 16],
}

impl RootKeys {
    pub(super) fn derive(root: &[u8; KEY_LEN]) -> RootKeys {
        let wrap = Zeroizing::new(crypto::hmac_sha256(root, LABEL_WRAP));
        let mac = Zeroizing::new(crypto::hmac_sha256(root, LABEL_MAC));
        let c = crypto::hmac_sha256(root, LABEL_CHECK);
        let mut check = [0u8; 16];
        check.copy_from_slice(&c[..16]);
        RootKeys {
            wrap: AeadKey::new(&wrap),
            mac,
            material_check: Zeroizing::new(crypto::hmac_sha256(root, LABEL_MATERIAL_CHECK)),
            check,
        }
    }
}

/// The associated data binding wrapped material to its key id, version and kind.
pub fn material_ad(key_id: &str, version: u32, kind: MaterialKind) -> Vec<u8> {
    let mut ad = Vec::with_capacity(MATERIAL_AD_PREFIX.len() + key_id.len() + 16);
    ad.extend_from_slice(MATERIAL_AD_PREFIX);
    ad.push(key_id.len() as u8);
    ad.extend_from_slice(key_id.as_bytes());
    ad.extend_from_slice(&version.to_be_bytes());
    ad.extend_from_slice(kind.as_str().as_bytes());
    ad
}

/// The parsed fixed header of `keys.kms`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub(super) version: u16,
    pub(super) source: u8,
    pub(super) log_n: u8,
    pub(super) r: u16,
    pub(super) p: u16,
    pub(super) salt: [u8; 16],
    pub(super) check: [u8; 16],
    pub(super) generation: u64,
}

impl Header {
    pub(super) fn encode(&self, body_len: u64) -> [u8; STORE_HEADER_LEN] {
        let mut h = [0u8; STORE_HEADER_LEN];
        h[0..8].copy_from_slice(&STORE_MAGIC);
        h[8..10].copy_from_slice(&self.version.to_be_bytes());
        h[10] = self.source;
        h[11] = self.log_n;
        h[12..14].copy_from_slice(&self.r.to_be_bytes());
        h[14..16].copy_from_slice(&self.p.to_be_bytes());
        h[16..32].copy_from_slice(&self.salt);
        h[32..48].copy_from_slice(&self.check);
        h[48..56].copy_from_slice(&self.generation.to_be_bytes());
        h[56..64].copy_from_slice(&body_len.to_be_bytes());
        h
    }

    /// Parses the header and checks the framing; returns it and the body range end.
    pub(super) fn parse(path: &Path, bytes: &[u8]) -> KmsResult<(Header, usize)> {
        let p = path.display();
        if bytes.len() < STORE_HEADER_LEN {
            return Err(internal(format!(
                "key store {p} is truncated ({} bytes); restore it from a backup",
                bytes.len()
            )));
        }
        if bytes[0..8] != STORE_MAGIC {
            return Err(internal(format!(
                "{p} is not a kmsfs key store (bad magic)"
            )));
        }
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if !(STORE_FORMAT_MIN_VERSION..=STORE_FORMAT_VERSION).contains(&version) {
            return Err(internal(format!(
                "key store {p} has format version {version}; this kmsfs reads versions \
                 {STORE_FORMAT_MIN_VERSION} to {STORE_FORMAT_VERSION} (a newer kmsfs wrote it?)"
            )));
        }
        let be64 = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_be_bytes(b)
        };
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&bytes[16..32]);
        let mut check = [0u8; 16];
        check.copy_from_slice(&bytes[32..48]);
        let h = Header {
            version,
            source: bytes[10],
            log_n: bytes[11],
            r: u16::from_be_bytes([bytes[12], bytes[13]]),
            p: u16::from_be_bytes([bytes[14], bytes[15]]),
            salt,
            check,
            generation: be64(48),
        };
        let body_len = be64(56);
        let end = usize::try_from(body_len)
            .ok()
            .and_then(|n| n.checked_add(STORE_HEADER_LEN));
        match end {
            Some(end) if end.checked_add(STORE_MAC_LEN) == Some(bytes.len()) => Ok((h, end)),
            _ => Err(internal(format!(
                "key store {p} is truncated or has trailing bytes (damaged); restore it from a backup"
            ))),
        }
    }
}

/// The body of `keys.kms`: every record of the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Body {
    pub keys: Vec<KeyRecord>,
    /// Hosted data keys. Store format 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_keys: Vec<DataKeyRecord>,
}

impl Body {
    /// The store format version to write this body as.
    pub fn format(&self) -> u16 {
        let data_keys = if self.data_keys.is_empty() { 2 } else { 3 };
        self.keys
            .iter()
            .map(KeyRecord::store_format)
            .chain([data_keys])
            .max()
            .unwrap_or(2)
            .max(2)
    }
}

pub(super) fn wrap_material(
    root: &RootKeys,
    key_id: &str,
    version: u32,
    kind: MaterialKind,
    material: &[u8],
    now: u64,
) -> KmsResult<KeyVersionRecord> {
    let mut nonce = [0u8; NONCE_LEN];
    crypto::random_bytes(&mut nonce)?;
    Ok(KeyVersionRecord {
        version,
        created: now,
        kind,
        wrapped: wrap_with_nonce(root, key_id, version, kind, material, &nonce)?,
    })
}

pub(super) fn wrap_with_nonce(
    root: &RootKeys,
    key_id: &str,
    version: u32,
    kind: MaterialKind,
    material: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> KmsResult<String> {
    let mut buf = Zeroizing::new(material.to_vec());
    root.wrap
        .seal(nonce, &material_ad(key_id, version, kind), &mut buf)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(B64.encode(out))
}

/// Known-answer tests and docs/FORMAT.md: the `wrapped` field of a key version of
/// material `kind`, for a given root key and nonce.
///
/// # Security
/// Only for test vectors: the store always draws the nonce at random.
pub fn test_vector_wrap_kind(
    root_key: &[u8; KEY_LEN],
    key_id: &str,
    version: u32,
    kind: MaterialKind,
    material: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> KmsResult<String> {
    let root = RootKeys::derive(root_key);
    wrap_with_nonce(&root, key_id, version, kind, material, nonce)
}

/// Known-answer tests and docs/FORMAT.md: the `material_check` of imported
/// material for a given root key.
pub fn test_vector_material_check(
    root_key: &[u8; KEY_LEN],
    key_id: &str,
    material: &[u8],
) -> String {
    material_check(&RootKeys::derive(root_key), key_id, material)
}

/// Known-answer tests and docs/FORMAT.md: a whole version-1 `keys.kms` of a
/// root-key-file store with this body (the JSON document) and generation.
pub fn test_vector_store_file(root_key: &[u8; KEY_LEN], generation: u64, body: &[u8]) -> Vec<u8> {
    test_vector_store_file_version(root_key, 1, generation, body)
}

/// As [`test_vector_store_file`], with the format version in the header.
pub fn test_vector_store_file_version(
    root_key: &[u8; KEY_LEN],
    version: u16,
    generation: u64,
    body: &[u8],
) -> Vec<u8> {
    let root = RootKeys::derive(root_key);
    let h = Header {
        version,
        source: SOURCE_FILE,
        log_n: 0,
        r: 0,
        p: 0,
        salt: [0u8; 16],
        check: root.check,
        generation,
    };
    encode_file(&root, &h, body)
}

/// Decodes `keys.kms` bytes: the framing, the root-key check, the MAC and the JSON body.
pub(super) fn decode_file(root: &RootKeys, path: &Path, bytes: &[u8]) -> KmsResult<(Header, Body)> {
    let (h, end) = Header::parse(path, bytes)?;
    if h.check != root.check {
        return Err(internal(format!(
            "key store {} was replaced by a store under another root key",
            path.display()
        )));
    }
    if !crypto::hmac_sha256_verify(&root.mac[..], &bytes[..end], &bytes[end..]) {
        return Err(internal(format!(
            "key store {} fails authentication (damaged or tampered); restore it from a backup",
            path.display()
        )));
    }
    let body: Body = serde_json::from_slice(&bytes[STORE_HEADER_LEN..end]).map_err(|e| {
        internal(format!(
            "key store {} has an unreadable body: {e}",
            path.display()
        ))
    })?;
    Ok((h, body))
}

/// Parses the bytes of a `keys.kms` under `root_key` without any I/O, as a load does:
/// framing, root-key check, MAC, JSON body, and every version's wrapped material
/// (unwrapped and decoded, then dropped). Returns the key records. For the fuzz
/// target and tools; [`Store`] is the way to use a store.
///
/// # Errors
/// `InternalError` naming what is wrong, as [`Store::open`] reports it.
pub fn parse_store_file(root_key: &[u8; KEY_LEN], bytes: &[u8]) -> KmsResult<Vec<KeyRecord>> {
    let root = RootKeys::derive(root_key);
    let path = Path::new(STORE_FILE);
    let (_, body) = decode_file(&root, path, bytes)?;
    for rec in &body.keys {
        unwrap_material(&root, path, rec)?;
    }
    Ok(body.keys)
}

/// `material_check` of imported material: hex HMAC-SHA256(check key,
/// `u8 len(key_id) ‖ key_id ‖ material`).
pub(super) fn material_check(root: &RootKeys, key_id: &str, material: &[u8]) -> String {
    let mut m = Zeroizing::new(Vec::with_capacity(1 + key_id.len() + material.len()));
    m.push(key_id.len() as u8);
    m.extend_from_slice(key_id.as_bytes());
    m.extend_from_slice(material);
    crypto::hex(&crypto::hmac_sha256(&root.material_check[..], &m))
}

pub(super) fn encode_file(root: &RootKeys, h: &Header, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(STORE_HEADER_LEN + body.len() + STORE_MAC_LEN);
    bytes.extend_from_slice(&h.encode(body.len() as u64));
    bytes.extend_from_slice(body);
    let mac = crypto::hmac_sha256(&root.mac[..], &bytes);
    bytes.extend_from_slice(&mac);
    bytes
}

/// Opens one wrapped blob of `kind` for (key id, version).
pub(super) fn open_wrapped(
    root: &RootKeys,
    key_id: &str,
    version: u32,
    kind: MaterialKind,
    wrapped: &str,
) -> Option<Zeroizing<Vec<u8>>> {
    let raw = Zeroizing::new(B64.decode(wrapped).ok()?);
    if raw.len() < NONCE_LEN {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&raw[..NONCE_LEN]);
    let mut sealed = Zeroizing::new(raw[NONCE_LEN..].to_vec());
    let ad = material_ad(key_id, version, kind);
    let pt = root.wrap.open(&nonce, &ad, &mut sealed)?;
    Some(Zeroizing::new(pt.to_vec()))
}

/// Unwrapped key material of one version (each lives in an `Arc`, so the
/// variants' sizes do not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Material {
    /// AES-GCM (128 or 256 bits).
    Aead(AeadKey),
    /// RSA-2048.
    Rsa(RsaKey),
    /// ECDSA P-256.
    Ec(EcKey),
    /// SM2 (signatures and decryption).
    Sm2(Sm2Key),
    /// ML-KEM-768 (post-quantum encryption).
    Kem(KemKey),
    /// ML-DSA-65 (post-quantum signatures).
    Dsa(DsaKey),
}

impl Material {
    /// The AES-GCM key, if this is symmetric material.
    pub fn aead(&self) -> Option<&AeadKey> {
        match self {
            Material::Aead(k) => Some(k),
            _ => None,
        }
    }
}

pub(super) fn unwrap_material(
    root: &RootKeys,
    path: &Path,
    rec: &KeyRecord,
) -> KmsResult<Vec<Arc<Material>>> {
    let mut out = Vec::with_capacity(rec.versions.len());
    for (i, v) in rec.versions.iter().enumerate() {
        let bad = || {
            internal(format!(
                "key store {}: material of key {} version {} does not authenticate under the root key (damaged store)",
                path.display(),
                rec.key_id,
                v.version
            ))
        };
        if v.version as usize != i + 1 {
            return Err(bad());
        }
        let pt = open_wrapped(root, &rec.key_id, v.version, v.kind, &v.wrapped).ok_or_else(bad)?;
        let m = match v.kind {
            MaterialKind::Aes256 => {
                let key: &[u8; KEY_LEN] = (&pt[..]).try_into().map_err(|_| bad())?;
                Material::Aead(AeadKey::new(key))
            }
            MaterialKind::Aes128 => {
                let key: &[u8; 16] = (&pt[..]).try_into().map_err(|_| bad())?;
                Material::Aead(AeadKey::new_128(key))
            }
            MaterialKind::Rsa2048 => Material::Rsa(RsaKey::from_pkcs8_der(&pt).ok_or_else(bad)?),
            MaterialKind::EcP256 => Material::Ec(EcKey::from_pkcs8_der(&pt).ok_or_else(bad)?),
            MaterialKind::Sm2 => Material::Sm2(Sm2Key::from_secret(&pt).ok_or_else(bad)?),
            MaterialKind::MlKem768 => Material::Kem(KemKey::from_seed(&pt).ok_or_else(bad)?),
            MaterialKind::MlDsa65 => Material::Dsa(DsaKey::from_seed(&pt).ok_or_else(bad)?),
        };
        out.push(Arc::new(m));
    }
    Ok(out)
}

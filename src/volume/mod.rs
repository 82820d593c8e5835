//! A volume: its authenticated config (`kmsfs.conf` at the backing root), the KMS
//! that serves its DEKs, the DEK policy and the DEK cache.

pub mod create;
pub mod dek_cache;
pub mod metrics;
pub mod names;

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kms_core::{CallContext, EncryptionContext, Kms};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backing::error::{FsError, FsResult};
use crate::format::aead;
use crate::format::{self, ContentKey, FileHeader, FileId, Geometry};
use crate::volume::dek_cache::{Dek, DekCache};
use crate::volume::metrics::Metrics;

/// Name of the volume config at the backing root. Never visible through the mount.
pub const CONFIG_NAME: &str = "kmsfs.conf";
/// Name of the file at the backing root that `kmsfs rewrap` holds an flock on while it
/// runs (one rewrap per volume at a time). Never visible through the mount.
pub const REWRAP_LOCK_NAME: &str = "kmsfs.rewrap.lock";
/// The `format` field of every config.
pub const CONFIG_FORMAT: &str = "kmsfs-volume";
/// The config version this build writes and reads.
pub const CONFIG_VERSION: u32 = 1;
/// Feature flags every volume has.
pub const KNOWN_FEATURES: &[&str] = &["content-xaes256gcm-v1", "header-two-slots-v1"];
/// Feature flags a volume may have (chosen at init). Any flag in neither list refuses
/// to mount.
pub const OPTIONAL_FEATURES: &[&str] = &[
    crate::volume::names::FEATURE,
    crate::volume::names::FEATURE_LONG,
    crate::format::FEATURE_FINAL,
];
/// The EncryptionContext key that binds every DEK to its volume.
pub const CONTEXT_KEY: &str = "kmsfs-volume";
/// HKDF info of the config MAC key.
pub const CONFIG_MAC_LABEL: &[u8] = b"kmsfs v1 config mac";

/// How new files get DEKs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DekPolicy {
    /// `shared` or `per-file`.
    pub mode: PolicyMode,
    /// Shared: a DEK serves new files for at most this long (seconds).
    pub max_age_secs: u64,
    /// Shared: a DEK serves at most this many new files.
    pub max_files: u64,
}

/// The DEK policy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// One DEK for many files, rotated by age and count.
    Shared,
    /// GenerateDataKey for every new file.
    PerFile,
}

impl DekPolicy {
    /// The defaults for a mode: shared DEKs live 24 h or 100,000 files.
    #[cfg(test)]
    pub fn defaults(mode: PolicyMode) -> Self {
        DekPolicy {
            mode,
            max_age_secs: 24 * 3600,
            max_files: 100_000,
        }
    }
}

/// The config body (JSON, first line of `kmsfs.conf`), covered by the MAC on line two.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Always `kmsfs-volume`.
    pub format: String,
    /// Config version (1).
    pub version: u32,
    /// The volume UUID: the EncryptionContext of every DEK.
    pub uuid: String,
    /// Feature flags; an unknown one refuses to mount.
    pub features: Vec<String>,
    /// The CMK (key id) new DEKs are generated under.
    pub cmk: String,
    /// Plaintext block size.
    pub block_size: u32,
    /// File header size.
    pub header_size: u32,
    /// DEK policy.
    pub dek_policy: DekPolicy,
    /// The config DEK, wrapped by the KMS (base64): the MAC key is derived from it.
    pub config_dek: String,
    /// Which KMS made the volume: `embedded` or a URL. A hint that must match the host's.
    pub kms_hint: String,
}

impl VolumeConfig {
    /// Whether blocks carry the final-block flag ([`crate::format::FEATURE_FINAL`]).
    pub fn final_flag(&self) -> bool {
        self.features
            .iter()
            .any(|x| x == crate::format::FEATURE_FINAL)
    }

    /// The name key of this volume (config DEK `config_dek`), if it encrypts names.
    pub fn name_key(&self, config_dek: &[u8]) -> Option<names::NameKey> {
        let has = |f: &str| self.features.iter().any(|x| x == f);
        has(names::FEATURE).then(|| {
            names::NameKey::derive(config_dek, &self.uuid).with_long_names(has(names::FEATURE_LONG))
        })
    }
}

impl VolumeConfig {
    /// The volume geometry.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            block_size: self.block_size as u64,
            header_size: self.header_size as u64,
        }
    }
}

/// The KMS hint of a host-given KMS spec.
pub fn kms_hint(spec: Option<&str>) -> String {
    match spec {
        Some(u) if kms_core::is_remote_url(u) => u.to_owned(),
        _ => "embedded".to_owned(),
    }
}

/// Whether a volume made with KMS hint `made` may be used with the host's KMS hint
/// `host`: the same, or (servers of one key set, `URL,URL,…`) sharing an endpoint,
/// whichever API each names it in (`aliyun+http://h` and `http://h` are one server).
pub fn kms_hint_matches(made: &str, host: &str) -> bool {
    let urls = |h: &str| -> Vec<String> {
        h.split(',')
            .map(|u| u.trim().trim_end_matches('/'))
            .map(|u| u.strip_prefix("aliyun+").unwrap_or(u).to_owned())
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .collect()
    };
    made == host || urls(made).iter().any(|u| urls(host).contains(u))
}

/// The config MAC key: `HKDF-SHA256[salt = uuid, info = CONFIG_MAC_LABEL](config DEK)`.
pub fn mac_key(config_dek: &[u8], uuid: &str) -> Zeroizing<[u8; 32]> {
    aead::hkdf_sha256(config_dek, uuid.as_bytes(), CONFIG_MAC_LABEL)
}

/// Encodes the config file: `body-json \n mac <hex> \n`.
pub fn encode_config(body: &[u8], mac: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(b"\nmac ");
    out.extend_from_slice(aead::hex(mac).as_bytes());
    out.push(b'\n');
    out
}

/// Splits and parses the config file, checking everything that needs no KMS.
/// Returns the config, the exact body bytes and the MAC.
pub fn parse_config(bytes: &[u8]) -> anyhow::Result<(VolumeConfig, Vec<u8>, Vec<u8>)> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .context("config has no MAC line")?;
    let body = &bytes[..nl];
    let rest = &bytes[nl + 1..];
    let rest = std::str::from_utf8(rest).context("config MAC line is not text")?;
    let hexmac = rest
        .strip_prefix("mac ")
        .and_then(|r| r.strip_suffix('\n'))
        .context("config MAC line malformed")?;
    let mac = aead::unhex(hexmac)
        .filter(|m| m.len() == 32)
        .context("config MAC is not 32 hex bytes")?;
    let cfg: VolumeConfig = serde_json::from_slice(body).context("config body is not valid")?;
    if cfg.format != CONFIG_FORMAT {
        bail!("not a kmsfs volume config (format {:?})", cfg.format);
    }
    if cfg.version != CONFIG_VERSION {
        bail!(
            "volume config version {} is not supported by this kmsfs (reads version {})",
            cfg.version,
            CONFIG_VERSION
        );
    }
    for f in &cfg.features {
        if !KNOWN_FEATURES.contains(&f.as_str()) && !OPTIONAL_FEATURES.contains(&f.as_str()) {
            bail!("volume uses feature {f:?} which this kmsfs does not know; upgrade kmsfs");
        }
    }
    for f in KNOWN_FEATURES {
        if !cfg.features.iter().any(|x| x == f) {
            bail!("volume config lacks required feature {f:?}");
        }
    }
    let has = |f: &str| cfg.features.iter().any(|x| x == f);
    if has(crate::volume::names::FEATURE_LONG) && !has(crate::volume::names::FEATURE) {
        bail!(
            "volume config has feature {:?} without {:?}",
            crate::volume::names::FEATURE_LONG,
            crate::volume::names::FEATURE
        );
    }
    let bs = cfg.block_size;
    if !(512..=1 << 20).contains(&bs) || !bs.is_power_of_two() {
        bail!("volume block size {bs} is out of range");
    }
    let hs = cfg.header_size;
    if !(format::MIN_HEADER_SIZE..=65536).contains(&hs) || !hs.is_multiple_of(16) {
        bail!("volume header size {hs} is out of range");
    }
    if uuid::Uuid::parse_str(&cfg.uuid).is_err() {
        bail!("volume uuid is malformed");
    }
    Ok((cfg, body.to_vec(), mac))
}

/// Options of `kmsfs init` / first mount.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// An existing CMK (id or alias); `None` creates one.
    pub key: Option<String>,
    /// DEK policy.
    pub policy: DekPolicy,
    /// Block size.
    pub block_size: u32,
    /// Header size.
    pub header_size: u32,
    /// Encrypt names and symlink targets (feature [`crate::volume::names::FEATURE`]).
    pub encrypt_names: bool,
    /// Bind "last block" into every block (feature [`crate::format::FEATURE_FINAL`]), so
    /// that a file cut at a block boundary is detected.
    pub final_flag: bool,
}

/// Creates the volume config in `backing` (which must hold no config yet).
/// Returns the config.
pub fn init_volume(
    kms: &dyn Kms,
    kms_spec: Option<&str>,
    backing: &Path,
    opts: &InitOptions,
) -> anyhow::Result<VolumeConfig> {
    let path = backing.join(CONFIG_NAME);
    if path.exists() {
        bail!("{} is already a kmsfs volume", backing.display());
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let ctx = CallContext::local();
    let cmk = match &opts.key {
        Some(k) => k.clone(),
        None => {
            let r = kms
                .call(
                    &ctx,
                    "CreateKey",
                    &serde_json::json!({
                        "Alias": format!("kmsfs-{}", &uuid[..8]),
                        "Description": format!("kmsfs volume {uuid} ({})", backing.display()),
                    }),
                )
                .map_err(|e| anyhow::anyhow!("the KMS could not create a key: {e}"))?;
            r.get("KeyMetadata")
                .and_then(|m| m.get("KeyId"))
                .or_else(|| r.get("KeyId"))
                .and_then(|v| v.as_str())
                .context("CreateKey returned no KeyId")?
                .to_owned()
        }
    };
    let ec = EncryptionContext::single(CONTEXT_KEY, uuid.clone());
    let dk = kms
        .generate_data_key(&ctx, &cmk, 32, &ec)
        .map_err(|e| anyhow::anyhow!("the KMS could not generate a data key under {cmk}: {e}"))?;
    let cfg = VolumeConfig {
        format: CONFIG_FORMAT.into(),
        version: CONFIG_VERSION,
        uuid: uuid.clone(),
        features: KNOWN_FEATURES
            .iter()
            .map(|s| s.to_string())
            .chain(
                [
                    crate::volume::names::FEATURE,
                    crate::volume::names::FEATURE_LONG,
                ]
                .into_iter()
                .filter(|_| opts.encrypt_names)
                .map(str::to_owned),
            )
            .chain(
                opts.final_flag
                    .then(|| crate::format::FEATURE_FINAL.to_owned()),
            )
            .collect(),
        cmk: dk.key_id.clone(),
        block_size: opts.block_size,
        header_size: opts.header_size,
        dek_policy: opts.policy,
        config_dek: B64.encode(&dk.ciphertext_blob),
        kms_hint: kms_hint(kms_spec),
    };
    write_config_file(backing, &sign_config(&cfg, &dk.plaintext)?)?;
    if opts.encrypt_names {
        let root = File::open(backing)?;
        crate::volume::names::create_diriv(root.as_raw_fd())
            .with_context(|| format!("cannot write {}", crate::volume::names::DIRIV_NAME))?;
    }
    Ok(cfg)
}

/// Signs `cfg` with the MAC key derived from `config_dek` and returns the file bytes.
pub fn sign_config(cfg: &VolumeConfig, config_dek: &[u8]) -> anyhow::Result<Vec<u8>> {
    let body = serde_json::to_vec(cfg)?;
    let mac = aead::hmac_sha256(&mac_key(config_dek, &cfg.uuid)[..], &body);
    Ok(encode_config(&body, &mac))
}

/// Writes `kmsfs.conf` atomically and durably: a fresh temp file (a stale one from an
/// interrupted write is removed first), fsync, rename over the config, fsync the directory.
/// A crash at any point leaves either the old or the new config, never a mix.
pub fn write_config_file(backing: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let path = backing.join(CONFIG_NAME);
    let tmp = backing.join(format!(".{CONFIG_NAME}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", tmp.display())),
    }
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} over {}", tmp.display(), path.display()))?;
    File::open(backing)?.sync_all()?;
    Ok(())
}

/// Reads `kmsfs.conf`, checks the host's KMS hint, unwraps the config DEK and verifies
/// the MAC. Returns the config and the config DEK plaintext.
pub fn read_verified_config(
    kms: &dyn Kms,
    kms_spec: Option<&str>,
    backing: &Path,
) -> anyhow::Result<(VolumeConfig, Zeroizing<Vec<u8>>)> {
    let path = backing.join(CONFIG_NAME);
    let f = open_config(backing)?;
    let bytes = read_config_bytes(&f)?;
    verify_config(kms, kms_spec, &path, &bytes)
}

fn open_config(backing: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(backing.join(CONFIG_NAME))
        .with_context(|| {
            format!(
                "{} is not a kmsfs volume (no {CONFIG_NAME})",
                backing.display()
            )
        })
}

/// The one-mount-per-volume lock: an exclusive flock on the backing directory itself,
/// whose inode stays the same when the config is replaced.
fn lock_backing(backing: &Path, shared: bool) -> anyhow::Result<File> {
    let d = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(backing)
        .with_context(|| format!("cannot open {}", backing.display()))?;
    // Shared storage takes the lock shared: any number of shared-storage daemons, or
    // one other daemon, serve the directory.
    let mode = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(d.as_raw_fd(), mode | libc::LOCK_NB) } != 0 {
        if shared {
            bail!(
                "{} is already mounted by a kmsfs without shared_storage; unmount it first",
                backing.display()
            );
        }
        bail!(
            "{} is already mounted (another kmsfs holds its lock); unmount it first, or mount every daemon with -o shared_storage",
            backing.display()
        );
    }
    Ok(d)
}

/// The one-mount lock of `backing`, for `kmsfs fsck --repair`: held while it changes the
/// volume, so that no daemon mounts it meanwhile; an error if one has it mounted.
pub fn lock_unmounted(backing: &Path) -> anyhow::Result<File> {
    lock_backing(backing, false)
}

/// Whether a kmsfs daemon (with or without shared storage) has `backing` mounted now:
/// one holds its one-mount lock.
pub fn is_mounted(backing: &Path) -> bool {
    let Ok(d) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(backing)
    else {
        return false;
    };
    // SAFETY: flock on an fd we own; closing it drops the lock.
    unsafe { libc::flock(d.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

fn read_config_bytes(f: &File) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, 64 * 1024 + 1), &mut bytes)?;
    if bytes.len() > 64 * 1024 {
        bail!("volume config is too large");
    }
    Ok(bytes)
}

fn verify_config(
    kms: &dyn Kms,
    kms_spec: Option<&str>,
    path: &Path,
    bytes: &[u8],
) -> anyhow::Result<(VolumeConfig, Zeroizing<Vec<u8>>)> {
    let (cfg, body, mac) = parse_config(bytes)?;
    let host_hint = kms_hint(kms_spec);
    if !kms_hint_matches(&cfg.kms_hint, &host_hint) {
        bail!(
            "the volume was made with KMS {:?} but this host says {:?}; pass the right --kms",
            cfg.kms_hint,
            host_hint
        );
    }
    let context = EncryptionContext::single(CONTEXT_KEY, cfg.uuid.clone());
    let blob = B64
        .decode(&cfg.config_dek)
        .context("config DEK is not base64")?;
    let dk = kms
        .decrypt_data_key(&CallContext::local(), &blob, &context)
        .map_err(|e| {
            anyhow::anyhow!(
                "the KMS would not unwrap the volume's config key (CMK {}): {e}",
                cfg.cmk
            )
        })?;
    aead::hmac_sha256_verify(&mac_key(&dk.plaintext, &cfg.uuid)[..], &body, &mac).map_err(
        |_| {
            anyhow::anyhow!(
                "volume config {} has been tampered with (MAC mismatch); refusing to use it",
                path.display()
            )
        },
    )?;
    Ok((cfg, dk.plaintext))
}

/// What identifies one version of `kmsfs.conf` on disk: a rewrap replaces the file
/// (rename), which changes the inode and the ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConfStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl ConfStamp {
    fn of(md: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        ConfStamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
        }
    }
}

/// An OFD lock (`F_OFD_SETLKW`) on a backing file's header bytes `[0, header_size)`,
/// released on drop. `kmsfs rewrap` holds it around its read-check-write of a header and
/// the daemon holds it while it creates a header, so the two never interleave. OFD locks
/// belong to the open file description: two opens of one file conflict, also within one
/// process.
#[derive(Debug)]
pub struct HeaderLock<'a> {
    f: &'a File,
    len: u64,
}

fn ofd_lock(f: &File, kind: libc::c_int, len: u64) -> std::io::Result<()> {
    // SAFETY: a zeroed flock is valid; F_OFD_SETLKW with l_pid 0 on an fd we own.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = len as libc::off_t;
    loop {
        // SAFETY: as above.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLKW, &fl) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Takes the header lock of `f` (waits for it).
pub fn lock_header(f: &File, header_size: u64) -> std::io::Result<HeaderLock<'_>> {
    ofd_lock(f, libc::F_WRLCK, header_size)?;
    Ok(HeaderLock {
        f,
        len: header_size,
    })
}

impl Drop for HeaderLock<'_> {
    fn drop(&mut self) {
        let _ = ofd_lock(self.f, libc::F_UNLCK, self.len);
    }
}

/// The shared-policy DEK currently handed to new files.
struct CurrentDek {
    dek: Arc<Dek>,
    wrapped: Vec<u8>,
    since: Instant,
    files: u64,
}

/// An open volume.
pub struct Volume {
    /// The verified config.
    pub config: VolumeConfig,
    /// Its geometry.
    pub geo: Geometry,
    kms: Arc<dyn Kms>,
    context: EncryptionContext,
    /// The DEK cache.
    pub cache: DekCache,
    /// The name key, on a volume with encrypted names.
    pub names: Option<crate::volume::names::NameKey>,
    /// KMS latency, integrity failures by kind, bytes, uptime.
    pub metrics: Metrics,
    current: Mutex<Option<CurrentDek>>,
    /// The CMK new DEKs are generated under: the config's, updated when a rewrap
    /// (`--to-key`) replaces the config while mounted.
    cmk: parking_lot::RwLock<String>,
    /// The backing directory (to notice a replaced config).
    backing: std::path::PathBuf,
    /// The config version last verified; checked (one stat) before every new DEK.
    stamp: Mutex<ConfStamp>,
    /// The backing directory, kept open and flocked: one mount per backing directory.
    /// (Not the config file: `kmsfs rewrap` replaces that by a rename.)
    _lock: File,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("uuid", &self.config.uuid)
            .finish_non_exhaustive()
    }
}

/// DEK cache settings.
#[derive(Clone, Copy, Debug)]
pub struct CacheOptions {
    /// Entries.
    pub capacity: usize,
    /// Maximum age.
    pub max_age: Duration,
}

impl Volume {
    /// Opens the volume at `backing`: reads and locks its config, checks the KMS hint,
    /// unwraps the config DEK and verifies the MAC.
    #[allow(dead_code)] // the daemon calls `open_with`; kept for callers that never share
    pub fn open(
        kms: Arc<dyn Kms>,
        kms_spec: Option<&str>,
        backing: &Path,
        cache: CacheOptions,
    ) -> anyhow::Result<Volume> {
        Self::open_with(kms, kms_spec, backing, cache, false)
    }

    /// [`Volume::open`]; with `shared` (shared storage) the config's lock is taken shared:
    /// any number of shared-storage daemons, or one other daemon, serve the directory.
    pub fn open_with(
        kms: Arc<dyn Kms>,
        kms_spec: Option<&str>,
        backing: &Path,
        cache: CacheOptions,
        shared: bool,
    ) -> anyhow::Result<Volume> {
        let path = backing.join(CONFIG_NAME);
        let f = open_config(backing)?;
        let lock = lock_backing(backing, shared)?;
        let stamp = ConfStamp::of(&f.metadata()?);
        let bytes = read_config_bytes(&f)?;
        let (cfg, config_dek) = verify_config(kms.as_ref(), kms_spec, &path, &bytes)?;
        let names = cfg.name_key(&config_dek);
        Ok(Volume {
            names,
            geo: cfg.geometry(),
            context: EncryptionContext::single(CONTEXT_KEY, cfg.uuid.clone()),
            cmk: parking_lot::RwLock::new(cfg.cmk.clone()),
            config: cfg,
            kms,
            cache: DekCache::new(cache.capacity, cache.max_age),
            metrics: Metrics::default(),
            current: Mutex::new(None),
            backing: backing.to_owned(),
            stamp: Mutex::new(stamp),
            _lock: lock,
        })
    }

    /// The CMK new DEKs are generated under now.
    pub fn cmk(&self) -> String {
        self.cmk.read().clone()
    }

    /// Notices a config replaced on disk (`kmsfs rewrap` while mounted) with one stat,
    /// and reloads it: verifies its MAC with the KMS, takes the CMK it names and drops
    /// the shared DEK handed to new files, so no new file gets a DEK wrapped under the
    /// old CMK. Everything but the CMK and the config DEK must be unchanged. A config
    /// that does not verify refuses new DEKs (EIO) and is retried on the next new file.
    fn refresh_config(&self) -> FsResult<()> {
        let path = self.backing.join(CONFIG_NAME);
        let now = match std::fs::symlink_metadata(&path) {
            Ok(md) => ConfStamp::of(&md),
            Err(e) => {
                tracing::error!(config = %path.display(), "cannot stat the volume config: {e}");
                return Err(FsError::Io(e));
            }
        };
        let mut stamp = self.stamp.lock();
        if *stamp == now {
            return Ok(());
        }
        let reload = || -> anyhow::Result<(VolumeConfig, ConfStamp)> {
            let f = open_config(&self.backing)?;
            let st = ConfStamp::of(&f.metadata()?);
            let bytes = read_config_bytes(&f)?;
            let hint = Some(self.config.kms_hint.as_str());
            let (cfg, _) = verify_config(self.kms.as_ref(), hint, &path, &bytes)?;
            let mut same = cfg.clone();
            same.cmk = self.config.cmk.clone();
            same.config_dek = self.config.config_dek.clone();
            if same != self.config {
                bail!("the new config changes more than the CMK; remount to use it");
            }
            Ok((cfg, st))
        };
        match reload() {
            Ok((cfg, st)) => {
                let old = std::mem::replace(&mut *self.cmk.write(), cfg.cmk.clone());
                *self.current.lock() = None;
                *stamp = st;
                tracing::info!(old_cmk = %old, cmk = %cfg.cmk, "volume config changed on disk (rewrap); reloaded");
                Ok(())
            }
            Err(e) => {
                self.count_integrity_failure();
                tracing::error!(config = %path.display(), "volume config changed on disk but cannot be reloaded; refusing new data keys: {e:#}");
                Err(FsError::Errno(libc::EIO))
            }
        }
    }

    fn generate(&self) -> FsResult<(Arc<Dek>, Vec<u8>)> {
        let cmk = self.cmk();
        let c = &self.cache.counters;
        c.kms_calls.fetch_add(1, Ordering::Relaxed);
        c.deks_generated.fetch_add(1, Ordering::Relaxed);
        match self.metrics.kms_latency.time(|| {
            self.kms
                .generate_data_key(&CallContext::local(), &cmk, 32, &self.context)
        }) {
            Ok(dk) => {
                let dek = Arc::new(Dek::new(dk.plaintext));
                self.cache.insert(&dk.ciphertext_blob, dek.clone());
                Ok((dek, dk.ciphertext_blob))
            }
            Err(e) => {
                c.kms_failures.fetch_add(1, Ordering::Relaxed);
                Err(FsError::from_kms(&cmk, e))
            }
        }
    }

    /// A DEK for a new file, per the policy: (DEK, wrapped DEK).
    fn dek_for_new_file(&self) -> FsResult<(Arc<Dek>, Vec<u8>)> {
        self.refresh_config()?;
        let p = self.config.dek_policy;
        if p.mode == PolicyMode::PerFile {
            return self.generate();
        }
        let mut cur = self.current.lock();
        let fresh = match cur.as_ref() {
            Some(c) => {
                c.files < p.max_files
                    && c.since.elapsed() < Duration::from_secs(p.max_age_secs)
                    && c.since.elapsed() < self.cache.max_age()
            }
            None => false,
        };
        if !fresh {
            let (dek, wrapped) = self.generate()?;
            *cur = Some(CurrentDek {
                dek,
                wrapped,
                since: Instant::now(),
                files: 0,
            });
        }
        match cur.as_mut() {
            Some(c) => {
                c.files += 1;
                Ok((c.dek.clone(), c.wrapped.clone()))
            }
            None => Err(FsError::Errno(libc::EIO)),
        }
    }

    /// A new file's header bytes and content key.
    pub fn new_file(&self) -> FsResult<(Vec<u8>, ContentKey)> {
        let (dek, wrapped) = self.dek_for_new_file()?;
        let mut id = [0u8; format::FILE_ID_LEN];
        while id == [0u8; format::FILE_ID_LEN] {
            aead::random(&mut id).map_err(|_| FsError::Errno(libc::EIO))?;
        }
        let h = FileHeader {
            file_id: FileId(id),
            generation: 1,
            wrapped_dek: wrapped,
        };
        let bytes = h.encode(self.config.header_size).ok_or_else(|| {
            FsError::Integrity(format!(
                "the KMS returned a {}-byte wrapped DEK, larger than a header slot",
                h.wrapped_dek.len()
            ))
        })?;
        let key = ContentKey::derive(dek.expose(), h.file_id, self.geo.block_size)
            .with_final_flag(self.config.final_flag());
        Ok((bytes, key))
    }

    /// The content key of a file from its header bytes (DEK via the cache / KMS).
    pub fn open_header(&self, bytes: &[u8]) -> FsResult<ContentKey> {
        let h = FileHeader::parse(bytes, self.config.header_size)
            .inspect_err(|_| self.count_bad_header())?;
        let dek = self.cache.get_or_unwrap(&h.wrapped_dek, |blob| {
            self.metrics
                .kms_latency
                .time(|| {
                    self.kms
                        .decrypt_data_key(&CallContext::local(), blob, &self.context)
                })
                .map(|dk| dk.plaintext)
                .map_err(|e| FsError::from_kms(&blob_key_id(blob, &self.cmk()), e))
        })?;
        Ok(
            ContentKey::derive(dek.expose(), h.file_id, self.geo.block_size)
                .with_final_flag(self.config.final_flag()),
        )
    }

    /// Counts an integrity failure.
    pub fn count_integrity_failure(&self) {
        self.cache
            .counters
            .integrity_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a block that failed authentication (an integrity failure).
    pub fn count_bad_block(&self) {
        Metrics::add(&self.metrics.bad_blocks, 1);
        self.count_integrity_failure();
    }

    /// Counts an unreadable file header (an integrity failure).
    pub fn count_bad_header(&self) {
        Metrics::add(&self.metrics.bad_headers, 1);
        self.count_integrity_failure();
    }

    /// The CMK a file's header names (its wrapped DEK's key id), for log lines; the
    /// volume's CMK when the header cannot be read. Never key material.
    pub fn header_key_id(&self, header: &[u8]) -> String {
        match FileHeader::parse(header, self.config.header_size) {
            Ok(h) => blob_key_id(&h.wrapped_dek, &self.cmk()),
            Err(_) => self.cmk(),
        }
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }
}

/// The CMK to name in logs for a wrapped DEK: the key id the CiphertextBlob names
/// (docs/FORMAT.md, "CiphertextBlob": `KM`, version, length L, key id), else the volume's CMK.
pub fn blob_key_id(blob: &[u8], cmk: &str) -> String {
    if blob.len() > 4 && &blob[..2] == b"KM" {
        let l = blob[3] as usize;
        if let Some(id) = blob.get(4..4 + l) {
            if !id.is_empty() && id.iter().all(|c| c.is_ascii_graphic()) {
                return String::from_utf8_lossy(id).into_owned();
            }
        }
    }
    cmk.to_owned()
}

/// Whether `name` in directory `parent` is the volume config (or its temp file, or the
/// rewrap lock), which the mount hides.
pub fn is_reserved(parent: u64, name: &OsStr) -> bool {
    parent == fuser::INodeNo::ROOT.0
        && (name.as_bytes() == CONFIG_NAME.as_bytes()
            || name.as_bytes() == format!(".{CONFIG_NAME}.tmp").as_bytes()
            || name.as_bytes() == REWRAP_LOCK_NAME.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> VolumeConfig {
        VolumeConfig {
            format: CONFIG_FORMAT.into(),
            version: 1,
            uuid: "6f1c1f0e-8a44-4f63-9d55-2b1d8c8f3a10".into(),
            features: KNOWN_FEATURES.iter().map(|s| s.to_string()).collect(),
            cmk: "key-1".into(),
            block_size: 4096,
            header_size: 1024,
            dek_policy: DekPolicy::defaults(PolicyMode::Shared),
            config_dek: "AAAA".into(),
            kms_hint: "embedded".into(),
        }
    }

    #[test]
    fn blob_key_id_reads_the_blob_or_falls_back() {
        let mut b = b"KM\x01\x05key-1".to_vec();
        b.extend_from_slice(&[0u8; 40]);
        assert_eq!(blob_key_id(&b, "vol-cmk"), "key-1");
        assert_eq!(blob_key_id(b"garbage", "vol-cmk"), "vol-cmk");
        assert_eq!(blob_key_id(b"KM\x01\xffk", "vol-cmk"), "vol-cmk");
    }

    #[test]
    fn config_roundtrip_and_rejections() {
        let body = serde_json::to_vec(&sample()).unwrap();
        let bytes = encode_config(&body, &[7u8; 32]);
        let (c, b, m) = parse_config(&bytes).unwrap();
        assert_eq!((c, b, m), (sample(), body.clone(), vec![7u8; 32]));
        let mut unknown = sample();
        unknown.features.push("name-encryption-v9".into());
        let e = parse_config(&encode_config(
            &serde_json::to_vec(&unknown).unwrap(),
            &[0; 32],
        ))
        .unwrap_err();
        assert!(e.to_string().contains("name-encryption-v9"), "{e}");
        let mut long_alone = sample();
        long_alone
            .features
            .push(crate::volume::names::FEATURE_LONG.into());
        let long_alone = serde_json::to_vec(&long_alone).unwrap();
        assert!(parse_config(&encode_config(&long_alone, &[0; 32])).is_err());
        let mut names = sample();
        names.features.push(crate::volume::names::FEATURE.into());
        let body = serde_json::to_vec(&names).unwrap();
        assert_eq!(
            parse_config(&encode_config(&body, &[0; 32])).unwrap().0,
            names
        );
        names
            .features
            .push(crate::volume::names::FEATURE_LONG.into());
        let long = serde_json::to_vec(&names).unwrap();
        assert_eq!(
            parse_config(&encode_config(&long, &[0; 32])).unwrap().0,
            names
        );
        let extra = String::from_utf8(body.clone())
            .unwrap()
            .replace("\"version\"", "\"evil\":1,\"version\"");
        assert!(parse_config(&encode_config(extra.as_bytes(), &[0; 32])).is_err());
        let mut v2 = sample();
        v2.version = 2;
        assert!(parse_config(&encode_config(&serde_json::to_vec(&v2).unwrap(), &[0; 32])).is_err());
        assert!(parse_config(&body).is_err());
        assert!(parse_config(b"").is_err());
    }
}

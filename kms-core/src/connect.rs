//! Choosing a KMS from a spec: a store directory (embedded) or a server URL.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{ErrorCode, Kms, KmsError, KmsResult, KmsService};

/// The default store directory: `$XDG_DATA_HOME/kmsfs/kms`, else
/// `~/.local/share/kmsfs/kms`.
///
/// # Errors
/// `InternalError` when neither `XDG_DATA_HOME` nor `HOME` is set.
pub fn default_store_dir() -> KmsResult<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("kmsfs").join("kms"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/kmsfs/kms")),
        None => Err(KmsError::new(
            ErrorCode::InternalError,
            "no KMS given and neither XDG_DATA_HOME nor HOME is set: pass --kms PATH",
        )),
    }
}

/// Whether a `--kms` spec names a KMS server: `http(s)://…` (the Tencent API) or
/// `aliyun+http(s)://…` (the Alibaba Cloud API), one endpoint or a `,`-separated list.
pub fn is_remote_url(spec: &str) -> bool {
    let s = spec
        .strip_prefix(crate::http::client::ALIYUN_SCHEME_PREFIX)
        .unwrap_or(spec);
    s.starts_with("http://") || s.starts_with("https://")
}

/// Opens the KMS `spec` names: `None` → the embedded store in
/// [`default_store_dir`]; `http://…` or `https://…` → a remote KMS server in the
/// Tencent API, `aliyun+http(s)://…` → one in the Alibaba Cloud API, and
/// `URL,URL,…` → several servers of one key set with failover
/// ([`crate::http::FailoverKms`]); `postgres://…` → the store in that PostgreSQL
/// database (`store/pg.rs`; the root key under [`default_store_dir`], the audit log in
/// the database); any
/// other string → the embedded store in that directory.
///
/// # Errors
/// The store's open errors; for a URL, `InvalidParameter` when no credentials are
/// found (`KMSFS_KMS_CREDENTIALS` names a credentials file, else
/// `TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY`, or for `aliyun+` URLs
/// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`; see
/// [`crate::http::RemoteConfig::from_env`]).
pub fn connect(spec: Option<&str>) -> KmsResult<Arc<dyn Kms>> {
    match spec {
        Some(urls) if is_remote_url(urls) && crate::http::failover::is_endpoint_list(urls) => {
            Ok(Arc::new(crate::http::FailoverKms::from_env(urls)?))
        }
        Some(url) if is_remote_url(url) => Ok(Arc::new(crate::http::RemoteKms::from_env(url)?)),
        Some(url) if crate::store::is_postgres_url(url) => Ok(Arc::new(KmsService::open_pg(
            url,
            &default_store_dir()?,
            crate::KmsOptions::default(),
        )?)),
        Some(dir) if !dir.is_empty() => Ok(Arc::new(KmsService::open(std::path::Path::new(dir))?)),
        _ => Ok(Arc::new(KmsService::open(&default_store_dir()?)?)),
    }
}

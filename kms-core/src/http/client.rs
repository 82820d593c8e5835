//! [`RemoteKms`]: a [`Kms`] over HTTP(S), signing with TC3 and retrying throttling,
//! internal errors and connection failures with bounded exponential backoff.
//!
//! Backoff (seed 002, "Implementing Exponential Backoff"), with full jitter: before
//! retry `n` (1-based) the client sleeps a uniform random time in
//! `[0, min(cap, base · 2^(n-1))]`, and gives up after `max_attempts` attempts or when the
//! next sleep would pass `max_elapsed` since the first attempt, whichever comes first.
//! The final error says how many attempts were made and how long it took. Each attempt's
//! timeout is cut to what is left of `max_elapsed` (at least 1 s), so a call never takes
//! much longer than `max_elapsed` even when the server hangs.
//!
//! Credentials ([`RemoteConfig::from_env`]): the TOML file named by
//! `KMSFS_KMS_CREDENTIALS` if set, else `TENCENTCLOUD_SECRET_ID` /
//! `TENCENTCLOUD_SECRET_KEY` (and `TENCENTCLOUD_REGION`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::tc3::{self, OutgoingRequest, SecretKey};
use super::API_VERSION;
use crate::{CallContext, ErrorCode, Kms, KmsError, KmsResult};

/// The environment variable naming a credentials file for [`RemoteKms`].
pub const CREDENTIALS_ENV: &str = "KMSFS_KMS_CREDENTIALS";
/// The largest response body the client reads.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// How the client retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (≥ 1).
    pub max_attempts: u32,
    /// No retry starts after this much time since the first attempt.
    pub max_elapsed: Duration,
    /// The first backoff's upper bound.
    pub base: Duration,
    /// No single backoff is longer than this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(10),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the sleep before retry `n` (1-based): `min(cap, base · 2^(n-1))`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A full-jitter sleep before retry `n`.
    pub fn backoff(&self, n: u32) -> Duration {
        self.ceiling(n).mul_f64(fastrand::f64())
    }
}

/// Where the KMS is and who the client is.
#[derive(Clone)]
pub struct RemoteConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT` (a path, if any, is ignored).
    pub endpoint: String,
    /// The SecretId.
    pub secret_id: String,
    /// The SecretKey.
    pub secret_key: SecretKey,
    /// `X-TC-Region` (informational for this server).
    pub region: String,
    /// Extra CA certificates (PEM) to trust for https, e.g. a self-signed server cert.
    pub ca_file: Option<PathBuf>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Timeout of one HTTP exchange (cut to what is left of the retry budget).
    pub request_timeout: Duration,
}

impl fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("endpoint", &self.endpoint)
            .field("secret_id", &self.secret_id)
            .field("region", &self.region)
            .field("ca_file", &self.ca_file)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    secret_id: String,
    secret_key: SecretKey,
    region: Option<String>,
    ca_file: Option<PathBuf>,
    max_attempts: Option<u32>,
    max_elapsed_secs: Option<f64>,
    request_timeout_secs: Option<f64>,
}

fn config_error(msg: impl Into<String>) -> KmsError {
    KmsError::new(ErrorCode::InvalidParameter, msg)
}

impl RemoteConfig {
    /// A config with default retries and timeouts.
    pub fn new(endpoint: &str, secret_id: &str, secret_key: SecretKey) -> RemoteConfig {
        RemoteConfig {
            endpoint: endpoint.to_owned(),
            secret_id: secret_id.to_owned(),
            secret_key,
            region: "ap-guangzhou".into(),
            ca_file: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Credentials from the TOML file `KMSFS_KMS_CREDENTIALS` names, else from
    /// `TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY` / `TENCENTCLOUD_REGION`.
    ///
    /// The file:
    /// ```toml
    /// secret_id = "AKID…"
    /// secret_key = "…"
    /// region = "ap-guangzhou"          # optional
    /// ca_file = "/etc/kmsfs/kms-ca.pem"  # optional: trust this CA for https
    /// max_attempts = 6                 # optional retry bounds
    /// max_elapsed_secs = 10
    /// request_timeout_secs = 30
    /// ```
    ///
    /// # Errors
    /// `InvalidParameter` when no credentials are found or the file is invalid.
    pub fn from_env(endpoint: &str) -> KmsResult<RemoteConfig> {
        if let Some(path) = std::env::var_os(CREDENTIALS_ENV).filter(|p| !p.is_empty()) {
            return RemoteConfig::from_file(endpoint, Path::new(&path));
        }
        // An Alibaba-dialect endpoint takes the Alibaba SDKs' own variables.
        let (id_var, key_var) = if endpoint.starts_with(ALIYUN_SCHEME_PREFIX) {
            (
                "ALIBABA_CLOUD_ACCESS_KEY_ID",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            )
        } else {
            ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY")
        };
        let id = std::env::var(id_var).unwrap_or_default();
        let key = zeroize::Zeroizing::new(std::env::var(key_var).unwrap_or_default());
        if id.is_empty() || key.is_empty() {
            return Err(config_error(format!(
                "no credentials for the KMS at {endpoint}: set {CREDENTIALS_ENV} to a credentials file, \
                 or {id_var} and {key_var}"
            )));
        }
        let mut cfg = RemoteConfig::new(endpoint, &id, SecretKey::new(key.as_str()));
        if let Ok(region) = std::env::var("TENCENTCLOUD_REGION") {
            if !region.is_empty() {
                cfg.region = region;
            }
        }
        Ok(cfg)
    }

    /// Credentials from a TOML file (see [`RemoteConfig::from_env`]).
    ///
    /// # Errors
    /// `InvalidParameter` when the file cannot be read or is invalid.
    pub fn from_file(endpoint: &str, path: &Path) -> KmsResult<RemoteConfig> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            config_error(format!(
                "cannot read the KMS credentials file {}: {e}",
                path.display()
            ))
        })?);
        let f: CredentialsFile = toml::from_str(&text).map_err(|e| {
            config_error(format!(
                "the KMS credentials file {} is invalid: {}",
                path.display(),
                e.message().lines().next().unwrap_or("syntax error")
            ))
        })?;
        let mut cfg = RemoteConfig::new(endpoint, &f.secret_id, f.secret_key);
        if let Some(r) = f.region {
            cfg.region = r;
        }
        cfg.ca_file = f.ca_file;
        if let Some(n) = f.max_attempts {
            cfg.retry.max_attempts = n.max(1);
        }
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
        if let Some(s) = f.max_elapsed_secs {
            cfg.retry.max_elapsed = secs(s);
        }
        if let Some(s) = f.request_timeout_secs {
            cfg.request_timeout = secs(s);
        }
        Ok(cfg)
    }
}

/// The API a remote KMS is spoken to in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Tencent Cloud API 3.0 (TC3-HMAC-SHA256): `http(s)://`.
    Tencent,
    /// Alibaba Cloud KMS 2016-01-20 (ACS3-HMAC-SHA256): `aliyun+http(s)://`.
    Aliyun,
}

/// The prefix of an endpoint spoken to in the Alibaba Cloud API.
pub const ALIYUN_SCHEME_PREFIX: &str = "aliyun+";

/// The KMS at an `http(s)://` (Tencent API) or `aliyun+http(s)://` (Alibaba API) URL.
pub struct RemoteKms {
    config: RemoteConfig,
    url: String,
    pub(crate) host: String,
    pub(crate) agent: ureq::Agent,
    dialect: Dialect,
}

impl fmt::Debug for RemoteKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKms")
            .field("url", &self.url)
            .field("secret_id", &self.config.secret_id)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt {
    Done(KmsResult<Value>),
    /// A transport failure; retryable for connect, reset and timeout, not for TLS
    /// verification or a bad URL.
    Transport(String, bool),
}

impl RemoteKms {
    /// A client for `config.endpoint`.
    ///
    /// # Errors
    /// `InvalidParameter` for a URL that is not `http(s)://HOST[:PORT]` or an unusable CA file.
    pub fn new(config: RemoteConfig) -> KmsResult<RemoteKms> {
        let (dialect, endpoint) = match config.endpoint.strip_prefix(ALIYUN_SCHEME_PREFIX) {
            Some(e) => (Dialect::Aliyun, e.to_owned()),
            None => (Dialect::Tencent, config.endpoint.clone()),
        };
        let (scheme, rest) = endpoint
            .split_once("://")
            .ok_or_else(|| config_error(format!("{} is not an http(s):// URL", config.endpoint)))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(config_error(format!(
                "{} is not an http(s):// URL",
                config.endpoint
            )));
        }
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        if host.is_empty() || host.contains('@') {
            return Err(config_error(format!(
                "{} has no host (or has user info, which is not used)",
                config.endpoint
            )));
        }
        let url = format!("{scheme}://{host}/");
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                config_error(format!("cannot read the CA file {}: {e}", ca.display()))
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(config_error(format!(
                    "{} holds no PEM certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .timeout_connect(Some(Duration::from_secs(5)))
            .max_idle_connections_per_host(16)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(RemoteKms {
            config,
            url,
            host,
            agent,
            dialect,
        })
    }

    /// A client for `url` with credentials from the environment ([`RemoteConfig::from_env`]).
    ///
    /// # Errors
    /// As [`RemoteConfig::from_env`] and [`RemoteKms::new`].
    pub fn from_env(url: &str) -> KmsResult<RemoteKms> {
        RemoteKms::new(RemoteConfig::from_env(url)?)
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API this client speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn secret(&self) -> (&str, &SecretKey) {
        (&self.config.secret_id, &self.config.secret_key)
    }

    fn attempt(&self, ctx: &CallContext, action: &str, body: &[u8], timeout: Duration) -> Attempt {
        if self.dialect == Dialect::Aliyun {
            return match super::aliyun_client::attempt(self, action, body, timeout) {
                Ok(r) => Attempt::Done(r),
                Err((msg, retryable)) => Attempt::Transport(msg, retryable),
            };
        }
        let timestamp = tc3::unix_now();
        let content_type = "application/json";
        let authorization = tc3::sign_post(
            &self.config.secret_id,
            &self.config.secret_key,
            &OutgoingRequest {
                host: &self.host,
                content_type,
                action,
                body,
                timestamp,
            },
        );
        let mut req = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Host", &self.host)
            .header("Content-Type", content_type)
            .header("X-TC-Action", action)
            .header("X-TC-Version", API_VERSION)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Region", &self.config.region)
            .header(
                "X-TC-RequestClient",
                concat!("kmsfs-kms-core/", env!("CARGO_PKG_VERSION")),
            )
            .header("Authorization", authorization);
        if !ctx.request_id.is_empty() {
            req = req.header("X-TC-TraceId", &ctx.request_id);
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => {
                let retryable = transport_retryable(&e);
                return Attempt::Transport(e.to_string(), retryable);
            }
        };
        let status = resp.status();
        let bytes = match read_body(&mut resp, MAX_RESPONSE_BYTES) {
            Ok(b) => b,
            Err(e) => {
                let retryable = transport_retryable(&e);
                return Attempt::Transport(format!("reading the response: {e}"), retryable);
            }
        };
        if status != 200 {
            let e = KmsError::new(
                ErrorCode::InternalError,
                format!("the KMS at {} answered HTTP {status}", self.url),
            );
            return Attempt::Done(Err(e));
        }
        Attempt::Done(parse_response(&bytes))
    }
}

/// Whether a transport error may go away by itself (the server restarting, a reset
/// connection, a timeout). A certificate the client does not trust will not.
fn transport_retryable(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => !io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(_)
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => true,
        _ => false,
    }
}

/// Reads `{"Response":{…}}`: the fields without `RequestId`, or the error it carries.
///
/// # Errors
/// The response's `Error`, or `InternalError` for a body that is not a Tencent response.
pub fn parse_response(bytes: &[u8]) -> KmsResult<Value> {
    let bad = |why: &str| {
        KmsError::new(
            ErrorCode::InternalError,
            format!("the KMS response is not a Tencent Cloud API response: {why}"),
        )
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| bad("not JSON"))?;
    let Some(Value::Object(mut fields)) = v.get("Response").cloned() else {
        return Err(bad("no Response object"));
    };
    if let Some(err) = fields.get("Error") {
        let code = err
            .get("Code")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("Error without Code"))?;
        let message = err.get("Message").and_then(Value::as_str).unwrap_or("");
        return Err(KmsError::new(ErrorCode::parse(code), message));
    }
    fields.remove("RequestId");
    Ok(Value::Object(fields))
}

/// The body of `resp`, at most `limit` bytes, in memory zeroized on drop (a
/// response may carry a plaintext). Both dialects' clients read their answers so.
pub(super) fn read_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ureq::Error> {
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map(zeroize::Zeroizing::new)
}

impl Kms for RemoteKms {
    fn call_aliyun(
        &self,
        ctx: &CallContext,
        action: &str,
        params: &[(String, String)],
    ) -> KmsResult<Value> {
        if self.dialect != Dialect::Aliyun {
            return Err(KmsError::new(
                ErrorCode::UnsupportedOperation,
                format!(
                    "{action}: {} is spoken to in the Tencent API; name it aliyun+{} for the Alibaba API",
                    self.url, self.url
                ),
            ));
        }
        let map: serde_json::Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.call(ctx, action, &Value::Object(map))
    }

    fn call(&self, ctx: &CallContext, action: &str, params: &Value) -> KmsResult<Value> {
        let body = zeroize::Zeroizing::new(serde_json::to_vec(params).map_err(|_| {
            KmsError::new(ErrorCode::InvalidParameter, "the parameters are not JSON")
        })?);
        let policy = &self.config.retry;
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            // No attempt runs past the time budget (but each gets at least a second).
            let remaining = policy.max_elapsed.saturating_sub(started.elapsed());
            let timeout = self
                .config
                .request_timeout
                .min(remaining.max(Duration::from_secs(1)));
            let (err, retryable) = match self.attempt(ctx, action, &body, timeout) {
                Attempt::Done(Ok(v)) => return Ok(v),
                Attempt::Done(Err(e)) => {
                    let r = e.code.is_retryable();
                    (e, r)
                }
                Attempt::Transport(msg, retryable) => (
                    KmsError::new(
                        ErrorCode::InternalError,
                        format!("cannot reach the KMS at {}: {msg}", self.url),
                    ),
                    retryable,
                ),
            };
            if !retryable {
                return Err(err);
            }
            let sleep = policy.backoff(attempts);
            let elapsed = started.elapsed();
            if attempts >= policy.max_attempts || elapsed + sleep > policy.max_elapsed {
                return Err(KmsError::new(
                    err.code,
                    format!(
                        "{} (gave up after {attempts} attempt{} in {:.1} s)",
                        err.message,
                        if attempts == 1 { "" } else { "s" },
                        elapsed.as_secs_f64()
                    ),
                ));
            }
            tracing::debug!(
                action,
                code = %err.code,
                attempt = attempts,
                sleep_ms = sleep.as_millis() as u64,
                "KMS call failed; retrying"
            );
            std::thread::sleep(sleep);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceilings_grow_and_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(6), Duration::from_secs(2));
        assert_eq!(p.ceiling(60), Duration::from_secs(2));
        for n in 1..10 {
            assert!(p.backoff(n) <= p.ceiling(n));
        }
    }

    #[test]
    fn responses() {
        let ok = parse_response(br#"{"Response":{"KeyId":"k","RequestId":"r"}}"#).unwrap();
        assert_eq!(ok, serde_json::json!({"KeyId":"k"}));
        let e = parse_response(
            br#"{"Response":{"Error":{"Code":"ResourceUnavailable.CmkDisabled","Message":"m"},"RequestId":"r"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ResourceUnavailableCmkDisabled);
        assert_eq!(e.message, "m");
        for bad in [&b"x"[..], b"{}", br#"{"Response":{"Error":{}}}"#] {
            assert_eq!(
                parse_response(bad).unwrap_err().code,
                ErrorCode::InternalError
            );
        }
    }

    #[test]
    fn config_debug_hides_the_key_and_bad_urls_are_refused() {
        let cfg = RemoteConfig::new("http://127.0.0.1:1", "AKID", SecretKey::new("s3cr3t"));
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        for bad in ["127.0.0.1:1", "ftp://x", "http://", "http://u@h/"] {
            let c = RemoteConfig::new(bad, "AKID", SecretKey::new("k"));
            assert!(RemoteKms::new(c).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_server_that_never_answers_costs_at_most_the_time_budget() {
        // Accepts connections and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = std::thread::spawn(move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(4) {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let mut cfg = RemoteConfig::new(&format!("http://{addr}"), "AKID", SecretKey::new("k"));
        cfg.retry.max_elapsed = Duration::from_secs(2);
        let kms = RemoteKms::new(cfg).unwrap();
        let t = Instant::now();
        let ctx = CallContext {
            principal: String::new(),
            request_id: String::new(),
        };
        let e = kms
            .call(&ctx, "ListKeys", &serde_json::json!({}))
            .unwrap_err();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(3500), "{took:?}: {e}");
        assert!(e.message.contains("gave up after"), "{e}");
        holder.join().unwrap();
    }

    #[test]
    fn unreachable_server_gives_up_within_the_bounds() {
        // A port nobody listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut cfg = RemoteConfig::new(
            &format!("http://127.0.0.1:{port}"),
            "AKID",
            SecretKey::new("k"),
        );
        cfg.retry = RetryPolicy {
            max_attempts: 4,
            max_elapsed: Duration::from_secs(5),
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
        };
        let kms = RemoteKms::new(cfg).unwrap();
        let t = Instant::now();
        let e = kms
            .call(
                &CallContext {
                    principal: String::new(),
                    request_id: String::new(),
                },
                "ListKeys",
                &serde_json::json!({}),
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InternalError);
        assert!(e.message.contains("cannot reach the KMS"), "{e}");
        assert!(e.message.contains("gave up after 4 attempts"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

//! Who may call the server: SecretId/SecretKey pairs, the actions and keys each may use,
//! and a per-principal rate limit.
//!
//! The config file is TOML (docs/SERVER.md):
//!
//! ```toml
//! [[principal]]
//! secret_id = "AKIDmountHost1"
//! secret_key = "…"
//! actions = ["GenerateDataKey", "Decrypt", "DescribeKey"]   # default ["*"]
//! keys = ["*"]                 # key ids or alias/NAME, `*` globs; default ["*"]
//! rate = 50.0                  # requests per second; absent = unlimited
//! burst = 100                  # bucket size; default max(1, rate)
//! require_signed_action = true # its requests must sign x-tc-action; default false
//! token = "…"                  # temporary credentials: requests carry it as X-TC-Token
//! ```
//!
//! With no file, one principal comes from `TENCENTCLOUD_SECRET_ID` /
//! `TENCENTCLOUD_SECRET_KEY`, allowed everything, without a rate limit.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::Deserialize;

use super::tc3::SecretKey;
use crate::{ErrorCode, KmsError, KmsResult};

/// One principal.
pub struct Principal {
    /// The SecretId (public: it appears in logs and the audit log).
    pub secret_id: String,
    secret_key: SecretKey,
    /// Action names or globs this principal may call.
    pub actions: Vec<String>,
    /// Key ids / `alias/NAME` globs this principal may use.
    pub keys: Vec<String>,
    /// Its requests must sign `x-tc-action` (as kmsfs's own client does): then none of
    /// them can be replayed as another action. tccli and the Python SDK do not sign it.
    pub require_signed_action: bool,
    /// A session token (temporary credentials, as STS hands out with a SecretId and
    /// SecretKey): every request must carry it as `X-TC-Token`. **Secret.**
    token: Option<SecretKey>,
    limiter: Option<Mutex<TokenBucket>>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("secret_id", &self.secret_id)
            .field("actions", &self.actions)
            .field("keys", &self.keys)
            .field("require_signed_action", &self.require_signed_action)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// A principal allowed every action on every key, without a rate limit.
    pub fn unrestricted(secret_id: impl Into<String>, secret_key: SecretKey) -> Principal {
        Principal {
            secret_id: secret_id.into(),
            secret_key,
            actions: vec!["*".into()],
            keys: vec!["*".into()],
            require_signed_action: false,
            token: None,
            limiter: None,
        }
    }

    /// Checks a request's `X-TC-Token` against this principal's session token: both
    /// absent, or equal (compared in constant time).
    ///
    /// # Errors
    /// `AuthFailure.TokenFailure`, saying which way it failed, never the token.
    pub fn check_token(&self, given: Option<&str>) -> KmsResult<()> {
        use subtle::ConstantTimeEq as _;
        let given = given.filter(|t| !t.is_empty());
        match (&self.token, given) {
            (None, None) => Ok(()),
            (Some(want), Some(got))
                if bool::from(want.expose().as_bytes().ct_eq(got.as_bytes())) =>
            {
                Ok(())
            }
            (Some(_), None) => Err(KmsError::new(
                ErrorCode::AuthTokenFailure,
                "this SecretId is a temporary credential: send its session token as X-TC-Token",
            )),
            (None, Some(_)) => Err(KmsError::new(
                ErrorCode::AuthTokenFailure,
                "this SecretId has no session token, but the request carries one (X-TC-Token)",
            )),
            (Some(_), Some(_)) => Err(KmsError::new(
                ErrorCode::AuthTokenFailure,
                "the session token (X-TC-Token) is not this SecretId's",
            )),
        }
    }

    /// The SecretKey, for signature verification.
    pub fn secret_key(&self) -> &SecretKey {
        &self.secret_key
    }

    /// Whether this principal may call `action`.
    pub fn may_call(&self, action: &str) -> bool {
        self.actions.iter().any(|p| glob_match(p, action))
    }

    /// Whether this principal may use the key named `key` (an id or `alias/NAME`).
    pub fn may_use_key(&self, key: &str) -> bool {
        self.keys.iter().any(|p| glob_match(p, key))
    }

    /// Takes one token from the rate limiter.
    ///
    /// # Errors
    /// `RequestLimitExceeded` when the bucket is empty.
    pub fn admit(&self, now: Instant) -> KmsResult<()> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let mut bucket = limiter.lock().unwrap_or_else(|e| e.into_inner());
        if bucket.take(now) {
            Ok(())
        } else {
            Err(KmsError::new(
                ErrorCode::RequestLimitExceeded,
                format!(
                    "the rate limit of {} requests/s (burst {}) for {} is exceeded; retry with backoff",
                    bucket.rate, bucket.burst, self.secret_id
                ),
            ))
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` kept.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The set of principals the server accepts.
#[derive(Debug, Default)]
pub struct Principals {
    by_id: HashMap<String, Principal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    principal: Vec<FilePrincipal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrincipal {
    /// A Tencent SecretId or an Alibaba AccessKeyId (`access_key_id`): a principal is
    /// a credential pair, whichever API it signs for.
    #[serde(alias = "access_key_id")]
    secret_id: String,
    #[serde(alias = "access_key_secret")]
    secret_key: SecretKey,
    actions: Option<Vec<String>>,
    keys: Option<Vec<String>>,
    rate: Option<f64>,
    burst: Option<f64>,
    #[serde(default)]
    require_signed_action: bool,
    token: Option<SecretKey>,
}

impl Principals {
    /// Principals from a list.
    pub fn new(list: impl IntoIterator<Item = Principal>) -> Principals {
        Principals {
            by_id: list.into_iter().map(|p| (p.secret_id.clone(), p)).collect(),
        }
    }

    /// Looks a principal up by SecretId.
    pub fn get(&self, secret_id: &str) -> Option<&Principal> {
        self.by_id.get(secret_id)
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Parses the TOML config (see the module docs).
    ///
    /// # Errors
    /// A message naming what is wrong (never a secret).
    pub fn from_toml(text: &str) -> Result<Principals, String> {
        let cfg: FileConfig = toml::from_str(text).map_err(|e| {
            // toml's messages quote the offending line, which may hold a secret_key.
            format!(
                "invalid principals config: {}",
                e.message().lines().next().unwrap_or("syntax error")
            )
        })?;
        let now = Instant::now();
        let mut list = Vec::new();
        for p in cfg.principal {
            if p.secret_id.is_empty() || p.secret_key.expose().is_empty() {
                return Err("a principal has an empty secret_id or secret_key".into());
            }
            let limiter = match (p.rate, p.burst) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(format!("principal {}: burst without rate", p.secret_id))
                }
                (Some(rate), burst) => {
                    let burst = burst.unwrap_or(rate.max(1.0));
                    if !(rate > 0.0 && rate.is_finite() && burst >= 1.0 && burst.is_finite()) {
                        return Err(format!(
                            "principal {}: rate must be > 0 and burst ≥ 1",
                            p.secret_id
                        ));
                    }
                    Some(Mutex::new(TokenBucket::new(rate, burst, now)))
                }
            };
            if list.iter().any(|q: &Principal| q.secret_id == p.secret_id) {
                return Err(format!("principal {} appears twice", p.secret_id));
            }
            list.push(Principal {
                secret_id: p.secret_id,
                secret_key: p.secret_key,
                actions: p.actions.unwrap_or_else(|| vec!["*".into()]),
                keys: p.keys.unwrap_or_else(|| vec!["*".into()]),
                require_signed_action: p.require_signed_action,
                token: p.token.filter(|t| !t.expose().is_empty()),
                limiter,
            });
        }
        if list.is_empty() {
            return Err("the principals config names no [[principal]]".into());
        }
        Ok(Principals::new(list))
    }

    /// Reads the TOML config file.
    ///
    /// # Errors
    /// The file cannot be read or is invalid.
    pub fn from_file(path: &Path) -> Result<Principals, String> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the principals file holds secret keys and is readable by others: chmod 600 it"
                );
            }
        }
        Principals::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Unrestricted principals from the clouds' own variables: a Tencent SecretId from
    /// `TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY`, an Alibaba AccessKey from
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, or both. A
    /// principal is a credential pair whatever the API: either pair signs requests of
    /// either cloud's API.
    ///
    /// # Errors
    /// Neither pair is set.
    pub fn from_env() -> Result<Principals, String> {
        let mut list = Vec::new();
        for (id_var, key_var) in [
            ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"),
            (
                "ALIBABA_CLOUD_ACCESS_KEY_ID",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            ),
        ] {
            let id = std::env::var(id_var).unwrap_or_default();
            let key = zeroize::Zeroizing::new(std::env::var(key_var).unwrap_or_default());
            if !id.is_empty() && !key.is_empty() {
                list.push(Principal::unrestricted(id, SecretKey::new(key.as_str())));
            }
        }
        if list.is_empty() {
            return Err(
                "no principals: give --config FILE or set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY \
                 (or ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET)"
                    .into(),
            );
        }
        Ok(Principals::new(list))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "Decrypt"));
        assert!(glob_match("Describe*", "DescribeKeys"));
        assert!(!glob_match("Describe*", "ListKeys"));
        assert!(glob_match("*Key", "CreateKey"));
        assert!(glob_match("a*b*c", "a12b34c"));
        assert!(!glob_match("a*b*c", "a12b34"));
        assert!(glob_match("alias/app-*", "alias/app-1"));
        assert!(!glob_match("Decrypt", "DecryptX"));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn token_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long it waited.
        let later = t0 + Duration::from_secs(100);
        assert!(b.take(later) && b.take(later) && !b.take(later));
    }

    #[test]
    fn config_file() {
        let p = Principals::from_toml(
            r#"
[[principal]]
secret_id = "AKIDadmin"
secret_key = "adminkey"

[[principal]]
secret_id = "AKIDapp"
secret_key = "appkey"
actions = ["GenerateDataKey", "Decrypt", "Describe*"]
keys = ["alias/app-*", "2f0e*"]
rate = 1.0
burst = 1
"#,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        let admin = p.get("AKIDadmin").unwrap();
        assert!(admin.may_call("ScheduleKeyDeletion") && admin.may_use_key("x"));
        let app = p.get("AKIDapp").unwrap();
        assert_eq!(app.secret_key().expose(), "appkey");
        assert!(app.may_call("DescribeKey") && !app.may_call("DisableKey"));
        assert!(app.may_use_key("alias/app-db") && app.may_use_key("2f0e-1"));
        assert!(!app.may_use_key("alias/other"));
        let now = Instant::now();
        assert!(app.admit(now).is_ok());
        assert_eq!(
            app.admit(now).unwrap_err().code,
            ErrorCode::RequestLimitExceeded
        );
        assert!(!format!("{p:?}").contains("appkey"));
    }

    #[test]
    fn bad_configs_are_refused_without_echoing_secrets() {
        for bad in [
            "",
            "[[principal]]\nsecret_id = \"a\"\n",
            "[[principal]]\nsecret_id = \"a\"\nsecret_key = \"s3cr3t\"\nrate = 0.0\n",
            "[[principal]]\nsecret_id = \"a\"\nsecret_key = \"s3cr3t\"\nburst = 3\n",
            "[[principal]]\nsecret_id = \"a\"\nsecret_key = \"s3cr3t\"\nextra = 1\n",
            "[[principal]]\nsecret_id = \"a\"\nsecret_key = \"s3cr3t\" junk\n",
            "[[principal]]\nsecret_id = \"a\"\nsecret_key = \"k\"\n[[principal]]\nsecret_id = \"a\"\nsecret_key = \"k\"\n",
        ] {
            let e = Principals::from_toml(bad).unwrap_err();
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn alibaba_access_keys_are_principals_too() {
        let p = Principals::from_toml(
            "[[principal]]\naccess_key_id = \"LTAIabc\"\naccess_key_secret = \"s\"\nactions = [\"Decrypt\"]\n",
        )
        .unwrap();
        let a = p.get("LTAIabc").unwrap();
        assert!(a.may_call("Decrypt") && !a.may_call("CreateKey"));
        assert_eq!(a.secret_key().expose(), "s");
    }
}

//! Clients that fail over between several KMS servers of one key set
//! (`--kms http://a:8443,http://b:8443`, docs/SERVER.md).
//!
//! [`FailoverKms`] keeps one [`RemoteKms`] per endpoint, each making a single attempt
//! per call, and runs the retry loop itself with the configured [`RetryPolicy`]: a
//! call that fails in a way another server may not (no connection, a reset, a
//! timeout, an HTTP 5xx or `InternalError`) moves to the next endpoint at once; after
//! every endpoint has failed once in a row, it sleeps the policy's backoff before the
//! next round. Errors the servers agree on (a disabled key, a bad parameter) are
//! answered as they come. The endpoint that last answered stays the first choice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;

use super::client::{RemoteConfig, RemoteKms, RetryPolicy};
use crate::{CallContext, ErrorCode, Kms, KmsError, KmsResult};

/// Whether `spec` lists several endpoints (`URL,URL,…`).
pub fn is_endpoint_list(spec: &str) -> bool {
    spec.contains(',')
}

/// Several KMS endpoints serving one key set, tried in turn.
#[derive(Debug)]
pub struct FailoverKms {
    endpoints: Vec<RemoteKms>,
    retry: RetryPolicy,
    /// The endpoint tried first.
    current: AtomicUsize,
}

impl FailoverKms {
    /// A client for the comma-separated endpoints in `config.endpoint`, sharing
    /// its credentials, TLS and retry policy.
    ///
    /// # Errors
    /// `InvalidParameter` for an empty list or an endpoint [`RemoteKms::new`] refuses.
    pub fn new(config: RemoteConfig) -> KmsResult<FailoverKms> {
        let retry = config.retry.clone();
        let endpoints = config
            .endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut c = config.clone();
                c.endpoint = e.to_owned();
                c.retry.max_attempts = 1;
                RemoteKms::new(c)
            })
            .collect::<KmsResult<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(KmsError::new(
                ErrorCode::InvalidParameter,
                format!("{:?} names no KMS endpoint", config.endpoint),
            ));
        }
        Ok(FailoverKms {
            endpoints,
            retry,
            current: AtomicUsize::new(0),
        })
    }

    /// A client with credentials from the environment ([`RemoteConfig::from_env`]).
    ///
    /// # Errors
    /// As [`RemoteConfig::from_env`] and [`FailoverKms::new`].
    pub fn from_env(spec: &str) -> KmsResult<FailoverKms> {
        FailoverKms::new(RemoteConfig::from_env(spec)?)
    }

    /// The endpoints' base URLs, in order.
    pub fn urls(&self) -> Vec<&str> {
        self.endpoints.iter().map(RemoteKms::url).collect()
    }
}

/// Whether another server may answer where this one failed.
fn fails_over(e: &KmsError) -> bool {
    e.code == ErrorCode::InternalError
}

impl Kms for FailoverKms {
    fn call(&self, ctx: &CallContext, action: &str, params: &Value) -> KmsResult<Value> {
        let n = self.endpoints.len();
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut rounds = 0u32;
        loop {
            let first = self.current.load(Ordering::Relaxed) % n;
            let mut last = None;
            for i in 0..n {
                let at = (first + i) % n;
                attempts += 1;
                match self.endpoints[at].call(ctx, action, params) {
                    Ok(v) => {
                        self.current.store(at, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(e) if fails_over(&e) => {
                        tracing::debug!(action, endpoint = self.endpoints[at].url(), error = %e,
                            "KMS endpoint failed; trying the next");
                        self.current.store((at + 1) % n, Ordering::Relaxed);
                        last = Some(e);
                    }
                    Err(e) if e.code.is_retryable() => {
                        last = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
                if started.elapsed() >= self.retry.max_elapsed {
                    break;
                }
            }
            rounds += 1;
            let err =
                last.unwrap_or_else(|| KmsError::new(ErrorCode::InternalError, "no endpoint"));
            let sleep = self.retry.backoff(rounds);
            let elapsed = started.elapsed();
            if attempts >= self.retry.max_attempts.saturating_mul(n as u32)
                || elapsed + sleep > self.retry.max_elapsed
            {
                return Err(KmsError::new(
                    err.code,
                    format!(
                        "{} (gave up after {attempts} attempts on {n} endpoints in {:.1} s)",
                        err.message,
                        elapsed.as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(sleep);
        }
    }
}

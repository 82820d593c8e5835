//! The KMS over HTTP: the Tencent Cloud API 3.0 wire protocol, server and client.
//!
//! ```text
//!  tccli / tencentcloud-sdk-python ─┐
//!  RemoteKms (client.rs, dyn Kms) ──┼─ POST / JSON, X-TC-Action, X-TC-Version: 2019-01-18,
//!                                   │  Authorization: TC3-HMAC-SHA256 … (tc3.rs)
//!                                   ▼
//!         server.rs ── principals.rs (who, what, how fast) ── Arc<dyn Kms> (the embedded service)
//! ```
//!
//! - [`tc3`]: the request signature, signing and verification.
//! - [`acs`]: the Alibaba Cloud KMS API's two request signatures (ACS3-HMAC-SHA256, RPC
//!   HMAC-SHA1 v1), verification with nonce-replay and 15-minute clock checks; not yet
//!   wired into [`server`].
//! - [`principals`]: SecretId/SecretKey pairs, rights (actions, keys) and rate limits.
//! - [`server`]: the HTTP(S) server; always HTTP 200, `Content-Type: application/json`,
//!   `{"Response":{…,"RequestId"}}` or `{"Response":{"Error":{"Code","Message"},"RequestId"}}`.
//! - [`client`]: [`RemoteKms`], a [`crate::Kms`] over HTTP with bounded exponential backoff.

pub mod acs;
mod aliyun_client;
pub mod client;
pub mod failover;
pub mod principals;
pub mod server;
pub mod tc3;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod http_tests;

pub use client::{RemoteConfig, RemoteKms, RetryPolicy};
pub use failover::FailoverKms;
pub use principals::{Principal, Principals};
pub use server::{RunningServer, Server, ServerConfig, TlsFiles};

use serde_json::{Map, Value};

use crate::{ErrorCode, KmsError, KmsResult};

/// The KMS API version, `X-TC-Version`.
pub const API_VERSION: &str = "2019-01-18";

/// Request parameters that are integers in the KMS 2019-01-18 models; a GET query
/// carries them as strings.
const INTEGER_PARAMS: &[&str] = &[
    "Limit",
    "Offset",
    "NumberOfBytes",
    "PendingWindowInDays",
    "Type",
    "Role",
    "RotateDays",
    "ValidTo",
    "KeyState",
    "OrderType",
];

/// The parameters of a POST: the body must be a JSON object (an empty body is `{}`).
///
/// # Errors
/// `InvalidParameter` when it is not.
pub fn params_from_json(body: &[u8]) -> KmsResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(KmsError::new(
            ErrorCode::InvalidParameter,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(KmsError::new(
            ErrorCode::InvalidParameter,
            format!(
                "the request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                // Two hex digits, nothing else (from_str_radix alone takes `%+5`).
                if !h.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let h = std::str::from_utf8(h).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The parameters of a GET: `application/x-www-form-urlencoded` pairs as a JSON object
/// of strings; the known integer fields become numbers; `Name.N` lists (the SDK's
/// flattening of arrays, e.g. `KeyIds.0=a&KeyIds.1=b`) become arrays.
///
/// # Errors
/// `InvalidParameter` for a malformed query.
pub fn params_from_query(query: &str) -> KmsResult<Value> {
    let bad = || KmsError::new(ErrorCode::InvalidParameter, "the query string is malformed");
    let mut obj = Map::new();
    let mut lists: std::collections::BTreeMap<String, Vec<(usize, String)>> = Default::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k).ok_or_else(bad)?;
        let v = percent_decode(v).ok_or_else(bad)?;
        if let Some((name, idx)) = k.rsplit_once('.') {
            if let Ok(idx) = idx.parse::<usize>() {
                lists.entry(name.to_owned()).or_default().push((idx, v));
                continue;
            }
        }
        let value = if INTEGER_PARAMS.contains(&k.as_str()) {
            match v.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::String(v),
            }
        } else {
            Value::String(v)
        };
        obj.insert(k, value);
    }
    for (name, mut items) in lists {
        items.sort_by_key(|(i, _)| *i);
        obj.insert(
            name,
            Value::Array(items.into_iter().map(|(_, v)| Value::String(v)).collect()),
        );
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn percent_escapes_take_two_hex_digits_only() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        for bad in ["%+5", "%-1", "%4", "%zz", "% 1"] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Every parser of untrusted request bytes answers Ok or Err, never panics.
        #[test]
        fn parsers_of_untrusted_input_never_panic(
            s in ".{0,200}",
            b in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = tc3::Authorization::parse(&s);
            let _ = tc3::Authorization::parse(&format!("TC3-HMAC-SHA256 {s}"));
            let _ = params_from_query(&s);
            let _ = params_from_json(&b);
            let _ = client::parse_response(&b);
        }

        /// Signature verification with arbitrary header values never panics, and never
        /// accepts a request that was not signed with the key.
        #[test]
        fn verify_never_panics_or_accepts_garbage(
            sig in "[0-9a-f]{64}",
            id in "[A-Za-z0-9]{0,20}",
            date in ".{0,12}",
            signed in "[a-z;-]{0,40}",
            ts in ".{0,15}",
            body in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let auth = format!(
                "TC3-HMAC-SHA256 Credential={id}/{date}/kms/tc3_request, SignedHeaders={signed}, Signature={sig}"
            );
            let h = |n: &str| match n {
                "authorization" => Some(auth.clone()),
                "x-tc-timestamp" => Some(ts.clone()),
                _ => Some(n.to_owned()),
            };
            let req = tc3::IncomingRequest { method: "POST", uri: "/", query: "", body: &body, header: &h };
            let lookup = |_: &str| Some(tc3::SecretKey::new("k"));
            prop_assert!(tc3::verify(&req, &lookup, tc3::unix_now()).is_err());
        }
    }

    #[test]
    fn json_bodies() {
        assert_eq!(params_from_json(b"").unwrap(), json!({}));
        assert_eq!(
            params_from_json(br#"{"KeyId":"k"}"#).unwrap(),
            json!({"KeyId":"k"})
        );
        for bad in [&b"[1]"[..], b"{", b"\"x\"", b"{\"a\":1}}", b"\xff\xfe"] {
            assert_eq!(
                params_from_json(bad).unwrap_err().code,
                ErrorCode::InvalidParameter
            );
        }
    }

    #[test]
    fn query_strings() {
        assert_eq!(
            params_from_query("KeyId=k1&Limit=20&Alias=a%2Fb+c&KeyIds.1=y&KeyIds.0=x").unwrap(),
            json!({"KeyId":"k1","Limit":20,"Alias":"a/b c","KeyIds":["x","y"]})
        );
        assert_eq!(params_from_query("").unwrap(), json!({}));
        assert!(params_from_query("a=%zz").is_err());
        assert!(params_from_query("a=%f").is_err());
    }
}

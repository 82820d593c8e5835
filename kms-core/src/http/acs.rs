//! The two request signatures of the Alibaba Cloud KMS API (2016-01-20), verification
//! only: ACS3-HMAC-SHA256 (the default of `alibabacloud-kms20160120`) and the RPC
//! signature v1, HMAC-SHA1 (`aliyun-python-sdk-core`, and the new SDK with
//! `signature_algorithm='v2'`). The wire specification is `ALIYUN-KMS-API.md` §2–§4.
//!
//! ```text
//! ACS3:  CanonicalRequest = METHOD \n "/" \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n x-acs-content-sha256
//!        Signature        = hex(HMAC-SHA256(AccessKeySecret, "ACS3-HMAC-SHA256" \n hex(SHA256(CanonicalRequest))))
//! RPC:   StringToSign     = METHOD & %2F & pct(sorted pct(k)=pct(v) pairs of query ∪ form body, minus Signature)
//!        Signature        = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))
//! ```
//!
//! Both schemes sign a nonce and a timestamp: [`NonceCache`] refuses a nonce seen
//! before from the same AccessKeyId (`SignatureNonceUsed`) and [`verify`] refuses a
//! timestamp more than [`CLOCK_WINDOW_SECS`] from the server clock. Every refusal is an
//! [`AuthError`] carrying Alibaba's error code and HTTP status; none carries a secret.
//!
//! This module is the Alibaba adapter's authentication; it knows no key, action or
//! response shape.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::percent_decode;
use super::tc3::{hex, hmac_sha256, sha256_hex, SecretKey};

/// The ACS3 algorithm name, first word of the `Authorization` header.
pub const ACS3_ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// The API version both schemes must name.
pub const API_VERSION: &str = "2016-01-20";
/// How far a request's timestamp may be from the server clock (Alibaba: 15 minutes).
pub const CLOCK_WINDOW_SECS: i64 = 15 * 60;
/// The headers an ACS3 request must sign (the V3 rules: every common header present).
pub const ACS3_REQUIRED_SIGNED: &[&str] = &[
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
];
/// Most nonces remembered; past this the oldest are forgotten first (they are
/// refused anyway once their timestamp leaves the window).
pub const NONCE_CACHE_MAX: usize = 1 << 20;

/// A refused request: Alibaba's error code, the HTTP status it goes with, and a
/// message naming the cause (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError {
    /// The `Code` of the error body, e.g. `SignatureDoesNotMatch`.
    pub code: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The `Message` of the error body.
    pub message: String,
}

impl AuthError {
    fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        AuthError {
            code,
            status,
            message: message.into(),
        }
    }

    fn incomplete(why: impl Into<String>) -> Self {
        AuthError::new("IncompleteSignature", 400, why)
    }

    /// The mismatch error. Its message must contain `:` (aliyunsdkcore splits on it)
    /// and ends with the server's StringToSign, which holds no secret.
    fn mismatch(string_to_sign: &str) -> Self {
        AuthError::new(
            "SignatureDoesNotMatch",
            400,
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
            ),
        )
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for AuthError {}

/// `pct(s)` of the spec: RFC 3986 unreserved bytes kept, every other byte `%XX`
/// (upper-case hex) of the UTF-8 encoding; a space is `%20`.
pub fn pct(s: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
    }
    out
}

/// The `(name, value)` pairs of an `application/x-www-form-urlencoded` string, in
/// order, decoded (`+` is a space). An empty value stays (`SignatureType=` is signed).
///
/// # Errors
/// `IncompleteSignature` for a malformed escape or non-UTF-8 text.
pub fn form_pairs(s: &str) -> Result<Vec<(String, String)>, AuthError> {
    let bad = || AuthError::new("InvalidParameter", 400, "the query string is malformed");
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((
                percent_decode(k).ok_or_else(bad)?,
                percent_decode(v).ok_or_else(bad)?,
            ))
        })
        .collect()
}

/// `pct(k)=pct(v)` for each pair sorted by name (then value), joined by `&`.
fn canonical_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut enc: Vec<(String, String)> = pairs.map(|(k, v)| (pct(k), pct(v))).collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The ACS3 canonical request. `headers` are the request's `(name, value)` pairs
/// (any case, repeated names allowed); only those named in `signed_headers`
/// (lower-case, in the client's order) are used, each as `name:values` with the
/// trimmed values sorted and joined by `,`.
pub fn acs3_canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let query = canonical_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut canon_headers = String::new();
    for name in signed_headers {
        let mut values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        values.sort_unstable();
        canon_headers.push_str(name);
        canon_headers.push(':');
        canon_headers.push_str(&values.join(","));
        canon_headers.push('\n');
    }
    format!(
        "{method}\n{path}\n{query}\n{canon_headers}\n{}\n{payload_hash}",
        signed_headers.join(";")
    )
}

/// The ACS3 StringToSign of a canonical request.
pub fn acs3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ACS3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The ACS3 signature, lowercase hex.
pub fn acs3_signature(secret: &SecretKey, string_to_sign: &str) -> String {
    hex(&*hmac_sha256(
        secret.expose().as_bytes(),
        string_to_sign.as_bytes(),
    ))
}

/// A parsed `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acs3Authorization {
    /// The AccessKeyId.
    pub access_key_id: String,
    /// The signed header names, lower-case, in the client's order.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
}

/// Parses an ACS3 `Authorization` header value.
///
/// # Errors
/// `IncompleteSignature` when it is not one, or a part is missing.
pub fn parse_acs3_authorization(value: &str) -> Result<Acs3Authorization, AuthError> {
    let rest = value
        .strip_prefix(ACS3_ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| AuthError::incomplete("the Authorization header is not ACS3-HMAC-SHA256"))?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(|| {
            AuthError::incomplete("the Authorization header has a part without '='")
        })?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => {}
        }
    }
    let missing =
        |what: &str| AuthError::incomplete(format!("the Authorization header has no {what}"));
    let access_key_id = cred
        .filter(|c| !c.is_empty())
        .ok_or_else(|| missing("Credential"))?;
    let signed = signed
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("SignedHeaders"))?;
    let signature = sig
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("Signature"))?;
    Ok(Acs3Authorization {
        access_key_id: access_key_id.to_owned(),
        signed_headers: signed.split(';').map(str::to_ascii_lowercase).collect(),
        signature: signature.to_owned(),
    })
}

/// The RPC v1 StringToSign: `params` are the query pairs and form-body pairs, all
/// decoded; `Signature` is left out, empty values stay.
pub fn rpc_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let canonical = canonical_pairs(
        params
            .iter()
            .filter(|(k, _)| k != "Signature")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    format!("{method}&%2F&{}", pct(&canonical))
}

/// The RPC v1 signature, base64 of HMAC-SHA1 keyed with `secret + "&"`.
pub fn rpc_signature(secret: &SecretKey, string_to_sign: &str) -> String {
    let key = Zeroizing::new(format!("{}&", secret.expose()));
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    B64.encode(ring::hmac::sign(&k, string_to_sign.as_bytes()).as_ref())
}

/// Unix seconds of a `YYYY-MM-DDTHH:MM:SSZ` UTC timestamp (both schemes' format).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let shape = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Nonces seen per AccessKeyId, each kept while its request's timestamp could
/// still pass the clock window.
#[derive(Debug, Default)]
pub struct NonceCache {
    inner: Mutex<NonceInner>,
}

#[derive(Debug, Default)]
struct NonceInner {
    /// (AccessKeyId, nonce) → expiry (Unix seconds).
    seen: HashMap<(String, String), i64>,
    /// The keys of `seen` in insertion order with their expiry: pruning pops the front.
    order: VecDeque<(i64, (String, String))>,
}

impl NonceCache {
    /// Records `nonce` for `access_key_id` at `now`.
    ///
    /// # Errors
    /// `SignatureNonceUsed` when that AccessKeyId used the nonce within the window.
    pub fn check_and_record(
        &self,
        access_key_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<(), AuthError> {
        // A poisoned lock only means another thread panicked mid-insert: the map is
        // still a set of seen nonces.
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((exp, _)) = g.order.front() {
            if *exp > now && g.order.len() < NONCE_CACHE_MAX {
                break;
            }
            if let Some((_, key)) = g.order.pop_front() {
                g.seen.remove(&key);
            }
        }
        let key = (access_key_id.to_owned(), nonce.to_owned());
        if g.seen.get(&key).is_some_and(|&exp| exp > now) {
            return Err(AuthError::new(
                "SignatureNonceUsed",
                400,
                "Specified signature nonce was used already.",
            ));
        }
        // The request's timestamp is within the window of `now`, so the same request
        // stays acceptable for at most two windows from here.
        let exp = now + 2 * CLOCK_WINDOW_SECS;
        g.seen.insert(key.clone(), exp);
        g.order.push_back((exp, key));
        Ok(())
    }
}

/// Which signature a verified request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: ACS3-HMAC-SHA256 …`.
    Acs3,
    /// RPC signature v1, `SignatureMethod=HMAC-SHA1` in the parameters.
    RpcV1,
}

/// An incoming request, as much of it as the signatures cover.
#[derive(Clone, Copy, Debug)]
pub struct IncomingRequest<'a> {
    /// `POST` or `GET`.
    pub method: &'a str,
    /// The request path (`/`).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Every header as `(name, value)`, names in any case, raw values.
    pub headers: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
}

impl IncomingRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn form_body(&self) -> Result<Vec<(String, String)>, AuthError> {
        let form = self.header("content-type").is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        if !form || self.body.is_empty() {
            return Ok(Vec::new());
        }
        let text = std::str::from_utf8(self.body)
            .map_err(|_| AuthError::new("InvalidParameter", 400, "the form body is not UTF-8"))?;
        form_pairs(text)
    }
}

/// Which scheme a request claims, if any: ACS3 by its Authorization header, RPC v1 by
/// `SignatureMethod=HMAC-SHA1` beside a `Signature` parameter; `Some(Err)` for a
/// request that is Alibaba-shaped (an `x-acs-action` header, or `Version=2016-01-20`)
/// but carries neither; `None` for anything else (a Tencent request).
pub fn claimed_scheme(req: &IncomingRequest<'_>) -> Option<Result<Scheme, AuthError>> {
    if req
        .header("authorization")
        .is_some_and(|a| a.starts_with(ACS3_ALGORITHM))
    {
        return Some(Ok(Scheme::Acs3));
    }
    let params = match form_pairs(req.query).and_then(|mut q| {
        q.extend(req.form_body()?);
        Ok(q)
    }) {
        Ok(p) => p,
        Err(e) => return req.header("x-acs-action").map(|_| Err(e)),
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("Signature").is_some() && get("SignatureMethod") == Some("HMAC-SHA1") {
        return Some(Ok(Scheme::RpcV1));
    }
    if req.header("x-acs-action").is_some() || get("Version") == Some(API_VERSION) {
        return Some(Err(AuthError::incomplete(
            "the request carries no ACS3-HMAC-SHA256 Authorization and no HMAC-SHA1 Signature",
        )));
    }
    None
}

/// A request whose signature verified.
#[derive(Debug)]
pub struct Verified {
    /// The scheme it used.
    pub scheme: Scheme,
    /// The signer.
    pub access_key_id: String,
    /// The action (`x-acs-action` for ACS3, the signed `Action` parameter for RPC v1).
    pub action: String,
    /// The business parameters: query ∪ form body, less the RPC common parameters.
    pub params: Vec<(String, String)>,
}

/// The RPC v1 common parameters, which are not business parameters.
const RPC_COMMON: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Timestamp",
    "Signature",
    "RegionId",
    "SecurityToken",
];

fn check_clock(ts: Option<&str>, now: i64) -> Result<(), AuthError> {
    let ts = ts.ok_or_else(|| AuthError::incomplete("the request carries no timestamp"))?;
    let t = parse_timestamp(ts).ok_or_else(|| {
        AuthError::new(
            "InvalidTimeStamp.Format",
            400,
            format!("Specified time stamp or date value is not well formatted: {ts:?}"),
        )
    })?;
    if (t - now).abs() > CLOCK_WINDOW_SECS {
        return Err(AuthError::new(
            "InvalidTimeStamp.Expired",
            400,
            format!("Specified time stamp or date value is expired: {ts} is more than 15 minutes from the server clock"),
        ));
    }
    Ok(())
}

fn unknown_key_id(id: &str) -> AuthError {
    AuthError::new(
        "InvalidAccessKeyId.NotFound",
        404,
        format!("Specified access key is not found: {id:?}"),
    )
}

fn check_signature(expected: &str, given: &str, string_to_sign: &str) -> Result<(), AuthError> {
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err(AuthError::mismatch(string_to_sign))
    }
}

/// Verifies an Alibaba request of either scheme: the version, the timestamp window,
/// the AccessKeyId (`secret_of` returns its secret), the signature, and last the
/// nonce, so that a forged request cannot burn a genuine client's nonce.
///
/// # Errors
/// An [`AuthError`] with Alibaba's code and status (ALIYUN-KMS-API.md §4).
pub fn verify(
    req: &IncomingRequest<'_>,
    secret_of: impl Fn(&str) -> Option<SecretKey>,
    nonces: &NonceCache,
    now: i64,
) -> Result<Verified, AuthError> {
    let scheme = match claimed_scheme(req) {
        Some(s) => s?,
        None => {
            return Err(AuthError::incomplete(
                "not an Alibaba Cloud request (no ACS3 Authorization, no HMAC-SHA1 Signature)",
            ))
        }
    };
    let query = form_pairs(req.query)?;
    let body = req.form_body()?;
    let require_version = |v: Option<&str>| {
        match v {
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(AuthError::new(
            "InvalidVersion",
            400,
            format!("Specified parameter Version {other:?} is not valid: this server speaks {API_VERSION}"),
        )),
        None => Err(AuthError::new(
            "MissingParameter",
            400,
            "The parameter \"Version\" is needed but not provided.",
        )),
    }
    };
    match scheme {
        Scheme::Acs3 => {
            let auth = parse_acs3_authorization(req.header("authorization").unwrap_or(""))?;
            for name in ACS3_REQUIRED_SIGNED {
                if !auth.signed_headers.iter().any(|h| h == name) {
                    return Err(AuthError::incomplete(format!(
                        "the header {name} must be signed"
                    )));
                }
            }
            require_version(req.header("x-acs-version"))?;
            check_clock(req.header("x-acs-date"), now)?;
            let action = req
                .header("x-acs-action")
                .filter(|a| !a.is_empty())
                .ok_or_else(|| AuthError::incomplete("the request has no x-acs-action header"))?
                .to_owned();
            let nonce = req
                .header("x-acs-signature-nonce")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| AuthError::incomplete("the request has no x-acs-signature-nonce"))?
                .to_owned();
            let secret = secret_of(&auth.access_key_id)
                .ok_or_else(|| unknown_key_id(&auth.access_key_id))?;
            let payload_hash = req.header("x-acs-content-sha256").unwrap_or("");
            if payload_hash != sha256_hex(req.body) {
                return Err(AuthError::new(
                    "SignatureDoesNotMatch",
                    400,
                    "Specified signature is not matched with our calculation: x-acs-content-sha256 is not the SHA-256 of the body",
                ));
            }
            let canonical = acs3_canonical_request(
                req.method,
                req.path,
                &query,
                req.headers,
                &auth.signed_headers,
                payload_hash,
            );
            let sts = acs3_string_to_sign(&canonical);
            check_signature(&acs3_signature(&secret, &sts), &auth.signature, &sts)?;
            nonces.check_and_record(&auth.access_key_id, &nonce, now)?;
            let mut params = query;
            params.extend(body);
            Ok(Verified {
                scheme,
                access_key_id: auth.access_key_id,
                action,
                params,
            })
        }
        Scheme::RpcV1 => {
            let mut all = query;
            all.extend(body);
            let get = |name: &str| all.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let missing = |name: &str| {
                AuthError::new(
                    "MissingParameter",
                    400,
                    format!("The parameter \"{name}\" is needed but not provided."),
                )
            };
            require_version(get("Version"))?;
            check_clock(get("Timestamp"), now)?;
            let ak = get("AccessKeyId")
                .ok_or_else(|| missing("AccessKeyId"))?
                .to_owned();
            let nonce = get("SignatureNonce")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| missing("SignatureNonce"))?
                .to_owned();
            let action = get("Action").ok_or_else(|| missing("Action"))?.to_owned();
            let given = get("Signature").unwrap_or("").to_owned();
            let secret = secret_of(&ak).ok_or_else(|| unknown_key_id(&ak))?;
            let sts = rpc_string_to_sign(req.method, &all);
            check_signature(&rpc_signature(&secret, &sts), &given, &sts)?;
            nonces.check_and_record(&ak, &nonce, now)?;
            let params = all
                .into_iter()
                .filter(|(k, _)| !RPC_COMMON.contains(&k.as_str()))
                .collect();
            Ok(Verified {
                scheme,
                access_key_id: ak,
                action,
                params,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const AK: &str = "LTAItestAccessKeyId";
    const SK: &str = "testAccessKeySecret";
    /// 2026-12-04T23:16:44Z, the time of the captured vectors.
    const T: i64 = 1_796_426_204;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn secrets(id: &str) -> Option<SecretKey> {
        (id == AK).then(|| SecretKey::new(SK))
    }

    /// Vector A of ALIYUN-KMS-API.md §9: tea 0.4.6, ACS3, as captured.
    fn vector_a() -> (String, Vec<(String, String)>) {
        let query =
            "Description=a+b%2Bc%2Ad~e%2F%C3%A9&KeySpec=RSA_2048&KeyUsage=ENCRYPT%2FDECRYPT"
                .to_owned();
        let headers = h(&[
            ("host", "127.0.0.1:18080"),
            ("x-acs-version", "2016-01-20"),
            ("x-acs-action", "CreateKey"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-date", "2026-12-04T23:16:44Z"),
            ("x-acs-signature-nonce", "d41efc4f3fc9bce999fc28a8c9eda348"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Accept-Encoding", "identity"),
            ("Content-Length", "0"),
            ("Authorization", "ACS3-HMAC-SHA256 Credential=LTAItestAccessKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=594d88072fec1d8dab9af4d7c1534dd8ae9204893cfb21fa2b42450e5823f8a3"),
        ]);
        (query, headers)
    }

    const VECTOR_B: &str = "KeySpec=RSA_2048&KeyUsage=ENCRYPT%2FDECRYPT&Description=a%20b%2Bc%2Ad~e%2F%C3%A9&Version=2016-01-20&Action=CreateKey&Format=JSON&RegionId=cn-hangzhou&Timestamp=2026-12-04T23%3A16%3A44Z&SignatureMethod=HMAC-SHA1&SignatureType=&SignatureVersion=1.0&SignatureNonce=04f946f42db0b949495a7c6b4ea124a9&AccessKeyId=LTAItestAccessKeyId&Signature=EfUpwQwhRZFxaTVWV701m5r7XUI%3D";
    const VECTOR_B2: &str = "Action=CreateKey&Format=json&Version=2016-01-20&Timestamp=2026-12-04T23%3A16%3A44Z&SignatureNonce=c816466e525005f0115ed1cfe420f559&Description=a+b%2Bc%2Ad~e%2F%C3%A9&KeySpec=RSA_2048&KeyUsage=ENCRYPT%2FDECRYPT&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&AccessKeyId=LTAItestAccessKeyId&Signature=JIutwXO%2FX5vQNVQY3IdHLhZQYyg%3D";

    fn req<'a>(query: &'a str, headers: &'a [(String, String)]) -> IncomingRequest<'a> {
        IncomingRequest {
            method: "POST",
            path: "/",
            query,
            headers,
            body: b"",
        }
    }

    #[test]
    fn pct_is_rfc3986() {
        assert_eq!(pct(" ~/*-+"), "%20~%2F%2A-%2B");
        assert_eq!(pct("é"), "%C3%A9");
    }

    #[test]
    fn timestamps_parse_and_malformed_ones_do_not() {
        assert_eq!(parse_timestamp("2026-12-04T23:16:44Z"), Some(T));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "2026-12-04 23:16:44Z",
            "2026-13-04T23:16:44Z",
            "2026-12-04T23:16:44",
            "+026-12-04T23:16:44Z",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn captured_acs3_request_verifies_with_the_canonical_query_of_the_spec() {
        let (query, headers) = vector_a();
        let q = form_pairs(&query).unwrap();
        let auth = parse_acs3_authorization(&headers.last().unwrap().1).unwrap();
        let canonical = acs3_canonical_request(
            "POST",
            "/",
            &q,
            &headers,
            &auth.signed_headers,
            &headers[7].1,
        );
        assert_eq!(
            canonical.lines().nth(2).unwrap(),
            "Description=a%20b%2Bc%2Ad~e%2F%C3%A9&KeySpec=RSA_2048&KeyUsage=ENCRYPT%2FDECRYPT"
        );
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "708dde15fc211ac37cbce1d82dab2c4d12a09656d009ca3cf9c6d8bb1565eec7"
        );
        let v = verify(
            &req(&query, &headers),
            secrets,
            &NonceCache::default(),
            T + 60,
        )
        .unwrap();
        assert_eq!(
            (v.scheme, v.access_key_id.as_str(), v.action.as_str()),
            (Scheme::Acs3, AK, "CreateKey")
        );
        assert!(v
            .params
            .contains(&("Description".to_owned(), "a b+c*d~e/é".to_owned())));
    }

    #[test]
    fn official_acs3_vector_with_a_repeated_header() {
        let headers = h(&[("x-acs-test", "http"), ("x-acs-TEST", "https")]);
        let canonical = acs3_canonical_request(
            "GET",
            "",
            &h(&[("test", "ok"), ("empty", "")]),
            &headers,
            &["x-acs-test".to_owned()],
            "55e12e91650d2fec56ec74e1d3e4ddbfce2ef3a65890c2a19ecf88a307e76a23",
        );
        assert_eq!(
            acs3_signature(&SecretKey::new("secret"), &acs3_string_to_sign(&canonical)),
            "d16b30a7699ae9e43875b13195b2f81bcc3ed10c14a9b5eb780e51619aa50be1"
        );
    }

    #[test]
    fn captured_rpc_v1_requests_verify_from_both_sdks() {
        let nonces = NonceCache::default();
        for q in [VECTOR_B, VECTOR_B2] {
            let v = verify(&req(q, &[]), secrets, &nonces, T).unwrap();
            assert_eq!((v.scheme, v.action.as_str()), (Scheme::RpcV1, "CreateKey"));
            let names: Vec<&str> = v.params.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names.len(), 3, "{names:?}");
            assert!(v
                .params
                .contains(&("Description".to_owned(), "a b+c*d~e/é".to_owned())));
        }
    }

    #[test]
    fn official_rpc_v1_vector() {
        let sts = rpc_string_to_sign("GET", &h(&[("query", "test"), ("body", "test")]));
        assert_eq!(
            rpc_signature(&SecretKey::new("secret"), &sts),
            "XlUyV4sXjOuX5FnjUz9IF9tm5rU="
        );
    }

    #[test]
    fn a_replayed_nonce_is_refused_after_its_first_use_succeeds() {
        let nonces = NonceCache::default();
        let (query, headers) = vector_a();
        verify(&req(&query, &headers), secrets, &nonces, T).unwrap();
        let e = verify(&req(&query, &headers), secrets, &nonces, T + 1).unwrap_err();
        assert_eq!((e.code, e.status), ("SignatureNonceUsed", 400));
        verify(&req(VECTOR_B, &[]), secrets, &nonces, T).unwrap();
        let e = verify(&req(VECTOR_B, &[]), secrets, &nonces, T).unwrap_err();
        assert_eq!(e.code, "SignatureNonceUsed");
    }

    #[test]
    fn a_timestamp_past_fifteen_minutes_is_refused_and_within_it_accepted() {
        let window = CLOCK_WINDOW_SECS;
        verify(
            &req(VECTOR_B, &[]),
            secrets,
            &NonceCache::default(),
            T - window,
        )
        .unwrap();
        for now in [T + window + 1, T - window - 1] {
            let e = verify(&req(VECTOR_B, &[]), secrets, &NonceCache::default(), now).unwrap_err();
            assert_eq!((e.code, e.status), ("InvalidTimeStamp.Expired", 400));
        }
    }

    #[test]
    fn a_wrong_secret_or_unknown_key_id_is_refused_with_alibabas_codes() {
        let (query, headers) = vector_a();
        let wrong = |_: &str| Some(SecretKey::new("not-the-secret"));
        for r in [req(&query, &headers), req(VECTOR_B, &[])] {
            let e = verify(&r, wrong, &NonceCache::default(), T).unwrap_err();
            assert_eq!((e.code, e.status), ("SignatureDoesNotMatch", 400));
            assert!(e.message.contains(':') && !e.message.contains("not-the-secret"));
            let e = verify(&r, |_: &str| None, &NonceCache::default(), T).unwrap_err();
            assert_eq!((e.code, e.status), ("InvalidAccessKeyId.NotFound", 404));
        }
    }

    #[test]
    fn a_forged_request_does_not_burn_the_nonce() {
        let nonces = NonceCache::default();
        let tampered = VECTOR_B.replace("RSA_2048", "RSA_3072");
        let e = verify(&req(&tampered, &[]), secrets, &nonces, T).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        verify(&req(VECTOR_B, &[]), secrets, &nonces, T).unwrap();
    }

    #[test]
    fn acs3_must_sign_the_common_headers_and_the_body_hash() {
        let (query, mut headers) = vector_a();
        let auth = &mut headers.last_mut().unwrap().1;
        *auth = auth.replace("x-acs-signature-nonce;", "");
        let e = verify(&req(&query, &headers), secrets, &NonceCache::default(), T).unwrap_err();
        assert_eq!(e.code, "IncompleteSignature");
        let (query, headers) = vector_a();
        let mut r = req(&query, &headers);
        r.body = b"x";
        let e = verify(&r, secrets, &NonceCache::default(), T).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn only_alibaba_shaped_requests_are_claimed() {
        let tc = h(&[
            ("Authorization", "TC3-HMAC-SHA256 Credential=x"),
            ("X-TC-Action", "Encrypt"),
        ]);
        assert!(claimed_scheme(&req("", &tc)).is_none());
        let bare = h(&[("x-acs-action", "Encrypt")]);
        let e = claimed_scheme(&req("", &bare)).unwrap().unwrap_err();
        assert_eq!((e.code, e.status), ("IncompleteSignature", 400));
        assert!(
            claimed_scheme(&req("Version=2016-01-20&Action=Encrypt", &[]))
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn auth_errors_never_show_the_secret() {
        let e = AuthError::mismatch("POST&%2F&a%3Db");
        assert!(!format!("{e} {e:?}").contains(SK));
    }
}

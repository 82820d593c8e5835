//! TC3-HMAC-SHA256, the Tencent Cloud API 3.0 request signature: signing (the client)
//! and verification (the server).
//!
//! ```text
//! CanonicalRequest = Method \n "/" \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n hex(SHA256(body))
//! StringToSign     = "TC3-HMAC-SHA256" \n Timestamp \n Date/Service/tc3_request \n hex(SHA256(CanonicalRequest))
//! kDate = HMAC("TC3"‖SecretKey, Date); kService = HMAC(kDate, Service); kSigning = HMAC(kService, "tc3_request")
//! Signature = hex(HMAC(kSigning, StringToSign))
//! ```
//!
//! Canonical headers are `name:lowercase(trim(value))\n` for each name of SignedHeaders, in
//! that order. The value is taken raw: tccli with `--endpoint http://…` sends and signs
//! `Host: http://127.0.0.1:PORT`, and that is what is verified. The payload hash is of
//! the raw body bytes, or of the literal `UNSIGNED-PAYLOAD` when the request's
//! `X-TC-Content-SHA256` header says so.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{ErrorCode, KmsError, KmsResult};

/// The algorithm name, first word of the `Authorization` header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// The service name in the credential scope.
pub const SERVICE: &str = "kms";
/// How far a request's `X-TC-Timestamp` may be from the server clock, in seconds.
pub const CLOCK_WINDOW_SECS: i64 = 300;
/// The `X-TC-Content-SHA256` value that leaves the body out of the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// A SecretKey: zeroized on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<String>);

impl SecretKey {
    /// Wraps a SecretKey.
    pub fn new(key: impl Into<String>) -> Self {
        SecretKey(Zeroizing::new(key.into()))
    }

    /// The key itself. **MUST NOT** be logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The String moves into the Zeroizing wrapper without a copy.
        String::deserialize(d).map(SecretKey::new)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

pub(super) fn hmac_sha256(key: &[u8], msg: &[u8]) -> Zeroizing<[u8; 32]> {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_ref());
    out
}

/// hex(SHA-256(data)), lowercase.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The clock as X-TC-Timestamp carries it: Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The UTC date `YYYY-MM-DD` of a Unix timestamp, as the credential scope carries it.
pub fn utc_date(timestamp: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = timestamp.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The canonical request of step 2: `headers` are `(name, value)` pairs in SignedHeaders order.
pub fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let mut canonical_headers = String::new();
    for (name, value) in headers {
        canonical_headers.push_str(&name.to_ascii_lowercase());
        canonical_headers.push(':');
        canonical_headers.push_str(&value.trim().to_lowercase());
        canonical_headers.push('\n');
    }
    let signed: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{}\n{payload_hash}",
        signed.join(";")
    )
}

/// The string to sign of step 3.
pub fn string_to_sign(timestamp: i64, date: &str, service: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

/// The signature of step 4, lowercase hex.
pub fn signature(
    secret_key: &SecretKey,
    date: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    let k_secret = Zeroizing::new(format!("TC3{}", secret_key.expose()));
    let k_date = hmac_sha256(k_secret.as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&*k_date, service.as_bytes());
    let k_signing = hmac_sha256(&*k_service, b"tc3_request");
    hex(&*hmac_sha256(&*k_signing, string_to_sign.as_bytes()))
}

/// A parsed `Authorization: TC3-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The SecretId of the credential.
    pub secret_id: String,
    /// The credential scope's date, `YYYY-MM-DD`.
    pub date: String,
    /// The credential scope's service.
    pub service: String,
    /// The signed header names, lowercase, in order.
    pub signed_headers: Vec<String>,
    /// The signature, lowercase hex.
    pub signature: String,
}

fn invalid_authorization(why: &str) -> KmsError {
    KmsError::new(
        ErrorCode::AuthInvalidAuthorization,
        format!("the Authorization header is not valid TC3-HMAC-SHA256: {why}"),
    )
}

impl Authorization {
    /// Parses the header value.
    ///
    /// # Errors
    /// `AuthFailure.InvalidAuthorization` when it is not a well-formed TC3 header.
    pub fn parse(header: &str) -> KmsResult<Authorization> {
        let rest = header
            .trim()
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| invalid_authorization("it does not start with TC3-HMAC-SHA256"))?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| invalid_authorization("a part has no '='"))?;
            let slot = match name.trim() {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(invalid_authorization("unknown part")),
            };
            if slot.replace(value.trim()).is_some() {
                return Err(invalid_authorization("a part appears twice"));
            }
        }
        let credential = credential.ok_or_else(|| invalid_authorization("no Credential"))?;
        let signed_headers =
            signed_headers.ok_or_else(|| invalid_authorization("no SignedHeaders"))?;
        let signature = signature.ok_or_else(|| invalid_authorization("no Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [secret_id, date, service, "tc3_request"] = scope[..] else {
            return Err(invalid_authorization(
                "Credential is not SecretId/Date/Service/tc3_request",
            ));
        };
        if secret_id.is_empty() || date.len() != 10 || service.is_empty() {
            return Err(invalid_authorization("Credential has an empty or bad part"));
        }
        let signed_headers: Vec<String> = signed_headers
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if signed_headers.iter().any(String::is_empty) {
            return Err(invalid_authorization("SignedHeaders has an empty name"));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid_authorization("Signature is not 64 hex digits"));
        }
        Ok(Authorization {
            secret_id: secret_id.to_owned(),
            date: date.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!(
            "{ALGORITHM} Credential={}/{}/{}/tc3_request, SignedHeaders={}, Signature={}",
            self.secret_id,
            self.date,
            self.service,
            self.signed_headers.join(";"),
            self.signature
        )
    }
}

/// What the server knows about a request when it verifies its signature.
pub struct IncomingRequest<'a> {
    /// `POST` or `GET`.
    pub method: &'a str,
    /// The request path (`/`).
    pub uri: &'a str,
    /// The raw query string (empty for POST).
    pub query: &'a str,
    /// The raw body bytes.
    pub body: &'a [u8],
    /// Looks a header up by lowercase name; `None` when absent or not visible ASCII.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

/// A request whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The principal's SecretId.
    pub secret_id: String,
    /// The request timestamp.
    pub timestamp: i64,
    /// The signature (lowercase hex).
    pub signature: String,
    /// Whether the signature covers `X-TC-Action` (then it cannot be replayed as another action).
    pub action_signed: bool,
}

/// Verifies a request's TC3 signature.
///
/// `lookup` gives the SecretKey of a SecretId; `now` is the server clock (Unix seconds).
///
/// # Errors
/// `AuthFailure.InvalidAuthorization` (no or malformed header, no timestamp),
/// `AuthFailure.SignatureExpire` (timestamp more than [`CLOCK_WINDOW_SECS`] off `now`),
/// `AuthFailure.SecretIdNotFound`, `AuthFailure.SignatureFailure` (mismatch, wrong scope).
pub fn verify(
    req: &IncomingRequest<'_>,
    lookup: &dyn Fn(&str) -> Option<SecretKey>,
    now: i64,
) -> KmsResult<Verified> {
    let header = (req.header)("authorization")
        .ok_or_else(|| invalid_authorization("the header is missing"))?;
    let auth = Authorization::parse(&header)?;
    let timestamp: i64 = (req.header)("x-tc-timestamp")
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| {
            KmsError::new(
                ErrorCode::AuthInvalidAuthorization,
                "X-TC-Timestamp is missing or not an integer",
            )
        })?;
    if (now - timestamp).abs() > CLOCK_WINDOW_SECS {
        return Err(KmsError::new(
            ErrorCode::AuthSignatureExpire,
            format!(
                "the request timestamp {timestamp} is more than {CLOCK_WINDOW_SECS} s from the server time {now}"
            ),
        ));
    }
    let secret_key = lookup(&auth.secret_id).ok_or_else(|| {
        KmsError::new(
            ErrorCode::AuthSecretIdNotFound,
            format!("no principal has the SecretId {}", auth.secret_id),
        )
    })?;
    let failure = |why: &str| KmsError::new(ErrorCode::AuthSignatureFailure, why.to_owned());
    if auth.date != utc_date(timestamp) {
        return Err(failure(
            "the credential date is not the UTC date of X-TC-Timestamp",
        ));
    }
    if auth.service != SERVICE {
        return Err(failure("the credential service is not kms"));
    }
    let mut values = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = (req.header)(name)
            .ok_or_else(|| failure(&format!("the signed header {name} is missing")))?;
        values.push(value);
    }
    let pairs: Vec<(&str, &str)> = auth
        .signed_headers
        .iter()
        .map(String::as_str)
        .zip(values.iter().map(String::as_str))
        .collect();
    let unsigned =
        (req.header)("x-tc-content-sha256").is_some_and(|v| v.trim() == UNSIGNED_PAYLOAD);
    let payload_hash = if unsigned {
        sha256_hex(UNSIGNED_PAYLOAD.as_bytes())
    } else {
        sha256_hex(req.body)
    };
    let canonical = canonical_request(req.method, req.uri, req.query, &pairs, &payload_hash);
    let sts = string_to_sign(timestamp, &auth.date, &auth.service, &canonical);
    let expected = signature(&secret_key, &auth.date, &auth.service, &sts);
    if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Err(failure("the signature does not match the request"));
    }
    Ok(Verified {
        secret_id: auth.secret_id,
        timestamp,
        signature: auth.signature,
        action_signed: auth.signed_headers.iter().any(|h| h == "x-tc-action"),
    })
}

/// What a client signs: a POST of a JSON body to `/`.
pub struct OutgoingRequest<'a> {
    /// The `Host` header value exactly as sent.
    pub host: &'a str,
    /// The `Content-Type` header value exactly as sent.
    pub content_type: &'a str,
    /// The `X-TC-Action` header value.
    pub action: &'a str,
    /// The body bytes.
    pub body: &'a [u8],
    /// `X-TC-Timestamp`.
    pub timestamp: i64,
}

/// Signs a POST the way the SDKs that cover the action do: `content-type;host;x-tc-action`.
/// Returns the `Authorization` header value.
pub fn sign_post(secret_id: &str, secret_key: &SecretKey, req: &OutgoingRequest<'_>) -> String {
    let headers = [
        ("content-type", req.content_type),
        ("host", req.host),
        ("x-tc-action", req.action),
    ];
    let date = utc_date(req.timestamp);
    let canonical = canonical_request("POST", "/", "", &headers, &sha256_hex(req.body));
    let sts = string_to_sign(req.timestamp, &date, SERVICE, &canonical);
    Authorization {
        secret_id: secret_id.to_owned(),
        date: date.clone(),
        service: SERVICE.to_owned(),
        signed_headers: headers.iter().map(|(n, _)| (*n).to_owned()).collect(),
        signature: signature(secret_key, &date, SERVICE, &sts),
    }
    .to_header()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_551_113_065), "2019-02-25");
        assert_eq!(utc_date(1_795_439_559), "2026-11-23");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(951_868_799), "2000-02-29");
        assert_eq!(utc_date(951_868_800), "2000-03-01");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    /// The worked example of the Tencent Cloud API 3.0 signature documentation
    /// (CVM DescribeInstances, 2019-02-25), which every SDK reproduces.
    #[test]
    fn tencent_documentation_example() {
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let canonical = canonical_request(
            "POST",
            "/",
            "",
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("host", "cvm.tencentcloudapi.com"),
            ],
            &sha256_hex(body),
        );
        assert_eq!(
            sha256_hex(body),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let sts = string_to_sign(1_551_113_065, "2019-02-25", "cvm", &canonical);
        assert_eq!(
            sts,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        let sig = signature(
            &SecretKey::new("Gu5t9xGARNpq86cd98joQYCN3*******"),
            "2019-02-25",
            "cvm",
            &sts,
        );
        assert_eq!(
            sig,
            "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"
        );
    }

    /// A request as tccli sends it with `--endpoint http://127.0.0.1:18443` (the scheme in
    /// the Host value); the signature was computed with the SDK's own `Sign.sign_tc3`
    /// (tencentcloud-sdk-python 3.1.195) over the same canonical request.
    #[test]
    fn python_sdk_vector_with_scheme_in_host() {
        let body = br#"{"KeyId": "X", "KeySpec": "AES_256"}"#;
        let auth = "TC3-HMAC-SHA256 Credential=AKIDtestSecretId/2026-11-23/kms/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=2c86a34b451ff5511956f6ba0981cd783ac738cdb696a5299ee2dfe1f9f95d05"
            .to_owned();
        let h = |n: &str| match n {
            "authorization" => Some(auth.clone()),
            "content-type" => Some("application/json".into()),
            "host" => Some("http://127.0.0.1:18443".into()),
            "x-tc-timestamp" => Some("1795439559".into()),
            _ => None,
        };
        let req = IncomingRequest {
            method: "POST",
            uri: "/",
            query: "",
            body,
            header: &h,
        };
        let v = verify(&req, &lookup, 1_795_439_559).unwrap();
        assert!(!v.action_signed);
        let wrong_key = |_: &str| Some(SecretKey::new("testSecretKey2"));
        assert_eq!(
            verify(&req, &wrong_key, 1_795_439_559).unwrap_err().code,
            ErrorCode::AuthSignatureFailure
        );
    }

    fn lookup(id: &str) -> Option<SecretKey> {
        (id == "AKIDtestSecretId").then(|| SecretKey::new("testSecretKey"))
    }

    struct Req {
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    impl Req {
        fn signed(ts: i64) -> Req {
            let body = br#"{"KeyId": "X"}"#.to_vec();
            let auth = sign_post(
                "AKIDtestSecretId",
                &SecretKey::new("testSecretKey"),
                &OutgoingRequest {
                    host: "http://127.0.0.1:18443",
                    content_type: "application/json",
                    action: "DescribeKey",
                    body: &body,
                    timestamp: ts,
                },
            );
            let mut headers = HashMap::new();
            for (k, v) in [
                ("authorization", auth.as_str()),
                ("host", "http://127.0.0.1:18443"),
                ("content-type", "application/json"),
                ("x-tc-action", "DescribeKey"),
                ("x-tc-timestamp", &ts.to_string()),
            ] {
                headers.insert(k.to_owned(), v.to_owned());
            }
            Req { headers, body }
        }

        fn verify(&self, now: i64) -> KmsResult<Verified> {
            let h = |n: &str| self.headers.get(n).cloned();
            verify(
                &IncomingRequest {
                    method: "POST",
                    uri: "/",
                    query: "",
                    body: &self.body,
                    header: &h,
                },
                &lookup,
                now,
            )
        }
    }

    const NOW: i64 = 1_795_439_559;

    #[test]
    fn signed_request_verifies_and_any_change_fails() {
        let r = Req::signed(NOW);
        let v = r.verify(NOW + 10).unwrap();
        assert_eq!(v.secret_id, "AKIDtestSecretId");
        assert!(v.action_signed);

        let code = |r: &Req, now| r.verify(now).unwrap_err().code;
        let mut t = Req::signed(NOW);
        t.body = br#"{"KeyId": "Y"}"#.to_vec();
        assert_eq!(code(&t, NOW), ErrorCode::AuthSignatureFailure);
        let mut t = Req::signed(NOW);
        t.headers.insert("x-tc-action".into(), "DisableKey".into());
        assert_eq!(code(&t, NOW), ErrorCode::AuthSignatureFailure);
        let mut t = Req::signed(NOW);
        t.headers.insert("host".into(), "127.0.0.1:18443".into());
        assert_eq!(code(&t, NOW), ErrorCode::AuthSignatureFailure);
        assert_eq!(
            code(&Req::signed(NOW - 600), NOW),
            ErrorCode::AuthSignatureExpire
        );
        assert_eq!(
            code(&Req::signed(NOW + 301), NOW),
            ErrorCode::AuthSignatureExpire
        );
        assert!(Req::signed(NOW - 300).verify(NOW).is_ok());
        let mut t = Req::signed(NOW);
        let a = t.headers["authorization"].replace("AKIDtestSecretId", "AKIDother");
        t.headers.insert("authorization".into(), a);
        assert_eq!(code(&t, NOW), ErrorCode::AuthSecretIdNotFound);
        let mut t = Req::signed(NOW);
        t.headers.remove("authorization");
        assert_eq!(code(&t, NOW), ErrorCode::AuthInvalidAuthorization);
        let mut t = Req::signed(NOW);
        t.headers.remove("x-tc-action");
        assert_eq!(code(&t, NOW), ErrorCode::AuthSignatureFailure);
    }

    #[test]
    fn unsigned_payload_leaves_the_body_out() {
        let ts = NOW;
        let date = utc_date(ts);
        let headers = [("content-type", "application/json"), ("host", "h")];
        let canonical = canonical_request(
            "POST",
            "/",
            "",
            &headers,
            &sha256_hex(UNSIGNED_PAYLOAD.as_bytes()),
        );
        let sts = string_to_sign(ts, &date, SERVICE, &canonical);
        let sig = signature(&SecretKey::new("testSecretKey"), &date, SERVICE, &sts);
        let auth = format!(
            "TC3-HMAC-SHA256 Credential=AKIDtestSecretId/{date}/kms/tc3_request, SignedHeaders=content-type;host, Signature={sig}"
        );
        let h = |n: &str| match n {
            "authorization" => Some(auth.clone()),
            "content-type" => Some("application/json".into()),
            "host" => Some("h".into()),
            "x-tc-timestamp" => Some(ts.to_string()),
            "x-tc-content-sha256" => Some(UNSIGNED_PAYLOAD.into()),
            _ => None,
        };
        let req = IncomingRequest {
            method: "POST",
            uri: "/",
            query: "",
            body: b"anything at all",
            header: &h,
        };
        let v = verify(&req, &lookup, ts).unwrap();
        assert!(!v.action_signed);
    }

    #[test]
    fn authorization_parse_rejects_garbage() {
        for bad in [
            "",
            "Basic abc",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/kms/tc3_request, SignedHeaders=host",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/kms, SignedHeaders=host, Signature=00",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/kms/tc3_request, SignedHeaders=host, Signature=zz",
        ] {
            assert_eq!(
                Authorization::parse(bad).unwrap_err().code,
                ErrorCode::AuthInvalidAuthorization,
                "{bad}"
            );
        }
        let sig = "a".repeat(64);
        let a = Authorization::parse(&format!(
            "TC3-HMAC-SHA256 Credential=AKID/2026-11-23/kms/tc3_request, SignedHeaders=content-type;host, Signature={sig}"
        ))
        .unwrap();
        assert_eq!(a.signed_headers, ["content-type", "host"]);
        assert_eq!(Authorization::parse(&a.to_header()).unwrap(), a);
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let k = SecretKey::new("hunter2");
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}

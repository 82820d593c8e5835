//! The KMS server's request decoder: `server::decode` (action, version, method, TC3
//! signature), `server::decode_params` (JSON body or query string) and
//! `tc3::Authorization::parse`, with no socket and a fixed clock.
//!
//! Input: one mode byte, then fields separated by `\n`.
//! - Even mode, a raw request: `METHOD\nPATH[?QUERY]\n(NAME: VALUE\n)*\nBODY`. Headers
//!   that `http` rejects are left out.
//! - Odd mode, a signed request: `ACTION\nHOST\nCONTENT-TYPE\nBODY`, signed the way
//!   the SDKs sign (`tc3::sign_post`) with a known principal: when every field is
//!   well formed, the signature must verify.
//!
//! Any `Authorization` that parses must print back to an equal value.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use kms_core::http::server::{self, RequestParts};
use kms_core::http::tc3::{self, Authorization, OutgoingRequest, SecretKey};
use kms_core::http::API_VERSION;
use libfuzzer_sys::fuzz_target;

const SECRET_ID: &str = "AKIDfuzz";
/// The X-TC-Timestamp of the recorded tccli request in the seed corpus.
const NOW: i64 = 1_795_458_388;

fn lookup(id: &str) -> Option<SecretKey> {
    (id == SECRET_ID).then(|| SecretKey::new("fuzz-secret-key"))
}

/// Decodes one request as the server does; checks the Authorization round trip.
fn decode(method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Ok(a) = Authorization::parse(auth) {
            let again = Authorization::parse(&a.to_header()).expect("a printed header parses");
            assert_eq!(a.secret_id, again.secret_id);
            assert_eq!(a.date, again.date);
            assert_eq!(a.service, again.service);
            assert_eq!(a.signed_headers, again.signed_headers);
            assert_eq!(a.signature, again.signature);
        }
    }
    let parts = RequestParts {
        method,
        path,
        query,
        headers,
        body,
    };
    let _ = server::decode(&parts, &lookup, NOW);
    let _ = server::decode_params(method, query, body);
}

fn raw(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else {
        return;
    };
    let Some(Ok(target)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let body: Vec<u8> = lines.collect::<Vec<_>>().join(&b'\n');
    decode(&method, path, query, &headers, &body);
}

/// A header value the signer and the server both see exactly: printable ASCII,
/// no surrounding blanks.
fn plain(v: &str) -> bool {
    v.bytes().all(|b| (0x20..0x7f).contains(&b)) && v.trim() == v
}

fn signed(data: &[u8]) {
    let mut fields = data.splitn(4, |&b| b == b'\n');
    let (Some(action), Some(host), Some(content_type)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    let body = fields.next().unwrap_or_default();
    let (Ok(action), Ok(host), Ok(content_type)) = (
        std::str::from_utf8(action),
        std::str::from_utf8(host),
        std::str::from_utf8(content_type),
    ) else {
        return;
    };
    let key = lookup(SECRET_ID).expect("the fuzz principal");
    let auth = tc3::sign_post(
        SECRET_ID,
        &key,
        &OutgoingRequest {
            host,
            content_type,
            action,
            body,
            timestamp: NOW,
        },
    );
    let mut headers = HeaderMap::new();
    let ts = NOW.to_string();
    for (name, value) in [
        ("host", host),
        ("content-type", content_type),
        ("x-tc-action", action),
        ("x-tc-version", API_VERSION),
        ("x-tc-timestamp", ts.as_str()),
        ("authorization", auth.as_str()),
    ] {
        let Ok(v) = HeaderValue::from_str(value) else {
            return;
        };
        headers.insert(HeaderName::from_static(name), v);
    }
    let parts = RequestParts {
        method: &Method::POST,
        path: "/",
        query: "",
        headers: &headers,
        body,
    };
    let r = server::decode(&parts, &lookup, NOW);
    let action_ok = !action.is_empty()
        && action.len() <= 64
        && action.bytes().all(|b| b.is_ascii_alphanumeric());
    if action_ok && plain(host) && plain(content_type) {
        let (a, v) = r.expect("a well-formed signed request verifies");
        assert_eq!(a, action);
        assert_eq!(v.secret_id, SECRET_ID);
        assert!(v.action_signed);
    }
    decode(&Method::POST, "/", "", &headers, body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        signed(rest);
    }
});

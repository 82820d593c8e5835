//! The server and the client over real HTTP on 127.0.0.1, in front of a small fake KMS
//! (the real service is tested the same way from tests/kms_http*.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{RemoteConfig, RemoteKms, RetryPolicy};
use super::principals::Principals;
use super::server::{RunningServer, Server, ServerConfig};
use super::tc3::{self, SecretKey};
use crate::{CallContext, ErrorCode, Kms, KmsError, KmsResult};

/// Knows CreateKey, DescribeKey and Decrypt (which names key "k-other" in its answer).
#[derive(Default)]
struct FakeKms {
    calls: AtomicUsize,
}

impl Kms for FakeKms {
    fn call(&self, ctx: &CallContext, action: &str, params: &Value) -> KmsResult<Value> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match action {
            "CreateKey" => Ok(json!({"KeyId": "k1", "Alias": params.get("Alias")})),
            "DescribeKey" => {
                Ok(json!({"KeyMetadata": {"KeyId": params["KeyId"], "Owner": ctx.principal}}))
            }
            "Decrypt" => Ok(json!({"KeyId": "k-other", "Plaintext": "aGk="})),
            "Slow" => {
                std::thread::sleep(Duration::from_millis(300));
                Ok(json!({}))
            }
            _ => Err(KmsError::new(
                ErrorCode::InvalidAction,
                format!("no action {action}"),
            )),
        }
    }
}

const CONFIG: &str = r#"
[[principal]]
secret_id = "AKIDadmin"
secret_key = "adminkey"

[[principal]]
secret_id = "AKIDreader"
secret_key = "readerkey"
actions = ["Describe*", "Decrypt"]
keys = ["k1"]

[[principal]]
secret_id = "AKIDapp"
secret_key = "appkey"
keys = ["alias/app-*"]

[[principal]]
secret_id = "AKIDstrict"
secret_key = "strictkey"
require_signed_action = true

[[principal]]
secret_id = "AKIDslow"
secret_key = "slowkey"
rate = 2.0
burst = 2
"#;

fn start() -> (RunningServer, Arc<FakeKms>) {
    let kms = Arc::new(FakeKms::default());
    let principals = Principals::from_toml(CONFIG).unwrap();
    let server = Server::bind(
        kms.clone(),
        ServerConfig::new("127.0.0.1:0".parse().unwrap(), principals),
    )
    .unwrap();
    (server.spawn(), kms)
}

/// A raw request signed like the Python SDK (content-type;host), with knobs to break it.
struct Raw<'a> {
    action: &'a str,
    version: &'a str,
    body: &'a str,
    secret_id: &'a str,
    secret_key: &'a str,
    timestamp: i64,
    tamper_signature: bool,
    /// Sign `x-tc-action` too (as kmsfs's client does), for this action.
    sign_action: Option<&'a str>,
}

impl<'a> Raw<'a> {
    fn new(action: &'a str, body: &'a str) -> Raw<'a> {
        Raw {
            action,
            version: "2019-01-18",
            body,
            secret_id: "AKIDadmin",
            secret_key: "adminkey",
            timestamp: tc3::unix_now(),
            tamper_signature: false,
            sign_action: None,
        }
    }

    /// The Authorization header value.
    fn authorization(&self, host: &str) -> String {
        let date = tc3::utc_date(self.timestamp);
        let mut headers = vec![("content-type", "application/json"), ("host", host)];
        let lower;
        if let Some(a) = self.sign_action {
            lower = a.to_lowercase();
            headers.push(("x-tc-action", &lower));
        }
        let signed = if self.sign_action.is_some() {
            "content-type;host;x-tc-action"
        } else {
            "content-type;host"
        };
        let canonical = tc3::canonical_request(
            "POST",
            "/",
            "",
            &headers,
            &tc3::sha256_hex(self.body.as_bytes()),
        );
        let sts = tc3::string_to_sign(self.timestamp, &date, "kms", &canonical);
        let mut sig = tc3::signature(&SecretKey::new(self.secret_key), &date, "kms", &sts);
        if self.tamper_signature {
            sig = sig.replace(|c: char| c != '0', "0");
        }
        format!(
            "TC3-HMAC-SHA256 Credential={}/{date}/kms/tc3_request, SignedHeaders={signed}, Signature={sig}",
            self.secret_id
        )
    }

    fn send_with(&self, server: &RunningServer, authorization: &str) -> (String, Value) {
        let host = server.local_addr().to_string();
        let mut resp = ureq::post(server.url())
            .header("Content-Type", "application/json")
            .header("X-TC-Action", self.action)
            .header("X-TC-Version", self.version)
            .header("X-TC-Timestamp", self.timestamp.to_string())
            .header("Authorization", authorization)
            .header("Host", &host)
            .send(self.body.as_bytes())
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let v: Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        (ct, v)
    }

    fn send(&self, server: &RunningServer) -> Value {
        let auth = self.authorization(&server.local_addr().to_string());
        let (ct, v) = self.send_with(server, &auth);
        assert_eq!(ct, "application/json");
        assert!(
            v["Response"]["RequestId"]
                .as_str()
                .is_some_and(|r| r.len() == 36),
            "{v}"
        );
        v
    }
}

fn code(v: &Value) -> &str {
    v["Response"]["Error"]["Code"]
        .as_str()
        .unwrap_or("(no error)")
}

#[test]
fn exact_error_codes_over_http() {
    let (server, kms) = start();
    let ok = Raw::new("DescribeKey", r#"{"KeyId": "k1"}"#).send(&server);
    assert_eq!(ok["Response"]["KeyMetadata"]["Owner"], "AKIDadmin", "{ok}");

    let mut r = Raw::new("DescribeKey", r#"{"KeyId": "k1"}"#);
    r.tamper_signature = true;
    assert_eq!(code(&r.send(&server)), "AuthFailure.SignatureFailure");

    let mut r = Raw::new("DescribeKey", r#"{"KeyId": "k1"}"#);
    r.secret_key = "wrong";
    assert_eq!(code(&r.send(&server)), "AuthFailure.SignatureFailure");

    let mut r = Raw::new("DescribeKey", r#"{"KeyId": "k1"}"#);
    r.timestamp -= 600;
    assert_eq!(code(&r.send(&server)), "AuthFailure.SignatureExpire");

    let mut r = Raw::new("DescribeKey", r#"{"KeyId": "k1"}"#);
    r.secret_id = "AKIDnobody";
    assert_eq!(code(&r.send(&server)), "AuthFailure.SecretIdNotFound");

    let mut r = Raw::new("DescribeKey", r#"{"KeyId": "k1"}"#);
    r.version = "2017-03-12";
    assert_eq!(code(&r.send(&server)), "NoSuchVersion");

    for (action, body, expected) in [
        ("NoSuchThing", "{}", "InvalidAction"),
        // Not an action name at all (and never logged as given).
        ("Describe principal=AKIDadmin", "{}", "InvalidAction"),
        ("DescribeKey", "{not json", "InvalidParameter"),
        ("DescribeKey", "[]", "InvalidParameter"),
    ] {
        assert_eq!(
            code(&Raw::new(action, body).send(&server)),
            expected,
            "{action} {body}"
        );
    }

    // The reader may describe k1 but not k2, and may not create keys.
    let reader = |action, body| {
        let mut r = Raw::new(action, body);
        r.secret_id = "AKIDreader";
        r.secret_key = "readerkey";
        r.send(&server)
    };
    assert_eq!(
        code(&reader("DescribeKey", r#"{"KeyId": "k1"}"#)),
        "(no error)"
    );
    assert_eq!(
        code(&reader("DescribeKey", r#"{"KeyId": "k2"}"#)),
        "UnauthorizedOperation"
    );
    assert_eq!(
        code(&reader("CreateKey", r#"{"Alias": "x"}"#)),
        "UnauthorizedOperation"
    );
    // Decrypt names its key only in the answer: k-other is not the reader's.
    let before = kms.calls.load(Ordering::SeqCst);
    let d = reader("Decrypt", r#"{"CiphertextBlob": "AAAA"}"#);
    assert_eq!(code(&d), "UnauthorizedOperation");
    assert!(d["Response"].get("Plaintext").is_none(), "{d}");
    assert_eq!(kms.calls.load(Ordering::SeqCst), before + 1);

    // A principal limited to alias/app-* may create app-1 but not other-1.
    let app = |action, body| {
        let mut r = Raw::new(action, body);
        r.secret_id = "AKIDapp";
        r.secret_key = "appkey";
        r.send(&server)
    };
    let before = kms.calls.load(Ordering::SeqCst);
    assert_eq!(
        code(&app("CreateKey", r#"{"Alias": "app-1"}"#)),
        "(no error)"
    );
    assert_eq!(
        code(&app("CreateKey", r#"{"Alias": "other-1"}"#)),
        "UnauthorizedOperation"
    );
    assert_eq!(kms.calls.load(Ordering::SeqCst), before + 1);

    // Malformed Authorization.
    let r = Raw::new("DescribeKey", "{}");
    let (_, v) = r.send_with(&server, "TC3-HMAC-SHA256 nonsense");
    assert_eq!(code(&v), "AuthFailure.InvalidAuthorization");
}

/// As the real service: a correctly signed request inside its window is served, even when
/// the same signature served another action (tccli signs only content-type;host, so a
/// script's DisableKey then EnableKey in one second carry one signature). A principal
/// marked `require_signed_action` must sign x-tc-action: its unsigned requests are
/// refused, and its signed ones cannot be replayed as another action.
#[test]
fn one_signature_serves_two_actions_unless_the_principal_signs_the_action() {
    let (server, kms) = start();
    let host = server.local_addr().to_string();
    let body = r#"{"KeyId": "k1"}"#;
    // (The fake KMS behind knows DescribeKey and Decrypt; tests/kms_http_clients.rs runs
    // tccli's DisableKey then EnableKey against the real one.)
    let first = Raw::new("DescribeKey", body);
    let auth = first.authorization(&host);
    let (_, v) = first.send_with(&server, &auth);
    assert_eq!(code(&v), "(no error)");
    let before = kms.calls.load(Ordering::SeqCst);
    let mut second = Raw::new("Decrypt", body);
    second.timestamp = first.timestamp;
    let (_, v) = second.send_with(&server, &auth);
    assert_eq!(code(&v), "(no error)", "{v}");
    assert_eq!(kms.calls.load(Ordering::SeqCst), before + 1);

    // The strict principal: signing the action works ...
    let mut describe = Raw::new("DescribeKey", body);
    describe.secret_id = "AKIDstrict";
    describe.secret_key = "strictkey";
    describe.sign_action = Some("DescribeKey");
    let signed = describe.authorization(&host);
    let (_, v) = describe.send_with(&server, &signed);
    assert_eq!(code(&v), "(no error)", "{v}");
    // ... its capture replayed as DisableKey fails the signature ...
    let mut replay = Raw::new("DisableKey", body);
    replay.secret_id = "AKIDstrict";
    replay.timestamp = describe.timestamp;
    let before = kms.calls.load(Ordering::SeqCst);
    let (_, v) = replay.send_with(&server, &signed);
    assert_eq!(code(&v), "AuthFailure.SignatureFailure", "{v}");
    // ... and a request that does not sign the action is refused, saying why.
    describe.sign_action = None;
    let unsigned = describe.authorization(&host);
    let (_, v) = describe.send_with(&server, &unsigned);
    assert_eq!(code(&v), "AuthFailure.SignatureFailure", "{v}");
    assert!(v["Response"]["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("x-tc-action"));
    assert_eq!(
        kms.calls.load(Ordering::SeqCst),
        before,
        "a refused request reached the KMS"
    );
}

#[test]
fn health_content_type_and_body_limit() {
    let (server, _kms) = start();
    let mut resp = ureq::get(format!("{}/healthz", server.url()))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.body_mut().read_to_string().unwrap(),
        r#"{"Status":"ok"}"#
    );
    let big = format!(r#"{{"KeyId": "{}"}}"#, "x".repeat(300 * 1024));
    let mut resp = ureq::post(server.url())
        .header("X-TC-Action", "DescribeKey")
        .send(big.as_bytes())
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
    assert_eq!(code(&v), "InvalidParameter", "{v}");
}

fn remote(server: &RunningServer, id: &str, key: &str) -> RemoteKms {
    let mut cfg = RemoteConfig::new(server.url(), id, SecretKey::new(key));
    cfg.retry = RetryPolicy {
        max_attempts: 30,
        max_elapsed: Duration::from_secs(20),
        base: Duration::from_millis(50),
        cap: Duration::from_millis(500),
    };
    RemoteKms::new(cfg).unwrap()
}

fn ctx() -> CallContext {
    CallContext {
        principal: String::new(),
        request_id: String::new(),
    }
}

#[test]
fn remote_kms_round_trip_and_errors() {
    let (server, _kms) = start();
    let kms = remote(&server, "AKIDadmin", "adminkey");
    let v = kms
        .call(&ctx(), "DescribeKey", &json!({"KeyId": "k1"}))
        .unwrap();
    assert_eq!(
        v,
        json!({"KeyMetadata": {"KeyId": "k1", "Owner": "AKIDadmin"}})
    );
    let e = kms.call(&ctx(), "Nope", &json!({})).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidAction);
    let bad = remote(&server, "AKIDadmin", "wrong");
    let e = bad.call(&ctx(), "DescribeKey", &json!({})).unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthSignatureFailure);
}

#[test]
fn a_slow_call_does_not_block_others() {
    let (server, _kms) = start();
    let kms = Arc::new(remote(&server, "AKIDadmin", "adminkey"));
    let k = kms.clone();
    let slow = std::thread::spawn(move || k.call(&ctx(), "Slow", &json!({})));
    std::thread::sleep(Duration::from_millis(50));
    let t = std::time::Instant::now();
    kms.call(&ctx(), "DescribeKey", &json!({"KeyId": "k1"}))
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    slow.join().unwrap().unwrap();
}

#[test]
fn rate_limited_clients_all_complete_through_backoff() {
    let (server, kms) = start();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let c = remote(&server, "AKIDslow", "slowkey");
            std::thread::spawn(move || {
                for _ in 0..3 {
                    c.call(&ctx(), "DescribeKey", &json!({"KeyId": "k1"}))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // 9 requests at 2/s with a burst of 2: throttled ones never reach the KMS.
    assert_eq!(kms.calls.load(Ordering::SeqCst), 9);
}

//! [`RemoteKms`] speaking the Alibaba Cloud KMS API (2016-01-20) to an
//! `aliyun+http(s)://` endpoint: each call is a `POST /` with its parameters in the
//! query string, signed with ACS3-HMAC-SHA256 (ALIYUN-KMS-API.md §2), and answered by
//! a flat JSON object or a flat error with a 4xx/5xx status.
//!
//! The calls a volume makes (CreateKey, GenerateDataKey, Decrypt, Encrypt, DescribeKey,
//! EnableKey, DisableKey) carry the same parameter names in both APIs, so the Tencent
//! JSON parameters [`crate::Kms::call`] receives go over as they are, each value as
//! text; the response's fields are the ones a volume reads (`KeyId`, `Plaintext`,
//! `CiphertextBlob`, `KeyMetadata.KeyId`). Alibaba's error codes are read back into the
//! core's, so a disabled key is `ResourceUnavailable.CmkDisabled` (EACCES at the mount)
//! whichever API said it, and throttling and server faults are retried as for Tencent.

use std::time::Duration;

use serde_json::Value;

use super::acs::{self, API_VERSION};
use super::client::{read_body, RemoteKms};
use crate::{crypto, ErrorCode, KmsError, KmsResult};

/// The largest response read.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// The query parameters of a call: each JSON value as the text Alibaba expects.
fn query_params(params: &Value) -> Vec<(String, String)> {
    let Value::Object(m) = params else {
        return Vec::new();
    };
    m.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// One signed exchange; `Err((message, retryable))` for a transport failure.
pub(crate) fn attempt(
    kms: &RemoteKms,
    action: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<KmsResult<Value>, (String, bool)> {
    let params: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut query = query_params(&params);
    query.sort();
    let query_string = query
        .iter()
        .map(|(k, v)| format!("{}={}", acs::pct(k), acs::pct(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut nonce = [0u8; 16];
    if crypto::random_bytes(&mut nonce).is_err() {
        return Ok(Err(KmsError::new(
            ErrorCode::InternalError,
            "the system random number generator failed",
        )));
    }
    let date = {
        let t =
            crate::clock::rfc3339_millis(u64::try_from(super::tc3::unix_now()).unwrap_or(0) * 1000);
        format!("{}Z", &t[..19.min(t.len())])
    };
    let payload_hash = crypto::hex(&crypto::sha256(b""));
    let headers: Vec<(String, String)> = vec![
        ("host".into(), kms.host.clone()),
        ("x-acs-action".into(), action.to_owned()),
        ("x-acs-content-sha256".into(), payload_hash.clone()),
        ("x-acs-date".into(), date),
        ("x-acs-signature-nonce".into(), crypto::hex(&nonce)),
        ("x-acs-version".into(), API_VERSION.to_owned()),
    ];
    let signed: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
    let canonical =
        acs::acs3_canonical_request("POST", "/", &query, &headers, &signed, &payload_hash);
    let (id, secret) = kms.secret();
    let signature = acs::acs3_signature(secret, &acs::acs3_string_to_sign(&canonical));
    let authorization = format!(
        "{} Credential={id},SignedHeaders={},Signature={signature}",
        acs::ACS3_ALGORITHM,
        signed.join(";")
    );
    let url = format!("{}?{query_string}", kms.url());
    let mut req = kms
        .agent
        .post(&url)
        .config()
        .timeout_global(Some(timeout))
        .build();
    for (n, v) in &headers {
        req = req.header(n.as_str(), v.as_str());
    }
    req = req.header("Authorization", authorization);
    let mut resp = match req.send_empty() {
        Ok(r) => r,
        Err(e) => return Err((e.to_string(), transport_retryable(&e))),
    };
    let status = resp.status().as_u16();
    let bytes = match read_body(&mut resp, MAX_RESPONSE_BYTES) {
        Ok(b) => b,
        Err(e) => return Err((format!("reading the response: {e}"), true)),
    };
    Ok(parse_response(status, &bytes))
}

fn transport_retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// A flat Alibaba response: the fields without `RequestId`, or the error it carries
/// with its code read into the core's.
fn parse_response(status: u16, bytes: &[u8]) -> KmsResult<Value> {
    let bad = || {
        KmsError::new(
            ErrorCode::InternalError,
            format!(
                "the KMS answered HTTP {status} with a body that is not an Alibaba Cloud response"
            ),
        )
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|_| bad())?;
    let Value::Object(mut fields) = v else {
        return Err(bad());
    };
    if status != 200 {
        let code = fields.get("Code").and_then(Value::as_str).unwrap_or("");
        let message = fields.get("Message").and_then(Value::as_str).unwrap_or("");
        return Err(KmsError::new(core_code(code, status), message));
    }
    fields.remove("RequestId");
    Ok(Value::Object(fields))
}

/// The core code of an Alibaba error code (what the mount and the retry loop act on).
fn core_code(code: &str, status: u16) -> ErrorCode {
    use ErrorCode as C;
    match code {
        "Rejected.Disabled" => C::ResourceUnavailableCmkDisabled,
        "Rejected.PendingDeletion" => C::ResourceUnavailableKeyPendingDelete,
        "Rejected.PendingImport" | "Rejected.StateModifiedFailed" => {
            C::ResourceUnavailableCmkStateNotSupport
        }
        "Forbidden.KeyNotFound" | "Forbidden.AliasNotFound" => C::ResourceUnavailableCmkNotFound,
        "Forbidden.NoPermission" => C::UnauthorizedOperation,
        "InvalidAccessKeyId.NotFound" => C::AuthSecretIdNotFound,
        "SignatureDoesNotMatch" | "IncompleteSignature" | "SignatureNonceUsed" => {
            C::AuthSignatureFailure
        }
        "InvalidTimeStamp.Expired" | "InvalidTimeStamp.Format" => C::AuthSignatureExpire,
        "MissingParameter" => C::MissingParameter,
        "InvalidParameter" => C::InvalidParameterValue,
        "Throttling" | "Throttling.User" => C::RequestLimitExceeded,
        "InvalidApi.NotFound" => C::InvalidAction,
        "Rejected.UnsupportedOperation" => C::UnsupportedOperation,
        _ if status >= 500 => C::InternalError,
        other => C::Other(other.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_back_into_core_codes_and_success_drops_the_request_id() {
        let e = parse_response(
            409,
            br#"{"Code":"Rejected.Disabled","Message":"m","RequestId":"r"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ResourceUnavailableCmkDisabled);
        let e = parse_response(503, br#"{"Code":"ServiceUnavailableTemporary"}"#).unwrap_err();
        assert!(e.code.is_retryable());
        let v = parse_response(200, br#"{"KeyId":"k","RequestId":"r"}"#).unwrap();
        assert_eq!(v, serde_json::json!({"KeyId": "k"}));
        assert!(parse_response(200, b"not json").is_err());
        let mut q =
            query_params(&serde_json::json!({"NumberOfBytes": 32, "KeyId": "k", "X": null}));
        q.sort();
        assert_eq!(
            q,
            vec![
                ("KeyId".into(), "k".into()),
                ("NumberOfBytes".into(), "32".into())
            ]
        );
    }
}

//! Envelope encryption from the caller's side: data keys and encryption contexts.
//!
//! A [`DataKey`] is what GenerateDataKey returns: the plaintext key (zeroized on
//! drop, never shown by `Debug`) and the CiphertextBlob that wraps it under a CMK.
//! An [`EncryptionContext`] is the `EncryptionContext` JSON object of the API,
//! kept as sorted key/value pairs.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::{CallContext, ErrorCode, Kms, KmsError, KmsResult};

/// A data encryption key in plaintext and in its wrapped form.
pub struct DataKey {
    /// The CMK that wraps the key, as the KMS reports it (a key id).
    pub key_id: String,
    /// The key itself. **MUST NOT** be logged or written anywhere.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The wrapped key, raw bytes (the API carries it base64-encoded).
    pub ciphertext_blob: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("plaintext_len", &self.plaintext.len())
            .finish_non_exhaustive()
    }
}

/// The `EncryptionContext` of an API call: string keys to string values.
///
/// The API carries it as a JSON object serialised into a string parameter.
/// Ordering is irrelevant: `{"a":"1","b":"2"}` and `{"b":"2","a":"1"}` are the same
/// context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(pub BTreeMap<String, String>);

impl EncryptionContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context of one pair, e.g. `("kmsfs-volume", uuid)`.
    pub fn single(key: impl Into<String>, value: impl Into<String>) -> Self {
        let mut m = BTreeMap::new();
        m.insert(key.into(), value.into());
        EncryptionContext(m)
    }

    /// Whether the context has no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the API's string form: a JSON object whose values are all strings.
    ///
    /// # Errors
    /// `InvalidParameterValue` when it is not such an object.
    pub fn from_json(s: &str) -> KmsResult<Self> {
        let bad = || {
            KmsError::new(
                ErrorCode::InvalidParameterValue,
                "EncryptionContext must be a JSON object of string values",
            )
        };
        let v: Value = serde_json::from_str(s).map_err(|_| bad())?;
        let Value::Object(obj) = v else {
            return Err(bad());
        };
        let mut m = BTreeMap::new();
        for (k, v) in obj {
            let Value::String(v) = v else {
                return Err(bad());
            };
            m.insert(k, v);
        }
        Ok(EncryptionContext(m))
    }

    /// The API's string form (a JSON object, keys sorted).
    pub fn to_json(&self) -> String {
        // A map of strings always serialises.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }
}

fn context_param(params: &mut serde_json::Map<String, Value>, context: &EncryptionContext) {
    if !context.is_empty() {
        params.insert("EncryptionContext".into(), Value::String(context.to_json()));
    }
}

fn take_string(resp: &mut Value, field: &str) -> KmsResult<String> {
    match resp.as_object_mut().and_then(|o| o.remove(field)) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(KmsError::new(
            ErrorCode::InternalError,
            format!("the KMS response has no string field {field}"),
        )),
    }
}

fn decode_b64(field: &str, s: &str) -> KmsResult<Vec<u8>> {
    B64.decode(s).map_err(|_| {
        KmsError::new(
            ErrorCode::InternalError,
            format!("the KMS response's {field} is not base64"),
        )
    })
}

/// Reads `Plaintext` out of a response, zeroizing every intermediate copy.
fn take_plaintext(resp: &mut Value) -> KmsResult<Zeroizing<Vec<u8>>> {
    let b64 = Zeroizing::new(take_string(resp, "Plaintext")?);
    Ok(Zeroizing::new(decode_b64("Plaintext", &b64)?))
}

/// [`Kms::generate_data_key`] through the JSON [`Kms::call`] seam.
pub fn generate_data_key_via_call<K: Kms + ?Sized>(
    kms: &K,
    ctx: &CallContext,
    key_id: &str,
    bytes: usize,
    context: &EncryptionContext,
) -> KmsResult<DataKey> {
    let mut p = serde_json::Map::new();
    p.insert("KeyId".into(), json!(key_id));
    p.insert("NumberOfBytes".into(), json!(bytes));
    context_param(&mut p, context);
    let mut resp = kms.call(ctx, "GenerateDataKey", &Value::Object(p))?;
    let plaintext = take_plaintext(&mut resp)?;
    let blob = take_string(&mut resp, "CiphertextBlob")?;
    Ok(DataKey {
        key_id: take_string(&mut resp, "KeyId")?,
        plaintext,
        ciphertext_blob: decode_b64("CiphertextBlob", &blob)?,
    })
}

/// [`Kms::decrypt_data_key`] through the JSON [`Kms::call`] seam.
pub fn decrypt_data_key_via_call<K: Kms + ?Sized>(
    kms: &K,
    ctx: &CallContext,
    ciphertext_blob: &[u8],
    context: &EncryptionContext,
) -> KmsResult<DataKey> {
    let mut p = serde_json::Map::new();
    p.insert("CiphertextBlob".into(), json!(B64.encode(ciphertext_blob)));
    context_param(&mut p, context);
    let mut resp = kms.call(ctx, "Decrypt", &Value::Object(p))?;
    Ok(DataKey {
        plaintext: take_plaintext(&mut resp)?,
        key_id: take_string(&mut resp, "KeyId")?,
        ciphertext_blob: ciphertext_blob.to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn context_json_is_order_independent_and_rejects_non_strings() {
        let a = EncryptionContext::from_json(r#"{"b":"2","a":"1"}"#).unwrap();
        let b = EncryptionContext::from_json(r#"{"a":"1","b":"2"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_json(), r#"{"a":"1","b":"2"}"#);
        assert!(EncryptionContext::from_json(r#"{"a":1}"#).is_err());
        assert!(EncryptionContext::from_json(r#"["a"]"#).is_err());
        assert!(EncryptionContext::from_json("not json").is_err());
    }

    #[test]
    fn data_key_debug_never_shows_the_key() {
        let k = DataKey {
            key_id: "k".into(),
            plaintext: Zeroizing::new(vec![0xAB; 32]),
            ciphertext_blob: vec![1, 2, 3],
        };
        let s = format!("{k:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("ab, ab"),
            "{s}"
        );
    }
}

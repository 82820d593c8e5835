//! The CiphertextBlob of Encrypt, GenerateDataKey and ReEncrypt: self-describing,
//! so Decrypt needs no KeyId.
//!
//! ```text
//! off        len  field
//! 0          2    magic "KM" (0x4B 0x4D)
//! 2          1    blob format version = 1
//! 3          1    L = length of the key id (1..=64)
//! 4          L    key id, ASCII (graphic characters)
//! 4+L        4    key version, u32 big-endian (1 = the key's first material)
//! 8+L        12   AES-GCM nonce (random)
//! 20+L       n    ciphertext (n = plaintext length)
//! 20+L+n     16   AES-GCM tag
//! ```
//!
//! AES-256-GCM under the material of that key version, with associated data =
//! the header bytes `[0, 20+L)` ‖ [`canonical_context`] of the EncryptionContext.
//! docs/FORMAT.md ("KMS formats") is the normative description.

use zeroize::Zeroizing;

use crate::crypto::{AeadKey, NONCE_LEN, TAG_LEN};
use crate::{EncryptionContext, ErrorCode, KmsError, KmsResult};

/// The first two bytes of every blob.
pub const BLOB_MAGIC: [u8; 2] = *b"KM";
/// The blob format version this crate writes and reads.
pub const BLOB_VERSION: u8 = 1;
/// The longest key id a blob can name.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Bytes a blob adds to its plaintext, for a key id of `key_id_len` bytes.
pub const fn overhead(key_id_len: usize) -> usize {
    4 + key_id_len + 4 + NONCE_LEN + TAG_LEN
}

/// A blob split into its parts (nothing verified yet but the framing).
#[derive(Debug, Clone, Copy)]
pub struct ParsedBlob<'a> {
    /// The CMK that sealed it.
    pub key_id: &'a str,
    /// The key version whose material sealed it.
    pub key_version: u32,
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The header bytes (part of the associated data).
    pub header: &'a [u8],
    /// `ciphertext ‖ tag`.
    pub sealed: &'a [u8],
}

fn invalid(msg: &str) -> KmsError {
    KmsError::new(ErrorCode::InvalidParameterValueInvalidCiphertext, msg)
}

/// Splits a blob into its parts.
///
/// # Errors
/// `InvalidParameterValue.InvalidCiphertext` for anything that is not a
/// well-framed blob of a known version. Never panics, whatever the input.
pub fn parse(blob: &[u8]) -> KmsResult<ParsedBlob<'_>> {
    if blob.len() < 4 || blob[0..2] != BLOB_MAGIC {
        return Err(invalid("the CiphertextBlob is not a kmsfs KMS ciphertext"));
    }
    if blob[2] != BLOB_VERSION {
        return Err(invalid("the CiphertextBlob has an unknown format version"));
    }
    let l = blob[3] as usize;
    if l == 0 || l > MAX_KEY_ID_LEN || blob.len() < overhead(l) {
        return Err(invalid("the CiphertextBlob is truncated or malformed"));
    }
    let id = &blob[4..4 + l];
    if !id.iter().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("the CiphertextBlob is malformed"));
    }
    let key_id = std::str::from_utf8(id).map_err(|_| invalid("the CiphertextBlob is malformed"))?;
    let mut v = [0u8; 4];
    v.copy_from_slice(&blob[4 + l..8 + l]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&blob[8 + l..8 + l + NONCE_LEN]);
    let hlen = 8 + l + NONCE_LEN;
    Ok(ParsedBlob {
        key_id,
        key_version: u32::from_be_bytes(v),
        nonce,
        header: &blob[..hlen],
        sealed: &blob[hlen..],
    })
}

/// The canonical byte form of an EncryptionContext, used as associated data:
/// for each pair in ascending byte order of the keys,
/// `u32 BE len(key) ‖ key ‖ u32 BE len(value) ‖ value`. The empty context is empty.
///
/// Unambiguous: `{"ab":"c"}` and `{"a":"bc"}` differ.
pub fn canonical_context(ctx: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in &ctx.0 {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Seals `plaintext` into a blob under `key` (the material of `key_id` version
/// `key_version`) with the given nonce.
///
/// # Security
/// The nonce **MUST** be fresh and random for every call with the same key; only
/// known-answer tests pass a fixed one.
pub fn seal(
    key: &AeadKey,
    key_id: &str,
    key_version: u32,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    context: &[u8],
) -> KmsResult<Vec<u8>> {
    let l = key_id.len();
    if l == 0 || l > MAX_KEY_ID_LEN || !key_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KmsError::new(
            ErrorCode::InternalError,
            "key id unsuitable for a ciphertext blob",
        ));
    }
    let mut out = Vec::with_capacity(overhead(l) + plaintext.len());
    out.extend_from_slice(&BLOB_MAGIC);
    out.push(BLOB_VERSION);
    out.push(l as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&key_version.to_be_bytes());
    out.extend_from_slice(nonce);
    let hlen = out.len();
    let mut ad = Vec::with_capacity(hlen + context.len());
    ad.extend_from_slice(&out);
    ad.extend_from_slice(context);
    let mut body = Vec::with_capacity(plaintext.len() + TAG_LEN);
    body.extend_from_slice(plaintext);
    key.seal(nonce, &ad, &mut body)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a parsed blob under `key` with the canonical `context`.
///
/// # Errors
/// `InvalidParameterValue.InvalidCiphertext` when it does not authenticate
/// (tampered, truncated, wrong key or wrong context).
pub fn open(key: &AeadKey, blob: &ParsedBlob<'_>, context: &[u8]) -> KmsResult<Zeroizing<Vec<u8>>> {
    let mut ad = Vec::with_capacity(blob.header.len() + context.len());
    ad.extend_from_slice(blob.header);
    ad.extend_from_slice(context);
    let mut buf = Zeroizing::new(blob.sealed.to_vec());
    let n = match key.open(&blob.nonce, &ad, &mut buf) {
        Some(pt) => pt.len(),
        None => {
            return Err(invalid(
                "the CiphertextBlob does not decrypt: it was altered, or the EncryptionContext differs from the one used to encrypt",
            ))
        }
    };
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::hex;

    #[test]
    fn canonical_context_is_unambiguous() {
        let a = EncryptionContext::from_json(r#"{"ab":"c"}"#).unwrap();
        let b = EncryptionContext::from_json(r#"{"a":"bc"}"#).unwrap();
        assert_ne!(canonical_context(&a), canonical_context(&b));
        let c = EncryptionContext::from_json(r#"{"b":"2","a":"1"}"#).unwrap();
        assert_eq!(
            hex(&canonical_context(&c)),
            "00000001610000000131000000016200000001 32".replace(' ', "")
        );
        assert!(canonical_context(&EncryptionContext::new()).is_empty());
    }

    #[test]
    fn parse_never_panics_on_short_input() {
        for n in 0..80 {
            let v = vec![b'K'; n];
            let _ = parse(&v);
        }
    }
}

//! The key model: a CMK's metadata, state and versions of key material.
//!
//! [`KeyUsage`] lists the usages of the API (built: AES, RSA-2048, ECC P-256, SM2, and
//! the post-quantum ML-KEM-768 and ML-DSA-65; not ECDSA P-384), [`Origin`] covers
//! EXTERNAL (BYOK) keys, each [`KeyVersionRecord`] names its [`MaterialKind`], and
//! [`DataKeyRecord`] is a data key the KMS hosts.

use serde::{Deserialize, Serialize};

/// What a CMK is for (`KeyUsage` in the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyUsage {
    /// Symmetric encryption (AES-256-GCM): Encrypt, Decrypt, GenerateDataKey.
    #[serde(rename = "ENCRYPT_DECRYPT")]
    EncryptDecrypt,
    /// RSA-2048 decryption.
    #[serde(rename = "ASYMMETRIC_DECRYPT_RSA_2048")]
    AsymmetricDecryptRsa2048,
    /// SM2 decryption.
    #[serde(rename = "ASYMMETRIC_DECRYPT_SM2")]
    AsymmetricDecryptSm2,
    /// SM2 signatures.
    #[serde(rename = "ASYMMETRIC_SIGN_VERIFY_SM2")]
    AsymmetricSignVerifySm2,
    /// ECC (P-256) signatures.
    #[serde(rename = "ASYMMETRIC_SIGN_VERIFY_ECC")]
    AsymmetricSignVerifyEcc,
    /// RSA-2048 signatures.
    #[serde(rename = "ASYMMETRIC_SIGN_VERIFY_RSA_2048")]
    AsymmetricSignVerifyRsa2048,
    /// ECDSA P-384 signatures.
    #[serde(rename = "ASYMMETRIC_SIGN_VERIFY_ECDSA384")]
    AsymmetricSignVerifyEcdsa384,
    /// Post-quantum encryption: ML-KEM-768 with AES-256-GCM (KEM-DEM). The API's
    /// spelling, mixed case and all, is the one of the SDK's ListAlgorithms example.
    #[serde(rename = "ASYMMETRIC_Encrypt_Decrypt_Kyber_AES")]
    AsymmetricEncryptDecryptKyberAes,
    /// Post-quantum signatures: ML-DSA-65.
    #[serde(rename = "ASYMMETRIC_SIGN_VERIFY_DILITHIUM")]
    AsymmetricSignVerifyDilithium,
}

impl KeyUsage {
    const ALL: &'static [(KeyUsage, &'static str)] = &[
        (KeyUsage::EncryptDecrypt, "ENCRYPT_DECRYPT"),
        (
            KeyUsage::AsymmetricDecryptRsa2048,
            "ASYMMETRIC_DECRYPT_RSA_2048",
        ),
        (KeyUsage::AsymmetricDecryptSm2, "ASYMMETRIC_DECRYPT_SM2"),
        (
            KeyUsage::AsymmetricSignVerifySm2,
            "ASYMMETRIC_SIGN_VERIFY_SM2",
        ),
        (
            KeyUsage::AsymmetricSignVerifyEcc,
            "ASYMMETRIC_SIGN_VERIFY_ECC",
        ),
        (
            KeyUsage::AsymmetricSignVerifyRsa2048,
            "ASYMMETRIC_SIGN_VERIFY_RSA_2048",
        ),
        (
            KeyUsage::AsymmetricSignVerifyEcdsa384,
            "ASYMMETRIC_SIGN_VERIFY_ECDSA384",
        ),
        (
            KeyUsage::AsymmetricEncryptDecryptKyberAes,
            "ASYMMETRIC_Encrypt_Decrypt_Kyber_AES",
        ),
        (
            KeyUsage::AsymmetricSignVerifyDilithium,
            "ASYMMETRIC_SIGN_VERIFY_DILITHIUM",
        ),
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(u, _)| *u == self)
            .map(|(_, s)| *s)
            .unwrap_or("ENCRYPT_DECRYPT")
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<KeyUsage> {
        Self::ALL.iter().find(|(_, w)| *w == s).map(|(u, _)| *u)
    }
}

/// Where a CMK's material comes from (`Origin`; `Type` 1 or 2 in CreateKey).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Origin {
    /// Made by the KMS (`Type` 1).
    #[serde(rename = "TENCENT_KMS")]
    TencentKms,
    /// Imported by the user (`Type` 2, BYOK).
    #[serde(rename = "EXTERNAL")]
    External,
}

impl Origin {
    /// The API spelling of `Origin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::TencentKms => "TENCENT_KMS",
            Origin::External => "EXTERNAL",
        }
    }

    /// The API's `Type` number.
    pub fn type_number(self) -> u32 {
        match self {
            Origin::TencentKms => 1,
            Origin::External => 2,
        }
    }
}

/// A CMK's state (`KeyState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Refuses every cryptographic operation until enabled.
    Disabled,
    /// Scheduled for deletion; purged at `DeletionDate`.
    PendingDelete,
    /// An EXTERNAL key without material.
    PendingImport,
    /// Only decrypts.
    Archived,
}

impl KeyState {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDelete => "PendingDelete",
            KeyState::PendingImport => "PendingImport",
            KeyState::Archived => "Archived",
        }
    }
}

/// The kind of material a key version holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MaterialKind {
    /// A 256-bit AES-GCM key (made by the KMS, or imported 256-bit material).
    #[serde(rename = "AES_256")]
    Aes256,
    /// A 128-bit AES-GCM key (imported 128-bit material only). Store format 2.
    #[serde(rename = "AES_128")]
    Aes128,
    /// An RSA-2048 private key, PKCS#8 DER. Store format 2.
    #[serde(rename = "RSA_2048")]
    Rsa2048,
    /// An ECDSA P-256 private key, PKCS#8 DER. Store format 2.
    #[serde(rename = "EC_P256")]
    EcP256,
    /// An SM2 private key: the 32-byte secret scalar, big-endian. Store format 2.
    #[serde(rename = "SM2")]
    Sm2,
    /// An ML-KEM-768 decapsulation key: its 64-byte seed (d ‖ z, FIPS 203). Store format 3.
    #[serde(rename = "ML_KEM_768")]
    MlKem768,
    /// An ML-DSA-65 signing key: its 32-byte seed ξ (FIPS 204). Store format 3.
    #[serde(rename = "ML_DSA_65")]
    MlDsa65,
}

impl MaterialKind {
    /// The spelling in the store (and in the material's associated data).
    pub fn as_str(self) -> &'static str {
        match self {
            MaterialKind::Aes256 => "AES_256",
            MaterialKind::Aes128 => "AES_128",
            MaterialKind::Rsa2048 => "RSA_2048",
            MaterialKind::EcP256 => "EC_P256",
            MaterialKind::Sm2 => "SM2",
            MaterialKind::MlKem768 => "ML_KEM_768",
            MaterialKind::MlDsa65 => "ML_DSA_65",
        }
    }

    /// The oldest store format that can hold this kind (an older kmsfs refuses
    /// a store it cannot read whole, rather than drop what it does not know).
    pub fn store_format(self) -> u16 {
        match self {
            MaterialKind::Aes256 => 1,
            MaterialKind::Aes128
            | MaterialKind::Rsa2048
            | MaterialKind::EcP256
            | MaterialKind::Sm2 => 2,
            MaterialKind::MlKem768 | MaterialKind::MlDsa65 => 3,
        }
    }
}

/// A tag (`Tags` of CreateKey, matched by ListKeyDetail's `TagFilters`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag key.
    pub key: String,
    /// The tag value (may be empty).
    #[serde(default)]
    pub value: String,
}

/// The parameters of the last GetParametersForImport of an EXTERNAL key: only
/// this pair is valid, until `valid_to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportParams {
    /// `RSAES_PKCS1_V1_5`, `RSAES_OAEP_SHA_1` or `RSAES_OAEP_SHA_256`.
    pub wrapping_algorithm: String,
    /// Hex SHA-256 of the ImportToken (the token itself is not stored).
    pub token_sha256: String,
    /// Unix seconds after which token and wrapping key are refused.
    pub valid_to: u64,
    /// The RSA-2048 wrapping private key, wrapped like material of version 0
    /// (docs/FORMAT.md).
    pub wrapped_key: String,
}

/// One version of a key's material, as stored: wrapped under the root key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersionRecord {
    /// 1 for the first material, +1 per rotation.
    pub version: u32,
    /// Unix seconds when the version was made.
    pub created: u64,
    /// What the material is.
    pub kind: MaterialKind,
    /// base64 of `nonce ‖ AES-256-GCM(wrap key, material) ‖ tag` (docs/FORMAT.md).
    pub wrapped: String,
}

/// A CMK as stored: metadata and wrapped versions. Contains no secret in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id (a UUID).
    pub key_id: String,
    /// The alias (unique), without the `alias/` prefix.
    pub alias: String,
    /// The description.
    #[serde(default)]
    pub description: String,
    /// Unix seconds.
    pub create_time: u64,
    /// The state.
    pub state: KeyState,
    /// The usage.
    pub usage: KeyUsage,
    /// Where the material comes from.
    pub origin: Origin,
    /// The principal that created the key.
    #[serde(default)]
    pub creator: String,
    /// Automatic rotation on.
    #[serde(default)]
    pub rotation_enabled: bool,
    /// Rotation period in days (7–365).
    #[serde(default)]
    pub rotate_days: u32,
    /// Unix seconds of the next automatic rotation (0 = none).
    #[serde(default)]
    pub next_rotate_time: u64,
    /// Unix seconds of the last rotation (0 = never).
    #[serde(default)]
    pub last_rotate_time: u64,
    /// Unix seconds at which a PendingDelete key is purged (0 = not scheduled).
    #[serde(default)]
    pub deletion_date: u64,
    /// Unix seconds after which imported material expires (0 = never).
    #[serde(default)]
    pub valid_to: u64,
    /// The material versions, oldest first; version `n` is at index `n - 1`.
    #[serde(default)]
    pub versions: Vec<KeyVersionRecord>,
    /// EXTERNAL keys, once material was imported: hex HMAC of the material under a
    /// root-derived key, kept after the material is deleted or expires, so that
    /// only the same material can be imported again. Store format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material_check: Option<String>,
    /// EXTERNAL keys: the current import parameters. Store format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportParams>,
    /// Tags given at CreateKey. Store format 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl KeyRecord {
    /// The newest version number (0 when the key has no material).
    pub fn current_version(&self) -> u32 {
        self.versions.last().map(|v| v.version).unwrap_or(0)
    }

    /// The oldest store format that can hold this record.
    pub fn store_format(&self) -> u16 {
        let kinds = self.versions.iter().map(|v| v.kind.store_format());
        let tags = if self.tags.is_empty() { 1 } else { 3 };
        let v2 = if self.material_check.is_some() || self.import.is_some() {
            2
        } else {
            1
        };
        kinds.chain([tags, v2]).max().unwrap_or(1)
    }
}

/// A data key's state (`KeyState` of DataKeyMetadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DataKeyState {
    /// Usable.
    Enabled,
    /// GetDataKeyPlaintext and GetDataKeyCiphertextBlob refuse it until enabled.
    Disabled,
    /// Scheduled for deletion; purged at `deletion_date`.
    PendingDelete,
}

impl DataKeyState {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKeyState::Enabled => "Enabled",
            DataKeyState::Disabled => "Disabled",
            DataKeyState::PendingDelete => "PendingDelete",
        }
    }
}

/// A data key hosted by the KMS (GenerateDataKey with `IsHostedByKms`, or
/// ImportDataKey). The data key itself is kept only as a CiphertextBlob under its
/// CMK, exactly what GenerateDataKey returns: the store holds no data key in
/// clear, and a disabled or deleted CMK makes its hosted data keys unreadable.
/// Store format 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyRecord {
    /// The data key id (a UUID).
    pub data_key_id: String,
    /// The CMK whose blob holds it.
    pub key_id: String,
    /// The name (unique among data keys).
    pub name: String,
    /// The description.
    #[serde(default)]
    pub description: String,
    /// Length of the data key in bytes.
    pub len: u32,
    /// Unix seconds.
    pub create_time: u64,
    /// The state.
    pub state: DataKeyState,
    /// `TENCENT_KMS` (made by GenerateDataKey) or `EXTERNAL` (ImportDataKey).
    pub origin: Origin,
    /// The principal that made it.
    #[serde(default)]
    pub creator: String,
    /// Unix seconds at which a PendingDelete data key is purged (0 = not scheduled).
    #[serde(default)]
    pub deletion_date: u64,
    /// base64 of the CiphertextBlob (under `key_id`, empty EncryptionContext).
    pub blob: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

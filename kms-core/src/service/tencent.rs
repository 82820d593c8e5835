//! The Tencent Cloud KMS API (2019-01-18) adapter: its request and response types
//! (PascalCase JSON, as tccli and tencentcloud-sdk-python send and read them), its action
//! table and the dispatch of an action name and JSON parameters onto the core. The core
//! (keys, states, material, the store and the audit log) is `service/mod.rs` and the
//! files beside it, one per job (`keys.rs`, `symmetric.rs`, `asymmetric.rs`, …); the
//! Alibaba Cloud adapter beside this one is `service/aliyun/`.

use super::*;

tencent_request! {
    /// A request naming several keys (EnableKeys, DisableKeys).
    KeyIdsRequest {
        /// Key ids or `alias/NAME`s, at most [`MAX_BATCH_KEYS`].
        key_ids: Vec<String>,
    }
}

/// The most keys one EnableKeys / DisableKeys names (the service's limit).
pub const MAX_BATCH_KEYS: usize = 100;

/// GetServiceStatus: the service is always on for its principals (a local KMS has no
/// purchase or arrears states); the key count is the store's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceStatus {
    /// Always true.
    pub service_enabled: bool,
    /// 1: normal.
    pub invalid_type: u32,
    /// 0: the basic edition (no exclusive HSM).
    pub user_level: u32,
    /// Whether exclusive VSM / HSM clusters are on: never here.
    #[serde(rename = "ExclusiveVSMEnabled")]
    pub exclusive_vsm_enabled: bool,
    /// As above.
    #[serde(rename = "ExclusiveHSMEnabled")]
    pub exclusive_hsm_enabled: bool,
    /// CMKs in the store (not deleted).
    pub cmk_user_count: u64,
    /// Data-key hosting (the data-key actions): not offered.
    pub is_allowed_data_key_hosted: bool,
    /// Cross-region sync tasks: not offered.
    pub is_allowed_sync: bool,
}

/// GetRegions.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Regions {
    /// The one region this KMS answers for.
    pub regions: Vec<String>,
}

tencent_request! {
    /// A request naming one key (DescribeKey, EnableKey, DisableKey, …).
    KeyIdRequest {
        /// A key id or `alias/NAME`.
        key_id: String,
    }
}

tencent_request! {
    /// CreateKey.
    CreateKeyRequest {
        /// The alias (required).
        alias: String,
        /// A description.
        description: String,
        /// `ENCRYPT_DECRYPT` (default).
        key_usage: String,
        /// 1 (default, KMS-made material) or 2 (EXTERNAL).
        #[serde(rename = "Type")]
        key_type: u64,
        /// Tags, stored with the key and matched by ListKeyDetail's TagFilters.
        tags: Value,
    }
}

tencent_request! {
    /// DescribeKeys.
    DescribeKeysRequest {
        /// Up to 100 key ids.
        key_ids: Vec<String>,
    }
}

tencent_request! {
    /// ListKeys.
    ListKeysRequest {
        /// Skip this many keys.
        offset: u64,
        /// At most this many (default 10, at most 200).
        limit: u64,
        /// 0: keys users made (all keys here); 1: keys cloud products made (none).
        role: u64,
    }
}

tencent_request! {
    /// ListKeyDetail.
    ListKeyDetailRequest {
        /// Skip this many keys.
        offset: u64,
        /// At most this many (default 10, at most 200).
        limit: u64,
        /// As in ListKeys.
        role: u64,
        /// 0: newest first (default); 1: oldest first.
        order_type: u64,
        /// 0 all, 1 Enabled, 2 Disabled, 3 PendingDelete, 4 PendingImport, 5 Archived.
        key_state: u64,
        /// Substring of the key id or the alias.
        search_key_alias: String,
        /// `TENCENT_KMS`, `EXTERNAL` or `ALL`.
        origin: String,
        /// A KeyUsage or `ALL`; absent or empty means `ENCRYPT_DECRYPT`, as the API documents.
        key_usage: String,
        /// Keys whose tags match every filter (a filter's values: any of them).
        tag_filters: Value,
    }
}

tencent_request! {
    /// UpdateAlias.
    UpdateAliasRequest {
        /// The new alias.
        alias: String,
        /// The key.
        key_id: String,
    }
}

tencent_request! {
    /// UpdateKeyDescription.
    UpdateKeyDescriptionRequest {
        /// The new description.
        description: String,
        /// The key.
        key_id: String,
    }
}

tencent_request! {
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletionRequest {
        /// The key.
        key_id: String,
        /// 7–30.
        pending_window_in_days: u64,
    }
}

tencent_request! {
    /// EnableKeyRotation.
    EnableKeyRotationRequest {
        /// The key.
        key_id: String,
        /// 7–365, default 365.
        rotate_days: u64,
    }
}

tencent_request! {
    /// Encrypt.
    EncryptRequest {
        /// The key.
        key_id: String,
        /// base64 of at most 4096 bytes.
        plaintext: SecretString,
        /// A JSON object of strings, as a string.
        encryption_context: String,
    }
}

tencent_request! {
    /// Decrypt.
    DecryptRequest {
        /// base64 of a CiphertextBlob.
        ciphertext_blob: String,
        /// The context used to encrypt.
        encryption_context: String,
        /// A caller's RSA public key (PEM): the Plaintext is returned encrypted to it.
        encryption_public_key: String,
        /// With it: `RSAES_PKCS1_V1_5`, `RSAES_OAEP_SHA_1`, `RSAES_OAEP_SHA_256`, or the SM2
        /// ones (the default, `SM2`), which are refused (UnsupportedOperation).
        encryption_algorithm: String,
    }
}

tencent_request! {
    /// ReEncrypt.
    ReEncryptRequest {
        /// base64 of a CiphertextBlob.
        ciphertext_blob: String,
        /// The key to re-encrypt under (default: the source key, newest version).
        destination_key_id: String,
        /// The context the blob was made with.
        source_encryption_context: String,
        /// The context for the new blob.
        destination_encryption_context: String,
    }
}

tencent_request! {
    /// GenerateDataKey.
    GenerateDataKeyRequest {
        /// The key.
        key_id: String,
        /// `AES_128` or `AES_256`.
        key_spec: String,
        /// 1–1024; wins over KeySpec.
        number_of_bytes: u64,
        /// The context.
        encryption_context: String,
        /// As Decrypt's: the Plaintext is returned encrypted to this RSA public key.
        encryption_public_key: String,
        /// As Decrypt's.
        encryption_algorithm: String,
        /// 1: the KMS also keeps the data key (DescribeDataKey, GetDataKeyPlaintext…).
        is_hosted_by_kms: u64,
        /// The hosted data key's name (required with IsHostedByKms 1).
        data_key_name: String,
        /// The hosted data key's description.
        description: String,
        /// The hosted data key's tags.
        tags: Value,
    }
}

/// The Plaintext field of GenerateDataKey and Decrypt: the base64 of `plaintext`, or, with
/// an `EncryptionPublicKey`, the base64 of `plaintext` encrypted to that key (RSA, or SM2,
/// Tencent's default when EncryptionAlgorithm is absent), never the plaintext in clear.
pub(crate) fn plaintext_field(
    plaintext: &[u8],
    public_key: Option<&str>,
    algorithm: Option<&str>,
) -> KmsResult<SecretString> {
    let Some(pk) = public_key.filter(|k| !k.is_empty()) else {
        if algorithm.is_some_and(|a| !a.is_empty()) {
            return Err(err(
                ErrorCode::InvalidParameter,
                "EncryptionAlgorithm needs an EncryptionPublicKey",
            ));
        }
        return Ok(SecretString::from(B64.encode(plaintext)));
    };
    let alg = algorithm.filter(|a| !a.is_empty()).unwrap_or("SM2");
    let sealed = match (alg, crate::asym::RsaEncryption::parse(alg)) {
        (_, Some(scheme)) => crate::asym::encrypt_to_public_key(pk, scheme, plaintext)?,
        ("SM2", None) => crate::asym::sm2_encrypt_to_public_key(pk, false, plaintext)?,
        ("SM2_C1C3C2_ASN1", None) => crate::asym::sm2_encrypt_to_public_key(pk, true, plaintext)?,
        _ => {
            return Err(err(
                ErrorCode::InvalidParameterValue,
                format!("unknown EncryptionAlgorithm {alg:?}"),
            ))
        }
    };
    Ok(SecretString::from(B64.encode(sealed)))
}

tencent_request! {
    /// GenerateRandom.
    GenerateRandomRequest {
        /// 1–1024.
        number_of_bytes: u64,
    }
}

tencent_request! {
    /// AsymmetricRsaDecrypt.
    AsymmetricRsaDecryptRequest {
        /// An ASYMMETRIC_DECRYPT_RSA_2048 key.
        key_id: String,
        /// base64 of the 256-byte RSA ciphertext.
        ciphertext: String,
        /// `RSAES_OAEP_SHA_256`, `RSAES_OAEP_SHA_1` or `RSAES_PKCS1_V1_5`.
        algorithm: String,
    }
}

tencent_request! {
    /// AsymmetricSm2Decrypt.
    AsymmetricSm2DecryptRequest {
        /// An ASYMMETRIC_DECRYPT_SM2 key.
        key_id: String,
        /// base64 of the C1C3C2 ASN.1 ciphertext, at most [`MAX_SM2_CIPHERTEXT`] bytes.
        ciphertext: String,
    }
}

/// The largest AsymmetricSm2Decrypt ciphertext (the service's limit).
pub const MAX_SM2_CIPHERTEXT: usize = 256;

tencent_request! {
    /// SignByAsymmetricKey.
    SignByAsymmetricKeyRequest {
        /// `RSA_PSS_SHA_256`, `RSA_PKCS1_SHA_256` (RSA keys) or `ECC_P256_R1` (ECC keys).
        algorithm: String,
        /// base64 of the message (RAW, 1–4096 bytes) or of its SHA-256 (DIGEST, 32 bytes).
        message: SecretString,
        /// An ASYMMETRIC_SIGN_VERIFY_* key.
        key_id: String,
        /// `RAW` (default) or `DIGEST`.
        message_type: String,
    }
}

tencent_request! {
    /// VerifyByAsymmetricKey.
    VerifyByAsymmetricKeyRequest {
        /// An ASYMMETRIC_SIGN_VERIFY_* key.
        key_id: String,
        /// base64 of the signature.
        signature_value: String,
        /// As in SignByAsymmetricKey.
        message: SecretString,
        /// As in SignByAsymmetricKey.
        algorithm: String,
        /// `RAW` (default) or `DIGEST`.
        message_type: String,
    }
}

tencent_request! {
    /// GetParametersForImport.
    GetParametersForImportRequest {
        /// An EXTERNAL key.
        key_id: String,
        /// `RSAES_PKCS1_V1_5`, `RSAES_OAEP_SHA_1` or `RSAES_OAEP_SHA_256`.
        wrapping_algorithm: String,
        /// `RSA_2048` (the default here).
        wrapping_key_spec: String,
    }
}

tencent_request! {
    /// ImportKeyMaterial.
    ImportKeyMaterialRequest {
        /// base64 of the material (16 or 32 bytes) encrypted under the wrapping key.
        encrypted_key_material: String,
        /// The token of the latest GetParametersForImport.
        import_token: SecretString,
        /// The EXTERNAL key.
        key_id: String,
        /// Unix seconds at which the material expires; 0 or absent: never.
        valid_to: u64,
    }
}

// --------------------------------------------------------------- responses

/// An empty request or response (EnableKey, DisableKey, …).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Empty {}

/// CreateKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyResponse {
    /// The new key's id.
    pub key_id: String,
    /// Its alias.
    pub alias: String,
    /// Unix seconds.
    pub create_time: u64,
    /// Its description.
    pub description: String,
    /// `Enabled`.
    pub key_state: String,
    /// Its usage.
    pub key_usage: String,
    /// 0 (tags are not stored).
    pub tag_code: u64,
    /// Empty.
    pub tag_msg: String,
}

/// A key's metadata (DescribeKey, DescribeKeys, ListKeyDetail).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    /// The id.
    pub key_id: String,
    /// The alias.
    pub alias: String,
    /// Unix seconds.
    pub create_time: u64,
    /// The description.
    pub description: String,
    /// The state.
    pub key_state: String,
    /// The usage.
    pub key_usage: String,
    /// 1 or 2.
    #[serde(rename = "Type")]
    pub key_type: u32,
    /// 0 (no accounts here).
    pub creator_uin: u64,
    /// Automatic rotation on.
    pub key_rotation_enabled: bool,
    /// `user`.
    pub owner: String,
    /// Unix seconds, 0 when rotation is off.
    pub next_rotate_time: u64,
    /// Unix seconds, 0 unless PendingDelete.
    pub deletion_date: u64,
    /// `TENCENT_KMS` or `EXTERNAL`.
    pub origin: String,
    /// Unix seconds, 0 = never.
    pub valid_to: u64,
    /// `qcs::kms:local:uin/0:key/<id>`.
    pub resource_id: String,
    /// Rotation period in days (0 when never enabled).
    pub rotate_days: u64,
    /// Unix seconds, 0 = never rotated.
    pub last_rotate_time: u64,
}

impl From<&KeyRecord> for KeyMetadata {
    fn from(r: &KeyRecord) -> Self {
        KeyMetadata {
            key_id: r.key_id.clone(),
            alias: r.alias.clone(),
            create_time: r.create_time,
            description: r.description.clone(),
            key_state: r.state.as_str().to_owned(),
            key_usage: r.usage.as_str().to_owned(),
            key_type: r.origin.type_number(),
            creator_uin: 0,
            key_rotation_enabled: r.rotation_enabled,
            owner: "user".to_owned(),
            next_rotate_time: if r.rotation_enabled {
                r.next_rotate_time
            } else {
                0
            },
            deletion_date: if r.state == KeyState::PendingDelete {
                r.deletion_date
            } else {
                0
            },
            origin: r.origin.as_str().to_owned(),
            valid_to: r.valid_to,
            resource_id: format!("qcs::kms:local:uin/0:key/{}", r.key_id),
            rotate_days: u64::from(r.rotate_days),
            last_rotate_time: r.last_rotate_time,
        }
    }
}

/// DescribeKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyResponse {
    /// The metadata.
    pub key_metadata: KeyMetadata,
}

/// DescribeKeys' and ListKeyDetail's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadatasResponse {
    /// The keys.
    pub key_metadatas: Vec<KeyMetadata>,
    /// ListKeyDetail: how many keys match the filters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
}

/// One entry of ListKeys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdEntry {
    /// The id.
    pub key_id: String,
}

/// ListKeys' response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    /// The page of keys.
    pub keys: Vec<KeyIdEntry>,
    /// How many keys there are.
    pub total_count: u64,
}

/// ScheduleKeyDeletion's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    /// Unix seconds at which the key is purged.
    pub deletion_date: u64,
    /// The key.
    pub key_id: String,
}

/// A response carrying a key id (CancelKeyDeletion).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    /// The key.
    pub key_id: String,
}

/// GetKeyRotationStatus' response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyRotationStatusResponse {
    /// Automatic rotation on.
    pub key_rotation_enabled: bool,
    /// Unix seconds, 0 when off.
    pub next_rotate_time: u64,
    /// Days between automatic rotations.
    pub rotate_days: u64,
    /// Unix seconds of the last rotation, 0 = never.
    pub last_rotate_time: u64,
}

/// Encrypt's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    /// base64 of the blob.
    pub ciphertext_blob: String,
    /// The key.
    pub key_id: String,
}

/// Decrypt's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    /// The key that decrypted.
    pub key_id: String,
    /// base64 of the plaintext. **Secret.**
    pub plaintext: SecretString,
}

/// ReEncrypt's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    /// base64 of the new blob.
    pub ciphertext_blob: String,
    /// The destination key.
    pub key_id: String,
    /// The key that decrypted the old blob.
    pub source_key_id: String,
    /// False when nothing needed doing (same key, not rotated since, same context): the
    /// blob is then the one given.
    pub re_encrypted: bool,
}

/// GenerateDataKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    /// The key.
    pub key_id: String,
    /// base64 of the data key. **Secret.**
    pub plaintext: SecretString,
    /// base64 of the wrapped data key.
    pub ciphertext_blob: String,
    /// The hosted data key's id, with IsHostedByKms 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_key_id: Option<String>,
    /// 0 with IsHostedByKms 1 (the tags were stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_code: Option<u64>,
    /// Empty with IsHostedByKms 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_msg: Option<String>,
}

/// One algorithm a key usage supports (ListAlgorithms).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlgorithmInfo {
    /// The KeyUsage.
    pub key_usage: String,
    /// The algorithm.
    pub algorithm: String,
}

/// ListAlgorithms' response: what this KMS supports today.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAlgorithmsResponse {
    /// Symmetric encryption.
    pub symmetric_algorithms: Vec<AlgorithmInfo>,
    /// Asymmetric encryption.
    pub asymmetric_algorithms: Vec<AlgorithmInfo>,
    /// Signatures.
    pub asymmetric_sign_verify_algorithms: Vec<AlgorithmInfo>,
}

/// GenerateRandom's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    /// base64 of the random bytes.
    pub plaintext: SecretString,
}

/// GetPublicKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    /// The key.
    pub key_id: String,
    /// base64 of the DER SubjectPublicKeyInfo.
    pub public_key: String,
    /// The same key as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
}

/// AsymmetricRsaDecrypt's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricRsaDecryptResponse {
    /// The key.
    pub key_id: String,
    /// base64 of the plaintext. **Secret.**
    pub plaintext: SecretString,
}

/// SignByAsymmetricKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignByAsymmetricKeyResponse {
    /// base64 of the signature (RSA: 256 bytes; ECDSA: DER).
    pub signature: String,
}

/// VerifyByAsymmetricKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyByAsymmetricKeyResponse {
    /// Whether the signature is valid.
    pub signature_valid: bool,
}

/// GetParametersForImport's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    /// The key.
    pub key_id: String,
    /// The token ImportKeyMaterial needs (only the latest one is valid).
    pub import_token: String,
    /// base64 of the RSA-2048 wrapping public key (DER SubjectPublicKeyInfo).
    pub public_key: String,
    /// Unix seconds after which token and key are refused.
    pub parameters_valid_to: u64,
}

/// Parses JSON parameters into a typed request: a missing or null body is the
/// empty object; a wrong type is `InvalidParameter`.
fn parse_params<T: DeserializeOwned>(params: &Value) -> KmsResult<T> {
    let empty = Value::Object(serde_json::Map::new());
    let p = if params.is_null() { &empty } else { params };
    if !p.is_object() {
        return Err(err(
            ErrorCode::InvalidParameter,
            "the parameters must be a JSON object",
        ));
    }
    T::deserialize(p).map_err(|e| {
        err(
            ErrorCode::InvalidParameter,
            format!("invalid parameter: {e}"),
        )
    })
}

fn to_value<T: Serialize>(v: T) -> KmsResult<Value> {
    serde_json::to_value(v)
        .map_err(|e| err(ErrorCode::InternalError, format!("serialise response: {e}")))
}

/// The actions [`KmsService`] answers, in the order `kmsfs kms --help` lists them.
pub const ACTIONS: &[&str] = &[
    "CreateKey",
    "DescribeKey",
    "DescribeKeys",
    "ListKeys",
    "ListKeyDetail",
    "UpdateAlias",
    "UpdateKeyDescription",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "ArchiveKey",
    "CancelKeyArchive",
    "EnableKeyRotation",
    "DisableKeyRotation",
    "GetKeyRotationStatus",
    "RotateKey",
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateRandom",
    "ListAlgorithms",
    "GetPublicKey",
    "AsymmetricRsaDecrypt",
    "AsymmetricSm2Decrypt",
    "SignByAsymmetricKey",
    "VerifyByAsymmetricKey",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "DeleteImportedKeyMaterial",
    "EnableKeys",
    "DisableKeys",
    "GetServiceStatus",
    "GetRegions",
    "PostQuantumCryptoEncrypt",
    "PostQuantumCryptoDecrypt",
    "PostQuantumCryptoSign",
    "PostQuantumCryptoVerify",
    "ImportDataKey",
    "DescribeDataKey",
    "DescribeDataKeys",
    "ListDataKeys",
    "ListDataKeyDetail",
    "EnableDataKey",
    "EnableDataKeys",
    "DisableDataKey",
    "DisableDataKeys",
    "GetDataKeyCiphertextBlob",
    "GetDataKeyPlaintext",
    "ScheduleDataKeyDeletion",
    "CancelDataKeyDeletion",
    "UpdateDataKeyName",
    "UpdateDataKeyDescription",
];

/// The other actions of the Tencent KMS API 2019-01-18, each answered with
/// `UnsupportedOperation` and the reason (docs/KMS.md, "What is not offered"), never
/// `InvalidAction`: they exist, this KMS does not offer them.
pub const UNSUPPORTED_ACTIONS: &[(&str, &str)] = &[
    ("CreateWhiteBoxKey", WHITE_BOX),
    ("DeleteWhiteBoxKey", WHITE_BOX),
    ("DescribeWhiteBoxDecryptKey", WHITE_BOX),
    ("DescribeWhiteBoxDeviceFingerprints", WHITE_BOX),
    ("DescribeWhiteBoxKey", WHITE_BOX),
    ("DescribeWhiteBoxKeyDetails", WHITE_BOX),
    ("DescribeWhiteBoxServiceStatus", WHITE_BOX),
    ("EnableWhiteBoxKey", WHITE_BOX),
    ("EnableWhiteBoxKeys", WHITE_BOX),
    ("DisableWhiteBoxKey", WHITE_BOX),
    ("DisableWhiteBoxKeys", WHITE_BOX),
    ("EncryptByWhiteBox", WHITE_BOX),
    ("OverwriteWhiteBoxDeviceFingerprints", WHITE_BOX),
    (
        "BindCloudResource",
        "binding keys to cloud resources needs the cloud's resources; a local KMS has none",
    ),
    (
        "UnbindCloudResource",
        "binding keys to cloud resources needs the cloud's resources; a local KMS has none",
    ),
];

const WHITE_BOX: &str =
    "white-box keys (a proprietary Tencent cipher bound to device fingerprints) are not offered";

/// Whether a successful `action` changes the key store (its audit line is then
/// flushed to disk like the change). Crypto and read-only actions are listed; any
/// other action counts as a change.
pub(crate) fn changes_store(action: &str) -> bool {
    !matches!(
        action,
        "DescribeKey"
            | "DescribeKeys"
            | "ListKeys"
            | "ListKeyDetail"
            | "GetKeyRotationStatus"
            | "Encrypt"
            | "Decrypt"
            | "ReEncrypt"
            | "GenerateDataKey"
            | "GenerateRandom"
            | "ListAlgorithms"
            | "GetPublicKey"
            | "AsymmetricRsaDecrypt"
            | "AsymmetricSm2Decrypt"
            | "SignByAsymmetricKey"
            | "VerifyByAsymmetricKey"
            | "GetServiceStatus"
            | "GetRegions"
            | "PostQuantumCryptoEncrypt"
            | "PostQuantumCryptoDecrypt"
            | "PostQuantumCryptoSign"
            | "PostQuantumCryptoVerify"
            | "DescribeDataKey"
            | "DescribeDataKeys"
            | "ListDataKeys"
            | "ListDataKeyDetail"
            | "GetDataKeyCiphertextBlob"
            | "GetDataKeyPlaintext"
    )
}

impl KmsService {
    /// Audits a call refused before its action ran (unknown action, bad parameters).
    fn refuse(&self, ctx: &CallContext, action: &str, p: &Value, e: KmsError) -> KmsError {
        let key = p.get("KeyId").and_then(Value::as_str).unwrap_or("");
        let e2 = e.clone();
        let _ = self.audited::<()>(ctx, action, key, move |_| Err(e2));
        e
    }

    pub(crate) fn dispatch(&self, ctx: &CallContext, action: &str, p: &Value) -> KmsResult<Value> {
        macro_rules! act {
            ($method:ident) => {
                match parse_params(p) {
                    Ok(req) => to_value(self.$method(ctx, req)?),
                    Err(e) => Err(self.refuse(ctx, action, p, e)),
                }
            };
        }
        match action {
            "CreateKey" => act!(create_key),
            "DescribeKey" => act!(describe_key),
            "DescribeKeys" => act!(describe_keys),
            "ListKeys" => act!(list_keys),
            "ListKeyDetail" => act!(list_key_detail),
            "UpdateAlias" => act!(update_alias),
            "UpdateKeyDescription" => act!(update_key_description),
            "EnableKey" => act!(enable_key),
            "DisableKey" => act!(disable_key),
            "ScheduleKeyDeletion" => act!(schedule_key_deletion),
            "CancelKeyDeletion" => act!(cancel_key_deletion),
            "ArchiveKey" => act!(archive_key),
            "CancelKeyArchive" => act!(cancel_key_archive),
            "EnableKeyRotation" => act!(enable_key_rotation),
            "DisableKeyRotation" => act!(disable_key_rotation),
            "GetKeyRotationStatus" => act!(get_key_rotation_status),
            "RotateKey" => act!(rotate_key),
            "Encrypt" => act!(encrypt),
            "Decrypt" => act!(decrypt),
            "ReEncrypt" => act!(re_encrypt),
            "GenerateDataKey" => act!(generate_data_key_action),
            "GenerateRandom" => act!(generate_random),
            "ListAlgorithms" => act!(list_algorithms),
            "GetPublicKey" => act!(get_public_key),
            "AsymmetricRsaDecrypt" => act!(asymmetric_rsa_decrypt),
            "AsymmetricSm2Decrypt" => act!(asymmetric_sm2_decrypt),
            "SignByAsymmetricKey" => act!(sign_by_asymmetric_key),
            "VerifyByAsymmetricKey" => act!(verify_by_asymmetric_key),
            "GetParametersForImport" => act!(get_parameters_for_import),
            "ImportKeyMaterial" => act!(import_key_material),
            "DeleteImportedKeyMaterial" => act!(delete_imported_key_material),
            "EnableKeys" => act!(enable_keys),
            "DisableKeys" => act!(disable_keys),
            "GetServiceStatus" => act!(get_service_status),
            "GetRegions" => act!(get_regions),
            "PostQuantumCryptoEncrypt" => act!(post_quantum_crypto_encrypt),
            "PostQuantumCryptoDecrypt" => act!(post_quantum_crypto_decrypt),
            "PostQuantumCryptoSign" => act!(post_quantum_crypto_sign),
            "PostQuantumCryptoVerify" => act!(post_quantum_crypto_verify),
            "ImportDataKey" => act!(import_data_key),
            "DescribeDataKey" => act!(describe_data_key),
            "DescribeDataKeys" => act!(describe_data_keys),
            "ListDataKeys" => act!(list_data_keys),
            "ListDataKeyDetail" => act!(list_data_key_detail),
            "EnableDataKey" => act!(enable_data_key),
            "EnableDataKeys" => act!(enable_data_keys),
            "DisableDataKey" => act!(disable_data_key),
            "DisableDataKeys" => act!(disable_data_keys),
            "GetDataKeyCiphertextBlob" => act!(get_data_key_ciphertext_blob),
            "GetDataKeyPlaintext" => act!(get_data_key_plaintext),
            "ScheduleDataKeyDeletion" => act!(schedule_data_key_deletion),
            "CancelDataKeyDeletion" => act!(cancel_data_key_deletion),
            "UpdateDataKeyName" => act!(update_data_key_name),
            "UpdateDataKeyDescription" => act!(update_data_key_description),
            _ => Err(self.refuse(
                ctx,
                action,
                p,
                match UNSUPPORTED_ACTIONS.iter().find(|(a, _)| *a == action) {
                    Some((_, why)) => err(
                        ErrorCode::UnsupportedOperation,
                        format!("{action} is not offered by this KMS: {why}"),
                    ),
                    None => err(
                        ErrorCode::InvalidAction,
                        format!("unknown action {action:?}"),
                    ),
                },
            )),
        }
    }
}

//! The wire types of the hosted data-key actions: their requests and responses
//! (PascalCase JSON, as tccli and tencentcloud-sdk-python send and read them).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::SecretString;

/// The `DataKeyId` of a request about one data key.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyIdRequest {
    /// The data key.
    pub data_key_id: Option<String>,
}

/// The `DataKeyIds` of a batch request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyIdsRequest {
    /// Up to 100 data keys.
    pub data_key_ids: Option<Vec<String>>,
}

/// ImportDataKey.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportDataKeyRequest {
    /// The name (required, unique).
    pub data_key_name: Option<String>,
    /// ImportType 1: a CiphertextBlob of GenerateDataKey; 2: base64 of the data key.
    /// **Secret** with ImportType 2.
    pub import_key_material: Option<SecretString>,
    /// 1 (ciphertext) or 2 (plaintext).
    pub import_type: Option<u64>,
    /// At most 100 bytes.
    pub description: Option<String>,
    /// The CMK: required with ImportType 2; with 1, checked against the blob's.
    pub key_id: Option<String>,
    /// Tags.
    pub tags: Option<Value>,
}

/// ImportDataKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportDataKeyResponse {
    /// The CMK.
    pub key_id: String,
    /// The new data key.
    pub data_key_id: String,
    /// 0: the tags were stored.
    pub tag_code: u64,
    /// Empty.
    pub tag_msg: String,
}

/// A data key's metadata.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyMetadata {
    /// The data key.
    pub data_key_id: String,
    /// Its CMK.
    pub key_id: String,
    /// The CMK's alias.
    pub key_name: String,
    /// The data key's name.
    pub data_key_name: String,
    /// Length in bytes.
    pub number_of_bytes: u64,
    /// Unix seconds.
    pub create_time: u64,
    /// The description.
    pub description: String,
    /// `Enabled`, `Disabled` or `PendingDelete`.
    pub key_state: String,
    /// 0 (no accounts here).
    pub creator_uin: u64,
    /// `user`.
    pub owner: String,
    /// Unix seconds, 0 unless PendingDelete.
    pub deletion_date: u64,
    /// `TENCENT_KMS` (GenerateDataKey) or `EXTERNAL` (ImportDataKey).
    pub origin: String,
    /// `creatorUin/0/<DataKeyId>`.
    pub resource_id: String,
}

/// DescribeDataKey's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeDataKeyResponse {
    /// The data key.
    pub data_key_metadata: DataKeyMetadata,
}

/// DescribeDataKeys' and ListDataKeyDetail's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyMetadatasResponse {
    /// The data keys.
    pub data_key_metadatas: Vec<DataKeyMetadata>,
    /// ListDataKeyDetail: how many match the filters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
}

/// ListDataKeys.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListDataKeysRequest {
    /// Skip this many.
    pub offset: Option<u64>,
    /// At most this many (default 10, at most 200).
    pub limit: Option<u64>,
    /// 0: data keys users made (all here); 1: made by cloud products (none).
    pub role: Option<u64>,
}

/// One entry of ListDataKeys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyEntry {
    /// The data key.
    pub data_key_id: String,
}

/// ListDataKeys' response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListDataKeysResponse {
    /// The page.
    pub data_keys: Vec<DataKeyEntry>,
    /// How many there are.
    pub total_count: u64,
}

/// ListDataKeyDetail.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListDataKeyDetailRequest {
    /// Skip this many.
    pub offset: Option<u64>,
    /// At most this many (default 10, at most 200).
    pub limit: Option<u64>,
    /// As in ListDataKeys.
    pub role: Option<u64>,
    /// 0: newest first (default); 1: oldest first.
    pub order_type: Option<u64>,
    /// 0 all, 1 Enabled, 2 Disabled, 3 PendingDelete.
    pub key_state: Option<u64>,
    /// Substring of the DataKeyId or the DataKeyName.
    pub search_key_alias: Option<String>,
    /// `TENCENT_KMS`, `EXTERNAL` or `ALL`.
    pub origin: Option<String>,
    /// Only the data keys of this CMK.
    pub key_id: Option<String>,
    /// Only data keys of this many bytes.
    pub data_key_len: Option<u64>,
    /// As ListKeyDetail's.
    pub tag_filters: Option<Value>,
}

/// GetDataKeyPlaintext.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetDataKeyPlaintextRequest {
    /// The data key.
    pub data_key_id: Option<String>,
    /// As Decrypt's: the Plaintext is returned encrypted to this public key.
    pub encryption_public_key: Option<String>,
    /// As Decrypt's.
    pub encryption_algorithm: Option<String>,
}

/// GetDataKeyPlaintext's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetDataKeyPlaintextResponse {
    /// base64 of the data key, or of it encrypted to EncryptionPublicKey. **Secret.**
    pub plaintext: SecretString,
}

/// GetDataKeyCiphertextBlob's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetDataKeyCiphertextBlobResponse {
    /// base64 of the data key's CiphertextBlob (Decrypt opens it).
    pub ciphertext_blob: String,
}

/// ScheduleDataKeyDeletion.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleDataKeyDeletionRequest {
    /// The data key.
    pub data_key_id: Option<String>,
    /// 7 to 30.
    pub pending_window_in_days: Option<u64>,
}

/// ScheduleDataKeyDeletion's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleDataKeyDeletionResponse {
    /// Unix seconds at which it is purged.
    pub deletion_date: u64,
    /// The data key.
    pub data_key_id: String,
}

/// CancelDataKeyDeletion's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyIdResponse {
    /// The data key.
    pub data_key_id: String,
}

/// UpdateDataKeyName.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateDataKeyNameRequest {
    /// The data key.
    pub data_key_id: Option<String>,
    /// The new name.
    pub data_key_name: Option<String>,
}

/// UpdateDataKeyDescription.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateDataKeyDescriptionRequest {
    /// The data key.
    pub data_key_id: Option<String>,
    /// The new description.
    pub description: Option<String>,
}

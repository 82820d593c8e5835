//! The wire types of the hosted data-key actions: their requests and responses
//! (PascalCase JSON, as tccli and tencentcloud-sdk-python send and read them).

use serde::Serialize;
use serde_json::Value;

use super::super::SecretString;

tencent_request! {
    /// The `DataKeyId` of a request about one data key.
    DataKeyIdRequest {
        /// The data key.
        data_key_id: String,
    }
}

tencent_request! {
    /// The `DataKeyIds` of a batch request.
    DataKeyIdsRequest {
        /// Up to 100 data keys.
        data_key_ids: Vec<String>,
    }
}

tencent_request! {
    /// ImportDataKey.
    ImportDataKeyRequest {
        /// The name (required, unique).
        data_key_name: String,
        /// ImportType 1: a CiphertextBlob of GenerateDataKey; 2: base64 of the data key.
        /// **Secret** with ImportType 2.
        import_key_material: SecretString,
        /// 1 (ciphertext) or 2 (plaintext).
        import_type: u64,
        /// At most 100 bytes.
        description: String,
        /// The CMK: required with ImportType 2; with 1, checked against the blob's.
        key_id: String,
        /// Tags.
        tags: Value,
    }
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

tencent_request! {
    /// ListDataKeys.
    ListDataKeysRequest {
        /// Skip this many.
        offset: u64,
        /// At most this many (default 10, at most 200).
        limit: u64,
        /// 0: data keys users made (all here); 1: made by cloud products (none).
        role: u64,
    }
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

tencent_request! {
    /// ListDataKeyDetail.
    ListDataKeyDetailRequest {
        /// Skip this many.
        offset: u64,
        /// At most this many (default 10, at most 200).
        limit: u64,
        /// As in ListDataKeys.
        role: u64,
        /// 0: newest first (default); 1: oldest first.
        order_type: u64,
        /// 0 all, 1 Enabled, 2 Disabled, 3 PendingDelete.
        key_state: u64,
        /// Substring of the DataKeyId or the DataKeyName.
        search_key_alias: String,
        /// `TENCENT_KMS`, `EXTERNAL` or `ALL`.
        origin: String,
        /// Only the data keys of this CMK.
        key_id: String,
        /// Only data keys of this many bytes.
        data_key_len: u64,
        /// As ListKeyDetail's.
        tag_filters: Value,
    }
}

tencent_request! {
    /// GetDataKeyPlaintext.
    GetDataKeyPlaintextRequest {
        /// The data key.
        data_key_id: String,
        /// As Decrypt's: the Plaintext is returned encrypted to this public key.
        encryption_public_key: String,
        /// As Decrypt's.
        encryption_algorithm: String,
    }
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

tencent_request! {
    /// ScheduleDataKeyDeletion.
    ScheduleDataKeyDeletionRequest {
        /// The data key.
        data_key_id: String,
        /// 7 to 30.
        pending_window_in_days: u64,
    }
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

tencent_request! {
    /// UpdateDataKeyName.
    UpdateDataKeyNameRequest {
        /// The data key.
        data_key_id: String,
        /// The new name.
        data_key_name: String,
    }
}

tencent_request! {
    /// UpdateDataKeyDescription.
    UpdateDataKeyDescriptionRequest {
        /// The data key.
        data_key_id: String,
        /// The new description.
        description: String,
    }
}

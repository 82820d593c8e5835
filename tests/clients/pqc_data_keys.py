# -*- coding: utf-8 -*-
# The post-quantum and data-key actions through the real tencentcloud-sdk-python client
# (typed request models, as a user's program calls them), back to back, no sleeps:
# PostQuantumCrypto{Encrypt,Decrypt,Sign,Verify} on Kyber_AES / Dilithium keys, and
# GenerateDataKey IsHostedByKms + the 15 data-key actions, with tags and TagFilters.
# A hosted data key read back with EncryptionPublicKey is decrypted here with
# pycryptodome's RSA-OAEP, so the key never crosses the wire in clear.
#
# env: KMS_ENDPOINT=127.0.0.1:PORT, TENCENTCLOUD_SECRET_ID/KEY.
# Prints "OK <Action> ..." for each checked step; exits non-zero on the first failure.
import base64
import json
import os
import sys

from Crypto.Cipher import PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.kms.v20190118 import kms_client, models

http = HttpProfile(endpoint=os.environ["KMS_ENDPOINT"], protocol="http")
c = kms_client.KmsClient(
    credential.Credential(os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"]),
    "ap-guangzhou",
    ClientProfile(httpProfile=http),
)


def call(action, params):
    req = getattr(models, action + "Request")()
    req.from_json_string(json.dumps(params))
    return json.loads(getattr(c, action)(req).to_json_string())


def refused(action, params, code):
    try:
        call(action, params)
    except TencentCloudSDKException as e:
        if e.code != code:
            sys.exit(f"{action}: expected {code}, got {e.code}: {e.message}")
        print("OK", action, "refused", code)
        return
    sys.exit(f"{action}: expected {code}, got success")


def ok(action, params, note=""):
    r = call(action, params)
    print("OK", action, note)
    return r


b64 = lambda b: base64.b64encode(b).decode()

# Post-quantum: encrypt/decrypt, sign/verify.
kem = ok("CreateKey", {"Alias": "pq-kem", "KeyUsage": "ASYMMETRIC_Encrypt_Decrypt_Kyber_AES"})["KeyId"]
dsa = ok("CreateKey", {"Alias": "pq-dsa", "KeyUsage": "ASYMMETRIC_SIGN_VERIFY_DILITHIUM"})["KeyId"]
algs = ok("ListAlgorithms", {})
assert any(a["Algorithm"] == "Kyber_AES" for a in algs["AsymmetricAlgorithms"]), algs
assert any(a["Algorithm"] == "Dilithium" for a in algs["AsymmetricSignVerifyAlgorithms"]), algs
secret = b"quantum-safe payload"
blob = ok("PostQuantumCryptoEncrypt", {"KeyId": kem, "PlainText": b64(secret)})["CiphertextBlob"]
d = ok("PostQuantumCryptoDecrypt", {"CiphertextBlob": blob}, "round trip")
assert base64.b64decode(d["PlainText"]) == secret and d["KeyId"] == kem, d
raw = bytearray(base64.b64decode(blob))
raw[-5] ^= 0x40
refused("PostQuantumCryptoDecrypt", {"CiphertextBlob": b64(bytes(raw))},
        "InvalidParameterValue.InvalidCiphertext")
msg = b64(b"signed by a lattice")
sig = ok("PostQuantumCryptoSign", {"KeyId": dsa, "Message": msg})["Signature"]
v = ok("PostQuantumCryptoVerify", {"KeyId": dsa, "Message": msg, "SignatureValue": sig}, "valid")
assert v["SignatureValid"] is True, v
bad = bytearray(base64.b64decode(sig))
bad[0] ^= 1
v = ok("PostQuantumCryptoVerify", {"KeyId": dsa, "Message": msg, "SignatureValue": b64(bytes(bad))},
       "tampered")
assert v["SignatureValid"] is False, v
refused("PostQuantumCryptoSign", {"KeyId": kem, "Message": msg}, "InvalidParameterValue.InvalidKeyUsage")

# Hosted data keys.
cmk = ok("CreateKey", {"Alias": "dk-cmk", "Tags": [{"TagKey": "team", "TagValue": "db"}]})["KeyId"]
g = ok("GenerateDataKey", {"KeyId": cmk, "KeySpec": "AES_256", "IsHostedByKms": 1,
                           "DataKeyName": "orders", "Description": "orders table",
                           "Tags": [{"TagKey": "app", "TagValue": "shop"}]})
dk_id, dk = g["DataKeyId"], base64.b64decode(g["Plaintext"])
assert dk_id and len(dk) == 32, g
refused("GenerateDataKey", {"KeyId": cmk, "KeySpec": "AES_256", "IsHostedByKms": 1, "DataKeyName": "orders"},
        "InvalidParameterValue.DataKeyNameAlreadyExists")
plain = ok("GenerateDataKey", {"KeyId": cmk, "NumberOfBytes": 16})
imp = ok("ImportDataKey", {"DataKeyName": "imported", "ImportType": 1,
                           "ImportKeyMaterial": plain["CiphertextBlob"]})
imp_id = imp["DataKeyId"]
imp2 = ok("ImportDataKey", {"DataKeyName": "imported-clear", "ImportType": 2, "KeyId": cmk,
                            "ImportKeyMaterial": b64(bytes(range(24)))})
md = ok("DescribeDataKey", {"DataKeyId": dk_id})["DataKeyMetadata"]
assert (md["DataKeyName"], md["KeyId"], md["NumberOfBytes"], md["KeyState"]) == ("orders", cmk, 32, "Enabled"), md
mds = ok("DescribeDataKeys", {"DataKeyIds": [dk_id, imp_id]})["DataKeyMetadatas"]
assert [m["DataKeyId"] for m in mds] == [dk_id, imp_id], mds
lst = ok("ListDataKeys", {"Limit": 200})
assert lst["TotalCount"] == 3, lst
det = ok("ListDataKeyDetail", {"TagFilters": [{"TagKey": "app", "TagValue": ["shop"]}]})
assert [m["DataKeyId"] for m in det["DataKeyMetadatas"]] == [dk_id], det
det = ok("ListDataKeyDetail", {"Origin": "EXTERNAL", "DataKeyLen": 24})
assert [m["DataKeyId"] for m in det["DataKeyMetadatas"]] == [imp2["DataKeyId"]], det
keys = ok("ListKeyDetail", {"KeyUsage": "ALL", "TagFilters": [{"TagKey": "team", "TagValue": ["db"]}]})
assert [m["KeyId"] for m in keys["KeyMetadatas"]] == [cmk], keys

p = ok("GetDataKeyPlaintext", {"DataKeyId": dk_id}, "in clear")
assert base64.b64decode(p["Plaintext"]) == dk
rsa = RSA.generate(2048)
p = ok("GetDataKeyPlaintext", {"DataKeyId": dk_id, "EncryptionPublicKey": rsa.publickey().export_key().decode(),
                               "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}, "to an RSA key")
assert PKCS1_OAEP.new(rsa, hashAlgo=SHA256).decrypt(base64.b64decode(p["Plaintext"])) == dk
cb = ok("GetDataKeyCiphertextBlob", {"DataKeyId": dk_id})["CiphertextBlob"]
assert base64.b64decode(ok("Decrypt", {"CiphertextBlob": cb})["Plaintext"]) == dk

ok("UpdateDataKeyName", {"DataKeyId": dk_id, "DataKeyName": "orders-v2"})
ok("UpdateDataKeyDescription", {"DataKeyId": dk_id, "Description": "renamed"})
md = ok("DescribeDataKey", {"DataKeyId": dk_id})["DataKeyMetadata"]
assert (md["DataKeyName"], md["Description"]) == ("orders-v2", "renamed"), md
ok("DisableDataKey", {"DataKeyId": dk_id})
refused("GetDataKeyPlaintext", {"DataKeyId": dk_id}, "ResourceUnavailable.DataKeyDisabled")
ok("EnableDataKey", {"DataKeyId": dk_id})
ok("DisableDataKeys", {"DataKeyIds": [dk_id, imp_id]})
refused("GetDataKeyCiphertextBlob", {"DataKeyId": imp_id}, "ResourceUnavailable.DataKeyDisabled")
ok("EnableDataKeys", {"DataKeyIds": [dk_id, imp_id]})
s = ok("ScheduleDataKeyDeletion", {"DataKeyId": imp_id, "PendingWindowInDays": 7})
assert s["DataKeyId"] == imp_id and s["DeletionDate"] > 0, s
refused("GetDataKeyPlaintext", {"DataKeyId": imp_id}, "ResourceUnavailable.DataKeyPendingDelete")
ok("CancelDataKeyDeletion", {"DataKeyId": imp_id})
assert ok("DescribeDataKey", {"DataKeyId": imp_id})["DataKeyMetadata"]["KeyState"] == "Disabled"
refused("DescribeDataKey", {"DataKeyId": "not-a-data-key"}, "InvalidParameterValue.InvalidDataKeyId")
refused("DescribeKey", {"KeyId": "not a key id"}, "InvalidParameterValue.InvalidKeyId")
refused("CreateKey", {"Alias": "p384", "KeyUsage": "ASYMMETRIC_SIGN_VERIFY_ECDSA384"},
        "UnsupportedOperation.UnsupportedKeyUsageInCurrentRegion")
print("PQC AND DATA KEYS OK")

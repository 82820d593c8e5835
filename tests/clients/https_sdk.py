# -*- coding: utf-8 -*-
# tencentcloud-sdk-python over HTTPS against a kmsfs KMS server with a private CA:
# HttpProfile(protocol="https", certification=CA). GenerateDataKey, then Decrypt of its
# blob gives the same key. env: KMS_ENDPOINT=127.0.0.1:PORT, KMS_CA, KMS_KEY_ID,
# TENCENTCLOUD_SECRET_ID/KEY. Prints "HTTPS OK"; exits non-zero on any failure.
import base64
import os

from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.kms.v20190118 import kms_client, models

http = HttpProfile(endpoint=os.environ["KMS_ENDPOINT"], protocol="https",
                   certification=os.environ["KMS_CA"])
client = kms_client.KmsClient(
    credential.Credential(os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"]),
    "ap-guangzhou", ClientProfile(httpProfile=http))
req = models.GenerateDataKeyRequest()
req.KeyId = os.environ["KMS_KEY_ID"]
req.KeySpec = "AES_256"
dk = client.GenerateDataKey(req)
assert len(base64.b64decode(dk.Plaintext)) == 32
req = models.DecryptRequest()
req.CiphertextBlob = dk.CiphertextBlob
assert client.Decrypt(req).Plaintext == dk.Plaintext
print("HTTPS OK")

# -*- coding: utf-8 -*-
# Seed 002, "Envelope Encryption/Decryption", adapted to Python 3 and pointed at a local
# kmsfs KMS server: the KMS calls (GenerateDataKey, Decrypt) are the seed's; the only
# changes are print(), bytes/str handling, PKCS#7 padding for the seed's AES-ECB, and
# KmsInit taking an HttpProfile(endpoint=..., protocol="http").
#
# Usage: python3 envelope_sample.py   (env: KMS_ENDPOINT=127.0.0.1:PORT, KMS_KEY_ID,
#        TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY). Exits non-zero on any failure.
import base64
import os
import sys

from Crypto.Cipher import AES
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.kms.v20190118 import kms_client, models


def KmsInit(region="ap-guangzhou", secretId="", secretKey="", endpoint=""):
    try:
        credProfile = credential.Credential(secretId, secretKey)
        httpProfile = HttpProfile(endpoint=endpoint, protocol="http")
        client = kms_client.KmsClient(credProfile, region, ClientProfile(httpProfile=httpProfile))
        return client
    except TencentCloudSDKException as err:
        print(err)
        return None


def GenerateDatakey(client, keyId, keySpec='AES_128'):
    try:
        req = models.GenerateDataKeyRequest()
        req.KeyId = keyId
        req.KeySpec = keySpec
        # Call the `GenerateDataKey` API
        generatedatakeyResp = client.GenerateDataKey(req)
        # The plaintext key needs to be used in the memory, while the
        # ciphertext key is used for persistent storage
        print("DEK cipher=" + generatedatakeyResp.CiphertextBlob)
        return generatedatakeyResp
    except TencentCloudSDKException as err:
        print(err)


def pad(data):
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def unpad(data):
    return data[: -data[-1]]


# User-defined logic. The example here is for reference only
def LocalEncrypt(dataKey="", plaintext=""):
    aes = AES.new(base64.b64decode(dataKey), AES.MODE_ECB)
    encryptedData = aes.encrypt(pad(plaintext.encode("utf-8")))
    ciphertext = base64.b64encode(encryptedData).decode()
    print("plaintext=", plaintext, ", cipher=", ciphertext)
    return ciphertext


def DecryptDataKey(client, ciphertextBlob):
    try:
        req = models.DecryptRequest()
        req.CiphertextBlob = ciphertextBlob
        rsp = client.Decrypt(req)  # Call the `Decrypt` API to decrypt the DEK
        return rsp
    except TencentCloudSDKException as err:
        print(err)


# User-defined logic. The example here is for reference only
def LocalDecrypt(dataKey="", ciphertext=""):
    aes = AES.new(base64.b64decode(dataKey), AES.MODE_ECB)
    decryptedData = aes.decrypt(base64.b64decode(ciphertext))
    plaintext = unpad(decryptedData).decode("utf-8")
    print("plaintext=", plaintext, ", cipher=", ciphertext)
    return plaintext


if __name__ == '__main__':
    # User-defined parameters
    secretId = os.environ["TENCENTCLOUD_SECRET_ID"]
    secretKey = os.environ["TENCENTCLOUD_SECRET_KEY"]
    region = "ap-guangzhou"
    keyId = os.environ["KMS_KEY_ID"]
    endpoint = os.environ["KMS_ENDPOINT"]
    plaintext = "abcdefg123456789abcdefg123456789abcdefg"

    # Encryption: a DEK from GenerateDataKey encrypts locally; the DEK's ciphertext is
    # what would be stored beside the data.
    client = KmsInit(region, secretId, secretKey, endpoint)
    rsp = GenerateDatakey(client, keyId)
    if rsp is None:
        sys.exit("GenerateDataKey failed")
    if len(base64.b64decode(rsp.Plaintext)) != 16:
        sys.exit("AES_128 data key is not 16 bytes")
    dekCipherBlob = rsp.CiphertextBlob
    ciphertext = LocalEncrypt(rsp.Plaintext, plaintext)
    del rsp

    # Decryption, as a later process would: only the stored DEK ciphertext and data.
    client = KmsInit(region, secretId, secretKey, endpoint)
    rsp = DecryptDataKey(client, dekCipherBlob)
    if rsp is None:
        sys.exit("Decrypt failed")
    if rsp.KeyId != keyId:
        sys.exit("Decrypt names key %s, not %s" % (rsp.KeyId, keyId))
    recovered = LocalDecrypt(rsp.Plaintext, ciphertext)
    if recovered != plaintext:
        sys.exit("envelope round trip failed: %r != %r" % (recovered, plaintext))
    print("ENVELOPE OK")

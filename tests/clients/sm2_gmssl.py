# -*- coding: utf-8 -*-
# SM2 encryption with gmssl (PyPI, an independent pure-Python SM2) against a kmsfs KMS
# server through tencentcloud-sdk-python:
#  1. gmssl encrypts to the key GetPublicKey gives (C1C3C2); the ciphertext, put in the
#     C1C3C2 ASN.1 layout the API asks for, is decrypted by AsymmetricSm2Decrypt;
#  2. GenerateDataKey with an SM2 EncryptionPublicKey and EncryptionAlgorithm SM2 (raw
#     C1 || C3 || C2, C1 the uncompressed point 04 || x || y) is opened by gmssl with the
#     caller's private key, and equals the data key Decrypt gives for the blob;
#  3. a tampered ciphertext fails with FailedOperation.DecryptError.
# env: KMS_ENDPOINT, TENCENTCLOUD_SECRET_ID/KEY. Prints "OK <case>"; exits 1 otherwise.
import base64
import os
import sys

from gmssl import func, sm2
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.kms.v20190118 import kms_client

c = kms_client.KmsClient(
    credential.Credential(os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"]),
    "ap-guangzhou",
    ClientProfile(httpProfile=HttpProfile(endpoint=os.environ["KMS_ENDPOINT"], protocol="http")),
)


def call(action, params):
    return c.call_json(action, params)["Response"]


def der_len(n):
    return bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else bytes([0x82, n >> 8, n & 0xFF])


def der(tag, body):
    return bytes([tag]) + der_len(len(body)) + body


def der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return der(0x02, b)


def spki_point(pem):
    # The uncompressed point ends the SubjectPublicKeyInfo: 04 || x || y, 65 bytes.
    raw = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
    assert raw[-65] == 4, raw.hex()
    return raw[-64:].hex()


key = call("CreateKey", {"Alias": "gmssl-sm2", "KeyUsage": "ASYMMETRIC_DECRYPT_SM2"})["KeyId"]
pub = call("GetPublicKey", {"KeyId": key})["PublicKeyPem"]
enc = sm2.CryptSM2(public_key=spki_point(pub), private_key=None, mode=1)
msg = b"plaintext for the kms, via gmssl"
ct = enc.encrypt(msg)  # x || y || C3 || C2 (gmssl leaves out the 04)
x, y, c3, c2 = ct[:32], ct[32:64], ct[64:96], ct[96:]
asn1 = der(0x30, der_int(x) + der_int(y) + der(0x04, c3) + der(0x04, c2))
got = call("AsymmetricSm2Decrypt", {"KeyId": key, "Ciphertext": base64.b64encode(asn1).decode()})
if base64.b64decode(got["Plaintext"]) != msg:
    sys.exit("gmssl -> AsymmetricSm2Decrypt: wrong plaintext")
print("OK gmssl-encrypt-kms-decrypt")

# The caller's own SM2 key pair, made by gmssl.
priv = func.random_hex(64)
caller = sm2.CryptSM2(public_key="", private_key=priv, mode=1)
caller.public_key = caller._kg(int(priv, 16), sm2.default_ecc_table["g"])
point = bytes.fromhex("04" + caller.public_key)
spki = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200") + point
caller_pem = "-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n" % base64.b64encode(spki).decode()
sym = call("CreateKey", {"Alias": "gmssl-dk"})["KeyId"]
g = call("GenerateDataKey", {"KeyId": sym, "KeySpec": "AES_256", "EncryptionPublicKey": caller_pem, "EncryptionAlgorithm": "SM2"})
sealed = base64.b64decode(g["Plaintext"])
if sealed[0] != 4 or len(sealed) != 65 + 32 + 32:
    sys.exit("SM2 data key: not 04||x||y || C3 || C2 of a 32-byte key (%d bytes)" % len(sealed))
dek = caller.decrypt(sealed[1:])
plain = base64.b64decode(call("Decrypt", {"CiphertextBlob": g["CiphertextBlob"]})["Plaintext"])
if not dek or dek != plain:
    sys.exit("SM2 data key: gmssl opened %r, Decrypt gave another key" % (dek,))
print("OK kms-sm2-data-key-gmssl-decrypt")

bad = bytearray(asn1)
bad[-1] ^= 1
try:
    call("AsymmetricSm2Decrypt", {"KeyId": key, "Ciphertext": base64.b64encode(bytes(bad)).decode()})
    sys.exit("a tampered SM2 ciphertext decrypted")
except TencentCloudSDKException as e:
    if e.code != "FailedOperation.DecryptError":
        sys.exit("tampered: %s" % e.code)
print("OK tampered FailedOperation.DecryptError")

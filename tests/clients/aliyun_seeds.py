# -*- coding: utf-8 -*-
# The Alibaba Cloud seeds through the real Alibaba clients against a kmsfs KMS server:
# seed 001 (RSA_2048 key, ListKeyVersions, GetPublicKey, openssl OAEP-SHA256/MGF1-SHA256
# encryption, AsymmetricDecrypt) exactly as the seed runs it, the seed 004 scenarios
# (symmetric round trip with EncryptionContext, 6 KB limit, envelope encryption with
# GenerateDataKey, asymmetric encrypt/decrypt, sign/verify checked by openssl), key
# versions, aliases, tags, DryRun, and the error paths, back to back.
#
# usage: aliyun_seeds.py tea|tea-v2|core      (tea = alibabacloud-kms20160120, ACS3;
#        tea-v2 = the same with signature_algorithm='v2'; core = aliyun-python-sdk-kms)
# env: KMS_PORT, ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET, TENCENT_KEY_ID (a key made
#      through the Tencent API, used here), WORKDIR.
# Prints "OK <step>" per step; exits non-zero on the first failure.
import base64
import hashlib
import json
import os
import subprocess
import sys

MODE = sys.argv[1]
PORT = os.environ["KMS_PORT"]
AK = os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"]
SK = os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
os.chdir(os.environ["WORKDIR"])
b64 = lambda b: base64.b64encode(b).decode()


class Failed(Exception):
    def __init__(self, status, code):
        super().__init__(f"{status} {code}")
        self.status, self.code = status, code


if MODE.startswith("tea"):
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_kms20160120.client import Client
    from alibabacloud_kms20160120 import models as m
    from Tea.exceptions import TeaException

    def snake(name):
        return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")

    def make(ak=AK, sk=SK):
        cfg = Config(access_key_id=ak, access_key_secret=sk, endpoint=f"127.0.0.1:{PORT}", protocol="http")
        if MODE == "tea-v2":
            cfg.signature_algorithm = "v2"
        return Client(cfg)

    CLIENT = make()

    CONTEXTS = ("EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext")

    def call(action, client=None, **params):
        # The new SDK takes an EncryptionContext as a dict and sends it as JSON itself.
        params = {k: json.loads(v) if k in CONTEXTS else v for k, v in params.items()}
        req = getattr(m, action + "Request")()
        req.from_map(params)
        try:
            body = getattr(client or CLIENT, snake(action))(req).body
        except TeaException as e:
            raise Failed(getattr(e, "status_code", None) or (e.data or {}).get("statusCode"), e.code)
        return body.to_map()
else:
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    import importlib

    def make(ak=AK, sk=SK):
        return AcsClient(ak, sk, "cn-hangzhou")

    CLIENT = make()

    def call(action, client=None, **params):
        mod = importlib.import_module(f"aliyunsdkkms.request.v20160120.{action}Request")
        req = getattr(mod, action + "Request")()
        req.set_endpoint(f"127.0.0.1:{PORT}")
        req.set_protocol_type("http")
        for k, v in params.items():
            getattr(req, "set_" + k)(v)
        try:
            return json.loads((client or CLIENT).do_action_with_exception(req))
        except ServerException as e:
            raise Failed(e.get_http_status(), e.get_error_code())


def fails(status, code, action, client=None, **params):
    try:
        r = call(action, client, **params)
    except Failed as e:
        if (e.status, e.code) != (status, code):
            sys.exit(f"{action}: expected {status} {code}, got {e.status} {e.code}")
        print("OK", action, "refused", status, code)
        return
    sys.exit(f"{action}: expected {status} {code}, got success {r}")


def sh(cmd, data=None):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, input=data).stdout


# ---- seed 001: aliyun kms CreateKey --KeySpec=RSA_2048 --KeyUsage=ENCRYPT/DECRYPT --ProtectionLevel=HSM
kid = call("CreateKey", KeySpec="RSA_2048", KeyUsage="ENCRYPT/DECRYPT", ProtectionLevel="HSM")["KeyMetadata"]["KeyId"]
vid = call("ListKeyVersions", KeyId=kid)["KeyVersions"]["KeyVersion"][0]["KeyVersionId"]
open("rsa_publickey.pub", "w").write(call("GetPublicKey", KeyId=kid, KeyVersionId=vid)["PublicKey"])
open("plaintext-file.txt", "w").write("this is plaintext\n")
sh("openssl pkeyutl -encrypt -in plaintext-file.txt -inkey rsa_publickey.pub -pubin "
   "-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 "
   "-out plaintext-file.enc")
ct = b64(open("plaintext-file.enc", "rb").read())
r = call("AsymmetricDecrypt", KeyId=kid, KeyVersionId=vid, Algorithm="RSAES_OAEP_SHA_256", CiphertextBlob=ct)
assert base64.b64decode(r["Plaintext"]) == b"this is plaintext\n", r
assert r["KeyVersionId"] == vid
print("OK seed-001")
fails(400, "MissingParameter", "GetPublicKey", KeyId=kid)

# ---- seed 004: symmetric
sym = call("CreateKey", KeySpec="Aliyun_AES_256", KeyUsage="ENCRYPT/DECRYPT", Description="seed 004")["KeyMetadata"]
assert (sym["KeySpec"], sym["KeyState"], sym["Origin"]) == ("Aliyun_AES_256", "Enabled", "Aliyun_KMS"), sym
sk = sym["KeyId"]
ctx = json.dumps({"app": "seed004", "env": "test"})
e = call("Encrypt", KeyId=sk, Plaintext=b64(b"hello, alibaba"), EncryptionContext=ctx)
assert e["KeyVersionId"] == sym["PrimaryKeyVersion"], (e, sym)
# The context binds canonically: the same map in another order and spacing opens it.
d = call("Decrypt", CiphertextBlob=e["CiphertextBlob"], EncryptionContext='{"env":"test","app":"seed004"}')
assert base64.b64decode(d["Plaintext"]) == b"hello, alibaba" and d["KeyId"] == sk, d
fails(400, "InvalidParameter", "Decrypt", CiphertextBlob=e["CiphertextBlob"], EncryptionContext='{"app":"other"}')
big = call("Encrypt", KeyId=sk, Plaintext=b64(b"x" * 6144))
assert base64.b64decode(call("Decrypt", CiphertextBlob=big["CiphertextBlob"])["Plaintext"]) == b"x" * 6144
fails(400, "InvalidParameter", "Encrypt", KeyId=sk, Plaintext=b64(b"x" * 6145))
print("OK seed-004-symmetric")
# Envelope encryption: a data key, used locally, recovered from its ciphertext.
g = call("GenerateDataKey", KeyId=sk, KeySpec="AES_256", EncryptionContext=ctx)
dk = base64.b64decode(g["Plaintext"])
assert len(dk) == 32
back = call("Decrypt", CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ctx)
assert base64.b64decode(back["Plaintext"]) == dk
w = call("GenerateDataKeyWithoutPlaintext", KeyId=sk, NumberOfBytes=16)
assert "Plaintext" not in w or not w.get("Plaintext"), w
assert len(base64.b64decode(call("Decrypt", CiphertextBlob=w["CiphertextBlob"])["Plaintext"])) == 16
print("OK seed-004-envelope")
# Asymmetric encrypt/decrypt: openssl → KMS (seed 001 above) and KMS → KMS, with the limit.
ae = call("AsymmetricEncrypt", KeyId=kid, KeyVersionId=vid, Algorithm="RSAES_OAEP_SHA_256", Plaintext=b64(b"asym"))
ad = call("AsymmetricDecrypt", KeyId=kid, KeyVersionId=vid, Algorithm="RSAES_OAEP_SHA_256",
          CiphertextBlob=ae["CiphertextBlob"])
assert base64.b64decode(ad["Plaintext"]) == b"asym"
fails(400, "InvalidParameter", "AsymmetricEncrypt", KeyId=kid, KeyVersionId=vid, Algorithm="RSAES_OAEP_SHA_256",
      Plaintext=b64(b"y" * 191))
# Sign/verify: the KMS signs a digest, openssl verifies with the public key; a changed
# digest does not verify, in the KMS nor in openssl.
sig_key = call("CreateKey", KeySpec="EC_P256", KeyUsage="SIGN/VERIFY")["KeyMetadata"]["KeyId"]
sv = call("ListKeyVersions", KeyId=sig_key)["KeyVersions"]["KeyVersion"][0]["KeyVersionId"]
open("ec.pub", "w").write(call("GetPublicKey", KeyId=sig_key, KeyVersionId=sv)["PublicKey"])
msg = b"signed by the KMS"
open("msg.bin", "wb").write(msg)
digest = hashlib.sha256(msg).digest()
s = call("AsymmetricSign", KeyId=sig_key, KeyVersionId=sv, Algorithm="ECDSA_SHA_256", Digest=b64(digest))
open("msg.sig", "wb").write(base64.b64decode(s["Value"]))
assert b"Verified OK" in sh("openssl dgst -sha256 -verify ec.pub -signature msg.sig msg.bin")
v = call("AsymmetricVerify", KeyId=sig_key, KeyVersionId=sv, Algorithm="ECDSA_SHA_256", Digest=b64(digest),
         Value=s["Value"])
assert v["Value"] is True, v
v = call("AsymmetricVerify", KeyId=sig_key, KeyVersionId=sv, Algorithm="ECDSA_SHA_256",
         Digest=b64(hashlib.sha256(b"other").digest()), Value=s["Value"])
assert v["Value"] is False, v
rsa_sig = call("CreateKey", KeySpec="RSA_2048", KeyUsage="SIGN/VERIFY")["KeyMetadata"]["KeyId"]
rv = call("ListKeyVersions", KeyId=rsa_sig)["KeyVersions"]["KeyVersion"][0]["KeyVersionId"]
open("rsa.pub", "w").write(call("GetPublicKey", KeyId=rsa_sig, KeyVersionId=rv)["PublicKey"])
s = call("AsymmetricSign", KeyId=rsa_sig, KeyVersionId=rv, Algorithm="RSA_PSS_SHA_256", Digest=b64(digest))
open("msg.sig", "wb").write(base64.b64decode(s["Value"]))
assert b"Verified OK" in sh("openssl dgst -sha256 -verify rsa.pub -sigopt rsa_padding_mode:pss "
                             "-sigopt rsa_pss_saltlen:-2 -signature msg.sig msg.bin")
print("OK seed-004-asymmetric")

# ---- key versions, aliases, tags, DryRun
nv = call("CreateKeyVersion", KeyId=kid)["KeyVersion"]["KeyVersionId"]
versions = [x["KeyVersionId"] for x in call("ListKeyVersions", KeyId=kid)["KeyVersions"]["KeyVersion"]]
assert versions == [vid, nv], versions
assert call("DescribeKeyVersion", KeyId=kid, KeyVersionId=nv)["KeyVersion"]["KeyVersionId"] == nv
# The old version still decrypts what was sealed for it; the new one has its own key pair.
r = call("AsymmetricDecrypt", KeyId=kid, KeyVersionId=vid, Algorithm="RSAES_OAEP_SHA_256", CiphertextBlob=ct)
assert base64.b64decode(r["Plaintext"]) == b"this is plaintext\n"
assert call("GetPublicKey", KeyId=kid, KeyVersionId=nv)["PublicKey"] != open("rsa_publickey.pub").read()
fails(400, "Rejected.UnsupportedOperation", "CreateKeyVersion", KeyId=sk)
alias = "alias/seed004-" + MODE.replace("-", "")
call("CreateAlias", AliasName=alias, KeyId=sk)
assert call("Encrypt", KeyId=alias, Plaintext=b64(b"by alias"))["KeyId"] == sk
names = [a["AliasName"] for a in call("ListAliases", PageSize=100)["Aliases"]["Alias"]]
assert alias in names, names
call("DeleteAlias", AliasName=alias)
fails(404, "Forbidden.AliasNotFound", "Encrypt", KeyId=alias, Plaintext=b64(b"x"))
call("TagResource", KeyId=sk, Tags=json.dumps([{"TagKey": "team", "TagValue": "storage"}]))
tags = call("ListResourceTags", KeyId=sk)["Tags"]["Tag"]
assert [(t["TagKey"], t["TagValue"]) for t in tags] == [("team", "storage")], tags
call("UntagResource", KeyId=sk, TagKeys=json.dumps(["team"]))
assert not call("ListResourceTags", KeyId=sk)["Tags"]["Tag"]
fails(400, "DryRunOperationError", "Encrypt", KeyId=sk, Plaintext=b64(b"x"), DryRun="true")
print("OK versions-aliases-tags")

# ---- one key store, two clouds: a key made through the Tencent API, used here
tk = os.environ["TENCENT_KEY_ID"]
md = call("DescribeKey", KeyId=tk)["KeyMetadata"]
assert (md["KeySpec"], md["KeyUsage"]) == ("Aliyun_AES_256", "ENCRYPT/DECRYPT"), md
te = call("Encrypt", KeyId=tk, Plaintext=b64(b"made by tencent, used by alibaba"))
open("from_aliyun.blob", "w").write(te["CiphertextBlob"])
open("aliyun_key.txt", "w").write(sk)
print("OK cross-api")

# ---- lifecycle and state errors
call("DisableKey", KeyId=sk)
fails(409, "Rejected.Disabled", "Encrypt", KeyId=sk, Plaintext=b64(b"x"))
fails(409, "Rejected.Disabled", "Decrypt", CiphertextBlob=e["CiphertextBlob"], EncryptionContext=ctx)
call("EnableKey", KeyId=sk)
call("ScheduleKeyDeletion", KeyId=sk, PendingWindowInDays=7)
assert call("DescribeKey", KeyId=sk)["KeyMetadata"]["KeyState"] == "PendingDeletion"
fails(409, "Rejected.PendingDeletion", "Encrypt", KeyId=sk, Plaintext=b64(b"x"))
fails(409, "Rejected.StateModifiedFailed", "EnableKey", KeyId=sk)
call("CancelKeyDeletion", KeyId=sk)
assert call("DescribeKey", KeyId=sk)["KeyMetadata"]["KeyState"] == "Enabled"
call("UpdateKeyDescription", KeyId=sk, Description="after")
assert call("DescribeKey", KeyId=sk)["KeyMetadata"]["Description"] == "after"
listed = call("ListKeys", PageSize=100)
assert sk in [k["KeyId"] for k in listed["Keys"]["Key"]] and listed["TotalCount"] >= 5, listed
print("OK lifecycle")

# ---- authentication and lookup errors
fails(404, "Forbidden.KeyNotFound", "DescribeKey", KeyId="00000000-0000-4000-8000-000000000000")
fails(404, "InvalidAccessKeyId.NotFound", "DescribeKey", make("LTAInoSuchKeyId", SK), KeyId=sk)
wrong = make(AK, SK + "x")
if MODE == "core":
    # aliyunsdkcore turns a SignatureDoesNotMatch whose string to sign equals its own
    # into InvalidAccessKeySecret (ALIYUN-KMS-API.md §4).
    fails(400, "InvalidAccessKeySecret", "DescribeKey", wrong, KeyId=sk)
else:
    fails(400, "SignatureDoesNotMatch", "DescribeKey", wrong, KeyId=sk)
print("OK auth-errors")

# A replayed nonce and an expired timestamp, made by pinning the client's own nonce and
# clock functions (the request is otherwise exactly what the client sends).
if MODE == "core":
    from aliyunsdkcore.utils import parameter_helper as helper
    nonce_fn, date_fn = (helper, "get_uuid"), (helper, "get_iso_8061_date")
else:
    from alibabacloud_tea_openapi.utils import Utils
    nonce_fn, date_fn = (Utils, "get_nonce"), (Utils, "get_timestamp")
old_date = "2020-01-01T00:00:00Z"
fixed = "0123456789abcdef0123456789ab" + MODE.replace("-", "")[:4].ljust(4, "0")
orig = getattr(*nonce_fn)
setattr(nonce_fn[0], nonce_fn[1], staticmethod(lambda *a: fixed) if MODE != "core" else (lambda *a: fixed))
try:
    call("DescribeKey", KeyId=sk)
    fails(400, "SignatureNonceUsed", "DescribeKey", KeyId=sk)
finally:
    setattr(nonce_fn[0], nonce_fn[1], staticmethod(orig) if MODE != "core" else orig)
orig = getattr(*date_fn)
setattr(date_fn[0], date_fn[1], staticmethod(lambda *a: old_date) if MODE != "core" else (lambda *a: old_date))
try:
    fails(400, "InvalidTimeStamp.Expired", "DescribeKey", KeyId=sk)
finally:
    setattr(date_fn[0], date_fn[1], staticmethod(orig) if MODE != "core" else orig)
call("DescribeKey", KeyId=sk)
print("OK replay-and-clock")
print("ALIYUN OK", MODE)

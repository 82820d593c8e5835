# -*- coding: utf-8 -*-
# The exact Tencent error codes a kmsfs KMS server gives the real Python SDK
# (tencentcloud-sdk-python) for requests it must refuse, plus a GET request and seed 002's
# "Implementing Exponential Backoff" sample (Python 3) against a rate-limited principal.
#
# env: KMS_ENDPOINT=127.0.0.1:PORT, KMS_KEY_ID, TENCENTCLOUD_SECRET_ID/KEY (the admin),
#      KMS_READER_ID/KEY (may only Describe*), KMS_SLOW_ID/KEY (rate-limited).
# Prints "OK <case>" per case; exits 1 at the first wrong answer.
import base64
import math
import os
import sys
import time
from unittest import mock

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.kms.v20190118 import kms_client, models

ENDPOINT = os.environ["KMS_ENDPOINT"]
KEY_ID = os.environ["KMS_KEY_ID"]


def client(secret_id, secret_key, method="POST", unsigned=False):
    http = HttpProfile(endpoint=ENDPOINT, protocol="http", reqMethod=method)
    profile = ClientProfile(httpProfile=http)
    profile.unsignedPayload = unsigned
    return kms_client.KmsClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", profile)


ADMIN = (os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"])
READER = (os.environ["KMS_READER_ID"], os.environ["KMS_READER_KEY"])
SLOW = (os.environ["KMS_SLOW_ID"], os.environ["KMS_SLOW_KEY"])


def describe(c):
    req = models.DescribeKeyRequest()
    req.KeyId = KEY_ID
    return c.DescribeKey(req)


def expect_code(case, want, fn):
    try:
        fn()
    except TencentCloudSDKException as err:
        if err.code != want:
            sys.exit("%s: expected %s, got %s (%s)" % (case, want, err.code, err.message))
        if not err.requestId:
            sys.exit("%s: the error carries no RequestId" % case)
        print("OK", case, err.code)
        return
    sys.exit("%s: expected %s, but the call succeeded" % (case, want))


# Control: the admin's call works, with POST and with GET.
rsp = describe(client(*ADMIN))
assert rsp.KeyMetadata.KeyId == KEY_ID, rsp
print("OK post", rsp.KeyMetadata.KeyState)
rsp = describe(client(*ADMIN, method="GET"))
assert rsp.KeyMetadata.KeyId == KEY_ID, rsp
print("OK get", rsp.KeyMetadata.KeyState)
rsp = describe(client(*ADMIN, unsigned=True))
assert rsp.KeyMetadata.KeyId == KEY_ID, rsp
print("OK unsigned-payload", rsp.KeyMetadata.KeyState)

expect_code("wrong-secret-key", "AuthFailure.SignatureFailure",
            lambda: describe(client(ADMIN[0], ADMIN[1] + "x")))
expect_code("unknown-secret-id", "AuthFailure.SecretIdNotFound",
            lambda: describe(client("AKIDnobodyAtAll", "whatever")))

real_time = time.time
with mock.patch("tencentcloud.common.abstract_client.time.time", lambda: real_time() - 600):
    expect_code("timestamp-10-min-old", "AuthFailure.SignatureExpire",
                lambda: describe(client(*ADMIN)))


def reader_disable():
    req = models.DisableKeyRequest()
    req.KeyId = KEY_ID
    client(*READER).DisableKey(req)


expect_code("principal-without-rights", "UnauthorizedOperation", reader_disable)
print("OK reader-may-describe", describe(client(*READER)).KeyMetadata.KeyId == KEY_ID)


def wrong_version():
    c = client(*ADMIN)
    c._apiVersion = "2017-03-12"
    describe(c)


expect_code("wrong-version", "NoSuchVersion", wrong_version)
expect_code("unknown-action", "InvalidAction",
            lambda: client(*ADMIN).call_json("NoSuchKmsAction", {}))
expect_code("unknown-key", "ResourceUnavailable.CmkNotFound",
            lambda: client(*ADMIN).call_json("Encrypt", {"KeyId": "00000000-0000-4000-8000-000000000000", "Plaintext": "aGk="}))


# The SDK signs only content-type;host, so a DescribeKey and a DisableKey with one body in
# one second carry one signature. As the real service does, the server serves both: a
# script's DisableKey then EnableKey in one second must not fail. (Exactly that is
# possible: a captured request replayed as another action inside its window is served
# too; principals that must not allow it set require_signed_action, below, and TLS keeps
# requests from being captured.)
def same_signature_two_actions():
    import requests

    c = client(*ADMIN)
    captured = []
    send = c.request.send_request

    def capture(req):
        captured.append((dict(req.header), req.data))
        return send(req)

    c.request.send_request = capture
    describe(c)
    if not captured:
        sys.exit("two-actions: the SDK request was not captured")
    headers, data = captured[-1]
    headers["X-TC-Action"] = "DisableKey"
    r = requests.post("http://%s/" % ENDPOINT, headers=headers, data=data)
    err = r.json()["Response"].get("Error")
    if err:
        sys.exit("two-actions: the same signature under DisableKey was refused: %r" % r.text)
    state = describe(client(*ADMIN)).KeyMetadata.KeyState
    if state != "Disabled":
        sys.exit("two-actions: the key is %s after DisableKey" % state)
    # Back to back through the SDK, in one second: DisableKey already done, EnableKey now,
    # then Disable/Enable again, each pair starting at the top of a second.
    a = client(*ADMIN)
    for _ in range(2):
        while time.time() % 1 > 0.5:
            time.sleep(0.05)
        t0 = int(time.time())
        req = models.EnableKeyRequest()
        req.KeyId = KEY_ID
        a.EnableKey(req)
        req = models.DisableKeyRequest()
        req.KeyId = KEY_ID
        a.DisableKey(req)
        req = models.EnableKeyRequest()
        req.KeyId = KEY_ID
        a.EnableKey(req)
        if int(time.time()) != t0:
            sys.exit("two-actions: the calls did not fit in one second")
    state = describe(client(*ADMIN)).KeyMetadata.KeyState
    if state != "Enabled":
        sys.exit("two-actions: the key is %s after EnableKey" % state)
    print("OK same-signature-two-actions served")


same_signature_two_actions()

# Temporary credentials (a SecretId, SecretKey and session token, as STS gives them):
# the SDK sends the token as X-TC-Token; it must be the SecretId's own.
if os.environ.get("KMS_TEMP_ID"):
    tid, tkey, ttok = os.environ["KMS_TEMP_ID"], os.environ["KMS_TEMP_KEY"], os.environ["KMS_TEMP_TOKEN"]

    def temp_client(token):
        http = HttpProfile(endpoint=ENDPOINT, protocol="http")
        return kms_client.KmsClient(credential.Credential(tid, tkey, token), "ap-guangzhou", ClientProfile(httpProfile=http))

    print("OK temporary-credentials", describe(temp_client(ttok)).KeyMetadata.KeyId == KEY_ID)
    expect_code("temporary-without-token", "AuthFailure.TokenFailure", lambda: describe(temp_client(None)))
    expect_code("temporary-wrong-token", "AuthFailure.TokenFailure", lambda: describe(temp_client(ttok + "x")))

    def admin_with_token():
        http = HttpProfile(endpoint=ENDPOINT, protocol="http")
        c = kms_client.KmsClient(credential.Credential(ADMIN[0], ADMIN[1], ttok), "ap-guangzhou", ClientProfile(httpProfile=http))
        return describe(c)

    expect_code("token-of-another-secret-id", "AuthFailure.TokenFailure", admin_with_token)

# A principal with require_signed_action: the SDK's requests (action not signed) are
# refused, so none of its requests could be replayed as another action.
if os.environ.get("KMS_STRICT_ID"):
    expect_code(
        "strict-principal-unsigned-action",
        "AuthFailure.SignatureFailure",
        lambda: describe(client(os.environ["KMS_STRICT_ID"], os.environ["KMS_STRICT_KEY"])),
    )


# Seed 002, "Implementing Exponential Backoff", adapted to Python 3 (sleep in seconds,
# bytes for base64), against the rate-limited principal: every Encrypt completes.
def BackoffFunction(RetryCount):
    InitDelayValue = 100
    DelayTime = math.pow(2, RetryCount) * InitDelayValue
    return DelayTime / 1000.0


throttled = 0
slow = client(*SLOW)
for i in range(4):
    plaintext = "abcdefg123456789abcdefg123456789abcdefg"
    req = models.EncryptRequest()
    req.KeyId = KEY_ID
    req.Plaintext = base64.b64encode(plaintext.encode()).decode()
    Retries = 0
    MaxRetries = 10
    rsp = None
    while Retries < MaxRetries:
        try:
            Retries += 1
            rsp = slow.Encrypt(req)  # Call the API `Encrypt`
            break
        except TencentCloudSDKException as err:
            if err.code == 'InternalError' or err.code == 'RequestLimitExceeded':
                throttled += 1
                if Retries == MaxRetries:
                    break
                time.sleep(BackoffFunction(Retries + 1))
                continue
            else:
                sys.exit("backoff sample: %s" % err)
    if rsp is None or not rsp.CiphertextBlob:
        sys.exit("backoff sample: Encrypt %d never succeeded" % i)
if throttled == 0:
    sys.exit("backoff sample: the rate limit never answered RequestLimitExceeded")
print("OK backoff-sample throttled=%d" % throttled)

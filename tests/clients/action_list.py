# -*- coding: utf-8 -*-
# Every action of the installed tencentcloud-sdk-python KMS client (kms_client.KmsClient)
# is called once against a kmsfs KMS server with empty parameters: an implemented action
# answers (or refuses its parameters with a Tencent code), an action this KMS does not
# offer answers UnsupportedOperation; none may answer InvalidAction ("no such action").
#
# env: KMS_ENDPOINT=127.0.0.1:PORT, TENCENTCLOUD_SECRET_ID/KEY.
# Prints "ACTION <name> <outcome>" per action and "ACTIONS <n>"; exits 1 on InvalidAction.
import json
import os
import sys

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.kms.v20190118 import kms_client

http = HttpProfile(endpoint=os.environ["KMS_ENDPOINT"], protocol="http")
c = kms_client.KmsClient(
    credential.Credential(os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"]),
    "ap-guangzhou",
    ClientProfile(httpProfile=http),
)
names = sorted(n for n in dir(kms_client.KmsClient) if n[:1].isupper() and callable(getattr(c, n)) and n != "FMT")
bad = []
for name in names:
    try:
        c.call_json(name, {})
        outcome = "OK"
    except TencentCloudSDKException as e:
        outcome = e.code
    print("ACTION", name, outcome)
    if outcome == "InvalidAction":
        bad.append(name)
print("ACTIONS", len(names))
if bad:
    sys.exit("InvalidAction for: " + ", ".join(bad))

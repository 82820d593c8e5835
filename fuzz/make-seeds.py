#!/usr/bin/env python3
"""Writes the seed corpora fuzz/seeds/<target>/* from the golden v1 volume
(tests/golden/v1) and a recorded tccli request (fuzz/recorded/tccli-encrypt.txt,
`tccli kms Encrypt` against a listener, CRLF turned into LF). Each seed starts with
the mode byte its target reads first. Run from anywhere; rewrites the seeds."""
import json
import os
import struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
gold = os.path.join(root, "tests/golden/v1")
corpus = os.path.join(root, "fuzz/seeds")


def seed(target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(rel):
    with open(os.path.join(gold, rel), "rb") as f:
        return f.read()


conf = read("backing/kmsfs.conf")
cfg = json.loads(conf.split(b"\n", 1)[0])
hs, bs = cfg["header_size"], cfg["block_size"]
hello = read("backing/hello.txt")
pattern = read("backing/pattern.bin")
header = hello[:hs]
blob_len = struct.unpack(">H", header[32 + 4:32 + 6])[0]
blob = header[32 + 6:32 + 6 + blob_len]
keys = read("kms/keys.kms")
request = open(os.path.join(root, "fuzz/recorded/tccli-encrypt.txt"), "rb").read()

seed("file_header", "golden-hello", b"\x00" + header)
seed("file_header", "golden-sized", b"\x01" + struct.pack(">I", hs) + header)
seed("volume_config", "golden", conf)
seed("ciphertext_blob", "golden-dek", b"\x00" + blob)
seed("ciphertext_blob", "golden-store", b"\x01" + keys)
seed("ciphertext_blob", "golden-store-body", b"\x02" + keys[64:-32])
seed("http_request", "tccli-encrypt", b"\x00" + request)
seed("http_request", "signed-encrypt",
     b"\x01Encrypt\n127.0.0.1:8080\napplication/json\n"
     b'{"KeyId":"alias/fuzz","Plaintext":"aGVsbG8="}')
seed("http_request", "get-list",
     b"\x00GET\n/?Limit=10&KeyIds.0=a&KeyIds.1=b%20c\nX-TC-Action: ListKeys\n"
     b"X-TC-Version: 2019-01-18\n\n")
seed("block_open", "golden-block", b"\x00" + pattern[hs:hs + bs + 40])
seed("block_open", "seal-flip", b"\x01\x00\x05\x01hello block")
seed("block_open", "seal-swap", b"\x01\x02\x00\x07hello block")

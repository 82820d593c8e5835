# Independent computation (Python + pyca/cryptography) of the known-answer vectors
# pinned in kms-core/tests/formats.rs, from docs/FORMAT.md ("KMS formats") alone.
# Run: python3 kms-core/tests/vectors/make_vectors.py
import hmac, hashlib, struct, base64, json
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
# blob vector
key = bytes([0x11]*32); kid = b"6f1f0c8e-2b7a-4b8e-9c1d-1234567890ab"; ver = 1
nonce = bytes(range(12)); pt = b"kmsfs test vector"
ctx = {"kmsfs-volume": "v1", "a": "b"}
canon = b"".join(struct.pack(">I", len(k.encode()))+k.encode()+struct.pack(">I", len(v.encode()))+v.encode() for k, v in sorted(ctx.items()))
hdr = b"KM" + bytes([1, len(kid)]) + kid + struct.pack(">I", ver) + nonce
blob = hdr + AESGCM(key).encrypt(nonce, pt, hdr + canon)
print("BLOB", blob.hex())
# store vector
root = bytes([0x33]*32)
H = lambda k, m: hmac.new(k, m, hashlib.sha256).digest()
wrap = H(root, b"kmsfs-kms material-wrap v1"); mac = H(root, b"kmsfs-kms store-mac v1"); check = H(root, b"kmsfs-kms root-check v1")[:16]
print("CHECK", check.hex())
mnonce = bytes([0x44]*12)
ad = b"kmsfs-kms material v1\0" + bytes([len(kid)]) + kid + struct.pack(">I", 1) + b"AES_256"
wrapped = base64.b64encode(mnonce + AESGCM(wrap).encrypt(mnonce, key, ad)).decode()
print("WRAPPED", wrapped)
body = json.dumps({"keys":[{"key_id":kid.decode(),"alias":"golden","description":"","create_time":1795392000,"state":"Enabled","usage":"ENCRYPT_DECRYPT","origin":"TENCENT_KMS","creator":"local:test","rotation_enabled":False,"rotate_days":0,"next_rotate_time":0,"last_rotate_time":0,"deletion_date":0,"valid_to":0,"versions":[{"version":1,"created":1795392000,"kind":"AES_256","wrapped":wrapped}]}]}, separators=(",",":")).encode()
print("BODY", body.decode())
h = b"kmsfs-ks" + struct.pack(">H", 1) + bytes([1, 0]) + struct.pack(">HH", 0, 0) + bytes(16) + check + struct.pack(">Q", 7) + struct.pack(">Q", len(body))
f = h + body
f += H(mac, f)
print("STORE_SHA256", hashlib.sha256(f).hexdigest(), len(f))
print("MAC", f[-32:].hex())
# ---- store format 2: an EXTERNAL key with imported 128-bit material (docs/FORMAT.md)
mat16 = bytes([0x22]*16)
ad16 = b"kmsfs-kms material v1\0" + bytes([len(kid)]) + kid + struct.pack(">I", 1) + b"AES_128"
wrapped16 = base64.b64encode(mnonce + AESGCM(wrap).encrypt(mnonce, mat16, ad16)).decode()
print("WRAPPED_AES_128", wrapped16)
mcheck = H(H(root, b"kmsfs-kms material-check v1"), bytes([len(kid)]) + kid + mat16).hex()
print("MATERIAL_CHECK", mcheck)
body2 = json.dumps({"keys":[{"key_id":kid.decode(),"alias":"golden2","description":"","create_time":1795392000,"state":"Enabled","usage":"ENCRYPT_DECRYPT","origin":"EXTERNAL","creator":"local:test","rotation_enabled":False,"rotate_days":0,"next_rotate_time":0,"last_rotate_time":0,"deletion_date":0,"valid_to":0,"versions":[{"version":1,"created":1795392000,"kind":"AES_128","wrapped":wrapped16}],"material_check":mcheck}]}, separators=(",",":")).encode()
print("BODY2", body2.decode())
h2 = b"kmsfs-ks" + struct.pack(">H", 2) + bytes([1, 0]) + struct.pack(">HH", 0, 0) + bytes(16) + check + struct.pack(">Q", 8) + struct.pack(">Q", len(body2))
f2 = h2 + body2
f2 += H(mac, f2)
print("STORE2_SHA256", hashlib.sha256(f2).hexdigest(), len(f2))
blob16 = hdr + AESGCM(mat16).encrypt(nonce, pt, hdr + canon)
print("BLOB_AES_128", blob16.hex())

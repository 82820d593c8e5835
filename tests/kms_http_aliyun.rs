//! The Alibaba Cloud KMS API (2016-01-20) of `kmsfs kms serve`, driven by the real
//! Alibaba clients from PyPI on 127.0.0.1: `alibabacloud-kms20160120` with its default
//! ACS3-HMAC-SHA256 signatures and with `signature_algorithm='v2'` (RPC HMAC-SHA1), and
//! `aliyun-python-sdk-kms` on `aliyun-python-sdk-core` (RPC HMAC-SHA1). One server, one
//! key store, both clouds' APIs: keys cross from one API to the other both ways.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
mod kms_http_support;

use std::path::Path;
use std::process::Command;

use kms_http_support::{
    assert_success, count_requests, kms_cli, ok_json, repo, require_program,
    require_python_modules, ServerProc, SECRET_ID, SECRET_KEY,
};
use serde_json::Value;

const AK: &str = "LTAIkmsfsTestAccessKey";
const AK_SECRET: &str = "kmsfs-test-aliyun-access-key-secret";

/// openssl and the Alibaba Cloud SDKs, or a failure that says how to install them.
fn require_aliyun_sdks() {
    require_program("openssl");
    require_python_modules(
        "import alibabacloud_kms20160120.client, aliyunsdkkms, aliyunsdkcore",
        "the Alibaba Cloud SDKs are not installed: run scripts/install-kms-clients.sh",
    );
}

/// `kmsfs --kms URL kms ACTION ARGS…` through the Tencent API; its JSON.
fn tencent(server: &ServerProc, args: &[&str]) -> Value {
    let out = kms_cli(&server.url, args)
        .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
        .output()
        .unwrap();
    ok_json(&out)
}

fn start(dir: &Path) -> ServerProc {
    ServerProc::start_with(
        "127.0.0.1:0",
        &dir.join("store"),
        None,
        &dir.join("server.log"),
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", AK),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET),
        ],
        &[],
    )
}

#[test]
fn the_alibaba_seeds_through_both_alibaba_sdks_and_keys_across_the_two_apis() {
    require_aliyun_sdks();
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    // A key made through the Tencent API, to be used through Alibaba's.
    let tk = tencent(&server, &["CreateKey", "--Alias", "made-by-tencent"]);
    let tk = tk["KeyId"].as_str().unwrap().to_owned();
    for mode in ["tea", "tea-v2", "core"] {
        let work = tmp.path().join(mode);
        std::fs::create_dir_all(&work).unwrap();
        let out = Command::new("python3")
            .arg(repo().join("tests/clients/aliyun_seeds.py"))
            .arg(mode)
            .env("KMS_PORT", &port)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .env("TENCENT_KEY_ID", &tk)
            .env("WORKDIR", &work)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("ALIYUN OK {mode}")),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The other way: what Alibaba's API sealed under the Tencent-made key opens
        // through Tencent's, and a key Alibaba's API made is described by Tencent's.
        let blob = std::fs::read_to_string(work.join("from_aliyun.blob")).unwrap();
        let d = tencent(&server, &["Decrypt", "--CiphertextBlob", blob.trim()]);
        assert_eq!(
            d["Plaintext"].as_str().unwrap(),
            "bWFkZSBieSB0ZW5jZW50LCB1c2VkIGJ5IGFsaWJhYmE="
        );
        let ak_key = std::fs::read_to_string(work.join("aliyun_key.txt")).unwrap();
        let md = tencent(&server, &["DescribeKey", "--KeyId", ak_key.trim()]);
        assert_eq!(md["KeyMetadata"]["KeyUsage"], "ENCRYPT_DECRYPT", "{md}");
        assert_eq!(md["KeyMetadata"]["Description"], "after", "{md}");
        let e = tencent(
            &server,
            &["Encrypt", "--KeyId", ak_key.trim(), "--Plaintext", "eA=="],
        );
        assert!(e["CiphertextBlob"].as_str().is_some());
    }
    // Counted from the server's request log: the AsymmetricDecrypt calls (three per client)
    // and the refusals (a refused signature names no principal).
    let log = server.log_lines();
    assert_eq!(count_requests(&log, "AsymmetricDecrypt", AK, "OK"), 9);
    assert_eq!(
        count_requests(&log, "DescribeKey", "", "SignatureNonceUsed"),
        3
    );
    assert_eq!(count_requests(&log, "Encrypt", AK, "Rejected.Disabled"), 3);
    // No plaintext in the server's log.
    let text = log.join("\n");
    assert!(!text.contains("aGVsbG8sIGFsaWJhYmE=") && !text.contains("this is plaintext"));
}

/// Seed 001 as written, with `kmsfs kms --api aliyun` in place of `aliyun kms` (both
/// `--Param=value` and `--Param value`), on the embedded KMS; the output is the aliyun
/// CLI's tab-indented JSON, and an error the aliyun CLI's `ERROR:` lines with exit 1.
#[test]
fn kmsfs_kms_api_aliyun_runs_seed_001_as_written() {
    require_program("openssl");
    require_program("python3");
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"
set -euo pipefail
aliyun_kms() { "$KMSFS" --kms "$STORE" kms --api aliyun "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
KEY=$(aliyun_kms CreateKey --KeySpec=RSA_2048 --KeyUsage=ENCRYPT/DECRYPT --ProtectionLevel=HSM | python3 -c 'import json,sys; print(json.load(sys.stdin)["KeyMetadata"]["KeyId"])')
VER=$(aliyun_kms ListKeyVersions --KeyId="$KEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["KeyVersions"]["KeyVersion"][0]["KeyVersionId"])')
aliyun_kms GetPublicKey --KeyId="$KEY" --KeyVersionId="$VER" > getpublickey.json
grep -q "$(printf '^\t"PublicKey": ')" getpublickey.json
field PublicKey < getpublickey.json > rsa_publickey.pub
echo "this is plaintext" > plaintext-file.txt
openssl pkeyutl -encrypt -in plaintext-file.txt \
  -inkey rsa_publickey.pub -pubin \
  -pkeyopt rsa_padding_mode:oaep \
  -pkeyopt rsa_oaep_md:sha256 \
  -pkeyopt rsa_mgf1_md:sha256 \
  -out plaintext-file.enc
CT=$(openssl base64 -A -in plaintext-file.enc)
aliyun_kms AsymmetricDecrypt \
  --KeyId "$KEY" \
  --KeyVersionId "$VER" \
  --Algorithm RSAES_OAEP_SHA_256 \
  --CiphertextBlob "$CT" | field Plaintext | openssl base64 -d > decrypted.txt
cmp decrypted.txt plaintext-file.txt
echo "OK seed-001"
if aliyun_kms DescribeKey --KeyId=00000000-0000-4000-8000-000000000000 2>err.txt; then exit 1; fi
grep -q '^ErrorCode: Forbidden.KeyNotFound$' err.txt
echo "OK error"
"#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(tmp.path())
        .env("KMSFS", env!("CARGO_BIN_EXE_kmsfs"))
        .env("STORE", tmp.path().join("store"))
        .env_remove("KMSFS_KMS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK seed-001") && stdout.contains("OK error"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One audit line per call: the one CreateKey made one CreateKey line.
    let audit = std::fs::read_to_string(tmp.path().join("store/audit.log")).unwrap();
    assert_eq!(
        audit.matches("\"action\":\"CreateKey\"").count(),
        1,
        "{audit}"
    );
    assert_eq!(audit.matches("\"action\":\"AsymmetricDecrypt\"").count(), 1);
}

/// A volume made and mounted on an `aliyun+http://` KMS: the daemon's client signs
/// ACS3 requests; files are written and read; its CMK disabled through the Alibaba API
/// gives EACCES once the cached DEKs are past their age, as with Tencent; the Tencent
/// API on the same server sees the same key.
#[test]
fn a_volume_on_an_alibaba_dialect_kms() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    std::env::remove_var("KMSFS_KMS_CREDENTIALS");
    std::env::set_var("ALIBABA_CLOUD_ACCESS_KEY_ID", AK);
    std::env::set_var("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET);
    let url = format!("aliyun+{}", server.url);
    let backing = tmp.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let m = fsmount::Mounted::existing(Path::new(&url), &backing, &["--dek-cache-max-age", "1"])
        .unwrap_or_else(|e| panic!("mount via {url}: {e}"));
    std::fs::write(m.p("f"), b"through the Alibaba API").unwrap();
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"through the Alibaba API");
    // Every KMS call of the daemon went through Alibaba's API, signed by the AccessKey.
    let log = server.log_lines();
    assert_eq!(count_requests(&log, "CreateKey", AK, "OK"), 1, "{log:?}");
    assert!(count_requests(&log, "GenerateDataKey", AK, "OK") >= 1);
    assert_eq!(count_requests(&log, "GenerateDataKey", SECRET_ID, "OK"), 0);
    // The volume's CMK, disabled through the Alibaba API.
    let cmk = m.cmk();
    let out = kms_cli(
        &url,
        &["--api", "aliyun", "DisableKey", &format!("--KeyId={cmk}")],
    )
    .output()
    .unwrap();
    assert_success("kmsfs kms --api aliyun DisableKey", &out);
    let md = tencent(&server, &["DescribeKey", "--KeyId", &cmk]);
    assert_eq!(md["KeyMetadata"]["KeyState"], "Disabled", "{md}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let e = std::fs::File::open(m.p("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(13), "expected EACCES, got {e}");
    assert!(
        count_requests(&server.log_lines(), "Decrypt", AK, "Rejected.Disabled") >= 1,
        "the refusal came from the server, through the Alibaba API"
    );
}

/// An Alibaba AccessKey in the principals file, with the same action and key globs as
/// a Tencent SecretId: what it may not call answers `Forbidden.NoPermission` (403).
#[test]
fn principals_file_takes_alibaba_access_keys_with_their_rights() {
    require_aliyun_sdks();
    let tmp = tempfile::tempdir().unwrap();
    let config = kms_http_support::write_principals(
        tmp.path(),
        &format!(
            "[[principal]]\naccess_key_id = \"{AK}\"\naccess_key_secret = \"{AK_SECRET}\"\n\
             actions = [\"Describe*\", \"Encrypt\"]\n"
        ),
    );
    let server = ServerProc::in_dir(tmp.path(), Some(&config));
    let key = tencent(&server, &["CreateKey", "--Alias", "shared"]);
    let key = key["KeyId"].as_str().unwrap().to_owned();
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let script = r#"
import sys
from alibabacloud_tea_openapi.models import Config
from alibabacloud_kms20160120.client import Client
from alibabacloud_kms20160120 import models as m
from Tea.exceptions import TeaException
port, ak, sk, key = sys.argv[1:5]
c = Client(Config(access_key_id=ak, access_key_secret=sk, endpoint=f"127.0.0.1:{port}", protocol="http"))
assert c.describe_key(m.DescribeKeyRequest(key_id=key)).body.key_metadata.key_id == key
c.encrypt(m.EncryptRequest(key_id=key, plaintext="eA=="))
try:
    c.create_key(m.CreateKeyRequest())
    sys.exit("CreateKey was allowed")
except TeaException as e:
    assert (e.code, e.data.get("statusCode")) == ("Forbidden.NoPermission", 403), (e.code, e.data)
print("RIGHTS OK")
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port, AK, AK_SECRET, &key])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("RIGHTS OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = server.log_lines();
    assert_eq!(
        count_requests(&log, "CreateKey", AK, "Forbidden.NoPermission"),
        1
    );
}

//! The seeds' asymmetric and BYOK sequences as a user types them: a bash script of
//! the seed commands, with the real `openssl` between the KMS steps, run once with
//! `kmsfs kms` (the real binary on a store) and once with the real `tccli` against
//! the real `kmsfs kms serve` (installed by scripts/install-kms-clients.sh).
//!
//! The script's `k` function is the only difference: both print tccli's JSON and
//! tccli's `[TencentCloudSDKException] code:…` errors. The tests fail, not skip,
//! when openssl or tccli is missing.
#![allow(clippy::unwrap_used)]

mod kms_http_support;

use std::path::Path;
use std::process::Command;

use kms_http_support::{
    assert_success, count_requests, kms_cli, require_program, server_in_tmp, SECRET_ID, SECRET_KEY,
};

/// The seed sequences. `k ACTION --Param value…` runs one KMS action and prints its
/// JSON; `field NAME` reads a field of it. Each block prints `OK <name>` at its end.
const SEEDS: &str = r#"
set -euo pipefail
field() { python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(str(v).lower() if isinstance(v,bool) else v)' "$1"; }
fails_with() { # fails_with CODE k ACTION ...: the action must fail with CODE
  local code=$1; shift
  if "$@" >out.json 2>err.txt; then echo "expected $code from $*: $(cat out.json)"; exit 1; fi
  grep -q "code:$code " err.txt || { echo "expected $code from $*: $(cat err.txt)"; exit 1; }
}

# ---- seed 000: asymmetric data encryption (RSA sample)
KEY=$(k CreateKey --Alias test --KeyUsage ASYMMETRIC_DECRYPT_RSA_2048 | field KeyId)
k GetPublicKey --KeyId "$KEY" | field PublicKey > public_key.base64
openssl enc -d -base64 -A -in public_key.base64 -out public_key.bin
echo "test" > test_rsa.txt
openssl pkeyutl -in test_rsa.txt -out encrypted.bin -inkey public_key.bin -keyform DER -pubin -encrypt -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256
openssl enc -e -base64 -A -in encrypted.bin -out encrypted.base64
PT=$(k AsymmetricRsaDecrypt --KeyId "$KEY" --Algorithm RSAES_OAEP_SHA_256 --Ciphertext "$(cat encrypted.base64)" | field Plaintext)
[ "$PT" = "dGVzdAo=" ] || { echo "seed 000 gave $PT"; exit 1; }
fails_with FailedOperation.DecryptError k AsymmetricRsaDecrypt --KeyId "$KEY" --Algorithm RSAES_OAEP_SHA_1 --Ciphertext "$(cat encrypted.base64)"
echo "OK seed-000"

# ---- seed 001: the same with rsa_mgf1_md:sha256 and the PEM public key
k GetPublicKey --KeyId "$KEY" | field PublicKeyPem > rsa_publickey.pub
echo "this is plaintext" > plaintext-file.txt
openssl pkeyutl -encrypt -in plaintext-file.txt -inkey rsa_publickey.pub -pubin -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -out plaintext-file.enc
CT=$(openssl base64 -A -in plaintext-file.enc)
k AsymmetricRsaDecrypt --KeyId "$KEY" --Algorithm RSAES_OAEP_SHA_256 --Ciphertext "$CT" | field Plaintext | openssl base64 -d > decrypted.txt
cmp decrypted.txt plaintext-file.txt
echo "OK seed-001"

# ---- seed 002: RSA and ECC signature verification, both ways
echo "test" > test_verify.txt
truncate -s -1 test_verify.txt
openssl dgst -sha256 -binary -out digest.bin test_verify.txt
sign_and_verify() { # sign_and_verify KEY ALGORITHM [openssl -sigopt …]
  local key=$1 alg=$2; shift 2
  k GetPublicKey --KeyId "$key" | field PublicKeyPem > public_key.pem
  for MT in DIGEST RAW; do
    if [ "$MT" = DIGEST ]; then
      openssl enc -e -base64 -A -in digest.bin -out encoded.base64
    else
      openssl enc -e -base64 -A -in test_verify.txt -out encoded.base64
    fi
    SIG=$(k SignByAsymmetricKey --KeyId "$key" --Algorithm "$alg" --Message "$(cat encoded.base64)" --MessageType "$MT" | field Signature)
    echo "$SIG" | base64 -d > signContent.bin
    openssl dgst -verify public_key.pem -sha256 "$@" -signature ./signContent.bin ./test_verify.txt | grep -q "Verified OK"
    V=$(k VerifyByAsymmetricKey --KeyId "$key" --SignatureValue "$SIG" --Message "$(cat encoded.base64)" --Algorithm "$alg" --MessageType "$MT" | field SignatureValid)
    [ "$V" = true ] || { echo "$alg $MT: SignatureValid $V"; exit 1; }
    V=$(k VerifyByAsymmetricKey --KeyId "$key" --SignatureValue "$SIG" --Message "dGVzdQ==" --Algorithm "$alg" --MessageType RAW | field SignatureValid)
    [ "$V" = false ] || { echo "$alg: another message verified"; exit 1; }
  done
}
SKEY=$(k CreateKey --Alias test_rsa --KeyUsage ASYMMETRIC_SIGN_VERIFY_RSA_2048 | field KeyId)
sign_and_verify "$SKEY" RSA_PSS_SHA_256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:-1
sign_and_verify "$SKEY" RSA_PKCS1_SHA_256
echo "OK seed-002-rsa"
EKEY=$(k CreateKey --Alias test_ecc --KeyUsage ASYMMETRIC_SIGN_VERIFY_ECC | field KeyId)
sign_and_verify "$EKEY" ECC_P256_R1
echo "OK seed-002-ecc"
# SM2 (the seed checks with gmssl; openssl 3 does the same with distid)
MKEY=$(k CreateKey --Alias test_sm2 --KeyUsage ASYMMETRIC_SIGN_VERIFY_SM2 | field KeyId)
k GetPublicKey --KeyId "$MKEY" | field PublicKeyPem > public_key.pem
openssl enc -e -base64 -A -in test_verify.txt -out encoded.base64
SIG=$(k SignByAsymmetricKey --KeyId "$MKEY" --Algorithm SM2DSA --Message "$(cat encoded.base64)" --MessageType RAW | field Signature)
echo "$SIG" | base64 -d > signContent.bin
openssl pkeyutl -verify -in test_verify.txt -rawin -digest sm3 -pubin -inkey public_key.pem -pkeyopt distid:1234567812345678 -sigfile signContent.bin | grep -q "Verified Successfully"
[ "$(k VerifyByAsymmetricKey --KeyId "$MKEY" --SignatureValue "$SIG" --Message "$(cat encoded.base64)" --Algorithm SM2DSA --MessageType RAW | field SignatureValid)" = true ]
echo "OK seed-002-sm2"

# ---- seed 002: importing external key material, with each wrapping algorithm
wrap() { # wrap KEY ALGORITHM MATERIAL_FILE: GetParametersForImport + openssl; sets TOKEN
  local key=$1 alg=$2 material=$3
  k GetParametersForImport --KeyId "$key" --WrappingAlgorithm "$alg" --WrappingKeySpec RSA_2048 > params.json
  TOKEN=$(field ImportToken < params.json)
  field PublicKey < params.json > public_key.base64
  openssl enc -d -base64 -A -in public_key.base64 -out public_key.bin
  case "$alg" in
    RSAES_OAEP_SHA_1) openssl pkeyutl -in "$material" -out encrypted_key_material.bin -inkey public_key.bin -keyform DER -pubin -encrypt -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 ;;
    RSAES_PKCS1_V1_5) openssl pkeyutl -in "$material" -out encrypted_key_material.bin -inkey public_key.bin -keyform DER -pubin -encrypt -pkeyopt rsa_padding_mode:pkcs1 ;;
    RSAES_OAEP_SHA_256) openssl pkeyutl -in "$material" -out encrypted_key_material.bin -inkey public_key.bin -keyform DER -pubin -encrypt -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 ;;
  esac
  openssl enc -e -base64 -A -in encrypted_key_material.bin -out encrypted_material.base64
}
# ---- seed 002: sensitive data, envelope encryption, rotation and the key lifecycle,
# back to back with no sleep (tccli signs only content-type;host, so calls in one second
# with one body carry one signature, and each is served)
SKEY=$(k CreateKey --Alias seed002 --Description "sensitive data" | field KeyId)
CT=$(k Encrypt --KeyId "$SKEY" --Plaintext c2Vuc2l0aXZlIGRhdGE= --EncryptionContext '{"app":"crm"}' | field CiphertextBlob)
[ "$(k Decrypt --CiphertextBlob "$CT" --EncryptionContext '{"app":"crm"}' | field Plaintext)" = c2Vuc2l0aXZlIGRhdGE= ]
fails_with InvalidParameterValue.InvalidCiphertext k Decrypt --CiphertextBlob "$CT" --EncryptionContext '{"app":"erp"}'
DK=$(k GenerateDataKey --KeyId "$SKEY" --KeySpec AES_256 --EncryptionContext '{"table":"t1"}')
DKB=$(echo "$DK" | field CiphertextBlob)
[ "$(k Decrypt --CiphertextBlob "$DKB" --EncryptionContext '{"table":"t1"}' | field Plaintext)" = "$(echo "$DK" | field Plaintext)" ]
[ "$(k GenerateRandom --NumberOfBytes 32 | field Plaintext | openssl base64 -d -A | wc -c)" = 32 ]
k EnableKeyRotation --KeyId "$SKEY" --RotateDays 30 > /dev/null
[ "$(k GetKeyRotationStatus --KeyId "$SKEY" | field KeyRotationEnabled)" = true ]
k RotateKey --KeyId "$SKEY" > /dev/null
[ "$(k Decrypt --CiphertextBlob "$CT" --EncryptionContext '{"app":"crm"}' | field Plaintext)" = c2Vuc2l0aXZlIGRhdGE= ]
k DisableKeyRotation --KeyId "$SKEY" > /dev/null
[ "$(k GetKeyRotationStatus --KeyId "$SKEY" | field KeyRotationEnabled)" = false ]
k UpdateAlias --KeyId "$SKEY" --Alias seed002-renamed > /dev/null
k UpdateKeyDescription --KeyId "$SKEY" --Description "renamed" > /dev/null
[ "$(k DescribeKey --KeyId "$SKEY" | python3 -c 'import json,sys; m=json.load(sys.stdin)["KeyMetadata"]; print(m["Alias"], m["Description"])')" = "seed002-renamed renamed" ]
k ArchiveKey --KeyId "$SKEY" > /dev/null
fails_with ResourceUnavailable.CmkArchived k Encrypt --KeyId "$SKEY" --Plaintext eA==
[ "$(k Decrypt --CiphertextBlob "$CT" --EncryptionContext '{"app":"crm"}' | field Plaintext)" = c2Vuc2l0aXZlIGRhdGE= ]
k CancelKeyArchive --KeyId "$SKEY" > /dev/null
k DisableKey --KeyId "$SKEY" > /dev/null
fails_with ResourceUnavailable.CmkDisabled k Decrypt --CiphertextBlob "$CT" --EncryptionContext '{"app":"crm"}'
k EnableKey --KeyId "$SKEY" > /dev/null
k DisableKey --KeyId "$SKEY" > /dev/null
k ScheduleKeyDeletion --KeyId "$SKEY" --PendingWindowInDays 7 > /dev/null
k CancelKeyDeletion --KeyId "$SKEY" > /dev/null
k EnableKey --KeyId "$SKEY" > /dev/null
k ListKeyDetail --SearchKeyAlias seed002 | python3 -c 'import json,sys; v=json.load(sys.stdin); assert v["TotalCount"]==1, v'
echo "OK seed-002-lifecycle"

# ---- seed 002: post-quantum keys (Kyber_AES encryption, Dilithium signatures)
PQE=$(k CreateKey --Alias pq-enc --KeyUsage ASYMMETRIC_Encrypt_Decrypt_Kyber_AES | field KeyId)
PQS=$(k CreateKey --Alias pq-sign --KeyUsage ASYMMETRIC_SIGN_VERIFY_DILITHIUM | field KeyId)
PQCT=$(k PostQuantumCryptoEncrypt --KeyId "$PQE" --PlainText cG9zdC1xdWFudHVt | field CiphertextBlob)
[ "$(k PostQuantumCryptoDecrypt --CiphertextBlob "$PQCT" | field PlainText)" = cG9zdC1xdWFudHVt ]
SIG=$(k PostQuantumCryptoSign --KeyId "$PQS" --Message dGVzdA== | field Signature)
[ "$(k PostQuantumCryptoVerify --KeyId "$PQS" --Message dGVzdA== --SignatureValue "$SIG" | field SignatureValid)" = true ]
[ "$(k PostQuantumCryptoVerify --KeyId "$PQS" --Message dGVzdQ== --SignatureValue "$SIG" | field SignatureValid)" = false ]
echo "OK seed-002-pqc"

N=0
for WA in RSAES_OAEP_SHA_1 RSAES_PKCS1_V1_5 RSAES_OAEP_SHA_256; do
  N=$((N + 1))
  BKEY=$(k CreateKey --Alias "byok$N" --Type 2 | field KeyId)
  [ "$(k DescribeKey --KeyId "$BKEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["KeyMetadata"]["KeyState"])')" = PendingImport ]
  if [ $N = 2 ]; then openssl rand -out raw_material.bin 16; else openssl rand -out raw_material.bin 32; fi
  wrap "$BKEY" "$WA" raw_material.bin
  k ImportKeyMaterial --EncryptedKeyMaterial "$(cat encrypted_material.base64)" --ImportToken "$TOKEN" --KeyId "$BKEY" > /dev/null
  BLOB=$(k Encrypt --KeyId "$BKEY" --Plaintext aGVsbG8gYnlvaw== | field CiphertextBlob)
  [ "$(k Decrypt --CiphertextBlob "$BLOB" | field Plaintext)" = aGVsbG8gYnlvaw== ]
  fails_with UnsupportedOperation.ExternalCmkCanNotRotate k RotateKey --KeyId "$BKEY"
  # Back to back: within one second this request carries the RotateKey's signature (tccli
  # does not sign the action), and is served, as the real service serves it.
  k DeleteImportedKeyMaterial --KeyId "$BKEY" > /dev/null
  fails_with ResourceUnavailable.CmkStateNotSupport k Decrypt --CiphertextBlob "$BLOB"
  # Re-import of the same material works again.
  k ImportKeyMaterial --EncryptedKeyMaterial "$(cat encrypted_material.base64)" --ImportToken "$TOKEN" --KeyId "$BKEY" > /dev/null
  [ "$(k Decrypt --CiphertextBlob "$BLOB" | field Plaintext)" = aGVsbG8gYnlvaw== ]
  # Other material: MaterialNotMatch; the old token is no longer valid.
  OLD=$TOKEN
  openssl rand -out other_material.bin 32
  wrap "$BKEY" "$WA" other_material.bin
  fails_with InvalidParameterValue.MaterialNotMatch k ImportKeyMaterial --EncryptedKeyMaterial "$(cat encrypted_material.base64)" --ImportToken "$TOKEN" --KeyId "$BKEY"
  fails_with ResourceUnavailable.TokenExpired k ImportKeyMaterial --EncryptedKeyMaterial "$(cat encrypted_material.base64)" --ImportToken "$OLD" --KeyId "$BKEY"
  echo "OK byok-$WA"
done
"#;

/// Runs [`SEEDS`] in `dir` after `prelude` (which defines `k`); returns stdout.
fn run_seeds(dir: &Path, prelude: &str, envs: &[(&str, &str)]) -> String {
    require_program("openssl");
    require_program("python3");
    let script = format!("{prelude}\n{SEEDS}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .env_remove("KMSFS_KMS")
        .env_remove("KMSFS_KMS_PASSPHRASE")
        .env_remove("KMSFS_KMS_ROOT_KEY")
        .output()
        .unwrap();
    assert_success("the seed script", &out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for ok in [
        "OK seed-000",
        "OK seed-001",
        "OK seed-002-rsa",
        "OK seed-002-ecc",
        "OK seed-002-sm2",
        "OK seed-002-lifecycle",
        "OK seed-002-pqc",
        "OK byok-RSAES_OAEP_SHA_1",
        "OK byok-RSAES_PKCS1_V1_5",
        "OK byok-RSAES_OAEP_SHA_256",
    ] {
        assert!(stdout.contains(ok), "missing {ok:?} in:\n{stdout}");
    }
    stdout
}

#[test]
fn kmsfs_kms_runs_the_seed_sequences_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let prelude = r#"k() { "$KMSFS" --kms "$STORE" kms "$@"; }"#;
    run_seeds(
        tmp.path(),
        prelude,
        &[
            ("KMSFS", env!("CARGO_BIN_EXE_kmsfs")),
            ("STORE", store.to_str().unwrap()),
        ],
    );
    // Every call was audited, and the chain verifies.
    let o = kms_cli(&store, &["verify-audit"]).output().unwrap();
    assert_success("kmsfs kms verify-audit", &o);
    let log = std::fs::read_to_string(store.join("audit.log")).unwrap();
    assert!(log.contains("\"action\":\"ImportKeyMaterial\""));
    assert!(log.contains("\"outcome\":\"InvalidParameterValue.MaterialNotMatch\""));
}

#[test]
fn tccli_runs_the_seed_sequences_against_the_server() {
    require_program("tccli");
    let (tmp, server) = server_in_tmp();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // The endpoint configured once, as KMS-API.md says; then the seeds' commands as written.
    let prelude = r#"
tccli configure set region ap-guangzhou
tccli configure set kms.endpoint "http://$KMS_ADDR"
k() { tccli kms "$@"; }
"#;
    run_seeds(
        &work,
        prelude,
        &[
            ("HOME", home.to_str().unwrap()),
            ("KMS_ADDR", &server.addr),
            ("TENCENTCLOUD_SECRET_ID", SECRET_ID),
            ("TENCENTCLOUD_SECRET_KEY", SECRET_KEY),
        ],
    );
    let log = server.log_lines();
    assert_eq!(
        count_requests(&log, "GetParametersForImport", SECRET_ID, "OK"),
        6
    );
    assert_eq!(
        count_requests(
            &log,
            "ImportKeyMaterial",
            SECRET_ID,
            "InvalidParameterValue.MaterialNotMatch"
        ),
        3
    );
    assert_eq!(
        count_requests(&log, "AsymmetricRsaDecrypt", SECRET_ID, "OK"),
        2
    );
    // No plaintext in the server's log.
    let text = log.join("\n");
    assert!(!text.contains("dGVzdAo=") && !text.contains("aGVsbG8gYnlvaw=="));
}

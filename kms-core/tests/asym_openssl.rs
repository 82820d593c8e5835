//! Asymmetric keys and BYOK against the real `openssl` CLI: the seeds' sequences
//! (000: RSA-OAEP-SHA256 encryption with the KMS public key; 001: the same with
//! `rsa_mgf1_md:sha256`; 002: RSA and ECC signature verification both ways, and
//! "Importing External Key" with each wrapping algorithm), through the embedded
//! service. `openssl` must be installed; the tests fail, not skip, without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::programs::{openssl, openssl_encrypt_to_public_key_bin};
use common::*;
use kms_core::key::MaterialKind;
use kms_core::{store, ErrorCode as E, Kms, KmsService};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `openssl ARGS…` in `dir` (a signature check): whether it succeeds and prints
/// `verdict` ("Verified OK" from `dgst -verify`, "Verified Successfully" from
/// `pkeyutl -verify`).
fn openssl_verifies(dir: &Path, args: &[&str], verdict: &str) -> bool {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    o.status.success() && String::from_utf8_lossy(&o.stdout).contains(verdict)
}

/// `openssl enc -e -base64 -A` of `input` to `output` in `dir`, as the seeds encode.
fn openssl_base64(dir: &Path, input: &str, output: &str) {
    openssl(
        dir,
        &["enc", "-e", "-base64", "-A", "-in", input, "-out", output],
    );
}

/// The seeds' first step with a public key the KMS gives (`PublicKey`, base64 DER):
/// public_key.base64 → `openssl enc -d -base64 -A` → public_key.bin.
fn save_public_key_bin(dir: &Path, public_key_base64: &str) {
    std::fs::write(dir.join("public_key.base64"), public_key_base64).unwrap();
    openssl(
        dir,
        &[
            "enc",
            "-d",
            "-base64",
            "-A",
            "-in",
            "public_key.base64",
            "-out",
            "public_key.bin",
        ],
    );
}

/// The `openssl pkeyutl -pkeyopt` values of an RSA encryption (wrapping) algorithm.
fn rsa_pkeyopts(alg: &str) -> &'static [&'static str] {
    match alg {
        "RSAES_OAEP_SHA_1" => &["rsa_padding_mode:oaep", "rsa_oaep_md:sha1"],
        "RSAES_PKCS1_V1_5" => &["rsa_padding_mode:pkcs1"],
        _ => &["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
    }
}

fn create_usage(kms: &dyn Kms, alias: &str, usage: &str) -> String {
    let r = call(kms, "CreateKey", json!({"Alias": alias, "KeyUsage": usage})).unwrap();
    assert_eq!(r["KeyUsage"], usage);
    assert_eq!(r["KeyState"], "Enabled");
    s(&r, "KeyId")
}

/// Seed 000 step 3 ①: public_key.base64 → `openssl enc -d -base64 -A` → public_key.bin;
/// and the PEM to public_key.pem. Checks PEM and DER are the same key.
fn download_public_key(kms: &dyn Kms, key: &str, dir: &Path) {
    let r = call(kms, "GetPublicKey", json!({"KeyId": key})).unwrap();
    assert_eq!(s(&r, "KeyId"), key);
    save_public_key_bin(dir, &s(&r, "PublicKey"));
    std::fs::write(dir.join("public_key.pem"), s(&r, "PublicKeyPem")).unwrap();
    let from_der = openssl(
        dir,
        &[
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            "public_key.bin",
            "-outform",
            "PEM",
        ],
    );
    assert_eq!(String::from_utf8(from_der).unwrap(), s(&r, "PublicKeyPem"));
}

fn rsa_decrypt(kms: &dyn Kms, key: &str, ct: &[u8], alg: &str) -> kms_core::KmsResult<Vec<u8>> {
    call(
        kms,
        "AsymmetricRsaDecrypt",
        json!({"KeyId": key, "Ciphertext": B64.encode(ct), "Algorithm": alg}),
    )
    .map(|r| B64.decode(s(&r, "Plaintext")).unwrap())
}

#[test]
fn seeds_000_and_001_openssl_encrypts_the_kms_decrypts() {
    let d = tempfile::tempdir().unwrap();
    let (kms, _) = open(&d.path().join("kms"));
    let w = d.path();
    let key = create_usage(&kms, "test", "ASYMMETRIC_DECRYPT_RSA_2048");
    download_public_key(&kms, &key, w);
    std::fs::write(w.join("test_rsa.txt"), "test\n").unwrap();

    // Seed 000, as written (DER public key, OAEP with SHA-256).
    openssl_encrypt_to_public_key_bin(
        w,
        "test_rsa.txt",
        "encrypted.bin",
        rsa_pkeyopts("RSAES_OAEP_SHA_256"),
    );
    openssl_base64(w, "encrypted.bin", "encrypted.base64");
    let ct_b64 = std::fs::read_to_string(w.join("encrypted.base64")).unwrap();
    let r = call(
        &kms,
        "AsymmetricRsaDecrypt",
        json!({"KeyId": key, "Algorithm": "RSAES_OAEP_SHA_256", "Ciphertext": ct_b64}),
    )
    .unwrap();
    assert_eq!(s(&r, "Plaintext"), "dGVzdAo=");
    assert_eq!(s(&r, "KeyId"), key);

    // Seed 001 (PEM public key, rsa_mgf1_md:sha256).
    std::fs::write(w.join("plaintext-file.txt"), "this is plaintext\n").unwrap();
    openssl(
        w,
        &[
            "pkeyutl",
            "-encrypt",
            "-in",
            "plaintext-file.txt",
            "-inkey",
            "public_key.pem",
            "-pubin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-out",
            "plaintext-file.enc",
        ],
    );
    let ct = std::fs::read(w.join("plaintext-file.enc")).unwrap();
    assert_eq!(
        rsa_decrypt(&kms, &key, &ct, "RSAES_OAEP_SHA_256").unwrap(),
        b"this is plaintext\n"
    );

    // The other two algorithms.
    for alg in ["RSAES_OAEP_SHA_1", "RSAES_PKCS1_V1_5"] {
        openssl_encrypt_to_public_key_bin(w, "test_rsa.txt", "c.bin", rsa_pkeyopts(alg));
        let ct = std::fs::read(w.join("c.bin")).unwrap();
        assert_eq!(
            rsa_decrypt(&kms, &key, &ct, alg).unwrap(),
            b"test\n",
            "{alg}"
        );
    }

    // Wrong algorithm: OAEP fails with one code; PKCS#1 v1.5 never fails on bad
    // padding (implicit rejection): a deterministic synthetic plaintext instead.
    assert_eq!(
        code(rsa_decrypt(&kms, &key, &ct, "RSAES_OAEP_SHA_1").map(|_| json!(0))),
        E::FailedOperationDecryptError
    );
    let mut flipped = ct.clone();
    flipped[100] ^= 1;
    assert_eq!(
        code(rsa_decrypt(&kms, &key, &flipped, "RSAES_OAEP_SHA_256").map(|_| json!(0))),
        E::FailedOperationDecryptError
    );
    let synthetic = rsa_decrypt(&kms, &key, &ct, "RSAES_PKCS1_V1_5").unwrap();
    assert_ne!(synthetic, b"this is plaintext\n");
    assert_eq!(
        rsa_decrypt(&kms, &key, &ct, "RSAES_PKCS1_V1_5").unwrap(),
        synthetic
    );
    assert_eq!(
        code(rsa_decrypt(&kms, &key, &ct[1..], "RSAES_OAEP_SHA_256").map(|_| json!(0))),
        E::InvalidParameterValue
    );
    assert_eq!(
        code(rsa_decrypt(&kms, &key, &ct, "RSAES_OAEP_SHA_512").map(|_| json!(0))),
        E::InvalidParameterValue
    );

    // Usage and state checks.
    assert_eq!(
        code(encrypt(&kms, &key, b"x", None).map(|_| json!(0))),
        E::InvalidParameterValueInvalidKeyUsage
    );
    assert_eq!(
        code(call(&kms, "RotateKey", json!({"KeyId": key}))),
        E::UnsupportedOperationRotateNotSupported
    );
    let sym = create(&kms, "sym");
    assert_eq!(
        code(call(&kms, "GetPublicKey", json!({"KeyId": sym}))),
        E::InvalidParameterValueInvalidKeyUsage
    );
    assert_eq!(
        code(rsa_decrypt(&kms, &sym, &ct, "RSAES_OAEP_SHA_256").map(|_| json!(0))),
        E::InvalidParameterValueInvalidKeyUsage
    );
    call(&kms, "DisableKey", json!({"KeyId": key})).unwrap();
    assert_eq!(
        code(rsa_decrypt(&kms, &key, &ct, "RSAES_OAEP_SHA_256").map(|_| json!(0))),
        E::ResourceUnavailableCmkDisabled
    );
    call(&kms, "EnableKey", json!({"KeyId": key})).unwrap();

    // A second process (a fresh service on the same store) has the same key.
    drop(kms);
    let (again, _) = open(&d.path().join("kms"));
    assert_eq!(
        rsa_decrypt(&again, &key, &ct, "RSAES_OAEP_SHA_256").unwrap(),
        b"this is plaintext\n"
    );
    // The private key is nowhere in the store file in clear: the public modulus is
    // not either (it is inside the wrapped PKCS#8).
    let der = std::fs::read(w.join("public_key.bin")).unwrap();
    let store_bytes = std::fs::read(d.path().join("kms/keys.kms")).unwrap();
    let modulus = &der[der.len() - 200..der.len() - 100];
    assert!(!store_bytes.windows(modulus.len()).any(|x| x == modulus));
}

fn sign(kms: &dyn Kms, key: &str, alg: &str, msg: &[u8], mt: &str) -> Vec<u8> {
    let r = call(
        kms,
        "SignByAsymmetricKey",
        json!({"KeyId": key, "Algorithm": alg, "Message": B64.encode(msg), "MessageType": mt}),
    )
    .unwrap();
    B64.decode(s(&r, "Signature")).unwrap()
}

fn verify(kms: &dyn Kms, key: &str, alg: &str, msg: &[u8], mt: &str, sig: &[u8]) -> bool {
    let r = call(
        kms,
        "VerifyByAsymmetricKey",
        json!({"KeyId": key, "Algorithm": alg, "Message": B64.encode(msg),
               "MessageType": mt, "SignatureValue": B64.encode(sig)}),
    )
    .unwrap();
    r["SignatureValid"].as_bool().unwrap()
}

/// Seed 002 "RSA Signature Verification" / "ECC Signature Verification", steps 3–6:
/// the KMS signs RAW and DIGEST, openssl verifies; the KMS verifies its own.
fn kms_signs_openssl_verifies(kms: &dyn Kms, key: &str, w: &Path, alg: &str, sigopts: &[&str]) {
    let msg = b"test";
    std::fs::write(w.join("test_verify.txt"), msg).unwrap();
    openssl(
        w,
        &[
            "dgst",
            "-sha256",
            "-binary",
            "-out",
            "digest.bin",
            "test_verify.txt",
        ],
    );
    let digest = std::fs::read(w.join("digest.bin")).unwrap();
    assert_eq!(digest.len(), 32);
    for (m, mt) in [(&msg[..], "RAW"), (&digest[..], "DIGEST")] {
        let sig = sign(kms, key, alg, m, mt);
        std::fs::write(w.join("signContent.bin"), &sig).unwrap();
        let mut args = vec!["dgst", "-verify", "public_key.pem", "-sha256"];
        for o in sigopts {
            args.extend_from_slice(&["-sigopt", o]);
        }
        args.extend_from_slice(&["-signature", "./signContent.bin", "./test_verify.txt"]);
        assert!(
            openssl_verifies(w, &args, "Verified OK"),
            "{alg} {mt}: openssl rejects the KMS signature"
        );
        assert!(verify(kms, key, alg, m, mt, &sig), "{alg} {mt}");
        assert!(!verify(kms, key, alg, b"tesu", "RAW", &sig));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(!verify(kms, key, alg, m, mt, &bad));
        // Tampered message: openssl refuses too.
        std::fs::write(w.join("other.txt"), b"tesu").unwrap();
        let n = args.len();
        args[n - 1] = "./other.txt";
        assert!(!openssl_verifies(w, &args, "Verified OK"));
    }
}

#[test]
fn seed_002_rsa_and_ecc_signatures_checked_by_openssl() {
    let d = tempfile::tempdir().unwrap();
    let (kms, _) = open(&d.path().join("kms"));
    let w = d.path();

    let rsa = create_usage(&kms, "test_rsa", "ASYMMETRIC_SIGN_VERIFY_RSA_2048");
    download_public_key(&kms, &rsa, w);
    kms_signs_openssl_verifies(
        &kms,
        &rsa,
        w,
        "RSA_PSS_SHA_256",
        &["rsa_padding_mode:pss", "rsa_pss_saltlen:-1"],
    );
    kms_signs_openssl_verifies(&kms, &rsa, w, "RSA_PKCS1_SHA_256", &[]);
    // A PSS signature is not a PKCS#1 one, and an ECC algorithm does not fit.
    let pss = sign(&kms, &rsa, "RSA_PSS_SHA_256", b"test", "RAW");
    assert!(!verify(
        &kms,
        &rsa,
        "RSA_PKCS1_SHA_256",
        b"test",
        "RAW",
        &pss
    ));
    assert_eq!(
        code(call(
            &kms,
            "SignByAsymmetricKey",
            json!({"KeyId": rsa, "Algorithm": "ECC_P256_R1", "Message": "dGVzdA==", "MessageType": "RAW"})
        )),
        E::InvalidParameterValue
    );

    let ecc = create_usage(&kms, "test_ecc", "ASYMMETRIC_SIGN_VERIFY_ECC");
    download_public_key(&kms, &ecc, w);
    kms_signs_openssl_verifies(&kms, &ecc, w, "ECC_P256_R1", &[]);

    // Message limits: RAW 1–4096 bytes, DIGEST exactly 32.
    let big = vec![7u8; 4096];
    sign(&kms, &rsa, "RSA_PKCS1_SHA_256", &big, "RAW");
    for (len, mt) in [(4097usize, "RAW"), (31, "DIGEST"), (33, "DIGEST")] {
        assert_eq!(
            code(call(
                &kms,
                "SignByAsymmetricKey",
                json!({"KeyId": rsa, "Algorithm": "RSA_PKCS1_SHA_256",
                       "Message": B64.encode(vec![1u8; len]), "MessageType": mt})
            )),
            E::InvalidParameterValue,
            "{len} {mt}"
        );
    }
    // A decryption key does not sign; a signing key does not decrypt.
    let dec = create_usage(&kms, "dec", "ASYMMETRIC_DECRYPT_RSA_2048");
    assert_eq!(
        code(call(
            &kms,
            "SignByAsymmetricKey",
            json!({"KeyId": dec, "Algorithm": "RSA_PSS_SHA_256", "Message": "dGVzdA=="})
        )),
        E::InvalidParameterValueInvalidKeyUsage
    );
    assert_eq!(
        code(rsa_decrypt(&kms, &rsa, &[0u8; 256], "RSAES_OAEP_SHA_256").map(|_| json!(0))),
        E::InvalidParameterValueInvalidKeyUsage
    );
    call(&kms, "DisableKey", json!({"KeyId": rsa})).unwrap();
    assert_eq!(
        code(call(
            &kms,
            "SignByAsymmetricKey",
            json!({"KeyId": rsa, "Algorithm": "RSA_PSS_SHA_256", "Message": "dGVzdA=="})
        )),
        E::ResourceUnavailableCmkDisabled
    );

    let la = call(&kms, "ListAlgorithms", json!({})).unwrap();
    assert_eq!(
        la["AsymmetricAlgorithms"],
        json!([
            {"KeyUsage": "ASYMMETRIC_DECRYPT_RSA_2048", "Algorithm": "RSA_2048"},
            {"KeyUsage": "ASYMMETRIC_DECRYPT_SM2", "Algorithm": "SM2"},
            {"KeyUsage": "ASYMMETRIC_Encrypt_Decrypt_Kyber_AES", "Algorithm": "Kyber_AES"}
        ])
    );
    assert_eq!(
        la["AsymmetricSignVerifyAlgorithms"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // P-384 is not built.
    assert_eq!(
        code(call(
            &kms,
            "CreateKey",
            json!({"Alias": "p384", "KeyUsage": "ASYMMETRIC_SIGN_VERIFY_ECDSA384"})
        )),
        E::UnsupportedOperationUnsupportedKeyUsageInCurrentRegion
    );
}

/// A store holding a key pair that openssl made and keeps a copy of, written in the
/// documented format (docs/FORMAT.md, `keys.kms` version 2): so openssl can sign
/// with the private key, which a KMS key never gives out.
fn store_with_openssl_key(
    dir: &Path,
    w: &Path,
    usage: &str,
    kind: MaterialKind,
    der: &str,
) -> String {
    // `genpkey -outform DER` writes the traditional form; the store keeps PKCS#8.
    openssl(
        w,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-inform", "DER", "-in", der, "-outform", "DER", "-out",
            "key.p8",
        ],
    );
    store_with_raw_key(dir, w, usage, kind, "key.p8")
}

/// As [`store_with_openssl_key`], with the material bytes of `file` as they are.
fn store_with_raw_key(dir: &Path, w: &Path, usage: &str, kind: MaterialKind, file: &str) -> String {
    const ROOT: [u8; 32] = [0x55; 32];
    let key_id = "0d7a4c61-5f2e-4e0b-9a44-000000000001";
    let material = std::fs::read(w.join(file)).unwrap();
    let wrapped =
        store::test_vector_wrap_kind(&ROOT, key_id, 1, kind, &material, &[9u8; 12]).unwrap();
    let body = json!({"keys": [{
        "key_id": key_id, "alias": "imported", "description": "", "create_time": T0,
        "state": "Enabled", "usage": usage, "origin": "TENCENT_KMS", "creator": "local:test",
        "rotation_enabled": false, "rotate_days": 0, "next_rotate_time": 0,
        "last_rotate_time": 0, "deletion_date": 0, "valid_to": 0,
        "versions": [{"version": 1, "created": T0, "kind": kind.as_str(), "wrapped": wrapped}]
    }]});
    std::fs::create_dir_all(dir).unwrap();
    let file = store::test_vector_store_file_version(&ROOT, 2, 3, body.to_string().as_bytes());
    write_store(dir, &ROOT, &file);
    key_id.to_owned()
}

#[test]
fn openssl_signs_the_kms_verifies_pss_with_any_salt_length() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    openssl(
        w,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "DER",
            "-out",
            "rsa.der",
        ],
    );
    let dir: PathBuf = w.join("kms");
    let key = store_with_openssl_key(
        &dir,
        w,
        "ASYMMETRIC_SIGN_VERIFY_RSA_2048",
        MaterialKind::Rsa2048,
        "rsa.der",
    );
    let (kms, _): (KmsService, _) = open(&dir);
    std::fs::write(w.join("test_verify.txt"), b"test").unwrap();
    let digest = openssl(w, &["dgst", "-sha256", "-binary", "test_verify.txt"]);
    // openssl's PSS default salt is the maximum (222 bytes); also 32 and 0 (auto-detected).
    for (opts, alg) in [
        (&["rsa_padding_mode:pss"][..], "RSA_PSS_SHA_256"),
        (
            &["rsa_padding_mode:pss", "rsa_pss_saltlen:32"][..],
            "RSA_PSS_SHA_256",
        ),
        (
            &["rsa_padding_mode:pss", "rsa_pss_saltlen:0"][..],
            "RSA_PSS_SHA_256",
        ),
        (&[][..], "RSA_PKCS1_SHA_256"),
    ] {
        let mut args = vec!["dgst", "-sha256", "-sign", "rsa.der", "-keyform", "DER"];
        for o in opts {
            args.extend_from_slice(&["-sigopt", o]);
        }
        args.extend_from_slice(&["-out", "sig.bin", "test_verify.txt"]);
        openssl(w, &args);
        let sig = std::fs::read(w.join("sig.bin")).unwrap();
        assert!(verify(&kms, &key, alg, b"test", "RAW", &sig), "{opts:?}");
        assert!(verify(&kms, &key, alg, &digest, "DIGEST", &sig), "{opts:?}");
        assert!(!verify(&kms, &key, alg, b"tesu", "RAW", &sig), "{opts:?}");
    }
    // The KMS's public key is openssl's.
    download_public_key(&kms, &key, w);
    let pem = openssl(w, &["pkey", "-inform", "DER", "-in", "rsa.der", "-pubout"]);
    assert_eq!(
        std::fs::read(w.join("public_key.pem")).unwrap(),
        pem,
        "GetPublicKey differs from openssl's public key"
    );
    // The store was only read (format 2 opens as it is).
    drop(kms);

    // ECC P-256 the same way.
    openssl(
        w,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-outform",
            "DER",
            "-out",
            "ec.der",
        ],
    );
    let dir2 = w.join("kms2");
    let key = store_with_openssl_key(
        &dir2,
        w,
        "ASYMMETRIC_SIGN_VERIFY_ECC",
        MaterialKind::EcP256,
        "ec.der",
    );
    let (kms, _) = open(&dir2);
    openssl(
        w,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "ec.der",
            "-keyform",
            "DER",
            "-out",
            "sig.bin",
            "test_verify.txt",
        ],
    );
    let sig = std::fs::read(w.join("sig.bin")).unwrap();
    assert!(verify(&kms, &key, "ECC_P256_R1", b"test", "RAW", &sig));
    assert!(verify(&kms, &key, "ECC_P256_R1", &digest, "DIGEST", &sig));
    assert!(!verify(&kms, &key, "ECC_P256_R1", b"tesu", "RAW", &sig));
}

struct Params {
    token: String,
}

/// Seed 002 "Importing External Key" step 2–3: GetParametersForImport, then
/// `openssl rand` and `openssl pkeyutl` with the wrapping algorithm's options.
fn wrap_material(kms: &dyn Kms, key: &str, w: &Path, alg: &str) -> Params {
    let r = call(
        kms,
        "GetParametersForImport",
        json!({"KeyId": key, "WrappingAlgorithm": alg, "WrappingKeySpec": "RSA_2048"}),
    )
    .unwrap();
    assert!(r["ParametersValidTo"].as_u64().unwrap() >= T0 + 86_400);
    save_public_key_bin(w, &s(&r, "PublicKey"));
    openssl_encrypt_to_public_key_bin(
        w,
        "raw_material.bin",
        "encrypted_key_material.bin",
        rsa_pkeyopts(alg),
    );
    openssl_base64(w, "encrypted_key_material.bin", "encrypted_material.base64");
    Params {
        token: s(&r, "ImportToken"),
    }
}

fn import(
    kms: &dyn Kms,
    key: &str,
    w: &Path,
    p: &Params,
    valid_to: u64,
) -> kms_core::KmsResult<Value> {
    let material = std::fs::read_to_string(w.join("encrypted_material.base64")).unwrap();
    call(
        kms,
        "ImportKeyMaterial",
        json!({"EncryptedKeyMaterial": material, "ImportToken": p.token, "KeyId": key, "ValidTo": valid_to}),
    )
}

fn state(kms: &dyn Kms, key: &str) -> String {
    s(
        &call(kms, "DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"],
        "KeyState",
    )
}

#[test]
fn seed_002_byok_with_each_wrapping_algorithm() {
    let d = tempfile::tempdir().unwrap();
    let (kms, clock) = open(&d.path().join("kms"));
    let w = d.path();

    for (i, (alg, bytes)) in [
        ("RSAES_PKCS1_V1_5", "16"),
        ("RSAES_OAEP_SHA_1", "32"),
        ("RSAES_OAEP_SHA_256", "32"),
    ]
    .into_iter()
    .enumerate()
    {
        // Step 1: an external CMK.
        let r = call(
            &kms,
            "CreateKey",
            json!({"Alias": format!("byok{i}"), "Type": 2}),
        )
        .unwrap();
        let key = s(&r, "KeyId");
        assert_eq!(r["KeyState"], "PendingImport");
        let md = &call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"];
        assert_eq!(md["Origin"], "EXTERNAL");
        assert_eq!(md["Type"], json!(2));
        assert_eq!(
            code(encrypt(&kms, &key, b"x", None).map(|_| json!(0))),
            E::ResourceUnavailableCmkStateNotSupport
        );
        // Steps 2–4, with `openssl rand` material of 128 or 256 bits.
        openssl(w, &["rand", "-out", "raw_material.bin", bytes]);
        let p = wrap_material(&kms, &key, w, alg);
        import(&kms, &key, w, &p, 0).unwrap();
        assert_eq!(state(&kms, &key), "Enabled", "{alg}");
        let blob = encrypt(&kms, &key, b"byok secret", Some(r#"{"v":"1"}"#)).unwrap();
        assert_eq!(
            decrypt(&kms, &blob, Some(r#"{"v":"1"}"#)).unwrap(),
            b"byok secret"
        );

        // The material is what openssl made: a blob opens under it outside the KMS
        // (AES-GCM of the documented blob format, here by the crate's own blob code).
        let raw = std::fs::read(w.join("raw_material.bin")).unwrap();
        let aead = match raw.len() {
            16 => kms_core::crypto::AeadKey::new_128(raw[..].try_into().unwrap()),
            _ => kms_core::crypto::AeadKey::new(raw[..].try_into().unwrap()),
        };
        let bb = B64.decode(&blob).unwrap();
        let parsed = kms_core::blob::parse(&bb).unwrap();
        let ec = kms_core::EncryptionContext::from_json(r#"{"v":"1"}"#).unwrap();
        let opened =
            kms_core::blob::open(&aead, &parsed, &kms_core::blob::canonical_context(&ec)).unwrap();
        assert_eq!(&opened[..], b"byok secret");

        // External keys do not rotate.
        assert_eq!(
            code(call(&kms, "RotateKey", json!({"KeyId": key}))),
            E::UnsupportedOperationExternalCmkCanNotRotate
        );
        assert_eq!(
            code(call(&kms, "EnableKeyRotation", json!({"KeyId": key}))),
            E::UnsupportedOperationExternalCmkCanNotRotate
        );

        // Delete the material: PendingImport, Decrypt and Encrypt refused.
        call(&kms, "DeleteImportedKeyMaterial", json!({"KeyId": key})).unwrap();
        assert_eq!(state(&kms, &key), "PendingImport");
        assert_eq!(
            code(decrypt(&kms, &blob, Some(r#"{"v":"1"}"#)).map(|_| json!(0))),
            E::ResourceUnavailableCmkStateNotSupport
        );
        assert_eq!(
            code(encrypt(&kms, &key, b"x", None).map(|_| json!(0))),
            E::ResourceUnavailableCmkStateNotSupport
        );
        // The material is gone from the store file.
        let store_bytes = std::fs::read(d.path().join("kms/keys.kms")).unwrap();
        let body: Value = serde_json::from_slice(&store_bytes[64..store_bytes.len() - 32]).unwrap();
        let rec = body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == json!(key))
            .unwrap();
        assert_eq!(rec["versions"], json!([]), "{rec}");
        assert!(rec["material_check"].is_string(), "{rec}");

        // Re-import of the same material (with the same token, still valid): works again.
        import(&kms, &key, w, &p, 0).unwrap();
        assert_eq!(
            decrypt(&kms, &blob, Some(r#"{"v":"1"}"#)).unwrap(),
            b"byok secret"
        );

        // Different material: MaterialNotMatch, and the key keeps working.
        openssl(w, &["rand", "-out", "raw_material.bin", bytes]);
        let p2 = wrap_material(&kms, &key, w, alg);
        assert_eq!(
            code(import(&kms, &key, w, &p2, 0)),
            E::InvalidParameterValueMaterialNotMatch
        );
        // The first token was replaced by the second.
        assert_eq!(
            code(import(&kms, &key, w, &p, 0)),
            E::ResourceUnavailableTokenExpired
        );
        assert_eq!(
            decrypt(&kms, &blob, Some(r#"{"v":"1"}"#)).unwrap(),
            b"byok secret"
        );
    }

    // ValidTo: the material expires, the key goes to PendingImport, and a re-import
    // (with fresh parameters once the 24 h token has expired) brings it back.
    let r = call(&kms, "CreateKey", json!({"Alias": "expiring", "Type": 2})).unwrap();
    let key = s(&r, "KeyId");
    openssl(w, &["rand", "-out", "raw_material.bin", "32"]);
    let p = wrap_material(&kms, &key, w, "RSAES_OAEP_SHA_256");
    assert_eq!(
        code(import(&kms, &key, w, &p, T0)),
        E::InvalidParameterValue
    );
    import(&kms, &key, w, &p, T0 + 100).unwrap();
    let md = &call(&kms, "DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"];
    assert_eq!(md["ValidTo"], json!(T0 + 100));
    let blob = encrypt(&kms, &key, b"until", None).unwrap();
    clock.advance(99);
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"until");
    clock.advance(1);
    assert_eq!(
        code(decrypt(&kms, &blob, None).map(|_| json!(0))),
        E::ResourceUnavailableCmkStateNotSupport
    );
    assert_eq!(state(&kms, &key), "PendingImport");
    clock.advance(86_400);
    assert_eq!(
        code(import(&kms, &key, w, &p, 0)),
        E::ResourceUnavailableTokenExpired
    );
    // Same material, new parameters.
    let p = wrap_material(&kms, &key, w, "RSAES_OAEP_SHA_256");
    import(&kms, &key, w, &p, 0).unwrap();
    assert_eq!(decrypt(&kms, &blob, None).unwrap(), b"until");

    // Wrong inputs get the right codes.
    assert_eq!(
        code(call(
            &kms,
            "ImportKeyMaterial",
            json!({"EncryptedKeyMaterial": B64.encode([1u8; 256]), "ImportToken": "bogus", "KeyId": key})
        )),
        E::ResourceUnavailableTokenExpired
    );
    assert_eq!(
        code(call(
            &kms,
            "ImportKeyMaterial",
            json!({"EncryptedKeyMaterial": B64.encode([1u8; 255]), "ImportToken": p.token, "KeyId": key})
        )),
        E::InvalidParameterValueInvalidImportKeyMaterial
    );
    assert_eq!(
        code(call(
            &kms,
            "ImportKeyMaterial",
            json!({"EncryptedKeyMaterial": B64.encode([1u8; 256]), "ImportToken": p.token, "KeyId": key})
        )),
        E::InvalidParameterDecryptMaterialError
    );
    let sym = create(&kms, "not-external");
    assert_eq!(
        code(call(
            &kms,
            "GetParametersForImport",
            json!({"KeyId": sym, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"})
        )),
        E::UnsupportedOperationNotExternalCmk
    );
    assert_eq!(
        code(call(
            &kms,
            "DeleteImportedKeyMaterial",
            json!({"KeyId": sym})
        )),
        E::UnsupportedOperationNotExternalCmk
    );
    assert_eq!(
        code(call(
            &kms,
            "GetParametersForImport",
            json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_512"})
        )),
        E::InvalidParameterValue
    );
    assert_eq!(
        code(call(
            &kms,
            "CreateKey",
            json!({"Alias": "asym-ext", "Type": 2, "KeyUsage": "ASYMMETRIC_DECRYPT_RSA_2048"})
        )),
        E::UnsupportedOperation
    );
}

/// SM2 curve parameters a, b, Gx, Gy (GM/T 0003.5; `openssl ecparam -name SM2 -param_enc explicit -text`), for Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ Gx ‖ Gy ‖ x ‖ y).
const SM2_CURVE: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC\
28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93\
32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7\
BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The SM2 DIGEST of `test_verify.txt` for the public key in `public_key.bin`
/// (what `gmssl sm2utl -dgst -id 1234567812345678` prints), with `openssl dgst -sm3`.
fn sm2_digest(w: &Path) -> Vec<u8> {
    let spki = std::fs::read(w.join("public_key.bin")).unwrap();
    let xy = &spki[spki.len() - 64..];
    let mut z_in = vec![0x00, 0x80];
    z_in.extend_from_slice(b"1234567812345678");
    z_in.extend_from_slice(&unhex(SM2_CURVE));
    z_in.extend_from_slice(xy);
    std::fs::write(w.join("z_in.bin"), &z_in).unwrap();
    let mut m = openssl(w, &["dgst", "-sm3", "-binary", "z_in.bin"]);
    m.extend_from_slice(&std::fs::read(w.join("test_verify.txt")).unwrap());
    std::fs::write(w.join("zm.bin"), &m).unwrap();
    openssl(w, &["dgst", "-sm3", "-binary", "zm.bin"])
}

#[test]
fn sm2_signatures_checked_by_openssl_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let (kms, _) = open(&d.path().join("kms"));
    let w = d.path();
    let key = create_usage(&kms, "test_sm2", "ASYMMETRIC_SIGN_VERIFY_SM2");
    download_public_key(&kms, &key, w);
    let spki = std::fs::read(w.join("public_key.bin")).unwrap();
    // id-ecPublicKey with the SM2 curve, as in seed 002 ("MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAE…").
    assert!(B64
        .encode(&spki)
        .starts_with("MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAE"));
    std::fs::write(w.join("test_verify.txt"), b"test").unwrap();
    let digest = sm2_digest(w);
    let osl_verify = |w: &Path| {
        openssl_verifies(
            w,
            &[
                "pkeyutl",
                "-verify",
                "-in",
                "test_verify.txt",
                "-rawin",
                "-digest",
                "sm3",
                "-pubin",
                "-inkey",
                "public_key.pem",
                "-pkeyopt",
                "distid:1234567812345678",
                "-sigfile",
                "signContent.bin",
            ],
            "Verified Successfully",
        )
    };
    for (m, mt) in [(&b"test"[..], "RAW"), (&digest[..], "DIGEST")] {
        let sig = sign(&kms, &key, "SM2DSA", m, mt);
        std::fs::write(w.join("signContent.bin"), &sig).unwrap();
        assert!(
            osl_verify(w),
            "{mt}: openssl rejects the KMS's SM2 signature"
        );
        assert!(verify(&kms, &key, "SM2DSA", m, mt, &sig), "{mt}");
        assert!(!verify(&kms, &key, "SM2DSA", b"tesu", "RAW", &sig));
    }
    // Another message: openssl refuses too (the check above can fail).
    std::fs::write(w.join("test_verify.txt"), b"tesu").unwrap();
    assert!(!osl_verify(w));
    std::fs::write(w.join("test_verify.txt"), b"test").unwrap();

    // openssl signs with a key it made; a store holding that key verifies.
    openssl(w, &["genpkey", "-algorithm", "SM2", "-out", "sm2.pem"]);
    let der = openssl(w, &["pkey", "-in", "sm2.pem", "-outform", "DER"]);
    // The 32-byte scalar: ECPrivateKey { version 1, privateKey OCTET STRING (32) … }.
    let at = der
        .windows(5)
        .position(|x| x == [0x02, 0x01, 0x01, 0x04, 0x20])
        .unwrap();
    std::fs::write(w.join("sm2.scalar"), &der[at + 5..at + 37]).unwrap();
    let dir = w.join("kms2");
    let key2 = store_with_raw_key(
        &dir,
        w,
        "ASYMMETRIC_SIGN_VERIFY_SM2",
        MaterialKind::Sm2,
        "sm2.scalar",
    );
    let (kms2, _) = open(&dir);
    openssl(
        w,
        &[
            "pkeyutl",
            "-sign",
            "-in",
            "test_verify.txt",
            "-rawin",
            "-digest",
            "sm3",
            "-inkey",
            "sm2.pem",
            "-pkeyopt",
            "distid:1234567812345678",
            "-out",
            "sig.bin",
        ],
    );
    let sig = std::fs::read(w.join("sig.bin")).unwrap();
    assert!(verify(&kms2, &key2, "SM2DSA", b"test", "RAW", &sig));
    download_public_key(&kms2, &key2, w);
    assert!(verify(
        &kms2,
        &key2,
        "SM2DSA",
        &sm2_digest(w),
        "DIGEST",
        &sig
    ));
    assert!(!verify(&kms2, &key2, "SM2DSA", b"tesu", "RAW", &sig));
    // SM2 decryption keys exist (tests/kms_http_clients.rs drives them with openssl and
    // gmssl); one cannot sign.
    let dec = call(
        &kms,
        "CreateKey",
        json!({"Alias": "sm2dec", "KeyUsage": "ASYMMETRIC_DECRYPT_SM2"}),
    )
    .unwrap()["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        code(call(
            &kms,
            "SignByAsymmetricKey",
            json!({"KeyId": dec, "Algorithm": "SM2DSA", "Message": "dGVzdA=="})
        )),
        E::InvalidParameterValueInvalidKeyUsage
    );
}

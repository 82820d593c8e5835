//! The real Tencent Cloud clients (tccli, tencentcloud-sdk-python; installed by
//! scripts/install-kms-clients.sh) against the real `kmsfs kms serve` on 127.0.0.1.
//!
//! These tests fail, not skip, when the clients are missing.
#![allow(clippy::unwrap_used)]

mod kms_http_support;

use base64::Engine as _;
use kms_http_support::{
    admin, count_requests, create_key, openssl, python_client, repo, require_program,
    require_tencent_sdk, server_in_tmp, write_principals, ServerProc, Tccli, SECRET_ID, SECRET_KEY,
};
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn s<'v>(v: &'v Value, field: &str) -> &'v str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {v}"))
}

#[test]
fn tccli_runs_the_seed_commands() {
    require_program("tccli");
    let (tmp, server) = server_in_tmp();
    let home = tmp.path().join("home");
    let t = Tccli::configured(&home, &server);

    // Seed 002: tccli kms CreateKey --Alias test …
    let created = t.ok(
        "CreateKey",
        &["--Alias", "test", "--Description", "kmsfs http test"],
    );
    let key = s(&created, "KeyId").to_owned();
    assert_eq!(s(&created, "Alias"), "test");
    assert_eq!(s(&created, "KeyState"), "Enabled");
    assert_eq!(s(&created, "KeyUsage"), "ENCRYPT_DECRYPT");
    assert_eq!(s(&created, "RequestId").len(), 36);

    let d = t.ok("DescribeKey", &["--KeyId", &key]);
    assert_eq!(s(&d["KeyMetadata"], "KeyId"), key);
    assert_eq!(s(&d["KeyMetadata"], "Alias"), "test");
    assert_eq!(s(&d["KeyMetadata"], "Description"), "kmsfs http test");
    assert_eq!(s(&d["KeyMetadata"], "KeyState"), "Enabled");

    let other = s(&t.ok("CreateKey", &["--Alias", "test2"]), "KeyId").to_owned();
    let l = t.ok("ListKeys", &["--Limit", "10"]);
    assert_eq!(l["TotalCount"], 2, "{l}");
    let ids: Vec<&str> = l["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| s(k, "KeyId"))
        .collect();
    assert!(
        ids.contains(&key.as_str()) && ids.contains(&other.as_str()),
        "{l}"
    );

    // Encrypt / Decrypt, with an encryption context that must match.
    let plaintext = B64.encode("hello from tccli");
    let e = t.ok(
        "Encrypt",
        &[
            "--KeyId",
            &key,
            "--Plaintext",
            &plaintext,
            "--EncryptionContext",
            r#"{"volume":"v1"}"#,
        ],
    );
    let blob = s(&e, "CiphertextBlob").to_owned();
    assert_eq!(s(&e, "KeyId"), key);
    let dec = t.ok(
        "Decrypt",
        &[
            "--CiphertextBlob",
            &blob,
            "--EncryptionContext",
            r#"{"volume":"v1"}"#,
        ],
    );
    assert_eq!(s(&dec, "Plaintext"), plaintext);
    assert_eq!(s(&dec, "KeyId"), key);
    t.fails(
        "Decrypt",
        &[
            "--CiphertextBlob",
            &blob,
            "--EncryptionContext",
            r#"{"volume":"v2"}"#,
        ],
        "InvalidParameterValue.InvalidCiphertext",
    );

    // GenerateDataKey: a 32-byte DEK whose blob decrypts to the same DEK.
    let g = t.ok(
        "GenerateDataKey",
        &["--KeyId", &key, "--KeySpec", "AES_256"],
    );
    let dek = B64.decode(s(&g, "Plaintext")).unwrap();
    assert_eq!(dek.len(), 32);
    let dec = t.ok("Decrypt", &["--CiphertextBlob", s(&g, "CiphertextBlob")]);
    assert_eq!(B64.decode(s(&dec, "Plaintext")).unwrap(), dek);

    // DisableKey: Encrypt refused with the exact code; EnableKey brings it back.
    t.ok("DisableKey", &["--KeyId", &key]);
    assert_eq!(
        s(
            &t.ok("DescribeKey", &["--KeyId", &key])["KeyMetadata"],
            "KeyState"
        ),
        "Disabled"
    );
    t.fails(
        "Encrypt",
        &["--KeyId", &key, "--Plaintext", &plaintext],
        "ResourceUnavailable.CmkDisabled",
    );
    t.ok("EnableKey", &["--KeyId", &key]);
    t.ok("Encrypt", &["--KeyId", &key, "--Plaintext", &plaintext]);

    // ScheduleKeyDeletion needs a disabled key; CancelKeyDeletion leaves it disabled.
    t.fails(
        "ScheduleKeyDeletion",
        &["--KeyId", &key, "--PendingWindowInDays", "7"],
        "ResourceUnavailable.CmkShouldBeDisabled",
    );
    t.ok("DisableKey", &["--KeyId", &key]);
    let sd = t.ok(
        "ScheduleKeyDeletion",
        &["--KeyId", &key, "--PendingWindowInDays", "7"],
    );
    assert_eq!(s(&sd, "KeyId"), key);
    let deletion = sd["DeletionDate"].as_i64().expect("DeletionDate");
    let now = kms_core::http::tc3::unix_now();
    assert!(
        (now + 7 * 86_400 - 120..=now + 7 * 86_400 + 120).contains(&deletion),
        "DeletionDate {deletion} is not 7 days from {now}"
    );
    assert_eq!(
        s(
            &t.ok("DescribeKey", &["--KeyId", &key])["KeyMetadata"],
            "KeyState"
        ),
        "PendingDelete"
    );
    let c = t.ok("CancelKeyDeletion", &["--KeyId", &key]);
    assert_eq!(s(&c, "KeyId"), key);
    assert_eq!(
        s(
            &t.ok("DescribeKey", &["--KeyId", &key])["KeyMetadata"],
            "KeyState"
        ),
        "Disabled"
    );

    // --endpoint http://… on the command line: tccli sends `Host: http://127.0.0.1:PORT`
    // and signs that literal value.
    let out = t.raw(&[
        "kms",
        "DescribeKey",
        "--KeyId",
        &other,
        "--endpoint",
        &format!("http://{}", server.addr),
    ]);
    assert!(
        out.status.success(),
        "--endpoint http://: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server logged each request once, with the principal and outcome, and never a
    // plaintext or a DEK.
    let log = server.log_lines();
    assert_eq!(count_requests(&log, "CreateKey", SECRET_ID, "OK"), 2);
    assert_eq!(
        count_requests(
            &log,
            "Encrypt",
            SECRET_ID,
            "ResourceUnavailable.CmkDisabled"
        ),
        1
    );
    let text = log.join("\n");
    assert!(!text.contains(&plaintext) && !text.contains(s(&g, "Plaintext")));
    assert!(!text.contains(SECRET_KEY));
}

/// Batch state changes, the service-level actions, and what the API has that this KMS does
/// not offer, through tccli and the SDK's own action list.
#[test]
fn batch_service_and_unoffered_actions_through_the_real_clients() {
    require_program("tccli");
    require_tencent_sdk();
    let (tmp, server) = server_in_tmp();
    let home = tmp.path().join("home");
    let t = Tccli::configured(&home, &server);
    let a = s(&t.ok("CreateKey", &["--Alias", "batch-a"]), "KeyId").to_owned();
    let b = s(&t.ok("CreateKey", &["--Alias", "batch-b"]), "KeyId").to_owned();
    let both = format!(r#"["{a}","{b}"]"#);
    let states = |t: &Tccli| -> Vec<String> {
        let v = t.ok("DescribeKeys", &["--KeyIds", &both]);
        v["KeyMetadatas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["KeyState"].as_str().unwrap().to_owned())
            .collect()
    };
    t.ok("DisableKeys", &["--KeyIds", &both]);
    assert_eq!(states(&t), ["Disabled", "Disabled"]);
    // All or none: one unknown key, and neither changes.
    t.fails(
        "EnableKeys",
        &[
            "--KeyIds",
            &format!(r#"["{a}","00000000-0000-4000-8000-000000000000"]"#),
        ],
        "ResourceUnavailable.CmkNotFound",
    );
    assert_eq!(states(&t), ["Disabled", "Disabled"]);
    t.ok("EnableKeys", &["--KeyIds", &both]);
    assert_eq!(states(&t), ["Enabled", "Enabled"]);
    // ReEncrypt as documented: nothing to do for the same, unrotated key.
    let blob = s(
        &t.ok("Encrypt", &["--KeyId", &a, "--Plaintext", "cmVlbmNyeXB0"]),
        "CiphertextBlob",
    )
    .to_owned();
    let same = t.ok("ReEncrypt", &["--CiphertextBlob", &blob]);
    assert_eq!(
        (same["ReEncrypted"].as_bool(), s(&same, "CiphertextBlob")),
        (Some(false), &*blob)
    );
    let other = t.ok(
        "ReEncrypt",
        &["--CiphertextBlob", &blob, "--DestinationKeyId", &b],
    );
    assert_eq!(other["ReEncrypted"], true);
    assert_ne!(s(&other, "CiphertextBlob"), blob);
    t.ok("RotateKey", &["--KeyId", &a]);
    let rotated = t.ok("ReEncrypt", &["--CiphertextBlob", &blob]);
    assert_eq!(rotated["ReEncrypted"], true);
    let back = t.ok(
        "Decrypt",
        &["--CiphertextBlob", s(&rotated, "CiphertextBlob")],
    );
    assert_eq!(s(&back, "Plaintext"), "cmVlbmNyeXB0");
    let st = t.ok("GetServiceStatus", &[]);
    assert_eq!(st["ServiceEnabled"], true, "{st}");
    assert_eq!(st["CmkUserCount"], 2, "{st}");
    let r = t.ok("GetRegions", &[]);
    assert_eq!(r["Regions"][0], "ap-guangzhou", "{r}");
    t.fails(
        "CreateWhiteBoxKey",
        &["--Alias", "wb", "--Algorithm", "SM4"],
        "UnsupportedOperation",
    );

    // Data keys for a caller's public key: never in clear; openssl opens them, and they
    // are the data key Decrypt gives for the CiphertextBlob.
    let dir = tmp.path();
    let ossl = |args: &[&str]| openssl(dir, args);
    ossl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "caller.pem",
    ]);
    ossl(&["pkey", "-in", "caller.pem", "-pubout", "-out", "caller.pub"]);
    let pubkey = std::fs::read_to_string(dir.join("caller.pub")).unwrap();
    // GenerateDataKey with the data key sealed to a caller's public key.
    let sealed_data_key = |public_key: &str, alg: &str| {
        t.ok(
            "GenerateDataKey",
            &[
                "--KeyId",
                &a,
                "--KeySpec",
                "AES_256",
                "--EncryptionPublicKey",
                public_key,
                "--EncryptionAlgorithm",
                alg,
            ],
        )
    };
    // The sealed data key of a response, in sealed.bin for openssl.
    let save_sealed = |v: &Value| {
        std::fs::write(
            dir.join("sealed.bin"),
            B64.decode(s(v, "Plaintext")).unwrap(),
        )
        .unwrap()
    };
    for (alg, opts) in [
        (
            "RSAES_OAEP_SHA_256",
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ][..],
        ),
        (
            "RSAES_OAEP_SHA_1",
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha1",
            ][..],
        ),
        (
            "RSAES_PKCS1_V1_5",
            &["-pkeyopt", "rsa_padding_mode:pkcs1"][..],
        ),
    ] {
        let g = sealed_data_key(&pubkey, alg);
        let sealed = B64.decode(s(&g, "Plaintext")).unwrap();
        assert_eq!(sealed.len(), 256, "{alg}: not an RSA-2048 ciphertext");
        std::fs::write(dir.join("sealed.bin"), &sealed).unwrap();
        let mut args = vec![
            "pkeyutl",
            "-decrypt",
            "-inkey",
            "caller.pem",
            "-in",
            "sealed.bin",
        ];
        args.extend_from_slice(opts);
        let dek = ossl(&args);
        assert_eq!(dek.len(), 32, "{alg}");
        let d = t.ok("Decrypt", &["--CiphertextBlob", s(&g, "CiphertextBlob")]);
        assert_eq!(B64.decode(s(&d, "Plaintext")).unwrap(), dek, "{alg}");
        // Decrypt with the key: sealed again, the same data key inside.
        let d = t.ok(
            "Decrypt",
            &[
                "--CiphertextBlob",
                s(&g, "CiphertextBlob"),
                "--EncryptionPublicKey",
                &pubkey,
                "--EncryptionAlgorithm",
                alg,
            ],
        );
        save_sealed(&d);
        assert_eq!(ossl(&args), dek, "{alg}: Decrypt");
    }
    // Without EncryptionAlgorithm Tencent's default is SM2: an RSA key is then refused
    // (and no data key is made or shown).
    t.fails(
        "GenerateDataKey",
        &[
            "--KeyId",
            &a,
            "--KeySpec",
            "AES_256",
            "--EncryptionPublicKey",
            &pubkey,
        ],
        "InvalidParameterValue",
    );
    // SM2 with openssl: a data key sealed to the caller's SM2 key (C1C3C2 ASN.1) opens
    // with openssl; what openssl encrypts to an ASYMMETRIC_DECRYPT_SM2 key,
    // AsymmetricSm2Decrypt opens.
    ossl(&["genpkey", "-algorithm", "SM2", "-out", "sm2.pem"]);
    ossl(&["pkey", "-in", "sm2.pem", "-pubout", "-out", "sm2.pub"]);
    let sm2pub = std::fs::read_to_string(dir.join("sm2.pub")).unwrap();
    let g = sealed_data_key(&sm2pub, "SM2_C1C3C2_ASN1");
    save_sealed(&g);
    let dek = ossl(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        "sm2.pem",
        "-in",
        "sealed.bin",
    ]);
    let d = t.ok("Decrypt", &["--CiphertextBlob", s(&g, "CiphertextBlob")]);
    assert_eq!(
        B64.decode(s(&d, "Plaintext")).unwrap(),
        dek,
        "SM2_C1C3C2_ASN1 data key"
    );
    let sm2key = s(
        &t.ok(
            "CreateKey",
            &[
                "--Alias",
                "sm2-decrypt",
                "--KeyUsage",
                "ASYMMETRIC_DECRYPT_SM2",
            ],
        ),
        "KeyId",
    )
    .to_owned();
    let pem = t.ok("GetPublicKey", &["--KeyId", &sm2key]);
    std::fs::write(dir.join("kms-sm2.pub"), s(&pem, "PublicKeyPem")).unwrap();
    std::fs::write(dir.join("msg.txt"), b"sm2 through openssl").unwrap();
    ossl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        "kms-sm2.pub",
        "-in",
        "msg.txt",
        "-out",
        "ct.bin",
    ]);
    let ct = B64.encode(std::fs::read(dir.join("ct.bin")).unwrap());
    let p = t.ok(
        "AsymmetricSm2Decrypt",
        &["--KeyId", &sm2key, "--Ciphertext", &ct],
    );
    assert_eq!(
        B64.decode(s(&p, "Plaintext")).unwrap(),
        b"sm2 through openssl"
    );
    t.fails(
        "AsymmetricSm2Decrypt",
        &["--KeyId", &a, "--Ciphertext", &ct],
        "InvalidParameterValue.InvalidKeyUsage",
    );
    // And with gmssl, through the SDK.
    let out = python_client("sm2_gmssl.py", &server, &[]);
    for case in [
        "OK gmssl-encrypt-kms-decrypt",
        "OK kms-sm2-data-key-gmssl-decrypt",
        "OK tampered FailedOperation.DecryptError",
    ] {
        assert!(out.contains(case), "missing {case:?} in {out}");
    }

    // Every action the SDK knows: none is unknown to the server.
    let out = python_client("action_list.py", &server, &[]);
    let n: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("ACTIONS "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(n, 69, "{out}");
    let unoffered = out
        .lines()
        .filter(|l| l.ends_with(" UnsupportedOperation"))
        .count();
    assert_eq!(
        unoffered,
        kms_core::service::UNSUPPORTED_ACTIONS.len(),
        "{out}"
    );
    for (name, _) in kms_core::service::UNSUPPORTED_ACTIONS {
        assert!(
            out.contains(&format!("ACTION {name} UnsupportedOperation")),
            "{name}: {out}"
        );
    }
    assert_eq!(
        n - unoffered,
        kms_core::service::ACTIONS.len(),
        "implemented actions: {out}"
    );
}

#[test]
fn python_sdk_envelope_sample_from_seed_002() {
    require_tencent_sdk();
    let (_tmp, server) = server_in_tmp();
    let key = create_key(&admin(&server.url), "envelope");
    let out = python_client("envelope_sample.py", &server, &[("KMS_KEY_ID", &key)]);
    assert!(out.contains("ENVELOPE OK"), "{out}");
    let log = server.log_lines();
    assert_eq!(count_requests(&log, "GenerateDataKey", SECRET_ID, "OK"), 1);
    assert_eq!(count_requests(&log, "Decrypt", SECRET_ID, "OK"), 1);
}

#[test]
fn python_sdk_gets_the_exact_error_codes() {
    require_tencent_sdk();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_principals(
        tmp.path(),
        r#"
[[principal]]
secret_id = "AKIDreader"
secret_key = "reader-secret"
actions = ["Describe*"]

[[principal]]
secret_id = "AKIDslow"
secret_key = "slow-secret"
actions = ["Encrypt"]
rate = 1.0
burst = 1

[[principal]]
secret_id = "AKIDstrict"
secret_key = "strict-secret"
require_signed_action = true

[[principal]]
secret_id = "AKIDtemporary"
secret_key = "temporary-secret"
token = "session-token-from-sts"
"#,
    );
    let server = ServerProc::in_dir(tmp.path(), Some(&config));
    let key = create_key(&admin(&server.url), "codes");
    let out = python_client(
        "auth_codes.py",
        &server,
        &[
            ("KMS_KEY_ID", &key),
            ("KMS_READER_ID", "AKIDreader"),
            ("KMS_READER_KEY", "reader-secret"),
            ("KMS_SLOW_ID", "AKIDslow"),
            ("KMS_SLOW_KEY", "slow-secret"),
            ("KMS_STRICT_ID", "AKIDstrict"),
            ("KMS_STRICT_KEY", "strict-secret"),
            ("KMS_TEMP_ID", "AKIDtemporary"),
            ("KMS_TEMP_KEY", "temporary-secret"),
            ("KMS_TEMP_TOKEN", "session-token-from-sts"),
        ],
    );
    for case in [
        "OK post",
        "OK get",
        "OK unsigned-payload",
        "OK wrong-secret-key AuthFailure.SignatureFailure",
        "OK unknown-secret-id AuthFailure.SecretIdNotFound",
        "OK timestamp-10-min-old AuthFailure.SignatureExpire",
        "OK principal-without-rights UnauthorizedOperation",
        "OK reader-may-describe True",
        "OK wrong-version NoSuchVersion",
        "OK unknown-action InvalidAction",
        "OK unknown-key ResourceUnavailable.CmkNotFound",
        "OK same-signature-two-actions served",
        "OK strict-principal-unsigned-action AuthFailure.SignatureFailure",
        "OK temporary-credentials True",
        "OK temporary-without-token AuthFailure.TokenFailure",
        "OK temporary-wrong-token AuthFailure.TokenFailure",
        "OK token-of-another-secret-id AuthFailure.TokenFailure",
        "OK backoff-sample",
    ] {
        assert!(out.contains(case), "missing {case:?} in:\n{out}");
    }
    // Seen at the server: the reader's refusal, the slow principal's 4 Encrypts, and
    // the throttled attempts that never reached the KMS.
    let log = server.log_lines();
    assert_eq!(
        count_requests(&log, "DisableKey", "AKIDreader", "UnauthorizedOperation"),
        1
    );
    assert_eq!(count_requests(&log, "Encrypt", "AKIDslow", "OK"), 4);
    assert!(count_requests(&log, "Encrypt", "AKIDslow", "RequestLimitExceeded") >= 1);
    assert_eq!(count_requests(&log, "DisableKey", SECRET_ID, "OK"), 3);
    assert_eq!(count_requests(&log, "EnableKey", SECRET_ID, "OK"), 4);
    assert_eq!(
        count_requests(
            &log,
            "DescribeKey",
            "AKIDstrict",
            "AuthFailure.SignatureFailure"
        ),
        1
    );
    // The store's own audit log records the refusals of authenticated principals too.
    let audit = std::fs::read_to_string(tmp.path().join("store/audit.log")).unwrap();
    let audited = |action: &str, principal: &str, outcome: &str| {
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["action"] == action && v["principal"] == principal && v["outcome"] == outcome
            })
            .count()
    };
    assert_eq!(audited("Encrypt", "AKIDslow", "Success"), 4);
    assert_eq!(
        audited("DisableKey", "AKIDreader", "UnauthorizedOperation"),
        1,
        "{audit}"
    );
    assert!(audited("Encrypt", "AKIDslow", "RequestLimitExceeded") >= 1);
}

/// The post-quantum and hosted data-key actions through the real SDK (typed models,
/// back to back) and tccli; every one of the 19 actions is seen served by the server.
#[test]
fn post_quantum_and_hosted_data_keys_through_the_real_clients() {
    require_program("tccli");
    require_tencent_sdk();
    let (tmp, server) = server_in_tmp();
    let out = python_client("pqc_data_keys.py", &server, &[]);
    assert!(out.contains("PQC AND DATA KEYS OK"), "{out}");

    // The same through tccli, as a shell script would run it.
    let home = tmp.path().join("home");
    let t = Tccli::configured(&home, &server);
    let kem = s(
        &t.ok(
            "CreateKey",
            &[
                "--Alias",
                "cli-kem",
                "--KeyUsage",
                "ASYMMETRIC_Encrypt_Decrypt_Kyber_AES",
            ],
        ),
        "KeyId",
    )
    .to_owned();
    let enc = t.ok(
        "PostQuantumCryptoEncrypt",
        &["--KeyId", &kem, "--PlainText", "dGNjbGkgcHE="],
    );
    let dec = t.ok(
        "PostQuantumCryptoDecrypt",
        &["--CiphertextBlob", s(&enc, "CiphertextBlob")],
    );
    assert_eq!(s(&dec, "PlainText"), "dGNjbGkgcHE=");
    let cmk = s(&t.ok("CreateKey", &["--Alias", "cli-cmk"]), "KeyId").to_owned();
    let g = t.ok(
        "GenerateDataKey",
        &[
            "--KeyId",
            &cmk,
            "--KeySpec",
            "AES_128",
            "--IsHostedByKms",
            "1",
            "--DataKeyName",
            "cli-dek",
        ],
    );
    let got = t.ok("GetDataKeyPlaintext", &["--DataKeyId", s(&g, "DataKeyId")]);
    assert_eq!(s(&got, "Plaintext"), s(&g, "Plaintext"));
    t.fails(
        "GetDataKeyPlaintext",
        &["--DataKeyId", "00000000-0000-4000-8000-000000000000"],
        "ResourceUnavailable.DataKeyNotFound",
    );

    // Counted from the server's request log: each new action served successfully.
    let log = server.log_lines();
    for action in [
        "PostQuantumCryptoEncrypt",
        "PostQuantumCryptoDecrypt",
        "PostQuantumCryptoSign",
        "PostQuantumCryptoVerify",
        "ImportDataKey",
        "DescribeDataKey",
        "DescribeDataKeys",
        "ListDataKeys",
        "ListDataKeyDetail",
        "EnableDataKey",
        "EnableDataKeys",
        "DisableDataKey",
        "DisableDataKeys",
        "GetDataKeyCiphertextBlob",
        "GetDataKeyPlaintext",
        "ScheduleDataKeyDeletion",
        "CancelDataKeyDeletion",
        "UpdateDataKeyName",
        "UpdateDataKeyDescription",
    ] {
        assert!(
            count_requests(&log, action, SECRET_ID, "OK") >= 1,
            "{action} was never served"
        );
    }
}

/// The coverage table of docs/KMS.md, made from the installed SDK's action list and
/// what the server answers each action: written into the document between its
/// markers, so the table is what was measured on the machine that ran the tests.
#[test]
fn coverage_table_of_the_installed_sdk() {
    require_tencent_sdk();
    let (_tmp, server) = server_in_tmp();
    let out = python_client("action_list.py", &server, &[]);
    let rows: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("ACTION "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let implemented: Vec<&str> = rows
        .iter()
        .filter(|(_, o)| *o != "UnsupportedOperation")
        .map(|(a, _)| *a)
        .collect();
    assert!(
        implemented.len() >= 52,
        "{} of {} implemented",
        implemented.len(),
        rows.len()
    );
    for a in &implemented {
        assert!(kms_core::service::ACTIONS.contains(a), "{a}");
    }
    let mut table = format!(
        "{} of the {} actions of the installed tencentcloud-sdk-python are implemented; the \
         other {} answer `UnsupportedOperation` with the reason below (never `InvalidAction`). \
         Made by `cargo test --test kms_http_clients coverage_table`; the second column is \
         what the server answers the action called with no parameters.\n\n\
         | action | answer with no parameters | status |\n|---|---|---|\n",
        implemented.len(),
        rows.len(),
        rows.len() - implemented.len()
    );
    for (action, outcome) in &rows {
        let status = match kms_core::service::UNSUPPORTED_ACTIONS
            .iter()
            .find(|(a, _)| a == action)
        {
            Some((_, why)) => format!("not offered: {why}"),
            None => "implemented".to_owned(),
        };
        table.push_str(&format!("| {action} | `{outcome}` | {status} |\n"));
    }
    let doc_path = repo().join("docs/KMS.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (begin, end) = ("<!-- coverage:begin -->\n", "<!-- coverage:end -->");
    let i = doc
        .find(begin)
        .expect("docs/KMS.md has no coverage:begin marker")
        + begin.len();
    let j = doc
        .find(end)
        .expect("docs/KMS.md has no coverage:end marker");
    let new = format!("{}{table}{}", &doc[..i], &doc[j..]);
    if new != doc {
        std::fs::write(&doc_path, new).unwrap();
    }
}

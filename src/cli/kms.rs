//! `kmsfs kms <Action> [--Param value …]`: the KMS actions from the command line,
//! with `tccli kms`'s action and parameter names and its JSON output.
//!
//! Like tccli, a success prints the API's `Response` object (without the
//! `{"Response": …}` wrapper, with `RequestId`) as JSON indented by 4 spaces;
//! an error prints `[TencentCloudSDKException] code:… message:… requestId:…` on
//! stderr and exits with 255.

use kms_core::{CallContext, KmsError};
use serde_json::{Map, Value};

/// How a parameter's command-line string becomes a JSON value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Json,
}

/// A parameter: `(name, kind, required)`.
type Param = (&'static str, Kind, bool);

/// `(action, summary, parameters)`, as `tccli kms` names them.
type Spec = (&'static str, &'static str, &'static [Param]);

// The parameters several actions take, in tccli's spelling.
const KEY: Param = ("KeyId", Kind::Str, true);
const KEY_OPT: Param = ("KeyId", Kind::Str, false);
const KEY_IDS: Param = ("KeyIds", Kind::Json, true);
const DATA_KEY: Param = ("DataKeyId", Kind::Str, true);
const DATA_KEY_IDS: Param = ("DataKeyIds", Kind::Json, true);
const DATA_KEY_NAME: Param = ("DataKeyName", Kind::Str, true);
const ALIAS: Param = ("Alias", Kind::Str, true);
const DESCRIPTION: Param = ("Description", Kind::Str, true);
const DESCRIPTION_OPT: Param = ("Description", Kind::Str, false);
const KEY_USAGE_OPT: Param = ("KeyUsage", Kind::Str, false);
const TAGS_OPT: Param = ("Tags", Kind::Json, false);
const TAG_FILTERS_OPT: Param = ("TagFilters", Kind::Json, false);
const PENDING_WINDOW: Param = ("PendingWindowInDays", Kind::Int, true);
const CIPHERTEXT_BLOB: Param = ("CiphertextBlob", Kind::Str, true);
const CIPHERTEXT: Param = ("Ciphertext", Kind::Str, true);
const CONTEXT_OPT: Param = ("EncryptionContext", Kind::Str, false);
// A plaintext answer encrypted to the caller's public key instead.
const PUBLIC_KEY_OPT: Param = ("EncryptionPublicKey", Kind::Str, false);
const PUBLIC_KEY_ALGORITHM_OPT: Param = ("EncryptionAlgorithm", Kind::Str, false);
const MESSAGE: Param = ("Message", Kind::Str, true);
const MESSAGE_TYPE_OPT: Param = ("MessageType", Kind::Str, false);
const SIGNATURE: Param = ("SignatureValue", Kind::Str, true);
const ALGORITHM: Param = ("Algorithm", Kind::Str, true);

/// The paging of the List* actions.
const PAGE: &[Param] = &[
    ("Offset", Kind::Int, false),
    ("Limit", Kind::Int, false),
    ("Role", Kind::Int, false),
];

/// The paging and filters ListKeyDetail and ListDataKeyDetail share.
const DETAIL_FILTERS: [Param; 7] = concat(
    PAGE,
    &[
        ("OrderType", Kind::Int, false),
        ("KeyState", Kind::Int, false),
        ("SearchKeyAlias", Kind::Str, false),
        ("Origin", Kind::Str, false),
    ],
);

/// `a` then `b`, for a parameter list that extends another; `N` is their length
/// together (a wrong `N` fails the build).
const fn concat<const N: usize>(a: &[Param], b: &[Param]) -> [Param; N] {
    assert!(a.len() + b.len() == N);
    let mut out = [("", Kind::Str, false); N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}

const SPECS: &[Spec] = &[
    (
        "CreateKey",
        "Create a key (KeyUsage ENCRYPT_DECRYPT|ASYMMETRIC_DECRYPT_RSA_2048|ASYMMETRIC_DECRYPT_SM2|ASYMMETRIC_SIGN_VERIFY_RSA_2048|ASYMMETRIC_SIGN_VERIFY_ECC|ASYMMETRIC_SIGN_VERIFY_SM2|ASYMMETRIC_Encrypt_Decrypt_Kyber_AES|ASYMMETRIC_SIGN_VERIFY_DILITHIUM; Type 2: EXTERNAL; Tags as JSON).",
        &[
            ALIAS,
            DESCRIPTION_OPT,
            KEY_USAGE_OPT,
            ("Type", Kind::Int, false),
            TAGS_OPT,
        ],
    ),
    ("DescribeKey", "Show a key's metadata.", &[KEY]),
    (
        "DescribeKeys",
        "Show the metadata of several keys.",
        &[KEY_IDS],
    ),
    ("ListKeys", "List key ids.", PAGE),
    (
        "ListKeyDetail",
        "List keys with metadata and filters.",
        &concat::<9>(&DETAIL_FILTERS, &[KEY_USAGE_OPT, TAG_FILTERS_OPT]),
    ),
    ("UpdateAlias", "Change a key's alias.", &[ALIAS, KEY]),
    (
        "UpdateKeyDescription",
        "Change a key's description.",
        &[DESCRIPTION, KEY],
    ),
    ("EnableKey", "Enable a key.", &[KEY]),
    (
        "DisableKey",
        "Disable a key: it refuses to encrypt and decrypt.",
        &[KEY],
    ),
    (
        "ScheduleKeyDeletion",
        "Delete a disabled key after 7-30 days.",
        &[KEY, PENDING_WINDOW],
    ),
    (
        "CancelKeyDeletion",
        "Cancel a scheduled deletion (the key stays disabled).",
        &[KEY],
    ),
    ("ArchiveKey", "Archive a key: it only decrypts.", &[KEY]),
    ("CancelKeyArchive", "Un-archive a key.", &[KEY]),
    (
        "EnableKeyRotation",
        "Rotate a key automatically every RotateDays (7-365).",
        &[KEY, ("RotateDays", Kind::Int, false)],
    ),
    ("DisableKeyRotation", "Stop automatic rotation.", &[KEY]),
    (
        "GetKeyRotationStatus",
        "Show whether a key rotates.",
        &[KEY],
    ),
    (
        "RotateKey",
        "Give a key new material now (old ciphertexts still decrypt).",
        &[KEY],
    ),
    (
        "Encrypt",
        "Encrypt up to 4 KiB (Plaintext in base64).",
        &[KEY, ("Plaintext", Kind::Str, true), CONTEXT_OPT],
    ),
    (
        "Decrypt",
        "Decrypt a CiphertextBlob.",
        &[
            CIPHERTEXT_BLOB,
            CONTEXT_OPT,
            PUBLIC_KEY_OPT,
            PUBLIC_KEY_ALGORITHM_OPT,
        ],
    ),
    (
        "ReEncrypt",
        "Re-encrypt a CiphertextBlob under another key or the newest key version.",
        &[
            CIPHERTEXT_BLOB,
            ("DestinationKeyId", Kind::Str, false),
            ("SourceEncryptionContext", Kind::Str, false),
            ("DestinationEncryptionContext", Kind::Str, false),
        ],
    ),
    (
        "GenerateDataKey",
        "Make a data key (KeySpec AES_128|AES_256, or NumberOfBytes 1-1024; IsHostedByKms 1 and DataKeyName: the KMS keeps it too).",
        &[
            KEY,
            ("KeySpec", Kind::Str, false),
            ("NumberOfBytes", Kind::Int, false),
            CONTEXT_OPT,
            PUBLIC_KEY_OPT,
            PUBLIC_KEY_ALGORITHM_OPT,
            ("IsHostedByKms", Kind::Int, false),
            ("DataKeyName", Kind::Str, false),
            DESCRIPTION_OPT,
            TAGS_OPT,
        ],
    ),
    (
        "GenerateRandom",
        "Random bytes (NumberOfBytes 1-1024).",
        &[("NumberOfBytes", Kind::Int, true)],
    ),
    (
        "ListAlgorithms",
        "List the key usages and algorithms this KMS supports.",
        &[],
    ),
    (
        "GetPublicKey",
        "Show an asymmetric key's public key (base64 DER and PEM).",
        &[KEY],
    ),
    (
        "AsymmetricRsaDecrypt",
        "Decrypt with an RSA key (Algorithm RSAES_OAEP_SHA_256|RSAES_OAEP_SHA_1|RSAES_PKCS1_V1_5).",
        &[KEY, CIPHERTEXT, ALGORITHM],
    ),
    (
        "AsymmetricSm2Decrypt",
        "Decrypt with an SM2 key (Ciphertext: base64 of C1C3C2 ASN.1, at most 256 bytes).",
        &[KEY, CIPHERTEXT],
    ),
    (
        "SignByAsymmetricKey",
        "Sign a message (RAW, up to 4096 bytes) or its SHA-256 (DIGEST), in base64.",
        &[ALGORITHM, MESSAGE, KEY, MESSAGE_TYPE_OPT],
    ),
    (
        "VerifyByAsymmetricKey",
        "Check a signature of a message or digest.",
        &[KEY, SIGNATURE, MESSAGE, ALGORITHM, MESSAGE_TYPE_OPT],
    ),
    (
        "GetParametersForImport",
        "Get a wrapping public key and import token for an EXTERNAL key (valid 24 h).",
        &[
            KEY,
            ("WrappingAlgorithm", Kind::Str, true),
            ("WrappingKeySpec", Kind::Str, false),
        ],
    ),
    (
        "ImportKeyMaterial",
        "Import wrapped 128- or 256-bit key material into an EXTERNAL key (ValidTo 0 = never).",
        &[
            ("EncryptedKeyMaterial", Kind::Str, true),
            ("ImportToken", Kind::Str, true),
            KEY,
            ("ValidTo", Kind::Int, false),
        ],
    ),
    (
        "DeleteImportedKeyMaterial",
        "Delete an EXTERNAL key's material: it refuses to work until the same is imported.",
        &[KEY],
    ),
    (
        "EnableKeys",
        "Enable up to 100 keys (KeyIds as a JSON list), all or none.",
        &[KEY_IDS],
    ),
    (
        "DisableKeys",
        "Disable up to 100 keys (KeyIds as a JSON list), all or none.",
        &[KEY_IDS],
    ),
    (
        "GetServiceStatus",
        "Show whether the service is on, and how many keys it holds.",
        &[],
    ),
    ("GetRegions", "List the region this KMS answers for.", &[]),
    (
        "PostQuantumCryptoEncrypt",
        "Encrypt up to 4 KiB (PlainText in base64) with a Kyber_AES key (ML-KEM-768 + AES-256-GCM).",
        &[KEY, ("PlainText", Kind::Str, true)],
    ),
    (
        "PostQuantumCryptoDecrypt",
        "Decrypt a PostQuantumCryptoEncrypt CiphertextBlob.",
        &[CIPHERTEXT_BLOB, PUBLIC_KEY_OPT, PUBLIC_KEY_ALGORITHM_OPT],
    ),
    (
        "PostQuantumCryptoSign",
        "Sign a message (base64, up to 4096 bytes) with a Dilithium key (ML-DSA-65).",
        &[MESSAGE, KEY],
    ),
    (
        "PostQuantumCryptoVerify",
        "Check a Dilithium signature of a message.",
        &[KEY, SIGNATURE, MESSAGE],
    ),
    (
        "ImportDataKey",
        "Host a data key: ImportType 1 (a CiphertextBlob of GenerateDataKey) or 2 (base64 plaintext, sealed under KeyId).",
        &[
            DATA_KEY_NAME,
            ("ImportKeyMaterial", Kind::Str, true),
            ("ImportType", Kind::Int, true),
            DESCRIPTION_OPT,
            KEY_OPT,
            TAGS_OPT,
        ],
    ),
    (
        "DescribeDataKey",
        "Show a hosted data key's metadata.",
        &[DATA_KEY],
    ),
    (
        "DescribeDataKeys",
        "Show the metadata of up to 100 hosted data keys.",
        &[DATA_KEY_IDS],
    ),
    ("ListDataKeys", "List hosted data key ids.", PAGE),
    (
        "ListDataKeyDetail",
        "List hosted data keys with metadata and filters.",
        &concat::<10>(
            &DETAIL_FILTERS,
            &[KEY_OPT, ("DataKeyLen", Kind::Int, false), TAG_FILTERS_OPT],
        ),
    ),
    ("EnableDataKey", "Enable a hosted data key.", &[DATA_KEY]),
    (
        "EnableDataKeys",
        "Enable up to 100 hosted data keys, all or none.",
        &[DATA_KEY_IDS],
    ),
    ("DisableDataKey", "Disable a hosted data key.", &[DATA_KEY]),
    (
        "DisableDataKeys",
        "Disable up to 100 hosted data keys, all or none.",
        &[DATA_KEY_IDS],
    ),
    (
        "GetDataKeyCiphertextBlob",
        "Show a hosted data key's CiphertextBlob.",
        &[DATA_KEY],
    ),
    (
        "GetDataKeyPlaintext",
        "Show a hosted data key (base64), or it encrypted to EncryptionPublicKey.",
        &[DATA_KEY, PUBLIC_KEY_OPT, PUBLIC_KEY_ALGORITHM_OPT],
    ),
    (
        "ScheduleDataKeyDeletion",
        "Delete a hosted data key after 7-30 days.",
        &[DATA_KEY, PENDING_WINDOW],
    ),
    (
        "CancelDataKeyDeletion",
        "Cancel a data key's scheduled deletion (it stays disabled).",
        &[DATA_KEY],
    ),
    (
        "UpdateDataKeyName",
        "Rename a hosted data key.",
        &[DATA_KEY, DATA_KEY_NAME],
    ),
    (
        "UpdateDataKeyDescription",
        "Change a hosted data key's description.",
        &[DATA_KEY, DESCRIPTION],
    ),
];

fn usage() -> String {
    let mut s = String::from(
        "usage: kmsfs [--kms PATH|URL] kms <Action> [--Param value ...]\n\
         \x20      kmsfs kms <Action> --help\n\
         \x20      kmsfs kms serve --listen ADDR\n\n\
         Runs one KMS action with tccli's action and parameter names and prints its\n\
         Response as JSON. The KMS is --kms / $KMSFS_KMS, else $XDG_DATA_HOME/kmsfs/kms\n\
         (~/.local/share/kmsfs/kms), created on first use.\n\nActions:\n",
    );
    for (name, summary, _) in SPECS {
        s.push_str(&format!("  {name:<22} {summary}\n"));
    }
    s.push_str("  serve                  Run the KMS as a Tencent Cloud API 3.0 HTTP server.\n");
    s.push_str(
        "  verify-audit [LOG] [--store DIR|postgres://…]\n\
         \x20                        Check the audit log's hash chain (default: the store's).\n\
         \x20 migrate --from DIR|URL --to DIR|URL [--force]\n\
         \x20                        Copy a key store and its audit chain, then verify them.\n",
    );
    s.push_str("\nExample: kmsfs kms CreateKey --Alias test\n");
    s
}

fn action_help(spec: &Spec) -> String {
    let (name, summary, params) = spec;
    let mut s = format!("usage: kmsfs kms {name}");
    for (p, kind, req) in params.iter() {
        let v = match kind {
            Kind::Str => "STRING",
            Kind::Int => "INTEGER",
            Kind::Json => "JSON",
        };
        if *req {
            s.push_str(&format!(" --{p} {v}"));
        } else {
            s.push_str(&format!(" [--{p} {v}]"));
        }
    }
    s.push_str(&format!("\n\n{summary}\n"));
    s
}

/// Why an argument is not part of a `--Name value` / `--Name=value` pair.
enum FlagError<'a> {
    /// An argument where a `--Name` was due.
    NotAFlag(&'a str),
    /// `--Name` last, without its value.
    NoValue(&'a str),
}

/// The `--Name value` / `--Name=value` pairs of `args` in order (both CLIs' syntax); the
/// callers stop at the first error.
fn flag_pairs(args: &[String]) -> impl Iterator<Item = Result<(&str, String), FlagError<'_>>> {
    let mut it = args.iter();
    std::iter::from_fn(move || {
        let a = it.next()?;
        let Some(flag) = a.strip_prefix("--") else {
            return Some(Err(FlagError::NotAFlag(a)));
        };
        Some(match flag.split_once('=') {
            Some((n, v)) => Ok((n, v.to_owned())),
            None => match it.next() {
                Some(v) => Ok((flag, v.clone())),
                None => Err(FlagError::NoValue(flag)),
            },
        })
    })
}

/// Parses `--Param value` / `--Param=value` pairs against the action's spec.
fn parse_params(spec: &Spec, args: &[String]) -> Result<Map<String, Value>, String> {
    let (action, _, params) = spec;
    let mut out = Map::new();
    for pair in flag_pairs(args) {
        let (name, value) = match pair {
            Ok(p) => p,
            Err(FlagError::NotAFlag(a)) => {
                return Err(format!(
                    "unexpected argument {a:?}: parameters are --Name value"
                ))
            }
            Err(FlagError::NoValue(flag)) => return Err(format!("--{flag} needs a value")),
        };
        // tccli's global options that mean nothing to a local KMS.
        if matches!(
            name,
            "region" | "profile" | "language" | "timeout" | "version"
        ) {
            continue;
        }
        if name == "output" && value != "json" {
            return Err(format!("--output {value}: only json output is supported"));
        } else if name == "output" {
            continue;
        }
        if name == "endpoint" {
            return Err("--endpoint: choose the KMS with kmsfs --kms PATH|URL".into());
        }
        let Some((_, kind, _)) = params.iter().find(|(p, _, _)| *p == name) else {
            let names: Vec<String> = params.iter().map(|(p, _, _)| format!("--{p}")).collect();
            return Err(format!(
                "{action} has no parameter --{name}; it takes {}",
                names.join(", ")
            ));
        };
        let v = match kind {
            Kind::Str => Value::String(value),
            Kind::Int => value
                .trim()
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| format!("--{name} takes a non-negative integer, not {value:?}"))?,
            Kind::Json => serde_json::from_str(&value)
                .map_err(|e| format!("--{name} takes JSON (e.g. '[\"a\",\"b\"]'): {e}"))?,
        };
        out.insert(name.to_owned(), v);
    }
    Ok(out)
}

/// Prints a JSON value as tccli does: 4-space indent, UTF-8 as is.
/// `kmsfs kms --api aliyun <Action> [--Param=value | --Param value]…`: one action of
/// the Alibaba Cloud KMS API on the embedded KMS (or a local store), printed as the
/// aliyun CLI prints it (the response JSON, tab-indented; errors as `ERROR:` lines on
/// stderr, exit 1).
fn run_aliyun(kms: Option<&str>, args: &[String]) -> anyhow::Result<i32> {
    let actions = kms_core::service::aliyun::ALIYUN_ACTIONS;
    let usage = || {
        let mut s = String::from(
            "usage: kmsfs [--kms PATH] kms --api aliyun <Action> [--Param=value | --Param value]...\n\n\
             The Alibaba Cloud KMS API (2016-01-20), with the aliyun CLI's syntax and output.\n\nActions:\n",
        );
        for a in actions {
            s.push_str(&format!("  {a}\n"));
        }
        s
    };
    let Some(action) = args.first() else {
        print!("{}", usage());
        return Ok(0);
    };
    if matches!(action.as_str(), "--help" | "-h" | "help") {
        print!("{}", usage());
        return Ok(0);
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in flag_pairs(&args[1..]) {
        match pair {
            Ok((name, value)) => params.push((name.to_owned(), value)),
            Err(FlagError::NotAFlag(a)) => {
                eprint!(
                    "kmsfs kms: unexpected argument {a:?}: parameters are --Name=value\n\n{}",
                    usage()
                );
                return Ok(2);
            }
            Err(FlagError::NoValue(flag)) => {
                eprintln!("kmsfs kms: --{flag} needs a value");
                return Ok(2);
            }
        }
    }
    let ctx = CallContext::local();
    let result = kms_core::connect(kms).and_then(|s| s.call_aliyun(&ctx, action, &params));
    match result {
        Ok(mut resp) => {
            if let Value::Object(m) = &mut resp {
                m.insert("RequestId".into(), Value::String(ctx.request_id.clone()));
            }
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&resp, &mut ser)?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(0)
        }
        Err(e) => {
            let w = kms_core::service::aliyun::wire_error(&e);
            eprintln!(
                "ERROR: SDK.ServerError\nErrorCode: {}\nRecommend: \nRequestId: {}\nMessage: {}",
                w.code, ctx.request_id, e.message
            );
            Ok(1)
        }
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    // serde_json indents by 2; JSON strings never hold a raw newline, so the
    // leading spaces of each line are indentation only.
    let two = serde_json::to_string_pretty(v)?;
    let mut out = String::with_capacity(two.len() * 2);
    for line in two.lines() {
        let body = line.trim_start_matches(' ');
        let n = line.len() - body.len();
        out.push_str(&" ".repeat(2 * n));
        out.push_str(body);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn print_error(e: &KmsError, request_id: &str) -> i32 {
    eprintln!(
        "[TencentCloudSDKException] code:{} message:{} requestId:{}",
        e.code, e.message, request_id
    );
    255
}

/// Runs one `kmsfs kms` invocation; returns the process exit code.
pub fn run(kms: Option<&str>, args: &[String]) -> anyhow::Result<i32> {
    if args.first().map(String::as_str) == Some("serve") {
        return crate::cli::serve::run(kms, &args[1..]);
    }
    let Some(action) = args.first() else {
        print!("{}", usage());
        return Ok(0);
    };
    if matches!(action.as_str(), "--help" | "-h" | "help") {
        print!("{}", usage());
        return Ok(0);
    }
    if action == "migrate" {
        return crate::cli::migrate::run(&args[1..]);
    }
    if action == "verify-audit" {
        return crate::cli::audit::verify_audit(kms, &args[1..]);
    }
    // `--api aliyun` (or `--api=aliyun`): the Alibaba Cloud API with the aliyun CLI's
    // syntax; `--api tencent` is the default.
    let api = match action.as_str() {
        "--api" => args.get(1).map(|a| (a.as_str(), 2)),
        a => a.strip_prefix("--api=").map(|v| (v, 1)),
    };
    if let Some((api, skip)) = api {
        return match api {
            "aliyun" | "alibaba" => run_aliyun(kms, &args[skip..]),
            "tencent" => run(kms, &args[skip..]),
            other => {
                eprintln!("kmsfs kms: --api is tencent (the default) or aliyun, not {other:?}");
                Ok(2)
            }
        };
    }
    let Some(spec) = SPECS.iter().find(|(n, _, _)| n == action) else {
        if kms_core::service::UNSUPPORTED_ACTIONS
            .iter()
            .any(|(a, _)| a == action)
        {
            // An action of the API this KMS does not offer: the service says so
            // (UnsupportedOperation, with the reason), as it does over HTTP.
            let ctx = CallContext::local();
            return Ok(
                match kms_core::connect(kms)
                    .and_then(|s| s.call(&ctx, action, &Value::Object(Default::default())))
                {
                    Ok(_) => 0,
                    Err(e) => print_error(&e, &ctx.request_id),
                },
            );
        }
        eprint!("kmsfs kms: unknown action {action:?}\n\n{}", usage());
        return Ok(2);
    };
    let rest = &args[1..];
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", action_help(spec));
        return Ok(0);
    }
    let params = match parse_params(spec, rest) {
        Ok(p) => p,
        Err(msg) => {
            eprint!("kmsfs kms: {msg}\n\n{}", action_help(spec));
            return Ok(2);
        }
    };
    let ctx = CallContext::local();
    let service = match kms_core::connect(kms) {
        Ok(s) => s,
        Err(e) => return Ok(print_error(&e, &ctx.request_id)),
    };
    match service.call(&ctx, action, &Value::Object(params)) {
        Ok(mut resp) => {
            if let Value::Object(m) = &mut resp {
                m.insert("RequestId".into(), Value::String(ctx.request_id.clone()));
            }
            print_json(&resp)?;
            Ok(0)
        }
        Err(e) => Ok(print_error(&e, &ctx.request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_is_an_action_the_service_knows() {
        for (name, _, _) in SPECS {
            assert!(kms_core::service::ACTIONS.contains(name), "{name}");
        }
        assert_eq!(SPECS.len(), kms_core::service::ACTIONS.len());
    }

    #[test]
    fn params_are_typed_like_tccli() {
        let spec = SPECS
            .iter()
            .find(|s| s.0 == "GenerateDataKey")
            .expect("spec");
        let args: Vec<String> = ["--KeyId", "k", "--NumberOfBytes=32"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse_params(spec, &args).expect("parse");
        assert_eq!(p["KeyId"], Value::from("k"));
        assert_eq!(p["NumberOfBytes"], Value::from(32u64));
        let args: Vec<String> = [
            "--KeyId",
            "k",
            "--region",
            "ap-guangzhou",
            "--output",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(parse_params(spec, &args).expect("parse").len(), 1);
        let bad: Vec<String> = vec!["--endpoint".into(), "http://x".into()];
        assert!(parse_params(spec, &bad).is_err());
        let bad: Vec<String> = vec!["--Nope".into(), "1".into()];
        assert!(parse_params(spec, &bad).is_err());
        let bad: Vec<String> = vec!["--NumberOfBytes".into(), "x".into()];
        assert!(parse_params(spec, &bad).is_err());
    }
}

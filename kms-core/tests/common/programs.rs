//! The outside programs the KMS tests drive, and how a test checks that one ran: shared
//! by the kms-core tests (`common::programs`) and the kmsfs crate's KMS tests
//! (tests/kms_http_support includes this file by its path), so openssl is called one way.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Asserts that `out`, what `what` (named in the message) printed, comes from a zero
/// exit; the message shows the status and both streams.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl ARGS…` in `dir`, which must succeed; its stdout.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed (apt-get install openssl)");
    assert_success(&format!("openssl {args:?}"), &out);
    out.stdout
}

/// `openssl pkeyutl -encrypt` of `input` to `output` in `dir`, to the DER public key in
/// `public_key.bin` (the file the seeds decode a KMS public key into), with these
/// `-pkeyopt` values: the seeds' command line.
pub fn openssl_encrypt_to_public_key_bin(dir: &Path, input: &str, output: &str, pkeyopts: &[&str]) {
    let mut args = vec![
        "pkeyutl",
        "-in",
        input,
        "-out",
        output,
        "-inkey",
        "public_key.bin",
        "-keyform",
        "DER",
        "-pubin",
        "-encrypt",
    ];
    for o in pkeyopts {
        args.extend_from_slice(&["-pkeyopt", o]);
    }
    openssl(dir, &args);
}

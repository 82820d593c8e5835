//! A volume whose CMK has imported key material (BYOK, seed 002): deleting the
//! material makes its files unreadable once cached DEKs expire; re-importing the same
//! material makes them readable again. A real FUSE mount (needs /dev/fuse and
//! fusermount3) and the real openssl, which wraps the material.
#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;
mod kms_http_support;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use fsmount::{pattern, Mounted};
use kms_core::{CallContext, ErrorCode, Kms, KmsService};
use kms_http_support::{openssl, openssl_encrypt_to_public_key_bin};
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// GetParametersForImport, `openssl pkeyutl` (OAEP-SHA256) of `material.bin`, then
/// ImportKeyMaterial; returns the error code if the import is refused.
fn import(kms: &KmsService, key: &str, w: &Path) -> Result<(), ErrorCode> {
    let c = CallContext::local();
    let p = kms
        .call(
            &c,
            "GetParametersForImport",
            &json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}),
        )
        .unwrap();
    fs::write(
        w.join("public_key.bin"),
        B64.decode(p["PublicKey"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    openssl_encrypt_to_public_key_bin(
        w,
        "material.bin",
        "wrapped.bin",
        &["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
    );
    kms.call(
        &c,
        "ImportKeyMaterial",
        &json!({
            "EncryptedKeyMaterial": B64.encode(fs::read(w.join("wrapped.bin")).unwrap()),
            "ImportToken": p["ImportToken"],
            "KeyId": key,
        }),
    )
    .map(|_| ())
    .map_err(|e| e.code)
}

#[test]
fn deleting_imported_material_locks_the_volume_and_reimporting_unlocks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let store = w.join("kms");
    let backing = w.join("backing");
    fs::create_dir_all(&backing).unwrap();
    let kms = KmsService::open(&store).unwrap();
    let c = CallContext::local();
    let key = kms
        .call(&c, "CreateKey", &json!({"Alias": "byok-volume", "Type": 2}))
        .unwrap()["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    openssl(w, &["rand", "-out", "material.bin", "32"]);
    import(&kms, &key, w).unwrap();

    let m = Mounted::existing(
        &store,
        &backing,
        &["--key", &key, "--dek-cache-max-age", "1"],
    )
    .unwrap();
    assert_eq!(m.cmk(), key);
    let data = pattern(5, 20_000);
    fs::write(m.p("file"), &data).unwrap();
    assert_eq!(fs::read(m.p("file")).unwrap(), data);

    // Delete the material: once the cached DEK has aged out, the file is refused.
    kms.call(&c, "DeleteImportedKeyMaterial", &json!({"KeyId": key}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let e = File::open(m.p("file"))
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut Vec::new()))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    // New files cannot get a data key either.
    let mut f = File::create(m.p("new")).unwrap();
    let e = f.write_all(b"x").and_then(|_| f.sync_all()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    drop(f);
    let log = m.log_text();
    assert!(
        log.contains(&key) && log.contains("CmkStateNotSupport"),
        "{log}"
    );

    // Other material is refused; the same material brings the files back.
    openssl(w, &["rand", "-out", "other.bin", "32"]);
    fs::rename(w.join("material.bin"), w.join("saved.bin")).unwrap();
    fs::rename(w.join("other.bin"), w.join("material.bin")).unwrap();
    assert_eq!(
        import(&kms, &key, w),
        Err(ErrorCode::InvalidParameterValueMaterialNotMatch)
    );
    fs::rename(w.join("saved.bin"), w.join("material.bin")).unwrap();
    import(&kms, &key, w).unwrap();
    assert_eq!(fs::read(m.p("file")).unwrap(), data);
    fs::write(m.p("after"), b"written after the re-import").unwrap();
    assert_eq!(
        fs::read(m.p("after")).unwrap(),
        b"written after the re-import"
    );
}

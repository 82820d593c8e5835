//! `connect`: a path, the XDG default, and URLs (the remote client).
//! One test, so the environment it changes is not shared with another thread.
#![allow(clippy::unwrap_used)]

use kms_core::{connect, CallContext, ErrorCode};
use serde_json::json;

#[test]
fn connect_opens_paths_and_defaults_and_urls() {
    let d = tempfile::tempdir().unwrap();
    let explicit = d.path().join("explicit");
    let kms = connect(Some(explicit.to_str().unwrap())).unwrap();
    let c = CallContext::local();
    assert!(c.principal.starts_with("local:"));
    kms.call(&c, "CreateKey", &json!({"Alias": "x"})).unwrap();
    assert!(explicit.join("keys.kms").exists());
    assert!(explicit.join("root.key").exists());

    // URLs: the remote client, which needs credentials from the environment.
    std::env::remove_var("KMSFS_KMS_CREDENTIALS");
    std::env::remove_var("TENCENTCLOUD_SECRET_ID");
    std::env::remove_var("TENCENTCLOUD_SECRET_KEY");
    for url in ["http://127.0.0.1:1", "https://kms.example"] {
        let e = connect(Some(url)).err().unwrap();
        assert_eq!(e.code, ErrorCode::InvalidParameter);
        assert!(e.message.contains("TENCENTCLOUD_SECRET_ID"), "{e}");
    }
    std::env::set_var("TENCENTCLOUD_SECRET_ID", "AKIDtest");
    std::env::set_var("TENCENTCLOUD_SECRET_KEY", "secret");
    let remote = connect(Some("http://127.0.0.1:1")).unwrap();
    std::env::remove_var("TENCENTCLOUD_SECRET_ID");
    std::env::remove_var("TENCENTCLOUD_SECRET_KEY");
    let e = remote.call(&c, "ListKeys", &json!({})).unwrap_err();
    assert!(
        e.message
            .contains("cannot reach the KMS at http://127.0.0.1:1/"),
        "{e}"
    );

    std::env::remove_var("KMSFS_KMS_PASSPHRASE");
    std::env::remove_var("KMSFS_KMS_ROOT_KEY");
    std::env::set_var("XDG_DATA_HOME", d.path().join("xdg"));
    let kms = connect(None).unwrap();
    let r = kms.call(&c, "ListKeys", &json!({})).unwrap();
    assert_eq!(r["TotalCount"], json!(0));
    assert!(d.path().join("xdg/kmsfs/kms/keys.kms").exists());
    std::env::remove_var("XDG_DATA_HOME");
    std::env::set_var("HOME", d.path().join("home"));
    connect(None).unwrap();
    assert!(d
        .path()
        .join("home/.local/share/kmsfs/kms/keys.kms")
        .exists());

    // A passphrase in the environment does not change a store made with a key file.
    std::env::set_var("KMSFS_KMS_PASSPHRASE", "irrelevant");
    let kms = connect(Some(explicit.to_str().unwrap())).unwrap();
    assert_eq!(
        kms.call(&c, "ListKeys", &json!({})).unwrap()["TotalCount"],
        json!(1)
    );
    std::env::remove_var("KMSFS_KMS_PASSPHRASE");
}

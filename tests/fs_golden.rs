//! The golden v1 volume (tests/golden/v1) mounts and reads its known content.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs;
use std::path::Path;

use fsmount::Mounted;

fn sha256_hex(b: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

#[test]
fn golden_v1_volume_mounts_and_reads() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    // Work on a copy: mounting writes the KMS audit log and the lock file.
    let tmp = tempfile::tempdir().unwrap();
    // git keeps no 0600 mode: give the root key the mode kms-core makes it with.
    fsmount::sh(&format!(
        "cp -a {}/. {}/ && chmod 600 {}/kms/root.key",
        src.display(),
        tmp.path().display(),
        tmp.path().display()
    ));
    let m = Mounted::existing(
        &tmp.path().join("kms"),
        &tmp.path().join("backing"),
        &["-o", "ro"],
    )
    .unwrap_or_else(|e| panic!("the golden v1 volume must mount: {e}"));
    assert_eq!(
        fs::read_to_string(m.p("hello.txt")).unwrap(),
        "hello from the kmsfs v1 golden volume\n"
    );
    let pattern: Vec<u8> = (0..10_000u32).map(|i| ((i * 31 + 7) % 251) as u8).collect();
    let got = fs::read(m.p("pattern.bin")).unwrap();
    assert_eq!(got, pattern);
    assert_eq!(
        sha256_hex(&got),
        "1e0d7c1f75b60785a19d26b1335ce40ba353da1154e09905170a9e411da3e3e0"
    );
    let sparse = fs::read(m.p("sparse.bin")).unwrap();
    assert_eq!(sparse.len(), 100_003);
    assert!(sparse[..100_000].iter().all(|&b| b == 0));
    assert_eq!(&sparse[100_000..], b"end");
    assert_eq!(
        sha256_hex(&sparse),
        "9e46b529d4c7c5464586ae5ee5fe24b3145376ce6855984efe9b83f2725daa32"
    );
    assert_eq!(fs::metadata(m.p("empty")).unwrap().len(), 0);
    assert_eq!(
        fs::read_to_string(m.p("dir/nested.txt")).unwrap(),
        "nested\n"
    );
    assert_eq!(
        fs::read_link(m.p("dir/link")).unwrap().to_str(),
        Some("../hello.txt")
    );
    assert_eq!(
        fs::read_to_string(m.p("dir/link")).unwrap(),
        "hello from the kmsfs v1 golden volume\n"
    );
    // Read-only mount: writes are refused.
    assert!(fs::write(m.p("new"), b"x").is_err());
}

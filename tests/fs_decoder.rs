//! docs/FORMAT.md is true and complete: an independent Python decoder written from it
//! (tests/common/fs_decoder.py) decrypts files written through a real mount, given only
//! the backing file, the volume config and the DEK (which the test gets from the KMS).

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::process::Command;

use base64::Engine as _;
use fsmount::{pattern, Mounted};

fn decoder(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/fs_decoder.py");
    Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn python_decoder_reads_what_the_mount_wrote() {
    let m = Mounted::new(&[]);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, n) in [1usize, 4095, 4096, 4097, 50_000].into_iter().enumerate() {
        let d = pattern(100 + i as u64, n);
        fs::write(m.p(&format!("f{i}")), &d).unwrap();
        files.push((format!("f{i}"), d));
    }
    // A sparse file with a partial last block and holes, rewritten in the middle.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(m.p("sparse"))
        .unwrap();
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", 20_000).unwrap();
    f.write_all_at(b"end", 70_001).unwrap();
    f.write_all_at(b"MID", 20_001).unwrap();
    drop(f);
    let mut sp = vec![0u8; 70_004];
    sp[..5].copy_from_slice(b"start");
    sp[20_000..20_006].copy_from_slice(b"mMIDle");
    sp[70_001..].copy_from_slice(b"end");
    assert_eq!(fs::read(m.p("sparse")).unwrap(), sp);
    files.push(("sparse".into(), sp));
    let conf = m.b("kmsfs.conf");
    let conf_s = conf.to_str().unwrap();
    for (name, want) in &files {
        let bf = m.b(name);
        let info = decoder(&[bf.to_str().unwrap(), conf_s]);
        assert!(
            info.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&info.stderr)
        );
        let info = String::from_utf8(info.stdout).unwrap();
        let mut lines = info.lines();
        let (blob_hex, uuid) = (lines.next().unwrap(), lines.next().unwrap());
        let blob: Vec<u8> = (0..blob_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&blob_hex[i..i + 2], 16).unwrap())
            .collect();
        let r = m.kms_call(
            "Decrypt",
            serde_json::json!({
                "CiphertextBlob": base64::engine::general_purpose::STANDARD.encode(&blob),
                "EncryptionContext": format!("{{\"kmsfs-volume\":\"{uuid}\"}}"),
            }),
        );
        let dek = base64::engine::general_purpose::STANDARD
            .decode(r["Plaintext"].as_str().unwrap())
            .unwrap();
        let dek_hex: String = dek.iter().map(|b| format!("{b:02x}")).collect();
        let out = decoder(&[bf.to_str().unwrap(), conf_s, &dek_hex]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == *want,
            "{name}: the Python decoder disagrees with the mount"
        );
        // And a tampered copy fails in the decoder too.
        let mut raw = fs::read(&bf).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let t = m.dir.path().join("tampered");
        fs::write(&t, &raw).unwrap();
        let out = decoder(&[t.to_str().unwrap(), conf_s, &dek_hex]);
        assert!(!out.status.success(), "{name}: tampered copy decoded");
    }
}

//! In-process throughput of the embedded KMS: GenerateDataKey and Decrypt of a
//! 32-byte data key, calls per second on one thread (audit log on).
//!
//! `cargo run --release -p kms-core --example bench [SECONDS]`

use std::time::{Duration, Instant};

use kms_core::{CallContext, EncryptionContext, Kms, KmsService};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let dir = std::env::temp_dir().join(format!("kmsfs-bench-{}", std::process::id()));
    let kms = KmsService::open(&dir)?;
    let ctx = CallContext::local();
    let r = kms.call(&ctx, "CreateKey", &json!({"Alias": "bench"}))?;
    let key = r["KeyId"].as_str().unwrap_or_default().to_owned();
    let vctx = EncryptionContext::single("kmsfs-volume", "00000000-0000-4000-8000-000000000000");
    let dur = Duration::from_secs_f64(secs);

    let (mut n, t) = (0u64, Instant::now());
    let mut last = None;
    while t.elapsed() < dur {
        for _ in 0..256 {
            last = Some(kms.generate_data_key(&ctx, &key, 32, &vctx)?);
        }
        n += 256;
    }
    let gdk = n as f64 / t.elapsed().as_secs_f64();
    let blob = last.map(|d| d.ciphertext_blob).unwrap_or_default();

    let (mut n, t) = (0u64, Instant::now());
    while t.elapsed() < dur {
        for _ in 0..256 {
            let dk = kms.decrypt_data_key(&ctx, &blob, &vctx)?;
            std::hint::black_box(&dk);
        }
        n += 256;
    }
    let dec = n as f64 / t.elapsed().as_secs_f64();
    println!("GenerateDataKey (32 bytes): {gdk:>10.0} calls/s");
    println!("Decrypt (32-byte DEK):      {dec:>10.0} calls/s");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! GenerateDataKey and Decrypt over HTTP on loopback: requests/s and latency
//! percentiles, with several concurrent RemoteKms clients against the server in front of
//! the embedded KmsService (a temporary store).
//!
//! ```text
//! cargo run --release -p kms-core --example http_bench -- [THREADS] [SECONDS_PER_OP]
//! ```
//! (scripts/bench-kms-http.sh runs it.) A benchmark, not a test: it asserts nothing
//! about speed. Traffic goes to 127.0.0.1 only, and each phase stops after its time.
//!
//! With `KMS_BENCH_URLS=http://127.0.0.1:A[,http://127.0.0.1:B…]` it drives servers
//! already running instead (credentials from `TENCENTCLOUD_SECRET_ID` /
//! `TENCENTCLOUD_SECRET_KEY`; client thread `i` talks to server `i mod n`), and
//! `KMS_BENCH_LABEL` names the run in its output (scripts/bench-kms-pg.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::http::principals::{Principal, Principals};
use kms_core::http::tc3::SecretKey;
use kms_core::http::{RemoteConfig, RemoteKms, Server, ServerConfig};
use kms_core::{CallContext, EncryptionContext, Kms, KmsService};

fn ctx() -> CallContext {
    CallContext {
        principal: String::new(),
        request_id: String::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(op: &str, threads: usize, wall: Duration, mut lat: Vec<Duration>, errors: usize) {
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{op:<16} threads={threads} requests={} errors={errors} req/s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4);
    let seconds: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5.0);
    let phase = Duration::from_secs_f64(seconds);

    let external: Option<Vec<String>> = std::env::var("KMS_BENCH_URLS")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| u.split(',').map(str::to_owned).collect());
    let (secret_id, secret_key) = match &external {
        Some(_) => (
            std::env::var("TENCENTCLOUD_SECRET_ID")?,
            std::env::var("TENCENTCLOUD_SECRET_KEY")?,
        ),
        None => ("AKIDbench".to_owned(), "bench-secret".to_owned()),
    };
    let dir = tempfile::tempdir()?;
    let (server, urls) = match &external {
        Some(urls) => (None, urls.clone()),
        None => {
            let service = KmsService::open(&dir.path().join("store"))?;
            let principals = Principals::new([Principal::unrestricted(
                &secret_id,
                SecretKey::new(&secret_key),
            )]);
            let server = Server::bind(
                Arc::new(service),
                ServerConfig::new("127.0.0.1:0".parse()?, principals),
            )?
            .spawn();
            let url = server.url().to_owned();
            (Some(server), vec![url])
        }
    };
    // Each API in turn on the same server: Tencent's (TC3), then Alibaba's (ACS3)
    // unless KMS_BENCH_APIS says otherwise (e.g. `tencent`).
    let apis: Vec<String> = std::env::var("KMS_BENCH_APIS")
        .unwrap_or_else(|_| "tencent,aliyun".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let client = |i: usize, api: &str| {
        let url = &urls[i % urls.len()];
        let url = if api == "aliyun" {
            format!("aliyun+{url}")
        } else {
            url.clone()
        };
        RemoteKms::new(RemoteConfig::new(
            &url,
            &secret_id,
            SecretKey::new(&secret_key),
        ))
    };
    let admin = client(0, "tencent")?;
    let alias = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let key = admin.call(&ctx(), "CreateKey", &serde_json::json!({ "Alias": alias }))?["KeyId"]
        .as_str()
        .ok_or("no KeyId")?
        .to_owned();
    let ec = EncryptionContext::single("kmsfs-volume", "bench");
    let blob = admin
        .generate_data_key(&ctx(), &key, 32, &ec)?
        .ciphertext_blob;
    match &server {
        Some(server) => println!(
            "server {} (in-process, embedded store), {threads} client threads, {seconds} s per op",
            server.url()
        ),
        None => println!(
            "{}: servers {}, {threads} client threads, {seconds} s per op",
            std::env::var("KMS_BENCH_LABEL").unwrap_or_default(),
            urls.join(",")
        ),
    }

    for (api, op) in apis
        .iter()
        .flat_map(|a| ["GenerateDataKey", "Decrypt"].map(|op| (a.clone(), op)))
    {
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let kms = client(i, &api);
                let (key, ec, blob) = (key.clone(), ec.clone(), blob.clone());
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let Ok(kms) = kms else { return (lat, 1) };
                    while started.elapsed() < phase {
                        let t = Instant::now();
                        let r = match op {
                            "GenerateDataKey" => {
                                kms.generate_data_key(&ctx(), &key, 32, &ec).map(drop)
                            }
                            _ => kms.decrypt_data_key(&ctx(), &blob, &ec).map(drop),
                        };
                        match r {
                            Ok(()) => lat.push(t.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let mut lat = Vec::new();
        let mut errors = 0;
        for h in handles {
            let (l, e) = h.join().map_err(|_| "a client thread panicked")?;
            lat.extend(l);
            errors += e;
        }
        report(
            &format!("{op} ({api})"),
            threads,
            started.elapsed(),
            lat,
            errors,
        );
    }
    if let Some(server) = server {
        server.stop();
    }
    Ok(())
}

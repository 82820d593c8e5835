//! `kmsfs kms serve --listen ADDR`: the KMS as a Tencent Cloud API 3.0 HTTP server.
//!
//! The key store is the global `--kms PATH` / `KMSFS_KMS` (an embedded store directory).
//! On startup it prints `listening on http(s)://ADDR` on stdout (the real port when
//! `--listen` asks for port 0), then logs one line per request to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use kms_core::http::principals::Principals;
use kms_core::http::server::{Server, ServerConfig, TlsFiles, DEFAULT_MAX_BODY_BYTES};

/// Serve the KMS over HTTP(S), speaking the Tencent Cloud API 3.0 (tccli and
/// tencentcloud-sdk-python work against it with an endpoint override).
#[derive(Debug, Parser)]
#[command(name = "kmsfs kms serve")]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Principals file (TOML: SecretId/SecretKey pairs, allowed actions and keys, rate
    /// limits; see docs/SERVER.md). Default: one principal from TENCENTCLOUD_SECRET_ID
    /// and TENCENTCLOUD_SECRET_KEY, allowed everything.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --key, serve HTTPS.
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (DEK plaintexts then cross the
    /// network in clear: only behind a TLS-terminating proxy).
    #[arg(long)]
    insecure_http: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Most KMS calls running at once.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_concurrent_calls: usize,
    /// The key store: a directory, or a PostgreSQL database
    /// (`postgres://USER@HOST:PORT/DB`) that several servers share (docs/SERVER.md).
    /// Default: `$KMSFS_KMS_STORE`, else the global --kms / KMSFS_KMS.
    #[arg(long, value_name = "DIR|URL")]
    store: Option<String>,
    /// Most client connections open at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
}

/// Runs the server until SIGTERM or SIGINT; returns the process exit code.
pub fn run(kms: Option<&str>, args: &[String]) -> anyhow::Result<i32> {
    let args: ServeArgs = match super::parse_subcommand("kmsfs kms serve", args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();

    if let Some(spec) = args.store.as_deref().or(kms) {
        if kms_core::is_remote_url(spec) {
            bail!("kmsfs kms serve needs a key-store directory as --kms / KMSFS_KMS, not a URL ({spec})");
        }
    }
    let tls = match (args.cert, args.key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.insecure_http {
        bail!(
            "refusing to serve plain HTTP on {}: DEK plaintexts travel in responses. \
             Give --cert and --key, listen on a loopback address, or pass --insecure-http",
            args.listen
        );
    }
    let principals = match &args.config {
        Some(path) => Principals::from_file(path).map_err(anyhow::Error::msg)?,
        None => Principals::from_env().map_err(anyhow::Error::msg)?,
    };
    let store_spec = args.store.clone().or_else(|| {
        std::env::var("KMSFS_KMS_STORE")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let store =
        kms_core::connect(store_spec.as_deref().or(kms)).context("opening the key store")?;
    let config = ServerConfig {
        listen: args.listen,
        tls,
        principals,
        max_body_bytes: args.max_body_bytes,
        max_concurrent_calls: args.max_concurrent_calls,
        max_connections: args.max_connections,
    };
    let server = Server::bind(store, config)?;
    println!("listening on {}", server.url());
    use std::io::Write as _;
    std::io::stdout().flush().ok();
    tracing::info!(url = %server.url(), "kmsfs kms serve: listening");
    server.run_until_signal().context("the server stopped")?;
    Ok(0)
}

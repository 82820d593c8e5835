//! `kmsfs kms migrate --from DIR|URL --to DIR|URL [--force]`: moves a key store and its
//! audit chain between a directory and a PostgreSQL database (kms-core `migrate`), then
//! prints what it checked: one line per key (id, alias, state, versions; never
//! material) and the audit chain's length.

use anyhow::Context;
use clap::Parser;

/// Copy a key store (every key, version, alias and state) and its audit chain from a
/// directory to a PostgreSQL database or back, then verify the copy key by key.
#[derive(Debug, Parser)]
#[command(name = "kmsfs kms migrate")]
struct MigrateArgs {
    /// The store to copy: a directory, or postgres://USER@HOST:PORT/DB.
    #[arg(long, value_name = "DIR|URL")]
    from: String,
    /// Where to copy it: a directory, or postgres://USER@HOST:PORT/DB.
    #[arg(long, value_name = "DIR|URL")]
    to: String,
    /// Replace a destination that already holds keys or audit lines.
    #[arg(long)]
    force: bool,
}

/// Runs the migration; returns the process exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    let args: MigrateArgs = match super::parse_subcommand("kmsfs kms migrate", args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let local = kms_core::default_store_dir()?;
    let report = kms_core::migrate::migrate(&args.from, &args.to, args.force, &local)
        .map_err(|e| anyhow::anyhow!(e.message))
        .context("kmsfs kms migrate")?;
    for k in &report.keys {
        let alias = if k.alias.is_empty() { "-" } else { &k.alias };
        println!(
            "key {} alias {alias} {} versions {}: identical, material authenticates",
            k.key_id, k.state, k.versions
        );
    }
    println!(
        "{} keys copied and verified; audit chain: {} lines, identical, intact",
        report.keys.len(),
        report.audit_lines
    );
    println!("root key: {}", report.root_key_note);
    Ok(0)
}

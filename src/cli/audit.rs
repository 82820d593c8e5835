//! `kmsfs kms verify-audit`: checks the hash chain of a store's audit log, in a file
//! (a store directory's `audit.log`, or a path given) or in the store's PostgreSQL
//! database (`--store postgres://…`, `KMSFS_KMS_STORE`, or `--kms postgres://…`).

use std::path::PathBuf;

/// Where the audit log to check is.
enum Target {
    File(PathBuf),
    Db(String),
}

/// The store a `kmsfs kms` subcommand means: `--store SPEC` in `args`, else
/// `$KMSFS_KMS_STORE`, else the global `--kms`; returns it and the other arguments.
pub(crate) fn store_spec(
    kms: Option<&str>,
    args: &[String],
) -> anyhow::Result<(Option<String>, Vec<String>)> {
    let mut rest = Vec::new();
    let mut store = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--store=") {
            store = Some(v.to_owned());
        } else if a == "--store" {
            let v = it
                .next()
                .ok_or_else(|| anyhow::anyhow!("--store needs a directory or postgres:// URL"))?;
            store = Some(v.clone());
        } else {
            rest.push(a.clone());
        }
    }
    let store = store
        .or_else(|| {
            std::env::var("KMSFS_KMS_STORE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| kms.filter(|k| !k.is_empty()).map(str::to_owned));
    Ok((store, rest))
}

/// `kmsfs kms verify-audit [LOG] [--store DIR|URL]`; returns the exit code: 0 intact,
/// 1 broken.
pub fn verify_audit(kms: Option<&str>, args: &[String]) -> anyhow::Result<i32> {
    let (store, rest) = store_spec(kms, args)?;
    let target = match (rest.first(), store) {
        (Some(p), _) => Target::File(PathBuf::from(p)),
        (None, Some(s)) if kms_core::store::is_postgres_url(&s) => Target::Db(s),
        (None, Some(u)) if kms_core::is_remote_url(&u) => {
            anyhow::bail!(
                "verify-audit reads a store (a directory or postgres:// database), not a server; \
                 give --store or the log's path"
            )
        }
        (None, Some(d)) => Target::File(PathBuf::from(d).join(kms_core::store::AUDIT_FILE)),
        (None, None) => {
            Target::File(kms_core::default_store_dir()?.join(kms_core::store::AUDIT_FILE))
        }
    };
    match target {
        Target::File(path) => {
            let log = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            match kms_core::audit::verify_chain(&log) {
                Ok(n) => {
                    println!("{}: {n} lines, hash chain intact", path.display());
                    Ok(0)
                }
                Err(line) => {
                    println!(
                        "{}: hash chain broken at line {line} (a line before it was deleted or edited, or it is torn)",
                        path.display()
                    );
                    Ok(1)
                }
            }
        }
        Target::Db(url) => {
            let label = kms_core::audit::db_label(&url);
            match kms_core::audit::verify_pg(&url).map_err(|e| anyhow::anyhow!(e.message))? {
                Ok(n) => {
                    println!("{label} kmsfs_audit: {n} lines, hash chain intact");
                    Ok(0)
                }
                Err(b) => {
                    println!("{label} kmsfs_audit: {b}");
                    Ok(1)
                }
            }
        }
    }
}

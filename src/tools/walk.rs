//! The volume walker `kmsfs fsck` and `kmsfs rewrap` share: every regular file once,
//! names as the mount shows them, and what an encrypted-names volume's side files and
//! long links say about each entry (with the repairs `kmsfs fsck --repair` can make).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::backing::sys;
use crate::volume::names;

/// A repair `--repair` can make of a problem the walk found.
#[derive(Debug)]
pub enum Fix {
    /// An orphan side file of a long name, or a side file's temp file: removed.
    RemoveSide(PathBuf),
    /// A long link's side file that no symlink names: removed, only after a complete walk
    /// of an unmounted volume.
    RemoveOrphanLink(PathBuf),
    /// A long name (entry `entry` in directory `dir`, whose IV is `iv`) whose side file is
    /// lost or not its own: renamed to `lost-longname-<hash>` (the mount shows it), and
    /// the bad side file removed.
    Quarantine {
        /// The backing directory.
        dir: PathBuf,
        /// The long name's entry.
        entry: OsString,
        /// The directory's IV.
        iv: names::DirIv,
    },
}

impl Fix {
    /// What the repair would do, for the report.
    pub fn what(&self) -> &'static str {
        match self {
            Fix::RemoveSide(_) | Fix::RemoveOrphanLink(_) => "removes it",
            Fix::Quarantine { .. } => {
                "renames it to lost-longname-<hash> in its directory (content kept), \
                 where the mount shows it"
            }
        }
    }

    pub fn apply(&self, k: Option<&names::NameKey>) -> anyhow::Result<String> {
        match self {
            Fix::RemoveSide(p) | Fix::RemoveOrphanLink(p) => {
                std::fs::remove_file(p)?;
                sync_parent(p)?;
                Ok("removed".into())
            }
            Fix::Quarantine { dir, entry, iv } => {
                let k = k.context("no name key")?;
                let d = File::open(dir)?;
                let e = entry.to_string_lossy();
                let hash = e
                    .get(names::LONG_NAME_PREFIX.len()..names::LONG_NAME_PREFIX.len() + 12)
                    .context("not a long name")?;
                for n in 0..100 {
                    let plain = match n {
                        0 => format!("lost-longname-{hash}"),
                        n => format!("lost-longname-{hash}-{n}"),
                    };
                    let stored = k
                        .encrypt_name(iv, std::ffi::OsStr::new(&plain))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    match sys::renameat2(
                        d.as_raw_fd(),
                        entry,
                        d.as_raw_fd(),
                        &stored.entry,
                        libc::RENAME_NOREPLACE,
                    ) {
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                        Err(e) => return Err(e.into()),
                        Ok(()) => {}
                    }
                    names::remove_side_name(d.as_raw_fd(), entry)?;
                    names::sync_dir(d.as_raw_fd())?;
                    return Ok(format!("renamed to {plain} in its directory"));
                }
                anyhow::bail!("no free lost-longname-* name")
            }
        }
    }
}

/// fsync of the directory holding `p`.
fn sync_parent(p: &Path) -> std::io::Result<()> {
    File::open(p.parent().unwrap_or(Path::new("/")))?.sync_all()
}

/// What [`walk_volume`] found.
#[derive(Debug)]
pub enum Walked<'a> {
    /// A regular file (each inode once, whatever its hard links).
    File {
        /// Its backing path.
        path: &'a Path,
        /// Its path relative to the backing directory (= relative to the mount).
        rel: &'a str,
    },
    /// A name the mount cannot show (encrypted names): one that does not decrypt
    /// (a warning: the mount hides that entry), a directory without its IV whose
    /// entries therefore cannot be named, a long name without its side file, a long
    /// symlink without its side file (errors); or a side file whose entry or symlink is
    /// gone (a warning: an orphan a crash left, safe to delete). Walked on all the same.
    Name {
        /// The path relative to the backing directory, decrypted as far as it goes.
        rel: &'a str,
        /// What is wrong.
        message: String,
        /// An entry the mount cannot name or read (rather than a stray name or an orphan).
        error: bool,
        /// What `kmsfs fsck --repair` can do about it.
        fix: Option<Fix>,
    },
    /// A directory that cannot be listed or an entry that cannot be stat'ed.
    Error {
        /// The path relative to the backing directory.
        rel: &'a str,
        /// What failed.
        message: String,
    },
}

/// Walks the volume at `backing` depth-first in name order and hands every regular file
/// to `visit`, each inode once; skips the volume's own files at the root (the config, its
/// temp file, the rewrap lock: what the mount hides), never follows symlinks.
/// With `names` (a volume with encrypted names), skips each directory's IV file and
/// names paths as the mount does. Shared by `kmsfs fsck` and `kmsfs rewrap`.
///
/// Returns whether the walk was complete: every directory listed, every entry stat'ed
/// and every symlink read (else a long link's file may be named by a symlink not seen).
pub fn walk_volume(
    backing: &Path,
    names: Option<&names::NameKey>,
    visit: &mut dyn FnMut(Walked<'_>),
) -> bool {
    let mut w = Walk {
        backing,
        names,
        seen: HashSet::new(),
        links: HashSet::new(),
        complete: true,
    };
    walk_dir(backing, Path::new(""), &mut w, visit);
    // Long links' side files no symlink names.
    let Some(k) = names.filter(|k| k.long_names()) else {
        return w.complete;
    };
    let mut sides: Vec<_> = match std::fs::read_dir(backing) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| k.kind_of(n) == names::EntryKind::LinkSide)
            .collect(),
        Err(_) => return false,
    };
    sides.sort();
    for n in sides.into_iter().filter(|n| !w.links.contains(n)) {
        visit(Walked::Name {
            rel: &n.to_string_lossy(),
            message: "side file of a long symlink target that no symlink names (an orphan a \
                      crash left)"
                .into(),
            error: false,
            fix: Some(Fix::RemoveOrphanLink(backing.join(&n))),
        });
    }
    w.complete
}

/// The state of one [`walk_volume`].
struct Walk<'a> {
    backing: &'a Path,
    names: Option<&'a names::NameKey>,
    /// Regular files seen (each inode once).
    seen: HashSet<(u64, u64)>,
    /// The long links symlinks name (their side files at the root).
    links: HashSet<OsString>,
    /// Every directory listed, every entry stat'ed, every symlink read.
    complete: bool,
}

fn walk_dir(dir: &Path, rel: &Path, w: &mut Walk, visit: &mut dyn FnMut(Walked<'_>)) {
    let names = w.names;
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            let all: Vec<_> = rd.collect();
            if all.iter().any(|e| e.is_err()) {
                w.complete = false;
            }
            all.into_iter().filter_map(|e| e.ok()).collect()
        }
        Err(e) => {
            w.complete = false;
            visit(Walked::Error {
                rel: &rel.to_string_lossy(),
                message: format!("cannot list directory: {e}"),
            });
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    let top = rel.as_os_str().is_empty();
    let all: HashSet<OsString> = entries.iter().map(|e| e.file_name()).collect();
    entries.retain(|e| {
        let name = e.file_name();
        let volume_file = top && crate::volume::is_reserved(fuser::INodeNo::ROOT.0, &name);
        let kind = names.map(|k| k.kind_of(&name));
        let own_file = match kind {
            Some(names::EntryKind::DirIv) => true,
            Some(names::EntryKind::LinkSide) => top,
            Some(names::EntryKind::Side(entry)) => {
                let temp = !name.as_bytes().ends_with(names::SIDE_SUFFIX.as_bytes());
                let message = if !all.contains(entry) {
                    Some("side file of a long name whose entry is gone (an orphan a crash left)")
                } else if temp {
                    Some("temp file of a long name's side file (a crash left it, or a write in progress)")
                } else {
                    None
                };
                if let Some(message) = message {
                    let r = rel.join(&name);
                    visit(Walked::Name {
                        rel: &r.to_string_lossy(),
                        message: message.into(),
                        error: false,
                        fix: Some(Fix::RemoveSide(dir.join(&name))),
                    });
                }
                true
            }
            _ => false,
        };
        !(volume_file || own_file)
    });
    let dfd = File::open(dir);
    let iv = match names {
        None => None,
        Some(k) => match dfd
            .as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
            .and_then(|d| names::read_diriv(d.as_raw_fd()))
        {
            Ok(iv) => Some((k, iv)),
            Err(err) => {
                if !entries.is_empty() {
                    visit(Walked::Name {
                        rel: &rel.to_string_lossy(),
                        message: format!(
                            "directory without a readable {} ({err}): the mount cannot name its entries",
                            names::DIRIV_NAME
                        ),
                        error: true,
                        fix: None,
                    });
                }
                None
            }
        },
    };
    for e in entries {
        let name = e.file_name();
        let read = match (iv, &dfd) {
            (Some((k, iv)), Ok(d)) => Some(k.read_name(&iv, d.as_raw_fd(), &name)),
            _ => None,
        };
        let r = match read {
            Some(Ok(plain)) => rel.join(plain),
            Some(Err(bad)) => {
                let r = rel.join(&name);
                let (message, error) = match bad {
                    names::BadName::DoesNotDecrypt => ("name does not decrypt (not of this volume, or changed): the mount does not show it".to_string(), false),
                    bad => (format!("{bad}: the mount does not show it (a lookup of its name writes the side file again; a read-only mount answers EIO)"), true),
                };
                let fix = match iv {
                    Some((_, iv)) if error => Some(Fix::Quarantine {
                        dir: dir.to_path_buf(),
                        entry: name.clone(),
                        iv,
                    }),
                    _ => None,
                };
                visit(Walked::Name {
                    rel: &r.to_string_lossy(),
                    message,
                    error,
                    fix,
                });
                r
            }
            None => rel.join(&name),
        };
        match std::fs::symlink_metadata(e.path()) {
            Ok(md) if md.is_dir() => walk_dir(&e.path(), &r, w, visit),
            Ok(md) if md.is_file() && w.seen.insert((md.dev(), md.ino())) => visit(Walked::File {
                path: &e.path(),
                rel: &r.to_string_lossy(),
            }),
            Ok(md) if md.file_type().is_symlink() => check_long_link(&e.path(), &r, w, visit),
            Ok(_) => {}
            // Deleted since the directory was listed (a mounted volume).
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                w.complete = false;
                visit(Walked::Error {
                    rel: &r.to_string_lossy(),
                    message: format!("cannot stat: {err}"),
                })
            }
        }
    }
}

/// Checks the symlink at `path` (mount path `rel`): a long link must have its side file
/// at the root, holding a target that opens.
fn check_long_link(path: &Path, rel: &Path, w: &mut Walk, visit: &mut dyn FnMut(Walked<'_>)) {
    let Some(k) = w.names.filter(|k| k.long_names()) else {
        return;
    };
    let t = match std::fs::read_link(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(_) => {
            w.complete = false;
            return;
        }
    };
    let t = t.into_os_string();
    if !k.is_long_link(t.as_bytes()) {
        return;
    }
    let stored = File::open(w.backing).and_then(|root| names::read_long_link(root.as_raw_fd(), &t));
    let problem = match stored {
        Ok(s) if k.decrypt_target(&s).is_some() => None,
        Ok(_) => Some("its target does not decrypt".to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("its side file is missing".to_string())
        }
        Err(e) => Some(format!("its side file is bad ({e})")),
    };
    w.links.insert(t.clone());
    if let Some(p) = problem {
        visit(Walked::Name {
            rel: &rel.to_string_lossy(),
            message: format!(
                "long symlink {}: {p}; readlink answers EIO",
                t.to_string_lossy()
            ),
            error: true,
            fix: None,
        });
    }
}

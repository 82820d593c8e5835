//! `kmsfs encrypt SRC BACKING`: turns an existing plaintext tree into a new volume,
//! offline (no FUSE), then verifies the result by decrypting every file again.
//!
//! Entries are laid out in the backing directory by the daemon's own functions
//! ([`nodes::make_node`], [`nodes::create_file`], [`nodes::make_symlink`],
//! [`content::write`], [`Volume::new_file`]): a volume written here is the volume the
//! daemon would have written had the tree been copied through a mount. Kept: content
//! (data extents only: holes stay holes), mode, owner, mtime and atime (ctime cannot be
//! set: it becomes the time of the copy), xattrs, symlinks, hard links, fifos, sockets
//! and devices (devices need root).

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::backing::{content, nodes, sys};
use crate::volume::create::{self, InitFlags};
use crate::volume::names::{self, DirIv, NameKey};
use crate::volume::{CacheOptions, Volume};

/// Plaintext read and written per call (a multiple of the block size).
const CHUNK: usize = 1 << 20;

/// Exit status when the copy does not match the source.
pub const EXIT_MISMATCH: i32 = 2;

/// `kmsfs encrypt SRC BACKING`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The plaintext directory tree to encrypt (read only, unless --delete-source-after-verify).
    pub src: PathBuf,
    /// The new volume's backing directory: must not exist or be empty.
    pub backing: PathBuf,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Delete SRC once every file was read back from BACKING, decrypted and found equal
    /// (content and metadata). Never deletes anything if verification finds a difference.
    #[arg(long)]
    pub delete_source_after_verify: bool,
    #[command(flatten)]
    pub init: InitFlags,
}

/// What was copied and what the verification found.
#[derive(Debug, Default, Serialize)]
struct Summary {
    volume: String,
    cmk: String,
    files: u64,
    directories: u64,
    symlinks: u64,
    hard_links: u64,
    special_files: u64,
    xattrs: u64,
    bytes: u64,
    seconds: f64,
    mb_per_s: f64,
    verified: u64,
    verify_seconds: f64,
    mismatches: Vec<String>,
    source_deleted: bool,
}

/// Runs `kmsfs encrypt`.
pub fn run(kms: Option<&str>, a: EncryptArgs) -> anyhow::Result<i32> {
    let src = a
        .src
        .canonicalize()
        .with_context(|| format!("cannot open the source {}; check the path", a.src.display()))?;
    if !src.is_dir() {
        bail!(
            "{} is not a directory; kmsfs encrypt takes a directory tree",
            src.display()
        );
    }
    let backing_abs = std::path::absolute(&a.backing)
        .with_context(|| format!("cannot resolve {}", a.backing.display()))?;
    if backing_abs.starts_with(&src) || src.starts_with(&backing_abs) {
        bail!(
            "the source {} and BACKING {} must not contain each other; put BACKING elsewhere",
            src.display(),
            backing_abs.display()
        );
    }
    let k = create::connect(kms)?;
    let cfg = create::init_backing(k.as_ref(), kms, &a.backing, &a.init)?;
    let backing = a.backing.canonicalize()?;
    let vol = Volume::open(
        k,
        kms,
        &backing,
        CacheOptions {
            capacity: 1024,
            max_age: Duration::from_secs(300),
        },
    )?;
    let (total_files, total_bytes) = scan(&src)?;
    let bar = progress_bar(total_bytes);
    let mut c = Copier {
        vol: &vol,
        names: vol.names.as_ref(),
        backing: backing.clone(),
        links: HashMap::new(),
        sum: Summary {
            volume: cfg.uuid.clone(),
            cmk: cfg.cmk.clone(),
            ..Summary::default()
        },
        bar,
        total_files,
    };
    let t0 = Instant::now();
    let copied = c.copy_tree(&src);
    c.bar.finish_and_clear();
    copied.map_err(|e| {
        anyhow!(
            "{e:#}\nBACKING {} holds a partial volume: remove it (rm -r) before running kmsfs encrypt again",
            backing.display()
        )
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let mut sum = c.sum;
    sum.seconds = secs;
    sum.mb_per_s = sum.bytes as f64 / 1e6 / secs.max(1e-6);
    let t1 = Instant::now();
    let mut v = Verifier {
        vol: &vol,
        names: vol.names.as_ref(),
        src: &src,
        backing: &backing,
        inodes: HashMap::new(),
        mismatches: Vec::new(),
        verified: 0,
        bar: progress_bar(total_bytes),
    };
    v.bar.set_message("verifying");
    let verified = v.tree(Path::new(""), Path::new(""));
    v.bar.finish_and_clear();
    verified?;
    sum.verified = v.verified;
    sum.mismatches = v.mismatches;
    sum.verify_seconds = t1.elapsed().as_secs_f64();
    drop(vol);
    let clean = sum.mismatches.is_empty();
    if a.delete_source_after_verify && clean {
        // The volume must be on disk before its only other copy goes: a power cut after
        // the delete would otherwise lose what the page cache still held.
        sync_filesystem(&backing).with_context(|| {
            format!(
                "the volume verified clean, but flushing {} to disk failed; the source was \
                 left in place",
                backing.display()
            )
        })?;
        std::fs::remove_dir_all(&src).with_context(|| {
            format!(
                "the volume verified clean, but deleting the source {} failed; delete it by hand",
                src.display()
            )
        })?;
        sum.source_deleted = true;
    }
    report(&sum, &src, &backing, a.json, a.delete_source_after_verify)?;
    Ok(if clean { 0 } else { EXIT_MISMATCH })
}

/// `syncfs(2)` of the filesystem that holds `dir`: every file, directory entry and
/// metadata change written there so far reaches the disk.
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    let d = std::fs::File::open(dir)?;
    // SAFETY: syncfs on an fd we own.
    if unsafe { libc::syncfs(std::os::unix::io::AsRawFd::as_raw_fd(&d)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn report(
    sum: &Summary,
    src: &Path,
    backing: &Path,
    json: bool,
    delete_asked: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(sum)?);
    } else {
        println!(
            "kmsfs: encrypted {} into volume {} at {}: {} files, {} directories, {} symlinks, \
             {} hard links, {} special files, {} xattrs, {} bytes in {:.1} s ({:.1} MB/s)",
            src.display(),
            sum.volume,
            backing.display(),
            sum.files,
            sum.directories,
            sum.symlinks,
            sum.hard_links,
            sum.special_files,
            sum.xattrs,
            sum.bytes,
            sum.seconds,
            sum.mb_per_s
        );
        println!(
            "kmsfs: verified {} entries in {:.1} s by decrypting them again: {}",
            sum.verified,
            sum.verify_seconds,
            if sum.mismatches.is_empty() {
                "all equal to the source".to_string()
            } else {
                format!("{} mismatches", sum.mismatches.len())
            }
        );
        println!("kmsfs: ctime cannot be set: every entry's ctime is the time of this copy");
    }
    for m in &sum.mismatches {
        eprintln!("kmsfs: mismatch: {m}");
    }
    if !sum.mismatches.is_empty() {
        eprintln!(
            "kmsfs: the source was left untouched; check whether it changed during the copy, \
             then remove {} and run kmsfs encrypt again",
            backing.display()
        );
    } else if sum.source_deleted {
        eprintln!("kmsfs: deleted the source {}", src.display());
    } else if !delete_asked {
        eprintln!(
            "kmsfs: the source {} was left in place (--delete-source-after-verify removes it)",
            src.display()
        );
    }
    Ok(())
}

/// Counts regular files and their bytes (a hard-linked file once), for the progress bar.
fn scan(dir: &Path) -> anyhow::Result<(u64, u64)> {
    fn walk(
        dir: &Path,
        seen: &mut HashSet<(u64, u64)>,
        acc: &mut (u64, u64),
    ) -> anyhow::Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let e = e?;
            let md = e.metadata()?;
            if md.is_dir() {
                walk(&e.path(), seen, acc)?;
            } else if md.is_file() && (md.nlink() == 1 || seen.insert((md.dev(), md.ino()))) {
                acc.0 += 1;
                acc.1 += md.len();
            }
        }
        Ok(())
    }
    let mut acc = (0, 0);
    walk(dir, &mut HashSet::new(), &mut acc)?;
    Ok(acc)
}

fn progress_bar(total_bytes: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total_bytes), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The copy pass.
struct Copier<'a> {
    vol: &'a Volume,
    /// The name key of a volume with encrypted names.
    names: Option<&'a NameKey>,
    backing: PathBuf,
    /// Source (dev, ino) of a multiply-linked entry → its first backing path.
    links: HashMap<(u64, u64), PathBuf>,
    sum: Summary,
    bar: ProgressBar,
    total_files: u64,
}

impl Copier<'_> {
    fn copy_tree(&mut self, src: &Path) -> anyhow::Result<()> {
        let root = nodes::open_root(&self.backing).map_err(|e| anyhow!("{e}"))?;
        let md = std::fs::symlink_metadata(src)?;
        let iv = match self.names {
            Some(_) => Some(names::read_diriv(root.as_raw_fd())?),
            None => None,
        };
        self.copy_dir(src, &root, Path::new(""), true, iv)?;
        sys::fchown_fd(root.as_raw_fd(), md.uid(), md.gid())
            .with_context(|| owner_hint(src, &md))?;
        self.finish(root.as_raw_fd(), src, &md)
    }

    /// Copies the entries of `src` into backing directory `bdir` (at backing path `rel`
    /// in the volume), whose IV is `iv` on a volume with encrypted names.
    fn copy_dir(
        &mut self,
        src: &Path,
        bdir: &OwnedFd,
        rel: &Path,
        is_root: bool,
        iv: Option<DirIv>,
    ) -> anyhow::Result<()> {
        let mut names: Vec<OsString> = std::fs::read_dir(src)
            .with_context(|| format!("cannot read the directory {}", src.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read the directory {}", src.display()))?;
        names.sort();
        for name in names {
            let path = src.join(&name);
            let stored = match (self.names, iv) {
                (Some(k), Some(iv)) => {
                    let s = k.encrypt_name(&iv, &name).map_err(|_| {
                        anyhow!(
                            "cannot encrypt {}: a volume with encrypted names takes names of \
                             at most {} bytes; rename it first",
                            path.display(),
                            k.max_name()
                        )
                    })?;
                    if let Some(full) = &s.long {
                        names::write_side_name(bdir.as_raw_fd(), &s.entry, full)
                            .with_context(|| format!("cannot encrypt {}", path.display()))?;
                    }
                    s.entry
                }
                _ => {
                    if is_root && crate::volume::is_reserved(fuser::INodeNo::ROOT.0, &name) {
                        bail!(
                            "cannot encrypt {}: this name is reserved for the volume's own files \
                             in a volume's root; move it into a subdirectory (or rename it) first",
                            path.display()
                        );
                    }
                    name
                }
            };
            self.copy_entry(&path, bdir, &rel.join(&stored), &stored)
                .with_context(|| format!("cannot encrypt {}", path.display()))?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        path: &Path,
        bdir: &OwnedFd,
        rel: &Path,
        name: &OsStr,
    ) -> anyhow::Result<()> {
        let md = std::fs::symlink_metadata(path)?;
        let ft = md.file_type();
        let dir = bdir.as_raw_fd();
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                let fd = sys::openat(libc::AT_FDCWD, first.as_os_str(), libc::O_PATH, 0)?;
                sys::linkat_fd(fd.as_raw_fd(), dir, name)?;
                self.sum.hard_links += 1;
                return Ok(());
            }
            self.links
                .insert((md.dev(), md.ino()), self.backing.join(rel));
        }
        let (uid, gid) = (md.uid(), md.gid());
        if ft.is_dir() {
            let fd = nodes::make_node(dir, name, libc::S_IFDIR | 0o700, 0, uid, gid)
                .with_context(|| owner_hint(path, &md))?;
            let iv = match self.names {
                Some(_) => Some(names::create_diriv(fd.as_raw_fd())?),
                None => None,
            };
            self.copy_dir(path, &fd, rel, false, iv)?;
            self.sum.directories += 1;
            self.finish(fd.as_raw_fd(), path, &md)
        } else if ft.is_file() {
            let f = nodes::create_file(dir, name, 0o600, uid, gid)
                .with_context(|| owner_hint(path, &md))?;
            self.copy_content(path, &f, md.len())?;
            self.sum.files += 1;
            self.bar
                .set_message(format!("{}/{} files", self.sum.files, self.total_files));
            self.finish(f.as_raw_fd(), path, &md)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path)?.into_os_string();
            let fd = match self.names {
                Some(k) => {
                    let stored = k
                        .encrypt_target(&target)
                        .map_err(|e| anyhow!("cannot encrypt the symlink target: {e:?}"))?;
                    let root = nodes::open_root(&self.backing).map_err(|e| anyhow!("{e}"))?;
                    crate::volume::names::make_stored_symlink(
                        root.as_raw_fd(),
                        dir,
                        name,
                        k,
                        &stored,
                        uid,
                        gid,
                    )
                }
                None => nodes::make_symlink(dir, name, &target, uid, gid),
            }
            .with_context(|| owner_hint(path, &md))?;
            self.sum.symlinks += 1;
            // Symlinks have no mode; their xattrs go by path (an fd path would follow them).
            for (n, v) in list_xattrs(path)? {
                lsetxattr(&self.backing.join(rel), &n, &v)
                    .with_context(|| format!("cannot set xattr {n:?}"))?;
                self.sum.xattrs += 1;
            }
            set_times(fd.as_raw_fd(), &md)
        } else {
            let fd = nodes::make_node(dir, name, md.mode(), md.rdev(), uid, gid).map_err(|e| {
                if e.raw_os_error() == Some(libc::EPERM) && (ft.is_char_device() || ft.is_block_device()) {
                    anyhow!("{e}: device files can only be created by root; run kmsfs encrypt as root, or remove the device from the source")
                } else {
                    anyhow!(e)
                }
            })?;
            self.sum.special_files += 1;
            self.finish(fd.as_raw_fd(), path, &md)
        }
    }

    /// Copies the data extents of `path` (`size` bytes) into the new backing file `dst`;
    /// holes are left as holes.
    fn copy_content(&mut self, path: &Path, dst: &File, size: u64) -> anyhow::Result<()> {
        if size == 0 {
            return Ok(());
        }
        let src = open_source(path)?;
        let geo = &self.vol.geo;
        let (hdr, key) = self
            .vol
            .new_file()
            .map_err(|e| anyhow!("cannot get a data key from the KMS: {e}"))?;
        let mut header = Some(hdr);
        let mut buf = vec![0u8; CHUNK];
        let mut off = 0;
        while let Some((start, end)) = next_data(&src, off, size)? {
            let mut pos = start;
            while pos < end {
                let want = ((end - pos) as usize).min(CHUNK);
                let n = sys::pread_full(&src, &mut buf[..want], pos)?;
                if n == 0 {
                    break;
                }
                content::write(dst, &key, geo, header.take().as_deref(), pos, &buf[..n])
                    .map_err(content_error)?;
                pos += n as u64;
                self.sum.bytes += n as u64;
                self.bar.inc(n as u64);
            }
            off = end;
        }
        // A trailing hole (or a file of holes only) sets the size.
        content::truncate(dst, Some(&key), geo, header.as_deref(), size).map_err(content_error)?;
        Ok(())
    }

    /// Xattrs, mode and times of a copied entry (in that order: chmod after chown keeps
    /// set-id bits, times last).
    fn finish(&mut self, fd: RawFd, path: &Path, md: &Metadata) -> anyhow::Result<()> {
        for (n, v) in list_xattrs(path)? {
            sys::setxattr_fd(fd, &n, &v, 0).with_context(|| {
                format!("cannot set xattr {n:?} (does the backing filesystem support it?)")
            })?;
            self.sum.xattrs += 1;
        }
        sys::chmod_fd(fd, md.mode() & 0o7777)?;
        set_times(fd, md)
    }
}

fn set_times(fd: RawFd, md: &Metadata) -> anyhow::Result<()> {
    let ts = |s: i64, ns: i64| libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    sys::utimens_fd(
        fd,
        Some(ts(md.atime(), md.atime_nsec())),
        Some(ts(md.mtime(), md.mtime_nsec())),
    )?;
    Ok(())
}

fn owner_hint(path: &Path, md: &Metadata) -> String {
    format!(
        "cannot create the copy of {} owned by {}:{} (keeping other users' files needs root)",
        path.display(),
        md.uid(),
        md.gid()
    )
}

fn content_error(r: Result<content::BadBlock, crate::backing::error::FsError>) -> anyhow::Error {
    match r {
        Ok(content::BadBlock(b, _)) => anyhow!("block {b} of the new file does not read back"),
        Err(e) => anyhow!("writing the encrypted file failed: {e}"),
    }
}

/// Opens a source file without touching its atime where allowed.
fn open_source(path: &Path) -> anyhow::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NOFOLLOW)
            .open(path)
    };
    open(libc::O_NOATIME)
        .or_else(|_| open(0))
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The next data extent `[start, end)` at or after `off` (`None`: only holes remain).
/// Without SEEK_DATA support everything is data.
fn next_data(f: &File, off: u64, size: u64) -> anyhow::Result<Option<(u64, u64)>> {
    if off >= size {
        return Ok(None);
    }
    let fd = f.as_raw_fd();
    // SAFETY: lseek on an owned fd.
    let start = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Ok(Some((off, size))),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    let end = if end < 0 {
        size
    } else {
        (end as u64).min(size)
    };
    Ok(Some(((start as u64).min(size), end)))
}

fn cpath(p: &Path) -> anyhow::Result<CString> {
    Ok(CString::new(p.as_os_str().as_bytes())?)
}

/// `(name, value)` of every xattr of `p` (not following a symlink).
fn list_xattrs(p: &Path) -> anyhow::Result<Vec<(OsString, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(e).with_context(|| format!("cannot list the xattrs of {}", p.display()));
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cn = CString::new(name)?;
        let mut v = vec![0u8; 64 * 1024];
        // SAFETY: valid C strings and buffer.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "cannot read xattr {} of {}",
                    String::from_utf8_lossy(name),
                    p.display()
                )
            });
        }
        v.truncate(n as usize);
        out.push((OsStr::from_bytes(name).to_owned(), v));
    }
    out.sort();
    Ok(out)
}

fn lsetxattr(p: &Path, name: &OsStr, v: &[u8]) -> anyhow::Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name.as_bytes())?;
    // SAFETY: valid C strings and buffer.
    if unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// The verification pass: every entry of the volume read back by path and compared with
/// the source (regular files decrypted through their headers and the KMS).
struct Verifier<'a> {
    vol: &'a Volume,
    /// The name key of a volume with encrypted names.
    names: Option<&'a NameKey>,
    src: &'a Path,
    backing: &'a Path,
    /// Source (dev, ino) → backing (dev, ino): hard links must stay shared.
    inodes: HashMap<(u64, u64), (u64, u64)>,
    mismatches: Vec<String>,
    verified: u64,
    bar: ProgressBar,
}

impl Verifier<'_> {
    /// Checks source path `rel` against backing path `brel` (the same unless names are
    /// encrypted), and below.
    fn tree(&mut self, rel: &Path, brel: &Path) -> anyhow::Result<()> {
        let s = self.src.join(rel);
        let b = self.backing.join(brel);
        self.entry(rel, brel)?;
        if !std::fs::symlink_metadata(&s)?.is_dir() || !b.is_dir() {
            return Ok(());
        }
        let names = |d: &Path, skip: &dyn Fn(&OsStr) -> bool| -> anyhow::Result<Vec<OsString>> {
            let mut v: Vec<OsString> = std::fs::read_dir(d)
                .with_context(|| format!("cannot read {}", d.display()))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| !skip(n))
                .collect();
            v.sort();
            Ok(v)
        };
        let root = rel.as_os_str().is_empty();
        let reserved = |n: &OsStr| root && crate::volume::is_reserved(fuser::INodeNo::ROOT.0, n);
        let sn = names(&s, &|n| self.names.is_none() && reserved(n))?;
        // The backing names, as (plaintext, stored).
        let mut bn = Vec::new();
        let bdir = File::open(&b)?;
        let iv = match self.names {
            Some(k) => Some((k, names::read_diriv(bdir.as_raw_fd())?)),
            None => None,
        };
        for stored in names(&b, &|n| {
            reserved(n)
                || iv.is_some_and(|(k, _)| match k.kind_of(n) {
                    names::EntryKind::DirIv | names::EntryKind::Side(_) => true,
                    names::EntryKind::LinkSide => root,
                    _ => false,
                })
        })? {
            match iv {
                None => bn.push((stored.clone(), stored)),
                Some((k, iv)) => match k.read_name(&iv, bdir.as_raw_fd(), &stored) {
                    Ok(plain) => bn.push((plain, stored)),
                    Err(e) => self.bad(&rel.join(&stored), format!("in the volume: {e}")),
                },
            }
        }
        for (extra, _) in bn.iter().filter(|(n, _)| !sn.contains(n)) {
            self.bad(
                &rel.join(extra),
                "in the volume but not in the source".into(),
            );
        }
        for n in &sn {
            let Some((_, stored)) = bn.iter().find(|(p, _)| p == n) else {
                self.bad(&rel.join(n), "missing from the volume".into());
                continue;
            };
            self.tree(&rel.join(n), &brel.join(stored))?;
        }
        Ok(())
    }

    fn bad(&mut self, rel: &Path, what: String) {
        self.mismatches
            .push(format!("{}: {what}", self.src.join(rel).display()));
    }

    fn entry(&mut self, rel: &Path, brel: &Path) -> anyhow::Result<()> {
        let s = self.src.join(rel);
        let b = self.backing.join(brel);
        let sm = std::fs::symlink_metadata(&s)?;
        let bm = std::fs::symlink_metadata(&b)?;
        self.verified += 1;
        if sm.file_type() != bm.file_type() {
            self.bad(rel, "file type differs".into());
            return Ok(());
        }
        let is_link = sm.file_type().is_symlink();
        let pairs: [(&str, u64, u64, bool); 5] = [
            ("mode", sm.mode() as u64, bm.mode() as u64, !is_link),
            ("uid", sm.uid() as u64, bm.uid() as u64, true),
            ("gid", sm.gid() as u64, bm.gid() as u64, true),
            ("link count", sm.nlink(), bm.nlink(), !sm.is_dir()),
            ("rdev", sm.rdev(), bm.rdev(), true),
        ];
        for (what, x, y, check) in pairs {
            if check && x != y {
                let why = if what == "link count" && x > y {
                    " (a hard link outside the source tree cannot be kept)"
                } else {
                    ""
                };
                self.bad(
                    rel,
                    format!("{what} {x:o} in the source, {y:o} in the volume{why}"),
                );
            }
        }
        if (sm.mtime(), sm.mtime_nsec()) != (bm.mtime(), bm.mtime_nsec()) {
            self.bad(rel, "mtime differs".into());
        }
        if !sm.is_dir() && sm.nlink() > 1 {
            let want = (bm.dev(), bm.ino());
            let got = *self.inodes.entry((sm.dev(), sm.ino())).or_insert(want);
            if got != want {
                self.bad(rel, "hard link not shared with its other names".into());
            }
        }
        if is_link {
            let mut target = Some(std::fs::read_link(&b)?.into_os_string());
            if let (Some(k), Some(t)) = (self.names, &target) {
                target = if k.is_long_link(t.as_bytes()) {
                    let root = File::open(self.backing)?;
                    names::read_long_link(root.as_raw_fd(), t)
                        .ok()
                        .and_then(|s| k.decrypt_target(&s))
                } else {
                    k.decrypt_target(t)
                };
            }
            if Some(std::fs::read_link(&s)?.into_os_string()) != target {
                self.bad(rel, "symlink target differs".into());
            }
        } else if list_xattrs(&s)? != list_xattrs(&b)? {
            self.bad(rel, "xattrs differ".into());
        }
        if sm.is_file() {
            if let Err(e) = self.content(&s, &b, sm.len()) {
                self.bad(rel, format!("{e:#}"));
            }
        }
        Ok(())
    }

    /// Hashes the source and the decrypted copy; errors describe the difference.
    fn content(&self, s: &Path, b: &Path, size: u64) -> anyhow::Result<()> {
        let geo = &self.vol.geo;
        let bf = open_source(b)?;
        let blen = content::backing_len(&bf)?;
        if geo.plain_size(blen) != Some(size) {
            bail!("size {size} in the source, backing length {blen} in the volume");
        }
        if size == 0 {
            return Ok(());
        }
        let hdr = content::read_header(&bf, geo).map_err(|e| anyhow!("bad header: {e}"))?;
        let key = self
            .vol
            .open_header(&hdr)
            .map_err(|e| anyhow!("cannot open the header: {e}"))?;
        let sf = open_source(s)?;
        let mut hs = ring::digest::Context::new(&ring::digest::SHA256);
        let mut hb = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut off = 0u64;
        while off < size {
            let n = sys::pread_full(&sf, &mut buf, off)?;
            hs.update(&buf[..n]);
            let plain = content::read(&bf, Some(&key), geo, off, CHUNK as u32)
                .map_err(|r| anyhow!("{:#}", content_error(r)))?;
            hb.update(&plain);
            self.bar.inc(n as u64);
            if n == 0 || plain.is_empty() {
                break;
            }
            off += CHUNK as u64;
        }
        if hs.finish().as_ref() != hb.finish().as_ref() {
            bail!("content differs (SHA-256)");
        }
        Ok(())
    }
}

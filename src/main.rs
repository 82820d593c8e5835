//! `kmsfs`: mount a directory whose files are stored encrypted, with data keys from a KMS.
//!
//! This file only parses the command line and dispatches; each subcommand lives in
//! its own module of the `kmsfs` library (src/lib.rs).

use clap::{CommandFactory, Parser, Subcommand};
use kmsfs::cli::{fs as fs_cli, kms as kms_cli, mount, mount_helper};
use kmsfs::tools::{encrypt, fsck, rewrap};

/// Transparent file encryption with envelope encryption and a KMS.
#[derive(Debug, Parser)]
#[command(name = "kmsfs", version, about, long_about = None, after_help = EX_MAIN)]
struct Cli {
    /// The KMS: a key-store directory (embedded KMS) or an http(s):// URL.
    /// Default: $KMSFS_KMS, else $XDG_DATA_HOME/kmsfs/kms (~/.local/share/kmsfs/kms).
    #[arg(long, global = true, env = "KMSFS_KMS", value_name = "PATH|URL")]
    kms: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make BACKING a new encrypted volume (creates its CMK unless --key is given).
    #[command(after_help = EX_INIT)]
    Init(fs_cli::InitArgs),
    /// Mount the volume BACKING on MOUNTPOINT (initialising BACKING if it is new).
    #[command(after_help = EX_MOUNT)]
    Mount(mount::MountArgs),
    /// Unmount MOUNTPOINT, waiting for the daemon to flush and exit.
    #[command(after_help = EX_UMOUNT)]
    Umount(fs_cli::UmountArgs),
    /// Show a mounted volume's DEK cache and KMS counters.
    #[command(after_help = EX_STATS)]
    Stats(fs_cli::StatsArgs),
    /// Verify a volume offline: the config MAC, every file header and every block
    /// (with the KMS). Reports each problem with file and block; never repairs.
    /// Exit status: 0 clean, 2 warnings only, 4 errors, 1 cannot check.
    #[command(after_help = EX_FSCK)]
    Fsck(fsck::FsckArgs),
    /// Re-wrap every file's data key (and the config's) under the CMK's newest version
    /// or under another CMK (--to-key), without rewriting file content. Safe while
    /// mounted; rerun after an interruption to finish.
    Rewrap(rewrap::RewrapArgs),
    /// Encrypt an existing directory tree into a new volume (offline), then verify it.
    /// Exit status: 0 verified, 2 the volume differs from the source, 1 error.
    #[command(after_help = EX_ENCRYPT)]
    Encrypt(encrypt::EncryptArgs),
    /// Run a KMS action, `tccli kms` style: `kmsfs kms CreateKey --Alias test`;
    /// `kmsfs kms serve --listen ADDR` runs the KMS as an HTTP server.
    #[command(disable_help_flag = true, after_help = EX_KMS)]
    Kms {
        /// The action and its `--Param value` pairs.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = EX_COMPLETIONS)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per subcommand into --dir.
    #[command(after_help = EX_MAN)]
    Man {
        /// Write kmsfs.1 and kmsfs-SUBCOMMAND.1 into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

const EX_MAIN: &str = "\
EXAMPLES:
  kmsfs init /srv/enc                          make a volume (and its CMK)
  kmsfs mount /srv/enc /mnt/plain              mount it; returns once it is live
  kmsfs encrypt /data /srv/enc                 encrypt an existing tree into a new volume
  kmsfs umount /mnt/plain                      unmount and wait for the daemon to flush
  kmsfs --kms https://kms.example:8443 mount /srv/enc /mnt/plain
  kmsfs help mount                             the options of one command";
const EX_INIT: &str = "\
EXAMPLES:
  kmsfs init /srv/enc
  kmsfs init /srv/enc --key alias/backups --dek-policy per-file
  kmsfs --kms /var/lib/kmsfs/kms init /srv/enc";
const EX_MOUNT: &str = "\
EXAMPLES:
  kmsfs mount /srv/enc /mnt/plain
  kmsfs mount /srv/enc /mnt/plain -o allow_other,noexec --log-file /var/log/kmsfs.log
  kmsfs mount -f /srv/enc /mnt/plain           stay in the foreground, log to stderr
  mount -t fuse.kmsfs /srv/enc /mnt/plain -o kms=/var/lib/kmsfs/kms
                                               the same through mount(8) (needs
                                               scripts/install-mount-helper.sh)";
const EX_UMOUNT: &str = "\
EXAMPLES:
  kmsfs umount /mnt/plain";
const EX_STATS: &str = "\
EXAMPLES:
  kmsfs stats /mnt/plain
  kmsfs stats /mnt/plain --json | jq .kms_calls";
const EX_FSCK: &str = "\
EXAMPLES:
  kmsfs fsck /srv/enc                          check an unmounted volume
  kmsfs fsck /srv/enc --json
  kmsfs fsck /srv/enc --repair                 remove orphans, rename lost long names";
const EX_ENCRYPT: &str = "\
EXAMPLES:
  kmsfs encrypt /data /srv/enc                 copy, then verify; /data is kept
  kmsfs encrypt /data /srv/enc --json          summary as JSON
  kmsfs encrypt /data /srv/enc --delete-source-after-verify
                                               delete /data only if verification is clean
  kmsfs encrypt /data /srv/enc --key alias/archive --dek-policy per-file";
const EX_KMS: &str = "\
EXAMPLES:
  kmsfs kms CreateKey --Alias backups
  kmsfs kms ListKeys
  kmsfs kms DisableKey --KeyId 0b5b…
  kmsfs kms serve --listen 127.0.0.1:8443";
const EX_COMPLETIONS: &str = "\
EXAMPLES:
  kmsfs completions bash > /etc/bash_completion.d/kmsfs
  kmsfs completions zsh > \"${fpath[1]}/_kmsfs\"
  kmsfs completions fish > ~/.config/fish/completions/kmsfs.fish";
const EX_MAN: &str = "\
EXAMPLES:
  kmsfs man | man -l -
  kmsfs man --dir /usr/local/share/man/man1 && mandb";

/// Writes a completion script or the man pages.
fn generate(cmd: &Command) -> anyhow::Result<i32> {
    let mut c = Cli::command();
    match cmd {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut c, "kmsfs", &mut std::io::stdout());
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(c, dir)?;
            eprintln!("kmsfs: wrote the man pages into {}", dir.display());
        }
        Command::Man { dir: None } => clap_mangen::Man::new(c).render(&mut std::io::stdout())?,
        _ => {}
    }
    Ok(0)
}

fn main() {
    fs_cli::ensure_home();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.first().is_some_and(mount_helper::called_as_helper) {
        std::process::exit(helper_main(&argv[1..]));
    }
    exit_with(dispatch(Cli::parse()), 1);
}

/// `mount.fuse.kmsfs SOURCE TARGET -o OPTS`, as mount(8) calls it.
fn helper_main(args: &[std::ffi::OsString]) -> i32 {
    let call = match mount_helper::translate(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mount.fuse.kmsfs: {e:#}");
            return 1;
        }
    };
    let (args, verbose) = match call {
        mount_helper::HelperCall::Mount { args, verbose } => (args, verbose),
        mount_helper::HelperCall::Fake => return 0,
        mount_helper::HelperCall::Remount { target, opts } => {
            return match mount_helper::remount(std::path::Path::new(&target), &opts) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("mount.fuse.kmsfs: {e:#}");
                    mount_helper::EXIT_MOUNT_FAILURE
                }
            };
        }
    };
    if verbose {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        eprintln!("mount.fuse.kmsfs: running {}", shown.join(" "));
    }
    match Cli::try_parse_from(&args) {
        Ok(cli) => exit_with(dispatch(cli), mount_helper::EXIT_MOUNT_FAILURE),
        Err(e) => {
            eprintln!("mount.fuse.kmsfs: {e}");
            1
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Init(a) => fs_cli::init(cli.kms.as_deref(), a),
        Command::Mount(a) => mount::mount(cli.kms.as_deref(), a),
        Command::Umount(a) => fs_cli::umount(a),
        Command::Stats(a) => fs_cli::stats(a),
        Command::Fsck(a) => fsck::run(cli.kms.as_deref(), a),
        Command::Rewrap(a) => rewrap::run(cli.kms.as_deref(), a),
        Command::Encrypt(a) => encrypt::run(cli.kms.as_deref(), a),
        Command::Kms { args } => kms_cli::run(cli.kms.as_deref(), &args),
        c @ (Command::Completions { .. } | Command::Man { .. }) => generate(&c),
    }
}

/// Exits with the command's status, or prints its error and exits with `on_error`.
fn exit_with(result: anyhow::Result<i32>, on_error: i32) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kmsfs: {e:#}");
            std::process::exit(on_error);
        }
    }
}

//! `kmsfs`: mount a directory whose files are stored encrypted, with data keys from a KMS.
//!
//! This file only parses the command line, sets up logging and dispatches; each
//! subcommand lives in its own module.

mod aead;
mod dek_cache;
mod encrypt;
mod format;
mod fs_cli;
mod fs_error;
mod fsck;
mod fuse;
mod kms_cli;
mod mount_helper;
mod serve_cli;
mod volume;

use clap::{Parser, Subcommand};

/// Transparent file encryption with envelope encryption and a KMS.
#[derive(Debug, Parser)]
#[command(name = "kmsfs", version, about, long_about = None)]
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
    Init(fs_cli::InitArgs),
    /// Mount the volume BACKING on MOUNTPOINT (initialising BACKING if it is new).
    Mount(fs_cli::MountArgs),
    /// Unmount MOUNTPOINT, waiting for the daemon to flush.
    Umount(fs_cli::UmountArgs),
    /// Show a mounted volume's DEK cache and KMS counters.
    Stats(fs_cli::StatsArgs),
    /// Verify a volume offline: the config MAC, every file header and every block
    /// (with the KMS). Reports each problem with file and block; never repairs.
    /// Exit status: 0 clean, 2 warnings only, 4 errors, 1 cannot check.
    Fsck(fsck::FsckArgs),
    /// Encrypt an existing directory tree into a new volume (offline), then verify it.
    /// Exit status: 0 verified, 2 the volume differs from the source, 1 error.
    Encrypt(encrypt::EncryptArgs),
    /// Run a KMS action, `tccli kms` style: `kmsfs kms CreateKey --Alias test`;
    /// `kmsfs kms serve --listen ADDR` runs the KMS as an HTTP server.
    #[command(disable_help_flag = true)]
    Kms {
        /// The action and its `--Param value` pairs.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

fn main() {
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
    let mount_helper::HelperCall::Mount { args, verbose } = call else {
        return 0;
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
        Command::Mount(a) => fs_cli::mount(cli.kms.as_deref(), a),
        Command::Umount(a) => fs_cli::umount(a),
        Command::Stats(a) => fs_cli::stats(a),
        Command::Fsck(a) => fsck::run(cli.kms.as_deref(), a),
        Command::Encrypt(a) => encrypt::run(cli.kms.as_deref(), a),
        Command::Kms { args } => kms_cli::run(cli.kms.as_deref(), &args),
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

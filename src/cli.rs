//! Command-line definitions (clap) and the process entry; no logic.
//!
//! Invoked as `fuse-overlayfs`/`overlayfs` or `unionfs`/`unionfs-fuse`, the
//! binary takes those tools' command lines unchanged (see `opts`).
use crate::mount::{Plan, run};
use crate::opts::{self, MountRequest, OptError};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::Path;

#[derive(Debug, Parser)]
#[command(name = "fimfs", version, about = "A union filesystem for FlatImage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount LOWERS (top-most first, `:`-separated) with an optional UPPER
    /// at MOUNTPOINT. Without UPPER the view is read-only.
    Mount {
        /// Stay in the foreground, logging to stderr.
        #[arg(short = 'f')]
        foreground: bool,
        /// Options, comma-separated or repeated: workdir=DIR, threads=N,
        /// allow_other, default_permissions, ro, debug, nonempty,
        /// timeout=SECONDS, squash_to_uid=N, squash_to_gid=N,
        /// lowerdir=TOP:...:BOTTOM, upperdir=DIR.
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<OsString>,
        /// [LOWERS] [UPPER] MOUNTPOINT
        #[arg(value_name = "ARGS", num_args = 1..=3, required = true)]
        args: Vec<OsString>,
    },
}

fn init_logging(debug: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => tracing_subscriber::EnvFilter::new(v),
        _ if debug => tracing_subscriber::EnvFilter::new("debug"),
        _ => tracing_subscriber::EnvFilter::new("info,fuser=warn"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn mount(req: Result<MountRequest, OptError>) -> i32 {
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fimfs: {e}");
            return 2;
        }
    };
    init_logging(req.opts.debug);
    match Plan::check(req) {
        Ok(plan) => run(plan),
        Err(e) => {
            eprintln!("fimfs: {e}");
            1
        }
    }
}

/// The process entry: returns the exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    match name.as_str() {
        "fuse-overlayfs" | "overlayfs" => return mount(opts::fuse_overlayfs_request(rest)),
        "unionfs" | "unionfs-fuse" => return mount(opts::unionfs_request(rest)),
        _ => {}
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Mount {
            foreground,
            options,
            args,
        } => mount(opts::mount_request(&args, &options, foreground)),
    }
}

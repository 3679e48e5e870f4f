//! Command-line definitions (clap) and the process entry; no logic.
//!
//! Invoked as `fuse-overlayfs`/`overlayfs`, `unionfs`/`unionfs-fuse` or `dwarfs`, the
//! binary takes those tools' command lines unchanged (see `opts`); invoked
//! as `fimfs SOURCE MOUNTPOINT -o OPTS` (what `mount.fuse3` runs for
//! `mount -t fuse.fimfs` and fstab), it mounts.
mod error;
mod install;
pub mod logging;

pub use error::{CliError, InstallError};

use crate::launch::run::{Environment, LAUNCHER_ERROR, RunRequest};
use crate::launch::{Backend, Image, casefold_enabled, overlay_show};
use crate::mount::{Plan, run};
use crate::opts::{self, MountRequest, OptError};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "fimfs",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("FIMFS_GIT_COMMIT"), ")"),
    about = "A union filesystem for FlatImage"
)]
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
        /// Mount options, comma-separated or repeated (listed below).
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<OsString>,
        /// [LOWERS] [UPPER] MOUNTPOINT
        #[arg(value_name = "ARGS", num_args = 1..=3, required = true)]
        args: Vec<OsString>,
    },
    /// Run COMMAND on the merged view of LOWERS and UPPER: on the kernel
    /// overlay through bwrap, or on the fimfs daemon in this process
    /// (FIM_OVERLAY, then the image's overlay byte, then BWRAP; casefold
    /// never uses BWRAP). LOWERS may name directories and DwarFS images.
    /// `fimfs run --image FLATIMAGE UPPER -- COMMAND` (no LOWERS) runs on
    /// the binary's own layers: embedded, then FIM_LAYERS, then
    /// `.NAME.data/layers/` next to it. Exits with the command's status,
    /// 128+N when signal N killed it, 125 on the launcher's own errors.
    Run {
        /// The FlatImage binary whose reserved bytes choose the backend;
        /// without LOWERS, also the layers.
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
        /// Where each run's `<PID>/` scratch directory goes (on the upper's
        /// filesystem); default: `work/` next to UPPER.
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// Where the view appears in the sandbox: `/` (the layers are a
        /// root filesystem), or a path under the host's `/`.
        #[arg(long, value_name = "PATH", default_value = "/")]
        target: PathBuf,
        /// Case-insensitive names (served by the daemon).
        #[arg(long)]
        casefold: bool,
        /// Print the backend, why, and the bwrap command line; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// One more bwrap argument (repeatable), after the standard mounts.
        #[arg(long = "bwrap-arg", value_name = "ARG", allow_hyphen_values = true)]
        bwrap_args: Vec<OsString>,
        /// [LOWERS] UPPER: LOWERS `:`-separated, top-most first
        /// (directories, images, FILE@OFFSET[+SIZE]); omitted only with
        /// --image.
        #[arg(value_name = "ARGS", num_args = 1..=2, required = true)]
        args: Vec<OsString>,
        #[arg(value_name = "COMMAND", last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Show or set the overlay byte of a FlatImage binary.
    Overlay {
        #[command(subcommand)]
        action: OverlayAction,
    },
    /// Show or set the casefold byte of a FlatImage binary.
    Casefold {
        action: CasefoldAction,
        #[arg(long, value_name = "FILE", required = true)]
        image: PathBuf,
    },
    /// List what UPPER changes, one line per path: A added, M modified
    /// (exists below too), D deleted (whiteout), O opaque directory.
    Diff {
        /// The lowers (`:`-separated, top-most first), to tell A from M
        /// exactly; without them, M means "carries a copy-up mark".
        #[arg(long, value_name = "LOWERS")]
        lowers: Option<OsString>,
        /// A JSON array of {"status","path","type"} objects.
        #[arg(long)]
        json: bool,
        #[arg(value_name = "UPPER")]
        upper: PathBuf,
    },
    /// Write UPPER as a layer whose deletions are plain files: whiteouts
    /// become empty `.wh.NAME` files, opaque directories get an empty
    /// `.wh..wh..opq`. To OUTDIR (absent or empty), or with --tar to FILE.
    Export {
        /// Write a tar archive (absent or empty FILE) instead of a directory.
        #[arg(long, value_name = "FILE", conflicts_with = "outdir")]
        tar: Option<PathBuf>,
        #[arg(value_name = "UPPER")]
        upper: PathBuf,
        #[arg(value_name = "OUTDIR", required_unless_present = "tar")]
        outdir: Option<PathBuf>,
    },
    /// Print which layer of a fimfs mount serves each PATH (`upper`, or
    /// `lower N DIR`), from the read-only xattr `user.fimfs.layer`.
    Which {
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Install this binary as PREFIX/bin/fimfs, with its man pages
    /// (share/man/man1) and bash, zsh and fish completions (share/).
    Install {
        #[arg(long, value_name = "DIR", default_value = "/usr/local")]
        prefix: PathBuf,
    },
    /// Internal (`-o auto_unmount`): waits for end of file on stdin, then
    /// detaches MOUNTPOINT if it still is the FUSE mount MOUNT_ID.
    #[command(hide = true)]
    AutoUnmountWatch { mountpoint: PathBuf, mount_id: u32 },
}

#[derive(Debug, Subcommand)]
enum OverlayAction {
    /// Print the effective backend (after FIM_OVERLAY and casefold).
    Show {
        #[arg(long, value_name = "FILE", required = true)]
        image: PathBuf,
    },
    /// Write the overlay byte: bwrap, overlayfs or unionfs (any case).
    Set {
        #[arg(value_name = "BACKEND")]
        value: OsString,
        #[arg(long, value_name = "FILE", required = true)]
        image: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CasefoldAction {
    Show,
    On,
    Off,
}

/// The clap definitions, with the `-o` list of `fimfs mount --help` (and
/// of the man page) taken from the table the parser uses.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("mount", |m| m.after_help(opts::table::help()))
}

fn init_logging(debug: bool) {
    logging::init(debug, "info,fuser=warn");
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
    match Plan::check(req).and_then(run) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fimfs: {e}");
            1
        }
    }
}

fn split_lowers(lowers: &OsString) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    lowers
        .as_bytes()
        .split(|&b| b == b':')
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
        .collect()
}

/// Opens the image read-only and says whether casefold is on for it
/// (`FIM_CASEFOLD=1` or its casefold byte).
fn image_and_casefold(image: &Path) -> Result<(Image, bool), CliError> {
    let img = Image::open(image)?;
    let env = std::env::var_os("FIM_CASEFOLD");
    let on = casefold_enabled(false, env.as_deref(), Some(img.casefold_byte()));
    Ok((img, on))
}

fn overlay(action: OverlayAction) -> Result<(), CliError> {
    match action {
        OverlayAction::Show { image } => {
            let (img, casefold) = image_and_casefold(&image)?;
            let env = std::env::var_os("FIM_OVERLAY");
            let shown = overlay_show(env.as_deref(), Some(img.overlay_byte()), casefold);
            println!("{shown}");
            Ok(())
        }
        OverlayAction::Set { value, image } => {
            let backend = Backend::parse_setting(&value).map_err(CliError::Backend)?;
            let mut img = Image::open_rw(&image)?;
            Ok(img.set_overlay(backend)?)
        }
    }
}

fn casefold(action: CasefoldAction, image: PathBuf) -> Result<(), CliError> {
    match action {
        CasefoldAction::Show => {
            let (_, on) = image_and_casefold(&image)?;
            println!("{}", if on { "ON" } else { "OFF" });
            Ok(())
        }
        CasefoldAction::On | CasefoldAction::Off => {
            let mut img = Image::open_rw(&image)?;
            Ok(img.set_casefold(matches!(action, CasefoldAction::On))?)
        }
    }
}

fn diff(lowers: Option<OsString>, json: bool, upper: PathBuf) -> Result<(), CliError> {
    use crate::inspect::diff;
    let lowers = lowers.as_ref().map(split_lowers);
    let lines = diff::diff(&upper, lowers.as_deref()).map_err(CliError::Inspect)?;
    let out = if json {
        diff::render_json(&lines)
    } else {
        diff::render_text(&lines)
    };
    print!("{out}");
    Ok(())
}

fn export(tar: Option<PathBuf>, upper: PathBuf, outdir: Option<PathBuf>) -> Result<(), CliError> {
    use crate::inspect::export::{Target, export};
    let target = match (tar, outdir) {
        (Some(t), _) => Target::Tar(t),
        (None, Some(d)) => Target::Dir(d),
        (None, None) => return Err(CliError::NoExportTarget),
    };
    export(&upper, &target, &mut |w| eprintln!("fimfs: warning: {w}")).map_err(CliError::Inspect)
}

/// Prints `PATH: LAYER` for each path; 1 when any of them failed.
fn which(paths: Vec<PathBuf>) -> i32 {
    let mut code = 0;
    for p in paths {
        match crate::inspect::which::which(&p) {
            Ok(layer) => println!("{}: {layer}", p.display()),
            Err(e) => {
                eprintln!("fimfs: {e}");
                code = 1;
            }
        }
    }
    code
}

fn status(res: Result<(), CliError>) -> i32 {
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fimfs: {e}");
            1
        }
    }
}

/// The forms that are not clap's: the drop-in names (argv[0]) and
/// `mount.fuse3`'s `fimfs SOURCE MOUNTPOINT -o OPTS`.
fn other_forms(args: &[OsString], cmd: &clap::Command) -> Option<i32> {
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    match name.as_str() {
        "fuse-overlayfs" | "overlayfs" => return Some(mount(opts::fuse_overlayfs_request(rest))),
        "dwarfs" => return Some(mount(opts::dwarfs_request(rest))),
        "unionfs" | "unionfs-fuse" => return Some(mount(opts::unionfs_request(rest))),
        _ => {}
    }
    let subcommand = |a: &OsString| {
        cmd.get_subcommands()
            .any(|s| a == s.get_name() || s.get_all_aliases().any(|n| a == n))
            || a == "help"
    };
    if rest.first().is_some_and(subcommand) {
        return None;
    }
    opts::source_form_request(rest).map(mount)
}

/// The process entry: returns the exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cmd = command();
    if let Some(code) = other_forms(&args, &cmd) {
        return code;
    }
    let parsed = cmd
        .clone()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => dispatch(cli.command, &cmd),
        Err(e) => {
            let _ = e.print();
            let launching = args.get(1).is_some_and(|a| a == "run");
            match (e.use_stderr(), launching) {
                (false, _) => 0,
                (true, true) => LAUNCHER_ERROR,
                (true, false) => 2,
            }
        }
    }
}

fn dispatch(command: Command, cmd: &clap::Command) -> i32 {
    match command {
        Command::Mount {
            foreground,
            options,
            args,
        } => mount(opts::mount_request(&args, &options, foreground)),
        Command::Run {
            image,
            workdir,
            target,
            casefold,
            dry_run,
            bwrap_args,
            args,
            command,
        } => {
            // The launcher speaks in `fimfs:` lines; the daemon inside it
            // only logs what goes wrong.
            logging::init(false, "warn,fuser=error");
            let (lowers, upper) = match args.as_slice() {
                [lowers, upper] => (Some(split_lowers(lowers)), PathBuf::from(upper)),
                [upper] => (None, PathBuf::from(upper)),
                _ => (None, PathBuf::new()),
            };
            let req = RunRequest {
                image,
                workdir,
                target,
                casefold,
                dry_run,
                bwrap_args,
                lowers,
                upper,
                command,
            };
            crate::launch::run::run(req, &Environment::from_process())
        }
        Command::Overlay { action } => status(overlay(action)),
        Command::Casefold { action, image } => status(casefold(action, image)),
        Command::Diff {
            lowers,
            json,
            upper,
        } => status(diff(lowers, json, upper)),
        Command::Export { tar, upper, outdir } => status(export(tar, upper, outdir)),
        Command::Which { paths } => which(paths),
        Command::Install { prefix } => {
            status(install::install(cmd, &prefix).map_err(CliError::from))
        }
        Command::AutoUnmountWatch {
            mountpoint,
            mount_id,
        } => {
            crate::host::mountpoint::unmount_when_closed(std::io::stdin(), &mountpoint, mount_id);
            0
        }
    }
}

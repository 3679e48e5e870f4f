//! fimfs vs the kernel overlay, in one process run, over generated trees:
//! the 5-lower tree ([`tree`]) and smaller fixtures ([`fixtures`]: a root
//! filesystem, a 50,000-entry directory, 20 lowers, a source tarball), and
//! a cached debootstrap root with `.debs` to install ([`debroot`]).
//! Every workload is a criterion group with a `kernel` and a `fimfs`
//! function; afterwards a `workload | kernel | fimfs | ratio | target` table
//! is printed and written to `target/fimfs-bench-report.md`.
//!
//! Both sides run the workload as `sh -c CMD` inside bwrap, exactly as
//! FlatImage does: the kernel side with `--overlay-src … --overlay`/
//! `--ro-overlay` (so bwrap's start-up and the overlay mount are part of the
//! measured time), the fimfs side with `--bind FIMFS_MNT MNT` over a fimfs
//! daemon that was mounted before the timed part. Resets (fresh upper,
//! remount, dropping caches) happen outside the timed part (`iter_custom`).
//!
//! With `FIMFS_BENCH_PEERS=1` every workload also runs on fuse-overlayfs and
//! unionfs-fuse, mounted and entered like fimfs, timed by a plain loop (no
//! criterion: these are long), and a table of ratios to the kernel overlay
//! goes to `target/fimfs-bench-peers.md`.
//!
//! See `benches/README.md` for how to run it and read the output.

mod catalogue;
#[path = "../common/mod.rs"]
mod common;
mod debroot;
mod fixtures;
mod report;
mod runner;
mod stats;
mod sys;
mod tree;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use criterion::Criterion;

use catalogue::{Side, Union, specs};
use common::config::{Args, env_flag, env_num};
use common::mounts::{Daemon, Flavor};
use fixtures::{Deep, RootFs, SrcTar, Wide};
use runner::run_all;
use sys::Launcher;
use tree::Tree;

/// argv[1] that turns the bench binary into a workload helper (run inside
/// the sandbox, see [`helper`]).
const HELPER: &str = "--fimfs-bench-helper";
/// Files the create/rename/delete workload goes through.
const CRD_COUNT: usize = 5000;
/// Files the two `touch` workloads create.
const TOUCH_COUNT: usize = 1000;
/// Entries of the wide directory.
const WIDE_ENTRIES: usize = 50_000;

// ---------------------------------------------------------------------------
// Configuration

struct Config {
    full: bool,
    samples: usize,
    warm_up: Duration,
    measure: Duration,
    big_mib: u64,
    write_mib: u64,
    base: PathBuf,
    keep: bool,
    timeout: Duration,
    mount_opts: Option<String>,
    require_fimfs: bool,
    peers: bool,
    peers_runs: usize,
    /// Size of the fresh ext4 the run lives on (0: none, the run lives in
    /// `base` directly); see `sys::mount_scratch_fs`.
    scratch_gib: u64,
    /// `FIMFS_BENCH_BASELINE` is set: run the baseline side too.
    baseline: bool,
}

impl Config {
    /// ` -o OPTS` when fimfs is mounted with extra options, for the reports.
    fn opts_suffix(&self) -> String {
        self.mount_opts
            .as_ref()
            .map(|o| format!(" -o {o}"))
            .unwrap_or_default()
    }

    fn from_env() -> Config {
        let full = env_flag("FIMFS_BENCH_FULL");
        let (samples, warm, measure) = if full {
            (30, 3.0, 15.0)
        } else {
            (10, 1.0, 3.0)
        };
        Config {
            full,
            samples,
            warm_up: Duration::from_secs_f64(warm),
            measure: Duration::from_secs_f64(measure),
            big_mib: env_num("fimfs-bench", "FIMFS_BENCH_BIG_MIB", 256u64).max(1),
            write_mib: env_num("fimfs-bench", "FIMFS_BENCH_WRITE_MIB", 1024u64).max(1),
            base: env::var_os("FIMFS_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp/fimfs-bench")),
            keep: env_flag("FIMFS_BENCH_KEEP"),
            timeout: Duration::from_secs(
                env_num("fimfs-bench", "FIMFS_BENCH_TIMEOUT", 300u64).max(1),
            ),
            mount_opts: env::var("FIMFS_BENCH_MOUNT_OPTS")
                .ok()
                .filter(|s| !s.is_empty()),
            require_fimfs: env_flag("FIMFS_BENCH_REQUIRE_FIMFS"),
            peers: env_flag("FIMFS_BENCH_PEERS"),
            peers_runs: env_num(
                "fimfs-bench",
                "FIMFS_BENCH_PEERS_RUNS",
                if full { 10 } else { 3 },
            )
            .max(1),
            scratch_gib: env_num("fimfs-bench", "FIMFS_BENCH_SCRATCH_GIB", 12u64),
            baseline: common::config::baseline_bin().is_some(),
        }
    }
}

// ---------------------------------------------------------------------------
// The benchmark environment

// The benchmark environment

struct Bench {
    cfg: Config,
    run: PathBuf,
    /// Where every workload sees the union (inside its sandbox), unless the
    /// union is its `/`.
    mnt: PathBuf,
    launcher: Launcher,
    tree: Tree,
    rootfs: RootFs,
    wide: Wide,
    deep: Deep,
    src: SrcTar,
    /// The package-install fixture, made (or found in the cache) only when
    /// its workload is selected; `Err`: why that workload is skipped.
    debroot: Option<Result<debroot::DebRoot, String>>,
    exe: PathBuf,
    /// The daemon sides of this run and how to start them, or why they
    /// cannot run at all.
    flavors: BTreeMap<Side, Result<Flavor, String>>,
    /// One daemon per (union, side), created when first needed; at most one
    /// of them is mounted at a time.
    daemons: RefCell<BTreeMap<(Union, Side), Daemon>>,
    /// The fimfs binary as found (the daemon runs a copy of it).
    fimfs_origin: String,
    /// The baseline binary as found (`FIMFS_BENCH_BASELINE`), if any.
    baseline_origin: Option<String>,
    /// Timed durations per (group, side), warm-up iterations included.
    measured: RefCell<BTreeMap<(String, Side), Vec<Duration>>>,
    /// Daemon CPU time per timed iteration, for `Spec::cpu` workloads.
    cpu: RefCell<BTreeMap<(String, Side), Vec<Duration>>>,
    /// fimfs' request counts by kind for one run of a `Spec::stats`
    /// workload, per group, or why there are none.
    requests: RefCell<BTreeMap<String, Result<stats::Counts, String>>>,
    /// Failed non-kernel runs per (group, side): (count, first error).
    failures: RefCell<BTreeMap<(String, Side), (usize, String)>>,
    started: SystemTime,
}

// ---------------------------------------------------------------------------
// Helper mode: workloads that would otherwise be dominated by fork/exec.

fn helper(args: &[String]) -> ExitCode {
    let num = |n: &str| {
        n.parse::<usize>()
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let res = match args {
        [op, dir, n] if op == "crd" => num(n).and_then(|n| create_rename_delete(Path::new(dir), n)),
        [op, root, list] if op == "stat" => stat_list(Path::new(root), Path::new(list)),
        _ => Err(std::io::Error::other(format!(
            "bad helper arguments {args:?}"
        ))),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fimfs-bench helper: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Creates `n` one-byte files in `dir`, renames each, then deletes them all.
fn create_rename_delete(dir: &Path, n: usize) -> std::io::Result<()> {
    for i in 0..n {
        fs::write(dir.join(format!("c{i}")), b"x")?;
    }
    for i in 0..n {
        fs::rename(dir.join(format!("c{i}")), dir.join(format!("r{i}")))?;
    }
    for i in 0..n {
        fs::remove_file(dir.join(format!("r{i}")))?;
    }
    Ok(())
}

/// `lstat`s `root/LINE` for every line of `list`; prints the count and the
/// sum of the sizes.
fn stat_list(root: &Path, list: &Path) -> std::io::Result<()> {
    let text = fs::read_to_string(list)?;
    let (mut n, mut bytes) = (0u64, 0u64);
    for rel in text.lines().filter(|l| !l.is_empty()) {
        let m = fs::symlink_metadata(root.join(rel))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{rel}: {e}")))?;
        n += 1;
        bytes += m.len();
    }
    println!("{n} {bytes}");
    Ok(())
}

// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let argv: Vec<String> = env::args().collect();
    if argv.get(1).map(String::as_str) == Some(HELPER) {
        return helper(&argv[2..]);
    }
    let args = Args::parse(&argv[1..]);
    if !args.bench && !args.list && !env_flag("FIMFS_BENCH_IN_TEST") {
        println!(
            "union bench: not run outside `cargo bench` (needs root, FUSE and minutes); \
             set FIMFS_BENCH_IN_TEST=1 to run every workload once"
        );
        return ExitCode::SUCCESS;
    }
    let cfg = Config::from_env();
    let mut c = Criterion::default()
        .sample_size(cfg.samples)
        .warm_up_time(cfg.warm_up)
        .measurement_time(cfg.measure)
        .configure_from_args();

    if args.list {
        for spec in specs(&cfg) {
            let mut group = c.benchmark_group(spec.group.as_str());
            for side in Side::criterion(cfg.baseline) {
                group.bench_function(side.name(), |b| b.iter(|| ()));
            }
            group.finish();
        }
        return ExitCode::SUCCESS;
    }
    if !sys::is_root() {
        eprintln!("fimfs-bench: must run as root (overlay mounts, FUSE, drop_caches)");
        return ExitCode::FAILURE;
    }
    match run_all(&mut c, cfg, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fimfs-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! fimfs vs the kernel overlay, in one process run, over generated trees:
//! the 5-lower tree ([`tree`]) and smaller fixtures ([`fixtures`]: a root
//! filesystem, a 50,000-entry directory, 20 lowers, a source tarball).
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

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod sys;
mod tree;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, SamplingMode};

use common::{find_fimfs, target_dir};
use fixtures::{Deep, RootFs, SrcTar, Wide};
use sys::{Daemon, Flavor, Launcher};
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
// Sides, unions, workloads

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    Kernel,
    Fimfs,
    FuseOverlayfs,
    UnionfsFuse,
}

impl Side {
    /// The sides criterion measures.
    const CRITERION: [Side; 2] = [Side::Kernel, Side::Fimfs];
    /// The sides only the peers mode measures, with a plain loop.
    const PEERS: [Side; 2] = [Side::FuseOverlayfs, Side::UnionfsFuse];

    fn name(self) -> &'static str {
        match self {
            Side::Kernel => "kernel",
            Side::Fimfs => "fimfs",
            Side::FuseOverlayfs => "fuse-overlayfs",
            Side::UnionfsFuse => "unionfs-fuse",
        }
    }
}

/// The lower sets; each daemon side mounts each one separately.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Union {
    /// The 5-lower tree.
    Main,
    /// The root filesystem (2 lowers), used as `/`.
    Root,
    /// The 50,000-entry directory (2 lowers).
    Wide,
    /// 20 lowers, files only in the bottom one.
    Deep,
}

impl Union {
    fn name(self) -> &'static str {
        match self {
            Union::Main => "main",
            Union::Root => "root",
            Union::Wide => "wide",
            Union::Deep => "deep",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Read-only mount, caches kept warm between iterations.
    Warm,
    /// Read-only mount, `drop_caches` (and a fresh daemon mount) before each
    /// iteration.
    Cold,
    /// Read-write mount over a fresh, empty upper for each iteration.
    Write,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Id {
    TouchRoot,
    Touch,
    Crd,
    UntarGrep,
    FindWarm,
    LsWarm,
    FindCold,
    LsCold,
    Read,
    Readdir,
    StatDeep,
    AppendSmall,
    AppendBig,
    SeqWrite,
}

/// What a workload is, independent of the generated trees.
struct Spec {
    id: Id,
    /// Criterion group name, also the report's workload name.
    group: String,
    /// The row of the issue's table this measures.
    row: String,
    /// The issue's target for fimfs / kernel (None: not in the table).
    target: Option<f64>,
    union: Union,
    kind: Kind,
    /// The union is the command's `/` (needs `Kind::Write`).
    as_root: bool,
    /// Also record the daemon's CPU time per iteration.
    cpu: bool,
}

/// The workloads, in the order of the issue's table.
fn specs(cfg: &Config) -> Vec<Spec> {
    let big = cfg.big_mib;
    let wmib = cfg.write_mib;
    let wide_k = WIDE_ENTRIES / 1000;
    let deep = fixtures::DEEP_LOWERS;
    let s = |id, group: String, row: String, target, union, kind| Spec {
        id,
        group,
        row,
        target,
        union,
        kind,
        as_root: id == Id::TouchRoot,
        cpu: id == Id::UntarGrep,
    };
    use Kind::*;
    use Union::*;
    vec![
        s(
            Id::TouchRoot,
            format!("writes_touch_{TOUCH_COUNT}_as_root"),
            format!("{TOUCH_COUNT} × `touch` of new files, union as `/`"),
            Some(1.2),
            Root,
            Write,
        ),
        s(
            Id::Touch,
            format!("writes_create_{TOUCH_COUNT}"),
            format!("{TOUCH_COUNT} × `touch` of new files in a union directory"),
            None,
            Main,
            Write,
        ),
        s(
            Id::Crd,
            format!("writes_create_rename_delete_{CRD_COUNT}"),
            format!("create, rename, delete {CRD_COUNT} files"),
            Some(1.5),
            Main,
            Write,
        ),
        s(
            Id::UntarGrep,
            "writes_untar_grep_6000".into(),
            "untar a 6000-file source tree, then `grep -r` it".into(),
            Some(1.3),
            Main,
            Write,
        ),
        s(
            Id::FindWarm,
            "core_find_warm".into(),
            "`find -type f`, warm".into(),
            Some(1.1),
            Main,
            Warm,
        ),
        s(
            Id::LsWarm,
            "core_ls_lR_warm".into(),
            "`ls -lR`, warm".into(),
            Some(1.1),
            Main,
            Warm,
        ),
        s(
            Id::FindCold,
            "core_find_cold".into(),
            "`find` after dropping caches".into(),
            Some(1.3),
            Main,
            Cold,
        ),
        s(
            Id::LsCold,
            "core_ls_lR_cold".into(),
            "`ls -lR` after dropping caches".into(),
            Some(1.3),
            Main,
            Cold,
        ),
        s(
            Id::Read,
            format!("core_read_{big}m_warm"),
            format!("sequential read of a {big} MiB lower file, warm"),
            Some(1.05),
            Main,
            Warm,
        ),
        s(
            Id::Readdir,
            format!("core_readdir_{wide_k}k_cold"),
            format!("readdir of a {WIDE_ENTRIES}-entry directory, cold"),
            Some(1.3),
            Wide,
            Cold,
        ),
        s(
            Id::StatDeep,
            format!("core_stat_bottom_of_{deep}_cold"),
            format!("stat files found only in the bottom of {deep} lowers, cold"),
            Some(1.3),
            Deep,
            Cold,
        ),
        s(
            Id::AppendSmall,
            format!("writes_append_{}", tree::APP_FILES),
            format!(
                "copy-up by appending 1 byte to {} small lower files",
                tree::APP_FILES
            ),
            Some(1.0),
            Main,
            Write,
        ),
        s(
            Id::AppendBig,
            format!("writes_append_{big}m"),
            format!("copy-up by appending to a {big} MiB lower file"),
            Some(0.3),
            Main,
            Write,
        ),
        s(
            Id::SeqWrite,
            format!("writes_seq_write_{wmib}m"),
            format!("sequential write of a new {wmib} MiB file"),
            Some(1.2),
            Main,
            Write,
        ),
    ]
}

/// A [`Spec`] with its commands, filled in from the generated trees.
struct Workload {
    spec: Spec,
    /// The timed shell command.
    script: String,
    /// Run after `script` (same sandbox) once before benchmarking; the
    /// combined stdout must equal `expect`.
    check: String,
    expect: String,
}

impl Deref for Workload {
    type Target = Spec;
    fn deref(&self) -> &Spec {
        &self.spec
    }
}

// ---------------------------------------------------------------------------
// Configuration

fn env_flag(name: &str) -> bool {
    matches!(
        env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes") | Ok("on")
    )
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("fimfs-bench: ignoring unparsable {name}={v:?}");
            default
        }),
        Err(_) => default,
    }
}

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
            big_mib: env_num("FIMFS_BENCH_BIG_MIB", 256u64).max(1),
            write_mib: env_num("FIMFS_BENCH_WRITE_MIB", 1024u64).max(1),
            base: env::var_os("FIMFS_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp/fimfs-bench")),
            keep: env_flag("FIMFS_BENCH_KEEP"),
            timeout: Duration::from_secs(env_num("FIMFS_BENCH_TIMEOUT", 300u64).max(1)),
            mount_opts: env::var("FIMFS_BENCH_MOUNT_OPTS")
                .ok()
                .filter(|s| !s.is_empty()),
            require_fimfs: env_flag("FIMFS_BENCH_REQUIRE_FIMFS"),
            peers: env_flag("FIMFS_BENCH_PEERS"),
            peers_runs: env_num("FIMFS_BENCH_PEERS_RUNS", if full { 10 } else { 3 }).max(1),
            scratch_gib: env_num("FIMFS_BENCH_SCRATCH_GIB", 12u64),
        }
    }
}

/// The subset of criterion's command line this harness needs to know about
/// before handing it to `Criterion::configure_from_args`.
struct Args {
    bench: bool,
    list: bool,
    /// criterion's `--test`: each benchmark once.
    test: bool,
    exact: bool,
    filter: Option<String>,
}

impl Args {
    fn parse(argv: &[String]) -> Args {
        // criterion options that take a value (see Criterion::configure_from_args).
        const WITH_VALUE: &[&str] = &[
            "-c",
            "--color",
            "--colour",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--format",
            "--profile-time",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let mut a = Args {
            bench: false,
            list: false,
            test: false,
            exact: false,
            filter: None,
        };
        let mut it = argv.iter();
        while let Some(s) = it.next() {
            match s.as_str() {
                "--bench" => a.bench = true,
                "--list" => a.list = true,
                "--test" => a.test = true,
                "--exact" => a.exact = true,
                o if WITH_VALUE.contains(&o) => {
                    it.next();
                }
                o if o.starts_with('-') => {}
                f => {
                    if a.filter.is_none() {
                        a.filter = Some(f.to_string());
                    }
                }
            }
        }
        a
    }

    /// Whether criterion may run the benchmark `id` ("group/function").
    /// Conservative: a filter that looks like a real regex selects all.
    fn may_select(&self, id: &str) -> bool {
        match &self.filter {
            None => true,
            Some(f) if self.exact => id == f,
            Some(f)
                if f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-/ ".contains(&b)) =>
            {
                id.contains(f.as_str())
            }
            Some(_) => true,
        }
    }
}

// ---------------------------------------------------------------------------
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
    exe: PathBuf,
    /// The daemon sides of this run and how to start them, or why they
    /// cannot run at all.
    flavors: BTreeMap<Side, Result<Flavor, String>>,
    /// One daemon per (union, side), created when first needed; at most one
    /// of them is mounted at a time.
    daemons: RefCell<BTreeMap<(Union, Side), Daemon>>,
    /// The fimfs binary as found (the daemon runs a copy of it).
    fimfs_origin: String,
    /// Timed durations per (group, side), warm-up iterations included.
    measured: RefCell<BTreeMap<(String, Side), Vec<Duration>>>,
    /// Daemon CPU time per timed iteration, for `Spec::cpu` workloads.
    cpu: RefCell<BTreeMap<(String, Side), Vec<Duration>>>,
    /// Failed non-kernel runs per (group, side): (count, first error).
    failures: RefCell<BTreeMap<(String, Side), (usize, String)>>,
    started: SystemTime,
}

impl Bench {
    fn setup(cfg: Config) -> Result<Bench, String> {
        let started = SystemTime::now();
        let (_, run) = common::fresh_run_dir(&cfg.base, "FIMFS_BENCH_DIR", "fimfs-bench")?;
        if cfg.scratch_gib > 0 {
            sys::mount_scratch_fs(&run, cfg.scratch_gib).map_err(|e| {
                format!("scratch filesystem (FIMFS_BENCH_SCRATCH_GIB=0 skips it): {e}")
            })?;
        }
        for d in ["mnt", "logs"] {
            fs::create_dir_all(run.join(d))
                .map_err(|e| format!("{}: {e}", run.join(d).display()))?;
        }
        sys::install_signal_cleanup(run.clone(), cfg.keep, "fimfs-bench");
        if let Ok(out) = Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(&run)
            .output()
        {
            let fstype = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if fstype == "tmpfs" || fstype == "ramfs" {
                eprintln!(
                    "fimfs-bench: warning: {} is on {fstype}; the cold-cache workloads mean nothing there",
                    run.display()
                );
            }
        }

        eprint!(
            "fimfs-bench: generating the 5-lower tree in {} ... ",
            run.join("tree").display()
        );
        let _ = std::io::stderr().flush();
        let t0 = Instant::now();
        let tree = tree::generate(&run.join("tree"), cfg.big_mib)
            .map_err(|e| format!("generating the tree: {e}"))?;
        eprintln!(
            "{} merged files ({} stored, {} shadowed), {} dirs, {:.0} MiB, {:.1}s",
            tree.merged_files,
            tree.physical_files,
            tree.shadowed,
            tree.merged_dirs,
            tree.bytes as f64 / (1 << 20) as f64,
            t0.elapsed().as_secs_f64()
        );
        eprint!("fimfs-bench: generating the other fixtures ... ");
        let _ = std::io::stderr().flush();
        let t0 = Instant::now();
        let rootfs = fixtures::rootfs(&run.join("rootfs"))
            .map_err(|e| format!("building the root filesystem: {e}"))?;
        let wide = fixtures::wide(&run.join("wide"), WIDE_ENTRIES)
            .map_err(|e| format!("generating the wide directory: {e}"))?;
        let deep = fixtures::deep(&run.join("deep"), &run.join("deep-list.txt"))
            .map_err(|e| format!("generating the 20 lowers: {e}"))?;
        let src = fixtures::source_tarball(&run.join("src.tar"))
            .map_err(|e| format!("generating the source tarball: {e}"))?;
        eprintln!(
            "rootfs {} files; {} entries; {} lowers × {} files; tarball {} files, {} dirs, {:.0} MiB; {:.1}s",
            rootfs.files,
            wide.entries,
            deep.lowers.len(),
            deep.files,
            src.files,
            src.dirs,
            src.bytes as f64 / (1 << 20) as f64,
            t0.elapsed().as_secs_f64()
        );

        let launcher = Launcher::detect();
        eprintln!("fimfs-bench: sandbox: {}", launcher.describe());
        let mut flavors = BTreeMap::new();
        // Run a private copy: other people rebuilding target/release/fimfs
        // during the run must not change what is being measured.
        let found = find_fimfs("fimfs-bench").and_then(|bin| {
            let pinned = run.join("fimfs");
            fs::copy(&bin, &pinned)
                .map_err(|e| format!("copying {} to {}: {e}", bin.display(), pinned.display()))?;
            Ok((bin, pinned))
        });
        let fimfs_origin = match found {
            Ok((bin, pinned)) => {
                eprintln!(
                    "fimfs-bench: fimfs binary: {} (run from a copy at {})",
                    bin.display(),
                    pinned.display()
                );
                flavors.insert(
                    Side::Fimfs,
                    Ok(Flavor::Fimfs {
                        bin: pinned,
                        opts: cfg.mount_opts.clone(),
                    }),
                );
                bin.display().to_string()
            }
            Err(e) => {
                flavors.insert(Side::Fimfs, Err(e));
                "unavailable".to_string()
            }
        };
        if cfg.peers {
            for (side, prog, flavor) in [
                (Side::FuseOverlayfs, "fuse-overlayfs", Flavor::FuseOverlayfs),
                (Side::UnionfsFuse, "unionfs", Flavor::UnionfsFuse),
            ] {
                let f = if sys::on_path(prog) {
                    Ok(flavor)
                } else {
                    Err(format!(
                        "`{prog}` is not installed (.ci/install-deps installs it)"
                    ))
                };
                flavors.insert(side, f);
            }
        }
        Ok(Bench {
            mnt: run.join("mnt"),
            launcher,
            tree,
            rootfs,
            wide,
            deep,
            src,
            exe: env::current_exe().map_err(|e| e.to_string())?,
            flavors,
            daemons: RefCell::new(BTreeMap::new()),
            fimfs_origin,
            measured: RefCell::new(BTreeMap::new()),
            cpu: RefCell::new(BTreeMap::new()),
            failures: RefCell::new(BTreeMap::new()),
            started,
            run,
            cfg,
        })
    }

    /// Every side of this run: the kernel, then the daemon sides.
    fn sides(&self) -> Vec<Side> {
        std::iter::once(Side::Kernel)
            .chain(self.flavors.keys().copied())
            .collect()
    }

    fn lowers(&self, u: Union) -> &[PathBuf] {
        match u {
            Union::Main => &self.tree.lowers,
            Union::Root => &self.rootfs.lowers,
            Union::Wide => &self.wide.lowers,
            Union::Deep => &self.deep.lowers,
        }
    }

    /// `run/<union>-<side>/`: the side's `upper/` and `work/`, and for a
    /// daemon side its mount point `mnt/`.
    fn side_dir(&self, u: Union, side: Side) -> PathBuf {
        self.run.join(format!("{}-{}", u.name(), side.name()))
    }

    fn workloads(&self) -> Vec<Workload> {
        let m = self.mnt.display();
        let t = &self.tree;
        let bottom = t.bottom().display();
        let big_rel = tree::BIG_REL;
        let exe = self.exe.display();
        specs(&self.cfg)
            .into_iter()
            .map(|spec| {
                let (script, check, expect) = match spec.id {
                    Id::TouchRoot => (
                        format!("for i in $(seq {TOUCH_COUNT}); do touch /tmp/f$i; done"),
                        // Only sh, touch and seq exist in this root.
                        "set -- /tmp/f*; echo $#".into(),
                        format!("{TOUCH_COUNT}\n"),
                    ),
                    Id::Touch => (
                        format!("for i in $(seq {TOUCH_COUNT}); do touch {m}/tmp/f$i; done"),
                        format!("ls {m}/tmp | grep -c '^f'"),
                        format!("{TOUCH_COUNT}\n"),
                    ),
                    Id::Crd => (
                        format!("{exe} {HELPER} crd {m}/crd {CRD_COUNT}"),
                        format!("ls -A {m}/crd | wc -l"),
                        format!("{}\n", t.crd_entries),
                    ),
                    Id::UntarGrep => {
                        let tar = self.src.path.display();
                        let needle = fixtures::NEEDLE;
                        (
                            format!(
                                "mkdir {m}/src && tar -xf {tar} -C {m}/src && \
                                 grep -rF {needle} {m}/src | wc -l"
                            ),
                            format!(
                                "tar -df {tar} -C {m}/src && find {m}/src -type f | wc -l && \
                                 find {m}/src -type d | wc -l"
                            ),
                            format!(
                                "{}\n{}\n{}\n",
                                self.src.needle_lines,
                                self.src.files,
                                self.src.dirs + 1
                            ),
                        )
                    }
                    Id::FindWarm | Id::FindCold => (
                        format!("find {m} -type f | wc -l"),
                        String::new(),
                        format!("{}\n", t.merged_files),
                    ),
                    Id::LsWarm | Id::LsCold => (
                        format!("ls -lR {m} > /dev/null"),
                        format!("ls -lRa {m} | grep -c '^-'"),
                        format!("{}\n", t.merged_files),
                    ),
                    Id::Read => (
                        format!("cat {m}/{big_rel} > /dev/null"),
                        format!("cmp {m}/{big_rel} {bottom}/{big_rel} && wc -c < {m}/{big_rel}"),
                        format!("{}\n", t.big_size),
                    ),
                    Id::Readdir => {
                        let d = fixtures::WIDE_DIR;
                        let n = self.wide.entries + 2;
                        (
                            // -f: no sorting, no stat; `.` and `..` included.
                            format!("ls -f {m}/{d} | wc -l"),
                            format!("ls -f {m}/{d} | sort -u | wc -l"),
                            format!("{n}\n{n}\n"),
                        )
                    }
                    Id::StatDeep => (
                        format!("{exe} {HELPER} stat {m} {}", self.deep.list.display()),
                        String::new(),
                        format!("{} {}\n", self.deep.files, self.deep.bytes),
                    ),
                    Id::AppendSmall => (
                        format!("for f in {m}/app/*; do printf x >> \"$f\"; done"),
                        format!("cat {m}/app/* | wc -c"),
                        format!("{}\n", t.app_bytes + tree::APP_FILES as u64),
                    ),
                    Id::AppendBig => (
                        format!("printf x >> {m}/{big_rel}"),
                        format!("wc -c < {m}/{big_rel}"),
                        format!("{}\n", t.big_size + 1),
                    ),
                    Id::SeqWrite => {
                        let n = self.cfg.write_mib;
                        let bytes = n << 20;
                        (
                            // No conv=fsync: timed up to the page cache, like
                            // every other write workload.
                            format!("dd if=/dev/zero of={m}/tmp/new bs=1M count={n} status=none"),
                            format!("wc -c < {m}/tmp/new && cmp -n {bytes} {m}/tmp/new /dev/zero"),
                            format!("{bytes}\n"),
                        )
                    }
                };
                Workload {
                    spec,
                    script,
                    check,
                    expect,
                }
            })
            .collect()
    }

    /// The sandboxed `sh -c` for one side. `set -e` so that a failing
    /// command inside a loop fails the run (same on every side).
    fn command(&self, side: Side, u: Union, kind: Kind, as_root: bool, script: &str) -> Command {
        let script = if as_root {
            format!("export PATH=/usr/bin:/bin\nset -e\n{script}")
        } else {
            format!("set -e\n{script}")
        };
        let dir = self.side_dir(u, side);
        match side {
            Side::Kernel => {
                let (upper, work) = (dir.join("upper"), dir.join("work"));
                if as_root {
                    self.launcher
                        .kernel_root(self.lowers(u), &upper, &work, &self.mnt, &script)
                } else {
                    let rw = (kind == Kind::Write).then_some((upper.as_path(), work.as_path()));
                    self.launcher.kernel(self.lowers(u), rw, &self.mnt, &script)
                }
            }
            _ => {
                let src = dir.join("mnt");
                if as_root {
                    self.launcher.bind_root(&src, &self.mnt, &script)
                } else {
                    self.launcher.bind(&src, &self.mnt, &script)
                }
            }
        }
    }

    /// The untimed part of an iteration: fresh upper, (re)mount, caches.
    fn prepare(&self, side: Side, u: Union, kind: Kind) -> Result<(), String> {
        let io = |e: std::io::Error| e.to_string();
        let dir = self.side_dir(u, side);
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        let drop_caches = || sys::drop_caches().map_err(|e| format!("drop_caches: {e}"));
        if side == Side::Kernel {
            return match kind {
                Kind::Warm => Ok(()),
                Kind::Cold => drop_caches(),
                Kind::Write => {
                    sys::reset_dir(&upper).map_err(io)?;
                    sys::reset_dir(&work).map_err(io)?;
                    sys::sync();
                    Ok(())
                }
            };
        }
        let flavor = match self.flavors.get(&side) {
            Some(Ok(f)) => f.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(format!("{} is not part of this run", side.name())),
        };
        let mut daemons = self.daemons.borrow_mut();
        for (key, other) in daemons.iter_mut() {
            if *key != (u, side) {
                other.unmount()?;
            }
        }
        let d = match daemons.entry((u, side)) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mnt = dir.join("mnt");
                fs::create_dir_all(&mnt).map_err(io)?;
                let log = self
                    .run
                    .join("logs")
                    .join(format!("{}-{}.log", side.name(), u.name()));
                e.insert(Daemon::new(flavor, mnt, self.lowers(u), log))
            }
        };
        match kind {
            Kind::Warm => {
                if !d.is_ro() {
                    d.mount(None)?;
                }
                Ok(())
            }
            Kind::Cold => {
                d.mount(None)?;
                drop_caches()
            }
            Kind::Write => {
                d.unmount()?;
                sys::reset_dir(&upper).map_err(io)?;
                sys::reset_dir(&work).map_err(io)?;
                d.mount(Some(&upper))?;
                sys::sync();
                Ok(())
            }
        }
    }

    fn unmount_daemons(&self) {
        for d in self.daemons.borrow_mut().values_mut() {
            if let Err(e) = d.unmount() {
                eprintln!("fimfs-bench: {e}");
            }
        }
    }

    fn daemon_cpu(&self, u: Union, side: Side) -> Option<Duration> {
        self.daemons.borrow().get(&(u, side))?.cpu_time()
    }

    /// One untimed run of the workload plus its check; the output must match.
    fn preflight(&self, w: &Workload, side: Side) -> Result<(), String> {
        self.prepare(side, w.union, w.kind)?;
        let script = format!("{}\n{}", w.script, w.check);
        let ran = sys::run(
            self.command(side, w.union, w.kind, w.as_root, &script),
            self.cfg.timeout,
            true,
        )?;
        if !ran.status.success() {
            let out = ran.stdout.trim();
            return Err(format!(
                "check run failed: {}{}",
                ran.describe_failure(),
                if out.is_empty() {
                    String::new()
                } else {
                    // The end: where a failing check (`tar -d`, `cmp`) speaks.
                    let lines: Vec<&str> = out.lines().collect();
                    format!(
                        "; stdout{}: {}",
                        if lines.len() > 2 { " ends" } else { "" },
                        lines[lines.len().saturating_sub(2)..].join("\n")
                    )
                }
            ));
        }
        if !ran.stderr.trim().is_empty() {
            return Err(format!("check run wrote to stderr: {}", ran.brief_stderr()));
        }
        if ran.stdout != w.expect {
            return Err(format!(
                "wrong output: expected {:?}, got {:?}",
                w.expect, ran.stdout
            ));
        }
        Ok(())
    }

    /// Compares what the kernel side and `side` show of the 5-lower tree:
    /// names, types and sizes of every entry and the content of the file
    /// shadowed in all five lowers.
    fn cross_check(&self, side: Side) -> Result<(), String> {
        let m = self.mnt.display();
        let script = format!(
            "cd {m} && find . -printf '%P %y %s\\n' | LC_ALL=C sort | cksum && cat common.txt"
        );
        let mut outs = Vec::new();
        for s in [Side::Kernel, side] {
            self.prepare(s, Union::Main, Kind::Warm)?;
            let ran = sys::run(
                self.command(s, Union::Main, Kind::Warm, false, &script),
                self.cfg.timeout,
                true,
            )?;
            if !ran.status.success() {
                return Err(format!("{}: {}", s.name(), ran.describe_failure()));
            }
            outs.push(ran.stdout);
        }
        if !outs[0].ends_with("lower1\n") {
            return Err(format!(
                "kernel side shows the wrong common.txt: {:?}",
                outs[0]
            ));
        }
        if outs[0] != outs[1] {
            return Err(format!(
                "listings differ: kernel {:?}, {} {:?}",
                outs[0].trim(),
                side.name(),
                outs[1].trim()
            ));
        }
        Ok(())
    }

    /// Records a failed non-kernel run; the side starts the next iteration
    /// from a fresh mount.
    fn fail(&self, w: &Workload, side: Side, msg: String) {
        eprintln!("fimfs-bench: {msg}");
        self.failures
            .borrow_mut()
            .entry((w.group.clone(), side))
            .or_insert((0, msg))
            .0 += 1;
        if let Some(d) = self.daemons.borrow_mut().get_mut(&(w.union, side)) {
            let _ = d.unmount();
        }
    }

    /// One timed iteration. A failing kernel side aborts (the environment is
    /// broken); other sides record the failure and go on.
    fn iteration(&self, w: &Workload, side: Side) -> Duration {
        let id = format!("{}/{}", w.group, side.name());
        if let Err(e) = self.prepare(side, w.union, w.kind) {
            if side == Side::Kernel {
                panic!("{id}: preparing: {e}");
            }
            self.fail(w, side, format!("{id}: preparing: {e}"));
            return Duration::from_nanos(1);
        }
        let cpu0 = if w.cpu && side != Side::Kernel {
            self.daemon_cpu(w.union, side)
        } else {
            None
        };
        let cmd = self.command(side, w.union, w.kind, w.as_root, &w.script);
        let ran = match sys::run(cmd, self.cfg.timeout, true) {
            Ok(r) => r,
            Err(e) if side == Side::Kernel => panic!("{id}: {e}"),
            Err(e) => {
                self.fail(w, side, format!("{id}: {e}"));
                return self.cfg.timeout;
            }
        };
        if ran.status.success() {
            if let Some(c0) = cpu0
                && let Some(c1) = self.daemon_cpu(w.union, side)
            {
                self.cpu
                    .borrow_mut()
                    .entry((w.group.clone(), side))
                    .or_default()
                    .push(c1.saturating_sub(c0));
            }
        } else {
            let msg = format!("{id} failed: {}", ran.describe_failure());
            if side == Side::Kernel {
                panic!("{msg}");
            }
            self.fail(w, side, msg);
        }
        self.measured
            .borrow_mut()
            .entry((w.group.clone(), side))
            .or_default()
            .push(ran.elapsed);
        ran.elapsed
    }

    /// The peers mode's plain loop: `runs` timed iterations of `side`, after
    /// one untimed warm-up run for a warm workload.
    fn run_peer(&self, w: &Workload, side: Side, runs: usize) {
        let key = (w.group.clone(), side);
        if w.kind == Kind::Warm {
            self.iteration(w, side);
            self.measured.borrow_mut().remove(&key);
            self.cpu.borrow_mut().remove(&key);
        }
        for _ in 0..runs {
            self.iteration(w, side);
            if self.failures.borrow().contains_key(&key) {
                break;
            }
        }
        let mean = self.own_mean(&key);
        eprintln!(
            "{}/{:<16} {} ({} runs){}",
            w.group,
            side.name(),
            mean.map_or("–".into(), fmt_ns),
            self.measured.borrow().get(&key).map_or(0, Vec::len),
            if self.failures.borrow().contains_key(&key) {
                ", FAILED"
            } else {
                ""
            }
        );
    }

    fn own_mean(&self, key: &(String, Side)) -> Option<f64> {
        mean_ns(self.measured.borrow().get(key)?)
    }

    fn teardown(&mut self) {
        for (_, mut d) in std::mem::take(self.daemons.get_mut()) {
            if let Err(e) = d.unmount() {
                eprintln!("fimfs-bench: {e}");
            }
        }
        let left = sys::unmount_all_under(&self.run);
        if !left.is_empty() {
            eprintln!("fimfs-bench: unmounted leftovers {left:?}");
        }
        if self.cfg.keep {
            eprintln!(
                "fimfs-bench: kept {} (FIMFS_BENCH_KEEP)",
                self.run.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.run) {
            eprintln!("fimfs-bench: removing {}: {e}", self.run.display());
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn mean_ns(v: &[Duration]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e9 / v.len() as f64)
}

// ---------------------------------------------------------------------------
// Report

fn criterion_dir() -> PathBuf {
    if let Some(h) = env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    target_dir().join("criterion")
}

/// criterion's mean estimate (ns) for `group/function`, if written by this run.
fn criterion_mean(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let p = criterion_dir()
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let modified = fs::metadata(&p).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let text = fs::read_to_string(&p).ok()?;
    let mean = &text[text.find("\"mean\"")?..];
    let pe = &mean[mean.find("\"point_estimate\"")? + "\"point_estimate\"".len()..];
    let pe = pe.trim_start().strip_prefix(':')?.trim_start();
    let end = pe.find([',', '}']).unwrap_or(pe.len());
    pe[..end].trim().parse().ok()
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn fmt_target(t: Option<f64>) -> String {
    t.map_or("–".into(), |t| format!("≤ {t}x"))
}

/// One line, short, and safe inside a markdown table cell.
fn cell_text(s: &str, max: usize) -> String {
    let one = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let one = one.replace('|', "\\|");
    if one.chars().count() <= max {
        one
    } else {
        format!("{}…", one.chars().take(max).collect::<String>())
    }
}

/// A measured mean, or why there is none.
enum Cell {
    Mean(f64),
    Skipped(String),
    Failed(usize, String),
    NotRun,
}

struct Status<'a> {
    skipped: &'a BTreeMap<(String, Side), String>,
    notes: &'a [String],
}

impl Bench {
    fn cell(&self, w: &Workload, side: Side, st: &Status) -> Cell {
        let key = (w.group.clone(), side);
        if let Some(why) = st.skipped.get(&key) {
            return Cell::Skipped(why.clone());
        }
        if let Some((n, first)) = self.failures.borrow().get(&key) {
            return Cell::Failed(*n, first.clone());
        }
        let crit = if Side::CRITERION.contains(&side) {
            criterion_mean(&w.group, side.name(), self.started)
        } else {
            None
        };
        match crit.or_else(|| self.own_mean(&key)) {
            Some(ns) => Cell::Mean(ns),
            None => Cell::NotRun,
        }
    }

    /// A reason for a table cell: the run directory elided, one line, short.
    fn short(&self, why: &str) -> String {
        let run = self.run.display().to_string();
        cell_text(&why.replace(&run, "…"), 90)
    }

    fn uname() -> String {
        Command::new("uname")
            .arg("-r")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    fn mode_line(&self) -> String {
        format!(
            "kernel {}, {} CPUs, {} mode (sample size {}, warm-up {:?}, measurement {:?})",
            Self::uname(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if self.cfg.full { "FULL" } else { "quick" },
            self.cfg.samples,
            self.cfg.warm_up,
            self.cfg.measure
        )
    }

    fn fixtures_lines(&self, r: &mut String) {
        let t = &self.tree;
        let _ = writeln!(
            r,
            "- main tree: 5 lowers, {} merged files ({} stored, {} shadowed), {} dirs, {} MiB big file",
            t.merged_files, t.physical_files, t.shadowed, t.merged_dirs, self.cfg.big_mib
        );
        let _ = writeln!(
            r,
            "- also: a 2-lower root filesystem ({} files from the host: {}), a {}-entry directory \
             over 2 lowers, {} lowers with {} bottom-only files, a source tarball of {} files in \
             {} dirs ({:.0} MiB); new file of {} MiB",
            self.rootfs.files,
            fixtures::ROOT_PROGRAMS.join(", "),
            self.wide.entries,
            self.deep.lowers.len(),
            self.deep.files,
            self.src.files,
            self.src.dirs,
            self.src.bytes as f64 / (1 << 20) as f64,
            self.cfg.write_mib
        );
    }

    fn report(&self, workloads: &[Workload], st: &Status) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "# fimfs vs kernel overlay\n");
        self.fixtures_lines(&mut r);
        let _ = writeln!(r, "- sandbox: {}", self.launcher.describe());
        let _ = writeln!(
            r,
            "- fimfs: {}{}",
            self.fimfs_origin,
            self.cfg.opts_suffix()
        );
        let _ = writeln!(r, "- {}\n", self.mode_line());
        let _ = writeln!(r, "| workload | kernel | fimfs | ratio | target |");
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        for w in workloads {
            let k = self.cell(w, Side::Kernel, st);
            let f = self.cell(w, Side::Fimfs, st);
            let text = |c: &Cell| match c {
                Cell::Mean(ns) => fmt_ns(*ns),
                Cell::Skipped(_) => "skipped".into(),
                Cell::Failed(n, _) => format!("FAILED ({n} runs)"),
                Cell::NotRun => "not run".into(),
            };
            let ratio = match (&k, &f) {
                (Cell::Mean(k), Cell::Mean(f)) if *k > 0.0 => format!("{:.2}x", f / k),
                _ => "–".into(),
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} |",
                w.group,
                text(&k),
                text(&f),
                ratio,
                fmt_target(w.target)
            );
        }
        let _ = writeln!(
            r,
            "\nMeans per iteration (criterion's estimate when it ran, else this run's own mean); \
             ratio = fimfs / kernel, below 1 means fimfs is faster; target: the issue's goal \
             for the ratio."
        );
        let cpu = self.cpu.borrow();
        for w in workloads.iter().filter(|w| w.cpu) {
            for side in self.sides().into_iter().skip(1) {
                let key = (w.group.clone(), side);
                if let (Some(c), Some(wall)) =
                    (cpu.get(&key).and_then(|v| mean_ns(v)), self.own_mean(&key))
                {
                    let _ = writeln!(
                        r,
                        "\nDaemon CPU, {} / {}: {} per iteration (user + system, all threads, \
                         mean of {} runs; {:.0}% of the wall time {})",
                        w.group,
                        side.name(),
                        fmt_ns(c),
                        cpu[&key].len(),
                        100.0 * c / wall,
                        fmt_ns(wall)
                    );
                }
            }
        }
        self.notes(&mut r, workloads, st, &Side::CRITERION);
        r
    }

    /// The "Notes" section: cross-check results, skip reasons, failures and
    /// daemon warnings for `sides`.
    fn notes(&self, r: &mut String, workloads: &[Workload], st: &Status, sides: &[Side]) {
        let mut notes = st.notes.to_vec();
        for side in sides {
            let warnings: usize = self
                .daemons
                .borrow()
                .iter()
                .filter(|((_, s), _)| s == side)
                .map(|(_, d)| d.warnings)
                .sum();
            if warnings > 0 {
                notes.push(format!(
                    "the {} daemon did not exit or clean up promptly after {warnings} of its \
                     unmounts (see the warnings above)",
                    side.name()
                ));
            }
        }
        // One line per distinct skip reason, listing the benchmarks it hit.
        let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((g, side), why) in st.skipped {
            if sides.contains(side) {
                reasons
                    .entry(why.as_str())
                    .or_default()
                    .push(format!("{g}/{}", side.name()));
            }
        }
        for (why, which) in &reasons {
            let which = if which.len() == workloads.len() {
                format!("all of {}", which[0].rsplit('/').next().unwrap_or(""))
            } else {
                which.join(", ")
            };
            notes.push(format!("skipped {which}: {why}"));
        }
        for ((g, side), (n, first)) in self.failures.borrow().iter() {
            if sides.contains(side) {
                notes.push(format!(
                    "{g}/{} failed {n} times; first: {first}",
                    side.name()
                ));
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(r, "\n## Notes\n");
            for n in &notes {
                let _ = writeln!(r, "- {}", n.replace('\n', "\n  "));
            }
        }
    }

    /// The peers table: every workload's ratio to the kernel overlay for
    /// fuse-overlayfs, unionfs-fuse and fimfs, with the issue's target.
    fn peers_report(&self, workloads: &[Workload], st: &Status) -> String {
        let mut r = String::new();
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let git = Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(r, "# fimfs and its peers vs the kernel overlay\n");
        let _ = writeln!(r, "- date: {date}");
        let _ = writeln!(r, "- {}", self.mode_line());
        let _ = writeln!(
            r,
            "- peers: mean of {} runs each (a plain loop, no criterion), after one untimed \
             run for warm workloads",
            self.cfg.peers_runs
        );
        let _ = writeln!(
            r,
            "- fimfs: {} (git {git}){}",
            self.fimfs_origin,
            self.cfg.opts_suffix()
        );
        let _ = writeln!(
            r,
            "- fuse-overlayfs: {}",
            sys::version_line("fuse-overlayfs", "fuse-overlayfs")
        );
        let _ = writeln!(
            r,
            "- unionfs-fuse: {} (`-o cow,hide_meta_files`)",
            sys::version_line("unionfs", "unionfs-fuse")
        );
        let _ = writeln!(r, "- sandbox: {}", self.launcher.describe());
        self.fixtures_lines(&mut r);
        let _ = writeln!(
            r,
            "\n| workload | fuse-overlayfs | unionfs-fuse | fimfs | target |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        let ratio = |w: &Workload, side: Side| -> String {
            let k = self.cell(w, Side::Kernel, st);
            match (k, self.cell(w, side, st)) {
                (Cell::Mean(k), Cell::Mean(x)) if k > 0.0 => format!("{:.2}x", x / k),
                (_, Cell::Skipped(why)) => format!("fails: {}", self.short(&why)),
                (_, Cell::Failed(n, first)) => {
                    format!("fails ({n}×): {}", self.short(&first))
                }
                _ => "not run".into(),
            }
        };
        let sides = [Side::FuseOverlayfs, Side::UnionfsFuse, Side::Fimfs];
        for w in workloads {
            let cells: Vec<String> = sides.iter().map(|&s| ratio(w, s)).collect();
            let _ = writeln!(
                r,
                "| {} (`{}`) | {} | {} | {} | {} |",
                w.row,
                w.group,
                cells[0],
                cells[1],
                cells[2],
                fmt_target(w.target)
            );
        }
        // Daemon CPU: relative to fuse-overlayfs.
        let cpu = self.cpu.borrow();
        for w in workloads.iter().filter(|w| w.cpu) {
            let mean = |s: Side| cpu.get(&(w.group.clone(), s)).and_then(|v| mean_ns(v));
            let base = mean(Side::FuseOverlayfs);
            let cells: Vec<String> = sides
                .iter()
                .map(|&s| match (mean(s), base) {
                    (Some(c), Some(b)) if b > 0.0 => format!("{:.2}x ({})", c / b, fmt_ns(c)),
                    (Some(c), _) => fmt_ns(c),
                    (None, _) => match self.cell(w, s, st) {
                        Cell::Skipped(why) => format!("fails: {}", self.short(&why)),
                        Cell::Failed(..) => "fails".into(),
                        _ => "not run".into(),
                    },
                })
                .collect();
            let _ = writeln!(
                r,
                "| daemon CPU time per run of `{}`, ratio to fuse-overlayfs | {} | {} | {} | ≤ 0.5x |",
                w.group, cells[0], cells[1], cells[2]
            );
        }
        let _ = writeln!(
            r,
            "\nRatio = mean time of the side / mean time of the kernel overlay in this run \
             (below 1: faster than the kernel); target: the issue's goal for fimfs. \
             Daemon CPU: user + system time of the daemon process (all threads, \
             /proc/PID/stat) per run, ratio to fuse-overlayfs' (fimfs target: at most half)."
        );
        let _ = writeln!(
            r,
            "\n### Means per run\n\n| workload | kernel | fuse-overlayfs | unionfs-fuse | fimfs |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        for w in workloads {
            let cells: Vec<String> = [Side::Kernel, sides[0], sides[1], sides[2]]
                .iter()
                .map(|&s| match self.cell(w, s, st) {
                    Cell::Mean(ns) => fmt_ns(ns),
                    Cell::Skipped(_) | Cell::Failed(..) => "fails".into(),
                    Cell::NotRun => "not run".into(),
                })
                .collect();
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} |",
                w.group, cells[0], cells[1], cells[2], cells[3]
            );
        }
        self.notes(&mut r, workloads, st, &Side::PEERS);
        r
    }
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
            for side in Side::CRITERION {
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

fn run_all(c: &mut Criterion, mut cfg: Config, args: &Args) -> Result<(), String> {
    let require_fimfs = cfg.require_fimfs;
    if args.test {
        cfg.peers_runs = 1;
    }
    let bench = Bench::setup(cfg)?;
    let workloads = bench.workloads();
    let sides = bench.sides();
    let mut skipped: BTreeMap<(String, Side), String> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();

    let selected: BTreeSet<(String, Side)> = workloads
        .iter()
        .flat_map(|w| sides.iter().map(|&s| (w.group.clone(), s)))
        .filter(|(g, s)| args.may_select(&format!("{g}/{}", s.name())))
        .collect();

    // A daemon side that cannot start (or mount the main tree) is skipped
    // entirely; one that does is cross-checked against the kernel side.
    for &side in &sides[1..] {
        if !selected.iter().any(|(_, s)| *s == side) {
            continue;
        }
        let unusable = match &bench.flavors[&side] {
            Err(e) => Some(e.clone()),
            Ok(_) => bench
                .prepare(side, Union::Main, Kind::Warm)
                .err()
                .map(|e| format!("cannot mount: {e}")),
        };
        if let Some(e) = unusable {
            eprintln!("fimfs-bench: {} side unavailable: {e}", side.name());
            for w in &workloads {
                skipped.insert((w.group.clone(), side), e.clone());
            }
            continue;
        }
        match bench.cross_check(side) {
            Ok(()) => eprintln!(
                "fimfs-bench: cross-check: {} shows the same tree as the kernel overlay",
                side.name()
            ),
            Err(e) => {
                eprintln!("fimfs-bench: cross-check: {e}");
                notes.push(format!("cross-check: {e}"));
            }
        }
    }

    // Preflight: every selected workload once, output checked. The kernel
    // side must work; another side that does not is skipped and reported.
    for w in &workloads {
        for &side in &sides {
            let key = (w.group.clone(), side);
            if !selected.contains(&key) || skipped.contains_key(&key) {
                continue;
            }
            eprint!("fimfs-bench: preflight {}/{} ... ", w.group, side.name());
            let _ = std::io::stderr().flush();
            match bench.preflight(w, side) {
                Ok(()) => eprintln!("ok"),
                Err(e) => {
                    eprintln!("FAILED\n  {e}");
                    if side == Side::Kernel {
                        return Err(format!("kernel side of {} does not work: {e}", w.group));
                    }
                    skipped.insert(key, e);
                }
            }
        }
        bench.unmount_daemons();
    }
    if require_fimfs
        && skipped
            .keys()
            .any(|(g, s)| *s == Side::Fimfs && selected.contains(&(g.clone(), *s)))
    {
        return Err(
            "FIMFS_BENCH_REQUIRE_FIMFS is set and the fimfs side cannot run every workload".into(),
        );
    }

    for w in &workloads {
        let mut group = c.benchmark_group(w.group.as_str());
        group.sampling_mode(SamplingMode::Flat);
        for side in Side::CRITERION {
            if skipped.contains_key(&(w.group.clone(), side)) {
                continue;
            }
            let bench = &bench;
            group.bench_function(side.name(), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| bench.iteration(w, side)).sum())
            });
        }
        group.finish();
        for side in Side::PEERS {
            let key = (w.group.clone(), side);
            if selected.contains(&key) && !skipped.contains_key(&key) {
                bench.run_peer(w, side, bench.cfg.peers_runs);
            }
        }
        // Do not keep a mount around across groups.
        bench.unmount_daemons();
    }
    c.final_summary();

    let st = Status {
        skipped: &skipped,
        notes: &notes,
    };
    let report = bench.report(&workloads, &st);
    println!("\n{report}");
    let path = target_dir().join("fimfs-bench-report.md");
    common::write_report("fimfs-bench", "report", &path, &report);
    if bench.cfg.peers {
        let peers = bench.peers_report(&workloads, &st);
        println!("\n{peers}");
        let path = target_dir().join("fimfs-bench-peers.md");
        common::write_report("fimfs-bench", "peers table", &path, &peers);
    }
    Ok(())
}

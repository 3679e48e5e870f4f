//! fimfs vs the kernel overlay, over the same generated 5-lower tree, in one
//! process run. Every workload is a criterion group with a `kernel` and a
//! `fimfs` function; afterwards a `workload | kernel | fimfs | ratio` table is
//! printed and written to `target/fimfs-bench-report.md`.
//!
//! Both sides run the workload as `sh -c CMD` inside bwrap, exactly as
//! FlatImage does: the kernel side with `--overlay-src … --overlay`/
//! `--ro-overlay` (so bwrap's start-up and the overlay mount are part of the
//! measured time), the fimfs side with `--bind FIMFS_MNT MNT` over a fimfs
//! daemon that was mounted before the timed part. Resets (fresh upper,
//! remount, dropping caches) happen outside the timed part (`iter_custom`).
//!
//! See `benches/README.md` for how to run it and read the output.

mod sys;
mod tree;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, SamplingMode};

use sys::{Fimfs, Launcher};
use tree::Tree;

/// argv[1] that turns the bench binary into a workload helper (run inside
/// the sandbox, see [`helper`]).
const HELPER: &str = "--fimfs-bench-helper";
/// Files the create/rename/delete workload goes through.
const CRD_COUNT: usize = 5000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    Kernel,
    Fimfs,
}

impl Side {
    const BOTH: [Side; 2] = [Side::Kernel, Side::Fimfs];

    fn name(self) -> &'static str {
        match self {
            Side::Kernel => "kernel",
            Side::Fimfs => "fimfs",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Read-only mount, caches kept warm between iterations.
    Warm,
    /// Read-only mount, `drop_caches` (and a fresh fimfs mount) before each
    /// iteration.
    Cold,
    /// Read-write mount over a fresh, empty upper for each iteration.
    Write,
}

struct Workload {
    /// Criterion group name, also the report's workload name.
    group: String,
    /// Which issue's acceptance this belongs to: "Core" or "Writes".
    issue: &'static str,
    kind: Kind,
    /// The timed shell command.
    script: String,
    /// Run after `script` (same sandbox) once before benchmarking; the
    /// combined stdout must equal `expect`.
    check: String,
    expect: String,
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
    base: PathBuf,
    keep: bool,
    timeout: Duration,
    mount_opts: Option<String>,
    require_fimfs: bool,
}

impl Config {
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
            base: env::var_os("FIMFS_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp/fimfs-bench")),
            keep: env_flag("FIMFS_BENCH_KEEP"),
            timeout: Duration::from_secs(env_num("FIMFS_BENCH_TIMEOUT", 300u64).max(1)),
            mount_opts: env::var("FIMFS_BENCH_MOUNT_OPTS")
                .ok()
                .filter(|s| !s.is_empty()),
            require_fimfs: env_flag("FIMFS_BENCH_REQUIRE_FIMFS"),
        }
    }
}

/// The subset of criterion's command line this harness needs to know about
/// before handing it to `Criterion::configure_from_args`.
struct Args {
    bench: bool,
    list: bool,
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
            exact: false,
            filter: None,
        };
        let mut it = argv.iter();
        while let Some(s) = it.next() {
            match s.as_str() {
                "--bench" => a.bench = true,
                "--list" => a.list = true,
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
    /// Where every workload sees the union (inside its sandbox).
    mnt: PathBuf,
    /// Where the fimfs daemon mounts (bound onto `mnt` in the sandbox).
    fmnt: PathBuf,
    kupper: PathBuf,
    kwork: PathBuf,
    fupper: PathBuf,
    launcher: Launcher,
    tree: Tree,
    exe: PathBuf,
    fimfs: RefCell<Option<Fimfs>>,
    /// Why the fimfs side cannot run at all.
    fimfs_error: Option<String>,
    /// The fimfs binary as found (the daemon runs a copy of it).
    fimfs_origin: String,
    /// Timed durations per (group, side), warm-up iterations included.
    measured: RefCell<BTreeMap<(String, Side), Vec<Duration>>>,
    /// Failed fimfs runs per group: (count, first error).
    failures: RefCell<BTreeMap<String, (usize, String)>>,
    started: SystemTime,
}

fn target_dir() -> PathBuf {
    // target/<profile>/deps/union-<hash>
    if let Ok(exe) = env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(t) = deps.parent().and_then(Path::parent)
    {
        return t.to_path_buf();
    }
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The release `fimfs` binary: `$FIMFS_BIN`, cargo's `CARGO_BIN_EXE_fimfs`,
/// `target/release/fimfs`, or failing all that, built with
/// `cargo build --release --bin fimfs`.
fn find_fimfs() -> Result<PathBuf, String> {
    if let Some(p) = env::var_os("FIMFS_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("FIMFS_BIN={} does not exist", p.display()))
        };
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_fimfs").map(PathBuf::from)
        && p.is_file()
    {
        return Ok(p);
    }
    let p = target_dir().join("release").join("fimfs");
    if p.is_file() {
        return Ok(p);
    }
    eprintln!(
        "fimfs-bench: {} missing; running cargo build --release --bin fimfs",
        p.display()
    );
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--bin", "fimfs"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if st.success() && p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no fimfs binary: `cargo build --release --bin fimfs` gave {st} and {} is missing",
            p.display()
        ))
    }
}

impl Bench {
    fn setup(cfg: Config) -> Result<Bench, String> {
        let started = SystemTime::now();
        fs::create_dir_all(&cfg.base).map_err(|e| format!("{}: {e}", cfg.base.display()))?;
        let base = fs::canonicalize(&cfg.base).map_err(|e| e.to_string())?;
        if !sys::shell_safe(&base) {
            return Err(format!(
                "FIMFS_BENCH_DIR={} must be a plain path ([A-Za-z0-9/._-+])",
                base.display()
            ));
        }
        sys::clean_stale_runs(&base);
        let run = base.join(format!("run-{}", std::process::id()));
        let _ = fs::remove_dir_all(&run);
        for d in [
            "mnt",
            "fimfs-mnt",
            "kernel-rw/upper",
            "kernel-rw/work",
            "fimfs-rw/upper",
        ] {
            fs::create_dir_all(run.join(d))
                .map_err(|e| format!("{}: {e}", run.join(d).display()))?;
        }
        sys::install_signal_cleanup(run.clone(), cfg.keep);
        if let Ok(out) = Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(&run)
            .output()
        {
            let fstype = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if fstype == "tmpfs" || fstype == "ramfs" {
                eprintln!(
                    "fimfs-bench: warning: {} is on {fstype}; the cold-cache workload means nothing there",
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

        let launcher = Launcher::detect();
        eprintln!("fimfs-bench: sandbox: {}", launcher.describe());
        let fmnt = run.join("fimfs-mnt");
        // Run a private copy: other people rebuilding target/release/fimfs
        // during the run must not change what is being measured.
        let found = find_fimfs().and_then(|bin| {
            let pinned = run.join("fimfs");
            fs::copy(&bin, &pinned)
                .map_err(|e| format!("copying {} to {}: {e}", bin.display(), pinned.display()))?;
            Ok((bin, pinned))
        });
        let (fimfs, fimfs_error, fimfs_origin) = match found {
            Ok((bin, pinned)) => {
                eprintln!(
                    "fimfs-bench: fimfs binary: {} (run from a copy at {})",
                    bin.display(),
                    pinned.display()
                );
                let f = Fimfs::new(
                    pinned,
                    fmnt.clone(),
                    &tree.lowers,
                    cfg.mount_opts.clone(),
                    run.join("fimfs-daemon.log"),
                );
                (Some(f), None, bin.display().to_string())
            }
            Err(e) => (None, Some(e), "unavailable".to_string()),
        };
        Ok(Bench {
            mnt: run.join("mnt"),
            fmnt,
            kupper: run.join("kernel-rw/upper"),
            kwork: run.join("kernel-rw/work"),
            fupper: run.join("fimfs-rw/upper"),
            launcher,
            tree,
            exe: env::current_exe().map_err(|e| e.to_string())?,
            fimfs: RefCell::new(fimfs),
            fimfs_error,
            fimfs_origin,
            measured: RefCell::new(BTreeMap::new()),
            failures: RefCell::new(BTreeMap::new()),
            started,
            run,
            cfg,
        })
    }

    fn workloads(&self) -> Vec<Workload> {
        let m = self.mnt.display();
        let t = &self.tree;
        let big = self.cfg.big_mib;
        let bottom = t.bottom().display();
        let big_rel = tree::BIG_REL;
        vec![
            Workload {
                group: "core_find_warm".into(),
                issue: "Core",
                kind: Kind::Warm,
                script: format!("find {m} -type f | wc -l"),
                check: String::new(),
                expect: format!("{}\n", t.merged_files),
            },
            Workload {
                group: "core_find_cold".into(),
                issue: "Core",
                kind: Kind::Cold,
                script: format!("find {m} -type f | wc -l"),
                check: String::new(),
                expect: format!("{}\n", t.merged_files),
            },
            Workload {
                group: "core_ls_lR_warm".into(),
                issue: "Core",
                kind: Kind::Warm,
                script: format!("ls -lR {m} > /dev/null"),
                check: format!("ls -lRa {m} | grep -c '^-'"),
                expect: format!("{}\n", t.merged_files),
            },
            Workload {
                group: format!("core_read_{big}m_warm"),
                issue: "Core",
                kind: Kind::Warm,
                script: format!("cat {m}/{big_rel} > /dev/null"),
                check: format!("cmp {m}/{big_rel} {bottom}/{big_rel} && wc -c < {m}/{big_rel}"),
                expect: format!("{}\n", t.big_size),
            },
            Workload {
                group: "writes_create_1000".into(),
                issue: "Writes",
                kind: Kind::Write,
                script: format!("for i in $(seq 1000); do touch {m}/tmp/f$i; done"),
                check: format!("ls {m}/tmp | grep -c '^f'"),
                expect: "1000\n".into(),
            },
            Workload {
                group: "writes_append_1000".into(),
                issue: "Writes",
                kind: Kind::Write,
                script: format!("for f in {m}/app/*; do printf x >> \"$f\"; done"),
                check: format!("cat {m}/app/* | wc -c"),
                expect: format!("{}\n", t.app_bytes + tree::APP_FILES as u64),
            },
            Workload {
                group: format!("writes_append_{big}m"),
                issue: "Writes",
                kind: Kind::Write,
                script: format!("printf x >> {m}/{big_rel}"),
                check: format!("wc -c < {m}/{big_rel}"),
                expect: format!("{}\n", t.big_size + 1),
            },
            Workload {
                group: format!("writes_create_rename_delete_{CRD_COUNT}"),
                issue: "Writes",
                kind: Kind::Write,
                script: format!("{} {HELPER} crd {m}/crd {CRD_COUNT}", self.exe.display()),
                check: format!("ls -A {m}/crd | wc -l"),
                expect: format!("{}\n", t.crd_entries),
            },
        ]
    }

    /// The sandboxed `sh -c` for one side. `set -e` so that a failing
    /// command inside a loop fails the run (same on both sides).
    fn command(&self, side: Side, kind: Kind, script: &str) -> Command {
        let script = format!("set -e\n{script}");
        match side {
            Side::Kernel => {
                let rw =
                    (kind == Kind::Write).then_some((self.kupper.as_path(), self.kwork.as_path()));
                self.launcher
                    .kernel(&self.tree.lowers, rw, &self.mnt, &script)
            }
            Side::Fimfs => self.launcher.fimfs(&self.fmnt, &self.mnt, &script),
        }
    }

    /// The untimed part of an iteration: fresh upper, (re)mount, caches.
    fn prepare(&self, kind: Kind, side: Side) -> Result<(), String> {
        let io = |e: std::io::Error| e.to_string();
        match side {
            Side::Kernel => match kind {
                Kind::Warm => Ok(()),
                Kind::Cold => sys::drop_caches().map_err(|e| format!("drop_caches: {e}")),
                Kind::Write => {
                    sys::reset_dir(&self.kupper).map_err(io)?;
                    sys::reset_dir(&self.kwork).map_err(io)?;
                    sys::sync();
                    Ok(())
                }
            },
            Side::Fimfs => {
                let mut guard = self.fimfs.borrow_mut();
                let f = guard
                    .as_mut()
                    .ok_or_else(|| self.fimfs_error.clone().unwrap_or_default())?;
                match kind {
                    Kind::Warm => {
                        if !f.is_ro() {
                            f.mount(None)?;
                        }
                        Ok(())
                    }
                    Kind::Cold => {
                        f.mount(None)?;
                        sys::drop_caches().map_err(|e| format!("drop_caches: {e}"))
                    }
                    Kind::Write => {
                        f.unmount()?;
                        sys::reset_dir(&self.fupper).map_err(io)?;
                        f.mount(Some(&self.fupper))?;
                        sys::sync();
                        Ok(())
                    }
                }
            }
        }
    }

    /// One untimed run of the workload plus its check; the output must match.
    fn preflight(&self, w: &Workload, side: Side) -> Result<(), String> {
        self.prepare(w.kind, side)?;
        let script = format!("{}\n{}", w.script, w.check);
        let ran = sys::run(self.command(side, w.kind, &script), self.cfg.timeout, true)?;
        if !ran.status.success() {
            return Err(format!("check run failed: {}", ran.describe_failure()));
        }
        if !ran.stderr.trim().is_empty() {
            return Err(format!("check run wrote to stderr: {}", ran.brief_stderr()));
        }
        if ran.stdout != w.expect {
            return Err(format!(
                "wrong output: expected {:?}, got {:?}{}",
                w.expect,
                ran.stdout,
                if ran.stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (stderr: {})", ran.brief_stderr())
                }
            ));
        }
        Ok(())
    }

    /// Compares what both sides show: names, types and sizes of every entry
    /// and the content of the file shadowed in all five lowers.
    fn cross_check(&self) -> Result<(), String> {
        let m = self.mnt.display();
        let script = format!(
            "cd {m} && find . -printf '%P %y %s\\n' | LC_ALL=C sort | cksum && cat common.txt"
        );
        let mut outs = Vec::new();
        for side in Side::BOTH {
            self.prepare(Kind::Warm, side)?;
            let ran = sys::run(
                self.command(side, Kind::Warm, &script),
                self.cfg.timeout,
                true,
            )?;
            if !ran.status.success() {
                return Err(format!("{}: {}", side.name(), ran.describe_failure()));
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
                "listings differ: kernel {:?}, fimfs {:?}",
                outs[0].trim(),
                outs[1].trim()
            ));
        }
        Ok(())
    }

    /// One timed iteration.
    fn iteration(&self, w: &Workload, side: Side) -> Duration {
        if let Err(e) = self.prepare(w.kind, side) {
            panic!("{}/{}: preparing: {e}", w.group, side.name());
        }
        let ran = match sys::run(
            self.command(side, w.kind, &w.script),
            self.cfg.timeout,
            true,
        ) {
            Ok(r) => r,
            Err(e) => panic!("{}/{}: {e}", w.group, side.name()),
        };
        if !ran.status.success() {
            let msg = format!(
                "{}/{} failed: {}",
                w.group,
                side.name(),
                ran.describe_failure()
            );
            if side == Side::Kernel {
                panic!("{msg}");
            }
            eprintln!("fimfs-bench: {msg}");
            let mut failures = self.failures.borrow_mut();
            failures.entry(w.group.clone()).or_insert((0, msg)).0 += 1;
            // Start the next iteration from a fresh mount.
            if let Some(f) = self.fimfs.borrow_mut().as_mut() {
                let _ = f.unmount();
            }
        }
        self.measured
            .borrow_mut()
            .entry((w.group.clone(), side))
            .or_default()
            .push(ran.elapsed);
        ran.elapsed
    }

    fn teardown(&mut self) {
        if let Some(mut f) = self.fimfs.borrow_mut().take()
            && let Err(e) = f.unmount()
        {
            eprintln!("fimfs-bench: {e}");
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

struct Cell {
    ns: Option<f64>,
    text: String,
}

impl Bench {
    fn cell(&self, w: &Workload, side: Side, skipped: &BTreeMap<(String, Side), String>) -> Cell {
        if skipped.contains_key(&(w.group.clone(), side)) {
            return Cell {
                ns: None,
                text: "skipped".into(),
            };
        }
        let own = self
            .measured
            .borrow()
            .get(&(w.group.clone(), side))
            .map(|v| v.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e9 / v.len() as f64);
        let ns = criterion_mean(&w.group, side.name(), self.started).or(own);
        match ns {
            None => Cell {
                ns: None,
                text: "not run".into(),
            },
            Some(ns) => {
                if side == Side::Fimfs
                    && let Some((n, _)) = self.failures.borrow().get(&w.group)
                {
                    return Cell {
                        ns: None,
                        text: format!("FAILED ({n} runs)"),
                    };
                }
                Cell {
                    ns: Some(ns),
                    text: fmt_ns(ns),
                }
            }
        }
    }

    fn report(
        &self,
        workloads: &[Workload],
        skipped: &BTreeMap<(String, Side), String>,
        notes: &[String],
    ) -> String {
        let mut r = String::new();
        let uname = Command::new("uname")
            .arg("-r")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let fimfs_bin = &self.fimfs_origin;
        let _ = writeln!(r, "# fimfs vs kernel overlay\n");
        let _ = writeln!(
            r,
            "- tree: 5 lowers, {} merged files ({} stored, {} shadowed), {} dirs, {} MiB big file",
            self.tree.merged_files,
            self.tree.physical_files,
            self.tree.shadowed,
            self.tree.merged_dirs,
            self.cfg.big_mib
        );
        let _ = writeln!(r, "- sandbox: {}", self.launcher.describe());
        let _ = writeln!(
            r,
            "- fimfs: {fimfs_bin}{}",
            self.cfg
                .mount_opts
                .as_ref()
                .map(|o| format!(" -o {o}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            r,
            "- kernel {uname}, {} CPUs, {} mode (sample size {}, warm-up {:?}, measurement {:?})\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if self.cfg.full { "FULL" } else { "quick" },
            self.cfg.samples,
            self.cfg.warm_up,
            self.cfg.measure
        );
        let _ = writeln!(r, "| workload | kernel | fimfs | ratio |");
        let _ = writeln!(r, "|---|---:|---:|---:|");
        for w in workloads {
            let k = self.cell(w, Side::Kernel, skipped);
            let f = self.cell(w, Side::Fimfs, skipped);
            let ratio = match (k.ns, f.ns) {
                (Some(k), Some(f)) if k > 0.0 => format!("{:.2}x", f / k),
                _ => "–".into(),
            };
            let _ = writeln!(
                r,
                "| {} ({}) | {} | {} | {} |",
                w.group, w.issue, k.text, f.text, ratio
            );
        }
        let _ = writeln!(
            r,
            "\nMeans per iteration (criterion's estimate when it ran, else this run's own mean); \
             ratio = fimfs / kernel, below 1 means fimfs is faster."
        );
        let failures = self.failures.borrow();
        let mut notes = notes.to_vec();
        if let Some(f) = self.fimfs.borrow().as_ref()
            && f.warnings > 0
        {
            notes.push(format!(
                "the fimfs daemon did not remove its workdir promptly after {} of its unmounts \
                 (see the warnings above)",
                f.warnings
            ));
        }
        // One line per distinct skip reason, listing the benchmarks it hit.
        let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((g, side), why) in skipped {
            reasons
                .entry(why.as_str())
                .or_default()
                .push(format!("{g}/{}", side.name()));
        }
        if !notes.is_empty() || !failures.is_empty() || !reasons.is_empty() {
            let _ = writeln!(r, "\n## Notes\n");
            for n in &notes {
                let _ = writeln!(r, "- {}", n.replace('\n', "\n  "));
            }
            for (why, which) in &reasons {
                let _ = writeln!(
                    r,
                    "- skipped {}: {}",
                    which.join(", "),
                    why.replace('\n', "\n  ")
                );
            }
            for (g, (n, first)) in failures.iter() {
                let _ = writeln!(
                    r,
                    "- {g}/fimfs failed {n} times; first: {}",
                    first.replace('\n', "\n  ")
                );
            }
        }
        r
    }
}

// ---------------------------------------------------------------------------
// Helper mode: workloads that would otherwise be dominated by fork/exec.

fn helper(args: &[String]) -> ExitCode {
    let res = match args {
        [op, dir, n] if op == "crd" => n
            .parse::<usize>()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|n| create_rename_delete(Path::new(dir), n)),
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

// ---------------------------------------------------------------------------

const GROUP_NAMES_FOR_LIST: &[&str] = &[
    "core_find_warm",
    "core_find_cold",
    "core_ls_lR_warm",
    "core_read_256m_warm",
    "writes_create_1000",
    "writes_append_1000",
    "writes_append_256m",
    "writes_create_rename_delete_5000",
];

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
        for g in GROUP_NAMES_FOR_LIST {
            let mut group = c.benchmark_group(*g);
            for side in Side::BOTH {
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

fn run_all(c: &mut Criterion, cfg: Config, args: &Args) -> Result<(), String> {
    let require_fimfs = cfg.require_fimfs;
    let bench = Bench::setup(cfg)?;
    let workloads = bench.workloads();
    let mut skipped: BTreeMap<(String, Side), String> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();

    // Preflight: every selected workload once, output checked. The kernel
    // side must work; a fimfs side that does not is skipped and reported.
    let selected: BTreeSet<(String, Side)> = workloads
        .iter()
        .flat_map(|w| Side::BOTH.map(|s| (w.group.clone(), s)))
        .filter(|(g, s)| args.may_select(&format!("{g}/{}", s.name())))
        .collect();
    let want_fimfs = selected.iter().any(|(_, s)| *s == Side::Fimfs);
    if let Some(e) = &bench.fimfs_error {
        eprintln!("fimfs-bench: fimfs side unavailable: {e}");
        for w in &workloads {
            skipped.insert((w.group.clone(), Side::Fimfs), e.clone());
        }
    } else if want_fimfs && let Err(e) = bench.prepare(Kind::Warm, Side::Fimfs) {
        let e = format!("cannot mount fimfs: {e}");
        eprintln!("fimfs-bench: fimfs side unavailable: {e}");
        for w in &workloads {
            skipped.insert((w.group.clone(), Side::Fimfs), e.clone());
        }
    } else if want_fimfs {
        match bench.cross_check() {
            Ok(()) => eprintln!(
                "fimfs-bench: cross-check: fimfs shows the same tree as the kernel overlay"
            ),
            Err(e) => {
                eprintln!("fimfs-bench: cross-check: {e}");
                notes.push(format!("cross-check: {e}"));
            }
        }
    }
    for w in &workloads {
        for side in Side::BOTH {
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
        for side in Side::BOTH {
            if skipped.contains_key(&(w.group.clone(), side)) {
                continue;
            }
            let bench = &bench;
            group.bench_function(side.name(), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| bench.iteration(w, side)).sum())
            });
        }
        group.finish();
        // Do not keep a mount around across groups that do not need it.
        if w.kind == Kind::Write
            && let Some(f) = bench.fimfs.borrow_mut().as_mut()
        {
            let _ = f.unmount();
        }
    }
    c.final_summary();

    let report = bench.report(&workloads, &skipped, &notes);
    println!("\n{report}");
    let path = target_dir().join("fimfs-bench-report.md");
    match fs::write(&path, &report) {
        Ok(()) => eprintln!("fimfs-bench: report written to {}", path.display()),
        Err(e) => eprintln!("fimfs-bench: writing {}: {e}", path.display()),
    }
    Ok(())
}

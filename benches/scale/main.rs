//! The figures beside the main benchmark table: how fimfs scales.
//!
//! 1. **Memory**: the daemon's VmRSS/VmHWM after mounting, after
//!    `find MNT -type f | wc -l` over a million files (three lowers), and
//!    after the kernel forgot the inodes again (`drop_caches`).
//! 2. **Flatness in the number of lowers**: the same merged content in one
//!    lower and spread over 100; `find -type f | wc -l` warm, and `stat` of
//!    the files only the bottom lower holds, cold. Also on the kernel
//!    overlay, for reference.
//!
//! Not criterion: a plain `main` that measures, checks every command's
//! output, and prints a markdown report (also written to
//! `target/fimfs-scale-report.md`). Timings are never asserted; wrong
//! outputs fail the run. See `benches/README.md`.

#[path = "../common/mod.rs"]
mod common;
mod sys;
mod tree;

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, Instant};

use common::config::{env_flag, env_num};
use common::mounts::{self, Daemon, Flavor};
use common::report::{Table, cpus, fmt_dur, git, median, thousands, uname};
use common::{find_fimfs, target_dir};
use sys::{KernelOverlay, Mem};

// ---------------------------------------------------------------------------
// Configuration

struct Config {
    dir: PathBuf,
    files: u64,
    flat_files: u64,
    lowers: usize,
    reps: usize,
    cold_reps: usize,
    cycles: usize,
    stat_all: bool,
    gdb_trim: bool,
    nofile: Option<u64>,
    settle_max: Duration,
    timeout: Duration,
    mount_opts: Option<String>,
    kernel: bool,
    memory: bool,
    flat: bool,
}

impl Config {
    fn from_env(in_test: bool, filters: &[String]) -> Result<Config, String> {
        // Under `cargo test` (FIMFS_SCALE_IN_TEST=1) the defaults are small.
        let small = in_test && !env_flag("FIMFS_SCALE_FULL_SIZE");
        fn pick<T>(small: bool, big: T, little: T) -> T {
            if small { little } else { big }
        }
        let wants = |part: &str| filters.is_empty() || filters.iter().any(|f| part.contains(f));
        let cfg = Config {
            dir: env::var_os("FIMFS_SCALE_DIR")
                .map(PathBuf::from)
                // The small trees must not replace the full-size ones.
                .unwrap_or_else(|| {
                    PathBuf::from(if small {
                        "/var/tmp/fimfs-scale-test"
                    } else {
                        "/var/tmp/fimfs-scale"
                    })
                }),
            files: env_num(
                "fimfs-scale",
                "FIMFS_SCALE_FILES",
                pick(small, 1_000_000u64, 20_000),
            )
            .max(1),
            flat_files: env_num(
                "fimfs-scale",
                "FIMFS_SCALE_FLAT_FILES",
                pick(small, 20_000u64, 2_000),
            )
            .max(1),
            lowers: env_num("fimfs-scale", "FIMFS_SCALE_LOWERS", 100usize),
            reps: env_num("fimfs-scale", "FIMFS_SCALE_REPS", pick(small, 9usize, 1)).max(1),
            cold_reps: env_num(
                "fimfs-scale",
                "FIMFS_SCALE_COLD_REPS",
                pick(small, 5usize, 1),
            )
            .max(1),
            cycles: env_num("fimfs-scale", "FIMFS_SCALE_CYCLES", pick(small, 2usize, 1)).max(1),
            stat_all: env::var("FIMFS_SCALE_STAT_ALL").as_deref() != Ok("0"),
            gdb_trim: env_flag("FIMFS_SCALE_GDB_TRIM"),
            nofile: env::var("FIMFS_SCALE_NOFILE")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            settle_max: Duration::from_secs(
                env_num("fimfs-scale", "FIMFS_SCALE_SETTLE", 30u64).max(5),
            ),
            timeout: Duration::from_secs(
                env_num("fimfs-scale", "FIMFS_SCALE_TIMEOUT", 1800u64).max(1),
            ),
            mount_opts: env::var("FIMFS_SCALE_MOUNT_OPTS")
                .ok()
                .filter(|s| !s.is_empty()),
            kernel: env::var("FIMFS_SCALE_KERNEL").as_deref() != Ok("0"),
            memory: wants("memory"),
            flat: wants("flatness") || wants("lowers"),
        };
        if !(2..=500).contains(&cfg.lowers) {
            return Err(format!(
                "FIMFS_SCALE_LOWERS={} must be within 2..=500 (the kernel overlay's limit)",
                cfg.lowers
            ));
        }
        if cfg.flat_files / tree::FLAT_PER_DIR >= 1000 {
            return Err("FIMFS_SCALE_FLAT_FILES must be below 100,000".into());
        }
        if cfg.files / tree::MEM_PER_DIR >= 100_000 {
            return Err("FIMFS_SCALE_FILES must be below 100,000,000".into());
        }
        if !cfg.memory && !cfg.flat {
            return Err(format!(
                "the filter {filters:?} selects nothing: use `memory` and/or `flatness`"
            ));
        }
        Ok(cfg)
    }
}

// ---------------------------------------------------------------------------
// Formatting

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "**MISSED**" }
}

// ---------------------------------------------------------------------------
// The run

struct Ctx {
    cfg: Config,
    run: PathBuf,
    /// The pinned copy of the fimfs binary the daemons run.
    fimfs: PathBuf,
    /// The pinned copy of `FIMFS_BENCH_BASELINE`, run beside it.
    baseline: Option<PathBuf>,
    /// This binary (the kernel overlay holder).
    exe: PathBuf,
    /// Daemon-side unmount problems.
    warnings: Vec<String>,
}

impl Ctx {
    /// Runs `script` (in `ns` if given) and checks it exits 0 with `expect`
    /// as its whole stdout.
    fn checked(
        &self,
        what: &str,
        script: &str,
        ns: Option<i32>,
        expect: &str,
    ) -> Result<Duration, String> {
        let ran = sys::run_sh(script, ns, self.cfg.timeout).map_err(|e| format!("{what}: {e}"))?;
        if !ran.status.success() || ran.stdout != expect {
            return Err(format!(
                "{what}: `{script}` gave {} with stdout {:?} (expected {:?})",
                ran.describe_failure(),
                sys::tail(ran.stdout.trim(), 200),
                expect,
            ));
        }
        Ok(ran.elapsed)
    }

    /// A read-only mount of `bin` over `lowers` at `mnt`, with the
    /// configured mount options and RLIMIT_NOFILE.
    fn mount_ro(
        &self,
        bin: &Path,
        lowers: &[PathBuf],
        mnt: &Path,
        log: PathBuf,
    ) -> Result<Daemon, String> {
        let flavor = Flavor::Fimfs {
            bin: bin.to_path_buf(),
            opts: self.cfg.mount_opts.clone(),
        };
        let mut d =
            Daemon::new(flavor, mnt.to_path_buf(), lowers, log).with_nofile(self.cfg.nofile);
        d.mount(None)?;
        Ok(d)
    }

    fn unmount(&mut self, mut d: Daemon) {
        let res = d.unmount();
        self.warnings.append(&mut d.problems);
        if let Err(e) = res {
            eprintln!("fimfs-scale: warning: {e}");
            self.warnings.push(e);
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = env::args().collect();
    if argv.get(1).map(String::as_str) == Some(sys::HELPER) {
        return match sys::helper(&argv[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fimfs-scale helper: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let bench = argv[1..].iter().any(|a| a == "--bench");
    let in_test = env_flag("FIMFS_SCALE_IN_TEST");
    if !bench && !in_test {
        println!(
            "scale bench: not run outside `cargo bench` (needs root, FUSE and minutes); \
             set FIMFS_SCALE_IN_TEST=1 to run a small version"
        );
        return ExitCode::SUCCESS;
    }
    let filters: Vec<String> = argv[1..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    if !sys::is_root() {
        eprintln!("fimfs-scale: must run as root (FUSE, overlay mounts, drop_caches)");
        return ExitCode::FAILURE;
    }
    let cfg = match Config::from_env(in_test, &filters) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fimfs-scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run_all(cfg) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("fimfs-scale: FAILED (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fimfs-scale: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether every part ran and every output was right.
fn run_all(cfg: Config) -> Result<bool, String> {
    let (base, run) = common::fresh_run_dir(&cfg.dir, "FIMFS_SCALE_DIR", "fimfs-scale")?;
    fs::create_dir_all(&run).map_err(|e| format!("{}: {e}", run.display()))?;
    sys::install_signal_cleanup(run.clone(), false, "fimfs-scale");

    let mut notes = Vec::new();
    let fstype = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&base)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if fstype == "tmpfs" || fstype == "ramfs" {
        notes.push(format!(
            "{} is on {fstype}: the cold figures mean nothing there",
            base.display()
        ));
    }
    let origin = find_fimfs("fimfs-scale")?;
    // A private copy: others rebuilding target/release/fimfs during the run
    // must not change what is measured.
    let pinned = run.join("fimfs");
    fs::copy(&origin, &pinned).map_err(|e| format!("copying {}: {e}", origin.display()))?;
    let exe = env::current_exe().map_err(|e| e.to_string())?;
    let baseline_origin = common::find_baseline().transpose()?;
    let baseline = match &baseline_origin {
        Some(bin) => Some(common::pin(bin, &run, "fimfs-baseline")?),
        None => None,
    };

    let mut ctx = Ctx {
        cfg,
        run: run.clone(),
        fimfs: pinned,
        baseline,
        exe,
        warnings: Vec::new(),
    };
    let revision = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "src",
                "Cargo.toml",
                "Cargo.lock",
            ])
            .is_some_and(|s| !s.is_empty());
            format!(
                ", source {rev}{}",
                if dirty {
                    " with uncommitted changes in src/ or Cargo.*"
                } else {
                    ""
                }
            )
        }
        None => String::new(),
    };
    let mut report = String::new();
    let _ = writeln!(report, "# fimfs scale figures\n");
    let _ = writeln!(
        report,
        "- fimfs: `{}` (run from a copy){revision}{}\n- kernel {}, {} CPUs, trees in `{}` ({fstype})\n- every \
         command runs as `sh -c CMD` directly on the mount; times are wall-clock from spawn to exit, \
         median of the repetitions (min–max in brackets)\n",
        origin.display(),
        baseline_origin
            .as_ref()
            .map(|b| format!(
                "\n- fimfs-baseline: `{}` (FIMFS_BENCH_BASELINE)",
                b.display()
            ))
            .unwrap_or_default(),
        uname(),
        cpus(),
        base.display()
    );

    let mut ok = true;
    if ctx.cfg.memory {
        ok &= memory_part(&mut ctx, &base, &mut report, "");
        // The baseline binary through the same part, its section beside.
        if let Some(b) = ctx.baseline.clone() {
            let current = std::mem::replace(&mut ctx.fimfs, b);
            ok &= memory_part(&mut ctx, &base, &mut report, ", fimfs-baseline");
            ctx.fimfs = current;
        }
    }
    if ctx.cfg.flat {
        match flatness(&mut ctx, &base, &mut notes) {
            Ok(s) => report.push_str(&s),
            Err(e) => {
                ok = false;
                eprintln!("fimfs-scale: flatness: {e}");
                let _ = writeln!(
                    report,
                    "## Flatness in the number of lowers\n\n**FAILED**: {e}\n"
                );
            }
        }
    }
    notes.extend(ctx.warnings.iter().map(|w| format!("unmount: {w}")));
    if !notes.is_empty() {
        let _ = writeln!(report, "## Notes\n");
        for n in &notes {
            let _ = writeln!(report, "- {n}");
        }
        report.push('\n');
    }

    let left = sys::unmount_all_under(&run);
    if !left.is_empty() {
        eprintln!("fimfs-scale: unmounted leftovers {left:?}");
    }
    if let Err(e) = fs::remove_dir_all(&run) {
        eprintln!("fimfs-scale: removing {}: {e}", run.display());
    }

    println!("\n{report}");
    let out = target_dir().join("fimfs-scale-report.md");
    common::write_report("fimfs-scale", "report", &out, &report);
    Ok(ok)
}

// ---------------------------------------------------------------------------
// 1. Memory

struct Point {
    label: String,
    mem: Mem,
    fuse_inodes: Option<u64>,
    /// Part of the targeted `find -type f` cycles (not the stat-all extra).
    targeted: bool,
}

/// Samples the daemon's memory every 250 ms after a drop_caches until VmRSS
/// has stayed within 1 MiB for 2 s (at least 5 s, at most `max`).
fn settle(pid: u32, max: Duration) -> Result<(Mem, Duration), String> {
    let start = Instant::now();
    let mut samples: Vec<Mem> = Vec::new();
    loop {
        thread::sleep(Duration::from_millis(250));
        let m = sys::proc_mem(pid)?;
        samples.push(m);
        let waited = start.elapsed();
        let window = &samples[samples.len().saturating_sub(9)..];
        let lo = window.iter().map(|m| m.rss_kib).min().unwrap_or(0);
        let hi = window.iter().map(|m| m.rss_kib).max().unwrap_or(0);
        if (waited >= Duration::from_secs(5) && window.len() == 9 && hi - lo <= 1024)
            || waited >= max
        {
            return Ok((m, waited));
        }
    }
}

fn memory(ctx: &mut Ctx, base: &Path) -> Result<String, String> {
    let cfg = &ctx.cfg;
    let t =
        tree::mem_tree(&base.join("mem"), cfg.files).map_err(|e| format!("memory tree: {e}"))?;
    let mnt = ctx.run.join("mnt-mem");
    fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    // Start from cold caches, so every run sees the same thing.
    mounts::drop_caches(3)?;
    let d = ctx.mount_ro(&ctx.fimfs, &t.lowers, &mnt, ctx.run.join("daemon-mem.log"))?;
    let pid = d.pid();
    let slab = || sys::slab_active("fuse_inode");
    thread::sleep(Duration::from_secs(1));
    let mut points = vec![Point {
        label: "after mount".into(),
        mem: sys::proc_mem(pid)?,
        fuse_inodes: slab(),
        targeted: true,
    }];
    let nofile = sys::nofile_limit(pid).unwrap_or_else(|| "?".into());
    let expect = format!("{}\n", t.files);
    // The targeted command, `cycles` times, then (unless turned off) one
    // that looks up every file.
    let mut stages: Vec<(String, String, bool)> = (1..=cfg.cycles)
        .map(|c| {
            (
                format!("`find` #{c}"),
                format!("find {} -type f | wc -l", mnt.display()),
                true,
            )
        })
        .collect();
    if cfg.stat_all {
        stages.push((
            "`find -size 0` (stats every file)".into(),
            format!("find {} -type f -size 0 | wc -l", mnt.display()),
            false,
        ));
    }
    let mut result = Ok(());
    let mut foreign = 0;
    let flag = |n: u64| {
        if n > 0 {
            format!(" ⚠ {n} `drop_caches` by another process")
        } else {
            String::new()
        }
    };
    for (name, script, targeted) in &stages {
        let watch = mounts::ForeignDrops::start();
        eprintln!(
            "fimfs-scale: memory: {name} over {} files ...",
            thousands(t.files)
        );
        let took = match ctx.checked("memory", script, None, &expect) {
            Ok(d) => d,
            Err(e) => {
                result = Err(format!("{e}; daemon log: {}", d.log_tail()));
                break;
            }
        };
        let during = watch.count();
        points.push(Point {
            label: format!("after {name} ({}){}", fmt_dur(took), flag(during)),
            mem: sys::proc_mem(pid)?,
            fuse_inodes: slab(),
            targeted: *targeted,
        });
        mounts::drop_caches(3)?;
        let (m, waited) = settle(pid, cfg.settle_max)?;
        let after = watch.count();
        foreign += after;
        points.push(Point {
            label: format!(
                "then `drop_caches` (settled in {:.1} s){}",
                waited.as_secs_f64(),
                flag(after - during)
            ),
            mem: m,
            fuse_inodes: slab(),
            targeted: *targeted,
        });
    }
    if result.is_ok() && cfg.gdb_trim {
        // Diagnostic: memory the allocator keeps vs memory still in use.
        let out = Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "call (int)malloc_trim(0)",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => points.push(Point {
                label: "then `malloc_trim(0)` in the daemon, through gdb (diagnostic)".into(),
                mem: sys::proc_mem(pid)?,
                fuse_inodes: slab(),
                targeted: false,
            }),
            Ok(o) => eprintln!(
                "fimfs-scale: gdb malloc_trim failed: {}",
                sys::tail(String::from_utf8_lossy(&o.stderr).trim(), 300)
            ),
            Err(e) => eprintln!("fimfs-scale: cannot run gdb: {e}"),
        }
    }
    let threads = points[0].mem.threads;
    ctx.unmount(d);
    result?;
    let cfg = &ctx.cfg;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Memory: {} files over {} lowers\n",
        thousands(t.files),
        tree::MEM_LOWERS
    );
    let _ = writeln!(
        s,
        "Tree `{}/mem/l1..l{}` ({}): {} dirs of up to {} empty files, {} merged files \
         ({} stored, {} shadowed copies). Daemon: `fimfs mount -f{} l1:l2:l3 MNT` (read-only, \
         {threads} threads, open-file limit {nofile}), PID {pid}. Caches dropped before mounting. \
         The targeted command is `find MNT -type f | wc -l` ({} times); every command counted \
         {} files.\n",
        base.display(),
        tree::MEM_LOWERS,
        match t.generated_secs {
            Some(s) => format!("generated in {s:.0} s"),
            None => "reused".into(),
        },
        thousands(t.dirs),
        tree::MEM_PER_DIR,
        thousands(t.files),
        thousands(t.stored),
        thousands(t.shadowed),
        cfg.mount_opts
            .as_ref()
            .map(|o| format!(" -o {o}"))
            .unwrap_or_default(),
        cfg.cycles,
        thousands(t.files),
    );
    if foreign > 0 {
        let _ = writeln!(
            s,
            "**Disturbed**: another process dropped the caches {foreign} times during the \
             measurement (`drop_slab` in /proc/vmstat), evicting inodes behind the daemon's \
             back; rerun on a quiet machine.\n"
        );
    }
    let _ = writeln!(
        s,
        "| daemon | VmRSS | VmHWM | RssAnon | kernel `fuse_inode` objects |\n|---|---:|---:|---:|---:|"
    );
    for p in &points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            p.label,
            mib(p.mem.rss_kib),
            mib(p.mem.hwm_kib),
            mib(p.mem.anon_kib),
            p.fuse_inodes.map(thousands).unwrap_or_else(|| "?".into())
        );
    }
    let targeted: Vec<&Point> = points.iter().filter(|p| p.targeted).collect();
    let base_rss = targeted[0].mem.rss_kib;
    let after_find = &targeted[1].mem;
    let after_drop = &targeted[2].mem;
    let peak = targeted.iter().map(|p| p.mem.hwm_kib).max().unwrap_or(0);
    let grew = after_find.rss_kib.saturating_sub(base_rss);
    let gave_back = after_find.rss_kib.saturating_sub(after_drop.rss_kib);
    let share = if grew > 0 {
        gave_back as f64 / grew as f64
    } else {
        1.0
    };
    let _ = writeln!(
        s,
        "\n- Peak (VmHWM) over the `find -type f` cycles: {} (target: under 150 MiB): {}",
        mib(peak),
        mark(peak < 150 * 1024)
    );
    let _ = writeln!(
        s,
        "- VmRSS after the first `drop_caches`: {} → {}, giving back {:.0}% of the {} the \
         find added (target: falls, counted as giving back at least half): {}",
        mib(after_find.rss_kib),
        mib(after_drop.rss_kib),
        share * 100.0,
        mib(grew),
        mark(share >= 0.5)
    );
    if targeted.len() >= 5 {
        let last = &targeted[targeted.len() - 1].mem;
        let _ = writeln!(
            s,
            "- After the last `find -type f` cycle VmRSS is {} (first: {}): steady growth \
             across cycles would point to a leak rather than to memory kept for reuse",
            mib(last.rss_kib),
            mib(after_drop.rss_kib)
        );
    }
    if cfg.stat_all && points.len() >= targeted.len() + 2 {
        let p = &points[targeted.len()];
        let _ = writeln!(
            s,
            "- Not a target: `find -type f` reads directories (the kernel creates inodes only \
             for what READDIRPLUS returns, see the `fuse_inode` column), while `find -size 0` \
             looks up every file: {} VmRSS with {} kernel inodes",
            mib(p.mem.rss_kib),
            p.fuse_inodes.map(thousands).unwrap_or_else(|| "?".into())
        );
    }
    let _ = writeln!(
        s,
        "- `fuse_inode` objects are system-wide (every FUSE mount) from `/proc/slabinfo`: \
         their fall shows that the kernel evicted the inodes, and so sent the FORGETs\n"
    );
    Ok(s)
}

/// The memory part into `report`, its heading followed by `which`; whether
/// it ran and its outputs were right.
fn memory_part(ctx: &mut Ctx, base: &Path, report: &mut String, which: &str) -> bool {
    match memory(ctx, base) {
        Ok(s) => {
            report.push_str(&s.replacen(":", &format!("{which}:"), 1));
            true
        }
        Err(e) => {
            eprintln!("fimfs-scale: memory{which}: {e}");
            let _ = writeln!(report, "## Memory{which}\n\n**FAILED**: {e}\n");
            false
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Flatness in the number of lowers

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fs {
    Fimfs,
    Kernel,
    /// `FIMFS_BENCH_BASELINE`, mounted as fimfs is.
    Baseline,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Fimfs => "fimfs",
            Fs::Kernel => "kernel",
            Fs::Baseline => "fimfs-baseline",
        }
    }
}

struct Variant {
    fs: Fs,
    many: bool,
    mnt: PathBuf,
    daemon: Option<Daemon>,
    kernel: Option<KernelOverlay>,
}

impl Variant {
    fn label(&self, lowers: usize) -> String {
        format!(
            "{} {}",
            self.fs.name(),
            if self.many {
                format!("{lowers} lowers")
            } else {
                "1 lower".into()
            }
        )
    }

    fn ns(&self) -> Option<i32> {
        self.kernel.as_ref().map(|k| k.ns_fd())
    }
}

impl Ctx {
    /// The file systems the flatness part compares.
    fn variant_fs(&self) -> Vec<Fs> {
        let mut v = vec![Fs::Fimfs];
        if self.cfg.kernel {
            v.push(Fs::Kernel);
        }
        if self.baseline.is_some() {
            v.push(Fs::Baseline);
        }
        v
    }

    fn mount_variant(&mut self, v: &mut Variant, t: &tree::FlatTree) -> Result<(), String> {
        self.unmount_variant(v);
        match v.fs {
            Fs::Fimfs | Fs::Baseline => {
                let bin = match (v.fs, &self.baseline) {
                    (Fs::Baseline, Some(b)) => b,
                    _ => &self.fimfs,
                };
                let lowers = if v.many { &t.many } else { &t.one };
                let log = self.run.join(format!(
                    "daemon-flat-{}-{}.log",
                    v.fs.name(),
                    if v.many { "many" } else { "one" }
                ));
                v.daemon = Some(self.mount_ro(bin, lowers, &v.mnt, log)?);
            }
            Fs::Kernel => {
                let (base, lowers) = if v.many {
                    (&t.many_base, &t.many)
                } else {
                    (&t.one_base, &t.one)
                };
                let mut names: Vec<String> = lowers
                    .iter()
                    .map(|l| l.file_name().unwrap().to_string_lossy().into_owned())
                    .collect();
                if names.len() == 1 {
                    // overlayfs refuses a single lower without an upper.
                    names.push(tree::EMPTY_LOWER.into());
                }
                v.kernel = Some(KernelOverlay::mount(&self.exe, base, &names, &v.mnt)?);
            }
        }
        Ok(())
    }

    fn unmount_variant(&mut self, v: &mut Variant) {
        if let Some(d) = v.daemon.take() {
            self.unmount(d);
        }
        v.kernel = None;
    }
}

fn flatness(ctx: &mut Ctx, base: &Path, notes: &mut Vec<String>) -> Result<String, String> {
    let lowers = ctx.cfg.lowers;
    let t = tree::flat_tree(&base.join("flat"), ctx.cfg.flat_files, lowers)
        .map_err(|e| format!("flatness tree: {e}"))?;
    let list = ctx.run.join("bottom-only.list");
    fs::write(&list, t.bottom_only.join("\n") + "\n").map_err(|e| e.to_string())?;

    let mut variants = Vec::new();
    for fs_ in ctx.variant_fs() {
        for many in [false, true] {
            let name = format!("mnt-{}-{}", fs_.name(), if many { "many" } else { "one" });
            let mnt = ctx.run.join(name);
            fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
            variants.push(Variant {
                fs: fs_,
                many,
                mnt,
                daemon: None,
                kernel: None,
            });
        }
    }
    let result = flatness_measure(ctx, &t, &list, &mut variants, notes);
    for v in &mut variants {
        ctx.unmount_variant(v);
    }
    let (times, mems) = result?;

    // The report.
    let warm_name = format!(
        "`find -type f \\| wc -l`, warm ({} files)",
        thousands(t.files)
    );
    let cold_name = format!(
        "`stat` of the {} bottom-only files, cold",
        thousands(t.bottom_only.len() as u64)
    );
    let mut s = String::new();
    let _ = writeln!(s, "## Flatness in the number of lowers: 1 vs {lowers}\n");
    let _ = writeln!(
        s,
        "Trees `{}/flat/o/l0` and `{0}/flat/m/l00..` ({}): the same {} merged files in {} dirs. \
         With {lowers} lowers every dir is in every lower, {} files per dir go round-robin over the \
         lowers and {} per dir only in the bottom lower. fimfs: `fimfs mount -f{} LOWERS MNT` \
         mounted before the timed part. Kernel: `mount -t overlay -o ro,lowerdir=…` (relative \
         lower paths; its \"1 lower\" has an empty second lower, as overlayfs needs two \
         without an upper) in a private mount namespace held by a helper process, commands enter it \
         with setns(2). Warm: {} repetitions after one untimed run on a persistent mount. Cold: \
         {} repetitions, each on a fresh mount after `sync; echo 3 > drop_caches`. Variants \
         are interleaved.\n",
        base.display(),
        match t.generated_secs {
            Some(s) => format!("generated in {s:.1} s"),
            None => "reused".into(),
        },
        thousands(t.files),
        thousands(t.dirs),
        tree::FLAT_PER_DIR,
        tree::FLAT_BOTTOM_PER_DIR,
        ctx.cfg
            .mount_opts
            .as_ref()
            .map(|o| format!(" -o {o}"))
            .unwrap_or_default(),
        ctx.cfg.reps,
        ctx.cfg.cold_reps,
    );
    let cell = |w: &str, fs_: Fs, many: bool| -> Option<(Duration, String)> {
        let v = times.get(&(w.to_string(), fs_, many))?;
        let lo = v.iter().min()?;
        let hi = v.iter().max()?;
        let m = median(v);
        Some((
            m,
            format!("{} ({}–{})", fmt_dur(m), fmt_dur(*lo), fmt_dur(*hi)),
        ))
    };
    // The kernel's columns stay even when it did not run; the baseline's
    // come only with a baseline.
    let mut shown = vec![Fs::Fimfs, Fs::Kernel];
    if ctx.baseline.is_some() {
        shown.push(Fs::Baseline);
    }
    let mut head = vec!["workload".to_string()];
    for fs_ in &shown {
        let n = fs_.name();
        head.push(format!("{n} 1 lower"));
        head.push(format!("{n} {lowers} lowers"));
        head.push(match fs_ {
            Fs::Kernel => "kernel ratio".into(),
            _ => format!("{n} ratio (target ≤ 1.20x)"),
        });
    }
    s.push_str(&Table::new(&head).text());
    for (key, name) in [("warm", &warm_name), ("cold", &cold_name)] {
        let mut row = format!("| {name} |");
        for &fs_ in &shown {
            let one = cell(key, fs_, false);
            let many = cell(key, fs_, true);
            for c in [&one, &many] {
                row.push_str(&format!(
                    " {} |",
                    c.as_ref().map(|c| c.1.clone()).unwrap_or("n/a".into())
                ));
            }
            match (one, many) {
                (Some(o), Some(m)) => {
                    let r = m.0.as_secs_f64() / o.0.as_secs_f64();
                    if fs_ != Fs::Kernel {
                        row.push_str(&format!(" {r:.2}x {} |", mark(r <= 1.2)));
                    } else {
                        row.push_str(&format!(" {r:.2}x |"));
                    }
                }
                _ => row.push_str(" n/a |"),
            }
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(
        s,
        "\n- ratio = median with {lowers} lowers / median with 1 lower; the same file \
         listing (`find -printf '%P %y'`) was checked on every variant first"
    );
    if let (Some(one), Some(many)) = (mems.get(&false), mems.get(&true)) {
        let fds = |f: &Option<usize>| f.map(|n| thousands(n as u64)).unwrap_or("?".into());
        let _ = writeln!(
            s,
            "- fimfs daemon after the warm runs: VmRSS {} with 1 lower, {} with {lowers} lowers; \
             open fds {} and {} (open-file limit {})",
            mib(one.0.rss_kib),
            mib(many.0.rss_kib),
            fds(&one.1),
            fds(&many.1),
            many.2.as_deref().unwrap_or("?"),
        );
    }
    s.push('\n');
    Ok(s)
}

type Times = BTreeMap<(String, Fs, bool), Vec<Duration>>;
/// Per fimfs variant (many lowers?): memory, open fds, open-file limit.
type DaemonFigures = BTreeMap<bool, (Mem, Option<usize>, Option<String>)>;

fn flatness_measure(
    ctx: &mut Ctx,
    t: &tree::FlatTree,
    list: &Path,
    variants: &mut Vec<Variant>,
    notes: &mut Vec<String>,
) -> Result<(Times, DaemonFigures), String> {
    let lowers = ctx.cfg.lowers;
    // Mount everything; a kernel side that cannot mount is a note, not a
    // failure (it is only the reference).
    let mut kept = Vec::new();
    let mut failed = None;
    for mut v in variants.drain(..) {
        let label = v.label(lowers);
        match ctx.mount_variant(&mut v, t) {
            Ok(()) => kept.push(v),
            // Only fimfs must mount; the others are references.
            Err(e) if v.fs != Fs::Fimfs => {
                eprintln!("fimfs-scale: warning: {label}: {e}");
                notes.push(format!("{label} unavailable: {e}"));
            }
            Err(e) => {
                failed.get_or_insert(format!("{label}: {e}"));
                kept.push(v);
            }
        }
    }
    variants.append(&mut kept);
    if let Some(e) = failed {
        return Err(e);
    }

    // Same listing on every variant.
    let expected = t.listing.join("\n") + "\n";
    for v in variants.iter() {
        let script = format!("find {} -mindepth 1 -printf '%P %y\\n'", v.mnt.display());
        let ran = sys::run_sh(&script, v.ns(), ctx.cfg.timeout)?;
        let mut lines: Vec<&str> = ran.stdout.lines().collect();
        lines.sort();
        let got = lines.join("\n") + "\n";
        if !ran.status.success() || got != expected {
            let first = t
                .listing
                .iter()
                .zip(lines.iter())
                .find(|(a, b)| a.as_str() != **b)
                .map(|(a, b)| format!("first difference: expected {a:?}, got {b:?}"))
                .unwrap_or_else(|| {
                    format!("{} entries, expected {}", lines.len(), t.listing.len())
                });
            let fds = match &v.daemon {
                Some(d) => {
                    let limit = sys::nofile_limit(d.pid());
                    let hint = match limit.as_deref().and_then(|l| l.parse::<u64>().ok()) {
                        Some(l) if ran.stderr.contains("Too many open files") => {
                            let dirs = l.saturating_sub(500) / lowers as u64;
                            format!(
                                ". fimfs holds a descriptor per directory and lower: raise the \
                                 daemon's limit (FIMFS_SCALE_NOFILE=N, needs CAP_SYS_RESOURCE) or \
                                 use at most {dirs} dirs (FIMFS_SCALE_FLAT_FILES={})",
                                dirs * tree::FLAT_PER_DIR
                            )
                        }
                        _ => String::new(),
                    };
                    format!(
                        "; the daemon holds {} open fds (open-file limit {}){hint}",
                        sys::fd_count(d.pid()).map_or("?".into(), |n| n.to_string()),
                        limit.as_deref().unwrap_or("?"),
                    )
                }
                None => String::new(),
            };
            return Err(format!(
                "{}: the listing is wrong ({}; {first}{fds}); stderr: {}",
                v.label(lowers),
                ran.status,
                sys::tail(ran.stderr.trim(), 400)
            ));
        }
    }
    eprintln!(
        "fimfs-scale: flatness: all {} variants list the same {} entries",
        variants.len(),
        t.listing.len()
    );

    let warm = |v: &Variant| format!("find {} -type f | wc -l", v.mnt.display());
    let cold = |v: &Variant| {
        format!(
            "cd {} && xargs stat -c x < {} | wc -l",
            v.mnt.display(),
            list.display()
        )
    };
    let warm_expect = format!("{}\n", t.files);
    let cold_expect = format!("{}\n", t.bottom_only.len());
    let mut times: Times = BTreeMap::new();

    // Warm: one untimed run each, then the repetitions, interleaved (the
    // order reversed every other round).
    for v in variants.iter() {
        ctx.checked(&v.label(lowers), &warm(v), v.ns(), &warm_expect)?;
    }
    eprintln!(
        "fimfs-scale: flatness: warm find, {} repetitions ...",
        ctx.cfg.reps
    );
    let watch = mounts::ForeignDrops::start();
    for rep in 0..ctx.cfg.reps {
        let order = interleaved(variants.len(), rep);
        for i in order {
            let v = &variants[i];
            let d = ctx.checked(&v.label(lowers), &warm(v), v.ns(), &warm_expect)?;
            times
                .entry(("warm".into(), v.fs, v.many))
                .or_default()
                .push(d);
        }
    }
    let foreign_warm = watch.count();
    let mut mems = BTreeMap::new();
    for v in variants.iter().filter(|v| v.fs == Fs::Fimfs) {
        if let Some(d) = &v.daemon {
            mems.insert(
                v.many,
                (
                    sys::proc_mem(d.pid())?,
                    sys::fd_count(d.pid()),
                    sys::nofile_limit(d.pid()),
                ),
            );
        }
    }

    // Cold: remount, drop caches, time.
    eprintln!(
        "fimfs-scale: flatness: cold stat, {} repetitions ...",
        ctx.cfg.cold_reps
    );
    let watch = mounts::ForeignDrops::start();
    for rep in 0..ctx.cfg.cold_reps {
        let order = interleaved(variants.len(), rep);
        for i in order {
            let v = &mut variants[i];
            ctx.mount_variant(v, t)
                .map_err(|e| format!("{}: {e}", v.label(lowers)))?;
            mounts::drop_caches(3)?;
            let d = ctx.checked(&v.label(lowers), &cold(v), v.ns(), &cold_expect)?;
            times
                .entry(("cold".into(), v.fs, v.many))
                .or_default()
                .push(d);
        }
    }
    for (phase, n) in [("warm", foreign_warm), ("cold", watch.count())] {
        if n > 0 {
            notes.push(format!(
                "flatness, {phase} runs: disturbed, another process dropped the caches {n} times \
                 (`drop_slab` in /proc/vmstat); rerun on a quiet machine"
            ));
        }
    }
    Ok((times, mems))
}

/// The order of `n` variants in repetition `rep`: reversed every other
/// repetition, so that no variant always runs first.
fn interleaved(n: usize, rep: usize) -> Vec<usize> {
    match rep % 2 {
        0 => (0..n).collect(),
        _ => (0..n).rev().collect(),
    }
}

//! The union benchmark's runner: sets the run up (trees, fixtures, the
//! sandbox, the daemon sides), prepares each iteration (fresh upper,
//! remount, dropped caches) outside the timed part, times it, checks each
//! workload's output once before timing, and tears everything down.
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, SamplingMode};

use crate::catalogue::{Kind, Side, Union, Workload, specs};
use crate::common::config::Args;
use crate::common::mounts::{self, Daemon, Flavor};
use crate::common::report::{fmt_ns, mean_ns};
use crate::common::{find_fimfs, target_dir};
use crate::report::Status;
use crate::sys::{self, Launcher};
use crate::{Bench, Config, WIDE_ENTRIES, common, fixtures, tree};

impl Bench {
    pub(crate) fn setup(cfg: Config) -> Result<Bench, String> {
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
        let baseline_origin = bench_baseline(&run, &cfg, &mut flavors);
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
            debroot: None,
            exe: env::current_exe().map_err(|e| e.to_string())?,
            flavors,
            daemons: RefCell::new(BTreeMap::new()),
            fimfs_origin,
            baseline_origin,
            measured: RefCell::new(BTreeMap::new()),
            cpu: RefCell::new(BTreeMap::new()),
            requests: RefCell::new(BTreeMap::new()),
            failures: RefCell::new(BTreeMap::new()),
            started,
            run,
            cfg,
        })
    }

    /// The sides criterion measures in this run.
    pub(crate) fn criterion_sides(&self) -> Vec<Side> {
        Side::criterion(self.flavors.contains_key(&Side::Baseline))
    }

    /// Every side of this run: the kernel, then the daemon sides.
    pub(crate) fn sides(&self) -> Vec<Side> {
        std::iter::once(Side::Kernel)
            .chain(self.flavors.keys().copied())
            .collect()
    }

    pub(crate) fn lowers(&self, u: Union) -> &[PathBuf] {
        match u {
            Union::Main => &self.tree.lowers,
            Union::Root => &self.rootfs.lowers,
            Union::Wide => &self.wide.lowers,
            Union::Deep => &self.deep.lowers,
            Union::Debroot => match &self.debroot {
                Some(Ok(d)) => std::slice::from_ref(&d.root),
                _ => &[],
            },
        }
    }

    /// `run/<union>-<side>/`: the side's `upper/` and `work/`, and for a
    /// daemon side its mount point `mnt/`.
    pub(crate) fn side_dir(&self, u: Union, side: Side) -> PathBuf {
        self.run.join(format!("{}-{}", u.name(), side.name()))
    }

    /// The sandboxed `sh -c` for one side. `set -e` so that a failing
    /// command inside a loop fails the run (same on every side).
    pub(crate) fn command(
        &self,
        side: Side,
        u: Union,
        kind: Kind,
        as_root: bool,
        script: &str,
    ) -> Command {
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
    pub(crate) fn prepare(&self, side: Side, u: Union, kind: Kind) -> Result<(), String> {
        let io = |e: std::io::Error| e.to_string();
        let dir = self.side_dir(u, side);
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        let drop_caches = || mounts::drop_caches(3);
        if side == Side::Kernel {
            return match kind {
                Kind::Warm => Ok(()),
                Kind::Cold => drop_caches(),
                Kind::Write => {
                    mounts::reset_dir(&upper).map_err(io)?;
                    mounts::reset_dir(&work).map_err(io)?;
                    mounts::sync();
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
                mounts::reset_dir(&upper).map_err(io)?;
                mounts::reset_dir(&work).map_err(io)?;
                d.mount(Some(&upper))?;
                mounts::sync();
                Ok(())
            }
        }
    }

    pub(crate) fn unmount_daemons(&self) {
        for d in self.daemons.borrow_mut().values_mut() {
            if let Err(e) = d.unmount() {
                eprintln!("fimfs-bench: {e}");
            }
        }
    }

    pub(crate) fn daemon_cpu(&self, u: Union, side: Side) -> Option<Duration> {
        self.daemons.borrow().get(&(u, side))?.cpu_time()
    }

    /// One untimed run of the workload plus its check; the output must match.
    pub(crate) fn preflight(&self, w: &Workload, side: Side) -> Result<(), String> {
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
    pub(crate) fn cross_check(&self, side: Side) -> Result<(), String> {
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
    pub(crate) fn fail(&self, w: &Workload, side: Side, msg: String) {
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
    pub(crate) fn iteration(&self, w: &Workload, side: Side) -> Duration {
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
    pub(crate) fn run_peer(&self, w: &Workload, side: Side, runs: usize) {
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

    pub(crate) fn own_mean(&self, key: &(String, Side)) -> Option<f64> {
        mean_ns(self.measured.borrow().get(key)?)
    }

    pub(crate) fn teardown(&mut self) {
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

/// The baseline side (`FIMFS_BENCH_BASELINE`): a pinned copy of the older
/// binary, mounted as fimfs is. Returns the binary as found.
fn bench_baseline(
    run: &Path,
    cfg: &Config,
    flavors: &mut BTreeMap<Side, Result<Flavor, String>>,
) -> Option<String> {
    let found = common::find_baseline()?.and_then(|bin| {
        let pinned = common::pin(&bin, run, "fimfs-baseline")?;
        Ok((bin, pinned))
    });
    match found {
        Ok((bin, pinned)) => {
            eprintln!("fimfs-bench: baseline binary: {}", bin.display());
            let opts = cfg.mount_opts.clone();
            flavors.insert(Side::Baseline, Ok(Flavor::Fimfs { bin: pinned, opts }));
            Some(bin.display().to_string())
        }
        Err(e) => {
            flavors.insert(Side::Baseline, Err(e));
            Some("unavailable".into())
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub fn run_all(c: &mut Criterion, mut cfg: Config, args: &Args) -> Result<(), String> {
    let require_fimfs = cfg.require_fimfs;
    if args.test {
        cfg.peers_runs = 1;
    }
    let mut bench = Bench::setup(cfg)?;
    let sides = bench.sides();
    let mut skipped: BTreeMap<(String, Side), String> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();

    let selected: BTreeSet<(String, Side)> = specs(&bench.cfg)
        .iter()
        .flat_map(|w| sides.iter().map(|&s| (w.group.clone(), s)))
        .filter(|(g, s)| args.may_select(&format!("{g}/{}", s.name())))
        .collect();
    bench.prepare_debroot(&selected);
    let workloads = bench.workloads();
    // Without its fixture the package-install workload is skipped on every
    // side, the kernel's included.
    if let Some(Err(why)) = &bench.debroot {
        for w in workloads.iter().filter(|w| w.union == Union::Debroot) {
            eprintln!("fimfs-bench: skipping {}: {why}", w.group);
            for &s in &sides {
                skipped.insert((w.group.clone(), s), why.clone());
            }
        }
    }

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
        for side in bench.criterion_sides() {
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
        let fimfs = (w.group.clone(), Side::Fimfs);
        if w.stats && selected.contains(&fimfs) && !skipped.contains_key(&fimfs) {
            bench.count_requests(w);
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

/// The package-install fixture (`debroot`) is prepared here, where the
/// workloads (`catalogue`) and the fixture meet; `debroot` knows neither.
impl crate::Bench {
    /// Makes or finds the fixture when a package-install workload is among
    /// the `selected` (group, side) pairs; otherwise leaves it unset.
    pub(crate) fn prepare_debroot(
        &mut self,
        selected: &std::collections::BTreeSet<(String, crate::catalogue::Side)>,
    ) {
        let wanted = crate::catalogue::specs(&self.cfg)
            .iter()
            .filter(|s| s.union == crate::catalogue::Union::Debroot)
            .any(|s| selected.iter().any(|(g, _)| *g == s.group));
        if !wanted {
            return;
        }
        let cache = self.cfg.base.join("cache");
        let res = crate::debroot::prepare(&cache);
        if let Ok(d) = &res {
            eprintln!(
                "fimfs-bench: package install: {} root {}, {} .debs ({} files)",
                crate::debroot::VARIANT,
                d.root.display(),
                d.debs.len(),
                d.files
            );
        }
        self.debroot = Some(res);
    }
}

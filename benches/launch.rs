//! Start-up of `fimfs run`: the time from spawning the launcher until the
//! command inside the sandbox starts, per backend, against plain
//! `bwrap --overlay` with the same arguments over the same 20 lowers.
//!
//! "The command starts" is observed, not guessed: the command opens a FIFO
//! the benchmark is blocked on, so the clock stops when the sandboxed
//! process runs its first `open` (after `sh` started). Teardown (exit,
//! unmount, cleanup) is not timed. All three run in the same process, one
//! after the other, so the ratio is meaningful on a noisy machine.
//!
//! A second set of 20 lowers holds 20,000 (empty) files each, in 20 × 10
//! directories of 100: the launcher looks into the layers for deletions the
//! kernel overlay cannot read (`launch::dialect`), and that look must not
//! cost a launch over big layers more than 10%. `FIMFS_BENCH_BASELINE=BIN`
//! times another fimfs binary (an older build) on the same layers in the
//! same run on every fimfs variant (`…_baseline` rows), for a before/after
//! comparison on one noisy machine.
//!
//! `cargo bench --bench launch` (root, FUSE, bubblewrap >= 0.10 on PATH or
//! in FIMFS_BWRAP). Prints a `variant | median | ratio` table and writes it
//! to `target/fimfs-launch-report.md`.
#[path = "common/mod.rs"]
mod common;

use common::report::{Table, median};
use common::target_dir;
use criterion::Criterion;
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOWERS: usize = 20;
/// Files per lower of the big set: 20 directories × 10 × 100.
const BIG_FILES: usize = 20_000;

struct Setup {
    dir: PathBuf,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    target: PathBuf,
    fifo: PathBuf,
    bwrap: PathBuf,
}

fn bwrap_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FIMFS_BWRAP") {
        return p.into();
    }
    let out = Command::new("sh")
        .args(["-c", "command -v bwrap"])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Fills lower `i` of the big set: `d00..d19/e0..e9/f000..f099`, empty.
fn fill_big(l: &Path, i: usize) {
    for d in 0..BIG_FILES / 1000 {
        for e in 0..10 {
            let dir = l.join(format!("d{d:02}/e{e}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..100 {
                fs::File::create(dir.join(format!("f{f:03}-{i:02}"))).unwrap();
            }
        }
    }
}

impl Setup {
    /// `big`: lowers of [`BIG_FILES`] files each, else of 50.
    fn new(big: bool) -> Setup {
        let base = std::env::var_os("FIMFS_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/fimfs-bench"));
        let tag = if big { "big" } else { "small" };
        let dir = base.join(format!("launch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut lowers = Vec::new();
        // Top-most first, as `fimfs run` takes them; each with a directory
        // of its own and a shared one, so the overlay has something to merge.
        for i in 0..LOWERS {
            let l = dir.join(format!("l{i:02}"));
            fs::create_dir_all(l.join("shared")).unwrap();
            fs::create_dir_all(l.join(format!("only{i:02}"))).unwrap();
            for f in 0..50 {
                fs::write(l.join(format!("shared/f{i:02}-{f:02}")), b"x").unwrap();
            }
            if big {
                fill_big(&l, i);
            }
            lowers.push(l);
        }
        let target = dir.join("view");
        fs::create_dir_all(&target).unwrap();
        let fifo = dir.join("started.fifo");
        let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(st.success(), "mkfifo");
        Setup {
            upper: dir.join("data/root"),
            work: dir.join("data/work"),
            dir,
            lowers,
            target,
            fifo,
            bwrap: bwrap_path(),
        }
    }

    fn script(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(": > {}", self.fifo.display()),
        ]
    }

    /// Plain bwrap with the arguments `fimfs run --target` gives it.
    fn plain(&self) -> Command {
        let work = self.dir.join("plain-work");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        fs::create_dir_all(&self.upper).unwrap();
        let mut c = Command::new(&self.bwrap);
        c.args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]);
        for l in self.lowers.iter().rev() {
            c.arg("--overlay-src").arg(l);
        }
        c.arg("--overlay")
            .arg(&self.upper)
            .arg(&work)
            .arg(&self.target)
            .arg("--die-with-parent")
            .arg("--")
            .args(self.script());
        c
    }

    fn fimfs(&self, overlay: &str) -> Command {
        self.fimfs_bin(Path::new(env!("CARGO_BIN_EXE_fimfs")), overlay)
    }

    fn fimfs_bin(&self, bin: &Path, overlay: &str) -> Command {
        let mut c = Command::new(bin);
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect();
        c.env("FIM_OVERLAY", overlay)
            .env("FIMFS_BWRAP", &self.bwrap)
            .arg("run")
            .arg("--target")
            .arg(&self.target)
            .arg("--workdir")
            .arg(&self.work)
            .arg(lowers.join(":"))
            .arg(&self.upper)
            .arg("--")
            .args(self.script());
        c
    }

    /// Spawns `cmd`, times until its command opens the FIFO, then waits
    /// (untimed) for it to end.
    fn time_start(&self, mut cmd: Command) -> Duration {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let t0 = Instant::now();
        let mut child = cmd.spawn().expect("spawn");
        let started = fs::File::open(&self.fifo).map(|_| t0.elapsed());
        let status = child.wait().expect("wait");
        let elapsed = started.expect("open the FIFO");
        assert!(status.success(), "{cmd:?} failed: {status}");
        elapsed
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !bench {
        println!("launch bench: not run outside `cargo bench` (needs root, FUSE, bwrap)");
        return;
    }
    let setup = Setup::new(false);
    let big = Setup::new(true);
    let baseline = common::find_baseline().map(|b| b.expect("FIMFS_BENCH_BASELINE"));
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    // Each variant: its name, the layer set it runs on (its FIFO), and its
    // command; ratios are to the plain bwrap of the same set. With a
    // baseline, each fimfs variant runs again with the baseline binary.
    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let rows: [(&str, &Setup, Option<&str>); 5] = [
        ("bwrap_overlay_plain", &setup, None),
        ("fimfs_run_bwrap", &setup, Some("bwrap")),
        ("fimfs_run_daemon", &setup, Some("unionfs")),
        ("bwrap_overlay_plain_20k_files", &big, None),
        ("fimfs_run_bwrap_20k_files", &big, Some("bwrap")),
    ];
    let mut variants: Vec<(String, &Setup, Make<'_>)> = Vec::new();
    for (name, on, overlay) in rows {
        let Some(overlay) = overlay else {
            variants.push((name.into(), on, Box::new(move || on.plain())));
            continue;
        };
        variants.push((name.into(), on, Box::new(move || on.fimfs(overlay))));
        if let Some(bin) = &baseline {
            let make = move || on.fimfs_bin(bin, overlay);
            variants.push((format!("{name}_baseline"), on, Box::new(make)));
        }
    }
    let samples: Vec<RefCell<Vec<Duration>>> =
        variants.iter().map(|_| RefCell::default()).collect();
    let mut group = c.benchmark_group(format!("launch_start_{LOWERS}_lowers"));
    for ((name, on, make), seen) in variants.iter().zip(&samples) {
        group.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let d = on.time_start(make());
                        seen.borrow_mut().push(d);
                        d
                    })
                    .sum()
            })
        });
    }
    group.finish();
    let medians: Vec<Duration> = samples.iter().map(|s| median(&s.borrow())).collect();
    let mut table = Table::new(&[
        format!("from spawn to the command starting ({LOWERS} lowers)").as_str(),
        "median",
        "ratio to plain bwrap on the same lowers",
    ]);
    for (i, (name, on, _)) in variants.iter().enumerate() {
        let base = variants
            .iter()
            .position(|(n, o, _)| std::ptr::eq(*o, *on) && n.starts_with("bwrap_overlay_plain"))
            .map_or(medians[0], |j| medians[j]);
        table.row(&[
            name.clone(),
            format!("{:.2} ms", medians[i].as_secs_f64() * 1e3),
            format!(
                "{:.2}x",
                medians[i].as_secs_f64() / base.as_secs_f64().max(1e-9)
            ),
        ]);
    }
    let report = table.text();
    println!("\n{report}");
    let path = target_dir().join("fimfs-launch-report.md");
    common::write_report("launch bench", "report", &path, &report);
}

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
//! `cargo bench --bench launch` (root, FUSE, bubblewrap >= 0.10 on PATH or
//! in FIMFS_BWRAP). Prints a `variant | median | ratio` table and writes it
//! to `target/fimfs-launch-report.md`.
use criterion::Criterion;
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOWERS: usize = 20;

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

impl Setup {
    fn new() -> Setup {
        let base = std::env::var_os("FIMFS_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/fimfs-bench"));
        let dir = base.join(format!("launch-{}", std::process::id()));
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
        let mut c = Command::new(env!("CARGO_BIN_EXE_fimfs"));
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

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if !bench {
        println!("launch bench: not run outside `cargo bench` (needs root, FUSE, bwrap)");
        return;
    }
    let setup = Setup::new();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let variants: [(&str, &dyn Fn() -> Command); 3] = [
        ("bwrap_overlay_plain", &|| setup.plain()),
        ("fimfs_run_bwrap", &|| setup.fimfs("bwrap")),
        ("fimfs_run_daemon", &|| setup.fimfs("unionfs")),
    ];
    let samples: Vec<RefCell<Vec<Duration>>> =
        variants.iter().map(|_| RefCell::default()).collect();
    let mut group = c.benchmark_group(format!("launch_start_{LOWERS}_lowers"));
    for ((name, make), seen) in variants.iter().zip(&samples) {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let d = setup.time_start(make());
                        seen.borrow_mut().push(d);
                        d
                    })
                    .sum()
            })
        });
    }
    group.finish();
    let base = median(&mut samples[0].borrow_mut());
    let mut report = format!(
        "| from spawn to the command starting ({LOWERS} lowers) | median | ratio to plain bwrap |\n|---|---:|---:|\n"
    );
    for ((name, _), seen) in variants.iter().zip(&samples) {
        let m = median(&mut seen.borrow_mut());
        report.push_str(&format!(
            "| {name} | {:.2} ms | {:.2}x |\n",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / base.as_secs_f64().max(1e-9)
        ));
    }
    println!("\n{report}");
    let path = target_dir().join("fimfs-launch-report.md");
    if fs::write(&path, &report).is_ok() {
        eprintln!("launch bench: report written to {}", path.display());
    }
}

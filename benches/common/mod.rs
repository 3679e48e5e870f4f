//! The harness the benchmark binaries (`benches/union`, `benches/scale`,
//! `benches/launch`, `benches/images`) share. Here: finding the `fimfs` binary (and the
//! baseline one, `FIMFS_BENCH_BASELINE`) and cargo's target directory,
//! running a command under a watchdog, cleaning up on a signal, and leaving
//! no mount behind (the mount table is read with `fimfs::mountinfo`).
//! [`config`]: the environment knobs and the command line; [`report`]:
//! formats, means, markdown tables and the run's description; [`mounts`]:
//! the FUSE daemons (fimfs, its baseline, fuse-overlayfs, unionfs-fuse)
//! and the page-cache resets around them.
//!
//! Included by each with `#[path = "../common/mod.rs"] mod common;`; each
//! binary uses a part of it, hence no dead-code warnings here.
#![allow(dead_code)]

pub mod config;
pub mod mounts;
pub mod report;

use std::env;
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Cargo's target directory, from the running benchmark's own path
/// (`target/<profile>/deps/<bench>-<hash>`).
pub fn target_dir() -> PathBuf {
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
/// `cargo build --release --bin fimfs`. `tag` starts the progress line.
pub fn find_fimfs(tag: &str) -> Result<PathBuf, String> {
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
        "{tag}: {} missing; running cargo build --release --bin fimfs",
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

/// The last `max` bytes of `s` (on a character boundary), marked with `…`
/// when cut.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Paths that go into `sh -c` strings and mount options must not need
/// quoting.
pub fn shell_safe(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    })
}

/// Runs `cmd` with no input or output; true when it exits 0.
pub fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_fuse_mounted(path: &Path) -> bool {
    fimfs::mountinfo::read()
        .iter()
        .any(|m| m.point == path && m.is_fuse())
}

/// Unmounts everything mounted at or below `dir`, deepest first. Returns
/// what it unmounted.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut done = Vec::new();
    for _round in 0..5 {
        let mut found: Vec<_> = fimfs::mountinfo::read()
            .into_iter()
            .filter(|m| m.point.starts_with(dir))
            .collect();
        if found.is_empty() {
            break;
        }
        found.sort_by_key(|m| std::cmp::Reverse(m.point.components().count()));
        for m in found {
            let p = &m.point;
            let ok = if m.is_fuse() {
                quiet(Command::new("fusermount3").arg("-u").arg(p))
                    || quiet(Command::new("fusermount3").arg("-uz").arg(p))
                    || quiet(Command::new("umount").arg("-l").arg(p))
            } else {
                quiet(Command::new("umount").arg(p))
                    || quiet(Command::new("umount").arg("-l").arg(p))
            };
            if ok {
                done.push(m.point);
            }
        }
    }
    done
}

/// The benchmark's own run directory `BASE/run-<pid>`, not created yet
/// (the caller may mount something there first), with `base` made,
/// checked to be a plain path (`var` names the variable that set it),
/// and stale runs of `tag` cleaned. Returns `(base, run)`.
pub fn fresh_run_dir(base: &Path, var: &str, tag: &str) -> Result<(PathBuf, PathBuf), String> {
    fs::create_dir_all(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let base = fs::canonicalize(base).map_err(|e| e.to_string())?;
    if !shell_safe(&base) {
        return Err(format!(
            "{var}={} must be a plain path ([A-Za-z0-9/._-+])",
            base.display()
        ));
    }
    clean_stale_runs(&base, tag);
    let run = base.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&run);
    Ok((base, run))
}

/// Copies `bin` to `dir/name` and returns the copy: others rebuilding
/// `target/release/fimfs` during the run must not change what is measured.
pub fn pin(bin: &Path, dir: &Path, name: &str) -> Result<PathBuf, String> {
    let pinned = dir.join(name);
    fs::copy(bin, &pinned)
        .map_err(|e| format!("copying {} to {}: {e}", bin.display(), pinned.display()))?;
    Ok(pinned)
}

/// The baseline fimfs binary of `FIMFS_BENCH_BASELINE`, if set: `Err` when
/// it is set but is not a file.
pub fn find_baseline() -> Option<Result<PathBuf, String>> {
    let p = config::baseline_bin()?;
    Some(if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "FIMFS_BENCH_BASELINE={} does not exist",
            p.display()
        ))
    })
}

/// Writes a report to `path`, saying so (or why not) on stderr.
pub fn write_report(tag: &str, what: &str, path: &Path, text: &str) {
    match fs::write(path, text) {
        Ok(()) => eprintln!("{tag}: {what} written to {}", path.display()),
        Err(e) => eprintln!("{tag}: writing {}: {e}", path.display()),
    }
}

/// Removes `run-<pid>` directories of earlier benchmark processes that
/// died without cleaning up, unmounting what they left first.
pub fn clean_stale_runs(base: &Path, tag: &str) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if alive {
            continue;
        }
        let dir = e.path();
        let gone = unmount_all_under(&dir);
        if !gone.is_empty() {
            eprintln!("{tag}: unmounted stale {gone:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

// ---------------------------------------------------------------------------
// Commands under a watchdog

/// Process group of the command currently running, so a signal handler can
/// kill it before unmounting.
static CHILD_PGID: AtomicI32 = AtomicI32::new(0);
/// Write end of the self-pipe the signal handler writes to.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

pub struct Ran {
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn describe_failure(&self) -> String {
        let mut s = format!("{}", self.status);
        let err = self.brief_stderr();
        if !err.is_empty() {
            s.push_str(": ");
            s.push_str(&err);
        }
        s
    }

    /// The first lines of stderr, enough to see what went wrong.
    pub fn brief_stderr(&self) -> String {
        const LINES: usize = 3;
        let lines: Vec<&str> = self.stderr.trim().lines().collect();
        let mut s = lines
            .iter()
            .take(LINES)
            .map(|l| tail(l, 300))
            .collect::<Vec<_>>()
            .join("\n");
        if lines.len() > LINES {
            s.push_str(&format!("\n… ({} more lines)", lines.len() - LINES));
        }
        s
    }
}

/// Runs `cmd` in its own process group, killing the group after `timeout`.
/// The returned `elapsed` spans spawn to exit. Stdout/stderr are captured
/// unless the caller redirected them already (`capture == false`).
pub fn run(mut cmd: Command, timeout: Duration, capture: bool) -> Result<Ran, String> {
    stop_if_interrupted();
    cmd.stdin(Stdio::null()).process_group(0);
    if capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let desc = format!("{cmd:?}");
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("cannot run {desc}: {e}"))?;
    let pgid = child.id() as i32;
    CHILD_PGID.store(pgid, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on a process group we created; no memory involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            true
        } else {
            false
        }
    });
    let out = child.wait_with_output();
    let elapsed = start.elapsed();
    CHILD_PGID.store(0, Ordering::SeqCst);
    stop_if_interrupted();
    drop(tx);
    let timed_out = watchdog.join().unwrap_or(false);
    let out = out.map_err(|e| format!("waiting for {desc}: {e}"))?;
    if timed_out {
        return Err(format!(
            "timed out after {timeout:?} (killed): {desc}\nstderr: {}",
            tail(String::from_utf8_lossy(&out.stderr).trim(), 1500)
        ));
    }
    Ok(Ran {
        elapsed,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

// ---------------------------------------------------------------------------
// Signals: unmount and clean up on Ctrl-C / SIGTERM / SIGHUP.

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` outlives the call.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

static CLEANUP_ARMED: AtomicBool = AtomicBool::new(false);
/// Set once a signal started the cleanup; the main thread then stops at its
/// next command and waits for the cleanup thread to exit the process.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Parks the calling thread for good once a signal started the clean-up
/// (the clean-up thread exits the process).
pub fn stop_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// On SIGINT/SIGTERM/SIGHUP: kill the running command, unmount everything
/// under `run_dir`, remove it (unless `keep`) and exit; `tag` names the
/// benchmark in the message. (Daemons and overlay holders also die with
/// the benchmark through PR_SET_PDEATHSIG, even on SIGKILL.)
pub fn install_signal_cleanup(run_dir: PathBuf, keep: bool, tag: &'static str) {
    if CLEANUP_ARMED.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2(2) fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    SIGNAL_FD.store(fds[1], Ordering::SeqCst);
    let rfd = fds[0];
    thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(rfd, (&mut b as *mut u8).cast(), 1) };
        if n != 1 {
            return;
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
        let _ = writeln!(io::stderr(), "\n{tag}: signal {b}, cleaning up");
        let pgid = CHILD_PGID.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill(2) on our child's process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(100));
        unmount_all_under(&run_dir);
        if !keep {
            let _ = fs::remove_dir_all(&run_dir);
        }
        std::process::exit(128 + b as i32);
    });
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls write(2).
        unsafe { libc::signal(sig, handler) };
    }
}

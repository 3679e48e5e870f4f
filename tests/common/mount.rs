//! Running the fimfs binary: one-shot commands ([`run_fimfs`]), a daemon in the
//! foreground with its mount live ([`MountGuard`]), the kernel overlay as the
//! reference ([`KernelOverlayGuard`]) and the sample layer set of
//! `fixtures/build.sh` ([`build_fixtures`]).
//!
//! Invariant: every guard unmounts lazily and reaps what it started on drop.
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Instant;

use super::scratch::{is_fuse_mount, lazy_unmount, next_serial};
use super::{DAEMON_DEADLINE, FIMFS, POLL};

/// What a finished (or killed) command did.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when the command was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "exit {s}")?,
            None => write!(f, "still running after {DAEMON_DEADLINE:?}, killed")?,
        }
        write!(
            f,
            "\n--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `fimfs ARGS` with stdout and stderr going to files in `logs` (not pipes: a
/// daemonized child may keep them open for ever), killing it at the deadline.
pub fn run_fimfs(args: &[OsString], logs: &Path) -> Outcome {
    fs::create_dir_all(logs).expect("create the log directory");
    let n = next_serial();
    let out_path = logs.join(format!("run-{n}.stdout"));
    let err_path = logs.join(format!("run-{n}.stderr"));
    let mut child = Command::new(FIMFS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout log"))
        .stderr(File::create(&err_path).expect("create stderr log"))
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {FIMFS}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for fimfs") {
            break Some(s);
        }
        if start.elapsed() > DAEMON_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    Outcome {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// `DIR[:DIR...]`, top-most first.
pub fn lowers_arg(lowers: &[PathBuf]) -> OsString {
    let mut s = OsString::new();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            s.push(":");
        }
        s.push(l);
    }
    s
}

/// `mount [-o OPT]... LOWERS [UPPER] MNT`, without `-f`.
pub fn mount_args(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    mnt: &Path,
    opts: &[&str],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["mount".into()];
    for o in opts {
        args.push("-o".into());
        args.push(o.into());
    }
    args.push(lowers_arg(lowers));
    if let Some(u) = upper {
        args.push(u.into());
    }
    args.push(mnt.into());
    args
}

/// A fimfs daemon running in the foreground (`-f`), with its mount live.
/// Drop unmounts lazily and reaps the daemon (killing it if it does not exit).
/// `mount -f [-o OPT]... LOWERS [UPPER] MNT`: the daemon stays in the foreground.
fn foreground_args(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    mnt: &Path,
    opts: &[&str],
) -> Vec<OsString> {
    let mut args = mount_args(lowers, upper, mnt, opts);
    args.insert(1, "-f".into());
    args
}

pub struct MountGuard {
    mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl MountGuard {
    /// `fimfs mount -f [-o OPT]... LOWERS [UPPER] MNT`.
    pub fn new(lowers: &[PathBuf], upper: Option<&Path>, mnt: &Path, opts: &[&str]) -> Self {
        Self::spawn(&foreground_args(lowers, upper, mnt, opts), mnt)
    }

    /// Runs `fimfs ARGS` (which must keep the daemon in the foreground) and waits until
    /// `statfs(mnt)` reports FUSE. Fails the test with the daemon's stderr if it exits
    /// first or if [`DAEMON_DEADLINE`] passes.
    pub fn spawn(args: &[OsString], mnt: &Path) -> Self {
        Self::spawn_limited(Path::new(FIMFS), args, mnt, None)
    }

    /// [`MountGuard::new`] with `env` set for the daemon.
    pub fn with_env(
        lowers: &[PathBuf],
        upper: Option<&Path>,
        mnt: &Path,
        opts: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Self {
        let args = foreground_args(lowers, upper, mnt, opts);
        Self::spawn_with(Path::new(FIMFS), &args, mnt, None, env)
    }

    /// [`MountGuard::spawn`] of the fimfs binary under another name
    /// (`program`, a symlink to it: `dwarfs`, `fuse-overlayfs`, …).
    pub fn spawn_program(program: &Path, args: &[OsString], mnt: &Path) -> Self {
        Self::spawn_limited(program, args, mnt, None)
    }

    /// [`MountGuard::new`] with the daemon's `RLIMIT_NOFILE` (soft and hard) set to
    /// `nofile`, so that it cannot raise it.
    pub fn with_nofile(
        lowers: &[PathBuf],
        upper: Option<&Path>,
        mnt: &Path,
        opts: &[&str],
        nofile: u64,
    ) -> Self {
        Self::spawn_limited(
            Path::new(FIMFS),
            &foreground_args(lowers, upper, mnt, opts),
            mnt,
            Some(nofile),
        )
    }

    fn spawn_limited(program: &Path, args: &[OsString], mnt: &Path, nofile: Option<u64>) -> Self {
        Self::spawn_with(program, args, mnt, nofile, &[])
    }

    fn spawn_with(
        program: &Path,
        args: &[OsString],
        mnt: &Path,
        nofile: Option<u64>,
        env: &[(&str, &OsStr)],
    ) -> Self {
        let mnt = mnt.to_path_buf();
        let mut log_name = mnt.file_name().unwrap_or(OsStr::new("mnt")).to_os_string();
        log_name.push(".fimfs-stderr");
        let log = mnt.with_file_name(log_name);
        let log_file = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log fd"))
            .stderr(log_file)
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: runs in the child between fork and exec; setrlimit is
            // async-signal-safe and the closure captures a plain value.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));

        // statfs() blocks if the daemon mounted but does not answer. The watchdog kills
        // the daemon at the deadline, which aborts the connection and unblocks it.
        let child = Arc::new(Mutex::new(child));
        let timed_out = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let watchdog = {
            let child = Arc::clone(&child);
            let timed_out = Arc::clone(&timed_out);
            thread::spawn(move || {
                // Dropping the sender (ready or failed) disconnects: no kill then.
                if let Err(mpsc::RecvTimeoutError::Timeout) = ready_rx.recv_timeout(DAEMON_DEADLINE)
                {
                    timed_out.store(true, Ordering::SeqCst);
                    let _ = child.lock().unwrap().kill();
                }
            })
        };
        let failure = loop {
            if is_fuse_mount(&mnt) {
                break None;
            }
            let exited = child.lock().unwrap().try_wait().expect("wait for fimfs");
            if let Some(status) = exited {
                break Some(status);
            }
            thread::sleep(POLL);
        };
        drop(ready_tx);
        watchdog.join().expect("watchdog thread");
        let Ok(child) = Arc::try_unwrap(child) else {
            unreachable!("the watchdog thread has been joined");
        };
        let child = child.into_inner().unwrap();
        let guard = MountGuard {
            mnt,
            child: Some(child),
            log,
        };
        if let Some(status) = failure {
            let why = if timed_out.load(Ordering::SeqCst) {
                format!("the mount was not live after {DAEMON_DEADLINE:?} (daemon killed)")
            } else {
                format!("the daemon exited ({status}) before the mount was live")
            };
            let stderr = guard.stderr();
            let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            drop(guard);
            panic!(
                "fimfs {}: {why}\n--- daemon output ---\n{stderr}",
                args.join(" ")
            );
        }
        guard
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts (lazily), waits for the daemon and returns its exit status (`None` if
    /// it had to be killed) and output.
    pub fn unmount(mut self) -> (Option<ExitStatus>, String) {
        let status = self.stop(true);
        (status, self.stderr())
    }

    /// Waits for the daemon to exit by itself (the test unmounted it some other way),
    /// killing it at the deadline. Returns its exit status (`None` if it had to be
    /// killed) and output.
    pub fn wait_exit(mut self) -> (Option<ExitStatus>, String) {
        let status = self.stop(false);
        (status, self.stderr())
    }

    fn stop(&mut self, unmount_first: bool) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if unmount_first {
            lazy_unmount(&self.mnt);
        }
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if start.elapsed() < DAEMON_DEADLINE => thread::sleep(POLL),
                _ => {
                    lazy_unmount(&self.mnt);
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// The kernel overlay mounted over the same kind of layers, as a reference.
pub struct KernelOverlayGuard {
    mnt: PathBuf,
    mounted: bool,
}

impl KernelOverlayGuard {
    /// Read-only: `-o lowerdir=TOP:...:BOTTOM`.
    pub fn lowers_only(lowers: &[PathBuf], mnt: &Path) -> Self {
        let mut opts = OsString::from("lowerdir=");
        opts.push(lowers_arg(lowers));
        Self::mount(opts, mnt)
    }

    /// `-o lowerdir=...,upperdir=UPPER,workdir=WORK`.
    pub fn with_upper(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> Self {
        let mut opts = OsString::from("lowerdir=");
        opts.push(lowers_arg(lowers));
        opts.push(",upperdir=");
        opts.push(upper);
        opts.push(",workdir=");
        opts.push(work);
        Self::mount(opts, mnt)
    }

    /// `-o userxattr,lowerdir=...[,upperdir=UPPER,workdir=WORK]` (creating WORK): the
    /// dialect FlatImage's bwrap backend uses.
    pub fn userxattr(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, mnt: &Path) -> Self {
        let mut opts = OsString::from("userxattr,lowerdir=");
        opts.push(lowers_arg(lowers));
        if let Some((u, w)) = upper {
            fs::create_dir_all(w).unwrap_or_else(|e| panic!("mkdir {}: {e}", w.display()));
            opts.push(",upperdir=");
            opts.push(u);
            opts.push(",workdir=");
            opts.push(w);
        }
        Self::mount(opts, mnt)
    }

    fn mount(opts: OsString, mnt: &Path) -> Self {
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(&opts)
            .arg(mnt)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "mount -t overlay -o {} {}: {}{}",
            opts.to_string_lossy(),
            mnt.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        KernelOverlayGuard {
            mnt: mnt.to_path_buf(),
            mounted: true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// A plain `umount` (everything written reaches the upper); fails the test if it
    /// does not work.
    pub fn unmount(mut self) {
        let st = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .expect("run umount");
        self.mounted = !st.success();
        assert!(st.success(), "umount {} failed: {st}", self.mnt.display());
    }
}

impl Drop for KernelOverlayGuard {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------
// Fixtures

/// Where `fixtures/build.sh` put the sample layers.
pub struct Layers {
    /// Top-most first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub mnt: PathBuf,
}

/// Runs `fixtures/build.sh DEST` (the dialects fimfs reads) and returns the layers.
pub fn build_fixtures(dest: &Path) -> Layers {
    run_build_sh(&[dest.as_os_str()])
}

/// Runs `fixtures/build.sh --kernel-dialect DEST`: the same union, spelled so that the
/// kernel overlay reads it.
pub fn build_fixtures_kernel_dialect(dest: &Path) -> Layers {
    run_build_sh(&[OsStr::new("--kernel-dialect"), dest.as_os_str()])
}

pub fn build_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/build.sh")
}

fn run_build_sh(args: &[&OsStr]) -> Layers {
    let out = Command::new("bash")
        .arg(build_sh())
        .args(args)
        .output()
        .expect("run fixtures/build.sh");
    assert!(
        out.status.success(),
        "fixtures/build.sh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = Path::new(args[args.len() - 1]);
    Layers {
        lowers: (1..=3).map(|i| dest.join(format!("lower{i}"))).collect(),
        upper: dest.join("upper"),
        mnt: dest.join("mnt"),
    }
}

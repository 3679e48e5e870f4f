//! `fimfs run`: one command on the merged view, on the backend SPEC §5
//! picks, with FlatImage's fallback, and nothing left behind.
//!
//! Exit status: the command's; 128+N when signal N killed it; 125 for the
//! launcher's own errors (a message says which).
//!
//! Telling a refused overlay apart from a failing command: bwrap writes
//! `exit-code` on its `--json-status-fd` only for a command it started.
//! Without it, either the sandbox setup failed or the command could not be
//! executed. Only then (a rare path, so the common one pays nothing) the
//! launcher probes: the same sandbox once more, with a command that cannot
//! exist and stderr captured. bwrap naming that command means the setup
//! works and the command itself was the problem; anything else is the
//! kernel refusing the overlay, and bwrap's message is the reason logged
//! before the run goes again on the daemon. The command's stderr is never
//! redirected, so that it stays a terminal.
use super::bwrap::{self, Bwrap, Sandbox, Status, View};
use super::choice::{self, Backend, Choice};
use super::image::Image;
use super::rundir::{Reaper, RunDir, RunPaths, lock_upper};
use crate::fuse::session;
use crate::mount::{Plan, absolute, check_layout, default_work_base, is_dir_named};
use crate::opts::{MountOpts, MountRequest};
use nix::sys::signal::{SigSet, Signal};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The exit status of the launcher's own errors (as `env`, `timeout`, podman).
pub const LAUNCHER_ERROR: i32 = 125;

/// How long a run waits for the FUSE mount to answer `statfs`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What `fimfs run` was asked.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub image: Option<PathBuf>,
    /// BASE of the per-run directories (`BASE/<PID>`).
    pub workdir: Option<PathBuf>,
    pub target: PathBuf,
    pub casefold: bool,
    pub dry_run: bool,
    pub bwrap_args: Vec<OsString>,
    /// Top-most first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub command: Vec<OsString>,
}

/// The process environment the launcher reads, passed in for testability.
#[derive(Debug, Clone)]
pub struct Environment {
    pub fim_overlay: Option<OsString>,
    pub fim_casefold: Option<OsString>,
    pub fimfs_bwrap: Option<OsString>,
    pub path: Option<OsString>,
    /// How long a BWRAP run waits for an upper in use (`FIMFS_BUSY_TIMEOUT`,
    /// seconds; FlatImage's 60 s by default).
    pub busy_timeout: Duration,
}

impl Environment {
    pub fn from_process() -> Environment {
        let secs = std::env::var("FIMFS_BUSY_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(60);
        Environment {
            fim_overlay: std::env::var_os("FIM_OVERLAY"),
            fim_casefold: std::env::var_os("FIM_CASEFOLD"),
            fimfs_bwrap: std::env::var_os("FIMFS_BWRAP"),
            path: std::env::var_os("PATH"),
            busy_timeout: Duration::from_secs(secs),
        }
    }
}

/// Which program serves the view.
#[derive(Debug, Clone)]
enum Mode {
    /// The kernel overlay, mounted by this bwrap.
    Kernel,
    /// The fimfs daemon; `why` is set when BWRAP was chosen but cannot be.
    Daemon { why: Option<String> },
}

/// A checked request, ready to run.
#[derive(Debug)]
pub struct Launch {
    req: RunRequest,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    base: PathBuf,
    casefold: bool,
    choice: Choice,
    bwrap: Bwrap,
    mode: Mode,
    busy_timeout: Duration,
    /// `RLIMIT_NOFILE` as the launcher found it: the command gets this one,
    /// not the daemon's raised limit.
    nofile: (u64, u64),
}

/// Runs `req`; the process exit status.
pub fn run(req: RunRequest, env: &Environment) -> i32 {
    let launch = match Launch::prepare(req, env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fimfs: {e}");
            return LAUNCHER_ERROR;
        }
    };
    if launch.req.dry_run {
        print!("{}", launch.describe());
        return 0;
    }
    launch.execute()
}

impl Launch {
    /// Checks every input; creates nothing.
    pub fn prepare(req: RunRequest, env: &Environment) -> Result<Launch, String> {
        if req.command.is_empty() {
            return Err("no command given (fimfs run LOWERS UPPER -- COMMAND [ARG...])".into());
        }
        if !req.target.is_absolute() {
            return Err(format!(
                "--target {}: must be an absolute path",
                req.target.display()
            ));
        }
        let mut lowers = Vec::new();
        for l in &req.lowers {
            is_dir_named("lower directory", l)?;
            lowers.push(absolute(l)?);
        }
        if lowers.is_empty() {
            return Err("no lower directory given".into());
        }
        if req.upper.exists() {
            is_dir_named("upper directory", &req.upper)?;
        }
        let upper = absolute(&req.upper)?;
        let base = match &req.workdir {
            Some(w) => absolute(w)?,
            None => default_work_base(&upper),
        };
        check_layout(&lowers, &upper, &base)?;
        let (overlay_byte, casefold_byte) = match &req.image {
            Some(path) => {
                let img = Image::open(path).map_err(|e| e.to_string())?;
                (Some(img.overlay_byte()), Some(img.casefold_byte()))
            }
            None => (None, None),
        };
        let casefold =
            choice::casefold_enabled(req.casefold, env.fim_casefold.as_deref(), casefold_byte);
        let choice = choice::choose(env.fim_overlay.as_deref(), overlay_byte, casefold);
        let bwrap = bwrap::find(env.fimfs_bwrap.as_deref(), env.path.as_deref())
            .map_err(|e| format!("{e}; fimfs run needs bubblewrap to enter the view"))?;
        // A real run does not ask bwrap its version (a process on every
        // start): an old bwrap refuses --overlay-src, and the fallback says
        // why. A dry run asks, to show what would happen.
        let unreadable = (choice.backend == Backend::Bwrap)
            .then(|| super::dialect::first_unreadable(&upper, &lowers))
            .flatten();
        let mode = match choice.backend {
            Backend::Bwrap if unreadable.is_some() => Mode::Daemon {
                why: unreadable.map(|u| u.to_string()),
            },
            Backend::Bwrap if req.dry_run => match too_old(&bwrap) {
                Some(why) => Mode::Daemon { why: Some(why) },
                None => Mode::Kernel,
            },
            Backend::Bwrap => Mode::Kernel,
            _ => Mode::Daemon { why: None },
        };
        Ok(Launch {
            req,
            lowers,
            upper,
            base,
            casefold,
            choice,
            bwrap,
            mode,
            busy_timeout: env.busy_timeout,
            nofile: crate::sys::nofile_limit(),
        })
    }

    fn paths(&self) -> RunPaths {
        RunPaths::new(&self.base, std::process::id())
    }

    fn sandbox<'a>(&'a self, view: View<'a>, status_fd: Option<i32>) -> Sandbox<'a> {
        Sandbox {
            view,
            target: &self.req.target,
            extra: &self.req.bwrap_args,
            status_fd,
            command: &self.req.command,
        }
    }

    fn command_line(&self, sandbox: &Sandbox<'_>) -> String {
        let mut argv = vec![self.bwrap.path.clone().into_os_string()];
        argv.extend(sandbox.args());
        bwrap::shell_line(&argv)
    }

    /// What `--dry-run` prints: backend, why, and the bwrap command line.
    pub fn describe(&self) -> String {
        let paths = self.paths();
        let (work, mnt) = (paths.work(), paths.mount());
        let mut out = format!(
            "backend: {}\nreason: {}\n",
            self.choice.backend, self.choice.reason
        );
        let line = match &self.mode {
            Mode::Kernel => self.command_line(&self.sandbox(
                View::Overlay {
                    lowers: &self.lowers,
                    upper: &self.upper,
                    work: &work,
                },
                None,
            )),
            Mode::Daemon { why } => {
                if let Some(why) = why {
                    out.push_str(&format!("note: {why}: the fimfs daemon serves the view\n"));
                }
                out.push_str(&format!(
                    "daemon: fimfs mount {} {} {}{}\n",
                    join_lowers(&self.lowers),
                    self.upper.display(),
                    mnt.display(),
                    if self.casefold { " -o casefold" } else { "" }
                ));
                self.command_line(&self.sandbox(View::Bind(&mnt), None))
            }
        };
        out.push_str(&format!("command: {line}\n"));
        out
    }

    /// Runs the command; the exit status. Must be called while the process
    /// is single-threaded (it forks the reaper first).
    pub fn execute(self) -> i32 {
        let stop = stop_signals();
        let _ = stop.thread_block();
        let paths = self.paths();
        let reaper = match Reaper::start(&paths.dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fimfs: {e}");
                return LAUNCHER_ERROR;
            }
        };
        forward_signals(stop);
        let code = match self.execute_in(paths) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("fimfs: {e}");
                LAUNCHER_ERROR
            }
        };
        reaper.dismiss();
        code
    }

    fn execute_in(&self, paths: RunPaths) -> Result<i32, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&self.upper)
            .map_err(|e| {
                format!(
                    "upper directory {}: cannot create: {e}",
                    self.upper.display()
                )
            })?;
        let run_dir = RunDir::create(paths)?;
        let kernel = matches!(self.mode, Mode::Kernel);
        if let Mode::Daemon { why: Some(why) } = &self.mode {
            eprintln!("fimfs: {why}; running the command on the fimfs daemon instead");
        }
        let _lock = lock_upper(&self.upper, kernel, self.busy_timeout)?;
        if kernel {
            let work = run_dir.paths().work();
            let view = View::Overlay {
                lowers: &self.lowers,
                upper: &self.upper,
                work: &work,
            };
            let end = self.run_bwrap(view)?;
            if end.status.exit_code.is_some() || signalled().is_some() {
                return Ok(end.code());
            }
            match self.probe_setup(view) {
                Setup::Works => return Ok(end.code()),
                Setup::Refused(reason) => {
                    let why = match reason
                        .contains("Unknown option")
                        .then(|| too_old(&self.bwrap))
                    {
                        Some(Some(old)) => old,
                        _ => format!("the kernel overlay was refused ({reason})"),
                    };
                    eprintln!("fimfs: {why}; running the command on the fimfs daemon instead");
                }
            }
        }
        self.run_daemon(run_dir.paths())
    }

    fn run_daemon(&self, paths: &RunPaths) -> Result<i32, String> {
        let mut opts = MountOpts::default();
        opts.workdir = Some(paths.work());
        opts.casefold = self.casefold;
        let plan = Plan::check(MountRequest {
            lowers: self.lowers.clone(),
            upper: Some(self.upper.clone()),
            mountpoint: paths.mount(),
            opts,
            foreground: true,
        })?;
        let union = Arc::new(plan.build()?);
        crate::sys::raise_nofile_limit();
        let running = session::start(union, &plan.mount_config())?;
        wait_ready(running.mountpoint())?;
        if let Some(sig) = signalled() {
            return Ok(128 + sig);
        }
        let end = self.run_bwrap(View::Bind(running.mountpoint()))?;
        running.stop();
        Ok(end.code())
    }

    /// Runs bwrap with `view` and waits for it; signals go to the command.
    fn run_bwrap(&self, view: View<'_>) -> Result<BwrapEnd, String> {
        if let Some(sig) = signalled() {
            return Ok(BwrapEnd {
                status: Status::default(),
                exit: std::process::ExitStatus::from_raw(sig),
            });
        }
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("pipe: {}", e.desc()))?;
        crate::sys::inherit_on_exec(wr.as_fd()).map_err(|e| format!("fcntl: {}", e.desc()))?;
        let sandbox = self.sandbox(view, Some(wr.as_raw_fd()));
        let mut cmd = std::process::Command::new(&self.bwrap.path);
        cmd.args(sandbox.args());
        crate::sys::child_nofile_limit(&mut cmd, self.nofile);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.bwrap.path.display()))?;
        drop(wr);
        let bwrap_pid = i32::try_from(child.id()).unwrap_or(0);
        TARGET.store(bwrap_pid, Ordering::SeqCst);
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(rd);
            let mut text = String::new();
            let mut status = Status::default();
            let mut buf = [0u8; 512];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                status.absorb(&text);
                if let Some(pid) = status.child_pid {
                    TARGET.store(pid, Ordering::SeqCst);
                }
            }
            status
        });
        let exit = child
            .wait()
            .map_err(|e| format!("waiting for bwrap: {e}"))?;
        TARGET.store(0, Ordering::SeqCst);
        let status = reader.join().unwrap_or_default();
        Ok(BwrapEnd { status, exit })
    }
}

/// Why `bwrap` cannot mount the overlay itself, if it is too old.
fn too_old(bwrap: &Bwrap) -> Option<String> {
    match bwrap.version() {
        Ok(v) if v < bwrap::MIN_OVERLAY_VERSION => Some(format!(
            "bwrap {v} at {} has no --overlay (needs {})",
            bwrap.path.display(),
            bwrap::MIN_OVERLAY_VERSION
        )),
        _ => None,
    }
}

/// What [`Launch::probe_setup`] found.
enum Setup {
    Works,
    Refused(String),
}

impl Launch {
    /// Runs the sandbox of `view` with a command that cannot exist and
    /// reads bwrap's complaint.
    fn probe_setup(&self, view: View<'_>) -> Setup {
        let missing = OsString::from(format!("/.fimfs-probe-{}-missing", std::process::id()));
        let command = [missing.clone()];
        let sandbox = Sandbox {
            command: &command,
            ..self.sandbox(view, None)
        };
        let out = std::process::Command::new(&self.bwrap.path)
            .args(sandbox.args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output();
        let Ok(out) = out else {
            return Setup::Refused("bwrap could not be run again".into());
        };
        let text = String::from_utf8_lossy(&out.stderr);
        if text.contains(&*missing.to_string_lossy()) {
            return Setup::Works;
        }
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("bwrap gave no reason")
            .trim()
            .to_string();
        Setup::Refused(reason)
    }
}

fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// How a bwrap run ended.
struct BwrapEnd {
    status: Status,
    exit: std::process::ExitStatus,
}

impl BwrapEnd {
    /// The command's status as bwrap reported it, else bwrap's own.
    fn code(&self) -> i32 {
        if let Some(c) = self.status.exit_code {
            return c;
        }
        match (self.exit.code(), self.exit.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => LAUNCHER_ERROR,
        }
    }
}

/// Waits until `statfs(mnt)` reports the FUSE magic, as FlatImage does.
fn wait_ready(mnt: &Path) -> Result<(), String> {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    let start = Instant::now();
    loop {
        if let Ok(s) = nix::sys::statfs::statfs(mnt)
            && i128::from(s.filesystem_type().0) == i128::from(FUSE_SUPER_MAGIC)
        {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(format!(
                "the fimfs mount at {} did not answer within {} s",
                mnt.display(),
                READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The pid signals are forwarded to: bwrap, then the command once bwrap
/// reported it; 0 while nothing runs.
static TARGET: AtomicI32 = AtomicI32::new(0);
/// The last stop signal received, 0 if none.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

fn signalled() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The signals the launcher forwards to its command (and its reaper
/// keeps blocked).
pub(crate) fn stop_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        s.add(sig);
    }
    s
}

/// Takes the (blocked) stop signals on a thread and passes each to the
/// running command. With nothing running, it is remembered: the launcher
/// starts nothing more and exits 128+N.
fn forward_signals(set: SigSet) {
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            SIGNALLED.store(sig as i32, Ordering::SeqCst);
            let t = TARGET.load(Ordering::SeqCst);
            if t > 0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(t), sig);
            }
        }
    });
}

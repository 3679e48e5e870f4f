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
//! redirected, so that it stays a terminal. A command that could not be
//! executed ends the run with 127 or 126 (see `execfail`).
//!
//! The run's processes, and who cleans up when the launcher is killed,
//! are `tree`'s.
//!
//! Lowers may be directories or DwarFS images (as for `fimfs mount`); with
//! `--image` and no LOWERS the run stacks the binary's own layers
//! (`layers`). The daemon reads images in-process; on BWRAP the keeper
//! mounts each image and bwrap stacks those mounts (`mounts`). On both,
//! image entries show the caller as owner; directories keep theirs. What is
//! checked before a run, and what `--dry-run` prints, is `plan`'s.
mod describe;
pub mod error;
mod plan;

pub use error::RunError;
pub use plan::Origin;

use super::bwrap::{self, Bwrap, Sandbox, Status, View};
use super::choice::{self, Backend, Choice};
use super::execfail;
use super::mounts::{LayerMounts, caller_owner, mount_images, overlay_dirs, wait_ready};
use super::rundir::{LockError, RunDir, RunPaths, lock_upper};
use super::tree::{self, TARGET, forward_signals, signalled, stop_signal_within};
use crate::fuse::session;
use crate::host::signals::run_stop_set;
use crate::image::binary::Image;
use crate::image::source::Source;
use crate::mount::{MountError, Plan};
use crate::opts::{MountOpts, MountRequest};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The exit status of the launcher's own errors (as `env`, `timeout`, podman).
pub const LAUNCHER_ERROR: i32 = 125;

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
    /// `LOWERS`, top-most first: directories, images, FlatImage binaries,
    /// `FILE@OFFSET[+SIZE]`. None (omitted) with `image` set: the image's
    /// own layers.
    pub lowers: Option<Vec<PathBuf>>,
    pub upper: PathBuf,
    pub command: Vec<OsString>,
}

/// The process environment the launcher reads, passed in for testability.
#[derive(Debug, Clone)]
pub struct Environment {
    pub fim_overlay: Option<OsString>,
    pub fim_casefold: Option<OsString>,
    /// `FIM_LAYERS`: more layers for a run on a binary's own layers.
    pub fim_layers: Option<OsString>,
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
            fim_layers: std::env::var_os("FIM_LAYERS"),
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
    /// Top-most first.
    lowers: Vec<Source>,
    /// Where the lowers came from.
    origin: Origin,
    /// On BWRAP, lower i's image opened (its index checked for `.wh.`
    /// files); the keeper mounts it.
    opened: Vec<Option<crate::image::Image>>,
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
    /// The launcher's PID, which names the run directory.
    launcher: u32,
}

/// Says why the launcher failed, as a `fimfs:` line; its exit status.
fn failed(e: &RunError) -> i32 {
    eprintln!("fimfs: {e}");
    LAUNCHER_ERROR
}

/// Runs `req`; the process exit status.
pub fn run(req: RunRequest, env: &Environment) -> i32 {
    let launch = match Launch::prepare(req, env) {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    if launch.req.dry_run {
        print!("{}", launch.describe());
        return 0;
    }
    if let Origin::Own { skipped, .. } = &launch.origin {
        for s in skipped {
            eprintln!("fimfs: skipped {s}");
        }
    }
    launch.execute()
}

impl Launch {
    /// Checks every input; creates nothing.
    pub fn prepare(req: RunRequest, env: &Environment) -> Result<Launch, RunError> {
        if req.command.is_empty() {
            return Err(RunError::NoCommand);
        }
        if !req.target.is_absolute() {
            return Err(RunError::TargetNotAbsolute(req.target.clone()));
        }
        let plan::Checked {
            lowers,
            origin,
            upper,
            base,
        } = plan::checked_paths(&req, env)?;
        let (overlay_byte, casefold_byte) = match &req.image {
            Some(path) => {
                let img = Image::open(path)?;
                (Some(img.overlay_byte()), Some(img.casefold_byte()))
            }
            None => (None, None),
        };
        let casefold =
            choice::casefold_enabled(req.casefold, env.fim_casefold.as_deref(), casefold_byte);
        let choice = choice::choose(env.fim_overlay.as_deref(), overlay_byte, casefold);
        let bwrap = bwrap::find(env.fimfs_bwrap.as_deref(), env.path.as_deref())
            .map_err(RunError::NoBwrap)?;
        let (mode, opened) = mode_for(choice.backend, &req, &bwrap, &upper, &lowers)?;
        Ok(Launch {
            req,
            lowers,
            origin,
            opened,
            upper,
            base,
            casefold,
            choice,
            bwrap,
            mode,
            busy_timeout: env.busy_timeout,
            nofile: crate::sys::nofile_limit(),
            launcher: std::process::id(),
        })
    }

    fn paths(&self) -> RunPaths {
        RunPaths::new(&self.base, self.launcher)
    }

    fn sandbox<'a>(&'a self, view: View<'a>, status_fd: Option<i32>) -> Sandbox<'a> {
        Sandbox {
            view,
            target: &self.req.target,
            extra: &self.req.bwrap_args,
            status_fd,
            block_fd: None,
            command: &self.req.command,
        }
    }

    /// Runs the command; the exit status. Must be called while the process
    /// is single-threaded (it forks the keeper, see `tree`).
    pub fn execute(self) -> i32 {
        let mut blocked = run_stop_set();
        blocked.add(Signal::SIGCHLD);
        blocked.add(tree::LAUNCHER_GONE);
        let _ = blocked.thread_block();
        let mut watched = run_stop_set();
        watched.add(Signal::SIGCHLD);
        let mut signals = match SignalFd::with_flags(&watched, SfdFlags::SFD_CLOEXEC) {
            Ok(s) => s,
            Err(e) => return failed(&RunError::Signalfd(e)),
        };
        match self.take_locks(&mut signals) {
            Ok((run_dir, lock)) => self.split(run_dir, lock, signals),
            Err(RunError::Lock(LockError::Interrupted(sig))) => 128 + sig,
            Err(e) => failed(&e),
        }
    }

    /// Creates the upper, the locked run directory, and waits for the
    /// upper's lock; a stop signal ends the wait.
    fn take_locks(&self, signals: &mut SignalFd) -> Result<(RunDir, OwnedFd), RunError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&self.upper)
            .map_err(|source| MountError::CreateUpper {
                path: self.upper.clone(),
                source,
            })?;
        let run_dir = RunDir::create(self.paths())?;
        let kernel = matches!(self.mode, Mode::Kernel);
        if let Mode::Daemon { why: Some(why) } = &self.mode {
            eprintln!("fimfs: {why}; running the command on the fimfs daemon instead");
        }
        let mut pause = |d: Duration| stop_signal_within(signals, d);
        let lock = lock_upper(&self.upper, kernel, self.busy_timeout, &mut pause)?;
        Ok((run_dir, lock))
    }

    /// Forks the keeper, which runs the command; here, waits for it.
    fn split(self, run_dir: RunDir, lock: OwnedFd, mut signals: SignalFd) -> i32 {
        let launcher = self.launcher as i32;
        tree::become_launcher();
        match crate::sys::fork() {
            Err(e) => failed(&RunError::Fork(e)),
            Ok(Some(keeper)) => {
                let ended = tree::supervise(keeper, &mut signals);
                // A killed keeper's processes are ours now.
                tree::end_children();
                drop((run_dir, lock));
                match ended {
                    tree::Ended::Exited(code) => code,
                    tree::Ended::Killed(sig) => {
                        eprintln!("fimfs: the run's keeper {keeper} was killed by signal {sig}");
                        128 + sig
                    }
                }
            }
            Ok(None) => {
                drop(signals);
                let code = match tree::become_keeper(launcher) {
                    true => self.keep(launcher, &run_dir),
                    false => LAUNCHER_ERROR,
                };
                tree::end_children();
                drop((run_dir, lock));
                std::process::exit(code)
            }
        }
    }

    /// The keeper's run: signals handled on a thread, the command run.
    fn keep(mut self, launcher: i32, run_dir: &RunDir) -> i32 {
        let mut set = run_stop_set();
        set.add(tree::LAUNCHER_GONE);
        forward_signals(set, launcher);
        let opened = std::mem::take(&mut self.opened);
        self.execute_in(run_dir.paths(), opened)
            .unwrap_or_else(|e| failed(&e))
    }

    fn execute_in(
        &self,
        paths: &RunPaths,
        opened: Vec<Option<crate::image::Image>>,
    ) -> Result<i32, RunError> {
        if matches!(self.mode, Mode::Kernel) {
            let mounts = mount_images(&self.lowers, opened, paths)?;
            if let Some(code) = self.run_kernel(paths, &mounts)? {
                return Ok(code);
            }
        }
        self.run_daemon(paths)
    }

    /// The command on the kernel overlay over `mounts` (the image lowers,
    /// mounted); None when the kernel refused the overlay.
    fn run_kernel(&self, paths: &RunPaths, mounts: &LayerMounts) -> Result<Option<i32>, RunError> {
        let work = paths.work();
        let lowers = overlay_dirs(&self.lowers, paths);
        tracing::debug!("{} image layers mounted", mounts.len());
        let view = View::Overlay {
            lowers: &lowers,
            upper: &self.upper,
            work: &work,
        };
        let end = self.run_bwrap(view)?;
        if end.status.exit_code.is_some() || signalled().is_some() {
            return Ok(Some(end.code()));
        }
        match self.probe_setup(view) {
            Setup::Works => Ok(Some(self.exec_failed(view).unwrap_or(end.code()))),
            Setup::Refused(_) if signalled().is_some() => Ok(Some(end.code())),
            Setup::Refused(reason) => {
                let why = match reason
                    .contains("Unknown option")
                    .then(|| too_old(&self.bwrap))
                {
                    Some(Some(old)) => old,
                    _ => format!("the kernel overlay was refused ({reason})"),
                };
                eprintln!("fimfs: {why}; running the command on the fimfs daemon instead");
                Ok(None)
            }
        }
    }

    fn run_daemon(&self, paths: &RunPaths) -> Result<i32, RunError> {
        let mut opts = MountOpts::default();
        opts.workdir = Some(paths.work());
        opts.casefold = self.casefold;
        let req = MountRequest {
            lowers: Vec::new(),
            upper: Some(self.upper.clone()),
            mountpoint: paths.mount(),
            opts,
            foreground: true,
        };
        // Image entries owned by the caller, as on BWRAP's layer mounts.
        let (uid, gid) = caller_owner();
        let plan = Plan::check_resolved(req, self.lowers.clone())?.with_image_owner(uid, gid);
        let union = Arc::new(plan.build()?);
        crate::sys::raise_nofile_limit();
        let running = session::start(union, &plan.mount_config())?;
        wait_ready(running.mountpoint())?;
        if let Some(sig) = signalled() {
            return Ok(128 + sig);
        }
        let view = View::Bind(running.mountpoint());
        let end = self.run_bwrap(view)?;
        let code = match end.status.exit_code.is_none() && signalled().is_none() {
            true => self.exec_failed(view).unwrap_or(end.code()),
            false => end.code(),
        };
        running.stop();
        Ok(code)
    }

    /// Runs bwrap with `view` and waits for it; signals go to the command.
    fn run_bwrap(&self, view: View<'_>) -> Result<BwrapEnd, RunError> {
        if let Some(sig) = signalled() {
            return Ok(BwrapEnd {
                status: Status::default(),
                exit: std::process::ExitStatus::from_raw(sig),
            });
        }
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(RunError::Pipe)?;
        crate::sys::inherit_on_exec(wr.as_fd()).map_err(RunError::Fcntl)?;
        let sandbox = self.sandbox(view, Some(wr.as_raw_fd()));
        let mut cmd = std::process::Command::new(&self.bwrap.path);
        cmd.args(sandbox.args());
        crate::sys::child_nofile_limit(&mut cmd, self.nofile);
        let child = cmd.spawn().map_err(|source| RunError::Spawn {
            program: self.bwrap.path.clone(),
            source,
        })?;
        drop(wr);
        let bwrap_pid = i32::try_from(child.id()).unwrap_or(0);
        TARGET.store(bwrap_pid, Ordering::SeqCst);
        // The launcher died while bwrap started: the signal thread may
        // have missed it.
        if signalled() == Some(Signal::SIGKILL as i32) {
            tree::kill_children();
        }
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
        // Reaped here (with the run's orphans), not through `child`.
        drop(child);
        let exit = tree::wait_for(bwrap_pid);
        TARGET.store(0, Ordering::SeqCst);
        // The command is over: what it left behind ends now, before the
        // mount it uses goes.
        tree::end_children();
        let exit = exit.map_err(RunError::Wait)?;
        let status = reader.join().unwrap_or_default();
        Ok(BwrapEnd { status, exit })
    }
}

/// Kernel overlay or daemon, and on the kernel overlay the image lowers
/// opened (for the `.wh.` check, and for the keeper to mount).
fn mode_for(
    backend: Backend,
    req: &RunRequest,
    bwrap: &Bwrap,
    upper: &Path,
    lowers: &[Source],
) -> Result<(Mode, Vec<Option<crate::image::Image>>), RunError> {
    if backend != Backend::Bwrap {
        return Ok((Mode::Daemon { why: None }, Vec::new()));
    }
    let opened = plan::open_images(lowers)?;
    if let Some(u) = plan::first_unreadable(upper, lowers, &opened) {
        // The daemon opens its images itself: keep no second copy.
        return Ok((
            Mode::Daemon {
                why: Some(u.to_string()),
            },
            Vec::new(),
        ));
    }
    // A real run does not ask bwrap its version (a process on every
    // start): an old bwrap refuses --overlay-src, and the fallback says
    // why. A dry run asks, to show what would happen.
    match req.dry_run.then(|| too_old(bwrap)).flatten() {
        Some(why) => Ok((Mode::Daemon { why: Some(why) }, Vec::new())),
        None => Ok((Mode::Kernel, opened)),
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

impl Launch {
    /// 127 or 126 for a command bwrap could not execute in the sandbox of
    /// `view`; None when that cannot be told.
    fn exec_failed(&self, view: View<'_>) -> Option<i32> {
        let command = self.req.command.first()?.as_bytes();
        execfail::classify(
            &self.bwrap.path,
            |fds| {
                Sandbox {
                    block_fd: Some(fds.block),
                    ..self.sandbox(view, Some(fds.status))
                }
                .args()
            },
            command,
        )
    }
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

//! The run's process tree: however the launcher ends, every process of the
//! run ends too, and the upper's lock is held until the last one is gone.
//!
//! `fimfs run` forks once, before any thread exists, after it has locked
//! the upper and its run directory. Both processes hold those locks (one
//! open file each, shared by the fork), so they are free only when both
//! are gone.
//! - The child, the *keeper*, does the run: it mounts the daemon if there
//!   is one and starts bwrap. It is a child subreaper
//!   (`PR_SET_CHILD_SUBREAPER`), so every process the command leaves behind
//!   (double forks, `setsid`) becomes its child instead of init's. When
//!   bwrap ends, it kills whatever of the run remains and reaps it until it
//!   has no child left; only then does it exit. When the launcher dies
//!   (even by SIGKILL), the kernel sends it [`LAUNCHER_GONE`]
//!   (`PR_SET_PDEATHSIG`) and it does the same at once.
//! - The parent, the process the user started, forwards the stop signals
//!   to the keeper and exits with its status. It is a subreaper too: if the
//!   keeper is killed, what it left becomes the parent's, which kills it,
//!   detaches a dead mount and removes the run directory.
//!
//! The PID namespace is not unshared (SPEC §5): the command sees the
//! host's processes. Children are found by their parent PID in `/proc`.
//!
//! Signals: both processes block the stop signals; the launcher passes
//! them to the keeper, whose signal thread passes them to bwrap, then to
//! the command once bwrap named it.
use crate::host::process::children_of;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// What the keeper receives when its launcher dies.
pub const LAUNCHER_GONE: Signal = Signal::SIGUSR2;

/// Makes this process (the keeper, just forked from `launcher`) the
/// subreaper of the run, told of its launcher's death. False when the
/// launcher is already gone.
pub fn become_keeper(launcher: i32) -> bool {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("prctl(PR_SET_CHILD_SUBREAPER): {}", e.desc());
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(LAUNCHER_GONE) {
        tracing::warn!("prctl(PR_SET_PDEATHSIG): {}", e.desc());
    }
    // The launcher may have died before the death signal was asked for.
    launcher_alive(launcher)
}

/// True while `launcher` is still this process's parent.
pub fn launcher_alive(launcher: i32) -> bool {
    nix::unistd::getppid().as_raw() == launcher
}

/// Makes the launcher the subreaper of what a killed keeper leaves.
pub fn become_launcher() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("prctl(PR_SET_CHILD_SUBREAPER): {}", e.desc());
    }
}

/// Sends SIGKILL to every child of this process, without reaping.
pub fn kill_children() {
    for pid in children_of(std::process::id() as i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Kills every child of this process and reaps them, and the children
/// they leave in turn, until none is left.
pub fn end_children() {
    loop {
        kill_children();
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Waits for child `pid`, reaping on the way the orphans of the run that
/// end before it (they are this subreaper's children now).
pub fn wait_for(pid: i32) -> Result<ExitStatus, Errno> {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                return Ok(ExitStatus::from_raw((code & 0xff) << 8));
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                return Ok(ExitStatus::from_raw(sig as i32));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// How the keeper ended, as its launcher saw it.
pub enum Ended {
    Exited(i32),
    Killed(i32),
}

/// The launcher's side: forwards each stop signal to `keeper` until it
/// ends. `signals` reads the blocked stop signals and SIGCHLD.
pub fn supervise(keeper: i32, signals: &mut nix::sys::signalfd::SignalFd) -> Ended {
    loop {
        match signals.read_signal() {
            Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => {}
            Ok(Some(info)) => {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    let _ = kill(Pid::from_raw(keeper), sig);
                }
                continue;
            }
            Ok(None) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            // Signals cannot be read any more: wait for the keeper alone.
            Err(_) => {
                return match waitpid(Pid::from_raw(keeper), Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Exited(_, code)) => Ended::Exited(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => Ended::Killed(sig as i32),
                    _ => Ended::Killed(Signal::SIGKILL as i32),
                };
            }
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(p, code)) if p.as_raw() == keeper => {
                    return Ended::Exited(code);
                }
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == keeper => {
                    return Ended::Killed(sig as i32);
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return Ended::Killed(Signal::SIGKILL as i32),
            }
        }
    }
}

/// The pid signals are forwarded to: bwrap, then the command once bwrap
/// reported it; 0 while nothing runs.
pub(crate) static TARGET: AtomicI32 = AtomicI32::new(0);
/// The last stop signal received, 0 if none.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

pub(crate) fn signalled() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Waits up to `d` for a stop signal on `signals`; the one that came.
pub(crate) fn stop_signal_within(signals: &mut SignalFd, d: Duration) -> Option<i32> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
        return None;
    }
    match signals.read_signal() {
        Ok(Some(info)) if info.ssi_signo != Signal::SIGCHLD as u32 => Some(info.ssi_signo as i32),
        _ => None,
    }
}

/// Takes the (blocked) signals of `set` on a thread and passes each stop
/// signal to the running command. With nothing running, it is remembered:
/// the keeper starts nothing more and exits 128+N. When `launcher` is
/// gone, every process of the run is killed at once.
pub(crate) fn forward_signals(set: SigSet, launcher: i32) {
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if sig == LAUNCHER_GONE {
                if !launcher_alive(launcher) {
                    SIGNALLED.store(Signal::SIGKILL as i32, Ordering::SeqCst);
                    kill_children();
                }
                continue;
            }
            SIGNALLED.store(sig as i32, Ordering::SeqCst);
            let t = TARGET.load(Ordering::SeqCst);
            if t > 0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(t), sig);
            }
        }
    });
}

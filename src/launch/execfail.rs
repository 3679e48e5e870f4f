//! Why bwrap could not execute the command: 127 when the sandbox has no
//! such command, 126 when it has one that cannot be executed, as shells
//! say.
//!
//! bwrap reports both as its own status 1, with a message on the command's
//! stderr, which the launcher leaves alone (it stays a terminal). So, on
//! this rare path only, the launcher starts the same sandbox once more
//! with `--block-fd`: bwrap sets everything up and then waits on that fd
//! right before it would execute the command. While it waits, the launcher
//! looks the command up as `execvp` would, through the waiting process's
//! own root, working directory and `PATH` (`/proc/PID/root`, `cwd`,
//! `environ`), confined to that root (`openat2(RESOLVE_IN_ROOT)`); then it
//! kills it. The command is never executed, and bwrap creates nothing that
//! the first attempt did not. The blocking pipe's write end is held only by
//! bwrap and the waiting process, so the wait never ends by itself, not
//! even if the launcher dies.
use super::bwrap::Status;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The status of a command that does not exist (as `sh`).
pub const NOT_FOUND: i32 = 127;
/// The status of a command that exists but cannot be executed.
pub const NOT_EXECUTABLE: i32 = 126;

/// How long the sandbox may take to reach its wait before the launcher
/// gives up on telling why, and keeps bwrap's own status.
const SETUP_BOUND: Duration = Duration::from_secs(10);

/// `execvp`'s search path when the environment has none (glibc's).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// The fds a blocked probe needs: bwrap waits on `block`, reports on
/// `status`.
pub struct ProbeFds {
    pub block: i32,
    pub status: i32,
}

/// Runs `bwrap` with the argument vector `args(fds)` (the run's sandbox,
/// with `--block-fd` and `--json-status-fd` set to `fds`), and tells why
/// `command` could not be executed in it. None when the sandbox did not
/// reach its wait (its setup failed: bwrap's own status stands).
pub fn classify(
    bwrap: &Path,
    args: impl FnOnce(ProbeFds) -> Vec<OsString>,
    command: &[u8],
) -> Option<i32> {
    let (block_rd, block_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
    let (status_rd, status_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
    for fd in [&block_rd, &block_wr, &status_wr] {
        crate::sys::inherit_on_exec(fd.as_fd()).ok()?;
    }
    let fds = ProbeFds {
        block: block_rd.as_raw_fd(),
        status: status_wr.as_raw_fd(),
    };
    let child = std::process::Command::new(bwrap)
        .args(args(fds))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let block = block_rd.as_raw_fd();
    // Only bwrap and its waiting child hold the pipe now.
    drop((block_rd, block_wr, status_wr));
    let child = child.ok()?;
    let bwrap_pid = i32::try_from(child.id()).unwrap_or(0);
    // Kept open to the end: bwrap dies of a status pipe closed under it.
    let mut status = std::fs::File::from(status_rd);
    let sandbox = sandbox_pid(&mut status);
    let code = sandbox
        .filter(|&pid| wait_blocked(pid, block))
        .map(|pid| look_up(pid, command));
    for pid in [sandbox.unwrap_or(0), bwrap_pid] {
        if pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = super::tree::wait_for(bwrap_pid);
    super::tree::end_children();
    code
}

/// The sandbox's first process, from bwrap's status documents.
fn sandbox_pid(f: &mut std::fs::File) -> Option<i32> {
    let mut text = String::new();
    let mut status = Status::default();
    let mut buf = [0u8; 512];
    while status.child_pid.is_none() {
        let n = f.read(&mut buf).ok().filter(|&n| n > 0)?;
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        status.absorb(&text);
    }
    status.child_pid
}

/// Waits until `pid` sits in `read(block)`: its setup is done.
fn wait_blocked(pid: i32, block: i32) -> bool {
    let start = Instant::now();
    while start.elapsed() < SETUP_BOUND {
        // Unreadable while bwrap changes credentials; gone if it failed.
        let text = match std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
            Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => return false,
            Err(_) => String::new(),
        };
        let mut words = text.split_whitespace();
        let nr = words.next().and_then(|w| w.parse::<i64>().ok());
        let fd = words
            .next()
            .and_then(|w| i64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
        if nr == Some(libc::SYS_read) && fd == Some(i64::from(block)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// 126 when `command` names something in the sandbox of `pid`, else 127.
fn look_up(pid: i32, command: &[u8]) -> i32 {
    let open = |what: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(format!("/proc/{pid}/{what}"))
            .ok()
    };
    let (Some(root), Some(cwd)) = (open("root"), open("cwd")) else {
        return NOT_FOUND;
    };
    let found = |path: &[u8], searching: bool| {
        let dir = if path.starts_with(b"/") { &root } else { &cwd };
        exists_in(dir, path).is_some_and(|is_dir| !(searching && is_dir))
    };
    let there = if command.contains(&b'/') {
        found(command, false)
    } else {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let path = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(b"PATH="))
            .unwrap_or(DEFAULT_PATH);
        !command.is_empty()
            && path.split(|&b| b == b':').any(|d| {
                let d = if d.is_empty() { &b"."[..] } else { d };
                found(&[d, b"/", command].concat(), true)
            })
    };
    if there { NOT_EXECUTABLE } else { NOT_FOUND }
}

/// Whether `path` exists below `dir` taken as the root (symlinks resolved
/// inside it, never outside): Some(is a directory).
fn exists_in(dir: &std::fs::File, path: &[u8]) -> Option<bool> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(dir.as_raw_fd(), std::ffi::OsStr::from_bytes(path), how).ok()?;
    let st = nix::sys::stat::fstat(fd);
    let _ = nix::unistd::close(fd);
    Some(st.ok()?.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

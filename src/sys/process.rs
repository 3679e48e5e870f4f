//! The daemon's process state: ids, umask, fs_struct, fd limits (its own
//! and a child's), fork, SIGPIPE, stdio, inherited fds and the heap.
//!
//! Invariant: `fork` and `close_other_fds` are for a single-threaded
//! process; `child_nofile_limit` runs only async-signal-safe code in the
//! child.
use super::{Result, check};
use std::os::fd::{AsRawFd, BorrowedFd};

pub fn geteuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Sets the process umask; the daemon runs with 0 so that the modes the
/// kernel sends (already masked by the caller's umask) land unchanged.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Gives the calling thread its own umask, cwd and root (`unshare(CLONE_FS)`):
/// threads it starts afterwards share them, the rest of the process does not.
/// The in-process daemon needs umask 0 while the command it runs keeps the
/// user's umask.
pub fn unshare_fs() -> Result<()> {
    // SAFETY: CLONE_FS only copies the calling thread's fs_struct.
    check(unsafe { libc::unshare(libc::CLONE_FS) })?;
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: the daemon keeps one
/// fd per open file and per cached directory layer.
pub fn raise_nofile_limit() {
    // As high as the kernel allows (`fs.nr_open`) when privileged; else
    // the soft limit up to the hard one. Each open file and each upper
    // inode the kernel knows costs the daemon one fd.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer, then a valid in-pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if let Some(max) = nr_open.filter(|&m| m > lim.rlim_max) {
            let raised = libc::rlimit {
                rlim_cur: max,
                rlim_max: max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// The current `RLIMIT_NOFILE` (soft, hard).
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

/// Makes `cmd`'s child start with `RLIMIT_NOFILE` = `limit`: the daemon
/// inside the launcher raised its own limit, and the command it runs should
/// not inherit that (some programs loop over every possible fd).
pub fn child_nofile_limit(cmd: &mut std::process::Command, limit: (u64, u64)) {
    use std::os::unix::process::CommandExt;
    let lim = libc::rlimit {
        rlim_cur: limit.0,
        rlim_max: limit.1,
    };
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setrlimit, which is async-signal-safe; it captures a plain value.
    unsafe {
        cmd.pre_exec(move || {
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
}

/// `fork(2)`; `Ok(None)` in the child. Called before any thread exists.
pub fn fork() -> Result<Option<i32>> {
    // SAFETY: the process is single-threaded when this is called (the CLI
    // forks before mounting), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// SIGPIPE is ignored: a reader that went away is an EPIPE, not a dead daemon.
pub fn ignore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// Points stdin, stdout and stderr at /dev/null (a detached daemon must
/// not hold its starter's pipes open).
pub fn stdio_to_devnull() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

/// Clears `FD_CLOEXEC` on `fd`, so that the next exec'd child inherits it.
pub fn inherit_on_exec(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: fcntl on a borrowed fd.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) })?;
    Ok(())
}

/// Closes every fd of the process except 0, 1, 2 and `keep`. For a freshly
/// forked, single-threaded child that must not hold its parent's files.
pub fn close_other_fds(keep: BorrowedFd<'_>) {
    let keep = keep.as_raw_fd();
    // SAFETY: the caller is single-threaded and owns every fd it closes;
    // `keep` and the standard fds stay open.
    unsafe {
        if keep > 3 {
            libc::close_range(3, (keep - 1) as libc::c_uint, 0);
        }
        libc::close_range((keep.max(2) + 1) as libc::c_uint, libc::c_uint::MAX, 0);
    }
}

/// Allocations this big and bigger get their own mapping, returned to the
/// system when freed (see [`map_big_allocations`]).
const OWN_MAPPING_BYTES: i32 = 2 << 20;

/// Makes every allocation of [`OWN_MAPPING_BYTES`] or more a mapping of its
/// own, for good. glibc does that above 128 KiB, but raises the threshold
/// to the size of each such block freed (up to 32 MiB): after the first
/// decoded image block (16 MiB) is dropped, later ones land in the
/// arenas, where a dropped block's pages stay mapped and the arenas grow
/// past the block cache's bound (44 MiB of arenas for a 32 MiB cache, over
/// a million-file image). FUSE replies (1 MiB at most) stay below.
pub fn map_big_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_BYTES);
    }
}

/// Gives the allocator's free memory back to the system (glibc keeps
/// freed memory mapped in its arenas otherwise).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

//! The files one run owns, and how they are cleaned up even when the
//! launcher is killed.
//!
//! Each run owns `BASE/<PID>/` (BASE is `--workdir`, else `work/` next to
//! the upper, as for `fimfs mount`): `work/` is the kernel overlay's or the
//! daemon's workdir, `mount/` the daemon's mountpoint, `layers/<N>` the
//! mount of image lower N on BWRAP (made when needed). BASE must be on the
//! upper's filesystem: copy-up renames from the workdir into the upper.
//!
//! Nothing stays stale:
//! - the run holds an exclusive `flock` on `BASE/<PID>` while any of its
//!   processes lives (the launcher and its keeper share it, see `tree`);
//! - whichever of the two ends last detaches the mounts and removes
//!   `BASE/<PID>`;
//! - every run and every `fimfs mount` first sweeps `BASE/<N>` directories
//!   whose process is gone and whose lock is free (both were killed).
//!
//! Runs on one upper take a `flock` on the upper directory itself: shared
//! for the daemon (any number of daemons may share an upper, each with its
//! own workdir), exclusive for the kernel overlay, which accepts a second
//! mount on an upper in use but then behaves undefined (the kernel's own
//! warning). A run waits for the lock up to a timeout, then gives up; it
//! says at once that it waits, and for which process.
use crate::host::locks::{holders_of_fd, lock_dir};
use crate::host::process::describe_pid;
use crate::mount::{clean_stale, sweep};
use crate::sys::{self, Errno};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `BASE/<PID>` and what is inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub base: PathBuf,
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn new(base: &Path, pid: u32) -> RunPaths {
        RunPaths {
            base: base.to_path_buf(),
            dir: base.join(pid.to_string()),
        }
    }

    /// The workdir of the kernel overlay or of the daemon.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The daemon's mountpoint.
    pub fn mount(&self) -> PathBuf {
        self.dir.join("mount")
    }

    /// Where a BWRAP run mounts image lower `n` (0 the bottom layer).
    pub fn layer(&self, n: usize) -> PathBuf {
        self.dir.join("layers").join(n.to_string())
    }
}

/// A created, locked `BASE/<PID>`; its mount detached and the directory
/// removed on drop.
pub struct RunDir {
    paths: RunPaths,
    _lock: OwnedFd,
}

impl RunDir {
    /// Sweeps stale runs of BASE, then creates and locks `BASE/<PID>` with
    /// empty `work/` and `mount/` inside.
    pub fn create(paths: RunPaths) -> Result<RunDir, RunDirError> {
        let what = |source| RunDirError::Create {
            path: paths.dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&paths.base)
            .map_err(|source| RunDirError::Base {
                path: paths.base.clone(),
                source,
            })?;
        sweep(&paths.base);
        if paths.dir.exists() {
            clean_stale(&paths.dir);
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&paths.dir)
            .map_err(what)?;
        let lock = lock_dir(&paths.dir).map_err(|errno| RunDirError::Lock {
            path: paths.dir.clone(),
            errno,
        })?;
        for sub in [paths.work(), paths.mount()] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&sub)
                .map_err(what)?;
        }
        Ok(RunDir { paths, _lock: lock })
    }

    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        clean_stale(&self.paths.dir);
    }
}

/// Why [`RunDir::create`] failed.
#[derive(Debug)]
pub enum RunDirError {
    /// BASE could not be created.
    Base { path: PathBuf, source: io::Error },
    /// `BASE/<PID>` or a directory in it could not be created.
    Create { path: PathBuf, source: io::Error },
    /// `BASE/<PID>` could not be locked.
    Lock { path: PathBuf, errno: Errno },
}

impl fmt::Display for RunDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunDirError::Base { path, source } => {
                write!(f, "work directory {}: {source}", path.display())
            }
            RunDirError::Create { path, source } => {
                write!(f, "run directory {}: {source}", path.display())
            }
            RunDirError::Lock { path, errno } => {
                write!(f, "run directory {}: {}", path.display(), errno.desc())
            }
        }
    }
}

impl std::error::Error for RunDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunDirError::Base { source, .. } | RunDirError::Create { source, .. } => Some(source),
            RunDirError::Lock { errno, .. } => Some(errno),
        }
    }
}

/// Why [`lock_upper`] did not get the lock.
#[derive(Debug)]
pub enum LockError {
    /// A stop signal came while waiting: the run ends with 128+N.
    Interrupted(i32),
    /// The upper could not be opened.
    Open {
        upper: PathBuf,
        errno: Errno,
    },
    /// Another run held the lock for the whole wait.
    Busy {
        upper: PathBuf,
        waited: Duration,
    },
    Lock {
        upper: PathBuf,
        errno: Errno,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Interrupted(sig) => write!(f, "interrupted by signal {sig}"),
            LockError::Open { upper, errno } => {
                write!(f, "upper directory {}: {}", upper.display(), errno.desc())
            }
            LockError::Busy { upper, waited } => write!(
                f,
                "upper directory {}: still in use by another run after {} s \
                 (the kernel overlay cannot share an upper; \
                 FIM_OVERLAY=unionfs runs several instances at once)",
                upper.display(),
                waited.as_secs()
            ),
            LockError::Lock { upper, errno } => write!(
                f,
                "upper directory {}: cannot lock: {}",
                upper.display(),
                errno.desc()
            ),
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Open { errno, .. } | LockError::Lock { errno, .. } => Some(errno),
            LockError::Interrupted(_) | LockError::Busy { .. } => None,
        }
    }
}

/// Waits for the upper's lock: shared for the daemon, exclusive for the
/// kernel overlay. Held until the returned fd is dropped. Between tries it
/// calls `pause`, which waits a little and returns a stop signal that came.
pub fn lock_upper(
    upper: &Path,
    exclusive: bool,
    timeout: Duration,
    pause: &mut dyn FnMut(Duration) -> Option<i32>,
) -> Result<OwnedFd, LockError> {
    let fd = sys::open_layer_root(upper)
        .and_then(|r| sys::openat(r.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0))
        .map_err(|errno| LockError::Open {
            upper: upper.to_path_buf(),
            errno,
        })?;
    let start = Instant::now();
    let mut said = false;
    loop {
        let got = if exclusive {
            sys::flock_exclusive(fd.as_fd())
        } else {
            sys::flock_shared(fd.as_fd())
        };
        match got {
            Ok(()) => return Ok(fd),
            Err(Errno::EWOULDBLOCK) if start.elapsed() < timeout => {
                if !said {
                    eprintln!(
                        "fimfs: upper directory {} is in use by {}; waiting up to {} s",
                        upper.display(),
                        holders(&fd),
                        timeout.as_secs()
                    );
                    said = true;
                }
                if let Some(sig) = pause(Duration::from_millis(100)) {
                    return Err(LockError::Interrupted(sig));
                }
            }
            Err(Errno::EWOULDBLOCK) => {
                return Err(LockError::Busy {
                    upper: upper.to_path_buf(),
                    waited: timeout,
                });
            }
            Err(errno) => {
                return Err(LockError::Lock {
                    upper: upper.to_path_buf(),
                    errno,
                });
            }
        }
    }
}

/// Who holds the lock of the directory `fd`, in words: "process 123 (fimfs
/// run)" or "processes 12, 34 (fimfs)", from `/proc/locks`.
fn holders(fd: &OwnedFd) -> String {
    let pids = holders_of_fd(fd.as_fd()).unwrap_or_default();
    let names: Vec<String> = pids.iter().map(|p| describe_pid(*p)).collect();
    match names.len() {
        0 => "another process".into(),
        1 => format!("process {}", names[0]),
        _ => format!("processes {}", names.join(", ")),
    }
}

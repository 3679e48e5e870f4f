//! The files one run owns, and how they are cleaned up even when the
//! launcher is killed.
//!
//! Each run owns `BASE/<PID>/` (BASE is `--workdir`, else `work/` next to
//! the upper, as for `fimfs mount`): `work/` is the kernel overlay's or the
//! daemon's workdir, `mount/` the daemon's mountpoint. BASE must be on the
//! upper's filesystem: copy-up renames from the workdir into the upper.
//!
//! Three mechanisms keep nothing stale:
//! - the run holds an exclusive `flock` on `BASE/<PID>` while alive;
//! - a reaper, forked before any thread exists, waits on a pipe; when the
//!   launcher dies without saying "clean" (SIGKILL), it detaches the mount
//!   and removes `BASE/<PID>`;
//! - every run first sweeps `BASE/<N>` directories whose process is gone
//!   and whose lock is free (a reaper that was killed too).
//!
//! Runs on one upper take a `flock` on the upper directory itself: shared
//! for the daemon (any number of daemons may share an upper, each with its
//! own workdir), exclusive for the kernel overlay, which accepts a second
//! mount on an upper in use but then behaves undefined (the kernel's own
//! warning). A run waits for the lock up to a timeout, then gives up.
use crate::fuse::session::unmount_lazy;
use crate::layer::remove_tree;
use crate::sys::{self, Errno};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
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
}

/// A created, locked `BASE/<PID>`; removed on drop.
pub struct RunDir {
    paths: RunPaths,
    _lock: OwnedFd,
}

fn lock_dir(path: &Path) -> Result<OwnedFd, Errno> {
    let root = sys::open_layer_root(path)?;
    let fd = sys::openat(root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    sys::flock_exclusive(fd.as_fd())?;
    Ok(fd)
}

impl RunDir {
    /// Sweeps stale runs of BASE, then creates and locks `BASE/<PID>` with
    /// empty `work/` and `mount/` inside.
    pub fn create(paths: RunPaths) -> Result<RunDir, String> {
        let what = |e: std::io::Error| format!("run directory {}: {e}", paths.dir.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&paths.base)
            .map_err(|e| format!("work directory {}: {e}", paths.base.display()))?;
        sweep(&paths.base);
        if paths.dir.exists() {
            remove_dir(&paths.dir);
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&paths.dir)
            .map_err(what)?;
        let lock = lock_dir(&paths.dir)
            .map_err(|e| format!("run directory {}: {}", paths.dir.display(), e.desc()))?;
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
        remove_dir(&self.paths.dir);
    }
}

/// `rm -rf dir` through fds, never following a symlink; a failure is logged.
fn remove_dir(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let res = sys::open_layer_root(parent).and_then(|p| {
        let name = sys::cstr(name.as_bytes())?;
        remove_tree(p.as_fd(), &name)
    });
    match res {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => tracing::warn!("removing {}: {}", dir.display(), e.desc()),
    }
}

/// True when `path` is a mountpoint: its device differs from its
/// parent's, or it cannot be stat'ed at all (a FUSE mount whose daemon
/// died answers ENOTCONN).
fn is_mountpoint(path: &Path) -> bool {
    let parent = path
        .parent()
        .and_then(|p| std::fs::symlink_metadata(p).ok());
    match (std::fs::symlink_metadata(path), parent) {
        (Ok(m), Some(p)) => m.dev() != p.dev(),
        (Err(e), _) => e.kind() != std::io::ErrorKind::NotFound,
        (Ok(_), None) => false,
    }
}

/// Detaches a leftover mount in `dir/mount` and removes `dir`.
fn clean_stale(dir: &Path) {
    let mnt = dir.join("mount");
    if is_mountpoint(&mnt) {
        unmount_lazy(&mnt);
    }
    remove_dir(dir);
}

/// Removes `BASE/<N>` entries of runs that are gone: no process N, and
/// nobody holds the entry's lock.
pub fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || process_alive(pid) {
            continue;
        }
        let path = e.path();
        // A lock we can take is a lock nobody holds: the run is over.
        if let Ok(_held) = lock_dir(&path) {
            tracing::info!("removing the leftovers of run {pid}: {}", path.display());
            clean_stale(&path);
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The launcher's end of the reaper's pipe.
pub struct Reaper {
    tx: Option<std::fs::File>,
}

impl Reaper {
    /// Forks the reaper of `dir`. Must be called while the process is
    /// single-threaded.
    pub fn start(dir: &Path) -> Result<Reaper, String> {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("pipe: {}", e.desc()))?;
        match sys::fork().map_err(|e| format!("fork: {}", e.desc()))? {
            Some(_) => {
                drop(rd);
                Ok(Reaper {
                    tx: Some(std::fs::File::from(wr)),
                })
            }
            None => {
                drop(wr);
                reap(rd, dir)
            }
        }
    }

    /// Tells the reaper that the launcher cleaned up itself.
    pub fn dismiss(mut self) {
        if let Some(mut tx) = self.tx.take() {
            let _ = tx.write_all(b"C");
        }
    }
}

/// The reaper: waits for its launcher to end; unless told "clean", removes
/// what the launcher left. Never returns.
fn reap(rd: OwnedFd, dir: &Path) -> ! {
    use std::os::fd::AsRawFd;
    let _ = nix::unistd::setsid();
    // Blocked signals are never delivered: the reaper outlives a Ctrl-C or
    // a SIGTERM sent to its launcher's process group.
    let _ = super::run::stop_signals().thread_block();
    sys::close_other_fds(rd.as_fd());
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    let mut word = Vec::new();
    let _ = std::fs::File::from(rd).read_to_end(&mut word);
    if word != b"C" {
        clean_stale(dir);
    }
    std::process::exit(0)
}

/// Waits for the upper's lock: shared for the daemon, exclusive for the
/// kernel overlay. Held until the returned fd is dropped.
pub fn lock_upper(upper: &Path, exclusive: bool, timeout: Duration) -> Result<OwnedFd, String> {
    let fd = sys::open_layer_root(upper)
        .and_then(|r| sys::openat(r.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0))
        .map_err(|e| format!("upper directory {}: {}", upper.display(), e.desc()))?;
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
                    tracing::info!(
                        "upper directory {} is in use by another run; waiting up to {} s",
                        upper.display(),
                        timeout.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(Errno::EWOULDBLOCK) => {
                return Err(format!(
                    "upper directory {}: still in use by another run after {} s \
                     (the kernel overlay cannot share an upper; \
                     FIM_OVERLAY=unionfs runs several instances at once)",
                    upper.display(),
                    timeout.as_secs()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "upper directory {}: cannot lock: {}",
                    upper.display(),
                    e.desc()
                ));
            }
        }
    }
}

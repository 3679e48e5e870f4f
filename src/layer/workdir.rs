//! The per-PID workdir: where copy-ups and whiteouts are staged before an
//! atomic rename into the upper.
//!
//! Invariants: it lives on the upper's filesystem (checked at mount, so
//! `rename` into the upper is atomic); it is emptied at mount and removed
//! at exit; an exclusive `flock` on it keeps a second daemon off the same
//! workdir (the lock dies with the process, even on SIGKILL, so a killed
//! daemon never blocks the next one).
//!
//! A work base (`<parent of UPPER>/work`, or `--workdir` of `fimfs run`)
//! holds one such directory per process, named by its PID. One whose
//! process is gone and whose lock is free is stale: [`stale_dirs`] finds
//! them, locked, so that the caller can remove them while no one can take
//! them over. A live owner is never touched: its PID answers, and its lock
//! is held.
use crate::host::locks::{lock_dir, lock_dir_when_free};
use crate::host::process::{Owner, owner};
use crate::sys::{self, Errno};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Workdir {
    dir: OwnedFd,
    path: PathBuf,
    next: AtomicU64,
}

#[derive(Debug)]
pub enum WorkdirError {
    Create(PathBuf, Errno),
    Busy(PathBuf),
    Clean(PathBuf, Errno),
}

impl std::fmt::Display for WorkdirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkdirError::Create(p, e) => {
                write!(f, "workdir {}: cannot create: {}", p.display(), e.desc())
            }
            WorkdirError::Busy(p) => write!(
                f,
                "workdir {}: in use by another running fimfs daemon",
                p.display()
            ),
            WorkdirError::Clean(p, e) => {
                write!(f, "workdir {}: cannot clean: {}", p.display(), e.desc())
            }
        }
    }
}

impl std::error::Error for WorkdirError {}

impl Workdir {
    /// Creates (with parents) and locks the workdir, then empties it.
    pub fn open(path: &Path) -> Result<Workdir, WorkdirError> {
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(b.recursive(true), 0o700);
        b.create(path).map_err(|e| {
            WorkdirError::Create(path.into(), Errno::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
        let root = sys::open_layer_root(path).map_err(|e| WorkdirError::Create(path.into(), e))?;
        let dir = sys::openat(root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| WorkdirError::Create(path.into(), e))?;
        match sys::flock_exclusive(dir.as_fd()) {
            Ok(()) => {}
            Err(Errno::EWOULDBLOCK) => return Err(WorkdirError::Busy(path.into())),
            Err(e) => return Err(WorkdirError::Create(path.into(), e)),
        }
        let w = Workdir {
            dir,
            path: path.to_path_buf(),
            next: AtomicU64::new(0),
        };
        w.clean().map_err(|e| WorkdirError::Clean(path.into(), e))?;
        Ok(w)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh name for a staged entry, unique within this workdir.
    pub fn temp_name(&self) -> CString {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#{n:x}")).unwrap_or_default()
    }

    /// Removes everything inside the workdir (leftovers of a crash).
    pub fn clean(&self) -> Result<(), Errno> {
        for e in sys::read_dir_entries(self.dir.as_fd())? {
            let name = sys::cstr(&e.name)?;
            remove_tree(self.dir.as_fd(), &name)?;
        }
        Ok(())
    }

    /// Empties and removes the workdir; called once at exit.
    pub fn remove(&self) {
        if let Err(e) = self.clean() {
            tracing::warn!("cleaning workdir {}: {}", self.path.display(), e.desc());
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            tracing::warn!("removing workdir {}: {}", self.path.display(), e);
        }
    }
}

/// A per-PID directory whose owner is gone, held locked.
#[derive(Debug)]
pub struct Stale {
    pub pid: u32,
    pub path: PathBuf,
    _lock: OwnedFd,
}

/// The `base/<PID>` directories of processes that are gone and whose lock
/// is free, other than this process's own.
pub fn stale_dirs(base: &Path) -> Vec<Stale> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Checked before the lock: a process that has just created its
        // directory and not yet locked it is alive.
        let lock = match owner(pid) {
            Owner::Alive => continue,
            Owner::Gone => lock_dir(&e.path()).ok(),
            Owner::Dying => {
                tracing::info!("waiting for process {pid}, which is ending, to free its workdir");
                lock_dir_when_free(&e.path(), DYING_WAIT)
            }
        };
        // A lock we can take is a lock nobody holds.
        if let Some(lock) = lock {
            out.push(Stale {
                pid,
                path: e.path(),
                _lock: lock,
            });
        }
    }
    out
}

/// How long a sweep waits for a killed process to finish dying. A daemon
/// killed in the middle of a copy-up lives on until its copy thread leaves
/// the kernel (a second or two for hundreds of MiB); its lock is held until
/// then, and the next mount, started right after the kill, must not give
/// up on its leftovers.
const DYING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `rm -rf dir/name` through fds, never following a symlink.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> Result<(), Errno> {
    match sys::unlinkat(dir, name, false) {
        Ok(()) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    // An empty directory goes without being opened: the kernel overlay
    // leaves `work/work` with mode 000, which its owner cannot list.
    match sys::unlinkat(dir, name, true) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let sub = sys::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for e in sys::read_dir_entries(sub.as_fd())? {
        remove_tree(sub.as_fd(), &sys::cstr(&e.name)?)?;
    }
    sys::unlinkat(dir, name, true)
}

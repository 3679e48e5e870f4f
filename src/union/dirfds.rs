//! The budget of layer directory fds that directory nodes keep cached
//! (`node::NodeTable` sheds the least recently used past it; a node's
//! cached layers give their fds back when dropped).
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The budget of layer directory fds the nodes keep cached. Each cached
/// directory holds an `O_PATH` fd per layer it exists in, so a tree merged
/// over 100 lowers would otherwise hold 100 fds per directory the kernel
/// knows, and run into `RLIMIT_NOFILE`.
#[derive(Debug)]
pub struct DirFds {
    /// Fds held by cached layers.
    pub(super) held: AtomicUsize,
    pub(super) budget: usize,
    /// Counts caching events; a node remembers the value at its last use.
    pub(super) clock: AtomicU64,
    /// One eviction at a time.
    pub(super) evicting: Mutex<()>,
}

impl DirFds {
    /// Half the open-file limit (the rest is for open files and pins).
    pub fn for_this_process() -> DirFds {
        let soft = usize::try_from(crate::sys::nofile_limit().0).unwrap_or(usize::MAX);
        DirFds::with_budget((soft / 2).max(64))
    }

    pub fn with_budget(budget: usize) -> DirFds {
        DirFds {
            held: AtomicUsize::new(0),
            budget,
            clock: AtomicU64::new(0),
            evicting: Mutex::new(()),
        }
    }

    /// Fds the cached layers hold now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

//! Open handles: files (a backing fd in the winning layer) and directories
//! (a listing snapshot, so offsets stay valid while the directory changes).
//!
//! A file opened read-only on a lower keeps reading the lower only until
//! the file is copied up: then the handle is reopened on the upper, so a
//! reader never sees stale data next to a writer (SPEC §7 item 1).
use crate::union::DirEntry;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug)]
pub struct FileHandle {
    pub ino: u64,
    fd: RwLock<Arc<OwnedFd>>,
    on_upper: AtomicBool,
}

impl FileHandle {
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().clone()
    }

    pub fn on_upper(&self) -> bool {
        self.on_upper.load(Ordering::Acquire)
    }

    pub fn replace(&self, fd: OwnedFd, upper: bool) {
        *self.fd.write() = Arc::new(fd);
        self.on_upper.store(upper, Ordering::Release);
    }
}

#[derive(Debug)]
pub struct DirHandle {
    /// `.`, `..`, then the merged entries; taken at offset 0.
    pub snapshot: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

#[derive(Debug, Default)]
pub struct Handles {
    files: DashMap<u64, Arc<FileHandle>>,
    dirs: DashMap<u64, Arc<DirHandle>>,
    next: AtomicU64,
}

impl Handles {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add_file(&self, fd: OwnedFd, ino: u64, upper: bool) -> u64 {
        let id = self.next_id();
        let h = FileHandle {
            ino,
            fd: RwLock::new(Arc::new(fd)),
            on_upper: AtomicBool::new(upper),
        };
        self.files.insert(id, Arc::new(h));
        id
    }

    pub fn file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files.get(&id).map(|h| h.clone())
    }

    pub fn remove_file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files.remove(&id).map(|(_, h)| h)
    }

    pub fn add_dir(&self) -> u64 {
        let id = self.next_id();
        let h = DirHandle {
            snapshot: Mutex::new(None),
        };
        self.dirs.insert(id, Arc::new(h));
        id
    }

    pub fn dir(&self, id: u64) -> Option<Arc<DirHandle>> {
        self.dirs.get(&id).map(|h| h.clone())
    }

    pub fn remove_dir(&self, id: u64) {
        self.dirs.remove(&id);
    }
}

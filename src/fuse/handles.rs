//! Open handles: files (a backing fd in the winning layer) and directories
//! (a listing snapshot, so offsets stay valid while the directory changes).
use crate::union::DirEntry;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct FileHandle {
    pub fd: OwnedFd,
    #[allow(dead_code)]
    pub ino: u64,
}

#[derive(Debug)]
pub struct DirHandle {
    #[allow(dead_code)]
    pub ino: u64,
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

    pub fn add_file(&self, fd: OwnedFd, ino: u64) -> u64 {
        let id = self.next_id();
        self.files.insert(id, Arc::new(FileHandle { fd, ino }));
        id
    }

    pub fn file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files.get(&id).map(|h| h.clone())
    }

    pub fn remove_file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files.remove(&id).map(|(_, h)| h)
    }

    pub fn add_dir(&self, ino: u64) -> u64 {
        let id = self.next_id();
        let h = DirHandle {
            ino,
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

//! Open handles: files (the file its layer handed out, see `layer::File`)
//! and directories (a listing snapshot, so offsets stay valid while the
//! directory changes).
//!
//! A file opened read-only on a lower keeps reading the lower only until
//! the file is copied up: then the handle is reopened on the upper, so a
//! reader never sees stale data next to a writer (SPEC §7 item 1). The
//! handle holds the engine's `UpperWatch` of its node, so telling costs a
//! read of the node's state, not a table lookup per READ.
//!
//! Under fd pressure (more open files than a share of `RLIMIT_NOFILE`), a
//! read-only handle on a lower holds no fd: each request opens the file
//! again. Lower files never change, so that is safe, and it lets the
//! daemon serve more open files than it may hold fds. A lower file without
//! an fd is always held: it costs no fd.
use crate::layer::File;
use crate::union::{DirEntry, Ino, Opened, UpperWatch};
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug)]
pub struct OpenFile {
    pub ino: Ino,
    /// None: a lazy read-only lower handle (see the module docs).
    file: RwLock<Option<Arc<File>>>,
    on_upper: AtomicBool,
    /// Whether the node has been copied up since.
    watch: UpperWatch,
    /// The same file opened `O_APPEND`, made on the first append write.
    append: Mutex<Option<Arc<OwnedFd>>>,
    /// The access mode its file was opened with (`O_RDONLY`, ...).
    acc: i32,
}

impl OpenFile {
    /// An open file of node `ino`: `file` (None: lazy, see the module
    /// docs), on the upper or not, opened with access mode `acc`.
    fn with(ino: Ino, file: Option<Arc<File>>, upper: bool, watch: UpperWatch, acc: i32) -> Self {
        OpenFile {
            ino,
            file: RwLock::new(file),
            on_upper: AtomicBool::new(upper),
            watch,
            append: Mutex::new(None),
            acc,
        }
    }

    /// A node's file (see `nodeio`), opened with access mode `acc`.
    pub fn new(ino: Ino, opened: Opened, acc: i32) -> OpenFile {
        let file = Some(Arc::new(opened.file));
        OpenFile::with(ino, file, opened.upper, opened.watch, acc)
    }

    pub fn watch(&self) -> &UpperWatch {
        &self.watch
    }

    /// Whether the file serves a read (`write`: a write) of its node now:
    /// opened for it, and not left behind on a lower (a write needs the
    /// upper's file).
    pub fn serves(&self, write: bool) -> bool {
        match write {
            true => self.acc != libc::O_RDONLY && self.on_upper(),
            false => self.acc != libc::O_WRONLY && !self.left_behind(),
        }
    }

    /// The handle's file; None for a lazy handle, which the caller reopens.
    pub fn file(&self) -> Option<Arc<File>> {
        self.file.read().clone()
    }

    pub fn on_upper(&self) -> bool {
        self.on_upper.load(Ordering::Acquire)
    }

    /// A handle that holds its file on a lower whose node has been copied
    /// up since: it is to be reopened on the upper.
    pub fn left_behind(&self) -> bool {
        !self.on_upper() && self.watch.is_upper() && self.file.read().is_some()
    }

    pub fn replace(&self, file: Arc<File>, upper: bool) {
        *self.file.write() = Some(file);
        *self.append.lock() = None;
        self.on_upper.store(upper, Ordering::Release);
    }

    /// The handle's file opened `O_APPEND` (the kernel then writes at the
    /// real end of the file, whatever offset it is given), opened once and
    /// kept. None for a lazy handle or a file without an fd, or when the
    /// file cannot be opened again (an unprivileged daemon's mode-0444
    /// file, written through the fd that created it).
    pub fn append_fd(&self) -> Option<Arc<OwnedFd>> {
        let mut slot = self.append.lock();
        if slot.is_none() {
            let file = self.file()?;
            let flags = libc::O_WRONLY | libc::O_APPEND;
            *slot = crate::sys::reopen(file.fd()?, flags).ok().map(Arc::new);
        }
        slot.clone()
    }
}

#[derive(Debug)]
pub struct DirHandle {
    /// `.`, `..`, then the merged entries; taken at offset 0.
    pub snapshot: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

#[derive(Debug, Default)]
pub struct Handles {
    files: DashMap<u64, Arc<OpenFile>>,
    dirs: DashMap<u64, Arc<DirHandle>>,
    next: AtomicU64,
}

impl Handles {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A handle on `file` (`upper`: the upper's), or a lazy one when
    /// `file` is None; `watch` follows its node to the upper.
    pub fn add_file(
        &self,
        ino: Ino,
        file: Option<Arc<File>>,
        upper: bool,
        watch: UpperWatch,
    ) -> u64 {
        let id = self.next_id();
        // The kernel checks each request against its handle's open mode.
        let h = OpenFile::with(ino, file, upper, watch, libc::O_RDWR);
        self.files.insert(id, Arc::new(h));
        id
    }

    /// How many files are open.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    pub fn file(&self, id: u64) -> Option<Arc<OpenFile>> {
        self.files.get(&id).map(|h| h.clone())
    }

    pub fn remove_file(&self, id: u64) -> Option<Arc<OpenFile>> {
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

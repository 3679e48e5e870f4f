//! I/O by node: a connection whose kernel opens files without asking.
//!
//! FUSE lets a daemon answer the first `OPEN` with ENOSYS; the kernel then
//! opens every file without a request and sends no `RELEASE` for it
//! (no-open mode, for the whole connection). A program start maps a dozen
//! files (the loader cache, libc, locale files), and each open cost two
//! round trips: two thirds of the requests of a `touch` in a union used
//! as `/`. Reads and writes then come with handle 0 and are served by node:
//! the node's file is opened at its first read or write and kept in a
//! bounded cache (`NodeFiles`), least recently used out first.
//!
//! Which mode a mount takes (`-o handles` / `-o nohandles` choose):
//! - without `default_permissions` (an unprivileged mount), a union of host
//!   files keeps open requests: the daemon's own open is then the only
//!   check that refuses an open the caller may not make (a file it may not
//!   read or write), and a refusal must come from `open`, not from the
//!   first read;
//! - otherwise a union with an upper takes no open requests;
//! - a union without an upper keeps them where its files can be handed to
//!   the kernel in passthrough (host lowers, a privileged daemon), which
//!   then reads them itself; otherwise (images alone) none.
//!
//! What no-open mode changes, all within what users of the kernel overlay
//! see:
//! - a lower file is copied up at its first change (write, truncate,
//!   `fallocate`), not at an open for writing, which the daemon never
//!   sees;
//! - the kernel keeps a file's pages across opens; a change made to an
//!   upper file behind the mount shows once the kernel's cached
//!   attributes expire (it drops the pages when it sees the new mtime or
//!   size), which is the lifetime the attributes already have;
//! - no passthrough: a file opened without a request cannot be given a
//!   backing file, and its cached pages would not see the writes of one
//!   that was (from `CREATE`), so no file gets one;
//! - `open(O_TRUNC)` arrives as a `SETATTR`: the kernel's atomic-truncate
//!   flag is not asked for, as the kernel would take the skipped `OPEN` to
//!   have truncated;
//! - a file unlinked before its first read or write is still found (see
//!   `union::unlinked`).
//!
//! `CREATE` is still asked (it makes the file), but once the kernel knows
//! the daemon opens nothing it releases nothing either: the created file
//! becomes its node's file, and the reply carries no handle.
use super::handles::OpenFile;
use super::{FimFs, errno};
use crate::union::Ino;
use fuser::Errno;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// The handle number of a file the kernel opened without asking.
pub(super) const NO_HANDLE: u64 = 0;

/// Most node files kept open at once, whatever the fd limit.
const MOST: usize = 4096;

/// The files of nodes read or written without a handle.
#[derive(Debug)]
pub struct NodeFiles {
    cache: Mutex<LruCache<Ino, Arc<OpenFile>>>,
}

impl NodeFiles {
    /// A cache of at most `fds` files (and at most `MOST`).
    pub fn new(fds: usize) -> NodeFiles {
        let cap = NonZeroUsize::new(fds.clamp(1, MOST)).unwrap_or(NonZeroUsize::MIN);
        NodeFiles {
            cache: Mutex::new(LruCache::new(cap)),
        }
    }

    fn get(&self, ino: Ino) -> Option<Arc<OpenFile>> {
        self.cache.lock().get(&ino).cloned()
    }

    fn put(&self, ino: Ino, file: Arc<OpenFile>) {
        self.cache.lock().put(ino, file);
    }

    /// The kernel forgot `ino`: its file closes (once no request uses it).
    pub fn forget(&self, ino: Ino) {
        self.cache.lock().pop(&ino);
    }
}

impl FimFs {
    /// The open file of handle `fh` of `ino`; for `NO_HANDLE`, the node's
    /// file, opened for writing (copied up first) when `write`.
    pub(super) fn handle(&self, ino: Ino, fh: u64, write: bool) -> Result<Arc<OpenFile>, Errno> {
        match fh {
            NO_HANDLE if self.no_open => self.node_file(ino, write),
            _ => self.handles.file(fh).ok_or(Errno::EBADF),
        }
    }

    /// Makes `opened` (access mode `acc`) the file of node `ino`.
    pub(super) fn node_files_adopt(
        &self,
        ino: Ino,
        opened: crate::union::Opened,
        acc: i32,
    ) -> Arc<OpenFile> {
        let f = Arc::new(OpenFile::new(ino, opened, acc));
        self.node_files.put(ino, f.clone());
        f
    }

    /// The file a read (`write`: a write) of `ino` without a handle goes
    /// to: the cached one while it serves, else the node's file opened
    /// again (on the upper once the node was copied up).
    fn node_file(&self, ino: Ino, write: bool) -> Result<Arc<OpenFile>, Errno> {
        if let Some(f) = self.node_files.get(ino)
            && self.union.is_current(ino, f.watch())
            && f.serves(write)
        {
            return Ok(f);
        }
        let (opened, acc) = match write {
            // An owner may write a file it may not read (mode 0200).
            true => match self.union.open(ino, libc::O_RDWR) {
                Err(crate::sys::Errno::EACCES) => {
                    (self.union.open(ino, libc::O_WRONLY), libc::O_WRONLY)
                }
                other => (other, libc::O_RDWR),
            },
            false => (self.union.open(ino, libc::O_RDONLY), libc::O_RDONLY),
        };
        Ok(self.node_files_adopt(ino, opened.map_err(errno)?, acc))
    }
}

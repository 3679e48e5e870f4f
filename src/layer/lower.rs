//! What the engine needs from a read-only layer: the `Lower` interface.
//!
//! The union reaches every lower through this trait and nothing else. A
//! lower answers by *handles* it hands out itself: a [`Dir`] for a
//! directory and a [`File`] for an open file. A handle is opaque to the
//! engine, which only stores it (a node caches one `Dir` per layer) and
//! gives it back; so a lower without file descriptors (an image whose
//! metadata is in memory: a directory is an inode index, a file is read
//! through a block cache) fits without the engine changing.
//!
//! Invariants:
//! - a handle is only ever given back to the lower that made it (the
//!   engine keys both by `LayerId`); a host lower refuses another's with
//!   `EXDEV`, never misreads it;
//! - names are single components, never `.`/`..` or with `/` (the engine
//!   only passes names a request or a listing carried);
//! - a lower never changes under a mount (unless the user says so,
//!   `SIGUSR1`), so answers may be cached by the engine.
//!
//! The host directory is the first implementation (`host`); the upper is a
//! host directory too, and answers the same read calls through it.
use super::marker::{DirMarks, Probe};
use crate::sys::{DirEnt, Errno, Result};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

/// A directory of one layer, as that layer handed it out. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dir(pub(super) DirRepr);

#[derive(Debug, Clone)]
pub(super) enum DirRepr {
    /// An `O_PATH` fd of a host directory.
    Host(Arc<OwnedFd>),
    /// A directory inode of the image whose device number is `dev`.
    Image {
        dev: u64,
        ino: crate::image::tree::InodeId,
    },
}

impl Dir {
    /// The handle of a host directory held open as `fd`.
    pub fn host(fd: OwnedFd) -> Dir {
        Dir(DirRepr::Host(Arc::new(fd)))
    }

    /// The handle of a host directory already shared (an upper directory
    /// a node holds).
    pub fn host_shared(fd: Arc<OwnedFd>) -> Dir {
        Dir(DirRepr::Host(fd))
    }

    /// The host directory fd behind the handle: always there for the
    /// upper (a host directory); None for a lower that has no fds.
    pub fn fd(&self) -> Option<&Arc<OwnedFd>> {
        match &self.0 {
            DirRepr::Host(fd) => Some(fd),
            DirRepr::Image { .. } => None,
        }
    }
}

/// A file of one layer, open for reading (a file of the upper: for
/// reading and writing).
#[derive(Debug)]
pub struct File(pub(super) FileRepr);

#[derive(Debug)]
pub(super) enum FileRepr {
    /// Shared: an upper file's fd also pins its inode (`union::hand_out`).
    Host(Arc<OwnedFd>),
    /// A file of a lower without fds (an image's, read through its block
    /// cache): only its layer knows how to read it.
    Indexed(Box<dyn ReadAt>),
}

/// How a file of a lower without fds is read.
pub(super) trait ReadAt: Send + Sync + std::fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;
}

impl File {
    pub fn host(fd: OwnedFd) -> File {
        File(FileRepr::Host(Arc::new(fd)))
    }

    /// A host file whose fd is shared already.
    pub fn host_shared(fd: Arc<OwnedFd>) -> File {
        File(FileRepr::Host(fd))
    }

    /// The fd behind the file, when it has one: the fast paths (reflink,
    /// `copy_file_range`, splice, passthrough) use it.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.shared_fd().map(|fd| fd.as_fd())
    }

    /// The fd behind the file, to share (a pin, a backing file).
    pub fn shared_fd(&self) -> Option<&Arc<OwnedFd>> {
        match &self.0 {
            FileRepr::Host(fd) => Some(fd),
            FileRepr::Indexed(_) => None,
        }
    }

    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match &self.0 {
            FileRepr::Host(fd) => crate::sys::pread(fd.as_fd(), buf, offset),
            FileRepr::Indexed(f) => f.read_at(offset, buf),
        }
    }
}

/// Where an entry of a layer sits, found from its inode number alone (see
/// [`Lower::home`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The path of its directory from the layer's root, components joined
    /// by `/` (empty for the root).
    pub dir: Vec<u8>,
    pub name: Vec<u8>,
    /// Its whole mode (type bits included).
    pub mode: u32,
}

/// What the engine needs from a read-only layer. `name` is an entry of
/// `dir`; an empty `name` means `dir` itself where a `&CStr` is taken.
pub trait Lower: Send + Sync + std::fmt::Debug {
    /// Where the layer comes from, for messages and `fimfs which`.
    fn path(&self) -> &Path;
    /// The device number the layer's `st_dev` values carry (inode numbers
    /// the union reports are built from it and `st_ino`, see `union::attr`).
    fn dev(&self) -> u64;
    /// The layer's root directory.
    fn root(&self) -> Result<Dir>;
    /// The directory `name` of `dir`.
    fn open_dir(&self, dir: &Dir, name: &[u8]) -> Result<Dir>;
    /// The directory at `path` (components joined by `/`) below the root,
    /// in one call; an empty path is the root.
    fn open_path(&self, path: &[u8]) -> Result<Dir>;
    /// What the layer holds under `name` in `dir`, every whiteout dialect
    /// decoded; `.wh.NAME` files are looked for only with `wh_files`.
    fn probe(&self, dir: &Dir, name: &[u8], wh_files: bool) -> Result<Probe>;
    /// The opaque markers of `dir` itself.
    fn marks(&self, dir: &Dir) -> DirMarks;
    /// The attributes of `dir/name` (of `dir` for an empty name), no
    /// marker decoded.
    fn stat(&self, dir: &Dir, name: &CStr) -> Result<libc::stat>;
    /// Every entry of `dir`, markers included, without `.` and `..`.
    fn list(&self, dir: &Dir) -> Result<Vec<DirEnt>>;
    /// Is the zero-size regular file `dir/name` an xattr whiteout?
    fn is_xattr_whiteout(&self, dir: &Dir, name: &CStr) -> bool;
    /// The value of xattr `xname` of `dir/name`.
    fn xattr(&self, dir: &Dir, name: &CStr, xname: &CStr) -> Result<Vec<u8>>;
    /// The xattr names of `dir/name`, NUL-separated.
    fn xattr_names(&self, dir: &Dir, name: &CStr) -> Result<Vec<u8>>;
    /// The target of the symlink `dir/name`.
    fn readlink(&self, dir: &Dir, name: &CStr) -> Result<Vec<u8>>;
    /// Opens `dir/name` for reading; `flags` beyond the access mode are
    /// hints a lower may ignore (`O_NONBLOCK`, `O_SYNC`).
    fn open(&self, dir: &Dir, name: &CStr, flags: i32) -> Result<File>;
    /// What `statfs` reports for the layer.
    fn statfs(&self) -> Result<libc::statfs>;
    /// Can the layer find any of its entries from the `st_ino` it reported
    /// ([`Lower::home`]), from memory? Then the engine need not remember
    /// where the entries it hands out from here sit.
    fn finds_by_number(&self) -> bool {
        false
    }
    /// Where the entry whose `st_ino` is `ino` sits (a hard link: one of
    /// its names); None when the layer cannot tell or holds no such entry.
    fn home(&self, _ino: u64) -> Option<Home> {
        None
    }
}

/// A handle given to a lower that did not make it.
pub(super) fn foreign() -> Errno {
    Errno::EXDEV
}

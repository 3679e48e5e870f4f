//! The layer stack: read-only lowers, the writable upper and the per-PID
//! workdir.
//!
//! The engine reaches a lower only through the [`Lower`] trait (`lower`);
//! a host directory (`Layer`, held open as an `O_PATH` fd, every access
//! below it through that fd: `host`) is its first implementation, and the
//! upper is always one. Markers are read here (`marker`). Layer ids are small integers:
//! `UPPER` (0) is the upper, `1..=N` are the lowers from top to bottom, so a
//! smaller id always means a higher priority.
mod host;
mod image;
mod lower;
pub mod marker;
mod workdir;

pub use image::ImageLayer;
pub use lower::{Dir, File, Home, Lower};
pub use workdir::{Stale, Workdir, WorkdirError, remove_tree, stale_dirs};

use crate::sys::{self, Errno};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Index of a layer in the stack; `UPPER` is 0, lowers count from 1.
pub type LayerId = u16;
pub const UPPER: LayerId = 0;

/// One directory tree of the stack.
#[derive(Debug)]
pub struct Layer {
    root: OwnedFd,
    path: PathBuf,
    dev: u64,
}

impl Layer {
    pub fn open(path: &Path) -> Result<Layer, LayerError> {
        let root = sys::open_layer_root(path).map_err(|e| LayerError::new(path, e))?;
        let st = sys::fstat(root.as_fd()).map_err(|e| LayerError::new(path, e))?;
        Ok(Layer {
            root,
            path: path.to_path_buf(),
            dev: st.st_dev,
        })
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dev(&self) -> u64 {
        self.dev
    }
}

/// A layer that could not be opened, with the path and the reason.
#[derive(Debug)]
pub struct LayerError {
    pub path: PathBuf,
    pub errno: Errno,
}

impl LayerError {
    fn new(path: &Path, errno: Errno) -> Self {
        LayerError {
            path: path.to_path_buf(),
            errno,
        }
    }
}

impl std::fmt::Display for LayerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.errno {
            Errno::ENOENT => "does not exist".to_string(),
            Errno::ENOTDIR => "is not a directory".to_string(),
            e => e.desc().to_string(),
        };
        write!(f, "{}: {}", self.path.display(), why)
    }
}

impl std::error::Error for LayerError {}

/// The whole stack, fixed for the life of a mount.
#[derive(Debug)]
pub struct Stack {
    upper: Option<Layer>,
    lowers: Vec<Box<dyn Lower>>,
}

impl Stack {
    /// `lowers` top-most first. Without an upper the union is read-only.
    pub fn new(upper: Option<Layer>, lowers: Vec<Layer>) -> Stack {
        let lowers = lowers.into_iter().map(|l| Box::new(l) as Box<dyn Lower>);
        Stack::with_lowers(upper, lowers.collect())
    }

    /// [`Stack::new`] over lowers of any kind.
    pub fn with_lowers(upper: Option<Layer>, lowers: Vec<Box<dyn Lower>>) -> Stack {
        Stack { upper, lowers }
    }

    pub fn upper(&self) -> Option<&Layer> {
        self.upper.as_ref()
    }

    /// Layer `id`, read through the [`Lower`] calls (the upper answers
    /// them as the host directory it is).
    pub fn get(&self, id: LayerId) -> Option<&dyn Lower> {
        match id {
            UPPER => self.upper.as_ref().map(|u| u as &dyn Lower),
            n => self.lowers.get(n as usize - 1).map(|l| &**l),
        }
    }

    pub fn lower_count(&self) -> usize {
        self.lowers.len()
    }

    /// Lower ids from top to bottom.
    pub fn lower_ids(&self) -> impl Iterator<Item = LayerId> + '_ {
        (1..=self.lowers.len()).map(|i| i as LayerId)
    }

    /// What `statfs` reports: the upper, or the top lower when read-only.
    pub fn statfs_layer(&self) -> Option<&dyn Lower> {
        self.get(if self.upper.is_some() { UPPER } else { 1 })
    }
}

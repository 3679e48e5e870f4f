//! The per-layer directories of a directory node (`DirLayers`): each
//! layer's `Dir` handle, top-most first, as resolved at one rename
//! generation, with what is known of each lower's names; and `Place`,
//! where one entry lives in one of them.
//!
//! Invariant: the upper, when the directory has one, is the first layer.
use crate::layer::{Dir, LayerId};
use crate::sys::{Errno, Result};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Where one union entry lives in its winning layer: `dir` plus `name`,
/// or the directory `dir` itself when `name` is empty.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub(super) layer: LayerId,
    pub(super) dir: Dir,
    pub(super) name: CString,
}

impl Place {
    /// The directory fd of a place in the upper (a host directory). A
    /// lower place without an fd is EROFS: nothing writes there.
    pub(super) fn upper_fd(&self) -> Result<BorrowedFd<'_>> {
        self.dir.fd().map(|f| f.as_fd()).ok_or(Errno::EROFS)
    }
}

/// One layer's directory of a directory node.
#[derive(Debug, Clone)]
pub struct LayerDir {
    pub id: LayerId,
    /// The directory in that layer, as the layer handed it out (an
    /// `O_PATH` fd for a host directory; see `layer::Lower`).
    pub dir: Dir,
    pub xwhiteouts: bool,
    /// For a lower: its names once listed (lowers never change).
    pub names: Arc<super::names::LayerNames>,
}

/// The per-layer directories of a directory node, top-most first.
#[derive(Debug, Clone)]
pub struct DirLayers {
    pub generation: u64,
    pub layers: Vec<LayerDir>,
    /// The upper directory is opaque (nothing below it merges in).
    pub opaque: bool,
}

impl DirLayers {
    pub fn upper(&self) -> Option<&Arc<OwnedFd>> {
        self.layers
            .first()
            .filter(|l| l.id == crate::layer::UPPER)
            .and_then(|l| l.dir.fd())
    }

    /// The fds these layers hold open (a layer without fds holds none):
    /// what they count in the budget.
    pub fn fds(&self) -> usize {
        self.layers.iter().filter(|l| l.dir.fd().is_some()).count()
    }

    pub fn lowers(&self) -> impl Iterator<Item = &LayerDir> {
        self.layers.iter().filter(|l| l.id != crate::layer::UPPER)
    }
}

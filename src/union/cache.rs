//! What the engine hands the adapter, one value per operation, and how long
//! the kernel may keep each part of it: an [`Entry`] (lookup, readdirplus,
//! create, mkdir, mknod, symlink, link, getattr), an [`Opened`] file, an
//! [`OpenedDir`], a [`Created`] file (an entry and its open file).
//!
//! The cache policy is decided here, where the engine's table tests reach
//! it (`tests/engine_cache.rs`); the adapter only maps a [`Lifetime`] to
//! the durations the mount was given.
//!
//! Invariants:
//! - what the upper holds may change behind the mount: `Short`;
//! - what only the lowers hold cannot, while no other daemon shares the
//!   upper ([`Alone`](super::Alone)): `Long`; once one does, `Short`;
//! - an entry reached by a spelling other than its own (casefold) is never
//!   kept: when the entry is renamed or removed, the kernel drops only the
//!   spelling the call used;
//! - the pages of a lower file stay valid across opens (`keep_cache`); an
//!   upper file's may have changed behind the mount;
//! - a handle may be given to the kernel for good (`settled`) only where
//!   it will never have to move: an upper file, or any file of a union
//!   without an upper, where nothing is ever copied up.
use super::attr::{Attr, Ino};
use super::engine::{Alone, Union};
use super::node::Node;
use crate::layer::File;
use std::sync::Arc;

/// How long the kernel may keep something the engine handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Not at all: asked again on every use.
    Never,
    /// Briefly: it may change behind the mount.
    Short,
    /// Long: nothing but a user's deliberate change to a lower alters it.
    Long,
}

/// How long the kernel may keep an entry's name and its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cache {
    pub attr: Lifetime,
    pub entry: Lifetime,
}

/// An entry the engine hands out: its number, its attributes, and what the
/// kernel may cache of it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub ino: Ino,
    pub attr: Attr,
    pub cache: Cache,
}

/// Tells whether a node has been copied up since a file was opened on it:
/// a handle opened on a lower then moves to the upper copy (an fd opened
/// before a copy-up sees later writes). One read of the node's state, no
/// table lookup.
#[derive(Debug, Clone)]
pub struct UpperWatch(pub(super) Arc<Node>);

impl UpperWatch {
    /// Does the upper hold the node now?
    pub fn is_upper(&self) -> bool {
        self.0.state().upper
    }
}

impl Union {
    /// Whether `watch` follows the node the kernel knows as `ino` now (not
    /// one it forgot, whose number a new node may have taken since).
    pub fn is_current(&self, ino: Ino, watch: &UpperWatch) -> bool {
        self.nodes
            .get(ino)
            .is_some_and(|n| Arc::ptr_eq(&n, &watch.0))
    }
}

/// A file opened by [`Union::open`].
#[derive(Debug)]
pub struct Opened {
    /// The file as its layer handed it out: an fd for the upper and host
    /// lowers; a lower without fds reads through `File::read_at`.
    pub file: File,
    /// The file is the upper's.
    pub upper: bool,
    /// The kernel may keep the pages it cached of the file across opens.
    pub keep_cache: bool,
    /// The file is the one this handle reads for as long as it is open: it
    /// is the upper's, or the union has no upper to copy it to. Only then
    /// may the kernel be handed the file itself (passthrough); a lower
    /// file of a writable union must stay in the daemon's hands, which
    /// move its handles to the copy-up.
    pub settled: bool,
    /// Follows the node to the upper once it is copied up.
    pub watch: UpperWatch,
}

/// A directory opened by [`Union::opendir`].
#[derive(Debug, Clone)]
pub struct OpenedDir {
    /// The directory's attributes, as `getattr` would give them.
    pub attr: Attr,
    /// The kernel may keep the listing it cached: the directory is as it
    /// was when its last listing was taken.
    pub keep_listing: bool,
}

/// A file made (or found, see `open_made_meanwhile`) and opened in one
/// call: the entry (one lookup counted) and the open file.
#[derive(Debug)]
pub struct Created {
    pub entry: Entry,
    pub opened: Opened,
}

impl Union {
    /// The flag the adapter's watcher sets: whether this daemon is alone
    /// on its upper.
    pub fn alone(&self) -> &Alone {
        &self.alone
    }

    /// What the kernel may cache of an entry (`upper`: the upper holds it;
    /// `exact`: it was reached by its own spelling).
    pub(super) fn cache_of(&self, upper: bool, exact: bool) -> Cache {
        let attr = match upper || !self.alone.get() {
            true => Lifetime::Short,
            false => Lifetime::Long,
        };
        let entry = match exact {
            true => attr,
            false => Lifetime::Never,
        };
        Cache { attr, entry }
    }

    /// The entry of `node` with attributes `attr`, reached by its own
    /// spelling or not (`exact`).
    pub(super) fn entry_of(&self, node: &Node, attr: Attr, exact: bool) -> Entry {
        Entry {
            ino: node.ino,
            attr,
            cache: self.cache_of(node.state().upper, exact),
        }
    }

    /// The file `file` opened on `node` (`upper`: in the upper).
    pub(super) fn opened(&self, node: Arc<Node>, file: File, upper: bool) -> Opened {
        Opened {
            file,
            upper,
            keep_cache: !upper,
            settled: upper || self.is_read_only(),
            watch: UpperWatch(node),
        }
    }
}

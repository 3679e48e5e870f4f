//! Union nodes and the inode table.
//!
//! A node is one entry of the merged tree as the kernel knows it: its
//! number, where it sits (parent node and name: the same relative path in
//! every layer, since fimfs writes no redirects), which layers hold it, and
//! for directories the open `O_PATH` fds of each layer's directory.
//!
//! Invariants:
//! - the table holds a node while the kernel holds lookups on it; the count
//!   is changed only under the table shard's lock, so FORGET racing LOOKUP
//!   on another thread can neither underflow it nor drop a node just handed
//!   out;
//! - a node's cached directory fds are trusted only while the engine's
//!   rename generation is unchanged (a directory rename moves whole trees);
//! - the root is never forgotten.
use super::attr::Kind;
use crate::layer::LayerId;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a node sits in the union tree.
#[derive(Debug, Clone)]
pub struct Loc {
    pub parent: Option<Arc<Node>>,
    pub name: Vec<u8>,
}

impl Loc {
    pub fn is(&self, parent: &Arc<Node>, name: &[u8]) -> bool {
        self.name == name && self.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent))
    }

    fn same(&self, other: &Loc) -> bool {
        match &other.parent {
            Some(p) => self.is(p, &other.name),
            None => self.parent.is_none(),
        }
    }
}

/// Which layers hold a node, as of its last resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub kind: Kind,
    /// The upper holds the entry (it wins).
    pub upper: bool,
    /// The top-most lower holding the entry (the winner when `!upper`).
    pub lower: Option<LayerId>,
    /// A directory present in the upper and in at least one lower.
    pub merged: bool,
}

/// One layer's directory of a directory node.
#[derive(Debug, Clone)]
pub struct LayerDir {
    pub id: LayerId,
    /// `O_PATH` handle of the directory in that layer.
    pub fd: Arc<OwnedFd>,
    pub xwhiteouts: bool,
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
            .map(|l| &l.fd)
    }

    pub fn lowers(&self) -> impl Iterator<Item = &LayerDir> {
        self.layers.iter().filter(|l| l.id != crate::layer::UPPER)
    }
}

#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    /// Every name the kernel reached this node by, most recent first
    /// (hard links give a file several).
    locs: RwLock<Vec<Loc>>,
    state: RwLock<State>,
    dir: Mutex<Option<DirLayers>>,
    /// Serialises copy-up of this node (one copy even when threads race).
    pub copy_lock: Mutex<()>,
    lookups: AtomicU64,
}

impl Node {
    pub fn new(ino: u64, loc: Loc, state: State) -> Node {
        Node {
            ino,
            locs: RwLock::new(vec![loc]),
            state: RwLock::new(state),
            dir: Mutex::new(None),
            copy_lock: Mutex::new(()),
            lookups: AtomicU64::new(0),
        }
    }

    /// The node's primary name.
    pub fn loc(&self) -> Loc {
        self.locs.read().first().cloned().unwrap_or(Loc {
            parent: None,
            name: Vec::new(),
        })
    }

    /// Every name of the node, primary first.
    pub fn locs(&self) -> Vec<Loc> {
        self.locs.read().clone()
    }

    /// Makes `loc` the node's only name.
    pub fn set_loc(&self, loc: Loc) {
        *self.locs.write() = vec![loc];
    }

    /// Adds (or promotes) `loc` as the primary name.
    pub fn add_loc(&self, loc: Loc) {
        let mut locs = self.locs.write();
        locs.retain(|l| !l.same(&loc));
        locs.insert(0, loc);
    }

    /// Forgets the name `parent/name`, unless it is the last one.
    pub fn remove_loc(&self, parent: &Arc<Node>, name: &[u8]) {
        let mut locs = self.locs.write();
        if locs.len() > 1 {
            locs.retain(|l| !l.is(parent, name));
        }
    }

    /// Moves the name `parent/name` to `to` (a rename).
    pub fn move_loc(&self, parent: &Arc<Node>, name: &[u8], to: Loc) {
        let mut locs = self.locs.write();
        locs.retain(|l| !l.is(parent, name) && !l.same(&to));
        locs.insert(0, to);
    }

    pub fn state(&self) -> State {
        self.state.read().clone()
    }

    pub fn set_state(&self, s: State) {
        *self.state.write() = s;
    }

    pub fn cached_dir(&self, generation: u64) -> Option<DirLayers> {
        self.dir
            .lock()
            .as_ref()
            .filter(|d| d.generation == generation)
            .cloned()
    }

    pub fn set_dir(&self, d: Option<DirLayers>) {
        *self.dir.lock() = d;
    }

    /// The node's path from the root, for logs and the layer-relative
    /// fallbacks; components joined by `/`.
    pub fn path(&self) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut cur = self.loc();
        while let Some(p) = cur.parent.clone() {
            parts.push(cur.name.clone());
            cur = p.loc();
        }
        parts.reverse();
        parts.join(&b'/')
    }
}

/// ino → node, with the kernel's lookup counts.
#[derive(Debug, Default)]
pub struct NodeTable {
    map: DashMap<u64, Arc<Node>>,
}

impl NodeTable {
    pub fn new(root: Arc<Node>) -> NodeTable {
        let t = NodeTable::default();
        t.map.insert(root.ino, root);
        t
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.map.get(&ino).map(|n| n.clone())
    }

    /// Hands the node numbered `ino` to the kernel, counting one lookup:
    /// the live node if there is one (moved to `loc`, with the fresh
    /// `state`), else a new one.
    pub fn remember(&self, ino: u64, loc: Loc, state: State, dir: Option<DirLayers>) -> Arc<Node> {
        let slot = self
            .map
            .entry(ino)
            .or_insert_with(|| Arc::new(Node::new(ino, loc.clone(), state.clone())));
        let live = slot.value();
        if ino != super::attr::ROOT_INO {
            match state.kind {
                // A directory has one name.
                super::attr::Kind::Dir => live.set_loc(loc),
                _ => live.add_loc(loc),
            }
        }
        live.set_state(state);
        if dir.is_some() {
            live.set_dir(dir);
        }
        live.lookups.fetch_add(1, Ordering::Relaxed);
        live.clone()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == super::attr::ROOT_INO {
            return;
        }
        if let dashmap::Entry::Occupied(e) = self.map.entry(ino) {
            let left = e.get().lookups.load(Ordering::Relaxed).saturating_sub(n);
            e.get().lookups.store(left, Ordering::Relaxed);
            if left == 0 {
                e.remove();
            }
        }
    }
}

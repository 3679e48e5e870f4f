//! Union nodes and the inode table.
//!
//! A node is one entry of the merged tree as the kernel knows it: its
//! number, where it sits (parent node and name: the same relative path in
//! every layer, since fimfs writes no redirects), which layers hold it, and
//! for directories each layer's directory handle (`layer::Dir`).
//!
//! Invariants:
//! - the table holds a node while the kernel holds lookups on it; the count
//!   is changed only under the table shard's lock, so FORGET racing LOOKUP
//!   on another thread can neither underflow it nor drop a node just handed
//!   out;
//! - a node's cached directory fds are trusted only while the engine's
//!   rename generation is unchanged (a directory rename moves whole trees);
//! - the cached directory fds of all nodes together stay within a budget
//!   (`DirFds`): past it, the least recently used caches are dropped and
//!   resolved again through their parents when next needed;
//! - the root is never forgotten.
use super::attr::{Ino, Kind};
pub use super::dirfds::DirFds;
use super::dirlayers::Place;
pub use super::dirlayers::{DirLayers, LayerDir};
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
    /// The name `name` in the directory `parent`.
    pub fn at(parent: Arc<Node>, name: &[u8]) -> Loc {
        Loc {
            parent: Some(parent),
            name: name.to_vec(),
        }
    }

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

/// A node's cached layers, counted in the budget while cached.
#[derive(Debug)]
struct CachedDir {
    layers: DirLayers,
    fds: Arc<DirFds>,
}

impl Drop for CachedDir {
    fn drop(&mut self) {
        self.fds
            .held
            .fetch_sub(self.layers.fds(), Ordering::Relaxed);
    }
}

/// `Node::shed_gen` when the layers were not shed.
const NOT_SHED: u64 = u64::MAX;

#[derive(Debug)]
pub struct Node {
    pub ino: Ino,
    /// Every name the kernel reached this node by, most recent first
    /// (hard links give a file several).
    locs: RwLock<Vec<Loc>>,
    state: RwLock<State>,
    /// What only a directory needs, made at its first use: most nodes
    /// are files, and a million of them should not carry it.
    dirs: std::sync::OnceLock<Box<DirPart>>,
    /// Serialises copy-up of this node (one copy even when threads race).
    pub copy_lock: Mutex<()>,
    lookups: AtomicU64,
    /// Keeps the upper inode the number came from allocated (see
    /// `Union::hand_out`).
    pin: Mutex<Option<Arc<OwnedFd>>>,
    /// The lower file this node still is after its last name went (see
    /// `union::unlinked`); boxed, as few nodes ever have one.
    kept: Mutex<Option<Box<Place>>>,
}

/// The part of a node only a directory uses.
#[derive(Debug)]
struct DirPart {
    dir: Mutex<Option<CachedDir>>,
    /// `DirFds::clock` when the cached layers were last used.
    dir_used: AtomicU64,
    /// The generation of the layers last dropped to keep within the fd
    /// budget (not because they went stale); `NOT_SHED` otherwise.
    shed_gen: AtomicU64,
    /// The attributes the last listing started from.
    listed: Mutex<Option<ListStamp>>,
}

impl Default for DirPart {
    fn default() -> DirPart {
        DirPart {
            dir: Mutex::new(None),
            dir_used: AtomicU64::new(0),
            shed_gen: AtomicU64::new(NOT_SHED),
            listed: Mutex::new(None),
        }
    }
}

/// What tells a directory's listing changed behind the mount: its top
/// layer's mtime, ctime and size (the lowers never change).
pub type ListStamp = (std::time::SystemTime, std::time::SystemTime, u64);

impl Node {
    pub fn new(ino: Ino, loc: Loc, state: State) -> Node {
        Node {
            ino,
            locs: RwLock::new(vec![loc]),
            state: RwLock::new(state),
            dirs: std::sync::OnceLock::new(),
            copy_lock: Mutex::new(()),
            lookups: AtomicU64::new(0),
            pin: Mutex::new(None),
            kept: Mutex::new(None),
        }
    }

    /// The directory part, made now if it was not.
    fn dir_part(&self) -> &DirPart {
        self.dirs.get_or_init(Box::default)
    }

    /// The stamp of the directory when its last listing was taken.
    pub fn listed(&self) -> Option<ListStamp> {
        self.dirs.get().and_then(|d| *d.listed.lock())
    }

    pub fn set_listed(&self, stamp: Option<ListStamp>) {
        match (self.dirs.get(), stamp) {
            (None, None) => {}
            (Some(d), stamp) => *d.listed.lock() = stamp,
            (None, stamp) => *self.dir_part().listed.lock() = stamp,
        }
    }

    /// The node's primary name; None once its last name is gone (an
    /// unlinked file the kernel still holds, open or not yet forgotten).
    pub fn loc(&self) -> Option<Loc> {
        self.locs.read().first().cloned()
    }

    /// Has the node lost its last name (unlinked, perhaps still open)?
    pub fn unlinked(&self) -> bool {
        self.locs.read().is_empty()
    }

    /// Every name of the node, primary first.
    pub fn locs(&self) -> Vec<Loc> {
        self.locs.read().clone()
    }

    /// Makes `loc` the node's only name.
    fn set_loc(&self, loc: Loc) {
        *self.locs.write() = vec![loc];
    }

    /// Adds (or promotes) `loc` as the primary name.
    pub fn add_loc(&self, loc: Loc) {
        let mut locs = self.locs.write();
        locs.retain(|l| !l.same(&loc));
        locs.insert(0, loc);
    }

    /// Forgets the name `parent/name` (unlinked, or now naming another
    /// entry).
    fn remove_loc(&self, parent: &Arc<Node>, name: &[u8]) {
        self.locs.write().retain(|l| !l.is(parent, name));
    }

    /// Moves the name `parent/name` to `to` (a rename).
    fn move_loc(&self, parent: &Arc<Node>, name: &[u8], to: Loc) {
        let mut locs = self.locs.write();
        locs.retain(|l| !l.is(parent, name) && !l.same(&to));
        locs.insert(0, to);
    }

    /// The upper inode the node's number came from, held open.
    pub fn pinned(&self) -> Option<Arc<OwnedFd>> {
        self.pin.lock().clone()
    }

    /// Makes `fd` (an fd on the node's upper inode) its pin, unless it
    /// has one.
    pub fn pin_if_none(&self, fd: impl FnOnce() -> Option<Arc<OwnedFd>>) {
        let mut pin = self.pin.lock();
        if pin.is_none() {
            *pin = fd();
        }
    }

    /// Makes `fd` the node's pin, replacing any (the node moved to a new
    /// upper inode).
    pub fn set_pin(&self, fd: Arc<OwnedFd>) {
        *self.pin.lock() = Some(fd);
    }

    /// The lower file the node still is, unlinked (see `union::unlinked`).
    pub(super) fn kept(&self) -> Option<Place> {
        self.kept.lock().as_deref().cloned()
    }

    pub(super) fn set_kept(&self, place: Option<Place>) {
        *self.kept.lock() = place.map(Box::new);
    }

    /// Lets an fd opened on the node's upper inode serve as its pin, so
    /// that an open upper file costs the daemon one fd, not two (an
    /// `O_PATH` pin and the open file). Only when both are the same inode.
    pub fn share_pin(&self, fd: &Arc<OwnedFd>) {
        use std::os::fd::AsFd;
        let mut pin = self.pin.lock();
        let Some(old) = pin.as_ref() else {
            return;
        };
        // Already an open file's fd (the handle still holds it): nothing to
        // gain, and no fstat on this open.
        if Arc::ptr_eq(old, fd) || Arc::strong_count(old) > 1 {
            return;
        }
        let same = match (
            crate::sys::fstat(old.as_fd()),
            crate::sys::fstat(fd.as_fd()),
        ) {
            (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
            _ => false,
        };
        if same {
            *pin = Some(fd.clone());
        }
    }

    pub fn state(&self) -> State {
        self.state.read().clone()
    }

    pub fn set_state(&self, s: State) {
        *self.state.write() = s;
    }

    /// The cached layers of a directory node, if still valid for the
    /// rename `generation`.
    pub fn cached_dir(&self, generation: u64) -> Option<DirLayers> {
        let part = self.dirs.get()?;
        let dir = part.dir.lock();
        let c = dir.as_ref().filter(|c| c.layers.generation == generation)?;
        part.dir_used
            .store(c.fds.clock.load(Ordering::Relaxed), Ordering::Relaxed);
        Some(c.layers.clone())
    }

    /// Drops the cached layers (their fds close once no call uses them).
    pub fn clear_dir(&self) {
        if let Some(part) = self.dirs.get() {
            part.dir.lock().take();
            part.shed_gen.store(NOT_SHED, Ordering::Relaxed);
        }
    }

    /// Drops the cached layers to free their fds; they were still right
    /// for the generation they were resolved at (see `shed_generation`).
    fn shed_dir(&self) {
        let Some(part) = self.dirs.get() else {
            return;
        };
        let mut dir = part.dir.lock();
        let generation = dir.take().map_or(NOT_SHED, |c| c.layers.generation);
        part.shed_gen.store(generation, Ordering::Relaxed);
    }

    /// The generation at which this directory's layers were dropped only
    /// to free fds, if they were: as long as the union's generation is
    /// still that one, the node's state (which layers hold it) still
    /// holds, and a caller may open one of them again by path instead of
    /// reopening them all.
    pub fn shed_generation(&self) -> Option<u64> {
        let part = self.dirs.get()?;
        let g = part.shed_gen.load(Ordering::Relaxed);
        (g != NOT_SHED && part.dir.lock().is_none()).then_some(g)
    }

    /// Whether the node holds cached layers now.
    fn has_cached_dir(&self) -> bool {
        self.dirs.get().is_some_and(|d| d.dir.lock().is_some())
    }

    /// When its cached layers were last used (`DirFds::clock`).
    fn dir_used(&self) -> u64 {
        self.dirs
            .get()
            .map_or(0, |d| d.dir_used.load(Ordering::Relaxed))
    }

    /// The node's path from the root, for logs and the layer-relative
    /// fallbacks; components joined by `/`.
    pub fn path(&self) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut cur = self.loc();
        while let Some(Loc {
            parent: Some(p),
            name,
        }) = cur
        {
            parts.push(name);
            cur = p.loc();
        }
        parts.reverse();
        parts.join(&b'/')
    }
}

/// A name in a directory: (parent's number, name).
type NameKey = (Ino, Vec<u8>);

fn key(parent: &Arc<Node>, name: &[u8]) -> NameKey {
    (parent.ino, name.to_vec())
}

/// ino → node, with the kernel's lookup counts, and name → node: which
/// node the kernel holds for each name it has looked up. Renames and
/// unlinks act on exactly that node (inode numbers alone cannot tell: a
/// renamed copy-up may resolve to another number, hard links share one).
#[derive(Debug)]
pub struct NodeTable {
    map: DashMap<Ino, Arc<Node>>,
    names: DashMap<NameKey, Ino>,
    fds: Arc<DirFds>,
}

impl NodeTable {
    pub fn new(root: Arc<Node>, fds: DirFds) -> NodeTable {
        let t = NodeTable {
            map: DashMap::new(),
            names: DashMap::new(),
            fds: Arc::new(fds),
        };
        t.map.insert(root.ino, root);
        t
    }

    /// The budget of cached layer directory fds.
    pub fn dir_fds(&self) -> &DirFds {
        &self.fds
    }

    /// Caches `d` as the layers of directory `node`. Past the budget, the
    /// least recently used caches of other nodes are dropped first.
    pub fn set_dir(&self, node: &Node, d: DirLayers) {
        let n = d.fds();
        let held = self.fds.held.fetch_add(n, Ordering::Relaxed) + n;
        let tick = self.fds.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let part = node.dir_part();
        part.dir_used.store(tick, Ordering::Relaxed);
        *part.dir.lock() = Some(CachedDir {
            layers: d,
            fds: self.fds.clone(),
        });
        part.shed_gen.store(NOT_SHED, Ordering::Relaxed);
        if held > self.fds.budget {
            self.shed(node.ino, self.fds.budget / 4 * 3);
        }
    }

    /// Drops cached layers, least recently used first, until the fds they
    /// hold are down to `target`. The root's layers and those of `keep`
    /// (just cached) stay.
    pub fn shed(&self, keep: Ino, target: usize) {
        let Some(_one) = self.fds.evicting.try_lock() else {
            return;
        };
        let mut cached: Vec<(u64, Arc<Node>)> = self
            .map
            .iter()
            .filter(|e| *e.key() != super::attr::ROOT_INO && *e.key() != keep)
            .filter(|e| e.value().has_cached_dir())
            .map(|e| (e.value().dir_used(), e.value().clone()))
            .collect();
        cached.sort_unstable_by_key(|(used, _)| *used);
        for (_, node) in cached {
            if self.fds.held() <= target {
                break;
            }
            node.shed_dir();
        }
    }

    pub fn get(&self, ino: Ino) -> Option<Arc<Node>> {
        self.map.get(&ino).map(|n| n.clone())
    }

    /// Hands the node numbered `ino` to the kernel, counting one lookup:
    /// the live node if there is one (moved to `loc`, with the fresh
    /// `state`), else a new one.
    /// `pin` is asked for an fd only when the node has none.
    pub fn remember(
        &self,
        ino: Ino,
        loc: Loc,
        state: State,
        dir: Option<DirLayers>,
        pin: impl FnOnce() -> Option<Arc<OwnedFd>>,
    ) -> Arc<Node> {
        let live = {
            let slot = self
                .map
                .entry(ino)
                .or_insert_with(|| Arc::new(Node::new(ino, loc.clone(), state.clone())));
            let live = slot.value().clone();
            live.lookups.fetch_add(1, Ordering::Relaxed);
            live
        };
        if ino == super::attr::ROOT_INO {
            return live;
        }
        {
            let mut p = live.pin.lock();
            if p.is_none() {
                *p = pin();
            }
        }
        let parent = loc.parent.clone();
        let name = loc.name.clone();
        match state.kind {
            // A directory has one name.
            super::attr::Kind::Dir => live.set_loc(loc),
            _ => live.add_loc(loc),
        }
        live.set_state(state);
        if let Some(d) = dir {
            self.set_dir(&live, d);
        }
        if let Some(p) = parent {
            self.name_now(&p, &name, Some(ino));
        }
        live
    }

    /// Keeps `node`, made from its number alone (see `union::direct`), in
    /// the table; the kernel's lookups of it were not counted, so its
    /// first FORGET drops it. Returns the node the table holds.
    pub fn adopt(&self, node: Arc<Node>) -> Arc<Node> {
        let live = self.map.entry(node.ino).or_insert(node).value().clone();
        if let Some(Loc {
            parent: Some(p),
            name,
        }) = live.loc()
        {
            self.name_now(&p, &name, Some(live.ino));
        }
        live
    }

    /// The directory nodes in the table.
    pub fn dir_nodes(&self) -> Vec<Arc<Node>> {
        self.map
            .iter()
            .filter(|e| e.value().state().kind == super::attr::Kind::Dir)
            .map(|e| e.value().clone())
            .collect()
    }

    /// The node numbered `ino` that is not an entry of any layer (such as
    /// `.ciopfs`), counting one lookup; it is never forgotten.
    pub fn remember_fixed(&self, ino: Ino) -> Arc<Node> {
        let slot = self.map.entry(ino).or_insert_with(|| {
            let loc = Loc {
                parent: None,
                name: Vec::new(),
            };
            let state = State {
                kind: super::attr::Kind::File,
                upper: false,
                lower: None,
                merged: false,
            };
            Arc::new(Node::new(ino, loc, state))
        });
        slot.value().clone()
    }

    /// The node the kernel holds for `parent/name`, if any.
    pub fn child(&self, parent: &Arc<Node>, name: &[u8]) -> Option<Arc<Node>> {
        let ino = *self.names.get(&key(parent, name))?;
        self.get(ino)
            .filter(|n| n.locs().iter().any(|l| l.is(parent, name)))
    }

    /// `parent/name` now names `ino` (or nothing): the node it named
    /// before loses the name.
    fn name_now(&self, parent: &Arc<Node>, name: &[u8], ino: Option<Ino>) {
        tracing::trace!(parent = parent.ino.0, name = %String::from_utf8_lossy(name), ?ino, "name now");
        let k = key(parent, name);
        let prev = match ino {
            Some(i) => self.names.insert(k, i),
            None => self.names.remove(&k).map(|(_, i)| i),
        };
        if let Some(prev) = prev
            && Some(prev) != ino
            && let Some(old) = self.get(prev)
        {
            old.remove_loc(parent, name);
        }
    }

    /// `parent/name` was unlinked.
    pub fn unlinked(&self, parent: &Arc<Node>, name: &[u8]) {
        self.name_now(parent, name, None);
    }

    /// `from` was renamed to `to`, replacing what `to` named. With
    /// `exchange`, the two names swapped their entries.
    pub fn renamed(&self, from: (&Arc<Node>, &[u8]), to: (&Arc<Node>, &[u8]), exchange: bool) {
        let src = self.child(from.0, from.1);
        let dst = self.child(to.0, to.1);
        tracing::trace!(
            from = %String::from_utf8_lossy(&from.0.path()), fname = %String::from_utf8_lossy(from.1),
            to = %String::from_utf8_lossy(&to.0.path()), tname = %String::from_utf8_lossy(to.1),
            src = ?src.as_ref().map(|n| n.ino), dst = ?dst.as_ref().map(|n| n.ino), exchange, "renamed");
        let loc = |(p, n): (&Arc<Node>, &[u8])| Loc::at(p.clone(), n);
        self.names.remove(&key(from.0, from.1));
        self.names.remove(&key(to.0, to.1));
        if let Some(d) = &dst {
            match exchange {
                true => d.move_loc(to.0, to.1, loc(from)),
                false => d.remove_loc(to.0, to.1),
            }
        }
        if let Some(s) = &src {
            s.move_loc(from.0, from.1, loc(to));
            s.clear_dir();
            self.names.insert(key(to.0, to.1), s.ino);
        }
        if exchange && let Some(d) = &dst {
            d.clear_dir();
            self.names.insert(key(from.0, from.1), d.ino);
        }
    }

    /// The names the kernel holds for nodes only the lowers have, as
    /// (parent, name, node).
    /// Drops what every live node remembers of its layers (cached directory
    /// fds and lower listings, listing stamps); returns their numbers.
    pub fn forget_layers(&self) -> Vec<Ino> {
        self.map
            .iter()
            .map(|e| {
                e.value().clear_dir();
                e.value().set_listed(None);
                *e.key()
            })
            .collect()
    }

    pub fn lower_only_names(&self) -> Vec<(Ino, Vec<u8>, Ino)> {
        self.names
            .iter()
            .filter(|e| self.get(*e.value()).is_some_and(|n| !n.state().upper))
            .map(|e| (e.key().0, e.key().1.clone(), *e.value()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The kernel dropped `n` lookups of `ino`; true when that was the
    /// last and the node left the table.
    pub fn forget(&self, ino: Ino, n: u64) -> bool {
        if ino == super::attr::ROOT_INO || ino == super::attr::CIOPFS_INO {
            return false;
        }
        if let dashmap::Entry::Occupied(e) = self.map.entry(ino) {
            let left = e.get().lookups.load(Ordering::Relaxed).saturating_sub(n);
            e.get().lookups.store(left, Ordering::Relaxed);
            if left == 0 {
                let (_, node) = e.remove_entry();
                for l in node.locs() {
                    if let Some(p) = &l.parent {
                        self.names.remove_if(&key(p, &l.name), |_, i| *i == ino);
                    }
                }
                return true;
            }
        }
        false
    }
}

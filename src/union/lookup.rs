//! Lookup: top-down name resolution across the layers, and handing what
//! it finds to the kernel (a node, its attributes, one lookup counted).
//!
//! The rule (SPEC §1): the upper, then the lowers from top to bottom; the
//! first layer holding the name wins. A whiteout hides the name in every
//! layer below; a non-directory hides everything below; a directory merges
//! the same-named directories below it until one of them is opaque.
//! Resolution always reads the layers (no cached guess decides what exists),
//! so entries added to the upper behind the mount are seen at once.
use super::attr::Kind;
use super::attr::{Attr, Ino};
use super::attr::{CIOPFS_INO, CIOPFS_NAME};
use super::cache::Entry;
use super::engine::Union;
use super::fold;
use super::marker::{self, Probe};
use super::names::LayerNames;
use super::node::Loc;
use super::node::{DirLayers, LayerDir, Node, State};
use crate::layer::{Dir, LayerId, Lower, UPPER};
use crate::sys;
use crate::sys::{Errno, Result};
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The outcome of resolving one name.
#[derive(Debug, Clone)]
pub struct Found {
    pub state: State,
    /// The winner's name in its layer: the name looked up, or with
    /// casefold, the spelling found there.
    pub name: Vec<u8>,
    /// The winning layer and its entry.
    pub winner: LayerId,
    pub st: libc::stat,
    /// The entry whose inode number the union reports (see `attr`).
    pub origin: libc::stat,
    /// For directories: each layer's directory, top-most first.
    pub dir: Option<DirLayers>,
}

/// What the upper holds at a directory's name that its cached layers say
/// only the lowers have (see `Union::upper_behind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Behind {
    Nothing,
    /// A directory: the directory is merged with the upper now.
    Dir,
    /// Another entry or a whiteout: the directory is gone.
    Other,
}

/// One step of the scan: the winner so far and what the next layer adds.
#[derive(Default)]
struct Scan {
    found: Option<(LayerId, libc::stat)>,
    origin: Option<libc::stat>,
    layers: Vec<LayerDir>,
    opaque: bool,
}

impl Scan {
    /// Takes one layer's entry; returns false when no layer below matters.
    fn take(&mut self, layer: &dyn Lower, id: LayerId, st: libc::stat, dir: Option<Dir>) -> bool {
        let is_dir = Kind::from_mode(st.st_mode) == Kind::Dir;
        match self.found {
            None => {
                self.found = Some((id, st));
                match dir {
                    Some(d) => self.add_dir(layer, id, &st, d),
                    // An upper non-directory looks one layer further for its origin.
                    None => id == UPPER,
                }
            }
            Some((wid, wst)) => {
                let winner_dir = Kind::from_mode(wst.st_mode) == Kind::Dir;
                let same = Kind::from_mode(wst.st_mode) == Kind::from_mode(st.st_mode);
                // A lower file with several links may have been copied up
                // under several names, to different upper files: none of
                // them may take its number (the kernel overlay's rule too).
                if wid == UPPER && same && self.origin.is_none() && (is_dir || st.st_nlink <= 1) {
                    self.origin = Some(st);
                }
                match (winner_dir && is_dir, dir) {
                    (true, Some(d)) => self.add_dir(layer, id, &st, d),
                    _ => false,
                }
            }
        }
    }

    fn add_dir(&mut self, layer: &dyn Lower, id: LayerId, st: &libc::stat, dir: Dir) -> bool {
        let marks = layer.marks(&dir);
        self.layers.push(LayerDir {
            id,
            dir,
            xwhiteouts: marks.xwhiteouts,
            names: Arc::new(LayerNames::for_dir(st)),
        });
        if marks.opaque && id == UPPER {
            self.opaque = true;
        }
        !marks.opaque
    }
}

impl Union {
    /// What one layer directory holds under `name`, and under which
    /// spelling. With casefold, a name missing there is looked up in the
    /// directory's folded index: an entry of another spelling wins over a
    /// whiteout (a whiteout only hides the layers below), the first in
    /// byte order among several.
    ///
    /// `whiteouts`: whether a whiteout here matters to the caller. It does
    /// not in the bottom layer of a directory (it would hide nothing), nor
    /// to a caller that asks only for entries; there a missing name needs
    /// no `.wh.` probe.
    pub(super) fn probe_in(
        &self,
        l: &LayerDir,
        name: &[u8],
        whiteouts: bool,
    ) -> Result<(Probe, Vec<u8>)> {
        let lower = l.id != UPPER;
        let layer = self.stack.get(l.id).ok_or(Errno::ENOENT)?;
        // A lower directory due for its listing is listed before the probe
        // where a miss costs two calls (the name and its `.wh.` file), so
        // the listing answers it; where it costs one (the bottom layer), it
        // is listed after the miss instead: the listing then pays for
        // itself only if more misses come, and a hit needs none.
        if lower && whiteouts {
            l.names.list_if_due(layer, &l.dir);
        }
        let exact = match lower && l.names.lacks(name) {
            true => Probe::Absent,
            false => {
                let p = layer.probe(&l.dir, name, whiteouts)?;
                if lower && matches!(p, Probe::Absent) {
                    l.names.missed();
                    if !whiteouts {
                        l.names.list_if_due(layer, &l.dir);
                    }
                }
                p
            }
        };
        if !self.opts.casefold || matches!(exact, Probe::Entry(_)) {
            return Ok((exact, name.to_vec()));
        }
        let generation = (l.id == UPPER).then(|| self.ns_generation.load(Ordering::Acquire));
        let index = self.fold.index(layer, &l.dir, generation)?;
        let mut whiteout = matches!(exact, Probe::Whiteout);
        for real in index.get(&fold::fold(name)) {
            if real.as_slice() == name {
                continue;
            }
            if real.starts_with(marker::WH_PREFIX) {
                whiteout = true;
                continue;
            }
            match layer.probe(&l.dir, real, true)? {
                Probe::Entry(st) => return Ok((Probe::Entry(st), real.clone())),
                Probe::Whiteout => whiteout = true,
                Probe::Absent => {}
            }
        }
        let probe = if whiteout {
            Probe::Whiteout
        } else {
            Probe::Absent
        };
        Ok((probe, name.to_vec()))
    }

    /// Opens a layer's directory for a node's cache. Out of fds, the least
    /// recently used half of the cached ones is dropped and it tries once
    /// more (open files and pins share the limit with the caches).
    fn open_layer_dir(&self, layer: &dyn Lower, dir: &Dir, name: &[u8]) -> Result<Dir> {
        match layer.open_dir(dir, name) {
            Err(Errno::EMFILE | Errno::ENFILE) => {
                let fds = self.nodes.dir_fds();
                tracing::debug!(held = fds.held(), "out of fds: dropping cached directories");
                self.nodes.shed(Ino(0), fds.held() / 2);
                layer.open_dir(dir, name)
            }
            r => r,
        }
    }

    /// Resolves `name` in the directory whose layers are `parent`.
    pub(super) fn resolve_in(&self, parent: &DirLayers, name: &[u8]) -> Result<Found> {
        if marker::is_marker_name(name) {
            return Err(Errno::ENOENT);
        }
        let mut scan = Scan::default();
        let mut winner_name = None;
        for (i, layer) in parent.layers.iter().enumerate() {
            let LayerDir { id, dir, .. } = layer;
            let bottom = i + 1 == parent.layers.len();
            let (probe, real) = self.probe_in(layer, name, !bottom)?;
            let st = match probe {
                Probe::Absent => continue,
                Probe::Whiteout => break,
                Probe::Entry(st) => st,
            };
            let name = real.as_slice();
            if winner_name.is_none() {
                winner_name = Some(real.clone());
            }
            let wants_dir = Kind::from_mode(st.st_mode) == Kind::Dir
                && scan
                    .found
                    .is_none_or(|(_, w)| Kind::from_mode(w.st_mode) == Kind::Dir);
            let lower = self.stack.get(*id).ok_or(Errno::ENOENT)?;
            let sub = match wants_dir {
                true => Some(self.open_layer_dir(lower, dir, name)?),
                false => None,
            };
            if !scan.take(lower, *id, st, sub) {
                break;
            }
        }
        let (winner, st) = scan.found.ok_or(Errno::ENOENT)?;
        let kind = Kind::from_mode(st.st_mode);
        let dir = (kind == Kind::Dir).then(|| DirLayers {
            generation: self.generation(),
            layers: scan.layers,
            opaque: scan.opaque,
        });
        let merged = dir.as_ref().is_some_and(|d| d.layers.len() > 1);
        let origin = match scan.opaque {
            true => st,
            false => scan.origin.unwrap_or(st),
        };
        Ok(Found {
            state: State {
                kind,
                upper: winner == UPPER,
                lower: (winner != UPPER).then_some(winner),
                merged,
            },
            name: winner_name.unwrap_or_else(|| name.to_vec()),
            winner,
            st,
            origin,
            dir,
        })
    }

    /// The root: every layer's root directory, merged.
    pub(super) fn root_layers(&self) -> Result<DirLayers> {
        let mut layers = Vec::new();
        let ids = self
            .stack
            .upper()
            .map(|_| UPPER)
            .into_iter()
            .chain(self.stack.lower_ids());
        for id in ids {
            if let Some(l) = self.stack.get(id) {
                let dir = l.root()?;
                let xwhiteouts = l.marks(&dir).xwhiteouts;
                layers.push(LayerDir {
                    id,
                    dir,
                    xwhiteouts,
                    names: Default::default(),
                });
            }
        }
        Ok(DirLayers {
            generation: self.generation(),
            layers,
            opaque: false,
        })
    }

    /// The layers of a directory node, from its cache or resolved again
    /// through its parents.
    pub(super) fn dir_layers(&self, node: &Arc<Node>) -> Result<DirLayers> {
        if let Some(d) = node.cached_dir(self.generation()) {
            return Ok(d);
        }
        let loc = node.loc().ok_or(Errno::ENOENT)?;
        let d = match loc.parent {
            None => self.root_layers()?,
            Some(p) => {
                let pl = self.dir_layers(&p)?;
                self.resolve_in(&pl, &loc.name)?.dir.ok_or(Errno::ENOTDIR)?
            }
        };
        self.nodes.set_dir(node, d.clone());
        Ok(d)
    }

    /// Like `dir_layers`, but first notices an upper directory created
    /// behind the mount (FlatImage writes into the upper directly).
    pub(super) fn dir_layers_fresh(&self, node: &Arc<Node>) -> Result<DirLayers> {
        let d = self.dir_layers(node)?;
        if d.upper().is_some() || d.opaque {
            return Ok(d);
        }
        match self.upper_behind(node) {
            Behind::Dir => {
                // Its parents were made in the upper too (`mkdir -p`):
                // every cached listing of layers that lacks the upper is
                // stale, up to the first ancestor that has it.
                let mut cur = Some(node.clone());
                while let Some(n) = cur {
                    match n.cached_dir(self.generation()) {
                        Some(c) if c.upper().is_some() || c.opaque => break,
                        _ => n.clear_dir(),
                    }
                    cur = n.loc().and_then(|l| l.parent);
                }
                self.dir_layers(node)
            }
            Behind::Nothing | Behind::Other => Ok(d),
        }
    }

    /// What the upper holds now at the name of directory `node`, whose
    /// cached layers lack the upper: something made there behind the
    /// mount. One probe in the parent's upper directory when the parent
    /// has one; else a walk from the upper's root (its parents were made
    /// behind the mount too), which notices a directory only.
    pub(super) fn upper_behind(&self, node: &Arc<Node>) -> Behind {
        let Some(upper) = self.stack.upper() else {
            return Behind::Nothing;
        };
        // The parent's cached layers when it has them; else its upper
        // directory opened by path (rebuilding every layer of a parent
        // whose layers were dropped for fds would cost one open each).
        let parent_upper =
            node.loc()
                .and_then(|l| Some((l.parent?, l.name)))
                .and_then(|(p, name)| {
                    let dir = match p.cached_dir(self.generation()) {
                        Some(d) => d.upper()?.clone(),
                        None => upper.open_path(&p.path()).ok()?.fd()?.clone(),
                    };
                    Some((dir, name))
                });
        match parent_upper {
            Some((dir, name)) => match marker::probe(dir.as_fd(), &name) {
                Ok(Probe::Entry(st)) if Kind::from_mode(st.st_mode) == Kind::Dir => Behind::Dir,
                Ok(Probe::Entry(_) | Probe::Whiteout) => Behind::Other,
                Ok(Probe::Absent) | Err(_) => Behind::Nothing,
            },
            None => match upper.open_path(&node.path()) {
                Ok(_) => Behind::Dir,
                Err(_) => Behind::Nothing,
            },
        }
    }

    pub(super) fn resolve_root(&self) -> Result<Found> {
        let d = self.root_layers()?;
        let top = d.layers.first().ok_or(Errno::ENOENT)?;
        let layer = self.stack.get(top.id).ok_or(Errno::ENOENT)?;
        let (winner, st) = (&top.id, layer.stat(&top.dir, c"")?);
        Ok(Found {
            state: State {
                kind: Kind::Dir,
                upper: *winner == UPPER,
                lower: (*winner != UPPER).then_some(*winner),
                merged: d.layers.len() > 1,
            },
            name: Vec::new(),
            winner: *winner,
            st,
            origin: st,
            dir: Some(d),
        })
    }

    /// Looks `name` up in directory `parent`, counting one kernel lookup.
    /// With casefold, `name` may be another spelling of the entry's: the
    /// kernel must then not keep the name (see `cache`).
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Entry> {
        let p = self.node(parent)?;
        if let Some(r) = self.ciopfs_lookup(name) {
            return r.map(|(n, a)| self.entry_of(&n, a, true));
        }
        let pl = self.dir_layers_fresh(&p)?;
        self.lookup_at(p, &pl, name)
    }

    /// With casefold, the `.ciopfs` entry every directory shows (no layer
    /// holds it); None for any other name.
    pub(super) fn ciopfs_lookup(&self, name: &[u8]) -> Option<Result<(Arc<Node>, Attr)>> {
        if !self.opts.casefold || name != CIOPFS_NAME {
            return None;
        }
        let node = self.nodes.remember_fixed(CIOPFS_INO);
        Some(self.ciopfs_attr().map(|a| (node, a)))
    }

    /// Directory `parent`, ready for the lookups of one readdirplus reply:
    /// whether the upper gained it behind the mount is checked once for
    /// the reply, not once per entry (an `openat2` walk or two `fstatat`
    /// each, for every entry of a lower-only directory).
    pub fn listed_dir(&self, parent: Ino) -> Result<ListedDir> {
        let node = self.node(parent)?;
        let layers = self.dir_layers_fresh(&node)?;
        Ok(ListedDir { node, layers })
    }

    /// [`Union::lookup`] of an entry of a listed directory (a readdirplus
    /// reply).
    pub fn lookup_listed(&self, dir: &ListedDir, name: &[u8]) -> Result<Entry> {
        if let Some(r) = self.ciopfs_lookup(name) {
            return r.map(|(n, a)| self.entry_of(&n, a, true));
        }
        self.lookup_at(dir.node.clone(), &dir.layers, name)
    }

    pub(super) fn lookup_at(&self, p: Arc<Node>, pl: &DirLayers, name: &[u8]) -> Result<Entry> {
        let found = self.resolve_in(pl, name);
        tracing::trace!(parent = p.ino.0, name = %String::from_utf8_lossy(name), ok = found.is_ok(), "lookup");
        let found = found?;
        let exact = found.name == name;
        let (node, attr) = self.hand_out(p, pl, name, found, None);
        Ok(self.entry_of(&node, attr, exact))
    }

    /// Hands the entry `found` at `parent/name` (whose layers are `pl`)
    /// to the kernel: the node and its attributes, one lookup counted.
    ///
    /// A number taken from an upper inode is pinned (an `O_PATH` fd held
    /// by the node, as libfuse's passthrough_hp does): while the kernel
    /// knows the number, the upper cannot free that inode and hand its
    /// number to a new file, which the kernel would then take for this
    /// node. Lower numbers need no pin: the lowers never change. `opened`,
    /// an fd the caller holds on the entry (a file it just made), pins it
    /// without a second open.
    pub(super) fn hand_out(
        &self,
        parent: Arc<Node>,
        pl: &DirLayers,
        name: &[u8],
        found: Found,
        opened: Option<&Arc<OwnedFd>>,
    ) -> (Arc<Node>, Attr) {
        let attr = self.attr_of(None, &found);
        let loc = Loc::at(parent, name);
        if self.needs_no_node(&found, name, &attr) {
            return (Arc::new(Node::new(attr.ino, loc, found.state)), attr);
        }
        let own = self.inos.encode(found.st.st_dev, found.st.st_ino);
        let numbered_by_upper = found.state.upper && attr.ino == own;
        let dir_fd = found.dir.as_ref().and_then(|d| d.upper().cloned());
        let pin = || -> Option<Arc<OwnedFd>> {
            if !numbered_by_upper {
                return None;
            }
            if dir_fd.is_some() {
                return dir_fd;
            }
            if let Some(fd) = opened {
                return Some(fd.clone());
            }
            let dir = pl.upper()?;
            let c = sys::cstr(name).ok()?;
            sys::openat(dir.as_fd(), &c, libc::O_PATH, 0)
                .ok()
                .map(Arc::new)
        };
        let node = self
            .nodes
            .remember(attr.ino, loc, found.state, found.dir, pin);
        (node, attr)
    }

    pub(super) fn ciopfs_attr(&self) -> Result<Attr> {
        let top = self.stack.statfs_layer().ok_or(Errno::ENOENT)?;
        let mut st = top.stat(&top.root()?, c"")?;
        st.st_mode = libc::S_IFREG | 0o444;
        st.st_nlink = 1;
        st.st_size = 0;
        st.st_blocks = 0;
        st.st_uid = sys::geteuid();
        st.st_gid = sys::getegid();
        Ok(Attr::from_stat(&st, CIOPFS_INO, false, self.opts.squash))
    }
}

/// A directory whose entries are being looked up for one readdirplus
/// reply (see [`Union::listed_dir`]).
#[derive(Debug)]
pub struct ListedDir {
    pub(super) node: Arc<Node>,
    pub(super) layers: DirLayers,
}

//! Entries the engine keeps no node for: lower-only non-directories of a
//! layer that finds its entries by number (an image, see
//! `Lower::finds_by_number`).
//!
//! While the kernel holds an inode, the engine must be able to serve its
//! number. For most entries that takes a node in the table, about 380
//! bytes each (the node, its name twice, two table slots): a `find -size`
//! over a million-file image held 380 MiB of them. For these entries the
//! number alone tells everything: its device byte names the layer, the
//! layer's `home` names the entry's directory and name, and from there the
//! engine resolves it as it resolves any node. So `hand_out` gives the
//! kernel such a number without remembering anything, and a request on it
//! makes the node on the spot:
//! - read-only requests (getattr, readlink, xattrs) use a passing node;
//! - any other request (open, setattr, copy-up, rename or link of its
//!   name) keeps the node in the table from then on (`adopt`): what
//!   changes (its upper copy, its names, the watches of open handles)
//!   must outlive the request. The kernel's first FORGET of the number
//!   drops it again: its lookups were never counted, and the kernel sends
//!   the whole count when it evicts the inode.
//!
//! A directory rename moves a tree, and with it files the kernel may hold
//! by such numbers: each one is logged (`moves::Moves`), and the path an
//! image gives for a number is carried through the moves made since.
//!
//! Invariants:
//! - a number is given out this way only when it is the entry's own
//!   (`InoMap::encode`, not remapped), the entry is lower-only with one
//!   link, the kernel asked for its exact spelling, and no node holds the
//!   number already;
//! - a node made from a number is resolved afresh like any other (`place`
//!   reads the layers), so one dropped by a stray FORGET is made again
//!   with what the layers hold now; and only when what its name holds now
//!   still carries the number (a file made later at a deleted file's name
//!   is not taken for it).
use super::attr::{Attr, Ino, Kind, ROOT_INO};
use super::engine::{LowerOnlyName, Union};
use super::lookup::Found;
use super::node::{Loc, Node, State};
use crate::sys::{Errno, Result};
use std::sync::Arc;

impl Union {
    /// Logs that the directory at `from` moved to `to` (with `exchange`,
    /// that the two swapped), when a layer hands out numbers whose files
    /// may be below it.
    pub(super) fn tree_moved(&self, from: Vec<u8>, to: Vec<u8>, exchange: bool) {
        let numbered = self
            .stack
            .lower_ids()
            .any(|id| self.stack.get(id).is_some_and(|l| l.finds_by_number()));
        if !numbered {
            return;
        }
        let step = match exchange {
            true => vec![(from.clone(), to.clone()), (to, from)],
            false => vec![(from, to)],
        };
        self.moves.record(step);
    }

    /// May the entry `found`, looked up as `name` and numbered `attr.ino`,
    /// go to the kernel without a node?
    pub(super) fn needs_no_node(&self, found: &Found, name: &[u8], attr: &Attr) -> bool {
        !found.state.upper
            && found.state.kind != Kind::Dir
            && found.name == name
            && found.st.st_nlink <= 1
            && self.layer(found.winner).is_ok_and(|l| l.finds_by_number())
            // Its own number, not one it was given in place of a retired
            // one: only that can be found again from the number alone.
            && self.inos.natural(found.st.st_dev, found.st.st_ino) == Some(attr.ino)
            && self.nodes.get(attr.ino).is_none()
    }

    /// The node of `ino`, if the kernel holds it: from the table, or made
    /// from the number and kept there from now on.
    pub(super) fn node(&self, ino: Ino) -> Result<Arc<Node>> {
        if let Some(n) = self.nodes.get(ino) {
            return Ok(n);
        }
        let made = self.node_from_number(ino).ok_or(Errno::ESTALE)?;
        Ok(self.nodes.adopt(made))
    }

    /// [`Union::node`] for a request that changes nothing: a node made
    /// from the number passes with the request.
    pub(super) fn peek(&self, ino: Ino) -> Result<Arc<Node>> {
        self.nodes
            .get(ino)
            .or_else(|| self.node_from_number(ino))
            .ok_or(Errno::ESTALE)
    }

    /// The node of a number given out without one (see the module header).
    fn node_from_number(&self, ino: Ino) -> Option<Arc<Node>> {
        let numbered = || {
            self.stack
                .lower_ids()
                .filter_map(|id| Some((id, self.stack.get(id)?)))
                .filter(|(_, l)| l.finds_by_number())
        };
        let (dev, st_ino) = self.inos.decode(ino, numbered().map(|(_, l)| l.dev()))?;
        let (id, layer) = numbered().find(|(_, l)| l.dev() == dev)?;
        let home = layer.home(st_ino)?;
        let kind = Kind::from_mode(home.mode);
        if kind == Kind::Dir {
            return None;
        }
        let mut path = home.dir;
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&home.name);
        let path = self.moves.carry(path);
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], &path[..]),
        };
        let parent = self.dir_node_at(dir)?;
        let loc = Loc::at(parent, name);
        let state = State {
            kind,
            upper: false,
            lower: Some(id),
            merged: false,
        };
        let node = Arc::new(Node::new(ino, loc, state));
        // What the name holds now must still be this file (or its copy, which
        // keeps its number): not another entry made there since.
        let (found, _) = self.place(&node).ok()?;
        (self.ino_of(&found) == ino).then_some(node)
    }

    /// The directory node at `path` (components joined by `/`): the one
    /// the kernel holds, else one resolved for the caller alone.
    fn dir_node_at(&self, path: &[u8]) -> Option<Arc<Node>> {
        let mut cur = self.nodes.get(ROOT_INO)?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            cur = match self.nodes.child(&cur, part) {
                Some(n) => n,
                None => {
                    let pl = self.dir_layers(&cur).ok()?;
                    let found = self.resolve_in(&pl, part).ok()?;
                    if found.state.kind != Kind::Dir {
                        return None;
                    }
                    self.transient_child(&cur, part, &found)
                }
            };
        }
        Some(cur)
    }

    /// The node of the entry `found` at `parent/name` that the kernel holds
    /// (a rename or an unlink acts on it): the table's, or one made for a
    /// number given out without a node, kept from now on; else one for the
    /// caller alone.
    pub(super) fn held_child(&self, parent: &Arc<Node>, name: &[u8], found: &Found) -> Arc<Node> {
        if let Some(n) = self.nodes.child(parent, name) {
            return n;
        }
        let attr = self.attr_of(None, found);
        if self.needs_no_node(found, name, &attr) {
            let loc = Loc::at(parent.clone(), name);
            let node = Arc::new(Node::new(attr.ino, loc, found.state.clone()));
            return self.nodes.adopt(node);
        }
        self.transient_child(parent, name, found)
    }

    /// The names the kernel may hold of entries given out without a node,
    /// as (directory, name, number): every non-directory of a numbered
    /// layer below every directory the kernel holds (more than it holds;
    /// dropping a name it does not hold costs nothing).
    pub(super) fn numbered_names(&self) -> Vec<LowerOnlyName> {
        let mut out = Vec::new();
        for dir in self.nodes.dir_nodes() {
            let Ok(layers) = self.dir_layers(&dir) else {
                continue;
            };
            for l in layers.lowers() {
                let Some(layer) = self.stack.get(l.id).filter(|l| l.finds_by_number()) else {
                    continue;
                };
                let Ok(entries) = layer.list(&l.dir) else {
                    continue;
                };
                for e in entries.into_iter().filter(|e| e.dtype != libc::DT_DIR) {
                    let number = self.inos.encode(layer.dev(), e.ino);
                    out.push((dir.ino, e.name, number));
                }
            }
        }
        out
    }
}

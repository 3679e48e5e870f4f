//! Where a node lives: the layer, directory and name of the entry that
//! serves it, found by a fresh resolution (`place`), from the node's last
//! resolution when that cannot be stale (`cached_place`, `quick_place`),
//! or in the upper, copied up first (`writable_place`).
use super::attr::CIOPFS_INO;
use super::attr::Kind;
pub(super) use super::dirlayers::Place;
use super::engine::Union;
use super::lookup::Found;
use super::marker;
use super::node::{self, Loc, Node};
use crate::layer::UPPER;
use crate::sys::{self, Errno, Result};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

impl Union {
    /// Resolves `node` afresh and returns where it lives; a node with
    /// several names (hard links) is found under any that still exists.
    pub(super) fn place(&self, node: &Arc<Node>) -> Result<(Found, Place)> {
        if node.ino == CIOPFS_INO {
            return Err(Errno::EACCES);
        }
        let locs = node.locs();
        let mut first_err = Errno::ENOENT;
        for (i, loc) in locs.iter().enumerate() {
            match self.place_at(node, loc) {
                Ok(r) => {
                    if i > 0 {
                        node.add_loc(loc.clone());
                    }
                    return Ok(r);
                }
                Err(e) if i == 0 => first_err = e,
                Err(_) => {}
            }
        }
        Err(first_err)
    }

    pub(super) fn place_at(&self, node: &Arc<Node>, loc: &Loc) -> Result<(Found, Place)> {
        let (found, parent) = match &loc.parent {
            Some(p) => {
                let pl = self.dir_layers(p)?;
                (self.resolve_in(&pl, &loc.name)?, Some(pl))
            }
            None => (self.resolve_root()?, None),
        };
        node.set_state(found.state.clone());
        let place = match (&found.dir, parent) {
            (Some(d), _) => {
                self.nodes.set_dir(node, d.clone());
                let top = d.layers.first().ok_or(Errno::ENOENT)?;
                Place {
                    layer: top.id,
                    dir: top.dir.clone(),
                    name: CString::default(),
                }
            }
            (None, Some(pl)) => {
                let l = pl.layers.iter().find(|l| l.id == found.winner);
                Place {
                    layer: found.winner,
                    dir: l.ok_or(Errno::ENOENT)?.dir.clone(),
                    name: sys::cstr(&found.name)?,
                }
            }
            (None, None) => return Err(Errno::ENOENT),
        };
        Ok((found, place))
    }

    /// Where `node` lives, from its last resolution, when that cannot be
    /// stale: the winner is the upper (its fd-relative calls fail if it
    /// went away), or a lower (immutable) and the upper still lacks the
    /// name. None: resolve again.
    pub(super) fn cached_place(&self, node: &Arc<Node>) -> Result<Option<(node::State, Place)>> {
        if self.opts.casefold {
            // The name the kernel used may not be the entry's spelling.
            return Ok(None);
        }
        let st = node.state();
        if st.kind == Kind::Dir {
            let d = self.dir_layers(node)?;
            let top = d.layers.first().ok_or(Errno::ENOENT)?;
            if (top.id == UPPER) != st.upper {
                return Ok(None);
            }
            let place = Place {
                layer: top.id,
                dir: top.dir.clone(),
                name: CString::default(),
            };
            return Ok(Some((st, place)));
        }
        let Some(loc) = node.loc() else {
            return Err(Errno::ENOENT);
        };
        let Some(parent) = &loc.parent else {
            return Ok(None);
        };
        let pl = self.dir_layers(parent)?;
        let winner = match (st.upper, st.lower) {
            (true, _) => UPPER,
            (false, Some(l)) => {
                if let Some(u) = pl.upper()
                    && !matches!(marker::probe(u.as_fd(), &loc.name)?, marker::Probe::Absent)
                {
                    return Ok(None);
                }
                l
            }
            (false, None) => return Ok(None),
        };
        let Some(l) = pl.layers.iter().find(|l| l.id == winner) else {
            return Ok(None);
        };
        let place = Place {
            layer: winner,
            dir: l.dir.clone(),
            name: sys::cstr(&loc.name)?,
        };
        Ok(Some((st, place)))
    }

    /// Where `node` lives when its last resolution put it in the upper and
    /// the upper still holds an entry of its kind there: it needs no
    /// copy-up, and calls on the place act on it. None: ask `place`.
    pub(super) fn upper_place(&self, node: &Arc<Node>) -> Option<Place> {
        // A lower node: cached_place would probe the upper for nothing
        // (every read open of a lower file comes here before `place`).
        if !node.state().upper {
            return None;
        }
        let (state, place) = self.cached_place(node).ok()??;
        if !state.upper {
            return None;
        }
        let st = sys::fstatat(place.upper_fd().ok()?, &place.name).ok()?;
        let same = Kind::from_mode(st.st_mode) == state.kind && !marker::is_whiteout_stat(&st);
        same.then_some(place)
    }

    /// The upper inode of the regular file `node`, held open since the node
    /// took its number from it (see `Node::pinned`): the very file a change
    /// of its attributes is for, as the kernel overlay changes the upper
    /// inode it holds, and the file an unlinked node still is. Other nodes
    /// (directories, symlinks, files numbered after a lower) go by name.
    pub(super) fn upper_file_pin(&self, node: &Node) -> Option<Arc<OwnedFd>> {
        let st = node.state();
        if !st.upper || st.kind != Kind::File {
            return None;
        }
        node.pinned()
    }

    /// Where `node` lives once it is in the upper, copied up first if it
    /// is not (with `truncate`, without its data).
    pub(super) fn writable_place(&self, node: &Arc<Node>, truncate: bool) -> Result<Place> {
        if let Some(p) = self.upper_place(node) {
            return Ok(p);
        }
        self.copy_up(node, truncate)
    }

    /// `place` without its resolution when the cache allows.
    pub(super) fn quick_place(&self, node: &Arc<Node>) -> Result<Place> {
        match self.cached_place(node) {
            Ok(Some((_, p))) => Ok(p),
            // Not cached, or its primary name went away: try every name.
            _ => Ok(self.place(node)?.1),
        }
    }
}

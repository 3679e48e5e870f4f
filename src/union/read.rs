//! The reading side of the engine: attributes, links, xattrs, statfs, and
//! opening files and directories. Each call finds where its node lives
//! (`place`) and asks that layer through the `Lower` calls.
use super::attr::CIOPFS_INO;
use super::attr::{Attr, Ino, Kind};
use super::cache::{Entry, Opened};
use super::engine::Union;
use super::lookup::Behind;
use super::marker;
use super::node::{self, Node};
use super::numbers::linked_upper;
use crate::layer::{Dir, File, Lower, UPPER};
use crate::sys::{self, Errno, Result};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

impl Union {
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        if self.is_ciopfs(ino) {
            return self.ciopfs_attr();
        }
        let node = self.peek(ino)?;
        self.node_attr(&node, ino)
    }

    /// [`Union::getattr`] as an [`Entry`]: with what the kernel may cache
    /// of the attributes, read from the node in hand rather than from a
    /// second table lookup.
    pub fn getattr_entry(&self, ino: Ino) -> Result<Entry> {
        if self.is_ciopfs(ino) {
            let attr = self.ciopfs_attr()?;
            let cache = self.cache_of(false, true);
            return Ok(Entry { ino, attr, cache });
        }
        let node = self.peek(ino)?;
        let attr = self.node_attr(&node, ino)?;
        Ok(self.entry_of(&node, attr, true))
    }

    /// The attributes of `ino` from the upper inode its node pins (`fstat`).
    pub(super) fn pinned_attr(&self, pin: &OwnedFd, ino: Ino) -> Result<Attr> {
        let st = sys::fstat(pin.as_fd())?;
        Ok(Attr::from_stat(&st, ino, false, self.opts.squash))
    }

    fn node_attr(&self, node: &Arc<Node>, ino: Ino) -> Result<Attr> {
        // Unlinked, perhaps still open: the file it still is answers.
        if let Some(attr) = self.unlinked_attr(node, ino) {
            return attr;
        }
        if let Ok(Some((state, place))) = self.cached_place(node)
            && let Ok(st) = self.layer(place.layer)?.stat(&place.dir, &place.name)
            && Kind::from_mode(st.st_mode) == state.kind
        {
            let ino = match linked_upper(&state, &st) {
                true => self.inos.encode(st.st_dev, st.st_ino),
                false => ino,
            };
            return Ok(Attr::from_stat(&st, ino, state.merged, self.opts.squash));
        }
        let (found, _) = self.place(node)?;
        Ok(self.attr_of(Some(ino), &found))
    }

    /// The attributes of a directory node from its cached layers, without
    /// resolving its name again in every layer (a warm `find` opens every
    /// directory; over 100 lowers that was 100 probes each). None when
    /// the cache cannot answer for sure: the directory left its top layer,
    /// or the upper gained it behind the mount (its listing must then be
    /// taken again, which a changed stamp tells the kernel).
    pub(super) fn quick_dir_attr(&self, node: &Arc<Node>) -> Option<Attr> {
        if node.cached_dir(self.generation()).is_none() {
            return self.shed_dir_attr(node);
        }
        let (state, place) = self.cached_place(node).ok()??;
        if state.kind != Kind::Dir {
            return None;
        }
        if !state.upper && self.upper_behind(node) != Behind::Nothing {
            return None;
        }
        self.live_dir_attr(node, &state, self.layer(place.layer).ok()?, &place.dir)
    }

    /// The attributes of directory `node` from `dir`, its top layer's
    /// directory; None when that directory is gone.
    pub(super) fn live_dir_attr(
        &self,
        node: &Node,
        state: &node::State,
        layer: &dyn Lower,
        dir: &Dir,
    ) -> Option<Attr> {
        let st = layer.stat(dir, c"").ok()?;
        if st.st_nlink == 0 || Kind::from_mode(st.st_mode) != Kind::Dir {
            return None;
        }
        Some(Attr::from_stat(
            &st,
            node.ino,
            state.merged,
            self.opts.squash,
        ))
    }

    /// `quick_dir_attr` for a lower-only directory whose cached layers were
    /// dropped to stay within the fd budget: one open of its top lower by
    /// path, not a reopening of every layer (a warm `find` over 200
    /// directories in 100 lowers, with room for half their fds, reopened
    /// 20,000 directories a pass).
    pub(super) fn shed_dir_attr(&self, node: &Arc<Node>) -> Option<Attr> {
        if self.opts.casefold || node.shed_generation() != Some(self.generation()) {
            return None;
        }
        let state = node.state();
        let (Kind::Dir, false, Some(top)) = (state.kind, state.upper, state.lower) else {
            return None;
        };
        if self.upper_behind(node) != Behind::Nothing {
            return None;
        }
        let layer = self.stack.get(top)?;
        let dir = layer.open_path(&node.path()).ok()?;
        self.live_dir_attr(node, &state, layer, &dir)
    }

    /// The attributes of an open file, for a node that lost its last
    /// name (unlinked while open): what `fstat` on it reports.
    pub fn getattr_open(&self, ino: Ino, fd: std::os::fd::BorrowedFd<'_>) -> Result<Entry> {
        let node = self.node(ino)?;
        let st = sys::fstat(fd)?;
        let attr = Attr::from_stat(&st, node.ino, false, self.opts.squash);
        Ok(self.entry_of(&node, attr, true))
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let node = self.peek(ino)?;
        let (found, place) = self.place(&node)?;
        if found.state.kind != Kind::Symlink {
            return Err(Errno::EINVAL);
        }
        self.layer(place.layer)?.readlink(&place.dir, &place.name)
    }

    pub fn statfs(&self) -> Result<libc::statfs> {
        self.stack.statfs_layer().ok_or(Errno::ENOENT)?.statfs()
    }

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        if marker::is_layer_xattr(name) {
            return self.layer_of(ino);
        }
        // `.ciopfs` lives in no layer: a file without xattrs.
        if marker::is_private_xattr(name) || self.is_ciopfs(ino) {
            return Err(Errno::ENODATA);
        }
        let node = self.peek(ino)?;
        let place = self.quick_place(&node)?;
        self.layer(place.layer)?
            .xattr(&place.dir, &place.name, &sys::cstr(name)?)
    }

    /// Which layer serves `ino` (`user.fimfs.layer`): `upper`, or
    /// `lower N DIR` (N from 1 at the top-most lower). A merged directory
    /// names its top-most layer.
    pub(super) fn layer_of(&self, ino: Ino) -> Result<Vec<u8>> {
        let node = self.peek(ino)?;
        if ino == CIOPFS_INO && self.opts.casefold {
            return Err(Errno::ENODATA);
        }
        let (found, _) = self.place(&node)?;
        match (found.winner, self.stack.get(found.winner)) {
            (UPPER, _) => Ok(b"upper".to_vec()),
            (id, Some(l)) => {
                let mut v = format!("lower {id} ").into_bytes();
                v.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(l.path().as_os_str()));
                Ok(v)
            }
            (_, None) => Err(Errno::ENODATA),
        }
    }

    /// The xattr names of `ino`, NUL-separated, private ones left out.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        if self.is_ciopfs(ino) {
            return Ok(Vec::new());
        }
        let node = self.peek(ino)?;
        let place = self.quick_place(&node)?;
        let raw = self
            .layer(place.layer)?
            .xattr_names(&place.dir, &place.name)?;
        let mut out = Vec::with_capacity(raw.len());
        for n in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if !marker::is_private_xattr(n) {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Opens the file `ino` for I/O. A write open copies a lower file up
    /// first (with `O_TRUNC`, without copying its data).
    pub fn open(&self, ino: Ino, flags: i32) -> Result<Opened> {
        let node = self.node(ino)?;
        let acc = flags & libc::O_ACCMODE;
        let writes = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if writes && self.is_read_only() {
            return Err(Errno::EROFS);
        }
        // The kernel computes every offset itself: O_APPEND on the backing
        // fd would move writes; O_DIRECT is not needed below the page cache
        // and fails on some uppers.
        let keep =
            libc::O_ACCMODE | libc::O_TRUNC | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC;
        // A file unlinked while the kernel still holds it (opened again
        // through `/proc/PID/fd`, or read without open requests): the file
        // it still is (see `unlinked`).
        if node.unlinked() {
            if let Some(pin) = self.upper_file_pin(&node) {
                let fd = sys::reopen(pin.as_fd(), flags & keep)?;
                return Ok(self.opened(node, File::host(fd), true));
            }
            if let Some(place) = node.kept() {
                return self.open_kept(node, &place, flags & keep, writes);
            }
        }
        let place = match writes {
            true => Some(self.writable_place(&node, flags & libc::O_TRUNC != 0)?),
            false => self.upper_place(&node),
        };
        let (state, place) = match place {
            Some(p) => (node.state(), p),
            None => {
                let (found, place) = self.place(&node)?;
                (found.state, place)
            }
        };
        if state.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        let layer = self.layer(place.layer)?;
        let file = match layer.open(&place.dir, &place.name, flags & keep) {
            // Deleted since it was found: the name is now a whiteout (a 0/0
            // device, which has no driver).
            Err(Errno::ENXIO) => return Err(Errno::ENOENT),
            other => other?,
        };
        Ok(self.opened(node, file, state.upper))
    }

    /// A directory node for [`Union::opendir`], which it checks exists,
    /// and its attributes, as `getattr` would give them.
    pub(super) fn open_dir_node(&self, ino: Ino) -> Result<(Arc<Node>, Attr)> {
        let node = self.node(ino)?;
        if let Some(a) = self.quick_dir_attr(&node) {
            return Ok((node, a));
        }
        let (found, _) = self.place(&node)?;
        if found.state.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok((node, self.attr_of(Some(ino), &found)))
    }
}

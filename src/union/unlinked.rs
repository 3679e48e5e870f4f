//! Files the kernel may still hold open after their last name is gone.
//!
//! When the kernel asks the daemon at every open (FUSE `OPEN`), a file
//! unlinked while open lives on in its handle's fd. Without open requests
//! (the adapter's no-open mode) the daemon learns of an open file only at
//! its first read or write, which may come after the unlink. So whenever
//! a regular file the kernel holds loses its last name (an unlink, or a
//! rename over it), the engine keeps what the node still is:
//! - a file in the upper: its inode, held open as the node's pin (a number
//!   taken from the upper inode has that pin already);
//! - a file only a lower holds: where it lies in that lower (`Node::kept`);
//!   the lowers never change, and the whiteout only hides it.
//!
//! Reads then go to that file. The first change of a kept lower file
//! copies it into an anonymous upper file (staged in the workdir and
//! unlinked there), which the node pins from then on: the kernel overlay
//! would have copied it up at the open for writing. The kernel forgets
//! such a node soon after its last close, and with it what was kept.
use super::attr::{Attr, Ino, Kind};
use super::cache::Opened;
use super::copy_up::copy_entry;
use super::engine::Union;
use super::lookup::Found;
use super::node::{DirLayers, Node};
use super::place::Place;
use crate::layer::{File, Lower};
use crate::sys::{self, Errno, Result};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

impl Union {
    /// `node`, the entry `found` at `parent/name` (`pl`: the parent's
    /// layers), is about to lose that name (an unlink, or a rename over
    /// it): keeps what the node is, when the kernel holds it and this is
    /// its last name.
    pub(super) fn keep_victim(
        &self,
        node: &Arc<Node>,
        (parent, name): (&Arc<Node>, &[u8]),
        pl: &DirLayers,
        found: &Found,
    ) {
        if found.state.kind != Kind::File {
            return;
        }
        let held = self
            .nodes
            .get(node.ino)
            .is_some_and(|n| Arc::ptr_eq(&n, node));
        let other_names = node.locs().iter().any(|l| !l.is(parent, name));
        if !held || other_names {
            return;
        }
        if found.state.upper {
            let Some(dir) = pl.upper() else { return };
            let Ok(name) = sys::cstr(&found.name) else {
                return;
            };
            // Only a regular file: what took the name behind the mount since
            // it was resolved is not pinned in its place.
            node.pin_if_none(|| {
                let fd =
                    sys::openat(dir.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0).ok()?;
                let st = sys::fstat(fd.as_fd()).ok()?;
                (Kind::from_mode(st.st_mode) == Kind::File).then(|| Arc::new(fd))
            });
            return;
        }
        let layer = pl.layers.iter().find(|l| l.id == found.winner);
        if let (Some(l), Ok(name)) = (layer, sys::cstr(&found.name)) {
            node.set_kept(Some(Place {
                layer: found.winner,
                dir: l.dir.clone(),
                name,
            }));
        }
    }

    /// Opens the unlinked node's kept lower file (`flags`: the open's,
    /// `writes`: whether it writes, which copies the file up first).
    pub(super) fn open_kept(
        &self,
        node: Arc<Node>,
        place: &Place,
        flags: i32,
        writes: bool,
    ) -> Result<Opened> {
        if !writes {
            let file = self
                .layer(place.layer)?
                .open(&place.dir, &place.name, flags)?;
            return Ok(self.opened(node, file, false));
        }
        let fd = self.copy_up_kept(&node, place, flags & libc::O_TRUNC != 0)?;
        let file = sys::reopen(fd.as_fd(), flags)?;
        Ok(self.opened(node, File::host(file), true))
    }

    /// Copies the unlinked node's kept lower file into an anonymous upper
    /// file (without its data with `truncate`), which becomes the node's
    /// pin; returns it.
    pub(super) fn copy_up_kept(
        &self,
        node: &Arc<Node>,
        place: &Place,
        truncate: bool,
    ) -> Result<Arc<OwnedFd>> {
        let work = self.work.as_ref().ok_or(Errno::EROFS)?;
        let _once = node.copy_lock.lock();
        if let Some(pin) = self.upper_file_pin(node) {
            return Ok(pin);
        }
        let layer: &dyn Lower = self.layer(place.layer)?;
        let st = layer.stat(&place.dir, &place.name)?;
        let tmp = work.temp_name();
        let made = copy_entry(
            (layer, place),
            &st,
            work.fd(),
            &tmp,
            truncate,
            &self.reflinks,
        )
        .and_then(|()| sys::openat(work.fd(), &tmp, libc::O_RDWR | libc::O_NOFOLLOW, 0));
        let _ = sys::unlinkat(work.fd(), &tmp, false);
        let fd = Arc::new(made?);
        node.set_pin(fd.clone());
        let mut state = node.state();
        state.upper = true;
        node.set_state(state);
        node.set_kept(None);
        Ok(fd)
    }

    /// The attributes of an unlinked node from the file it still is.
    pub(super) fn unlinked_attr(&self, node: &Node, ino: Ino) -> Option<Result<Attr>> {
        if !node.unlinked() {
            return None;
        }
        if let Some(pin) = node.pinned() {
            return Some(self.pinned_attr(&pin, ino));
        }
        let place = node.kept()?;
        let st = self
            .layer(place.layer)
            .and_then(|l| l.stat(&place.dir, &place.name));
        // No name is left in the union, whatever the lower still has.
        Some(st.map(|st| Attr {
            nlink: 0,
            ..Attr::from_stat(&st, ino, false, self.opts.squash)
        }))
    }
}

//! Copy-up: promoting a lower entry into the upper before it changes.
//!
//! Invariants:
//! - parents first: an entry is copied only into an upper directory that
//!   exists, so the upper never holds an orphan;
//! - staged: the copy is built in the workdir under a fresh name (data,
//!   then owner, mode, xattrs, times), fsynced, and renamed into place; after
//!   a crash the upper holds the old state or the new one, never a partial
//!   file (the workdir is emptied at the next mount);
//! - once: the node's `copy_lock` serialises racing copy-ups of one entry,
//!   and only that entry's requests wait for it;
//! - overlay-private xattrs are never copied (a lower's opaque mark copied
//!   up would hide the lower's own contents).
use super::attr::Kind;
use super::data::{Reflinks, copy_data, copy_reads};
use super::engine::Union;
use super::lookup::Found;
use super::marker;
use super::node::{DirLayers, LayerDir, Node, State};
use super::place::Place;
use crate::layer::{Dir, Lower, UPPER};
use crate::sys::{self, Errno, Result};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Where a copy comes from: an entry and the layer that holds it.
pub(crate) type Source<'a> = (&'a dyn Lower, &'a Place);

/// Copies the xattrs of `src` onto the staged entry, skipping
/// overlay-private ones; a value the upper refuses is logged.
fn copy_xattrs((layer, src): Source<'_>, dst_dir: BorrowedFd<'_>, dst: &CStr) {
    let Ok(names) = layer.xattr_names(&src.dir, &src.name) else {
        return;
    };
    for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if marker::is_private_xattr(n) {
            continue;
        }
        let Ok(cn) = sys::cstr(n) else { continue };
        let res = layer
            .xattr(&src.dir, &src.name, &cn)
            .and_then(|v| sys::lsetxattr_at(dst_dir, dst, &cn, &v, 0));
        if let Err(e) = res {
            tracing::debug!(
                "copy-up: xattr {} not copied: {}",
                String::from_utf8_lossy(n),
                e.desc()
            );
        }
    }
}

/// Owner, mode, xattrs and times of `st` onto `dir`/`name` (already created).
pub(crate) fn copy_attrs(src: Source<'_>, st: &libc::stat, dir: BorrowedFd<'_>, name: &CStr) {
    let kind = Kind::from_mode(st.st_mode);
    // chown first: it clears set-id bits, which chmod then restores.
    if let Err(e) = sys::fchownat(dir, name, st.st_uid, st.st_gid) {
        tracing::debug!("copy-up: owner not kept: {}", e.desc());
    }
    if kind != Kind::Symlink
        && let Err(e) = sys::fchmodat(dir, name, st.st_mode & 0o7777)
    {
        tracing::debug!("copy-up: mode not kept: {}", e.desc());
    }
    copy_xattrs(src, dir, name);
    let times = [
        timespec(st.st_atime, st.st_atime_nsec),
        timespec(st.st_mtime, st.st_mtime_nsec),
    ];
    if let Err(e) = sys::utimensat(dir, name, &times) {
        tracing::debug!("copy-up: times not kept: {}", e.desc());
    }
}

/// Creates at `dir`/`name` a copy of the non-directory at `src` (with its
/// data unless `truncate`), attributes included; fsyncs file data.
pub(crate) fn copy_entry(
    src: Source<'_>,
    st: &libc::stat,
    dir: BorrowedFd<'_>,
    name: &CStr,
    truncate: bool,
    reflinks: &Reflinks,
) -> Result<()> {
    match Kind::from_mode(st.st_mode) {
        Kind::File => {
            let out = sys::openat(
                dir,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )?;
            if !truncate && st.st_size > 0 {
                let (layer, at) = src;
                let input = layer.open(&at.dir, &at.name, libc::O_RDONLY)?;
                match input.fd() {
                    Some(fd) => copy_data(fd, out.as_fd(), st, reflinks)?,
                    None => copy_reads(&input, out.as_fd(), st.st_size as u64)?,
                }
            }
            copy_attrs(src, st, dir, name);
            sys::fsync(out.as_fd(), false)
        }
        Kind::Symlink => {
            let target = src.0.readlink(&src.1.dir, &src.1.name)?;
            sys::symlinkat(&sys::cstr(&target)?, dir, name)?;
            copy_attrs(src, st, dir, name);
            Ok(())
        }
        Kind::Dir => {
            sys::mkdirat(dir, name, 0o700)?;
            copy_attrs(src, st, dir, name);
            Ok(())
        }
        _ => {
            sys::mknodat(dir, name, st.st_mode, st.st_rdev)?;
            copy_attrs(src, st, dir, name);
            Ok(())
        }
    }
}

impl Union {
    /// The upper directory of a directory node, copying it (and its
    /// parents) up first.
    pub(super) fn ensure_upper_dir(&self, dir: &Arc<Node>) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = self.dir_layers(dir)?.upper() {
            return Ok(fd.clone());
        }
        // The copy's place is the new upper directory itself.
        let place = self.copy_up(dir, false)?;
        place.dir.fd().cloned().ok_or(Errno::EIO)
    }

    /// Makes `node` live in the upper, and says where it lives there.
    /// With `truncate`, a file is copied without its data (`open(O_TRUNC)`,
    /// `truncate(0)`).
    pub(super) fn copy_up(&self, node: &Arc<Node>, truncate: bool) -> Result<Place> {
        let work = self.work.as_ref().ok_or(Errno::EROFS)?;
        let _once = node.copy_lock.lock();
        let (found, place) = self.place(node)?;
        if found.state.upper {
            return Ok(place);
        }
        let _changes = super::write::NamesChange(self);
        let number = self.number_of(node, &found);
        let loc = node.loc().ok_or(Errno::ENOENT)?;
        let parent = loc.parent.ok_or(Errno::EIO)?;
        let pup = self.ensure_upper_dir(&parent)?;
        let tmp = work.temp_name();
        // For a directory, `place` is its own fd with an empty name.
        // No origin mark: the kernel overlay would show it (see `attr`).
        let src = (self.layer(place.layer)?, &place);
        let staged = copy_entry(src, &found.st, work.fd(), &tmp, truncate, &self.reflinks)
            .and_then(|()| {
                sys::renameat2(
                    work.fd(),
                    &tmp,
                    pup.as_fd(),
                    &sys::cstr(&found.name)?,
                    sys::RENAME_NOREPLACE,
                )
            });
        if let Err(e) = staged {
            let _ = crate::layer::remove_tree(work.fd(), &tmp);
            // Someone (another daemon on the same upper) was faster.
            if e != Errno::EEXIST {
                return Err(e);
            }
        }
        // No fsync of the parent: the copy's data is synced before the
        // rename, so after a crash the entry is the old one or the whole
        // new one. (`pup` is an O_PATH fd, on which fsync fails anyway:
        // the call that stood here never did anything.)
        node.clear_dir();
        let (st, place) = match staged {
            Ok(()) => self.copied_place(node, &found, &pup)?,
            // Not our copy: what is there now is resolved afresh.
            Err(_) => self.place(node).map(|(again, place)| (again.st, place))?,
        };
        if found.state.kind != Kind::Dir {
            // The copy goes on under the number the file had.
            self.inos.stick(st.st_dev, st.st_ino, number);
        }
        if found.state.kind != Kind::Dir && found.st.st_nlink > 1 {
            self.split_lower_links(node, &found.st, &pup, &found.name);
        }
        Ok(place)
    }

    /// Where `node` lives once its copy stands at `pup`/`found.name`: what
    /// resolving it again would find, without resolving it again (the
    /// copy up resolved it once). The copy is the winner now; a directory
    /// carries no opaque mark (private xattrs are not copied), so it still
    /// merges the lower directories `found` had.
    fn copied_place(
        &self,
        node: &Arc<Node>,
        found: &Found,
        pup: &Arc<OwnedFd>,
    ) -> Result<(libc::stat, Place)> {
        let name = sys::cstr(&found.name)?;
        let st = sys::fstatat(pup.as_fd(), &name)?;
        let mut state = State {
            kind: found.state.kind,
            upper: true,
            lower: None,
            merged: false,
        };
        let place = match &found.dir {
            None => Place {
                layer: UPPER,
                dir: Dir::host_shared(pup.clone()),
                name,
            },
            Some(below) => {
                let flags = libc::O_PATH | libc::O_DIRECTORY;
                let dir = Dir::host(sys::openat(pup.as_fd(), &name, flags, 0)?);
                let top = LayerDir {
                    id: UPPER,
                    dir: dir.clone(),
                    xwhiteouts: false,
                    names: Default::default(),
                };
                let layers: Vec<LayerDir> = std::iter::once(top)
                    .chain(below.layers.iter().cloned())
                    .collect();
                state.merged = layers.len() > 1;
                let generation = below.generation;
                let d = DirLayers {
                    generation,
                    layers,
                    opaque: false,
                };
                self.nodes.set_dir(node, d);
                Place {
                    layer: UPPER,
                    dir,
                    name: CString::default(),
                }
            }
        };
        node.set_state(state);
        Ok((st, place))
    }

    /// After copying up one name of a lower file with several links: the
    /// node's other names (the kernel treats them as one inode) become
    /// links of the copy, and names still in the lower stop sharing the
    /// node's number. Best effort: a name that cannot be linked stays a
    /// separate lower file, as on the kernel overlay.
    fn split_lower_links(&self, node: &Arc<Node>, lower: &libc::stat, pup: &OwnedFd, name: &[u8]) {
        self.inos.retire(lower.st_dev, lower.st_ino);
        let Ok(src) = sys::cstr(name) else { return };
        for l in node.locs() {
            let Some(parent) = &l.parent else { continue };
            let same_lower = self
                .dir_layers(parent)
                .and_then(|pl| self.resolve_in(&pl, &l.name))
                .is_ok_and(|f| {
                    !f.state.upper && f.st.st_dev == lower.st_dev && f.st.st_ino == lower.st_ino
                });
            if !same_lower {
                continue;
            }
            let linked = self.ensure_upper_dir(parent).and_then(|dup| {
                let c = sys::cstr(&l.name)?;
                sys::linkat(pup.as_fd(), &src, dup.as_fd(), &c)
            });
            if let Err(e) = linked {
                tracing::debug!(
                    "copy-up: name {:?} stays a lower file: {e}",
                    String::from_utf8_lossy(&l.name)
                );
            }
        }
    }
}

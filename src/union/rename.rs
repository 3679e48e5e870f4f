//! Rename, including directories that live (partly) in the lowers.
//!
//! A directory with lower parts cannot be moved by one upper rename (its
//! lower contents would stay behind, or EXDEV, as on the peers). Instead
//! the whole merged tree is copied into the workdir as an opaque upper
//! directory, renamed into place, and the source is whited out. At every
//! step each file is visible under the old name or the new one (a crash
//! between the two renames shows both, loses neither).
use super::attr::{Ino, Kind};
use super::copy_up::{copy_attrs, copy_entry};
use super::engine::Union;
use super::lookup::Found;
use super::marker;
use super::node::DirLayers;
use super::node::Node;
use super::place::Place;
use super::write::NamesChange;
use crate::layer::remove_tree;
use crate::sys::{self, Errno, Result};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use sys::{RENAME_EXCHANGE, RENAME_NOREPLACE};

/// Files with several links already copied into a materialized tree:
/// source (device, inode) to the directory and name of the first copy.
type Links = HashMap<(u64, u64), (Arc<OwnedFd>, CString)>;

impl Union {
    /// Copies the merged directory `node` into `dir`/`name` (a new, opaque
    /// upper directory holding everything the union shows below it).
    /// Files with several links inside the tree stay one file (`links`
    /// maps a source inode to its first copy).
    fn materialize(
        &self,
        node: &Arc<Node>,
        dir: BorrowedFd<'_>,
        name: &CStr,
        links: &mut Links,
        replaced: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let (found, place) = self.place(node)?;
        let number = self.number_of(node, &found);
        let src_layer = self.layer(place.layer)?;
        copy_entry(
            (src_layer, &place),
            &found.st,
            dir,
            name,
            false,
            &self.reflinks,
        )?;
        self.stick_at(dir, name, number);
        if found.state.upper {
            // The copy replaces this upper directory, deleted afterwards.
            replaced.push((found.st.st_dev, found.st.st_ino));
        }
        let out = Arc::new(sys::openat(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?);
        let dl = self.dir_layers(node)?;
        for e in self.list_node(node)? {
            let f = self.resolve_in(&dl, &e.name)?;
            let cname = sys::cstr(&e.name)?;
            let live = self.nodes.child(node, &e.name);
            if f.state.kind == Kind::Dir {
                let child = live.unwrap_or_else(|| self.transient_child(node, &e.name, &f));
                self.materialize(&child, out.as_fd(), &cname, links, replaced)?;
                continue;
            }
            // Every copy keeps the number its entry had.
            let number = live.map_or_else(|| self.ino_of(&f), |n| n.ino);
            self.materialize_file(&dl, &f, number, (&out, cname), links)?;
        }
        marker::make_opaque(out.as_fd(), c"", self.opts.privileged)?;
        // Children changed the times; set them again last.
        copy_attrs((src_layer, &place), &found.st, dir, name);
        Ok(())
    }

    /// Puts into `out`/`cname` the non-directory `f` of the directory whose
    /// layers are `dl`, under `number`: a link where it is in the upper or
    /// already copied (another link of it in this tree), else a copy.
    fn materialize_file(
        &self,
        dl: &DirLayers,
        f: &Found,
        number: Ino,
        (out, cname): (&Arc<OwnedFd>, CString),
        links: &mut Links,
    ) -> Result<()> {
        let layer = dl
            .layers
            .iter()
            .find(|l| l.id == f.winner)
            .ok_or(Errno::EIO)?;
        if f.winner == crate::layer::UPPER {
            // Already in the upper: one more link to the same inode keeps
            // its identity, its other links and its data (no copy).
            let up = layer.dir.fd().ok_or(Errno::EIO)?;
            sys::linkat(up.as_fd(), &cname, out.as_fd(), &cname)?;
            self.inos.stick(f.st.st_dev, f.st.st_ino, number);
            return Ok(());
        }
        let key = (f.st.st_dev, f.st.st_ino);
        if f.st.st_nlink > 1
            && let Some((d, n)) = links.get(&key)
        {
            return sys::linkat(d.as_fd(), n, out.as_fd(), &cname);
        }
        let src = Place {
            layer: f.winner,
            dir: layer.dir.clone(),
            name: cname.clone(),
        };
        let from = (self.layer(f.winner)?, &src);
        copy_entry(from, &f.st, out.as_fd(), &cname, false, &self.reflinks)?;
        self.stick_at(out.as_fd(), &cname, number);
        if f.st.st_nlink > 1 {
            // Names of it outside this tree stay lower files: they
            // take a new number (see `copy_up`).
            self.inos.retire(f.st.st_dev, f.st.st_ino);
            links.insert(key, (out.clone(), cname));
        }
        Ok(())
    }

    /// The entry `dir`/`name` (a copy) reports `number`.
    fn stick_at(&self, dir: BorrowedFd<'_>, name: &CStr, number: Ino) {
        if let Ok(st) = sys::fstatat(dir, name) {
            self.inos.stick(st.st_dev, st.st_ino, number);
        }
    }

    /// Makes a directory with lower parts a plain opaque upper directory,
    /// in place.
    fn flatten_dir(&self, node: &Arc<Node>) -> Result<()> {
        let work = self.work.as_ref().ok_or(Errno::EROFS)?;
        let _once = node.copy_lock.lock();
        let _changes = NamesChange(self);
        let (found, _) = self.place(node)?;
        if found.state.upper && !found.state.merged {
            return Ok(());
        }
        let loc = node.loc().ok_or(Errno::ENOENT)?;
        let parent = loc.parent.clone().ok_or(Errno::EBUSY)?;
        let pup = self.ensure_upper_dir(&parent)?;
        let tmp = work.temp_name();
        let mut replaced = Vec::new();
        if let Err(e) = self.materialize(node, work.fd(), &tmp, &mut HashMap::new(), &mut replaced)
        {
            let _ = remove_tree(work.fd(), &tmp);
            return Err(e);
        }
        let cname = sys::cstr(&found.name)?;
        let res = if found.state.upper {
            sys::renameat2(work.fd(), &tmp, pup.as_fd(), &cname, RENAME_EXCHANGE)
                .and_then(|()| remove_tree(work.fd(), &tmp))
        } else {
            sys::renameat2(work.fd(), &tmp, pup.as_fd(), &cname, RENAME_NOREPLACE)
        };
        if let Err(e) = res {
            let _ = remove_tree(work.fd(), &tmp);
            return Err(e);
        }
        // The old upper directories are gone; their numbers went to the copies.
        for (dev, ino) in replaced {
            self.inos.gone(dev, ino);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        node.clear_dir();
        Ok(())
    }

    /// `rename(parent/name, newparent/newname, flags)`.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        check_rename_args(self.is_read_only(), newname, flags)?;
        // The names the kernel knows the entries by.
        let (kname, knewname) = (name, newname);
        let exchange = flags & RENAME_EXCHANGE != 0;
        let p = self.node(parent)?;
        let np = self.node(newparent)?;
        let pl = self.dir_layers_fresh(&p)?;
        let npl = self.dir_layers_fresh(&np)?;
        let src = self.resolve_in(&pl, name)?;
        // Casefold: `mv a A` finds `a` at the new name; it only respells.
        let respell = parent == newparent && name != newname;
        let dst = self.rename_target(&npl, newname, flags, respell.then_some(&src.name))?;
        if parent == newparent && name == newname {
            return Ok(());
        }
        check_not_into_itself((&p, name), (&np, newname), src.state.kind, exchange)?;
        let (src_node, dst_node) =
            self.rename_nodes((&p, name, &src), (&np, newname, dst.as_ref()), exchange)?;
        let _changes = NamesChange(self);
        let spup = self.ensure_upper_dir(&p)?;
        let dpup = self.ensure_upper_dir(&np)?;
        // The entries' own spellings (casefold: maybe not the caller's); a
        // new name keeps the caller's.
        let (name, newname) = (
            src.name.as_slice(),
            dst.as_ref().map_or(newname, |d| d.name.as_slice()),
        );
        let (cs, cd) = (sys::cstr(name)?, sys::cstr(newname)?);
        if exchange {
            self.opaque_if_shadowing(&src_node, src.state.kind, &npl, newname)?;
            if let Some(dn) = &dst_node {
                let kind = dst.as_ref().map_or(Kind::File, |d| d.state.kind);
                self.opaque_if_shadowing(dn, kind, &pl, name)?;
            }
            sys::renameat2(spup.as_fd(), &cs, dpup.as_fd(), &cd, RENAME_EXCHANGE)?;
        } else {
            if let (Some(d), Some(dn)) = (&dst, &dst_node) {
                self.keep_victim(dn, (&np, knewname), &npl, d);
            }
            let src_needs_wh = self.lower_has(&pl, name)?;
            self.opaque_if_shadowing(&src_node, src.state.kind, &npl, newname)?;
            self.move_entry(&spup, &cs, &dpup, &cd, src.state.kind, src_needs_wh)?;
        }
        if src.state.kind == Kind::Dir || exchange {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let other = dst.as_ref().zip(dst_node.as_ref());
        let (to, from) = ((dpup.as_fd(), cd.as_c_str()), (spup.as_fd(), cs.as_c_str()));
        self.renumber((&src, &src_node), other, exchange, to, from);
        self.nodes.renamed((&p, kname), (&np, knewname), exchange);
        let dst_dir = dst.as_ref().is_some_and(|d| d.state.kind == Kind::Dir);
        if src.state.kind == Kind::Dir || (exchange && dst_dir) {
            self.tree_moved(child_path(&p, name), child_path(&np, newname), exchange);
        }
        Ok(())
    }

    /// The nodes of a rename's source and target, checked (a replaced
    /// directory must be empty) and promoted to plain upper entries where
    /// they move (`promote`).
    fn rename_nodes(
        &self,
        (p, name, src): (&Arc<Node>, &[u8], &Found),
        (np, newname, dst): (&Arc<Node>, &[u8], Option<&Found>),
        exchange: bool,
    ) -> Result<(Arc<Node>, Option<Arc<Node>>)> {
        let src_node = self.held_child(p, name, src);
        let dst_node = dst.map(|d| self.held_child(np, newname, d));
        if !exchange && let (Some(d), Some(dn)) = (dst, &dst_node) {
            self.check_overwrite(src.state.kind, d.state.kind, dn)?;
        }
        self.promote(&src_node, src)?;
        if let (Some(dn), Some(d)) = (&dst_node, dst)
            && exchange
        {
            self.promote(dn, d)?;
        }
        Ok((src_node, dst_node))
    }

    /// What the new name holds, checked against the flags. `respell`:
    /// the source's own spelling, when a rename in one directory may only
    /// respell it (casefold), in which case the entry found is the source.
    fn rename_target(
        &self,
        npl: &DirLayers,
        newname: &[u8],
        flags: u32,
        respell: Option<&Vec<u8>>,
    ) -> Result<Option<Found>> {
        let dst = match self.resolve_in(npl, newname) {
            Ok(f) => Some(f),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        let dst = dst.filter(|d| respell != Some(&d.name));
        match (&dst, flags & RENAME_EXCHANGE != 0) {
            (Some(_), _) if flags & RENAME_NOREPLACE != 0 => Err(Errno::EEXIST),
            (None, true) => Err(Errno::ENOENT),
            _ => Ok(dst),
        }
    }

    /// The numbers after a rename: the moved entries keep theirs (`moved`
    /// now at `to`; with `exchange`, `other` at `from`); a replaced one is
    /// gone; neither stands for the lower entries at their old names.
    fn renumber(
        &self,
        (src, src_node): (&Found, &Arc<Node>),
        other: Option<(&Found, &Arc<Node>)>,
        exchange: bool,
        (to_dir, to): (BorrowedFd<'_>, &CStr),
        (from_dir, from): (BorrowedFd<'_>, &CStr),
    ) {
        self.stick_at(to_dir, to, self.number_of(src_node, src));
        match other {
            Some((d, dn)) if exchange => self.stick_at(from_dir, from, self.number_of(dn, d)),
            Some((d, _)) if d.state.upper && (d.state.kind == Kind::Dir || d.st.st_nlink <= 1) => {
                self.inos.gone(d.st.st_dev, d.st.st_ino)
            }
            _ => {}
        }
        if !exchange {
            self.retire_origin(src);
            if let Some((d, _)) = other {
                self.retire_origin(d);
            }
        }
    }

    fn check_overwrite(&self, src: Kind, dst: Kind, dst_node: &Arc<Node>) -> Result<()> {
        match (src == Kind::Dir, dst == Kind::Dir) {
            (true, false) => Err(Errno::ENOTDIR),
            (false, true) => Err(Errno::EISDIR),
            (true, true) if !self.list_node(dst_node)?.is_empty() => Err(Errno::ENOTEMPTY),
            _ => Ok(()),
        }
    }

    /// Gets an entry wholly into the upper: copy-up, or for a directory
    /// with lower parts, a full tree copy. `found` is its resolution, just
    /// made: an upper file needs nothing.
    fn promote(&self, node: &Arc<Node>, found: &Found) -> Result<()> {
        let st = &found.state;
        match (st.kind, st.upper) {
            (Kind::Dir, _) if st.merged || !st.upper => self.flatten_dir(node),
            (Kind::Dir, _) | (_, true) => Ok(()),
            _ => self.copy_up(node, false).map(drop),
        }
    }

    /// A directory arriving where a lower holds the name must not merge
    /// with it: mark it opaque.
    fn opaque_if_shadowing(
        &self,
        node: &Arc<Node>,
        kind: Kind,
        target: &DirLayers,
        name: &[u8],
    ) -> Result<()> {
        if kind != Kind::Dir || !self.lower_has_any(target, name)? {
            return Ok(());
        }
        let (_, place) = self.place(node)?;
        marker::make_opaque(place.upper_fd()?, c"", self.opts.privileged)
    }

    /// Moves the upper entry `sdir/sname` to `ddir/dname`, replacing what
    /// the upper holds there, leaving a whiteout behind when needed.
    fn move_entry(
        &self,
        sdir: &Arc<std::os::fd::OwnedFd>,
        sname: &CStr,
        ddir: &Arc<std::os::fd::OwnedFd>,
        dname: &CStr,
        kind: Kind,
        whiteout: bool,
    ) -> Result<()> {
        let (s, d) = (sdir.as_fd(), ddir.as_fd());
        // A non-directory replaces whatever the upper holds there with one
        // rename: a directory at the target was refused when the target was
        // resolved (EISDIR), and one made there behind the mount since makes
        // the rename itself fail so.
        let plain = kind != Kind::Dir
            || match sys::fstatat(d, dname) {
                Ok(_) => false,
                Err(Errno::ENOENT) => true,
                Err(e) => return Err(e),
            };
        if plain {
            let flags = if whiteout { sys::RENAME_WHITEOUT } else { 0 };
            match sys::renameat2(s, sname, d, dname, flags) {
                Ok(()) => return Ok(()),
                Err(Errno::EINVAL | Errno::EPERM | Errno::EOPNOTSUPP) if whiteout => {
                    sys::renameat2(s, sname, d, dname, 0)?;
                    return marker::make_whiteout(s, sname.to_bytes());
                }
                Err(e) => return Err(e),
            }
        }
        // A directory onto an upper whiteout or an upper directory (empty
        // in the union, perhaps full of markers): exchange, then dispose
        // of what landed at the source name.
        sys::renameat2(s, sname, d, dname, RENAME_EXCHANGE)?;
        if whiteout {
            self.swap_for_whiteout(s, sname)
        } else {
            let work = self.work.as_ref().ok_or(Errno::EROFS)?;
            let tmp = work.temp_name();
            sys::renameat2(s, sname, work.fd(), &tmp, 0)?;
            remove_tree(work.fd(), &tmp)
        }
    }
}

/// The union path of `parent/name`.
fn child_path(parent: &Arc<Node>, name: &[u8]) -> Vec<u8> {
    let mut p = parent.path();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Whether a rename may happen at all: a writable union, a new name that
/// is no marker, known flags.
fn check_rename_args(read_only: bool, newname: &[u8], flags: u32) -> Result<()> {
    if read_only {
        return Err(Errno::EROFS);
    }
    if marker::is_marker_name(newname) {
        return Err(Errno::EPERM);
    }
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// What the VFS checks before a rename reaches a filesystem: a directory
/// cannot move into itself, nor anything onto its ancestor.
fn check_not_into_itself(
    (p, name): (&Arc<Node>, &[u8]),
    (np, newname): (&Arc<Node>, &[u8]),
    kind: Kind,
    exchange: bool,
) -> Result<()> {
    let (sp, dp) = (child_path(p, name), child_path(np, newname));
    if kind == Kind::Dir && dp.starts_with(&sp) && dp.get(sp.len()) == Some(&b'/') {
        return Err(Errno::EINVAL);
    }
    if sp.starts_with(&dp) && sp.get(dp.len()) == Some(&b'/') {
        return Err(if exchange {
            Errno::EINVAL
        } else {
            Errno::ENOTEMPTY
        });
    }
    Ok(())
}

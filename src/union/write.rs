//! Changing the namespace: create, mkdir, mknod, symlink, link, unlink,
//! rmdir (rename is `rename`'s; changes in place are `setattr`'s).
//!
//! Invariants:
//! - whether a whiteout is needed is decided from the lowers at the time
//!   of the operation (`lower_has`), never from a cached guess;
//! - a new name that replaces a whiteout is staged in the workdir and
//!   renamed over it, so the name is never briefly absent nor half-made;
//!   a directory that replaces a whiteout is opaque (`rm -rf d; mkdir d`
//!   gives an empty `d`);
//! - removing an upper entry that a lower also holds swaps it for a
//!   whiteout in one rename (`RENAME_WHITEOUT`, or an exchange);
//! - no whiteout is ever written inside an opaque directory.
use super::attr::{Attr, Ino, Kind};
use super::cache::{Created, Entry};
use super::engine::Union;
use super::lookup::Found;
use super::marker::{self, Probe};
use super::node::{DirLayers, Node, State};
use crate::layer::{File, remove_tree};
use crate::sys::{self, Errno, Result};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// What to create.
#[derive(Debug, Clone)]
pub enum Make {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: Vec<u8> },
}

/// Who asks: owner of what gets created.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Union {
    /// Does a lower below `dl` hold a visible `name`? (A whiteout or an
    /// opaque cut ends the search; an opaque directory has no lowers at
    /// all.) A whiteout in the bottom lower hides nothing: not looked for.
    pub(super) fn lower_has(&self, dl: &DirLayers, name: &[u8]) -> Result<bool> {
        let mut lowers = dl.lowers().peekable();
        while let Some(l) = lowers.next() {
            match self.probe_in(l, name, lowers.peek().is_some())?.0 {
                Probe::Absent => continue,
                Probe::Whiteout => return Ok(false),
                Probe::Entry(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Does any lower of `dl` hold `name`, visible or below a whiteout?
    /// A directory made or moved there must then be opaque.
    pub(super) fn lower_has_any(&self, dl: &DirLayers, name: &[u8]) -> Result<bool> {
        for l in dl.lowers() {
            // Only entries count: whiteouts are not looked for.
            if let Probe::Entry(_) = self.probe_in(l, name, false)?.0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Bumps the engine's namespace generation when dropped: at the end of
/// every operation that changes names in the upper, however it ends.
pub(super) struct NamesChange<'a>(pub &'a Union);

impl Drop for NamesChange<'_> {
    fn drop(&mut self) {
        self.0.names_changed();
    }
}

/// What the upper directory holds under `name`.
enum UpperSlot {
    /// Not looked at: no lower holds the name, so the create itself tells
    /// (`EEXIST`) in the rare case the upper holds something there.
    Unprobed,
    Empty,
    /// A whiteout entry at `name` itself (device or xattr file).
    WhiteoutEntry,
    /// A `.wh.<name>` file.
    WhiteoutFile,
    Entry,
}

fn upper_slot(dir: BorrowedFd<'_>, name: &[u8]) -> Result<UpperSlot> {
    Ok(match marker::probe(dir, name)? {
        Probe::Absent => UpperSlot::Empty,
        Probe::Entry(_) => UpperSlot::Entry,
        // Either `name` itself is the whiteout, or a `.wh.<name>` file is.
        Probe::Whiteout => match sys::fstatat(dir, &sys::cstr(name)?) {
            Ok(_) => UpperSlot::WhiteoutEntry,
            Err(_) => UpperSlot::WhiteoutFile,
        },
    })
}

fn wh_file_name(name: &[u8]) -> Vec<u8> {
    let mut v = marker::WH_PREFIX.to_vec();
    v.extend_from_slice(name);
    v
}

/// Creates the object of `how` at `dir`/`name`; returns an open fd for files.
fn create_at(dir: BorrowedFd<'_>, name: &CStr, how: &Make) -> Result<Option<OwnedFd>> {
    match how {
        Make::File { mode, flags } => {
            let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC;
            let fl = (flags & keep) | libc::O_CREAT | libc::O_EXCL;
            let fd = sys::openat(dir, name, fl, mode & 0o7777)?;
            Ok(Some(fd))
        }
        Make::Dir { mode } => sys::mkdirat(dir, name, mode & 0o7777).map(|()| None),
        Make::Node { mode, rdev } => sys::mknodat(dir, name, *mode, *rdev).map(|()| None),
        Make::Symlink { target } => sys::symlinkat(&sys::cstr(target)?, dir, name).map(|()| None),
    }
}

impl Union {
    fn check_name(&self, name: &[u8]) -> Result<()> {
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        if marker::is_marker_name(name) {
            // `.wh.*` names are whiteouts in every layer format fimfs reads.
            return Err(Errno::EPERM);
        }
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(())
    }

    /// Owner of a new entry: the caller when the daemon may give files
    /// away and no squashing is asked for, else the daemon's own user.
    /// In a set-group-ID directory the new entry keeps the group the
    /// kernel gave it (the directory's), as on any filesystem. chown clears
    /// set-ID bits, so it is skipped when nothing changes and the bits are
    /// put back after it.
    ///
    /// `opened`: an fd the caller holds on the new entry, which it is
    /// stat'ed through. Returns that stat when the entry was left as it
    /// was, so the caller can describe the entry without another call.
    fn set_owner(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        who: Caller,
        opened: Option<&OwnedFd>,
    ) -> Option<libc::stat> {
        let squash = self.opts.squash.uid.is_some() || self.opts.squash.gid.is_some();
        if !self.opts.privileged || squash {
            return None;
        }
        let st = match opened {
            Some(fd) => sys::fstat(fd.as_fd()),
            None => sys::fstatat(dir, name),
        }
        .ok()?;
        let unchanged = opened.map(|_| st);
        if (st.st_uid, st.st_gid) == (who.uid, who.gid) {
            return unchanged;
        }
        let setgid_dir = sys::fstat(dir).is_ok_and(|st| st.st_mode & libc::S_ISGID != 0);
        let gid = if setgid_dir { st.st_gid } else { who.gid };
        if (st.st_uid, st.st_gid) == (who.uid, gid) {
            return unchanged;
        }
        if sys::fchownat(dir, name, who.uid, gid).is_ok()
            && st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0
            && Kind::from_mode(st.st_mode) != Kind::Symlink
        {
            let _ = sys::fchmodat(dir, name, st.st_mode & 0o7777);
        }
        None
    }

    /// Creates `name` in directory `parent`, counting one kernel lookup.
    pub fn make(&self, parent: Ino, name: &[u8], how: Make, who: Caller) -> Result<Entry> {
        let (node, attr, _) = self.make_node(parent, name, how, who)?;
        Ok(self.entry_of(&node, attr, true))
    }

    /// Creates the file `name` in directory `parent` and opens it with
    /// `flags` (a FUSE create), counting one kernel lookup.
    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        (mode, flags): (u32, i32),
        who: Caller,
    ) -> Result<Created> {
        let how = Make::File { mode, flags };
        let (node, attr, fd) = self.make_node(parent, name, how, who)?;
        let Some(fd) = fd else {
            self.forget(node.ino, 1);
            return Err(Errno::EIO);
        };
        let entry = self.entry_of(&node, attr, true);
        let opened = self.opened(node, File::host_shared(fd), true);
        Ok(Created { entry, opened })
    }

    /// [`Union::make`], giving the node and, for a file, its open fd.
    fn make_node(
        &self,
        parent: Ino,
        name: &[u8],
        how: Make,
        who: Caller,
    ) -> Result<(Arc<Node>, Attr, Option<Arc<OwnedFd>>)> {
        self.check_name(name)?;
        let p = self.node(parent)?;
        let pl = self.dir_layers_fresh(&p)?;
        let slot = self.free_slot(&pl, name)?;
        if let Make::Node { mode, rdev } = how
            && mode & libc::S_IFMT == libc::S_IFCHR
            && rdev == sys::WHITEOUT_DEV
        {
            // A 0/0 device is a whiteout: the kernel overlay refuses it too.
            return Err(Errno::EPERM);
        }
        let _changes = NamesChange(self);
        let pup = self.ensure_upper_dir(&p)?;
        let slot = match slot {
            Some(s) => s,
            // The directory was just copied up (or is casefolded): look.
            None => upper_slot(pup.as_fd(), name)?,
        };
        let (fd, known) = self.create_in_slot(&pl, pup.as_fd(), name, slot, &how, who)?;
        let pl = self.dir_layers(&p)?;
        let found = match (&fd, self.opts.casefold) {
            (Some(f), false) => made_found(name, known, f.as_fd())?,
            _ => self.resolve_in(&pl, name)?,
        };
        let fd = fd.map(Arc::new);
        let (node, attr) = self.hand_out(p, &pl, name, found, fd.as_ref());
        Ok((node, attr, fd))
    }

    /// Checks that `name` is free in the directory whose layers are `pl`;
    /// says what the upper holds there when the directory is in the upper
    /// (None: not known yet).
    fn free_slot(&self, pl: &DirLayers, name: &[u8]) -> Result<Option<UpperSlot>> {
        if self.opts.casefold {
            // Another spelling may hold the name in any layer.
            return match self.resolve_in(pl, name) {
                Ok(_) => Err(Errno::EEXIST),
                Err(Errno::ENOENT) => Ok(None),
                Err(e) => Err(e),
            };
        }
        // Nothing below holds the name: the create finds out what the upper
        // holds (two `fstatat` fewer for every new name).
        if pl.upper().is_some() && !self.lower_has(pl, name)? {
            return Ok(Some(UpperSlot::Unprobed));
        }
        // The upper's answer decides alone unless it is empty there:
        // an entry wins, a whiteout hides every lower.
        let slot = pl
            .upper()
            .map(|u| upper_slot(u.as_fd(), name))
            .transpose()?;
        match slot {
            Some(UpperSlot::Entry) => Err(Errno::EEXIST),
            Some(UpperSlot::Empty) | None if self.lower_has(pl, name)? => Err(Errno::EEXIST),
            _ => Ok(slot),
        }
    }

    /// Creates `how` at `name` in the upper directory `pup`, whatever the
    /// slot holds; returns the open file (for a regular file) and the new
    /// entry's stat when setting its owner read it and changed nothing.
    fn create_in_slot(
        &self,
        pl: &DirLayers,
        pup: BorrowedFd<'_>,
        name: &[u8],
        slot: UpperSlot,
        how: &Make,
        who: Caller,
    ) -> Result<(Option<OwnedFd>, Option<libc::stat>)> {
        let cname = sys::cstr(name)?;
        let is_dir = matches!(how, Make::Dir { .. });
        match slot {
            UpperSlot::Unprobed => {
                match self.create_in_slot(pl, pup, name, UpperSlot::Empty, how, who) {
                    // Something is there (a stale whiteout, or a name made
                    // meanwhile): look, then act on what it is.
                    Err(Errno::EEXIST) => {
                        let slot = upper_slot(pup, name)?;
                        self.create_in_slot(pl, pup, name, slot, how, who)
                    }
                    other => other,
                }
            }
            UpperSlot::Empty => {
                let fd = create_at(pup, &cname, how)?;
                let known = self.set_owner(pup, &cname, who, fd.as_ref());
                // Casefold: a whiteout of another spelling hides a lower
                // directory this one must not merge with.
                if self.opts.casefold && is_dir && self.lower_has_any(pl, name)? {
                    marker::make_opaque(pup, &cname, self.opts.privileged)?;
                }
                Ok((fd, known))
            }
            UpperSlot::WhiteoutFile => {
                let fd = create_at(pup, &cname, how)?;
                let known = self.set_owner(pup, &cname, who, fd.as_ref());
                if is_dir {
                    marker::make_opaque(pup, &cname, self.opts.privileged)?;
                }
                let _ = sys::unlinkat(pup, &sys::cstr(&wh_file_name(name))?, false);
                Ok((fd, known))
            }
            UpperSlot::WhiteoutEntry => Ok((self.replace_whiteout(pup, &cname, how, who)?, None)),
            UpperSlot::Entry => Err(Errno::EEXIST),
        }
    }

    /// Builds the new entry in the workdir and renames it over the
    /// whiteout at `dir`/`name` (exchanging, for a directory).
    fn replace_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        how: &Make,
        who: Caller,
    ) -> Result<Option<OwnedFd>> {
        let work = self.work.as_ref().ok_or(Errno::EROFS)?;
        let tmp = work.temp_name();
        let fd = create_at(work.fd(), &tmp, how)?;
        self.set_owner(work.fd(), &tmp, who, fd.as_ref());
        let res = match how {
            Make::Dir { .. } => marker::make_opaque(work.fd(), &tmp, self.opts.privileged)
                .and_then(|()| sys::renameat2(work.fd(), &tmp, dir, name, sys::RENAME_EXCHANGE))
                .and_then(|()| sys::unlinkat(work.fd(), &tmp, false)),
            _ => sys::renameat2(work.fd(), &tmp, dir, name, 0),
        };
        if let Err(e) = res {
            let _ = remove_tree(work.fd(), &tmp);
            return Err(e);
        }
        Ok(fd)
    }

    /// Removes `name` from `parent` (`rmdir` when `dir`). Returns the
    /// inode number of the file's other names when it had several links:
    /// their cached link count is now wrong.
    pub fn remove(&self, parent: Ino, name: &[u8], dir: bool) -> Result<Option<Ino>> {
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let p = self.node(parent)?;
        let pl = self.dir_layers_fresh(&p)?;
        let found = self.resolve_in(&pl, name)?;
        match (found.state.kind == Kind::Dir, dir) {
            (true, false) => return Err(Errno::EISDIR),
            (false, true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        if dir {
            let child = self.transient_child(&p, name, &found);
            if !self.list_node(&child)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let needs_whiteout = self.lower_has(&pl, name)?;
        let _changes = NamesChange(self);
        let pup = self.ensure_upper_dir(&p)?;
        // The entry's own spelling (casefold: maybe not the caller's).
        let name = found.name.as_slice();
        let cname = sys::cstr(name)?;
        if found.state.kind == Kind::File {
            let victim = self.held_child(&p, name, &found);
            self.keep_victim(&victim, (&p, name), &pl, &found);
        }
        match (found.state.upper, needs_whiteout) {
            (true, true) => self.swap_for_whiteout(pup.as_fd(), &cname)?,
            (true, false) if dir => self.remove_upper_dir(pup.as_fd(), &cname)?,
            (true, false) => sys::unlinkat(pup.as_fd(), &cname, false)?,
            (false, _) => marker::make_whiteout(pup.as_fd(), name)?,
        }
        let linked = found.state.upper && !dir && found.st.st_nlink > 1;
        if found.state.upper && !linked {
            self.inos.gone(found.st.st_dev, found.st.st_ino);
        }
        self.retire_origin(&found);
        self.nodes.unlinked(&p, name);
        Ok(linked.then(|| self.inos.encode(found.st.st_dev, found.st.st_ino)))
    }

    /// A node for a child that is not handed to the kernel (for listings
    /// and tree copies).
    pub(super) fn transient_child(
        &self,
        parent: &Arc<Node>,
        name: &[u8],
        found: &super::lookup::Found,
    ) -> Arc<Node> {
        let node = Node::new(
            Ino(0),
            super::node::Loc::at(parent.clone(), name),
            found.state.clone(),
        );
        if let Some(d) = &found.dir {
            self.nodes.set_dir(&node, d.clone());
        }
        Arc::new(node)
    }

    /// Replaces the upper entry `dir`/`name` by a whiteout in one step.
    pub(super) fn swap_for_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        let work = self.work.as_ref().ok_or(Errno::EROFS)?;
        let tmp = work.temp_name();
        match sys::renameat2(dir, name, work.fd(), &tmp, sys::RENAME_WHITEOUT) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::EPERM | Errno::EOPNOTSUPP) => {
                marker::make_whiteout(work.fd(), tmp.as_bytes())?;
                sys::renameat2(work.fd(), &tmp, dir, name, sys::RENAME_EXCHANGE)?;
            }
            Err(e) => return Err(e),
        }
        remove_tree(work.fd(), &tmp)
    }

    /// Removes an upper directory that may still hold markers: moved into
    /// the workdir first (one atomic step), then emptied there.
    fn remove_upper_dir(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        match sys::unlinkat(dir, name, true) {
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => {}
            other => return other,
        }
        let work = self.work.as_ref().ok_or(Errno::EROFS)?;
        let tmp = work.temp_name();
        sys::renameat2(dir, name, work.fd(), &tmp, 0)?;
        remove_tree(work.fd(), &tmp)
    }

    /// `link(ino, newparent/newname)`: copies the source up, links it in the
    /// upper, and answers with the new name's number and attributes.
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Entry> {
        self.check_name(newname)?;
        let node = self.node(ino)?;
        let np = self.node(newparent)?;
        let npl = self.dir_layers_fresh(&np)?;
        match self.resolve_in(&npl, newname) {
            Ok(_) => return Err(Errno::EEXIST),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        self.copy_up(&node, false)?;
        let (found, src) = self.place(&node)?;
        if found.state.kind == Kind::Dir {
            return Err(Errno::EPERM);
        }
        let _changes = NamesChange(self);
        let dup = self.ensure_upper_dir(&np)?;
        let cname = sys::cstr(newname)?;
        match upper_slot(dup.as_fd(), newname)? {
            UpperSlot::Empty => sys::linkat(src.upper_fd()?, &src.name, dup.as_fd(), &cname)?,
            UpperSlot::WhiteoutFile => {
                sys::linkat(src.upper_fd()?, &src.name, dup.as_fd(), &cname)?;
                let _ = sys::unlinkat(dup.as_fd(), &sys::cstr(&wh_file_name(newname))?, false);
            }
            UpperSlot::WhiteoutEntry => {
                let work = self.work.as_ref().ok_or(Errno::EROFS)?;
                let tmp = work.temp_name();
                sys::linkat(src.upper_fd()?, &src.name, work.fd(), &tmp)?;
                if let Err(e) = sys::renameat2(work.fd(), &tmp, dup.as_fd(), &cname, 0) {
                    let _ = sys::unlinkat(work.fd(), &tmp, false);
                    return Err(e);
                }
            }
            UpperSlot::Entry | UpperSlot::Unprobed => return Err(Errno::EEXIST),
        }
        drop(node);
        // The new name is a node of its own (an upper file with several
        // links reports its own inode number under every name).
        let npl = self.dir_layers(&np)?;
        let found = self.resolve_in(&npl, newname)?;
        let (node, attr) = self.hand_out(np, &npl, newname, found, None);
        Ok(self.entry_of(&node, attr, true))
    }
}

/// What resolving a file just made would find: nothing below shows
/// through it and it was copied from nothing, so its own stat says all.
fn made_found(name: &[u8], known: Option<libc::stat>, fd: BorrowedFd<'_>) -> Result<Found> {
    let st = match known {
        Some(st) => st,
        None => sys::fstat(fd)?,
    };
    Ok(Found {
        state: State {
            kind: Kind::from_mode(st.st_mode),
            upper: true,
            lower: None,
            merged: false,
        },
        name: name.to_vec(),
        winner: crate::layer::UPPER,
        st,
        origin: st,
        dir: None,
    })
}

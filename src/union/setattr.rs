//! Changing an entry in place: setattr (mode, owner, size, times) and
//! xattrs, each on the upper copy, copied up first.
//!
//! Invariants: nothing is copied up for a change that changes nothing (a
//! chown squashed away, the removal of an xattr that is not there); an
//! overlay-private xattr can be neither set nor removed.
//!
//! Set-ID bits: the kernel leaves their dropping to the daemon
//! (`FUSE_HANDLE_KILLPRIV_V2`) and says when (`SetAttr::drop_set_id`,
//! [`Union::drop_set_id`]); they go as the VFS drops them: set-user-ID
//! always, set-group-ID only with group execute, on regular files only.
use super::attr::{Attr, Ino};
use super::engine::Union;
use super::marker;
use super::node::Node;
use crate::sys::{self, Errno, Result};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

/// The changes of one setattr request.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// `(seconds, nanoseconds)`, or `UTIME_NOW` in the nanoseconds.
    pub atime: Option<(i64, i64)>,
    pub mtime: Option<(i64, i64)>,
    /// Drop the set-ID bits too (a chown, a truncate or a write by a caller
    /// the kernel does not let keep them).
    pub drop_set_id: bool,
}

/// The mode `mode` leaves after the set-ID bits are dropped, if that
/// changes it: set-user-ID always, set-group-ID only with group execute
/// (without it the bit marks mandatory locking, which the VFS keeps).
fn without_set_id(mode: u32) -> Option<u32> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut kept = mode & 0o7777 & !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        kept &= !libc::S_ISGID;
    }
    (kept != mode & 0o7777).then_some(kept)
}

/// Drops the set-ID bits of the upper's `dir/name` (of `dir` itself for
/// an empty name), if it has any.
fn drop_set_id_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    let st = sys::fstatat(dir, name)?;
    match without_set_id(st.st_mode) {
        Some(mode) => sys::fchmodat(dir, name, mode),
        None => Ok(()),
    }
}

impl Union {
    /// Changes attributes, copying the entry up first.
    pub fn setattr(&self, ino: Ino, set: SetAttr, fh: Option<BorrowedFd<'_>>) -> Result<Attr> {
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let node = self.node(ino)?;
        let squash = self.opts.squash;
        let chown = (set.uid.is_some() && squash.uid.is_none())
            || (set.gid.is_some() && squash.gid.is_none());
        let changes = chown
            || set.mode.is_some()
            || set.size.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        // An unlinked file that only a lower held: copied up first, into
        // the anonymous file its node pins from then on.
        if changes
            && node.unlinked()
            && let Some(place) = node.kept()
        {
            self.copy_up_kept(&node, &place, set.size == Some(0))?;
        }
        // A regular file the upper holds, whose number the daemon holds open:
        // changed through that fd, with no second resolution of its name
        // (a truncate without a handle needs a writable fd: by name, or for
        // a file without one, the pinned inode opened again).
        let pin = self.upper_file_pin(&node);
        let reopened = match (&pin, set.size, fh) {
            (Some(p), Some(_), None) if node.unlinked() => {
                Some(sys::reopen(p.as_fd(), libc::O_WRONLY)?)
            }
            _ => None,
        };
        let fh = fh.or(reopened.as_ref().map(|f| f.as_fd()));
        let pin = pin.filter(|_| set.size.is_none() || fh.is_some());
        if changes {
            match &pin {
                Some(fd) => self.apply_setattr(fd.as_fd(), c"", set, chown, fh)?,
                None => {
                    let place = self.writable_place(&node, set.size == Some(0))?;
                    self.apply_setattr(place.upper_fd()?, &place.name, set, chown, fh)?;
                }
            }
        }
        // A chown made for real had the upper's filesystem drop the bits
        // already (the VFS does on every chown of a non-directory).
        let dropped = chown && set.size.is_none();
        if set.drop_set_id && set.mode.is_none() && !dropped {
            match &pin {
                Some(fd) => drop_set_id_at(fd.as_fd(), c"")?,
                None => self.drop_set_id_of(&node)?,
            }
        }
        match pin {
            Some(fd) => self.pinned_attr(&fd, ino),
            None => self.getattr(ino),
        }
    }

    /// Drops the set-ID bits of the regular file `ino` (written or
    /// truncated by a caller the kernel does not let keep them), copying
    /// it up only when it has any. `fd`: a handle's upper fd, when there
    /// is one.
    pub fn drop_set_id(&self, ino: Ino, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        if let Some(fd) = fd {
            return drop_set_id_at(fd, c"");
        }
        let node = self.node(ino)?;
        self.drop_set_id_of(&node)
    }

    fn drop_set_id_of(&self, node: &Arc<Node>) -> Result<()> {
        if self.is_read_only() {
            return Ok(());
        }
        let (found, place) = self.place(node)?;
        if without_set_id(found.st.st_mode).is_none() {
            return Ok(());
        }
        let place = match found.state.upper {
            true => place,
            false => self.writable_place(node, false)?,
        };
        drop_set_id_at(place.upper_fd()?, &place.name)
    }

    /// Makes the changes of `set` to `dir/name` in the upper (to `dir`
    /// itself for an empty name).
    fn apply_setattr(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        set: SetAttr,
        chown: bool,
        fh: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        if chown {
            let uid = set.uid.filter(|_| self.opts.squash.uid.is_none());
            let gid = set.gid.filter(|_| self.opts.squash.gid.is_none());
            sys::fchownat(dir, name, uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        if let Some(mode) = set.mode {
            sys::fchmodat(dir, name, mode & 0o7777)?;
        }
        if let Some(size) = set.size {
            match fh {
                Some(fd) => sys::ftruncate(fd, size)?,
                None => {
                    let fd = sys::openat(dir, name, libc::O_WRONLY, 0)?;
                    sys::ftruncate(fd.as_fd(), size)?;
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let omit = libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            };
            let ts = |t: Option<(i64, i64)>| {
                t.map_or(omit, |(s, n)| libc::timespec {
                    tv_sec: s,
                    tv_nsec: n,
                })
            };
            sys::utimensat(dir, name, &[ts(set.atime), ts(set.mtime)])?;
        }
        Ok(())
    }

    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        // `.ciopfs` is no layer's file: it cannot take one, as an immutable
        // file cannot.
        if marker::is_private_xattr(name) || self.is_ciopfs(ino) {
            return Err(Errno::EPERM);
        }
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let node = self.node(ino)?;
        let place = self.writable_place(&node, false)?;
        sys::lsetxattr_at(
            place.upper_fd()?,
            &place.name,
            &sys::cstr(name)?,
            value,
            flags,
        )
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        if marker::is_private_xattr(name) {
            return Err(Errno::EPERM);
        }
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let node = self.node(ino)?;
        // Nothing to copy up for an attribute that is not there.
        self.getxattr(ino, name)?;
        let place = self.writable_place(&node, false)?;
        sys::lremovexattr_at(place.upper_fd()?, &place.name, &sys::cstr(name)?)
    }
}

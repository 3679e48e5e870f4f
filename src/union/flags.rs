//! Inode flags (`lsattr`, `chattr`; the kernel asks for both the flags
//! word and the `struct fsxattr` form): read from the entry in its layer;
//! set on the upper copy, copied up first, as the kernel overlay does. The
//! kernel has checked ownership and CAP_LINUX_IMMUTABLE before it asks.
use super::attr::{Ino, Kind};
use super::engine::Union;
use super::place::Place;
use crate::layer::{File, Lower};
use crate::sys::{self, Errno, Result};

/// Opens the entry at `place` for the flag calls. Only regular files and
/// directories take them (the kernel sends nothing else); for a directory
/// `place` is its own fd, named by ".". A layer without fds has no flags
/// to report (ENOTTY, as a filesystem without them answers).
fn open_for_flags(layer: &dyn Lower, place: &Place, kind: Kind) -> Result<File> {
    let (name, flags) = match kind {
        // An image's directory: no fd, so no flags (the kernel overlay
        // asks before it copies a directory up, and takes ENOTTY as "none").
        Kind::Dir if place.dir.fd().is_none() => return Err(Errno::ENOTTY),
        Kind::Dir => (c".", libc::O_RDONLY | libc::O_DIRECTORY),
        Kind::File => (place.name.as_c_str(), libc::O_RDONLY | libc::O_NOCTTY),
        _ => return Err(Errno::ENOTTY),
    };
    layer.open(&place.dir, name, flags | libc::O_NONBLOCK)
}

/// The flags in either of the kernel's two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeFlags {
    /// `FS_IOC_[GS]ETFLAGS`: the `FS_*_FL` word.
    Word(u32),
    /// `FS_IOC_FS[GS]ETXATTR`: a raw `struct fsxattr`.
    Fsx([u8; sys::FSXATTR_SIZE]),
}

impl Union {
    /// Opens `ino` in the layer that serves it (`write`: in the upper,
    /// copied up first) for the flag calls.
    fn open_flags_target(&self, ino: Ino, write: bool) -> Result<File> {
        if write && self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let node = self.node(ino)?;
        let place = match write {
            true => self.writable_place(&node, false)?,
            false => self.quick_place(&node)?,
        };
        open_for_flags(self.layer(place.layer)?, &place, node.state().kind)
    }

    /// The inode flags of `ino` in the form of `like` (its value unused),
    /// as its layer's filesystem reports them.
    pub fn inode_flags(&self, ino: Ino, like: InodeFlags) -> Result<InodeFlags> {
        let file = self.open_flags_target(ino, false)?;
        let fd = file.fd().ok_or(Errno::ENOTTY)?;
        Ok(match like {
            InodeFlags::Word(_) => InodeFlags::Word(sys::inode_flags(fd)?),
            InodeFlags::Fsx(_) => InodeFlags::Fsx(sys::fsxattr(fd)?),
        })
    }

    /// Sets the inode flags of `ino` on its upper copy.
    pub fn set_inode_flags(&self, ino: Ino, flags: InodeFlags) -> Result<()> {
        let file = self.open_flags_target(ino, true)?;
        let fd = file.fd().ok_or(Errno::ENOTTY)?;
        match flags {
            InodeFlags::Word(w) => sys::set_inode_flags(fd, w),
            InodeFlags::Fsx(x) => sys::set_fsxattr(fd, &x),
        }
    }
}

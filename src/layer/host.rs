//! The host directory as a [`Lower`]: the first implementation, and what
//! the upper answers read calls with.
//!
//! Every access goes through the layer's directory fds: `*at()` calls with
//! `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, and `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` for a path of several components; nothing here
//! follows a symlink or leaves the layer.
use super::Layer;
use super::lower::{Dir, DirRepr, File, Lower, foreign};
use super::marker::{self, DirMarks, Probe};
use crate::sys::{self, DirEnt, Errno, Result};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// The fd of a host directory handle.
fn fd(dir: &Dir) -> Result<BorrowedFd<'_>> {
    match &dir.0 {
        DirRepr::Host(fd) => Ok(fd.as_fd()),
        _ => Err(foreign()),
    }
}

/// Opens `name` in `dir` as an `O_PATH` directory handle.
fn open_dir_path(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Dir> {
    let fd = sys::openat(dir, &sys::cstr(name)?, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok(Dir::host(fd))
}

impl Lower for Layer {
    fn path(&self) -> &Path {
        Layer::path(self)
    }

    fn dev(&self) -> u64 {
        Layer::dev(self)
    }

    fn root(&self) -> Result<Dir> {
        let fd = self
            .root()
            .try_clone_to_owned()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(Dir::host(fd))
    }

    fn open_dir(&self, dir: &Dir, name: &[u8]) -> Result<Dir> {
        open_dir_path(fd(dir)?, name)
    }

    fn open_path(&self, path: &[u8]) -> Result<Dir> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        Ok(Dir::host(sys::open_beneath(self.root(), path, flags)?))
    }

    fn probe(&self, dir: &Dir, name: &[u8], wh_files: bool) -> Result<Probe> {
        marker::probe_layer(fd(dir)?, name, wh_files)
    }

    fn marks(&self, dir: &Dir) -> DirMarks {
        fd(dir).map(marker::dir_marks).unwrap_or_default()
    }

    fn stat(&self, dir: &Dir, name: &CStr) -> Result<libc::stat> {
        sys::fstatat(fd(dir)?, name)
    }

    fn list(&self, dir: &Dir) -> Result<Vec<DirEnt>> {
        sys::list_dir(fd(dir)?)
    }

    fn is_xattr_whiteout(&self, dir: &Dir, name: &CStr) -> bool {
        fd(dir).is_ok_and(|d| marker::is_xattr_whiteout_name(d, name))
    }

    fn xattr(&self, dir: &Dir, name: &CStr, xname: &CStr) -> Result<Vec<u8>> {
        sys::lgetxattr_at(fd(dir)?, name, xname)
    }

    fn xattr_names(&self, dir: &Dir, name: &CStr) -> Result<Vec<u8>> {
        sys::llistxattr_at(fd(dir)?, name)
    }

    fn readlink(&self, dir: &Dir, name: &CStr) -> Result<Vec<u8>> {
        sys::readlinkat(fd(dir)?, name)
    }

    fn open(&self, dir: &Dir, name: &CStr, flags: i32) -> Result<File> {
        Ok(File::host(sys::openat(fd(dir)?, name, flags, 0)?))
    }

    fn statfs(&self) -> Result<libc::statfs> {
        sys::fstatfs(self.root())
    }
}

//! The only unsafe code of fimfs: thin, typed wrappers over the Linux calls
//! the layers need.
//!
//! Invariants every function here keeps:
//! - paths are resolved relative to a directory fd (`*at()` calls) and a
//!   final symlink is never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`,
//!   `l*xattr`); multi-component paths go through `openat2` with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so nothing in a layer can
//!   lead the daemon outside it;
//! - every fd is opened `O_CLOEXEC` and owned by an `OwnedFd`;
//! - errors come back as `nix::errno::Errno`, never as a panic.
//!
//! This file is the index: what each submodule offers, re-exported so
//! that callers name everything `crate::sys::X`, plus the error plumbing
//! (`check`, `own`) the submodules share.
//! - `open`: opening entries, `stat`, `statfs`, `readlink`;
//! - `names`: making, linking, renaming and removing names;
//! - `attr`: owner, mode, times, `chattr` flags;
//! - `io`: data on open fds, copies, reflinks, `flock`;
//! - `dirent`: whole directories through `getdents64`;
//! - `xattr`: extended attributes;
//! - `process`: ids, umask, limits, fork, signals, stdio.
#![allow(unsafe_code)]

mod attr;
mod dirent;
mod io;
mod names;
mod open;
mod process;
mod xattr;

pub use attr::{
    FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR, FSXATTR_SIZE, fchmod, fchmodat, fchownat, fsxattr,
    inode_flags, set_fsxattr, set_inode_flags, utimensat,
};
pub use dirent::{DirEnt, list_dir, read_dir_entries};
pub use io::{
    copy_file_range, fallocate, ficlone, flock_exclusive, flock_shared, fsync, ftruncate, lseek,
    pread, pwrite,
};
pub use names::{
    RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, WHITEOUT_DEV, linkat, mkdirat, mknodat,
    renameat2, symlinkat, unlinkat,
};
pub use open::{
    fstat, fstatat, fstatfs, open_beneath, open_layer_root, openat, proc_fd_path, readlinkat,
    reopen, zeroed_stat, zeroed_statfs,
};
pub use process::{
    child_nofile_limit, close_other_fds, fork, getegid, geteuid, ignore_sigpipe, inherit_on_exec,
    map_big_allocations, nofile_limit, raise_nofile_limit, stdio_to_devnull, trim_heap, umask,
    unshare_fs,
};
pub use xattr::{
    fgetxattr, flistxattr, fremovexattr, fsetxattr, lgetxattr_at, llistxattr_at, lremovexattr_at,
    lsetxattr_at,
};

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

pub use nix::errno::Errno;

pub type Result<T> = std::result::Result<T, Errno>;

/// A file name or relative path as a C string; a NUL inside is EINVAL.
pub fn cstr(name: &[u8]) -> Result<CString> {
    CString::new(name).map_err(|_| Errno::EINVAL)
}

fn check(ret: libc::c_int) -> Result<libc::c_int> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

fn check_ssize(ret: libc::ssize_t) -> Result<usize> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

fn own(fd: libc::c_int) -> Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

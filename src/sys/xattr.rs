//! Extended attributes, on open fds and on entries named relative to a
//! directory fd. The `*_at` forms go through `/proc/self/fd/DIR/NAME` with
//! the `l*xattr` calls: the directory is the one the fd holds and the final
//! name is never followed.
use super::{Result, check, check_ssize, proc_fd_path};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Largest value the kernel allows (XATTR_SIZE_MAX).
const XATTR_MAX: usize = 64 * 1024;

fn read_sized(mut call: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match check_ssize(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(nix::errno::Errno::ERANGE) if buf.len() < XATTR_MAX => {
                let probe = check_ssize(call(std::ptr::null_mut(), 0))?;
                buf.resize(probe.clamp(buf.len() * 2, XATTR_MAX), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> Result<Vec<u8>> {
    // SAFETY: the buffer pointer/size pair comes from `read_sized`.
    read_sized(|p, n| unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), p, n) })
}

pub fn flistxattr(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    // SAFETY: the buffer pointer/size pair comes from `read_sized`.
    read_sized(|p, n| unsafe { libc::flistxattr(fd.as_raw_fd(), p.cast(), n) })
}

pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> Result<()> {
    // SAFETY: `value` is readable for its length.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

pub fn fremovexattr(fd: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

// With an empty `entry` the path is `/proc/self/fd/N` itself: that magic
// link must be followed (it leads to the inode the fd holds, never further),
// so the non-`l` calls are used for it.

pub fn lgetxattr_at(dir: BorrowedFd<'_>, entry: &CStr, name: &CStr) -> Result<Vec<u8>> {
    let p = proc_fd_path(dir, entry.to_bytes());
    let own = entry.is_empty();
    // SAFETY: the buffer pointer/size pair comes from `read_sized`.
    read_sized(|b, n| unsafe {
        if own {
            libc::getxattr(p.as_ptr(), name.as_ptr(), b, n)
        } else {
            libc::lgetxattr(p.as_ptr(), name.as_ptr(), b, n)
        }
    })
}

pub fn llistxattr_at(dir: BorrowedFd<'_>, entry: &CStr) -> Result<Vec<u8>> {
    let p = proc_fd_path(dir, entry.to_bytes());
    let own = entry.is_empty();
    // SAFETY: the buffer pointer/size pair comes from `read_sized`.
    read_sized(|b, n| unsafe {
        if own {
            libc::listxattr(p.as_ptr(), b.cast(), n)
        } else {
            libc::llistxattr(p.as_ptr(), b.cast(), n)
        }
    })
}

pub fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    entry: &CStr,
    name: &CStr,
    value: &[u8],
    flags: i32,
) -> Result<()> {
    let p = proc_fd_path(dir, entry.to_bytes());
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: `value` is readable for its length; the final name is not followed.
    check(unsafe {
        if entry.is_empty() {
            libc::setxattr(p.as_ptr(), name.as_ptr(), v, len, flags)
        } else {
            libc::lsetxattr(p.as_ptr(), name.as_ptr(), v, len, flags)
        }
    })?;
    Ok(())
}

pub fn lremovexattr_at(dir: BorrowedFd<'_>, entry: &CStr, name: &CStr) -> Result<()> {
    let p = proc_fd_path(dir, entry.to_bytes());
    // SAFETY: the final name is not followed.
    check(unsafe {
        if entry.is_empty() {
            libc::removexattr(p.as_ptr(), name.as_ptr())
        } else {
            libc::lremovexattr(p.as_ptr(), name.as_ptr())
        }
    })?;
    Ok(())
}

//! Extended attributes, on open fds and on entries named relative to a
//! directory fd. The `*_at` forms use the `*xattrat` calls of Linux 6.13+
//! (`AT_SYMLINK_NOFOLLOW`: the final name is never followed); on older
//! kernels they go through `/proc/self/fd/DIR/NAME` with the `l*xattr`
//! calls, which resolve the same entry at the cost of a walk through
//! procfs (a fifth of the daemon's CPU time when every lookup read an
//! xattr that way).
use super::{Result, check, check_ssize, proc_fd_path};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// `struct xattr_args` of the `*xattrat` calls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Numbers of the `*xattrat` calls: new system calls have one number on
/// every architecture Rust builds for (libc defines them for m68k only).
mod nr {
    pub const SETXATTRAT: libc::c_long = 463;
    pub const GETXATTRAT: libc::c_long = 464;
    pub const LISTXATTRAT: libc::c_long = 465;
    pub const REMOVEXATTRAT: libc::c_long = 466;
}

/// Cleared for good the first time the kernel says it lacks the calls.
static XATTRAT: AtomicBool = AtomicBool::new(true);

/// Runs an `*xattrat` call; None when the kernel lacks it (ENOSYS), or
/// when `entry` is empty and `dir` is not a directory (the entry is then
/// the fd itself, which `"."` does not name): the caller takes the
/// `/proc` path instead.
fn at_call<T>(
    entry: &CStr,
    call: impl FnOnce(*const libc::c_char) -> Result<T>,
) -> Option<Result<T>> {
    if !XATTRAT.load(Ordering::Relaxed) {
        return None;
    }
    let path = if entry.is_empty() { c"." } else { entry };
    match call(path.as_ptr()) {
        Err(nix::errno::Errno::ENOSYS) => {
            XATTRAT.store(false, Ordering::Relaxed);
            None
        }
        Err(nix::errno::Errno::ENOTDIR) if entry.is_empty() => None,
        r => Some(r),
    }
}

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
    let at = at_call(entry, |path| {
        read_sized(|b, n| {
            let mut args = XattrArgs {
                value: b as u64,
                size: n as u32,
                flags: 0,
            };
            // SAFETY: `path` and `name` are NUL-terminated; `args` points
            // at a buffer of `n` bytes (or none, n = 0) and lives across the call.
            unsafe {
                libc::syscall(
                    nr::GETXATTRAT,
                    dir.as_raw_fd(),
                    path,
                    libc::AT_SYMLINK_NOFOLLOW,
                    name.as_ptr(),
                    &mut args as *mut XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                ) as libc::ssize_t
            }
        })
    });
    if let Some(r) = at {
        return r;
    }
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
    let at = at_call(entry, |path| {
        // SAFETY: `path` is NUL-terminated; the buffer pointer/size pair
        // comes from `read_sized`.
        read_sized(|b, n| unsafe {
            libc::syscall(
                nr::LISTXATTRAT,
                dir.as_raw_fd(),
                path,
                libc::AT_SYMLINK_NOFOLLOW,
                b,
                n,
            ) as libc::ssize_t
        })
    });
    if let Some(r) = at {
        return r;
    }
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
    let at = at_call(entry, |path| {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len() as u32,
            flags: flags as u32,
        };
        // SAFETY: `path` and `name` are NUL-terminated; `args` points at
        // `value`, readable for its length, and lives across the call.
        check(unsafe {
            libc::syscall(
                nr::SETXATTRAT,
                dir.as_raw_fd(),
                path,
                libc::AT_SYMLINK_NOFOLLOW,
                name.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            ) as libc::c_int
        })
    });
    if let Some(r) = at {
        return r.map(drop);
    }
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
    let at = at_call(entry, |path| {
        // SAFETY: `path` and `name` are NUL-terminated.
        check(unsafe {
            libc::syscall(
                nr::REMOVEXATTRAT,
                dir.as_raw_fd(),
                path,
                libc::AT_SYMLINK_NOFOLLOW,
                name.as_ptr(),
            ) as libc::c_int
        })
    });
    if let Some(r) = at {
        return r.map(drop);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The same calls, through `*xattrat` and through `/proc`, on a file,
    /// on a directory (empty entry) and on a symlink that must not be
    /// followed. Turning the `*xattrat` calls off is process-wide; every
    /// other caller stays correct on the `/proc` path meanwhile.
    #[test]
    fn both_paths_read_and_write_the_same_entries() {
        let root = std::env::temp_dir().join(format!("fimfs-xattr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("f"), b"").unwrap();
        std::os::unix::fs::symlink("f", root.join("l")).unwrap();
        let dir = crate::sys::open_layer_root(&root).unwrap();
        let d = dir.as_fd();
        for at in [true, false] {
            XATTRAT.store(at, Ordering::Relaxed);
            let v = if at {
                b"at".as_slice()
            } else {
                b"proc".as_slice()
            };
            lsetxattr_at(d, c"f", c"user.t", v, 0).unwrap();
            assert_eq!(lgetxattr_at(d, c"f", c"user.t").unwrap(), v, "at={at}");
            let names = llistxattr_at(d, c"f").unwrap();
            assert!(names.split(|&b| b == 0).any(|n| n == b"user.t"), "at={at}");
            // The symlink is not followed to the file.
            assert_eq!(
                lgetxattr_at(d, c"l", c"user.t"),
                Err(nix::errno::Errno::ENODATA)
            );
            // The empty entry is the directory the fd holds.
            lsetxattr_at(d, c"", c"user.d", v, 0).unwrap();
            assert_eq!(lgetxattr_at(d, c"", c"user.d").unwrap(), v, "at={at}");
            lremovexattr_at(d, c"", c"user.d").unwrap();
            lremovexattr_at(d, c"f", c"user.t").unwrap();
            assert_eq!(
                lgetxattr_at(d, c"f", c"user.t"),
                Err(nix::errno::Errno::ENODATA)
            );
            // An empty entry on a file's fd names that file.
            let f = crate::sys::openat(d, c"f", libc::O_PATH, 0).unwrap();
            assert_eq!(llistxattr_at(f.as_fd(), c"").unwrap(), b"", "at={at}");
        }
        XATTRAT.store(true, Ordering::Relaxed);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

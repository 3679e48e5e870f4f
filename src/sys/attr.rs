//! Changing an inode's metadata: owner, mode, times (by name, without
//! following a symlink, or on an fd) and the `chattr` inode flags
//! (`FS_IOC_[GS]ETFLAGS`, `FS_IOC_FS[GS]ETXATTR`).
use super::{Errno, Result, check, fstat, openat, proc_fd_path};
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

pub fn fchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> Result<()> {
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: plain syscall; AT_SYMLINK_NOFOLLOW keeps a symlink from being followed.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

/// chmod of `name` in `dir` without following a symlink (`fchmodat2`,
/// Linux 6.6+); an empty name changes `dir` itself. On older kernels the
/// name is opened `O_PATH|O_NOFOLLOW` and changed through its
/// `/proc/self/fd` entry, which names that very inode.
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    const SYS_FCHMODAT2: libc::c_long = 452;
    let flags = match name.is_empty() {
        true => libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
        false => libc::AT_SYMLINK_NOFOLLOW,
    };
    // SAFETY: plain syscall; AT_SYMLINK_NOFOLLOW keeps a symlink from being followed.
    let ret = unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            flags,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::ENOSYS | Errno::EINVAL if name.is_empty() => {
            // `dir` itself, perhaps an O_PATH fd: chmod through its magic link.
            let p = proc_fd_path(dir, b"");
            // SAFETY: `p` names the inode behind `dir`.
            check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })?;
            Ok(())
        }
        Errno::ENOSYS => {
            let fd = openat(dir, name, libc::O_PATH, 0)?;
            let st = fstat(fd.as_fd())?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(Errno::EOPNOTSUPP);
            }
            let p = proc_fd_path(fd.as_fd(), b"");
            // SAFETY: `p` names the inode behind `fd`, which is not a symlink.
            check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })?;
            Ok(())
        }
        e => Err(e),
    }
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
    // SAFETY: plain syscall on a borrowed fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

/// `utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW)`; an empty name
/// changes `dir` itself.
pub fn utimensat(dir: BorrowedFd<'_>, name: &CStr, times: &[libc::timespec; 2]) -> Result<()> {
    if name.is_empty() {
        // `dir` itself, perhaps an O_PATH fd (`AT_EMPTY_PATH`; on a kernel
        // that does not take it here, through its magic link).
        // SAFETY: `times` points at two timespecs; the empty path is `dir`.
        let r = unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if r == 0 || Errno::last() != Errno::EINVAL {
            return check(r).map(|_| ());
        }
        let p = proc_fd_path(dir, b"");
        // SAFETY: `times` points at two timespecs; `p` names `dir`'s inode.
        check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })?;
        return Ok(());
    }
    // SAFETY: `times` points at two timespecs; the name is not followed.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// The inode flags of `lsattr` (`FS_IOC_GETFLAGS`) of an open file.
pub fn inode_flags(fd: BorrowedFd<'_>) -> Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the call writes one int (every filesystem uses an int,
    // whatever the command's encoded size says) to a live out-pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut v) })?;
    Ok(v as u32)
}

/// Sets the inode flags of `chattr` (`FS_IOC_SETFLAGS`) of an open file.
pub fn set_inode_flags(fd: BorrowedFd<'_>, flags: u32) -> Result<()> {
    let v = flags as libc::c_int;
    // SAFETY: the call reads one int from a live pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &v) })?;
    Ok(())
}

/// Size of `struct fsxattr`, the argument of `FS_IOC_FS[GS]ETXATTR`.
pub const FSXATTR_SIZE: usize = 28;

/// An ioctl number like `model` (one of `FS_IOC_[GS]ETFLAGS`: `'f'`, a
/// long), with another type, number and size: libc lacks the fsxattr
/// ones, and the direction bits differ between architectures.
const fn ioc_like(model: libc::Ioctl, nr: u8, ty: u8, size: usize) -> u32 {
    let model = model as u32;
    let model_size = std::mem::size_of::<libc::c_long>() as u32;
    let dir = model - (model_size << 16) - ((b'f' as u32) << 8) - (model & 0xff);
    dir + ((size as u32) << 16) + ((ty as u32) << 8) + nr as u32
}

pub const FS_IOC_FSGETXATTR: u32 = ioc_like(libc::FS_IOC_GETFLAGS, 31, b'X', FSXATTR_SIZE);
pub const FS_IOC_FSSETXATTR: u32 = ioc_like(libc::FS_IOC_SETFLAGS, 32, b'X', FSXATTR_SIZE);

/// `FS_IOC_FSGETXATTR`: the extended inode flags of an open file, as the
/// raw `struct fsxattr`.
pub fn fsxattr(fd: BorrowedFd<'_>) -> Result<[u8; FSXATTR_SIZE]> {
    let mut v = [0u8; FSXATTR_SIZE];
    // SAFETY: the call fills one struct fsxattr, the size of `v`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR as _, v.as_mut_ptr()) })?;
    Ok(v)
}

/// `FS_IOC_FSSETXATTR` with a raw `struct fsxattr`.
pub fn set_fsxattr(fd: BorrowedFd<'_>, v: &[u8; FSXATTR_SIZE]) -> Result<()> {
    // SAFETY: the call reads one struct fsxattr, the size of `v`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR as _, v.as_ptr()) })?;
    Ok(())
}

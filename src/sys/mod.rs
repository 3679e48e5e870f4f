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
#![allow(unsafe_code)]

mod dirent;
mod xattr;

pub use dirent::{DirEnt, list_dir, read_dir_entries};
pub use xattr::{
    fgetxattr, flistxattr, fremovexattr, fsetxattr, lgetxattr_at, llistxattr_at, lremovexattr_at,
    lsetxattr_at,
};

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

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

/// Opens a directory given by an absolute or cwd-relative path as an
/// `O_PATH` handle. Used once per layer at mount time; this is the only
/// call that follows symlinks, because the user named the layer itself.
pub fn open_layer_root(path: &std::path::Path) -> Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    own(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated; `dir` is a live fd borrowed for the call.
    own(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) })
}

/// Opens a relative path below `root` without following any symlink and
/// without leaving `root` (`openat2` with `RESOLVE_BENEATH`). An empty path
/// opens `root` itself.
pub fn open_beneath(root: BorrowedFd<'_>, path: &[u8], flags: i32) -> Result<OwnedFd> {
    let path = if path.is_empty() { &b"."[..] } else { path };
    let c = cstr(path)?;
    /// `struct open_how` of openat2(2).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `how` is a valid open_how of the size passed; `c` is NUL-terminated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    own(ret as libc::c_int)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr) -> Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: `st` is a valid out-pointer; the kernel fills it on success.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat returned 0, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat> {
    fstatat(fd, c"")
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

pub fn fstatfs(fd: BorrowedFd<'_>) -> Result<libc::statfs> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` is a valid out-pointer.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs returned 0.
    Ok(unsafe { st.assume_init() })
}

pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = check_ssize(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: plain syscall on a borrowed fd and a NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> Result<()> {
    // SAFETY: plain syscall on a borrowed fd and a NUL-terminated name.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })?;
    Ok(())
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

pub fn linkat(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
) -> Result<()> {
    // SAFETY: both strings are NUL-terminated; flags 0 never follows a symlink.
    check(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, remove_dir: bool) -> Result<()> {
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: plain syscall on a borrowed fd and a NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(())
}

pub const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
pub const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
pub const RENAME_WHITEOUT: u32 = libc::RENAME_WHITEOUT;

pub fn renameat2(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: u32,
) -> Result<()> {
    // SAFETY: both strings are NUL-terminated; renameat2 never follows symlinks.
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

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
/// Linux 6.6+). On older kernels the name is opened `O_PATH|O_NOFOLLOW`
/// and changed through its `/proc/self/fd` entry, which names that very inode.
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    const SYS_FCHMODAT2: libc::c_long = 452;
    if name.is_empty() {
        // `dir` itself, perhaps an O_PATH fd: chmod through its magic link.
        let p = proc_fd_path(dir, b"");
        // SAFETY: `p` names the inode behind `dir`.
        check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })?;
        return Ok(());
    }
    // SAFETY: plain syscall; AT_SYMLINK_NOFOLLOW keeps a symlink from being followed.
    let ret = unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    match Errno::last() {
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
        // `dir` itself, perhaps an O_PATH fd: through its magic link.
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

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> Result<()> {
    // SAFETY: plain syscall on a borrowed fd.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })?;
    Ok(())
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> Result<()> {
    // SAFETY: plain syscalls on a borrowed fd.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })?;
    Ok(())
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> Result<()> {
    // SAFETY: plain syscall on a borrowed fd.
    check(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })?;
    Ok(())
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize> {
    // SAFETY: `buf` is writable for its length.
    check_ssize(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> Result<usize> {
    // SAFETY: `buf` is readable for its length.
    check_ssize(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

/// `lseek` with `SEEK_DATA`/`SEEK_HOLE`/…; ENXIO past the last data.
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> Result<i64> {
    // SAFETY: plain syscall on a borrowed fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> Result<usize> {
    let mut so = src_off as libc::loff_t;
    let mut d = dst_off as libc::loff_t;
    // SAFETY: the offsets are valid in-out pointers for the call.
    check_ssize(unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0)
    })
}

/// Shares all of `src`'s extents with `dst` (`FICLONE`): a copy-up that
/// costs no data I/O where the filesystem supports reflinks.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its integer argument.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) })?;
    Ok(())
}

/// `/proc/self/fd/N[/name]`: names the inode behind an fd (and optionally
/// one entry below it) for the calls that have no `*at()` form.
pub fn proc_fd_path(fd: BorrowedFd<'_>, name: &[u8]) -> CString {
    let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    // A NUL cannot appear: `name` comes from a CStr or the kernel.
    CString::new(p).unwrap_or_default()
}

/// Gives the allocator's free memory back to the system (glibc keeps
/// freed memory mapped in its arenas otherwise).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: the daemon keeps one
/// fd per open file and per cached directory layer.
pub fn raise_nofile_limit() {
    // As high as the kernel allows (`fs.nr_open`) when privileged; else
    // the soft limit up to the hard one. Each open file and each upper
    // inode the kernel knows costs the daemon one fd.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer, then a valid in-pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if let Some(max) = nr_open.filter(|&m| m > lim.rlim_max) {
            let raised = libc::rlimit {
                rlim_cur: max,
                rlim_max: max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

pub fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}

/// Sets the process umask; the daemon runs with 0 so that the modes the
/// kernel sends (already masked by the caller's umask) land unchanged.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Device number of a 0/0 character device: the whiteout.
pub const WHITEOUT_DEV: u64 = 0;

/// Takes an exclusive, non-blocking `flock` on `fd`; EWOULDBLOCK when
/// another process holds it. Released when the fd closes (also on SIGKILL).
pub fn flock_exclusive(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: plain syscall on a borrowed fd.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })?;
    Ok(())
}

/// Takes a shared, non-blocking `flock` on `fd`; EWOULDBLOCK while another
/// process holds it exclusively.
pub fn flock_shared(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: plain syscall on a borrowed fd.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) })?;
    Ok(())
}

/// Gives the calling thread its own umask, cwd and root (`unshare(CLONE_FS)`):
/// threads it starts afterwards share them, the rest of the process does not.
/// The in-process daemon needs umask 0 while the command it runs keeps the
/// user's umask.
pub fn unshare_fs() -> Result<()> {
    // SAFETY: CLONE_FS only copies the calling thread's fs_struct.
    check(unsafe { libc::unshare(libc::CLONE_FS) })?;
    Ok(())
}

/// Clears `FD_CLOEXEC` on `fd`, so that the next exec'd child inherits it.
pub fn inherit_on_exec(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: fcntl on a borrowed fd.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) })?;
    Ok(())
}

/// Closes every fd of the process except 0, 1, 2 and `keep`. For a freshly
/// forked, single-threaded child that must not hold its parent's files.
pub fn close_other_fds(keep: BorrowedFd<'_>) {
    let keep = keep.as_raw_fd();
    // SAFETY: the caller is single-threaded and owns every fd it closes;
    // `keep` and the standard fds stay open.
    unsafe {
        if keep > 3 {
            libc::close_range(3, (keep - 1) as libc::c_uint, 0);
        }
        libc::close_range((keep.max(2) + 1) as libc::c_uint, libc::c_uint::MAX, 0);
    }
}

/// An all-zero `struct stat`, for building test values.
pub fn zeroed_stat() -> libc::stat {
    // SAFETY: `struct stat` is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `fork(2)`; `Ok(None)` in the child. Called before any thread exists.
pub fn fork() -> Result<Option<i32>> {
    // SAFETY: the process is single-threaded when this is called (the CLI
    // forks before mounting), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// SIGPIPE is ignored: a reader that went away is an EPIPE, not a dead daemon.
pub fn ignore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// Points stdin, stdout and stderr at /dev/null (a detached daemon must
/// not hold its starter's pipes open).
pub fn stdio_to_devnull() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

/// The current `RLIMIT_NOFILE` (soft, hard).
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

/// Makes `cmd`'s child start with `RLIMIT_NOFILE` = `limit`: the daemon
/// inside the launcher raised its own limit, and the command it runs should
/// not inherit that (some programs loop over every possible fd).
pub fn child_nofile_limit(cmd: &mut std::process::Command, limit: (u64, u64)) {
    use std::os::unix::process::CommandExt;
    let lim = libc::rlimit {
        rlim_cur: limit.0,
        rlim_max: limit.1,
    };
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setrlimit, which is async-signal-safe; it captures a plain value.
    unsafe {
        cmd.pre_exec(move || {
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
}

/// Opens the inode behind `fd` again with `flags` (through
/// `/proc/self/fd`, the daemon's own descriptor: no layer path is walked).
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
    let p = proc_fd_path(fd, b"");
    // SAFETY: `p` is a NUL-terminated path naming the inode behind `fd`.
    own(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })
}

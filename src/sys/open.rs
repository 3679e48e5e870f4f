//! Opening entries and reading what they are: the `*at()` opens (one
//! name, or a path kept beneath a root by `openat2`), re-opening an fd
//! through `/proc/self/fd`, `stat`/`statfs` and `readlink`.
//!
//! Invariant: every open of a name in a layer adds `O_NOFOLLOW |
//! O_CLOEXEC`. Two opens walk no layer path: `open_layer_root` (the layer
//! the user named, followed on purpose) and `reopen` (the daemon's own fd,
//! through its `/proc/self/fd` entry).
use super::{Result, check, check_ssize, cstr, own};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

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

/// Opens the inode behind `fd` again with `flags` (through
/// `/proc/self/fd`, the daemon's own descriptor: no layer path is walked).
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
    let p = proc_fd_path(fd, b"");
    // SAFETY: `p` is a NUL-terminated path naming the inode behind `fd`.
    own(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })
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

/// An all-zero `struct stat`, for building test values and stats
/// described by hand (an image).
pub fn zeroed_stat() -> libc::stat {
    // SAFETY: `struct stat` is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// An all-zero `statfs`, for filesystems described by hand (an image).
pub fn zeroed_statfs() -> libc::statfs {
    // SAFETY: `libc::statfs` is plain integers; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
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

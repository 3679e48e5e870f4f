//! Reading whole directories with `getdents64`, names as raw bytes.
use super::{Errno, Result, check_ssize};
use std::os::fd::{AsRawFd, BorrowedFd};

/// One raw directory entry of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEnt {
    pub ino: u64,
    /// `DT_*` type as reported by the filesystem (may be `DT_UNKNOWN`).
    pub dtype: u8,
    pub name: Vec<u8>,
}

/// Big enough that a 50,000-entry directory takes few calls.
const GETDENTS_BUF: usize = 64 * 1024;

/// Reads every entry of the directory `dir` holds (an `O_PATH` fd is
/// enough: it is opened for reading first), skipping `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<DirEnt>> {
    let fd = super::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // Freshly opened: already at offset 0.
    read_to_end(std::os::fd::AsFd::as_fd(&fd))
}

/// Reads every entry of the directory open on `fd` (from offset 0),
/// skipping `.` and `..`. `fd` must be opened `O_RDONLY | O_DIRECTORY`.
pub fn read_dir_entries(fd: BorrowedFd<'_>) -> Result<Vec<DirEnt>> {
    // SAFETY: rewinding a directory fd we borrow.
    if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(Errno::last());
    }
    read_to_end(fd)
}

/// Reads the entries of `fd` from its current offset to the end.
fn read_to_end(fd: BorrowedFd<'_>) -> Result<Vec<DirEnt>> {
    let mut out = Vec::new();
    // Not zeroed (64 KiB of memset per listing): only the bytes the kernel
    // wrote are ever read.
    let mut buf: Vec<u8> = Vec::with_capacity(GETDENTS_BUF);
    loop {
        buf.clear();
        // SAFETY: the spare capacity is writable for GETDENTS_BUF bytes;
        // getdents64 writes whole records.
        let n = check_ssize(unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.spare_capacity_mut().as_mut_ptr(),
                GETDENTS_BUF,
            ) as libc::ssize_t
        })?;
        if n == 0 {
            return Ok(out);
        }
        // SAFETY: the kernel initialised the first `n` bytes (n <= capacity).
        unsafe { buf.set_len(n.min(GETDENTS_BUF)) };
        parse_records(&buf, &mut out);
    }
}

/// Layout of `struct linux_dirent64`: d_ino u64, d_off i64, d_reclen u16,
/// d_type u8, then the NUL-terminated name.
fn parse_records(mut buf: &[u8], out: &mut Vec<DirEnt>) {
    const HEADER: usize = 19;
    while buf.len() >= HEADER {
        let ino = u64::from_ne_bytes(buf[0..8].try_into().unwrap_or([0; 8]));
        let reclen = u16::from_ne_bytes([buf[16], buf[17]]) as usize;
        let dtype = buf[18];
        if reclen < HEADER || reclen > buf.len() {
            return;
        }
        let raw = &buf[HEADER..reclen];
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = &raw[..len];
        if name != b"." && name != b".." {
            out.push(DirEnt {
                ino,
                dtype,
                name: name.to_vec(),
            });
        }
        buf = &buf[reclen..];
    }
}

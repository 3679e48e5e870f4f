//! Who holds a `flock`, from `/proc/locks`, and taking one on a directory.
//!
//! `/proc/locks` names a locked file by `MAJOR:MINOR:INODE` (hex device
//! numbers, decimal inode), so a holder is found by the inode it locks,
//! not by a path: a path can be renamed under it, the inode cannot.
use crate::sys::{self, Errno};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// PIDs holding a `flock` on the inode (major, minor, ino), from
/// `/proc/locks` text (`1: FLOCK  ADVISORY  WRITE 123 00:2a:4567 0 EOF`).
pub fn flock_holders(locks: &str, dev: (u32, u32), ino: u64) -> Vec<u32> {
    let mut out = Vec::new();
    for line in locks.lines() {
        let words: Vec<&str> = line.split_whitespace().filter(|w| *w != "->").collect();
        if words.get(1) != Some(&"FLOCK") {
            continue;
        }
        let (Some(pid), Some(id)) = (words.get(4), words.get(5)) else {
            continue;
        };
        let mut parts = id.split(':');
        let (Some(maj), Some(min), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let same = u32::from_str_radix(maj, 16).ok() == Some(dev.0)
            && u32::from_str_radix(min, 16).ok() == Some(dev.1)
            && i.parse::<u64>().ok() == Some(ino);
        if let (true, Ok(pid)) = (same, pid.parse()) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The system's lock table; empty if it cannot be read.
fn lock_table() -> String {
    std::fs::read_to_string("/proc/locks").unwrap_or_default()
}

/// PIDs holding a `flock` on the file of `st_dev`/`st_ino`.
pub fn holders_of_inode(st_dev: u64, st_ino: u64) -> Vec<u32> {
    let dev = (libc::major(st_dev), libc::minor(st_dev));
    flock_holders(&lock_table(), dev, st_ino)
}

/// PIDs holding a `flock` on the file open as `fd`; None when it cannot
/// be stat'ed.
pub fn holders_of_fd(fd: BorrowedFd<'_>) -> Option<Vec<u32>> {
    let st = sys::fstat(fd).ok()?;
    Some(holders_of_inode(st.st_dev, st.st_ino))
}

/// Takes the exclusive `flock` of the directory at `path` without
/// waiting; held until the returned fd is dropped.
pub fn lock_dir(path: &Path) -> Result<OwnedFd, Errno> {
    let root = sys::open_layer_root(path)?;
    let fd = sys::openat(root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    sys::flock_exclusive(fd.as_fd())?;
    Ok(fd)
}

/// Takes the lock of `path` once it is free, or gives up after `wait`.
pub fn lock_dir_when_free(path: &Path, wait: Duration) -> Option<OwnedFd> {
    let deadline = Instant::now() + wait;
    loop {
        match lock_dir(path) {
            Ok(fd) => return Some(fd),
            Err(Errno::EWOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 4343 00:2a:1234 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 00:2a:1234 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 77 fd:01:1234 0 EOF\n";
        assert_eq!(flock_holders(text, (0, 0x2a), 1234), vec![4242, 4343]);
        assert_eq!(flock_holders(text, (0xfd, 1), 1234), vec![77]);
        assert!(flock_holders(text, (0, 0x2a), 1235).is_empty());
    }
}

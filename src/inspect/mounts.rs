//! Who is using an upper, and which filesystem serves a path.
//!
//! Read from `/proc/self/mountinfo` (a fimfs daemon's mount names its upper
//! as its source; a kernel overlay lists `upperdir=`) and from `/proc/locks`
//! (`fimfs run` holds a `flock` on the upper while it runs). Only read,
//! never locked: looking must not disturb a daemon starting up.
pub use crate::mountinfo::{MountLine, parse_mountinfo};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The mounts that serve `upper` (its absolute path) as their upper.
pub fn mounts_of_upper(mounts: &[MountLine], upper: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for m in mounts {
        // A fimfs daemon names its upper as the source.
        let fimfs = m.names_upper(upper);
        let overlay = m.fstype == "overlay"
            && m.options
                .iter()
                .any(|o| o.strip_prefix(b"upperdir=") == Some(upper));
        if fimfs {
            out.push(format!("a FUSE daemon serves it at {}", m.point.display()));
        } else if overlay {
            out.push(format!("the kernel overlay at {}", m.point.display()));
        }
    }
    out
}

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

/// Why `upper` looks in use by a running daemon, if it does.
pub fn upper_in_use(upper: &Path) -> Vec<String> {
    let Ok(abs) = crate::mount::absolute(upper) else {
        return Vec::new();
    };
    let mut why = mounts_of_upper(&crate::mountinfo::read(), abs.as_os_str().as_bytes());
    if let Ok(md) = std::fs::metadata(&abs) {
        use std::os::unix::fs::MetadataExt;
        let dev = (libc::major(md.dev()), libc::minor(md.dev()));
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        for pid in flock_holders(&locks, dev, md.ino()) {
            why.push(format!("process {pid} (fimfs run) holds its lock"));
        }
    }
    why
}

/// The mount that holds files of device `dev` (the last one listed, as
/// the kernel stacks them).
pub fn mount_of_dev(dev: u64) -> Option<MountLine> {
    let want = (libc::major(dev), libc::minor(dev));
    crate::mountinfo::read()
        .into_iter()
        .rev()
        .find(|m| m.dev == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::tests::INFO;

    #[test]
    fn users_of_an_upper() {
        let m = parse_mountinfo(INFO);
        assert_eq!(
            mounts_of_upper(&m, b"/tmp/up per"),
            vec!["a FUSE daemon serves it at /tmp/m nt".to_string()]
        );
        assert_eq!(
            mounts_of_upper(&m, b"/tmp/up,x"),
            vec!["the kernel overlay at /k".to_string()]
        );
        assert_eq!(mounts_of_upper(&m, b"/tmp/rootup").len(), 1);
        assert!(mounts_of_upper(&m, b"/tmp/up").is_empty());
    }

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

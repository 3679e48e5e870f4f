//! Who is using an upper, and which filesystem serves a path.
//!
//! Read from `/proc/self/mountinfo` (a fimfs daemon's mount names its upper
//! as its source; a kernel overlay lists `upperdir=`) and from `/proc/locks`
//! (`fimfs run` holds a `flock` on the upper while it runs). Only read,
//! never locked: looking must not disturb a daemon starting up.
use crate::host::locks::holders_of_inode;
use crate::host::mountinfo::{self, MountLine};
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

/// Why `upper` looks in use by a running daemon, if it does.
pub fn upper_in_use(upper: &Path) -> Vec<String> {
    let Ok(abs) = crate::host::paths::absolute(upper) else {
        return Vec::new();
    };
    let mut why = mounts_of_upper(&mountinfo::read(), abs.as_os_str().as_bytes());
    if let Ok(md) = std::fs::metadata(&abs) {
        use std::os::unix::fs::MetadataExt;
        for pid in holders_of_inode(md.dev(), md.ino()) {
            why.push(format!("process {pid} (fimfs run) holds its lock"));
        }
    }
    why
}

/// The mount that holds files of device `dev` (the last one listed, as
/// the kernel stacks them).
pub fn mount_of_dev(dev: u64) -> Option<MountLine> {
    let want = (libc::major(dev), libc::minor(dev));
    mountinfo::read().into_iter().rev().find(|m| m.dev == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mountinfo::parse_mountinfo;
    use crate::host::mountinfo::tests::INFO;

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
}

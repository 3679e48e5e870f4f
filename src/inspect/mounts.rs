//! Who is using an upper, and which filesystem serves a path.
//!
//! Read from `/proc/self/mountinfo` (a fimfs daemon's mount names its upper
//! as its source; a kernel overlay lists `upperdir=`) and from `/proc/locks`
//! (`fimfs run` holds a `flock` on the upper while it runs). Only read,
//! never locked: looking must not disturb a daemon starting up.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    /// `st_dev` of the filesystem's files, as (major, minor).
    pub dev: (u32, u32),
    pub point: PathBuf,
    pub fstype: String,
    pub source: Vec<u8>,
    /// Superblock options, split at `,` and unescaped.
    pub options: Vec<Vec<u8>>,
}

/// Mountinfo escapes space, tab, newline, backslash (and for overlay
/// options `,` and `=`) as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let oct = field
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (field[i], oct) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |a, c| a.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn parse_dev(f: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(f).ok()?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<MountLine> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = f.iter().position(|x| *x == b"-") else {
            continue;
        };
        if f.len() < 5 || f.len() < sep + 4 {
            continue;
        }
        let Some(dev) = parse_dev(f[2]) else { continue };
        out.push(MountLine {
            dev,
            point: PathBuf::from(OsStr::from_bytes(&unescape(f[4]))),
            fstype: String::from_utf8_lossy(f[sep + 1]).into_owned(),
            source: unescape(f[sep + 2]),
            options: f[sep + 3].split(|&b| b == b',').map(unescape).collect(),
        });
    }
    out
}

/// The mounts that serve `upper` (its absolute path) as their upper.
pub fn mounts_of_upper(mounts: &[MountLine], upper: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for m in mounts {
        // A fimfs daemon names its upper as the source; mounted by root
        // the type is plain `fuse`, through fusermount3 `fuse.fimfs`.
        let fuse = m.fstype == "fuse" || m.fstype.starts_with("fuse.");
        let fimfs = fuse && m.source == upper;
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
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    let mut why = mounts_of_upper(&parse_mountinfo(&info), abs.as_os_str().as_bytes());
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
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    let want = (libc::major(dev), libc::minor(dev));
    parse_mountinfo(&info)
        .into_iter()
        .rev()
        .find(|m| m.dev == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &[u8] = b"22 27 0:21 / /proc rw,relatime - proc proc rw\n\
        90 27 0:55 / /tmp/m\\040nt rw,nosuid,nodev - fuse.fimfs /tmp/up\\040per rw,user_id=0,group_id=0,allow_other\n\
        91 27 0:56 / /k rw - overlay overlay rw,lowerdir=/l1:/l2,upperdir=/tmp/up\\054x,workdir=/w,userxattr\n\
        92 27 0:57 / /r rw - fuse /tmp/rootup rw,user_id=0,group_id=0\n\
        bad line\n";

    #[test]
    fn mountinfo() {
        let m = parse_mountinfo(INFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].dev, (0, 55));
        assert_eq!(m[1].point, Path::new("/tmp/m nt"));
        assert_eq!(m[1].fstype, "fuse.fimfs");
        assert_eq!(m[1].source, b"/tmp/up per");
        assert_eq!(m[2].options[2], b"upperdir=/tmp/up,x");
    }

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

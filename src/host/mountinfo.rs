//! `/proc/self/mountinfo`, parsed once for everyone who reads it: the
//! daemon watching its own mount, the launcher, `fimfs diff`/`which`.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    /// The mount id (first field): stable while the mount exists.
    pub id: u32,
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
        let (Some(id), Some(dev)) = (
            std::str::from_utf8(f[0]).ok().and_then(|s| s.parse().ok()),
            parse_dev(f[2]),
        ) else {
            continue;
        };
        out.push(MountLine {
            id,
            dev,
            point: PathBuf::from(OsStr::from_bytes(&unescape(f[4]))),
            fstype: String::from_utf8_lossy(f[sep + 1]).into_owned(),
            source: unescape(f[sep + 2]),
            options: f[sep + 3].split(|&b| b == b',').map(unescape).collect(),
        });
    }
    out
}

impl MountLine {
    /// A FUSE mount: type `fuse` when mounted by root, `fuse.SUBTYPE`
    /// through fusermount3.
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }

    /// A FUSE mount whose source names `upper` as its writable layer:
    /// fimfs' `UPPER=RW:TOP=RO:…` (the source a fimfs mount writes), or the bare upper
    /// that fimfs daemons wrote before.
    pub fn names_upper(&self, upper: &[u8]) -> bool {
        self.is_fuse()
            && self
                .source
                .strip_prefix(upper)
                .is_some_and(|rest| rest.is_empty() || rest == b"=RW" || rest.starts_with(b"=RW:"))
    }
}

/// The mount table of this process; empty if it cannot be read.
pub fn read() -> Vec<MountLine> {
    parse_mountinfo(&std::fs::read("/proc/self/mountinfo").unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    pub(crate) const INFO: &[u8] = b"22 27 0:21 / /proc rw,relatime - proc proc rw\n\
        90 27 0:55 / /tmp/m\\040nt rw,nosuid,nodev - fuse.fimfs /tmp/up\\040per rw,user_id=0,group_id=0,allow_other\n\
        91 27 0:56 / /k rw - overlay overlay rw,lowerdir=/l1:/l2,upperdir=/tmp/up\\054x,workdir=/w,userxattr\n\
        92 27 0:57 / /r rw - fuse /tmp/rootup rw,user_id=0,group_id=0\n\
        bad line\n";

    #[test]
    fn mountinfo() {
        let m = parse_mountinfo(INFO);
        assert_eq!(m.len(), 4);
        assert_eq!((m[1].id, m[1].dev), (90, (0, 55)));
        assert!(m[1].is_fuse() && m[3].is_fuse() && !m[2].is_fuse());
        assert_eq!(m[1].point, Path::new("/tmp/m nt"));
        assert_eq!(m[1].fstype, "fuse.fimfs");
        assert_eq!(m[1].source, b"/tmp/up per");
        assert_eq!(m[2].options[2], b"upperdir=/tmp/up,x");
        let mut named = m[3].clone();
        named.source = b"/u=RW:/l1=RO:/l2=RO".to_vec();
        assert!(named.names_upper(b"/u") && !named.names_upper(b"/l1"));
        assert!(!named.names_upper(b"/") && m[3].names_upper(b"/tmp/rootup"));
    }
}

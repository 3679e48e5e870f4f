//! Reading an upper as a tree of changes, every marker dialect decoded.
//!
//! The walk visits the upper depth-first, in byte order of names, through
//! directory fds (`*at()` calls, never following a symlink). Each entry is
//! classified the way `union::marker` reads it in a mount:
//! - a whiteout: a 0/0 character device, a `.wh.NAME` file (reported as
//!   `NAME`), or a zero-size file with `{user,trusted}.overlay.whiteout`;
//! - a directory, opaque or not (`{user,trusted}.overlay.opaque=y`,
//!   `user.fuseoverlayfs.opaque=y`, or a `.wh..wh..opq` entry);
//! - anything else (file, symlink, device, fifo, socket).
//!
//! Invariants: marker entries themselves (`.wh..wh..opq`, aufs' other
//! `.wh..wh.*` names) are never reported; when a real entry and a `.wh.`
//! file claim one name, the real entry wins (as lookup decides); a whiteout
//! inside an opaque directory hides nothing and is not reported.
use super::Error;
use crate::sys::{self, Errno};
use crate::union::marker;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// What one upper entry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The name is deleted (hidden in every lower).
    Whiteout,
    /// A directory; when opaque, nothing below it merges in.
    Dir { opaque: bool },
    /// A file, symlink, device, fifo or socket.
    Entry,
}

/// One entry of the upper, as a visitor sees it.
pub struct Item<'a> {
    /// Path from the upper root, `/`-separated; empty for the root. A
    /// `.wh.NAME` file appears under `NAME`.
    pub path: &'a [u8],
    /// The directory holding the entry (the root: the root itself).
    pub dir: BorrowedFd<'a>,
    /// The entry's real name in `dir` (empty for the root).
    pub real: &'a CStr,
    /// `lstat` of the real entry.
    pub st: &'a libc::stat,
    pub change: Change,
}

impl Item<'_> {
    /// The last component of `path` (the name the entry stands for).
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => self.path,
        }
    }

    pub fn file_type(&self) -> u32 {
        self.st.st_mode & libc::S_IFMT
    }
}

/// Receives the walk. Directories get `enter` before their contents and
/// `leave` after, with `fd` open on them (`O_RDONLY`); everything else
/// gets `entry`.
pub trait Visitor {
    fn enter(&mut self, item: &Item<'_>, fd: BorrowedFd<'_>) -> Result<(), Error>;
    fn leave(&mut self, item: &Item<'_>, fd: BorrowedFd<'_>) -> Result<(), Error>;
    fn entry(&mut self, item: &Item<'_>) -> Result<(), Error>;
}

/// Opens a directory for listing, never following a symlink.
pub fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> sys::Result<OwnedFd> {
    let name = if name.is_empty() { c"." } else { name };
    sys::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Walks the upper whose root is open (any mode) on `root`.
pub fn walk(root: BorrowedFd<'_>, v: &mut dyn Visitor) -> Result<(), Error> {
    let fd = open_dir(root, c"").map_err(|e| Error::at(b"", "open", e))?;
    let st = sys::fstat(fd.as_fd()).map_err(|e| Error::at(b"", "stat", e))?;
    let opaque = marker::dir_marks(fd.as_fd()).opaque;
    let item = Item {
        path: b"",
        dir: fd.as_fd(),
        real: c"",
        st: &st,
        change: Change::Dir { opaque },
    };
    walk_dir(&item, fd.as_fd(), v)
}

/// One classified entry of a directory listing.
struct Listed {
    real: CString,
    st: libc::stat,
    change: Change,
}

fn walk_dir(item: &Item<'_>, fd: BorrowedFd<'_>, v: &mut dyn Visitor) -> Result<(), Error> {
    v.enter(item, fd)?;
    let opaque = matches!(item.change, Change::Dir { opaque: true });
    for (name, l) in list(fd, item.path)? {
        if opaque && l.change == Change::Whiteout {
            continue;
        }
        let path = join(item.path, &name);
        let child = Item {
            path: &path,
            dir: fd,
            real: &l.real,
            st: &l.st,
            change: l.change,
        };
        match l.change {
            Change::Dir { .. } => {
                let sub = open_dir(fd, &l.real).map_err(|e| Error::at(&path, "open", e))?;
                walk_dir(&child, sub.as_fd(), v)?;
            }
            _ => v.entry(&child)?,
        }
    }
    v.leave(item, fd)
}

/// `parent/name`, or `name` at the root.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// What a raw name of a listing stands for.
#[derive(Debug, PartialEq, Eq)]
pub enum RawName<'a> {
    /// A marker of the directory itself, or aufs' bookkeeping: skipped.
    Skip,
    /// `.wh.NAME`: a whiteout of `NAME`.
    WhiteoutOf(&'a [u8]),
    /// An ordinary name, to be looked at.
    Plain,
}

pub fn raw_name(name: &[u8]) -> RawName<'_> {
    const AUFS_META: &[u8] = b".wh..wh.";
    if name == marker::OPAQUE_FILE || name.starts_with(AUFS_META) {
        return RawName::Skip;
    }
    match name.strip_prefix(marker::WH_PREFIX) {
        Some(b"") => RawName::Skip,
        Some(hidden) => RawName::WhiteoutOf(hidden),
        None => RawName::Plain,
    }
}

/// The entries of one upper directory, by the name they stand for.
fn list(fd: BorrowedFd<'_>, path: &[u8]) -> Result<BTreeMap<Vec<u8>, Listed>, Error> {
    let raw = sys::read_dir_entries(fd).map_err(|e| Error::at(path, "list", e))?;
    let mut out: BTreeMap<Vec<u8>, Listed> = BTreeMap::new();
    for e in raw {
        let (name, wh_file) = match raw_name(&e.name) {
            RawName::Skip => continue,
            RawName::WhiteoutOf(hidden) => (hidden.to_vec(), true),
            RawName::Plain => (e.name.clone(), false),
        };
        let real = sys::cstr(&e.name).map_err(|err| Error::at(path, "list", err))?;
        let st = match sys::fstatat(fd, &real) {
            Ok(st) => st,
            // Removed while we read: the upper is in use.
            Err(Errno::ENOENT) => continue,
            Err(err) => return Err(Error::at(&join(path, &e.name), "stat", err)),
        };
        let change = if wh_file
            || marker::is_whiteout_stat(&st)
            || (st.st_mode & libc::S_IFMT == libc::S_IFREG
                && st.st_size == 0
                && marker::is_xattr_whiteout_name(fd, &real))
        {
            Change::Whiteout
        } else if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let sub =
                open_dir(fd, &real).map_err(|err| Error::at(&join(path, &name), "open", err))?;
            Change::Dir {
                opaque: marker::dir_marks(sub.as_fd()).opaque,
            }
        } else {
            Change::Entry
        };
        let listed = Listed { real, st, change };
        match out.get(&name) {
            // The real entry wins over a `.wh.` file for its name.
            Some(prev) if prev.change != Change::Whiteout || wh_file => {}
            _ => {
                out.insert(name, listed);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_names() {
        let table: &[(&[u8], RawName<'_>)] = &[
            (b"foo", RawName::Plain),
            (b".wh.foo", RawName::WhiteoutOf(b"foo")),
            (b".wh..wh..opq", RawName::Skip),
            (b".wh..wh.plnk", RawName::Skip),
            (b".wh.", RawName::Skip),
            (b".whfoo", RawName::Plain),
            (b".wh.\xff", RawName::WhiteoutOf(b"\xff")),
        ];
        for (name, want) in table {
            assert_eq!(
                &raw_name(name),
                want,
                "{:?}",
                name.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn joins() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
    }
}

//! Reading whiteout and opaque markers in a host directory, every dialect
//! of SPEC §2 (writing them is the union's: `union::marker`).
//!
//! - whiteout: a 0/0 character device; a `.wh.<name>` file; a zero-size
//!   regular file carrying `user.overlay.whiteout` or `trusted.overlay.whiteout`;
//! - opaque directory: `user.overlay.opaque`, `trusted.overlay.opaque` or
//!   `user.fuseoverlayfs.opaque` equal to `y`, or a `.wh..wh..opq` entry.
//!
//! Every call is relative to a directory fd and follows no symlink.
use crate::sys::{self, Errno, Result};
use std::ffi::CStr;
use std::os::fd::BorrowedFd;

pub const WH_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_FILE: &[u8] = b".wh..wh..opq";
/// What `fimfs export` leaves at the root of a layer whose deletions are
/// `.wh.` files, for the launcher (`launch::dialect`). Read as the whiteout
/// of `.wh.fimfs`, a name no view can hold, it hides nothing.
pub const EXPORT_MARK: &[u8] = b".wh..wh.fimfs";

const OPAQUE_XATTRS: [&CStr; 3] = [
    c"trusted.overlay.opaque",
    c"user.overlay.opaque",
    c"user.fuseoverlayfs.opaque",
];
const WHITEOUT_XATTRS: [&CStr; 2] = [c"trusted.overlay.whiteout", c"user.overlay.whiteout"];

/// What one layer holds under one name.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    Absent,
    Whiteout,
    Entry(libc::stat),
}

/// Is this name one of ours (a marker), never to be listed or looked up?
pub fn is_marker_name(name: &[u8]) -> bool {
    name.starts_with(WH_PREFIX)
}

pub fn is_whiteout_stat(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == sys::WHITEOUT_DEV
}

/// A zero-size regular file may be an xattr whiteout; only then are xattrs
/// read, with one `listxattr` (an empty file is common: `touch`, lock and
/// stamp files). The list shows `trusted.*` names only to a privileged
/// daemon, the only one that could read them.
fn is_xattr_whiteout(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat) -> bool {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size != 0 {
        return false;
    }
    match sys::llistxattr_at(dir, name) {
        Ok(list) => list
            .split(|b| *b == 0)
            .any(|n| WHITEOUT_XATTRS.iter().any(|x| x.to_bytes() == n)),
        Err(_) => WHITEOUT_XATTRS
            .iter()
            .any(|x| sys::lgetxattr_at(dir, name, x).is_ok()),
    }
}

/// Looks `name` up in one layer directory, decoding every whiteout dialect.
pub fn probe(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Probe> {
    probe_layer(dir, name, true)
}

/// [`probe`], where a `.wh.NAME` file is looked for only if `wh_files`:
/// in the bottom layer of a directory a whiteout hides nothing, so there
/// a missing name needs no second call.
pub fn probe_layer(dir: BorrowedFd<'_>, name: &[u8], wh_files: bool) -> Result<Probe> {
    let c = sys::cstr(name)?;
    match sys::fstatat(dir, &c) {
        Ok(st) if is_whiteout_stat(&st) || is_xattr_whiteout(dir, &c, &st) => Ok(Probe::Whiteout),
        Ok(st) => Ok(Probe::Entry(st)),
        Err(Errno::ENOENT) if !wh_files => Ok(Probe::Absent),
        Err(Errno::ENOENT) => {
            let mut wh = WH_PREFIX.to_vec();
            wh.extend_from_slice(name);
            match sys::fstatat(dir, &sys::cstr(&wh)?) {
                Ok(_) => Ok(Probe::Whiteout),
                Err(Errno::ENOENT) | Err(Errno::ENAMETOOLONG) => Ok(Probe::Absent),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// What a layer directory says about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirMarks {
    /// Nothing below this directory merges in.
    pub opaque: bool,
    /// `overlay.opaque=x`: the directory may hold xattr whiteouts, which
    /// readdir must then look for (the kernel overlay's rule).
    pub xwhiteouts: bool,
}

/// Reads the markers of the directory held by `dir` (`O_PATH` is enough).
///
/// One `listxattr` says which opaque xattrs are there at all; only those
/// are read (most directories have none: one call instead of three, and on
/// a FUSE lower such as DwarFS each call is a round trip to its daemon).
/// The list shows `trusted.*` names only to a privileged daemon, which is
/// also the only one that may read them.
pub fn dir_marks(dir: BorrowedFd<'_>) -> DirMarks {
    let mut marks = DirMarks::default();
    let listed = sys::llistxattr_at(dir, c"");
    let present = |x: &CStr| match &listed {
        Ok(list) => list.split(|b| *b == 0).any(|n| n == x.to_bytes()),
        Err(_) => true,
    };
    for x in OPAQUE_XATTRS.into_iter().filter(|x| present(x)) {
        match sys::lgetxattr_at(dir, c"", x).as_deref() {
            Ok(b"y") => marks.opaque = true,
            Ok(b"x") => marks.xwhiteouts = true,
            _ => {}
        }
    }
    if !marks.opaque {
        marks.opaque = sys::cstr(OPAQUE_FILE).is_ok_and(|c| sys::fstatat(dir, &c).is_ok());
    }
    marks
}

/// Is the zero-size regular file `dir/name` an xattr whiteout?
pub fn is_xattr_whiteout_name(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    match sys::fstatat(dir, name) {
        Ok(st) => is_xattr_whiteout(dir, name, &st),
        Err(_) => false,
    }
}

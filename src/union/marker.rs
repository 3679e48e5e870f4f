//! Whiteout and opaque markers: every dialect of SPEC §2 is read by the
//! layers (`layer::marker`, re-exported here); the union writes one.
//!
//! Write: 0/0 character devices (falling back to `.wh.<name>` only where the
//! upper refuses device nodes) and `user.overlay.opaque=y`, plus
//! `trusted.overlay.opaque=y` when privileged. Never a whiteout inside an
//! opaque directory, never redirect or metacopy xattrs.
pub use crate::layer::marker::{
    DirMarks, EXPORT_MARK, OPAQUE_FILE, Probe, WH_PREFIX, dir_marks, is_marker_name,
    is_whiteout_stat, is_xattr_whiteout_name, probe, probe_layer,
};
use crate::sys::{self, Errno, Result};
use std::ffi::CStr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Names of xattrs that belong to the overlay machinery: hidden from
/// listxattr/getxattr through the mount, and refused (EPERM) on set/remove.
pub fn is_private_xattr(name: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 5] = [
        b"trusted.overlay.",
        b"user.overlay.",
        b"user.fuseoverlayfs.",
        b"user.fimfs.",
        b"trusted.fimfs.",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Read-only xattrs the daemon answers on every entry with the layer that
/// serves it (`fimfs which`); never stored, so never listed. The trusted
/// twin serves symlinks and devices, where the kernel refuses `user.*`.
pub const LAYER_XATTR: &CStr = c"user.fimfs.layer";
pub const LAYER_XATTR_TRUSTED: &CStr = c"trusted.fimfs.layer";

pub fn is_layer_xattr(name: &[u8]) -> bool {
    name == LAYER_XATTR.to_bytes() || name == LAYER_XATTR_TRUSTED.to_bytes()
}

/// Marks of an upper entry copied up from the lower entry below it: the
/// kernel overlay's (`origin`, both namespaces), and ours, which fimfs
/// wrote before it stopped writing anything of its own into the upper
/// (the kernel overlay lists it). Read only by `fimfs diff`; the numbers
/// the union reports need no mark (`attr`).
const ORIGIN_XATTRS: [&CStr; 4] = [
    c"user.fimfs.origin",
    c"trusted.fimfs.origin",
    c"trusted.overlay.origin",
    c"user.overlay.origin",
];

/// What an upper entry says about the lower entry it was copied up from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Not copied up (made new, perhaps at a whited-out name).
    None,
    /// Copied up from the entry below it at the same name; a mark that
    /// does not say which (the kernel overlay's file handle, or ours from
    /// before the mark held an identity).
    Unverified,
    /// Copied up from the lower inode `dev`/`ino`.
    Exact(u64, u64),
}

/// Reads the origin mark of the upper entry `dir/name`: one `listxattr`,
/// and a read only of a mark that is there.
pub fn origin(dir: BorrowedFd<'_>, name: &CStr) -> Origin {
    let Ok(names) = sys::llistxattr_at(dir, name) else {
        return Origin::None;
    };
    let present = |x: &CStr| names.split(|&b| b == 0).any(|n| n == x.to_bytes());
    for (i, x) in ORIGIN_XATTRS.iter().enumerate() {
        if !present(x) {
            continue;
        }
        let Ok(v) = sys::lgetxattr_at(dir, name, x) else {
            continue;
        };
        return match (i < 2, v.len() == 16) {
            (true, true) => {
                let (dev, ino) = v.split_at(8);
                let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                Origin::Exact(word(dev), word(ino))
            }
            _ => Origin::Unverified,
        };
    }
    Origin::None
}

/// Set once the upper has refused a device node; from then on whiteouts are
/// written as `.wh.<name>` files.
static WHITEOUT_AS_FILE: AtomicBool = AtomicBool::new(false);

/// Creates a whiteout for `name` in `dir`.
pub fn make_whiteout(dir: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    if !WHITEOUT_AS_FILE.load(Ordering::Relaxed) {
        let c = sys::cstr(name)?;
        match sys::mknodat(dir, &c, libc::S_IFCHR, sys::WHITEOUT_DEV) {
            Ok(()) => return Ok(()),
            Err(Errno::EPERM) | Err(Errno::EOPNOTSUPP) => {
                tracing::warn!(
                    "the upper refuses 0/0 device nodes; writing .wh.<name> whiteouts instead"
                );
                WHITEOUT_AS_FILE.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let mut wh = WH_PREFIX.to_vec();
    wh.extend_from_slice(name);
    let fd = sys::openat(
        dir,
        &sys::cstr(&wh)?,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )?;
    drop(fd);
    Ok(())
}

/// Marks `dir/name` (or `dir` itself) opaque.
pub fn make_opaque(dir: BorrowedFd<'_>, name: &CStr, privileged: bool) -> Result<()> {
    sys::lsetxattr_at(dir, name, c"user.overlay.opaque", b"y", 0)?;
    if privileged {
        // A trusted xattr needs CAP_SYS_ADMIN; the user one is enough for
        // the kernel overlay mounted with `userxattr`, as bwrap does.
        if let Err(e) = sys::lsetxattr_at(dir, name, c"trusted.overlay.opaque", b"y", 0) {
            tracing::debug!("trusted.overlay.opaque refused: {}", e.desc());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_xattrs() {
        let table: &[(&[u8], bool)] = &[
            (b"trusted.overlay.opaque", true),
            (b"user.overlay.whiteout", true),
            (b"user.fuseoverlayfs.opaque", true),
            (b"user.fimfs.layer", true),
            (b"user.overlayx", false),
            (b"user.mime_type", false),
            (b"security.capability", false),
        ];
        for (name, private) in table {
            assert_eq!(is_private_xattr(name), *private, "{:?}", name);
        }
    }

    #[test]
    fn marker_names() {
        assert!(is_marker_name(b".wh.foo"));
        assert!(is_marker_name(b".wh..wh..opq"));
        assert!(!is_marker_name(b".whfoo"));
        assert!(!is_marker_name(b"foo.wh."));
    }
}

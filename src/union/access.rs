//! The permission checks the engine makes itself: `access(2)` for mounts
//! without `default_permissions`, and an `O_CREAT` open that finds the
//! file already there (the kernel checked only the directory).
//!
//! FUSE tells only the caller's uid and primary gid, so supplementary
//! groups are not seen here; a root mount turns `default_permissions` on
//! and the kernel makes the full check instead.
use super::attr::{Attr, Ino, Kind};
use super::cache::{Created, Lifetime};
use super::engine::Union;
use super::write::Caller;
use crate::sys::{Errno, Result};

impl Union {
    /// `open(O_CREAT)` without `O_EXCL` of a name that appeared after the
    /// kernel's lookup (made by another daemon on the same upper, or
    /// behind the mount): the existing file is opened, as on any
    /// filesystem, once `who` may open it with `flags`. On success one
    /// lookup of the node is counted; on failure none.
    pub fn open_made_meanwhile(
        &self,
        parent: Ino,
        name: &[u8],
        flags: i32,
        who: Caller,
    ) -> Result<Created> {
        let mut entry = self.lookup(parent, name)?;
        let (node, a) = (entry.ino, &entry.attr);
        let mut mask = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => libc::R_OK,
            libc::O_WRONLY => libc::W_OK,
            _ => libc::R_OK | libc::W_OK,
        };
        if flags & libc::O_TRUNC != 0 {
            mask |= libc::W_OK;
        }
        let allowed = match a.kind {
            Kind::Dir => Err(Errno::EISDIR),
            _ => check(a, who.uid, who.gid, mask, self.is_read_only()),
        };
        match allowed.and_then(|()| self.open(node, flags & !libc::O_CREAT)) {
            Ok(opened) => {
                // A write open copied it up: what the upper copy says.
                if let Ok(now) = self.getattr_entry(node) {
                    entry.attr = now.attr;
                    entry.cache.attr = now.cache.attr;
                    if entry.cache.entry != Lifetime::Never {
                        entry.cache.entry = now.cache.attr;
                    }
                }
                Ok(Created { entry, opened })
            }
            Err(e) => {
                self.forget(node, 1);
                Err(e)
            }
        }
    }
}

/// May a caller `uid`/`gid` access an entry of attributes `a` for `mask`
/// (`R_OK`, `W_OK`, `X_OK`, or `F_OK`)?
pub fn check(a: &Attr, uid: u32, gid: u32, mask: i32, read_only: bool) -> Result<()> {
    if mask & libc::W_OK != 0 && read_only {
        return Err(Errno::EROFS);
    }
    if mask == libc::F_OK {
        return Ok(());
    }
    let perm = a.perm as i32;
    if uid == 0 {
        // Root may do anything but execute a file nobody may execute.
        let exec_ok = a.kind == Kind::Dir || perm & 0o111 != 0;
        return if mask & libc::X_OK != 0 && !exec_ok {
            Err(Errno::EACCES)
        } else {
            Ok(())
        };
    }
    let shift = if uid == a.uid {
        6
    } else if gid == a.gid {
        3
    } else {
        0
    };
    let granted = (perm >> shift) & 0o7;
    if mask & 0o7 & !granted != 0 {
        Err(Errno::EACCES)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn attr(perm: u16, uid: u32, gid: u32, kind: Kind) -> Attr {
        Attr {
            ino: Ino(2),
            kind,
            perm,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            size: 0,
            blocks: 0,
            blksize: 4096,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
        }
    }

    #[test]
    fn table() {
        let (r, w, x) = (libc::R_OK, libc::W_OK, libc::X_OK);
        // (perm, file uid, file gid, kind, caller uid, caller gid, mask, read-only, allowed)
        type Row = (u16, u32, u32, Kind, u32, u32, i32, bool, bool);
        let rows: &[Row] = &[
            (0o640, 1, 1, Kind::File, 1, 9, r | w, false, true),
            (0o640, 1, 1, Kind::File, 2, 1, r, false, true),
            (0o640, 1, 1, Kind::File, 2, 1, w, false, false),
            (0o640, 1, 1, Kind::File, 2, 2, r, false, false),
            (0o644, 1, 1, Kind::File, 0, 0, x, false, false),
            (0o755, 1, 1, Kind::File, 0, 0, x, false, true),
            (0o600, 1, 1, Kind::Dir, 0, 0, x, false, true),
            (0o777, 1, 1, Kind::File, 1, 1, w, true, false),
            (0o000, 1, 1, Kind::File, 5, 5, libc::F_OK, false, true),
        ];
        for &(perm, fu, fg, kind, uid, gid, mask, ro, ok) in rows {
            let got = check(&attr(perm, fu, fg, kind), uid, gid, mask, ro).is_ok();
            assert_eq!(
                got, ok,
                "perm {perm:o} uid {uid} gid {gid} mask {mask} ro {ro}"
            );
        }
    }
}

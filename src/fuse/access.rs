//! `access(2)` for mounts without `default_permissions`.
//!
//! FUSE tells only the caller's uid and primary gid, so supplementary
//! groups are not seen here; a root mount turns `default_permissions` on
//! and the kernel makes the full check instead.
use crate::sys::Errno;
use crate::union::{Attr, Kind};

pub fn check(a: &Attr, uid: u32, gid: u32, mask: i32, read_only: bool) -> Result<(), Errno> {
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
            ino: 2,
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

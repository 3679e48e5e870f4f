//! Requests on names and attributes: lookup, forget, getattr, setattr,
//! readlink, mknod, mkdir, symlink, unlink, rmdir, rename, link, access.
use super::{FimFs, caller, errno, file_attr, guard};
use crate::sys;
use crate::union::{Entry, Ino, Make, SetAttr};
use fuser::{
    AccessFlags, BsdFileFlags, FileHandle, Generation, INodeNo, RenameFlags, ReplyAttr, ReplyData,
    ReplyEmpty, ReplyEntry, Request, TimeOrNow,
};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

pub(super) const GEN: Generation = Generation(0);

impl FimFs {
    /// Answers with `res`, cached as long as the engine says.
    pub(super) fn entry(&self, reply: ReplyEntry, res: crate::sys::Result<Entry>) {
        match res {
            Ok(e) => {
                let (attr, entry) = self.ttls(e.cache);
                reply.entry_with_ttls(&attr, &entry, &file_attr(&e.attr), GEN)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// unlink (`dir` false) and rmdir: the other names of a linked file
    /// get fresh attributes; with casefold, the other spellings the kernel
    /// cached are dropped.
    pub(super) fn remove(&self, parent: Ino, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let others = self.union.other_spellings(parent, name.as_bytes());
        match self.union.remove(parent, name.as_bytes(), dir) {
            Ok(sibling) => {
                reply.ok();
                self.forget_spellings(parent, others);
                if let Some(ino) = sibling {
                    self.invalidate_attr(ino);
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    pub(super) fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        how: Make,
        reply: ReplyEntry,
    ) {
        let who = caller(req);
        let res = self
            .union
            .make(Ino::from(parent), name.as_bytes(), how, who);
        self.entry(reply, res)
    }

    pub(super) fn on_lookup(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
    ) {
        guard("lookup", || {
            if self.tuning.panic_on_lookup.as_deref() == Some(name.as_bytes()) {
                panic!("fault injection: lookup of {name:?}");
            }
            match self.union.lookup(Ino::from(parent), name.as_bytes()) {
                Ok(e) => self.entry(reply, Ok(e)),
                // A negative entry (node 0): the kernel answers ENOENT
                // itself until it expires or the name is made through it.
                Err(sys::Errno::ENOENT) if !self.ttl.negative.is_zero() => {
                    reply.entry(&self.ttl.negative, &negative_attr(), GEN)
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    pub(super) fn on_forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guard("forget", || {
            if self.union.forget(Ino::from(ino), nlookup) {
                self.node_files.forget(Ino::from(ino));
            }
        })
    }

    pub(super) fn on_getattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        guard("getattr", || {
            let res = match self.union.getattr_entry(Ino::from(ino)) {
                // Unlinked while open: the handle still knows the file.
                Err(sys::Errno::ENOENT) if fh.is_some() => {
                    match fh.and_then(|f| self.handles.file(f.0)) {
                        Some(h) => match self.fd_of(&h) {
                            Ok(fd) => self.union.getattr_open(Ino::from(ino), fd.as_fd()),
                            Err(_) => Err(sys::Errno::ENOENT),
                        },
                        None => Err(sys::Errno::ENOENT),
                    }
                }
                other => other,
            };
            match res {
                Ok(e) => reply.attr(&self.ttls(e.cache).0, &file_attr(&e.attr)),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guard("setattr", || {
            let nothing = [mode, uid, gid].iter().all(Option::is_none)
                && size.is_none()
                && atime.is_none()
                && mtime.is_none();
            let set = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: atime.map(timespec),
                mtime: mtime.map(timespec),
                drop_set_id: drops_set_id(req, uid.is_some() || gid.is_some(), size, nothing),
            };
            // A handle on the upper truncates through its own fd.
            let h = fh
                .and_then(|f| self.handles.file(f.0))
                .filter(|h| h.on_upper());
            let fd = h.as_ref().and_then(|h| self.fd_of(h).ok());
            match self
                .union
                .setattr(Ino::from(ino), set, fd.as_ref().map(|f| f.as_fd()))
            {
                Ok(a) => reply.attr(&self.ttl.attr, &file_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    pub(super) fn on_readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guard("readlink", || match self.union.readlink(Ino::from(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let how = Make::Node {
            mode,
            rdev: rdev as u64,
        };
        guard("mknod", || self.make(req, parent, name, how, reply))
    }

    pub(super) fn on_mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        guard("mkdir", || {
            self.make(req, parent, name, Make::Dir { mode }, reply)
        })
    }

    pub(super) fn on_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let how = Make::Symlink {
            target: target.as_os_str().as_bytes().to_vec(),
        };
        guard("symlink", || self.make(req, parent, link_name, how, reply))
    }

    pub(super) fn on_unlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        guard("unlink", || {
            self.remove(Ino::from(parent), name, false, reply)
        })
    }

    pub(super) fn on_rmdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        guard("rmdir", || {
            self.remove(Ino::from(parent), name, true, reply)
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guard("rename", || {
            let from = self
                .union
                .other_spellings(Ino::from(parent), name.as_bytes());
            let to = self
                .union
                .other_spellings(Ino::from(newparent), newname.as_bytes());
            match self.union.rename(
                Ino::from(parent),
                name.as_bytes(),
                Ino::from(newparent),
                newname.as_bytes(),
                flags.bits(),
            ) {
                Ok(()) => {
                    reply.ok();
                    self.forget_spellings(Ino::from(parent), from);
                    self.forget_spellings(Ino::from(newparent), to);
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    pub(super) fn on_link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guard("link", || {
            let res = self
                .union
                .link(Ino::from(ino), Ino::from(newparent), newname.as_bytes());
            let ok = res.is_ok();
            self.entry(reply, res);
            // The source's cached link count and number are now stale.
            if ok {
                self.invalidate_attr(Ino::from(ino));
            }
        })
    }

    pub(super) fn on_access(
        &self,
        req: &Request,
        ino: INodeNo,
        mask: AccessFlags,
        reply: ReplyEmpty,
    ) {
        guard("access", || match self.union.getattr(Ino::from(ino)) {
            Ok(a) => match crate::union::access::check(
                &a,
                req.uid(),
                req.gid(),
                mask.bits(),
                self.union.is_read_only(),
            ) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(errno(e)),
        })
    }
}

pub(super) fn timespec(t: TimeOrNow) -> (i64, i64) {
    match t {
        TimeOrNow::Now => (0, libc::UTIME_NOW),
        TimeOrNow::SpecificTime(t) => match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if n == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - n)
                }
            }
        },
    }
}

/// Whether a SETATTR drops the set-ID bits, as the kernel asks it of a
/// daemon that handles them (`FUSE_HANDLE_KILLPRIV_V2`): a chown always
/// (`FATTR_KILL_SUIDGID`); a truncate, and the empty SETATTR the kernel
/// sends when a write removes privileges, only for a caller without
/// `CAP_FSETID`. fuser 0.18 passes neither that flag nor the caller's
/// capabilities, so a caller is taken to hold `CAP_FSETID` when it is
/// uid 0 (the kernel's flag itself is set only without the capability).
fn drops_set_id(req: &Request, chown: bool, size: Option<u64>, nothing: bool) -> bool {
    chown || (req.uid() != 0 && (size.is_some() || nothing))
}

/// The attributes of a negative entry: node 0, nothing else read.
pub(super) fn negative_attr() -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: std::time::UNIX_EPOCH,
        mtime: std::time::UNIX_EPOCH,
        ctime: std::time::UNIX_EPOCH,
        crtime: std::time::UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

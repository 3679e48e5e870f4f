//! `fuser::Filesystem` for `FimFs`: one thin method per request.
use super::{FimFs, errno, file_attr, file_type, guard};
use crate::sys;
use crate::union::{DirEntry, Kind};
use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

const GEN: Generation = Generation(0);

/// Capabilities asked for when the kernel offers them.
const WANTED: [InitFlags; 6] = [
    // Lookups and readdir in one directory run in parallel.
    InitFlags::FUSE_PARALLEL_DIROPS,
    InitFlags::FUSE_DO_READDIRPLUS,
    InitFlags::FUSE_READDIRPLUS_AUTO,
    // open(O_TRUNC) arrives as one request: no separate truncate, no data copy-up.
    InitFlags::FUSE_ATOMIC_O_TRUNC,
    InitFlags::FUSE_CACHE_SYMLINKS,
    InitFlags::FUSE_MAX_PAGES,
];

impl FimFs {
    /// The listing of a directory handle, with `.` and `..` first.
    fn snapshot(&self, ino: u64, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        let h = self.handles.dir(fh).ok_or(Errno::EBADF)?;
        let mut snap = h.snapshot.lock();
        if offset == 0 || snap.is_none() {
            let node = self.union.node(ino).map_err(errno)?;
            let parent = node.loc().parent.map(|p| p.ino).unwrap_or(ino);
            let mut all = vec![
                DirEntry {
                    name: b".".to_vec(),
                    ino,
                    kind: Kind::Dir,
                },
                DirEntry {
                    name: b"..".to_vec(),
                    ino: parent,
                    kind: Kind::Dir,
                },
            ];
            all.extend(self.union.list_dir(&node).map_err(errno)?);
            *snap = Some(Arc::new(all));
        }
        snap.clone().ok_or(Errno::EIO)
    }

    fn readdirplus_inner(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        reply: &mut ReplyDirectoryPlus,
    ) -> Result<(), Errno> {
        let entries = self.snapshot(ino, fh, offset)?;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let next = i as u64 + 1;
            if e.name == b"." || e.name == b".." {
                let Ok(a) = self.union.getattr(e.ino) else {
                    continue;
                };
                if reply.add(
                    INodeNo(e.ino),
                    next,
                    OsStr::from_bytes(&e.name),
                    &self.ttl.entry,
                    &file_attr(&a),
                    GEN,
                ) {
                    break;
                }
                continue;
            }
            // Each entry handed out counts as a lookup; one that does not
            // fit is forgotten again.
            let Ok((node, a)) = self.union.lookup(ino, &e.name) else {
                continue;
            };
            if reply.add(
                INodeNo(node.ino),
                next,
                OsStr::from_bytes(&e.name),
                &self.ttl.entry,
                &file_attr(&a),
                GEN,
            ) {
                self.union.forget(node.ino, 1);
                break;
            }
        }
        Ok(())
    }
}

impl Filesystem for FimFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for f in WANTED {
            if config.add_capabilities(f).is_err() {
                tracing::debug!("kernel lacks {f:?}");
            }
        }
        let _ = config.set_max_write(self.tuning.max_write);
        if let Err(max) = config.set_max_readahead(self.tuning.max_readahead) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(self.tuning.max_background);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guard("lookup", || {
            match self.union.lookup(parent.0, name.as_bytes()) {
                Ok((_, a)) => {
                    reply.entry_with_ttls(&self.ttl.attr, &self.ttl.entry, &file_attr(&a), GEN)
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guard("forget", || self.union.forget(ino.0, nlookup))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guard("getattr", || match self.union.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl.attr, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guard("readlink", || match self.union.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guard("open", || match self.union.open(ino.0, flags.0) {
            Ok(fd) => {
                let fh = self.handles.add_file(fd, ino.0);
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(errno(e)),
        })
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guard("read", || {
            let Some(h) = self.handles.file(fh.0) else {
                return reply.error(Errno::EBADF);
            };
            let mut buf = vec![0u8; size as usize];
            let mut done = 0;
            while done < buf.len() {
                match sys::pread(h.fd.as_fd(), &mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return reply.error(errno(e)),
                }
            }
            reply.data(&buf[..done])
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guard("release", || {
            self.handles.remove_file(fh.0);
            reply.ok()
        })
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guard("fsync", || match self.handles.file(fh.0) {
            Some(h) => match sys::fsync(h.fd.as_fd(), datasync) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            },
            None => reply.error(Errno::EBADF),
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guard("opendir", || match self.union.opendir(ino.0) {
            Ok(_) => reply.opened(FileHandle(self.handles.add_dir(ino.0)), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guard("readdir", || {
            let entries = match self.snapshot(ino.0, fh.0, offset) {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                if reply.add(
                    INodeNo(e.ino),
                    i as u64 + 1,
                    file_type(e.kind),
                    OsStr::from_bytes(&e.name),
                ) {
                    break;
                }
            }
            reply.ok()
        })
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        guard("readdirplus", || {
            match self.readdirplus_inner(ino.0, fh.0, offset, &mut reply) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        })
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.remove_dir(fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guard("statfs", || match self.union.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namelen as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guard("getxattr", || {
            match self.union.getxattr(ino.0, name.as_bytes()) {
                Ok(v) => xattr_reply(reply, &v, size),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guard("listxattr", || match self.union.listxattr(ino.0) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        guard("access", || match self.union.getattr(ino.0) {
            Ok(a) => match super::access::check(
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

/// getxattr/listxattr answer with the size when asked for 0 bytes.
fn xattr_reply(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(v)
    }
}

//! `fuser::Filesystem` for `FimFs`: one thin method per request.
use super::{FimFs, errno, file_attr, file_type, guard};
use crate::sys;
use crate::union::{Caller, Make, SetAttr};
use crate::union::{DirEntry, InodeFlags, ListedDir};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const GEN: Generation = Generation(0);

/// Capabilities asked for when the kernel offers them.
const WANTED: [InitFlags; 7] = [
    // Lookups and readdir in one directory run in parallel.
    InitFlags::FUSE_PARALLEL_DIROPS,
    InitFlags::FUSE_DO_READDIRPLUS,
    InitFlags::FUSE_READDIRPLUS_AUTO,
    // open(O_TRUNC) arrives as one request: no separate truncate, no data copy-up.
    InitFlags::FUSE_ATOMIC_O_TRUNC,
    InitFlags::FUSE_CACHE_SYMLINKS,
    InitFlags::FUSE_MAX_PAGES,
    // Cached pages are dropped when a refreshed attribute shows new mtime/size.
    InitFlags::FUSE_AUTO_INVAL_DATA,
];

impl FimFs {
    /// The fd to read a handle from: reopened on the upper once the file
    /// has been copied up behind a read-only handle.
    fn read_fd(&self, fh: u64) -> Result<Arc<std::os::fd::OwnedFd>, Errno> {
        let h = self.handles.file(fh).ok_or(Errno::EBADF)?;
        if h.fd().is_some() && !h.on_upper() && self.union.is_upper(h.ino) {
            let (fd, upper) = self.union.open(h.ino, libc::O_RDONLY).map_err(errno)?;
            let fd = Arc::new(fd);
            h.replace(fd.clone(), upper);
            return Ok(fd);
        }
        self.fd_of(&h)
    }

    /// The handle's fd; a lazy handle (read-only, on a lower, made under fd
    /// pressure) opens its file again, on the upper once copied up.
    fn fd_of(&self, h: &super::handles::OpenFile) -> Result<Arc<std::os::fd::OwnedFd>, Errno> {
        match h.fd() {
            Some(fd) => Ok(fd),
            None => self
                .union
                .open(h.ino, libc::O_RDONLY)
                .map(|(fd, _)| Arc::new(fd))
                .map_err(errno),
        }
    }

    fn entry(&self, reply: ReplyEntry, res: crate::sys::Result<crate::union::Attr>) {
        match res {
            Ok(a) => reply.entry_with_ttls(&self.ttl.attr, &self.ttl.entry, &file_attr(&a), GEN),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// unlink (`dir` false) and rmdir: the other names of a linked file
    /// get fresh attributes; with casefold, the other spellings the kernel
    /// cached are dropped.
    fn remove(&self, parent: u64, name: &OsStr, dir: bool, reply: ReplyEmpty) {
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

    fn make(&self, req: &Request, parent: INodeNo, name: &OsStr, how: Make, reply: ReplyEntry) {
        let who = Caller {
            uid: req.uid(),
            gid: req.gid(),
        };
        let res = self.union.make(parent.0, name.as_bytes(), how, who);
        self.entry(reply, res.map(|(_, a, _)| a))
    }

    /// The listing of a directory handle (see `Union::snapshot`), taken
    /// at offset 0 and kept for the handle's later reads.
    fn snapshot(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        dir: Option<&ListedDir>,
    ) -> Result<Arc<Vec<DirEntry>>, Errno> {
        let h = self.handles.dir(fh).ok_or(Errno::EBADF)?;
        let mut snap = h.snapshot.lock();
        if offset == 0 || snap.is_none() {
            *snap = Some(Arc::new(self.union.snapshot(ino, dir).map_err(errno)?));
        }
        snap.clone().ok_or(Errno::EIO)
    }

    /// `open(O_CREAT)` of a name that appeared after the kernel's lookup
    /// (see `Union::open_made_meanwhile`).
    fn open_made_meanwhile(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let who = Caller {
            uid: req.uid(),
            gid: req.gid(),
        };
        match self
            .union
            .open_made_meanwhile(parent, name.as_bytes(), flags, who)
        {
            Ok((node, a, fd, upper)) => self.reply_created(reply, &node, Arc::new(fd), upper, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Answers a create (or an `O_CREAT` open of a file that appeared
    /// meanwhile) with a new handle on `fd`, in passthrough where the io
    /// mode of the node allows it.
    fn reply_created(
        &self,
        reply: ReplyCreate,
        node: &Arc<crate::union::node::Node>,
        fd: Arc<std::os::fd::OwnedFd>,
        upper: bool,
        a: &crate::union::Attr,
    ) {
        if upper {
            node.share_pin(&fd);
        }
        let fh = self.handles.add_file(Some(fd.clone()), node.ino, upper);
        let (ttl, fa, flags) = (self.ttl.entry, file_attr(a), open_flags(upper));
        match self
            .io
            .open(fh, node.ino, upper, || reply.open_backing(fd.as_fd()))
        {
            Some(b) => reply.created_passthrough(&ttl, &fa, GEN, FileHandle(fh), flags, &b),
            None => reply.created(&ttl, &fa, GEN, FileHandle(fh), flags),
        }
    }

    fn readdirplus_inner(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        reply: &mut ReplyDirectoryPlus,
    ) -> Result<(), Errno> {
        let dir = self.union.listed_dir(ino).map_err(errno)?;
        let entries = self.snapshot(ino, fh, offset, Some(&dir))?;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            // Each entry but `.` and `..` counts as a lookup; one that does
            // not fit is forgotten again.
            let dots = e.name == b"." || e.name == b"..";
            let found = match dots {
                true => self.union.getattr(e.ino).map(|a| (a, true)),
                false => self
                    .union
                    .lookup_listed(&dir, &e.name)
                    .map(|(n, a)| (a, n.state().upper)),
            };
            let Ok((a, upper)) = found else { continue };
            let (attr_ttl, entry_ttl) = self.ttl_of(upper);
            let name = OsStr::from_bytes(&e.name);
            if reply.add(
                INodeNo(a.ino),
                i as u64 + 1,
                name,
                &entry_ttl.min(attr_ttl),
                &file_attr(&a),
                GEN,
            ) {
                if !dots {
                    self.union.forget(a.ino, 1);
                }
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
        // Passthrough only when backing files can be registered (probed
        // before asking); depth 1: the upper is not itself stacked, and
        // the mount can still be a layer of a kernel overlay.
        // The kernel caches ACLs (ls -l asks for system.posix_acl_access of
        // every file) and enforces them, as the kernel overlay does.
        if self.tuning.posix_acl && config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            tracing::debug!("kernel lacks FUSE_POSIX_ACL");
        }
        if self.tuning.passthrough {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) if config.set_max_stack_depth(1).is_ok() => self.io.enable(),
                r => tracing::info!("no passthrough: {r:?}"),
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guard("lookup", || {
            if self.tuning.panic_on_lookup.as_deref() == Some(name.as_bytes()) {
                panic!("fault injection: lookup of {name:?}");
            }
            match self.union.lookup_spelled(parent.0, name.as_bytes()) {
                Ok((node, a, exact)) => {
                    let (attr, mut entry) = self.ttl_of(node.state().upper);
                    // Casefold: another spelling of a name is looked up
                    // again on every use, so a rename or unlink through
                    // the real name never leaves it stale (the kernel
                    // updates only the spelling a call used).
                    if !exact {
                        entry = Duration::ZERO;
                    }
                    reply.entry_with_ttls(&attr, &entry, &file_attr(&a), GEN)
                }
                // A negative entry (node 0): the kernel answers ENOENT
                // itself until it expires or the name is made through it.
                Err(sys::Errno::ENOENT) if !self.ttl.negative.is_zero() => {
                    reply.entry(&self.ttl.negative, &negative_attr(), GEN)
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guard("forget", || self.union.forget(ino.0, nlookup))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        guard("getattr", || {
            let res = match self.union.getattr(ino.0) {
                // Unlinked while open: the handle still knows the file.
                Err(sys::Errno::ENOENT) if fh.is_some() => {
                    match fh.and_then(|f| self.handles.file(f.0)) {
                        Some(h) => match self.fd_of(&h) {
                            Ok(fd) => self.union.getattr_open(ino.0, fd.as_fd()),
                            Err(_) => Err(sys::Errno::ENOENT),
                        },
                        None => Err(sys::Errno::ENOENT),
                    }
                }
                other => other,
            };
            match res {
                Ok(a) => reply.attr(&self.ttl_of(self.union.is_upper(ino.0)).0, &file_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
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
            Ok((fd, upper)) => {
                let fd = Arc::new(fd);
                if upper && let Ok(node) = self.union.node(ino.0) {
                    node.share_pin(&fd);
                }
                let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY;
                let lazy = !upper && read_only && self.handles.open_files() >= self.lazy_above;
                let fh = self
                    .handles
                    .add_file((!lazy).then_some(fd.clone()), ino.0, upper);
                let flags = open_flags(upper);
                match self
                    .io
                    .open(fh, ino.0, upper, || reply.open_backing(fd.as_fd()))
                {
                    Some(b) => reply.opened_passthrough(FileHandle(fh), flags, &b),
                    None => reply.opened(FileHandle(fh), flags),
                }
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
            let fd = match self.read_fd(fh.0) {
                Ok(fd) => fd,
                Err(e) => return reply.error(e),
            };
            let mut buf = vec![0u8; size as usize];
            let mut done = 0;
            while done < buf.len() {
                match sys::pread(fd.as_fd(), &mut buf[done..], offset + done as u64) {
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
        super::stats::count("flush");
        // Nothing to do at close (writes are not buffered here, locks are
        // the kernel's): ENOSYS makes the kernel stop sending FLUSH, one
        // round trip less per close.
        reply.error(Errno::ENOSYS)
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
            self.io.release(fh.0);
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
            Some(h) => match self
                .fd_of(&h)
                .and_then(|fd| sys::fsync(fd.as_fd(), datasync).map_err(errno))
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            None => reply.error(Errno::EBADF),
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guard("opendir", || match self.union.opendir_cached(ino.0) {
            Ok((_, keep)) => {
                let mut flags = FopenFlags::FOPEN_CACHE_DIR;
                if keep {
                    flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(self.handles.add_dir()), flags)
            }
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
            let entries = match self.snapshot(ino.0, fh.0, offset, None) {
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
        super::stats::count("releasedir");
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
                Err(crate::sys::Errno::ENODATA)
                    if self.tuning.no_selinux && name.as_bytes() == b"security.selinux" =>
                {
                    reply.error(Errno::EOPNOTSUPP)
                }
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

    fn setattr(
        &self,
        _req: &Request,
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
            let set = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: atime.map(timespec),
                mtime: mtime.map(timespec),
            };
            // A handle on the upper truncates through its own fd.
            let h = fh
                .and_then(|f| self.handles.file(f.0))
                .filter(|h| h.on_upper());
            let fd = h.as_ref().and_then(|h| self.fd_of(h).ok());
            match self
                .union
                .setattr(ino.0, set, fd.as_ref().map(|f| f.as_fd()))
            {
                Ok(a) => reply.attr(&self.ttl.attr, &file_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn mknod(
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

    fn mkdir(
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

    fn symlink(
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

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guard("create", || {
            let who = Caller {
                uid: req.uid(),
                gid: req.gid(),
            };
            let how = Make::File { mode, flags };
            match self.union.make(parent.0, name.as_bytes(), how, who) {
                Ok((node, a, Some(fd))) => self.reply_created(reply, &node, fd, true, &a),
                Ok((node, _, None)) => {
                    self.union.forget(node.ino, 1);
                    reply.error(Errno::EIO)
                }
                Err(sys::Errno::EEXIST) if flags & libc::O_EXCL == 0 => {
                    self.open_made_meanwhile(req, parent.0, name, flags, reply)
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("unlink", || self.remove(parent.0, name, false, reply))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("rmdir", || self.remove(parent.0, name, true, reply))
    }

    fn rename(
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
            let from = self.union.other_spellings(parent.0, name.as_bytes());
            let to = self.union.other_spellings(newparent.0, newname.as_bytes());
            match self.union.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags.bits(),
            ) {
                Ok(()) => {
                    reply.ok();
                    self.forget_spellings(parent.0, from);
                    self.forget_spellings(newparent.0, to);
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guard("link", || {
            let res = self.union.link(ino.0, newparent.0, newname.as_bytes());
            let ok = res.is_ok();
            self.entry(reply, res.map(|(_, a)| a));
            // The source's cached link count and number are now stale.
            if ok {
                self.invalidate_attr(ino.0);
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guard("write", || {
            let Some(h) = self.handles.file(fh.0) else {
                return reply.error(Errno::EBADF);
            };
            // O_APPEND: the kernel took the offset from the size it has
            // cached, which another daemon on the same upper (or a writer
            // behind the mount) may have outgrown. An O_APPEND fd of the
            // backing file writes at its real end (pwrite ignores the
            // offset there), so that no one's record is overwritten. Not
            // for page-cache writeback, which writes pages back in place.
            let appending = flags.0 & libc::O_APPEND != 0
                && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
            let fd = match appending.then(|| h.append_fd()).flatten() {
                Some(fd) => fd,
                None => match self.fd_of(&h) {
                    Ok(fd) => fd,
                    Err(e) => return reply.error(e),
                },
            };
            let mut done = 0;
            while done < data.len() {
                match sys::pwrite(fd.as_fd(), &data[done..], offset + done as u64) {
                    Ok(n) => done += n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) if done == 0 => return reply.error(errno(e)),
                    Err(_) => break,
                }
            }
            reply.written(done as u32)
        })
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guard("fallocate", || match self.handles.file(fh.0) {
            Some(h) => match self
                .fd_of(&h)
                .and_then(|fd| sys::fallocate(fd.as_fd(), mode, offset, length).map_err(errno))
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            None => reply.error(Errno::EBADF),
        })
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        guard("lseek", || match self.read_fd(fh.0) {
            Ok(fd) => match sys::lseek(fd.as_fd(), offset, whence) {
                Ok(o) => reply.offset(o),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        })
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        guard("copy_file_range", || {
            let (Ok(i), Some(Ok(o))) = (
                self.read_fd(fh_in.0),
                self.handles.file(fh_out.0).map(|h| self.fd_of(&h)),
            ) else {
                return reply.error(Errno::EBADF);
            };
            let len = len.min(u32::MAX as u64) as usize;
            match sys::copy_file_range(i.as_fd(), offset_in, o.as_fd(), offset_out, len) {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guard("setxattr", || {
            match self.union.setxattr(ino.0, name.as_bytes(), value, flags) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("removexattr", || {
            match self.union.removexattr(ino.0, name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    /// `lsattr` and `chattr` (the inode-flag calls); every other command is
    /// not for a file here: ENOTTY at once, as on a plain file (Python asks
    /// TCGETS of every file it opens).
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        guard("ioctl", || {
            let Some((like, set)) = flags_ioctl(cmd, in_data) else {
                tracing::debug!(cmd, "ioctl: not for a file here");
                return reply.error(Errno::ENOTTY);
            };
            let res = match set {
                true => self.union.set_inode_flags(ino.0, like).map(|()| Vec::new()),
                false => self.union.inode_flags(ino.0, like).map(|f| match f {
                    InodeFlags::Word(w) => w.to_ne_bytes().to_vec(),
                    InodeFlags::Fsx(x) => x.to_vec(),
                }),
            };
            match res {
                Ok(mut out) => {
                    out.truncate(out_size as usize);
                    reply.ioctl(0, &out);
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        guard("access", || match self.union.getattr(ino.0) {
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

/// The inode-flag ioctl `cmd` (the flags word or `struct fsxattr`, read
/// or set), with the value to set taken from `input`; None for any other
/// command, or a setter without its argument.
fn flags_ioctl(cmd: u32, input: &[u8]) -> Option<(InodeFlags, bool)> {
    let is = |c: libc::Ioctl| cmd == c as u32;
    if is(libc::FS_IOC_GETFLAGS) || is(libc::FS_IOC32_GETFLAGS) {
        return Some((InodeFlags::Word(0), false));
    }
    if cmd == sys::FS_IOC_FSGETXATTR {
        return Some((InodeFlags::Fsx([0; sys::FSXATTR_SIZE]), false));
    }
    if is(libc::FS_IOC_SETFLAGS) || is(libc::FS_IOC32_SETFLAGS) {
        let w = u32::from_ne_bytes(input.get(..4)?.try_into().ok()?);
        return Some((InodeFlags::Word(w), true));
    }
    if cmd == sys::FS_IOC_FSSETXATTR {
        let x = input.get(..sys::FSXATTR_SIZE)?.try_into().ok()?;
        return Some((InodeFlags::Fsx(x), true));
    }
    None
}

fn timespec(t: TimeOrNow) -> (i64, i64) {
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

/// Open flags of a file handle: a lower file never changes, so its cached
/// pages stay valid across opens; an upper file may change behind the mount.
fn open_flags(upper: bool) -> FopenFlags {
    match upper {
        true => FopenFlags::empty(),
        false => FopenFlags::FOPEN_KEEP_CACHE,
    }
}

/// The attributes of a negative entry: node 0, nothing else read.
fn negative_attr() -> fuser::FileAttr {
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

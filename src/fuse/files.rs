//! Requests on open files: open, create, read, write, flush, release,
//! fsync, fallocate, lseek, copy_file_range, and the inode-flag ioctls.
use super::entries::GEN;
use super::{FimFs, errno, file_attr, guard};
use crate::sys;
use crate::union::InodeFlags;
use crate::union::{Caller, Ino, Make};
use fuser::{
    CopyFileRangeFlags, Errno, FileHandle, FopenFlags, INodeNo, IoctlFlags, LockOwner, OpenFlags,
    ReplyCreate, ReplyData, ReplyEmpty, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyWrite, Request,
    WriteFlags,
};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

impl FimFs {
    /// The fd to read a handle from: reopened on the upper once the file
    /// has been copied up behind a read-only handle.
    pub(super) fn read_fd(&self, fh: u64) -> Result<Arc<std::os::fd::OwnedFd>, Errno> {
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
    pub(super) fn fd_of(
        &self,
        h: &super::handles::OpenFile,
    ) -> Result<Arc<std::os::fd::OwnedFd>, Errno> {
        match h.fd() {
            Some(fd) => Ok(fd),
            None => self
                .union
                .open(h.ino, libc::O_RDONLY)
                .map(|(fd, _)| Arc::new(fd))
                .map_err(errno),
        }
    }

    /// `open(O_CREAT)` of a name that appeared after the kernel's lookup
    /// (see `Union::open_made_meanwhile`).
    pub(super) fn open_made_meanwhile(
        &self,
        req: &Request,
        parent: Ino,
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
            Ok((node, a, fd, upper)) => self.reply_created(reply, node, Arc::new(fd), upper, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Answers a create (or an `O_CREAT` open of a file that appeared
    /// meanwhile) with a new handle on `fd`, in passthrough where the io
    /// mode of the node allows it.
    pub(super) fn reply_created(
        &self,
        reply: ReplyCreate,
        ino: Ino,
        fd: Arc<std::os::fd::OwnedFd>,
        upper: bool,
        a: &crate::union::Attr,
    ) {
        if upper {
            self.union.share_pin(ino, &fd);
        }
        let fh = self.handles.add_file(Some(fd.clone()), ino, upper);
        let (ttl, fa, flags) = (self.ttl.entry, file_attr(a), open_flags(upper));
        match self
            .io
            .open(fh, ino, upper, || reply.open_backing(fd.as_fd()))
        {
            Some(b) => reply.created_passthrough(&ttl, &fa, GEN, FileHandle(fh), flags, &b),
            None => reply.created(&ttl, &fa, GEN, FileHandle(fh), flags),
        }
    }

    pub(super) fn on_open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guard("open", || match self.union.open(Ino::from(ino), flags.0) {
            Ok((fd, upper)) => {
                let fd = Arc::new(fd);
                if upper {
                    self.union.share_pin(Ino::from(ino), &fd);
                }
                let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY;
                let lazy = !upper && read_only && self.handles.open_files() >= self.lazy_above;
                let fh =
                    self.handles
                        .add_file((!lazy).then_some(fd.clone()), Ino::from(ino), upper);
                let flags = open_flags(upper);
                match self
                    .io
                    .open(fh, Ino::from(ino), upper, || reply.open_backing(fd.as_fd()))
                {
                    Some(b) => reply.opened_passthrough(FileHandle(fh), flags, &b),
                    None => reply.opened(FileHandle(fh), flags),
                }
            }
            Err(e) => reply.error(errno(e)),
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_read(
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

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_write(
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

    pub(super) fn on_flush(
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

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_release(
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

    pub(super) fn on_fsync(
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

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_fallocate(
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

    pub(super) fn on_lseek(
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

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_copy_file_range(
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

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_create(
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
            match self
                .union
                .make(Ino::from(parent), name.as_bytes(), how, who)
            {
                Ok((node, a, Some(fd))) => self.reply_created(reply, node, fd, true, &a),
                Ok((node, _, None)) => {
                    self.union.forget(node, 1);
                    reply.error(Errno::EIO)
                }
                Err(sys::Errno::EEXIST) if flags & libc::O_EXCL == 0 => {
                    self.open_made_meanwhile(req, Ino::from(parent), name, flags, reply)
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    /// `lsattr` and `chattr` (the inode-flag calls); every other command is
    /// not for a file here: ENOTTY at once, as on a plain file (Python asks
    /// TCGETS of every file it opens).
    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_ioctl(
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
                true => self
                    .union
                    .set_inode_flags(Ino::from(ino), like)
                    .map(|()| Vec::new()),
                false => self
                    .union
                    .inode_flags(Ino::from(ino), like)
                    .map(|f| match f {
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
}

/// The inode-flag ioctl `cmd` (the flags word or `struct fsxattr`, read
/// or set), with the value to set taken from `input`; None for any other
/// command, or a setter without its argument.
pub(super) fn flags_ioctl(cmd: u32, input: &[u8]) -> Option<(InodeFlags, bool)> {
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

/// Open flags of a file handle: a lower file never changes, so its cached
/// pages stay valid across opens; an upper file may change behind the mount.
pub(super) fn open_flags(upper: bool) -> FopenFlags {
    match upper {
        true => FopenFlags::empty(),
        false => FopenFlags::FOPEN_KEEP_CACHE,
    }
}

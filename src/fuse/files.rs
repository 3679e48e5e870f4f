//! Requests on open files: open, create, read, write, flush, release,
//! fsync, fallocate, lseek, copy_file_range, and the inode-flag ioctls.
use super::entries::GEN;
use super::handles::OpenFile;
use super::nodeio::NO_HANDLE;
use super::{FimFs, caller, errno, file_attr, guard};
use crate::layer::File;
use crate::sys;
use crate::union::InodeFlags;
use crate::union::{Created, Ino, Opened};
use fuser::{
    CopyFileRangeFlags, Errno, FileHandle, FopenFlags, INodeNo, IoctlFlags, LockOwner, OpenFlags,
    ReplyCreate, ReplyData, ReplyEmpty, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyWrite, Request,
    WriteFlags,
};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

impl FimFs {
    /// The file to read a handle from (handle 0: the node's, see `nodeio`):
    /// reopened on the upper once the node has been copied up behind a
    /// handle opened on a lower.
    pub(super) fn read_file(&self, ino: Ino, fh: u64) -> Result<Arc<File>, Errno> {
        let h = self.handle(ino, fh, false)?;
        if h.left_behind() {
            let opened = self.union.open(h.ino, libc::O_RDONLY).map_err(errno)?;
            let file = Arc::new(opened.file);
            h.replace(file.clone(), opened.upper);
            return Ok(file);
        }
        self.file_of(&h)
    }

    /// The handle's file; a lazy handle (read-only, on a lower, made under
    /// fd pressure) opens its file again, on the upper once copied up.
    pub(super) fn file_of(&self, h: &OpenFile) -> Result<Arc<File>, Errno> {
        match h.file() {
            Some(file) => Ok(file),
            None => self
                .union
                .open(h.ino, libc::O_RDONLY)
                .map(|o| Arc::new(o.file))
                .map_err(errno),
        }
    }

    /// The handle's fd, for the calls only an fd answers (writes, sync,
    /// fallocate, fstat); EBADF for a lower file without one, which is
    /// read-only.
    pub(super) fn fd_of(&self, h: &OpenFile) -> Result<Arc<OwnedFd>, Errno> {
        self.file_of(h)?.shared_fd().cloned().ok_or(Errno::EBADF)
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
        let who = caller(req);
        match self
            .union
            .open_made_meanwhile(parent, name.as_bytes(), flags, who)
        {
            Ok(created) => self.reply_created(reply, created, flags & libc::O_ACCMODE),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// A new handle on `opened`, a file of node `ino`; an upper file's fd
    /// pins the node's upper inode. `lazy`: a read-only lower handle under
    /// fd pressure, which holds no fd. Returns the handle and the fd to
    /// register for passthrough (a settled file's: see `Opened::settled`).
    fn add_handle(&self, ino: Ino, opened: Opened, lazy: bool) -> (u64, Option<Arc<OwnedFd>>) {
        let backing = opened.file.shared_fd().filter(|_| opened.settled).cloned();
        if let Some(fd) = backing.as_ref().filter(|_| opened.upper) {
            self.union.share_pin(ino, fd);
        }
        let lazy = lazy && !opened.upper && opened.file.fd().is_some();
        let file = (!lazy).then(|| Arc::new(opened.file));
        let fh = self.handles.add_file(ino, file, opened.upper, opened.watch);
        (fh, backing)
    }

    /// Answers a create (or an `O_CREAT` open of a file that appeared
    /// meanwhile) with a new handle, in passthrough where the io mode of
    /// the node allows it.
    ///
    /// Without open requests the kernel sends no `RELEASE` either, also
    /// for a created file: the file (opened with access mode `acc`) becomes
    /// its node's (see `nodeio`), and the reply carries no handle.
    pub(super) fn reply_created(&self, reply: ReplyCreate, created: Created, acc: i32) {
        let Created { entry, opened } = created;
        let (ttl, fa) = (self.ttls(entry.cache).1, file_attr(&entry.attr));
        if self.no_open {
            self.node_files_adopt(entry.ino, opened, acc);
            let flags = FopenFlags::FOPEN_KEEP_CACHE;
            return reply.created(&ttl, &fa, GEN, FileHandle(NO_HANDLE), flags);
        }
        let keep_cache = opened.keep_cache;
        let (fh, backing) = self.add_handle(entry.ino, opened, false);
        let settled = backing.as_ref().map(|fd| fd.as_fd());
        let pt = self
            .io
            .open(fh, entry.ino, settled, |fd| reply.open_backing(fd));
        let flags = open_flags(keep_cache, pt.is_some());
        match pt {
            Some(b) => reply.created_passthrough(&ttl, &fa, GEN, FileHandle(fh), flags, &b),
            None => reply.created(&ttl, &fa, GEN, FileHandle(fh), flags),
        }
    }

    pub(super) fn on_open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            // The kernel opens this and every later file without asking.
            return guard("open", || reply.error(Errno::ENOSYS));
        }
        guard("open", || match self.union.open(Ino::from(ino), flags.0) {
            Ok(opened) => {
                // O_TRUNC by a caller without CAP_FSETID (see
                // `entries::drops_set_id`): the set-ID bits go.
                if flags.0 & libc::O_TRUNC != 0 && req.uid() != 0 {
                    let _ = self.union.drop_set_id(Ino::from(ino), opened.file.fd());
                }
                let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY;
                let lazy = read_only && self.handles.open_files() >= self.lazy_above;
                let keep_cache = opened.keep_cache;
                let (fh, backing) = self.add_handle(Ino::from(ino), opened, lazy);
                let settled = backing.as_ref().map(|fd| fd.as_fd());
                let pt = self
                    .io
                    .open(fh, Ino::from(ino), settled, |fd| reply.open_backing(fd));
                let flags = open_flags(keep_cache, pt.is_some());
                match pt {
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
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guard("read", || {
            let mut buf = vec![0u8; size as usize];
            match self
                .read_file(Ino::from(ino), fh.0)
                .and_then(|f| read_full(&f, offset, &mut buf).map_err(errno))
            {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(e),
            }
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guard("write", || {
            let h = match self.handle(Ino::from(ino), fh.0, true) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
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
                    // No progress: a short write, not a spin.
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) if done == 0 => return reply.error(errno(e)),
                    Err(_) => break,
                }
            }
            // The kernel asks it of every write by a caller without
            // CAP_FSETID; a daemon without it had them dropped by the
            // upper's filesystem already (no `fstat` per write then).
            if self.keeps_set_id && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                let _ = self.union.drop_set_id(Ino::from(ino), Some(fd.as_fd()));
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
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // A lower file without an fd is read-only: nothing to sync. So is
        // a lower file read without a handle.
        guard("fsync", || {
            let res = self
                .handle(Ino::from(ino), fh.0, false)
                .and_then(|h| self.file_of(&h))
                .and_then(|f| match f.fd() {
                    Some(fd) => sys::fsync(fd, datasync).map_err(errno),
                    None => Ok(()),
                });
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guard("fallocate", || {
            let res = self
                .handle(Ino::from(ino), fh.0, true)
                .and_then(|h| self.fd_of(&h))
                .and_then(|fd| sys::fallocate(fd.as_fd(), mode, offset, length).map_err(errno));
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        })
    }

    pub(super) fn on_lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        guard("lseek", || {
            let res = self
                .read_file(Ino::from(ino), fh.0)
                .and_then(|f| match f.fd() {
                    Some(fd) => sys::lseek(fd, offset, whence).map_err(errno),
                    // No holes to find in a file without an fd: all data.
                    None => self
                        .union
                        .getattr(Ino::from(ino))
                        .map_err(errno)
                        .and_then(|a| seek_all_data(a.size, offset, whence)),
                });
            match res {
                Ok(o) => reply.offset(o),
                Err(e) => reply.error(e),
            }
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        guard("copy_file_range", || {
            let i = self.read_file(Ino::from(ino_in), fh_in.0);
            let o = self
                .handle(Ino::from(ino_out), fh_out.0, true)
                .and_then(|h| self.fd_of(&h));
            let (i, o) = match (i, o) {
                (Ok(i), Ok(o)) => (i, o),
                (Err(e), _) | (_, Err(e)) => return reply.error(e),
            };
            let len = len.min(u32::MAX as u64) as usize;
            let res = match i.fd() {
                Some(fd) => sys::copy_file_range(fd, offset_in, o.as_fd(), offset_out, len),
                None => copy_through_reads(&i, offset_in, o.as_fd(), offset_out, len),
            };
            match res {
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
            let who = caller(req);
            // A node's file serves reads and writes (see `nodeio`); making
            // the file grants both, whatever its mode.
            let how = match self.no_open {
                true => (flags & !libc::O_ACCMODE) | libc::O_RDWR,
                false => flags,
            };
            match self
                .union
                .create(Ino::from(parent), name.as_bytes(), (mode, how), who)
            {
                Ok(created) => self.reply_created(reply, created, how & libc::O_ACCMODE),
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

/// Open flags of a file handle: whether the kernel may keep the pages it
/// cached (the engine's `Opened::keep_cache`). A handle in passthrough has
/// no pages of its own (they are the layer file's), and the kernel refuses
/// its open if a page-cache flag comes with it.
pub(super) fn open_flags(keep_cache: bool, passthrough: bool) -> FopenFlags {
    match keep_cache && !passthrough {
        true => FopenFlags::FOPEN_KEEP_CACHE,
        false => FopenFlags::empty(),
    }
}

/// Reads `buf.len()` bytes of `file` at `offset`, fewer only at its end.
fn read_full(file: &File, offset: u64, buf: &mut [u8]) -> sys::Result<usize> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match file.read_at(offset + done as u64, rest) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(sys::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `SEEK_DATA`/`SEEK_HOLE` (the only ones the kernel sends) in a file of
/// `size` bytes that is data throughout.
fn seek_all_data(size: u64, offset: i64, whence: i32) -> Result<i64, Errno> {
    let size = i64::try_from(size).map_err(|_| Errno::EOVERFLOW)?;
    match whence {
        _ if offset < 0 => Err(Errno::EINVAL),
        _ if offset >= size => Err(Errno::ENXIO),
        libc::SEEK_DATA => Ok(offset),
        libc::SEEK_HOLE => Ok(size),
        _ => Err(Errno::EINVAL),
    }
}

/// `copy_file_range` from a file without an fd: up to `len` bytes, at
/// most one buffer's worth (a short copy, which the caller repeats).
fn copy_through_reads(
    from: &File,
    off_in: u64,
    to: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> sys::Result<usize> {
    let mut buf = vec![0u8; len.min(COPY_BUFFER)];
    let n = read_full(from, off_in, &mut buf)?;
    let mut done = 0;
    while let Some(rest) = buf.get(done..n).filter(|r| !r.is_empty()) {
        match sys::pwrite(to, rest, off_out + done as u64) {
            Ok(w) => done += w,
            Err(sys::Errno::EINTR) => continue,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// Bytes one `copy_file_range` from a file without an fd copies at most.
const COPY_BUFFER: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_in_a_file_without_holes() {
        let (data, hole) = (libc::SEEK_DATA, libc::SEEK_HOLE);
        // (size, offset, whence, answer)
        let rows: &[(u64, i64, i32, Result<i64, Errno>)] = &[
            (10, 0, data, Ok(0)),
            (10, 4, data, Ok(4)),
            (10, 4, hole, Ok(10)),
            (10, 10, data, Err(Errno::ENXIO)),
            (10, 10, hole, Err(Errno::ENXIO)),
            (0, 0, data, Err(Errno::ENXIO)),
            (10, -1, data, Err(Errno::EINVAL)),
            (10, 0, libc::SEEK_END, Err(Errno::EINVAL)),
        ];
        for &(size, off, whence, want) in rows {
            let got = seek_all_data(size, off, whence);
            assert_eq!(got, want, "size {size} offset {off} whence {whence}");
        }
    }

    /// What a handle reads and copies through `File::read_at`, the path
    /// of a lower file without an fd.
    #[test]
    fn reads_and_copies_through_read_at() {
        let dir = std::env::temp_dir().join(format!("fimfs-fileio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch");
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("src"), &data).expect("src");
        let src = File::host(std::fs::File::open(dir.join("src")).expect("open").into());
        let mut buf = vec![0u8; 5000];
        assert_eq!(read_full(&src, 1000, &mut buf), Ok(2000));
        assert_eq!(buf.get(..2000), data.get(1000..));
        let dst = std::fs::File::create(dir.join("dst")).expect("dst");
        assert_eq!(
            copy_through_reads(&src, 500, dst.as_fd(), 7, 1000),
            Ok(1000)
        );
        let copied = std::fs::read(dir.join("dst")).expect("read dst");
        assert_eq!(copied.get(7..), data.get(500..1500));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

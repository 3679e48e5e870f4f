//! Requests on directory handles: opendir, readdir, readdirplus,
//! releasedir, fsyncdir.
use super::entries::GEN;
use super::{FimFs, errno, file_attr, file_type, guard};
use crate::union::{DirEntry, Entry, Ino, ListedDir};
use fuser::{
    Errno, FileHandle, FopenFlags, INodeNo, OpenFlags, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyOpen, Request,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

impl FimFs {
    /// The listing of a directory handle (see `Union::snapshot`), taken
    /// at offset 0 and kept for the handle's later reads.
    pub(super) fn snapshot(
        &self,
        ino: Ino,
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

    pub(super) fn readdirplus_inner(
        &self,
        ino: Ino,
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
            // (The kernel makes no entries of `.` and `..`: their
            // lifetimes are not used.)
            let found = match dots {
                true => self.union.getattr_entry(e.ino),
                false => self.union.lookup_listed(&dir, &e.name),
            };
            let Ok(Entry { attr: a, cache, .. }) = found else {
                continue;
            };
            let (attr_ttl, entry_ttl) = self.ttls(cache);
            let name = OsStr::from_bytes(&e.name);
            if reply.add(
                a.ino.into(),
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

    pub(super) fn on_opendir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _flags: OpenFlags,
        reply: ReplyOpen,
    ) {
        guard("opendir", || match self.union.opendir(Ino::from(ino)) {
            Ok(dir) => {
                let mut flags = FopenFlags::FOPEN_CACHE_DIR;
                if dir.keep_listing {
                    flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(self.handles.add_dir()), flags)
            }
            Err(e) => reply.error(errno(e)),
        })
    }

    pub(super) fn on_readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guard("readdir", || {
            let entries = match self.snapshot(Ino::from(ino), fh.0, offset, None) {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                if reply.add(
                    e.ino.into(),
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

    pub(super) fn on_readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        guard("readdirplus", || {
            match self.readdirplus_inner(Ino::from(ino), fh.0, offset, &mut reply) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        })
    }

    pub(super) fn on_releasedir(
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

    pub(super) fn on_fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }
}

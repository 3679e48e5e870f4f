//! Extended attribute requests: getxattr, listxattr, setxattr, removexattr.
use super::{FimFs, errno, guard};
use crate::union::Ino;
use fuser::{Errno, INodeNo, ReplyEmpty, ReplyXattr, Request};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

impl FimFs {
    pub(super) fn on_getxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        guard("getxattr", || {
            match self.union.getxattr(Ino::from(ino), name.as_bytes()) {
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

    pub(super) fn on_listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guard("listxattr", || match self.union.listxattr(Ino::from(ino)) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        })
    }

    #[allow(clippy::too_many_arguments)] // fuser::Filesystem's own signature
    pub(super) fn on_setxattr(
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
            match self
                .union
                .setxattr(Ino::from(ino), name.as_bytes(), value, flags)
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    pub(super) fn on_removexattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        guard("removexattr", || {
            match self.union.removexattr(Ino::from(ino), name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        })
    }
}

/// getxattr/listxattr answer with the size when asked for 0 bytes.
pub(super) fn xattr_reply(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(v)
    }
}

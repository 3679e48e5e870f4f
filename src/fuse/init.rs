//! INIT (the capabilities asked of the kernel) and statfs.
use super::{FimFs, errno, guard};
use fuser::{INodeNo, InitFlags, KernelConfig, ReplyStatfs, Request};

/// Capabilities asked for when the kernel offers them.
const WANTED: [InitFlags; 7] = [
    // Lookups and readdir in one directory run in parallel.
    InitFlags::FUSE_PARALLEL_DIROPS,
    InitFlags::FUSE_DO_READDIRPLUS,
    InitFlags::FUSE_READDIRPLUS_AUTO,
    InitFlags::FUSE_CACHE_SYMLINKS,
    InitFlags::FUSE_MAX_PAGES,
    // Cached pages are dropped when a refreshed attribute shows new mtime/size.
    InitFlags::FUSE_AUTO_INVAL_DATA,
    // Set-ID bits are dropped by the daemon (`union::setattr`), so the
    // kernel neither asks for the mode before each chown nor for
    // `security.capability` before every write of a file it already
    // checked (`SB_NOSEC`).
    InitFlags::FUSE_HANDLE_KILLPRIV_V2,
];

impl FimFs {
    pub(super) fn on_init(
        &mut self,
        _req: &Request,
        config: &mut KernelConfig,
    ) -> std::io::Result<()> {
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
        // The kernel caches ACLs (ls -l asks for system.posix_acl_access of
        // every file) and enforces them, as the kernel overlay does.
        if self.tuning.posix_acl && config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            tracing::debug!("kernel lacks FUSE_POSIX_ACL");
        }
        // Open requests (see `nodeio`): where asked for; else where the
        // daemon's own open of a host file is the check that refuses an
        // open the caller may not make (no default_permissions: the kernel
        // checks nothing), and in a union without an upper, whose files
        // passthrough may serve.
        let daemon_checks = !self.tuning.kernel_checks && self.union.has_settled_files();
        let handles = self
            .tuning
            .handles
            .unwrap_or(daemon_checks || self.union.is_read_only());
        // Passthrough only with handles, when backing files can be
        // registered (probed before asking) and the union has files to hand
        // over; depth 1: the layers are not themselves stacked, and the
        // mount can still be a layer of a kernel overlay.
        if handles && self.tuning.passthrough && self.union.has_settled_files() {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) if config.set_max_stack_depth(1).is_ok() => self.io.enable(),
                r => tracing::info!("no passthrough: {r:?}"),
            }
        }
        // A kernel that cannot open without asking (before Linux 4.19)
        // would fail the opens answered ENOSYS.
        let can = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        // A read-only union that could not have passthrough after all
        // gains nothing from its handles.
        self.no_open = can
            && match self.tuning.handles {
                Some(h) => !h,
                None => !daemon_checks && !self.io.enabled(),
            };
        // With handles, open(O_TRUNC) arrives as one request: no separate
        // truncate, no data copy-up. Without, the kernel would take the
        // OPEN it skips to have truncated; a SETATTR does it.
        if !self.no_open
            && config
                .add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC)
                .is_err()
        {
            tracing::debug!("kernel lacks FUSE_ATOMIC_O_TRUNC");
        }
        tracing::debug!(no_open = self.no_open, "open requests settled");
        Ok(())
    }

    pub(super) fn on_statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
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
}

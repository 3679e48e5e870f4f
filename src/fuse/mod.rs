//! The FUSE adapter: `impl fuser::Filesystem` by calling the union engine.
//!
//! This layer only translates: kernel integers to engine calls, engine
//! `Errno`s to replies, engine attributes to `FileAttr`. Every handler runs
//! inside `guard`, so a panic costs one request an EIO and a log line, never
//! the daemon. Handles (open files, directory snapshots) live here.
mod dirs;
mod entries;
mod files;
mod handles;
mod init;
mod iomode;
mod nodeio;
mod ops;
mod peers;
pub mod session;
mod stats;
mod xattrs;

use crate::union::{Attr, Cache, Ino, Kind, Lifetime, Union};
use fuser::{FileAttr, FileType, INodeNo};
use handles::Handles;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

/// Cache lifetimes the kernel is given: the durations of the engine's
/// [`Lifetime`]s (`Short`: `entry`/`attr`, `Long`: `lower`).
///
/// What only the lowers hold cannot change behind the daemon's back (the
/// lowers are read-only; only another daemon sharing the upper could hide
/// or replace it), so it is cached far longer than what the upper holds.
#[derive(Debug, Clone, Copy)]
pub struct Ttl {
    /// Entries of names found in the upper (or merged directories).
    pub entry: Duration,
    /// Attributes of objects in the upper.
    pub attr: Duration,
    /// Entries and attributes of objects only the lowers hold.
    pub lower: Duration,
    /// How long a name found nowhere is remembered as missing (0: not
    /// at all). A name put into the upper behind the mount is found once
    /// this expires, like any other change behind it.
    pub negative: Duration,
}

impl Ttl {
    /// Defaults with an upper: one second for the upper, as
    /// fuse-overlayfs (changes made to the upper behind the mount show
    /// within a second; everything fimfs changes itself is reported to
    /// the kernel at once), a minute for lower-only objects, and one second
    /// for missing names: a program start looks up dozens of names that do
    /// not exist (library and locale search paths), and a name made in the
    /// upper behind the mount then shows within the same second as every
    /// other change behind it.
    pub const WRITABLE: Ttl = Ttl {
        entry: Duration::from_secs(1),
        attr: Duration::from_secs(1),
        lower: Duration::from_secs(60),
        negative: Duration::from_secs(1),
    };
    /// Defaults without an upper: nothing can change, so everything,
    /// negative entries too, is cached for a day.
    pub const READ_ONLY: Ttl = Ttl {
        entry: Duration::from_secs(86400),
        attr: Duration::from_secs(86400),
        lower: Duration::from_secs(86400),
        negative: Duration::from_secs(86400),
    };
}

/// Kernel-connection tunables, settled at INIT.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub max_write: u32,
    pub max_readahead: u32,
    pub max_background: u16,
    /// Ask for FUSE passthrough (upper files).
    pub passthrough: bool,
    /// Whether the kernel is to ask at every open (`-o handles`); None:
    /// only where passthrough serves a read-only union (see `nodeio`).
    pub handles: Option<bool>,
    /// The kernel checks permissions itself (`default_permissions`).
    pub kernel_checks: bool,
    /// Ask for FUSE_POSIX_ACL: the kernel caches and enforces ACLs. It
    /// forces `default_permissions`, so only where that is on already
    /// (an unprivileged squashing mount lets anyone chown, for example).
    pub posix_acl: bool,
    /// No SELinux on this system: a `security.selinux` that a file lacks is
    /// answered EOPNOTSUPP, not ENODATA (see `selinux_active`).
    pub no_selinux: bool,
    /// Fault injection for the tests: a lookup of exactly this name panics
    /// inside its handler (`FIMFS_FAULT_PANIC_ON_LOOKUP`), to prove that a
    /// panic costs one request an EIO and never the daemon.
    pub panic_on_lookup: Option<Vec<u8>>,
}

/// Whether SELinux may be running. Where it is, the kernel answers
/// `security.selinux` itself and reads the xattr from the daemon only to
/// label an inode, taking ENODATA as "use the default label" and anything
/// else as an error: the daemon must say ENODATA there. Where it is not,
/// the daemon is asked for every `ls -l` of every file (FUSE caches no
/// xattrs), and EOPNOTSUPP makes `ls` (and every libselinux caller that
/// caches per device) stop asking for the rest of the mount. Any sign of
/// SELinux counts: a selinuxfs, the LSM list, an SELinux context
/// (`user:role:type:level`) on this process.
pub fn selinux_active() -> bool {
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        return true;
    }
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if lsms.trim().split(',').any(|l| l == "selinux") {
        return true;
    }
    std::fs::read("/proc/self/attr/current").is_ok_and(|c| c.contains(&b':'))
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            // 1 MiB requests: a quarter of the syscalls of 256 KiB on
            // sequential I/O (needs FUSE_MAX_PAGES, Linux 4.20+).
            max_write: 1 << 20,
            max_readahead: 1 << 20,
            max_background: 64,
            passthrough: false,
            handles: None,
            kernel_checks: false,
            posix_acl: false,
            no_selinux: !selinux_active(),
            panic_on_lookup: std::env::var_os("FIMFS_FAULT_PANIC_ON_LOOKUP")
                .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
        }
    }
}

/// The filesystem served to the kernel.
pub struct FimFs {
    union: Arc<Union>,
    handles: Handles,
    /// Passthrough or cached mode of each open file.
    io: iomode::IoModes,
    /// The kernel opens files without asking (settled at INIT, see
    /// `nodeio`): I/O without a handle goes by node.
    no_open: bool,
    node_files: nodeio::NodeFiles,
    ttl: Ttl,
    tuning: Tuning,
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// Open files above which read-only lower handles hold no fd (a
    /// quarter of `RLIMIT_NOFILE`, see `handles`).
    lazy_above: usize,
    /// What the kernel must drop from its caches; sent by a side thread,
    /// never from inside a request handler (that can deadlock).
    stale: std::sync::mpsc::Sender<Stale>,
    /// The daemon's writes keep set-ID bits (`iomode::keeps_set_id`): a
    /// `WRITE` flagged `FUSE_WRITE_KILL_SUIDGID` drops them explicitly.
    keeps_set_id: bool,
}

/// A kernel cache entry to drop.
#[derive(Debug)]
enum Stale {
    /// The cached attributes of an inode.
    Attr(Ino),
    /// Everything cached of an inode: attributes, data, a listing.
    All(Ino),
    /// A directory entry (casefold: another spelling of a changed name).
    Entry(Ino, Vec<u8>),
}

impl std::fmt::Debug for FimFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FimFs").field("ttl", &self.ttl).finish()
    }
}

impl FimFs {
    pub fn new(union: Arc<Union>, ttl: Ttl, tuning: Tuning) -> FimFs {
        let notifier: Arc<OnceLock<fuser::Notifier>> = Arc::new(OnceLock::new());
        let (stale, rx) = std::sync::mpsc::channel::<Stale>();
        let n = notifier.clone();
        std::thread::spawn(move || {
            for s in rx {
                let Some(n) = n.get() else { continue };
                let _ = match s {
                    // Offset -1: attributes only.
                    Stale::Attr(ino) => n.inval_inode(ino.into(), -1, 0),
                    // Offset 0, length 0: every page too.
                    Stale::All(ino) => n.inval_inode(ino.into(), 0, 0),
                    Stale::Entry(parent, name) => {
                        n.inval_entry(parent.into(), std::ffi::OsStr::from_bytes(&name))
                    }
                };
            }
        });
        if let Some(upper) = union.stack().upper() {
            let (u, tx) = (union.clone(), stale.clone());
            peers::watch(upper.root(), union.alone(), move || {
                for (parent, name, ino) in u.lower_only_names() {
                    let _ = tx.send(Stale::Entry(parent, name));
                    let _ = tx.send(Stale::Attr(ino));
                }
            });
        }
        // A quarter of the fds the daemon may hold: the rest is for
        // upper files (which cannot reopen lazily), pins, directories and
        // the session.
        let lazy_above = usize::try_from(crate::sys::nofile_limit().0 / 4).unwrap_or(usize::MAX);
        FimFs {
            union,
            handles: Handles::default(),
            io: iomode::IoModes::new(),
            no_open: false,
            node_files: nodeio::NodeFiles::new(lazy_above),
            ttl,
            tuning,
            notifier,
            lazy_above,
            keeps_set_id: iomode::keeps_set_id(),
            stale,
        }
    }

    /// The (attr, entry) durations of what the engine said the kernel may
    /// cache (see `union::Cache`, where the policy lives).
    pub fn ttls(&self, cache: Cache) -> (Duration, Duration) {
        let of = |life: Lifetime, short: Duration| match life {
            Lifetime::Never => Duration::ZERO,
            Lifetime::Short => short,
            Lifetime::Long => self.ttl.lower,
        };
        (
            of(cache.attr, self.ttl.attr),
            of(cache.entry, self.ttl.entry),
        )
    }

    /// Asks the kernel to drop its cached attributes of `ino`.
    pub fn invalidate_attr(&self, ino: Ino) {
        let _ = self.stale.send(Stale::Attr(ino));
    }

    /// Casefold: after a name changed, the other spellings the kernel
    /// holds for its entry lead nowhere; the kernel drops them too.
    pub fn forget_spellings(&self, parent: Ino, names: Vec<Vec<u8>>) {
        self.union.drop_spellings(parent, &names);
        for name in names {
            let _ = self.stale.send(Stale::Entry(parent, name));
        }
    }

    /// On each `SIGUSR1`, forgets what the daemon remembers of the lowers
    /// (a user changed one on purpose) and has the kernel drop what it
    /// caches of them: entries of lower-only names, attributes, pages and
    /// listings of every inode it holds. The kernel's negative entries
    /// cannot be named; they expire after `timeout`. The signal must be
    /// blocked in every thread ([`block_refresh_signal`]).
    pub fn forget_lowers_on_signal(&self) {
        let (u, tx) = (self.union.clone(), self.stale.clone());
        let watch = move || {
            let set = nix::sys::signal::SigSet::from(REFRESH_SIGNAL);
            while set.wait().is_ok() {
                let (inos, names) = u.forget_lowers();
                tracing::info!("{REFRESH_SIGNAL:?}: forgot what was remembered of the lowers");
                for (parent, name, _) in names {
                    let _ = tx.send(Stale::Entry(parent, name));
                }
                for ino in inos {
                    let _ = tx.send(Stale::All(ino));
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("fimfs-refresh".into())
            .spawn(watch)
        {
            tracing::warn!("{REFRESH_SIGNAL:?} will not be handled: {e}");
        }
    }

    /// Where the session's notifier goes once the session exists.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }
}

/// The signal that makes the daemon forget what it remembers of the lowers.
pub const REFRESH_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR1;

/// Blocks [`REFRESH_SIGNAL`] in the calling thread, and so in every thread
/// it starts afterwards: only the thread of
/// [`FimFs::forget_lowers_on_signal`] takes it.
pub fn block_refresh_signal() {
    let _ = nix::sys::signal::SigSet::from(REFRESH_SIGNAL).thread_block();
}

// The kernel's inode numbers and the union's are the same numbers; this
// is the only place the two types meet.
impl From<INodeNo> for Ino {
    fn from(n: INodeNo) -> Ino {
        Ino(n.0)
    }
}

impl From<Ino> for INodeNo {
    fn from(n: Ino) -> INodeNo {
        INodeNo(n.0)
    }
}

pub fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
    }
}

pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: a.ino.into(),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: if a.blksize == 0 { 4096 } else { a.blksize },
        flags: 0,
    }
}

/// Who sent a request, as the engine takes it for what it makes.
pub fn caller(req: &fuser::Request) -> crate::union::Caller {
    crate::union::Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

pub fn errno(e: nix::errno::Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

/// Runs one request handler; a panic inside becomes EIO (the reply,
/// dropped unanswered, sends it) and a log line.
pub fn guard<F: FnOnce()>(op: &'static str, f: F) {
    stats::count(op);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("{op}: handler panicked; the request got EIO");
    }
}

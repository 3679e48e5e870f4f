//! The daemon's life: mount, serve on N threads, and end cleanly.
//!
//! The daemon ends, unmounting lazily and removing its workdir, on SIGTERM,
//! SIGINT or SIGHUP, and when its mount is detached from outside
//! (`fusermount3 -u`, `umount`, lazy or not), also with files still open.
//! A detach is noticed by watching `/proc/self/mountinfo` (the kernel wakes
//! pollers of that file on every mount-table change).
mod error;

pub use error::SessionError;

use super::{FimFs, Ttl, Tuning};
use crate::host::mountinfo;
use crate::host::mountpoint::unmount_lazy;
use crate::host::signals::daemon_stop_set;
use crate::union::Union;
use fuser::{Config, MountOption, Session, SessionACL};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub mountpoint: PathBuf,
    pub threads: usize,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub read_only: bool,
    pub ttl: Ttl,
    /// What the mount table shows as the source (the layers, as `fimfs mount` spells them).
    pub source: std::ffi::OsString,
    /// Open settled files (upper files, and any file of a union without
    /// an upper) in FUSE passthrough mode where the kernel and the daemon's
    /// privileges allow it.
    pub passthrough: bool,
    /// Whether the kernel asks the daemon at every open (`-o handles` /
    /// `-o nohandles`); None: see `fuse::nodeio`.
    pub handles: Option<bool>,
    /// Detach the mount when the daemon ends, also on SIGKILL.
    pub auto_unmount: bool,
}

/// The mount table shows the type `fuse.fimfs`, which `findmnt -t
/// fuse.fimfs` and `mount -t fuse.fimfs` name.
const SUBTYPE: &str = "fimfs";

/// fusermount3 splits its `-o` at commas and reads `\` as an escape in the
/// value of `fsname=`.
fn fusermount_escape(s: &std::ffi::OsStr) -> String {
    let mut out = String::new();
    for c in s.to_string_lossy().chars() {
        if c == ',' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn fuser_config(cfg: &MountConfig) -> Config {
    // fuser uses these only when it mounts through fusermount3; its own
    // mount(2) would say type `fuse`, so `mount_direct` does that part.
    let mut opts = vec![
        MountOption::FSName(fusermount_escape(&cfg.source)),
        MountOption::Subtype(SUBTYPE.into()),
        MountOption::Dev,
        MountOption::Suid,
    ];
    if cfg.default_permissions {
        opts.push(MountOption::DefaultPermissions);
    }
    if cfg.read_only {
        opts.push(MountOption::RO);
    }
    let mut c = Config::default();
    c.mount_options = opts;
    c.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = true;
    c
}

/// Mounts `/dev/fuse` with mount(2) as type `fuse.fimfs`, with the layers
/// as source. `None` when mount(2) is not allowed here (EPERM: not root):
/// then fuser goes through fusermount3, which builds the same type from
/// `subtype=`.
fn mount_direct(cfg: &MountConfig) -> Result<Option<std::os::fd::OwnedFd>, SessionError> {
    use nix::mount::MsFlags;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let mountpoint = || cfg.mountpoint.clone();
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|source| SessionError::DevFuse {
            mountpoint: mountpoint(),
            source,
        })?;
    let root = std::fs::metadata(&cfg.mountpoint).map_err(|source| SessionError::Mounting {
        mountpoint: mountpoint(),
        source,
    })?;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        dev.as_raw_fd(),
        root.mode() & libc::S_IFMT,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if cfg.default_permissions {
        data.push_str(",default_permissions");
    }
    if cfg.allow_other {
        data.push_str(",allow_other");
    }
    let flags = match cfg.read_only {
        true => MsFlags::MS_RDONLY,
        false => MsFlags::empty(),
    };
    let fstype = format!("fuse.{SUBTYPE}");
    match nix::mount::mount(
        Some(cfg.source.as_os_str()),
        &cfg.mountpoint,
        Some(fstype.as_str()),
        flags,
        Some(data.as_str()),
    ) {
        Ok(()) => Ok(Some(dev.into())),
        Err(nix::errno::Errno::EPERM) => Ok(None),
        Err(errno) => Err(SessionError::Mount {
            mountpoint: mountpoint(),
            errno,
        }),
    }
}

/// Mounts and completes INIT: with mount(2) where allowed, else through
/// fusermount3 (fuser's own path).
fn open_session(fs: FimFs, cfg: &MountConfig) -> Result<Session<FimFs>, SessionError> {
    let config = fuser_config(cfg);
    let named = |source| SessionError::Mounting {
        mountpoint: cfg.mountpoint.clone(),
        source,
    };
    match mount_direct(cfg)? {
        Some(fd) => Session::from_fd(fs, fd, config.acl, config).map_err(|e| {
            unmount_lazy(&cfg.mountpoint);
            named(e)
        }),
        None => Session::new(fs, &cfg.mountpoint, &config).map_err(named),
    }
}

/// Ends the daemon once: lazy unmount, workdir removed. A second caller
/// waits until the first has finished (it may exit the process next).
struct Shutdown {
    union: Arc<Union>,
    mountpoint: PathBuf,
    done: parking_lot::Mutex<bool>,
}

impl Shutdown {
    fn run(&self, why: &str, mounted: bool) {
        let mut done = self.done.lock();
        if *done {
            return;
        }
        *done = true;
        tracing::info!("stopping: {why}");
        super::stats::dump();
        if mounted {
            unmount_lazy(&self.mountpoint);
        }
        if let Some(w) = self.union.workdir() {
            w.remove();
        }
    }
}

/// `auto_unmount`: starts `fimfs auto-unmount-watch MNT ID` as a process
/// of its own, its stdin the read end of a pipe whose write end only this
/// process holds (close-on-exec, so no child inherits it). When this
/// process ends, killed or not, the watcher reads end of file and detaches
/// the mount. Returns the write end, to hold while serving.
fn spawn_unmount_watcher(mountpoint: &Path, id: u32) -> Option<std::io::PipeWriter> {
    use std::os::unix::process::CommandExt;
    let spawn = || -> std::io::Result<std::io::PipeWriter> {
        let (rd, wr) = std::io::pipe()?;
        std::process::Command::new("/proc/self/exe")
            .arg("auto-unmount-watch")
            .arg(mountpoint)
            .arg(id.to_string())
            .stdin(rd)
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(wr)
    };
    spawn()
        .inspect_err(|e| tracing::warn!("auto_unmount: cannot start the watcher: {e}"))
        .ok()
}

/// The mount id of the newest FUSE mount on `path`: the one just made.
fn mount_id(path: &Path) -> Option<u32> {
    mountinfo::read()
        .into_iter()
        .rev()
        .find(|m| m.is_fuse() && m.point == path)
        .map(|m| m.id)
}

/// Waits for mount-table changes and ends the daemon once its mount is gone.
fn watch_detach(id: u32, stop: Arc<Shutdown>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let Ok(f) = std::fs::File::open("/proc/self/mountinfo") else {
        return;
    };
    loop {
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
        // Reading the file again re-arms the poll.
        let mut info = Vec::new();
        let _ = std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(0));
        let _ = std::io::Read::read_to_end(&mut &f, &mut info);
        if !mountinfo::parse_mountinfo(&info).iter().any(|m| m.id == id) {
            stop.run("the mount was detached", false);
            std::process::exit(0);
        }
    }
}

/// Mounts `union` and serves it until the daemon is told to stop.
/// `ready` is called once the mount answers (or failed to appear).
pub fn serve(
    union: Arc<Union>,
    cfg: &MountConfig,
    ready: impl FnOnce(Result<(), &SessionError>),
) -> Result<(), SessionError> {
    crate::sys::ignore_sigpipe();
    crate::sys::map_big_allocations();
    // Every thread started from here on inherits the blocked mask; only the
    // signal thread takes them, with sigwait.
    let _ = daemon_stop_set().thread_block();
    super::block_refresh_signal();
    let fs = FimFs::new(union.clone(), cfg.ttl, tuning_for(cfg));
    fs.forget_lowers_on_signal();
    let slot = fs.notifier_slot();
    let session = match open_session(fs, cfg) {
        Ok(s) => s,
        Err(e) => {
            ready(Err(&e));
            return Err(e);
        }
    };
    let _ = slot.set(session.notifier());
    let stop = Arc::new(Shutdown {
        union,
        mountpoint: cfg.mountpoint.clone(),
        done: parking_lot::Mutex::new(false),
    });
    let s = stop.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = daemon_stop_set().wait() {
            s.run(&format!("{sig:?}"), true);
            std::process::exit(0);
        }
    });
    let mut _watcher = None;
    match mount_id(&cfg.mountpoint) {
        Some(id) => {
            if cfg.auto_unmount {
                _watcher = spawn_unmount_watcher(&cfg.mountpoint, id);
            }
            let s = stop.clone();
            std::thread::spawn(move || watch_detach(id, s));
        }
        None => tracing::warn!("mount not found in mountinfo; a detach will not be noticed"),
    }
    ready(Ok(()));
    let res = session.run();
    stop.run("the kernel ended the session", false);
    res.map_err(|source| SessionError::Serving {
        mountpoint: cfg.mountpoint.clone(),
        source,
    })
}

/// A union served by threads of the calling process (the launcher's
/// daemon mode): no signal handling of its own, no `exit`.
pub struct Running {
    mountpoint: PathBuf,
    union: Arc<Union>,
}

/// Mounts `union` and serves it on background threads of this process.
///
/// The session threads get their own fs_struct with umask 0 (the daemon
/// applies the caller's mode itself), so the rest of the process, and the
/// command it runs, keeps the user's umask. Signals are not touched: block
/// them before calling this if other threads should handle them.
pub fn start(union: Arc<Union>, cfg: &MountConfig) -> Result<Running, SessionError> {
    crate::sys::map_big_allocations();
    let (tx, rx) = std::sync::mpsc::channel();
    let mountpoint = cfg.mountpoint.clone();
    let cfg_in = cfg.clone();
    let ttl = cfg.ttl;
    let tuning = tuning_for(cfg);
    let u = union.clone();
    let spawned = std::thread::Builder::new()
        .name("fimfs-session".into())
        .spawn(move || {
            if let Err(e) = crate::sys::unshare_fs() {
                let _ = tx.send(Err(SessionError::UnshareFs(e)));
                return;
            }
            crate::sys::umask(0);
            let fs = FimFs::new(u, ttl, tuning);
            let slot = fs.notifier_slot();
            let session = match open_session(fs, &cfg_in) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = slot.set(session.notifier());
            let _ = tx.send(Ok(()));
            if let Err(e) = session.run() {
                tracing::warn!("serving {}: {e}", mountpoint.display());
            }
        })
        .map_err(SessionError::Thread)?;
    drop(spawned);
    match rx.recv() {
        Ok(Ok(())) => Ok(Running {
            mountpoint: cfg.mountpoint.clone(),
            union,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SessionError::ThreadEnded),
    }
}

impl Running {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Detaches the mount and removes the workdir (as dropping does).
    pub fn stop(self) {}
}

impl Drop for Running {
    /// Detaches the mount (files still open elsewhere keep working until
    /// they are closed or this process exits) and removes the workdir.
    fn drop(&mut self) {
        unmount_lazy(&self.mountpoint);
        if let Some(w) = self.union.workdir() {
            w.remove();
        }
    }
}

/// The adapter's defaults, with passthrough where the mount asks for it and
/// the daemon is privileged enough. Here, not in `fuse/mod.rs`, so that the
/// adapter does not import the session that starts it.
fn tuning_for(cfg: &MountConfig) -> Tuning {
    Tuning {
        passthrough: cfg.passthrough && super::iomode::privileged(),
        handles: cfg.handles,
        kernel_checks: cfg.default_permissions,
        posix_acl: cfg.default_permissions,
        ..Tuning::default()
    }
}

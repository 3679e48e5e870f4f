//! FUSE passthrough for settled files (Linux 6.9+, CAP_SYS_ADMIN).
//!
//! A file opened in passthrough mode is read (and written) by the kernel
//! directly on the layer's file: no request per read or write, no copy
//! through the daemon, that file's own page cache. Only a file a handle
//! will never have to leave is opened so (`union::Opened::settled`): an
//! upper file, or any file of a union without an upper. A lower file of a
//! writable union keeps the daemon's cached mode (its pages stay valid
//! across opens, and a handle opened before a copy-up must move to the
//! upper copy, which the kernel cannot do to a backing file).
//!
//! The kernel refuses (EIO to the caller's `open`) to open one inode in
//! both modes at once, and wants one backing file per inode. So per inode
//! the daemon counts its open handles of each mode and keeps the backing
//! id while passthrough handles are open; an open takes passthrough only
//! when no cached handle is open. The daemon's counts drop at RELEASE,
//! which the kernel sends after dropping its own, so they are never lower
//! than the kernel's: the rule errs towards the mode the kernel allows.
use crate::union::Ino;
use fuser::BackingId;
use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
struct Inode {
    cached: usize,
    passthrough: usize,
    backing: Option<Arc<BackingId>>,
}

#[derive(Debug)]
pub struct IoModes {
    /// Negotiated with the kernel and not refused since.
    enabled: AtomicBool,
    inodes: parking_lot::Mutex<HashMap<Ino, Inode>>,
    /// fh → (ino, passthrough).
    handles: parking_lot::Mutex<HashMap<u64, (Ino, bool)>>,
}

impl IoModes {
    pub fn new() -> IoModes {
        IoModes {
            enabled: AtomicBool::new(false),
            inodes: Default::default(),
            handles: Default::default(),
        }
    }

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Registers handle `fh` of `ino`; returns the backing id when it is
    /// to be opened in passthrough (`settled`: the handle's fd when its
    /// file is settled, None otherwise; `open_backing` registers it with
    /// the kernel).
    pub fn open(
        &self,
        fh: u64,
        ino: Ino,
        settled: Option<BorrowedFd<'_>>,
        open_backing: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let mut inodes = self.inodes.lock();
        let i = inodes.entry(ino).or_default();
        let mut backing = None;
        if let Some(fd) = settled
            && self.enabled()
            && i.cached == 0
        {
            backing = match &i.backing {
                Some(b) => Some(b.clone()),
                None => match open_backing(fd) {
                    Ok(b) => Some(Arc::new(b)),
                    Err(e) => {
                        // EPERM: not privileged after all; anything else
                        // (a layer on a stacked filesystem): this file.
                        if e.raw_os_error() == Some(libc::EPERM) {
                            self.enabled.store(false, Ordering::Relaxed);
                        }
                        tracing::debug!("passthrough refused for inode {ino}: {e}");
                        None
                    }
                },
            };
        }
        match &backing {
            Some(b) => {
                i.passthrough += 1;
                i.backing = Some(b.clone());
            }
            None => i.cached += 1,
        }
        self.handles.lock().insert(fh, (ino, backing.is_some()));
        backing
    }

    /// Handle `fh` was released.
    pub fn release(&self, fh: u64) {
        let Some((ino, pt)) = self.handles.lock().remove(&fh) else {
            return;
        };
        let mut inodes = self.inodes.lock();
        if let Some(i) = inodes.get_mut(&ino) {
            match pt {
                true => i.passthrough = i.passthrough.saturating_sub(1),
                false => i.cached = i.cached.saturating_sub(1),
            }
            if i.passthrough == 0 {
                i.backing = None;
            }
            if i.passthrough == 0 && i.cached == 0 {
                inodes.remove(&ino);
            }
        }
    }
}

/// Whether this process may register backing files: CAP_SYS_ADMIN in
/// the initial user namespace (the kernel checks exactly that).
pub fn privileged() -> bool {
    capable(CAP_SYS_ADMIN)
}

/// Bit numbers in `CapEff`.
const CAP_FSETID: u32 = 4;
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process holds capability `bit` in the initial user
/// namespace (where the upper's filesystem checks it).
pub fn capable(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let init_ns = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    cap_eff & (1 << bit) != 0 && init_ns
}

/// Whether the daemon's own writes keep set-ID bits (it holds
/// CAP_FSETID): then it must drop them itself when the kernel says so.
/// Without it, the upper's filesystem drops them on each of its writes.
pub fn keeps_set_id() -> bool {
    capable(CAP_FSETID)
}

//! Mountpoints: is a path one, is its FUSE daemon gone, detaching it.
//!
//! A FUSE mount whose daemon died answers ENOTCONN to everything (or
//! ECONNABORTED once aborted); it is usable again once detached. Only such
//! a mount is ever detached here on a guess: a live one is left to its
//! owner.
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Detaches the mount at `path`: `umount2(MNT_DETACH)` as root, else
/// `fusermount3 -uz`.
pub fn unmount_lazy(path: &Path) {
    if nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).is_ok() {
        return;
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status();
}

/// True when `path` is a mountpoint: its device differs from its
/// parent's, or it cannot be stat'ed at all (a FUSE mount whose daemon
/// died answers ENOTCONN).
pub fn is_mountpoint(path: &Path) -> bool {
    let parent = path
        .parent()
        .and_then(|p| std::fs::symlink_metadata(p).ok());
    match (std::fs::symlink_metadata(path), parent) {
        (Ok(m), Some(p)) => m.dev() != p.dev(),
        (Err(e), _) => e.kind() != std::io::ErrorKind::NotFound,
        (Ok(_), None) => false,
    }
}

/// Detaches `mountpoint` if it is a FUSE mount whose daemon is gone.
/// Anything else is left for the caller's checks to report. A daemon
/// killed a moment ago is still dying: the stat waits until its last
/// thread is gone, and is then aborted (ECONNABORTED), the same verdict.
pub fn detach_if_dead(mountpoint: &Path) {
    if let Err(e) = std::fs::metadata(mountpoint)
        && matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
    {
        tracing::warn!(
            "mountpoint {}: a FUSE mount whose daemon is gone; detaching it",
            mountpoint.display()
        );
        unmount_lazy(mountpoint);
    }
}

/// The watcher side of `auto_unmount`: waits until `alive` reads end of
/// file (every copy of its write end closed: the daemon is gone, however
/// it ended), then detaches the mount at `path` if it is still the one
/// with mount id `id` (the same FUSE mount, not a newer one made there
/// since). Runs in a process of its own, so a SIGKILL of the daemon does
/// not take it along.
pub fn unmount_when_closed(mut alive: impl std::io::Read, path: &Path, id: u32) {
    let mut buf = [0u8; 64];
    while !matches!(alive.read(&mut buf), Ok(0) | Err(_)) {}
    let still = super::mountinfo::read()
        .into_iter()
        .any(|m| m.id == id && m.point == path && m.is_fuse());
    if still {
        unmount_lazy(path);
    }
}

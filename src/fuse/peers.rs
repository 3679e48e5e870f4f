//! Is this daemon alone on its upper?
//!
//! What only the lowers hold can change behind a daemon's back in one way
//! only: another daemon on the same upper copies it up, replaces or hides
//! it. So while a daemon is alone on its upper, the engine lets the kernel
//! cache lower-only entries for long (`union::Alone`, `union::Lifetime`);
//! once another daemon shares the upper, they get the upper's short
//! lifetime, and the entries the kernel already holds for long are dropped.
//!
//! Every daemon with an upper holds a shared `flock` on the upper's root
//! directory (as `fimfs run` does); a side thread reads `/proc/locks` once
//! a second and counts the other holders.
use crate::host::locks::holders_of_fd;
use crate::sys;
use crate::union::Alone;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// How often the other holders are counted.
const PERIOD: Duration = Duration::from_secs(1);

/// Takes the shared lock on the upper root `upper` and keeps `alone` (the
/// engine's flag, which decides the lifetimes) telling whether other
/// holders exist. `on_shared` runs (on the side thread) each time the
/// daemon stops being alone.
pub fn watch(upper: BorrowedFd<'_>, alone: &Alone, on_shared: impl Fn() + Send + 'static) {
    let Ok(lock) = sys::openat(upper, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        // Cannot tell: never alone, always the short lifetimes.
        alone.set(false);
        return;
    };
    let _ = sys::flock_shared(lock.as_fd());
    alone.set(others(&lock) == 0);
    let flag = alone.clone();
    std::thread::Builder::new()
        .name("fimfs-peers".into())
        .spawn(move || {
            loop {
                std::thread::sleep(PERIOD);
                let now = others(&lock) == 0;
                let was = flag.set(now);
                if was && !now {
                    tracing::info!("another daemon shares the upper: short cache lifetimes");
                    on_shared();
                }
            }
        })
        .ok();
}

/// How many other processes hold a `flock` on the locked directory.
fn others(lock: &OwnedFd) -> usize {
    let Some(holders) = holders_of_fd(lock.as_fd()) else {
        return 1;
    };
    let me = std::process::id();
    holders.into_iter().filter(|&pid| pid != me).count()
}

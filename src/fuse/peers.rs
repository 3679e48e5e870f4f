//! Is this daemon alone on its upper?
//!
//! What only the lowers hold can change behind a daemon's back in one way
//! only: another daemon on the same upper copies it up, replaces or hides
//! it. So while a daemon is alone on its upper, the kernel may cache
//! lower-only entries for long (`Ttl::lower`); once another daemon shares
//! the upper, they get the upper's short lifetime, and the entries the
//! kernel already holds for long are dropped.
//!
//! Every daemon with an upper holds a shared `flock` on the upper's root
//! directory (as `fimfs run` does); a side thread reads `/proc/locks` once
//! a second and counts the other holders.
use crate::host::locks::holders_of_fd;
use crate::sys;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the other holders are counted.
const PERIOD: Duration = Duration::from_secs(1);

/// Whether the daemon is alone on its upper; true without an upper.
#[derive(Debug, Clone)]
pub struct Alone(Arc<AtomicBool>);

impl Alone {
    pub fn always() -> Alone {
        Alone(Arc::new(AtomicBool::new(true)))
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Takes the shared lock on the upper root `upper` and starts counting
/// the other holders. `on_shared` runs (on the side thread) each time the
/// daemon stops being alone.
pub fn watch(upper: std::os::fd::BorrowedFd<'_>, on_shared: impl Fn() + Send + 'static) -> Alone {
    let Ok(lock) = sys::openat(upper, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        // Cannot tell: never alone, always the short lifetimes.
        return Alone(Arc::new(AtomicBool::new(false)));
    };
    let _ = sys::flock_shared(lock.as_fd());
    let alone = Alone(Arc::new(AtomicBool::new(others(&lock) == 0)));
    let flag = alone.clone();
    std::thread::Builder::new()
        .name("fimfs-peers".into())
        .spawn(move || {
            loop {
                std::thread::sleep(PERIOD);
                let now = others(&lock) == 0;
                let was = flag.0.swap(now, Ordering::Relaxed);
                if was && !now {
                    tracing::info!("another daemon shares the upper: short cache lifetimes");
                    on_shared();
                }
            }
        })
        .ok();
    alone
}

/// How many other processes hold a `flock` on the locked directory.
fn others(lock: &OwnedFd) -> usize {
    let Some(holders) = holders_of_fd(lock.as_fd()) else {
        return 1;
    };
    let me = std::process::id();
    holders.into_iter().filter(|&pid| pid != me).count()
}

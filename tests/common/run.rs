//! Helpers for the tests that drive `fimfs run` through the real binary: the
//! bound against hangs, polling a condition, what a launcher did, argument
//! lists, and the processes of a run told apart by a token in their
//! environment. Nothing here times anything: waits poll, with a bound.
use std::ffi::OsString;
use std::fs;
use std::process::ExitStatus;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long a launcher may run, or a condition take to hold, before the test
/// gives up. Only a bound against hangs: nothing is timed.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `cond` holds; fails the test with `what` at the deadline.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "gave up waiting: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Tests that tear mounts down at a moment they do not choose (a SIGKILL
/// of a launcher or its keeper) run alone: a sandbox of another test that
/// binds the host's `/` meanwhile fails when a submount vanishes under it
/// (bwrap: "Can't bind mount / on /: Unable to apply mount flags: remount
/// ...: No such file or directory"). Every other test of the binary takes
/// a shared turn.
static TEARDOWNS: RwLock<()> = RwLock::new(());

/// A test's turn (see `TEARDOWNS`), held for as long as the test runs.
pub enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

impl Turn {
    /// A turn other tests share.
    pub fn shared() -> Turn {
        Turn::Shared(TEARDOWNS.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A turn no other test runs beside.
    pub fn alone() -> Turn {
        Turn::Alone(TEARDOWNS.write().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a launcher did.
pub struct Done {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Done {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// `words` as an argument list.
pub fn os(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

/// PIDs of the processes whose environment holds `FIMFS_TREE_TOKEN=token`.
pub fn tagged(token: &str) -> Vec<u32> {
    let needle = format!("FIMFS_TREE_TOKEN={token}");
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

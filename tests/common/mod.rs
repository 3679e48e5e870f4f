//! The one test library, shared by every integration test (each test binary uses
//! a different subset, hence `dead_code` is allowed):
//!
//! - [`scratch`]: [`TempDir`], the one scratch directory (it unmounts whatever is
//!   still mounted below it before it goes), and the host's mount table.
//! - [`sys`]: the syscalls the standard library lacks (xattrs, `renameat2`,
//!   `mknod`, `fallocate`, `copy_file_range`, `utimensat`), small file helpers,
//!   process liveness and `drop_caches`; a failure that a test checks is an errno
//!   (`i32`).
//! - [`rng`]: [`XorShift`], the one deterministic generator, and [`fnv1a64`].
//! - [`tree`]: the one tree model: [`scan`] reads a tree once, never following a
//!   symlink; [`walk`], [`disk_snapshot`] and [`plain_view`] are its projections.
//! - [`spec`]: the one fixture language, [`build_layer`] (`f PATH CONTENT`, `w PATH`,
//!   `o PATH` …), used by the engine tables and by [`Stack::from_specs`].
//! - [`mount`]: [`MountGuard`] (a fimfs daemon in the foreground),
//!   [`KernelOverlayGuard`] (the kernel overlay, the reference), [`run_fimfs`], and
//!   [`build_fixtures`] (`fixtures/build.sh`, the sample layer set).
//! - [`stack`]: [`Stack`], lowers + upper + mount point for the mount tests.
//! - [`generate`]: [`generate_tree`], deterministic many-file, many-lower trees.
//! - [`image`]: FlatImage binaries built for real.
//! - [`pack`]: [`pack_dir`], a host directory packed into a DwarFS image.
//! - [`dwarfs`]: DwarFS images built by the tests (dwarfs-enc and hand-made
//!   metadata), opened from memory, walked whole.
//! - [`run`]: for the tests that drive `fimfs run`: the bound against hangs,
//!   [`run::wait_for`], [`run::Done`] (what a launcher did), [`run::tagged`]
//!   (a run's processes, by a token in their environment).
//!
//! [`require_root_and_fuse`]: mount tests never skip. Without root or FUSE they
//! fail with a message that says what is missing.
#![allow(dead_code, unused_imports)]

pub mod dwarfs;
pub mod generate;
pub mod image;
pub mod mount;
pub mod pack;
pub mod rng;
pub mod run;
pub mod scratch;
pub mod spec;
pub mod stack;
pub mod sys;
pub mod tree;

pub use generate::*;
pub use mount::*;
pub use rng::*;
pub use scratch::*;
pub use spec::*;
pub use stack::*;
pub use sys::*;
pub use tree::*;

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The fimfs binary under test.
pub const FIMFS: &str = env!("CARGO_BIN_EXE_fimfs");

/// `statfs(2)` `f_type` of a FUSE mount; FlatImage spins on exactly this value.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// How long a daemon may take to make its mount live (or to exit after an unmount)
/// before the test fails. Generous: a loaded CI machine must not make a test flaky.
pub const DAEMON_DEADLINE: Duration = Duration::from_secs(10);

/// How often readiness and exit are polled.
pub const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------
// Environment

/// Fails the test, never skips it, when the machine cannot run mount tests.
pub fn require_root_and_fuse() {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("the tests are not running as root".to_string());
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        missing.push(format!("/dev/fuse cannot be opened: {e}"));
    }
    if Command::new("fusermount3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        missing.push("fusermount3 is not installed (apt-get install fuse3)".to_string());
    }
    if !missing.is_empty() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        panic!(
            "mount tests need root and FUSE, and never skip{}: {}",
            if ci { " (CI=true)" } else { "" },
            missing.join("; ")
        );
    }
}

/// A path as raw bytes.
pub fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// A byte path, printable in assertion messages (invalid UTF-8 is escaped).
pub fn show(p: &[u8]) -> String {
    format!("{:?}", OsStr::from_bytes(p))
}

// ---------------------------------------------------------------------------------

/// The value of an environment knob, or `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

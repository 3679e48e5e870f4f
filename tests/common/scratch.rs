//! Scratch directories and the host's mount table.
//!
//! Invariant: a [`TempDir`] lazily unmounts everything still mounted below it
//! before it removes itself, so a failed test never leaves a mount behind.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::FUSE_SUPER_MAGIC;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number never handed out before in this process (names of scratch files).
pub fn next_serial() -> u64 {
    TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A fresh directory under the system temp dir, removed on drop after every mount
/// below it has been lazily unmounted.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = fs::canonicalize(std::env::temp_dir()).expect("canonicalize the temp dir");
        let n = next_serial();
        let path = base.join(format!("fimfs-{tag}-{}-{n}", std::process::id()));
        if path.exists() {
            unmount_all_below(&path);
            let _ = fs::remove_dir_all(&path);
        }
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes `bytes` to the file `name` (bytes, any name) and returns its path.
    pub fn write(&self, name: &[u8], bytes: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let p = self.path.join(std::ffi::OsStr::from_bytes(name));
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Creates `rel` (and its parents) and returns its path.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        unmount_all_below(&self.path);
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Mount points from /proc/self/mountinfo with their filesystem types.
pub fn mounts() -> Vec<(PathBuf, String)> {
    let info = fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    fimfs::mountinfo::parse_mountinfo(&info)
        .into_iter()
        .map(|m| (m.point, m.fstype))
        .collect()
}

/// The filesystem type mounted at exactly `path`, if `path` is a mount point.
pub fn mounted_fstype(path: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|(p, _)| p == path)
        .map(|(_, t)| t)
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
pub fn unmount_all_below(dir: &Path) {
    let mut below: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(dir))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    below.dedup();
    for p in below {
        lazy_unmount(&p);
    }
}

/// `fusermount3 -uz`, falling back to `umount -l`. Returns whether either worked.
pub fn lazy_unmount(mnt: &Path) -> bool {
    let quiet = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    quiet(Command::new("fusermount3").arg("-uz").arg(mnt))
        || quiet(Command::new("umount").arg("-l").arg(mnt))
}

/// Whether `statfs(path)` reports a FUSE filesystem.
pub fn is_fuse_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| i128::from(s.filesystem_type().0) == i128::from(FUSE_SUPER_MAGIC))
}

//! A layer stack for the mount tests: lowers, an upper and a mount point in one
//! scratch directory, mounted by fimfs ([`Stack::mount`]) or by the kernel overlay
//! with `userxattr` ([`Stack::kernel`]), the dialect FlatImage's bwrap backend uses.
//!
//! Invariant: the [`TempDir`] is dropped last, so whatever is still mounted below
//! it is unmounted before the directories go.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::mount::{KernelOverlayGuard, MountGuard};
use super::require_root_and_fuse;
use super::scratch::TempDir;
use super::spec::build_layer;
use super::sys::{get_xattr, mkdirs, set_xattr};
use super::tree::{Kind, Tree, assert_same_tree, assert_same_view, view, walk};

/// `TMP/l1` (top-most) … `TMP/lN`, `TMP/upper`, `TMP/mnt` and a kernel workdir
/// `TMP/kwork`. The lowers are filled by the test before it mounts.
pub struct Stack {
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub mnt: PathBuf,
    pub kwork: PathBuf,
    lowers_before: Option<Vec<Tree>>,
    /// Last: dropping it unmounts whatever is still mounted below it.
    pub tmp: TempDir,
}

impl Stack {
    pub fn new(tag: &str, nlowers: usize) -> Stack {
        require_root_and_fuse();
        let tmp = TempDir::new(tag);
        let lowers = (1..=nlowers).map(|i| tmp.mkdir(format!("l{i}"))).collect();
        Stack {
            lowers,
            upper: tmp.mkdir("upper"),
            mnt: tmp.mkdir("mnt"),
            kwork: tmp.join("kwork"),
            lowers_before: None,
            tmp,
        }
    }

    /// [`Stack::new`] with each lower (top-most first) and the upper built from
    /// the fixture language of [`build_layer`].
    pub fn from_specs(tag: &str, lowers: &[&str], upper: &str) -> Stack {
        let s = Stack::new(tag, lowers.len());
        for (l, spec) in s.lowers.iter().zip(lowers) {
            build_layer(l, spec);
        }
        build_layer(&s.upper, upper);
        s
    }

    /// Lower `i` (1 = top-most) joined with `rel`.
    pub fn l(&self, i: usize, rel: &str) -> PathBuf {
        self.lowers[i - 1].join(rel)
    }

    pub fn u(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }

    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Records the lowers, so that [`Stack::assert_lowers_untouched`] can tell whether
    /// anything wrote to them.
    pub fn seal_lowers(&mut self) {
        self.lowers_before = Some(self.lowers.iter().map(|l| walk(l)).collect());
    }

    pub fn assert_lowers_untouched(&self) {
        let before = self
            .lowers_before
            .as_ref()
            .expect("seal_lowers() was not called");
        for (l, b) in self.lowers.iter().zip(before) {
            assert_same_tree("lower before", b, "lower after", &walk(l));
        }
    }

    /// `fimfs mount -f LOWERS UPPER MNT` (default workdir `TMP/work/<PID>`).
    pub fn mount(&self) -> MountGuard {
        MountGuard::new(&self.lowers, Some(&self.upper), &self.mnt, &[])
    }

    pub fn mount_opts(&self, opts: &[&str]) -> MountGuard {
        MountGuard::new(&self.lowers, Some(&self.upper), &self.mnt, opts)
    }

    /// The kernel overlay with `userxattr` over the same lowers and upper.
    pub fn kernel(&self) -> KernelMount {
        KernelMount::userxattr(&self.lowers, Some((&self.upper, &self.kwork)), &self.mnt)
    }
}

/// The kernel overlay with `userxattr`, lazily unmounted on drop.
pub type KernelMount = KernelOverlayGuard;

/// Unmounts a fimfs mount and requires the daemon to exit cleanly.
pub fn unmount_clean(m: MountGuard) {
    let mnt = m.path().to_path_buf();
    let (status, log) = m.unmount();
    assert!(
        status.is_some_and(|s| s.success()),
        "fimfs at {} did not exit cleanly after the unmount ({status:?})\n--- daemon output ---\n{log}",
        mnt.display()
    );
}

/// Adds `user.overlay.opaque=y` beside every `trusted.overlay.opaque=y` in `lower`, so
/// that the kernel overlay mounted with `userxattr` sees the same union as fimfs.
pub fn add_user_opaque(lower: &Path) {
    let tree = walk(lower);
    for (rel, e) in &tree.entries {
        if e.kind != Ok(Kind::Dir) {
            continue;
        }
        let p = if rel.is_empty() {
            lower.to_path_buf()
        } else {
            lower.join(OsStr::from_bytes(rel))
        };
        if get_xattr(&p, "trusted.overlay.opaque").is_ok_and(|v| v == b"y") {
            set_xattr(&p, "user.overlay.opaque", b"y")
                .unwrap_or_else(|e| panic!("setxattr {}: errno {e}", p.display()));
        }
    }
}

/// The merged view of `lowers` as the kernel overlay shows it, copied with `cp -a` into
/// `dest` (created): the reference tree for operations on a plain filesystem.
pub fn plain_copy_of_lowers(lowers: &[PathBuf], scratch_mnt: &Path, dest: &Path) {
    mkdirs(scratch_mnt);
    mkdirs(dest);
    let k = KernelMount::userxattr(lowers, None, scratch_mnt);
    let mut src = k.path().as_os_str().to_os_string();
    src.push("/.");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(dest)
        .output()
        .expect("run cp -a");
    assert!(
        out.status.success(),
        "cp -a {} {}: {}",
        src.to_string_lossy(),
        dest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    k.unmount();
}

/// Unmounts `m` (the daemon must exit cleanly), mounts `s` again, and requires the
/// fresh daemon to show exactly what `m` showed.
pub fn remount_keeps_the_view(s: &Stack, m: MountGuard) {
    let before = view(m.path(), true);
    unmount_clean(m);
    let m = s.mount();
    assert_same_view(
        "before remount",
        &before,
        "after remount",
        &view(m.path(), true),
    );
}

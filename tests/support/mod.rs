//! Helpers for the write-side mount tests (`mount_write`, `random_ops`, `crash_copyup`,
//! `interop_kernel`), on top of `tests/common`:
//!
//! - [`Stack`]: lowers, an upper and a mount point in one scratch directory, mounted by
//!   fimfs ([`Stack::mount`]) or by the kernel overlay with `userxattr`
//!   ([`Stack::kernel`]), the dialect FlatImage's bwrap backend uses.
//! - [`view`] / [`assert_same_view`]: full snapshots (names, types, modes, owners, sizes,
//!   contents, symlink targets, readdir lists, user xattrs) compared between trees.
//! - [`plain_copy_of_lowers`]: the lowers' merged view, read by the kernel overlay and
//!   copied (`cp -a`) into a plain directory, the reference for "as on a plain
//!   filesystem".
//! - raw syscalls the standard library lacks (`renameat2`, `mknod`, `fallocate`,
//!   `copy_file_range`, `utimensat`, `removexattr`), each returning `io::Result`.
#![allow(dead_code)]

use crate::common::*;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------
// Raw syscalls

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`.
pub fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
}

/// `mknod(path, mode, dev)`; `mode` carries the file type.
pub fn mknod(p: &Path, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: c is a NUL-terminated C string.
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) })
}

pub fn fallocate(f: &File, mode: libc::c_int, off: i64, len: i64) -> io::Result<()> {
    // SAFETY: plain syscall on an owned, open fd.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) })
}

/// `copy_file_range` with explicit offsets; returns the bytes copied.
pub fn copy_range(
    src: &File,
    off_in: i64,
    dst: &File,
    off_out: i64,
    len: usize,
) -> io::Result<usize> {
    let (mut i, mut o) = (off_in, off_out);
    // SAFETY: the offsets point to live locals; the fds are open.
    let r =
        unsafe { libc::copy_file_range(src.as_raw_fd(), &mut i, dst.as_raw_fd(), &mut o, len, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `utimensat(AT_FDCWD, path, [atime, mtime], nofollow ? AT_SYMLINK_NOFOLLOW : 0)`.
pub fn utimens(p: &Path, atime: (i64, i64), mtime: (i64, i64), nofollow: bool) -> io::Result<()> {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: c is NUL-terminated; ts holds two timespecs.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) })
}

/// `lremovexattr(path, name)`; Err is the errno.
pub fn remove_xattr(p: &Path, name: &str) -> Result<(), i32> {
    let (c, n) = (cpath(p), CString::new(name).expect("xattr name"));
    // SAFETY: both are NUL-terminated C strings.
    if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    }
}

/// An `io::Result` reduced to what two implementations must agree on.
pub fn outcome<T>(r: io::Result<T>) -> Result<(), i32> {
    r.map(|_| ()).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// `lstat`'s errno, or 0 when the name exists.
pub fn lstat_errno(p: &Path) -> i32 {
    match fs::symlink_metadata(p) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// A 0/0 character device: the kernel's whiteout.
pub fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Sorted names of a directory.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|d| {
            d.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn read_str(p: &Path) -> String {
    String::from_utf8_lossy(&read(p)).into_owned()
}

/// Writes `data` to `p`, creating missing parent directories.
pub fn put(p: &Path, data: impl AsRef<[u8]>) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

pub fn mkdirs(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, p.display()));
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", p.display()));
}

pub fn symlink(target: &str, p: &Path) {
    std::os::unix::fs::symlink(target, p)
        .unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", p.display()));
}

pub fn mkwhiteout(p: &Path) {
    mknod(p, libc::S_IFCHR, 0, 0).unwrap_or_else(|e| panic!("mknod 0/0 {}: {e}", p.display()));
}

/// Deterministic bytes.
pub fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut r = XorShift::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

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

// ---------------------------------------------------------------------------------
// Layer stacks

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

// ---------------------------------------------------------------------------------
// Views

/// `walk(root)` without what may legitimately differ between a union and a plain
/// directory: the implementations' own xattrs that a *foreign* reader shows. fimfs
/// writes `trusted.overlay.opaque` beside `user.overlay.opaque` as root, and marks
/// copies with `user.fimfs.origin`; the kernel mounted with `userxattr` lists both,
/// fimfs hides them. (That fimfs hides every private xattr through its own mount is
/// checked in `mount_write`.) With `nlink == false` link counts are left out too.
pub fn view(root: &Path, nlink: bool) -> Tree {
    let mut t = walk(root);
    for e in t.entries.values_mut() {
        if let Ok(x) = &mut e.xattrs {
            x.retain(|k, _| !is_foreign_private_xattr(k));
        }
        if !nlink {
            e.nlink = None;
        }
    }
    t
}

/// `trusted.overlay.*`, `user.fimfs.*`, `trusted.fimfs.*` (the key may be quoted).
pub fn is_foreign_private_xattr(key: &str) -> bool {
    let k = key.trim_start_matches('"');
    ["trusted.overlay.", "user.fimfs.", "trusted.fimfs."]
        .iter()
        .any(|p| k.starts_with(p))
}

/// The root's own attributes are the upper's or the backing directory's business.
pub fn without_root(mut t: Tree) -> Tree {
    t.entries.remove(&Vec::new());
    t
}

pub fn assert_same_view(a: &str, ta: &Tree, b: &str, tb: &Tree) {
    assert_same_tree(a, ta, b, tb);
}

/// Every path of a tree (relative, as bytes), root excluded.
pub fn paths(t: &Tree) -> Vec<Vec<u8>> {
    t.entries
        .keys()
        .filter(|k| !k.is_empty())
        .cloned()
        .collect()
}

/// `sh -c SCRIPT` in `dir` as `uid:gid` (std drops the supplementary groups); returns the exit
/// code and stdout+stderr.
pub fn run_as(uid: u32, gid: u32, dir: &Path, script: &str) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("LC_ALL", "C");
    if uid != 0 {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("run sh");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// `mv -T SRC DST`, as a user would rename (it falls back to copy + delete on EXDEV).
pub fn mv(src: &Path, dst: &Path) {
    let out = Command::new("mv")
        .arg("-T")
        .arg(src)
        .arg(dst)
        .output()
        .expect("run mv");
    assert!(
        out.status.success(),
        "mv -T {} {}: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lists what is inside `dir` on disk, recursively, relative paths sorted.
pub fn disk_entries(dir: &Path) -> Vec<String> {
    paths(&walk(dir))
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------
// Inode numbers

/// What a file is, for telling two files apart by more than their number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    kind: u32,
    size: u64,
    nlink: u64,
    content: Option<u64>,
    target: Option<Vec<u8>>,
}

/// Every `st_ino` under `root` names one file: names that share a number
/// have the same type, size, link count and contents (they are hard links),
/// and no directory shares its number. Returns the conflicts, path by path.
pub fn numbers_naming_several_files(root: &Path) -> Vec<String> {
    fn walk(
        dir: &Path,
        rel: &Path,
        seen: &mut std::collections::HashMap<u64, (PathBuf, Identity)>,
        bad: &mut Vec<String>,
    ) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let rel = rel.join(e.file_name());
            let Ok(md) = fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = md.mode() & libc::S_IFMT;
            let id = Identity {
                kind,
                size: if md.is_dir() { 0 } else { md.size() },
                nlink: if md.is_dir() { 0 } else { md.nlink() },
                content: md
                    .is_file()
                    .then(|| fs::read(&path).map_or(0, |d| fnv1a64(&d))),
                target: md.is_symlink().then(|| {
                    fs::read_link(&path).map_or(Vec::new(), |t| t.into_os_string().into_vec())
                }),
            };
            match seen.get(&md.ino()) {
                Some((other, _)) if md.is_dir() => bad.push(format!(
                    "{} and {} share st_ino {} (a directory)",
                    other.display(),
                    rel.display(),
                    md.ino()
                )),
                Some((other, oid)) if *oid != id => bad.push(format!(
                    "{} {oid:?} and {} {id:?} share st_ino {}",
                    other.display(),
                    rel.display(),
                    md.ino()
                )),
                Some(_) => {}
                None => {
                    seen.insert(md.ino(), (rel.clone(), id));
                }
            }
            if md.is_dir() {
                walk(&path, &rel, seen, bad);
            }
        }
    }
    let mut seen = std::collections::HashMap::new();
    let mut bad = Vec::new();
    walk(root, Path::new(""), &mut seen, &mut bad);
    bad
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

//! Raw syscalls the standard library lacks, and small file helpers that fail the
//! test with the path in the message.
//!
//! One error type: a call that can fail as part of what a test checks returns
//! `Result<_, i32>` (the errno) or `io::Result`; a helper that only sets a test up
//! panics instead. Nothing here follows a symlink unless its name says so.
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------------
// Extended attributes (libc; nix 0.29 has no xattr calls)

/// `lsetxattr(path, name, value, 0)`; Err is the errno.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name"));
    // SAFETY: p and n are NUL-terminated; value is valid for value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// `lgetxattr(path, name)`; Err is the errno.
pub fn get_xattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name"));
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the value's size.
        let size = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(errno());
        }
        let mut buf = vec![0u8; size as usize + 1];
        // SAFETY: buf is valid for buf.len() bytes.
        let got =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        if errno() != libc::ERANGE {
            return Err(errno());
        }
    }
}

/// `llistxattr(path)`, sorted; Err is the errno.
pub fn list_xattrs(path: &Path) -> Result<Vec<Vec<u8>>, i32> {
    let p = cpath(path);
    loop {
        // SAFETY: a NULL buffer of size 0 asks for the list's size.
        let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(errno());
        }
        let mut buf = vec![0u8; size as usize + 1];
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            let mut names: Vec<Vec<u8>> = buf
                .split(|&b| b == 0)
                .filter(|n| !n.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            names.sort();
            return Ok(names);
        }
        if errno() != libc::ERANGE {
            return Err(errno());
        }
    }
}

/// `lremovexattr(path, name)`; Err is the errno.
pub fn remove_xattr(p: &Path, name: &str) -> Result<(), i32> {
    let (c, n) = (cpath(p), CString::new(name).expect("xattr name"));
    // SAFETY: both are NUL-terminated C strings.
    if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Every xattr of `p` (not following a symlink), name → value; names that cannot
/// be listed or read are left out.
pub fn all_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for n in list_xattrs(p).unwrap_or_default() {
        let name = String::from_utf8_lossy(&n).into_owned();
        if let Ok(v) = get_xattr(p, &name) {
            out.insert(name, v);
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Raw syscalls

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

/// Appends `data` to `p` through `O_APPEND`.
pub fn append(p: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open O_APPEND {}: {e}", p.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("append to {}: {e}", p.display()));
}

/// The names `listxattr` gives for `p`, as (lossy) strings.
pub fn xattr_names(p: &Path) -> Vec<String> {
    list_xattrs(p)
        .unwrap_or_else(|e| panic!("listxattr {}: errno {e}", p.display()))
        .into_iter()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect()
}

/// `st_mtime` of `p` (not following a symlink), seconds and nanoseconds.
pub fn mtime(p: &Path) -> (i64, i64) {
    let m = lstat(p);
    (m.mtime(), m.mtime_nsec())
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

// ---------------------------------------------------------------------------------
// Errno assertions and processes

/// The errno of a failed `io::Result`, or a test failure naming what succeeded.
pub fn errno_of<T: std::fmt::Debug>(what: &str, r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: {e} has no errno")),
    }
}

/// `d_ino` of every entry of `dir`, by name.
pub fn dir_inos(dir: &Path) -> BTreeMap<Vec<u8>, u64> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|de| {
            let de = de.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
            (de.file_name().into_vec(), de.ino())
        })
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

/// Running, not a zombie waiting for a parent that does not reap.
pub fn process_alive(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "PID (comm) STATE ...": the state follows the last ')'.
    let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
    matches!(state, Some(Some(c)) if c != 'Z' && c != 'X')
}

/// Waits up to [`DAEMON_DEADLINE`](super::DAEMON_DEADLINE) for `pids` to exit;
/// returns those still running.
pub fn wait_gone(pids: &[u32]) -> Vec<u32> {
    let start = std::time::Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
        if left.is_empty() || start.elapsed() > super::DAEMON_DEADLINE {
            return left;
        }
        std::thread::sleep(super::POLL);
    }
}

/// `sync; echo LEVEL > /proc/sys/vm/drop_caches`: the kernel forgets what it
/// cached (3: pages, dentries and inodes, so a FUSE mount gets FORGETs).
pub fn drop_caches(level: u8) {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", format!("{level}\n"))
        .unwrap_or_else(|e| panic!("echo {level} > /proc/sys/vm/drop_caches: {e}"));
}

/// `program`, to be run as `uid`:`uid` with no supplementary groups
/// (`setpriv --reuid=U --regid=U --clear-groups PROGRAM`); the caller adds
/// the arguments.
pub fn setpriv(uid: u32, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program);
    c
}

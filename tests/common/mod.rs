//! Helpers shared by the integration tests that need a real mount.
//!
//! - [`require_root_and_fuse`]: these tests never skip. Without root or FUSE they fail
//!   with a message that says what is missing (in CI, `CI=true`, and everywhere else).
//! - [`TempDir`]: a scratch directory that lazily unmounts anything still mounted
//!   below it before it removes itself, so a failed test never leaves a mount behind.
//! - [`MountGuard`] (a fimfs daemon in the foreground) and [`KernelOverlayGuard`]
//!   (the kernel overlay, the reference implementation).
//! - [`build_fixtures`]: `fixtures/build.sh`, the sample layer set.
//! - [`snapshot`] / [`walk`]: what a tree looks like through `lstat`, `readlink`,
//!   `read`, `listxattr` and `readdir`, never following a symlink.
//! - [`generate_tree`]: a deterministic many-file, many-lower tree for comparisons.
//!
//! Every test binary uses a different subset of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The fimfs binary under test.
pub const FIMFS: &str = env!("CARGO_BIN_EXE_fimfs");

/// `statfs(2)` `f_type` of a FUSE mount; FlatImage spins on exactly this value.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// How long a daemon may take to make its mount live (or to exit after an unmount)
/// before the test fails. Generous: a loaded CI machine must not make a test flaky.
pub const DAEMON_DEADLINE: Duration = Duration::from_secs(10);

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(20);

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
// Scratch directories

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed on drop after every mount
/// below it has been lazily unmounted.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = fs::canonicalize(std::env::temp_dir()).expect("canonicalize the temp dir");
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
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

// ---------------------------------------------------------------------------------
// Running the binary

/// What a finished (or killed) command did.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when the command was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "exit {s}")?,
            None => write!(f, "still running after {DAEMON_DEADLINE:?}, killed")?,
        }
        write!(
            f,
            "\n--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `fimfs ARGS` with stdout and stderr going to files in `logs` (not pipes: a
/// daemonized child may keep them open for ever), killing it at the deadline.
pub fn run_fimfs(args: &[OsString], logs: &Path) -> Outcome {
    fs::create_dir_all(logs).expect("create the log directory");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let out_path = logs.join(format!("run-{n}.stdout"));
    let err_path = logs.join(format!("run-{n}.stderr"));
    let mut child = Command::new(FIMFS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout log"))
        .stderr(File::create(&err_path).expect("create stderr log"))
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {FIMFS}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for fimfs") {
            break Some(s);
        }
        if start.elapsed() > DAEMON_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    Outcome {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// `DIR[:DIR...]`, top-most first.
pub fn lowers_arg(lowers: &[PathBuf]) -> OsString {
    let mut s = OsString::new();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            s.push(":");
        }
        s.push(l);
    }
    s
}

/// `mount [-o OPT]... LOWERS [UPPER] MNT`, without `-f`.
pub fn mount_args(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    mnt: &Path,
    opts: &[&str],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["mount".into()];
    for o in opts {
        args.push("-o".into());
        args.push(o.into());
    }
    args.push(lowers_arg(lowers));
    if let Some(u) = upper {
        args.push(u.into());
    }
    args.push(mnt.into());
    args
}

/// A fimfs daemon running in the foreground (`-f`), with its mount live.
/// Drop unmounts lazily and reaps the daemon (killing it if it does not exit).
/// `mount -f [-o OPT]... LOWERS [UPPER] MNT`: the daemon stays in the foreground.
fn foreground_args(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    mnt: &Path,
    opts: &[&str],
) -> Vec<OsString> {
    let mut args = mount_args(lowers, upper, mnt, opts);
    args.insert(1, "-f".into());
    args
}

pub struct MountGuard {
    mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl MountGuard {
    /// `fimfs mount -f [-o OPT]... LOWERS [UPPER] MNT`.
    pub fn new(lowers: &[PathBuf], upper: Option<&Path>, mnt: &Path, opts: &[&str]) -> Self {
        Self::spawn(&foreground_args(lowers, upper, mnt, opts), mnt)
    }

    /// Runs `fimfs ARGS` (which must keep the daemon in the foreground) and waits until
    /// `statfs(mnt)` reports FUSE. Fails the test with the daemon's stderr if it exits
    /// first or if [`DAEMON_DEADLINE`] passes.
    pub fn spawn(args: &[OsString], mnt: &Path) -> Self {
        Self::spawn_limited(args, mnt, None)
    }

    /// [`MountGuard::new`] with the daemon's `RLIMIT_NOFILE` (soft and hard) set to
    /// `nofile`, so that it cannot raise it.
    pub fn with_nofile(
        lowers: &[PathBuf],
        upper: Option<&Path>,
        mnt: &Path,
        opts: &[&str],
        nofile: u64,
    ) -> Self {
        Self::spawn_limited(
            &foreground_args(lowers, upper, mnt, opts),
            mnt,
            Some(nofile),
        )
    }

    fn spawn_limited(args: &[OsString], mnt: &Path, nofile: Option<u64>) -> Self {
        let mnt = mnt.to_path_buf();
        let mut log_name = mnt.file_name().unwrap_or(OsStr::new("mnt")).to_os_string();
        log_name.push(".fimfs-stderr");
        let log = mnt.with_file_name(log_name);
        let log_file = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut cmd = Command::new(FIMFS);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log fd"))
            .stderr(log_file)
            .env("RUST_BACKTRACE", "1");
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: runs in the child between fork and exec; setrlimit is
            // async-signal-safe and the closure captures a plain value.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {FIMFS}: {e}"));

        // statfs() blocks if the daemon mounted but does not answer. The watchdog kills
        // the daemon at the deadline, which aborts the connection and unblocks it.
        let child = Arc::new(Mutex::new(child));
        let timed_out = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let watchdog = {
            let child = Arc::clone(&child);
            let timed_out = Arc::clone(&timed_out);
            thread::spawn(move || {
                // Dropping the sender (ready or failed) disconnects: no kill then.
                if let Err(mpsc::RecvTimeoutError::Timeout) = ready_rx.recv_timeout(DAEMON_DEADLINE)
                {
                    timed_out.store(true, Ordering::SeqCst);
                    let _ = child.lock().unwrap().kill();
                }
            })
        };
        let failure = loop {
            if is_fuse_mount(&mnt) {
                break None;
            }
            let exited = child.lock().unwrap().try_wait().expect("wait for fimfs");
            if let Some(status) = exited {
                break Some(status);
            }
            thread::sleep(POLL);
        };
        drop(ready_tx);
        watchdog.join().expect("watchdog thread");
        let Ok(child) = Arc::try_unwrap(child) else {
            unreachable!("the watchdog thread has been joined");
        };
        let child = child.into_inner().unwrap();
        let guard = MountGuard {
            mnt,
            child: Some(child),
            log,
        };
        if let Some(status) = failure {
            let why = if timed_out.load(Ordering::SeqCst) {
                format!("the mount was not live after {DAEMON_DEADLINE:?} (daemon killed)")
            } else {
                format!("the daemon exited ({status}) before the mount was live")
            };
            let stderr = guard.stderr();
            let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            drop(guard);
            panic!(
                "fimfs {}: {why}\n--- daemon output ---\n{stderr}",
                args.join(" ")
            );
        }
        guard
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts (lazily), waits for the daemon and returns its exit status (`None` if
    /// it had to be killed) and output.
    pub fn unmount(mut self) -> (Option<ExitStatus>, String) {
        let status = self.stop(true);
        (status, self.stderr())
    }

    /// Waits for the daemon to exit by itself (the test unmounted it some other way),
    /// killing it at the deadline. Returns its exit status (`None` if it had to be
    /// killed) and output.
    pub fn wait_exit(mut self) -> (Option<ExitStatus>, String) {
        let status = self.stop(false);
        (status, self.stderr())
    }

    fn stop(&mut self, unmount_first: bool) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if unmount_first {
            lazy_unmount(&self.mnt);
        }
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if start.elapsed() < DAEMON_DEADLINE => thread::sleep(POLL),
                _ => {
                    lazy_unmount(&self.mnt);
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// The kernel overlay mounted over the same kind of layers, as a reference.
pub struct KernelOverlayGuard {
    mnt: PathBuf,
    mounted: bool,
}

impl KernelOverlayGuard {
    /// Read-only: `-o lowerdir=TOP:...:BOTTOM`.
    pub fn lowers_only(lowers: &[PathBuf], mnt: &Path) -> Self {
        let mut opts = OsString::from("lowerdir=");
        opts.push(lowers_arg(lowers));
        Self::mount(opts, mnt)
    }

    /// `-o lowerdir=...,upperdir=UPPER,workdir=WORK`.
    pub fn with_upper(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> Self {
        let mut opts = OsString::from("lowerdir=");
        opts.push(lowers_arg(lowers));
        opts.push(",upperdir=");
        opts.push(upper);
        opts.push(",workdir=");
        opts.push(work);
        Self::mount(opts, mnt)
    }

    /// `-o userxattr,lowerdir=...[,upperdir=UPPER,workdir=WORK]` (creating WORK): the
    /// dialect FlatImage's bwrap backend uses.
    pub fn userxattr(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, mnt: &Path) -> Self {
        let mut opts = OsString::from("userxattr,lowerdir=");
        opts.push(lowers_arg(lowers));
        if let Some((u, w)) = upper {
            fs::create_dir_all(w).unwrap_or_else(|e| panic!("mkdir {}: {e}", w.display()));
            opts.push(",upperdir=");
            opts.push(u);
            opts.push(",workdir=");
            opts.push(w);
        }
        Self::mount(opts, mnt)
    }

    fn mount(opts: OsString, mnt: &Path) -> Self {
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(&opts)
            .arg(mnt)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "mount -t overlay -o {} {}: {}{}",
            opts.to_string_lossy(),
            mnt.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        KernelOverlayGuard {
            mnt: mnt.to_path_buf(),
            mounted: true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// A plain `umount` (everything written reaches the upper); fails the test if it
    /// does not work.
    pub fn unmount(mut self) {
        let st = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .expect("run umount");
        self.mounted = !st.success();
        assert!(st.success(), "umount {} failed: {st}", self.mnt.display());
    }
}

impl Drop for KernelOverlayGuard {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------
// Fixtures

/// Where `fixtures/build.sh` put the sample layers.
pub struct Layers {
    /// Top-most first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub mnt: PathBuf,
}

/// Runs `fixtures/build.sh DEST` (the dialects fimfs reads) and returns the layers.
pub fn build_fixtures(dest: &Path) -> Layers {
    run_build_sh(&[dest.as_os_str()])
}

/// Runs `fixtures/build.sh --kernel-dialect DEST`: the same union, spelled so that the
/// kernel overlay reads it.
pub fn build_fixtures_kernel_dialect(dest: &Path) -> Layers {
    run_build_sh(&[OsStr::new("--kernel-dialect"), dest.as_os_str()])
}

pub fn build_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/build.sh")
}

fn run_build_sh(args: &[&OsStr]) -> Layers {
    let out = Command::new("bash")
        .arg(build_sh())
        .args(args)
        .output()
        .expect("run fixtures/build.sh");
    assert!(
        out.status.success(),
        "fixtures/build.sh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = Path::new(args[args.len() - 1]);
    Layers {
        lowers: (1..=3).map(|i| dest.join(format!("lower{i}"))).collect(),
        upper: dest.join("upper"),
        mnt: dest.join("mnt"),
    }
}

// ---------------------------------------------------------------------------------
// Extended attributes (libc; nix 0.29 has no xattr calls)

fn cpath(p: &Path) -> CString {
    CString::new(bytes(p)).expect("path without NUL")
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

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

// ---------------------------------------------------------------------------------
// Snapshots

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl Kind {
    pub fn of(ft: fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else {
            Kind::Socket
        }
    }
}

/// Permission bits, printed in octal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#o}", self.0)
    }
}

/// One name as seen through `lstat` & co. Directory sizes and link counts are left
/// out (they are the backing filesystem's business); everything else must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `Err(errno)` when `lstat` of a listed name failed.
    pub kind: Result<Kind, i32>,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: Mode,
    pub uid: u32,
    pub gid: u32,
    /// Non-directories only.
    pub size: Option<u64>,
    /// Non-directories only.
    pub nlink: Option<u64>,
    /// Regular files: FNV-1a 64 of the contents, or `Err(errno)` if reading failed.
    pub hash: Option<Result<u64, i32>>,
    /// Symlinks: `readlink`.
    pub target: Option<Vec<u8>>,
    /// Device nodes only.
    pub rdev: Option<u64>,
    /// Name → value (bytes as `escape_ascii` prints them); `Err(errno)` when
    /// `listxattr` failed.
    pub xattrs: Result<BTreeMap<String, String>, i32>,
}

/// Relative path (bytes, `b""` for the root) → entry.
pub type Snapshot = BTreeMap<Vec<u8>, Entry>;

/// Directory (relative path) → its `readdir` names with `d_type`, sorted, duplicates
/// kept, `.` and `..` left out.
pub type Listings = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Kind)>>;

pub struct Tree {
    pub entries: Snapshot,
    pub listings: Listings,
}

pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hash_file(path: &Path) -> Result<u64, i32> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    Ok(fnv1a64(&data))
}

fn xattrs_of(path: &Path) -> Result<BTreeMap<String, String>, i32> {
    let mut map = BTreeMap::new();
    for name in list_xattrs(path)? {
        let value = match get_xattr(path, &String::from_utf8_lossy(&name)) {
            Ok(v) => v.escape_ascii().to_string(),
            Err(e) => format!("<getxattr: errno {e}>"),
        };
        map.insert(name.escape_ascii().to_string(), value);
    }
    Ok(map)
}

/// `lstat` & co. of one path.
pub fn entry_of(path: &Path) -> Entry {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) => {
            return Entry {
                kind: Err(e.raw_os_error().unwrap_or(-1)),
                mode: Mode(0),
                uid: 0,
                gid: 0,
                size: None,
                nlink: None,
                hash: None,
                target: None,
                rdev: None,
                xattrs: Ok(BTreeMap::new()),
            };
        }
    };
    let kind = Kind::of(md.file_type());
    Entry {
        kind: Ok(kind),
        mode: Mode(md.mode() & 0o7777),
        uid: md.uid(),
        gid: md.gid(),
        size: (kind != Kind::Dir).then(|| md.size()),
        nlink: (kind != Kind::Dir).then(|| md.nlink()),
        hash: (kind == Kind::File).then(|| hash_file(path)),
        target: (kind == Kind::Symlink).then(|| {
            fs::read_link(path)
                .map(|t| t.into_os_string().into_vec())
                .unwrap_or_else(|e| format!("<readlink failed: {e}>").into_bytes())
        }),
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| md.rdev()),
        xattrs: xattrs_of(path),
    }
}

/// Walks `root` without ever following a symlink.
pub fn walk(root: &Path) -> Tree {
    let mut tree = Tree {
        entries: BTreeMap::new(),
        listings: BTreeMap::new(),
    };
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let entry = entry_of(&abs);
        let is_dir = entry.kind == Ok(Kind::Dir);
        tree.entries.insert(rel.clone(), entry);
        if !is_dir {
            continue;
        }
        let mut names = Vec::new();
        let rd = fs::read_dir(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
        for de in rd {
            let de = de.unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
            let name = de.file_name().into_vec();
            let kind = de
                .file_type()
                .map(Kind::of)
                .unwrap_or_else(|e| panic!("d_type of {}: {e}", de.path().display()));
            names.push((name, kind));
        }
        names.sort();
        for (name, _) in &names {
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name);
            stack.push(child);
        }
        tree.listings.insert(rel, names);
    }
    tree
}

pub fn snapshot(root: &Path) -> Snapshot {
    walk(root).entries
}

/// Fails with the first differences (up to 40) between two trees.
pub fn assert_same_tree(left_name: &str, left: &Tree, right_name: &str, right: &Tree) {
    let mut diffs = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = left.entries.keys().chain(right.entries.keys()).collect();
    for k in keys {
        match (left.entries.get(k), right.entries.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => diffs.push(format!(
                "{}:\n    {left_name}: {a:?}\n    {right_name}: {b:?}",
                show(k)
            )),
            (Some(_), None) => diffs.push(format!("{}: only in {left_name}", show(k))),
            (None, _) => diffs.push(format!("{}: only in {right_name}", show(k))),
        }
    }
    let dirs: BTreeSet<&Vec<u8>> = left.listings.keys().chain(right.listings.keys()).collect();
    for d in dirs {
        let (a, b) = (left.listings.get(d), right.listings.get(d));
        if a != b {
            diffs.push(format!(
                "readdir {}:\n    {left_name}: {}\n    {right_name}: {}",
                show(d),
                show_listing(a),
                show_listing(b)
            ));
        }
    }
    let n = diffs.len();
    diffs.truncate(40);
    assert!(
        n == 0,
        "{left_name} and {right_name} differ in {n} places (first {}):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn show_listing(l: Option<&Vec<(Vec<u8>, Kind)>>) -> String {
    match l {
        None => "(not listed)".into(),
        Some(v) => v
            .iter()
            .map(|(n, k)| format!("{}:{k:?}", show(n)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

// ---------------------------------------------------------------------------------
// Generated trees

/// xorshift64*: deterministic, good enough to pick names and bytes.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32, opaque: bool },
    File { mode: u32, len: usize, seed: u64 },
    Symlink { target: Vec<u8> },
    Fifo { mode: u32 },
    Whiteout,
}

/// What [`generate_tree`] made.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    pub regular: usize,
    pub symlinks: usize,
    pub fifos: usize,
    pub whiteouts: usize,
    pub opaque_dirs: usize,
    pub dirs: usize,
    /// Visible names that exist in more than one layer.
    pub shadowed: usize,
    /// Whiteouts that hide something of a lower layer.
    pub effective_whiteouts: usize,
    /// Visible directories merged from several layers.
    pub merged_dirs: usize,
    /// Names hidden below an opaque directory.
    pub opaque_hidden: usize,
    /// Files and directories given a `user.gen` xattr.
    pub user_xattrs: usize,
}

pub struct Generated {
    /// Top-most first: `dir/lower1` … `dir/lowerN`.
    pub lowers: Vec<PathBuf>,
    pub stats: GenStats,
    /// Every path the union must show (root included as `b""`), from the model.
    pub expected: BTreeSet<Vec<u8>>,
}

const FILE_MODES: [u32; 8] = [0o644, 0o644, 0o644, 0o755, 0o600, 0o444, 0o640, 0o4755];
const DIR_MODES: [u32; 6] = [0o755, 0o755, 0o755, 0o700, 0o555, 0o1777];
const OWNERS: [(u32, u32); 4] = [(0, 0), (1000, 1000), (0, 100), (65534, 65534)];

fn join_rel(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn parent_rel(p: &[u8]) -> &[u8] {
    p.iter().rposition(|&b| b == b'/').map_or(&[], |i| &p[..i])
}

fn base_rel(p: &[u8]) -> &[u8] {
    p.iter()
        .rposition(|&b| b == b'/')
        .map_or(p, |i| &p[i + 1..])
}

/// A directory name from the shared pool; a few are not plain ASCII.
fn dir_name(i: usize) -> Vec<u8> {
    match i % 23 {
        7 => format!("dir {i} with spaces").into_bytes(),
        11 => format!("ünïcödé-{i}").into_bytes(),
        13 => [b"latin1-\xe9t\xe9-".as_slice(), i.to_string().as_bytes()].concat(),
        _ => format!("d{i:03}").into_bytes(),
    }
}

/// A non-directory name from a directory's pool (also used for clashing directories).
fn file_name(k: usize) -> Vec<u8> {
    match k % 97 {
        5 => {
            let mut n = format!("long-{k}-").into_bytes();
            n.resize(255, b'x');
            n
        }
        17 => format!("Mixed.Case.{k}.TXT").into_bytes(),
        _ => format!("f{k:03}").into_bytes(),
    }
}

/// Every visible path, and each visible directory with the layers merged into it.
type Resolved = (BTreeSet<Vec<u8>>, Vec<(Vec<u8>, Vec<usize>)>);

/// Layers as ordered maps: path → node. A path's ancestors are always `Dir`s of the
/// same layer, and a map is written out in order, parents first.
struct Model {
    layers: Vec<BTreeMap<Vec<u8>, Node>>,
    owners: Vec<BTreeMap<Vec<u8>, (u32, u32)>>,
}

impl Model {
    fn children(&self, layer: usize, dir: &[u8]) -> Vec<Vec<u8>> {
        let prefix = if dir.is_empty() {
            Vec::new()
        } else {
            join_rel(dir, b"")
        };
        self.layers[layer]
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p.is_empty() && parent_rel(p) == dir)
            .map(|(p, _)| base_rel(p).to_vec())
            .collect()
    }

    /// The union's rules, independent of any implementation: returns every visible
    /// path and, for each visible directory, the layers merged into it.
    fn resolve(&self, stats: &mut GenStats) -> Resolved {
        let mut visible = BTreeSet::new();
        let mut dirs = Vec::new();
        let mut stack: Vec<(Vec<u8>, Vec<usize>)> =
            vec![(Vec::new(), (0..self.layers.len()).collect())];
        visible.insert(Vec::new());
        while let Some((dir, chain)) = stack.pop() {
            let mut names = BTreeSet::new();
            for &l in &chain {
                names.extend(self.children(l, &dir));
            }
            for name in names {
                let path = join_rel(&dir, &name);
                let present: Vec<usize> = chain
                    .iter()
                    .copied()
                    .filter(|&l| self.layers[l].contains_key(&path))
                    .collect();
                let top = present[0];
                match &self.layers[top][&path] {
                    Node::Whiteout => {
                        if present.len() > 1 {
                            stats.effective_whiteouts += 1;
                        }
                    }
                    Node::Dir { opaque, .. } => {
                        let mut sub = vec![top];
                        if !opaque {
                            for &l in &present[1..] {
                                match &self.layers[l][&path] {
                                    Node::Dir { opaque, .. } => {
                                        sub.push(l);
                                        if *opaque {
                                            break;
                                        }
                                    }
                                    _ => break,
                                }
                            }
                        }
                        if present.len() > 1 {
                            stats.shadowed += 1;
                        }
                        visible.insert(path.clone());
                        stack.push((path, sub));
                    }
                    _ => {
                        if present.len() > 1 {
                            stats.shadowed += 1;
                        }
                        visible.insert(path);
                    }
                }
            }
            if let Some(&last) = chain.last()
                && let Some(Node::Dir { opaque: true, .. }) = self.layers[last].get(&dir)
            {
                stats.opaque_hidden += (last + 1..self.layers.len())
                    .map(|l| self.children(l, &dir).len())
                    .sum::<usize>();
            }
            dirs.push((dir, chain));
        }
        (visible, dirs)
    }
}

/// Builds `dir/lower1` (top-most) … `dir/lower<lowers>` with at least `files` regular
/// files in all, deterministically from `seed`: a shared pool of directories that
/// each layer partly repeats (merged directories), names that recur across layers
/// (shadowing, file/directory clashes), 0/0 character-device whiteouts (of files and
/// of whole directories), `trusted.overlay.opaque=y` directories, symlinks (relative,
/// absolute, escaping), fifos, various modes and owners, user xattrs, and some non-ASCII,
/// non-UTF-8 and 255-byte names.
///
/// Only the kernel's own dialect is written, so the kernel overlay can serve as the
/// reference. Whiteouts in a directory that only one layer contributes hide nothing
/// and are left out: the kernel would list them (it passes readdir of an unmerged
/// directory straight through) while fimfs must not.
pub fn generate_tree(dir: &Path, lowers: usize, files: usize, seed: u64) -> Generated {
    assert!(lowers >= 2, "need at least two lowers");
    let mut rng = XorShift::new(seed);
    let mut model = Model {
        layers: vec![BTreeMap::new(); lowers],
        owners: vec![BTreeMap::new(); lowers],
    };
    let mut stats = GenStats::default();

    // The shared directory pool: a tree at most 5 deep.
    let n_dirs = (files / 100).max(20);
    let mut pool: Vec<Vec<u8>> = Vec::with_capacity(n_dirs);
    for i in 0..n_dirs {
        let candidates: Vec<&Vec<u8>> = pool
            .iter()
            .filter(|p| p.iter().filter(|&&b| b == b'/').count() < 4)
            .collect();
        let parent = if candidates.is_empty() || rng.chance(15) {
            Vec::new()
        } else {
            (*rng.pick(&candidates)).clone()
        };
        pool.push(join_rel(&parent, &dir_name(i)));
    }
    let names_per_dir = (files * 3 / 2 / n_dirs).max(8);

    // Each layer repeats part of the pool (with ancestors).
    for l in 0..lowers {
        model.layers[l].insert(
            Vec::new(),
            Node::Dir {
                mode: 0o755,
                opaque: false,
            },
        );
        for p in &pool {
            if !rng.chance(60) {
                continue;
            }
            let mut ancestors = vec![p.clone()];
            let mut q = parent_rel(p).to_vec();
            while !q.is_empty() {
                ancestors.push(q.clone());
                q = parent_rel(&q).to_vec();
            }
            for a in ancestors.into_iter().rev() {
                let mode = *rng.pick(&DIR_MODES);
                let opaque = l + 1 < lowers && rng.chance(3);
                model.layers[l]
                    .entry(a)
                    .or_insert(Node::Dir { mode, opaque });
            }
        }
    }

    // Non-directories, until there are enough regular files.
    let per_layer = files.div_ceil(lowers);
    for l in 0..lowers {
        let dirs: Vec<Vec<u8>> = model.layers[l]
            .iter()
            .filter(|(_, n)| matches!(n, Node::Dir { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        let mut made = 0;
        while made < per_layer {
            let d = rng.pick(&dirs).clone();
            let roll = rng.below(100);
            let whiteout_dir = roll < 2 && l + 1 < lowers;
            let name = if whiteout_dir {
                // A directory name of the pool under `d`, to hide a whole subtree.
                let subdirs: Vec<&Vec<u8>> = pool
                    .iter()
                    .filter(|p| parent_rel(p) == d.as_slice())
                    .collect();
                if subdirs.is_empty() {
                    continue;
                }
                base_rel(rng.pick(&subdirs).as_slice()).to_vec()
            } else {
                file_name(rng.below(names_per_dir))
            };
            let path = join_rel(&d, &name);
            if model.layers[l].contains_key(&path) {
                continue;
            }
            let node = match roll {
                _ if whiteout_dir => Node::Whiteout,
                2..=9 if l + 1 < lowers => Node::Whiteout,
                10..=16 => Node::Symlink {
                    target: match rng.below(4) {
                        0 => b"../../..".to_vec(),
                        1 => b"/etc/passwd".to_vec(),
                        2 => file_name(rng.below(names_per_dir)),
                        _ => format!("../{}/missing", String::from_utf8_lossy(&name)).into_bytes(),
                    },
                },
                17..=18 => Node::Fifo {
                    mode: *rng.pick(&FILE_MODES) & 0o777,
                },
                19..=21 => {
                    // A directory where other layers have a file of that name.
                    let mode = *rng.pick(&DIR_MODES);
                    model.layers[l].insert(
                        path.clone(),
                        Node::Dir {
                            mode,
                            opaque: false,
                        },
                    );
                    for k in 0..1 + rng.below(3) {
                        let inner = join_rel(&path, &file_name(k));
                        let seed = rng.next_u64();
                        model.layers[l].insert(
                            inner,
                            Node::File {
                                mode: 0o644,
                                len: 64,
                                seed,
                            },
                        );
                        made += 1;
                    }
                    continue;
                }
                _ => {
                    let len = match rng.below(20) {
                        0 => 0,
                        1..=14 => rng.below(256),
                        _ => rng.below(16 * 1024),
                    };
                    Node::File {
                        mode: *rng.pick(&FILE_MODES),
                        len,
                        seed: rng.next_u64(),
                    }
                }
            };
            if matches!(node, Node::File { .. }) {
                made += 1;
            }
            if rng.chance(10) && !matches!(node, Node::Whiteout) {
                model.owners[l].insert(path.clone(), *rng.pick(&OWNERS));
            }
            model.layers[l].insert(path, node);
        }
    }

    // Whiteouts in a directory only one layer contributes hide nothing: drop them.
    let mut scratch = GenStats::default();
    let (_, resolved) = model.resolve(&mut scratch);
    for (d, chain) in &resolved {
        if let [only] = chain.as_slice() {
            for name in model.children(*only, d) {
                let p = join_rel(d, &name);
                if model.layers[*only][&p] == Node::Whiteout {
                    model.layers[*only].remove(&p);
                }
            }
        }
    }
    let (expected, resolved) = model.resolve(&mut stats);
    stats.merged_dirs = resolved.iter().filter(|(_, c)| c.len() > 1).count();

    // Write it out. Some files and directories get a user xattr, whose value names
    // the layer, so that a merged directory's xattrs show which copy is used.
    let mut xrng = XorShift::new(seed ^ 0x7a77_7a77);
    let mut lower_paths = Vec::new();
    for l in 0..lowers {
        let root = dir.join(format!("lower{}", l + 1));
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        for (rel, node) in &model.layers[l] {
            let p = if rel.is_empty() {
                root.clone()
            } else {
                root.join(OsStr::from_bytes(rel))
            };
            write_node(&p, node, model.owners[l].get(rel).copied(), &mut stats)
                .unwrap_or_else(|e| panic!("generate {}: {e}", p.display()));
            if matches!(node, Node::Dir { .. } | Node::File { .. }) && xrng.chance(4) {
                let value = format!("lower{} {}", l + 1, rel.escape_ascii());
                set_xattr(&p, "user.gen", value.as_bytes())
                    .unwrap_or_else(|e| panic!("setxattr {}: errno {e}", p.display()));
                stats.user_xattrs += 1;
            }
        }
        lower_paths.push(root);
    }
    Generated {
        lowers: lower_paths,
        stats,
        expected,
    }
}

fn write_node(
    p: &Path,
    node: &Node,
    owner: Option<(u32, u32)>,
    stats: &mut GenStats,
) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let chown = |p: &Path| match owner {
        Some((u, g)) => std::os::unix::fs::lchown(p, Some(u), Some(g)),
        None => Ok(()),
    };
    // chown before chmod: chown clears the setuid bit.
    match node {
        Node::Dir { mode, opaque } => {
            if !p.exists() {
                fs::create_dir(p)?;
            }
            chown(p)?;
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))?;
            if *opaque {
                set_xattr(p, "trusted.overlay.opaque", b"y")
                    .map_err(io::Error::from_raw_os_error)?;
                stats.opaque_dirs += 1;
            }
            stats.dirs += 1;
        }
        Node::File { mode, len, seed } => {
            let mut r = XorShift::new(*seed);
            let data: Vec<u8> = (0..*len).map(|_| r.next_u64() as u8).collect();
            fs::write(p, data)?;
            chown(p)?;
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))?;
            stats.regular += 1;
        }
        Node::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), p)?;
            chown(p)?;
            stats.symlinks += 1;
        }
        Node::Fifo { mode } => {
            nix::unistd::mkfifo(p, Mode::from_bits_truncate(*mode))?;
            chown(p)?;
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))?;
            stats.fifos += 1;
        }
        Node::Whiteout => {
            mknod(p, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
            stats.whiteouts += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Small assertions

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

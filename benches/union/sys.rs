//! Processes, mounts and sandboxes for the union benchmark: running a
//! workload command with a timeout, the two ways of entering a kernel
//! overlay (bwrap `--overlay`, or `unshare` + `mount -t overlay`), managing
//! the fimfs daemon's mount, and never leaving a mount behind.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Process group of the command currently running, so a signal handler can
/// kill it before unmounting.
static CHILD_PGID: AtomicI32 = AtomicI32::new(0);
/// Write end of the self-pipe the signal handler writes to.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

pub struct Ran {
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn describe_failure(&self) -> String {
        let mut s = format!("{}", self.status);
        let err = self.brief_stderr();
        if !err.is_empty() {
            s.push_str(": ");
            s.push_str(&err);
        }
        s
    }

    /// The first lines of stderr, enough to see what went wrong.
    pub fn brief_stderr(&self) -> String {
        const LINES: usize = 3;
        let lines: Vec<&str> = self.stderr.trim().lines().collect();
        let mut s = lines
            .iter()
            .take(LINES)
            .map(|l| tail(l, 300))
            .collect::<Vec<_>>()
            .join("\n");
        if lines.len() > LINES {
            s.push_str(&format!("\n… ({} more lines)", lines.len() - LINES));
        }
        s
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Runs `cmd` in its own process group, killing the group after `timeout`.
/// The returned `elapsed` spans spawn to exit. Stdout/stderr are captured
/// unless the caller redirected them already (`capture == false`).
pub fn run(mut cmd: Command, timeout: Duration, capture: bool) -> Result<Ran, String> {
    stop_if_interrupted();
    cmd.stdin(Stdio::null()).process_group(0);
    if capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let desc = format!("{cmd:?}");
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("cannot run {desc}: {e}"))?;
    let pgid = child.id() as i32;
    CHILD_PGID.store(pgid, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on a process group we created; no memory involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            true
        } else {
            false
        }
    });
    let out = child.wait_with_output();
    let elapsed = start.elapsed();
    CHILD_PGID.store(0, Ordering::SeqCst);
    stop_if_interrupted();
    drop(tx);
    let timed_out = watchdog.join().unwrap_or(false);
    let out = out.map_err(|e| format!("waiting for {desc}: {e}"))?;
    if timed_out {
        return Err(format!(
            "timed out after {timeout:?} (killed): {desc}\nstderr: {}",
            tail(String::from_utf8_lossy(&out.stderr).trim(), 1500)
        ));
    }
    Ok(Ran {
        elapsed,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
pub fn drop_caches() -> io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3\n")
}

pub fn sync() {
    // SAFETY: as above.
    unsafe { libc::sync() };
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Empties `dir` (creating it if needed).
pub fn reset_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(dir)
}

/// Paths the benchmark puts into `sh -c` strings and mount options must not
/// need quoting.
pub fn shell_safe(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    })
}

// ---------------------------------------------------------------------------
// Mount table

pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn mounts() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mountpoint = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape_mountinfo(mountpoint)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

pub fn is_fuse_mounted(path: &Path) -> bool {
    mounts()
        .iter()
        .any(|m| m.mountpoint == path && m.fstype.starts_with("fuse"))
}

/// Unmounts everything mounted at or below `dir`, deepest first. Returns
/// what it unmounted.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut done = Vec::new();
    for _round in 0..5 {
        let mut found: Vec<MountEntry> = mounts()
            .into_iter()
            .filter(|m| m.mountpoint.starts_with(dir))
            .collect();
        if found.is_empty() {
            break;
        }
        found.sort_by_key(|m| std::cmp::Reverse(m.mountpoint.components().count()));
        for m in found {
            let ok = if m.fstype.starts_with("fuse") {
                quiet(Command::new("fusermount3").arg("-u").arg(&m.mountpoint))
                    || quiet(Command::new("fusermount3").arg("-uz").arg(&m.mountpoint))
                    || quiet(Command::new("umount").arg("-l").arg(&m.mountpoint))
            } else {
                quiet(Command::new("umount").arg(&m.mountpoint))
                    || quiet(Command::new("umount").arg("-l").arg(&m.mountpoint))
            };
            if ok {
                done.push(m.mountpoint);
            }
        }
    }
    done
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes run directories of earlier benchmark processes that died without
/// cleaning up (their mounts first).
pub fn clean_stale_runs(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if alive {
            continue;
        }
        let dir = e.path();
        let gone = unmount_all_under(&dir);
        if !gone.is_empty() {
            eprintln!("fimfs-bench: unmounted stale {gone:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

// ---------------------------------------------------------------------------
// Signals: unmount and clean up on Ctrl-C / SIGTERM / SIGHUP.

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` outlives the call.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

static CLEANUP_ARMED: AtomicBool = AtomicBool::new(false);
/// Set once a signal started the cleanup; the main thread then stops at its
/// next command and waits for the cleanup thread to exit the process.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn stop_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// On SIGINT/SIGTERM/SIGHUP: kill the running workload, unmount everything
/// under `run_dir`, remove it (unless `keep`) and exit.
pub fn install_signal_cleanup(run_dir: PathBuf, keep: bool) {
    if CLEANUP_ARMED.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2(2) fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    SIGNAL_FD.store(fds[1], Ordering::SeqCst);
    let rfd = fds[0];
    thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(rfd, (&mut b as *mut u8).cast(), 1) };
        if n != 1 {
            return;
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
        let _ = writeln!(io::stderr(), "\nfimfs-bench: signal {b}, cleaning up");
        let pgid = CHILD_PGID.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill(2) on our child's process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(100));
        unmount_all_under(&run_dir);
        if !keep {
            let _ = fs::remove_dir_all(&run_dir);
        }
        std::process::exit(128 + b as i32);
    });
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls write(2).
        unsafe { libc::signal(sig, handler) };
    }
}

// ---------------------------------------------------------------------------
// Launchers

/// How a workload enters its mount namespace.
pub enum Launcher {
    /// bwrap >= 0.10: `--overlay-src`/`--overlay`/`--ro-overlay` for the
    /// kernel side, `--bind` of the fimfs mount for the fimfs side.
    Bwrap { bin: PathBuf, version: String },
    /// No usable bwrap: `unshare --mount` + `mount -t overlay` / `mount --bind`.
    Unshare { why: String },
}

fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let v = s.split_whitespace().last()?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        it.next()??,
        it.next().flatten().unwrap_or(0),
        it.next().flatten().unwrap_or(0),
    ))
}

impl Launcher {
    pub fn detect() -> Launcher {
        if std::env::var("FIMFS_BENCH_LAUNCHER").as_deref() == Ok("unshare") {
            return Launcher::Unshare {
                why: "FIMFS_BENCH_LAUNCHER=unshare".into(),
            };
        }
        let bin = std::env::var_os("FIMFS_BWRAP")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/fimfs-bwrap/bin/bwrap"));
        let out = Command::new(&bin).arg("--version").output();
        let text = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Ok(o) => {
                return Launcher::Unshare {
                    why: format!("{} --version failed: {}", bin.display(), o.status),
                };
            }
            Err(e) => {
                return Launcher::Unshare {
                    why: format!("no bwrap at {}: {e}", bin.display()),
                };
            }
        };
        match parse_version(&text) {
            Some(v) if v >= (0, 10, 0) => Launcher::Bwrap { bin, version: text },
            _ => Launcher::Unshare {
                why: format!("{} is `{text}`, need >= 0.10 for --overlay", bin.display()),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Launcher::Bwrap { bin, version } => format!("{version} ({})", bin.display()),
            Launcher::Unshare { why } => {
                format!("unshare --mount + mount -t overlay (bwrap unusable: {why})")
            }
        }
    }

    /// The kernel-overlay side: `script` runs with the overlay of `lowers`
    /// (top-most first) mounted at `mnt`; read-only when `rw` is `None`,
    /// else with `(upper, work)`.
    pub fn kernel(
        &self,
        lowers: &[PathBuf],
        rw: Option<(&Path, &Path)>,
        mnt: &Path,
        script: &str,
    ) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                c.args(["--dev-bind", "/", "/"]);
                // bwrap takes the layers bottom-most first.
                for l in lowers.iter().rev() {
                    c.arg("--overlay-src").arg(l);
                }
                match rw {
                    Some((upper, work)) => {
                        c.arg("--overlay").arg(upper).arg(work).arg(mnt);
                    }
                    None => {
                        c.arg("--ro-overlay").arg(mnt);
                    }
                }
                c.args(["--", "sh", "-c", script]);
                c
            }
            Launcher::Unshare { .. } => {
                let lowerdir: Vec<String> =
                    lowers.iter().map(|l| l.display().to_string()).collect();
                let mut opts = format!("lowerdir={}", lowerdir.join(":"));
                match rw {
                    Some((upper, work)) => {
                        opts.push_str(&format!(
                            ",upperdir={},workdir={}",
                            upper.display(),
                            work.display()
                        ));
                    }
                    None => opts.insert_str(0, "ro,"),
                }
                let inner = format!(
                    "mount -t overlay overlay -o {opts} {} && {{\n{script}\n}}",
                    mnt.display()
                );
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c", &inner]);
                c
            }
        }
    }

    /// The fimfs side: `script` runs with the fimfs mount at `src` bound onto
    /// `mnt`, in the same kind of sandbox as the kernel side.
    pub fn fimfs(&self, src: &Path, mnt: &Path, script: &str) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                c.args(["--dev-bind", "/", "/", "--bind"])
                    .arg(src)
                    .arg(mnt)
                    .args(["--", "sh", "-c", script]);
                c
            }
            Launcher::Unshare { .. } => {
                let inner = format!(
                    "mount --bind {} {} && {{\n{script}\n}}",
                    src.display(),
                    mnt.display()
                );
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c", &inner]);
                c
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The fimfs daemon

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Unmounted,
    ReadOnly,
    ReadWrite,
}

/// One fimfs mount at `mnt`, read-only (lowers only) or read-write.
pub struct Fimfs {
    pub bin: PathBuf,
    pub mnt: PathBuf,
    lowers: String,
    opts: Option<String>,
    log: PathBuf,
    state: State,
    /// Where the daemon keeps `work/<PID>` for a read-write mount.
    workroot: Option<PathBuf>,
    /// Unmounts after which the daemon did not clean up in time.
    pub warnings: usize,
}

impl Fimfs {
    pub fn new(
        bin: PathBuf,
        mnt: PathBuf,
        lowers: &[PathBuf],
        opts: Option<String>,
        log: PathBuf,
    ) -> Self {
        let lowers = lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        Fimfs {
            bin,
            mnt,
            lowers,
            opts,
            log,
            state: State::Unmounted,
            workroot: None,
            warnings: 0,
        }
    }

    pub fn is_ro(&self) -> bool {
        self.state == State::ReadOnly && is_fuse_mounted(&self.mnt)
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        tail(s.trim(), 1500)
    }

    /// Mounts read-only (`upper == None`) or read-write over `upper`,
    /// unmounting any previous mount first. Returns once the mount is live.
    pub fn mount(&mut self, upper: Option<&Path>) -> Result<(), String> {
        self.unmount()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("mount");
        if let Some(o) = &self.opts {
            cmd.arg("-o").arg(o);
        }
        cmd.arg(&self.lowers);
        if let Some(u) = upper {
            cmd.arg(u);
        }
        cmd.arg(&self.mnt);
        // Files, not pipes: the daemon inherits them and outlives the command.
        cmd.stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let desc = format!(
            "`fimfs mount{}{}`",
            if upper.is_some() {
                " LOWERS UPPER "
            } else {
                " LOWERS "
            },
            self.mnt.display()
        );
        let ran = run(cmd, Duration::from_secs(60), false)?;
        if !ran.status.success() {
            return Err(format!(
                "{desc} failed: {}; daemon log: {}",
                ran.status,
                self.log_tail()
            ));
        }
        // The CLI returns once the mount is live; allow a little slack anyway.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_fuse_mounted(&self.mnt) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{desc} exited 0 but {} is not a FUSE mount; daemon log: {}",
                    self.mnt.display(),
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.state = if upper.is_some() {
            State::ReadWrite
        } else {
            State::ReadOnly
        };
        self.workroot = upper.and_then(|u| u.parent()).map(|p| p.join("work"));
        Ok(())
    }

    /// `fusermount3 -u`, retried while busy, lazily as a last resort; then
    /// waits for the daemon to remove its workdir.
    pub fn unmount(&mut self) -> Result<(), String> {
        if is_fuse_mounted(&self.mnt) {
            let mut ok = false;
            for _ in 0..50 {
                let out = Command::new("fusermount3")
                    .arg("-u")
                    .arg(&self.mnt)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("fusermount3: {e}"))?;
                if out.status.success() || !is_fuse_mounted(&self.mnt) {
                    ok = true;
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            if !ok {
                eprintln!(
                    "fimfs-bench: {} busy, unmounting lazily",
                    self.mnt.display()
                );
                quiet(Command::new("fusermount3").arg("-uz").arg(&self.mnt));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while is_fuse_mounted(&self.mnt) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} still mounted after unmount",
                        self.mnt.display()
                    ));
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        // The daemon removes work/<PID> when it exits; wait for that so the
        // next mount and the upper reset do not race it.
        if let Some(w) = self.workroot.take() {
            let start = Instant::now();
            loop {
                let entries: Vec<String> = fs::read_dir(&w)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                if entries.is_empty() {
                    break;
                }
                let running: Vec<&String> = entries.iter().filter(|e| process_running(e)).collect();
                let waited = start.elapsed();
                if running.is_empty() || waited > Duration::from_secs(10) {
                    let why = if running.is_empty() {
                        "exited without removing its workdir".to_string()
                    } else {
                        format!("still running {waited:.1?} after the unmount")
                    };
                    eprintln!(
                        "fimfs-bench: warning: daemon {} {why}; removing {}",
                        entries.join(","),
                        w.display()
                    );
                    self.warnings += 1;
                    let _ = fs::remove_dir_all(&w);
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        self.state = State::Unmounted;
        Ok(())
    }
}

/// Whether `pid` (a decimal string) names a live, non-zombie process.
fn process_running(pid: &str) -> bool {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl Drop for Fimfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("fimfs-bench: {e}");
            unmount_all_under(&self.mnt);
        }
    }
}

//! Processes and mounts for the scale benchmark: timed `sh -c` runs (in the
//! host's mount namespace or in a kernel overlay's private one), the fimfs
//! daemon in the foreground (`-f`) so its PID is known, a kernel overlay
//! held by a helper process in a private mount namespace, memory figures
//! from `/proc`, and never leaving a mount behind.

pub use crate::common::{
    Ran, install_signal_cleanup, is_fuse_mounted, is_root, quiet, run, stop_if_interrupted, tail,
    unmount_all_under,
};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `sh -c script` in its own process group, in the mount namespace
/// `ns` (a `/proc/PID/ns/mnt` fd) if given, killing it after `timeout`.
/// `elapsed` spans spawn to exit.
pub fn run_sh(script: &str, ns: Option<RawFd>, timeout: Duration) -> Result<Ran, String> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    if let Some(fd) = ns {
        // SAFETY: setns(2) only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    run(cmd, timeout, true)
}

/// Our own writes to drop_caches that dropped slab objects (level 2 or 3).
static OWN_SLAB_DROPS: AtomicU64 = AtomicU64::new(0);

/// `sync; echo LEVEL > /proc/sys/vm/drop_caches`.
pub fn drop_caches(level: u8) -> Result<(), String> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if level & 2 != 0 {
        OWN_SLAB_DROPS.fetch_add(1, Ordering::SeqCst);
    }
    fs::write("/proc/sys/vm/drop_caches", format!("{level}\n"))
        .map_err(|e| format!("echo {level} > /proc/sys/vm/drop_caches: {e}"))
}

/// Counts slab drops (`drop_slab` in /proc/vmstat) made by other processes
/// (another benchmark on the same machine) since it was created: they
/// evict the kernel's inodes behind our back and disturb the figures.
pub struct ForeignDrops {
    vmstat: Option<u64>,
    own: u64,
}

fn vmstat_drop_slab() -> Option<u64> {
    let text = fs::read_to_string("/proc/vmstat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("drop_slab "))
        .and_then(|n| n.trim().parse().ok())
}

impl ForeignDrops {
    pub fn start() -> Self {
        ForeignDrops {
            vmstat: vmstat_drop_slab(),
            own: OWN_SLAB_DROPS.load(Ordering::SeqCst),
        }
    }

    pub fn count(&self) -> u64 {
        let own = OWN_SLAB_DROPS.load(Ordering::SeqCst) - self.own;
        match (self.vmstat, vmstat_drop_slab()) {
            (Some(a), Some(b)) => b.saturating_sub(a).saturating_sub(own),
            _ => 0,
        }
    }
}

/// Makes the child get `sig` when the benchmark dies, even by SIGKILL.
fn die_with_parent(cmd: &mut Command, sig: libc::c_int) {
    // SAFETY: prctl(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// Mount table

// ---------------------------------------------------------------------------
// Memory figures

#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
    pub threads: u64,
}

pub fn proc_mem(pid: u32) -> Result<Mem, String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut m = Mem::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let n = v
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok());
        match (k, n) {
            ("VmRSS", Some(n)) => m.rss_kib = n,
            ("VmHWM", Some(n)) => m.hwm_kib = n,
            ("RssAnon", Some(n)) => m.anon_kib = n,
            ("Threads", Some(n)) => m.threads = n,
            _ => {}
        }
    }
    if m.rss_kib == 0 {
        return Err(format!("{path}: no VmRSS (a zombie?)"));
    }
    Ok(m)
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// The soft RLIMIT_NOFILE of `pid`, as `/proc/PID/limits` shows it.
pub fn nofile_limit(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_string)
}

/// Active objects of a slab cache (`/proc/slabinfo`), system-wide.
pub fn slab_active(name: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/slabinfo").ok()?;
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next()? == name {
            it.next()?.parse().ok()
        } else {
            None
        }
    })
}

// ---------------------------------------------------------------------------
// The fimfs daemon

/// A read-only fimfs mount: `fimfs mount -f [-o OPTS] L1:…:Ln MNT`, run as
/// our child so its PID is the daemon's. Unmounted on drop.
pub struct Daemon {
    child: Option<Child>,
    pub mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Mounts and returns once the mount answers (`statfs` sees FUSE).
    /// `nofile` sets the daemon's RLIMIT_NOFILE (soft and hard) instead of
    /// letting it inherit ours.
    pub fn mount(
        bin: &Path,
        lowers: &[PathBuf],
        mnt: &Path,
        opts: Option<&str>,
        nofile: Option<u64>,
        log: &Path,
    ) -> Result<Daemon, String> {
        if is_fuse_mounted(mnt) {
            return Err(format!("{} is already a FUSE mount", mnt.display()));
        }
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let joined = lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut cmd = Command::new(bin);
        cmd.args(["mount", "-f"]);
        if let Some(o) = opts {
            cmd.arg("-o").arg(o);
        }
        cmd.arg(&joined)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf);
        // SIGTERM ends the daemon cleanly (it unmounts itself).
        die_with_parent(&mut cmd, libc::SIGTERM);
        if let Some(n) = nofile {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit(2) only, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|e| match nofile {
            Some(n) => format!(
                "cannot run {} with RLIMIT_NOFILE {n}: {e} (raising the hard limit needs \
                 CAP_SYS_RESOURCE)",
                bin.display()
            ),
            None => format!("cannot run {}: {e}", bin.display()),
        })?;
        let mut d = Daemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            stop_if_interrupted();
            if is_fuse_mounted(mnt) {
                break;
            }
            if let Some(c) = d.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                d.child = None;
                return Err(format!(
                    "`fimfs mount -f … {}` exited with {st} before mounting; daemon log: {}",
                    mnt.display(),
                    d.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not mounted 60 s after starting the daemon; daemon log: {}",
                    mnt.display(),
                    d.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
        // The mount is in the table; statfs waits until the daemon answers.
        let st = nix::sys::statfs::statfs(mnt).map_err(|e| {
            format!(
                "statfs {}: {e}; daemon log: {}",
                mnt.display(),
                d.log_tail()
            )
        })?;
        const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
        if st.filesystem_type().0 as i64 != FUSE_SUPER_MAGIC {
            return Err(format!("{} is not FUSE after mounting", mnt.display()));
        }
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        tail(s.trim(), 1500)
    }

    /// `fusermount3 -u`, retried while busy, `umount -l` as a last resort;
    /// then waits for the daemon to exit (SIGTERM, then SIGKILL, if it does
    /// not). Returns a warning if something was not clean.
    pub fn unmount(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if is_fuse_mounted(&self.mnt) {
            let mut ok = false;
            for _ in 0..50 {
                if quiet(Command::new("fusermount3").arg("-u").arg(&self.mnt))
                    || !is_fuse_mounted(&self.mnt)
                {
                    ok = true;
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            if !ok {
                problems.push(format!("{} busy, unmounted lazily", self.mnt.display()));
                quiet(Command::new("umount").arg("-l").arg(&self.mnt));
            }
        }
        if let Some(mut c) = self.child.take()
            && wait_timeout(&mut c, Duration::from_secs(10)).is_none()
        {
            problems.push(format!(
                "daemon {} still running 10 s after the unmount; SIGTERM",
                c.id()
            ));
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if is_fuse_mounted(&self.mnt) {
            problems.push(format!("{} still mounted", self.mnt.display()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("fimfs-scale: {e}");
            unmount_all_under(&self.mnt);
        }
    }
}

// ---------------------------------------------------------------------------
// The kernel overlay

/// argv[1] that turns the bench binary into the overlay holder.
pub const HELPER: &str = "--fimfs-scale-helper";

/// A read-only kernel overlay, mounted by a helper process (this binary,
/// [`HELPER`]) in a private mount namespace of its own and held there until
/// the helper is killed. Commands enter it with setns(2). Nothing is ever
/// mounted in the benchmark's own namespace, and the namespace (with its
/// mount) goes away with the helper, which dies with the benchmark.
pub struct KernelOverlay {
    child: Child,
    ns: fs::File,
}

impl KernelOverlay {
    /// `lowers` are names relative to `base`, top-most first: the helper
    /// mounts from `base`, so even 100 lowers fit in the mount options page
    /// (`lowerdir=l00:l01:…`).
    pub fn mount(exe: &Path, base: &Path, lowers: &[String], mnt: &Path) -> Result<Self, String> {
        let mut cmd = Command::new(exe);
        cmd.arg(HELPER)
            .arg("kmount")
            .arg(base)
            .arg(mnt)
            .arg(lowers.join(":"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        if read.is_err() || line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!(
                "kernel overlay of {} lowers in {} at {}: {}",
                lowers.len(),
                base.display(),
                mnt.display(),
                tail(err.trim(), 600)
            ));
        }
        let ns = fs::File::open(format!("/proc/{}/ns/mnt", child.id()))
            .map_err(|e| format!("/proc/{}/ns/mnt: {e}", child.id()))?;
        Ok(KernelOverlay { child, ns })
    }

    pub fn ns_fd(&self) -> RawFd {
        self.ns.as_raw_fd()
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The holder side: `HELPER kmount BASE MNT LOWERDIR`.
pub fn helper(args: &[String]) -> Result<(), String> {
    let [cmd, base, mnt, lowerdir] = args else {
        return Err(format!("usage: {HELPER} kmount BASE MNT LOWERDIR"));
    };
    if cmd != "kmount" {
        return Err(format!("unknown helper command {cmd:?}"));
    }
    use nix::mount::{MsFlags, mount};
    // SAFETY: unshare(2) in a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNS): {}",
            io::Error::last_os_error()
        ));
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    // The new namespace holds copies of every mount, FUSE ones included;
    // a copy would keep that FUSE file system alive (its daemon running)
    // after it is unmounted outside, so detach them all here.
    let mut fuse: Vec<PathBuf> = fimfs::mountinfo::read()
        .into_iter()
        .filter(|m| m.is_fuse())
        .map(|m| m.point)
        .collect();
    fuse.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in fuse {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    std::env::set_current_dir(base).map_err(|e| format!("cd {base}: {e}"))?;
    let data = format!("lowerdir={lowerdir}");
    mount(
        Some("overlay"),
        mnt.as_str(),
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .map_err(|e| format!("mount -t overlay -o {} {mnt}: {e}", tail(data.trim(), 200)))?;
    println!("ready");
    let _ = io::stdout().flush();
    loop {
        // SAFETY: pause(2) waits for a signal; SIGKILL ends us.
        unsafe { libc::pause() };
    }
}

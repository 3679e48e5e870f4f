//! The FUSE daemons every benchmark mounts (fimfs, its baseline build,
//! fuse-overlayfs, unionfs-fuse), and the page-cache resets around them.
//!
//! One wrapper, [`Daemon`]: the daemon runs in the foreground (`-f`) as
//! our child, so its PID is known without searching `/proc`, it gets
//! SIGTERM when the benchmark dies (even by SIGKILL, `PR_SET_PDEATHSIG`),
//! and an unmount waits for that very process to exit. A mount returns
//! once the mount point answers `statfs` as FUSE; an unmount never leaves
//! the mount behind (lazily as a last resort) and records, in
//! [`Daemon::problems`], whatever did not end cleanly.
use super::{is_fuse_mounted, quiet, stop_if_interrupted, tail, unmount_all_under};
use std::fs;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Which union filesystem daemon, and how to start it.
#[derive(Clone, Debug)]
pub enum Flavor {
    /// `fimfs mount -f [-o OPTS] L1:…:Ln [UPPER] MNT`; the daemon keeps
    /// `<parent of UPPER>/work/<PID>` and removes it when it exits.
    Fimfs { bin: PathBuf, opts: Option<String> },
    /// `fuse-overlayfs -f -o lowerdir=L1:…:Ln[,upperdir=UPPER,workdir=WORK]
    /// MNT` with WORK = `<parent of UPPER>/work`.
    FuseOverlayfs,
    /// `unionfs -f -o cow,hide_meta_files [UPPER=RW:]L1=RO:…:Ln=RO MNT` (no
    /// `max_files`: raising RLIMIT_NOFILE fails in containers).
    UnionfsFuse,
}

impl Flavor {
    pub fn name(&self) -> &'static str {
        match self {
            Flavor::Fimfs { .. } => "fimfs",
            Flavor::FuseOverlayfs => "fuse-overlayfs",
            Flavor::UnionfsFuse => "unionfs-fuse",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Flavor::Fimfs { bin, .. } => format!("fimfs ({})", bin.display()),
            Flavor::FuseOverlayfs => "fuse-overlayfs".into(),
            Flavor::UnionfsFuse => "unionfs-fuse".into(),
        }
    }

    /// The foreground daemon's command line.
    fn command(&self, lowers: &[PathBuf], upper: Option<&Path>, mnt: &Path) -> Command {
        let join = |suffix: &str| {
            lowers
                .iter()
                .map(|l| format!("{}{suffix}", l.display()))
                .collect::<Vec<_>>()
                .join(":")
        };
        let mut cmd;
        match self {
            Flavor::Fimfs { bin, opts } => {
                cmd = Command::new(bin);
                cmd.args(["mount", "-f"]);
                if let Some(o) = opts {
                    cmd.arg("-o").arg(o);
                }
                cmd.arg(join(""));
                cmd.args(upper);
            }
            Flavor::FuseOverlayfs => {
                cmd = Command::new("fuse-overlayfs");
                let mut o = format!("lowerdir={}", join(""));
                if let Some(u) = upper {
                    o.push_str(&format!(
                        ",upperdir={},workdir={}",
                        u.display(),
                        work_beside(u).display()
                    ));
                }
                cmd.arg("-f").arg("-o").arg(o);
            }
            Flavor::UnionfsFuse => {
                cmd = Command::new("unionfs");
                cmd.args(["-f", "-o", "cow,hide_meta_files"]);
                let mut branches = join("=RO");
                if let Some(u) = upper {
                    branches = format!("{}=RW:{branches}", u.display());
                }
                cmd.arg(branches);
            }
        }
        cmd.arg(mnt);
        cmd
    }
}

/// `<parent of upper>/work`: fimfs' default workdir root, and the workdir
/// given to fuse-overlayfs.
pub fn work_beside(upper: &Path) -> PathBuf {
    upper
        .parent()
        .map(|p| p.join("work"))
        .unwrap_or_else(|| PathBuf::from("work"))
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

/// One daemon mount at `mnt` over fixed lowers, read-only (lowers only) or
/// read-write over an upper, mounted again as often as needed. Unmounted
/// on drop.
pub struct Daemon {
    pub flavor: Flavor,
    pub mnt: PathBuf,
    lowers: Vec<PathBuf>,
    log: PathBuf,
    /// The daemon's RLIMIT_NOFILE (soft and hard), else it inherits ours.
    nofile: Option<u64>,
    /// Extra environment for the daemon (e.g. `FIMFS_STATS`).
    env: Vec<(String, PathBuf)>,
    /// The serving process, while mounted.
    child: Option<Child>,
    /// Mounted read-only (no upper).
    ro: bool,
    /// fimfs: where the daemon keeps `work/<PID>` for a read-write mount.
    workroot: Option<PathBuf>,
    /// Unmounts that ended, but not cleanly: lazily, or with a daemon that
    /// had to be killed or left its workdir behind.
    pub problems: Vec<String>,
}

impl Daemon {
    pub fn new(flavor: Flavor, mnt: PathBuf, lowers: &[PathBuf], log: PathBuf) -> Self {
        Daemon {
            flavor,
            mnt,
            lowers: lowers.to_vec(),
            log,
            nofile: None,
            env: Vec::new(),
            child: None,
            ro: false,
            workroot: None,
            problems: Vec::new(),
        }
    }

    /// Starts the daemon with RLIMIT_NOFILE `n` (soft and hard).
    pub fn with_nofile(mut self, n: Option<u64>) -> Self {
        self.nofile = n;
        self
    }

    /// Starts the daemon with `key=value` in its environment.
    pub fn with_env(mut self, key: &str, value: &Path) -> Self {
        self.env.push((key.to_string(), value.to_path_buf()));
        self
    }

    /// The serving process, 0 when not mounted.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn is_ro(&self) -> bool {
        self.child.is_some() && self.ro && is_fuse_mounted(&self.mnt)
    }

    /// CPU time (user + system, all threads) the daemon has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu(self.child.as_ref()?.id())
    }

    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        tail(s.trim(), 1500)
    }

    /// Mounts read-only (`upper == None`) or read-write over `upper`,
    /// unmounting any previous mount first. Returns once the mount answers.
    /// A read-write fuse-overlayfs gets an emptied `work` beside `upper`.
    pub fn mount(&mut self, upper: Option<&Path>) -> Result<(), String> {
        self.unmount()?;
        if let (Flavor::FuseOverlayfs, Some(u)) = (&self.flavor, upper) {
            reset_dir(&work_beside(u)).map_err(|e| format!("resetting the workdir: {e}"))?;
        }
        let child = self.spawn(upper)?;
        self.child = Some(child);
        self.ro = upper.is_none();
        self.workroot = match self.flavor {
            Flavor::Fimfs { .. } => upper.map(work_beside),
            _ => None,
        };
        self.wait_mounted(upper.is_some())
    }

    fn spawn(&self, upper: Option<&Path>) -> Result<Child, String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = self.flavor.command(&self.lowers, upper, &self.mnt);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            // A Ctrl-C goes to the benchmark, whose clean-up unmounts.
            .process_group(0);
        // SIGTERM ends a daemon cleanly (it unmounts itself).
        die_with_parent(&mut cmd, libc::SIGTERM);
        if let Some(n) = self.nofile {
            set_nofile(&mut cmd, n);
        }
        cmd.spawn().map_err(|e| match self.nofile {
            Some(n) => format!(
                "cannot run {} with RLIMIT_NOFILE {n}: {e} (raising the hard limit needs \
                 CAP_SYS_RESOURCE)",
                self.flavor.describe()
            ),
            None => format!("cannot run {}: {e}", self.flavor.describe()),
        })
    }

    /// Waits until the mount is in the table and answers `statfs` as FUSE,
    /// or the daemon exits, or 60 s pass.
    fn wait_mounted(&mut self, rw: bool) -> Result<(), String> {
        let desc = format!(
            "{} {} mount of {}",
            self.flavor.name(),
            if rw { "read-write" } else { "read-only" },
            self.mnt.display()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_fuse_mounted(&self.mnt) {
            stop_if_interrupted();
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                self.workroot = None;
                return Err(format!(
                    "{desc}: the daemon exited with {st} before mounting; daemon log: {}",
                    self.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{desc}: not mounted 60 s after starting the daemon; daemon log: {}",
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
        // The mount is in the table; statfs waits until the daemon answers.
        let st = nix::sys::statfs::statfs(&self.mnt)
            .map_err(|e| format!("{desc}: statfs: {e}; daemon log: {}", self.log_tail()))?;
        const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
        if st.filesystem_type().0 as i64 != FUSE_SUPER_MAGIC {
            return Err(format!("{desc}: not FUSE after mounting"));
        }
        Ok(())
    }

    /// `fusermount3 -u`, retried while busy, lazily as a last resort; then
    /// waits for the daemon to exit (SIGTERM, then SIGKILL, if it does not)
    /// and for fimfs to remove its workdir. `Err` only when the mount is
    /// still there; what was not clean goes to [`Daemon::problems`].
    pub fn unmount(&mut self) -> Result<(), String> {
        if is_fuse_mounted(&self.mnt) {
            if !fusermount_u(&self.mnt) {
                self.problem(format!("{} busy, unmounted lazily", self.mnt.display()));
                let _ = quiet(Command::new("fusermount3").arg("-uz").arg(&self.mnt))
                    || quiet(Command::new("umount").arg("-l").arg(&self.mnt));
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
        // Wait for the daemon to exit, so the next mount and the upper reset
        // do not race it.
        if let Some(mut c) = self.child.take()
            && wait_timeout(&mut c, Duration::from_secs(10)).is_none()
        {
            self.problem(format!(
                "{} daemon {} still running 10 s after the unmount; SIGTERM",
                self.flavor.describe(),
                c.id()
            ));
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // fimfs removes work/<PID> when it exits.
        if let Some(w) = self.workroot.take()
            && fs::read_dir(&w).is_ok_and(|mut d| d.next().is_some())
        {
            self.problem(format!(
                "{} daemon exited without removing its workdir; removing {}",
                self.flavor.describe(),
                w.display()
            ));
            let _ = fs::remove_dir_all(&w);
        }
        Ok(())
    }

    fn problem(&mut self, what: String) {
        eprintln!("fimfs-bench: warning: {what}");
        self.problems.push(what);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("fimfs-bench: {e}");
            unmount_all_under(&self.mnt);
        }
    }
}

/// `fusermount3 -u MNT`, retried for 5 s while the mount is busy; true once
/// it is gone.
fn fusermount_u(mnt: &Path) -> bool {
    for _ in 0..50 {
        if quiet(Command::new("fusermount3").arg("-u").arg(mnt)) || !is_fuse_mounted(mnt) {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Makes the child get `sig` when the benchmark dies, even by SIGKILL.
pub fn die_with_parent(cmd: &mut Command, sig: libc::c_int) {
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

/// Makes the child start with RLIMIT_NOFILE `n` (soft and hard).
fn set_nofile(cmd: &mut Command, n: u64) {
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

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// utime + stime of a process (all its threads), from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid …": field 3 (state) is the first after the last ')';
    // utime and stime are fields 14 and 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf(3) has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

// ---------------------------------------------------------------------------
// Caches

/// Our own writes to drop_caches that dropped slab objects (level 2 or 3).
static OWN_SLAB_DROPS: AtomicU64 = AtomicU64::new(0);

pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// `sync; echo LEVEL > /proc/sys/vm/drop_caches`.
pub fn drop_caches(level: u8) -> Result<(), String> {
    sync();
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

//! Processes, mounts and sandboxes for the union benchmark: running a
//! workload command with a timeout, the two ways of entering a kernel
//! overlay (bwrap `--overlay`, or `unshare` + `mount -t overlay`), with the
//! union at a directory or as `/`, managing the FUSE daemons' mounts (fimfs,
//! fuse-overlayfs, unionfs-fuse) and their CPU time, and never leaving a
//! mount behind.

pub use crate::common::{
    install_signal_cleanup, is_fuse_mounted, is_root, quiet, run, tail, unmount_all_under,
};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

/// Empties `dir` (creating it if needed).
pub fn reset_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(dir)
}

// ---------------------------------------------------------------------------
// Mount table

// ---------------------------------------------------------------------------
// Launchers

/// `sh -c INNER sh ARGS…` (the caller adds ARGS, `$1`… in INNER) in a
/// private mount namespace: the fallback when bwrap is too old.
fn unshare_sh(inner: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        inner,
        "sh",
    ]);
    c
}

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
                unshare_sh(&inner)
            }
        }
    }

    /// A daemon side: `script` runs with the FUSE mount at `src` bound onto
    /// `mnt`, in the same kind of sandbox as the kernel side.
    pub fn bind(&self, src: &Path, mnt: &Path, script: &str) -> Command {
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
                unshare_sh(&inner)
            }
        }
    }

    /// The kernel side with the union as the command's root: `/bin/sh -c
    /// script` from the overlay of `lowers` (top-most first) over
    /// `upper`/`work`, with a fresh `/dev` and `/proc`. The fallback mounts
    /// the overlay on `mnt` and `chroot`s into it (no `/dev`, `/proc`).
    pub fn kernel_root(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        script: &str,
    ) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                for l in lowers.iter().rev() {
                    c.arg("--overlay-src").arg(l);
                }
                c.arg("--overlay").arg(upper).arg(work).arg("/");
                c.args([
                    "--dev", "/dev", "--proc", "/proc", "--", "/bin/sh", "-c", script,
                ]);
                c
            }
            Launcher::Unshare { .. } => {
                let lowerdir: Vec<String> =
                    lowers.iter().map(|l| l.display().to_string()).collect();
                let opts = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lowerdir.join(":"),
                    upper.display(),
                    work.display()
                );
                let inner = format!(
                    "mount -t overlay overlay -o {opts} \"$1\" && exec chroot \"$1\" /bin/sh -c \"$2\""
                );
                let mut c = unshare_sh(&inner);
                c.arg(mnt).arg(script);
                c
            }
        }
    }

    /// A daemon side with the FUSE mount at `src` as the command's root
    /// (`bwrap --bind SRC /`), otherwise like [`Launcher::kernel_root`].
    pub fn bind_root(&self, src: &Path, mnt: &Path, script: &str) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                c.arg("--bind").arg(src).arg("/");
                c.args([
                    "--dev", "/dev", "--proc", "/proc", "--", "/bin/sh", "-c", script,
                ]);
                c
            }
            Launcher::Unshare { .. } => {
                let inner = "mount --bind \"$1\" \"$2\" && exec chroot \"$2\" /bin/sh -c \"$3\"";
                let mut c = unshare_sh(inner);
                c.arg(src).arg(mnt).arg(script);
                c
            }
        }
    }
}

// ---------------------------------------------------------------------------
// FUSE daemons: fimfs and its peers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Unmounted,
    ReadOnly,
    ReadWrite,
}

/// Which union filesystem daemon, and how to start it.
#[derive(Clone, Debug)]
pub enum Flavor {
    /// `fimfs mount [-o OPTS] L1:…:Ln [UPPER] MNT`; the daemon keeps
    /// `<parent of UPPER>/work/<PID>` and removes it when it exits.
    Fimfs { bin: PathBuf, opts: Option<String> },
    /// `fuse-overlayfs -o lowerdir=L1:…:Ln[,upperdir=UPPER,workdir=WORK] MNT`
    /// with WORK = `<parent of UPPER>/work`.
    FuseOverlayfs,
    /// `unionfs -o cow,hide_meta_files [UPPER=RW:]L1=RO:…:Ln=RO MNT` (no
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

    fn command(&self, lowers: &[PathBuf], upper: Option<&Path>, mnt: &Path) -> Command {
        let join = |sep: &str, suffix: &str| {
            lowers
                .iter()
                .map(|l| format!("{}{suffix}", l.display()))
                .collect::<Vec<_>>()
                .join(sep)
        };
        let mut cmd;
        match self {
            Flavor::Fimfs { bin, opts } => {
                cmd = Command::new(bin);
                cmd.arg("mount");
                if let Some(o) = opts {
                    cmd.arg("-o").arg(o);
                }
                cmd.arg(join(":", ""));
                if let Some(u) = upper {
                    cmd.arg(u);
                }
            }
            Flavor::FuseOverlayfs => {
                cmd = Command::new("fuse-overlayfs");
                let mut o = format!("lowerdir={}", join(":", ""));
                if let Some(u) = upper {
                    o.push_str(&format!(
                        ",upperdir={},workdir={}",
                        u.display(),
                        work_beside(u).display()
                    ));
                }
                cmd.arg("-o").arg(o);
            }
            Flavor::UnionfsFuse => {
                cmd = Command::new("unionfs");
                cmd.args(["-o", "cow,hide_meta_files"]);
                let mut branches = join(":", "=RO");
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

/// One daemon mount at `mnt` over fixed lowers, read-only (lowers only) or
/// read-write over an upper.
pub struct Daemon {
    pub flavor: Flavor,
    pub mnt: PathBuf,
    lowers: Vec<PathBuf>,
    log: PathBuf,
    state: State,
    /// The serving process (found by its command line naming `mnt`).
    pid: Option<u32>,
    /// fimfs: where the daemon keeps `work/<PID>` for a read-write mount.
    workroot: Option<PathBuf>,
    /// Unmounts after which the daemon did not exit or clean up in time.
    pub warnings: usize,
}

impl Daemon {
    pub fn new(flavor: Flavor, mnt: PathBuf, lowers: &[PathBuf], log: PathBuf) -> Self {
        Daemon {
            flavor,
            mnt,
            lowers: lowers.to_vec(),
            log,
            state: State::Unmounted,
            pid: None,
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
    /// A read-write fuse-overlayfs gets an emptied `work` beside `upper`.
    pub fn mount(&mut self, upper: Option<&Path>) -> Result<(), String> {
        self.unmount()?;
        if let (Flavor::FuseOverlayfs, Some(u)) = (&self.flavor, upper) {
            reset_dir(&work_beside(u)).map_err(|e| format!("resetting the workdir: {e}"))?;
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = self.flavor.command(&self.lowers, upper, &self.mnt);
        // Files, not pipes: the daemon inherits them and outlives the command.
        cmd.stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let desc = format!(
            "{} {} mount",
            self.flavor.name(),
            if upper.is_some() {
                "read-write"
            } else {
                "read-only"
            },
        );
        let ran = run(cmd, Duration::from_secs(60), false)?;
        if !ran.status.success() {
            return Err(format!(
                "{desc} failed ({}); daemon log: {}",
                ran.status,
                self.log_tail()
            ));
        }
        // fimfs returns once the mount is live; libfuse daemons mount before
        // they fork, but allow a little slack anyway.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_fuse_mounted(&self.mnt) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{desc}: exited 0 but {} is not a FUSE mount; daemon log: {}",
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
        self.pid = daemon_pid(&self.mnt);
        self.workroot = match self.flavor {
            Flavor::Fimfs { .. } => upper.map(work_beside),
            _ => None,
        };
        Ok(())
    }

    /// CPU time (user + system, all threads) the daemon has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu(self.pid?)
    }

    /// `fusermount3 -u`, retried while busy, lazily as a last resort; then
    /// waits for the daemon to exit (and fimfs to remove its workdir).
    pub fn unmount(&mut self) -> Result<(), String> {
        if self.state == State::Unmounted && self.pid.is_none() && self.workroot.is_none() {
            return Ok(());
        }
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
        // Wait for the daemon to exit, so the next mount and the upper reset
        // do not race it.
        if let Some(pid) = self.pid.take() {
            let start = Instant::now();
            while process_running(&pid.to_string()) {
                if start.elapsed() > Duration::from_secs(10) {
                    eprintln!(
                        "fimfs-bench: warning: {} daemon {pid} still running 10s after the unmount",
                        self.flavor.describe()
                    );
                    self.warnings += 1;
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        // fimfs removes work/<PID> when it exits.
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

/// The live process whose command line has `mnt` as an argument: the
/// daemon serving it (fimfs and libfuse daemons fork without exec, so they
/// keep the command line they were started with).
fn daemon_pid(mnt: &Path) -> Option<u32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let mut found = None;
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == want) && process_running(&pid.to_string()) {
            found = Some(found.map_or(pid, |f: u32| f.max(pid)));
        }
    }
    found
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

/// The first line of `PROG --version` (stdout or stderr), for the report.
pub fn version_line(prog: &str, pick: &str) -> String {
    match Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find(|l| l.contains(pick))
                .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

/// Whether `prog` is on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            fs::metadata(d.join(prog))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("fimfs-bench: {e}");
            unmount_all_under(&self.mnt);
        }
    }
}

/// Makes `dir` the mount point of a fresh, journaled ext4 of `gib` GiB on a
/// loop device, so that every run starts from the same clean filesystem.
///
/// Why: on a filesystem without a journal (this VM's root ext4 has none),
/// ext4 skips inodes whose deletion is still in a dirty inode-table block
/// when it allocates new ones (`recently_deleted`). A create-heavy workload
/// that runs after many deletes in the same block group then spends most of
/// its time in that scan, and which side pays depends on where each side's
/// upper landed: the same 5000-file create/rename/delete took 0.5 s or
/// 2.7 s on the kernel overlay depending on the history of the directory.
///
/// The image file is unlinked once mounted: the loop device holds it, and
/// the unmount at the end (or `clean_stale_runs` after a crash) frees it.
pub fn mount_scratch_fs(dir: &Path, gib: u64) -> Result<(), String> {
    let img = dir.with_extension("img");
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let f = fs::File::create(&img).map_err(|e| format!("{}: {e}", img.display()))?;
    f.set_len(gib << 30)
        .map_err(|e| format!("{}: {e}", img.display()))?;
    drop(f);
    let run = |c: &mut Command| -> Result<(), String> {
        let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    };
    let res = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(&img))
    .and_then(|()| {
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir))
    });
    let _ = fs::remove_file(&img);
    res
}

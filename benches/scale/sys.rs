//! Processes and mounts for the scale benchmark: timed `sh -c` runs (in the
//! host's mount namespace or in a kernel overlay's private one), a kernel
//! overlay held by a helper process in a private mount namespace, and
//! memory figures from `/proc`. The fimfs daemon and the cache resets are
//! `common::mounts`.

use crate::common::mounts::die_with_parent;
pub use crate::common::{Ran, install_signal_cleanup, is_root, run, tail, unmount_all_under};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

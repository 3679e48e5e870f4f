//! Every `fimfs mount` sweeps the per-PID workdirs of its work base whose
//! owner is gone (a daemon killed mid copy-up leaves a half-copied file in
//! `work/<PID>/`), and never one that a live daemon holds.
//!
//! The copy-up is caught in the act, not timed: the daemon is stopped
//! (SIGSTOP) once a staged file shows in its workdir, then killed.

mod common;

use common::{MountGuard, TempDir, require_root_and_fuse};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A bound against hangs only.
const DEADLINE: Duration = Duration::from_secs(60);
/// Large enough that its copy-up is seen in the workdir before it ends.
const HUGE_MIB: usize = 128;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

struct Scene {
    t: TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        require_root_and_fuse();
        let t = TempDir::new(tag);
        let lower = t.mkdir("l");
        let data = t.mkdir("data");
        Scene {
            upper: data.join("u"),
            work: data.join("work"),
            lower,
            t,
        }
    }

    /// Mounts at `mnt`, created unless something (a dead mount) is there.
    fn mount(&self, mnt: &str) -> MountGuard {
        let m = self.t.join(mnt);
        if fs::symlink_metadata(&m).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            fs::create_dir(&m).unwrap();
        }
        MountGuard::new(
            std::slice::from_ref(&self.lower),
            Some(&self.upper),
            &m,
            &[],
        )
    }
}

/// Mounts the scene at `m` with a large lower file and starts appending to
/// it; returns once the copy-up shows in the daemon's workdir.
fn copy_up_in_flight(s: &Scene) -> (MountGuard, std::process::Child, PathBuf) {
    let mut f = fs::File::create(s.lower.join("huge")).unwrap();
    let mib: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..HUGE_MIB {
        f.write_all(&mib).unwrap();
    }
    drop(f);
    let first = s.mount("m");
    let work = s.work.join(first.pid().to_string());
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("echo x >> \"$1\"")
        .arg("sh")
        .arg(first.join("huge"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while entries(&work).is_empty() {
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the copy-up ended before it showed in {}; enlarge HUGE_MIB",
            work.display()
        );
        assert!(start.elapsed() < DEADLINE, "no copy-up started");
        thread::sleep(Duration::from_millis(1));
    }
    (first, writer, work)
}

#[test]
fn a_killed_daemons_workdir_is_swept_by_the_next_mount() {
    let s = Scene::new("sweep-killed");
    let (first, mut writer, dead_work) = copy_up_in_flight(&s);
    let pid = first.pid();
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let staged = entries(&dead_work);
    assert!(
        !staged.is_empty(),
        "the staged copy is in the stopped daemon's workdir"
    );
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = first.wait_exit();
    let _ = writer.wait();
    assert_eq!(
        entries(&dead_work),
        staged,
        "the killed daemon left its workdir"
    );

    // The second mount of the same layers (the first mountpoint is dead;
    // the mount detaches it) sweeps the dead daemon's workdir before it
    // serves.
    let second = s.mount("m");
    assert!(
        !dead_work.exists(),
        "{} is still there: {:?}",
        dead_work.display(),
        entries(&dead_work)
    );
    assert_eq!(entries(&s.work), vec![second.pid().to_string()]);
    let (status, log) = second.unmount();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(entries(&s.work).is_empty());
}

/// The issue's own sequence: `kill -9` in the middle of a copy-up and the
/// next `fimfs mount` on the same mountpoint at once, while the killed
/// daemon may still be dying (its copy thread still in the kernel, its
/// lock still held, its mount not yet aborted) and is not yet reaped.
#[test]
fn a_mount_right_after_a_kill_waits_for_the_dying_daemon_and_sweeps() {
    let s = Scene::new("sweep-dying");
    let (first, mut writer, dead_work) = copy_up_in_flight(&s);
    signal(first.pid(), nix::sys::signal::Signal::SIGKILL);
    let second = s.mount("m");
    assert!(
        !dead_work.exists(),
        "{} is still there: {:?}",
        dead_work.display(),
        entries(&dead_work)
    );
    assert_eq!(entries(&s.work), vec![second.pid().to_string()]);
    assert_eq!(
        fs::metadata(second.join("huge")).unwrap().len(),
        (HUGE_MIB * 1024 * 1024) as u64,
        "the lower file is whole through the new mount"
    );
    let _ = first.wait_exit();
    let _ = writer.wait();
    let (status, log) = second.unmount();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(entries(&s.work).is_empty());
}

#[test]
fn a_live_daemons_workdir_is_never_swept() {
    let s = Scene::new("sweep-live");
    fs::write(s.lower.join("f"), "lower\n").unwrap();
    let a = s.mount("a");
    // Something of the live daemon's in its workdir, as during a copy-up.
    let a_work = s.work.join(a.pid().to_string());
    fs::write(a_work.join("in-flight"), "staged").unwrap();
    // A leftover of a process that is gone: nobody holds its lock.
    let stale = s.work.join(dead_pid().to_string());
    fs::create_dir_all(stale.join("sub")).unwrap();
    fs::write(stale.join("sub/half"), "half").unwrap();
    // A directory named by a live process (pid 1) that holds no lock: its
    // owner is alive, so it is not judged stale either.
    let live_unlocked = s.work.join("1");
    fs::create_dir(&live_unlocked).unwrap();

    let b = s.mount("b");
    assert!(!stale.exists(), "the dead process's workdir is swept");
    assert_eq!(entries(&a_work), vec!["in-flight".to_string()]);
    assert!(live_unlocked.exists());
    fs::write(b.join("from-b"), "b\n").unwrap();
    assert_eq!(fs::read_to_string(a.join("f")).unwrap(), "lower\n");
    fs::remove_file(a_work.join("in-flight")).unwrap();
    fs::remove_dir(&live_unlocked).unwrap();
    for g in [b, a] {
        let (status, log) = g.unmount();
        assert!(status.is_some_and(|s| s.success()), "{log}");
    }
    assert!(entries(&s.work).is_empty(), "{:?}", entries(&s.work));
}

/// A pid that is gone: a child that has been reaped.
fn dead_pid() -> u32 {
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    pid
}

#[test]
fn an_explicit_per_pid_workdir_sweeps_its_siblings_and_no_other() {
    let s = Scene::new("sweep-explicit");
    fs::write(s.lower.join("f"), "lower\n").unwrap();
    // FlatImage's form: `-o workdir=<data>/work/<PID>`, the PID being the
    // one that started the daemon (here, this test).
    let base = s.t.mkdir("data/flat-work");
    let stale = base.join(dead_pid().to_string());
    fs::create_dir_all(stale.join("half")).unwrap();
    // Any other explicit workdir: its numbered siblings are not ours.
    let other = s.t.mkdir("data/other");
    let kept = other.join(dead_pid().to_string());
    fs::create_dir(&kept).unwrap();

    let lowers = std::slice::from_ref(&s.lower);
    let per_pid = format!(
        "workdir={}",
        base.join(std::process::id().to_string()).display()
    );
    let custom = format!("workdir={}", other.join("custom").display());
    let a = MountGuard::new(lowers, Some(&s.upper), &s.t.mkdir("a"), &[&per_pid]);
    assert!(
        !stale.exists(),
        "a stale sibling of a per-PID workdir is swept"
    );
    let b = MountGuard::new(lowers, Some(&s.upper), &s.t.mkdir("b"), &[&custom]);
    assert!(
        kept.exists(),
        "siblings of another explicit workdir are left alone"
    );
    for g in [b, a] {
        let (status, log) = g.unmount();
        assert!(status.is_some_and(|s| s.success()), "{log}");
    }
}

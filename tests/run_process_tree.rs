//! Every process of a `fimfs run` ends with the run, on every backend:
//! when the launcher is killed (SIGKILL), the command's whole tree goes,
//! orphans and double forks included, and the upper's lock is free for
//! the next BWRAP run only once they are gone; when the command exits and
//! leaves a background child, that child is gone when `fimfs run` returns.
//!
//! The run's processes are told apart by a token in their environment
//! (bwrap passes the launcher's environment to the command), found by
//! scanning `/proc`. Nothing is timed: waits poll a condition, with a bound
//! against hangs.

mod common;

use common::run::{DEADLINE, tagged, wait_for};
use common::{TempDir, lowers_arg, mounts, require_root_and_fuse};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const FIMFS: &str = env!("CARGO_BIN_EXE_fimfs");
const BACKENDS: [&str; 3] = ["bwrap", "overlayfs", "unionfs"];

/// Command lines of `pids`, for failure messages.
fn describe(pids: &[u32]) -> String {
    pids.iter()
        .map(|p| {
            let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("{p}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Scene {
    t: TempDir,
    lower: PathBuf,
    upper: PathBuf,
    view: PathBuf,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        require_root_and_fuse();
        let t = TempDir::new(tag);
        let lower = t.mkdir("lower");
        fs::write(lower.join("file"), "lower\n").unwrap();
        t.mkdir("host");
        Scene {
            upper: t.join("data/upper"),
            view: t.mkdir("view"),
            lower,
            t,
        }
    }

    fn host(&self, rel: &str) -> PathBuf {
        self.t.join("host").join(rel)
    }

    /// `fimfs run --target VIEW LOWER UPPER -- sh -c SCRIPT` on `backend`,
    /// its processes tagged with `token`.
    fn start(&self, backend: &str, token: &str, script: &str, env: &[(&str, &str)]) -> Child {
        let mut args: Vec<OsString> = vec!["run".into(), "--target".into(), (&self.view).into()];
        args.push(lowers_arg(std::slice::from_ref(&self.lower)));
        args.push((&self.upper).into());
        args.extend(["--", "sh", "-c", script].map(OsString::from));
        let err = fs::File::create(self.t.join(format!("{token}.err"))).unwrap();
        let mut cmd = Command::new(FIMFS);
        cmd.args(&args)
            .env("FIM_OVERLAY", backend)
            .env("FIMFS_TREE_TOKEN", token)
            .env_remove("FIM_CASEFOLD")
            .env_remove("FIMFS_BUSY_TIMEOUT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    fn stderr(&self, token: &str) -> String {
        fs::read_to_string(self.t.join(format!("{token}.err"))).unwrap_or_default()
    }

    fn assert_no_mounts(&self) {
        let left: Vec<_> = mounts()
            .into_iter()
            .filter(|(p, _)| p.starts_with(self.t.path()))
            .collect();
        assert!(left.is_empty(), "mounts left behind: {left:?}");
    }
}

/// Waits for `child` with a bound; kills it at the bound.
fn finish(mut child: Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fimfs run still running after {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Kills whatever still carries `token`, so that a failing test leaves
/// nothing running.
fn kill_tagged(token: &str) {
    for p in tagged(token) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn sigkill_of_the_launcher_ends_every_process_of_the_run() {
    let s = Scene::new("tree-sigkill");
    for backend in BACKENDS {
        let token = format!("{}-{backend}-kill", std::process::id());
        let out = s.host(&format!("loop-{backend}"));
        // The command: a loop in a background grandchild, the
        // command's shell waiting for it.
        let script = format!(
            "sh -c \"while :; do echo x >> {o}; sleep .5; done\" & wait",
            o = out.display()
        );
        let mut launcher = s.start(backend, &token, &script, &[]);
        wait_for("the loop to run", || out.exists());
        launcher.kill().unwrap();
        launcher.wait().unwrap();
        let start = Instant::now();
        while !tagged(&token).is_empty() {
            if start.elapsed() > DEADLINE {
                let left = describe(&tagged(&token));
                kill_tagged(&token);
                panic!("{backend}: processes of the run outlived its launcher:\n{left}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        s.assert_no_mounts();
        // The upper's lock is free now: a BWRAP run that may not wait at all
        // starts.
        let next = format!("{}-{backend}-next", std::process::id());
        let status = finish(s.start(
            "bwrap",
            &next,
            &format!("cat {}/file", s.view.display()),
            &[("FIMFS_BUSY_TIMEOUT", "0")],
        ));
        assert!(status.success(), "{backend}: {}", s.stderr(&next));
        assert!(tagged(&next).is_empty());
    }
}

#[test]
fn a_child_left_behind_ends_with_the_run() {
    let s = Scene::new("tree-leftover");
    for backend in BACKENDS {
        let token = format!("{}-{backend}-bg", std::process::id());
        let pid_file = s.host(&format!("bg-{backend}"));
        // A double fork into a new session: the child is nobody's but the
        // run's.
        let script = format!(
            "setsid sh -c 'sleep 600' </dev/null >/dev/null 2>&1 & echo $! > {}; exit 3",
            pid_file.display()
        );
        let status = finish(s.start(backend, &token, &script, &[]));
        let left = tagged(&token);
        kill_tagged(&token);
        assert_eq!(status.code(), Some(3), "{backend}: {}", s.stderr(&token));
        assert!(pid_file.exists());
        assert!(
            left.is_empty(),
            "{backend}: left running after fimfs run returned:\n{}",
            describe(&left)
        );
        s.assert_no_mounts();
        assert_workbase_empty(&s.upper);
    }
}

fn assert_workbase_empty(upper: &Path) {
    let base = upper.parent().unwrap().join("work");
    let runs: Vec<_> = fs::read_dir(&base)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(runs.is_empty(), "run directories left: {runs:?}");
}

/// The launcher's own child (the keeper, which runs bwrap and the daemon)
/// killed: the launcher ends what it left, removes the run's directory and
/// mount, and exits 128+9.
#[test]
fn a_killed_keeper_is_cleaned_up_by_the_launcher() {
    let s = Scene::new("tree-keeper");
    for backend in BACKENDS {
        let token = format!("{}-{backend}-keeper", std::process::id());
        let out = s.host(&format!("loop-{backend}"));
        let script = format!(
            "sh -c \"while :; do echo x >> {o}; sleep .5; done\" & wait",
            o = out.display()
        );
        let launcher = s.start(backend, &token, &script, &[]);
        wait_for("the loop to run", || out.exists());
        let me = launcher.id();
        let keeper: Vec<u32> = tagged(&token)
            .into_iter()
            .filter(|&p| {
                let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
                after.split_whitespace().nth(1) == Some(&me.to_string())
                    && fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("fimfs"))
            })
            .collect();
        assert_eq!(
            keeper.len(),
            1,
            "{backend}: one keeper: {}",
            describe(&keeper)
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(keeper[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = finish(launcher);
        let left = tagged(&token);
        kill_tagged(&token);
        assert_eq!(
            status.code(),
            Some(128 + 9),
            "{backend}: {}",
            s.stderr(&token)
        );
        assert!(left.is_empty(), "{backend}: left:\n{}", describe(&left));
        s.assert_no_mounts();
        assert_workbase_empty(&s.upper);
    }
}

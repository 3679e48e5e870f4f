//! `fimfs run`, `fimfs overlay`, `fimfs casefold` through the real binary:
//! the backend choice matrix, image bytes written by the CLI, a run on each
//! backend writing through the view, the fallback when the kernel refuses
//! the upper, exit statuses, signals, cleanup after SIGKILL, two runs on
//! one upper.
//!
//! Every run here mounts for real (the kernel overlay through bwrap, or the
//! fimfs daemon inside the launcher) and needs bubblewrap >= 0.10 on PATH
//! (`.ci/install-deps` installs it). No test times anything: where order
//! matters it is checked through files the commands write.

mod common;

use common::image::{RESERVED_AT, Spec, assert_only_byte_changed, build};
use common::run::{DEADLINE, Done, Turn, os, wait_for};
use common::{MountGuard, TempDir, is_whiteout, mounts, require_root_and_fuse, setpriv};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const FIMFS: &str = env!("CARGO_BIN_EXE_fimfs");

/// The three backends as `FIM_OVERLAY` spells them.
const BACKENDS: [&str; 3] = ["bwrap", "overlayfs", "unionfs"];

/// A launcher started in the background.
struct Launch {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// `fimfs ARGS` with `env` set and `FIM_OVERLAY`, `FIM_CASEFOLD` removed
/// unless `env` sets them.
fn start(args: &[OsString], env: &[(&str, &str)], logs: &Path) -> Launch {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let out = logs.join(format!("launch-{n}.out"));
    let err = logs.join(format!("launch-{n}.err"));
    let mut cmd = Command::new(FIMFS);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .env_remove("FIM_OVERLAY")
        .env_remove("FIM_CASEFOLD")
        .env_remove("FIMFS_BWRAP")
        .env_remove("FIMFS_BUSY_TIMEOUT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {FIMFS}: {e}"));
    Launch { child, out, err }
}

impl Launch {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn wait(mut self) -> Done {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "fimfs still running after {DEADLINE:?}; stderr:\n{}",
                    fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        Done {
            status,
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: fs::read_to_string(&self.err).unwrap_or_default(),
        }
    }
}

fn fimfs(args: &[OsString], env: &[(&str, &str)], logs: &Path) -> Done {
    start(args, env, logs).wait()
}

/// A scene: a root-filesystem lower (the host's /usr is bound into it), an
/// application lower above it, the upper and its work base inside `data/`.
struct Scene {
    t: TempDir,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    _turn: Turn,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        Scene::with_turn(tag, Turn::shared())
    }

    /// A scene no other test runs beside (see `common::run::Turn`).
    fn alone(tag: &str) -> Scene {
        Scene::with_turn(tag, Turn::alone())
    }

    fn with_turn(tag: &str, turn: Turn) -> Scene {
        require_root_and_fuse();
        let t = TempDir::new(tag);
        let root = t.mkdir("root");
        for d in ["usr", "dev", "proc", "tmp", "etc", "run"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        for (link, to) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(to, root.join(link)).unwrap();
        }
        fs::write(root.join("etc/os-release"), "ID=fimfs-test\n").unwrap();
        let app = t.mkdir("app");
        fs::create_dir_all(app.join("etc/app")).unwrap();
        fs::write(app.join("etc/app/app.conf"), "setting=1\n").unwrap();
        fs::write(app.join("etc/app/ReadMe.txt"), "read me\n").unwrap();
        fs::create_dir(t.join("host")).unwrap();
        Scene {
            lowers: vec![app, root],
            upper: t.join("data/root"),
            work: t.join("data/work"),
            t,
            _turn: turn,
        }
    }

    fn lowers_arg(&self) -> OsString {
        common::lowers_arg(&self.lowers)
    }

    /// `run [OPTS] --bwrap-arg --ro-bind /usr /usr LOWERS UPPER -- sh -c SCRIPT`.
    fn run_args(&self, opts: &[&str], script: &str) -> Vec<OsString> {
        let mut a = os(&["run"]);
        a.extend(os(opts));
        a.extend(os(&[
            "--bwrap-arg",
            "--ro-bind",
            "--bwrap-arg",
            "/usr",
            "--bwrap-arg",
            "/usr",
        ]));
        a.push(self.lowers_arg());
        a.push(self.upper.clone().into());
        a.extend(os(&["--", "sh", "-c", script]));
        a
    }

    fn host(&self, rel: &str) -> PathBuf {
        self.t.join("host").join(rel)
    }

    fn logs(&self) -> &Path {
        self.t.path()
    }

    /// Nothing of a finished run is left: no mount below the scene, no run
    /// directory in the work base.
    fn assert_clean(&self) {
        let here = self.t.path();
        let left: Vec<_> = mounts()
            .into_iter()
            .filter(|(p, _)| p.starts_with(here))
            .collect();
        assert!(left.is_empty(), "mounts left behind: {left:?}");
        if self.work.exists() {
            let runs: Vec<_> = fs::read_dir(&self.work)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(runs.is_empty(), "run directories left behind: {runs:?}");
        }
    }
}

/// `target` for runs whose view sits below the host's root: the command
/// can then write its findings to host paths.
fn view_target(s: &Scene) -> PathBuf {
    let v = s.t.join("view");
    fs::create_dir_all(&v).unwrap();
    v
}

// ---------------------------------------------------------------------------------
// The choice matrix

/// The rule of SPEC §5, written out independently of the code under test.
fn expected_backend(env: Option<&str>, byte: Option<u8>, casefold: bool) -> &'static str {
    let asked = match env {
        Some("bwrap") => "BWRAP",
        Some("overlayfs") => "OVERLAYFS",
        Some("unionfs") => "UNIONFS",
        _ => match byte {
            Some(0x02) => "BWRAP",
            Some(0x04) => "OVERLAYFS",
            Some(0x08) => "UNIONFS",
            _ => "BWRAP",
        },
    };
    if casefold && asked == "BWRAP" {
        "UNIONFS"
    } else {
        asked
    }
}

fn image_with(dir: &Path, overlay: u8, casefold: u8) -> PathBuf {
    let mut spec = Spec::new();
    spec.overlay = overlay;
    spec.casefold = casefold;
    let p = dir.join(format!("app-{overlay:02x}-{casefold:02x}.flatimage"));
    fs::write(&p, build(&spec)).unwrap();
    p
}

#[test]
fn choice_matrix_env_byte_casefold() {
    let s = Scene::new("choice");
    let images = s.t.mkdir("images");
    let envs: [Option<&str>; 6] = [
        None,
        Some("bwrap"),
        Some("overlayfs"),
        Some("unionfs"),
        Some("BWRAP"),
        Some(""),
    ];
    // None: no --image at all.
    let bytes: [Option<u8>; 6] = [
        None,
        Some(0x00),
        Some(0x02),
        Some(0x04),
        Some(0x08),
        Some(0x06),
    ];
    // (flag, FIM_CASEFOLD, casefold byte) and whether casefold is then on.
    let casefolds: [(bool, Option<&str>, u8, bool); 6] = [
        (false, None, 0, false),
        (true, None, 0, true),
        (false, Some("1"), 0, true),
        (false, Some("yes"), 0, false),
        (false, Some("0"), 0, false),
        (false, None, 1, true),
    ];
    let mut checked = 0;
    for env in envs {
        for byte in bytes {
            for (flag, cf_env, cf_byte, cf_on) in casefolds {
                if byte.is_none() && cf_byte != 0 {
                    continue; // no image, no casefold byte
                }
                let mut args = os(&["run", "--dry-run"]);
                let image = byte.map(|b| image_with(&images, b, cf_byte));
                if let Some(img) = &image {
                    args.push("--image".into());
                    args.push(img.into());
                }
                if flag {
                    args.push("--casefold".into());
                }
                args.push(s.lowers_arg());
                args.push(s.upper.clone().into());
                args.extend(os(&["--", "true"]));
                let mut vars = Vec::new();
                if let Some(v) = env {
                    vars.push(("FIM_OVERLAY", v));
                }
                if let Some(v) = cf_env {
                    vars.push(("FIM_CASEFOLD", v));
                }
                let done = fimfs(&args, &vars, s.logs());
                let want = expected_backend(env, byte, cf_on);
                let case = format!(
                    "FIM_OVERLAY={env:?} byte={byte:?} casefold={cf_on} ({flag}, {cf_env:?}, {cf_byte})"
                );
                assert_eq!(done.code(), Some(0), "{case}: {done}");
                let first = done.stdout.lines().next().unwrap_or_default();
                assert_eq!(first, format!("backend: {want}"), "{case}: {done}");
                let command = done
                    .stdout
                    .lines()
                    .find(|l| l.starts_with("command: "))
                    .unwrap_or_else(|| panic!("{case}: no command line: {done}"));
                if want == "BWRAP" {
                    assert!(command.contains("--overlay-src"), "{case}: {command}");
                    assert!(
                        command.contains(&format!("--overlay {} ", s.upper.display())),
                        "{case}: {command}"
                    );
                } else {
                    assert!(!command.contains("--overlay"), "{case}: {command}");
                    assert!(command.contains("/mount / "), "{case}: {command}");
                }
                // `overlay show` prints the same effective value, without the flag.
                if let (Some(img), false) = (&image, flag) {
                    let mut show = os(&["overlay", "show", "--image"]);
                    show.push(img.into());
                    let shown = fimfs(&show, &vars, s.logs());
                    assert_eq!(shown.code(), Some(0), "{case}: {shown}");
                    assert_eq!(shown.stdout.trim(), want, "{case}: overlay show");
                }
                checked += 1;
            }
        }
    }
    // Six FIM_OVERLAY values × (no image: 5 casefold cases; 5 images: 6 each).
    assert_eq!(checked, 6 * (5 + 5 * 6));
    // A dry run creates nothing.
    assert!(!s.upper.exists(), "the dry runs created the upper");
    assert!(!s.work.exists(), "the dry runs created the work base");
}

#[test]
fn dry_run_says_why() {
    let s = Scene::new("why");
    let images = s.t.mkdir("images");
    let img = image_with(&images, 0x04, 0);
    let mut args = os(&["run", "--dry-run", "--image"]);
    args.push(img.into());
    args.push(s.lowers_arg());
    args.push(s.upper.clone().into());
    args.extend(os(&["--", "true"]));
    let d = fimfs(&args, &[], s.logs());
    assert!(d.stdout.contains("backend: OVERLAYFS\n"), "{d}");
    assert!(
        d.stdout.contains("reason: overlay byte 0x04 of the image"),
        "{d}"
    );
    let d = fimfs(
        &args,
        &[("FIM_OVERLAY", "bwrap"), ("FIM_CASEFOLD", "1")],
        s.logs(),
    );
    assert!(d.stdout.contains("backend: UNIONFS\n"), "{d}");
    assert!(
        d.stdout
            .contains("reason: FIM_OVERLAY=bwrap; casefold is on"),
        "{d}"
    );
    let d = fimfs(&args, &[("FIM_OVERLAY", "Bwrap")], s.logs());
    assert!(d.stdout.contains("FIM_OVERLAY ignored"), "{d}");
}

// ---------------------------------------------------------------------------------
// overlay set/show, casefold on/off/show on real image files

#[test]
fn overlay_and_casefold_commands_write_one_byte() {
    let t = TempDir::new("image-cli");
    let img = image_with(t.path(), 0, 0);
    let overlay_at = RESERVED_AT as usize + 9;
    let casefold_at = RESERVED_AT as usize + 10;
    let cli = |words: &[&str]| {
        let mut a = os(words);
        a.push("--image".into());
        a.push(img.clone().into());
        fimfs(&a, &[], t.path())
    };
    assert_eq!(cli(&["overlay", "show"]).stdout, "BWRAP\n");
    for (value, mask, shown) in [
        ("UnionFS", 0x08, "UNIONFS"),
        ("overlayfs", 0x04, "OVERLAYFS"),
        ("BWRAP", 0x02, "BWRAP"),
    ] {
        let before = fs::read(&img).unwrap();
        let d = cli(&["overlay", "set", value]);
        assert_eq!(d.code(), Some(0), "{d}");
        assert_only_byte_changed(&before, &fs::read(&img).unwrap(), overlay_at, mask);
        assert_eq!(cli(&["overlay", "show"]).stdout, format!("{shown}\n"));
    }
    // A wrong value: a message, a failure, no change.
    let before = fs::read(&img).unwrap();
    let d = cli(&["overlay", "set", "fuse-overlayfs"]);
    assert_ne!(d.code(), Some(0));
    assert!(d.stderr.contains("invalid overlay type"), "{d}");
    assert_eq!(fs::read(&img).unwrap(), before);

    assert_eq!(cli(&["casefold", "show"]).stdout, "OFF\n");
    let d = cli(&["casefold", "on"]);
    assert_eq!(d.code(), Some(0), "{d}");
    let after = fs::read(&img).unwrap();
    assert_eq!(after[casefold_at], 1);
    assert_only_byte_changed(&before, &after, casefold_at, 1);
    assert_eq!(cli(&["casefold", "show"]).stdout, "ON\n");
    // Casefold turns the BWRAP setting into UNIONFS, as FlatImage shows it.
    assert_eq!(cli(&["overlay", "show"]).stdout, "UNIONFS\n");
    let before = fs::read(&img).unwrap();
    assert_eq!(cli(&["casefold", "off"]).code(), Some(0));
    assert_only_byte_changed(&before, &fs::read(&img).unwrap(), casefold_at, 0);
    assert_eq!(cli(&["overlay", "show"]).stdout, "BWRAP\n");

    // Not an ELF: a clear error, the file untouched.
    let text = t.join("notes.txt");
    fs::write(&text, "just text\n").unwrap();
    let mut a = os(&["overlay", "set", "unionfs", "--image"]);
    a.push(text.clone().into());
    let d = fimfs(&a, &[], t.path());
    assert_ne!(d.code(), Some(0));
    assert!(
        d.stderr.contains("notes.txt") && d.stderr.contains("ELF"),
        "{d}"
    );
    assert_eq!(fs::read(&text).unwrap(), b"just text\n");
}

// ---------------------------------------------------------------------------------
// Running

#[test]
fn each_backend_writes_through_the_view_into_the_upper() {
    for backend in BACKENDS {
        let s = Scene::new(&format!("backend-{backend}"));
        let script = "cat /etc/app/app.conf /etc/os-release && echo written > /etc/app/new \
                      && rm /etc/app/app.conf && mkdir /var && echo log > /var/log.txt \
                      && ls /etc/app";
        let d = fimfs(
            &s.run_args(&[], script),
            &[("FIM_OVERLAY", backend)],
            s.logs(),
        );
        assert_eq!(d.code(), Some(0), "{backend}: {d}");
        assert_eq!(
            d.stdout, "setting=1\nID=fimfs-test\nReadMe.txt\nnew\n",
            "{backend}: {d}"
        );
        assert_eq!(
            fs::read_to_string(s.upper.join("etc/app/new")).unwrap(),
            "written\n"
        );
        assert_eq!(
            fs::read_to_string(s.upper.join("var/log.txt")).unwrap(),
            "log\n"
        );
        assert!(
            is_whiteout(&s.upper.join("etc/app/app.conf")),
            "{backend}: no whiteout for the deleted lower file"
        );
        s.assert_clean();
        // The next run, on any backend, sees what this one left.
        let d = fimfs(
            &s.run_args(&[], "cat /etc/app/new; test ! -e /etc/app/app.conf"),
            &[("FIM_OVERLAY", BACKENDS[(backend.len()) % 3])],
            s.logs(),
        );
        assert_eq!(d.code(), Some(0), "{backend}, second run: {d}");
        assert_eq!(d.stdout, "written\n");
        s.assert_clean();
    }
}

#[test]
fn a_target_below_the_host_root() {
    for backend in BACKENDS {
        let s = Scene::new(&format!("target-{backend}"));
        let view = view_target(&s);
        let marker = s.host("marker");
        let script = format!(
            "cat {v}/etc/app/app.conf > {m} && echo hi > {v}/hello && test -d /usr/bin \
             && stat -f -c %t {v} >> {m}",
            v = view.display(),
            m = marker.display()
        );
        let target = view.to_str().unwrap().to_string();
        let d = fimfs(
            &s.run_args(&["--target", &target], &script),
            &[("FIM_OVERLAY", backend)],
            s.logs(),
        );
        assert_eq!(d.code(), Some(0), "{backend}: {d}");
        let seen = fs::read_to_string(&marker).unwrap();
        let magic = if backend == "bwrap" {
            "794c7630" // OVERLAYFS_SUPER_MAGIC
        } else {
            "65735546"
        };
        assert_eq!(seen, format!("setting=1\n{magic}\n"), "{backend}");
        assert_eq!(fs::read_to_string(s.upper.join("hello")).unwrap(), "hi\n");
        assert_eq!(
            fs::read_dir(&view).unwrap().count(),
            0,
            "the host's view dir was written"
        );
        s.assert_clean();
    }
}

#[test]
fn casefold_runs_on_the_daemon() {
    let s = Scene::new("casefold-run");
    for (opts, env) in [
        (&["--casefold"][..], &[][..]),
        (&[][..], &[("FIM_CASEFOLD", "1")][..]),
    ] {
        let d = fimfs(
            &s.run_args(opts, "cat /ETC/APP/README.TXT && echo x > /etc/App/NEW.txt"),
            env,
            s.logs(),
        );
        assert_eq!(d.code(), Some(0), "{d}");
        assert_eq!(d.stdout, "read me\n");
        assert!(s.upper.join("etc/app/NEW.txt").exists(), "{d}");
        s.assert_clean();
    }
}

#[test]
fn falls_back_to_the_daemon_when_the_kernel_refuses_the_upper() {
    let s = Scene::new("fallback");
    // The upper lives on a FUSE filesystem (as on an sshfs home): a fimfs
    // mount of an empty lower with a writable upper.
    let backing = s.t.mkdir("fuse-backing");
    let empty = s.t.mkdir("fuse-empty");
    let home = s.t.mkdir("fuse-home");
    let fuse = MountGuard::new(&[empty], Some(&backing), &home, &[]);
    let upper = home.join("data/root");
    let mut args = s.run_args(
        &[],
        "cat /etc/app/app.conf && echo fell-back > /etc/app/new; exit 7",
    );
    let at = args
        .iter()
        .position(|a| a.as_os_str() == s.upper.as_os_str())
        .unwrap();
    args[at] = upper.clone().into();
    let d = fimfs(&args, &[("FIM_OVERLAY", "bwrap")], s.logs());
    assert_eq!(d.code(), Some(7), "{d}");
    assert_eq!(d.stdout, "setting=1\n", "{d}");
    let ours: Vec<_> = d
        .stderr
        .lines()
        .filter(|l| l.starts_with("fimfs:"))
        .collect();
    assert_eq!(ours.len(), 1, "one line from the launcher: {d}");
    assert!(
        ours[0].contains("kernel overlay was refused") && ours[0].contains("overlay mount"),
        "the line gives bwrap's reason: {d}"
    );
    assert_eq!(
        fs::read_to_string(backing.join("data/root/etc/app/new")).unwrap(),
        "fell-back\n"
    );
    let runs: Vec<_> = fs::read_dir(home.join("data/work")).unwrap().collect();
    assert!(runs.is_empty(), "run directories left: {runs:?}");
    drop(fuse);
    s.assert_clean();
}

#[test]
fn exit_statuses() {
    let s = Scene::new("status");
    // The launcher's own errors: 125 and a message naming the problem.
    let missing = s.t.join("no-such-lower");
    let mut args = os(&["run"]);
    args.push(missing.clone().into());
    args.push(s.upper.clone().into());
    args.extend(os(&["--", "true"]));
    let d = fimfs(&args, &[], s.logs());
    assert_eq!(d.code(), Some(125), "{d}");
    assert!(
        d.stderr.contains("no-such-lower") && d.stderr.contains("does not exist"),
        "{d}"
    );
    let d = fimfs(&os(&["run", "/tmp", "/tmp/x"]), &[], s.logs());
    assert_eq!(d.code(), Some(125), "no command: {d}");
    let d = fimfs(
        &s.run_args(&["--target", "relative/dir"], "true"),
        &[],
        s.logs(),
    );
    assert_eq!(d.code(), Some(125), "{d}");
    assert!(d.stderr.contains("--target relative/dir"), "{d}");
    let d = fimfs(
        &s.run_args(&["--workdir", "/proc/fimfs-work"], "true"),
        &[],
        s.logs(),
    );
    assert_eq!(d.code(), Some(125), "{d}");
    assert!(d.stderr.contains("another filesystem"), "{d}");
    assert!(!s.upper.exists(), "a refused run created the upper");
    for backend in BACKENDS {
        let env = [("FIM_OVERLAY", backend)];
        let d = fimfs(&s.run_args(&[], "exit 7"), &env, s.logs());
        assert_eq!(d.code(), Some(7), "{backend}: {d}");
        let d = fimfs(&s.run_args(&[], "kill -USR1 $$"), &env, s.logs());
        assert_eq!(d.code(), Some(128 + 10), "{backend}: {d}");
        // A command that does not exist (by path or on PATH): 127; one
        // that exists but cannot be executed (no x bit, a directory): 126,
        // as shells say. bwrap's message shows; no fallback.
        for (command, code) in [
            ("/no/such/command", 127),
            ("no-such-command", 127),
            ("/etc/os-release", 126),
            ("/etc", 126),
        ] {
            let mut args = s.run_args(&[], "");
            args.truncate(args.len() - 3);
            args.push(command.into());
            let d = fimfs(&args, &env, s.logs());
            assert_eq!(d.code(), Some(code), "{backend} {command}: {d}");
            assert!(d.stderr.contains(command), "{backend}: {d}");
            assert!(!d.stderr.contains("refused"), "{backend}: {d}");
        }
        // Telling them apart wrote nothing into the upper.
        let written: Vec<_> = fs::read_dir(&s.upper).unwrap().flatten().collect();
        assert!(written.is_empty(), "{backend}: {written:?}");
    }
    s.assert_clean();
}

#[test]
fn signals_reach_the_command() {
    let s = Scene::new("signals");
    let view = view_target(&s);
    let target = view.to_str().unwrap().to_string();
    for backend in BACKENDS {
        for (sig, name, code) in [
            (nix::sys::signal::Signal::SIGTERM, "TERM", 42),
            (nix::sys::signal::Signal::SIGINT, "INT", 43),
        ] {
            let ready = s.host(&format!("ready-{backend}-{name}"));
            let got = s.host(&format!("got-{backend}-{name}"));
            let script = format!(
                "trap 'echo TERM > {g}; exit 42' TERM; trap 'echo INT > {g}; exit 43' INT; \
                 echo up > {r}; while :; do sleep 0.05; done",
                g = got.display(),
                r = ready.display()
            );
            let l = start(
                &s.run_args(&["--target", &target], &script),
                &[("FIM_OVERLAY", backend)],
                s.logs(),
            );
            wait_for("the command to start", || ready.exists());
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(l.pid()), sig).unwrap();
            let d = l.wait();
            assert_eq!(d.code(), Some(code), "{backend} {name}: {d}");
            assert_eq!(fs::read_to_string(&got).unwrap(), format!("{name}\n"));
            s.assert_clean();
        }
    }
}

#[test]
fn sigkill_of_the_launcher_leaves_nothing_behind() {
    let s = Scene::alone("sigkill");
    let view = view_target(&s);
    let target = view.to_str().unwrap().to_string();
    for backend in BACKENDS {
        let ready = s.host(&format!("ready-{backend}"));
        let script = format!("echo $$ > {}; exec sleep 600", ready.display());
        let mut l = start(
            &s.run_args(&["--target", &target], &script),
            &[("FIM_OVERLAY", backend)],
            s.logs(),
        );
        wait_for("the command to start", || {
            fs::read_to_string(&ready).is_ok_and(|t| t.ends_with('\n'))
        });
        let cmd_pid: i32 = fs::read_to_string(&ready).unwrap().trim().parse().unwrap();
        l.child.kill().unwrap();
        l.child.wait().unwrap();
        wait_for("the command to die with its launcher", || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(cmd_pid), None).is_err()
        });
        wait_for("the keeper to unmount and remove the run directory", || {
            let mounted = mounts().iter().any(|(p, _)| p.starts_with(s.t.path()));
            let runs = fs::read_dir(&s.work).map_or(0, |d| d.count());
            !mounted && runs == 0
        });
        // The next run on the same upper and work base just works.
        let d = fimfs(
            &s.run_args(&[], "echo again > /again && cat /again"),
            &[("FIM_OVERLAY", backend)],
            s.logs(),
        );
        assert_eq!(d.code(), Some(0), "{backend}: {d}");
        assert_eq!(d.stdout, "again\n");
        s.assert_clean();
    }
}

#[test]
fn two_daemon_runs_share_one_upper() {
    let s = Scene::new("two-daemons");
    let view = view_target(&s);
    let v = view.display().to_string();
    let target = v.clone();
    let script = |me: &str, other: &str| {
        format!(
            "echo {me} > {v}/from-{me} && touch {h}/{me}-ready && \
             while [ ! -e {h}/{other}-ready ]; do sleep 0.05; done; \
             cat {v}/from-{other}",
            h = s.t.join("host").display()
        )
    };
    let a = start(
        &s.run_args(&["--target", &target], &script("a", "b")),
        &[("FIM_OVERLAY", "unionfs")],
        s.logs(),
    );
    let b = start(
        &s.run_args(&["--target", &target], &script("b", "a")),
        &[("FIM_OVERLAY", "overlayfs")],
        s.logs(),
    );
    let (a, b) = (a.wait(), b.wait());
    assert_eq!(a.code(), Some(0), "{a}");
    assert_eq!(b.code(), Some(0), "{b}");
    assert_eq!(a.stdout, "b\n", "a sees b's write");
    assert_eq!(b.stdout, "a\n", "b sees a's write");
    s.assert_clean();
}

#[test]
fn bwrap_runs_wait_for_an_upper_in_use() {
    let s = Scene::new("busy");
    let view = view_target(&s);
    let target = view.to_str().unwrap().to_string();
    let h = |n: &str| s.host(n).display().to_string();
    let first = start(
        &s.run_args(
            &["--target", &target],
            &format!(
                "touch {}; while [ ! -e {} ]; do sleep 0.05; done; touch {}",
                h("a-started"),
                h("release"),
                h("a-done")
            ),
        ),
        &[("FIM_OVERLAY", "bwrap")],
        s.logs(),
    );
    wait_for("the first run", || s.host("a-started").exists());
    // With a 1 s limit the second run gives up, clearly, and runs nothing.
    let d = fimfs(
        &s.run_args(&["--target", &target], &format!("touch {}", h("b-ran"))),
        &[("FIM_OVERLAY", "bwrap"), ("FIMFS_BUSY_TIMEOUT", "1")],
        s.logs(),
    );
    assert_eq!(d.code(), Some(125), "{d}");
    assert!(d.stderr.contains("still in use by another run"), "{d}");
    assert!(!s.host("b-ran").exists());
    // With the default limit it waits for the first run to end.
    let third = start(
        &s.run_args(
            &["--target", &target],
            &format!("test -e {} && touch {}", h("a-done"), h("c-after-a")),
        ),
        &[("FIM_OVERLAY", "bwrap")],
        s.logs(),
    );
    // It says at once that it waits, and for which process.
    let said = format!("is in use by process {} (fimfs)", first.pid());
    let start = Instant::now();
    let told = loop {
        if fs::read_to_string(&third.err).is_ok_and(|e| e.contains(&said)) {
            break true;
        }
        if start.elapsed() > DEADLINE {
            break false;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let waited = !s.host("a-done").exists();
    // Released before any assertion, so that a failure leaves no run behind.
    fs::write(s.host("release"), "").unwrap();
    let (first, third) = (first.wait(), third.wait());
    assert!(
        told && waited,
        "the waiting run did not say `{said}`: {third}"
    );
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(
        third.code(),
        Some(0),
        "the waiting run ran after the first: {third}"
    );
    assert!(s.host("c-after-a").exists());
    s.assert_clean();
}

#[test]
fn old_or_missing_bwrap() {
    let s = Scene::new("old-bwrap");
    // A bwrap that says it is 0.8.0 and, like 0.8, has no --overlay-src;
    // otherwise it is the real one.
    let real = Command::new("sh")
        .args(["-c", "command -v bwrap"])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    assert!(!real.is_empty(), "no bwrap on PATH");
    let old = s.t.join("old-bwrap");
    fs::write(
        &old,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = --version ]; then echo 'bubblewrap 0.8.0'; exit 0; fi\n\
             for a in \"$@\"; do\n\
               if [ \"$a\" = --overlay-src ]; then echo 'bwrap: Unknown option --overlay-src' >&2; exit 1; fi\n\
             done\n\
             exec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = [("FIMFS_BWRAP", old.to_str().unwrap())];
    let d = fimfs(&s.run_args(&[], "echo old > /o && cat /o"), &env, s.logs());
    assert_eq!(d.code(), Some(0), "{d}");
    assert_eq!(d.stdout, "old\n");
    assert!(
        d.stderr.contains("0.8.0") && d.stderr.contains("--overlay"),
        "{d}"
    );
    assert!(s.upper.join("o").exists());
    let dry = s.run_args(&["--dry-run"], "true");
    let d = fimfs(&dry, &env, s.logs());
    assert!(d.stdout.contains("backend: BWRAP"), "{d}");
    assert!(d.stdout.contains("note: bwrap 0.8.0"), "{d}");
    assert!(d.stdout.contains("/mount / "), "{d}");
    // No bwrap at all: a clear error.
    let d = fimfs(
        &s.run_args(&[], "true"),
        &[("FIMFS_BWRAP", "/nonexistent/bwrap")],
        s.logs(),
    );
    assert_eq!(d.code(), Some(125), "{d}");
    assert!(d.stderr.contains("/nonexistent/bwrap"), "{d}");
    s.assert_clean();
}

#[test]
fn an_unprivileged_user_runs_on_each_backend() {
    // FlatImage runs as the desktop user: bwrap makes a user namespace, the
    // daemon mounts through fusermount3, and requests reach it with the
    // user's own uid.
    const NOBODY: u32 = 65534;
    let s = Scene::new("unprivileged");
    let data = s.t.join("data");
    fs::create_dir_all(&s.upper).unwrap();
    for d in [&data, &s.upper] {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    fs::create_dir_all(s.t.join("host")).unwrap();
    std::os::unix::fs::chown(s.t.join("host"), Some(NOBODY), Some(NOBODY)).unwrap();
    let view = view_target(&s);
    let target = view.to_str().unwrap().to_string();
    for backend in BACKENDS {
        let out = s.host(&format!("seen-{backend}"));
        let script = format!(
            "id -u > {o}; cat {v}/etc/app/app.conf >> {o}; echo mine > {v}/{b}",
            o = out.display(),
            v = view.display(),
            b = backend
        );
        let l = {
            let mut cmd = setpriv(NOBODY, FIMFS);
            cmd.args(s.run_args(&["--target", &target], &script))
                .env("FIM_OVERLAY", backend)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.output().unwrap()
        };
        assert!(
            l.status.success(),
            "{backend}: {}\n{}",
            l.status,
            String::from_utf8_lossy(&l.stderr)
        );
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            format!("{NOBODY}\nsetting=1\n"),
            "{backend}"
        );
        // The root of the view is the upper's root, which the user owns.
        let made = s.upper.join(backend);
        assert_eq!(fs::read_to_string(&made).unwrap(), "mine\n");
        assert_eq!(fs::metadata(&made).unwrap().uid(), NOBODY, "{backend}");
        s.assert_clean();
    }
}

//! Load: 8 processes doing mixed operations (create, write, append, truncate,
//! rename across directories, link, unlink, mkdir, rmdir, readdir, stat, read)
//! in shared directories of one mount. Errors a concurrent filesystem gives
//! (ENOENT, EEXIST, ENOTEMPTY, …) are fine; EIO, ENOTCONN, EXDEV or a hang
//! are not. Afterwards the kernel overlay, mounted on the same upper, must show
//! exactly what fimfs showed.
//!
//! And: 20,000 files open at once through the mount, half of them lower files
//! and half new ones; the daemon closes the fds of inodes the kernel forgets.
//!
//! The workers are this test binary run again (`load_worker`), so they are
//! real processes. Knobs: `FIMFS_LOAD_OPS` (per process, default 3000),
//! `FIMFS_LOAD_SEED`, `FIMFS_OPEN_FILES` (default 20000).

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKERS: usize = 8;
const DIRS: [&str; 3] = ["a", "b", "c"];
const NAMES: usize = 24;

/// Errors two processes racing on shared names legitimately get.
fn acceptable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EEXIST
                | libc::ENOTEMPTY
                | libc::EISDIR
                | libc::ENOTDIR
                | libc::EINVAL
                | libc::EBUSY
        )
    )
}

fn pick_path(r: &mut XorShift, root: &Path) -> PathBuf {
    let d = r.pick(&DIRS);
    root.join(d).join(format!("n{}", r.below(NAMES)))
}

/// One random operation; Ok(()) also for a lost race.
fn one_op(r: &mut XorShift, root: &Path) -> std::io::Result<()> {
    let p = pick_path(r, root);
    let q = pick_path(r, root);
    let op = r.below(13);
    let res = match op {
        0 | 1 => fs::File::create(&p)
            .and_then(|mut f| f.write_all(&fill(r.next_u64(), 1 + r.below(9000)))),
        2 => fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| f.write_all(b"appended\n")),
        3 => fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(r.below(5000) as u64)),
        4 | 5 => fs::rename(&p, &q),
        // A directory cannot be hard-linked: the kernel says EPERM before
        // asking the daemon (and another worker may have made `p` one).
        6 => match fs::hard_link(&p, &q) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
            other => other,
        },
        7 => fs::remove_file(&p),
        8 => fs::create_dir(&p),
        9 => fs::remove_dir(&p),
        10 => fs::read_dir(p.parent().unwrap()).and_then(|rd| {
            for e in rd {
                e?;
            }
            Ok(())
        }),
        11 => fs::symlink_metadata(&p).map(drop),
        _ => fs::File::open(&p).and_then(|mut f| {
            let mut v = Vec::new();
            f.read_to_end(&mut v).map(drop)
        }),
    };
    match res {
        Err(e) if acceptable(&e) => Ok(()),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("op {op} on {} / {}: {e}", p.display(), q.display()),
        )),
        ok => ok,
    }
}

/// The worker process: runs only when started by `many_processes_...`.
#[test]
fn load_worker() {
    let Ok(root) = std::env::var("FIMFS_LOAD_ROOT") else {
        return;
    };
    let ops = knob("FIMFS_LOAD_OPS", 3000);
    let seed = knob("FIMFS_LOAD_WORKER_SEED", 1);
    let mut r = XorShift::new(seed);
    let root = PathBuf::from(root);
    for i in 0..ops {
        if let Err(e) = one_op(&mut r, &root) {
            panic!("worker seed {seed}, operation {i}: {e}");
        }
    }
    println!("worker {seed}: {ops} operations");
}

#[test]
fn many_processes_mixed_operations_then_the_kernel_agrees() {
    let ops = knob("FIMFS_LOAD_OPS", 3000);
    let seed = knob("FIMFS_LOAD_SEED", 0x10ad);
    let s = Stack::new("load", 2);
    for (i, d) in DIRS.iter().enumerate() {
        for n in 0..NAMES / 2 {
            put(
                &s.l(1 + (n % 2), &format!("{d}/n{}", n * 2)),
                format!("lower {i} {n}\n"),
            );
        }
        put(&s.l(2, &format!("{d}/n{}/inner", NAMES - 1)), "inner\n");
    }
    let m = s.mount();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut children: Vec<_> = (0..WORKERS)
        .map(|w| {
            Command::new(&exe)
                .args(["--exact", "load_worker", "--nocapture", "--test-threads=1"])
                .env("FIMFS_LOAD_ROOT", &s.mnt)
                .env("FIMFS_LOAD_OPS", ops.to_string())
                .env("FIMFS_LOAD_WORKER_SEED", (seed + w as u64).to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // A bound against a hang (the daemon is killed, the workers then fail):
    // generous, scaled by the work asked for.
    let deadline = Duration::from_secs(120 + ops / 20);
    let mut failures = Vec::new();
    for (w, c) in children.iter_mut().enumerate() {
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                if !st.success() {
                    let mut err = String::new();
                    let _ = c.stderr.take().unwrap().read_to_string(&mut err);
                    let mut out = String::new();
                    let _ = c.stdout.take().unwrap().read_to_string(&mut out);
                    failures.push(format!("worker {w}: {st}\n{out}\n{err}"));
                }
                break;
            }
            if started.elapsed() > deadline {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(m.pid() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                failures.push(format!("worker {w}: still running after {deadline:?}"));
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "load: {WORKERS} processes × {ops} operations = {} operations",
        WORKERS as u64 * ops
    );
    let ours = view(&s.mnt, true);
    unmount_clean(m);
    let k = s.kernel();
    assert_same_view("fimfs", &ours, "kernel overlay", &view(&s.mnt, true));
    drop(k);
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The holder process: opens `FIMFS_HOLD_COUNT` new files in
/// `FIMFS_HOLD_DIR`, writes each, says "ready", and keeps them open until
/// its stdin closes.
#[test]
fn open_holder() {
    let Ok(dir) = std::env::var("FIMFS_HOLD_DIR") else {
        return;
    };
    let n = knob("FIMFS_HOLD_COUNT", 0) as usize;
    let dir = PathBuf::from(dir);
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(dir.join(format!("f{i}")))
            .unwrap_or_else(|e| panic!("open new/f{i} with {i} open: {e}"));
        f.write_all(format!("new {i}\n").as_bytes()).unwrap();
        files.push(f);
    }
    println!("ready {}", files.len());
    let mut sink = String::new();
    let _ = std::io::stdin().read_to_string(&mut sink);
    drop(files);
}

#[test]
fn twenty_thousand_files_open_at_once() {
    // Half held here, half by a second process: this machine's hard limit
    // (20,000 fds per process, no CAP_SYS_RESOURCE to raise it) could not
    // hold all 20,000 plus stdio in one process. The daemon holds them all.
    let total = knob("FIMFS_OPEN_FILES", 20_000) as usize;
    let half = total / 2;
    let s = Stack::new("open-files", 1);
    for i in 0..half {
        put(&s.l(1, &format!("lower/f{i}")), format!("lower {i}\n"));
    }
    mkdirs(&s.l(1, "new"));
    let m = s.mount();
    let baseline = open_fds(m.pid());
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "open_holder", "--nocapture", "--test-threads=1"])
        .env("FIMFS_HOLD_DIR", s.m("new"))
        .env("FIMFS_HOLD_COUNT", (total - half).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut files = Vec::with_capacity(half);
    for i in 0..half {
        files.push(
            fs::File::open(s.m(&format!("lower/f{i}")))
                .unwrap_or_else(|e| panic!("open lower/f{i} with {i} open: {e}")),
        );
    }
    // Wait for the holder's "ready" line (or its failure).
    let mut out = holder.stdout.take().unwrap();
    let mut seen = String::new();
    let mut byte = [0u8; 1];
    while !seen.contains("ready") {
        match out.read(&mut byte) {
            Ok(1) => seen.push(byte[0] as char),
            _ => {
                let st = holder.wait().unwrap();
                let mut err = String::new();
                let _ = holder.stderr.take().unwrap().read_to_string(&mut err);
                panic!("the holder failed ({st}): {seen}\n{err}");
            }
        }
    }
    for (i, f) in files.iter_mut().enumerate() {
        let mut v = String::new();
        f.read_to_string(&mut v).unwrap();
        assert_eq!(v, format!("lower {i}\n"));
    }
    eprintln!(
        "open files: {} open through the mount at once ({half} here, {} in a second process); \
         the daemon holds {} fds",
        files.len() + (total - half),
        total - half,
        open_fds(m.pid())
    );
    drop(files);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success(), "the holder failed");
    for i in (0..total - half).step_by(997) {
        assert_eq!(read_str(&s.m(&format!("new/f{i}"))), format!("new {i}\n"));
    }
    // Once the kernel forgets the inodes, the daemon closes their fds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        if open_fds(m.pid()) <= baseline + 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon still holds {} fds (baseline {baseline}) after the kernel forgot the inodes",
            open_fds(m.pid())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unmount_clean(m);
}

/// A tree merged over 60 lowers whose 40 directories exist in every lower, served by
/// a daemon whose open-file limit is 512: the 2,400 layer directories cannot all stay
/// open (the daemon once failed with EMFILE here), yet every listing is whole and
/// every read gives the top-most content, twice over, and a create lands.
#[test]
fn sixty_lowers_under_a_small_fd_limit() {
    const LOWERS: usize = 60;
    const DIRS: usize = 40;
    let s = Stack::new("fdlimit", LOWERS);
    for l in 1..=LOWERS {
        for d in 0..DIRS {
            put(&s.l(l, &format!("d{d}/top")), format!("{l}"));
            if (l + d) % 7 == 0 {
                put(&s.l(l, &format!("d{d}/f{l}")), format!("{l}"));
            }
        }
    }
    let m = MountGuard::with_nofile(&s.lowers, Some(&s.upper), &s.mnt, &[], 512);
    for pass in 0..2 {
        for d in 0..DIRS {
            let dir = m.join(format!("d{d}"));
            let mut want = vec!["top".to_string()];
            want.extend(
                (1..=LOWERS)
                    .filter(|l| (l + d) % 7 == 0)
                    .map(|l| format!("f{l}")),
            );
            want.sort();
            let mut names: Vec<String> = fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("pass {pass}: read_dir {}: {e}", dir.display()))
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, want, "pass {pass}: listing of {}", dir.display());
            for name in &names {
                let want = match name.strip_prefix('f') {
                    Some(l) => l.to_string(),
                    None => "1".to_string(),
                };
                let got = fs::read_to_string(dir.join(name))
                    .unwrap_or_else(|e| panic!("pass {pass}: read d{d}/{name}: {e}"));
                assert_eq!(got, want, "pass {pass}: d{d}/{name}");
            }
        }
    }
    fs::write(m.join("d5/new"), "new").expect("create under the fd limit");
    assert_eq!(fs::read_to_string(m.join("d5/new")).unwrap(), "new");
    unmount_clean(m);
}

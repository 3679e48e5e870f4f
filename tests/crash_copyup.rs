//! Copy-up is atomic: SIGKILL the daemon while it copies large lower files up, and
//! every file must be either unchanged (the lower content, byte for byte) or complete
//! (the lower content plus the appended byte), both in the upper itself and through a
//! fresh mount; nothing partial or staged may show in the upper; and the workdir the
//! killed daemon left behind must not get in the way of the next mount (an explicit
//! `-o workdir=` reused at once, or the default per-PID one left beside the new one).
//!
//! Each iteration picks, from a seed, when to kill: after a random delay, once a
//! staged copy in the workdir has reached a random size, or once some copies are in
//! the upper. Knobs: `FIMFS_CRASH_ITERS` (default 5), `FIMFS_CRASH_SEED`.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

const FILES: usize = 3;
const MIB: usize = 1024 * 1024;
const SIZE_MIB: usize = 64;
const SIZE: u64 = (SIZE_MIB * MIB) as u64;
const DEFAULT_ITERS: u64 = 5;
const DEFAULT_SEED: u64 = 0xc0ff_ee00;
const APPENDED: u8 = b'!';
/// A bound on the polls for the kill moment, should the appends hang: the kill then
/// comes anyway, and the checks below say what state the files are in.
const MAX_SPINS: u64 = 5_000_000;

/// MiB `i` of lower file `f`: a per-file random block stamped with its position, so a
/// misplaced, repeated or missing MiB is told apart from the right one.
fn chunk(base: &[u8], f: usize, i: usize) -> Vec<u8> {
    let mut c = base.to_vec();
    c[..8].copy_from_slice(&(i as u64).to_le_bytes());
    c[8..16].copy_from_slice(&(f as u64).to_le_bytes());
    c
}

fn bases() -> Vec<Vec<u8>> {
    (0..FILES).map(|f| fill(0xba5e + f as u64, MIB)).collect()
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    Unchanged,
    Complete,
}

/// Reads `p` and tells whether it is the lower file `f`, with or without the appended
/// byte; anything else fails the test with what is wrong.
fn classify(p: &Path, base: &[u8], f: usize, what: &str) -> State {
    let mut file = File::open(p).unwrap_or_else(|e| panic!("{what}: open {}: {e}", p.display()));
    let size = file.metadata().unwrap().len();
    assert!(
        size == SIZE || size == SIZE + 1,
        "{what}: {} is {size} bytes: neither the lower file ({SIZE}) nor the lower file plus one byte",
        p.display()
    );
    let mut buf = vec![0u8; MIB];
    for i in 0..SIZE_MIB {
        file.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: read MiB {i} of {}: {e}", p.display()));
        if buf != chunk(base, f, i) {
            let bad = buf
                .iter()
                .zip(chunk(base, f, i))
                .position(|(a, b)| *a != b)
                .unwrap_or(0);
            panic!(
                "{what}: {} differs from the lower file at byte {} (MiB {i}): a partial or corrupt copy",
                p.display(),
                i * MIB + bad
            );
        }
    }
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).unwrap();
    match tail.as_slice() {
        [] => State::Unchanged,
        [APPENDED] => State::Complete,
        other => panic!(
            "{what}: {} ends with {other:?} after the lower content",
            p.display()
        ),
    }
}

/// open(O_APPEND), write one byte, close: Ok only if all three succeeded.
fn append_one(p: &Path) -> io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(p)?;
    f.write_all(&[APPENDED])?;
    nix::unistd::close(f.into_raw_fd()).map_err(io::Error::from)
}

/// Total size of the regular files anywhere below `dir` (the staged copies).
fn staged_bytes(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => staged_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Every path below `dir`, relative, sorted; names only (no reads: the files are big).
fn upper_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(r.clone());
            }
            out.push(r.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Sleep this many milliseconds after the appends start.
    Delay(u64),
    /// Once the workdir holds this many staged bytes.
    Staged(u64),
    /// Once this many files are in the upper.
    Published(usize),
}

#[test]
fn sigkill_during_copy_up_never_leaves_a_partial_file() {
    let iters = knob("FIMFS_CRASH_ITERS", DEFAULT_ITERS);
    let seed = knob("FIMFS_CRASH_SEED", DEFAULT_SEED);
    let replay = format!("FIMFS_CRASH_SEED={seed} FIMFS_CRASH_ITERS={iters}");
    eprintln!("crash_copyup: {replay}");
    let s = Stack::new("crash-copyup", 1);
    let bases = bases();
    let names: Vec<String> = (0..FILES).map(|f| format!("big{f}")).collect();
    for (f, name) in names.iter().enumerate() {
        let mut out = File::create(s.l(1, name)).unwrap();
        for i in 0..SIZE_MIB {
            out.write_all(&chunk(&bases[f], f, i)).unwrap();
        }
    }
    let explicit_work = s.tmp.join("explicit-work");
    let mut rng = XorShift::new(seed);
    let mut seen = [0usize; 2];

    for iter in 0..iters {
        let ctx = format!("[{replay}] iteration {iter}");
        fs::remove_dir_all(&s.upper).unwrap();
        mkdirs(&s.upper);
        let explicit = iter % 2 == 1;
        let workdir_opt = format!("workdir={}", explicit_work.display());
        let opts: Vec<&str> = if explicit {
            vec![workdir_opt.as_str()]
        } else {
            vec![]
        };
        // A copy of 64 MiB takes tens of milliseconds: the delays are short, and the
        // staged threshold stays below one file so that the kill lands mid-copy.
        let kill_at = match iter % 3 {
            0 => KillAt::Staged(rng.below(SIZE_MIB * MIB * 3 / 4) as u64),
            1 => KillAt::Delay(rng.below(60) as u64),
            _ => KillAt::Published(1 + rng.below(FILES - 1)),
        };
        let sequential = rng.chance(50);
        eprintln!(
            "{ctx}: kill at {kill_at:?}, workdir {}, appends {}",
            if explicit { "explicit" } else { "default" },
            if sequential {
                "one after the other"
            } else {
                "in parallel"
            }
        );

        let m = s.mount_opts(&opts);
        let pid = m.pid();
        let workdir = if explicit {
            explicit_work.clone()
        } else {
            s.tmp.join(format!("work/{pid}"))
        };
        assert!(
            workdir.is_dir(),
            "{ctx}: the daemon's workdir {} does not exist",
            workdir.display()
        );
        // All files at once, or one after the other (then a kill once k files are
        // published lands in the middle of the next copy).
        let paths: Vec<std::path::PathBuf> = names.iter().map(|n| m.join(n)).collect();
        let appenders: Vec<thread::JoinHandle<Vec<bool>>> = if sequential {
            vec![thread::spawn(move || {
                paths.iter().map(|p| append_one(p).is_ok()).collect()
            })]
        } else {
            paths
                .into_iter()
                .map(|p| thread::spawn(move || vec![append_one(&p).is_ok()]))
                .collect()
        };
        let all_done = |h: &[thread::JoinHandle<Vec<bool>>]| h.iter().all(|t| t.is_finished());
        match kill_at {
            KillAt::Delay(ms) => thread::sleep(Duration::from_millis(ms)),
            KillAt::Staged(bytes) => {
                let mut spins = 0u64;
                while staged_bytes(&workdir) < bytes && !all_done(&appenders) && spins < MAX_SPINS {
                    spins += 1;
                    thread::yield_now();
                }
            }
            KillAt::Published(k) => {
                let mut spins = 0u64;
                while upper_files(&s.upper).len() < k && !all_done(&appenders) && spins < MAX_SPINS
                {
                    spins += 1;
                    thread::yield_now();
                }
            }
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL the daemon");
        assert!(
            lazy_unmount(&s.mnt),
            "{ctx}: lazy unmount of the dead mount failed"
        );
        let (status, _) = m.wait_exit();
        assert!(
            status.is_some_and(|st| !st.success()),
            "{ctx}: the killed daemon's status: {status:?}"
        );
        let mut acked: Vec<bool> = appenders
            .into_iter()
            .flat_map(|h| h.join().expect("appender thread"))
            .collect();
        acked.resize(FILES, false);
        assert_eq!(
            mounted_fstype(&s.mnt),
            None,
            "{ctx}: still mounted after the lazy unmount"
        );

        // The upper as the killed daemon left it: each file absent, unchanged or
        // complete, and nothing else.
        let left = upper_files(&s.upper);
        for n in &left {
            assert!(
                names.contains(n),
                "{ctx}: the upper holds {n:?}, which is neither a lower file nor a copy of one: {left:?}"
            );
        }
        let mut states = Vec::new();
        for (f, n) in names.iter().enumerate() {
            let state = if s.u(n).exists() {
                assert!(
                    lstat(&s.u(n)).file_type().is_file(),
                    "{ctx}: upper {n} is not a regular file"
                );
                classify(&s.u(n), &bases[f], f, &format!("{ctx}: upper"))
            } else {
                State::Unchanged
            };
            if acked[f] {
                assert_eq!(
                    state,
                    State::Complete,
                    "{ctx}: the append to {n} returned success but is not in the upper"
                );
            }
            states.push(state);
        }
        eprintln!("{ctx}: appends acknowledged {acked:?}, upper {left:?}, states {states:?}");
        seen[0] += states.iter().filter(|s| **s == State::Unchanged).count();
        seen[1] += states.iter().filter(|s| **s == State::Complete).count();
        let stale: Vec<String> = upper_files(&workdir);

        // A new daemon on the same upper (and, every other iteration, the very same
        // workdir, still holding the staged leftovers).
        let m = s.mount_opts(&opts);
        let new_workdir = if explicit {
            explicit_work.clone()
        } else {
            s.tmp.join(format!("work/{}", m.pid()))
        };
        assert_eq!(
            upper_files(&new_workdir),
            Vec::<String>::new(),
            "{ctx}: the new daemon's workdir is not clean at mount (the killed daemon left {stale:?})"
        );
        assert_eq!(
            common::names(m.path()),
            names,
            "{ctx}: readdir of the remounted root"
        );
        for (f, n) in names.iter().enumerate() {
            let got = classify(
                &m.join(n),
                &bases[f],
                f,
                &format!("{ctx}: through the remount"),
            );
            assert_eq!(
                got, states[f],
                "{ctx}: {n} through the remount vs in the upper"
            );
        }
        // The remounted daemon finishes the job.
        for (f, n) in names.iter().enumerate() {
            if states[f] == State::Unchanged {
                append_one(&m.join(n))
                    .unwrap_or_else(|e| panic!("{ctx}: append to {n} after the remount: {e}"));
            }
            assert_eq!(classify(&m.join(n), &bases[f], f, &ctx), State::Complete);
        }
        unmount_clean(m);
        for (f, n) in names.iter().enumerate() {
            assert_eq!(
                classify(&s.u(n), &bases[f], f, &format!("{ctx}: final upper")),
                State::Complete
            );
            assert_eq!(lstat(&s.u(n)).size(), SIZE + 1);
        }
        assert_eq!(upper_files(&s.upper), names, "{ctx}: the final upper");
        if !explicit {
            assert!(
                !new_workdir.exists(),
                "{ctx}: {} survived a clean unmount",
                new_workdir.display()
            );
        }
    }
    eprintln!(
        "crash_copyup: over {iters} iterations, {} files were left unchanged and {} complete",
        seen[0], seen[1]
    );
    // Guard against a vacuous run: a kill at a staged threshold below one file
    // interrupts that copy (it is staged in the workdir, as the spec requires).
    assert!(
        seen[0] > 0,
        "[{replay}] no kill interrupted a copy-up: nothing was ever staged in the workdir, or every copy finished first"
    );
    // The lowers were never written.
    for (f, n) in names.iter().enumerate() {
        assert_eq!(
            classify(&s.l(1, n), &bases[f], f, "lower"),
            State::Unchanged
        );
    }
}

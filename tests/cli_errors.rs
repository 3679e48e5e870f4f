//! Bad `fimfs mount` command lines: each must exit non-zero, with a message that
//! names the offending path (or option) and the reason, and must create nothing: no
//! mount, no upper, no workdir. Every case is run both daemonizing and with `-f`.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const MISSING: &[&str] = &["no such file", "not found", "does not exist", "missing"];
const NOT_A_DIR: &[&str] = &["not a directory", "not a dir", "is a file", "regular file"];
const INSIDE: &[&str] = &[
    "inside", "within", "under", "below", "overlap", "nested", "contain",
];
const OTHER_FS: &[&str] = &[
    "filesystem",
    "file system",
    "device",
    "same fs",
    "cross-device",
];
const NOT_EMPTY: &[&str] = &["not empty", "non-empty", "nonempty"];
const IN_USE: &[&str] = &["in use", "locked", "busy", "already", "another"];
const UNKNOWN: &[&str] = &[
    "unknown",
    "unrecognized",
    "unrecognised",
    "unsupported",
    "invalid",
];

struct Setup {
    tmp: TempDir,
    fx: Layers,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        require_root_and_fuse();
        let tmp = TempDir::new(tag);
        let fx = build_fixtures(&tmp.join("fx"));
        Setup { tmp, fx }
    }

    /// The default workdir's parent for an upper in `fx/`: it must not appear.
    fn default_work(&self) -> PathBuf {
        self.tmp.join("fx/work")
    }
}

/// One bad command line and what it must (not) do.
struct Refusal<'a> {
    args: Vec<OsString>,
    mnt: &'a Path,
    /// Substrings stderr must contain: the offending path or option.
    names: Vec<String>,
    /// stderr must contain one of these (case-insensitive): the reason.
    reasons: &'a [&'a str],
    /// Paths that did not exist before and must not exist after.
    not_created: Vec<PathBuf>,
}

fn assert_refused(s: &Setup, r: &Refusal) {
    for p in &r.not_created {
        assert!(
            fs::symlink_metadata(p).is_err(),
            "test setup: {} exists already",
            p.display()
        );
    }
    for foreground in [false, true] {
        let mut args = r.args.clone();
        if foreground {
            args.insert(1, "-f".into());
        }
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        let cmd = format!("fimfs {}", shown.join(" "));
        let out = run_fimfs(&args, &s.tmp.join("logs"));
        let mounted = mounted_fstype(r.mnt);
        if mounted.is_some() {
            unmount_all_below(r.mnt);
        }
        assert!(out.status.is_some(), "{cmd}: did not exit: {out}");
        assert!(!out.success(), "{cmd}: exited 0: {out}");
        assert_eq!(mounted, None, "{cmd}: mounted {} anyway", r.mnt.display());
        for name in &r.names {
            assert!(
                out.stderr.contains(name.as_str()),
                "{cmd}: stderr does not name {name:?}: {out}"
            );
        }
        let lower = out.stderr.to_lowercase();
        assert!(
            r.reasons.iter().any(|w| lower.contains(w)),
            "{cmd}: stderr gives no reason (one of {:?}): {out}",
            r.reasons
        );
        for p in &r.not_created {
            assert!(
                fs::symlink_metadata(p).is_err(),
                "{cmd}: created {}",
                p.display()
            );
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn missing_lower() {
    let st = Setup::new("cli-missing-lower");
    let missing = st.tmp.join("no-such-lower");
    let upper = st.tmp.join("new-upper");
    let lowers = vec![st.fx.lowers[0].clone(), missing.clone()];
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&lowers, Some(&upper), &st.fx.mnt, &[]),
            mnt: &st.fx.mnt,
            names: vec![s(&missing)],
            reasons: MISSING,
            not_created: vec![upper, st.tmp.join("work")],
        },
    );
}

/// A regular file is read as a DwarFS image (issue 20); one that is not
/// an image is refused, named, with both things it could have been.
#[test]
fn lower_is_a_regular_file_but_no_image() {
    let st = Setup::new("cli-lower-file");
    let file = st.fx.lowers[1].join("shadow.txt");
    let lowers = vec![st.fx.lowers[0].clone(), file.clone()];
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&lowers, Some(&st.fx.upper), &st.fx.mnt, &[]),
            mnt: &st.fx.mnt,
            names: vec![s(&file)],
            reasons: &["neither a directory nor a dwarfs image"],
            not_created: vec![st.default_work()],
        },
    );
}

#[test]
fn upper_is_a_regular_file() {
    let st = Setup::new("cli-upper-file");
    let file = st.tmp.join("upper-file");
    fs::write(&file, "not a directory\n").unwrap();
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&file), &st.fx.mnt, &[]),
            mnt: &st.fx.mnt,
            names: vec![s(&file)],
            reasons: NOT_A_DIR,
            not_created: vec![st.tmp.join("work")],
        },
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory\n");
}

#[test]
fn upper_inside_a_lower() {
    let st = Setup::new("cli-upper-in-lower");
    // A new directory inside a lower, and an existing directory of a lower.
    let new_upper = st.fx.lowers[1].join("upper");
    let existing = st.fx.lowers[2].join("merged");
    for (upper, not_created) in [
        (
            &new_upper,
            vec![new_upper.clone(), st.fx.lowers[1].join("work")],
        ),
        (&existing, vec![st.fx.lowers[2].join("work")]),
    ] {
        let before: Vec<Snapshot> = st.fx.lowers.iter().map(|l| snapshot(l)).collect();
        assert_refused(
            &st,
            &Refusal {
                args: mount_args(&st.fx.lowers, Some(upper), &st.fx.mnt, &[]),
                mnt: &st.fx.mnt,
                names: vec![s(upper)],
                reasons: INSIDE,
                not_created,
            },
        );
        let after: Vec<Snapshot> = st.fx.lowers.iter().map(|l| snapshot(l)).collect();
        assert!(before == after, "a refused mount changed a lower");
    }
}

#[test]
fn upper_inside_the_mountpoint() {
    let st = Setup::new("cli-upper-in-mnt");
    let upper = st.fx.mnt.join("upper");
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&upper), &st.fx.mnt, &[]),
            mnt: &st.fx.mnt,
            names: vec![s(&upper)],
            reasons: INSIDE,
            not_created: vec![upper.clone(), st.fx.mnt.join("work")],
        },
    );
}

#[test]
fn workdir_inside_a_lower() {
    let st = Setup::new("cli-work-in-lower");
    let work = st.fx.lowers[0].join("work");
    let opt = format!("workdir={}", work.display());
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[&opt]),
            mnt: &st.fx.mnt,
            names: vec![s(&work)],
            reasons: INSIDE,
            not_created: vec![work.clone(), st.default_work()],
        },
    );
}

#[test]
fn workdir_inside_the_mountpoint() {
    let st = Setup::new("cli-work-in-mnt");
    let work = st.fx.mnt.join("work");
    let opt = format!("workdir={}", work.display());
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[&opt]),
            mnt: &st.fx.mnt,
            names: vec![s(&work)],
            reasons: INSIDE,
            not_created: vec![work.clone(), st.default_work()],
        },
    );
}

/// A tmpfs, for a workdir on another filesystem than the upper.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: PathBuf) -> Tmpfs {
        fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount -t tmpfs");
        assert!(st.success(), "mount -t tmpfs {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn workdir_on_another_filesystem() {
    let st = Setup::new("cli-work-other-fs");
    let other = Tmpfs::new(st.tmp.join("tmpfs"));
    let work = other.0.join("work");
    let opt = format!("workdir={}", work.display());
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[&opt]),
            mnt: &st.fx.mnt,
            names: vec![s(&work)],
            reasons: OTHER_FS,
            not_created: vec![work.clone(), st.default_work()],
        },
    );
    // Also when the workdir exists already.
    fs::create_dir(&work).unwrap();
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[&opt]),
            mnt: &st.fx.mnt,
            names: vec![s(&work)],
            reasons: OTHER_FS,
            not_created: vec![st.default_work()],
        },
    );
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "{} was written to",
        work.display()
    );
}

#[test]
fn mountpoint_not_empty() {
    let st = Setup::new("cli-mnt-not-empty");
    fs::write(st.fx.mnt.join("occupied"), "x").unwrap();
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[]),
            mnt: &st.fx.mnt,
            names: vec![s(&st.fx.mnt)],
            reasons: NOT_EMPTY,
            not_created: vec![st.default_work()],
        },
    );
}

#[test]
fn mountpoint_not_empty_is_accepted_with_nonempty() {
    let st = Setup::new("cli-mnt-nonempty-ok");
    fs::write(st.fx.mnt.join("occupied"), "x").unwrap();
    let m = MountGuard::new(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &["nonempty"]);
    assert_eq!(
        fs::read_to_string(m.join("shadow.txt")).unwrap(),
        "shadow.txt from lower1\n"
    );
    assert!(
        !m.join("occupied").exists(),
        "the mount must cover the old contents"
    );
    drop(m);
    assert_eq!(fs::read_to_string(st.fx.mnt.join("occupied")).unwrap(), "x");
}

/// A second mount on a live fimfs mount names it and its daemon, rather than
/// suggesting `-o nonempty`; the first mount keeps serving.
#[test]
fn mountpoint_already_a_fimfs_mount() {
    let st = Setup::new("cli-mnt-live");
    let first = MountGuard::new(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[]);
    let other_upper = st.tmp.join("other-upper");
    for foreground in [false, true] {
        let mut args = mount_args(&st.fx.lowers, Some(&other_upper), &st.fx.mnt, &[]);
        if foreground {
            args.insert(1, "-f".into());
        }
        let out = run_fimfs(&args, &st.tmp.join("logs"));
        assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
        assert!(out.stderr.contains("is already a fimfs mount"), "{out}");
        assert!(out.stderr.contains(&s(&st.fx.mnt)), "{out}");
        let by = format!("served by process {}", first.pid());
        assert!(out.stderr.contains(&by), "{out}");
        assert!(!out.stderr.contains("nonempty"), "{out}");
        assert!(!other_upper.exists(), "{out}");
    }
    assert_eq!(mounts().iter().filter(|(p, _)| p == &st.fx.mnt).count(), 1);
    assert!(first.join("shadow.txt").exists());
}

#[test]
fn mountpoint_missing_or_a_file() {
    let st = Setup::new("cli-mnt-bad");
    let missing = st.tmp.join("no-such-mnt");
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &missing, &[]),
            mnt: &missing,
            names: vec![s(&missing)],
            reasons: MISSING,
            not_created: vec![missing.clone(), st.default_work()],
        },
    );
    let file = st.tmp.join("mnt-file");
    fs::write(&file, "x").unwrap();
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &file, &[]),
            mnt: &file,
            names: vec![s(&file)],
            reasons: NOT_A_DIR,
            not_created: vec![st.default_work()],
        },
    );
}

#[test]
fn second_daemon_on_the_same_workdir() {
    let st = Setup::new("cli-work-twice");
    let work = st.tmp.join("shared-work");
    let opt = format!("workdir={}", work.display());
    let first = MountGuard::new(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[&opt]);
    let mnt2 = st.tmp.mkdir("mnt2");
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &mnt2, &[&opt]),
            mnt: &mnt2,
            names: vec![s(&work)],
            reasons: IN_USE,
            not_created: vec![st.default_work()],
        },
    );
    // The first daemon is untouched.
    assert!(
        work.is_dir(),
        "the refused daemon removed the first one's workdir"
    );
    assert_eq!(
        fs::read_to_string(first.join("shadow.txt")).unwrap(),
        "shadow.txt from lower1\n"
    );
    let (status, log) = first.unmount();
    assert!(
        status.is_some_and(|s| s.success()),
        "first daemon: {status:?}\n{log}"
    );
}

#[test]
fn unknown_option() {
    let st = Setup::new("cli-unknown-opt");
    assert_refused(
        &st,
        &Refusal {
            args: mount_args(
                &st.fx.lowers,
                Some(&st.fx.upper),
                &st.fx.mnt,
                &["ro,bogus_fimfs_option=1"],
            ),
            mnt: &st.fx.mnt,
            names: vec!["bogus_fimfs_option".into()],
            reasons: UNKNOWN,
            not_created: vec![st.default_work()],
        },
    );
}

#[test]
fn bad_numbers() {
    let st = Setup::new("cli-bad-numbers");
    for (opt, name) in [
        ("squash_to_uid=abc", "squash_to_uid"),
        ("squash_to_gid=-1", "squash_to_gid"),
        ("squash_to_uid=99999999999", "squash_to_uid"),
        ("threads=0", "threads"),
        ("threads=many", "threads"),
        ("timeout=-1", "timeout"),
        ("timeout=1e400", "timeout"),
    ] {
        assert_refused(
            &st,
            &Refusal {
                args: mount_args(&st.fx.lowers, Some(&st.fx.upper), &st.fx.mnt, &[opt]),
                mnt: &st.fx.mnt,
                names: vec![name.into()],
                reasons: &[
                    "invalid",
                    "number",
                    "integer",
                    "out of range",
                    "at least",
                    "must be",
                ],
                not_created: vec![st.default_work()],
            },
        );
    }
}

//! Reliability and security through real mounts (issue 7, items 4, 6 and 7):
//!
//! - **Privilege.** A mount made without `allow_other` (an unprivileged user mounting
//!   through `fusermount3`) cannot be entered by anyone else. With `allow_other` (a
//!   root mount) the kernel's permission checks give, operation by operation, the
//!   errno the kernel overlay gives on identical layers. `security.capability` and the
//!   set-ID bits end as on the kernel overlay after a copy-up, a write by root, a write
//!   by another user and a chown. (That the overlay's private xattrs cannot be set or
//!   removed through the mount and never show in `listxattr` is tested in
//!   `mount_write_copy_up::private_xattrs_are_refused_and_hidden`, and on the
//!   engine in `engine_read::overlay_xattrs_cannot_be_set_ordinary_ones_can`.)
//! - **Two daemons, one upper** (FlatImage runs several instances of one app): each
//!   sees its own writes at once and the other's once the kernel's cache expires;
//!   writes to distinct files, appends to one shared file, creates of one name and
//!   copy-ups of one file from both at once lose nothing; afterwards the kernel overlay
//!   reads the upper as exactly the union of both daemons' writes.
//! - **Changes behind the mount** (FlatImage writes GPU driver files into the upper):
//!   a symlink and a file made in the upper after mounting, also in directories listed
//!   before and in directories the upper did not have, are found by their first
//!   lookup, and the next listing of their directory shows them.
//!
//! Waiting for another daemon's view polls up to [`DEADLINE`]: a bound against hangs,
//! not a timing assertion.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// An unprivileged user that exists on Debian (`nobody`).
const NOBODY: u32 = 65534;
/// Another user, without supplementary groups.
const USER: u32 = 1000;
/// How long a view may take to show another daemon's change (the kernel's entry and
/// attribute timeout is 1 s): generous, so that a loaded machine does not fail.
const DEADLINE: Duration = Duration::from_secs(10);

/// `security.capability`, VFS revision 2 (`struct vfs_cap_data`, 20 bytes, little
/// endian): `magic_etc` = `VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE`
/// (0x02000001; the kernel refuses other flag bits), then (permitted, inheritable)
/// for capabilities 0-31 and 32-63: here `cap_net_bind_service` (bit 10), as
/// `setcap cap_net_bind_service+ep` writes it.
fn cap_v2() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

// ---------------------------------------------------------------------------------
// Helpers

/// Runs `f` on a new thread whose credentials are `uid`:`gid` with no supplementary
/// groups. The raw syscalls change only that thread (glibc's wrappers would change
/// every thread of the test process), and the thread ends with `f`.
fn as_user<T: Send + 'static>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    let t = thread::spawn(move || {
        // SAFETY: plain syscalls without pointers (setgroups gets an empty list).
        let r = unsafe {
            [
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                libc::syscall(libc::SYS_setresgid, gid, gid, gid),
                libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            ]
        };
        assert_eq!(r, [0, 0, 0], "cannot become {uid}:{gid}");
        f()
    });
    t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Polls `probe` until it returns `want`; fails after [`DEADLINE`] with the last value.
fn eventually<T: PartialEq + std::fmt::Debug>(what: &str, want: T, mut probe: impl FnMut() -> T) {
    let start = Instant::now();
    loop {
        let got = probe();
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: still {got:?} after {DEADLINE:?}, want {want:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the view through `m` until it equals `want`; after [`DEADLINE`] fails with
/// the differences.
fn settle_on(name: &str, m: &Path, want: &Tree) {
    let start = Instant::now();
    loop {
        let got = without_root(view(m, false));
        if got.entries == want.entries && got.listings == want.listings {
            return;
        }
        if start.elapsed() > DEADLINE {
            assert_same_view(name, &got, "reference", want);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes of a file, or the errno.
fn content(p: &Path) -> Result<Vec<u8>, i32> {
    fs::read(p).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Sorted names of a directory, or the errno.
fn listing(dir: &Path) -> Result<Vec<String>, i32> {
    let rd = fs::read_dir(dir).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| e.raw_os_error().unwrap_or(-1))?;
        v.push(e.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

fn strings(v: &[&str]) -> Result<Vec<String>, i32> {
    Ok(v.iter().map(|s| s.to_string()).collect())
}

fn append_to(p: &Path, data: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(data))
}

fn create_new(p: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(p)
}

fn chmod_owned(p: &Path, mode: u32, uid: u32, gid: u32) {
    chown(p, uid, gid);
    chmod(p, mode);
}

/// Mode bits, owner and `security.capability` of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Privs {
    mode: u32,
    uid: u32,
    gid: u32,
    cap: Result<Vec<u8>, i32>,
}

fn privs(p: &Path) -> Privs {
    let md = lstat(p);
    Privs {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        cap: get_xattr(p, "security.capability"),
    }
}

/// The fimfs mount at `mnt` over the stack's layers, with its own workdir.
fn mount_at(s: &Stack, mnt: &Path, work: &Path) -> MountGuard {
    let opt = format!("workdir={}", work.display());
    MountGuard::new(&s.lowers, Some(&s.upper), mnt, &[opt.as_str()])
}

/// The line of /proc/self/mountinfo for the mount at `mnt`.
fn mountinfo_line(mnt: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let want = mnt.to_string_lossy();
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(want.as_ref()))
        .unwrap_or_else(|| panic!("{} is not a mount point", mnt.display()))
        .to_string()
}

/// `setpriv --reuid=U --regid=U --clear-groups PROGRAM ARGS`, output to files in
/// `logs`, killed at [`DAEMON_DEADLINE`].
fn run_as_user(uid: u32, program: &str, args: &[&std::ffi::OsStr], logs: &Path) -> Outcome {
    fs::create_dir_all(logs).expect("mkdir logs");
    let (out, err) = (logs.join("setpriv.out"), logs.join("setpriv.err"));
    let mut child = setpriv(uid, program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout log"))
        .stderr(File::create(&err).expect("stderr log"))
        .spawn()
        .expect("run setpriv");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for setpriv") {
            break Some(s);
        }
        if start.elapsed() > DAEMON_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------
// Item 4: privilege

/// A user's mount (no `allow_other`, through `fusermount3`): the user works in it;
/// another user, and root too (the FUSE rule), get EACCES on stat and on listing.
#[test]
fn a_mount_without_allow_other_keeps_everyone_else_out() {
    let s = Stack::new("rs-private", 1);
    put(&s.l(1, "hello"), "hello\n");
    put(&s.l(1, "d/inner"), "inner\n");
    let work = s.tmp.join("work");
    for d in [&s.upper, &s.mnt] {
        chmod_owned(d, 0o755, NOBODY, NOBODY);
    }
    fs::create_dir(&work).unwrap();
    chmod_owned(&work, 0o755, NOBODY, NOBODY);

    let opt = format!("workdir={}", work.display());
    let args: Vec<&std::ffi::OsStr> = vec![
        "mount".as_ref(),
        "-o".as_ref(),
        opt.as_ref(),
        s.lowers[0].as_os_str(),
        s.upper.as_os_str(),
        s.mnt.as_os_str(),
    ];
    let out = run_as_user(NOBODY, FIMFS, &args, &s.tmp.join("logs"));
    assert!(out.success(), "fimfs mount as {NOBODY}: {out}");
    assert_eq!(mounted_fstype(&s.mnt).as_deref(), Some("fuse.fimfs"));
    let line = mountinfo_line(&s.mnt);
    assert!(
        !line.contains("allow_other") && line.contains(&format!("user_id={NOBODY}")),
        "a user's mount without allow_other: {line}"
    );

    // The owner works in it.
    let m = s.mnt.clone();
    let owner = as_user(NOBODY, NOBODY, move || {
        (
            listing(&m),
            content(&m.join("d/inner")),
            fs::write(m.join("new"), "mine\n").map_err(|e| e.raw_os_error()),
        )
    });
    assert_eq!(
        owner,
        (strings(&["d", "hello"]), Ok(b"inner\n".to_vec()), Ok(())),
        "the owner's view"
    );

    // Everyone else is kept out, root included: the kernel answers before the
    // daemon is asked.
    let probe = |m: PathBuf| {
        let errno = |r: io::Result<()>| r.map_err(|e| e.raw_os_error().unwrap_or(-1));
        vec![
            (
                "stat the mount",
                errno(fs::symlink_metadata(&m).map(|_| ())),
            ),
            ("list the mount", errno(fs::read_dir(&m).map(|_| ()))),
            (
                "stat a file",
                errno(fs::symlink_metadata(m.join("hello")).map(|_| ())),
            ),
            ("read a file", errno(fs::read(m.join("hello")).map(|_| ()))),
            (
                "list a directory",
                errno(fs::read_dir(m.join("d")).map(|_| ())),
            ),
            ("create a file", errno(fs::write(m.join("theirs"), "x"))),
        ]
    };
    let m = s.mnt.clone();
    let other = as_user(USER, USER, move || probe(m));
    let root = probe(s.mnt.clone());
    for (who, got) in [("uid 1000", other), ("root", root)] {
        for (what, r) in got {
            assert_eq!(r, Err(libc::EACCES), "{what} as {who}");
        }
    }

    let out = run_as_user(
        NOBODY,
        "fusermount3",
        &["-u".as_ref(), s.mnt.as_os_str()],
        &s.tmp.join("logs"),
    );
    assert!(out.success(), "fusermount3 -u as {NOBODY}: {out}");
    assert_eq!(mounted_fstype(&s.mnt), None, "unmounted");
    // The user's daemon cannot remove a workdir in root's directory; it leaves it
    // empty.
    eventually("the user's workdir holds nothing", true, || {
        listing(&work).map_or_else(|e| e == libc::ENOENT, |names| names.is_empty())
    });
    assert_eq!(read_str(&s.u("new")), "mine\n");
    let up = lstat(&s.u("new"));
    assert_eq!(
        (up.uid(), up.gid()),
        (NOBODY, NOBODY),
        "the user's own file"
    );
}

/// Lowers and an upper owned by several users, for the permission table.
fn privilege_layers(s: &Stack) {
    let (l1, l2, u) = (|r: &str| s.l(1, r), |r: &str| s.l(2, r), |r: &str| s.u(r));
    // Bottom lower.
    put(&l2("secret"), "secret\n");
    chmod_owned(&l2("secret"), 0o600, 0, 0);
    put(&l2("shared.txt"), "shared\n");
    chmod_owned(&l2("shared.txt"), 0o666, 0, 0);
    put(&l2("pubdir/other"), "other\n");
    put(&l2("userdir/lowfile"), "low\n");
    mkdirs(&l2("userdir/rootsub"));
    chmod_owned(&l2("userdir"), 0o755, USER, USER);
    put(&l2("link-target"), "target\n");
    chmod_owned(&l2("link-target"), 0o600, 0, 0);
    put(&l2("grpdir/g"), "group\n");
    chmod_owned(&l2("grpdir/g"), 0o640, 0, USER);
    chmod_owned(&l2("grpdir"), 0o770, 0, USER);
    // Top lower.
    put(&l1("private/inner"), "inner\n");
    chmod_owned(&l1("private"), 0o700, 0, 0);
    symlink("private/inner", &l1("private-link"));
    put(&l1("pubdir/existing"), "existing\n");
    put(&l1("rootfile"), "root\n");
    put(&l1("sticky/victim"), "victim\n");
    chmod_owned(&l1("sticky/victim"), 0o666, 2000, 2000);
    put(&l1("sticky/mine"), "mine\n");
    chmod_owned(&l1("sticky/mine"), 0o644, USER, USER);
    chmod_owned(&l1("sticky"), 0o1777, 0, 0);
    put(&l1("ro-own"), "read-only\n");
    chmod_owned(&l1("ro-own"), 0o444, USER, 0);
    put(&l1("script"), "#!/bin/sh\n");
    // The upper.
    put(&u("upperdir/f"), "upper\n");
    chmod_owned(&u("upperdir/f"), 0o600, 0, 0);
    put(&u("userdir/own"), "own\n");
    chmod_owned(&u("userdir/own"), 0o644, USER, USER);
    chmod_owned(&u("userdir"), 0o755, USER, USER);
}

/// One operation of the table, run as uid 1000 on a mount root.
type Op = fn(&Path) -> Result<(), i32>;

/// What an operation should give, or `None` where it depends on a sysctl
/// (`fs.protected_hardlinks`).
type Expected = Option<Result<(), i32>>;

/// (what, expected, operation)
fn privilege_ops() -> Vec<(&'static str, Expected, Op)> {
    use libc::{EACCES, EEXIST, EPERM};
    vec![
        ("read a 0600 root file", Some(Err(EACCES)), |m| {
            outcome(fs::read(m.join("secret")))
        }),
        ("list a 0700 root dir", Some(Err(EACCES)), |m| {
            outcome(fs::read_dir(m.join("private")))
        }),
        ("stat in a 0700 root dir", Some(Err(EACCES)), |m| {
            outcome(fs::symlink_metadata(m.join("private/inner")))
        }),
        (
            "follow a symlink into a 0700 root dir",
            Some(Err(EACCES)),
            |m| outcome(fs::read(m.join("private-link"))),
        ),
        ("readlink that symlink", Some(Ok(())), |m| {
            outcome(fs::read_link(m.join("private-link")))
        }),
        ("create in a 0755 root dir", Some(Err(EACCES)), |m| {
            outcome(create_new(&m.join("pubdir/new")))
        }),
        ("mkdir in a 0755 root dir", Some(Err(EACCES)), |m| {
            outcome(fs::create_dir(m.join("pubdir/newdir")))
        }),
        ("mkdir at the root", Some(Err(EACCES)), |m| {
            outcome(fs::create_dir(m.join("top-new")))
        }),
        ("symlink in a 0755 root dir", Some(Err(EACCES)), |m| {
            outcome(std::os::unix::fs::symlink("x", m.join("pubdir/ln")))
        }),
        ("unlink in a 0755 root dir", Some(Err(EACCES)), |m| {
            outcome(fs::remove_file(m.join("pubdir/existing")))
        }),
        ("rename out of a 0755 root dir", Some(Err(EACCES)), |m| {
            outcome(fs::rename(
                m.join("pubdir/existing"),
                m.join("userdir/stolen"),
            ))
        }),
        ("rmdir in a 0755 root dir", Some(Err(EACCES)), |m| {
            outcome(fs::remove_dir(m.join("private")))
        }),
        ("append to a 0666 root file", Some(Ok(())), |m| {
            outcome(append_to(&m.join("shared.txt"), b"user\n"))
        }),
        (
            "open a 0644 root file for writing",
            Some(Err(EACCES)),
            |m| outcome(OpenOptions::new().write(true).open(m.join("rootfile"))),
        ),
        ("truncate a 0644 root file", Some(Err(EACCES)), |m| {
            nix::unistd::truncate(&m.join("rootfile"), 0).map_err(|e| e as i32)
        }),
        ("chmod someone else's file", Some(Err(EPERM)), |m| {
            outcome(fs::set_permissions(
                m.join("rootfile"),
                fs::Permissions::from_mode(0o777),
            ))
        }),
        ("chown someone else's file to me", Some(Err(EPERM)), |m| {
            outcome(std::os::unix::fs::chown(
                m.join("rootfile"),
                Some(USER),
                Some(USER),
            ))
        }),
        ("set times on someone else's file", Some(Err(EPERM)), |m| {
            outcome(utimens(&m.join("rootfile"), (1, 0), (1, 0), false))
        }),
        (
            "touch someone else's file I cannot write",
            Some(Err(EACCES)),
            |m| {
                let now = (0, libc::UTIME_NOW);
                outcome(utimens(&m.join("rootfile"), now, now, false))
            },
        ),
        ("touch someone else's 0666 file", Some(Ok(())), |m| {
            let now = (0, libc::UTIME_NOW);
            outcome(utimens(&m.join("shared.txt"), now, now, false))
        }),
        (
            "set a user xattr on someone else's file",
            Some(Err(EACCES)),
            |m| set_xattr(&m.join("rootfile"), "user.x", b"1"),
        ),
        ("set a user xattr on my file", Some(Ok(())), |m| {
            set_xattr(&m.join("userdir/own"), "user.x", b"1")
        }),
        ("set a trusted xattr", Some(Err(EPERM)), |m| {
            set_xattr(&m.join("userdir/own"), "trusted.x", b"1")
        }),
        (
            "set security.capability on my file",
            Some(Err(EPERM)),
            |m| set_xattr(&m.join("userdir/own"), "security.capability", &cap_v2()),
        ),
        (
            "unlink someone else's file in a sticky dir",
            Some(Err(EPERM)),
            |m| outcome(fs::remove_file(m.join("sticky/victim"))),
        ),
        (
            "rename someone else's file in a sticky dir",
            Some(Err(EPERM)),
            |m| outcome(fs::rename(m.join("sticky/victim"), m.join("sticky/moved"))),
        ),
        (
            "write someone else's 0666 file in a sticky dir",
            Some(Ok(())),
            |m| outcome(append_to(&m.join("sticky/victim"), b"user\n")),
        ),
        ("unlink my file in a sticky dir", Some(Ok(())), |m| {
            outcome(fs::remove_file(m.join("sticky/mine")))
        }),
        ("create in a sticky dir", Some(Ok(())), |m| {
            outcome(create_new(&m.join("sticky/new")))
        }),
        ("create in my dir", Some(Ok(())), |m| {
            outcome(create_new(&m.join("userdir/new")))
        }),
        ("mkdir in my dir", Some(Ok(())), |m| {
            outcome(fs::create_dir(m.join("userdir/sub")))
        }),
        ("mkfifo in my dir", Some(Ok(())), |m| {
            nix::unistd::mkfifo(
                &m.join("userdir/fifo"),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .map_err(|e| e as i32)
        }),
        ("unlink a lower root file in my dir", Some(Ok(())), |m| {
            outcome(fs::remove_file(m.join("userdir/lowfile")))
        }),
        ("rmdir a lower root dir in my dir", Some(Ok(())), |m| {
            outcome(fs::remove_dir(m.join("userdir/rootsub")))
        }),
        ("open my 0444 file for writing", Some(Err(EACCES)), |m| {
            outcome(OpenOptions::new().write(true).open(m.join("ro-own")))
        }),
        ("chmod my 0444 file", Some(Ok(())), |m| {
            outcome(fs::set_permissions(
                m.join("ro-own"),
                fs::Permissions::from_mode(0o644),
            ))
        }),
        ("write my file after that chmod", Some(Ok(())), |m| {
            outcome(append_to(&m.join("ro-own"), b"user\n"))
        }),
        (
            "chmod g+s on my file of a group I am not in",
            Some(Ok(())),
            |m| {
                // Succeeds, but the kernel drops the set-group-ID bit.
                outcome(fs::set_permissions(
                    m.join("ro-own"),
                    fs::Permissions::from_mode(0o2644),
                ))
            },
        ),
        (
            "chown my file to a group I am not in",
            Some(Err(EPERM)),
            |m| {
                outcome(std::os::unix::fs::chown(
                    m.join("userdir/own"),
                    None,
                    Some(0),
                ))
            },
        ),
        ("chown my file to myself", Some(Ok(())), |m| {
            outcome(std::os::unix::fs::chown(
                m.join("userdir/own"),
                Some(USER),
                Some(USER),
            ))
        }),
        ("read through my group", Some(Ok(())), |m| {
            outcome(fs::read(m.join("grpdir/g")))
        }),
        ("list a 0770 dir of my group", Some(Ok(())), |m| {
            outcome(fs::read_dir(m.join("grpdir")))
        }),
        (
            "read a 0600 root file of the upper",
            Some(Err(EACCES)),
            |m| outcome(fs::read(m.join("upperdir/f"))),
        ),
        (
            "create in a root dir of the upper",
            Some(Err(EACCES)),
            |m| outcome(create_new(&m.join("upperdir/new"))),
        ),
        ("hard link someone else's 0600 file", None, |m| {
            outcome(fs::hard_link(m.join("link-target"), m.join("userdir/hl")))
        }),
        ("execute check of a 0644 file", Some(Err(EACCES)), |m| {
            nix::unistd::access(&m.join("script"), nix::unistd::AccessFlags::X_OK)
                .map_err(|e| e as i32)
        }),
        ("write check of a 0666 file", Some(Ok(())), |m| {
            nix::unistd::access(&m.join("shared.txt"), nix::unistd::AccessFlags::W_OK)
                .map_err(|e| e as i32)
        }),
        (
            "O_CREAT|O_EXCL of an existing name",
            Some(Err(EEXIST)),
            |m| outcome(create_new(&m.join("rootfile"))),
        ),
        ("rename my file", Some(Ok(())), |m| {
            outcome(fs::rename(m.join("userdir/own"), m.join("userdir/own2")))
        }),
        ("rmdir my dir", Some(Ok(())), |m| {
            outcome(fs::remove_dir(m.join("userdir/sub")))
        }),
    ]
}

/// With `allow_other` (a root mount), uid 1000 gets from fimfs exactly the answers
/// the kernel overlay gives on a copy of the same layers, and the operations that
/// succeed leave the same tree.
#[test]
fn with_allow_other_permissions_are_the_kernel_overlays() {
    let mut f = Stack::new("rs-perm-fimfs", 2);
    let k = Stack::new("rs-perm-kernel", 2);
    privilege_layers(&f);
    privilege_layers(&k);
    f.seal_lowers();
    let fm = f.mount();
    assert!(
        mountinfo_line(fm.path()).contains("allow_other"),
        "a root mount turns allow_other on"
    );
    mkdirs(&k.kwork);
    let km = KernelOverlayGuard::with_upper(&k.lowers, &k.upper, &k.kwork, &k.mnt);

    let run = |mnt: PathBuf| {
        as_user(USER, USER, move || {
            privilege_ops()
                .into_iter()
                .map(|(what, _, op)| (what, op(&mnt)))
                .collect::<Vec<_>>()
        })
    };
    let on_fimfs = run(fm.path().to_path_buf());
    let on_kernel = run(km.path().to_path_buf());
    let mut bad = Vec::new();
    for (((what, want, _), (_, fr)), (_, kr)) in
        privilege_ops().iter().zip(&on_fimfs).zip(&on_kernel)
    {
        if fr != kr {
            bad.push(format!("{what}: fimfs {fr:?}, kernel overlay {kr:?}"));
        } else if want.as_ref().is_some_and(|w| w != kr) {
            bad.push(format!("{what}: both {kr:?}, expected {want:?}"));
        }
    }
    assert!(bad.is_empty(), "as uid {USER}:\n{}", bad.join("\n"));
    let denied = on_kernel.iter().filter(|(_, r)| r.is_err()).count();
    assert!(denied >= 20, "the table denies something ({denied} denied)");

    // What the allowed operations did.
    assert_same_view(
        "fimfs",
        &without_root(view(fm.path(), true)),
        "kernel overlay",
        &without_root(view(km.path(), true)),
    );
    unmount_clean(fm);
    km.unmount();
    f.assert_lowers_untouched();
}

/// Files of mode 06755 (06777 where another user writes) with a valid
/// `security.capability`: a copy-up, a write, a truncate and an `O_TRUNC` open by
/// root and by another user, and a chown leave the same mode, owner and capability
/// on fimfs as on the kernel overlay, through the mount and in the upper. fimfs
/// drops the set-ID bits itself (`FUSE_HANDLE_KILLPRIV_V2`), so each way the kernel
/// asks for it is here.
#[test]
fn capabilities_and_set_id_bits_end_as_on_the_kernel_overlay() {
    let mut f = Stack::new("rs-caps-fimfs", 1);
    let k = Stack::new("rs-caps-kernel", 1);
    let cases = [
        "copied-up",
        "root-append",
        "user-append",
        "chowned",
        "root-truncate",
        "user-truncate",
        "user-otrunc",
        "user-append-again",
    ];
    for s in [&f, &k] {
        for name in cases {
            let p = s.l(1, name);
            put(&p, "\x7fELF binary\n");
            let mode = if name.starts_with("user-") {
                0o6777
            } else {
                0o6755
            };
            chmod_owned(&p, mode, 0, 0);
            set_xattr(&p, "security.capability", &cap_v2())
                .unwrap_or_else(|e| panic!("setxattr security.capability: errno {e}"));
            assert_eq!(privs(&p).cap, Ok(cap_v2()), "the lower's capability");
        }
    }
    f.seal_lowers();

    let act = |m: &Path| {
        set_xattr(&m.join("copied-up"), "user.note", b"copy me up")
            .unwrap_or_else(|e| panic!("setxattr user.note: errno {e}"));
        append_to(&m.join("root-append"), b"root\n").expect("append as root");
        let p = m.join("user-append");
        as_user(USER, USER, move || append_to(&p, b"user\n")).expect("append as uid 1000");
        std::os::unix::fs::chown(m.join("chowned"), Some(USER), Some(USER)).expect("chown");
        let truncate = |p: PathBuf| fs::OpenOptions::new().write(true).open(p)?.set_len(3);
        truncate(m.join("root-truncate")).expect("truncate as root");
        let p = m.join("user-truncate");
        as_user(USER, USER, move || truncate(p)).expect("truncate as uid 1000");
        let p = m.join("user-otrunc");
        as_user(USER, USER, move || fs::File::create(p).map(drop)).expect("O_TRUNC as uid 1000");
        // A second write by the user after the first dropped the bits and root
        // set them again: the kernel must ask again (no stale `S_NOSEC`).
        let p = m.join("user-append-again");
        let q = p.clone();
        as_user(USER, USER, move || append_to(&q, b"user\n")).expect("append as uid 1000");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o6777)).expect("chmod 06777");
        as_user(USER, USER, move || append_to(&p, b"again\n")).expect("append again");
        cases
            .iter()
            .map(|n| (n.to_string(), privs(&m.join(n))))
            .collect::<BTreeMap<_, _>>()
    };
    let fm = f.mount();
    mkdirs(&k.kwork);
    let km = KernelOverlayGuard::with_upper(&k.lowers, &k.upper, &k.kwork, &k.mnt);
    let on_fimfs = act(fm.path());
    let on_kernel = act(km.path());
    assert_eq!(
        on_fimfs, on_kernel,
        "through the mounts: fimfs, then kernel"
    );
    // The kernel's rules, as this test found them on the kernel overlay: a copy-up
    // keeps everything; a write by root keeps the set-ID bits but drops the
    // capability; a write by another user drops both; chown drops both.
    let want = |mode, uid, cap: bool| Privs {
        mode,
        uid,
        gid: uid,
        cap: if cap {
            Ok(cap_v2())
        } else {
            Err(libc::ENODATA)
        },
    };
    let expected = BTreeMap::from([
        ("copied-up".to_string(), want(0o6755, 0, true)),
        ("root-append".to_string(), want(0o6755, 0, false)),
        ("user-append".to_string(), want(0o777, 0, false)),
        ("chowned".to_string(), want(0o755, USER, false)),
        ("root-truncate".to_string(), want(0o6755, 0, false)),
        ("user-truncate".to_string(), want(0o777, 0, false)),
        ("user-otrunc".to_string(), want(0o777, 0, false)),
        ("user-append-again".to_string(), want(0o777, 0, false)),
    ]);
    assert_eq!(on_kernel, expected, "the kernel overlay's rules");
    unmount_clean(fm);
    km.unmount();

    // The uppers hold the same, and a fresh daemon shows it.
    for name in cases {
        assert_eq!(
            privs(&f.u(name)),
            privs(&k.u(name)),
            "{name} in the upper: fimfs, then kernel"
        );
    }
    let fm = f.mount();
    for name in cases {
        assert_eq!(
            privs(&fm.join(name)),
            on_kernel[name],
            "{name} after a remount"
        );
    }
    unmount_clean(fm);
    f.assert_lowers_untouched();
}

// ---------------------------------------------------------------------------------
// Item 6: two daemons, one upper

fn shared_layers(s: &Stack) {
    put(&s.l(1, "docs/readme"), "lower readme\n");
    put(&s.l(1, "app/config"), "v1\n");
    put(&s.l(1, "app/data/one"), "one\n");
    put(&s.l(2, "app/data/seed"), "seed\n");
    put(&s.l(2, "gone"), "to be deleted\n");
    put(&s.l(2, "deep/a/b/leaf"), "leaf\n");
    put(&s.l(1, "olddir/x"), "x\n");
    put(&s.l(2, "olddir/y"), "y\n");
    for k in 0..20 {
        put(&s.l(2, &format!("race/low{k}")), "base\n");
    }
}

/// Writes `root/rel` (a mount, or the plain reference tree).
fn write_file(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Records the four writer threads append: `t{t} {i:04}`.
const RECORDS: usize = 60;
const PAR_FILES: usize = 40;

fn par_data(t: usize, i: usize) -> Vec<u8> {
    fill((t * 1000 + i) as u64, 100 + i * 37)
}

/// What the concurrent phase must have left, as seen through `m`; Err says what
/// is wrong.
fn check_concurrent(m: &Path) -> Result<(), String> {
    for t in 0..4 {
        for i in 0..PAR_FILES {
            let p = m.join(format!("par/t{t}-{i}"));
            if content(&p) != Ok(par_data(t, i)) {
                return Err(format!("{} is not what thread {t} wrote", p.display()));
            }
        }
        let own =
            content(&m.join(format!("logs/t{t}.log"))).map_err(|e| format!("t{t}.log: {e}"))?;
        let want: String = (0..RECORDS).map(|i| format!("t{t} {i:04}\n")).collect();
        if own != want.as_bytes() {
            return Err(format!(
                "logs/t{t}.log: {:?}",
                String::from_utf8_lossy(&own)
            ));
        }
    }
    let shared = content(&m.join("logs/shared.log")).map_err(|e| format!("shared.log: {e}"))?;
    let shared = String::from_utf8_lossy(&shared).into_owned();
    let mut next = [0usize; 4];
    for line in shared.lines() {
        let ok = line.len() == 7 && line.starts_with('t');
        let t = line[1..2].parse::<usize>().ok().filter(|&t| ok && t < 4);
        let Some(t) = t else {
            return Err(format!("shared.log has a torn record {line:?}"));
        };
        if line[3..] != format!("{:04}", next[t]) {
            return Err(format!(
                "shared.log: thread {t} record {line:?} out of order"
            ));
        }
        next[t] += 1;
    }
    if next != [RECORDS; 4] {
        return Err(format!("shared.log holds {next:?} records per thread"));
    }
    for k in 0..20 {
        let p = m.join(format!("race/low{k}"));
        let data = content(&p).map_err(|e| format!("race/low{k}: {e}"))?;
        let mut lines: Vec<String> = String::from_utf8_lossy(&data)
            .lines()
            .map(String::from)
            .collect();
        if lines.first().map(String::as_str) != Some("base") {
            return Err(format!("race/low{k} lost its lower contents: {lines:?}"));
        }
        lines.remove(0);
        lines.sort();
        if lines != ["t0", "t1", "t2", "t3"] {
            return Err(format!("race/low{k}: appended {lines:?}"));
        }
    }
    Ok(())
}

/// Two daemons on the same lowers and upper, each with its own workdir, both
/// mounted: each sees its own changes at once and the other's within the cache
/// timeout; four threads writing through both at once lose nothing; after both are
/// unmounted, the kernel overlay reads the upper as exactly what both wrote.
#[test]
fn two_daemons_share_one_upper() {
    let mut s = Stack::new("rs-two", 2);
    shared_layers(&s);
    s.seal_lowers();
    let reference = s.tmp.join("reference");
    plain_copy_of_lowers(&s.lowers, &s.tmp.join("ref-mnt"), &reference);
    let b_mnt = s.tmp.mkdir("mnt-b");
    let a = mount_at(&s, &s.mnt, &s.tmp.join("work-a"));
    let b = mount_at(&s, &b_mnt, &s.tmp.join("work-b"));
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
    let r = reference.as_path();

    // Both look at what is about to change, so that their kernels and daemons hold
    // entries, attributes and listings of it.
    for m in [&pa, &pb] {
        assert_eq!(content(&m.join("app/config")), Ok(b"v1\n".to_vec()));
        assert_eq!(content(&m.join("gone")), Ok(b"to be deleted\n".to_vec()));
        assert_eq!(content(&m.join("deep/a/b/leaf")), Ok(b"leaf\n".to_vec()));
        assert_eq!(
            content(&m.join("docs/readme")),
            Ok(b"lower readme\n".to_vec())
        );
        assert_eq!(listing(&m.join("app/data")), strings(&["one", "seed"]));
        assert_eq!(listing(&m.join("olddir")), strings(&["x", "y"]));
        assert_eq!(listing(&m.join("deep/a/b")), strings(&["leaf"]));
    }

    // A new file from each side.
    for (mine, other, name) in [(&pa, &pb, "from-a.txt"), (&pb, &pa, "from-b.txt")] {
        for root in [mine.as_path(), r] {
            write_file(root, name, &format!("{name}\n"));
        }
        let want = Ok(format!("{name}\n").into_bytes());
        assert_eq!(
            content(&mine.join(name)),
            want,
            "{name} where it was written"
        );
        eventually(&format!("{name} on the other mount"), want, || {
            content(&other.join(name))
        });
    }

    // A copies a lower file up and rewrites it.
    for root in [pa.as_path(), r] {
        write_file(root, "app/config", "v2\n");
    }
    assert_eq!(content(&pa.join("app/config")), Ok(b"v2\n".to_vec()));
    eventually("B reads A's rewrite", Ok(b"v2\n".to_vec()), || {
        content(&pb.join("app/config"))
    });

    // B deletes a lower file.
    for root in [pb.as_path(), r] {
        fs::remove_file(root.join("gone")).unwrap();
    }
    assert_eq!(content(&pb.join("gone")), Err(libc::ENOENT));
    eventually("A no longer sees B's deletion", Err(libc::ENOENT), || {
        content(&pa.join("gone"))
    });

    // A makes directories below a lower-only directory that B has looked up.
    for root in [pa.as_path(), r] {
        fs::create_dir_all(root.join("deep/a/b/c")).unwrap();
        write_file(root, "deep/a/b/c/new", "new\n");
    }
    assert_eq!(content(&pa.join("deep/a/b/c/new")), Ok(b"new\n".to_vec()));
    eventually("B reads deep/a/b/c/new", Ok(b"new\n".to_vec()), || {
        content(&pb.join("deep/a/b/c/new"))
    });
    eventually("B lists deep/a/b", strings(&["c", "leaf"]), || {
        listing(&pb.join("deep/a/b"))
    });

    // B appends to A's file.
    for root in [pb.as_path(), r] {
        append_to(&root.join("from-a.txt"), b"b-append\n").unwrap();
    }
    let want = Ok(b"from-a.txt\nb-append\n".to_vec());
    assert_eq!(content(&pb.join("from-a.txt")), want);
    eventually("A reads B's append", want, || {
        content(&pa.join("from-a.txt"))
    });

    // A renames a lower directory.
    for root in [pa.as_path(), r] {
        fs::rename(root.join("docs"), root.join("docs2")).unwrap();
    }
    eventually(
        "B follows A's directory rename",
        (Err(libc::ENOENT), Ok(b"lower readme\n".to_vec())),
        || {
            (
                content(&pb.join("docs/readme")),
                content(&pb.join("docs2/readme")),
            )
        },
    );

    // A adds to a merged directory B has listed.
    for root in [pa.as_path(), r] {
        write_file(root, "app/data/added", "added\n");
    }
    eventually(
        "B lists app/data",
        strings(&["added", "one", "seed"]),
        || listing(&pb.join("app/data")),
    );

    // A removes a merged directory and makes it again: the new one is opaque.
    for root in [pa.as_path(), r] {
        fs::remove_dir_all(root.join("olddir")).unwrap();
        fs::create_dir(root.join("olddir")).unwrap();
        write_file(root, "olddir/fresh", "fresh\n");
    }
    assert_eq!(listing(&pa.join("olddir")), strings(&["fresh"]));
    eventually("B lists the new olddir", strings(&["fresh"]), || {
        listing(&pb.join("olddir"))
    });
    eventually("B no longer sees olddir/x", Err(libc::ENOENT), || {
        content(&pb.join("olddir/x"))
    });

    // Four threads, two on each mount, at once: files of their own, their own log,
    // one shared log (O_APPEND), and one record appended to each of 20 lower files
    // (copy-ups racing between the daemons).
    fs::create_dir(pa.join("par")).unwrap();
    fs::create_dir(pa.join("logs")).unwrap();
    eventually("B sees par/ and logs/", (true, true), || {
        (pb.join("par").is_dir(), pb.join("logs").is_dir())
    });
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = [&pa, &pa, &pb, &pb]
        .into_iter()
        .enumerate()
        .map(|(t, m)| {
            let (m, start) = (m.clone(), start.clone());
            thread::spawn(move || -> Result<(), String> {
                let err = |what: String| move |e: io::Error| format!("thread {t}: {what}: {e}");
                let open_log = |p: PathBuf| {
                    OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&p)
                        .map_err(err(format!("open {}", p.display())))
                };
                start.wait();
                let mut own = open_log(m.join(format!("logs/t{t}.log")))?;
                let mut shared = open_log(m.join("logs/shared.log"))?;
                for i in 0..RECORDS.max(PAR_FILES) {
                    if i < PAR_FILES {
                        let p = m.join(format!("par/t{t}-{i}"));
                        fs::write(&p, par_data(t, i)).map_err(err(format!("write {i}")))?;
                    }
                    if i < RECORDS {
                        let rec = format!("t{t} {i:04}\n");
                        own.write_all(rec.as_bytes())
                            .map_err(err("own log".into()))?;
                        shared
                            .write_all(rec.as_bytes())
                            .map_err(err("shared log".into()))?;
                    }
                    if i < 20 {
                        append_to(
                            &m.join(format!("race/low{i}")),
                            format!("t{t}\n").as_bytes(),
                        )
                        .map_err(err(format!("append race/low{i}")))?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = threads
        .into_iter()
        .filter_map(|h| h.join().expect("writer thread").err())
        .collect();
    assert!(errors.is_empty(), "writers failed:\n{}", errors.join("\n"));
    for m in [&pa, &pb] {
        eventually(
            &format!("{} shows what the four threads wrote", m.display()),
            Ok(()),
            || check_concurrent(m),
        );
    }

    // The reference gets the same: the shared log and the raced files in the order
    // the daemons wrote them (checked above).
    fs::create_dir(r.join("par")).unwrap();
    fs::create_dir(r.join("logs")).unwrap();
    for t in 0..4 {
        for i in 0..PAR_FILES {
            fs::write(r.join(format!("par/t{t}-{i}")), par_data(t, i)).unwrap();
        }
        let log: String = (0..RECORDS).map(|i| format!("t{t} {i:04}\n")).collect();
        write_file(r, &format!("logs/t{t}.log"), &log);
    }
    fs::write(r.join("logs/shared.log"), read(&pa.join("logs/shared.log"))).unwrap();
    for k in 0..20 {
        let rel = format!("race/low{k}");
        fs::write(r.join(&rel), read(&pa.join(&rel))).unwrap();
    }

    // Both views settle on the reference; then the kernel overlay reads the upper
    // the same way.
    let want = without_root(view(r, false));
    settle_on("daemon A", &pa, &want);
    settle_on("daemon B", &pb, &want);
    unmount_clean(a);
    unmount_clean(b);
    for w in ["work-a", "work-b"] {
        assert!(!s.tmp.join(w).exists(), "{w} is removed at exit");
    }
    let k = s.kernel();
    assert_same_view(
        "kernel overlay after both daemons",
        &without_root(view(k.path(), false)),
        "reference",
        &want,
    );
    k.unmount();
    s.assert_lowers_untouched();
}

/// Both daemons create the same new name at the same moment (`open(O_CREAT)`
/// without `O_EXCL`, as two instances of an app opening their log), and both copy up
/// the same lower file at the same moment: no call fails, and nothing written is lost.
#[test]
fn two_daemons_create_and_copy_up_one_name_at_once() {
    const N: usize = 150;
    let mut s = Stack::new("rs-race", 1);
    for k in 0..N {
        put(&s.l(1, &format!("low/f{k}")), "base\n");
    }
    mkdirs(&s.l(1, "new"));
    s.seal_lowers();
    let b_mnt = s.tmp.mkdir("mnt-b");
    let a = mount_at(&s, &s.mnt, &s.tmp.join("work-a"));
    let b = mount_at(&s, &b_mnt, &s.tmp.join("work-b"));
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [(a.path().to_path_buf(), "A"), (b.path().to_path_buf(), "B")]
        .into_iter()
        .map(|(m, tag)| {
            let start = start.clone();
            thread::spawn(move || {
                let mut errors = Vec::new();
                for k in 0..N {
                    start.wait();
                    let p = m.join(format!("new/n{k}"));
                    let made = OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o644)
                        .open(&p)
                        .and_then(|mut f| f.write_all(format!("{tag}\n").as_bytes()));
                    if let Err(e) = made {
                        errors.push(format!("{tag}: open(O_CREAT) new/n{k}: {e}"));
                    }
                    start.wait();
                    let p = m.join(format!("low/f{k}"));
                    if let Err(e) = append_to(&p, format!("{tag}\n").as_bytes()) {
                        errors.push(format!("{tag}: append low/f{k}: {e}"));
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("racing thread"))
        .collect();
    assert!(
        errors.is_empty(),
        "{} calls failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let sorted = |data: Result<Vec<u8>, i32>| {
        data.map(|d| {
            let mut lines: Vec<String> = String::from_utf8_lossy(&d)
                .lines()
                .map(String::from)
                .collect();
            lines.sort();
            lines
        })
    };
    for m in [a.path(), b.path()] {
        for k in 0..N {
            eventually(
                &format!("new/n{k} through {}", m.display()),
                Ok(vec!["A".to_string(), "B".to_string()]),
                || sorted(content(&m.join(format!("new/n{k}")))),
            );
            eventually(
                &format!("low/f{k} through {}", m.display()),
                Ok(vec!["A".to_string(), "B".to_string(), "base".to_string()]),
                || sorted(content(&m.join(format!("low/f{k}")))),
            );
        }
    }
    unmount_clean(a);
    unmount_clean(b);
    s.assert_lowers_untouched();
}

// ---------------------------------------------------------------------------------
// Item 7: changes behind the mount

/// FlatImage writes GPU driver symlinks and files into the upper after mounting:
/// each is found through the mount, in a merged directory the upper has, in lower
/// directories the upper lacks (made with `mkdir -p` behind the mount) and in a new
/// directory, although every directory was listed before: by the first lookup when
/// the name was never asked for, within the timeout (1 s) when it was asked for
/// while missing (the kernel remembers a missing name that long); and the next
/// listing of each directory shows them.
#[test]
fn files_made_in_the_upper_behind_the_mount_are_seen_at_once() {
    let mut s = Stack::new("rs-behind", 2);
    put(&s.l(1, "etc/ld.so.conf"), "lower\n");
    put(&s.l(2, "etc/hosts"), "hosts\n");
    mkdirs(&s.u("etc"));
    put(&s.l(1, "usr/lib/gpu/liba.so"), "a\n");
    put(&s.l(2, "usr/lib/gpu/libb.so"), "b\n");
    put(&s.l(2, "usr/share/vulkan/icd.d/lower.json"), "{}\n");
    s.seal_lowers();
    let m = s.mount();

    let dirs = ["etc", "usr/lib/gpu", "usr/share/vulkan/icd.d", "", "usr"];
    let before: Vec<_> = dirs.iter().map(|d| listing(&m.join(d))).collect();
    for (d, b) in dirs.iter().zip(&before) {
        // Twice: the second listing may come from the kernel's cache.
        assert_eq!(&listing(&m.join(d)), b, "listing of /{d}");
    }
    let news = [
        ("etc", "nvidia-link", Some("/run/host/lib/libnvidia.so.550")),
        ("etc", "nvidia.conf", None),
        (
            "usr/lib/gpu",
            "libGLX_nvidia.so.0",
            Some("/run/host/libGLX_nvidia.so.0"),
        ),
        ("usr/lib/gpu", "nvidia.txt", None),
        ("usr/share/vulkan/icd.d", "nvidia_icd.json", None),
        ("opt/gpu", "libcuda.so.1", Some("/run/host/libcuda.so.1")),
        ("opt/gpu", "cuda.txt", None),
    ];
    // Every other name is asked for before it exists: the kernel may remember
    // it as missing, for the timeout at most.
    let asked = |i: usize| i % 2 == 1;
    for (i, (dir, name, _)) in news.iter().enumerate() {
        if asked(i) {
            assert_eq!(lstat_errno(&m.join(dir).join(name)), libc::ENOENT);
        }
    }
    for (dir, name, target) in &news {
        let p = s.upper.join(dir).join(name);
        mkdirs(p.parent().unwrap());
        match target {
            Some(t) => symlink(t, &p),
            None => put(&p, format!("{dir}/{name}\n")),
        }
    }
    // The first lookup finds each name never asked for; the others show once
    // the kernel forgets that they were missing.
    for (i, (dir, name, target)) in news.iter().enumerate() {
        let p = m.join(dir).join(name);
        if asked(i) {
            eventually(&format!("{} made behind the mount", p.display()), 0, || {
                lstat_errno(&p)
            });
        }
        match target {
            Some(t) => {
                let md = fs::symlink_metadata(&p)
                    .unwrap_or_else(|e| panic!("first lookup of {}: {e}", p.display()));
                assert!(md.file_type().is_symlink(), "{} is a symlink", p.display());
                assert_eq!(fs::read_link(&p).unwrap(), Path::new(t));
            }
            None => assert_eq!(
                content(&p),
                Ok(format!("{dir}/{name}\n").into_bytes()),
                "first lookup of {}",
                p.display()
            ),
        }
    }
    // The next listing of every directory shows them, cached listings or not.
    let mut want: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, d) in dirs.iter().enumerate() {
        want.insert(d, before[i].clone().expect("listed"));
    }
    want.get_mut("").unwrap().push("opt".into());
    want.insert("opt", vec!["gpu".into()]);
    for (dir, name, _) in &news {
        want.entry(dir).or_default().push(name.to_string());
    }
    for (dir, names) in &mut want {
        names.sort();
        assert_eq!(
            listing(&m.join(dir)).as_ref(),
            Ok(&*names),
            "listing of /{dir}"
        );
    }

    // Replaced and removed behind the mount: seen once the kernel's cached
    // attributes and entries expire (the timeout, 1 s).
    put(&s.u("etc/nvidia.conf"), "rewritten behind the mount\n");
    fs::remove_file(s.u("usr/lib/gpu/libGLX_nvidia.so.0")).unwrap();
    eventually(
        "the rewrite and the removal",
        (Ok(b"rewritten behind the mount\n".to_vec()), libc::ENOENT),
        || {
            (
                content(&m.join("etc/nvidia.conf")),
                lstat_errno(&m.join("usr/lib/gpu/libGLX_nvidia.so.0")),
            )
        },
    );
    unmount_clean(m);
    s.assert_lowers_untouched();
}

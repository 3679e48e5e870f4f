//! Hostile layer contents: symlinks to `/`, `/etc`, a canary directory outside
//! the layers, `..` chains, loops; device nodes and fifos; names with newlines,
//! 255-byte names, non-UTF-8 names; and a directory of the upper swapped for a
//! symlink to the canary while mounted.
//!
//! Every operation through the mount is one the kernel itself does not follow
//! (lstat, readlink, lchown, utimensat(AT_SYMLINK_NOFOLLOW), l*xattr, rename,
//! link, unlink, chmod of fifos and devices, *at() calls on a directory fd
//! held across the swap), so whatever touches the canary can only be the
//! daemon. inotify on the canary must report nothing, and its tree must be
//! unchanged. A watchdog kills the daemon if anything hangs (a fifo opened
//! by the daemon would), which fails the test instead of stalling it.

mod common;

use common::*;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

fn long_name() -> String {
    "L".repeat(255)
}

fn odd_names() -> Vec<Vec<u8>> {
    vec![
        b"new\nline".to_vec(),
        long_name().into_bytes(),
        b"\xff\xfe-not-utf8".to_vec(),
        b" lead and trail ".to_vec(),
    ]
}

/// Symlink name → target, all planted in the lower (and a few in the upper).
fn hostile_links(canary: &Path) -> Vec<(String, String)> {
    let c = canary.display().to_string();
    vec![
        ("to_root".into(), "/".into()),
        ("to_etc".into(), "/etc".into()),
        ("to_passwd".into(), "/etc/passwd".into()),
        ("to_canary".into(), c.clone()),
        ("to_canary_secret".into(), format!("{c}/secret")),
        ("dotdot".into(), "../../../../../../../../..".into()),
        ("chain".into(), "dotdot/tmp".into()),
        ("loop1".into(), "loop2".into()),
        ("loop2".into(), "loop1".into()),
        ("self".into(), "self".into()),
        ("dir/deep_up".into(), "../../..".into()),
    ]
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Kills `pid` unless dropped (or disarmed) within the deadline.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn new(pid: u32, deadline: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                f.store(true, Ordering::SeqCst);
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
        Watchdog {
            done: Some(tx),
            fired,
        }
    }

    fn disarm(mut self) -> bool {
        drop(self.done.take());
        !self.fired.load(Ordering::SeqCst)
    }
}

fn lchown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    nix::unistd::fchownat(
        None,
        p,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)
}

fn watch(canary: &Path) -> Inotify {
    let ino = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    for d in [canary.to_path_buf(), canary.join("sub")] {
        ino.add_watch(&d, AddWatchFlags::IN_ALL_EVENTS).unwrap();
    }
    ino
}

fn events(ino: &Inotify) -> Vec<String> {
    match ino.read_events() {
        Ok(evs) => evs
            .iter()
            .map(|e| format!("{:?} {:?}", e.mask, e.name))
            .collect(),
        Err(nix::errno::Errno::EAGAIN) => Vec::new(),
        Err(e) => panic!("reading inotify: {e}"),
    }
}

#[test]
fn hostile_entries_never_lead_the_daemon_outside_its_layers() {
    let s = Stack::new("hostile", 2);
    let canary = s.tmp.mkdir("canary");
    put(&canary.join("secret"), "canary secret\n");
    put(&canary.join("sub/file"), "canary file\n");
    let canary_before = walk(&canary);

    mkdirs(&s.l(1, "dir"));
    for (name, target) in hostile_links(&canary) {
        symlink(&target, &s.l(1, &name));
    }
    mknod(&s.l(1, "null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
    mknod(&s.l(1, "blk"), libc::S_IFBLK | 0o600, 7, 200).unwrap();
    mkfifo(&s.l(1, "fifo"));
    mkfifo(&s.l(2, "fifo2"));
    for n in odd_names() {
        let p = s.lowers[0].join(OsStr::from_bytes(&n));
        put(&p, "odd\n");
    }
    // The upper has its own hostile entries, and a directory that will be
    // swapped for a symlink to the canary while mounted.
    symlink(&canary.display().to_string(), &s.u("up_to_canary"));
    mkfifo(&s.u("up_fifo"));
    put(&s.u("victim/file"), "victim\n");

    // Watching starts after the setup above; nothing may touch the canary
    // from here on, and only the daemon could.
    let ino = watch(&canary);
    let m = s.mount_opts(&["timeout=3600"]);
    let dog = Watchdog::new(m.pid(), Duration::from_secs(60));

    // Listing and lstat of everything.
    let listed = names(&s.mnt);
    for (name, target) in hostile_links(&canary) {
        let p = s.m(&name);
        assert!(lstat(&p).file_type().is_symlink(), "{name}");
        assert_eq!(fs::read_link(&p).unwrap(), PathBuf::from(&target), "{name}");
        if !name.contains('/') {
            assert!(listed.contains(&name), "{name} not listed");
        }
    }
    assert!(lstat(&s.m("null")).file_type().is_char_device());
    assert!(lstat(&s.m("blk")).file_type().is_block_device());
    assert!(lstat(&s.m("fifo")).file_type().is_fifo());
    assert!(lstat(&s.m("up_fifo")).file_type().is_fifo());
    for n in odd_names() {
        let p = s.mnt.join(OsStr::from_bytes(&n));
        assert_eq!(read_str(&p), "odd\n", "{:?}", String::from_utf8_lossy(&n));
    }

    // Copy-up of symlinks (lchown, utimensat without following, xattrs).
    for (name, target) in hostile_links(&canary) {
        let p = s.m(&name);
        lchown(&p, 123, 456).unwrap_or_else(|e| panic!("lchown {name}: {e}"));
        utimens(&p, (1, 0), (2, 0), true).unwrap_or_else(|e| panic!("touch -h {name}: {e}"));
        let _ = get_xattr(&p, "user.x");
        let _ = list_xattrs(&p);
        let up = s.u(&name);
        assert!(
            lstat(&up).file_type().is_symlink(),
            "{name} copied up as a symlink"
        );
        assert_eq!(fs::read_link(&up).unwrap(), PathBuf::from(&target));
        assert_eq!(lstat(&up).uid(), 123);
    }

    // Fifos and devices: copy-up by chmod, chown, touch; never opened.
    for name in ["null", "blk", "fifo", "fifo2", "up_fifo"] {
        let p = s.m(name);
        chmod(&p, 0o600);
        lchown(&p, 7, 7).unwrap();
        utimens(&p, (3, 0), (4, 0), true).unwrap();
        let up = lstat(&s.u(name));
        assert_eq!(up.mode() & 0o7777, 0o600, "{name}");
        assert_eq!(up.file_type(), lstat(&p).file_type(), "{name}");
    }
    assert_eq!(lstat(&s.u("null")).rdev(), lstat(&s.l(1, "null")).rdev());

    // Odd names: copy-up, rename, hard link, delete.
    for (i, n) in odd_names().into_iter().enumerate() {
        let p = s.mnt.join(OsStr::from_bytes(&n));
        chmod(&p, 0o640);
        let mut moved = n.clone();
        moved.truncate(250);
        moved.extend_from_slice(format!("-m{i}").as_bytes());
        let q = s.mnt.join(OsStr::from_bytes(&moved));
        fs::rename(&p, &q).unwrap();
        fs::hard_link(&q, s.m(&format!("hl{i}"))).unwrap();
        assert_eq!(read_str(&s.m(&format!("hl{i}"))), "odd\n");
        fs::remove_file(&q).unwrap();
    }

    // Renames, links and deletes of the symlinks themselves.
    fs::rename(s.m("to_canary"), s.m("renamed_link")).unwrap();
    fs::hard_link(s.m("to_etc"), s.m("linked_link")).unwrap();
    assert!(lstat(&s.m("linked_link")).file_type().is_symlink());
    fs::remove_file(s.m("to_root")).unwrap();
    fs::remove_file(s.m("loop1")).unwrap();
    assert!(is_whiteout(&s.u("to_root")));

    // The upper's directory is swapped for a symlink to the canary while
    // the kernel still holds it; operations through a directory fd taken
    // before the swap must stay inside the layers or fail.
    let dir = fs::File::open(s.m("victim")).unwrap();
    assert_eq!(read_str(&s.m("victim/file")), "victim\n");
    fs::rename(s.u("victim"), s.u("victim.moved")).unwrap();
    symlink(&canary.display().to_string(), &s.u("victim"));
    use std::os::fd::AsFd;
    let created = nix::fcntl::openat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir.as_fd())),
        "planted",
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    );
    match created {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
            assert!(
                s.u("victim.moved/planted").exists(),
                "a create in the swapped directory went somewhere other than its real directory"
            );
        }
        Err(e) => eprintln!("create in the swapped directory: {e} (refused, fine)"),
    }
    let _ = nix::sys::stat::fstatat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir.as_fd())),
        "file",
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    let _ = nix::unistd::unlinkat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir.as_fd())),
        "file",
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    drop(dir);

    assert!(
        dog.disarm(),
        "something hung: the watchdog killed the daemon"
    );
    unmount_clean(m);
    let seen = events(&ino);
    assert!(seen.is_empty(), "the canary was touched: {seen:?}");
    assert_same_tree(
        "canary before",
        &canary_before,
        "canary after",
        &walk(&canary),
    );
    // The watch works: a read of the canary is reported.
    let _ = fs::read(canary.join("secret")).unwrap();
    assert!(
        !events(&ino).is_empty(),
        "inotify saw no event of a real access"
    );
}

//! Creating through a real fimfs mount: every kind of node (a socket
//! bound and connected, a device node read, a hard link) lands in the upper;
//! setuid and setgid bits given at creation are kept.
//!
//! The union rules of unlink, rmdir and opaque directories are tested on the
//! engine (`engine_whiteouts`, `engine_create`); these are what needs the kernel.
//!
//! Every test also checks that nothing was written to the lowers, and most of them
//! remount to check that what the upper holds means the same thing to a fresh daemon.

mod common;
use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

#[test]
fn create_every_kind_of_node() {
    let mut s = Stack::new("mw-create", 2);
    put(&s.l(2, "d/lower-file"), "lower\n");
    put(&s.l(1, "d/top-file"), "top\n");
    s.seal_lowers();
    let m = s.mount();

    // Regular file, in a merged directory that only the lowers have so far.
    {
        let mut f = File::create_new(m.join("d/new")).expect("create d/new");
        f.write_all(b"fresh\n").unwrap();
    }
    assert_eq!(read_str(&m.join("d/new")), "fresh\n");
    assert_eq!(
        errno_of(
            "create_new over a lower file",
            File::create_new(m.join("d/lower-file"))
        ),
        libc::EEXIST
    );
    // mknod: fifo, socket (bind), character device.
    nix::unistd::mkfifo(
        &m.join("d/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    let listener = UnixListener::bind(m.join("d/sock")).expect("bind a unix socket in the mount");
    mknod(&m.join("d/null"), libc::S_IFCHR | 0o600, 1, 3).expect("mknod c 1 3");
    fs::create_dir(m.join("d/sub")).expect("mkdir d/sub");
    fs::create_dir(m.join("d/sub/deeper")).expect("mkdir d/sub/deeper");
    assert_eq!(
        errno_of(
            "mkdir over a lower file",
            fs::create_dir(m.join("d/lower-file"))
        ),
        libc::EEXIST
    );
    symlink("../d/top-file", &m.join("d/ln"));
    fs::hard_link(m.join("d/new"), m.join("d/new-link")).expect("link d/new");

    for dir in [m.join("d"), s.u("d")] {
        let t = |n: &str| lstat(&dir.join(n)).file_type();
        assert!(t("fifo").is_fifo(), "{}/fifo is a fifo", dir.display());
        assert!(t("sock").is_socket(), "{}/sock is a socket", dir.display());
        assert!(
            t("null").is_char_device(),
            "{}/null is a char device",
            dir.display()
        );
        assert!(t("sub").is_dir() && t("ln").is_symlink() && t("new").is_file());
        assert_eq!(lstat(&dir.join("null")).rdev(), libc::makedev(1, 3));
        assert_eq!(lstat(&dir.join("fifo")).mode() & 0o777, 0o640);
    }
    // The device node works through the mount.
    let mut zero = [7u8; 4];
    assert_eq!(
        File::open(m.join("d/null"))
            .unwrap()
            .read(&mut zero)
            .unwrap(),
        0
    );
    // And so does the socket.
    let client = std::os::unix::net::UnixStream::connect(m.join("d/sock"));
    assert!(
        client.is_ok(),
        "connect to the socket bound in the mount: {client:?}"
    );
    drop(listener);
    assert_eq!(
        fs::read_link(m.join("d/ln")).unwrap(),
        Path::new("../d/top-file")
    );
    assert_eq!(read_str(&m.join("d/ln")), "top\n");
    assert_eq!(lstat(&m.join("d/new")).nlink(), 2);
    assert_eq!(
        names(&m.join("d")),
        [
            "fifo",
            "ln",
            "lower-file",
            "new",
            "new-link",
            "null",
            "sock",
            "sub",
            "top-file"
        ]
    );
    remount_keeps_the_view(&s, m);
    s.assert_lowers_untouched();
}

/// Set-user-ID and set-group-ID bits given at creation are kept (by root), as on the
/// kernel overlay and on a plain filesystem.
#[test]
fn creation_keeps_setuid_and_setgid_bits() {
    let mut s = Stack::new("mw-suid", 1);
    put(&s.l(1, "d/keep"), "k");
    s.seal_lowers();
    let m = s.mount();
    let create = |rel: &str, mode: u32| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(m.join(rel))
            .unwrap_or_else(|e| panic!("create {rel}: {e}"));
    };
    create("d/suid", 0o4755);
    create("d/sgid", 0o2755);
    create("top-suid", 0o4711);
    mknod(&m.join("d/fifo"), libc::S_IFIFO | 0o2640, 0, 0).unwrap();
    let want: Vec<(&str, String)> = [
        ("d/suid", 0o4755),
        ("d/sgid", 0o2755),
        ("top-suid", 0o4711),
        ("d/fifo", 0o2640),
    ]
    .iter()
    .map(|(p, m)| (*p, format!("{m:o}")))
    .collect();
    let modes = |root: &Path| -> Vec<(&str, String)> {
        want.iter()
            .map(|(p, _)| (*p, format!("{:o}", lstat(&root.join(p)).mode() & 0o7777)))
            .collect()
    };
    assert_eq!(
        modes(m.path()),
        want,
        "modes through the mount (umask 022 takes nothing away here)"
    );
    assert_eq!(modes(&s.upper), want, "modes in the upper");
    drop(m);
    s.assert_lowers_untouched();
}

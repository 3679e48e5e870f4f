//! The write side through a real fimfs mount: every namespace and data operation,
//! copy-up (data, holes, mode, owner, times, xattrs), whiteouts, opaque directories,
//! directory renames of upper, lower and merged directories, `RENAME_NOREPLACE` and
//! `RENAME_EXCHANGE`, hard links, stable inode numbers, in-place rewrites after
//! copy-up, the overlay's private xattrs, and read-only lower files and directories
//! compared against the kernel overlay.
//!
//! Every test also checks that nothing was written to the lowers, and most of them
//! remount to check that what the upper holds means the same thing to a fresh daemon.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

const MIB: u64 = 1024 * 1024;

fn append(p: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open O_APPEND {}: {e}", p.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("append to {}: {e}", p.display()));
}

fn xattr_names(p: &Path) -> Vec<String> {
    list_xattrs(p)
        .unwrap_or_else(|e| panic!("listxattr {}: errno {e}", p.display()))
        .into_iter()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect()
}

fn read_string(p: &Path) -> String {
    String::from_utf8_lossy(&read(p)).into_owned()
}

fn mtime(p: &Path) -> (i64, i64) {
    let m = lstat(p);
    (m.mtime(), m.mtime_nsec())
}

// ---------------------------------------------------------------------------------
// Creating every kind of node

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

/// A 0/0 character device is a whiteout: the kernel overlay refuses to create one
/// (EPERM), and so must fimfs, leaving nothing behind.
#[test]
fn mknod_of_a_whiteout_device_is_refused() {
    let mut s = Stack::new("mw-mknod-wh", 1);
    put(&s.l(1, "d/x"), "x");
    s.seal_lowers();
    let m = s.mount();
    for name in ["d/wh", "d/x", "top"] {
        let before = lstat_errno(&m.join(name));
        assert_eq!(
            errno_of(
                &format!("mknod {name} c 0 0"),
                mknod(&m.join(name), libc::S_IFCHR | 0o600, 0, 0)
            ),
            if before == 0 {
                libc::EEXIST
            } else {
                libc::EPERM
            },
            "mknod {name} c 0 0 through the mount (the kernel overlay says EPERM, or EEXIST)"
        );
        assert_eq!(
            lstat_errno(&m.join(name)),
            before,
            "lstat {name} after the mknod"
        );
    }
    assert_eq!(names(&m.join("d")), ["x"]);
    assert_eq!(
        disk_entries(&s.upper),
        Vec::<String>::new(),
        "the refused mknods wrote to the upper"
    );
    drop(m);
    s.assert_lowers_untouched();
}

// ---------------------------------------------------------------------------------
// Copy-up

#[test]
fn copy_up_keeps_mode_owner_times_xattrs_and_data() {
    let mut s = Stack::new("mw-meta", 2);
    let t0 = (1_000_000_000, 123_456_789);
    for (name, data) in [
        ("f", "f data\n"),
        ("g", "g data\n"),
        ("h", "h data\n"),
        ("t", "t\n"),
    ] {
        let p = s.l(2, &format!("meta/{name}"));
        put(&p, data);
        chown(&p, 1234, 2345);
        chmod(&p, 0o640);
        set_xattr(&p, "user.test", b"v1").unwrap();
        utimens(&p, t0, t0, false).unwrap();
    }
    put(&s.l(2, "meta/d/inner"), "inner\n");
    let d = s.l(2, "meta/d");
    chown(&d, 1234, 2345);
    chmod(&d, 0o750);
    set_xattr(&d, "user.dirx", b"dv").unwrap();
    let meta = s.l(2, "meta");
    chown(&meta, 55, 66);
    chmod(&meta, 0o711);
    put(&s.l(1, "other"), "other\n");
    s.seal_lowers();
    let m = s.mount();

    let check_meta = |p: &Path, mode: u32, uid: u32, gid: u32| {
        let md = lstat(p);
        assert_eq!(md.mode() & 0o7777, mode, "mode of {}", p.display());
        assert_eq!((md.uid(), md.gid()), (uid, gid), "owner of {}", p.display());
    };

    // setxattr copies up without touching data, mode, owner or mtime.
    set_xattr(&m.join("meta/f"), "user.new", b"n").expect("setxattr on a lower file");
    for p in [s.u("meta/f"), m.join("meta/f")] {
        check_meta(&p, 0o640, 1234, 2345);
        assert_eq!(mtime(&p), t0, "mtime of {} after the copy-up", p.display());
        assert_eq!(
            get_xattr(&p, "user.test"),
            Ok(b"v1".to_vec()),
            "{}",
            p.display()
        );
        assert_eq!(
            get_xattr(&p, "user.new"),
            Ok(b"n".to_vec()),
            "{}",
            p.display()
        );
        assert_eq!(read_str(&p), "f data\n");
    }
    // Parents are copied up first, with their own mode and owner.
    check_meta(&s.u("meta"), 0o711, 55, 66);

    // A write keeps mode, owner and xattrs.
    append(&m.join("meta/g"), b"more\n");
    for p in [s.u("meta/g"), m.join("meta/g")] {
        check_meta(&p, 0o640, 1234, 2345);
        assert_eq!(get_xattr(&p, "user.test"), Ok(b"v1".to_vec()));
        assert_eq!(read_str(&p), "g data\nmore\n");
    }
    // chown copies up and changes only the owner.
    chown(&m.join("meta/h"), 77, 88);
    for p in [s.u("meta/h"), m.join("meta/h")] {
        check_meta(&p, 0o640, 77, 88);
        assert_eq!(mtime(&p), t0);
        assert_eq!(read_str(&p), "h data\n");
        assert_eq!(get_xattr(&p, "user.test"), Ok(b"v1".to_vec()));
    }
    // utimens copies up and sets exactly the given times.
    let t1 = (1_500_000_000, 5);
    utimens(&m.join("meta/t"), t1, t1, false).expect("utimens on a lower file");
    for p in [s.u("meta/t"), m.join("meta/t")] {
        assert_eq!(mtime(&p), t1);
        assert_eq!((lstat(&p).atime(), lstat(&p).atime_nsec()), t1);
        check_meta(&p, 0o640, 1234, 2345);
    }
    // Creating a file in a lower directory copies the directory up with its
    // attributes; the new file belongs to the caller.
    put(&m.join("meta/d/new"), "new\n");
    for p in [s.u("meta/d"), m.join("meta/d")] {
        check_meta(&p, 0o750, 1234, 2345);
        assert_eq!(get_xattr(&p, "user.dirx"), Ok(b"dv".to_vec()));
    }
    check_meta(&m.join("meta/d/new"), 0o644, 0, 0);
    assert_eq!(names(&m.join("meta/d")), ["inner", "new"]);
    // Files not touched stay where they were.
    assert_eq!(lstat_errno(&s.u("meta/d/inner")), libc::ENOENT);
    assert_eq!(lstat_errno(&s.u("other")), libc::ENOENT);

    remount_keeps_the_view(&s, m);
    s.assert_lowers_untouched();
}

#[test]
fn copy_up_of_a_sparse_file_keeps_its_holes() {
    let mut s = Stack::new("mw-sparse", 1);
    let size = 64 * MIB;
    let head = fill(1, 4096);
    let mid = fill(2, 4096);
    {
        let f = File::create(s.l(1, "sparse")).unwrap();
        f.write_all_at(&head, 0).unwrap();
        f.write_all_at(&mid, 32 * MIB).unwrap();
        f.set_len(size).unwrap();
    }
    let lower_blocks = lstat(&s.l(1, "sparse")).blocks();
    assert!(
        lower_blocks * 512 < MIB,
        "the lower file is not sparse on this filesystem ({lower_blocks} blocks): the test cannot check holes"
    );
    s.seal_lowers();
    let m = s.mount();
    append(&m.join("sparse"), b"Z");

    let up = lstat(&s.u("sparse"));
    assert_eq!(up.size(), size + 1, "size of the copied-up file");
    assert!(
        up.blocks() * 512 <= MIB,
        "the copy-up filled the holes: {} blocks (512 B) in the upper for {} in the lower",
        up.blocks(),
        lower_blocks
    );
    assert_eq!(lstat(&m.join("sparse")).size(), size + 1);
    // Byte for byte, through the mount.
    let mut f = File::open(m.join("sparse")).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for chunk in 0..64u64 {
        f.read_exact(&mut buf).unwrap();
        let mut want = vec![0u8; MIB as usize];
        if chunk == 0 {
            want[..4096].copy_from_slice(&head);
        }
        if chunk == 32 {
            want[..4096].copy_from_slice(&mid);
        }
        assert!(
            buf == want,
            "MiB {chunk} of the copied-up sparse file differs"
        );
    }
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"Z");
    drop(f);
    drop(m);
    s.assert_lowers_untouched();
}

/// Read-only lower files and directories, and directories owned by another user, are
/// used exactly as on the kernel overlay: by root and by their owner.
#[test]
fn read_only_and_foreign_lowers_behave_as_on_the_kernel_overlay() {
    let build = |s: &Stack| {
        put(&s.l(2, "ro/file"), "read-only\n");
        chmod(&s.l(2, "ro/file"), 0o444);
        put(&s.l(2, "rodir/a"), "a\n");
        put(&s.l(2, "rodir/sub/b"), "b\n");
        put(&s.l(1, "rodir/top"), "top\n");
        chmod(&s.l(2, "rodir/sub"), 0o555);
        chmod(&s.l(2, "rodir"), 0o555);
        chmod(&s.l(1, "rodir"), 0o555);
        for rel in [
            "owned/f",
            "owned/g",
            "owned/h",
            "owned/tree/x/y",
            "owned/ro/z",
        ] {
            put(&s.l(2, rel), format!("{rel}\n"));
        }
        put(&s.l(1, "owned/tree/top"), "tree top\n");
        for rel in [
            "owned",
            "owned/f",
            "owned/g",
            "owned/h",
            "owned/tree",
            "owned/tree/x",
            "owned/tree/x/y",
            "owned/ro",
            "owned/ro/z",
        ] {
            chown(&s.l(2, rel), 1234, 1234);
        }
        chown(&s.l(1, "owned"), 1234, 1234);
        chown(&s.l(1, "owned/tree"), 1234, 1234);
        chown(&s.l(1, "owned/tree/top"), 1234, 1234);
        chmod(&s.l(2, "owned/ro"), 0o555);
        chmod(&s.l(2, "owned/ro/z"), 0o444);
    };
    // Each line prints its outcome; both mounts must print the same.
    let as_owner = r#"
t() { if "$@"; then echo "ok: $*"; else echo "FAILED: $*"; fi; }
t sh -c 'echo new > owned/new'
t sh -c 'echo more >> owned/f'
t rm owned/g
t mkdir owned/sub
t mv owned/h owned/h2
t chmod 600 owned/f
t sh -c 'echo x > owned/ro/new'
t rm -f owned/ro/z
t chmod 755 owned/ro
t sh -c 'echo x > owned/ro/new2'
t sh -c 'echo y >> owned/ro/z'
t chmod 644 owned/ro/z
t sh -c 'echo y >> owned/ro/z'
t rm -rf owned/tree
t mkdir owned/tree
t sh -c 'echo x > rodir/x'
t sh -c 'echo x >> ro/file'
t rm -f rodir/a
t chmod 777 rodir
t touch owned/f
t ls owned owned/tree
"#;
    let as_root = r#"
t() { if "$@"; then echo "ok: $*"; else echo "FAILED: $*"; fi; }
t sh -c 'echo more >> ro/file'
t cat ro/file
t chmod 644 ro/file
t sh -c 'echo x > rodir/new'
t rm rodir/a
t mv rodir/sub/b rodir/sub/c
t sh -c 'echo deep > rodir/sub/d'
t rm -rf rodir/sub
t ls rodir
t rm -rf owned/ro
t chown -R 0:0 owned/tree
t rm -rf rodir
t ls
"#;
    let run = |fimfs: bool| {
        let mut s = Stack::new(if fimfs { "mw-ro-f" } else { "mw-ro-k" }, 2);
        build(&s);
        s.seal_lowers();
        let mut outputs = Vec::new();
        let result = if fimfs {
            let m = s.mount();
            outputs.push(run_as(1234, 1234, m.path(), as_owner));
            outputs.push(run_as(0, 0, m.path(), as_root));
            let v = view(m.path(), true);
            unmount_clean(m);
            v
        } else {
            let k = s.kernel();
            outputs.push(run_as(1234, 1234, k.path(), as_owner));
            outputs.push(run_as(0, 0, k.path(), as_root));
            let v = view(k.path(), true);
            k.unmount();
            v
        };
        s.assert_lowers_untouched();
        (s, outputs, result)
    };
    let (_ks, k_out, k_view) = run(false);
    let (fs_, f_out, f_view) = run(true);
    for (who, (k, f)) in ["uid 1234", "root"].iter().zip(k_out.iter().zip(&f_out)) {
        assert_eq!(
            f, k,
            "the same commands as {who} gave different results on fimfs (left) and the kernel overlay (right)"
        );
    }
    // Sanity: the script did what it is meant to exercise.
    assert!(
        f_out[0].1.contains("ok: sh -c echo more >> owned/f"),
        "{}",
        f_out[0].1
    );
    assert!(
        f_out[1].1.contains("ok: sh -c echo more >> ro/file"),
        "{}",
        f_out[1].1
    );
    assert!(f_out[1].1.contains("ok: rm -rf rodir"), "{}", f_out[1].1);
    assert_same_view(
        "kernel overlay",
        &without_root(k_view),
        "fimfs",
        &without_root(f_view.clone_tree()),
    );
    // The copied-up directories kept their mode and owner in the upper.
    assert!(
        is_whiteout(&fs_.u("rodir")),
        "rodir was deleted: the upper needs a whiteout"
    );
    let owned = lstat(&fs_.u("owned"));
    assert_eq!((owned.uid(), owned.mode() & 0o7777), (1234, 0o755));
    let m = fs_.mount();
    assert_same_view(
        "before remount",
        &f_view,
        "after remount",
        &view(m.path(), true),
    );
}

/// `Tree` is not `Clone`; a deep copy through its fields.
trait CloneTree {
    fn clone_tree(&self) -> Tree;
}

impl CloneTree for Tree {
    fn clone_tree(&self) -> Tree {
        Tree {
            entries: self.entries.clone(),
            listings: self.listings.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------
// Whiteouts and opaque directories

#[test]
fn deleting_lower_entries_leaves_whiteouts() {
    let mut s = Stack::new("mw-whiteout", 2);
    put(&s.l(2, "gone"), "lower file\n");
    put(&s.l(1, "shadow"), "top\n");
    put(&s.l(2, "shadow"), "bottom\n");
    put(&s.l(2, "lonly/inner"), "lower-only dir\n");
    mkdirs(&s.l(2, "emptydir"));
    s.seal_lowers();
    let m = s.mount();

    fs::remove_file(m.join("gone")).expect("unlink a lower file");
    fs::remove_file(m.join("shadow")).expect("unlink a file in two lowers");
    fs::remove_file(m.join("lonly/inner")).expect("unlink in a lower-only dir");
    fs::remove_dir(m.join("emptydir")).expect("rmdir an empty lower dir");
    for n in ["gone", "shadow", "lonly/inner", "emptydir"] {
        assert_eq!(lstat_errno(&m.join(n)), libc::ENOENT, "{n} after delete");
        assert!(
            is_whiteout(&s.u(n)),
            "deleting {n} must leave a 0/0 char device in the upper: {:?}",
            fs::symlink_metadata(s.u(n))
        );
    }
    assert_eq!(names(m.path()), ["lonly"]);
    assert_eq!(names(&m.join("lonly")), Vec::<String>::new());
    // A name that exists only in the upper needs no whiteout.
    put(&m.join("fresh"), "x");
    fs::remove_file(m.join("fresh")).unwrap();
    assert_eq!(
        lstat_errno(&s.u("fresh")),
        libc::ENOENT,
        "whiteout for an upper-only name"
    );
    // Recreating a whited-out name shows only the new file.
    put(&m.join("gone"), "again\n");
    assert_eq!(read_str(&m.join("gone")), "again\n");
    assert!(lstat(&s.u("gone")).file_type().is_file());

    unmount_clean(m);
    let m = s.mount();
    assert_eq!(names(m.path()), ["gone", "lonly"]);
    assert_eq!(read_str(&m.join("gone")), "again\n");
    for n in ["shadow", "lonly/inner", "emptydir"] {
        assert_eq!(lstat_errno(&m.join(n)), libc::ENOENT, "{n} after remount");
    }
    drop(m);
    s.assert_lowers_untouched();
}

#[test]
fn rm_rf_then_mkdir_gives_an_empty_opaque_directory() {
    let mut s = Stack::new("mw-opaque", 2);
    for rel in ["d/x", "d/sub/y", "d/sub/deep/z"] {
        put(&s.l(2, rel), rel);
    }
    for rel in ["d/w", "d/sub/v"] {
        put(&s.l(1, rel), rel);
    }
    s.seal_lowers();
    let m = s.mount();

    fs::remove_dir_all(m.join("d")).expect("rm -rf d");
    assert_eq!(lstat_errno(&m.join("d")), libc::ENOENT);
    fs::create_dir(m.join("d")).expect("mkdir d");
    assert_eq!(
        names(&m.join("d")),
        Vec::<String>::new(),
        "d after rm -rf d && mkdir d"
    );
    assert_eq!(lstat_errno(&m.join("d/x")), libc::ENOENT);
    assert_eq!(lstat_errno(&m.join("d/sub")), libc::ENOENT);
    assert_eq!(
        get_xattr(&s.u("d"), "user.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    assert_eq!(
        get_xattr(&s.u("d"), "trusted.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    // The markers are the overlay's business: hidden through the mount.
    let listed = xattr_names(&m.join("d"));
    assert!(
        listed.iter().all(|n| !n.contains("overlay")),
        "listxattr through the mount shows {listed:?}"
    );
    assert_eq!(
        get_xattr(&m.join("d"), "user.overlay.opaque"),
        Err(libc::ENODATA)
    );
    // Nothing inside an opaque directory needs a whiteout.
    put(&m.join("d/x"), "new x\n");
    fs::remove_file(m.join("d/x")).unwrap();
    assert_eq!(
        disk_entries(&s.u("d")),
        Vec::<String>::new(),
        "upper d holds stale entries"
    );

    unmount_clean(m);
    let m = s.mount();
    assert_eq!(names(&m.join("d")), Vec::<String>::new(), "d after remount");
    drop(m);
    s.assert_lowers_untouched();
}

#[test]
fn delete_recreate_cycles_never_bring_lower_entries_back() {
    let mut s = Stack::new("mw-cycles", 3);
    for (l, rels) in [
        (3, &["c/a/x", "c/a/b/y", "c/z", "c/a/b/deep/q"][..]),
        (2, &["c/a/m", "c/a/b/n", "c/k"][..]),
        (1, &["c/a/w", "c/a/b/v", "c/q"][..]),
    ] {
        for rel in rels {
            put(&s.l(l, rel), format!("{rel} in lower {l}\n"));
        }
    }
    s.seal_lowers();
    let mut m = s.mount();
    let check = |m: &MountGuard, step: &str, want: &[(&str, &[&str])]| {
        for (dir, entries) in want {
            assert_eq!(
                names(&m.join(dir)),
                entries.to_vec(),
                "readdir {dir} after step {step:?}"
            );
        }
    };
    type Step<'a> = (&'a str, &'a dyn Fn(&Path), &'a [(&'a str, &'a [&'a str])]);
    let steps: &[Step] = &[
        (
            "rm -rf c/a; mkdir c/a",
            &|r| {
                fs::remove_dir_all(r.join("c/a")).unwrap();
                fs::create_dir(r.join("c/a")).unwrap();
            },
            &[("c", &["a", "k", "q", "z"]), ("c/a", &[])],
        ),
        (
            "mkdir c/a/b",
            &|r| fs::create_dir(r.join("c/a/b")).unwrap(),
            &[("c/a", &["b"]), ("c/a/b", &[])],
        ),
        (
            "touch c/a/b/y; rm c/a/b/y",
            &|r| {
                put(&r.join("c/a/b/y"), "");
                fs::remove_file(r.join("c/a/b/y")).unwrap();
            },
            &[("c/a/b", &[])],
        ),
        (
            "rm -rf c; mkdir -p c/a",
            &|r| {
                fs::remove_dir_all(r.join("c")).unwrap();
                fs::create_dir_all(r.join("c/a")).unwrap();
            },
            &[("", &["c"]), ("c", &["a"]), ("c/a", &[])],
        ),
        (
            "rmdir c/a; mkdir c/a; mkdir c/a/b",
            &|r| {
                fs::remove_dir(r.join("c/a")).unwrap();
                fs::create_dir(r.join("c/a")).unwrap();
                fs::create_dir(r.join("c/a/b")).unwrap();
            },
            &[("c", &["a"]), ("c/a", &["b"]), ("c/a/b", &[])],
        ),
        (
            "rm -rf c/a; rmdir c; mkdir c; echo > c/z",
            &|r| {
                fs::remove_dir_all(r.join("c/a")).unwrap();
                fs::remove_dir(r.join("c")).unwrap();
                fs::create_dir(r.join("c")).unwrap();
                put(&r.join("c/z"), "new z\n");
            },
            &[("", &["c"]), ("c", &["z"])],
        ),
    ];
    for (i, (what, op, want)) in steps.iter().enumerate() {
        op(m.path());
        check(&m, what, want);
        // Every other step, a fresh daemon must read the upper the same way.
        if i % 2 == 1 {
            unmount_clean(m);
            m = s.mount();
            check(&m, &format!("{what} (after remount)"), want);
        }
    }
    assert_eq!(read_str(&m.join("c/z")), "new z\n");
    // The final upper: c is opaque and holds only z.
    assert_eq!(disk_entries(&s.u("c")), ["z"]);
    fs::remove_dir_all(m.join("c")).unwrap();
    assert_eq!(names(m.path()), Vec::<String>::new());
    unmount_clean(m);
    assert!(
        is_whiteout(&s.u("c")),
        "c deleted: whiteout expected in the upper"
    );
    let m = s.mount();
    assert_eq!(
        names(m.path()),
        Vec::<String>::new(),
        "root after the final remount"
    );
    drop(m);
    s.assert_lowers_untouched();
}

#[test]
fn rmdir_of_a_merged_directory_that_looks_empty() {
    let mut s = Stack::new("mw-rmdir", 2);
    put(&s.l(2, "d/a"), "a");
    put(&s.l(2, "d/sub/b"), "b");
    put(&s.l(1, "d/c"), "c");
    put(&s.l(1, "e/only"), "e");
    put(&s.l(2, "e/other"), "e2");
    s.seal_lowers();
    let m = s.mount();

    assert_eq!(
        errno_of("rmdir a non-empty merged dir", fs::remove_dir(m.join("d"))),
        libc::ENOTEMPTY
    );
    for n in ["d/a", "d/c", "d/sub/b"] {
        fs::remove_file(m.join(n)).unwrap_or_else(|e| panic!("unlink {n}: {e}"));
    }
    fs::remove_dir(m.join("d/sub")).expect("rmdir d/sub");
    assert_eq!(names(&m.join("d")), Vec::<String>::new());
    fs::remove_dir(m.join("d")).expect("rmdir of a merged dir that looks empty");
    assert_eq!(lstat_errno(&m.join("d")), libc::ENOENT);
    assert!(
        is_whiteout(&s.u("d")),
        "the upper must hold a whiteout for d (the lowers still have it), not a directory with stale whiteouts: {:?}",
        disk_entries(&s.upper)
    );
    // e: create and delete an upper file among lower ones, then empty it.
    put(&m.join("e/new"), "n");
    for n in ["e/new", "e/only", "e/other"] {
        fs::remove_file(m.join(n)).unwrap();
    }
    fs::remove_dir(m.join("e")).expect("rmdir e");
    assert!(is_whiteout(&s.u("e")), "e: {:?}", disk_entries(&s.upper));
    fs::create_dir(m.join("e")).expect("mkdir e again");
    assert_eq!(names(&m.join("e")), Vec::<String>::new());
    assert_eq!(
        disk_entries(&s.u("e")),
        Vec::<String>::new(),
        "stale entries in upper e"
    );
    assert_eq!(disk_entries(&s.upper), ["d", "e"]);

    unmount_clean(m);
    let m = s.mount();
    assert_eq!(names(m.path()), ["e"]);
    assert_eq!(names(&m.join("e")), Vec::<String>::new());
    drop(m);
    s.assert_lowers_untouched();
}

// ---------------------------------------------------------------------------------
// Rename

#[test]
fn directory_rename_of_upper_lower_and_merged_dirs() {
    let mut s = Stack::new("mw-dirrename", 2);
    put(&s.l(2, "m/a"), "m/a from l2\n");
    put(&s.l(2, "m/sub/s2"), "s2\n");
    put(&s.l(2, "m/gone"), "deleted later\n");
    put(&s.l(2, "m/sub/deep/d2"), "d2\n");
    put(&s.l(1, "m/b"), "m/b from l1\n");
    put(&s.l(1, "m/sub/s1"), "s1\n");
    put(&s.l(1, "m/a"), "m/a from l1 (shadows l2)\n");
    put(&s.l(1, "lo/f"), "lo/f\n");
    put(&s.l(1, "lo/x/y/z"), "lo/x/y/z\n");
    put(&s.l(2, "w/old"), "w/old: must never show again\n");
    put(&s.l(2, "target/inside"), "t\n");
    put(&s.l(2, "k"), "lower k\n");
    chmod(&s.l(1, "lo/x"), 0o700);
    s.seal_lowers();
    let m = s.mount();

    // Upper state: a file in the merged dir, a whiteout in it, an upper-only dir.
    put(&m.join("m/c"), "m/c upper\n");
    fs::remove_file(m.join("m/gone")).unwrap();
    put(&m.join("up/f"), "up/f\n");
    // Upper-only directory.
    fs::rename(m.join("up"), m.join("up2")).expect("rename an upper dir");
    // Lower-only directory.
    fs::rename(m.join("lo"), m.join("lo2")).expect("rename a lower-only dir");
    // Merged directory (two lowers + upper).
    fs::rename(m.join("m"), m.join("m2")).expect("rename a merged dir");
    // A merged subdirectory into a renamed lower-only directory.
    fs::rename(m.join("m2/sub"), m.join("lo2/x/sub")).expect("rename a merged subdir");
    // A dir onto the name of a deleted lower dir: it must not merge with it.
    fs::remove_dir_all(m.join("w")).unwrap();
    fs::rename(m.join("up2"), m.join("w")).expect("rename onto a whited-out dir name");
    // A file onto a whited-out name.
    fs::remove_file(m.join("k")).unwrap();
    fs::rename(m.join("w/f"), m.join("k")).expect("rename a file onto a whited-out name");

    let expect = |m: &Path, when: &str| {
        let want: &[(&str, &str)] = &[
            ("m2/a", "m/a from l1 (shadows l2)\n"),
            ("m2/b", "m/b from l1\n"),
            ("m2/c", "m/c upper\n"),
            ("lo2/f", "lo/f\n"),
            ("lo2/x/y/z", "lo/x/y/z\n"),
            ("lo2/x/sub/s1", "s1\n"),
            ("lo2/x/sub/s2", "s2\n"),
            ("lo2/x/sub/deep/d2", "d2\n"),
            ("k", "up/f\n"),
            ("target/inside", "t\n"),
        ];
        for (p, c) in want {
            assert_eq!(read_str(&m.join(p)), *c, "{p} {when}");
        }
        for gone in ["m", "lo", "up", "up2", "m2/gone", "m2/sub", "w/old", "w/f"] {
            assert_eq!(lstat_errno(&m.join(gone)), libc::ENOENT, "{gone} {when}");
        }
        assert_eq!(names(m), ["k", "lo2", "m2", "target", "w"], "root {when}");
        assert_eq!(names(&m.join("m2")), ["a", "b", "c"], "m2 {when}");
        assert_eq!(names(&m.join("lo2/x")), ["sub", "y"], "lo2/x {when}");
        assert_eq!(names(&m.join("lo2/x/sub")), ["deep", "s1", "s2"], "{when}");
        assert_eq!(names(&m.join("w")), Vec::<String>::new(), "w {when}");
        assert_eq!(
            lstat(&m.join("lo2/x")).mode() & 0o7777,
            0o700,
            "mode kept {when}"
        );
    };
    expect(m.path(), "after the renames");
    // The old names are free, and never show lower entries again.
    fs::create_dir(m.join("m")).unwrap();
    fs::create_dir(m.join("lo")).unwrap();
    assert_eq!(
        names(&m.join("m")),
        Vec::<String>::new(),
        "mkdir m after renaming m away"
    );
    assert_eq!(
        names(&m.join("lo")),
        Vec::<String>::new(),
        "mkdir lo after renaming lo away"
    );
    fs::remove_dir(m.join("m")).unwrap();
    fs::remove_dir(m.join("lo")).unwrap();
    unmount_clean(m);
    let m = s.mount();
    expect(m.path(), "after remount");
    drop(m);
    s.assert_lowers_untouched();
}

/// A directory renamed again after a first rename, or whose parent was renamed, or
/// that was exchanged, still shows every file it holds (the upper holds them; the
/// daemon must not keep looking under an old name); and so does a file renamed twice.
#[test]
fn entries_renamed_twice_keep_working() {
    let mut s = Stack::new("mw-rename-twice", 1);
    for case in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        put(&s.l(1, &format!("{case}/a/d/f9")), "f9\n");
        put(&s.l(1, &format!("{case}/a/d/f8")), "f8\n");
        mkdirs(&s.l(1, &format!("{case}/p")));
    }
    put(&s.l(1, "c7/file"), "file\n");
    s.seal_lowers();
    let m = s.mount();
    let r = |rel: &str| m.join(rel);
    // (case, what was done, directory that must list f8 and f9)
    let mut checks: Vec<(&str, &str)> = Vec::new();
    fs::rename(r("c1/a"), r("c1/x")).unwrap();
    fs::rename(r("c1/x"), r("c1/y")).unwrap();
    checks.push(("mv a x; mv x y", "c1/y/d"));
    fs::rename(r("c2/a/d"), r("c2/x")).unwrap();
    fs::rename(r("c2/x"), r("c2/y")).unwrap();
    checks.push(("mv a/d x; mv x y", "c2/y"));
    fs::rename(r("c3/a/d"), r("c3/a/x")).unwrap();
    fs::rename(r("c3/a/x"), r("c3/a/y")).unwrap();
    checks.push(("mv a/d a/x; mv a/x a/y", "c3/a/y"));
    append(&r("c4/a/d/f8"), b"+");
    fs::rename(r("c4/a"), r("c4/n")).unwrap();
    fs::rename(r("c4/n/d"), r("c4/n/e")).unwrap();
    checks.push(("echo >> a/d/f8; mv a n; mv n/d n/e", "c4/n/e"));
    append(&r("c5/a/d/f8"), b"+");
    rename2(&r("c5/a"), &r("c5/p"), libc::RENAME_EXCHANGE).unwrap();
    fs::rename(r("c5/p/d"), r("c5/x")).unwrap();
    checks.push(("echo >> a/d/f8; exchange a p; mv p/d x", "c5/x"));
    fs::rename(r("c6/a"), r("c6/p/a")).unwrap();
    fs::rename(r("c6/p"), r("c6/q")).unwrap();
    checks.push(("mv a p/a; mv p q", "c6/q/a/d"));
    // A lower file renamed twice, then used by name (no readdir in between).
    fs::rename(r("c7/file"), r("c7/g")).unwrap();
    fs::rename(r("c7/g"), r("c7/h")).unwrap();
    let chmod_h = fs::set_permissions(
        r("c7/h"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    let read_h = fs::read_to_string(r("c7/h"));

    let verify = |m: &Path, when: &str, mut bad: Vec<String>| {
        for (what, dir) in &checks {
            let listed = fs::read_dir(m.join(dir)).map(|rd| {
                let mut v: Vec<String> = rd
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            });
            let f9 = fs::read_to_string(m.join(dir).join("f9"));
            if listed.as_ref().ok().map(|v| v.as_slice())
                != Some(&["f8".to_string(), "f9".to_string()][..])
                || f9.as_deref().ok() != Some("f9\n")
            {
                bad.push(format!(
                    "`{what}`: readdir {dir} = {listed:?}, read {dir}/f9 = {f9:?}"
                ));
            }
        }
        assert!(bad.is_empty(), "{when}:\n{}", bad.join("\n"));
    };
    let mut file_case = Vec::new();
    if chmod_h.is_err() || read_h.as_deref().ok() != Some("file\n") {
        file_case.push(format!(
            "`mv file g; mv g h` (a lower file): chmod h = {chmod_h:?}, read h = {read_h:?}"
        ));
    }
    verify(
        m.path(),
        "through the mount that did the renames",
        file_case,
    );
    unmount_clean(m);
    let m = s.mount();
    assert_eq!(read_str(&m.join("c7/h")), "file\n");
    verify(m.path(), "after remount", Vec::new());
    drop(m);
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

/// Renames over existing names, NOREPLACE and EXCHANGE, checked against the same
/// sequence on a plain directory holding the same merged tree.
#[test]
fn rename_over_existing_names_as_on_a_plain_filesystem() {
    let mut s = Stack::new("mw-rename", 2);
    put(&s.l(2, "f1"), "f1\n");
    put(&s.l(1, "f2"), "f2\n");
    put(&s.l(2, "f3"), "f3\n");
    put(&s.l(2, "src/a"), "src/a\n");
    put(&s.l(1, "src/b"), "src/b\n");
    mkdirs(&s.l(2, "empty-lower"));
    put(&s.l(2, "looks-empty/x"), "x\n");
    put(&s.l(1, "looks-empty/y"), "y\n");
    put(&s.l(2, "full/z"), "z\n");
    put(&s.l(2, "dead"), "dead\n");
    put(&s.l(1, "dx/one"), "dx one\n");
    put(&s.l(2, "dy/two"), "dy two\n");
    put(&s.l(1, "dy/three"), "dy three\n");
    put(&s.l(2, "src2/q"), "q\n");
    put(&s.l(2, "src3/r"), "r\n");
    s.seal_lowers();
    let plain = s.tmp.join("plain");
    plain_copy_of_lowers(&s.lowers, &s.tmp.join("kro"), &plain);
    let m = s.mount();
    let roots = [m.path().to_path_buf(), plain.clone()];

    let both = |what: &str, op: &dyn Fn(&Path) -> std::io::Result<()>| -> Result<(), i32> {
        let r: Vec<Result<(), i32>> = roots.iter().map(|r| outcome(op(r))).collect();
        assert_eq!(
            r[0], r[1],
            "{what}: fimfs (left) and a plain directory (right) differ"
        );
        r[0]
    };
    // Set up: empty an upper dir and a merged dir; whiteout a file.
    both("mkdir empty-upper", &|r| {
        fs::create_dir(r.join("empty-upper"))
    })
    .unwrap();
    both("rm looks-empty/x", &|r| {
        fs::remove_file(r.join("looks-empty/x"))
    })
    .unwrap();
    both("rm looks-empty/y", &|r| {
        fs::remove_file(r.join("looks-empty/y"))
    })
    .unwrap();
    both("rm dead", &|r| fs::remove_file(r.join("dead"))).unwrap();

    let rn = |a: &'static str, b: &'static str, flags: u32| {
        move |r: &Path| rename2(&r.join(a), &r.join(b), flags)
    };
    let (noreplace, exchange) = (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE);
    let cases: &[(&str, &str, u32, Result<(), i32>)] = &[
        ("f1", "empty-upper", 0, Err(libc::EISDIR)),
        ("src", "f1", 0, Err(libc::ENOTDIR)),
        ("src", "full", 0, Err(libc::ENOTEMPTY)),
        ("src", "empty-upper", 0, Ok(())),
        ("empty-upper", "empty-lower", 0, Ok(())),
        ("empty-lower", "looks-empty", 0, Ok(())),
        ("f1", "dead", 0, Ok(())),
        ("f2", "f3", noreplace, Err(libc::EEXIST)),
        ("f2", "new-name", noreplace, Ok(())),
        ("f3", "f1", noreplace, Ok(())),
        ("new-name", "dead", exchange, Ok(())),
        ("f1", "missing", exchange, Err(libc::ENOENT)),
        ("f1", "dx", exchange, Ok(())),
        ("dx", "dy", exchange, Ok(())),
        ("src2", "src3", exchange, Ok(())),
        ("src2", "src2/r", 0, Err(libc::EINVAL)),
        ("f1", "f1", 0, Ok(())),
    ];
    for (a, b, flags, want) in cases {
        let what = format!("renameat2({a}, {b}, {flags:#x})");
        let got = both(&what, &rn(a, b, *flags));
        assert_eq!(got, *want, "{what}");
    }
    let reference = without_root(view(&plain, true));
    assert_same_view(
        "plain",
        &reference,
        "fimfs",
        &without_root(view(m.path(), true)),
    );
    // A few facts spelled out.
    assert_eq!(read_str(&m.join("looks-empty/a")), "src/a\n");
    assert_eq!(read_str(&m.join("dead")), "f2\n");
    assert_eq!(read_str(&m.join("new-name")), "f1\n");
    assert_eq!(read_str(&m.join("dy")), "f3\n");
    assert_eq!(names(&m.join("f1")), ["one"]);
    assert_eq!(names(&m.join("dx")), ["three", "two"]);
    unmount_clean(m);
    let m = s.mount();
    assert_same_view(
        "plain",
        &reference,
        "fimfs after remount",
        &without_root(view(m.path(), true)),
    );
    drop(m);
    s.assert_lowers_untouched();
}

// ---------------------------------------------------------------------------------
// Links and inode numbers

#[test]
fn hard_links_of_lower_files() {
    let mut s = Stack::new("mw-link", 2);
    put(&s.l(2, "hl/a"), "A");
    put(&s.l(1, "hl/c"), "C");
    put(&s.l(2, "other/keep"), "k");
    s.seal_lowers();
    let m = s.mount();

    fs::hard_link(m.join("hl/a"), m.join("hl/b")).expect("link a lower file");
    fs::hard_link(m.join("hl/c"), m.join("other/c2")).expect("link into another lower dir");
    let check = |m: &Path, when: &str| {
        for (x, y) in [("hl/a", "hl/b"), ("hl/c", "other/c2")] {
            let (mx, my) = (lstat(&m.join(x)), lstat(&m.join(y)));
            assert_eq!(mx.ino(), my.ino(), "st_ino of {x} and {y} {when}");
            assert_eq!(
                (mx.nlink(), my.nlink()),
                (2, 2),
                "st_nlink of {x}, {y} {when}"
            );
        }
    };
    check(m.path(), "after link");
    // readdir must report the same inode numbers (d_ino == st_ino), and listing the
    // directories must not split the two names into two inodes.
    let ino_a = lstat(&m.join("hl/a")).ino();
    let hl = dir_inos(&m.join("hl"));
    let other = dir_inos(&m.join("other"));
    assert_eq!(
        (
            hl[b"a".as_slice()],
            hl[b"b".as_slice()],
            other[b"c2".as_slice()]
        ),
        (ino_a, ino_a, hl[b"c".as_slice()]),
        "d_ino of hl/a, hl/b, other/c2 (st_ino of hl/a is {ino_a})"
    );
    check(m.path(), "after readdir");
    append(&m.join("hl/b"), b" via b");
    assert_eq!(
        read_str(&m.join("hl/a")),
        "A via b",
        "hl/a after a write through hl/b"
    );
    append(&m.join("hl/a"), b" via a");
    assert_eq!(
        read_str(&m.join("hl/b")),
        "A via b via a",
        "hl/b after a write through hl/a"
    );
    OpenOptions::new()
        .write(true)
        .open(m.join("other/c2"))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(
        read_str(&m.join("hl/c")),
        "",
        "hl/c after truncating other/c2"
    );
    assert_eq!(
        lstat(&s.u("hl/a")).ino(),
        lstat(&s.u("hl/b")).ino(),
        "the upper must hold one inode for both names"
    );
    assert_eq!(
        errno_of(
            "link a directory",
            fs::hard_link(m.join("hl"), m.join("hl2"))
        ),
        libc::EPERM
    );
    unmount_clean(m);
    // A fresh daemon sees the same links, with one inode number for both names (the
    // kernel overlay does: tar and rsync detect hard links by st_ino).
    let m = s.mount();
    assert_eq!(read_str(&m.join("hl/a")), "A via b via a");
    assert_eq!(read_str(&m.join("hl/c")), "");
    check(m.path(), "after remount");
    drop(m);
    s.assert_lowers_untouched();
}

/// `ln a b; rm a` leaves b whole, for a lower file and for an upper one.
#[test]
fn unlinking_one_name_of_a_hard_link_keeps_the_other() {
    let mut s = Stack::new("mw-unlink-link", 1);
    put(&s.l(1, "hl/a"), "lower A");
    s.seal_lowers();
    let m = s.mount();
    put(&m.join("up"), "upper U");
    fs::hard_link(m.join("hl/a"), m.join("hl/b")).unwrap();
    fs::hard_link(m.join("up"), m.join("up2")).unwrap();
    fs::remove_file(m.join("hl/a")).unwrap();
    fs::remove_file(m.join("up")).unwrap();
    for (name, want) in [("hl/b", "lower A"), ("up2", "upper U")] {
        assert_eq!(lstat(&m.join(name)).nlink(), 1, "st_nlink of {name}");
        let got = fs::read(m.join(name)).map(|v| String::from_utf8_lossy(&v).into_owned());
        assert_eq!(
            got.ok().as_deref(),
            Some(want),
            "read {name} after unlinking its other name"
        );
    }
    append(&m.join("hl/b"), b"+");
    assert!(
        is_whiteout(&s.u("hl/a")),
        "hl/a is in a lower: whiteout expected"
    );
    assert_eq!(lstat_errno(&s.u("up")), libc::ENOENT);
    unmount_clean(m);
    let m = s.mount();
    assert_eq!(names(m.path()), ["hl", "up2"]);
    assert_eq!(names(&m.join("hl")), ["b"]);
    assert_eq!(read_str(&m.join("hl/b")), "lower A+");
    drop(m);
    s.assert_lowers_untouched();
}

/// `ln f link; mv g f` replaces one name of the pair: `link` keeps the old data.
#[test]
fn renaming_over_one_name_of_a_hard_link_keeps_the_other() {
    let mut s = Stack::new("mw-rename-over-link", 1);
    put(&s.l(1, "lower/f"), "lower F\n");
    put(&s.l(1, "lower/g"), "lower G\n");
    put(&s.l(1, "tree/a/f"), "tree F\n");
    put(&s.l(1, "tree/g"), "tree G\n");
    s.seal_lowers();
    let m = s.mount();
    let r = |rel: &str| m.join(rel);
    // Upper files.
    put(&r("up/f"), "upper F\n");
    put(&r("up/g"), "upper G\n");
    fs::hard_link(r("up/f"), r("up/link")).unwrap();
    fs::rename(r("up/g"), r("up/f")).unwrap();
    // Lower files.
    fs::hard_link(r("lower/f"), r("lower/link")).unwrap();
    fs::rename(r("lower/g"), r("lower/f")).unwrap();
    // A link into a directory that is then renamed (copied up whole), then replaced.
    fs::hard_link(r("tree/a/f"), r("tree/link")).unwrap();
    fs::rename(r("tree/a"), r("tree/b")).unwrap();
    fs::rename(r("tree/g"), r("tree/b/f")).unwrap();
    let want = [
        ("up/link", "upper F\n"),
        ("up/f", "upper G\n"),
        ("lower/link", "lower F\n"),
        ("lower/f", "lower G\n"),
        ("tree/link", "tree F\n"),
        ("tree/b/f", "tree G\n"),
    ];
    let check = |m: &Path, when: &str| {
        let got: Vec<(&str, String, u64)> = want
            .iter()
            .map(|(p, _)| {
                let c = fs::read_to_string(m.join(p)).unwrap_or_else(|e| format!("<{e}>"));
                (
                    *p,
                    c,
                    fs::symlink_metadata(m.join(p)).map_or(0, |md| md.nlink()),
                )
            })
            .collect();
        let expected: Vec<(&str, String, u64)> =
            want.iter().map(|(p, c)| (*p, c.to_string(), 1)).collect();
        assert_eq!(got, expected, "(name, content, st_nlink) {when}");
    };
    check(m.path(), "through the mount that did it");
    unmount_clean(m);
    let m = s.mount();
    check(m.path(), "after remount");
    drop(m);
    s.assert_lowers_untouched();
}

#[test]
fn inode_numbers_survive_copy_up() {
    let mut s = Stack::new("mw-ino", 2);
    put(&s.l(2, "dir/f"), "f");
    put(&s.l(1, "dir/g"), "g");
    put(&s.l(2, "solo"), "solo");
    s.seal_lowers();
    let m = s.mount();
    let before: Vec<u64> = ["dir", "dir/f", "dir/g", "solo"]
        .iter()
        .map(|p| lstat(&m.join(p)).ino())
        .collect();
    let d_ino = dir_inos(&m.join("dir"));
    assert_eq!(
        d_ino[b"f".as_slice()],
        before[1],
        "d_ino of dir/f equals st_ino"
    );
    // Keep an fd open across the copy-up too.
    let held = File::open(m.join("solo")).unwrap();
    append(&m.join("dir/f"), b"+");
    append(&m.join("solo"), b"+");
    put(&m.join("dir/new"), "n");
    chmod(&m.join("dir/g"), 0o600);
    assert!(
        s.u("dir/f").exists() && s.u("solo").exists(),
        "copy-up did not happen"
    );
    let after: Vec<u64> = ["dir", "dir/f", "dir/g", "solo"]
        .iter()
        .map(|p| lstat(&m.join(p)).ino())
        .collect();
    assert_eq!(
        before, after,
        "st_ino of dir, dir/f, dir/g, solo across copy-up"
    );
    assert_eq!(
        held.metadata().unwrap().ino(),
        before[3],
        "fstat of an fd held across copy-up"
    );
    let d_ino = dir_inos(&m.join("dir"));
    assert_eq!(d_ino[b"f".as_slice()], before[1], "d_ino after copy-up");
    assert_eq!(d_ino[b"g".as_slice()], before[2], "d_ino after copy-up");
    assert_eq!(d_ino[b"new".as_slice()], lstat(&m.join("dir/new")).ino());
    drop(m);
    s.assert_lowers_untouched();
}

/// One number names one file, whatever happened to it: lower hard links split by a
/// copy-up, a copied-up file renamed or linked over a lower name, a renamed file that
/// keeps its number, and an upper inode number the backing filesystem reuses while
/// the kernel still holds the old file open.
#[test]
fn distinct_files_never_share_an_inode_number() {
    let mut s = Stack::new("mw-ino-distinct", 1);
    put(&s.l(1, "hl/a"), "linked\n");
    fs::hard_link(s.l(1, "hl/a"), s.l(1, "hl/b")).unwrap();
    fs::hard_link(s.l(1, "hl/a"), s.l(1, "hl/c")).unwrap();
    put(&s.l(1, "x"), "X\n");
    put(&s.l(1, "y"), "Y\n");
    put(&s.l(1, "z"), "Z\n");
    put(&s.l(1, "moved"), "moved\n");
    s.seal_lowers();
    let m = s.mount();
    let r = |rel: &str| m.join(rel);
    let no_sharing = |when: &str| {
        let shared = numbers_naming_several_files(m.path());
        assert!(shared.is_empty(), "{when}:\n{}", shared.join("\n"));
    };

    // The kernel knows two of the three lower names when one is written.
    assert_eq!(
        lstat(&r("hl/a")).ino(),
        lstat(&r("hl/b")).ino(),
        "lower links"
    );
    append(&r("hl/a"), b"+a\n");
    assert_eq!(read_string(&r("hl/a")), "linked\n+a\n");
    no_sharing("after copying up one name of a lower hard link");

    // Copied up, then renamed (and linked) over names whose lowers hold other files.
    append(&r("x"), b"+x\n");
    fs::rename(r("x"), r("y")).unwrap();
    fs::hard_link(r("y"), r("z2")).unwrap();
    fs::rename(r("z2"), r("z")).unwrap();
    assert_eq!(read_string(&r("y")), "X\n+x\n");
    assert_eq!(
        lstat(&r("y")).ino(),
        lstat(&r("z")).ino(),
        "y and z are one file"
    );
    no_sharing("after renames over lower names");

    // A lower file keeps its number under its new name.
    let ino = lstat(&r("moved")).ino();
    fs::rename(r("moved"), r("moved2")).unwrap();
    fs::rename(r("moved2"), r("moved3")).unwrap();
    assert_eq!(lstat(&r("moved3")).ino(), ino, "st_ino across two renames");

    // Upper inode numbers freed and handed out again by the backing filesystem.
    put(&r("held"), "held\n");
    let mut held = File::open(r("held")).unwrap();
    let held_ino = held.metadata().unwrap().ino();
    fs::remove_file(r("held")).unwrap();
    for i in 0..64 {
        put(&r(&format!("new/{i}")), format!("new {i}\n"));
    }
    let mut got = String::new();
    held.read_to_string(&mut got).unwrap();
    assert_eq!(got, "held\n", "an open unlinked file keeps its data");
    assert_eq!(held.metadata().unwrap().ino(), held_ino, "fstat of it");
    for i in 0..64 {
        assert_eq!(read_string(&r(&format!("new/{i}"))), format!("new {i}\n"));
    }
    no_sharing("after reusing upper inode numbers");
    drop(held);
    drop(m);
    let m = s.mount();
    let shared = numbers_naming_several_files(m.path());
    assert!(shared.is_empty(), "after remount:\n{}", shared.join("\n"));
    assert_eq!(read_string(&m.join("y")), "X\n+x\n");
    drop(m);
    s.assert_lowers_untouched();
}

// ---------------------------------------------------------------------------------
// Data

#[test]
fn rewrite_in_place_after_copy_up_reads_back_byte_for_byte() {
    let mut s = Stack::new("mw-rewrite", 1);
    let page = 4096usize;
    let mut model = fill(42, 64 * page);
    put(&s.l(1, "db.sqlite"), &model);
    put(&s.l(1, "image.png"), fill(7, 10_000));
    s.seal_lowers();
    let m = s.mount();

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("db.sqlite"))
        .unwrap();
    let mut rng = XorShift::new(0xdb);
    for i in 0..400 {
        let (off, len) = if rng.chance(80) {
            (rng.below(96) * page, page)
        } else {
            (rng.below(model.len() + page), 1 + rng.below(3 * page))
        };
        let data = fill(1000 + i, len);
        f.write_all_at(&data, off as u64).unwrap();
        if model.len() < off + len {
            model.resize(off + len, 0);
        }
        model[off..off + len].copy_from_slice(&data);
        if i % 50 == 0 {
            f.sync_data().unwrap();
        }
        if i % 97 == 0 {
            let mut back = vec![0u8; len];
            f.read_exact_at(&mut back, off as u64).unwrap();
            assert!(
                back == data,
                "write {i} at {off} does not read back through the same fd"
            );
        }
    }
    assert_eq!(
        f.metadata().unwrap().len(),
        model.len() as u64,
        "fstat size"
    );
    drop(f);
    assert_eq!(
        lstat(&m.join("db.sqlite")).size(),
        model.len() as u64,
        "stat size after close"
    );
    assert!(
        read(&m.join("db.sqlite")) == model,
        "db.sqlite through a new fd"
    );
    // Truncate-and-rewrite through O_TRUNC (the PNG case), then pad.
    let png = fill(8, 12_345);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.join("image.png"))
            .unwrap();
        f.write_all(&png[..5000]).unwrap();
        f.seek(SeekFrom::Start(5000)).unwrap();
        f.write_all(&png[5000..]).unwrap();
    }
    assert!(
        read(&m.join("image.png")) == png,
        "image.png rewritten through O_TRUNC"
    );
    unmount_clean(m);
    assert!(read(&s.u("db.sqlite")) == model, "db.sqlite in the upper");
    assert!(read(&s.u("image.png")) == png, "image.png in the upper");
    let m = s.mount();
    assert!(
        read(&m.join("db.sqlite")) == model,
        "db.sqlite after remount"
    );
    drop(m);
    s.assert_lowers_untouched();
}

#[test]
fn fd_opened_before_copy_up_sees_later_writes() {
    let mut s = Stack::new("mw-heldfd", 1);
    put(&s.l(1, "shared"), "old content");
    put(&s.l(1, "shrink"), "0123456789");
    s.seal_lowers();
    let m = s.mount();
    let ro = File::open(m.join("shared")).unwrap();
    let mut first = String::new();
    (&ro).read_to_string(&mut first).unwrap();
    assert_eq!(first, "old content");
    append(&m.join("shared"), b" + new");
    let mut buf = vec![0u8; 64];
    let n = ro.read_at(&mut buf, 0).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        "old content + new",
        "an fd opened read-only before the copy-up reads the new data"
    );
    assert_eq!(ro.metadata().unwrap().len(), 17, "fstat of the held fd");

    let ro2 = File::open(m.join("shrink")).unwrap();
    let mut b = [0u8; 4];
    ro2.read_exact_at(&mut b, 0).unwrap();
    OpenOptions::new()
        .write(true)
        .open(m.join("shrink"))
        .unwrap()
        .write_all_at(b"ABCD", 0)
        .unwrap();
    let mut whole = vec![0u8; 32];
    let n = ro2.read_at(&mut whole, 0).unwrap();
    assert_eq!(&whole[..n], b"ABCD456789");
    drop(m);
    s.assert_lowers_untouched();
}

/// truncate, O_TRUNC, fallocate, chmod, chown, utimens, xattrs, copy_file_range and
/// fsync on lower files, each copying up.
#[test]
fn attribute_and_data_operations_on_lower_files() {
    let mut s = Stack::new("mw-ops", 2);
    for (l, name) in [
        (2, "shrink"),
        (2, "grow"),
        (1, "otrunc"),
        (2, "falloc"),
        (2, "chmod"),
        (1, "chown"),
        (2, "times"),
        (2, "xattr"),
        (1, "cfr-src"),
        (2, "cfr-dst"),
        (2, "sync"),
    ] {
        put(
            &s.l(l, &format!("o/{name}")),
            format!("0123456789 {name}\n"),
        );
    }
    set_xattr(&s.l(2, "o/xattr"), "user.keep", b"k").unwrap();
    set_xattr(&s.l(2, "o/xattr"), "user.drop", b"d").unwrap();
    symlink("shrink", &s.l(2, "o/link"));
    mkdirs(&s.l(2, "o/dir"));
    s.seal_lowers();
    let m = s.mount();
    let o = |n: &str| m.join(format!("o/{n}"));
    let wr = |p: &Path| {
        OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };

    // truncate: shrink and grow.
    wr(&o("shrink")).set_len(4).unwrap();
    assert_eq!(read_str(&o("shrink")), "0123");
    wr(&o("grow")).set_len(30).unwrap();
    let mut want = b"0123456789 grow\n".to_vec();
    want.resize(30, 0);
    assert_eq!(read(&o("grow")), want);
    // open(O_TRUNC) of a lower file.
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(o("otrunc"))
            .unwrap(),
    );
    assert_eq!(lstat(&o("otrunc")).size(), 0);
    assert_eq!(lstat(&s.u("o/otrunc")).size(), 0);
    // fallocate: extend, keep size, punch a hole.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(o("falloc"))
        .unwrap();
    fallocate(&f, 0, 0, 8192).expect("fallocate(0, 8192) on a lower file");
    assert_eq!(f.metadata().unwrap().len(), 8192);
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 8192, 8192).expect("fallocate KEEP_SIZE");
    assert_eq!(f.metadata().unwrap().len(), 8192);
    fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        0,
        4096,
    )
    .expect("fallocate PUNCH_HOLE");
    drop(f);
    assert_eq!(read(&o("falloc")), vec![0u8; 8192]);
    // chmod, chown.
    chmod(&o("chmod"), 0o4711);
    assert_eq!(lstat(&o("chmod")).mode() & 0o7777, 0o4711);
    assert_eq!(lstat(&s.u("o/chmod")).mode() & 0o7777, 0o4711);
    chown(&o("chown"), 4321, 8765);
    assert_eq!(
        (lstat(&o("chown")).uid(), lstat(&o("chown")).gid()),
        (4321, 8765)
    );
    chown(&o("link"), 11, 12);
    assert_eq!(lstat(&o("link")).uid(), 11, "lchown of a lower symlink");
    assert_eq!(
        lstat(&o("shrink")).uid(),
        0,
        "lchown must not follow the symlink"
    );
    // utimens, on a file and on a symlink itself.
    let (ta, tm) = ((1_111_111_111, 1), (1_222_222_222, 999_999_999));
    utimens(&o("times"), ta, tm, false).unwrap();
    let md = lstat(&o("times"));
    assert_eq!(
        ((md.atime(), md.atime_nsec()), (md.mtime(), md.mtime_nsec())),
        (ta, tm)
    );
    utimens(&o("link"), ta, tm, true).expect("utimensat(AT_SYMLINK_NOFOLLOW) on a symlink");
    assert_eq!(mtime(&o("link")), tm);
    assert_ne!(
        mtime(&o("shrink")),
        tm,
        "utimens(NOFOLLOW) followed the symlink"
    );
    // xattrs: set, replace, remove one inherited from the lower.
    set_xattr(&o("xattr"), "user.added", b"a").unwrap();
    set_xattr(&o("xattr"), "user.keep", b"k2").unwrap();
    remove_xattr(&o("xattr"), "user.drop").expect("removexattr of a lower xattr");
    assert_eq!(xattr_names(&o("xattr")), ["user.added", "user.keep"]);
    assert_eq!(get_xattr(&o("xattr"), "user.keep"), Ok(b"k2".to_vec()));
    assert_eq!(remove_xattr(&o("xattr"), "user.drop"), Err(libc::ENODATA));
    let upper_user: Vec<String> = xattr_names(&s.u("o/xattr"))
        .into_iter()
        .filter(|n| !n.starts_with("user.fimfs.") && !n.starts_with("trusted."))
        .collect();
    assert_eq!(
        upper_user,
        ["user.added", "user.keep"],
        "user xattrs in the upper"
    );
    // copy_file_range: lower → new file, and into a lower file.
    let src = File::open(o("cfr-src")).unwrap();
    let dst = File::create_new(o("cfr-new")).unwrap();
    assert_eq!(
        copy_range(&src, 0, &dst, 0, 10).expect("copy_file_range"),
        10
    );
    drop(dst);
    assert_eq!(read_str(&o("cfr-new")), "0123456789");
    let dst = OpenOptions::new().write(true).open(o("cfr-dst")).unwrap();
    assert_eq!(
        copy_range(&src, 0, &dst, 2, 4).expect("copy_file_range into a lower file"),
        4
    );
    drop(dst);
    assert_eq!(read_str(&o("cfr-dst")), "0101236789 cfr-dst\n");
    // fsync, fdatasync, fsync of a directory.
    let f = OpenOptions::new().write(true).open(o("sync")).unwrap();
    f.write_all_at(b"SYNC", 0).unwrap();
    f.sync_all().expect("fsync");
    f.sync_data().expect("fdatasync");
    drop(f);
    File::open(o("dir"))
        .unwrap()
        .sync_all()
        .expect("fsync of a directory");
    assert_eq!(read_str(&s.u("o/sync")), "SYNC456789 sync\n");

    remount_keeps_the_view(&s, m);
    s.assert_lowers_untouched();
}

/// chmod, chown and utimens of directories: lower-only, merged and upper ones.
#[test]
fn attributes_of_directories() {
    let mut s = Stack::new("mw-dirattr", 2);
    put(&s.l(2, "lower-only/x"), "x");
    put(&s.l(2, "merged/a"), "a");
    put(&s.l(1, "merged/b"), "b");
    s.seal_lowers();
    let m = s.mount();
    fs::create_dir(m.join("upper-dir")).unwrap();
    let t = (1_234_567_890, 42);
    for (i, d) in ["lower-only", "merged", "upper-dir"]
        .into_iter()
        .enumerate()
    {
        let mode = 0o700 + i as u32;
        let md = fs::set_permissions(
            m.join(d),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        );
        assert!(md.is_ok(), "chmod {mode:o} {d}: {md:?}");
        assert_eq!(lstat(&m.join(d)).mode() & 0o7777, mode, "mode of {d}");
        assert_eq!(lstat(&s.u(d)).mode() & 0o7777, mode, "mode of upper {d}");
        let r = std::os::unix::fs::lchown(m.join(d), Some(100 + i as u32), Some(200));
        assert!(r.is_ok(), "chown {d}: {r:?}");
        assert_eq!(lstat(&m.join(d)).uid(), 100 + i as u32);
        let r = utimens(&m.join(d), t, t, false);
        assert!(r.is_ok(), "utimensat {d}: {r:?}");
        assert_eq!(mtime(&m.join(d)), t, "mtime of {d}");
        assert_eq!(mtime(&s.u(d)), t, "mtime of upper {d}");
    }
    assert_eq!(names(&m.join("merged")), ["a", "b"]);
    remount_keeps_the_view(&s, m);
    s.assert_lowers_untouched();
}

#[test]
fn private_xattrs_are_refused_and_hidden() {
    let mut s = Stack::new("mw-privx", 2);
    put(&s.l(2, "f"), "f");
    put(&s.l(2, "d/x"), "x");
    put(&s.l(1, "d/y"), "y");
    put(&s.l(2, "opq/hidden"), "h");
    mkdirs(&s.l(1, "opq"));
    set_xattr(&s.l(1, "opq"), "user.overlay.opaque", b"y").unwrap();
    set_xattr(&s.l(1, "opq"), "trusted.overlay.opaque", b"y").unwrap();
    s.seal_lowers();
    let m = s.mount();
    put(&m.join("upper-file"), "u");
    fs::remove_dir_all(m.join("d")).unwrap();
    fs::create_dir(m.join("d")).unwrap();

    let private = [
        "user.overlay.foo",
        "user.overlay.opaque",
        "trusted.overlay.opaque",
        "trusted.overlay.whiteout",
        "user.fuseoverlayfs.opaque",
    ];
    for p in ["f", "d", "opq", "upper-file", ""] {
        let path = m.join(p);
        for name in private {
            assert_eq!(
                set_xattr(&path, name, b"y"),
                Err(libc::EPERM),
                "setxattr {name} on {p:?} through the mount"
            );
        }
        let listed = xattr_names(&path);
        assert!(
            listed.iter().all(|n| !n.contains("overlay")),
            "listxattr of {p:?} shows {listed:?}"
        );
        for name in private {
            assert_eq!(
                get_xattr(&path, name),
                Err(libc::ENODATA),
                "getxattr {name} on {p:?}"
            );
        }
    }
    // Removing the marker through the mount must not make d transparent.
    assert!(remove_xattr(&m.join("d"), "user.overlay.opaque").is_err());
    assert!(remove_xattr(&m.join("d"), "trusted.overlay.opaque").is_err());
    assert_eq!(
        get_xattr(&s.u("d"), "user.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    assert_eq!(names(&m.join("d")), Vec::<String>::new());
    assert_eq!(names(&m.join("opq")), Vec::<String>::new());
    // None of the refused calls created anything: f is still only in the lower.
    assert_eq!(
        lstat_errno(&s.u("f")),
        libc::ENOENT,
        "a refused setxattr copied f up"
    );
    // Ordinary user xattrs work.
    set_xattr(&m.join("f"), "user.fine", b"ok").unwrap();
    assert_eq!(xattr_names(&m.join("f")), ["user.fine"]);
    drop(m);
    s.assert_lowers_untouched();
}

/// `lsattr`/`chattr` through the mount: the flags of a lower file are read
/// from the lower; setting one copies the file up and sets it there (the
/// lower keeps its own), as on the kernel overlay. Any other ioctl gets
/// ENOTTY, as on a plain file (Python asks TCGETS of every file it opens).
#[test]
fn inode_flags_are_read_and_set_with_copy_up() {
    use std::os::fd::AsRawFd;
    let flags = |p: &Path| -> libc::c_int {
        let f = File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        let mut v: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one int to a live out-pointer.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut v) };
        assert_eq!(
            r,
            0,
            "FS_IOC_GETFLAGS {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        v
    };
    let set = |p: &Path, v: libc::c_int| {
        let f = File::open(p).unwrap();
        // SAFETY: FS_IOC_SETFLAGS reads one int from a live pointer.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &v) };
        assert_eq!(
            r,
            0,
            "FS_IOC_SETFLAGS {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    };
    let noatime = 0x80; // FS_NOATIME_FL, which ext4 and tmpfs both keep
    let mut s = Stack::new("mw-flags", 1);
    put(&s.l(1, "d/f"), "f\n");
    s.seal_lowers();
    let m = s.mount();
    let lower = flags(&s.l(1, "d/f"));
    assert_eq!(flags(&m.join("d/f")), lower, "a lower file's flags");
    assert_eq!(
        flags(&m.join("d")),
        flags(&s.l(1, "d")),
        "a lower directory's flags"
    );
    set(&m.join("d/f"), lower | noatime);
    assert_eq!(
        flags(&m.join("d/f")) & noatime,
        noatime,
        "set through the mount"
    );
    assert_eq!(
        flags(&s.upper.join("d/f")) & noatime,
        noatime,
        "set on the copy-up"
    );
    assert_eq!(read_str(&m.join("d/f")), "f\n", "the copy keeps its data");
    put(&m.join("new"), "n");
    set(&m.join("new"), flags(&m.join("new")) | noatime);
    assert_eq!(
        flags(&s.upper.join("new")) & noatime,
        noatime,
        "an upper file"
    );
    let f = File::open(m.join("d/f")).unwrap();
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: TCGETS writes one termios to a live out-pointer (it fails here).
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TCGETS, t.as_mut_ptr()) };
    let e = std::io::Error::last_os_error().raw_os_error();
    assert_eq!((r, e), (-1, Some(libc::ENOTTY)), "TCGETS on a file");
    drop(f);
    drop(m);
    assert_eq!(
        flags(&s.l(1, "d/f")),
        lower,
        "the lower file keeps its flags"
    );
    s.assert_lowers_untouched();
}

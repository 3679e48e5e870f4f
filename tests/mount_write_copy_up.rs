//! Copy-up through a real fimfs mount: mode, owner, nanosecond times, xattrs and
//! data kept; sparse files keep their holes; read-only and foreign lowers behave
//! as on the kernel overlay; the overlay's private xattrs are refused and
//! hidden; inode flags are read and set with a copy-up.
//!
//! Every test also checks that nothing was written to the lowers, and most of them
//! remount to check that what the upper holds means the same thing to a fresh daemon.

mod common;
use common::*;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MIB: u64 = 1024 * 1024;

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
        &without_root(f_view.clone()),
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

//! Data and attributes through a real fimfs mount: in-place rewrites after a
//! copy-up read back byte for byte, an fd opened before a copy-up sees later
//! writes, attribute and data operations on lower files and on directories.
//!
//! Every test also checks that nothing was written to the lowers, and most of them
//! remount to check that what the upper holds means the same thing to a fresh daemon.

mod common;
use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

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

/// What `fchmod`, `fchown` and `futimens` of an open file do once it is
/// unlinked, on one mount: the mode, owner and mtime `fstat` then shows.
fn attributes_changed_after_unlink(dir: &Path, name: &str) -> (u32, u32, i64) {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join(name))
        .unwrap();
    f.write_all_at(b"held", 0).unwrap();
    fs::remove_file(dir.join(name)).unwrap();
    let fd = f.as_raw_fd();
    let times = [
        libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 2,
            tv_nsec: 0,
        },
    ];
    // SAFETY: plain syscalls on an fd this function owns; `times` holds two timespecs.
    let rets = unsafe {
        [
            libc::fchmod(fd, 0o600),
            libc::fchown(fd, 1, 1),
            libc::futimens(fd, times.as_ptr()),
        ]
    };
    assert_eq!(
        rets,
        [0; 3],
        "{}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    let m = f.metadata().unwrap();
    (m.mode() & 0o7777, m.uid(), m.mtime())
}

/// A file unlinked while open keeps taking attribute changes through its fd,
/// as POSIX says and the kernel overlay does (fimfs answered ENOENT before:
/// it changed files by name only).
#[test]
fn attributes_of_an_open_file_change_after_its_unlink() {
    let mut s = Stack::new("mw-unlinked-attrs", 1);
    s.seal_lowers();
    let m = s.mount();
    let ours = attributes_changed_after_unlink(m.path(), "gone");
    drop(m);
    let k = s.kernel();
    let kernel = attributes_changed_after_unlink(k.path(), "gone-k");
    drop(k);
    assert_eq!(ours, kernel, "fimfs against the kernel overlay");
    assert_eq!(ours, (0o600, 1, 2));
    s.assert_lowers_untouched();
}

/// What a user's truncate of their set-user-ID file, open and unlinked,
/// leaves on one mount: `stat`'s mode and size, or the shell's error.
fn truncate_after_unlink_by_a_user(dir: &Path) -> String {
    let d = dir.join("shared");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let f = d.join("tool");
    let script = format!(
        "exec 3<>{f} && echo hello >&3 && chmod 4755 {f} && rm {f} && \
         truncate -s 1 /proc/self/fd/3 && stat -L -c '%a %s' /proc/self/fd/3",
        f = f.display()
    );
    let out = setpriv(1000, "sh").arg("-c").arg(&script).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A user's truncate of their open, unlinked set-user-ID file drops the bit
/// (the daemon drops it through the fd it holds, `FUSE_HANDLE_KILLPRIV_V2`),
/// as on the kernel overlay; fimfs answered ENOENT before.
#[test]
fn a_users_truncate_of_an_unlinked_set_id_file_drops_the_bit() {
    let mut s = Stack::new("mw-unlinked-suid", 1);
    s.seal_lowers();
    let m = s.mount();
    let ours = truncate_after_unlink_by_a_user(m.path());
    drop(m);
    fs::remove_dir_all(s.u("shared")).unwrap();
    let k = s.kernel();
    let kernel = truncate_after_unlink_by_a_user(k.path());
    drop(k);
    assert_eq!(ours, kernel, "fimfs against the kernel overlay");
    assert_eq!(ours, "755 1\n");
    s.assert_lowers_untouched();
}

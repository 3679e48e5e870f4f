//! Hard links and inode numbers through a real fimfs mount: links of lower files,
//! unlinking or renaming over one name of a link, numbers that survive a copy-up
//! and a remount, and distinct files never sharing a number.
//!
//! Every test also checks that nothing was written to the lowers, and most of them
//! remount to check that what the upper holds means the same thing to a fresh daemon.

mod common;
use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
    assert_eq!(read_str(&r("hl/a")), "linked\n+a\n");
    no_sharing("after copying up one name of a lower hard link");

    // Copied up, then renamed (and linked) over names whose lowers hold other files.
    append(&r("x"), b"+x\n");
    fs::rename(r("x"), r("y")).unwrap();
    fs::hard_link(r("y"), r("z2")).unwrap();
    fs::rename(r("z2"), r("z")).unwrap();
    assert_eq!(read_str(&r("y")), "X\n+x\n");
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
        assert_eq!(read_str(&r(&format!("new/{i}"))), format!("new {i}\n"));
    }
    no_sharing("after reusing upper inode numbers");
    drop(held);
    drop(m);
    let m = s.mount();
    let shared = numbers_naming_several_files(m.path());
    assert!(shared.is_empty(), "after remount:\n{}", shared.join("\n"));
    assert_eq!(read_str(&m.join("y")), "X\n+x\n");
    drop(m);
    s.assert_lowers_untouched();
}

//! `-o casefold` through a real mount (SPEC §4): case-insensitive lookup,
//! create, open, rename, unlink, mkdir and rmdir across every layer;
//! case-preserving names; deterministic winners among several spellings;
//! whiteouts and opaque directories that fold; `.ciopfs`; no stale kernel
//! entries; names that are not UTF-8 matching byte for byte.

mod common;

use common::*;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn text(p: &Path) -> String {
    String::from_utf8_lossy(&read(p)).into_owned()
}

fn names(dir: &Path) -> BTreeSet<Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect()
}

fn set(items: &[&[u8]]) -> BTreeSet<Vec<u8>> {
    items.iter().map(|i| i.to_vec()).collect()
}

/// Two lowers with clashing spellings:
/// - L1 (top): `Docs/ReadMe.txt`, `same/Foo`, `same/foo`, `Game/DATA/Level1.dat`
/// - L2: `docs/readme.TXT`, `docs/other`, `mixed/foo`, `mixed/Bar`, `bin\xff`,
///   `BIN\xff`, `ΣΟΦΙΑ`
fn stack(name: &str) -> Stack {
    let mut s = Stack::new(name, 2);
    put(&s.l(1, "Docs/ReadMe.txt"), "l1 readme\n");
    put(&s.l(1, "same/Foo"), "upper-case Foo\n");
    put(&s.l(1, "same/foo"), "lower-case foo\n");
    put(&s.l(1, "Game/DATA/Level1.dat"), "level 1\n");
    put(&s.l(2, "docs/readme.TXT"), "l2 readme\n");
    put(&s.l(2, "docs/other"), "other\n");
    put(&s.l(2, "mixed/foo"), "mixed foo\n");
    put(&s.l(2, "mixed/Bar"), "mixed bar\n");
    put(&s.l(2, "ΣΟΦΙΑ"), "sophia\n");
    put(&s.lowers[1].join(OsStr::from_bytes(b"bin\xff")), "bin ff\n");
    put(&s.lowers[1].join(OsStr::from_bytes(b"BIN\xff")), "BIN ff\n");
    s.seal_lowers();
    s
}

/// lstat's errno once the kernel has dropped the other spellings it cached.
/// The daemon asks it to right after replying to the unlink or rename (a
/// notification sent from inside the request would deadlock on the parent
/// directory's lock), so for a moment a cached spelling may still answer.
/// Waits for ENOENT, bounded: a spelling that stays is a failure.
fn gone(p: &Path) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let e = lstat_errno(p);
        if e == libc::ENOENT || std::time::Instant::now() > deadline {
            return e;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn lookup_folds_across_layers_and_readdir_keeps_real_names() {
    let s = stack("cf-lookup");
    let m = s.mount_opts(&["casefold"]);
    let r = |p: &str| m.join(p);
    // Any spelling reaches the highest layer's entry; directories of different
    // spellings merge.
    for p in [
        "Docs/ReadMe.txt",
        "docs/readme.txt",
        "DOCS/README.TXT",
        "dOcS/rEaDmE.tXt",
    ] {
        assert_eq!(text(&r(p)), "l1 readme\n", "{p}");
    }
    assert_eq!(
        text(&r("DOCS/OTHER")),
        "other\n",
        "merged from the lower `docs`"
    );
    assert_eq!(
        text(&r("MIXED/FOO")),
        "mixed foo\n",
        "mixed-case names in a lower"
    );
    assert_eq!(text(&r("mixed/bar")), "mixed bar\n");
    assert_eq!(text(&r("game/data/LEVEL1.DAT")), "level 1\n");
    assert_eq!(text(&r("σοφια")), "sophia\n", "Unicode folding");
    // readdir: real names, the winner's spelling only.
    assert_eq!(
        names(m.path()),
        set(&[
            b"Docs",
            b"same",
            b"Game",
            b"mixed",
            "ΣΟΦΙΑ".as_bytes(),
            b"bin\xff",
            b"BIN\xff"
        ])
    );
    assert_eq!(names(&r("docs")), set(&[b"ReadMe.txt", b"other"]));
    assert_eq!(names(&r("mixed")), set(&[b"foo", b"Bar"]));
    // Within a layer, the exact spelling wins; otherwise the first in byte order.
    assert_eq!(names(&r("same")), set(&[b"Foo", b"foo"]));
    assert_eq!(text(&r("same/foo")), "lower-case foo\n");
    assert_eq!(text(&r("same/Foo")), "upper-case Foo\n");
    assert_eq!(text(&r("same/FOO")), "upper-case Foo\n");
    // Not UTF-8: byte for byte.
    assert_eq!(
        text(&m.path().join(OsStr::from_bytes(b"bin\xff"))),
        "bin ff\n"
    );
    assert_eq!(
        text(&m.path().join(OsStr::from_bytes(b"BIN\xff"))),
        "BIN ff\n"
    );
    assert_eq!(
        lstat_errno(&m.path().join(OsStr::from_bytes(b"Bin\xff"))),
        libc::ENOENT
    );
    // `.ciopfs` answers in every directory and is never listed.
    for d in ["", "docs", "Game/DATA"] {
        let md = fs::metadata(r(d).join(".ciopfs")).expect(".ciopfs");
        assert!(md.is_file());
        assert!(!names(&r(d)).contains(b".ciopfs".as_slice()));
    }
    // Without casefold, the same tree is case-sensitive.
    drop(m);
    let m = s.mount();
    assert_eq!(lstat_errno(&m.join("DOCS/README.TXT")), libc::ENOENT);
    assert_eq!(lstat_errno(&m.join("Docs/.ciopfs")), libc::ENOENT);
    drop(m);
    s.assert_lowers_untouched();
}

#[test]
fn writes_fold_and_preserve_case() {
    let s = stack("cf-write");
    let m = s.mount_opts(&["casefold"]);
    let r = |p: &str| m.join(p);

    // A created name keeps its spelling, and is reachable by any.
    put(&r("docs/NewFile.TXT"), "new\n");
    assert!(names(&r("docs")).contains(b"NewFile.TXT".as_slice()));
    assert_eq!(text(&r("DOCS/newfile.txt")), "new\n");
    assert!(
        s.u("Docs/NewFile.TXT").exists(),
        "upper spelling: the winner's directory"
    );
    // O_CREAT of another spelling opens the existing file.
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(r("docs/README.TXT"))
        .unwrap();
    f.write_all(b"+\n").unwrap();
    drop(f);
    assert_eq!(text(&r("Docs/ReadMe.txt")), "l1 readme\n+\n");
    assert_eq!(
        names(&r("docs")),
        set(&[b"ReadMe.txt", b"other", b"NewFile.TXT"])
    );
    // mkdir of an existing name in another spelling.
    let e = fs::create_dir(r("DOCS")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));

    // Deleting one spelling hides every spelling in every lower, at once, even
    // for names the kernel had looked up.
    for p in ["Docs/ReadMe.txt", "docs/readme.txt", "docs/readme.TXT"] {
        assert!(fs::metadata(r(p)).is_ok(), "{p}");
    }
    fs::remove_file(r("DOCS/README.TXT")).unwrap();
    for p in ["Docs/ReadMe.txt", "docs/readme.txt", "docs/readme.TXT"] {
        assert_eq!(gone(&r(p)), libc::ENOENT, "{p} after rm");
    }
    assert_eq!(names(&r("docs")), set(&[b"other", b"NewFile.TXT"]));

    // Rename: the new spelling is the one given; old spellings are gone at once.
    assert!(fs::metadata(r("mixed/FOO")).is_ok());
    fs::rename(r("mixed/Foo"), r("mixed/B")).unwrap();
    assert_eq!(text(&r("mixed/b")), "mixed foo\n");
    assert_eq!(gone(&r("mixed/FOO")), libc::ENOENT);
    assert_eq!(gone(&r("mixed/foo")), libc::ENOENT);
    assert_eq!(names(&r("mixed")), set(&[b"B", b"Bar"]));
    // A case-only rename changes nothing: both names lead to one inode, and the
    // VFS answers such a rename itself without asking the filesystem (see README).
    fs::rename(r("mixed/bar"), r("mixed/BAR")).unwrap();
    assert_eq!(names(&r("mixed")), set(&[b"B", b"Bar"]));
    assert_eq!(text(&r("mixed/BAR")), "mixed bar\n");
    // Renaming over another spelling of an existing name replaces that entry,
    // which keeps its spelling.
    fs::rename(r("mixed/b"), r("MIXED/bar")).unwrap();
    assert_eq!(text(&r("mixed/BAR")), "mixed foo\n");
    assert_eq!(names(&r("mixed")), set(&[b"Bar"]));

    // rmdir by another spelling; the recreated directory is empty (opaque), whatever
    // its spelling.
    let e = fs::remove_dir(r("GAME/data")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_file(r("game/Data/LEVEL1.dat")).unwrap();
    fs::remove_dir(r("GAME/data")).unwrap();
    fs::create_dir(r("game/data")).unwrap();
    assert!(names(&r("GAME/DATA")).is_empty());
    assert!(names(&r("Game")).contains(b"data".as_slice()));

    // A recreated file at a deleted name of another spelling.
    put(&r("DOCS/readme.txt"), "again\n");
    assert_eq!(text(&r("docs/ReadMe.TXT")), "again\n");
    assert!(names(&r("docs")).contains(b"readme.txt".as_slice()));

    // A fresh daemon reads the same upper the same way.
    let before_docs = names(&r("docs"));
    let before_mixed = names(&r("mixed"));
    drop(m);
    let m = s.mount_opts(&["casefold"]);
    assert_eq!(names(&m.join("docs")), before_docs);
    assert_eq!(names(&m.join("mixed")), before_mixed);
    assert_eq!(text(&m.join("DOCS/README.TXT")), "again\n");
    assert!(names(&m.join("game/data")).is_empty());
    drop(m);
    s.assert_lowers_untouched();
}

/// A wrong-case lookup in a big directory works and keeps the inode number of the
/// entry it finds (the folded index is used, and kept fresh across writes).
#[test]
fn wrong_case_lookups_in_a_big_directory() {
    let mut s = Stack::new("cf-big", 1);
    for i in 0..3000 {
        put(&s.l(1, &format!("big/File{i:05}.Dat")), format!("{i}"));
    }
    s.seal_lowers();
    let m = s.mount_opts(&["casefold"]);
    for i in (0..3000).step_by(97) {
        let exact = lstat(&m.join(format!("big/File{i:05}.Dat")));
        let wrong = lstat(&m.join(format!("BIG/file{i:05}.DAT")));
        assert_eq!(exact.ino(), wrong.ino(), "{i}");
    }
    for i in 0..50 {
        put(&m.join(format!("big/New{i}")), "n");
        assert_eq!(
            text(&m.join(format!("big/NEW{i}"))),
            "n",
            "after {i} creations"
        );
    }
    fs::remove_file(m.join("big/new7")).unwrap();
    assert_eq!(lstat_errno(&m.join("big/New7")), libc::ENOENT);
    drop(m);
}

/// `sh -c SCRIPT` in `dir`: exit code, stdout and stderr together.
fn sh_out(dir: &Path, script: &str) -> (i32, String) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// `.ciopfs` answers xattr calls like a file without xattrs: `ls -la` shows it
/// without "Permission denied", listxattr is empty, getxattr ENODATA, and
/// setting one fails as on a file that cannot change (EPERM).
#[test]
fn ciopfs_has_no_xattrs_and_refuses_none_to_read() {
    let s = stack("casefold-ciopfs-xattr");
    let m = s.mount_opts(&["casefold"]);
    let (code, out) = sh_out(m.path(), "ls -la .ciopfs Docs/.ciopfs");
    assert_eq!(code, 0, "ls -la .ciopfs: {out}");
    assert!(!out.contains("Permission denied"), "ls -la .ciopfs: {out}");
    let (code, out) = sh_out(m.path(), "getfattr -d -m - .ciopfs; echo rc=$?");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.trim(),
        "rc=0",
        "listxattr of .ciopfs lists nothing: {out}"
    );
    let (_, out) = sh_out(m.path(), "getfattr -n user.x .ciopfs 2>&1; echo rc=$?");
    assert!(
        out.contains("No such attribute"),
        "getxattr: ENODATA, got {out}"
    );
    let (_, out) = sh_out(m.path(), "setfattr -n user.x -v 1 .ciopfs 2>&1; echo rc=$?");
    assert!(
        out.contains("Operation not permitted"),
        "setxattr: EPERM, got {out}"
    );
    let (_, out) = sh_out(m.path(), "setfattr -x user.x .ciopfs 2>&1; echo rc=$?");
    assert!(
        out.contains("No such attribute"),
        "removexattr: ENODATA, got {out}"
    );
    unmount_clean(m);
}

//! Inode numbers and hard links through the FUSE-free engine: hard links of lower
//! files stay one file, a name reused after a whiteout never takes a deleted or
//! linked number, and numbers hold across a remount of an upper without marks.

mod common;
mod engine_support;

use common::*;
use engine_support::*;
use fimfs::union::{Ino, Options, Union};
use std::collections::BTreeMap;

const LINK_RULES: &[Case] = &[
    Case {
        name: "hard link of a lower file: one inode, one st_ino, writes seen through both",
        lowers: &["f a A"],
        upper: Upper::Spec(""),
        ops: &["link a b", "pwrite b 0 Z"],
        tree: "f a Z\nf b Z\n= a b",
        merged: &[""],
        disk: "f a Z\nf b Z\nh a b",
        ..CASE
    },
    Case {
        name: "a new file at a whited-out name does not take the deleted file's st_ino",
        lowers: &["f a old\nf b old"],
        upper: Upper::Spec(""),
        ops: &["unlink a", "create a new", "create tmp new", "rename tmp b"],
        tree: "f a new\nf b new",
        merged: &[""],
        new_ino: &["a", "b"],
        disk: "f a new\nf b new",
        ..CASE
    },
    Case {
        name: "a new file at a whited-out name never shares st_ino with a lower hard link",
        lowers: &["f a A\nH b a"],
        upper: Upper::Spec(""),
        ops: &["unlink b", "create b new"],
        tree: "f a A\nf b new",
        merged: &[""],
        disk: "f b new\n- a",
        ..CASE
    },
    Case {
        name: "hard links inside a renamed merged directory stay one file",
        lowers: &["f d/a A\nf d/x X"],
        upper: Upper::Spec(""),
        ops: &["link d/a d/b", "rename d e", "pwrite e/b 0 Z"],
        tree: "d e\nf e/a Z\nf e/b Z\nf e/x X\n= e/a e/b",
        merged: &[""],
        disk: "w d\nf e/a Z\nf e/b Z\nh e/a e/b",
        ..CASE
    },
    Case {
        name: "a failed directory rename leaves hard links inside it alone",
        lowers: &["f d/a A\nd d/s"],
        upper: Upper::Spec(""),
        ops: &["link d/a d/b", "rename d d/s/x => EINVAL", "pwrite d/b 0 Z"],
        tree: "d d\nf d/a Z\nf d/b Z\nd d/s\n= d/a d/b",
        merged: &["", "d"],
        disk: "f d/a Z\nf d/b Z\nh d/a d/b",
        ..CASE
    },
    Case {
        name: "hard link onto a whiteout",
        lowers: &["f a A\nf b B"],
        upper: Upper::Spec(""),
        ops: &["unlink b", "link a b"],
        tree: "f a A\nf b A\n= a b",
        merged: &[""],
        disk: "f b A\nh a b",
        ..CASE
    },
];

#[test]
fn link_rules() {
    run_table(LINK_RULES);
}

/// The same rules with the lowers packed into DwarFS images.
#[test]
fn link_rules_over_images() {
    run_table_over_images(LINK_RULES);
}

/// The upper carries no mark of fimfs (the kernel overlay would list it), yet
/// numbers hold: a copy-up keeps its lower entry's number in the session and
/// after a remount; a file renamed away keeps its number in the session; a file
/// made at a name a deleted or renamed lower file had takes a fresh number in
/// the session (the kernel may still hold the old one) and, after a remount, the
/// number of the lower entry it hides, which no other live entry has.
#[test]
fn numbers_hold_without_marks_across_a_remount() {
    let fx = Fixture::new(
        "ino-nomark",
        &["f a A\nf b B\nf c C\nf d D\nf e E"],
        Some(""),
        Options::default(),
    );
    let num = |u: &Union, p: &str| -> Ino {
        let mut l = Lookups::new(u);
        let i = l.ino(p).unwrap_or_else(|e| panic!("lookup {p}: {e}"));
        u.getattr(i)
            .unwrap_or_else(|e| panic!("getattr {p}: {e}"))
            .ino
    };
    let u = &fx.union;
    let orig: BTreeMap<&str, Ino> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|p| (*p, num(u, p)))
        .collect();
    for line in [
        "append a Z",
        "chmod b 600",
        "append c Z",
        "rename c moved",
        "unlink d",
        "create d new",
        "create tmp T",
        "rename tmp e",
    ] {
        let (op, want) = parse_op(line);
        assert_eq!(engine_apply(u, &op, true), want, "{line}");
    }
    // Every entry once, distinct numbers (`check_view`).
    let tree = parse_expect("f a AZ\nf b B\nf d new\nf e T\nf moved CZ");
    let mut problems = Vec::new();
    let view = engine_view(u, &mut problems);
    check_view(&view, &tree, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(num(u, "a"), orig["a"], "copy-up by a write");
    assert_eq!(num(u, "b"), orig["b"], "copy-up by chmod");
    assert_eq!(num(u, "moved"), orig["c"], "renamed copy-up, same session");
    for p in ["d", "e"] {
        assert!(
            Ino(view[p].ino) != orig[p],
            "{p}: new file took the deleted one's number"
        );
    }
    let upper = fx.upper();
    for (path, x) in disk_snapshot(upper)
        .iter()
        .flat_map(|(p, e)| e.xattrs.keys().map(move |k| (p.clone(), k.clone())))
    {
        assert!(
            !x.contains("fimfs"),
            "{path}: fimfs wrote {x} into the upper"
        );
    }

    let again = reopen(&fx);
    let mut problems = Vec::new();
    let view2 = engine_view(&again, &mut problems);
    check_view(&view2, &tree, &mut problems);
    assert!(problems.is_empty(), "after a remount: {problems:#?}");
    assert_eq!(view2["a"].ino, view["a"].ino, "a: number after a remount");
    assert_eq!(view2["b"].ino, view["b"].ino, "b: number after a remount");
    assert_eq!(
        Ino(view2["d"].ino),
        orig["d"],
        "d hides the old d: its number"
    );
    assert_eq!(
        Ino(view2["e"].ino),
        orig["e"],
        "e hides the old e: its number"
    );
}

/// A change of attributes goes to the upper inode the kernel holds, as on
/// the kernel overlay, which changes the upper inode it holds: when
/// another file takes the name in the upper behind the mount, a chmod,
/// chown or utimes of the held number changes the held file and leaves the
/// newcomer alone; and a file unlinked while open can still be changed
/// (POSIX `fchmod` of an open, unlinked file).
#[test]
fn attribute_changes_go_to_the_held_upper_file() {
    use fimfs::union::{ROOT_INO, SetAttr};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fx = Fixture::new(
        "ino-held-setattr",
        &["f low L"],
        Some(""),
        Options::default(),
    );
    let u = &fx.union;
    let made = u
        .create(ROOT_INO, b"f", (0o644, libc::O_RDWR), ROOT)
        .expect("create f");
    let ino = made.entry.ino;
    drop(made.opened);
    let up = fx.upper();
    std::fs::write(up.join("newcomer"), b"N").unwrap();
    std::fs::rename(up.join("newcomer"), up.join("f")).unwrap();
    let set = SetAttr {
        mode: Some(0o600),
        mtime: Some((5, 0)),
        ..SetAttr::default()
    };
    let a = u.setattr(ino, set, None).expect("setattr of the held file");
    let five = std::time::UNIX_EPOCH + std::time::Duration::from_secs(5);
    assert_eq!((a.perm, a.mtime), (0o600, five), "{a:?}");
    let newcomer = std::fs::metadata(up.join("f")).unwrap();
    assert_eq!(
        (
            newcomer.permissions().mode() & 0o7777,
            newcomer.mtime() == 5
        ),
        (0o644, false),
        "the file that took the name behind the mount was changed"
    );
    // The held file is unlinked now (the newcomer replaced its name): still
    // changeable, still answering getattr.
    let set = SetAttr {
        uid: Some(1),
        gid: Some(1),
        ..SetAttr::default()
    };
    let a = u.setattr(ino, set, None).expect("chown of the held file");
    assert_eq!((a.uid, a.gid, a.nlink), (1, 1, 0), "{a:?}");
    u.forget(ino, 1);
}

/// A file the kernel holds may lose its last name before the daemon hears
/// of its open (no open requests: the first read or write comes later):
/// a lower file unlinked, a lower file replaced by a rename, and a copied-up
/// file (numbered after its lower) unlinked are still read by number, with
/// their old data and attributes. The first write copies a kept lower file
/// into an anonymous upper file: the name stays gone, and neither the
/// upper nor the workdir gains an entry. Over directories and images.
#[test]
fn an_unlinked_file_is_still_its_number() {
    use fimfs::union::{ROOT_INO, SetAttr};
    let lowers = ["f a A1\nf b B22\nf c C333\nf d D4444"];
    for images in [false, true] {
        let (tag, opts) = ("ino-unlinked", Options::default());
        let fx = match images {
            false => Fixture::new(tag, &lowers, Some(""), opts),
            true => Fixture::over_images(tag, &lowers, Some(""), opts),
        };
        let u = &fx.union;
        let ctx = if images { "images" } else { "directories" };
        let ino = |name: &[u8]| u.lookup(ROOT_INO, name).expect("lookup").ino;
        let (a, b, d) = (ino(b"a"), ino(b"b"), ino(b"d"));
        // d: copied up (it keeps its lower number), then unlinked.
        let set = SetAttr {
            mode: Some(0o640),
            ..SetAttr::default()
        };
        u.setattr(d, set, None).expect("chmod d");
        u.remove(ROOT_INO, b"a", false).expect("unlink a");
        u.rename(ROOT_INO, b"c", ROOT_INO, b"b", 0)
            .expect("rename c over b");
        u.remove(ROOT_INO, b"d", false).expect("unlink d");
        for (n, want) in [(a, "A1"), (b, "B22"), (d, "D4444")] {
            let got = read_through(u, n).map(|v| String::from_utf8_lossy(&v).into_owned());
            assert_eq!(got, Ok(want.to_string()), "{ctx}: read of unlinked {n:?}");
            let attr = u.getattr(n).expect("getattr of an unlinked file");
            assert_eq!(attr.size, want.len() as u64, "{ctx}: {attr:?}");
        }
        let opened = u
            .open(a, libc::O_RDWR)
            .expect("open unlinked a for writing");
        assert!(opened.upper, "{ctx}: a write open is on the upper");
        let fd = opened.file.fd().expect("an upper fd");
        pwrite_all(fd, b"Z", 0).expect("write");
        drop(opened);
        assert_eq!(read_through(u, a), Ok(b"Z1".to_vec()), "{ctx}");
        let set = SetAttr {
            size: Some(0),
            ..SetAttr::default()
        };
        let attr = u.setattr(b, set, None).expect("truncate unlinked b");
        assert_eq!(attr.size, 0, "{ctx}: {attr:?}");
        assert_eq!(read_through(u, b), Ok(Vec::new()), "{ctx}");
        let gone = u.lookup(ROOT_INO, b"a").err();
        assert_eq!(gone, Some(fimfs::sys::Errno::ENOENT), "{ctx}: a is back");
        let mut names: Vec<String> = std::fs::read_dir(fx.upper())
            .expect("upper")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // Whiteouts of a and c (or their `.wh.` files), b the moved c.
        let names: Vec<&str> = names.iter().map(|n| n.trim_start_matches(".wh.")).collect();
        assert_eq!(
            names,
            ["a", "b", "c", "d"],
            "{ctx}: the upper gained a name"
        );
        assert_eq!(fx.workdir_leftovers(), Vec::<String>::new(), "{ctx}");
        let via_b = u.lookup(ROOT_INO, b"b").expect("b");
        assert_eq!(read_through(u, via_b.ino), Ok(b"C333".to_vec()), "{ctx}");
    }
}

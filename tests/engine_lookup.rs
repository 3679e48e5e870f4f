//! Reading through the FUSE-free engine (SPEC §1): lookup, readdir, merged
//! directories, inode numbers, many lowers, lowers known from a listing, the
//! directory fds the nodes keep, and changes made to the upper behind the union.
//! No mount: milliseconds per case.

mod common;
mod engine_support;

use common::*;
use engine_support::*;
use fimfs::union::{Ino, Options};
use std::collections::BTreeSet;
use std::fs;

const READ_RULES: &[Case] = &[
    Case {
        name: "one lower: files, dirs, symlinks, fifo, a real device",
        lowers: &["f a hello\nd b\nf b/c inner\nl s a\np fifo\nc dev\nd empty"],
        tree: "f a hello\nd b\nf b/c inner\nl s a\np fifo\nc dev 1:3\nd empty",
        absent: &["x", "b/x", ".wh.a", "a/x ENOTDIR"],
        ..CASE
    },
    Case {
        name: "the top-most lower wins for a file",
        lowers: &["f a top", "f a bottom\nf b only-bottom"],
        tree: "f a top\nf b only-bottom",
        ..CASE
    },
    Case {
        name: "directories merge across lowers; contents from the top-most",
        lowers: &[
            "f d/a top-a\nf d/x/1 one",
            "f d/a bottom-a\nf d/b bottom-b\nf d/x/2 two",
            "f d/c third\nd d/y",
        ],
        tree: "d d\nf d/a top-a\nf d/b bottom-b\nf d/c third\nd d/x\nf d/x/1 one\nf d/x/2 two\nd d/y",
        merged: &["d", "d/x"],
        ..CASE
    },
    Case {
        name: "a file hides a directory below it",
        lowers: &["f x file", "f x/y deep\nf z/k k"],
        tree: "f x file\nd z\nf z/k k",
        absent: &["x/y ENOTDIR"],
        ..CASE
    },
    Case {
        name: "a directory hides a file below it and is not merged",
        lowers: &["d x\nf x/in in", "f x file"],
        tree: "d x\nf x/in in",
        ..CASE
    },
    Case {
        name: "a symlink hides a directory below and is never merged",
        lowers: &["l d ../elsewhere", "f d/x x"],
        tree: "l d ../elsewhere",
        ..CASE
    },
    Case {
        name: "0/0 character-device whiteouts hide files and directories below",
        lowers: &["w a\nw d\nf keep k", "f a bottom\nf d/x x\nf keep2 k2"],
        tree: "f keep k\nf keep2 k2",
        absent: &["a", "d", "d/x"],
        ..CASE
    },
    Case {
        name: ".wh.NAME whiteouts hide files and directories below",
        lowers: &["W a\nW d\nf other o", "f a bottom\nf d/x x"],
        tree: "f other o",
        absent: &["a", "d", ".wh.a", ".wh.d"],
        ..CASE
    },
    Case {
        name: "a whiteout hides only what is below it",
        lowers: &[
            "f a top\nf d/t t\nf e/1 1",
            "w a\nw d\nw e/3",
            "f a bottom\nf d/b b\nf e/3 3\nf e/2 2",
        ],
        tree: "f a top\nd d\nf d/t t\nd e\nf e/1 1\nf e/2 2",
        absent: &["d/b", "e/3"],
        merged: &["e"],
        ..CASE
    },
    Case {
        name: "xattr whiteouts: lookup always hides them, readdir only below overlay.opaque=x",
        lowers: &[
            "z plain/t trusted.overlay.whiteout\nz plain/u user.overlay.whiteout\n\
                 z marked/t trusted.overlay.whiteout\nz marked/u user.overlay.whiteout\n\
                 f marked/keep k\nf marked/empty\nf marked/big data\n\
                 X marked/big trusted.overlay.whiteout y\nX marked user.overlay.opaque x",
            "f plain/t T\nf plain/u U\nf plain/keep k\nf marked/t T\nf marked/u U\nf marked/low L",
        ],
        tree: "d plain\n? plain/t\n? plain/u\nf plain/keep k\n\
                   d marked\nf marked/keep k\nf marked/empty\nf marked/big data\nf marked/low L",
        absent: &["plain/t", "plain/u", "marked/t", "marked/u"],
        merged: &["plain", "marked"],
        ..CASE
    },
    Case {
        name: "opaque directories, every dialect: nothing below merges in",
        lowers: &[
            "o a\nf a/top t\nO b trusted.overlay.opaque\nf b/top t\n\
                 O c user.overlay.opaque\nf c/top t\nO e user.fuseoverlayfs.opaque\nf e/top t",
            "f a/low l\nf b/low l\nf c/low l\nf e/low l\nf a/top x\nf b/top x",
        ],
        tree: "d a\nf a/top t\nd b\nf b/top t\nd c\nf c/top t\nd e\nf e/top t",
        absent: &["a/low", "b/low", "c/low", "e/low", "a/.wh..wh..opq"],
        ..CASE
    },
    Case {
        name: "an opaque xattr with a value other than y is not opaque",
        lowers: &["f a/top t\nX a user.overlay.opaque n", "f a/low l"],
        tree: "d a\nf a/top t\nf a/low l",
        merged: &["a"],
        ..CASE
    },
    Case {
        name: "an opaque directory in a middle layer cuts off only what is below it",
        lowers: &[
            "f d/a a1",
            "O d user.overlay.opaque\nf d/b b2",
            "f d/c c3\nf d/a a3",
        ],
        tree: "d d\nf d/a a1\nf d/b b2",
        absent: &["d/c"],
        merged: &["d"],
        ..CASE
    },
    Case {
        name: "a whiteout with nothing below it is simply not there",
        lowers: &["w ghost\nW ghost2\nf real r"],
        tree: "f real r",
        absent: &["ghost", "ghost2", ".wh.ghost2"],
        ..CASE
    },
    Case {
        name: "a merged directory whose every entry is whited out lists empty",
        lowers: &["w d/a\nw d/b", "f d/a a\nf d/b b"],
        tree: "d d",
        merged: &["d"],
        ..CASE
    },
    Case {
        name: "hard links inside one lower share one inode number",
        lowers: &["f a same\nH b a\nf c other"],
        tree: "f a same\nf b same\nf c other\n= a b",
        ..CASE
    },
    Case {
        name: "marker names are never looked up",
        lowers: &["o d\nf d/x x\nW foo"],
        tree: "d d\nf d/x x",
        absent: &[".wh.foo", "d/.wh..wh..opq", ".wh..wh..opq"],
        ..CASE
    },
    Case {
        name: "overlay.opaque=x on a lower root: readdir hides xattr whiteouts at the root",
        lowers: &[
            "X . user.overlay.opaque x\nz t trusted.overlay.whiteout\nf k k",
            "f t T",
        ],
        tree: "f k k",
        absent: &["t"],
        merged: &[""],
        ..CASE
    },
    Case {
        name: "user xattrs show, overlay-private ones never",
        lowers: &[
            "f a a\nX a user.color blue\nX a user.overlay.foo bar\nX a trusted.overlay.origin o\n\
                 X a user.fuseoverlayfs.z z\nX a user.fimfs.k v\nX a trusted.other t\n\
                 O d trusted.overlay.opaque\nX d user.overlay.opaque y",
        ],
        ops: &[
            "getxattr a user.color",
            "getxattr a user.overlay.foo => ENODATA",
            "getxattr a trusted.overlay.origin => ENODATA",
            "getxattr a user.fuseoverlayfs.z => ENODATA",
            "getxattr a user.fimfs.k => ENODATA",
            "getxattr d trusted.overlay.opaque => ENODATA",
            "getxattr d user.overlay.opaque => ENODATA",
            "getxattr a user.none => ENODATA",
            "openr a",
            "lookup a",
        ],
        tree: "f a a\nx a user.color blue\nx a trusted.other t\nd d",
        ..CASE
    },
    Case {
        name: "upper: whiteouts, an opaque dir and files over the lowers",
        lowers: &["f gone g\nf over low\nf op/old o\nf d/x x\nf d/l l"],
        upper: Upper::Spec(
            "w gone\nf over up\nO op user.overlay.opaque\nf op/new n\nf d/u u\nw d/x",
        ),
        tree: "f over up\nd op\nf op/new n\nd d\nf d/u u\nf d/l l",
        absent: &["gone", "op/old", "d/x"],
        merged: &["", "d"],
        keep_ino: &["over", "d"],
        disk: "w gone\nf over up\no op\nd d\nw d/x",
        ..CASE
    },
    Case {
        name: "upper: a dir over a lower file, a file over a lower dir",
        lowers: &["f a afile\nf b/deep d"],
        upper: Upper::Spec("d a\nf a/in i\nf b bfile"),
        tree: "d a\nf a/in i\nf b bfile",
        merged: &[""],
        disk: "d a\nf b bfile",
        ..CASE
    },
    Case {
        name: "upper: lower-dialect markers in the upper are read too",
        lowers: &["f a A\nf b B\nf d/x X\nf e/y Y"],
        upper: Upper::Spec(
            "W a\nz b user.overlay.whiteout\no d\nf d/n N\nO e user.fuseoverlayfs.opaque",
        ),
        tree: "? b\nd d\nf d/n N\nd e",
        absent: &["a", "b", "d/x", "e/y"],
        merged: &[""],
        ..CASE
    },
];

#[test]
fn read_rules() {
    run_table(READ_RULES);
}

/// The same rules with the lowers packed into DwarFS images.
#[test]
fn read_rules_over_images() {
    run_table_over_images(READ_RULES);
}

#[test]
fn read_many_lowers() {
    // Twelve lowers, each adding one file to `d` and shadowing `same`; the
    // top-most (first) lower wins.
    let specs: Vec<String> = (0..12)
        .map(|i| format!("f d/f{i:02} {i}\nf same from{i}\nf d/shared s{i}"))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fx = Fixture::new("many", &refs, None, Options::default());
    let mut problems = Vec::new();
    let view = engine_view(&fx.union, &mut problems);
    let mut want = String::from("d d\nf same from0\nf d/shared s0\n");
    for i in 0..12 {
        want.push_str(&format!("f d/f{i:02} {i}\n"));
    }
    check_view(&view, &parse_expect(&want), &mut problems);
    if view.get("d").map(|s| s.nlink) != Some(1) {
        problems.push(format!(
            "d: merged over 12 lowers, nlink {:?}",
            view.get("d").map(|s| s.nlink)
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Once a lower directory has been listed (by a readdir of its merged
/// directory, or after a few misses), names it lacks are answered from
/// memory: every rule must come out as when each layer is probed.
#[test]
fn lowers_known_from_a_listing_resolve_as_probed() {
    let lowers = [
        "f d/a A1\nW d/x\nf d/y Y1",
        "f d/b B2\nf d/x X2\nf d/c C2\nw d/z",
        "f d/x X3\nf d/z Z3\nf d/c C3\nf d/e E3",
    ];
    let want = "d d\nf d/a A1\nf d/y Y1\nf d/b B2\nf d/c C2\nf d/e E3";
    for readdir_first in [false, true] {
        let fx = Fixture::new("listed", &lowers, Some(""), Options::default());
        let u = &fx.union;
        let mut problems = Vec::new();
        let mut l = Lookups::new(u);
        let d = l.ino("d").expect("lookup d");
        if readdir_first {
            let _ = engine_view(u, &mut problems);
        }
        // Enough misses in every lower of `d` to have each one listed.
        for i in 0..8 {
            let name = format!("missing{i}");
            if let Ok(n) = u.lookup(d, name.as_bytes()) {
                u.forget(n.ino, 1);
                problems.push(format!("d/{name} found"));
            }
        }
        for (name, why) in [
            ("x", ".wh. file in the top lower"),
            ("z", "device whiteout"),
        ] {
            if let Ok(n) = u.lookup(d, name.as_bytes()) {
                u.forget(n.ino, 1);
                problems.push(format!("d/{name} found through a {why}"));
            }
        }
        check_view(
            &engine_view(u, &mut problems),
            &parse_expect(want),
            &mut problems,
        );
        assert!(
            problems.is_empty(),
            "readdir first: {readdir_first}\n{}",
            problems.join("\n")
        );
    }
}

/// The layer directories the nodes keep open stay within their budget: over 24
/// lowers whose 10 directories each exist in every lower, with room for 40 fds,
/// every file is found with the top-most content, every listing is whole and a
/// create lands, twice over, while the nodes never hold more than the budget plus
/// the one directory just resolved.
#[test]
fn cached_directory_fds_stay_within_their_budget() {
    const LOWERS: usize = 24;
    const DIRS: usize = 10;
    const BUDGET: usize = 40;
    let specs: Vec<String> = (0..LOWERS)
        .map(|l| {
            let mut spec = String::new();
            for d in 0..DIRS {
                spec += &format!("d a/b{d}\nf a/b{d}/top L{l}\n");
                if (l + d) % 3 == 0 {
                    spec += &format!("f a/b{d}/f{l} L{l}\n");
                }
            }
            spec
        })
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let opts = Options {
        dir_fd_budget: Some(BUDGET),
        ..Options::default()
    };
    let fx = Fixture::new("fdbudget", &refs, Some(""), opts);
    let u = &fx.union;
    let (op, want) = parse_op("create a/b3/new N");
    assert_eq!(engine_apply(u, &op, true), want);
    let mut l = Lookups::new(u);
    for pass in 0..2 {
        for d in 0..DIRS {
            let dir = format!("a/b{d}");
            let mut names: BTreeSet<String> = BTreeSet::from(["top".to_string()]);
            let top = l.ino(&format!("{dir}/top")).expect("top");
            assert_eq!(read_through(u, top), Ok(b"L0".to_vec()), "{dir}/top");
            for lower in (0..LOWERS).filter(|lower| (lower + d) % 3 == 0) {
                let ino = l.ino(&format!("{dir}/f{lower}")).expect("file");
                let want = format!("L{lower}").into_bytes();
                assert_eq!(read_through(u, ino), Ok(want), "{dir}/f{lower}");
                names.insert(format!("f{lower}"));
            }
            if d == 3 {
                names.insert("new".into());
            }
            let node = l.ino(&dir).expect("dir");
            u.opendir(node).expect("opendir");
            let listed: BTreeSet<String> = u
                .list_dir(node)
                .expect("list_dir")
                .into_iter()
                .map(|e| String::from_utf8(e.name).expect("utf-8"))
                .collect();
            assert_eq!(listed, names, "listing of {dir}, pass {pass}");
            let held = u.cached_dir_fds();
            assert!(
                held <= BUDGET + LOWERS + 1,
                "{held} cached directory fds after {dir}, budget {BUDGET}"
            );
        }
    }
    // A lower-only directory whose layers were dropped for fds is opened
    // from one layer opened by path: nothing is cached again (reopening
    // every layer of every directory made a warm `find` over 100 lowers
    // reopen 20,000 directories a pass), and the answer is getattr's.
    let lower_only: Vec<Ino> = (0..DIRS)
        .filter(|&d| d != 3)
        .map(|d| l.ino(&format!("a/b{d}")).expect("dir"))
        .collect();
    let mut opened = Vec::new();
    let mut shed = 0;
    for &ino in &lower_only {
        let was_shed = u.dir_layers_shed(ino).expect("node");
        let a = u.opendir(ino).expect("opendir").attr;
        if was_shed {
            shed += 1;
            assert!(
                u.dir_layers_shed(ino).expect("node"),
                "opendir of shed directory {ino:#x} cached its layers again"
            );
        }
        opened.push(a);
    }
    assert!(
        shed >= DIRS / 2,
        "only {shed} directories were shed: the budget is not tested"
    );
    for (&ino, a) in lower_only.iter().zip(&opened) {
        assert_eq!(
            u.getattr(ino).as_ref(),
            Ok(a),
            "opendir and getattr of {ino:#x}"
        );
    }
    // An upper directory made behind the union under a shed directory's
    // name is still seen.
    let upper = fx.upper.as_ref().expect("upper");
    std::fs::create_dir_all(upper.join("a/b5")).expect("mkdir behind");
    std::fs::write(upper.join("a/b5/behind"), "B").expect("write behind");
    for _ in 0..2 {
        // Shed everything again, then open b5.
        for d in (0..DIRS).filter(|&d| d != 5) {
            u.opendir(l.ino(&format!("a/b{d}")).expect("dir"))
                .expect("opendir");
        }
        let node = l.ino("a/b5").expect("b5");
        u.opendir(node).expect("opendir b5");
        let listed = u.list_dir(node).expect("list b5");
        assert!(
            listed.iter().any(|e| e.name == b"behind"),
            "a/b5 lists what the upper gained behind the union"
        );
    }
}

/// Changes made to the upper behind the union are seen at once (SPEC §7.7).
#[test]
fn upper_changes_behind_the_union_are_seen() {
    let fx = Fixture::new("behind", &["f d/x X\nf a A"], Some(""), Options::default());
    let u = &fx.union;
    // Let the engine cache d's layers (lower only) first.
    let mut problems = Vec::new();
    let mut l = Lookups::new(u);
    l.forget_on_drop = false;
    let d = l.ino("d").expect("lookup d");
    let _ = engine_view(u, &mut problems);
    fs::create_dir_all(fx.upper().join("d")).unwrap();
    fs::write(fx.upper().join("d/new"), "N").unwrap();
    fs::write(fx.upper().join("top"), "T").unwrap();
    build_layer(fx.upper(), "w a");
    let view = engine_view(u, &mut problems);
    check_view(
        &view,
        &parse_expect("d d\nf d/x X\nf d/new N\nf top T"),
        &mut problems,
    );
    match u.lookup(d, b"new") {
        Ok(n) => {
            u.forget(n.ino, 1);
        }
        Err(e) => problems.push(format!("lookup d/new through a node cached before: {e}")),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

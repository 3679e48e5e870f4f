//! Deleting through the FUSE-free engine (SPEC §1-2): which unlink and rmdir
//! write a 0/0 whiteout and which do not, opaque directories made by rm -rf +
//! mkdir or by mkdir over a whited-out name, creating over a whiteout, and the
//! opaque marks a privileged union writes.

mod common;
mod engine_support;

use common::*;
use engine_support::*;
use fimfs::union::Options;

const WHITEOUT_RULES: &[Case] = &[
    Case {
        name: "unlink of a lower-only file writes a 0/0 whiteout",
        lowers: &["f a a\nf b b"],
        upper: Upper::Spec(""),
        ops: &["unlink a"],
        tree: "f b b",
        absent: &["a"],
        merged: &[""],
        disk: "w a\n- b",
        ..CASE
    },
    Case {
        name: "unlink of an upper-only file writes no whiteout",
        lowers: &["f b b"],
        upper: Upper::Spec("f a a"),
        ops: &["unlink a"],
        tree: "f b b",
        disk: "- a",
        merged: &[""],
        ..CASE
    },
    Case {
        name: "unlink of a copied-up file writes a whiteout",
        lowers: &["f a low"],
        upper: Upper::Spec(""),
        ops: &["write a new", "unlink a"],
        tree: "",
        absent: &["a"],
        merged: &[""],
        disk: "w a",
        ..CASE
    },
    Case {
        name: "whether a whiteout is needed is read from the lowers now (three lowers)",
        lowers: &["d d", "f d/x mid", "f d/y bottom"],
        upper: Upper::Spec(""),
        ops: &[
            "chmod d/y 600",
            "unlink d/y",
            "truncate d/x 0",
            "unlink d/x",
        ],
        tree: "d d",
        absent: &["d/x", "d/y"],
        merged: &["", "d"],
        disk: "d d\nw d/x\nw d/y",
        ..CASE
    },
    Case {
        name: "unlink in a lower-only dir copies the dir up (mode, xattrs) first",
        lowers: &["f sub/a a\nf sub/b b\nm sub 750\nX sub user.k v"],
        upper: Upper::Spec(""),
        ops: &["unlink sub/a"],
        tree: "d sub\nf sub/b b\nm sub 750\nx sub user.k v",
        merged: &["", "sub"],
        keep_ino: &["sub", "sub/b"],
        disk: "d sub\nm sub 750\nx sub user.k v\nw sub/a\n- sub/b",
        ..CASE
    },
    Case {
        name: "rmdir of a lower empty dir writes a whiteout",
        lowers: &["d e\nf f f"],
        upper: Upper::Spec(""),
        ops: &["rmdir e"],
        tree: "f f f",
        absent: &["e"],
        merged: &[""],
        disk: "w e",
        ..CASE
    },
    Case {
        name: "rmdir of a dir non-empty through a lower is ENOTEMPTY",
        lowers: &["f d/x x"],
        upper: Upper::Spec("d d"),
        ops: &["rmdir d => ENOTEMPTY"],
        tree: "d d\nf d/x x",
        merged: &["", "d"],
        disk: "d d\n- d/x",
        ..CASE
    },
    Case {
        name: "rmdir of a merged dir empty in the union whites it out",
        lowers: &["f d/x x\nf d/y y"],
        upper: Upper::Spec(""),
        ops: &["unlink d/x", "unlink d/y", "rmdir d"],
        tree: "",
        absent: &["d", "d/x"],
        merged: &[""],
        disk: "w d",
        ..CASE
    },
    Case {
        name: "rmdir of an upper dir holding only whiteouts",
        lowers: &["f d/a A"],
        upper: Upper::Spec("d d\nw d/a"),
        ops: &["rmdir d"],
        tree: "",
        absent: &["d"],
        merged: &[""],
        disk: "w d",
        ..CASE
    },
    Case {
        name: "rmdir of an upper dir holding stale whiteouts, nothing below",
        lowers: &["f other O"],
        upper: Upper::Spec("d d\nw d/a"),
        ops: &["rmdir d"],
        tree: "f other O",
        absent: &["d"],
        merged: &[""],
        disk: "- d",
        ..CASE
    },
    Case {
        name: "rm -rf d; mkdir d gives an empty opaque d",
        lowers: &["f d/a a\nf d/sub/b b", "f d/c c"],
        upper: Upper::Spec(""),
        ops: &[
            "unlink d/a",
            "unlink d/sub/b",
            "rmdir d/sub",
            "unlink d/c",
            "rmdir d",
            "mkdir d",
        ],
        tree: "d d",
        absent: &["d/a", "d/c", "d/sub"],
        merged: &[""],
        disk: "o d\ne d",
        ..CASE
    },
    Case {
        name: "rm -rf d; mkdir d; rmdir d leaves a whiteout again",
        lowers: &["f d/a A"],
        upper: Upper::Spec(""),
        ops: &[
            "unlink d/a",
            "rmdir d",
            "mkdir d",
            "create d/new N",
            "unlink d/new",
            "rmdir d",
        ],
        tree: "",
        absent: &["d"],
        merged: &[""],
        disk: "w d",
        ..CASE
    },
    Case {
        name: "mkdir over a whited-out lower file makes an opaque dir",
        lowers: &["f x file"],
        upper: Upper::Spec(""),
        ops: &["unlink x", "mkdir x"],
        tree: "d x",
        merged: &[""],
        disk: "o x\ne x",
        ..CASE
    },
    Case {
        name: "create over a whiteout replaces it",
        lowers: &["f a old"],
        upper: Upper::Spec(""),
        ops: &["unlink a", "create a new"],
        tree: "f a new",
        merged: &[""],
        disk: "f a new",
        ..CASE
    },
    Case {
        name: "a new dir where no lower has the name is not opaque",
        lowers: &["f d/x X"],
        upper: Upper::Spec(""),
        ops: &[
            "symlink d/s ../x",
            "mkfifo d/p",
            "mkdir d/n",
            "create d/n/f new",
        ],
        tree: "d d\nf d/x X\nl d/s ../x\np d/p\nd d/n\nf d/n/f new",
        merged: &["", "d"],
        disk: "d d\nl d/s ../x\nd d/n\nf d/n/f new\n- d/x",
        ..CASE
    },
    Case {
        name: "no whiteout inside an opaque upper dir",
        lowers: &["f d/x X\nf d/y Y"],
        upper: Upper::Spec("O d user.overlay.opaque\nf d/x up"),
        ops: &["unlink d/x"],
        tree: "d d",
        absent: &["d/x", "d/y"],
        merged: &[""],
        disk: "o d\ne d",
        ..CASE
    },
    Case {
        name: "create in an opaque upper dir over a name only a lower has",
        lowers: &["f d/x X"],
        upper: Upper::Spec("O d user.overlay.opaque"),
        ops: &["create d/x new"],
        tree: "d d\nf d/x new",
        merged: &[""],
        disk: "o d\nf d/x new\nn d",
        ..CASE
    },
    // The cases below were mount tests in mount_write.rs; a mount added nothing
    // to what they assert (the remount is the runner's second engine).
    Case {
        name: "deleting lower entries leaves whiteouts; an upper-only name needs none; a recreated name shows only the new file",
        lowers: &[
            "f shadow top",
            "f gone lower file\nf shadow bottom\nf lonly/inner lower-only dir\nd emptydir",
        ],
        upper: Upper::Spec(""),
        ops: &[
            "unlink gone",
            "unlink shadow",
            "unlink lonly/inner",
            "rmdir emptydir",
            "lookup gone => ENOENT",
            "create fresh x",
            "unlink fresh",
            "create gone again",
        ],
        tree: "f gone again\nd lonly",
        absent: &["shadow", "lonly/inner", "emptydir", "fresh"],
        merged: &["", "lonly"],
        disk: "f gone again\nw shadow\nw lonly/inner\nw emptydir\n- fresh\nd lonly",
        ..CASE
    },
    Case {
        name: "rm -rf of a dir in two lowers, mkdir: empty, opaque, marker hidden, no whiteout needed inside",
        lowers: &[
            "f d/w d/w\nf d/sub/v d/sub/v",
            "f d/x d/x\nf d/sub/y d/sub/y\nf d/sub/deep/z d/sub/deep/z",
        ],
        upper: Upper::Spec(""),
        ops: &[
            "unlink d/w",
            "unlink d/x",
            "unlink d/sub/v",
            "unlink d/sub/y",
            "unlink d/sub/deep/z",
            "rmdir d/sub/deep",
            "rmdir d/sub",
            "rmdir d",
            "lookup d => ENOENT",
            "mkdir d",
            "getxattr d user.overlay.opaque => ENODATA",
            "create d/x new",
            "unlink d/x",
        ],
        tree: "d d",
        absent: &["d/x", "d/sub", "d/w"],
        merged: &[""],
        disk: "o d\ne d",
        ..CASE
    },
    Case {
        name: "rmdir of a merged dir that looks empty writes a whiteout, not a dir of stale whiteouts",
        lowers: &["f d/c c\nf e/only e", "f d/a a\nf d/sub/b b\nf e/other e2"],
        upper: Upper::Spec(""),
        ops: &[
            "rmdir d => ENOTEMPTY",
            "unlink d/a",
            "unlink d/c",
            "unlink d/sub/b",
            "rmdir d/sub",
            "rmdir d",
            "create e/new n",
            "unlink e/new",
            "unlink e/only",
            "unlink e/other",
            "rmdir e",
        ],
        tree: "",
        absent: &["d", "e", "d/a", "e/only"],
        merged: &[""],
        disk: "w d\nw e",
        ..CASE
    },
    Case {
        name: "mkdir over a merged dir emptied and removed gives an empty opaque dir",
        lowers: &["f d/c c\nf e/only e", "f d/a a\nf d/sub/b b\nf e/other e2"],
        upper: Upper::Spec(""),
        ops: &[
            "unlink d/a",
            "unlink d/c",
            "unlink d/sub/b",
            "rmdir d/sub",
            "rmdir d",
            "create e/new n",
            "unlink e/new",
            "unlink e/only",
            "unlink e/other",
            "rmdir e",
            "mkdir e",
        ],
        tree: "d e",
        absent: &["d", "e/only", "e/other", "e/new"],
        merged: &[""],
        disk: "w d\no e\ne e",
        ..CASE
    },
];

#[test]
fn whiteout_rules() {
    run_table(WHITEOUT_RULES);
}

/// The same rules with the lowers packed into DwarFS images.
#[test]
fn whiteout_rules_over_images() {
    run_table_over_images(WHITEOUT_RULES);
}

/// A privileged union also writes `trusted.overlay.opaque=y`, and hides it.
#[test]
fn privileged_union_marks_opaque_in_both_namespaces() {
    let opts = Options {
        privileged: true,
        ..Options::default()
    };
    let fx = Fixture::new("priv", &["f d/a A"], Some(""), opts);
    for line in ["unlink d/a", "rmdir d", "mkdir d", "create d/n N"] {
        let (op, want) = parse_op(line);
        assert_eq!(engine_apply(&fx.union, &op, true), want, "{line}");
    }
    let mut problems = Vec::new();
    let view = engine_view(&fx.union, &mut problems);
    check_view(&view, &parse_expect("d d\nf d/n N"), &mut problems);
    check_upper_format(fx.upper(), None, &mut problems);
    check_disk(
        fx.upper(),
        "o d\nx d trusted.overlay.opaque y\nf d/n N\nn d",
        &mut problems,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Delete/recreate cycles over three lowers never bring a lower entry back: after
/// every step the merged listing is what it should be, and after every other step
/// a second engine over the same layers (a remount) shows it too. Was the mount
/// test `mount_write::delete_recreate_cycles_never_bring_lower_entries_back`.
#[test]
fn delete_recreate_cycles_never_bring_lower_entries_back() {
    let fx = Fixture::new(
        "cycles",
        &[
            "f c/a/w w1\nf c/a/b/v v1\nf c/q q1",
            "f c/a/m m2\nf c/a/b/n n2\nf c/k k2",
            "f c/a/x x3\nf c/a/b/y y3\nf c/z z3\nf c/a/b/deep/q q3",
        ],
        Some(""),
        Options::default(),
    );
    let lowers_before: Vec<_> = fx.lowers.iter().map(|p| disk_snapshot(p)).collect();
    let lower_files = "f c/k k2\nf c/q q1\nf c/z z3";
    #[rustfmt::skip]
    let steps: &[(&str, &[&str], String)] = &[
        ("rm -rf c/a; mkdir c/a", &[
            "unlink c/a/w", "unlink c/a/m", "unlink c/a/x", "unlink c/a/b/v", "unlink c/a/b/n",
            "unlink c/a/b/y", "unlink c/a/b/deep/q", "rmdir c/a/b/deep", "rmdir c/a/b",
            "rmdir c/a", "mkdir c/a",
        ], format!("d c\nd c/a\n{lower_files}")),
        ("mkdir c/a/b", &["mkdir c/a/b"], format!("d c\nd c/a\nd c/a/b\n{lower_files}")),
        ("touch c/a/b/y; rm c/a/b/y", &["create c/a/b/y", "unlink c/a/b/y"],
            format!("d c\nd c/a\nd c/a/b\n{lower_files}")),
        ("rm -rf c; mkdir -p c/a", &[
            "rmdir c/a/b", "rmdir c/a", "unlink c/k", "unlink c/q", "unlink c/z", "rmdir c",
            "mkdir c", "mkdir c/a",
        ], "d c\nd c/a".into()),
        ("rmdir c/a; mkdir c/a; mkdir c/a/b", &["rmdir c/a", "mkdir c/a", "mkdir c/a/b"],
            "d c\nd c/a\nd c/a/b".into()),
        ("rm -rf c/a; rmdir c; mkdir c; echo > c/z", &[
            "rmdir c/a/b", "rmdir c/a", "rmdir c", "mkdir c", "create c/z new",
        ], "d c\nf c/z new".into()),
    ];
    let mut problems = Vec::new();
    for (i, (what, ops, tree)) in steps.iter().enumerate() {
        for line in *ops {
            let (op, want) = parse_op(line);
            let got = engine_apply(&fx.union, &op, true);
            if got != want {
                problems.push(format!("{what}: op {line:?}: got {got:?}, want {want:?}"));
            }
        }
        let mut seen = vec![("the engine that made the changes", &fx.union)];
        let fresh = reopen(&fx);
        if i % 2 == 1 {
            seen.push(("a second engine", &fresh));
        }
        for (who, u) in seen {
            let mut found = Vec::new();
            check_view(&engine_view(u, &mut found), &parse_expect(tree), &mut found);
            problems.extend(found.into_iter().map(|p| format!("{what}, {who}: {p}")));
        }
    }
    // The final upper: c is opaque and holds only z.
    check_disk(fx.upper(), "o c\nf c/z new\n- c/a\nn c", &mut problems);
    for line in ["unlink c/z", "rmdir c"] {
        let (op, want) = parse_op(line);
        assert_eq!(engine_apply(&fx.union, &op, true), want, "{line}");
    }
    check_disk(fx.upper(), "w c", &mut problems);
    for u in [&fx.union, &reopen(&fx)] {
        check_view(
            &engine_view(u, &mut problems),
            &parse_expect(""),
            &mut problems,
        );
    }
    check_upper_format(fx.upper(), None, &mut problems);
    for (p, before) in fx.lowers.iter().zip(lowers_before) {
        assert!(disk_snapshot(p) == before, "lower {} changed", p.display());
    }
    assert!(
        fx.workdir_leftovers().is_empty(),
        "{:?}",
        fx.workdir_leftovers()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

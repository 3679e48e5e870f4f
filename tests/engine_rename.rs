//! Renames through the FUSE-free engine: files, upper, lower and merged
//! directories, `RENAME_NOREPLACE` and `RENAME_EXCHANGE`, and what each leaves in
//! the upper.

mod common;
mod engine_support;

use engine_support::*;

const RENAME_RULES: &[Case] = &[
    Case {
        name: "rename of a lower file leaves a whiteout",
        lowers: &["f a A"],
        upper: Upper::Spec(""),
        ops: &["rename a b"],
        tree: "f b A",
        absent: &["a"],
        merged: &[""],
        disk: "w a\nf b A",
        ..CASE
    },
    Case {
        name: "rename of an upper-only file leaves no whiteout",
        lowers: &["f x x"],
        upper: Upper::Spec("f a A"),
        ops: &["rename a b"],
        tree: "f b A\nf x x",
        merged: &[""],
        disk: "- a\nf b A",
        ..CASE
    },
    Case {
        name: "rename of a file over a lower file",
        lowers: &["f a A\nf b B"],
        upper: Upper::Spec(""),
        ops: &["rename a b"],
        tree: "f b A",
        merged: &[""],
        disk: "w a\nf b A",
        ..CASE
    },
    Case {
        name: "rename of a file onto a whiteout",
        lowers: &["f a A\nf b B"],
        upper: Upper::Spec(""),
        ops: &["unlink b", "rename a b"],
        tree: "f b A",
        merged: &[""],
        disk: "w a\nf b A",
        ..CASE
    },
    Case {
        name: "rename within a lower-only directory",
        lowers: &["f s/a A\nf s/b B"],
        upper: Upper::Spec(""),
        ops: &["rename s/a s/c"],
        tree: "d s\nf s/b B\nf s/c A",
        merged: &["", "s"],
        disk: "d s\nw s/a\nf s/c A\n- s/b",
        ..CASE
    },
    Case {
        name: "rename of a merged directory brings every file along and whites out the source",
        lowers: &[
            "f d/a A1\nf d/sub/x X\nl d/link a",
            "f d/a A2\nf d/b B\nf d/gone G\nf d/sub/y Y",
        ],
        upper: Upper::Spec("f d/u U\nw d/gone"),
        ops: &["rename d e"],
        tree: "d e\nf e/a A1\nf e/b B\nf e/u U\nd e/sub\nf e/sub/x X\nf e/sub/y Y\nl e/link a",
        absent: &["d", "e/gone", "d/a"],
        merged: &[""],
        disk: "w d\nD e\nf e/a A1\nf e/b B\nf e/u U\nD e/sub\nf e/sub/x X\nf e/sub/y Y\nl e/link a\nn e",
        ..CASE
    },
    Case {
        name: "rename of a lower-only directory",
        lowers: &["f d/a A\nf d/s/b B\nm d 750"],
        upper: Upper::Spec(""),
        ops: &["rename d e"],
        tree: "d e\nm e 750\nf e/a A\nd e/s\nf e/s/b B",
        absent: &["d"],
        merged: &[""],
        disk: "w d\nD e\nm e 750\nf e/a A\nD e/s\nf e/s/b B",
        ..CASE
    },
    Case {
        name: "rename of a lower directory into another lower directory",
        lowers: &["f d/a A\nd t\nf t/k K"],
        upper: Upper::Spec(""),
        ops: &["rename d t/d"],
        tree: "d t\nf t/k K\nd t/d\nf t/d/a A",
        absent: &["d"],
        merged: &["", "t"],
        disk: "w d\nd t\nD t/d\nf t/d/a A",
        ..CASE
    },
    Case {
        name: "rename of a dir onto a removed lower dir: no resurrection of its files",
        lowers: &["f x/old O\nf y/new N"],
        upper: Upper::Spec(""),
        ops: &["unlink x/old", "rmdir x", "rename y x"],
        tree: "d x\nf x/new N",
        absent: &["x/old", "y"],
        merged: &[""],
        disk: "o x\nf x/new N\nw y",
        ..CASE
    },
    Case {
        name: "rename of a dir over a dir empty in the union: nothing of the target leaks",
        lowers: &["f src/s S\nf dst/hidden H"],
        upper: Upper::Spec(""),
        ops: &["unlink dst/hidden", "rename src dst"],
        tree: "d dst\nf dst/s S",
        absent: &["dst/hidden", "src"],
        merged: &[""],
        disk: "o dst\nf dst/s S\nn dst\nw src",
        ..CASE
    },
    Case {
        name: "rename of an upper dir over a lower dir empty in the union",
        lowers: &["f dst/hidden H"],
        upper: Upper::Spec("f src/s S\nd dst\nw dst/hidden"),
        ops: &["rename src dst"],
        tree: "d dst\nf dst/s S",
        absent: &["dst/hidden", "src"],
        merged: &[""],
        disk: "o dst\nf dst/s S\nn dst\n- src",
        ..CASE
    },
    Case {
        name: "RENAME_NOREPLACE onto an existing name is EEXIST and copies nothing up",
        lowers: &["f a A\nf b B\nd d\nf d/x X"],
        upper: Upper::Spec("f u U"),
        ops: &[
            "rename a b noreplace => EEXIST",
            "rename a u noreplace => EEXIST",
            "rename d b noreplace => EEXIST",
            "rename a c noreplace",
        ],
        tree: "f b B\nf c A\nd d\nf d/x X\nf u U",
        merged: &[""],
        disk: "w a\n- b\nf c A\n- d\nf u U",
        ..CASE
    },
    Case {
        name: "rename of a dir over a non-empty dir is ENOTEMPTY, even when only a lower fills it",
        lowers: &["d s\nf t/x X\nf v/y Y"],
        upper: Upper::Spec("d t"),
        ops: &["rename s t => ENOTEMPTY", "rename s v => ENOTEMPTY"],
        tree: "d s\nd t\nf t/x X\nd v\nf v/y Y",
        merged: &["", "t"],
        disk: "d t\n- s\n- v",
        ..CASE
    },
    Case {
        name: "rename file over dir is EISDIR, dir over file ENOTDIR",
        lowers: &["f f F\nd e"],
        upper: Upper::Spec(""),
        ops: &["rename f e => EISDIR", "rename e f => ENOTDIR"],
        tree: "f f F\nd e",
        merged: &[""],
        disk: "- f\n- e",
        ..CASE
    },
    Case {
        name: "rename of a dir into its own subdirectory is EINVAL",
        lowers: &["d a/b"],
        upper: Upper::Spec(""),
        ops: &["rename a a/b/c => EINVAL"],
        tree: "d a\nd a/b",
        merged: &[""],
        ..CASE
    },
    Case {
        name: "rename into its own subtree is EINVAL, onto its own ancestor ENOTEMPTY, before type errors",
        lowers: &["f d/b/f F\nd d/e"],
        upper: Upper::Spec(""),
        ops: &[
            "rename d d/e => EINVAL",
            "rename d d/b/f => EINVAL",
            "rename d d/b/new => EINVAL",
            "rename d/b/f d => ENOTEMPTY",
            "rename d/b/f d/b => ENOTEMPTY",
            "rename d/b d => ENOTEMPTY",
        ],
        tree: "d d\nd d/b\nf d/b/f F\nd d/e",
        ..CASE
    },
    Case {
        name: "rename onto itself changes nothing",
        lowers: &["f a A\nd d"],
        upper: Upper::Spec(""),
        ops: &["rename a a", "rename d d"],
        tree: "f a A\nd d",
        merged: &[""],
        keep_ino: &["a", "d"],
        disk: "- a\n- d",
        ..CASE
    },
    Case {
        name: "RENAME_EXCHANGE of a lower file and an upper file",
        lowers: &["f a A"],
        upper: Upper::Spec("f b B"),
        ops: &["rename a b exchange"],
        tree: "f a B\nf b A",
        merged: &[""],
        disk: "f a B\nf b A",
        ..CASE
    },
    Case {
        name: "RENAME_EXCHANGE of two dirs, one merged: no lower contents leak into either",
        lowers: &["f a/x X\nf b/y Y"],
        upper: Upper::Spec("f a/u U"),
        ops: &["rename a b exchange"],
        tree: "d a\nf a/y Y\nd b\nf b/x X\nf b/u U",
        merged: &[""],
        disk: "D a\nD b",
        ..CASE
    },
    Case {
        name: "RENAME_EXCHANGE with a missing target is ENOENT",
        lowers: &["f a A"],
        upper: Upper::Spec(""),
        ops: &["rename a b exchange => ENOENT"],
        tree: "f a A",
        merged: &[""],
        disk: "- a",
        ..CASE
    },
    Case {
        name: "rename of a file whose name is then recreated: the old lower stays hidden",
        lowers: &["f a A"],
        upper: Upper::Spec(""),
        ops: &["rename a b", "create a new", "rename a c", "unlink b"],
        tree: "f c new",
        absent: &["a", "b"],
        merged: &[""],
        disk: "w a\n- b\nf c new",
        ..CASE
    },
];

#[test]
fn rename_rules() {
    run_table(RENAME_RULES);
}

/// The same rules with the lowers packed into DwarFS images.
#[test]
fn rename_rules_over_images() {
    run_table_over_images(RENAME_RULES);
}

//! Copy-up through the FUSE-free engine (SPEC §2): what a write, chmod, utime,
//! chown or xattr change copies up (mode, owner, mtime, xattrs, contents and
//! `st_ino` kept; parents first), and what a refused change does not copy.

mod common;
mod engine_support;

use engine_support::*;

const COPY_UP_RULES: &[Case] = &[
    Case {
        name: "copy-up keeps mode, owner, mtime, xattrs, contents and st_ino",
        lowers: &["f a hello\nm a 640\nu a 1234 5678\nX a user.k v\nt a 1000000"],
        upper: Upper::Spec(""),
        ops: &["setxattr a user.new n"],
        tree: "f a hello\nm a 640\nx a user.k v\nx a user.new n",
        merged: &[""],
        keep_ino: &["a"],
        disk: "f a hello\nm a 640\nu a 1234 5678\nx a user.k v\nx a user.new n\nt a 1000000",
        ..CASE
    },
    Case {
        name: "copy-up on open for write keeps the data; the lower is untouched",
        lowers: &["f a hello\nf b abcdef\nf c data\nf e keep"],
        upper: Upper::Spec(""),
        ops: &["pwrite a 0 J", "truncate b 3", "opentrunc c", "openrw e"],
        tree: "f a Jello\nf b abc\nf c\nf e keep",
        merged: &[""],
        keep_ino: &["a", "b", "c", "e"],
        disk: "f a Jello\nf b abc\nf c \nf e keep",
        ..CASE
    },
    Case {
        name: "chmod, utime and chown copy up and keep contents and st_ino",
        lowers: &["f a data\nt a 1000\nl s target"],
        upper: Upper::Spec(""),
        ops: &[
            "chmod a 600",
            "utime a 2000",
            "chown a 42 43",
            "chown s 7 8",
        ],
        tree: "f a data\nm a 600\nl s target",
        merged: &[""],
        keep_ino: &["a", "s"],
        disk: "f a data\nm a 600\nt a 2000\nu a 42 43\nl s target\nu s 7 8",
        ..CASE
    },
    Case {
        name: "chmod, utime and chown of directories: upper-only, lower-only, merged",
        lowers: &["d low\nf m/x X"],
        upper: Upper::Spec("d up\nd m"),
        ops: &[
            "chmod up 700",
            "chmod low 700",
            "chmod m 700",
            "utime up 3000",
            "utime low 3000",
            "chown m 5 6",
        ],
        tree: "d low\nm low 700\nd m\nm m 700\nf m/x X\nd up\nm up 700",
        merged: &["", "m", "low"],
        keep_ino: &["low", "m", "up"],
        disk: "d up\nm up 700\nt up 3000\nd low\nm low 700\nt low 3000\nd m\nm m 700\nu m 5 6",
        ..CASE
    },
    Case {
        name: "a deep copy-up copies the parents first, keeping their modes",
        lowers: &["f p/q/r/file x\nm p/q 700\nm p 711"],
        upper: Upper::Spec(""),
        ops: &["chmod p/q/r/file 600"],
        tree: "d p\nm p 711\nd p/q\nm p/q 700\nd p/q/r\nf p/q/r/file x\nm p/q/r/file 600",
        merged: &["", "p", "p/q", "p/q/r"],
        keep_ino: &["p", "p/q", "p/q/r", "p/q/r/file"],
        disk: "d p\nm p 711\nd p/q\nm p/q 700\nd p/q/r\nf p/q/r/file x\nm p/q/r/file 600",
        ..CASE
    },
    Case {
        name: "user xattrs: set copies up, remove works, a missing one is ENODATA without copy-up",
        lowers: &["f a A\nX a user.k v\nf b B"],
        upper: Upper::Spec(""),
        ops: &[
            "removexattr b user.none => ENODATA",
            "removexattr a user.k",
            "setxattr a user.n 1",
        ],
        tree: "f a A\nx a user.n 1\nf b B",
        merged: &[""],
        disk: "f a A\nx a user.n 1\n- b",
        ..CASE
    },
    Case {
        name: "private xattrs are refused (EPERM) and hidden; refusing copies nothing up",
        lowers: &["f a A\nX a user.k v\nO d user.overlay.opaque\nf d/x X"],
        upper: Upper::Spec("O u user.overlay.opaque\nX u trusted.overlay.opaque y"),
        ops: &[
            "setxattr a user.overlay.opaque y => EPERM",
            "setxattr a trusted.overlay.whiteout y => EPERM",
            "setxattr a user.fuseoverlayfs.opaque y => EPERM",
            "setxattr a trusted.overlay.redirect /x => EPERM",
            "setxattr a user.fimfs.layer 1 => EPERM",
            "removexattr d user.overlay.opaque => EPERM",
            "removexattr u user.overlay.opaque => EPERM",
            "getxattr d user.overlay.opaque => ENODATA",
            "getxattr u trusted.overlay.opaque => ENODATA",
            "getxattr u user.overlay.opaque => ENODATA",
            "getxattr a user.k",
        ],
        tree: "f a A\nx a user.k v\nd d\nf d/x X\nd u",
        merged: &[""],
        disk: "- a\n- d\no u",
        ..CASE
    },
];

#[test]
fn copy_up_rules() {
    run_table(COPY_UP_RULES);
}

/// The same rules with the lowers packed into DwarFS images.
#[test]
fn copy_up_rules_over_images() {
    run_table_over_images(COPY_UP_RULES);
}

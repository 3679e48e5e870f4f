//! Making names through the FUSE-free engine: names the union reserves
//! (`.wh.*`), device nodes that would read as whiteouts, the errno of each
//! refused namespace operation, and a union without an upper refusing every
//! mutation.

mod common;
mod engine_support;

use engine_support::*;

const CREATE_RULES: &[Case] = &[
    Case {
        name: "a stale whiteout where nothing below has the name is replaced by a new entry",
        lowers: &["f other o"],
        upper: Upper::Spec("d up\nw up/x\nw up/y\nw up/z\nf up/taken t"),
        ops: &[
            "create up/x hello",
            "mkdir up/y",
            "symlink up/z target",
            "create up/taken => EEXIST",
            "create up/new fresh",
        ],
        tree: "f other o\nd up\nf up/x hello\nd up/y\nl up/z target\nf up/taken t\nf up/new fresh",
        disk: "d up\nf up/x hello\no up/y\nl up/z target\nf up/taken t\nf up/new fresh",
        ..CASE
    },
    Case {
        name: "names starting with .wh. cannot be created",
        lowers: &["f a A\nd dir"],
        upper: Upper::Spec(""),
        ops: &[
            "create .wh.x => EPERM",
            "mkdir .wh.y => EPERM",
            "symlink .wh.z t => EPERM",
            "mkfifo .wh.p => EPERM",
            "mkdir .wh..wh..opq => EPERM",
            "create dir/.wh.a => EPERM",
            "create dir/.wh..wh..opq => EPERM",
            "rename a .wh.a => EPERM",
            "link a .wh.l => EPERM",
        ],
        tree: "f a A\nd dir",
        merged: &[""],
        disk: "- a\n- dir",
        ..CASE
    },
    Case {
        name: "mknod of a 0/0 character device (a whiteout) is refused; other devices are made",
        lowers: &["f w lower"],
        upper: Upper::Spec(""),
        ops: &[
            "mkchr x 0 0 => EPERM",
            "mkchr w 0 0 => EEXIST",
            "mkchr n 1 3",
        ],
        tree: "f w lower\nc n 1:3",
        absent: &["x"],
        merged: &[""],
        disk: "- x\n- w",
        ..CASE
    },
    Case {
        name: "errors: unlink of a dir EISDIR, rmdir of a file ENOTDIR, existing names EEXIST",
        lowers: &["d d\nf f F"],
        upper: Upper::Spec(""),
        ops: &[
            "unlink d => EISDIR",
            "rmdir f => ENOTDIR",
            "unlink nope => ENOENT",
            "rmdir nope => ENOENT",
            "rename nope x => ENOENT",
            "mkdir d => EEXIST",
            "mkdir f => EEXIST",
            "create f x => EEXIST",
            "symlink f t => EEXIST",
            "mkfifo d => EEXIST",
            "link f d => EEXIST",
        ],
        tree: "d d\nf f F",
        merged: &[""],
        disk: "- d\n- f",
        ..CASE
    },
    // Was mount_write.rs's mknod_of_a_whiteout_device_is_refused.
    Case {
        name: "mknod of a 0/0 device is refused in a lower-only dir and at the root, and writes nothing",
        lowers: &["f d/x x"],
        upper: Upper::Spec(""),
        ops: &[
            "mkchr d/wh 0 0 => EPERM",
            "mkchr d/x 0 0 => EEXIST",
            "mkchr top 0 0 => EPERM",
        ],
        tree: "d d\nf d/x x",
        absent: &["d/wh", "top"],
        merged: &[""],
        disk: "- d\n- top",
        ..CASE
    },
];

#[test]
fn create_rules() {
    run_table(CREATE_RULES);
}

/// The same rules with the lowers packed into DwarFS images.
#[test]
fn create_rules_over_images() {
    run_table_over_images(CREATE_RULES);
}

/// Every mutation of a union without an upper fails with EROFS (private xattr
/// names with EPERM), and nothing changes.
#[test]
fn read_only_union_refuses_every_mutation() {
    run_table(&[Case {
        name: "read-only union",
        lowers: &["f a A\nX a user.k v\nd d\nf d/x X\nd empty\nl s a"],
        upper: Upper::None,
        ops: &[
            "mkdir n => EROFS",
            "mkdir d/n => EROFS",
            "create n => EROFS",
            "symlink n t => EROFS",
            "mkfifo n => EROFS",
            "unlink a => EROFS",
            "unlink d/x => EROFS",
            "unlink s => EROFS",
            "rmdir empty => EROFS",
            "rename a b => EROFS",
            "rename d e => EROFS",
            "rename a d/x exchange => EROFS",
            "link a l => EROFS",
            "write a x => EROFS",
            "append a x => EROFS",
            "pwrite a 0 x => EROFS",
            "openw a => EROFS",
            "openrw a => EROFS",
            "opentrunc a => EROFS",
            "truncate a 0 => EROFS",
            "chmod a 600 => EROFS",
            "chmod d 700 => EROFS",
            "utime a 5 => EROFS",
            "chown a 1 1 => EROFS",
            "setxattr a user.x y => EROFS",
            "removexattr a user.k => EROFS",
            "setxattr a user.overlay.opaque y => EPERM",
            "openr a",
            "getxattr a user.k",
        ],
        tree: "f a A\nx a user.k v\nd d\nf d/x X\nd empty\nl s a",
        ..CASE
    }]);
}

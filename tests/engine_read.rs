//! The union rules that `tests/mount_read.rs` used to check through a mount,
//! over the sample layer set of `fixtures/layers.manifest`, checked on the
//! engine instead: the merged listing, opaque directories of every dialect,
//! whiteouts of every dialect, type clashes, contents from every layer, the
//! attributes and link counts of merged directories, modes and special files,
//! distinct inode numbers, which xattrs show and which can be set. The table
//! runner adds its own checks to each (d_ino == st_ino, stable numbers, lowers
//! untouched, reads never write the upper, a remount sees the same).
//!
//! What only a mount shows stays in `mount_read.rs`: what readdirplus drops,
//! the kernel resolving symlinks, numbers after `drop_caches`, getdents'
//! `d_ino`, non-UTF-8 names, the read-only mount flag, statfs, the xattr size
//! protocol, the SELinux label, exec, and the daemon's life cycle.
//! `fixtures/layers.manifest` spells the same layers for `build.sh`; the one
//! entry the fixture language cannot spell (the non-UTF-8 name) is left to
//! the mount test.

mod common;
mod engine_support;

use engine_support::*;

/// lower1 of the sample set (top-most).
const LOWER1: &str = "
f shadow.txt shadow.txt from lower1
f merged/from1 only in lower1
f merged/sub/a merged/sub/a from lower1
w gone-chr
W gone-wh
z gone-tx trusted.overlay.whiteout
f revived revived from lower1, above the whiteout
f stray/kept kept
w stray/nothing-below
O opq-trusted trusted.overlay.opaque
f opq-trusted/visible visible: lower1 marks the directory opaque
f opq-user/top lower1 is above the opaque marker: merged
f opq-wh/top lower1 is above the opaque marker: merged
f clash a file in lower1 hides the directory below
f dirwins/x dirwins/x from lower1
l links/rel ../merged/from3
f bin/hello.sh echo hello from fimfs
m bin/hello.sh 755
";

const LOWER2: &str = "
f shadow.txt shadow.txt from lower2
f merged/from2 only in lower2
f merged/common merged/common from lower2
z merged/gone-ux user.overlay.whiteout
f gone-chr hidden by a 0/0 char device in lower1
f gone-tx hidden by a trusted.overlay.whiteout file in lower1
w deadtree
w revived
O opq-user user.overlay.opaque
f opq-user/mid lower2 carries user.overlay.opaque=y
o opq-wh
f opq-wh/mid lower2 carries .wh..wh..opq
f clash/under hidden: its directory is hidden by a file
f dirwins hidden by lower1's directory
l links/passwd /etc/passwd
l links/dangling does/not/exist
f names/ReadMe.TXT mixed-case name
f xattr/tagged carries user.demo=hello
X xattr/tagged user.demo hello
X xattr user.dirtag from-lower2
f empty
d emptydir
p fifo
";

/// lower3 (bottom-most).
const LOWER3: &str = "
f shadow.txt shadow.txt from lower3
f merged/from3 only in lower3
f merged/common merged/common from lower3
f merged/sub/b merged/sub/b from lower3
f merged/gone-ux hidden by a user.overlay.whiteout file in lower2
m merged 700
f gone-wh hidden by lower1/.wh.gone-wh
f deadtree/inside hidden with its directory
f revived revived from lower3 (hidden)
f opq-trusted/hidden3 hidden below the opaque lower1 directory
f opq-user/hidden hidden below the opaque lower2 directory
f opq-wh/hidden hidden below the opaque lower2 directory
f dirwins/y hidden: lower2's file ends the merge
l links/up ../../..
f names/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn.txt 255-byte name
f xattr/below lower3's part of a merged directory
X xattr user.dirtag from-lower3
f readonly.txt a 0444 file
m readonly.txt 444
f private.txt a 0600 file
m private.txt 600
c devices/null
m devices/null 666
m devices 555
";

const SAMPLE: &[&str] = &[LOWER1, LOWER2, LOWER3];

/// The merged view of the sample set. `?`: listed by the engine, not found by
/// lookup (an xattr whiteout outside an `overlay.opaque=x` directory; a mount
/// drops it from readdirplus, see `mount_read::no_marker_is_ever_listed`).
macro_rules! sample_tree {
    () => {
        "
f shadow.txt shadow.txt from lower1
d merged
m merged 755
f merged/from1 only in lower1
f merged/from2 only in lower2
f merged/from3 only in lower3
f merged/common merged/common from lower2
d merged/sub
f merged/sub/a merged/sub/a from lower1
f merged/sub/b merged/sub/b from lower3
? merged/gone-ux
? gone-tx
f revived revived from lower1, above the whiteout
d stray
f stray/kept kept
d opq-trusted
f opq-trusted/visible visible: lower1 marks the directory opaque
d opq-user
f opq-user/top lower1 is above the opaque marker: merged
f opq-user/mid lower2 carries user.overlay.opaque=y
d opq-wh
f opq-wh/top lower1 is above the opaque marker: merged
f opq-wh/mid lower2 carries .wh..wh..opq
f clash a file in lower1 hides the directory below
d dirwins
f dirwins/x dirwins/x from lower1
d links
l links/rel ../merged/from3
l links/passwd /etc/passwd
l links/dangling does/not/exist
l links/up ../../..
d names
f names/ReadMe.TXT mixed-case name
f names/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn.txt 255-byte name
d xattr
x xattr user.dirtag from-lower2
f xattr/tagged carries user.demo=hello
x xattr/tagged user.demo hello
f xattr/below lower3's part of a merged directory
d bin
f bin/hello.sh echo hello from fimfs
m bin/hello.sh 755
f readonly.txt a 0444 file
m readonly.txt 444
f private.txt a 0600 file
m private.txt 600
f empty
d emptydir
p fifo
m fifo 644
d devices
m devices 555
c devices/null 1:3
m devices/null 666
"
    };
}

/// Lookups that must fail; `names/readme.txt`: no case-folding unless asked for.
const ABSENT: &[&str] = &[
    "gone-chr",
    "gone-wh",
    "gone-tx",
    "merged/gone-ux",
    "deadtree",
    "deadtree/inside",
    "dirwins/y",
    "stray/nothing-below",
    ".wh.gone-wh",
    "opq-wh/.wh..wh..opq",
    "opq-trusted/hidden2",
    "opq-trusted/hidden3",
    "opq-user/hidden",
    "opq-wh/hidden",
    "clash/under ENOTDIR",
    "names/readme.txt",
];

/// Directories in more than one lower: `st_nlink` 1. The others (`stray`,
/// `opq-trusted`, `dirwins`, `bin`, `devices`, `emptydir`) report at least 2.
const MERGED: &[&str] = &[
    "",
    "merged",
    "merged/sub",
    "links",
    "names",
    "opq-user",
    "opq-wh",
    "xattr",
];

/// Formerly mount_read's merged_directories_list_each_name_once,
/// opaque_directories_hide_what_is_below, whited_out_and_marker_names_give_enoent,
/// shadowed_files_read_the_top_layer, files_from_every_layer_open_and_read,
/// distinct_files_have_distinct_inodes and merged_directories_have_one_link,
/// the modes of special_files_keep_their_type_and_mode and the per-entry
/// rules of user_xattrs_are_shown_and_overlay_xattrs_never.
#[test]
fn sample_layer_set() {
    run_table(&[Case {
        name: "the sample layer set of fixtures/layers.manifest",
        lowers: SAMPLE,
        ops: &[
            "getxattr xattr/tagged user.demo",
            "getxattr xattr user.dirtag",
            "getxattr opq-trusted trusted.overlay.opaque => ENODATA",
            "getxattr opq-user user.overlay.opaque => ENODATA",
            "getxattr opq-wh trusted.overlay.opaque => ENODATA",
            "getxattr merged/from1 user.demo => ENODATA",
        ],
        tree: sample_tree!(),
        absent: ABSENT,
        merged: MERGED,
        ..CASE
    }]);
}

/// Formerly mount_read's overlay_xattrs_cannot_be_set_through_the_mount:
/// overlay-private names are refused on directories and files alike, and
/// refusing them changes nothing; an ordinary name is set (copying up).
#[test]
fn overlay_xattrs_cannot_be_set_ordinary_ones_can() {
    run_table(&[Case {
        name: "setxattr over the sample layer set",
        lowers: SAMPLE,
        upper: Upper::Spec(""),
        ops: &[
            "setxattr opq-wh trusted.overlay.opaque y => EPERM",
            "setxattr merged user.overlay.opaque y => EPERM",
            "setxattr shadow.txt user.overlay.whiteout y => EPERM",
            "setxattr shadow.txt trusted.overlay.redirect y => EPERM",
            "setxattr shadow.txt user.test 1",
            "getxattr shadow.txt user.test",
        ],
        tree: concat!(sample_tree!(), "x shadow.txt user.test 1\n"),
        absent: ABSENT,
        merged: MERGED,
        disk: "f shadow.txt shadow.txt from lower1\nx shadow.txt user.test 1",
        ..CASE
    }]);
}

//! The engine over DwarFS image lowers, without a mount: what the kernel
//! holds of an image costs no node (`union::direct`), and a number given
//! out that way keeps naming its file through every change — opened,
//! copied up, renamed, unlinked, forgotten at the wrong time.
//!
//! The union rules themselves run over images in every `engine_*` table
//! (`run_table_over_images`); these tests hold numbers across operations
//! the way the kernel does, which the tables (forgetting after each
//! operation) do not.

mod common;
mod engine_support;

use engine_support::*;
use fimfs::sys::Errno;
use fimfs::union::{Ino, Kind, Options, ROOT_INO, SetAttr};

const LOWER: &str = "f d/a alpha\nf d/b beta\nl d/l a\np d/p\nf top T\nf d/e/deep deep";

fn over_images(tag: &str, upper: Option<&str>) -> Fixture {
    Fixture::over_images(tag, &[LOWER], upper, Options::default())
}

#[test]
fn what_the_kernel_holds_of_an_image_costs_no_node_until_it_changes() {
    let fx = over_images("img-nodes", Some(""));
    let u = &fx.union;
    let mut held = Lookups::new(u);
    held.forget_on_drop = false;
    let files: Vec<Ino> = ["d/a", "d/b", "d/l", "d/p", "top", "d/e/deep"]
        .iter()
        .map(|p| held.ino(p).unwrap())
        .collect();
    // The root, d and d/e: directories keep nodes, files none.
    assert_eq!(u.live_nodes(), 3, "nodes after looking up every file");

    let a = files[0];
    let looked = u.lookup(held.ino("d").unwrap(), b"a").unwrap().attr;
    assert_eq!(
        u.getattr(a).unwrap(),
        looked,
        "getattr from the number alone"
    );
    assert_eq!(u.readlink(files[2]).unwrap(), b"a");
    assert_eq!(u.getattr(files[3]).unwrap().kind, Kind::Fifo);
    assert_eq!(u.listxattr(a).unwrap(), b"");
    assert_eq!(u.live_nodes(), 3, "reads made no node");

    assert_eq!(read_through(u, a).unwrap(), b"alpha");
    assert_eq!(u.live_nodes(), 4, "an open keeps the file's node");
    u.forget(a, 2);
    assert_eq!(u.live_nodes(), 3, "the kernel's forget drops it");
    assert_eq!(u.getattr(a).unwrap(), looked, "and the number still works");
    assert!(
        fx.upper().read_dir().unwrap().next().is_none(),
        "reads wrote to the upper"
    );
}

#[test]
fn a_held_number_follows_its_file_through_rename_and_unlink() {
    let fx = over_images("img-rename", Some(""));
    let u = &fx.union;
    let mut held = Lookups::new(u);
    held.forget_on_drop = false;
    let d = held.ino("d").unwrap();
    let a = held.ino("d/a").unwrap();

    u.rename(d, b"a", ROOT_INO, b"moved", 0).unwrap();
    let attr = u.getattr(a).unwrap();
    assert_eq!(
        (attr.ino, attr.size),
        (a, 5),
        "the number names the moved file"
    );
    assert_eq!(read_through(u, a).unwrap(), b"alpha");
    assert_eq!(u.lookup(ROOT_INO, b"moved").unwrap().ino, a);
    assert_eq!(u.lookup(d, b"a").err(), Some(Errno::ENOENT));

    let b = held.ino("d/b").unwrap();
    let bravo = read_through(u, b).unwrap();
    u.remove(d, b"b", false).unwrap();
    // The kernel still holds the number (an open file, see
    // `union::unlinked`): it names the file it was, which has no name.
    let attr = u.getattr(b).unwrap();
    assert_eq!((attr.nlink, attr.size), (0, bravo.len() as u64), "{attr:?}");
    assert_eq!(u.lookup(d, b"b").err(), Some(Errno::ENOENT));
    // Nor is a new file at its name taken for it.
    let made = u.create(d, b"b", (0o600, libc::O_WRONLY), ROOT).unwrap();
    assert_ne!(made.entry.ino, b);
    assert_eq!(
        read_through(u, b).unwrap(),
        bravo,
        "the new file at the name"
    );
    assert_eq!(u.getattr(made.entry.ino).unwrap().perm, 0o600);
}

#[test]
fn held_numbers_follow_their_files_when_a_directory_moves() {
    let fx = over_images("img-dirmove", Some(""));
    let u = &fx.union;
    let mut held = Lookups::new(u);
    held.forget_on_drop = false;
    let d = held.ino("d").unwrap();
    let a = held.ino("d/a").unwrap();
    let deep = held.ino("d/e/deep").unwrap();
    let top = held.ino("top").unwrap();

    // The whole tree is copied into the upper under the new name.
    u.rename(ROOT_INO, b"d", ROOT_INO, b"moved", 0).unwrap();
    assert_eq!(u.getattr(a).unwrap().size, 5, "d/a, now moved/a");
    assert_eq!(read_through(u, a).unwrap(), b"alpha");
    assert_eq!(read_through(u, deep).unwrap(), b"deep", "two levels down");
    assert_eq!(u.getattr(d).unwrap().kind, Kind::Dir);

    // A second move, and an exchange with a file's directory.
    u.rename(ROOT_INO, b"moved", ROOT_INO, b"again", 0).unwrap();
    assert_eq!(read_through(u, a).unwrap(), b"alpha");
    u.make(
        ROOT_INO,
        b"other",
        fimfs::union::Make::Dir { mode: 0o755 },
        ROOT,
    )
    .unwrap();
    u.rename(
        ROOT_INO,
        b"again",
        ROOT_INO,
        b"other",
        libc::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(read_through(u, a).unwrap(), b"alpha", "exchanged: other/a");
    assert_eq!(read_through(u, deep).unwrap(), b"deep");
    assert_eq!(read_through(u, top).unwrap(), b"T", "what did not move");

    // Deleted, and a new file made at its name: the number is not the new
    // file's.
    let other = held.ino("other").unwrap();
    u.remove(other, b"a", false).unwrap();
    let made = u
        .create(other, b"a", (0o600, libc::O_WRONLY), ROOT)
        .unwrap();
    assert_ne!(made.entry.ino, a);
    // The held number still names the deleted file (see `union::unlinked`),
    // never the new one.
    assert_eq!(
        read_through(u, a).unwrap(),
        b"alpha",
        "a new file at a moved file's name"
    );
    assert_eq!(u.getattr(a).unwrap().nlink, 0);

    // Gone with its directory: still the deleted file.
    remove_tree(u, "other");
    assert_eq!(
        read_through(u, a).unwrap(),
        b"alpha",
        "a number of a deleted file"
    );
}

/// Removes `path` and everything below it through the engine.
fn remove_tree(u: &fimfs::union::Union, path: &str) {
    let mut l = Lookups::new(u);
    let dir = l.ino(path).unwrap();
    for e in u.list_dir(dir).unwrap() {
        let child = format!("{path}/{}", String::from_utf8_lossy(&e.name));
        match e.kind {
            Kind::Dir => remove_tree(u, &child),
            _ => {
                u.remove(dir, &e.name, false).unwrap();
            }
        }
    }
    let (parent, name) = l.parent(path).unwrap();
    u.remove(parent, name.as_bytes(), true).unwrap();
}

#[test]
fn a_file_back_at_a_name_it_left_keeps_a_node() {
    let fx = over_images("img-back", Some(""));
    let u = &fx.union;
    let mut held = Lookups::new(u);
    held.forget_on_drop = false;
    let d = held.ino("d").unwrap();
    let a = held.ino("d/a").unwrap();
    u.rename(d, b"a", d, b"c", 0).unwrap();
    // The whiteout the rename left is removed behind the mount: the
    // image's file shows at its old name again, under a new number (the
    // old one stays with the copy), which only a node can remember.
    std::fs::remove_file(fx.upper().join("d/a")).unwrap();
    let back = u.lookup(d, b"a").unwrap().ino;
    held.hold(back);
    assert_ne!(back, a);
    assert_eq!(u.getattr(back).unwrap().size, 5);
    assert_eq!(read_through(u, back).unwrap(), b"alpha");
    assert_eq!(
        u.getattr(a).unwrap().ino,
        a,
        "the copy keeps the old number"
    );
}

#[test]
fn a_number_dropped_at_the_wrong_time_still_names_the_copy() {
    let fx = over_images("img-forget", Some(""));
    let u = &fx.union;
    let mut held = Lookups::new(u);
    held.forget_on_drop = false;
    let top = held.ino("top").unwrap();
    let set = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    assert_eq!(u.setattr(top, set, None).unwrap().perm, 0o600);
    assert!(fx.upper().join("top").exists(), "copied up");
    // A FORGET while the kernel still holds the number (the kernel sends
    // partial ones on some error paths): the node goes, the number stays.
    u.forget(top, 1);
    let attr = u.getattr(top).unwrap();
    assert_eq!(
        (attr.ino, attr.perm),
        (top, 0o600),
        "the copy, by its number"
    );
    assert_eq!(read_through(u, top).unwrap(), b"T");
}

#[test]
fn a_hard_linked_file_keeps_a_node() {
    let fx = Fixture::over_images(
        "img-links",
        &["f d/a alpha\nH d/h d/a"],
        Some(""),
        Options::default(),
    );
    let u = &fx.union;
    let mut held = Lookups::new(u);
    held.forget_on_drop = false;
    let a = held.ino("d/a").unwrap();
    let h = held.ino("d/h").unwrap();
    assert_eq!(a, h, "one inode, one number");
    assert_eq!(u.live_nodes(), 3, "a file with two links has a node");
    assert_eq!(u.getattr(a).unwrap().nlink, 2);
}

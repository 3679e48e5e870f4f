//! Packs a host directory into a DwarFS image, as FlatImage's `commit`
//! does: the image keeps no xattrs, so the markers that live in xattrs
//! are spelled as files (an xattr whiteout becomes `.wh.NAME`, an opaque
//! xattr a `.wh..wh..opq` entry); 0/0 devices and `.wh.` files stay as
//! they are. Hard links stay one inode.
//!
//! The writer (`dwarfs-enc`) takes UTF-8 names and permission bits up to
//! 0o777 only: a name it cannot take panics here, so a test says what it
//! packs.
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::dwarfs::{Layout, Tree, assemble, im};
use super::sys::get_xattr;

const OPAQUE: [&str; 3] = [
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    "user.fuseoverlayfs.opaque",
];
const WHITEOUT: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// The image bytes of the tree at `root` (data blocks of `block_size`,
/// compressed as `layout` says).
pub fn pack_dir(root: &Path, block_size: u32, layout: Layout) -> Vec<u8> {
    let mut t = Tree::new(block_size);
    let mut seen = HashMap::new();
    add_dir(&mut t, root, "", &mut seen);
    let (meta, blocks) = t.finish();
    assemble(&meta, &blocks, layout)
}

fn has(path: &Path, names: &[&str], value: Option<&[u8]>) -> bool {
    names.iter().any(|n| match get_xattr(path, n) {
        Ok(v) => value.is_none_or(|want| v == want),
        Err(_) => false,
    })
}

fn add_dir(t: &mut Tree, dir: &Path, rel: &str, seen: &mut HashMap<(u64, u64), String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let opaque_file = names.iter().any(|n| n.as_bytes() == b".wh..wh..opq");
    if !opaque_file && has(dir, &OPAQUE, Some(b"y")) {
        let join = |n: &str| {
            if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            }
        };
        t.file(&join(".wh..wh..opq"), b"", &im(0o644, 0, 0, 1_700_000_000));
    }
    for name in names {
        let name = name
            .to_str()
            .unwrap_or_else(|| panic!("pack_dir: {name:?} is not UTF-8"));
        let path = dir.join(name);
        let rel_path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        add_entry(t, &path, &rel_path, seen);
    }
}

fn add_entry(t: &mut Tree, path: &Path, rel: &str, seen: &mut HashMap<(u64, u64), String>) {
    let md = std::fs::symlink_metadata(path).unwrap();
    let m = im(
        md.mode() & 0o777,
        md.uid(),
        md.gid(),
        md.mtime().max(0) as u64,
    );
    let ft = md.file_type();
    if !ft.is_dir() && md.nlink() > 1 {
        if let Some(first) = seen.get(&(md.dev(), md.ino())) {
            t.hard_link(rel, first);
            return;
        }
        seen.insert((md.dev(), md.ino()), rel.to_string());
    }
    if ft.is_dir() {
        t.dir(rel, &m);
        add_dir(t, path, rel, seen);
    } else if ft.is_file() && md.len() == 0 && has(path, &WHITEOUT, None) {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let wh = match dir {
            "" => format!(".wh.{name}"),
            d => format!("{d}/.wh.{name}"),
        };
        t.file(&wh, b"", &m);
    } else if ft.is_file() {
        t.file(rel, &std::fs::read(path).unwrap(), &m);
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).unwrap();
        t.symlink(rel, target.to_str().expect("UTF-8 symlink target"), &m);
    } else if ft.is_char_device() || ft.is_block_device() {
        t.device(rel, ft.is_block_device(), md.rdev(), &m);
    } else if ft.is_fifo() {
        t.fifo(rel, &m);
    } else if ft.is_socket() {
        t.socket(rel, &m);
    }
}

//! Validation: turns unpacked [`Tables`] into a [`Tree`] whose invariants
//! (see `tree`) hold, or refuses the image.
//!
//! Policy: a broken structure refuses the image with an error naming the
//! metadata section and the rule broken (an index out of range, a loop or a
//! second parent, unsorted or duplicate names, a mode that disagrees with
//! the inode's kind, a chunk outside its block, a time beyond i64). A
//! directory entry whose *name* is spoiled (empty, `.`, `..`, containing
//! `/` or NUL) is dropped from its directory with one log line (the first
//! [`LOGGED_DROPS`] of an image; then one line with the count): the rest of
//! the image stays readable. A directory that only a dropped entry led to
//! becomes unreachable: it is never served.
use std::collections::VecDeque;
use std::path::Path;

use super::error::{Located, SectionId, invalid};
use super::meta::Tables;
use super::tree::{Chunk, Classes, Entry, Inode, InodeId, Kind, Totals, Tree};

/// Spoiled entries logged one by one per image.
pub const LOGGED_DROPS: u64 = 20;

type R<T> = Result<T, Located>;

/// Validates `t` for an image of `blocks` data blocks.
pub fn build(t: Tables, blocks: usize, id: SectionId, path: &Path) -> R<Tree> {
    let bs = t.block_size;
    if !bs.is_power_of_two() {
        return Err(invalid(
            id,
            format!("block size {bs} is not a power of two"),
        ));
    }
    let classes = classes(&t, id)?;
    let inodes = check_inodes(&t, &classes, id)?;
    check_symlinks(&t, id)?;
    let (chunks, bytes) = check_chunks(&t, blocks, id)?;
    drop((t.inodes, t.chunks));
    let mut tree = Tree {
        names: t.names,
        links: t.links,
        inodes,
        modes: t.modes,
        uids: t.uids,
        gids: t.gids,
        classes,
        symlink_table: t.symlink_table,
        shared: t.shared,
        chunk_table: t.chunk_table,
        chunks,
        devices: t.devices,
        times: t.times,
        totals: Totals {
            inodes: u64::from(classes.end),
            bytes,
            blocks: blocks as u64,
            block_size: bs,
        },
        ..Tree::default()
    };
    let (entries, first, dropped) = directories(&tree, &t.dir_first, t.dir_entries, id, path)?;
    tree.dropped = dropped;
    tree.entries = entries;
    tree.first = first;
    walk(&mut tree, id)?;
    Ok(tree)
}

/// Where each kind of inode starts, from the tables' lengths.
fn classes(t: &Tables, id: SectionId) -> R<Classes> {
    let too_big = || invalid(id, "table lengths overflow");
    let len = |n: usize| u32::try_from(n).map_err(|_| too_big());
    let dirs = len(t.dir_first.len().saturating_sub(1))?;
    if dirs == 0 {
        return Err(invalid(id, "no root directory"));
    }
    let stores = len(t.chunk_table.len())?
        .checked_sub(1)
        .ok_or_else(|| invalid(id, "empty chunk_table"))?;
    if !t.shared.is_sorted() {
        return Err(invalid(id, "shared_files_table is not sorted"));
    }
    let shared_stores = t.shared.last().map_or(Some(0), |&m| m.checked_add(1));
    let unique = shared_stores
        .and_then(|s| stores.checked_sub(s))
        .ok_or_else(|| invalid(id, "shared_files_table names more file stores than exist"))?;
    let symlinks = dirs;
    let files = symlinks
        .checked_add(len(t.symlink_table.len())?)
        .ok_or_else(too_big)?;
    let shared = files.checked_add(unique).ok_or_else(too_big)?;
    let devices = shared
        .checked_add(len(t.shared.len())?)
        .ok_or_else(too_big)?;
    let ipc = devices
        .checked_add(len(t.devices.len())?)
        .ok_or_else(too_big)?;
    let end = len(t.inodes.len())?;
    if ipc > end {
        return Err(invalid(
            id,
            format!("{end} inodes, fewer than the tables count ({ipc})"),
        ));
    }
    Ok(Classes {
        symlinks,
        files,
        shared,
        devices,
        ipc,
        end,
        unique,
    })
}

/// The kind an inode must have by its place in the table.
fn expected(c: &Classes, ino: u32, kind: Kind) -> bool {
    if ino < c.symlinks {
        kind == Kind::Dir
    } else if ino < c.files {
        kind == Kind::Symlink
    } else if ino < c.devices {
        kind == Kind::File
    } else if ino < c.ipc {
        matches!(kind, Kind::BlockDev | Kind::CharDev)
    } else {
        matches!(kind, Kind::Fifo | Kind::Socket)
    }
}

/// Checks every inode; returns them in our compact form.
fn check_inodes(t: &Tables, c: &Classes, id: SectionId) -> R<Vec<Inode>> {
    let times = t.times;
    let time_ok = |off: u32| {
        u64::from(off)
            .checked_mul(u64::from(times.resolution))
            .and_then(|s| s.checked_add(times.base))
            .is_some_and(|s| i64::try_from(s).is_ok())
    };
    let mut out = Vec::with_capacity(t.inodes.len());
    for (n, i) in t.inodes.iter().enumerate() {
        let bad = |what: &str| invalid(id, format!("inode {n}: {what}"));
        let mode = *t
            .modes
            .get(i.mode_index as usize)
            .ok_or_else(|| bad("mode index"))?;
        let kind = Kind::from_mode(mode).ok_or_else(|| bad("mode has no file type"))?;
        if !expected(c, n as u32, kind) {
            return Err(bad(&format!("mode {mode:o} disagrees with its place")));
        }
        if i.owner_index as usize >= t.uids.len() || i.group_index as usize >= t.gids.len() {
            return Err(bad("owner or group index"));
        }
        let all = times.mtime_only || (time_ok(i.atime_offset) && time_ok(i.ctime_offset));
        if !time_ok(i.mtime_offset) || !all {
            return Err(bad("time beyond range"));
        }
        out.push(Inode {
            mode_index: i.mode_index,
            owner_index: i.owner_index,
            group_index: i.group_index,
            atime_offset: i.atime_offset,
            mtime_offset: i.mtime_offset,
            ctime_offset: i.ctime_offset,
        });
    }
    Ok(out)
}

fn check_symlinks(t: &Tables, id: SectionId) -> R<()> {
    let n = t.links.len();
    match t.symlink_table.iter().position(|&s| s as usize >= n) {
        Some(i) => Err(invalid(
            id,
            format!("symlink {i}: target index out of range"),
        )),
        None => Ok(()),
    }
}

/// Checks every chunk and the chunk table; returns the chunks in our form
/// and the bytes of all file stores.
fn check_chunks(t: &Tables, blocks: usize, id: SectionId) -> R<(Vec<Chunk>, u64)> {
    let bs = u64::from(t.block_size);
    let mut out = Vec::with_capacity(t.chunks.len());
    for (n, c) in t.chunks.iter().enumerate() {
        let end = u64::from(c.offset) + u64::from(c.size);
        if c.block as usize >= blocks || end > bs {
            let msg = format!(
                "chunk {n}: block {} offset {} size {} outside {blocks} blocks of {bs} bytes",
                c.block, c.offset, c.size
            );
            return Err(invalid(id, msg));
        }
        out.push(Chunk {
            block: c.block,
            offset: c.offset,
            size: c.size,
        });
    }
    let mut bytes = 0u64;
    for (s, w) in t.chunk_table.windows(2).enumerate() {
        let range = out.get(w[0] as usize..w[1] as usize);
        let range = range.ok_or_else(|| invalid(id, format!("file store {s}: chunk range")))?;
        let size: u64 = range.iter().map(|c| u64::from(c.size)).sum();
        bytes = bytes.saturating_add(size);
    }
    Ok((out, bytes))
}

/// Why a name cannot be an entry, if it cannot.
pub fn spoiled(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("empty name"),
        b"." | b".." => Some("name is . or .."),
        n if n.contains(&b'/') => Some("name contains /"),
        n if n.contains(&0) => Some("name contains NUL"),
        _ => None,
    }
}

/// Each directory's entries: ranges checked, indexes checked, names sorted;
/// spoiled names dropped. Returns the kept entries, the new ranges and the
/// number dropped.
fn directories(
    tree: &Tree,
    dir_first: &[u32],
    raw: Vec<dwarfs::metadata::DirEntry>,
    id: SectionId,
    path: &Path,
) -> R<(Vec<Entry>, Vec<u32>, u64)> {
    if raw.first().map(|e| e.inode_num) != Some(0) {
        return Err(invalid(id, "dir_entries[0] is not the root"));
    }
    let mut entries = Vec::with_capacity(raw.len());
    let mut first = Vec::with_capacity(dir_first.len());
    let mut dropped = 0u64;
    for (d, w) in dir_first.windows(2).enumerate() {
        let bad = |what: String| invalid(id, format!("directory {d}: {what}"));
        if w[0] == 0 || w[0] > w[1] {
            return Err(bad(format!("entries {}..{}", w[0], w[1])));
        }
        let range = raw
            .get(w[0] as usize..w[1] as usize)
            .ok_or_else(|| bad("entries past the end".into()))?;
        first.push(entries.len() as u32);
        let mut prev: Option<&[u8]> = None;
        for e in range {
            let name = tree
                .names
                .get(e.name_index)
                .ok_or_else(|| bad(format!("name index {}", e.name_index)))?;
            if e.inode_num >= tree.classes.end {
                return Err(bad(format!("inode {} out of range", e.inode_num)));
            }
            if let Some(why) = spoiled(name) {
                dropped += 1;
                log_drop(path, d, name, why, dropped);
                continue;
            }
            if prev.is_some_and(|p| p >= name) {
                return Err(bad("names not sorted or repeated".into()));
            }
            prev = Some(name);
            entries.push(Entry {
                name: e.name_index,
                inode: e.inode_num,
            });
        }
    }
    first.push(entries.len() as u32);
    if dropped > LOGGED_DROPS {
        tracing::warn!(
            "DwarFS image {}: {dropped} entries dropped for bad names in all",
            path.display()
        );
    }
    Ok((entries, first, dropped))
}

fn log_drop(path: &Path, dir: usize, name: &[u8], why: &str, n: u64) {
    if n <= LOGGED_DROPS {
        tracing::warn!(
            "DwarFS image {}: entry {:?} of directory inode {dir} dropped: {why}",
            path.display(),
            String::from_utf8_lossy(name)
        );
    }
}

/// Walks the tree from the root: every directory reached at most once;
/// fills parents, link counts and each other inode's first entry.
fn walk(tree: &mut Tree, id: SectionId) -> R<()> {
    let dirs = tree.classes.symlinks as usize;
    let mut parent = vec![u32::MAX; dirs];
    let mut nlink = vec![0u32; tree.classes.end as usize];
    let mut home = vec![u32::MAX; tree.classes.end as usize];
    let mut queue = VecDeque::from([0u32]);
    if let Some(root) = parent.first_mut() {
        *root = 0;
    }
    while let Some(d) = queue.pop_front() {
        let mut subdirs = 0u32;
        let start = tree.first.get(d as usize).copied().unwrap_or(0);
        for (i, (_, child)) in tree.entries(InodeId(d)).enumerate() {
            let c = child.0 as usize;
            if let Some(h) = home.get_mut(c)
                && *h == u32::MAX
            {
                *h = start.saturating_add(i as u32);
            }
            match parent.get_mut(c) {
                Some(p) if *p != u32::MAX => {
                    return Err(invalid(id, format!("directory {c} reached twice")));
                }
                Some(p) => {
                    *p = d;
                    subdirs = subdirs.saturating_add(1);
                    queue.push_back(child.0);
                }
                None => {
                    if let Some(n) = nlink.get_mut(c) {
                        *n = n.saturating_add(1);
                    }
                }
            }
        }
        if let Some(n) = nlink.get_mut(d as usize) {
            *n = subdirs.saturating_add(2);
        }
    }
    tree.parent = parent;
    tree.nlink = nlink;
    tree.home = home;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoiled_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0"] {
            assert!(spoiled(bad).is_some(), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"\xff\xfe", b"a b"] {
            assert_eq!(spoiled(good), None, "{good:?}");
        }
    }
}

//! Merged directory listings.
//!
//! A listing is a snapshot taken when a directory handle starts reading
//! (offset 0): every layer's entries, top-most first, merged by the rules of
//! `resolve`, markers dropped. Offsets are positions in the snapshot, so
//! they stay valid however the directory changes while it is read. Each
//! entry's number follows the same origin rule as lookup, so `d_ino`
//! equals the `st_ino` a later stat reports.
use super::attr::{Ino, InoMap, Kind};
use super::cache::OpenedDir;
use super::engine::Union;
use super::lookup::ListedDir;
use super::marker::{self, OPAQUE_FILE, WH_PREFIX};
use super::node::{LayerDir, ListStamp, Node};
use crate::layer::{Dir, LayerId, Lower, UPPER};
use crate::sys::{self, Errno, Result};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

/// One name of a merged listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: Kind,
}

/// What one layer's raw entry means to the union.
enum Raw {
    Hide,
    Whiteout(Vec<u8>),
    Entry(Vec<u8>, Kind, u64),
}

/// The merge state of one name (with casefold, of one folded name).
struct Slot {
    /// Index into the output; None for a name hidden by a whiteout.
    out: Option<usize>,
    kind: Kind,
    /// The layer that claimed the name: its other spellings are listed too.
    layer: LayerId,
    /// Upper winner still looking one layer down for its origin.
    seeking_origin: bool,
    closed: bool,
}

/// What one raw entry of layer directory `l` (of `layer`) means to the union.
fn classify(layer: &dyn Lower, l: &LayerDir, e: sys::DirEnt) -> Raw {
    let stat = |name: &CStr| layer.stat(&l.dir, name);
    if e.name == OPAQUE_FILE {
        return Raw::Hide;
    }
    if let Some(hidden) = e.name.strip_prefix(WH_PREFIX) {
        return Raw::Whiteout(hidden.to_vec());
    }
    let kind = match Kind::from_dtype(e.dtype) {
        Some(k) => k,
        None => match sys::cstr(&e.name).and_then(|c| stat(&c)) {
            Ok(st) if marker::is_whiteout_stat(&st) => return Raw::Whiteout(e.name),
            Ok(st) => Kind::from_mode(st.st_mode),
            Err(_) => return Raw::Hide,
        },
    };
    let is_whiteout = match kind {
        Kind::Char => sys::cstr(&e.name)
            .and_then(|c| stat(&c))
            .is_ok_and(|st| marker::is_whiteout_stat(&st)),
        Kind::File if l.xwhiteouts => {
            sys::cstr(&e.name).is_ok_and(|c| layer.is_xattr_whiteout(&l.dir, &c))
        }
        _ => false,
    };
    if is_whiteout {
        Raw::Whiteout(e.name)
    } else {
        Raw::Entry(e.name, kind, e.ino)
    }
}

/// A listing being merged, layer after layer.
struct Merge<'a> {
    union: &'a Union,
    upper: Option<BorrowedFd<'a>>,
    out: Vec<DirEntry>,
    slots: HashMap<Vec<u8>, Slot>,
}

impl Merge<'_> {
    fn key(&self, name: &[u8]) -> Vec<u8> {
        match self.union.opts.casefold {
            true => super::fold::fold(name),
            false => name.to_vec(),
        }
    }

    fn add(&mut self, id: LayerId, (layer, dir): (&dyn Lower, &Dir), raw: Raw) {
        let (name, kind, ino) = match raw {
            Raw::Hide => return,
            Raw::Whiteout(name) => return self.add_whiteout(id, &name),
            Raw::Entry(n, k, i) => (n, k, i),
        };
        let ino = self.union.inos.encode(layer.dev(), ino);
        let key = self.key(&name);
        match self.slots.entry(key) {
            Entry::Vacant(v) => {
                let upper = id == UPPER;
                v.insert(Slot {
                    out: Some(self.out.len()),
                    kind,
                    layer: id,
                    seeking_origin: upper,
                    closed: !upper,
                });
                self.out.push(DirEntry { name, ino, kind });
            }
            Entry::Occupied(mut o) => {
                let slot = o.get_mut();
                if slot.layer == id {
                    // Another spelling in the same layer (casefold): listed
                    // too; a whiteout of the layer does not hide it.
                    if slot.out.is_none() {
                        slot.out = Some(self.out.len());
                        slot.kind = kind;
                        slot.seeking_origin = id == UPPER;
                        slot.closed = id != UPPER;
                    }
                    self.out.push(DirEntry { name, ino, kind });
                    return;
                }
                if slot.closed {
                    return;
                }
                slot.seeking_origin = false;
                slot.closed = true;
                let (Some(i), true) = (slot.out, slot.kind == kind) else {
                    return;
                };
                self.take_origin(i, kind, ino, (layer, dir), &name);
            }
        }
    }

    /// A whiteout of layer `id`: hides the name in the layers below.
    fn add_whiteout(&mut self, id: LayerId, name: &[u8]) {
        let key = self.key(name);
        let slot = self.slots.entry(key).or_insert(Slot {
            out: None,
            kind: Kind::Char,
            layer: id,
            seeking_origin: false,
            closed: true,
        });
        // A whiteout below an upper winner ends its origin search.
        if slot.layer != id {
            slot.closed = true;
        }
    }

    /// The upper entry listed at `i` takes the number `ino` of the lower
    /// entry `name` of the same kind below it, unless it is an opaque
    /// directory (no origin below it) or a file that is not a copy of it
    /// (an upper file with several links reports its own number).
    fn take_origin(
        &mut self,
        i: usize,
        kind: Kind,
        ino: Ino,
        below: (&dyn Lower, &Dir),
        name: &[u8],
    ) {
        let upper_name = &self.out[i].name;
        if kind == Kind::Dir && upper_child_opaque(self.upper, upper_name) {
            return;
        }
        if kind != Kind::Dir
            && !upper_copy_of(&self.union.inos, self.upper, upper_name, below, name)
        {
            return;
        }
        self.out[i].ino = ino;
    }
}

/// Is the upper's directory `name` opaque? Asked only for names that also
/// exist as directories below.
fn upper_child_opaque(upper: Option<BorrowedFd<'_>>, name: &[u8]) -> bool {
    let Some(dir) = upper else { return false };
    match sys::cstr(name).and_then(|c| sys::openat(dir, &c, libc::O_PATH | libc::O_DIRECTORY, 0)) {
        Ok(fd) => marker::dir_marks(fd.as_fd()).opaque,
        Err(_) => false,
    }
}

/// Does the upper file `name` take its number from the lower entry of
/// the same name and type in `lower`? When neither has other links, and
/// the upper inode does not carry on another entry's number (`attr`).
fn upper_copy_of(
    inos: &InoMap,
    upper: Option<BorrowedFd<'_>>,
    name: &[u8],
    (layer, lower): (&dyn Lower, &Dir),
    lower_name: &[u8],
) -> bool {
    let Some(dir) = upper else { return false };
    let (Ok(c), Ok(lc)) = (sys::cstr(name), sys::cstr(lower_name)) else {
        return false;
    };
    let (Ok(up), Ok(low)) = (sys::fstatat(dir, &c), layer.stat(lower, &lc)) else {
        return false;
    };
    up.st_nlink <= 1 && low.st_nlink <= 1 && inos.sticky_of(up.st_dev, up.st_ino).is_none()
}

impl Union {
    /// The merged listing of directory `ino`, without `.` and `..`.
    pub fn list_dir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        self.list_node(&self.node(ino)?)
    }

    /// [`Union::list_dir`] of a node in hand.
    pub(super) fn list_node(&self, node: &Arc<Node>) -> Result<Vec<DirEntry>> {
        self.list_layers(&self.dir_layers_fresh(node)?)
    }

    /// [`Union::list_dir`] of a directory whose layers are in hand.
    pub fn list_listed(&self, dir: &ListedDir) -> Result<Vec<DirEntry>> {
        self.list_layers(&dir.layers)
    }

    fn list_layers(&self, dl: &super::node::DirLayers) -> Result<Vec<DirEntry>> {
        let mut m = Merge {
            union: self,
            upper: dl.upper().map(|f| f.as_fd()),
            out: Vec::new(),
            slots: HashMap::new(),
        };
        for l in &dl.layers {
            let layer = self.stack.get(l.id).ok_or(Errno::ENOENT)?;
            let entries = layer.list(&l.dir)?;
            // What a lower of a merged directory lacks is known from now on
            // (`names`): the lookups of a readdirplus skip it.
            if l.id != UPPER && dl.layers.len() > 1 {
                l.names.fill(entries.iter().map(|e| e.name.as_slice()));
            }
            for e in entries {
                if self.opts.casefold && e.name == super::attr::CIOPFS_NAME {
                    continue;
                }
                let raw = classify(layer, l, e);
                m.add(l.id, (layer, &l.dir), raw);
            }
        }
        Ok(m.out)
    }
}

impl Union {
    /// What directory `ino` looks like now (top layer's mtime, ctime and
    /// size), to tell whether a listing the kernel cached is still right.
    fn list_stamp(&self, ino: Ino) -> Option<ListStamp> {
        let a = self.getattr(ino).ok()?;
        Some((a.mtime, a.ctime, a.size))
    }

    /// Opens directory `ino` for a listing: its attributes, and whether
    /// the kernel may keep the listing it cached (the directory's stamp is
    /// the one its last snapshot started from). Every change made through
    /// the mount drops the kernel's copy anyway; this catches those made
    /// behind it (in the upper, by another daemon).
    pub fn opendir(&self, ino: Ino) -> Result<OpenedDir> {
        let (node, attr) = self.open_dir_node(ino)?;
        let keep_listing = node.listed() == Some((attr.mtime, attr.ctime, attr.size));
        Ok(OpenedDir { attr, keep_listing })
    }

    /// The listing one directory handle serves: `.` and `..` first, then
    /// the merged entries. `dir`: the directory's layers when the caller
    /// has them already (readdirplus).
    pub fn snapshot(&self, ino: Ino, dir: Option<&ListedDir>) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        // Taken before the layers are read: a change made meanwhile
        // makes the next opendir drop the kernel's copy.
        node.set_listed(self.list_stamp(ino));
        let parent = node.loc().and_then(|l| l.parent).map_or(ino, |p| p.ino);
        let dot = |name: &[u8], ino| DirEntry {
            name: name.to_vec(),
            ino,
            kind: Kind::Dir,
        };
        let mut all = vec![dot(b".", ino), dot(b"..", parent)];
        let listed = match dir {
            Some(d) => self.list_listed(d),
            None => self.list_node(&node),
        };
        all.extend(listed?);
        Ok(all)
    }
}

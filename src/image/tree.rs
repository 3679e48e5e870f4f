//! The in-memory index of one image: names, directory tree, inodes and
//! chunks, validated (by `build`) before anyone reads it.
//!
//! Invariants (established by `build`, relied on here): every table index
//! is in range; inodes are ordered by kind (directories, symlinks, regular
//! files unique then shared, devices, fifos and sockets) and each inode's
//! mode agrees with its kind; directory `d`'s entries are
//! `entries[first[d]..first[d + 1]]`, their names valid (non-empty, not `.`
//! or `..`, no `/` or NUL) and strictly increasing as bytes, so lookups are
//! binary searches; every directory reachable from the root is reached
//! exactly once (no loops, no second parent); every chunk lies inside its
//! block, whose number is below the image's block count; times fit in i64.
//!
//! Memory: a few flat vectors of u32 (entries, ranges, inodes, chunks) and
//! two byte arenas (names, symlink targets); no allocation per entry.
use super::meta::{Strings, Times};

/// An inode of the image: its number in the image's inode table. The root
/// is `InodeId(0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeId(pub u32);

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Dir,
    Symlink,
    File,
    BlockDev,
    CharDev,
    Fifo,
    Socket,
}

impl Kind {
    /// The kind the `S_IFMT` bits of `mode` name, if any.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & 0o170_000 {
            0o040_000 => Kind::Dir,
            0o120_000 => Kind::Symlink,
            0o100_000 => Kind::File,
            0o060_000 => Kind::BlockDev,
            0o020_000 => Kind::CharDev,
            0o010_000 => Kind::Fifo,
            0o140_000 => Kind::Socket,
            _ => return None,
        })
    }
}

/// A time as stored (the format keeps no sub-second part here: `nsec` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

/// An inode's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Stable inode number: the image's inode number plus one (root = 1),
    /// the same on every open of the same image.
    pub ino: u64,
    pub kind: Kind,
    /// The whole mode: type bits, setuid/setgid/sticky and permissions.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub rdev: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

/// One piece of a regular file's data: `size` bytes at `offset` in the
/// decoded block `block` (an index into the image's blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub block: u32,
    pub offset: u32,
    pub size: u32,
}

/// One inode's record: indexes into the mode, uid and gid tables, and
/// time offsets (24 bytes; the crate's record carries two dead fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Inode {
    pub mode_index: u32,
    pub owner_index: u32,
    pub group_index: u32,
    pub atime_offset: u32,
    pub mtime_offset: u32,
    pub ctime_offset: u32,
}

/// One directory entry: a name (index into the name table) and an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub name: u32,
    pub inode: u32,
}

/// Where each kind of inode starts in the inode table.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Classes {
    pub symlinks: u32,
    pub files: u32,
    pub shared: u32,
    pub devices: u32,
    pub ipc: u32,
    pub end: u32,
    /// Number of file stores used by unique files.
    pub unique: u32,
}

/// Totals for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Inodes in the image.
    pub inodes: u64,
    /// Bytes of regular file data, each stored file counted once.
    pub bytes: u64,
    /// Data blocks in the image.
    pub blocks: u64,
    pub block_size: u32,
}

/// The validated index of one image.
#[derive(Debug, Default)]
pub struct Tree {
    pub(super) names: Strings,
    pub(super) links: Strings,
    pub(super) entries: Vec<Entry>,
    /// Per directory, its first entry; one more at the end.
    pub(super) first: Vec<u32>,
    /// Per directory, its parent directory (the root's is itself).
    pub(super) parent: Vec<u32>,
    /// Per inode, the index of its first entry in `entries` (in walk
    /// order); `u32::MAX` for the root and for inodes no directory holds.
    pub(super) home: Vec<u32>,
    pub(super) inodes: Vec<Inode>,
    pub(super) nlink: Vec<u32>,
    pub(super) modes: Vec<u32>,
    pub(super) uids: Vec<u32>,
    pub(super) gids: Vec<u32>,
    pub(super) classes: Classes,
    pub(super) symlink_table: Vec<u32>,
    pub(super) shared: Vec<u32>,
    pub(super) chunk_table: Vec<u32>,
    pub(super) chunks: Vec<Chunk>,
    pub(super) devices: Vec<u64>,
    pub(super) times: Times,
    pub(super) totals: Totals,
    /// Entries dropped for a bad name.
    pub(super) dropped: u64,
}

impl Tree {
    pub fn root(&self) -> InodeId {
        InodeId(0)
    }

    /// Number of inodes in the image.
    pub fn inode_count(&self) -> u32 {
        self.classes.end
    }

    pub fn kind(&self, ino: InodeId) -> Option<Kind> {
        let i = self.inodes.get(ino.0 as usize)?;
        Kind::from_mode(*self.modes.get(i.mode_index as usize)?)
    }

    fn dir_range(&self, dir: InodeId) -> &[Entry] {
        let d = dir.0 as usize;
        let (Some(&a), Some(&b)) = (self.first.get(d), self.first.get(d + 1)) else {
            return &[];
        };
        self.entries.get(a as usize..b as usize).unwrap_or_default()
    }

    fn name(&self, e: &Entry) -> &[u8] {
        self.names.get(e.name).unwrap_or_default()
    }

    /// The entry `name` of directory `dir` (binary search).
    pub fn lookup(&self, dir: InodeId, name: &[u8]) -> Option<InodeId> {
        let range = self.dir_range(dir);
        let i = range.binary_search_by(|e| self.name(e).cmp(name)).ok()?;
        range.get(i).map(|e| InodeId(e.inode))
    }

    /// The entries of `dir` in stored (byte) order; none for a non-directory.
    pub fn entries(&self, dir: InodeId) -> impl ExactSizeIterator<Item = (&[u8], InodeId)> + '_ {
        self.dir_range(dir)
            .iter()
            .map(|e| (self.name(e), InodeId(e.inode)))
    }

    /// How many entries `dir` has (0 for a non-directory).
    pub fn entry_count(&self, dir: InodeId) -> usize {
        self.dir_range(dir).len()
    }

    /// The entry at `index` of `dir` in stored order: readdir resumes at
    /// an offset without walking the entries before it.
    pub fn entry_at(&self, dir: InodeId, index: usize) -> Option<(&[u8], InodeId)> {
        let e = self.dir_range(dir).get(index)?;
        Some((self.name(e), InodeId(e.inode)))
    }

    /// The parent of directory `dir` (the root is its own parent); `None`
    /// for a non-directory or a directory not reachable from the root.
    pub fn parent(&self, dir: InodeId) -> Option<InodeId> {
        let p = *self.parent.get(dir.0 as usize)?;
        (p != u32::MAX).then_some(InodeId(p))
    }

    /// Where an inode sits: the directory holding its first entry (in
    /// walk order; a hard link has others) and that entry's name. `None`
    /// for the root and for an inode no directory holds.
    pub fn home(&self, ino: InodeId) -> Option<(InodeId, &[u8])> {
        let e = *self.home.get(ino.0 as usize)?;
        let entry = self.entries.get(e as usize)?;
        // Directory d holds entries[first[d]..first[d + 1]]: the last d
        // whose range starts at or before e (empty ones share its start).
        let dir = self.first.partition_point(|&f| f <= e).checked_sub(1)?;
        (self.first.get(dir + 1).is_some_and(|&end| e < end) && entry.inode == ino.0)
            .then(|| (InodeId(dir as u32), self.name(entry)))
    }

    /// The path of directory `dir` from the root, components joined by
    /// `/` (empty for the root); `None` for a directory not reachable.
    pub fn dir_path(&self, dir: InodeId) -> Option<Vec<u8>> {
        let mut names = Vec::new();
        let mut cur = dir;
        // The walk at open proved every parent chain ends at the root; the
        // bound only keeps a broken index from looping.
        for _ in 0..=self.parent.len() {
            if cur == self.root() {
                names.reverse();
                return Some(names.join(&b'/'));
            }
            let (parent, name) = self.home(cur)?;
            if self.parent(cur) != Some(parent) {
                return None;
            }
            names.push(name);
            cur = parent;
        }
        None
    }

    fn time(&self, offset: u32) -> Timespec {
        let t = &self.times;
        let sec = u64::from(offset)
            .checked_mul(u64::from(t.resolution))
            .and_then(|s| s.checked_add(t.base))
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or(0);
        Timespec { sec, nsec: 0 }
    }

    /// The file store of a regular file inode.
    fn store(&self, ino: u32) -> Option<usize> {
        let c = &self.classes;
        if (c.files..c.shared).contains(&ino) {
            return Some((ino - c.files) as usize);
        }
        if (c.shared..c.devices).contains(&ino) {
            let s = *self.shared.get((ino - c.shared) as usize)?;
            return Some(c.unique.checked_add(s)? as usize);
        }
        None
    }

    pub fn attr(&self, ino: InodeId) -> Option<Attr> {
        let i = self.inodes.get(ino.0 as usize)?;
        let mode = *self.modes.get(i.mode_index as usize)?;
        let kind = Kind::from_mode(mode)?;
        let size = match kind {
            Kind::File => self.chunks(ino).iter().map(|c| u64::from(c.size)).sum(),
            Kind::Symlink => self.readlink(ino).map_or(0, |l| l.len() as u64),
            _ => 0,
        };
        let rdev = match kind {
            Kind::BlockDev | Kind::CharDev => {
                let d = ino.0.checked_sub(self.classes.devices)?;
                *self.devices.get(d as usize)?
            }
            _ => 0,
        };
        let mtime = self.time(i.mtime_offset);
        let (atime, ctime) = if self.times.mtime_only {
            (mtime, mtime)
        } else {
            (self.time(i.atime_offset), self.time(i.ctime_offset))
        };
        Some(Attr {
            ino: u64::from(ino.0) + 1,
            kind,
            mode,
            uid: *self.uids.get(i.owner_index as usize)?,
            gid: *self.gids.get(i.group_index as usize)?,
            size,
            nlink: self.nlink.get(ino.0 as usize).copied().unwrap_or(1),
            rdev,
            atime,
            mtime,
            ctime,
        })
    }

    /// A symlink's target; `None` for any other inode.
    pub fn readlink(&self, ino: InodeId) -> Option<&[u8]> {
        let c = &self.classes;
        if !(c.symlinks..c.files).contains(&ino.0) {
            return None;
        }
        let t = *self.symlink_table.get((ino.0 - c.symlinks) as usize)?;
        self.links.get(t)
    }

    /// A regular file's chunks, in file order; empty for any other inode.
    pub fn chunks(&self, ino: InodeId) -> &[Chunk] {
        let Some(s) = self.store(ino.0) else {
            return &[];
        };
        let (Some(&a), Some(&b)) = (self.chunk_table.get(s), self.chunk_table.get(s + 1)) else {
            return &[];
        };
        self.chunks.get(a as usize..b as usize).unwrap_or_default()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Entries dropped at open for a bad name.
    pub fn dropped_entries(&self) -> u64 {
        self.dropped
    }

    /// Bytes this index holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        let v4 = self.first.capacity()
            + self.parent.capacity()
            + self.home.capacity()
            + self.nlink.capacity()
            + self.modes.capacity()
            + self.uids.capacity()
            + self.gids.capacity()
            + self.symlink_table.capacity()
            + self.shared.capacity()
            + self.chunk_table.capacity();
        self.names.heap_bytes()
            + self.links.heap_bytes()
            + 4 * v4
            + 8 * (self.entries.capacity() + self.devices.capacity())
            + 12 * self.chunks.capacity()
            + size_of::<Inode>() * self.inodes.capacity()
    }
}

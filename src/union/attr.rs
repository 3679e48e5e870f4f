//! Attributes as the union reports them: the `st_ino` policy, `st_nlink`
//! of merged directories, and ownership squashing.
//!
//! Inode numbers. A union entry reports the inode of its *origin*: the
//! first lower entry of the same type found below an upper winner (with
//! one link, and no whiteout between them), or else the winner itself.
//! The rule reads no mark of its own in the upper (the kernel overlay
//! would show it): an upper entry over a lower one of its type stands for
//! it. So a file keeps its number across its own copy-up, across forgets,
//! cache drops and remounts, and `d_ino` from readdir (computed by the
//! same rule) equals `st_ino`. While the daemon runs, an upper inode that
//! carries on an entry known by another number (`stick`) keeps it, and a
//! lower entry that left its name gives its number up (`retire`), so a
//! file made at that name later never shares a number with one the
//! kernel may still hold. Real
//! numbers from different filesystems are kept apart by putting a small
//! per-device id in the top byte, as the kernel overlay's `xino` does; the
//! FUSE root is always 1.
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A union inode number: what the kernel holds and every engine
/// operation takes. Only `fuse` converts it to and from `fuser`'s type;
/// host (layer) inode numbers stay bare `u64`, so the two cannot be mixed.
/// `Ino(0)` is no entry's number: a node the kernel does not hold has it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    /// The FUSE root.
    pub const ROOT: Ino = Ino(1);
}

impl std::fmt::Display for Ino {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

// Numbers carry a device id in their top byte: hex reads best in messages.
impl std::fmt::LowerHex for Ino {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::LowerHex::fmt(&self.0, f)
    }
}

pub const ROOT_INO: Ino = Ino::ROOT;

/// With casefold, `.ciopfs` answers lookups in every directory (Wine then
/// treats the mount as case-insensitive and stops scanning directories
/// itself, as on ciopfs) but is never listed: one read-only empty file,
/// under a number no layer entry can have (layer numbers carry a device id
/// in their top byte).
pub const CIOPFS_NAME: &[u8] = b".ciopfs";
pub const CIOPFS_INO: Ino = Ino(2);

/// Bits left for the real inode number under the device id.
const INO_BITS: u32 = 56;
/// Device id reserved for numbers that do not fit in `INO_BITS`.
const OVERFLOW_FSID: u64 = 0xff;

/// Maps (device, real inode) to the number the union reports.
#[derive(Debug, Default)]
pub struct InoMap {
    fsids: DashMap<u64, u8>,
    next_fsid: AtomicU8,
    overflow: DashMap<(u64, u64), Ino>,
    next_overflow: AtomicU64,
    /// Lower inodes with several links, some of which were copied up: the
    /// number they had may still name the copy in the kernel, so the
    /// names left in the lower take a new one.
    retired: DashMap<(u64, u64), Ino>,
    /// Upper inodes that carry on an entry known by another number (a
    /// copy-up, a renamed copy-up, a directory rebuilt by a rename): they
    /// keep that number while the daemon lives, so the kernel never sees
    /// one file under two numbers. `sticky_by` maps back, so that a number
    /// sticks to one upper inode at a time.
    sticky: DashMap<(u64, u64), Ino>,
    sticky_by: DashMap<Ino, (u64, u64)>,
    remapped: AtomicBool,
}

impl InoMap {
    pub fn new() -> InoMap {
        InoMap {
            next_fsid: AtomicU8::new(1),
            next_overflow: AtomicU64::new(1),
            ..Default::default()
        }
    }

    fn fsid(&self, dev: u64) -> Option<u64> {
        if let Some(id) = self.fsids.get(&dev) {
            return Some(*id as u64);
        }
        let id = *self.fsids.entry(dev).or_insert_with(|| {
            self.next_fsid
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < OVERFLOW_FSID as u8).then_some(n + 1)
                })
                .unwrap_or(OVERFLOW_FSID as u8)
        });
        (id as u64 != OVERFLOW_FSID).then_some(id as u64)
    }

    /// The layer entry a number was made from by [`InoMap::encode`], if
    /// it was made that way and is still that entry's number: its device
    /// among `devs` (the devices worth asking about) and its `st_ino`.
    pub fn decode(&self, number: Ino, devs: impl Iterator<Item = u64>) -> Option<(u64, u64)> {
        let id = number.0 >> INO_BITS;
        if id == 0 || id == OVERFLOW_FSID {
            return None;
        }
        let ino = number.0 & ((1 << INO_BITS) - 1);
        let dev = devs
            .into_iter()
            .find(|d| self.fsids.get(d).is_some_and(|f| u64::from(*f) == id))?;
        (self.encode(dev, ino) == number).then_some((dev, ino))
    }

    pub fn encode(&self, dev: u64, ino: u64) -> Ino {
        if self.remapped.load(Ordering::Acquire)
            && let Some(n) = self
                .sticky
                .get(&(dev, ino))
                .or_else(|| self.retired.get(&(dev, ino)))
        {
            return *n;
        }
        match self.natural(dev, ino) {
            Some(n) => n,
            // Only in memory: stable while the daemon lives, which is the
            // best that can be done for such numbers.
            None => *self
                .overflow
                .entry((dev, ino))
                .or_insert_with(|| self.fresh()),
        }
    }

    /// The number `dev`/`ino` is built into (device byte and `st_ino`),
    /// whether or not the entry goes by it now (a retired or sticky number
    /// wins in `encode`); None when it does not fit.
    pub fn natural(&self, dev: u64, ino: u64) -> Option<Ino> {
        let id = self.fsid(dev)?;
        (ino >> INO_BITS == 0).then_some(Ino((id << INO_BITS) | ino))
    }
}

impl InoMap {
    /// Gives the entries of `dev`/`ino` a new number from now on.
    pub fn retire(&self, dev: u64, ino: u64) {
        self.retired
            .entry((dev, ino))
            .or_insert_with(|| self.fresh());
        self.remapped.store(true, Ordering::Release);
    }

    /// The lower entry `dev`/`ino` (one link) left its name, and whatever
    /// went by its number may live on: a later entry at that name takes a
    /// fresh number, a new one each time (the last one may have moved on).
    pub fn release(&self, dev: u64, ino: u64) {
        self.retired.insert((dev, ino), self.fresh());
        self.remapped.store(true, Ordering::Release);
    }

    /// The upper inode `dev`/`ino` reports `number` from now on.
    /// Also when `number` is its own: a name of a lower entry below it
    /// must not lend it that entry's number.
    pub fn stick(&self, dev: u64, ino: u64, number: Ino) {
        if number == Ino(0) || self.sticky.get(&(dev, ino)).is_some_and(|n| *n == number) {
            return;
        }
        if let Some((_, old)) = self.sticky_by.remove(&number) {
            self.sticky.remove(&old);
        }
        self.sticky.insert((dev, ino), number);
        self.sticky_by.insert(number, (dev, ino));
        self.remapped.store(true, Ordering::Release);
    }

    /// The number the upper inode `dev`/`ino` carries on from another
    /// entry, if any: it wins over what its name would give it.
    pub fn sticky_of(&self, dev: u64, ino: u64) -> Option<Ino> {
        if !self.remapped.load(Ordering::Acquire) {
            return None;
        }
        self.sticky.get(&(dev, ino)).map(|n| *n)
    }

    /// The upper inode `dev`/`ino` is gone (its number may be reused).
    pub fn unstick(&self, dev: u64, ino: u64) {
        if let Some((_, n)) = self.sticky.remove(&(dev, ino)) {
            self.sticky_by.remove(&n);
        }
    }

    /// The upper inode `dev`/`ino` was deleted. If its own number lives on
    /// in another inode (a directory rebuilt in its place, a copy that took
    /// over its entry), the filesystem may hand this inode to a new file,
    /// which must then not show that number: it gets a fresh one.
    pub fn gone(&self, dev: u64, ino: u64) {
        self.unstick(dev, ino);
        let Some(id) = self.fsid(dev).filter(|_| ino >> INO_BITS == 0) else {
            return;
        };
        if self.sticky_by.contains_key(&Ino((id << INO_BITS) | ino)) {
            self.retired.insert((dev, ino), self.fresh());
            self.remapped.store(true, Ordering::Release);
        }
    }

    fn fresh(&self) -> Ino {
        Ino((OVERFLOW_FSID << INO_BITS) | self.next_overflow.fetch_add(1, Ordering::Relaxed))
    }
}

/// File type, from the `S_IFMT` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            _ => Kind::File,
        }
    }

    pub fn from_dtype(dtype: u8) -> Option<Kind> {
        Some(match dtype {
            libc::DT_DIR => Kind::Dir,
            libc::DT_LNK => Kind::Symlink,
            libc::DT_FIFO => Kind::Fifo,
            libc::DT_SOCK => Kind::Socket,
            libc::DT_CHR => Kind::Char,
            libc::DT_BLK => Kind::Block,
            libc::DT_REG => Kind::File,
            _ => return None,
        })
    }
}

/// Owner squashing (`squash_to_uid`/`squash_to_gid`): every inode is
/// reported as owned by these ids, and chown succeeds without effect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Squash {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What getattr reports for one union entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = nsec.clamp(0, 999_999_999) as u32;
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::new(0, nsec)
    }
}

impl Attr {
    pub fn from_stat(st: &libc::stat, ino: Ino, merged_dir: bool, squash: Squash) -> Attr {
        let kind = Kind::from_mode(st.st_mode);
        Attr {
            ino,
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            // The kernel overlay reports 1 for merged directories: their
            // real link count says nothing about the union's subdirectories.
            nlink: if merged_dir { 1 } else { st.st_nlink as u32 },
            uid: squash.uid.unwrap_or(st.st_uid),
            gid: squash.gid.unwrap_or(st.st_gid),
            rdev: st.st_rdev,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            blksize: st.st_blksize as u32,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ino_encoding_keeps_devices_apart_and_is_stable() {
        let m = InoMap::new();
        let a = m.encode(10, 5);
        let b = m.encode(11, 5);
        assert_ne!(a, b);
        assert_eq!(a, m.encode(10, 5));
        assert_ne!(a, ROOT_INO);
        let big = m.encode(10, 1 << 60);
        assert_eq!(big, m.encode(10, 1 << 60));
        assert_ne!(big, a);
    }

    #[test]
    fn squash_overrides_owner_only() {
        let mut st = crate::sys::zeroed_stat();
        st.st_mode = libc::S_IFREG | 0o640;
        st.st_uid = 7;
        st.st_gid = 8;
        let a = Attr::from_stat(
            &st,
            Ino(42),
            false,
            Squash {
                uid: Some(1000),
                gid: None,
            },
        );
        assert_eq!((a.uid, a.gid, a.perm, a.kind), (1000, 8, 0o640, Kind::File));
    }
}

//! A DwarFS image as a [`Lower`]: the second implementation.
//!
//! The image's metadata was read and validated once (`image::Image`); every
//! answer here comes from that in-memory index: a directory handle is an
//! inode of the image, a lookup is a binary search, a listing walks a
//! slice. File data is read through the mount's shared block cache.
//!
//! Markers read as in a host directory (SPEC §2, §8): a 0/0 character
//! device and a `.wh.NAME` file are whiteouts, a `.wh..wh..opq` entry makes
//! its directory opaque. An image keeps no xattrs, so no xattr dialect
//! applies, and xattr reads answer like a file without any.
//!
//! Owners are the stored ones, unless the layer was given an owner
//! ([`ImageLayer::with_owner`], dwarfs' `uid=`/`gid=`): then every entry
//! shows it, to every reader of this layer (lookup, stat, copy-up alike).
//!
//! Invariants:
//! - a handle carries the device number of the image that made it; another
//!   image's (or a host directory's) handle is refused with `EXDEV`;
//! - nothing here reads outside the image: the index is bounds-checked and
//!   the cache checks every block against the image's section table.
use super::lower::{Dir, DirRepr, File, FileRepr, Home, Lower, ReadAt, foreign};
use super::marker::{self, DirMarks, Probe};
use crate::image::tree::{Attr, InodeId, Kind};
use crate::image::{BlockCache, Image, ImageBlocks};
use crate::sys::{DirEnt, Errno, Result};
use std::ffi::CStr;
use std::path::Path;
use std::sync::Arc;

/// One image, opened, with its blocks registered in the mount's cache.
#[derive(Debug)]
pub struct ImageLayer {
    inner: Arc<Shared>,
    /// `(uid, gid)` every entry shows instead of its stored owner.
    owner: Option<(u32, u32)>,
}

/// What a layer and its open files share.
pub(super) struct Shared {
    image: Image,
    blocks: ImageBlocks,
    dev: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageLayer")
            .field("image", &self.image.label())
            .field("dev", &self.dev)
            .finish()
    }
}

/// An open regular file of an image: its chunks, and where each starts.
#[derive(Debug)]
struct ImageFile {
    shared: Arc<Shared>,
    ino: InodeId,
    /// File offset at which each chunk starts, plus the size at the end.
    starts: Vec<u64>,
}

impl ImageLayer {
    /// Serves `image`, reading its data through `cache`.
    pub fn new(image: Image, cache: &BlockCache) -> Result<ImageLayer> {
        let blocks = cache.register(
            image.label().display().to_string(),
            image.file().clone(),
            image.blocks().to_vec(),
            image.block_size() as usize,
        )?;
        let dev = device_of(&image);
        Ok(ImageLayer {
            inner: Arc::new(Shared { image, blocks, dev }),
            owner: None,
        })
    }

    /// This layer with every entry owned by `uid`/`gid`, as
    /// `dwarfs -o uid=,gid=` shows an image.
    pub fn with_owner(self, uid: u32, gid: u32) -> ImageLayer {
        ImageLayer {
            owner: Some((uid, gid)),
            ..self
        }
    }

    fn dir(&self, dir: &Dir) -> Result<InodeId> {
        match &dir.0 {
            DirRepr::Image { dev, ino } if *dev == self.inner.dev => Ok(*ino),
            _ => Err(foreign()),
        }
    }

    fn handle(&self, ino: InodeId) -> Dir {
        Dir(DirRepr::Image {
            dev: self.inner.dev,
            ino,
        })
    }

    /// The inode `name` names in `dir` (`dir` itself for an empty name).
    fn entry(&self, dir: &Dir, name: &[u8]) -> Result<InodeId> {
        let d = self.dir(dir)?;
        if name.is_empty() {
            return Ok(d);
        }
        self.inner.image.tree().lookup(d, name).ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: InodeId) -> Result<Attr> {
        self.inner.image.tree().attr(ino).ok_or(Errno::EIO)
    }

    fn stat_of(&self, ino: InodeId) -> Result<libc::stat> {
        let mut st = to_stat(&self.attr(ino)?, self.inner.dev);
        if let Some((uid, gid)) = self.owner {
            (st.st_uid, st.st_gid) = (uid, gid);
        }
        Ok(st)
    }
}

/// A device number no host filesystem carries (bit 63 set), the same for
/// the same image on every mount: the union builds its inode numbers from
/// it, and they must hold across remounts (and across fimfs versions, so
/// XXH3, whose output is fixed by its spec, not std's unspecified hasher).
fn device_of(image: &Image) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let (dev, ino) = image
        .file()
        .metadata()
        .map_or((0, 0), |m| (m.dev(), m.ino()));
    let mut key = [0u8; 24];
    for (part, v) in key.chunks_exact_mut(8).zip([dev, ino, image.span().0]) {
        part.copy_from_slice(&v.to_le_bytes());
    }
    (1 << 63) | (xxhash_rust::xxh3::xxh3_64(&key) >> 1)
}

fn to_stat(a: &Attr, dev: u64) -> libc::stat {
    let mut st = crate::sys::zeroed_stat();
    st.st_dev = dev;
    st.st_ino = a.ino;
    st.st_mode = a.mode;
    st.st_nlink = a.nlink.into();
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_rdev = a.rdev;
    st.st_size = i64::try_from(a.size).unwrap_or(i64::MAX);
    st.st_blksize = 4096;
    st.st_blocks = (st.st_size + 511) / 512;
    st.st_atime = a.atime.sec;
    st.st_atime_nsec = a.atime.nsec.into();
    st.st_mtime = a.mtime.sec;
    st.st_mtime_nsec = a.mtime.nsec.into();
    st.st_ctime = a.ctime.sec;
    st.st_ctime_nsec = a.ctime.nsec.into();
    st
}

fn dtype(kind: Kind) -> u8 {
    match kind {
        Kind::Dir => libc::DT_DIR,
        Kind::Symlink => libc::DT_LNK,
        Kind::File => libc::DT_REG,
        Kind::BlockDev => libc::DT_BLK,
        Kind::CharDev => libc::DT_CHR,
        Kind::Fifo => libc::DT_FIFO,
        Kind::Socket => libc::DT_SOCK,
    }
}

impl Lower for ImageLayer {
    fn path(&self) -> &Path {
        self.inner.image.label()
    }

    fn dev(&self) -> u64 {
        self.inner.dev
    }

    fn root(&self) -> Result<Dir> {
        Ok(self.handle(self.inner.image.tree().root()))
    }

    fn open_dir(&self, dir: &Dir, name: &[u8]) -> Result<Dir> {
        let ino = self.entry(dir, name)?;
        match self.inner.image.tree().kind(ino) {
            Some(Kind::Dir) => Ok(self.handle(ino)),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::EIO),
        }
    }

    fn open_path(&self, path: &[u8]) -> Result<Dir> {
        let mut dir = self.root()?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            dir = self.open_dir(&dir, part)?;
        }
        Ok(dir)
    }

    fn probe(&self, dir: &Dir, name: &[u8], wh_files: bool) -> Result<Probe> {
        match self.entry(dir, name) {
            Ok(ino) => {
                let st = self.stat_of(ino)?;
                match marker::is_whiteout_stat(&st) {
                    true => Ok(Probe::Whiteout),
                    false => Ok(Probe::Entry(st)),
                }
            }
            Err(Errno::ENOENT) if wh_files => {
                let wh = [marker::WH_PREFIX, name].concat();
                match self.entry(dir, &wh) {
                    Ok(_) => Ok(Probe::Whiteout),
                    Err(Errno::ENOENT) => Ok(Probe::Absent),
                    Err(e) => Err(e),
                }
            }
            Err(Errno::ENOENT) => Ok(Probe::Absent),
            Err(e) => Err(e),
        }
    }

    fn marks(&self, dir: &Dir) -> DirMarks {
        DirMarks {
            opaque: self.entry(dir, marker::OPAQUE_FILE).is_ok(),
            xwhiteouts: false,
        }
    }

    fn stat(&self, dir: &Dir, name: &CStr) -> Result<libc::stat> {
        self.stat_of(self.entry(dir, name.to_bytes())?)
    }

    fn list(&self, dir: &Dir) -> Result<Vec<DirEnt>> {
        let d = self.dir(dir)?;
        let tree = self.inner.image.tree();
        if tree.kind(d) != Some(Kind::Dir) {
            return Err(Errno::ENOTDIR);
        }
        Ok(tree
            .entries(d)
            .filter_map(|(name, ino)| {
                let a = tree.attr(ino)?;
                Some(DirEnt {
                    ino: a.ino,
                    dtype: dtype(a.kind),
                    name: name.to_vec(),
                })
            })
            .collect())
    }

    fn is_xattr_whiteout(&self, _dir: &Dir, _name: &CStr) -> bool {
        false
    }

    fn finds_by_number(&self) -> bool {
        true
    }

    fn home(&self, ino: u64) -> Option<Home> {
        let tree = self.inner.image.tree();
        let ino = InodeId(u32::try_from(ino.checked_sub(1)?).ok()?);
        let (dir, name) = tree.home(ino)?;
        Some(Home {
            dir: tree.dir_path(dir)?,
            name: name.to_vec(),
            mode: tree.attr(ino)?.mode,
        })
    }

    fn xattr(&self, dir: &Dir, name: &CStr, _xname: &CStr) -> Result<Vec<u8>> {
        self.entry(dir, name.to_bytes())?;
        Err(Errno::ENODATA)
    }

    fn xattr_names(&self, dir: &Dir, name: &CStr) -> Result<Vec<u8>> {
        self.entry(dir, name.to_bytes())?;
        Ok(Vec::new())
    }

    fn readlink(&self, dir: &Dir, name: &CStr) -> Result<Vec<u8>> {
        let ino = self.entry(dir, name.to_bytes())?;
        let target = self.inner.image.tree().readlink(ino);
        target.map(<[u8]>::to_vec).ok_or(Errno::EINVAL)
    }

    fn open(&self, dir: &Dir, name: &CStr, flags: i32) -> Result<File> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let ino = self.entry(dir, name.to_bytes())?;
        let tree = self.inner.image.tree();
        match tree.kind(ino) {
            Some(Kind::File) => {}
            Some(Kind::Dir) => return Err(Errno::EISDIR),
            // A device, fifo or socket in a layer has no driver behind it.
            Some(_) => return Err(Errno::ENXIO),
            None => return Err(Errno::EIO),
        }
        let mut starts = Vec::with_capacity(tree.chunks(ino).len() + 1);
        let mut at = 0u64;
        for c in tree.chunks(ino) {
            starts.push(at);
            at = at.checked_add(c.size.into()).ok_or(Errno::EIO)?;
        }
        starts.push(at);
        Ok(File(FileRepr::Indexed(Box::new(ImageFile {
            shared: self.inner.clone(),
            ino,
            starts,
        }))))
    }

    fn statfs(&self) -> Result<libc::statfs> {
        let t = self.inner.image.tree().totals();
        let mut s = crate::sys::zeroed_statfs();
        s.f_type = DWARFS_SUPER_MAGIC;
        s.f_bsize = 4096;
        s.f_frsize = 4096;
        s.f_blocks = t.bytes.div_ceil(4096);
        s.f_files = t.inodes;
        s.f_namelen = 255;
        Ok(s)
    }
}

/// What `statfs` reports as the filesystem type: the bytes `DWFS`.
const DWARFS_SUPER_MAGIC: libc::__fsword_t = 0x4457_4653;

impl ReadAt for ImageFile {
    /// Reads up to `buf.len()` bytes at `offset`, across chunks; 0 at the
    /// end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let chunks = self.shared.image.tree().chunks(self.ino);
        let mut done = 0;
        // The chunk holding `offset`: the last one starting at or before it.
        let mut i = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        while done < buf.len() {
            let (Some(c), Some(&start)) = (chunks.get(i), self.starts.get(i)) else {
                break;
            };
            let at = offset + done as u64 - start;
            let left = u64::from(c.size).saturating_sub(at);
            if left == 0 {
                i += 1;
                continue;
            }
            let want = (buf.len() - done).min(usize::try_from(left).unwrap_or(usize::MAX));
            let dst = buf.get_mut(done..done + want).ok_or(Errno::EIO)?;
            let n = self
                .shared
                .blocks
                .read(c.block, u64::from(c.offset) + at, dst)?;
            if n == 0 {
                // The block ends before the chunk does: the index lied.
                return Err(Errno::EIO);
            }
            done += n;
        }
        Ok(done)
    }
}

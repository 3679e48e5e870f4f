//! DwarFS images built by the tests themselves.
//!
//! [`Tree`] lays out a tree with `dwarfs-enc`'s metadata builder (GPL,
//! dev-only) and packs file data into blocks itself; [`assemble`] writes the
//! sections (any codec the reader knows, with or without a section index, a
//! chosen format version), so a test can also hand-edit the
//! `dwarfs::metadata::Metadata` first (non-UTF-8 names, setuid modes, loops:
//! cases the writer cannot express). [`enc_image`] goes through
//! `dwarfs-enc`'s own section writer instead. [`open_bytes`] opens an image
//! held in memory; [`walk_all`] touches everything an index answers.
use std::collections::HashMap;
use std::fs::File;
use std::num::NonZero;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::dwarfs::metadata::Metadata;
use dwarfs_enc::metadata::{Builder, Chunk, Config, DirId, InodeMetadata, LinkableInodeId};
use fimfs::image::{Image, ImageError, InodeId};

/// Section types.
pub const BLOCK: u16 = 0;
pub const SCHEMA: u16 = 7;
pub const METADATA: u16 = 8;
pub const INDEX: u16 = 9;
pub const HISTORY: u16 = 10;

/// Codec numbers of the section header.
pub const NONE: u16 = 0;
pub const LZMA: u16 = 1;
pub const ZSTD: u16 = 2;
pub const LZ4: u16 = 3;
pub const LZ4HC: u16 = 4;

/// Inode metadata: permission bits (≤ 0o777, the writer's limit), owner,
/// and all three times `secs` after the epoch.
pub fn im(mode: u32, uid: u32, gid: u32, secs: u64) -> InodeMetadata {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let mut m = InodeMetadata::new(mode);
    m.uid(uid).gid(gid).mtime(t).atime(t).ctime(t);
    m
}

/// A tree being built: paths are `/`-separated, parents first.
pub struct Tree {
    meta: Builder,
    dirs: HashMap<String, DirId>,
    links: HashMap<String, LinkableInodeId>,
    block: Vec<u8>,
    blocks: Vec<Vec<u8>>,
    block_size: u32,
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Tree {
    pub fn new(block_size: u32) -> Tree {
        let mut config = Config::default();
        config.block_size(NonZero::new(block_size).unwrap());
        let mut dirs = HashMap::new();
        let meta = Builder::new_with_config(&config, &im(0o755, 0, 0, 1_000_000));
        dirs.insert(String::new(), meta.root());
        Tree {
            meta,
            dirs,
            links: HashMap::new(),
            block: Vec::new(),
            blocks: Vec::new(),
            block_size,
        }
    }

    fn parent(&self, path: &str) -> (DirId, String) {
        let (dir, name) = split(path);
        let id = *self
            .dirs
            .get(dir)
            .unwrap_or_else(|| panic!("no directory {dir:?}"));
        (id, name.to_string())
    }

    pub fn dir(&mut self, path: &str, m: &InodeMetadata) -> &mut Tree {
        let (p, name) = self.parent(path);
        let id = self.meta.put_dir(p, &name, m).unwrap();
        self.dirs.insert(path.to_string(), id);
        self
    }

    /// Packs `data` into blocks, returning its chunks.
    fn pack(&mut self, mut data: &[u8]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        while !data.is_empty() {
            let room = self.block_size as usize - self.block.len();
            let n = room.min(data.len());
            chunks.push(Chunk {
                section_idx: self.blocks.len() as u32,
                offset: self.block.len() as u32,
                size: n as u32,
            });
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.block.len() == self.block_size as usize {
                self.blocks.push(std::mem::take(&mut self.block));
            }
        }
        chunks
    }

    pub fn file(&mut self, path: &str, data: &[u8], m: &InodeMetadata) -> &mut Tree {
        let (p, name) = self.parent(path);
        let chunks = self.pack(data);
        let id = self.meta.put_file(p, &name, m, chunks).unwrap();
        self.links.insert(path.to_string(), id.into());
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str, m: &InodeMetadata) -> &mut Tree {
        let (p, name) = self.parent(path);
        let id = self.meta.put_symlink(p, &name, m, target).unwrap();
        self.links.insert(path.to_string(), id);
        self
    }

    /// Another name for the inode at `existing`.
    pub fn hard_link(&mut self, path: &str, existing: &str) -> &mut Tree {
        let (p, name) = self.parent(path);
        let id = self.links[existing];
        self.meta.put_hard_link(p, &name, id).unwrap();
        self
    }

    pub fn device(&mut self, path: &str, block: bool, rdev: u64, m: &InodeMetadata) -> &mut Tree {
        let (p, name) = self.parent(path);
        let id = if block {
            self.meta.put_block_device(p, &name, m, rdev).unwrap()
        } else {
            self.meta.put_char_device(p, &name, m, rdev).unwrap()
        };
        self.links.insert(path.to_string(), id);
        self
    }

    pub fn fifo(&mut self, path: &str, m: &InodeMetadata) -> &mut Tree {
        let (p, name) = self.parent(path);
        let id = self.meta.put_fifo(p, &name, m).unwrap();
        self.links.insert(path.to_string(), id);
        self
    }

    pub fn socket(&mut self, path: &str, m: &InodeMetadata) -> &mut Tree {
        let (p, name) = self.parent(path);
        let id = self.meta.put_socket(p, &name, m).unwrap();
        self.links.insert(path.to_string(), id);
        self
    }

    /// The metadata and the (uncompressed) data blocks.
    pub fn finish(mut self) -> (Metadata, Vec<Vec<u8>>) {
        if !self.block.is_empty() {
            self.blocks.push(std::mem::take(&mut self.block));
        }
        (self.meta.finish().unwrap(), self.blocks)
    }
}

/// The zstd level of [`compress`] (what `Layout::default` uses).
pub const ZSTD_LEVEL: i32 = 3;

/// Compresses `data` as DwarFS stores a payload compressed with `codec`.
pub fn compress(codec: u16, data: &[u8]) -> Vec<u8> {
    compress_at(codec, ZSTD_LEVEL, data)
}

/// As [`compress`], zstd at `zstd_level` (1–22; mkdwarfs' default
/// level 7, which FlatImage uses, is zstd 22).
pub fn compress_at(codec: u16, zstd_level: i32, data: &[u8]) -> Vec<u8> {
    match codec {
        NONE => data.to_vec(),
        ZSTD => {
            let mut out = vec![0u8; zstd_safe::compress_bound(data.len())];
            let n = zstd_safe::compress(&mut out[..], data, zstd_level).unwrap();
            out.truncate(n);
            out
        }
        LZMA => {
            use liblzma::stream::{Action, Check, Stream};
            let mut s = Stream::new_easy_encoder(6, Check::Crc64).unwrap();
            let mut out = Vec::with_capacity(data.len() + 1024);
            s.process_vec(data, &mut out, Action::Finish).unwrap();
            out
        }
        LZ4 | LZ4HC => {
            let mut out = (data.len() as u32).to_le_bytes().to_vec();
            out.extend(lz4_flex::block::compress(data));
            out
        }
        c => panic!("no test encoder for codec {c}"),
    }
}

/// One section: header (format `version`, XXH3 checksum; no SHA) and payload.
pub fn section(version: (u8, u8), number: u32, kind: u16, codec: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(64 + payload.len());
    h.extend_from_slice(b"DWARFS");
    h.extend_from_slice(&[version.0, version.1]);
    h.extend_from_slice(&[0u8; 40]);
    h.extend_from_slice(&number.to_le_bytes());
    h.extend_from_slice(&kind.to_le_bytes());
    h.extend_from_slice(&codec.to_le_bytes());
    h.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    reseal(&mut h, payload);
    h.extend_from_slice(payload);
    h
}

/// Recomputes the XXH3 checksum of `header` (64 bytes) over `payload`.
pub fn reseal(header: &mut [u8], payload: &[u8]) {
    let mut x = xxhash_rust::xxh3::Xxh3Default::new();
    x.update(&header[48..64]);
    x.update(payload);
    header[40..48].copy_from_slice(&x.digest().to_le_bytes());
}

/// How [`assemble`] writes an image.
#[derive(Clone, Copy)]
pub struct Layout {
    pub version: (u8, u8),
    pub data_codec: u16,
    pub meta_codec: u16,
    pub index: bool,
    pub history: bool,
    /// The zstd level of data and metadata written with [`ZSTD`].
    pub zstd_level: i32,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            version: (2, 5),
            data_codec: ZSTD,
            meta_codec: ZSTD,
            index: true,
            history: false,
            zstd_level: ZSTD_LEVEL,
        }
    }
}

/// Serializes `meta` into schema and metadata payloads.
pub fn serialize(meta: &Metadata) -> (Vec<u8>, Vec<u8>) {
    let (schema, bytes) = meta.to_schema_and_bytes().unwrap();
    (schema.to_bytes().unwrap(), bytes)
}

/// Writes an image: blocks, schema, metadata, (history), (section index).
pub fn assemble(meta: &Metadata, blocks: &[Vec<u8>], l: Layout) -> Vec<u8> {
    let (schema, bytes) = serialize(meta);
    assemble_raw(&schema, &bytes, blocks, l)
}

/// As [`assemble`], from payloads already serialized.
pub fn assemble_raw(schema: &[u8], meta: &[u8], blocks: &[Vec<u8>], l: Layout) -> Vec<u8> {
    let mut sections: Vec<(u16, u16, Vec<u8>)> = compress_blocks(blocks, l)
        .into_iter()
        .map(|b| (BLOCK, l.data_codec, b))
        .collect();
    let level = l.zstd_level;
    sections.push((
        SCHEMA,
        l.meta_codec,
        compress_at(l.meta_codec, level, schema),
    ));
    sections.push((
        METADATA,
        l.meta_codec,
        compress_at(l.meta_codec, level, meta),
    ));
    if l.history {
        sections.push((HISTORY, NONE, b"made by the fimfs tests".to_vec()));
    }
    let mut out = Vec::new();
    let mut index = Vec::new();
    for (n, (kind, codec, payload)) in sections.iter().enumerate() {
        index.push((u64::from(*kind) << 48) | out.len() as u64);
        out.extend(section(l.version, n as u32, *kind, *codec, payload));
    }
    if l.index {
        index.push((u64::from(INDEX) << 48) | out.len() as u64);
        let payload: Vec<u8> = index.iter().flat_map(|e| e.to_le_bytes()).collect();
        out.extend(section(
            l.version,
            sections.len() as u32,
            INDEX,
            NONE,
            &payload,
        ));
    }
    out
}

/// The blocks compressed as `l` says, on all CPUs (high zstd levels are
/// slow), in their order.
fn compress_blocks(blocks: &[Vec<u8>], l: Layout) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = blocks.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let jobs: Vec<_> = blocks
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|b| compress_at(l.data_codec, l.zstd_level, b))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter().flat_map(|j| j.join().unwrap()).collect()
    })
}

/// An image written entirely by `dwarfs-enc` (its section writer, its
/// section index), the metadata compressed as `compress` says.
pub fn enc_image(
    meta: &Metadata,
    blocks: &[Vec<u8>],
    compress: dwarfs_enc::section::CompressParam,
) -> Vec<u8> {
    use ::dwarfs::section::SectionType;
    let mut w = dwarfs_enc::section::Writer::new_with_threads(Vec::new(), NonZero::new(1).unwrap())
        .unwrap();
    for b in blocks {
        w.write_section(SectionType::BLOCK, compress, b).unwrap();
    }
    w.write_metadata_sections(meta, compress).unwrap();
    w.finish().unwrap()
}

/// Opens an image held in memory (written to a scratch file under `dir`).
pub fn open_bytes(dir: &Path, bytes: &[u8]) -> Result<Image, ImageError> {
    let path = dir.join(format!("img-{}", super::next_serial()));
    std::fs::write(&path, bytes).unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    let r = Image::open(file, 0, None, &path);
    std::fs::remove_file(&path).unwrap();
    r
}

/// Touches everything the index answers, from the root: every entry looked
/// up by name, its attributes, its target, its chunks. Returns the number of
/// entries reached. Panics if the index contradicts itself.
pub fn walk_all(img: &Image) -> usize {
    let t = img.tree();
    let mut seen = 0;
    let mut stack = vec![t.root()];
    while let Some(dir) = stack.pop() {
        for (i, (name, ino)) in t.entries(dir).enumerate() {
            seen += 1;
            assert_eq!(t.entry_at(dir, i), Some((name, ino)));
            assert_eq!(t.lookup(dir, name), Some(ino), "lookup of an entry listed");
            let attr = t.attr(ino).expect("attributes of a listed inode");
            let _ = t.readlink(ino);
            let size: u64 = t.chunks(ino).iter().map(|c| u64::from(c.size)).sum();
            if attr.kind == fimfs::image::Kind::File {
                assert_eq!(size, attr.size);
            }
            for c in t.chunks(ino) {
                assert!((c.block as usize) < img.blocks().len());
            }
            if attr.kind == fimfs::image::Kind::Dir {
                assert_eq!(t.parent(ino), Some(dir));
                stack.push(ino);
            }
        }
        assert!(seen <= 10_000_000, "walk does not end");
    }
    let _ = t.lookup(t.root(), b"no such name");
    assert_eq!(t.entry_at(t.root(), t.entry_count(t.root())), None);
    let _ = t.attr(InodeId(u32::MAX));
    seen
}

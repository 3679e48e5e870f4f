//! DwarFS images read in-process (issue 20): the second kind of lower.
//!
//! An image is read once at mount: its sections are walked and checked, its
//! metadata is decoded and validated into an in-memory index (names, tree,
//! inodes, chunks); file data is read through one block cache shared by
//! every image of a mount. Nothing in an image can make the daemon read
//! outside it, panic, hang, or hold memory beyond the cache bound.
//!
//! Files, from the bottom up:
//! - `binary`: a FlatImage binary (ELF, reserved space, overlay and
//!   casefold bytes, the `[u64 size][image]` layer blocks appended to it);
//! - `codec`: section payload codecs (none, zstd, lzma, lz4/lz4hc, ...),
//!   whole and (for data blocks) incremental decoding, with output bounds.
//! - `error`: [`ImageError`], naming the image, the section and the reason.
//! - `sections`: finds the image in its file (scanning past a `--header`),
//!   maps its sections (section index or header walk), checks checksums.
//! - `frozen`: pre-flight bounds on what the `dwarfs` crate's parsers may
//!   allocate, checked before they run.
//! - `meta`: decodes and parses the schema and metadata (panics caught),
//!   unpacks the packed tables and string tables.
//! - `build`: validates the tables into a `tree`.
//! - `tree`: [`Tree`], the in-memory index: lookups, entries, attributes,
//!   symlink targets, chunks.
//! - `block`: one data block's states (loaded, partly decoded, decoded,
//!   failed), its header and checksum checks.
//! - `readahead`: sequential-read detection and the readahead threads.
//! - `cache`: the bounded block cache shared by a mount's images
//!   (`BlockCache`, and `ImageBlocks` to read one image's blocks).
//! - `source`: what a `LOWERS` entry names (a directory, an image,
//!   `FILE@OFFSET[+SIZE]`, a FlatImage binary's layers).
//! - here: [`Image`], the opener tying sections, metadata and tree together.
//!
//! What is taken from the `dwarfs` crate (MIT/Apache): the frozen-thrift
//! metadata decoder and FSST string tables. Sections, blocks, validation
//! and the cache are ours (see the README for why).
//!
//! What the opener does not read (each refused with a clear [`ImageError`],
//! never a panic): formats other than 2.3–2.5 (mkdwarfs before 0.5); images
//! whose metadata sets a `features` flag; metadata compressed with a codec
//! `codec` does not decode, or larger than 512 MiB decoded (`meta`); lists
//! of zero-bit elements longer than the metadata has bits (`frozen`; no
//! writer is known to produce them). Sub-second times (mkdwarfs ≥ 0.14)
//! are read to the second. SHA-512/256 checksums are not checked (XXH3 is).
pub mod binary;
mod block;
mod build;
pub mod cache;
pub mod codec;
pub mod error;
mod frozen;
mod meta;
mod readahead;
pub mod sections;
pub mod source;
#[cfg(test)]
mod testing;
pub mod tree;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use build::spoiled;
pub use cache::{BlockCache, CacheStats, DEFAULT_CACHE_BYTES, ImageBlocks};
pub use codec::Codec;
pub use error::{ImageError, Reason, SectionId};
pub use tree::{Attr, Chunk, InodeId, Kind, Timespec, Totals, Tree};

/// Where one section lies in the file that holds the image.
///
/// The section header is 64 bytes: magic `DWARFS`, major, minor, a 32-byte
/// SHA-512/256 and an 8-byte XXH3-64 checksum, then section number (u32),
/// type (u16), compression (u16) and payload size (u64), little-endian. The
/// XXH3 covers the header from the section number on, then the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLoc {
    /// Offset of the section header in the file.
    pub header: u64,
    /// Offset of the payload (after the section header) in the file.
    pub payload: u64,
    /// Length of the compressed payload.
    pub len: u64,
    /// How the payload is compressed.
    pub codec: Codec,
}

/// One opened image: where its blocks lie, and its validated index.
#[derive(Debug)]
pub struct Image {
    file: Arc<File>,
    label: PathBuf,
    version: (u8, u8),
    span: (u64, u64),
    blocks: Vec<BlockLoc>,
    block_size: u32,
    tree: Tree,
}

impl Image {
    /// Opens the image at `offset` in `file`, `size` bytes long (to the end
    /// of the file when `None`); `path` names it in messages (with
    /// `@offset` appended when the offset is not 0). Reads the metadata
    /// once and validates it; data blocks are not read.
    pub fn open(
        file: Arc<File>,
        offset: u64,
        size: Option<u64>,
        path: &Path,
    ) -> Result<Image, ImageError> {
        let label = if offset == 0 {
            path.to_path_buf()
        } else {
            PathBuf::from(format!("{}@{offset}", path.display()))
        };
        let map = sections::open(&file, offset, size, &label).map_err(|e| e.at(label.clone()))?;
        let tables = meta::load(&file, &map, &label).map_err(|e| e.at(label.clone()))?;
        let block_size = tables.block_size;
        let tree = build::build(tables, map.blocks.len(), map.metadata.id, &label)
            .map_err(|e| e.at(label.clone()))?;
        Ok(Image {
            file,
            label,
            version: map.version,
            span: (map.start, map.end),
            blocks: map.blocks,
            block_size,
            tree,
        })
    }

    /// The file that holds the image.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The name used in messages.
    pub fn label(&self) -> &Path {
        &self.label
    }

    /// Format version (major, minor) of the first section.
    pub fn version(&self) -> (u8, u8) {
        self.version
    }

    /// File offsets of the first section header and of the image's end.
    pub fn span(&self) -> (u64, u64) {
        self.span
    }

    /// The data blocks, indexed by [`Chunk::block`].
    pub fn blocks(&self) -> &[BlockLoc] {
        &self.blocks
    }

    /// Size of a decoded data block (the last may be shorter).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }
}

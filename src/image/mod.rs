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
//! - `block`: one data block's states (loaded, partly decoded, decoded,
//!   failed), its header and checksum checks.
//! - `readahead`: sequential-read detection and the readahead threads.
//! - `cache`: the bounded block cache shared by a mount's images
//!   (`BlockCache`, and `ImageBlocks` to read one image's blocks);
//! - `source`: what a `LOWERS` entry names (a directory, an image,
//!   `FILE@OFFSET[+SIZE]`, a FlatImage binary's layers).
//!
//! What is taken from the `dwarfs` crate (MIT/Apache): the frozen-thrift
//! metadata decoder and FSST string tables. Sections, blocks, validation
//! and the cache are ours (see the README for why).
pub mod binary;
mod block;
pub mod cache;
pub mod codec;
mod readahead;
pub mod source;
#[cfg(test)]
mod testing;

pub use cache::{BlockCache, CacheStats, DEFAULT_CACHE_BYTES, ImageBlocks};
pub use codec::Codec;

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

//! DwarFS images read in-process (issue 20): the second kind of lower.
//!
//! An image is read once at mount: its sections are walked and checked, its
//! metadata is decoded and validated into an in-memory index (names, tree,
//! inodes, chunks); file data is read through one block cache shared by
//! every image of a mount. Nothing in an image can make the daemon read
//! outside it, panic, hang, or hold memory beyond the cache bound.
//!
//! Files, from the bottom up:
//! - `codec`: section payload codecs (none, zstd, lzma, lz4/lz4hc, ...),
//!   whole and (for data blocks) incremental decoding, with output bounds.
//!
//! What is taken from the `dwarfs` crate (MIT/Apache): the frozen-thrift
//! metadata decoder and FSST string tables. Sections, blocks, validation
//! and the cache are ours (see the README for why).
pub mod codec;

pub use codec::Codec;

/// Where one section's payload lies in the file that holds the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLoc {
    /// Offset of the payload (after the section header) in the file.
    pub payload: u64,
    /// Length of the compressed payload.
    pub len: u64,
    /// How the payload is compressed.
    pub codec: Codec,
}

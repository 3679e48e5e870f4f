//! One data block's life in the cache: not loaded, partly decoded, decoded,
//! or failed.
//!
//! Loading reads the section header and the compressed payload, checks the
//! header against the `BlockLoc` the section walker found and the payload
//! against the section's XXH3-64, and starts the decoder. A zstd or lzma
//! block then decodes in steps (`advance`), keeping its payload and decoder
//! until it is whole; none and lz4 blocks are decoded whole at once.
//!
//! Invariants: a block never holds more decoded bytes than the image's block
//! size, nor a payload longer than `max_payload(block_size)`; `charge` is an
//! upper bound of the memory a state holds, and `load_bound` an upper bound
//! of the charge a load can reach. Nothing here panics on bad data: every
//! length is checked before it is used.
use super::BlockLoc;
use super::codec::{self, BlockDecoder, Codec, CodecError, Progress};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bytes of a section header.
pub const HEADER_LEN: u64 = 64;

/// The section type of a data block.
const SECTION_BLOCK: u16 = 0;

/// The longest payload a block of `block_size` bytes may have: codecs add a
/// little to data that does not compress (zstd and lz4 well under 1/64).
pub fn max_payload(block_size: usize) -> usize {
    block_size
        .saturating_add(block_size / 64)
        .saturating_add(64 * 1024)
}

/// The state of one block.
pub enum State {
    Empty,
    Partial(Box<Partial>),
    Done(Arc<Vec<u8>>),
    Failed,
}

/// A block decoded up to some point.
pub struct Partial {
    payload: Vec<u8>,
    decoder: BlockDecoder,
    out: Vec<u8>,
    state: usize,
}

/// Why a block could not be read.
#[derive(Debug)]
pub enum BlockError {
    Io(std::io::Error),
    Header(String),
    Checksum { stored: u64, computed: u64 },
    Codec(CodecError),
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Io(e) => write!(f, "read failed: {e}"),
            BlockError::Header(why) => write!(f, "bad section header: {why}"),
            BlockError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored xxh3 {stored:016x}, computed {computed:016x})"
            ),
            BlockError::Codec(e) => write!(f, "{e}"),
        }
    }
}

impl From<CodecError> for BlockError {
    fn from(e: CodecError) -> Self {
        BlockError::Codec(e)
    }
}

/// Where a block comes from.
pub struct Source<'a> {
    pub file: &'a File,
    pub loc: &'a BlockLoc,
    pub block_size: usize,
}

impl State {
    /// An upper bound of the bytes this state holds.
    pub fn charge(&self) -> usize {
        match self {
            State::Empty | State::Failed => 0,
            State::Done(data) => data.capacity(),
            State::Partial(p) => p
                .payload
                .capacity()
                .saturating_add(p.out.capacity())
                .saturating_add(p.state),
        }
    }

    /// An upper bound of the charge loading `loc` can reach.
    pub fn load_bound(loc: &BlockLoc, block_size: usize) -> usize {
        let len = usize::try_from(loc.len).unwrap_or(usize::MAX);
        len.min(max_payload(block_size))
            .saturating_add(block_size)
            .saturating_add(BlockDecoder::state_bound(loc.codec, block_size))
    }

    /// Decoded bytes ready to copy.
    pub fn available(&self) -> usize {
        match self {
            State::Partial(p) => p.out.len(),
            State::Done(data) => data.len(),
            State::Empty | State::Failed => 0,
        }
    }

    /// Whether nothing more can be decoded.
    pub fn is_final(&self) -> bool {
        matches!(self, State::Done(_) | State::Failed)
    }

    /// Loads a block: a `Partial` for incremental codecs, else `Done`.
    /// Returns the state and the bytes decoded.
    pub fn load(src: &Source<'_>) -> Result<(State, usize), BlockError> {
        let payload = read_checked(src)?;
        let codec = src.loc.codec;
        if codec.is_incremental() {
            let (decoder, cap) = BlockDecoder::new(codec, &payload, src.block_size)?;
            let partial = Partial {
                state: BlockDecoder::state_bound(codec, src.block_size),
                payload,
                decoder,
                out: Vec::with_capacity(cap),
            };
            return Ok((State::Partial(Box::new(partial)), 0));
        }
        let data = match codec {
            Codec::None if payload.len() > src.block_size => {
                return Err(CodecError::TooLarge {
                    limit: src.block_size,
                }
                .into());
            }
            Codec::None => payload,
            _ => codec::decode_all(codec, &payload, src.block_size)?,
        };
        let n = data.len();
        Ok((State::Done(Arc::new(data)), n))
    }

    /// Decodes a partial block on to at least `want` bytes (or its end,
    /// where it becomes `Done`). Returns the bytes decoded.
    pub fn advance(&mut self, want: usize) -> Result<usize, BlockError> {
        let State::Partial(p) = self else {
            return Ok(0);
        };
        let before = p.out.len();
        let progress = p.decoder.advance(&p.payload, &mut p.out, want)?;
        let decoded = p.out.len().saturating_sub(before);
        if progress == Progress::Done {
            let mut out = std::mem::take(&mut p.out);
            if out.capacity() > out.len() {
                out.shrink_to_fit();
            }
            *self = State::Done(Arc::new(out));
        }
        Ok(decoded)
    }

    /// Copies decoded bytes from `offset` into `buf`; returns how many.
    pub fn copy(&self, offset: usize, buf: &mut [u8]) -> usize {
        match self {
            State::Partial(p) => copy_from(&p.out, offset, buf),
            State::Done(data) => copy_from(data, offset, buf),
            State::Empty | State::Failed => 0,
        }
    }
}

/// Copies `data[offset..]` into `buf` as far as both go.
pub fn copy_from(data: &[u8], offset: usize, buf: &mut [u8]) -> usize {
    let src = data.get(offset..).unwrap_or_default();
    let n = src.len().min(buf.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
    n
}

/// Reads the header and payload of a block section and checks them.
fn read_checked(src: &Source<'_>) -> Result<Vec<u8>, BlockError> {
    let loc = src.loc;
    let len = usize::try_from(loc.len)
        .ok()
        .filter(|&n| n <= max_payload(src.block_size))
        .ok_or_else(|| {
            BlockError::Header(format!(
                "a payload of {} bytes is too long for a block",
                loc.len
            ))
        })?;
    if loc.header.checked_add(HEADER_LEN) != Some(loc.payload) {
        return Err(BlockError::Header(
            "payload not right after its header".into(),
        ));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    src.file
        .read_exact_at(&mut header, loc.header)
        .map_err(BlockError::Io)?;
    check_header(&header, loc)?;
    let mut payload = vec![0u8; len];
    src.file
        .read_exact_at(&mut payload, loc.payload)
        .map_err(BlockError::Io)?;
    let (stored, hashed) = header.split_at(48);
    let stored = stored
        .get(40..48)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes);
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(hashed);
    hasher.update(&payload);
    let computed = hasher.digest();
    if stored != computed {
        return Err(BlockError::Checksum { stored, computed });
    }
    Ok(payload)
}

fn check_header(h: &[u8; HEADER_LEN as usize], loc: &BlockLoc) -> Result<(), BlockError> {
    let u16_at = |i: usize| {
        h.get(i..i + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_le_bytes)
    };
    let u64_at = |i: usize| {
        h.get(i..i + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if h.get(..6) != Some(b"DWARFS".as_slice()) {
        return Err(BlockError::Header("no DWARFS magic".into()));
    }
    if u16_at(52) != Some(SECTION_BLOCK) {
        return Err(BlockError::Header("not a block section".into()));
    }
    if u16_at(54) != Some(loc.codec.to_u16()) {
        return Err(BlockError::Header(
            "compression differs from the index".into(),
        ));
    }
    if u64_at(56) != Some(loc.len) {
        return Err(BlockError::Header("length differs from the index".into()));
    }
    Ok(())
}

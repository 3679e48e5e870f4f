//! Section payload codecs.
//!
//! DwarFS compresses each section on its own with the algorithm named in
//! its header. `decode_all` decodes a whole payload with a hard bound on the
//! output: a payload that claims or produces more than `max_out` bytes is
//! an error, never an allocation of that size.
//!
//! `BlockDecoder` decodes a data block in steps and keeps its place between
//! them, so a read near the start of a 16 MiB block decodes only that far.
//! Its output buffer is allocated once, at most `max_out` bytes, and never
//! moves: zstd decodes straight into it (`StableOutBuffer`) and so keeps no
//! window of its own.
use std::fmt;

/// A section's compression, as numbered in the DwarFS section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Lzma,
    Zstd,
    Lz4,
    Lz4hc,
    Brotli,
    Flac,
    Ricepp,
    /// A number this reader does not know.
    Unknown(u16),
}

impl Codec {
    pub fn from_u16(n: u16) -> Codec {
        match n {
            0 => Codec::None,
            1 => Codec::Lzma,
            2 => Codec::Zstd,
            3 => Codec::Lz4,
            4 => Codec::Lz4hc,
            5 => Codec::Brotli,
            6 => Codec::Flac,
            7 => Codec::Ricepp,
            n => Codec::Unknown(n),
        }
    }

    /// The number the section header uses for this codec.
    pub fn to_u16(self) -> u16 {
        match self {
            Codec::None => 0,
            Codec::Lzma => 1,
            Codec::Zstd => 2,
            Codec::Lz4 => 3,
            Codec::Lz4hc => 4,
            Codec::Brotli => 5,
            Codec::Flac => 6,
            Codec::Ricepp => 7,
            Codec::Unknown(n) => n,
        }
    }

    /// Whether `BlockDecoder` decodes this codec in steps (the others are
    /// decoded whole by `decode_all`: lz4 is cheap, none is a copy).
    pub fn is_incremental(self) -> bool {
        matches!(self, Codec::Zstd | Codec::Lzma)
    }

    /// Whether this reader decodes the codec. Not: FLAC and ricepp (mkdwarfs'
    /// categorizer uses them for audio and image sample data; no well-kept
    /// Rust decoder of DwarFS' framing), and brotli: mkdwarfs never picks it
    /// by itself, neither the `dwarfs` crate nor `dwarfs-enc` reads or writes
    /// it, and with no mkdwarfs here to make a real image a decoder of its
    /// framing would ship untested. Their data reads as EIO, logged once per
    /// image and codec.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            Codec::None | Codec::Lzma | Codec::Zstd | Codec::Lz4 | Codec::Lz4hc
        )
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::None => f.write_str("none"),
            Codec::Lzma => f.write_str("lzma"),
            Codec::Zstd => f.write_str("zstd"),
            Codec::Lz4 => f.write_str("lz4"),
            Codec::Lz4hc => f.write_str("lz4hc"),
            Codec::Brotli => f.write_str("brotli"),
            Codec::Flac => f.write_str("flac"),
            Codec::Ricepp => f.write_str("ricepp"),
            Codec::Unknown(n) => write!(f, "unknown codec {n}"),
        }
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The codec is not one this reader decodes.
    Unsupported(Codec),
    /// The payload decodes to more than the bound.
    TooLarge { limit: usize },
    /// The payload is not valid for its codec.
    Corrupt { codec: Codec, reason: String },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Unsupported(c) => write!(f, "compression {c} is not supported"),
            CodecError::TooLarge { limit } => {
                write!(f, "decodes to more than {limit} bytes")
            }
            CodecError::Corrupt { codec, reason } => write!(f, "corrupt {codec} data: {reason}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Compressed bytes handed to a `BlockDecoder` per step: small, so that a
/// read stops decoding soon after the place it asked for.
const IN_STEP: usize = 8 * 1024;

/// The most memory liblzma may take for one stream (its dictionary, which
/// it touches only as far as the output goes). mkdwarfs' lzma level 9 uses
/// a 64 MiB dictionary.
const LZMA_MEMLIMIT: u64 = 256 << 20;

/// Bytes an lzma decoder holds beside its dictionary.
const LZMA_STATE: usize = 64 * 1024;

/// Bytes a zstd decoder holds with a stable output buffer (the context and
/// one compressed block of input, 128 KiB).
const ZSTD_STATE: usize = 256 * 1024;

/// zstd's `dstSize_tooSmall` (error numbers are pinned since zstd 1.3.1):
/// the frame decodes to more than the output buffer holds.
const ZSTD_DST_TOO_SMALL: usize = 0usize.wrapping_sub(70);

/// How far a `BlockDecoder::advance` call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The output reached the asked length; more may follow.
    More,
    /// The payload is decoded whole and ended where it should.
    Done,
}

/// Decodes one data block in steps (zstd and lzma; see `Codec::is_incremental`).
pub enum BlockDecoder {
    Zstd {
        dctx: zstd_safe::DCtx<'static>,
        /// Compressed bytes consumed so far.
        pos: usize,
    },
    Lzma(liblzma::stream::Stream),
}

impl BlockDecoder {
    /// Starts decoding `payload`; returns the decoder and the capacity its
    /// output buffer must have (allocated once by the caller, never grown).
    pub fn new(
        codec: Codec,
        payload: &[u8],
        max_out: usize,
    ) -> Result<(BlockDecoder, usize), CodecError> {
        match codec {
            Codec::Zstd => {
                let size = match zstd_safe::get_frame_content_size(payload) {
                    Ok(Some(n)) => usize::try_from(n).unwrap_or(usize::MAX),
                    Ok(None) => max_out,
                    Err(_) => return Err(corrupt(codec, "bad frame header")),
                };
                if size > max_out {
                    return Err(CodecError::TooLarge { limit: max_out });
                }
                let mut dctx = zstd_safe::DCtx::create();
                dctx.set_parameter(zstd_safe::DParameter::StableOutBuffer(true))
                    .map_err(|code| corrupt(codec, zstd_safe::get_error_name(code)))?;
                Ok((BlockDecoder::Zstd { dctx, pos: 0 }, size))
            }
            Codec::Lzma => {
                let stream = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
                    .map_err(|e| corrupt(codec, e.to_string()))?;
                Ok((BlockDecoder::Lzma(stream), max_out))
            }
            other => Err(CodecError::Unsupported(other)),
        }
    }

    /// The most memory a decoder for `codec` holds beside its payload and
    /// output, for an output of at most `max_out` bytes. For lzma that is
    /// the touched part of its dictionary, at most the output so far.
    pub fn state_bound(codec: Codec, max_out: usize) -> usize {
        match codec {
            Codec::Zstd => ZSTD_STATE,
            Codec::Lzma => max_out.saturating_add(LZMA_STATE),
            _ => 0,
        }
    }

    /// Decodes until `out` holds at least `want` bytes or the payload ends.
    /// `out` must be the buffer this decoder started with, never moved.
    pub fn advance(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
        want: usize,
    ) -> Result<Progress, CodecError> {
        match self {
            BlockDecoder::Zstd { dctx, pos } => zstd_advance(dctx, pos, payload, out, want),
            BlockDecoder::Lzma(stream) => lzma_advance(stream, payload, out, want),
        }
    }
}

fn zstd_advance(
    dctx: &mut zstd_safe::DCtx<'static>,
    pos: &mut usize,
    payload: &[u8],
    out: &mut Vec<u8>,
    want: usize,
) -> Result<Progress, CodecError> {
    use zstd_safe::{InBuffer, OutBuffer};
    // A full buffer must see the frame end: a block may not run past it.
    while out.len() < want || out.len() == out.capacity() {
        let end = pos.saturating_add(IN_STEP).min(payload.len());
        let mut input = InBuffer::around(payload.get(..end).unwrap_or_default());
        input.set_pos((*pos).min(end));
        let before = out.len();
        let hint = {
            let at = out.len();
            let mut output = OutBuffer::around_pos(out, at);
            dctx.decompress_stream(&mut output, &mut input)
        };
        let hint = match hint {
            Ok(hint) => hint,
            Err(code) if out.len() == out.capacity() || code == ZSTD_DST_TOO_SMALL => {
                return Err(CodecError::TooLarge {
                    limit: out.capacity(),
                });
            }
            Err(code) => return Err(corrupt(Codec::Zstd, zstd_safe::get_error_name(code))),
        };
        let moved = input.pos() != *pos || out.len() != before;
        *pos = input.pos();
        if hint == 0 {
            if *pos != payload.len() {
                return Err(corrupt(Codec::Zstd, "data after the end of the frame"));
            }
            return Ok(Progress::Done);
        }
        if !moved {
            let why = if end == payload.len() {
                "truncated frame"
            } else {
                "decoder stalled"
            };
            return Err(corrupt(Codec::Zstd, why));
        }
    }
    Ok(Progress::More)
}

fn lzma_advance(
    stream: &mut liblzma::stream::Stream,
    payload: &[u8],
    out: &mut Vec<u8>,
    want: usize,
) -> Result<Progress, CodecError> {
    use liblzma::stream::{Action, Status};
    // A full buffer must see the stream end: a block may not run past it.
    while out.len() < want || out.len() == out.capacity() {
        let pos = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        let end = pos.saturating_add(IN_STEP).min(payload.len());
        let chunk = payload.get(pos..end).unwrap_or_default();
        let action = if end == payload.len() {
            Action::Finish
        } else {
            Action::Run
        };
        let before = (stream.total_in(), stream.total_out());
        let status = stream
            .process_vec(chunk, out, action)
            .map_err(|e| corrupt(Codec::Lzma, e.to_string()))?;
        if status == Status::StreamEnd {
            if stream.total_in() != payload.len() as u64 {
                return Err(corrupt(Codec::Lzma, "data after the end of the stream"));
            }
            return Ok(Progress::Done);
        }
        if (stream.total_in(), stream.total_out()) == before {
            if out.len() == out.capacity() {
                return Err(CodecError::TooLarge {
                    limit: out.capacity(),
                });
            }
            let why = if end == payload.len() {
                "truncated stream"
            } else {
                "decoder stalled"
            };
            return Err(corrupt(Codec::Lzma, why));
        }
    }
    Ok(Progress::More)
}

/// Decodes a whole payload; the result is at most `max_out` bytes.
pub fn decode_all(codec: Codec, payload: &[u8], max_out: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        Codec::None if payload.len() > max_out => Err(CodecError::TooLarge { limit: max_out }),
        Codec::None => Ok(payload.to_vec()),
        Codec::Zstd => match zstd_safe::get_frame_content_size(payload) {
            Ok(Some(_)) => stepped_all(codec, payload, max_out),
            _ => zstd_all(payload, max_out),
        },
        Codec::Lzma => lzma_all(payload, max_out),
        Codec::Lz4 | Codec::Lz4hc => lz4_all(codec, payload, max_out),
        other => Err(CodecError::Unsupported(other)),
    }
}

/// A frame that states its size decodes straight into a buffer of that
/// size, with no window copy (about twice as fast as `zstd_all`).
fn stepped_all(codec: Codec, payload: &[u8], max_out: usize) -> Result<Vec<u8>, CodecError> {
    let (mut decoder, cap) = BlockDecoder::new(codec, payload, max_out)?;
    let mut out = Vec::with_capacity(cap);
    match decoder.advance(payload, &mut out, usize::MAX)? {
        Progress::Done => Ok(out),
        Progress::More => Err(corrupt(codec, "truncated")),
    }
}

fn corrupt(codec: Codec, reason: impl Into<String>) -> CodecError {
    CodecError::Corrupt {
        codec,
        reason: reason.into(),
    }
}

/// Streams the frame into a growing buffer, so a frame header that claims
/// a huge size costs nothing until the data is really there.
fn zstd_all(payload: &[u8], max_out: usize) -> Result<Vec<u8>, CodecError> {
    use zstd_safe::{DCtx, InBuffer, OutBuffer};
    let mut dctx = DCtx::create();
    let mut out: Vec<u8> = Vec::with_capacity(payload.len().saturating_mul(4).min(max_out));
    let mut input = InBuffer::around(payload);
    loop {
        grow_bounded(&mut out, max_out)?;
        let before = (input.pos(), out.len());
        let hint = {
            let mut output = OutBuffer::around_pos(&mut out, before.1);
            dctx.decompress_stream(&mut output, &mut input)
                .map_err(|code| corrupt(Codec::Zstd, zstd_safe::get_error_name(code)))?
        };
        if hint == 0 {
            if input.pos() != payload.len() {
                return Err(corrupt(Codec::Zstd, "data after the end of the frame"));
            }
            return Ok(out);
        }
        let stuck = (input.pos(), out.len()) == before && out.len() < out.capacity();
        if stuck || (input.pos() == payload.len() && out.len() < out.capacity()) {
            return Err(corrupt(Codec::Zstd, "truncated frame"));
        }
    }
}

/// Grows a full `out` (doubling, at least 64 KiB) but never past `max_out`;
/// a full buffer already at the bound is `TooLarge`.
fn grow_bounded(out: &mut Vec<u8>, max_out: usize) -> Result<(), CodecError> {
    if out.len() == out.capacity() {
        if out.len() >= max_out {
            return Err(CodecError::TooLarge { limit: max_out });
        }
        let grow = out.capacity().max(64 * 1024).min(max_out - out.len());
        out.reserve_exact(grow);
    }
    Ok(())
}

fn lzma_all(payload: &[u8], max_out: usize) -> Result<Vec<u8>, CodecError> {
    use liblzma::stream::{Action, Status, Stream};
    let bad = |e: liblzma::stream::Error| corrupt(Codec::Lzma, e.to_string());
    let mut stream = Stream::new_stream_decoder(LZMA_MEMLIMIT, 0).map_err(bad)?;
    let mut out: Vec<u8> = Vec::with_capacity(payload.len().saturating_mul(4).min(max_out));
    loop {
        grow_bounded(&mut out, max_out)?;
        let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        let rest = payload.get(consumed..).unwrap_or_default();
        let before = (stream.total_in(), stream.total_out());
        let status = stream
            .process_vec(rest, &mut out, Action::Finish)
            .map_err(bad)?;
        if status == Status::StreamEnd {
            if stream.total_in() != payload.len() as u64 {
                return Err(corrupt(Codec::Lzma, "data after the end of the stream"));
            }
            return Ok(out);
        }
        if (stream.total_in(), stream.total_out()) == before && out.len() < out.capacity() {
            return Err(corrupt(Codec::Lzma, "truncated stream"));
        }
    }
}

/// DwarFS' LZ4 payload: the decoded size (u32 LE), then one LZ4 block.
fn lz4_all(codec: Codec, payload: &[u8], max_out: usize) -> Result<Vec<u8>, CodecError> {
    let (size, block) = payload
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt(codec, "no size prefix"))?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > max_out {
        return Err(CodecError::TooLarge { limit: max_out });
    }
    let mut out = vec![0u8; size];
    let n = lz4_flex::block::decompress_into(block, &mut out)
        .map_err(|e| corrupt(codec, e.to_string()))?;
    if n != size {
        return Err(corrupt(
            codec,
            format!("{n} bytes decoded, {size} announced"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd(data: &[u8], level: i32) -> Vec<u8> {
        let mut out = vec![0u8; zstd_safe::compress_bound(data.len())];
        let n = zstd_safe::compress(&mut out[..], data, level).unwrap();
        out.truncate(n);
        out
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_supported_codec_round_trips() {
        let data = sample();
        let z = zstd(&data, 3);
        assert_eq!(decode_all(Codec::Zstd, &z, data.len()).unwrap(), data);
        let mut xz = Vec::new();
        {
            let mut s = liblzma::stream::Stream::new_easy_encoder(1, liblzma::stream::Check::Crc32)
                .unwrap();
            xz.reserve(data.len());
            s.process_vec(&data, &mut xz, liblzma::stream::Action::Finish)
                .unwrap();
        }
        assert_eq!(decode_all(Codec::Lzma, &xz, data.len()).unwrap(), data);
        let mut lz = (data.len() as u32).to_le_bytes().to_vec();
        lz.extend(lz4_flex::block::compress(&data));
        assert_eq!(decode_all(Codec::Lz4, &lz, data.len()).unwrap(), data);
        assert_eq!(decode_all(Codec::None, &data, data.len()).unwrap(), data);
    }

    #[test]
    fn output_beyond_the_bound_is_an_error() {
        let data = vec![0u8; 1 << 20];
        let z = zstd(&data, 3);
        assert_eq!(
            decode_all(Codec::Zstd, &z, 1000),
            Err(CodecError::TooLarge { limit: 1000 })
        );
        let mut lz = (u32::MAX).to_le_bytes().to_vec();
        lz.extend(lz4_flex::block::compress(&data));
        assert!(matches!(
            decode_all(Codec::Lz4, &lz, 1 << 24),
            Err(CodecError::TooLarge { .. })
        ));
    }

    fn lzma(data: &[u8]) -> Vec<u8> {
        use liblzma::stream::{Action, Check, Stream};
        let mut s = Stream::new_easy_encoder(1, Check::Crc64).unwrap();
        let mut out = Vec::with_capacity(data.len() + 4096);
        s.process_vec(data, &mut out, Action::Finish).unwrap();
        out
    }

    /// A zstd frame that does not state its size (as a streaming writer
    /// makes it).
    fn zstd_unsized(data: &[u8]) -> Vec<u8> {
        let mut c = zstd_safe::CCtx::create();
        c.set_parameter(zstd_safe::CParameter::ContentSizeFlag(false))
            .unwrap();
        let mut out = vec![0u8; zstd_safe::compress_bound(data.len())];
        let n = c.compress2(&mut out[..], data).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn block_decoders_step_through_a_block() {
        let data = sample();
        for (codec, payload) in [
            (Codec::Zstd, zstd(&data, 19)),
            (Codec::Zstd, zstd_unsized(&data)),
            (Codec::Lzma, lzma(&data)),
        ] {
            let (mut d, cap) = BlockDecoder::new(codec, &payload, data.len()).unwrap();
            assert_eq!(cap, data.len());
            let mut out = Vec::with_capacity(cap);
            let mut want = 1;
            loop {
                let p = d.advance(&payload, &mut out, want).unwrap();
                assert_eq!(out[..], data[..out.len()], "{codec} at {want}");
                if p == Progress::Done {
                    break;
                }
                assert!(out.len() >= want && out.len() < want + 200_000, "{codec}");
                want = out.len() + 100_000;
            }
            assert_eq!(out, data, "{codec}");
        }
    }

    #[test]
    fn block_decoders_refuse_more_than_the_block() {
        let data = sample();
        let max = data.len() - 1;
        assert!(matches!(
            BlockDecoder::new(Codec::Zstd, &zstd(&data, 3), max),
            Err(CodecError::TooLarge { .. })
        ));
        for (codec, payload) in [
            (Codec::Zstd, zstd_unsized(&data)),
            (Codec::Lzma, lzma(&data)),
        ] {
            let (mut d, cap) = BlockDecoder::new(codec, &payload, max).unwrap();
            let mut out = Vec::with_capacity(cap);
            // Asking for exactly the block still finds that it runs over.
            let got = d.advance(&payload, &mut out, max);
            assert!(
                matches!(got, Err(CodecError::TooLarge { .. })),
                "{codec}: {got:?}"
            );
            assert!(out.len() <= max);
        }
    }

    #[test]
    fn truncated_or_flipped_payloads_are_errors() {
        let data = sample();
        let z = zstd(&data, 3);
        assert!(decode_all(Codec::Zstd, &z[..z.len() / 2], data.len()).is_err());
        let mut flipped = z.clone();
        flipped[z.len() / 2] ^= 0xff;
        // A flip may still decode (zstd frames here carry no checksum), but
        // never beyond the bound and never with a panic.
        let _ = decode_all(Codec::Zstd, &flipped, data.len());
        assert_eq!(
            decode_all(Codec::Flac, &z, data.len()),
            Err(CodecError::Unsupported(Codec::Flac))
        );
    }
}

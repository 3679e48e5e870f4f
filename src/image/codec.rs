//! Section payload codecs.
//!
//! DwarFS compresses each section on its own with the algorithm named in
//! its header. `decode_all` decodes a whole payload with a hard bound on the
//! output: a payload that claims or produces more than `max_out` bytes is
//! an error, never an allocation of that size.
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

    /// Whether this reader decodes the codec.
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

/// Decodes a whole payload; the result is at most `max_out` bytes.
pub fn decode_all(codec: Codec, payload: &[u8], max_out: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        Codec::None if payload.len() > max_out => Err(CodecError::TooLarge { limit: max_out }),
        Codec::None => Ok(payload.to_vec()),
        Codec::Zstd => zstd_all(payload, max_out),
        Codec::Lzma => lzma_all(payload, max_out),
        Codec::Lz4 | Codec::Lz4hc => lz4_all(codec, payload, max_out),
        other => Err(CodecError::Unsupported(other)),
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
        if out.len() == out.capacity() {
            if out.len() >= max_out {
                return Err(CodecError::TooLarge { limit: max_out });
            }
            let grow = out.capacity().max(64 * 1024).min(max_out - out.len());
            out.reserve_exact(grow);
        }
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

fn lzma_all(payload: &[u8], max_out: usize) -> Result<Vec<u8>, CodecError> {
    use liblzma::stream::{Action, Status, Stream};
    let bad = |e: liblzma::stream::Error| corrupt(Codec::Lzma, e.to_string());
    let mut stream = Stream::new_stream_decoder(256 << 20, 0).map_err(bad)?;
    let mut out: Vec<u8> = Vec::with_capacity(payload.len().saturating_mul(4).min(max_out));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= max_out {
                return Err(CodecError::TooLarge { limit: max_out });
            }
            let grow = out.capacity().max(64 * 1024).min(max_out - out.len());
            out.reserve_exact(grow);
        }
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

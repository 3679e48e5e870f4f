//! Test helpers for the image modules: block sections built by hand.
//!
//! `section` writes one DwarFS section (64-byte header with the right
//! XXH3-64, then the payload); `encode` compresses data with a codec as
//! mkdwarfs frames it; `ImageFile` lays sections one after another in an
//! unlinked temporary file and hands back their `BlockLoc`s. Only unit tests
//! use these; nothing here is built into the daemon.
use super::{BlockLoc, Codec};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The section type of a data block.
pub const BLOCK: u16 = 0;

/// One section: header (with its checksum) and payload.
pub fn section(number: u32, kind: u16, codec: Codec, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + payload.len());
    out.extend_from_slice(b"DWARFS");
    out.extend_from_slice(&[2, 5]);
    out.extend_from_slice(&[0u8; 32]);
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&codec.to_u16().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = xxhash_rust::xxh3::xxh3_64(&out[48..]);
    out[40..48].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Re-computes the checksum of a section built by `section` (after a test
/// changed its bytes on purpose).
pub fn reseal(section: &mut [u8]) {
    if section.len() >= 64 {
        let sum = xxhash_rust::xxh3::xxh3_64(&section[48..]);
        section[40..48].copy_from_slice(&sum.to_le_bytes());
    }
}

/// `data` compressed with `codec` as a DwarFS block payload.
pub fn encode(codec: Codec, data: &[u8], level: i32) -> Vec<u8> {
    match codec {
        Codec::None => data.to_vec(),
        Codec::Zstd => {
            let mut out = vec![0u8; zstd_safe::compress_bound(data.len())];
            let n = zstd_safe::compress(&mut out[..], data, level).unwrap();
            out.truncate(n);
            out
        }
        Codec::Lzma => {
            use liblzma::stream::{Action, Check, Stream};
            let mut s = Stream::new_easy_encoder(level.clamp(0, 9) as u32, Check::Crc64).unwrap();
            let mut out = Vec::with_capacity(data.len() + data.len() / 2 + 4096);
            s.process_vec(data, &mut out, Action::Finish).unwrap();
            out
        }
        Codec::Lz4 | Codec::Lz4hc => {
            let mut out = (data.len() as u32).to_le_bytes().to_vec();
            out.extend(lz4_flex::block::compress(data));
            out
        }
        // Unsupported codecs: any bytes will do, they are never decoded.
        _ => data.to_vec(),
    }
}

/// Seeded data that compresses like text (about 3:1 with zstd).
pub fn sample(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [
        b"block ", b"cache ", b"the ", b"image\n", b"zstd ", b"of ", b"data ", b"fimfs ",
    ];
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let r = rng.next();
        if r.is_multiple_of(5) {
            out.extend_from_slice(&r.to_le_bytes()[..3]);
        } else {
            out.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()]);
        }
    }
    out.truncate(len);
    out
}

/// A small seeded generator (xorshift64*), for data and fuzzing.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An unlinked temporary file holding sections.
pub struct ImageFile {
    pub file: Arc<File>,
    pub blocks: Vec<BlockLoc>,
}

impl ImageFile {
    /// Lays `payloads` (codec, compressed payload) out as block sections
    /// after a `lead` of filler bytes (as an image after a header).
    pub fn new(lead: usize, payloads: &[(Codec, Vec<u8>)]) -> ImageFile {
        let mut bytes = vec![0x5a; lead];
        let mut blocks = Vec::new();
        for (i, (codec, payload)) in payloads.iter().enumerate() {
            let header = bytes.len() as u64;
            bytes.extend(section(i as u32, BLOCK, *codec, payload));
            blocks.push(BlockLoc {
                header,
                payload: header + 64,
                len: payload.len() as u64,
                codec: *codec,
            });
        }
        ImageFile {
            file: Arc::new(temp_file(&bytes)),
            blocks,
        }
    }
}

/// An unlinked temporary file with `bytes` in it.
pub fn temp_file(bytes: &[u8]) -> File {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("fimfs-blk-{}-{n}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file
}

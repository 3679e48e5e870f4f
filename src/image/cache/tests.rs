//! Tests of the block cache over block sections built by hand.
use super::*;
use crate::image::testing::{ImageFile, Rng, encode, reseal, sample, section, temp_file};
use std::os::unix::fs::FileExt;
use std::sync::Barrier;

const MIB: usize = 1 << 20;

fn image(cache: &BlockCache, lead: usize, blocks: &[(Codec, Vec<u8>)], bs: usize) -> ImageBlocks {
    let f = ImageFile::new(lead, blocks);
    cache.register("test.dwarfs", f.file, f.blocks, bs).unwrap()
}

/// Reads a whole block in pieces of varying size.
/// Each of `data` encoded with the next of `codecs`, in turn.
fn encoded_in_turn(data: &[Vec<u8>], codecs: &[Codec]) -> Vec<(Codec, Vec<u8>)> {
    data.iter()
        .zip(codecs.iter().cycle())
        .map(|(d, &c)| (c, encode(c, d, 1)))
        .collect()
}

fn read_block(img: &ImageBlocks, block: u32, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut buf = vec![0u8; 1 + rng.below(300_000)];
        let n = img.read(block, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn every_codec_reads_back_small_blocks() {
    let bs = 256 * 1024;
    let codecs = [
        Codec::None,
        Codec::Zstd,
        Codec::Lzma,
        Codec::Lz4,
        Codec::Lz4hc,
    ];
    let data: Vec<Vec<u8>> = (0..codecs.len() as u64).map(|i| sample(bs, i)).collect();
    let mut blocks: Vec<(Codec, Vec<u8>)> = codecs
        .iter()
        .zip(&data)
        .map(|(&c, d)| (c, encode(c, d, 3)))
        .collect();
    // A shorter last block, as images end.
    let last = sample(1000, 99);
    blocks.push((Codec::Zstd, encode(Codec::Zstd, &last, 3)));
    let cache = BlockCache::new(64 * MIB);
    let img = image(&cache, 4096, &blocks, bs);
    let mut rng = Rng(7);
    for (i, d) in data.iter().chain([&last]).enumerate() {
        assert_eq!(&read_block(&img, i as u32, &mut rng), d, "block {i}");
    }
    let mut buf = [0u8; 100];
    assert_eq!(img.read(5, 950, &mut buf), Ok(50), "short read at the end");
    assert_eq!(img.read(0, bs as u64, &mut buf), Ok(0));
    assert_eq!(img.read(0, u64::MAX, &mut buf), Ok(0));
    assert_eq!(img.read(6, 0, &mut buf), Err(Errno::EIO), "no such block");
    assert_eq!(cache.stats().loads, 6);
}

#[test]
fn large_blocks_decode_only_as_far_as_they_are_read() {
    for codec in [Codec::Zstd, Codec::Lzma] {
        let data = sample(16 * MIB, 5);
        let blocks = [(codec, encode(codec, &data, 1))];
        let cache = BlockCache::new(256 * MIB);
        let img = image(&cache, 0, &blocks, 16 * MIB);
        let mut buf = vec![0u8; 4096];
        assert_eq!(img.read(0, 0, &mut buf), Ok(4096));
        assert_eq!(buf, data[..4096]);
        let cold = cache.stats().decoded_bytes;
        println!("{codec}: a cold 4 KiB read decoded {cold} bytes of 16 MiB");
        assert!(cold >= 4096 && cold <= MIB as u64, "{codec}: {cold}");
        let at = 8 * MIB as u64;
        assert_eq!(img.read(0, at, &mut buf), Ok(4096));
        assert_eq!(buf, data[8 * MIB..8 * MIB + 4096]);
        let mid = cache.stats().decoded_bytes;
        assert!(mid >= at + 4096 && mid < 10 * MIB as u64, "{codec}: {mid}");
        // Back to the start: already decoded, nothing more.
        assert_eq!(img.read(0, 100, &mut buf), Ok(4096));
        assert_eq!(cache.stats().decoded_bytes, mid);
        let mut rng = Rng(3);
        assert!(read_block(&img, 0, &mut rng) == data, "{codec}");
        let s = cache.stats();
        assert_eq!((s.loads, s.decoded_bytes), (1, 16 * MIB as u64), "{codec}");
        assert!(
            s.held_bytes <= 16 * MIB + 4096,
            "decoded: only the data is held"
        );
    }
}

#[test]
fn large_lz4_and_stored_blocks_decode_whole() {
    let data = sample(16 * MIB, 6);
    let codecs = [Codec::Lz4, Codec::Lz4hc, Codec::None];
    let blocks: Vec<_> = codecs.iter().map(|&c| (c, encode(c, &data, 1))).collect();
    let cache = BlockCache::new(256 * MIB);
    let img = image(&cache, 0, &blocks, 16 * MIB);
    let mut buf = vec![0u8; 4096];
    for i in 0..3u32 {
        assert_eq!(img.read(i, 8 * MIB as u64, &mut buf), Ok(4096));
        assert!(buf[..] == data[8 * MIB..8 * MIB + 4096], "block {i}");
        assert_eq!(img.read(i, 16 * MIB as u64 - 10, &mut buf), Ok(10));
    }
    let s = cache.stats();
    assert_eq!((s.loads, s.decoded_bytes), (3, 48 * MIB as u64));
}

#[test]
fn concurrent_readers_of_one_block_decode_it_once() {
    let data = Arc::new(sample(16 * MIB, 11));
    let blocks = [(Codec::Zstd, encode(Codec::Zstd, &data, 3))];
    let cache = BlockCache::new(256 * MIB);
    let img = image(&cache, 0, &blocks, 16 * MIB);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|t| {
            let (img, data, barrier) = (img.clone(), Arc::clone(&data), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                barrier.wait();
                for k in 0..8 {
                    let off = (t * 8 + k) * 256 * 1024 + 1000;
                    assert_eq!(img.read(0, off as u64, &mut buf), Ok(buf.len()));
                    assert!(buf[..] == data[off..off + buf.len()], "at {off}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.loads, 1, "one load for all readers");
    assert!(
        s.decoded_bytes <= 16 * MIB as u64,
        "each byte decoded once: {s:?}"
    );
}

#[test]
fn concurrent_readers_under_eviction_get_their_data() {
    let bs = MIB;
    let data: Arc<Vec<Vec<u8>>> = Arc::new((0..12).map(|i| sample(bs, 200 + i)).collect());
    let blocks = encoded_in_turn(&data, &[Codec::Zstd, Codec::Lzma, Codec::Lz4]);
    let limit = 5 * MIB;
    let cache = BlockCache::new(limit);
    let img = image(&cache, 0, &blocks, bs);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (img, data) = (img.clone(), Arc::clone(&data));
            std::thread::spawn(move || {
                let mut rng = Rng(t + 1);
                for _ in 0..40 {
                    let b = rng.below(12);
                    let off = rng.below(bs);
                    let mut buf = vec![0u8; 1 + rng.below(200_000)];
                    let n = img.read(b as u32, off as u64, &mut buf).unwrap();
                    assert_eq!(n, buf.len().min(bs - off));
                    assert!(buf[..n] == data[b][off..off + n], "block {b} at {off}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = cache.stats();
    assert!(s.held_bytes <= limit && s.evictions > 0, "{s:?}");
}

#[test]
fn eviction_keeps_the_cache_under_its_bound() {
    let bs = MIB;
    let codecs = [Codec::Zstd, Codec::Lzma, Codec::Lz4, Codec::None];
    let data: Vec<Vec<u8>> = (0..16).map(|i| sample(bs, 100 + i)).collect();
    let blocks = encoded_in_turn(&data, &codecs);
    let limit = 6 * MIB;
    let cache = BlockCache::new(limit);
    let img = image(&cache, 0, &blocks, bs);
    let mut rng = Rng(5);
    for round in 0..2 {
        for (i, d) in data.iter().enumerate() {
            assert!(
                read_block(&img, i as u32, &mut rng) == *d,
                "round {round} block {i}"
            );
            let held = cache.stats().held_bytes;
            assert!(held <= limit, "{held} bytes held, limit {limit}");
        }
    }
    let s = cache.stats();
    assert!(s.evictions >= 16, "{s:?}");
    assert!(s.loads >= 32, "every block loaded again after its eviction");
    // Readahead jobs hold the image a while: wait for them.
    drop(img);
    wait_for(&cache, |s| s.held_bytes == 0);
}

/// A log sink for `logged`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// What `f` logs on this thread.
fn logged(f: impl FnOnce()) -> String {
    let log = Log::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(sub, f);
    String::from_utf8_lossy(&log.0.lock()).into_owned()
}

#[test]
fn a_checksum_mismatch_is_eio_and_is_not_retried() {
    let bs = 64 * 1024;
    let good = sample(bs, 1);
    let blocks = [
        (Codec::Zstd, encode(Codec::Zstd, &good, 3)),
        (Codec::Zstd, encode(Codec::Zstd, &good, 3)),
    ];
    let f = ImageFile::new(0, &blocks);
    let at = f.blocks[1].payload + 10;
    let mut byte = [0u8];
    f.file.read_exact_at(&mut byte, at).unwrap();
    f.file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
    let cache = BlockCache::new(16 * MIB);
    let img = cache.register("bad.dwarfs", f.file, f.blocks, bs).unwrap();
    let mut buf = vec![0u8; 4096];
    let log = logged(|| {
        assert_eq!(img.read(1, 0, &mut buf), Err(Errno::EIO));
        assert_eq!(img.read(1, 0, &mut buf), Err(Errno::EIO));
    });
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("bad.dwarfs: block 1: checksum mismatch"),
        "{log}"
    );
    assert_eq!(cache.stats().loads, 1, "a failed block is remembered");
    assert_eq!(img.read(0, 0, &mut buf), Ok(4096), "the other block reads");
    assert_eq!(buf, good[..4096]);
}

#[test]
fn unsupported_codecs_are_eio_without_a_load() {
    let bs = 4096;
    let codecs = [
        Codec::Brotli,
        Codec::Flac,
        Codec::Ricepp,
        Codec::Unknown(77),
    ];
    let blocks: Vec<_> = codecs.iter().map(|&c| (c, vec![1u8; 100])).collect();
    let cache = BlockCache::new(MIB);
    let img = image(&cache, 0, &blocks, bs);
    let mut buf = [0u8; 10];
    let log = logged(|| {
        for i in 0..codecs.len() as u32 {
            assert_eq!(img.read(i, 0, &mut buf), Err(Errno::EIO));
            assert_eq!(img.read(i, 0, &mut buf), Err(Errno::EIO));
        }
    });
    assert_eq!(log.lines().count(), 4, "one line per codec: {log}");
    for name in ["brotli", "flac", "ricepp", "unknown codec 77"] {
        assert!(
            log.contains(&format!("test.dwarfs: data compressed with {name} ")),
            "{log}"
        );
    }
    assert_eq!(cache.stats().loads, 0);
}

#[test]
fn claims_beyond_the_block_size_or_the_file_are_eio() {
    let bs = 64 * 1024;
    let big = sample(2 * bs, 2);
    let mut lz4_huge = u32::MAX.to_le_bytes().to_vec();
    lz4_huge.extend(lz4_flex::block::compress(&big));
    let blocks = [
        (Codec::Zstd, encode(Codec::Zstd, &big, 3)),
        (Codec::Lzma, encode(Codec::Lzma, &big, 1)),
        (Codec::Lz4, lz4_huge),
        (Codec::None, big.clone()),
        (Codec::Zstd, encode(Codec::Zstd, &big[..bs], 3)),
    ];
    let f = ImageFile::new(0, &blocks);
    let mut locs = f.blocks.clone();
    let size = f.file.metadata().unwrap().len();
    locs[4].len = u64::MAX;
    locs.push(BlockLoc {
        header: size - 10,
        payload: size + 54,
        len: 100,
        codec: Codec::Zstd,
    });
    let cache = BlockCache::new(16 * MIB);
    let img = cache.register("huge.dwarfs", f.file, locs, bs).unwrap();
    let mut buf = vec![0u8; bs];
    for i in 0..6 {
        assert_eq!(img.read(i, 0, &mut buf), Err(Errno::EIO), "block {i}");
    }
    assert!(cache.stats().held_bytes <= 16 * MIB);
    assert_eq!(
        cache
            .register("x", Arc::new(temp_file(b"")), vec![], 0)
            .err(),
        Some(Errno::EINVAL)
    );
}

#[test]
fn sequential_reads_are_decoded_ahead() {
    let data = sample(16 * MIB, 21);
    let cache = BlockCache::new(256 * MIB);
    let (img, mut buf) = read_to_end_of_block_0(&cache, &data);
    // The window reaches into block 1: a pool thread loads and decodes it.
    let s = wait_for(&cache, |s| {
        s.loads == 2 && s.decoded_bytes > 17 * MIB as u64
    });
    assert!(s.readahead_runs > 0, "{s:?}");
    let before = cache.stats();
    assert_eq!(img.read(1, 0, &mut buf), Ok(buf.len()));
    assert!(buf[..] == data[..buf.len()]);
    let after = cache.stats();
    assert_eq!(
        (after.hits, after.loads),
        (before.hits + 1, 2),
        "read ahead: a hit"
    );
}

#[test]
fn readahead_never_crowds_out_read_blocks() {
    // 16 MiB blocks and 40 MiB: a block read ahead would need more than
    // the read-ahead share (10 MiB), so it is dropped.
    let data = sample(16 * MIB, 31);
    let cache = BlockCache::new(40 * MIB);
    let _img = read_to_end_of_block_0(&cache, &data);
    let s = wait_for(&cache, |s| s.readahead_dropped > 0);
    assert_eq!(s.loads, 1, "{s:?}");
    assert!(s.held_bytes <= 40 * MIB);
}

/// Registers two 16 MiB zstd blocks of `data` and reads the last two
/// 128 KiB of block 0 in a row (a sequential reader near the block's end);
/// returns the image and the read buffer.
fn read_to_end_of_block_0(cache: &BlockCache, data: &[u8]) -> (ImageBlocks, Vec<u8>) {
    let blocks = [
        (Codec::Zstd, encode(Codec::Zstd, data, 3)),
        (Codec::Zstd, encode(Codec::Zstd, data, 3)),
    ];
    let img = image(cache, 0, &blocks, 16 * MIB);
    let mut buf = vec![0u8; 128 * 1024];
    let end = 16 * MIB - 2 * buf.len();
    for off in [end, end + buf.len()] {
        assert_eq!(img.read(0, off as u64, &mut buf), Ok(buf.len()));
    }
    (img, buf)
}

/// Waits (a bounded while) for the pool threads to reach a state.
fn wait_for(cache: &BlockCache, done: impl Fn(&CacheStats) -> bool) -> CacheStats {
    for _ in 0..3000 {
        let s = cache.stats();
        if done(&s) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("readahead never got there: {:?}", cache.stats());
}

/// How a fuzz iteration spoils a section.
fn spoil(rng: &mut Rng, sec: &mut Vec<u8>, loc: &mut BlockLoc) {
    match rng.below(6) {
        0 | 1 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(sec.len());
                sec[i] ^= 1 << rng.below(8);
            }
            if rng.below(2) == 0 {
                reseal(sec);
            }
        }
        2 => sec.truncate(rng.below(sec.len())),
        3 => {
            loc.len = match rng.below(3) {
                0 => rng.next(),
                1 => loc.len + rng.below(100) as u64,
                _ => rng.below(loc.len as usize + 1) as u64,
            };
            let len = loc.len.to_le_bytes();
            sec[56..64].copy_from_slice(&len);
            reseal(sec);
        }
        4 => {
            // A payload cut short, with a header that agrees.
            let keep = 64 + rng.below(sec.len() - 64);
            sec.truncate(keep);
            loc.len = (keep - 64) as u64;
            sec[56..64].copy_from_slice(&loc.len.to_le_bytes());
            reseal(sec);
        }
        _ => {
            let n = rng.below(12) as u16;
            loc.codec = Codec::from_u16(n);
            sec[54..56].copy_from_slice(&n.to_le_bytes());
            reseal(sec);
        }
    }
}

#[test]
fn random_corruptions_give_eio_or_data_never_a_panic() {
    let iters: usize = std::env::var("FIMFS_FUZZ_ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let bs = 64 * 1024;
    let data = sample(bs, 77);
    let codecs = [
        Codec::None,
        Codec::Zstd,
        Codec::Lzma,
        Codec::Lz4,
        Codec::Lz4hc,
    ];
    let sections: Vec<_> = codecs
        .iter()
        .map(|&c| (c, section(0, 0, c, &encode(c, &data, 1))))
        .collect();
    let limit = 4 * bs;
    let cache = BlockCache::new(limit);
    let file = Arc::new(temp_file(b""));
    let mut rng = Rng(0x5eed);
    let (mut ok, mut eio) = (0, 0);
    for _ in 0..iters {
        let (codec, sec) = &sections[rng.below(sections.len())];
        let mut sec = sec.clone();
        let mut loc = BlockLoc {
            header: 0,
            payload: 64,
            len: (sec.len() - 64) as u64,
            codec: *codec,
        };
        spoil(&mut rng, &mut sec, &mut loc);
        file.set_len(0).unwrap();
        file.write_all_at(&sec, 0).unwrap();
        let img = cache
            .register("fuzz", Arc::clone(&file), vec![loc], bs)
            .unwrap();
        for _ in 0..3 {
            let off = rng.below(bs + 10);
            let mut buf = vec![0u8; 1 + rng.below(bs)];
            match img.read(0, off as u64, &mut buf) {
                Ok(n) => {
                    assert!(n <= buf.len());
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(e, Errno::EIO);
                    eio += 1;
                }
            }
        }
        assert!(cache.stats().held_bytes <= limit);
    }
    println!("{iters} corruptions: {ok} reads served, {eio} EIO");
    assert!(eio > 0 && ok > 0, "{ok} served, {eio} EIO");
}

/// Blocks sealed by another writer (dwarfs-enc, format 2.5): same header
/// layout, same checksum.
#[test]
fn blocks_sealed_by_dwarfs_enc_read_back() {
    use dwarfs::section::SectionType;
    use dwarfs_enc::section::{CompressParam, Writer};
    let bs = 256 * 1024;
    let datas: Vec<Vec<u8>> = (0..3)
        .map(|i| sample(bs - i * 1000, 40 + i as u64))
        .collect();
    let mut w = Writer::new(Vec::new()).unwrap();
    for d in &datas {
        w.write_section(SectionType::BLOCK, CompressParam::Zstd(19), d)
            .unwrap();
    }
    w.write_section(SectionType::BLOCK, CompressParam::None, &datas[0])
        .unwrap();
    let bytes = w.finish().unwrap();
    let mut locs = Vec::new();
    let mut off = 0usize;
    while off + 64 <= bytes.len() {
        let h = &bytes[off..off + 64];
        let len = u64::from_le_bytes(h[56..64].try_into().unwrap());
        if u16::from_le_bytes([h[52], h[53]]) == 0 {
            let codec = Codec::from_u16(u16::from_le_bytes([h[54], h[55]]));
            let header = off as u64;
            locs.push(BlockLoc {
                header,
                payload: header + 64,
                len,
                codec,
            });
        }
        off += 64 + len as usize;
    }
    let codecs: Vec<Codec> = locs.iter().map(|l| l.codec).collect();
    assert_eq!(codecs, [Codec::Zstd, Codec::Zstd, Codec::Zstd, Codec::None]);
    let cache = BlockCache::new(16 * MIB);
    let img = cache
        .register("enc.dwarfs", Arc::new(temp_file(&bytes)), locs, bs)
        .unwrap();
    let mut rng = Rng(9);
    for (i, d) in datas.iter().chain([&datas[0]]).enumerate() {
        assert!(read_block(&img, i as u32, &mut rng) == *d, "block {i}");
    }
}

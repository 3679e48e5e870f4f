//! The deterministic 5-lower test tree both sides of every benchmark read.
//!
//! Layout (lowers listed top-most first, `l1` is the top, `l5` the bottom):
//! - `dNN/sNN/fNNN`: 20 × 20 leaf directories × 50 file names = 20,000
//!   merged files. Each leaf directory exists in a random subset of the
//!   lowers (at least one), so most directories are merged from several
//!   layers; each file lives in one random lower holding its directory, and
//!   about 15% also have a second, shadowed copy (different size and bytes)
//!   in another lower.
//! - `common.txt` in every lower (the top one wins) and `README-lN` once per
//!   lower.
//! - `app/aNNNN`: 1000 small files spread round-robin over all lowers (the
//!   "append one byte to 1000 lower files" workload).
//! - `tmp/` (only in `l3`, one file) for the "create 1000 files" workload,
//!   `crd/` (only in `l2`, 10 files) for "create, rename, delete".
//! - `big/big.bin` in the bottom lower, `big_mib` MiB of pseudo-random bytes.
//!
//! Everything comes from one xorshift64 stream with a fixed seed, so two runs
//! produce byte-identical trees.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const LOWERS: usize = 5;
const TOP_DIRS: usize = 20;
const SUB_DIRS: usize = 20;
const FILES_PER_DIR: usize = 50;
pub const APP_FILES: usize = 1000;
const CRD_FILES: usize = 10;
pub const BIG_REL: &str = "big/big.bin";

/// A tiny deterministic PRNG (xorshift64); no crates needed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// What was generated, with the numbers the workloads check their output
/// against.
pub struct Tree {
    /// Lower directories, top-most first.
    pub lowers: Vec<PathBuf>,
    /// Regular files visible in the merged view.
    pub merged_files: usize,
    /// Regular files stored in all lowers together (shadowed copies included).
    pub physical_files: usize,
    /// Merged paths that have more than one copy in the lowers.
    pub shadowed: usize,
    /// Directories visible in the merged view (the root excluded).
    pub merged_dirs: usize,
    /// Total bytes of the merged `app/*` files.
    pub app_bytes: u64,
    /// Entries of the merged `crd/` directory.
    pub crd_entries: usize,
    /// Size of `big/big.bin`.
    pub big_size: u64,
    /// Bytes written for the whole tree.
    pub bytes: u64,
}

impl Tree {
    pub fn bottom(&self) -> &Path {
        &self.lowers[LOWERS - 1]
    }
}

struct Gen {
    rng: Rng,
    lowers: Vec<PathBuf>,
    merged_files: BTreeSet<String>,
    merged_dirs: BTreeSet<String>,
    physical_files: usize,
    shadowed: usize,
    bytes: u64,
    buf: Vec<u8>,
}

impl Gen {
    fn dir(&mut self, lower: usize, rel: &str) -> io::Result<()> {
        fs::create_dir_all(self.lowers[lower].join(rel))?;
        let mut acc = String::new();
        for part in rel.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.merged_dirs.insert(acc.clone());
        }
        Ok(())
    }

    fn file(&mut self, lower: usize, rel: &str, size: usize) -> io::Result<()> {
        self.buf.resize(size, 0);
        let mut buf = std::mem::take(&mut self.buf);
        self.rng.fill(&mut buf);
        fs::write(self.lowers[lower].join(rel), &buf)?;
        self.buf = buf;
        self.physical_files += 1;
        self.bytes += size as u64;
        if !self.merged_files.insert(rel.to_string()) {
            self.shadowed += 1;
        }
        Ok(())
    }
}

/// Generates the tree under `root` (`root/l1` … `root/l5`); `root` must not
/// exist yet or be empty.
pub fn generate(root: &Path, big_mib: u64) -> io::Result<Tree> {
    let lowers: Vec<PathBuf> = (1..=LOWERS).map(|i| root.join(format!("l{i}"))).collect();
    for l in &lowers {
        fs::create_dir_all(l)?;
    }
    let mut g = Gen {
        rng: Rng::new(0x5eed_f1f5_2024_0001),
        lowers: lowers.clone(),
        merged_files: BTreeSet::new(),
        merged_dirs: BTreeSet::new(),
        physical_files: 0,
        shadowed: 0,
        bytes: 0,
        buf: Vec::new(),
    };

    // Top-level files: one shadowed in every lower, one unique per lower.
    // Written bottom-up so the shadowed copy counting matches "top wins".
    for l in (0..LOWERS).rev() {
        fs::write(lowers[l].join("common.txt"), format!("lower{}\n", l + 1))?;
        g.physical_files += 1;
        if !g.merged_files.insert("common.txt".into()) {
            g.shadowed += 1;
        }
        let size = 100 + l * 10;
        g.file(l, &format!("README-l{}", l + 1), size)?;
    }

    // The big overlapping directory tree.
    for t in 0..TOP_DIRS {
        for s in 0..SUB_DIRS {
            let rel_dir = format!("d{t:02}/s{s:02}");
            let mut present: Vec<usize> = (0..LOWERS).filter(|_| g.rng.below(10) < 6).collect();
            if present.is_empty() {
                present.push(g.rng.below(LOWERS as u64) as usize);
            }
            for &l in &present {
                g.dir(l, &rel_dir)?;
            }
            for f in 0..FILES_PER_DIR {
                let rel = format!("{rel_dir}/f{f:03}");
                let first = present[g.rng.below(present.len() as u64) as usize];
                let size = g.rng.below(4096) as usize;
                g.file(first, &rel, size)?;
                if present.len() > 1 && g.rng.below(100) < 15 {
                    let mut second = first;
                    while second == first {
                        second = present[g.rng.below(present.len() as u64) as usize];
                    }
                    let size = g.rng.below(4096) as usize;
                    g.file(second, &rel, size)?;
                }
            }
        }
    }

    // Files to append to, spread over all lowers.
    for l in 0..LOWERS {
        g.dir(l, "app")?;
    }
    let mut app_bytes = 0u64;
    for i in 0..APP_FILES {
        let size = 100 + g.rng.below(1000) as usize;
        app_bytes += size as u64;
        g.file(i % LOWERS, &format!("app/a{i:04}"), size)?;
    }

    // Directories the write workloads create files in.
    g.dir(2, "tmp")?;
    g.file(2, "tmp/.keep", 0)?;
    g.dir(1, "crd")?;
    for i in 0..CRD_FILES {
        g.file(1, &format!("crd/x{i}"), 64)?;
    }

    // The big file, in the bottom lower.
    g.dir(LOWERS - 1, "big")?;
    let big_size = big_mib * 1024 * 1024;
    {
        let mut f = io::BufWriter::with_capacity(
            1 << 20,
            fs::File::create(lowers[LOWERS - 1].join(BIG_REL))?,
        );
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..big_mib {
            g.rng.fill(&mut chunk);
            f.write_all(&chunk)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    g.physical_files += 1;
    g.bytes += big_size;
    g.merged_files.insert(BIG_REL.into());

    Ok(Tree {
        lowers,
        merged_files: g.merged_files.len(),
        physical_files: g.physical_files,
        shadowed: g.shadowed,
        merged_dirs: g.merged_dirs.len(),
        app_bytes,
        crd_entries: CRD_FILES,
        big_size,
        bytes: g.bytes,
    })
}

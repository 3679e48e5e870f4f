//! The images the benchmark reads, packed by the tests' own packer
//! (`tests/common/pack.rs` and `dwarfs.rs`, included here with `#[path]`;
//! `dwarfs-enc` is a dev-dependency, never part of the `fimfs` binary),
//! and cached under `target/fimfs-images/`: the file name carries a hash of
//! everything that shapes the image (the tree's stamp, block size, zstd
//! level), so a rerun with the same parameters packs nothing.
#![allow(dead_code, unused_imports)]

#[path = "../../tests/common/dwarfs.rs"]
pub mod dwarfs;
#[path = "../../tests/common/pack.rs"]
pub mod pack;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Data blocks of 16 MiB, as mkdwarfs writes them at FlatImage's level.
pub const BLOCK_SIZE: u32 = 16 << 20;

/// What `pack.rs` needs of the tests' `sys` module.
pub mod sys {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// `lgetxattr(2)`: the value, or the errno.
    pub fn get_xattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
        let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
        let n = CString::new(name).map_err(|_| libc::EINVAL)?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: both strings are NUL-terminated; buf is valid for its length.
        let got =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        buf.truncate(got as usize);
        Ok(buf)
    }
}

/// What `dwarfs.rs` needs of the tests' library: unique scratch names.
pub fn next_serial() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// The image layout: zstd at `level` for data and metadata, a section index.
pub fn layout(level: i32) -> dwarfs::Layout {
    dwarfs::Layout {
        zstd_level: level,
        ..dwarfs::Layout::default()
    }
}

/// FNV-1a of `s`, as 16 hex digits: the cache key.
pub fn key(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The image of the directory `dir` (whose generator wrote `stamp`),
/// from the cache in `cache` or packed now.
pub fn image_of(cache: &Path, name: &str, dir: &Path, stamp: &str, level: i32) -> PathBuf {
    let k = key(&format!(
        "{stamp}\n{}\nbs={BLOCK_SIZE} zstd={level}",
        dir.display()
    ));
    cached(cache, &format!("{name}-{k}.dwarfs"), || {
        pack::pack_dir(dir, BLOCK_SIZE, layout(level))
    })
}

/// `cache/file`, made with `make` unless it is there already (written to
/// a temporary name first, so a killed run leaves no half image).
pub fn cached(cache: &Path, file: &str, make: impl FnOnce() -> Vec<u8>) -> PathBuf {
    let path = cache.join(file);
    if path.is_file() {
        return path;
    }
    fs::create_dir_all(cache).expect("creating the image cache");
    let t0 = Instant::now();
    let bytes = make();
    let tmp = cache.join(format!("{file}.tmp-{}", std::process::id()));
    fs::write(&tmp, &bytes).expect("writing an image");
    fs::rename(&tmp, &path).expect("renaming an image into place");
    eprintln!(
        "fimfs-images: packed {} ({} MiB) in {:.1} s",
        path.display(),
        bytes.len() >> 20,
        t0.elapsed().as_secs_f64()
    );
    path
}

/// Sizes of an image's sections of `kind` (stored, compressed), read from
/// the section headers.
pub fn section_bytes(image: &Path, kind: u16) -> u64 {
    let data = fs::read(image).unwrap_or_default();
    let mut at = 0usize;
    let mut total = 0;
    while let Some(h) = data.get(at..at + 64) {
        if &h[..6] != b"DWARFS" {
            break;
        }
        let k = u16::from_le_bytes([h[52], h[53]]);
        let len = u64::from_le_bytes(h[56..64].try_into().unwrap_or([0; 8]));
        if k == kind {
            total += len;
        }
        at = at.saturating_add(64).saturating_add(len as usize);
    }
    total
}

//! Copying a file's data into the upper: extents shared where the
//! filesystems can (`FICLONE`, remembered per source device when refused),
//! else copied in the kernel (`copy_file_range`) or through a buffer,
//! keeping holes (`SEEK_DATA`/`SEEK_HOLE`); a lower file without an fd is
//! copied through its reads (`layer::File::read_at`).
use crate::layer::File;
use crate::sys::{self, Errno, Result};
use std::os::fd::BorrowedFd;

/// Bytes per `copy_file_range`/`pread` step.
const COPY_CHUNK: usize = 8 << 20;

/// Copies the bytes in `off..end` from `src` to `dst`, in-kernel when it
/// can; returns where it stopped (`end`, or the source's end if shorter).
fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut off: u64, end: u64) -> Result<u64> {
    let mut in_kernel = true;
    let mut buf = Vec::new();
    while off < end {
        let want = ((end - off) as usize).min(COPY_CHUNK);
        if in_kernel {
            match sys::copy_file_range(src, off, dst, off, want) {
                Ok(0) => return Ok(off),
                Ok(n) => {
                    off += n as u64;
                    continue;
                }
                Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                    in_kernel = false;
                }
                Err(e) => return Err(e),
            }
        }
        buf.resize(want, 0);
        let n = sys::pread(src, &mut buf, off)?;
        if n == 0 {
            return Ok(off);
        }
        let mut w = 0;
        while w < n {
            w += write_some(dst, &buf[w..n], off + w as u64)?;
        }
        off += n as u64;
    }
    Ok(off)
}

/// One `pwrite`; a write of nothing is EIO, so that the copy fails (and
/// its staged file is removed) rather than loops.
fn write_some(dst: BorrowedFd<'_>, buf: &[u8], off: u64) -> Result<usize> {
    match sys::pwrite(dst, buf, off)? {
        0 => Err(Errno::EIO),
        n => Ok(n),
    }
}

/// Copies the first `size` bytes of `src`, a file without an fd (an image
/// lower), to `dst` through its reads.
pub(super) fn copy_reads(src: &File, dst: BorrowedFd<'_>, size: u64) -> Result<()> {
    let mut buf = vec![0; COPY_CHUNK.min(size as usize)];
    let mut off = 0u64;
    while off < size {
        let n = src.read_at(off, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += write_some(dst, &buf[w..n], off + w as u64)?;
        }
        off += n as u64;
    }
    sys::ftruncate(dst, size)
}

/// The source filesystems (by `st_dev`) that refused to share extents
/// with the upper (`FICLONE`): they are not asked again, which saves a
/// failing call per copy-up on filesystems without reflinks (ext4).
#[derive(Debug, Default)]
pub(crate) struct Reflinks {
    refused: parking_lot::RwLock<Vec<u64>>,
}

impl Reflinks {
    /// Makes `dst` share all of `src`'s extents; false when it did not.
    fn share(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, src_dev: u64) -> bool {
        if self.refused.read().contains(&src_dev) {
            return false;
        }
        match sys::ficlone(dst, src) {
            Ok(()) => true,
            // The filesystem (or the pair) cannot: remember. Anything
            // else (EINVAL for one odd file, EIO) is asked again next time.
            Err(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::ENOTTY | Errno::ENOSYS) => {
                let mut r = self.refused.write();
                if !r.contains(&src_dev) {
                    r.push(src_dev);
                }
                false
            }
            Err(_) => false,
        }
    }
}

/// Copies the data of the file `st` describes, sharing extents where the
/// filesystems can, and keeping holes (`SEEK_DATA`/`SEEK_HOLE`) where it
/// copies. A file with a block for every byte has no hole to look for.
pub(crate) fn copy_data(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    st: &libc::stat,
    reflinks: &Reflinks,
) -> Result<()> {
    let size = st.st_size as u64;
    if size == 0 || reflinks.share(src, dst, st.st_dev) {
        return Ok(());
    }
    if (st.st_blocks as u64).saturating_mul(512) >= size {
        return match copy_range(src, dst, 0, size)? {
            end if end < size => sys::ftruncate(dst, size),
            _ => Ok(()),
        };
    }
    let mut off = 0u64;
    while off < size {
        let data = match sys::lseek(src, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(Errno::ENXIO) => break,
            // No hole support: copy everything.
            Err(_) => {
                copy_range(src, dst, off, size)?;
                break;
            }
        };
        let hole = sys::lseek(src, data as i64, libc::SEEK_HOLE).map_or(size, |h| h as u64);
        copy_range(src, dst, data, hole.min(size))?;
        off = hole;
    }
    // A trailing hole: give the copy its full size.
    sys::ftruncate(dst, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    fn copied(root: &std::path::Path, name: &str, st: &libc::stat, r: &Reflinks) -> Vec<u8> {
        let src = std::fs::File::open(root.join(name)).unwrap();
        let out = root.join(format!("{name}.copy"));
        let dst = std::fs::File::create(&out).unwrap();
        copy_data(src.as_fd(), dst.as_fd(), st, r).unwrap();
        std::fs::read(out).unwrap()
    }

    /// A dense file is copied whole, a sparse one keeps its bytes, a source
    /// shorter than its stat still gives a copy of the stated size, and a
    /// filesystem that refuses `FICLONE` is remembered (and only it).
    #[test]
    fn data_is_copied_exactly_and_a_refusal_to_share_is_remembered() {
        let root = std::env::temp_dir().join(format!("fimfs-copydata-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).unwrap();
        let dense: Vec<u8> = (0..10_007u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("dense"), &dense).unwrap();
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.write_all_at(b"middle", 512 << 10).unwrap();
        sparse.set_len(1 << 20).unwrap();
        let st = |n: &str| {
            let f = std::fs::File::open(root.join(n)).unwrap();
            sys::fstat(f.as_fd()).unwrap()
        };
        let r = Reflinks::default();

        assert_eq!(copied(&root, "dense", &st("dense"), &r), dense);
        let mut want = vec![0u8; 1 << 20];
        want[512 << 10..(512 << 10) + 6].copy_from_slice(b"middle");
        assert!(
            copied(&root, "sparse", &st("sparse"), &r) == want,
            "sparse copy"
        );
        let mut longer = st("dense");
        longer.st_size += 100;
        let mut want = dense.clone();
        want.resize(dense.len() + 100, 0);
        // Not shared (a clone would take the real size): copied.
        let copy = Reflinks {
            refused: parking_lot::RwLock::new(vec![longer.st_dev]),
        };
        assert_eq!(
            copied(&root, "dense", &longer, &copy),
            want,
            "stated size kept"
        );

        let (a, b) = (
            std::fs::File::open(root.join("dense")).unwrap(),
            std::fs::File::create(root.join("probe")).unwrap(),
        );
        let refused = match sys::ficlone(b.as_fd(), a.as_fd()) {
            Ok(()) => vec![],
            Err(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::ENOTTY | Errno::ENOSYS) => {
                vec![st("dense").st_dev]
            }
            Err(e) => panic!("FICLONE probe: {e}"),
        };
        assert_eq!(*r.refused.read(), refused, "devices remembered as refusing");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

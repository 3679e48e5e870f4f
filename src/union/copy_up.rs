//! Copy-up: promoting a lower entry into the upper before it changes.
//!
//! Invariants:
//! - parents first: an entry is copied only into an upper directory that
//!   exists, so the upper never holds an orphan;
//! - staged: the copy is built in the workdir under a fresh name (data,
//!   then owner, mode, xattrs, times), fsynced, and renamed into place; after
//!   a crash the upper holds the old state or the new one, never a partial
//!   file (the workdir is emptied at the next mount);
//! - once: the node's `copy_lock` serialises racing copy-ups of one entry,
//!   and only that entry's requests wait for it;
//! - overlay-private xattrs are never copied (a lower's opaque mark copied
//!   up would hide the lower's own contents).
use super::marker;
use super::node::Node;
use super::{Kind, Place, Union};
use crate::layer::{File, Lower};
use crate::sys::{self, Errno, Result};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Bytes per `copy_file_range`/`pread` step.
const COPY_CHUNK: usize = 8 << 20;

fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

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
            w += sys::pwrite(dst, &buf[w..n], off + w as u64)?;
        }
        off += n as u64;
    }
    Ok(off)
}

/// Copies the first `size` bytes of `src`, a file without an fd (an image
/// lower), to `dst` through its reads.
fn copy_reads(src: &File, dst: BorrowedFd<'_>, size: u64) -> Result<()> {
    let mut buf = vec![0; COPY_CHUNK.min(size as usize)];
    let mut off = 0u64;
    while off < size {
        let n = src.read_at(off, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += sys::pwrite(dst, &buf[w..n], off + w as u64)?;
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

/// Where a copy comes from: an entry and the layer that holds it.
pub(crate) type Source<'a> = (&'a dyn Lower, &'a Place);

/// Copies the xattrs of `src` onto the staged entry, skipping
/// overlay-private ones; a value the upper refuses is logged.
fn copy_xattrs((layer, src): Source<'_>, dst_dir: BorrowedFd<'_>, dst: &CStr) {
    let Ok(names) = layer.xattr_names(&src.dir, &src.name) else {
        return;
    };
    for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if marker::is_private_xattr(n) {
            continue;
        }
        let Ok(cn) = sys::cstr(n) else { continue };
        let res = layer
            .xattr(&src.dir, &src.name, &cn)
            .and_then(|v| sys::lsetxattr_at(dst_dir, dst, &cn, &v, 0));
        if let Err(e) = res {
            tracing::debug!(
                "copy-up: xattr {} not copied: {}",
                String::from_utf8_lossy(n),
                e.desc()
            );
        }
    }
}

/// Owner, mode, xattrs and times of `st` onto `dir`/`name` (already created).
pub(crate) fn copy_attrs(src: Source<'_>, st: &libc::stat, dir: BorrowedFd<'_>, name: &CStr) {
    let kind = Kind::from_mode(st.st_mode);
    // chown first: it clears set-id bits, which chmod then restores.
    if let Err(e) = sys::fchownat(dir, name, st.st_uid, st.st_gid) {
        tracing::debug!("copy-up: owner not kept: {}", e.desc());
    }
    if kind != Kind::Symlink
        && let Err(e) = sys::fchmodat(dir, name, st.st_mode & 0o7777)
    {
        tracing::debug!("copy-up: mode not kept: {}", e.desc());
    }
    copy_xattrs(src, dir, name);
    let times = [
        timespec(st.st_atime, st.st_atime_nsec),
        timespec(st.st_mtime, st.st_mtime_nsec),
    ];
    if let Err(e) = sys::utimensat(dir, name, &times) {
        tracing::debug!("copy-up: times not kept: {}", e.desc());
    }
}

/// Creates at `dir`/`name` a copy of the non-directory at `src` (with its
/// data unless `truncate`), attributes included; fsyncs file data.
pub(crate) fn copy_entry(
    src: Source<'_>,
    st: &libc::stat,
    dir: BorrowedFd<'_>,
    name: &CStr,
    truncate: bool,
    reflinks: &Reflinks,
) -> Result<()> {
    match Kind::from_mode(st.st_mode) {
        Kind::File => {
            let out = sys::openat(
                dir,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )?;
            if !truncate && st.st_size > 0 {
                let (layer, at) = src;
                let input = layer.open(&at.dir, &at.name, libc::O_RDONLY)?;
                match input.fd() {
                    Some(fd) => copy_data(fd, out.as_fd(), st, reflinks)?,
                    None => copy_reads(&input, out.as_fd(), st.st_size as u64)?,
                }
            }
            copy_attrs(src, st, dir, name);
            sys::fsync(out.as_fd(), false)
        }
        Kind::Symlink => {
            let target = src.0.readlink(&src.1.dir, &src.1.name)?;
            sys::symlinkat(&sys::cstr(&target)?, dir, name)?;
            copy_attrs(src, st, dir, name);
            Ok(())
        }
        Kind::Dir => {
            sys::mkdirat(dir, name, 0o700)?;
            copy_attrs(src, st, dir, name);
            Ok(())
        }
        _ => {
            sys::mknodat(dir, name, st.st_mode, st.st_rdev)?;
            copy_attrs(src, st, dir, name);
            Ok(())
        }
    }
}

impl Union {
    /// The upper directory of a directory node, copying it (and its
    /// parents) up first.
    pub(super) fn ensure_upper_dir(&self, dir: &Arc<Node>) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = self.dir_layers(dir)?.upper() {
            return Ok(fd.clone());
        }
        self.copy_up(dir, false)?;
        dir.clear_dir();
        self.dir_layers(dir)?.upper().cloned().ok_or(Errno::EIO)
    }

    /// Makes `node` live in the upper, and says where it lives there.
    /// With `truncate`, a file is copied without its data (`open(O_TRUNC)`,
    /// `truncate(0)`).
    pub(super) fn copy_up(&self, node: &Arc<Node>, truncate: bool) -> Result<Place> {
        let work = self.work.as_ref().ok_or(Errno::EROFS)?;
        let _once = node.copy_lock.lock();
        let (found, place) = self.place(node)?;
        if found.state.upper {
            return Ok(place);
        }
        let _changes = super::write::NamesChange(self);
        let number = self.number_of(node, &found);
        let loc = node.loc().ok_or(Errno::ENOENT)?;
        let parent = loc.parent.ok_or(Errno::EIO)?;
        let pup = self.ensure_upper_dir(&parent)?;
        let tmp = work.temp_name();
        // For a directory, `place` is its own fd with an empty name.
        // No origin mark: the kernel overlay would show it (see `attr`).
        let src = (self.layer(place.layer)?, &place);
        let staged = copy_entry(src, &found.st, work.fd(), &tmp, truncate, &self.reflinks)
            .and_then(|()| {
                sys::renameat2(
                    work.fd(),
                    &tmp,
                    pup.as_fd(),
                    &sys::cstr(&found.name)?,
                    sys::RENAME_NOREPLACE,
                )
            });
        if let Err(e) = staged {
            let _ = crate::layer::remove_tree(work.fd(), &tmp);
            // Someone (another daemon on the same upper) was faster.
            if e != Errno::EEXIST {
                return Err(e);
            }
        }
        // No fsync of the parent: the copy's data is synced before the
        // rename, so after a crash the entry is the old one or the whole
        // new one. (`pup` is an O_PATH fd, on which fsync fails anyway:
        // the call that stood here never did anything.)
        node.clear_dir();
        let (again, place) = self.place(node)?;
        node.set_state(again.state.clone());
        if found.state.kind != Kind::Dir {
            // The copy goes on under the number the file had.
            self.inos.stick(again.st.st_dev, again.st.st_ino, number);
        }
        if found.state.kind != Kind::Dir && found.st.st_nlink > 1 {
            self.split_lower_links(node, &found.st, &pup, &found.name);
        }
        Ok(place)
    }

    /// After copying up one name of a lower file with several links: the
    /// node's other names (the kernel treats them as one inode) become
    /// links of the copy, and names still in the lower stop sharing the
    /// node's number. Best effort: a name that cannot be linked stays a
    /// separate lower file, as on the kernel overlay.
    fn split_lower_links(&self, node: &Arc<Node>, lower: &libc::stat, pup: &OwnedFd, name: &[u8]) {
        self.inos.retire(lower.st_dev, lower.st_ino);
        let Ok(src) = sys::cstr(name) else { return };
        for l in node.locs() {
            let Some(parent) = &l.parent else { continue };
            let same_lower = self
                .dir_layers(parent)
                .and_then(|pl| self.resolve_in(&pl, &l.name))
                .is_ok_and(|f| {
                    !f.state.upper && f.st.st_dev == lower.st_dev && f.st.st_ino == lower.st_ino
                });
            if !same_lower {
                continue;
            }
            let linked = self.ensure_upper_dir(parent).and_then(|dup| {
                let c = sys::cstr(&l.name)?;
                sys::linkat(pup.as_fd(), &src, dup.as_fd(), &c)
            });
            if let Err(e) = linked {
                tracing::debug!(
                    "copy-up: name {:?} stays a lower file: {e}",
                    String::from_utf8_lossy(&l.name)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

//! Whether the kernel overlay can read a run's layers: the check that keeps a
//! layer holding `.wh.NAME` whiteouts or `.wh..wh..opq` opaque markers (the
//! aufs/OCI dialect that `fimfs export` writes and DwarFS commits keep) away
//! from BWRAP. The kernel overlay shows such files as plain files, so a
//! deleted file would come back next to its `.wh.` file.
//!
//! Finding out stays cheap, so that a launch over many large lowers costs what
//! it did:
//! - `fimfs export` writes [`EXPORT_MARK`] at the root of a layer in which it
//!   wrote any `.wh.` file. Its name starts with `.wh.`, so fimfs never shows
//!   it, and a layer carrying it never reaches the kernel overlay;
//! - a layer made by hand is looked at breadth-first, root first, for at most
//!   [`DIRS_PER_LAYER`] directories: a `.wh.` name found there sends the run
//!   to the daemon. A `.wh.` file deeper than that is not seen (the README
//!   says so, and how to mark such a layer).
//!
//! Every directory is opened below its layer's root with `O_NOFOLLOW`; a
//! directory that cannot be read ends that layer's check (the kernel overlay
//! will say what it thinks of it).
use crate::sys;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use crate::union::marker::EXPORT_MARK;

/// Directories read per layer, the root included. With the 20 lowers of
/// 20,000 files of `benches/launch`, reading them all would cost more than
/// the launch itself; 16 cover the top of a tree (a root filesystem's
/// `/`, `/usr`, `/etc`, …), where a hand-made layer's deletions usually sit.
pub const DIRS_PER_LAYER: usize = 16;

/// A layer the kernel overlay would misread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The layer as the run names it: `upper DIR` or `lower N DIR`.
    pub layer: String,
    /// The entry that gave it away, relative to the layer.
    pub entry: PathBuf,
    /// Whether it is the export mark.
    pub marked: bool,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.marked {
            "was written by fimfs export"
        } else {
            "holds"
        };
        write!(
            f,
            "{} {how} {}: deletions as .wh. files, which the kernel overlay does not read",
            self.layer,
            self.entry.display()
        )
    }
}

/// The first layer (upper first, then lowers top-most first) whose deletions
/// the kernel overlay cannot read, if any. A missing upper is skipped (it is
/// created empty).
pub fn first_unreadable(upper: &Path, lowers: &[PathBuf]) -> Option<Unreadable> {
    let upper_hit = upper
        .is_dir()
        .then(|| scan(upper))
        .flatten()
        .map(|e| (format!("upper {}", upper.display()), e));
    let hit = upper_hit.or_else(|| {
        lowers
            .iter()
            .enumerate()
            .find_map(|(i, l)| scan(l).map(|e| (format!("lower {} {}", i + 1, l.display()), e)))
    })?;
    let (layer, entry) = hit;
    Some(Unreadable {
        layer,
        marked: entry.as_os_str().as_encoded_bytes() == EXPORT_MARK,
        entry,
    })
}

/// The first `.wh.` entry of `layer` within the bounded walk (the export mark
/// wins: the root is read first, and it is checked before other names).
fn scan(layer: &Path) -> Option<PathBuf> {
    let root = sys::open_layer_root(layer).ok()?;
    let mut todo: VecDeque<(OwnedFd, PathBuf)> = VecDeque::from([(root, PathBuf::new())]);
    let mut read = 0;
    while let Some((dir, rel)) = todo.pop_front() {
        if read == DIRS_PER_LAYER {
            break;
        }
        read += 1;
        let Ok(entries) = sys::list_dir(dir.as_fd()) else {
            break;
        };
        if read == 1 && entries.iter().any(|e| e.name == EXPORT_MARK) {
            return Some(PathBuf::from(OsStr::from_bytes(EXPORT_MARK)));
        }
        for e in &entries {
            let name = OsStr::from_bytes(&e.name);
            if e.name.starts_with(crate::union::marker::WH_PREFIX) {
                return Some(rel.join(name));
            }
        }
        // Only directories that can still be read within the budget are opened.
        let room = DIRS_PER_LAYER.saturating_sub(read + todo.len());
        for e in entries
            .iter()
            .filter(|e| e.dtype == libc::DT_DIR)
            .take(room)
        {
            let Ok(c) = sys::cstr(&e.name) else { continue };
            if let Ok(fd) = sys::openat(dir.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY, 0) {
                let name = OsStr::from_bytes(&e.name);
                todo.push_back((fd, rel.join(name)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fimfs-dialect-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn finds_shallow_whiteouts_and_the_mark_but_not_beyond_the_budget() {
        let clean = layer("clean");
        std::fs::create_dir_all(clean.join("a/b")).unwrap();
        std::fs::write(clean.join("a/b/f"), b"x").unwrap();
        let opq = layer("opq");
        std::fs::create_dir_all(opq.join("etc/x")).unwrap();
        std::fs::write(opq.join("etc/x/.wh..wh..opq"), b"").unwrap();
        let marked = layer("marked");
        std::fs::write(marked.join(".wh..wh.fimfs"), b"").unwrap();
        let deep = layer("deep");
        let mut p = deep.clone();
        for i in 0..DIRS_PER_LAYER {
            p = p.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(".wh.gone"), b"").unwrap();
        let up = layer("noupper").join("missing");

        assert_eq!(first_unreadable(&up, &[clean.clone(), deep.clone()]), None);
        let hit = first_unreadable(&up, &[clean.clone(), opq.clone()]).unwrap();
        assert_eq!(hit.layer, format!("lower 2 {}", opq.display()));
        assert_eq!(hit.entry, Path::new("etc/x/.wh..wh..opq"));
        assert!(!hit.marked);
        let hit = first_unreadable(&marked, std::slice::from_ref(&clean)).unwrap();
        assert_eq!(hit.layer, format!("upper {}", marked.display()));
        assert!(hit.marked);
        for d in [clean, opq, marked, deep] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

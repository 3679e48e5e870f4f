//! Whether the kernel overlay can read a run's layers: the check that keeps a
//! layer holding `.wh.NAME` whiteouts or `.wh..wh..opq` opaque markers (the
//! aufs/OCI dialect that `fimfs export` writes and DwarFS commits keep) away
//! from BWRAP. The kernel overlay shows such files as plain files, so a
//! deleted file would come back next to its `.wh.` file.
//!
//! Finding out stays cheap, so that a launch over many large lowers costs what
//! it did (`benches/launch`: 20 lowers of 20,000 files): one listing of each
//! layer's root, nothing deeper.
//! - `fimfs export` writes [`EXPORT_MARK`] at the root of a layer in which it
//!   wrote any `.wh.` file. Its name starts with `.wh.`, so fimfs never shows
//!   it, and a layer carrying it never reaches the kernel overlay;
//! - a layer made by hand is caught when a `.wh.` name sits in its root
//!   directory. One deeper down is not seen (reading more directories of 20
//!   layers cost a launch 50%: 16 per layer took 9 ms more, measured); the
//!   README says so, and how to mark such a layer.
//!
//! A DwarFS image lower is checked the same way, through the root listing of
//! its index (already in memory): a committed FlatImage layer carries its
//! deletions as `.wh.` files.
//!
//! A root that cannot be read is let through (the kernel overlay will say
//! what it thinks of it).
use crate::image::Tree;
use crate::sys;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use crate::union::marker::EXPORT_MARK;

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
        match self.marked {
            true => write!(
                f,
                "{} carries {}, the mark fimfs export leaves",
                self.layer,
                self.entry.display()
            )?,
            false => write!(f, "{} holds {}", self.layer, self.entry.display())?,
        }
        f.write_str(": its deletions are .wh. files, which the kernel overlay does not read")
    }
}

/// A lower as the check sees it.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    Dir(&'a Path),
    /// An opened image: its name (`FILE@OFFSET+SIZE`) and its index.
    Image {
        name: &'a str,
        tree: &'a Tree,
    },
}

impl Root<'_> {
    fn name(&self) -> String {
        match self {
            Root::Dir(p) => p.display().to_string(),
            Root::Image { name, .. } => name.to_string(),
        }
    }

    fn scan(&self) -> Option<PathBuf> {
        match self {
            Root::Dir(p) => scan(p),
            Root::Image { tree, .. } => first_wh(tree.entries(tree.root()).map(|(n, _)| n)),
        }
    }
}

/// The first layer (upper first, then lowers top-most first) whose deletions
/// the kernel overlay cannot read, if any. A missing upper is skipped (it is
/// created empty).
pub fn first_unreadable(upper: &Path, lowers: &[Root<'_>]) -> Option<Unreadable> {
    let upper_hit = upper
        .is_dir()
        .then(|| scan(upper))
        .flatten()
        .map(|e| (format!("upper {}", upper.display()), e));
    let hit = upper_hit.or_else(|| {
        lowers.iter().enumerate().find_map(|(i, l)| {
            l.scan()
                .map(|e| (format!("lower {} {}", i + 1, l.name()), e))
        })
    })?;
    let (layer, entry) = hit;
    Some(Unreadable {
        layer,
        marked: entry.as_os_str().as_encoded_bytes() == EXPORT_MARK,
        entry,
    })
}

/// The first `.wh.` entry in the root directory of `layer` (the export mark
/// first). One `open`, the `getdents` calls, one `close`.
fn scan(layer: &Path) -> Option<PathBuf> {
    let root = std::fs::File::open(layer).ok()?;
    let entries = sys::read_dir_entries(root.as_fd()).ok()?;
    first_wh(entries.iter().map(|e| e.name.as_slice()))
}

/// The export mark if `names` holds it, else the first `.wh.` name.
fn first_wh<'n>(names: impl Iterator<Item = &'n [u8]>) -> Option<PathBuf> {
    let mut first = None;
    for name in names {
        if name == EXPORT_MARK {
            return Some(PathBuf::from(OsStr::from_bytes(EXPORT_MARK)));
        }
        if first.is_none() && name.starts_with(crate::union::marker::WH_PREFIX) {
            first = Some(name);
        }
    }
    first.map(|n| PathBuf::from(OsStr::from_bytes(n)))
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
    fn finds_whiteouts_and_the_mark_in_a_root_only() {
        let clean = layer("clean");
        std::fs::create_dir_all(clean.join("a/b")).unwrap();
        std::fs::write(clean.join("a/b/f"), b"x").unwrap();
        let opq = layer("opq");
        std::fs::write(opq.join(".wh..wh..opq"), b"").unwrap();
        let marked = layer("marked");
        std::fs::write(marked.join(".wh.x"), b"").unwrap();
        std::fs::write(marked.join(".wh..wh.fimfs"), b"").unwrap();
        let deep = layer("deep");
        std::fs::create_dir_all(deep.join("d")).unwrap();
        std::fs::write(deep.join("d/.wh.gone"), b"").unwrap();
        let up = layer("noupper").join("missing");

        assert_eq!(
            first_unreadable(&up, &[Root::Dir(&clean), Root::Dir(&deep)]),
            None
        );
        let hit = first_unreadable(&up, &[Root::Dir(&clean), Root::Dir(&opq)]).unwrap();
        assert_eq!(hit.layer, format!("lower 2 {}", opq.display()));
        assert_eq!(hit.entry, Path::new(".wh..wh..opq"));
        assert!(!hit.marked);
        let hit = first_unreadable(&marked, &[Root::Dir(&clean)]).unwrap();
        assert_eq!(hit.layer, format!("upper {}", marked.display()));
        assert!(hit.marked, "the mark wins over other names");
        let noupper = up.parent().map(Path::to_path_buf).unwrap_or_default();
        for d in [clean, opq, marked, deep, noupper] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

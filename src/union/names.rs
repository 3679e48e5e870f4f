//! What a lower layer directory holds, remembered as hashes of its names.
//!
//! Resolving a name probes each layer of its directory from the top down
//! to the one that holds it, and every layer that lacks the name costs two
//! `fstatat`: the name, then its `.wh.` file (SPEC §2 reads `.wh.` files in
//! every layer). The lowers never change under a mount, so once a lower
//! directory has been read, a name it lacks is answered without a call.
//! The listing comes free with a readdir of a merged directory, or is taken
//! once a few probes have missed (a small directory: before its first).
//!
//! Only hashes are kept, 8 bytes a name: a hash that is missing proves the
//! name (and its `.wh.` file) missing; a hash that is present, rightly or by
//! collision, sends the lookup to the layer as before.
use crate::layer::{Dir, Lower};
use crate::sys::DirEnt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Probes of one layer directory, the last of them a listing: a listing
/// costs an `openat`, two `getdents64` and a `close`, about two misses'
/// worth.
const LIST_AFTER_MISSES: u32 = 3;

/// A directory this small (`st_size`: one block on ext4 and xfs, about 200
/// entries on tmpfs) is listed before its first probe: reading it costs no
/// more than the misses it saves.
const SMALL_DIR_BYTES: i64 = 4096;

/// Bigger directories are not remembered (a miss there keeps its probes).
pub const MAX_NAMES: usize = 64 * 1024;

/// Longest name a layer can hold; longer ones get the layer's own answer.
const NAME_MAX: usize = 255;

/// The names of one lower layer directory, once read.
#[derive(Debug)]
pub struct LayerNames {
    misses: AtomicU32,
    /// Misses before the directory is listed.
    list_after: u32,
    /// Sorted hashes; `None`: too many names to keep.
    hashes: OnceLock<Option<Box<[u64]>>>,
}

impl Default for LayerNames {
    fn default() -> Self {
        LayerNames::with_list_after(LIST_AFTER_MISSES)
    }
}

/// The hash a name is filed under: a `.wh.NAME` file under `NAME`, so
/// that one search answers for both probes.
fn key(name: &[u8]) -> u64 {
    let name = name.strip_prefix(super::marker::WH_PREFIX).unwrap_or(name);
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

impl LayerNames {
    fn with_list_after(list_after: u32) -> Self {
        LayerNames {
            misses: AtomicU32::new(0),
            list_after,
            hashes: OnceLock::new(),
        }
    }

    /// For a layer directory whose `stat` is `st`: a small one is listed
    /// at its first miss.
    pub fn for_dir(st: &libc::stat) -> Self {
        match st.st_size <= SMALL_DIR_BYTES {
            true => LayerNames::with_list_after(1),
            false => LayerNames::default(),
        }
    }

    /// Is `name` known to be missing from the directory, with no `.wh.`
    /// file for it either?
    pub fn lacks(&self, name: &[u8]) -> bool {
        match self.hashes.get() {
            Some(Some(h)) if name.len() <= NAME_MAX => h.binary_search(&key(name)).is_err(),
            _ => false,
        }
    }

    /// Is the listing in hand (or known to be too big to keep)?
    pub fn known(&self) -> bool {
        self.hashes.get().is_some()
    }

    /// Notes that a probe of the directory found neither a name nor its
    /// whiteout.
    pub fn missed(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the directory if its listing is due: when the next probe is
    /// the miss that would call for it. Read before that probe, so the
    /// listing answers it (a small directory is read at its first probe,
    /// which then costs no `fstatat` of the name and its `.wh.` file). A
    /// failed read is tried again at the next probe.
    pub fn list_if_due(&self, lower: &dyn Lower, dir: &Dir) {
        if self.known() || self.misses.load(Ordering::Relaxed) + 1 < self.list_after {
            return;
        }
        if let Ok(entries) = lower.list(dir) {
            self.fill(entries.iter().map(|e: &DirEnt| e.name.as_slice()));
        }
    }

    /// Remembers the names a listing of the directory found (all of them).
    pub fn fill<'a>(&self, names: impl ExactSizeIterator<Item = &'a [u8]>) {
        if self.known() {
            return;
        }
        let kept = (names.len() <= MAX_NAMES).then(|| {
            let mut h: Vec<u64> = names.map(key).collect();
            h.sort_unstable();
            h.dedup();
            h.into_boxed_slice()
        });
        let _ = self.hashes.set(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Layer;

    fn filled(names: &[&[u8]]) -> LayerNames {
        let n = LayerNames::default();
        n.fill(names.iter().copied());
        n
    }

    #[test]
    fn nothing_is_known_missing_before_a_listing() {
        assert!(!LayerNames::default().lacks(b"a"));
    }

    #[test]
    fn a_listed_name_and_a_whited_out_name_are_not_missing() {
        let n = filled(&[b"a", b".wh.b", b".wh..wh..opq"]);
        assert!(!n.lacks(b"a"));
        assert!(!n.lacks(b"b"), "a .wh. file must still be probed");
        assert!(n.lacks(b"c"));
        assert!(n.lacks(b"ab"));
    }

    #[test]
    fn an_overlong_name_gets_the_layers_answer() {
        let n = filled(&[b"a"]);
        assert!(!n.lacks(&[b'x'; 300]));
        assert!(n.lacks(&[b'x'; 255]));
    }

    #[test]
    fn a_directory_too_big_to_keep_answers_nothing() {
        let names: Vec<Vec<u8>> = (0..=MAX_NAMES)
            .map(|i| format!("n{i}").into_bytes())
            .collect();
        let n = LayerNames::default();
        n.fill(names.iter().map(|v| v.as_slice()));
        assert!(n.known());
        assert!(!n.lacks(b"missing"));
    }

    #[test]
    fn a_directory_is_listed_after_a_few_misses() {
        let d = std::env::temp_dir().join(format!("fimfs-names-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("here"), b"").unwrap();
        let layer = Layer::open(&d).unwrap();
        let dir = Lower::root(&layer).unwrap();
        let small = LayerNames::for_dir(&layer.stat(&dir, c"").unwrap());
        small.list_if_due(&layer, &dir);
        assert!(
            small.known(),
            "a one-block directory is listed before its first probe"
        );
        let n = LayerNames::default();
        for _ in 1..LIST_AFTER_MISSES {
            n.list_if_due(&layer, &dir);
            assert!(!n.known());
            n.missed();
        }
        n.list_if_due(&layer, &dir);
        std::fs::remove_dir_all(&d).unwrap();
        assert!(n.known());
        assert!(n.lacks(b"gone"));
        assert!(!n.lacks(b"here"));
    }
}

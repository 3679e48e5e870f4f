//! Case-folding of names (`-o casefold`, SPEC §4).
//!
//! A name that is UTF-8 folds character by character with Unicode *simple*
//! case folding (one character to one character, as ext4's casefold and
//! Windows do); a name that is not UTF-8 folds to itself (it matches byte
//! for byte). The standard library's lower-case mapping equals simple
//! folding except for a short list of characters whose folding is not their
//! lower case (Greek final sigma and symbol variants, a Latin long s with a
//! dot); those are mapped here. Characters whose lower case is several
//! characters (U+0130) have no simple folding and stay as they are.
//!
//! Each layer directory gets a folded index (folded name → real names in
//! that directory), built from one `getdents` pass the first time a name
//! misses there: a wrong-case lookup in a 10,000-entry directory costs a
//! hash lookup, not a scan. Lower indexes live as long as the daemon (the
//! lowers never change); an upper index is rebuilt after any change the
//! daemon made (the engine's namespace generation) or when the directory's
//! change time moves (a change behind the mount).
use crate::layer::{Dir, Lower};
use crate::sys::Result;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;

/// Characters whose simple case folding differs from their lower case.
const SPECIAL: [(char, char); 12] = [
    ('\u{3c2}', '\u{3c3}'),   // ς final sigma → σ
    ('\u{3d0}', '\u{3b2}'),   // ϐ → β
    ('\u{3d1}', '\u{3b8}'),   // ϑ → θ
    ('\u{3d5}', '\u{3c6}'),   // ϕ → φ
    ('\u{3d6}', '\u{3c0}'),   // ϖ → π
    ('\u{3f0}', '\u{3ba}'),   // ϰ → κ
    ('\u{3f1}', '\u{3c1}'),   // ϱ → ρ
    ('\u{3f5}', '\u{3b5}'),   // ϵ → ε
    ('\u{1e9b}', '\u{1e61}'), // ẛ → ṡ
    ('\u{1fbe}', '\u{3b9}'),  // ι → ι
    ('\u{17f}', 's'),         // ſ long s → s
    ('\u{345}', '\u{3b9}'),   // combining ypogegrammeni → ι
];

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    if let Some((_, f)) = SPECIAL.iter().find(|(from, _)| *from == c) {
        return *f;
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// The folded form of `name`.
pub fn fold(name: &[u8]) -> Vec<u8> {
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    match std::str::from_utf8(name) {
        Ok(s) => s.chars().map(fold_char).collect::<String>().into_bytes(),
        Err(_) => name.to_vec(),
    }
}

/// Folded name → the real names of one directory, sorted (so the choice
/// among several spellings is deterministic).
#[derive(Debug, Default)]
pub struct FoldIndex {
    /// The directory's change time and the engine's namespace generation
    /// when the index was built.
    stamp: (i64, i64, u64),
    names: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl FoldIndex {
    /// Real names folding like `name`, sorted; `.wh.X` files are indexed
    /// under `X` and returned with their prefix.
    pub fn get(&self, folded: &[u8]) -> &[Vec<u8>] {
        self.names.get(folded).map_or(&[], |v| v.as_slice())
    }
}

/// Folded indexes of layer directories, keyed by (device, inode).
#[derive(Debug, Default)]
pub struct FoldCache {
    dirs: DashMap<(u64, u64), Arc<FoldIndex>>,
}

impl FoldCache {
    /// Forgets every index (lower ones are otherwise kept for ever).
    pub fn clear(&self) {
        self.dirs.clear();
    }

    /// The index of the directory `dir` of `layer`, fresh. `generation`
    /// is the engine's namespace generation for an upper directory, None
    /// for a lower one.
    pub fn index(
        &self,
        layer: &dyn Lower,
        dir: &Dir,
        generation: Option<u64>,
    ) -> Result<Arc<FoldIndex>> {
        let st = layer.stat(dir, c"")?;
        let key = (st.st_dev, st.st_ino);
        let stamp = match generation {
            Some(g) => (st.st_ctime, st.st_ctime_nsec, g),
            None => (0, 0, 0),
        };
        if let Some(ix) = self.dirs.get(&key)
            && ix.stamp == stamp
        {
            return Ok(ix.clone());
        }
        let mut names: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        for e in layer.list(dir)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let base = e
                .name
                .strip_prefix(super::marker::WH_PREFIX)
                .unwrap_or(&e.name);
            names.entry(fold(base)).or_default().push(e.name.clone());
        }
        for v in names.values_mut() {
            v.sort();
        }
        let ix = Arc::new(FoldIndex { stamp, names });
        self.dirs.insert(key, ix.clone());
        Ok(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folds_simply_and_keeps_non_utf8() {
        assert_eq!(fold(b"ReadMe.TXT"), b"readme.txt");
        assert_eq!(fold("ÄÖÜ".as_bytes()), "äöü".as_bytes());
        assert_eq!(fold("ΣΊΣΥΦΟΣ".as_bytes()), fold("σίσυφος".as_bytes()));
        assert_eq!(fold("Straße".as_bytes()), "straße".as_bytes());
        assert_eq!(fold("ſ".as_bytes()), b"s");
        // No simple folding: stays.
        assert_eq!(fold("İ".as_bytes()), "İ".as_bytes());
        assert_eq!(fold(b"\xffAB"), b"\xffAB");
    }
}

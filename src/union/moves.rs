//! The directory renames made through the mount (`Moves`): where each
//! moved a tree of the union, so that a path known from before them (an
//! image's path for an inode number, `union::direct`) can be carried to
//! where its entry is now.
//!
//! Invariant: moves are applied in the order they were made; the moves of
//! one rename (two for an exchange) at once.

/// The directory renames made through the mount, in order, as union paths
/// (components joined by `/`): each a set of moves made at once (two for
/// an exchange).
#[derive(Debug, Default)]
pub(super) struct Moves(parking_lot::RwLock<Vec<Step>>);

/// The moves of one rename, made at once: (from, to) union paths.
pub(super) type Step = Vec<(Vec<u8>, Vec<u8>)>;

impl Moves {
    /// Logs one rename's moves.
    pub(super) fn record(&self, step: Step) {
        self.0.write().push(step);
    }

    /// `path` (of an entry that was there before every logged move) where
    /// the moves since have taken it.
    pub(super) fn carry(&self, mut path: Vec<u8>) -> Vec<u8> {
        for step in self.0.read().iter() {
            for (from, to) in step {
                if let Some(rest) = below(&path, from) {
                    path = [to.as_slice(), rest].concat();
                    break;
                }
            }
        }
        path
    }
}

/// The rest of `path` after the directory `dir` (empty for `dir` itself,
/// else starting with `/`), if `path` is `dir` or below it.
fn below<'a>(path: &'a [u8], dir: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.first() == Some(&b'/')).then_some(rest)
}

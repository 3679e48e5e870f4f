//! The numbers entries go by: which inode number an entry reports (its
//! origin's, an upper file's own when it has several links, or the number
//! a copy carries on) and the attributes built with it. The policy itself
//! (encoding, sticky numbers) is `attr::InoMap`'s; this applies it to a
//! resolution (`lookup::Found`).
use super::attr::{Attr, Ino, Kind};
use super::engine::Union;
use super::lookup::Found;
use super::node::{Node, State};

/// An upper non-directory with several hard links.
pub(super) fn linked_upper(state: &State, st: &libc::stat) -> bool {
    state.upper && state.kind != Kind::Dir && st.st_nlink > 1
}

impl Union {
    /// The number an entry reports: its origin's, except for an upper
    /// file with several links, which reports its own so that every name
    /// of it agrees, and an upper inode that carries on another entry's
    /// number (a copy-up, a rename) while the daemon runs (see `attr`).
    pub(super) fn ino_of(&self, f: &Found) -> Ino {
        if linked_upper(&f.state, &f.st) {
            return self.inos.encode(f.st.st_dev, f.st.st_ino);
        }
        if f.state.upper
            && let Some(n) = self.inos.sticky_of(f.st.st_dev, f.st.st_ino)
        {
            return n;
        }
        self.inos.encode(f.origin.st_dev, f.origin.st_ino)
    }

    /// `f` leaves its name (removed, replaced, moved away). When it went by
    /// a lower entry's number, the kernel may still hold that number (an
    /// open file), so whatever comes at the name next takes a fresh one
    /// while the daemon runs (after a remount, the lower entry's again).
    pub(super) fn retire_origin(&self, f: &Found) {
        let own = f.state.upper && (f.origin.st_dev, f.origin.st_ino) == (f.st.st_dev, f.st.st_ino);
        // A lower entry with several links is never an origin (`resolve`),
        // and its other names keep their number.
        if !own && f.state.kind != Kind::Dir && f.origin.st_nlink <= 1 {
            self.inos.release(f.origin.st_dev, f.origin.st_ino);
        }
    }

    /// The number `node` goes by: its own when the kernel holds it, else
    /// (a transient node) what `f`, its resolution, reports.
    pub(super) fn number_of(&self, node: &Node, f: &Found) -> Ino {
        match node.ino {
            Ino(0) => self.ino_of(f),
            n => n,
        }
    }

    pub(super) fn attr_of(&self, node_ino: Option<Ino>, f: &Found) -> Attr {
        let ino = match node_ino {
            Some(i) if !linked_upper(&f.state, &f.st) => i,
            _ => self.ino_of(f),
        };
        Attr::from_stat(&f.st, ino, f.state.merged, self.opts.squash)
    }
}

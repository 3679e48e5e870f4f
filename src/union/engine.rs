//! The engine's value: the `Union` over one layer stack, its options, and
//! what it remembers across requests (the node table, the number map,
//! folded indexes, generations). The operations live in the files beside
//! this one, each an `impl Union` block; `mod.rs` says which is where.
//!
//! Invariants: the stack is fixed for the life of a mount; `generation`
//! only grows (cached layer directories of an older one are resolved
//! again); `ns_generation` grows after every change to the upper's names.
use super::attr::{CIOPFS_INO, Ino, InoMap, Kind, ROOT_INO, Squash};
use super::data::Reflinks;
use super::fold::{self, FoldCache};
use super::node::{self, Loc, Node, NodeTable, State};
use crate::layer::{LayerId, Lower, Stack, Workdir};
use crate::sys::{self, Errno, Result};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A name the kernel holds for a lower-only entry: parent, name, number.
pub type LowerOnlyName = (Ino, Vec<u8>, Ino);

/// Nodes dropped between two returns of free memory to the system.
const TRIM_EVERY: u64 = 32_768;

/// Behaviour switches of one mount.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub squash: Squash,
    /// The daemon may set `trusted.*` xattrs and any owner (root).
    pub privileged: bool,
    /// Names match case-insensitively (`-o casefold`, see `fold`).
    pub casefold: bool,
    /// How many layer directory fds the nodes may keep cached (None: half
    /// the process's open-file limit; see `node::DirFds`).
    pub dir_fd_budget: Option<usize>,
}

/// The merged view of one layer stack.
#[derive(Debug)]
pub struct Union {
    pub(super) stack: Stack,
    pub(super) work: Option<Workdir>,
    pub(super) nodes: NodeTable,
    pub(super) inos: InoMap,
    pub(super) opts: Options,
    /// Bumped by every directory rename: cached directory fds of nodes
    /// below a moved directory may point at the wrong layers.
    pub(super) generation: AtomicU64,
    /// Nodes dropped from the table so far (see `forget`).
    pub(super) dropped: AtomicU64,
    /// Folded name indexes of layer directories (casefold only).
    pub(super) fold: FoldCache,
    /// Bumped after every change the engine makes to the upper's names.
    pub(super) ns_generation: AtomicU64,
    /// Source filesystems that cannot share extents with the upper.
    pub(super) reflinks: Reflinks,
    /// Alone on the upper: lower-only entries are cached long (`cache`).
    pub(super) alone: Alone,
    /// Where directory renames moved trees (for numbers given out without
    /// a node, `direct`).
    pub(super) moves: super::moves::Moves,
}

impl Union {
    /// A union over `stack`; with an upper, `work` must be its workdir.
    pub fn new(stack: Stack, work: Option<Workdir>, opts: Options) -> Union {
        let root_state = State {
            kind: Kind::Dir,
            upper: stack.upper().is_some(),
            lower: None,
            merged: true,
        };
        let root = Node::new(
            ROOT_INO,
            Loc {
                parent: None,
                name: Vec::new(),
            },
            root_state,
        );
        Union {
            stack,
            work,
            nodes: NodeTable::new(
                Arc::new(root),
                opts.dir_fd_budget
                    .map_or_else(node::DirFds::for_this_process, node::DirFds::with_budget),
            ),
            inos: InoMap::new(),
            opts,
            generation: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            fold: FoldCache::default(),
            ns_generation: AtomicU64::new(0),
            reflinks: Default::default(),
            alone: Alone::new(true),
            moves: Default::default(),
        }
    }

    /// Notes that the upper's names changed (folded indexes of upper
    /// directories are then rebuilt on their next use).
    pub(crate) fn names_changed(&self) {
        self.ns_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Layer directory fds the nodes hold cached now.
    pub fn cached_dir_fds(&self) -> usize {
        self.nodes.dir_fds().held()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    pub fn workdir(&self) -> Option<&Workdir> {
        self.work.as_ref()
    }

    pub fn is_read_only(&self) -> bool {
        self.stack.upper().is_none()
    }

    /// Whether some file of the union may be handed to the kernel to read
    /// itself (passthrough, see `Opened::settled`): there is an upper, or
    /// the union has no upper and a lower of host files. A union of images
    /// alone has no file to hand over.
    pub fn has_settled_files(&self) -> bool {
        self.stack.upper().is_some()
            || self
                .stack
                .lower_ids()
                .filter_map(|id| self.stack.get(id))
                .any(|l| l.root().is_ok_and(|d| d.fd().is_some()))
    }

    /// Number of nodes in the table (for tests and memory checks): those
    /// the kernel holds, less the entries given out without one
    /// (`direct`).
    pub fn live_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// `fd`, open on the upper inode `ino` goes by, keeps that inode (and
    /// so its number) allocated while the kernel holds `ino` (see
    /// `lookup::hand_out`). Nothing to do for a node already forgotten.
    pub fn share_pin(&self, ino: Ino, fd: &Arc<OwnedFd>) {
        if let Some(node) = self.nodes.get(ino) {
            node.share_pin(fd);
        }
    }

    /// Were directory `ino`'s cached layers dropped only to keep within
    /// the fd budget (and not re-cached since)? For tests of the budget.
    pub fn dir_layers_shed(&self, ino: Ino) -> Result<bool> {
        let dir = self.nodes.get(ino).ok_or(Errno::ESTALE)?;
        Ok(dir.shed_generation().is_some())
    }

    /// Layer `id`, through the calls every layer answers.
    pub(super) fn layer(&self, id: LayerId) -> Result<&dyn Lower> {
        self.stack.get(id).ok_or(Errno::ENOENT)
    }

    /// Is `ino` the `.ciopfs` entry of a casefold mount?
    pub(super) fn is_ciopfs(&self, ino: Ino) -> bool {
        ino == CIOPFS_INO && self.opts.casefold
    }

    /// Casefold: the other spellings of `parent/name` the kernel holds for
    /// the same entry. Once the name is removed or renamed, those entries
    /// are stale: see `drop_spellings`.
    pub fn other_spellings(&self, parent: Ino, name: &[u8]) -> Vec<Vec<u8>> {
        if !self.opts.casefold {
            return Vec::new();
        }
        let Some(p) = self.nodes.get(parent) else {
            return Vec::new();
        };
        let Some(n) = self.nodes.child(&p, name) else {
            return Vec::new();
        };
        let folded = fold::fold(name);
        n.locs()
            .into_iter()
            .filter(|l| l.parent.as_ref().is_some_and(|x| Arc::ptr_eq(x, &p)))
            .filter(|l| l.name != name && fold::fold(&l.name) == folded)
            .map(|l| l.name)
            .collect()
    }

    /// The names `names` of `parent` no longer lead to their entry.
    pub fn drop_spellings(&self, parent: Ino, names: &[Vec<u8>]) {
        if let Some(p) = self.nodes.get(parent) {
            for n in names {
                self.nodes.unlinked(&p, n);
            }
        }
    }

    /// The names the kernel holds for lower-only nodes, as (parent, name,
    /// node): what to drop from its caches once the lowers' view may
    /// change behind this daemon (another daemon shares the upper).
    pub fn lower_only_names(&self) -> Vec<LowerOnlyName> {
        let mut names = self.nodes.lower_only_names();
        names.extend(self.numbered_names());
        names
    }

    /// Forgets what the engine remembers of the lowers, which never change
    /// under a mount unless a user changed one on purpose (`SIGUSR1`): the
    /// names each lower directory lacks, folded indexes, every node's cached
    /// layer directories and listing stamps. Returns the live node numbers
    /// and the lower-only names, whose kernel caches the caller drops.
    pub fn forget_lowers(&self) -> (Vec<Ino>, Vec<LowerOnlyName>) {
        let names = self.nodes.lower_only_names();
        let inos = self.nodes.forget_layers();
        self.fold.clear();
        // Cached layers of an older generation are resolved again.
        self.generation.fetch_add(1, Ordering::AcqRel);
        (inos, names)
    }

    /// The kernel forgot `n` lookups of `ino`.
    /// Every [`TRIM_EVERY`] nodes dropped, the allocator gives its free
    /// memory back to the system: after the kernel evicts its inodes (memory
    /// pressure, `drop_caches`), a daemon that had a million nodes would
    /// otherwise keep their 400 MiB mapped.
    /// True when that was its last lookup: the node is gone.
    pub fn forget(&self, ino: Ino, n: u64) -> bool {
        let gone = self.nodes.forget(ino, n);
        if gone {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_multiple_of(TRIM_EVERY) {
                sys::trim_heap();
            }
        }
        gone
    }
}

/// Whether this daemon is alone on its upper (true without an upper). The
/// adapter's watcher sets it; the engine reads it for every [`Cache`].
#[derive(Debug, Clone)]
pub struct Alone(Arc<AtomicBool>);

impl Alone {
    pub fn new(alone: bool) -> Alone {
        Alone(Arc::new(AtomicBool::new(alone)))
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the flag; returns what it was.
    pub fn set(&self, alone: bool) -> bool {
        self.0.swap(alone, Ordering::Relaxed)
    }
}

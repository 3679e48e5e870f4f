//! The union engine: the merged view of a layer stack, FUSE-free.
//!
//! Every operation takes inode numbers and byte-string names and returns
//! `Result<_, Errno>`; nothing here knows about `fuser`, so the union rules
//! are tested directly (see `tests/engine_*.rs`), and the `fuse` adapter only
//! translates. Layout, after Linux `fs/overlayfs/`:
//! - `resolve`: top-down lookup (namei), `readdir`: merged listings,
//! - `marker`: whiteout/opaque formats, `names`: what lowers lack, `attr`: st_ino policy and squash,
//! - `node`: the inode table, `copy_up` and `write`: the mutating side.
pub mod attr;
mod copy_up;
mod flags;
pub mod fold;
pub mod marker;
mod names;
pub mod node;
mod readdir;
mod rename;
mod resolve;
mod write;

pub use attr::{Attr, Kind, ROOT_INO, Squash};
pub use flags::InodeFlags;
pub use readdir::DirEntry;
pub use write::{Caller, Make, SetAttr};

use crate::layer::{Dir, File, LayerId, Lower, Stack, UPPER, Workdir};
use crate::sys::{self, Errno, Result};
use attr::InoMap;
use node::{Loc, Node, NodeTable, State};
use resolve::Found;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An upper non-directory with several hard links.
fn linked_upper(state: &State, st: &libc::stat) -> bool {
    state.upper && state.kind != Kind::Dir && st.st_nlink > 1
}

/// A name the kernel holds for a lower-only entry: parent, name, number.
pub type LowerOnlyName = (u64, Vec<u8>, u64);

/// With casefold, `.ciopfs` answers lookups in every directory (Wine then
/// treats the mount as case-insensitive and stops scanning directories
/// itself, as on ciopfs) but is never listed: one read-only empty file,
/// under a number no layer entry can have (layer numbers carry a device id
/// in their top byte).
pub const CIOPFS_NAME: &[u8] = b".ciopfs";
pub const CIOPFS_INO: u64 = 2;

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
    stack: Stack,
    work: Option<Workdir>,
    nodes: NodeTable,
    inos: InoMap,
    opts: Options,
    /// Bumped by every directory rename: cached directory fds of nodes
    /// below a moved directory may point at the wrong layers.
    generation: AtomicU64,
    /// Nodes dropped from the table so far (see `forget`).
    dropped: AtomicU64,
    /// Folded name indexes of layer directories (casefold only).
    fold: fold::FoldCache,
    /// Bumped after every change the engine makes to the upper's names.
    ns_generation: AtomicU64,
    /// Source filesystems that cannot share extents with the upper.
    reflinks: copy_up::Reflinks,
}

/// A directory whose entries are being looked up for one readdirplus
/// reply (see [`Union::listed_dir`]).
#[derive(Debug)]
pub struct ListedDir {
    node: Arc<Node>,
    layers: node::DirLayers,
}

/// Where one union entry lives in its winning layer: `dir` plus `name`,
/// or the directory `dir` itself when `name` is empty.
#[derive(Debug, Clone)]
pub struct Place {
    pub layer: LayerId,
    pub dir: Dir,
    pub name: CString,
}

impl Place {
    /// The directory fd of a place in the upper (a host directory). A
    /// lower place without an fd is EROFS: nothing writes there.
    pub fn upper_fd(&self) -> Result<BorrowedFd<'_>> {
        self.dir.fd().map(|f| f.as_fd()).ok_or(Errno::EROFS)
    }
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
            fold: fold::FoldCache::default(),
            ns_generation: AtomicU64::new(0),
            reflinks: Default::default(),
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

    /// Number of nodes the kernel holds (for tests and memory checks).
    pub fn live_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The live node numbered `ino`.
    pub fn node(&self, ino: u64) -> Result<Arc<Node>> {
        self.nodes.get(ino).ok_or(Errno::ESTALE)
    }

    /// The number an entry reports: its origin's, except for an upper
    /// file with several links, which reports its own so that every name
    /// of it agrees, and an upper inode that carries on another entry's
    /// number (a copy-up, a rename) while the daemon runs (see `attr`).
    fn ino_of(&self, f: &Found) -> u64 {
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
    fn retire_origin(&self, f: &Found) {
        let own = f.state.upper && (f.origin.st_dev, f.origin.st_ino) == (f.st.st_dev, f.st.st_ino);
        // A lower entry with several links is never an origin (`resolve`),
        // and its other names keep their number.
        if !own && f.state.kind != Kind::Dir && f.origin.st_nlink <= 1 {
            self.inos.release(f.origin.st_dev, f.origin.st_ino);
        }
    }

    /// The number `node` goes by: its own when the kernel holds it, else
    /// (a transient node) what `f`, its resolution, reports.
    fn number_of(&self, node: &Node, f: &Found) -> u64 {
        match node.ino {
            0 => self.ino_of(f),
            n => n,
        }
    }

    fn attr_of(&self, node_ino: Option<u64>, f: &Found) -> Attr {
        let ino = match node_ino {
            Some(i) if !linked_upper(&f.state, &f.st) => i,
            _ => self.ino_of(f),
        };
        Attr::from_stat(&f.st, ino, f.state.merged, self.opts.squash)
    }

    /// Looks `name` up in directory `parent`, counting one kernel lookup.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<(Arc<Node>, Attr)> {
        self.lookup_spelled(parent, name).map(|(n, a, _)| (n, a))
    }

    /// [`Union::lookup`], also saying whether `name` is the entry's own
    /// spelling (always, without casefold). The kernel must not cache a
    /// folded spelling for long: when the entry is renamed or removed,
    /// it updates only the spelling the call used.
    pub fn lookup_spelled(&self, parent: u64, name: &[u8]) -> Result<(Arc<Node>, Attr, bool)> {
        let p = self.node(parent)?;
        if let Some(r) = self.ciopfs_lookup(name) {
            return r.map(|(n, a)| (n, a, true));
        }
        let pl = self.dir_layers_fresh(&p)?;
        self.lookup_at(p, &pl, name)
    }

    /// With casefold, the `.ciopfs` entry every directory shows (no layer
    /// holds it); None for any other name.
    fn ciopfs_lookup(&self, name: &[u8]) -> Option<Result<(Arc<Node>, Attr)>> {
        if !self.opts.casefold || name != CIOPFS_NAME {
            return None;
        }
        let node = self.nodes.remember_fixed(CIOPFS_INO);
        Some(self.ciopfs_attr().map(|a| (node, a)))
    }

    /// Directory `parent`, ready for the lookups of one readdirplus reply:
    /// whether the upper gained it behind the mount is checked once for
    /// the reply, not once per entry (an `openat2` walk or two `fstatat`
    /// each, for every entry of a lower-only directory).
    pub fn listed_dir(&self, parent: u64) -> Result<ListedDir> {
        let node = self.node(parent)?;
        let layers = self.dir_layers_fresh(&node)?;
        Ok(ListedDir { node, layers })
    }

    /// [`Union::lookup`] of an entry of a listed directory.
    pub fn lookup_listed(&self, dir: &ListedDir, name: &[u8]) -> Result<(Arc<Node>, Attr)> {
        if let Some(r) = self.ciopfs_lookup(name) {
            return r;
        }
        self.lookup_at(dir.node.clone(), &dir.layers, name)
            .map(|(n, a, _)| (n, a))
    }

    fn lookup_at(
        &self,
        p: Arc<Node>,
        pl: &node::DirLayers,
        name: &[u8],
    ) -> Result<(Arc<Node>, Attr, bool)> {
        let found = self.resolve_in(pl, name);
        tracing::trace!(parent = p.ino, name = %String::from_utf8_lossy(name), ok = found.is_ok(), "lookup");
        let found = found?;
        let exact = found.name == name;
        let (node, attr) = self.hand_out(p, pl, name, found, None);
        Ok((node, attr, exact))
    }

    /// Hands the entry `found` at `parent/name` (whose layers are `pl`)
    /// to the kernel: the node and its attributes, one lookup counted.
    ///
    /// A number taken from an upper inode is pinned (an `O_PATH` fd held
    /// by the node, as libfuse's passthrough_hp does): while the kernel
    /// knows the number, the upper cannot free that inode and hand its
    /// number to a new file, which the kernel would then take for this
    /// node. Lower numbers need no pin: the lowers never change. `opened`,
    /// an fd the caller holds on the entry (a file it just made), pins it
    /// without a second open.
    fn hand_out(
        &self,
        parent: Arc<Node>,
        pl: &node::DirLayers,
        name: &[u8],
        found: Found,
        opened: Option<&Arc<OwnedFd>>,
    ) -> (Arc<Node>, Attr) {
        let attr = self.attr_of(None, &found);
        let own = self.inos.encode(found.st.st_dev, found.st.st_ino);
        let numbered_by_upper = found.state.upper && attr.ino == own;
        let dir_fd = found.dir.as_ref().and_then(|d| d.upper().cloned());
        let pin = || -> Option<Arc<OwnedFd>> {
            if !numbered_by_upper {
                return None;
            }
            if dir_fd.is_some() {
                return dir_fd;
            }
            if let Some(fd) = opened {
                return Some(fd.clone());
            }
            let dir = pl.upper()?;
            let c = sys::cstr(name).ok()?;
            sys::openat(dir.as_fd(), &c, libc::O_PATH, 0)
                .ok()
                .map(Arc::new)
        };
        let loc = Loc {
            parent: Some(parent),
            name: name.to_vec(),
        };
        let node = self
            .nodes
            .remember(attr.ino, loc, found.state, found.dir, pin);
        (node, attr)
    }

    fn ciopfs_attr(&self) -> Result<Attr> {
        let top = self.stack.statfs_layer().ok_or(Errno::ENOENT)?;
        let mut st = top.stat(&top.root()?, c"")?;
        st.st_mode = libc::S_IFREG | 0o444;
        st.st_nlink = 1;
        st.st_size = 0;
        st.st_blocks = 0;
        st.st_uid = sys::geteuid();
        st.st_gid = sys::getegid();
        Ok(Attr::from_stat(&st, CIOPFS_INO, false, self.opts.squash))
    }

    /// Casefold: the other spellings of `parent/name` the kernel holds for
    /// the same entry. Once the name is removed or renamed, those entries
    /// are stale: see `drop_spellings`.
    pub fn other_spellings(&self, parent: u64, name: &[u8]) -> Vec<Vec<u8>> {
        if !self.opts.casefold {
            return Vec::new();
        }
        let Ok(p) = self.node(parent) else {
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
    pub fn drop_spellings(&self, parent: u64, names: &[Vec<u8>]) {
        if let Ok(p) = self.node(parent) {
            for n in names {
                self.nodes.unlinked(&p, n);
            }
        }
    }

    /// The names the kernel holds for lower-only nodes, as (parent, name,
    /// node): what to drop from its caches once the lowers' view may
    /// change behind this daemon (another daemon shares the upper).
    pub fn lower_only_names(&self) -> Vec<LowerOnlyName> {
        self.nodes.lower_only_names()
    }

    /// Forgets what the engine remembers of the lowers, which never change
    /// under a mount unless a user changed one on purpose (`SIGUSR1`): the
    /// names each lower directory lacks, folded indexes, every node's cached
    /// layer directories and listing stamps. Returns the live node numbers
    /// and the lower-only names, whose kernel caches the caller drops.
    pub fn forget_lowers(&self) -> (Vec<u64>, Vec<LowerOnlyName>) {
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
    pub fn forget(&self, ino: u64, n: u64) {
        if self.nodes.forget(ino, n) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_multiple_of(TRIM_EVERY) {
                sys::trim_heap();
            }
        }
    }

    /// Resolves `node` afresh and returns where it lives; a node with
    /// several names (hard links) is found under any that still exists.
    pub fn place(&self, node: &Arc<Node>) -> Result<(Found, Place)> {
        if node.ino == CIOPFS_INO {
            return Err(Errno::EACCES);
        }
        let locs = node.locs();
        let mut first_err = Errno::ENOENT;
        for (i, loc) in locs.iter().enumerate() {
            match self.place_at(node, loc) {
                Ok(r) => {
                    if i > 0 {
                        node.add_loc(loc.clone());
                    }
                    return Ok(r);
                }
                Err(e) if i == 0 => first_err = e,
                Err(_) => {}
            }
        }
        Err(first_err)
    }

    fn place_at(&self, node: &Arc<Node>, loc: &Loc) -> Result<(Found, Place)> {
        let (found, parent) = match &loc.parent {
            Some(p) => {
                let pl = self.dir_layers(p)?;
                (self.resolve_in(&pl, &loc.name)?, Some(pl))
            }
            None => (self.resolve_root()?, None),
        };
        node.set_state(found.state.clone());
        let place = match (&found.dir, parent) {
            (Some(d), _) => {
                self.nodes.set_dir(node, d.clone());
                let top = d.layers.first().ok_or(Errno::ENOENT)?;
                Place {
                    layer: top.id,
                    dir: top.dir.clone(),
                    name: CString::default(),
                }
            }
            (None, Some(pl)) => {
                let l = pl.layers.iter().find(|l| l.id == found.winner);
                Place {
                    layer: found.winner,
                    dir: l.ok_or(Errno::ENOENT)?.dir.clone(),
                    name: sys::cstr(&found.name)?,
                }
            }
            (None, None) => return Err(Errno::ENOENT),
        };
        Ok((found, place))
    }

    /// Where `node` lives, from its last resolution, when that cannot be
    /// stale: the winner is the upper (its fd-relative calls fail if it
    /// went away), or a lower (immutable) and the upper still lacks the
    /// name. None: resolve again.
    fn cached_place(&self, node: &Arc<Node>) -> Result<Option<(node::State, Place)>> {
        if self.opts.casefold {
            // The name the kernel used may not be the entry's spelling.
            return Ok(None);
        }
        let st = node.state();
        if st.kind == Kind::Dir {
            let d = self.dir_layers(node)?;
            let top = d.layers.first().ok_or(Errno::ENOENT)?;
            if (top.id == UPPER) != st.upper {
                return Ok(None);
            }
            let place = Place {
                layer: top.id,
                dir: top.dir.clone(),
                name: CString::default(),
            };
            return Ok(Some((st, place)));
        }
        let Some(loc) = node.loc() else {
            return Err(Errno::ENOENT);
        };
        let Some(parent) = &loc.parent else {
            return Ok(None);
        };
        let pl = self.dir_layers(parent)?;
        let winner = match (st.upper, st.lower) {
            (true, _) => UPPER,
            (false, Some(l)) => {
                if let Some(u) = pl.upper()
                    && !matches!(marker::probe(u.as_fd(), &loc.name)?, marker::Probe::Absent)
                {
                    return Ok(None);
                }
                l
            }
            (false, None) => return Ok(None),
        };
        let Some(l) = pl.layers.iter().find(|l| l.id == winner) else {
            return Ok(None);
        };
        let place = Place {
            layer: winner,
            dir: l.dir.clone(),
            name: sys::cstr(&loc.name)?,
        };
        Ok(Some((st, place)))
    }

    /// Where `node` lives when its last resolution put it in the upper and
    /// the upper still holds an entry of its kind there: it needs no
    /// copy-up, and calls on the place act on it. None: ask `place`.
    fn upper_place(&self, node: &Arc<Node>) -> Option<Place> {
        // A lower node: cached_place would probe the upper for nothing
        // (every read open of a lower file comes here before `place`).
        if !node.state().upper {
            return None;
        }
        let (state, place) = self.cached_place(node).ok()??;
        if !state.upper {
            return None;
        }
        let st = sys::fstatat(place.upper_fd().ok()?, &place.name).ok()?;
        let same = Kind::from_mode(st.st_mode) == state.kind && !marker::is_whiteout_stat(&st);
        same.then_some(place)
    }

    /// Where `node` lives once it is in the upper, copied up first if it
    /// is not (with `truncate`, without its data).
    fn writable_place(&self, node: &Arc<Node>, truncate: bool) -> Result<Place> {
        if let Some(p) = self.upper_place(node) {
            return Ok(p);
        }
        self.copy_up(node, truncate)
    }

    /// `place` without its resolution when the cache allows.
    fn quick_place(&self, node: &Arc<Node>) -> Result<Place> {
        match self.cached_place(node) {
            Ok(Some((_, p))) => Ok(p),
            // Not cached, or its primary name went away: try every name.
            _ => Ok(self.place(node)?.1),
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        if ino == CIOPFS_INO && self.opts.casefold {
            return self.ciopfs_attr();
        }
        let node = self.node(ino)?;
        if node.loc().is_none()
            && let Some(pin) = node.pinned()
        {
            // Unlinked, still open (fstat): the pinned inode answers.
            let st = sys::fstat(pin.as_fd())?;
            return Ok(Attr::from_stat(&st, ino, false, self.opts.squash));
        }
        if let Ok(Some((state, place))) = self.cached_place(&node)
            && let Ok(st) = self.layer(place.layer)?.stat(&place.dir, &place.name)
            && Kind::from_mode(st.st_mode) == state.kind
        {
            let ino = match linked_upper(&state, &st) {
                true => self.inos.encode(st.st_dev, st.st_ino),
                false => ino,
            };
            return Ok(Attr::from_stat(&st, ino, state.merged, self.opts.squash));
        }
        let (found, _) = self.place(&node)?;
        Ok(self.attr_of(Some(ino), &found))
    }

    /// The attributes of a directory node from its cached layers, without
    /// resolving its name again in every layer (a warm `find` opens every
    /// directory; over 100 lowers that was 100 probes each). None when
    /// the cache cannot answer for sure: the directory left its top layer,
    /// or the upper gained it behind the mount (its listing must then be
    /// taken again, which a changed stamp tells the kernel).
    fn quick_dir_attr(&self, node: &Arc<Node>) -> Option<Attr> {
        if node.cached_dir(self.generation()).is_none() {
            return self.shed_dir_attr(node);
        }
        let (state, place) = self.cached_place(node).ok()??;
        if state.kind != Kind::Dir {
            return None;
        }
        if !state.upper && self.upper_behind(node) != resolve::Behind::Nothing {
            return None;
        }
        self.live_dir_attr(node, &state, self.layer(place.layer).ok()?, &place.dir)
    }

    /// The attributes of directory `node` from `dir`, its top layer's
    /// directory; None when that directory is gone.
    fn live_dir_attr(
        &self,
        node: &Node,
        state: &node::State,
        layer: &dyn Lower,
        dir: &Dir,
    ) -> Option<Attr> {
        let st = layer.stat(dir, c"").ok()?;
        if st.st_nlink == 0 || Kind::from_mode(st.st_mode) != Kind::Dir {
            return None;
        }
        Some(Attr::from_stat(
            &st,
            node.ino,
            state.merged,
            self.opts.squash,
        ))
    }

    /// `quick_dir_attr` for a lower-only directory whose cached layers were
    /// dropped to stay within the fd budget: one open of its top lower by
    /// path, not a reopening of every layer (a warm `find` over 200
    /// directories in 100 lowers, with room for half their fds, reopened
    /// 20,000 directories a pass).
    fn shed_dir_attr(&self, node: &Arc<Node>) -> Option<Attr> {
        if self.opts.casefold || node.shed_generation() != Some(self.generation()) {
            return None;
        }
        let state = node.state();
        let (Kind::Dir, false, Some(top)) = (state.kind, state.upper, state.lower) else {
            return None;
        };
        if self.upper_behind(node) != resolve::Behind::Nothing {
            return None;
        }
        let layer = self.stack.get(top)?;
        let dir = layer.open_path(&node.path()).ok()?;
        self.live_dir_attr(node, &state, layer, &dir)
    }

    /// The attributes of an open file, for a node that lost its last
    /// name (unlinked while open): what `fstat` on it reports.
    pub fn getattr_open(&self, ino: u64, fd: std::os::fd::BorrowedFd<'_>) -> Result<Attr> {
        let node = self.node(ino)?;
        let st = sys::fstat(fd)?;
        Ok(Attr::from_stat(&st, node.ino, false, self.opts.squash))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        let (found, place) = self.place(&node)?;
        if found.state.kind != Kind::Symlink {
            return Err(Errno::EINVAL);
        }
        self.layer(place.layer)?.readlink(&place.dir, &place.name)
    }

    pub fn statfs(&self) -> Result<libc::statfs> {
        self.stack.statfs_layer().ok_or(Errno::ENOENT)?.statfs()
    }

    /// Layer `id`, through the calls every layer answers.
    fn layer(&self, id: LayerId) -> Result<&dyn Lower> {
        self.stack.get(id).ok_or(Errno::ENOENT)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        if marker::is_layer_xattr(name) {
            return self.layer_of(ino);
        }
        // `.ciopfs` lives in no layer: a file without xattrs.
        if marker::is_private_xattr(name) || self.is_ciopfs(ino) {
            return Err(Errno::ENODATA);
        }
        let node = self.node(ino)?;
        let place = self.quick_place(&node)?;
        self.layer(place.layer)?
            .xattr(&place.dir, &place.name, &sys::cstr(name)?)
    }

    /// Is `ino` the `.ciopfs` entry of a casefold mount?
    pub(super) fn is_ciopfs(&self, ino: u64) -> bool {
        ino == CIOPFS_INO && self.opts.casefold
    }

    /// Which layer serves `ino` (`user.fimfs.layer`): `upper`, or
    /// `lower N DIR` (N from 1 at the top-most lower). A merged directory
    /// names its top-most layer.
    fn layer_of(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        if ino == CIOPFS_INO && self.opts.casefold {
            return Err(Errno::ENODATA);
        }
        let (found, _) = self.place(&node)?;
        match (found.winner, self.stack.get(found.winner)) {
            (UPPER, _) => Ok(b"upper".to_vec()),
            (id, Some(l)) => {
                let mut v = format!("lower {id} ").into_bytes();
                v.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(l.path().as_os_str()));
                Ok(v)
            }
            (_, None) => Err(Errno::ENODATA),
        }
    }

    /// The xattr names of `ino`, NUL-separated, private ones left out.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        if self.is_ciopfs(ino) {
            return Ok(Vec::new());
        }
        let node = self.node(ino)?;
        let place = self.quick_place(&node)?;
        let raw = self
            .layer(place.layer)?
            .xattr_names(&place.dir, &place.name)?;
        let mut out = Vec::with_capacity(raw.len());
        for n in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if !marker::is_private_xattr(n) {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Opens the file `ino` for I/O; also says whether the fd is on the
    /// upper. A write open copies a lower file up first (with `O_TRUNC`,
    /// without copying its data).
    pub fn open(&self, ino: u64, flags: i32) -> Result<(OwnedFd, bool)> {
        let (file, upper) = self.open_file(ino, flags)?;
        // A lower without fds has its files read through `File::read_at`.
        let fd = file.into_fd().map_err(|_| Errno::EOPNOTSUPP)?;
        Ok((fd, upper))
    }

    /// [`Union::open`], as the layer hands the file out.
    pub fn open_file(&self, ino: u64, flags: i32) -> Result<(File, bool)> {
        let node = self.node(ino)?;
        let acc = flags & libc::O_ACCMODE;
        let writes = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if writes && self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let place = match writes {
            true => Some(self.writable_place(&node, flags & libc::O_TRUNC != 0)?),
            false => self.upper_place(&node),
        };
        let (state, place) = match place {
            Some(p) => (node.state(), p),
            None => {
                let (found, place) = self.place(&node)?;
                (found.state, place)
            }
        };
        if state.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        // The kernel computes every offset itself: O_APPEND on the backing
        // fd would move writes; O_DIRECT is not needed below the page cache
        // and fails on some uppers.
        let keep =
            libc::O_ACCMODE | libc::O_TRUNC | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC;
        let layer = self.layer(place.layer)?;
        let fd = match layer.open(&place.dir, &place.name, flags & keep) {
            // Deleted since it was found: the name is now a whiteout (a 0/0
            // device, which has no driver).
            Err(Errno::ENXIO) => return Err(Errno::ENOENT),
            other => other?,
        };
        Ok((fd, state.upper))
    }

    /// Has `ino` been copied up since a handle was opened on its lower?
    pub fn is_upper(&self, ino: u64) -> bool {
        self.nodes.get(ino).is_some_and(|n| n.state().upper)
    }

    /// Opens a directory of the union for a listing; checks it exists.
    /// Also gives the directory's attributes, as `getattr` would.
    pub fn opendir(&self, ino: u64) -> Result<(Arc<Node>, Attr)> {
        let node = self.node(ino)?;
        if let Some(a) = self.quick_dir_attr(&node) {
            return Ok((node, a));
        }
        let (found, _) = self.place(&node)?;
        if found.state.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok((node, self.attr_of(Some(ino), &found)))
    }
}

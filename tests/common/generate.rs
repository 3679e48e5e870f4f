//! Generated trees: a deterministic many-file, many-lower layer set with a model of
//! what the union must show, for comparisons at scale (fimfs against the kernel
//! overlay, random operations).
//!
//! Invariant: only the kernel's own dialect is written, so the kernel overlay can
//! serve as the reference; the same seed gives the same layers.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::rng::XorShift;
use super::sys::set_xattr;
use super::tree::join_rel;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32, opaque: bool },
    File { mode: u32, len: usize, seed: u64 },
    Symlink { target: Vec<u8> },
    Fifo { mode: u32 },
    Whiteout,
}

/// What [`generate_tree`] made.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    pub regular: usize,
    pub symlinks: usize,
    pub fifos: usize,
    pub whiteouts: usize,
    pub opaque_dirs: usize,
    pub dirs: usize,
    /// Visible names that exist in more than one layer.
    pub shadowed: usize,
    /// Whiteouts that hide something of a lower layer.
    pub effective_whiteouts: usize,
    /// Visible directories merged from several layers.
    pub merged_dirs: usize,
    /// Names hidden below an opaque directory.
    pub opaque_hidden: usize,
    /// Files and directories given a `user.gen` xattr.
    pub user_xattrs: usize,
}

pub struct Generated {
    /// Top-most first: `dir/lower1` … `dir/lowerN`.
    pub lowers: Vec<PathBuf>,
    pub stats: GenStats,
    /// Every path the union must show (root included as `b""`), from the model.
    pub expected: BTreeSet<Vec<u8>>,
}

const FILE_MODES: [u32; 8] = [0o644, 0o644, 0o644, 0o755, 0o600, 0o444, 0o640, 0o4755];
const DIR_MODES: [u32; 6] = [0o755, 0o755, 0o755, 0o700, 0o555, 0o1777];
const OWNERS: [(u32, u32); 4] = [(0, 0), (1000, 1000), (0, 100), (65534, 65534)];

fn parent_rel(p: &[u8]) -> &[u8] {
    p.iter().rposition(|&b| b == b'/').map_or(&[], |i| &p[..i])
}

fn base_rel(p: &[u8]) -> &[u8] {
    p.iter()
        .rposition(|&b| b == b'/')
        .map_or(p, |i| &p[i + 1..])
}

/// A directory name from the shared pool; a few are not plain ASCII.
fn dir_name(i: usize) -> Vec<u8> {
    match i % 23 {
        7 => format!("dir {i} with spaces").into_bytes(),
        11 => format!("ünïcödé-{i}").into_bytes(),
        13 => [b"latin1-\xe9t\xe9-".as_slice(), i.to_string().as_bytes()].concat(),
        _ => format!("d{i:03}").into_bytes(),
    }
}

/// A non-directory name from a directory's pool (also used for clashing directories).
fn file_name(k: usize) -> Vec<u8> {
    match k % 97 {
        5 => {
            let mut n = format!("long-{k}-").into_bytes();
            n.resize(255, b'x');
            n
        }
        17 => format!("Mixed.Case.{k}.TXT").into_bytes(),
        _ => format!("f{k:03}").into_bytes(),
    }
}

/// Every visible path, and each visible directory with the layers merged into it.
type Resolved = (BTreeSet<Vec<u8>>, Vec<(Vec<u8>, Vec<usize>)>);

/// Layers as ordered maps: path → node. A path's ancestors are always `Dir`s of the
/// same layer, and a map is written out in order, parents first.
struct Model {
    layers: Vec<BTreeMap<Vec<u8>, Node>>,
    owners: Vec<BTreeMap<Vec<u8>, (u32, u32)>>,
}

impl Model {
    fn children(&self, layer: usize, dir: &[u8]) -> Vec<Vec<u8>> {
        let prefix = if dir.is_empty() {
            Vec::new()
        } else {
            join_rel(dir, b"")
        };
        self.layers[layer]
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p.is_empty() && parent_rel(p) == dir)
            .map(|(p, _)| base_rel(p).to_vec())
            .collect()
    }

    /// The union's rules, independent of any implementation: returns every visible
    /// path and, for each visible directory, the layers merged into it.
    fn resolve(&self, stats: &mut GenStats) -> Resolved {
        let mut visible = BTreeSet::new();
        let mut dirs = Vec::new();
        let mut stack: Vec<(Vec<u8>, Vec<usize>)> =
            vec![(Vec::new(), (0..self.layers.len()).collect())];
        visible.insert(Vec::new());
        while let Some((dir, chain)) = stack.pop() {
            let mut names = BTreeSet::new();
            for &l in &chain {
                names.extend(self.children(l, &dir));
            }
            for name in names {
                let path = join_rel(&dir, &name);
                let present: Vec<usize> = chain
                    .iter()
                    .copied()
                    .filter(|&l| self.layers[l].contains_key(&path))
                    .collect();
                let top = present[0];
                match &self.layers[top][&path] {
                    Node::Whiteout => {
                        if present.len() > 1 {
                            stats.effective_whiteouts += 1;
                        }
                    }
                    Node::Dir { opaque, .. } => {
                        let mut sub = vec![top];
                        if !opaque {
                            for &l in &present[1..] {
                                match &self.layers[l][&path] {
                                    Node::Dir { opaque, .. } => {
                                        sub.push(l);
                                        if *opaque {
                                            break;
                                        }
                                    }
                                    _ => break,
                                }
                            }
                        }
                        if present.len() > 1 {
                            stats.shadowed += 1;
                        }
                        visible.insert(path.clone());
                        stack.push((path, sub));
                    }
                    _ => {
                        if present.len() > 1 {
                            stats.shadowed += 1;
                        }
                        visible.insert(path);
                    }
                }
            }
            if let Some(&last) = chain.last()
                && let Some(Node::Dir { opaque: true, .. }) = self.layers[last].get(&dir)
            {
                stats.opaque_hidden += (last + 1..self.layers.len())
                    .map(|l| self.children(l, &dir).len())
                    .sum::<usize>();
            }
            dirs.push((dir, chain));
        }
        (visible, dirs)
    }
}

/// Builds `dir/lower1` (top-most) … `dir/lower<lowers>` with at least `files` regular
/// files in all, deterministically from `seed`: a shared pool of directories that
/// each layer partly repeats (merged directories), names that recur across layers
/// (shadowing, file/directory clashes), 0/0 character-device whiteouts (of files and
/// of whole directories), `trusted.overlay.opaque=y` directories, symlinks (relative,
/// absolute, escaping), fifos, various modes and owners, user xattrs, and some non-ASCII,
/// non-UTF-8 and 255-byte names.
///
/// Only the kernel's own dialect is written, so the kernel overlay can serve as the
/// reference. Whiteouts in a directory that only one layer contributes hide nothing
/// and are left out: the kernel would list them (it passes readdir of an unmerged
/// directory straight through) while fimfs must not.
pub fn generate_tree(dir: &Path, lowers: usize, files: usize, seed: u64) -> Generated {
    assert!(lowers >= 2, "need at least two lowers");
    let mut rng = XorShift::new(seed);
    let mut model = Model {
        layers: vec![BTreeMap::new(); lowers],
        owners: vec![BTreeMap::new(); lowers],
    };
    let mut stats = GenStats::default();

    // The shared directory pool: a tree at most 5 deep.
    let n_dirs = (files / 100).max(20);
    let mut pool: Vec<Vec<u8>> = Vec::with_capacity(n_dirs);
    for i in 0..n_dirs {
        let candidates: Vec<&Vec<u8>> = pool
            .iter()
            .filter(|p| p.iter().filter(|&&b| b == b'/').count() < 4)
            .collect();
        let parent = if candidates.is_empty() || rng.chance(15) {
            Vec::new()
        } else {
            (*rng.pick(&candidates)).clone()
        };
        pool.push(join_rel(&parent, &dir_name(i)));
    }
    let names_per_dir = (files * 3 / 2 / n_dirs).max(8);

    // Each layer repeats part of the pool (with ancestors).
    for l in 0..lowers {
        model.layers[l].insert(
            Vec::new(),
            Node::Dir {
                mode: 0o755,
                opaque: false,
            },
        );
        for p in &pool {
            if !rng.chance(60) {
                continue;
            }
            let mut ancestors = vec![p.clone()];
            let mut q = parent_rel(p).to_vec();
            while !q.is_empty() {
                ancestors.push(q.clone());
                q = parent_rel(&q).to_vec();
            }
            for a in ancestors.into_iter().rev() {
                let mode = *rng.pick(&DIR_MODES);
                let opaque = l + 1 < lowers && rng.chance(3);
                model.layers[l]
                    .entry(a)
                    .or_insert(Node::Dir { mode, opaque });
            }
        }
    }

    // Non-directories, until there are enough regular files.
    let per_layer = files.div_ceil(lowers);
    for l in 0..lowers {
        let dirs: Vec<Vec<u8>> = model.layers[l]
            .iter()
            .filter(|(_, n)| matches!(n, Node::Dir { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        let mut made = 0;
        while made < per_layer {
            let d = rng.pick(&dirs).clone();
            let roll = rng.below(100);
            let whiteout_dir = roll < 2 && l + 1 < lowers;
            let name = if whiteout_dir {
                // A directory name of the pool under `d`, to hide a whole subtree.
                let subdirs: Vec<&Vec<u8>> = pool
                    .iter()
                    .filter(|p| parent_rel(p) == d.as_slice())
                    .collect();
                if subdirs.is_empty() {
                    continue;
                }
                base_rel(rng.pick(&subdirs).as_slice()).to_vec()
            } else {
                file_name(rng.below(names_per_dir))
            };
            let path = join_rel(&d, &name);
            if model.layers[l].contains_key(&path) {
                continue;
            }
            let node = match roll {
                _ if whiteout_dir => Node::Whiteout,
                2..=9 if l + 1 < lowers => Node::Whiteout,
                10..=16 => Node::Symlink {
                    target: match rng.below(4) {
                        0 => b"../../..".to_vec(),
                        1 => b"/etc/passwd".to_vec(),
                        2 => file_name(rng.below(names_per_dir)),
                        _ => format!("../{}/missing", String::from_utf8_lossy(&name)).into_bytes(),
                    },
                },
                17..=18 => Node::Fifo {
                    mode: *rng.pick(&FILE_MODES) & 0o777,
                },
                19..=21 => {
                    // A directory where other layers have a file of that name.
                    let mode = *rng.pick(&DIR_MODES);
                    model.layers[l].insert(
                        path.clone(),
                        Node::Dir {
                            mode,
                            opaque: false,
                        },
                    );
                    for k in 0..1 + rng.below(3) {
                        let inner = join_rel(&path, &file_name(k));
                        let seed = rng.next_u64();
                        model.layers[l].insert(
                            inner,
                            Node::File {
                                mode: 0o644,
                                len: 64,
                                seed,
                            },
                        );
                        made += 1;
                    }
                    continue;
                }
                _ => {
                    let len = match rng.below(20) {
                        0 => 0,
                        1..=14 => rng.below(256),
                        _ => rng.below(16 * 1024),
                    };
                    Node::File {
                        mode: *rng.pick(&FILE_MODES),
                        len,
                        seed: rng.next_u64(),
                    }
                }
            };
            if matches!(node, Node::File { .. }) {
                made += 1;
            }
            if rng.chance(10) && !matches!(node, Node::Whiteout) {
                model.owners[l].insert(path.clone(), *rng.pick(&OWNERS));
            }
            model.layers[l].insert(path, node);
        }
    }

    // Whiteouts in a directory only one layer contributes hide nothing: drop them.
    let mut scratch = GenStats::default();
    let (_, resolved) = model.resolve(&mut scratch);
    for (d, chain) in &resolved {
        if let [only] = chain.as_slice() {
            for name in model.children(*only, d) {
                let p = join_rel(d, &name);
                if model.layers[*only][&p] == Node::Whiteout {
                    model.layers[*only].remove(&p);
                }
            }
        }
    }
    let (expected, resolved) = model.resolve(&mut stats);
    stats.merged_dirs = resolved.iter().filter(|(_, c)| c.len() > 1).count();

    // Write it out. Some files and directories get a user xattr, whose value names
    // the layer, so that a merged directory's xattrs show which copy is used.
    let mut xrng = XorShift::new(seed ^ 0x7a77_7a77);
    let mut lower_paths = Vec::new();
    for l in 0..lowers {
        let root = dir.join(format!("lower{}", l + 1));
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        for (rel, node) in &model.layers[l] {
            let p = if rel.is_empty() {
                root.clone()
            } else {
                root.join(OsStr::from_bytes(rel))
            };
            write_node(&p, node, model.owners[l].get(rel).copied(), &mut stats)
                .unwrap_or_else(|e| panic!("generate {}: {e}", p.display()));
            if matches!(node, Node::Dir { .. } | Node::File { .. }) && xrng.chance(4) {
                let value = format!("lower{} {}", l + 1, rel.escape_ascii());
                set_xattr(&p, "user.gen", value.as_bytes())
                    .unwrap_or_else(|e| panic!("setxattr {}: errno {e}", p.display()));
                stats.user_xattrs += 1;
            }
        }
        lower_paths.push(root);
    }
    Generated {
        lowers: lower_paths,
        stats,
        expected,
    }
}

fn write_node(
    p: &Path,
    node: &Node,
    owner: Option<(u32, u32)>,
    stats: &mut GenStats,
) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let chown = |p: &Path| match owner {
        Some((u, g)) => std::os::unix::fs::lchown(p, Some(u), Some(g)),
        None => Ok(()),
    };
    // chown before chmod: chown clears the setuid bit.
    match node {
        Node::Dir { mode, opaque } => {
            if !p.exists() {
                fs::create_dir(p)?;
            }
            chown(p)?;
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))?;
            if *opaque {
                set_xattr(p, "trusted.overlay.opaque", b"y")
                    .map_err(io::Error::from_raw_os_error)?;
                stats.opaque_dirs += 1;
            }
            stats.dirs += 1;
        }
        Node::File { mode, len, seed } => {
            let mut r = XorShift::new(*seed);
            let data: Vec<u8> = (0..*len).map(|_| r.next_u64() as u8).collect();
            fs::write(p, data)?;
            chown(p)?;
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))?;
            stats.regular += 1;
        }
        Node::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), p)?;
            chown(p)?;
            stats.symlinks += 1;
        }
        Node::Fifo { mode } => {
            nix::unistd::mkfifo(p, Mode::from_bits_truncate(*mode))?;
            chown(p)?;
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))?;
            stats.fifos += 1;
        }
        Node::Whiteout => {
            mknod(p, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
            stats.whiteouts += 1;
        }
    }
    Ok(())
}

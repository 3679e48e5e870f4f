//! The one tree model: [`scan`] reads a directory tree once, without ever following
//! a symlink (`lstat`, `readlink`, `read`, `listxattr`/`getxattr`, `readdir`), and
//! every form a test compares is a projection of that scan:
//!
//! - [`walk`] → [`Tree`]: entries and `readdir` listings, for comparing two whole
//!   trees ([`assert_same_tree`], [`view`] without foreign private xattrs);
//! - [`disk_snapshot`] → [`DiskEntry`]s: what a layer holds on disk, markers
//!   included (the upper's format, "the lowers never change");
//! - [`plain_view`] → [`View`]: the short form (`f CONTENT`, `d`, `l TARGET` …)
//!   that the engine tables write and that `engine_view` also produces.
//!
//! Paths are relative bytes (`b""` is the root); only the short forms turn them
//! into (lossy) strings, for tables written by hand.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::rng::fnv1a64;
use super::show;
use super::sys::{get_xattr, list_xattrs};

// ---------------------------------------------------------------------------------
// The scan

/// Xattr name → value, or the errno of `getxattr`.
pub type Xattrs = Vec<(Vec<u8>, Result<Vec<u8>, i32>)>;

/// One name exactly as found.
pub struct Found {
    /// `lstat`, or its errno.
    pub md: Result<fs::Metadata, i32>,
    /// Regular files: the contents, or the errno of reading them.
    pub data: Option<Result<Vec<u8>, i32>>,
    /// Symlinks: `readlink`, or what went wrong.
    pub target: Option<Result<Vec<u8>, String>>,
    /// Name → value (or the errno of `getxattr`); `Err` when `listxattr` failed.
    pub xattrs: Result<Xattrs, i32>,
    /// Directories: the `readdir` names with their `d_type`, sorted.
    pub listing: Option<Vec<(Vec<u8>, Kind)>>,
}

impl Found {
    pub fn kind(&self) -> Option<Kind> {
        self.md.as_ref().ok().map(|m| Kind::of(m.file_type()))
    }
}

fn errno_of_io(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn xattrs_at(path: &Path) -> Result<Xattrs, i32> {
    Ok(list_xattrs(path)?
        .into_iter()
        .map(|n| {
            let v = get_xattr(path, &String::from_utf8_lossy(&n));
            (n, v)
        })
        .collect())
}

fn found_at(path: &Path) -> Found {
    let md = fs::symlink_metadata(path).map_err(|e| errno_of_io(&e));
    let kind = md.as_ref().ok().map(|m| Kind::of(m.file_type()));
    let listing = (kind == Some(Kind::Dir)).then(|| listing_of(path));
    Found {
        data: (kind == Some(Kind::File)).then(|| fs::read(path).map_err(|e| errno_of_io(&e))),
        target: (kind == Some(Kind::Symlink)).then(|| {
            fs::read_link(path)
                .map(|t| t.into_os_string().into_vec())
                .map_err(|e| e.to_string())
        }),
        xattrs: if md.is_ok() {
            xattrs_at(path)
        } else {
            Ok(Vec::new())
        },
        listing,
        md,
    }
}

fn listing_of(abs: &Path) -> Vec<(Vec<u8>, Kind)> {
    let mut names = Vec::new();
    let rd = fs::read_dir(abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
    for de in rd {
        let de = de.unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
        let kind = de
            .file_type()
            .map(Kind::of)
            .unwrap_or_else(|e| panic!("d_type of {}: {e}", de.path().display()));
        names.push((de.file_name().into_vec(), kind));
    }
    names.sort();
    names
}

/// `root/rel`, `root` itself for `b""`.
pub fn at(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// `dir/name` as a relative path (`name` alone below the root).
pub fn join_rel(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Everything below and including `root`, relative path → what was found there.
pub fn scan(root: &Path) -> BTreeMap<Vec<u8>, Found> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let found = found_at(&at(root, &rel));
        for (name, _) in found.listing.iter().flatten() {
            stack.push(join_rel(&rel, name));
        }
        out.insert(rel, found);
    }
    out
}

// ---------------------------------------------------------------------------------
// Whole trees, compared

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl Kind {
    pub fn of(ft: fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else {
            Kind::Socket
        }
    }
}

/// Permission bits, printed in octal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#o}", self.0)
    }
}

/// One name as seen through `lstat` & co. Directory sizes and link counts are left
/// out (they are the backing filesystem's business); everything else must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `Err(errno)` when `lstat` of a listed name failed.
    pub kind: Result<Kind, i32>,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: Mode,
    pub uid: u32,
    pub gid: u32,
    /// Non-directories only.
    pub size: Option<u64>,
    /// Non-directories only.
    pub nlink: Option<u64>,
    /// Regular files: FNV-1a 64 of the contents, or `Err(errno)` if reading failed.
    pub hash: Option<Result<u64, i32>>,
    /// Symlinks: `readlink`.
    pub target: Option<Vec<u8>>,
    /// Device nodes only.
    pub rdev: Option<u64>,
    /// Name → value (bytes as `escape_ascii` prints them); `Err(errno)` when
    /// `listxattr` failed.
    pub xattrs: Result<BTreeMap<String, String>, i32>,
}

/// Relative path (bytes, `b""` for the root) → entry.
pub type Snapshot = BTreeMap<Vec<u8>, Entry>;

/// Directory (relative path) → its `readdir` names with `d_type`, sorted, duplicates
/// kept, `.` and `..` left out.
pub type Listings = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Kind)>>;

#[derive(Clone)]
pub struct Tree {
    pub entries: Snapshot,
    pub listings: Listings,
}

fn entry_from(f: &Found) -> Entry {
    let md = match &f.md {
        Ok(md) => md,
        Err(e) => {
            return Entry {
                kind: Err(*e),
                mode: Mode(0),
                uid: 0,
                gid: 0,
                size: None,
                nlink: None,
                hash: None,
                target: None,
                rdev: None,
                xattrs: Ok(BTreeMap::new()),
            };
        }
    };
    let kind = Kind::of(md.file_type());
    Entry {
        kind: Ok(kind),
        mode: Mode(md.mode() & 0o7777),
        uid: md.uid(),
        gid: md.gid(),
        size: (kind != Kind::Dir).then(|| md.size()),
        nlink: (kind != Kind::Dir).then(|| md.nlink()),
        hash: f
            .data
            .as_ref()
            .map(|d| d.as_ref().map(|d| fnv1a64(d)).map_err(|e| *e)),
        target: f.target.as_ref().map(|t| {
            t.clone()
                .unwrap_or_else(|e| format!("<readlink failed: {e}>").into_bytes())
        }),
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| md.rdev()),
        xattrs: f.xattrs.as_ref().map_err(|e| *e).map(|xs| {
            xs.iter()
                .map(|(n, v)| {
                    let v = match v {
                        Ok(v) => v.escape_ascii().to_string(),
                        Err(e) => format!("<getxattr: errno {e}>"),
                    };
                    (n.escape_ascii().to_string(), v)
                })
                .collect()
        }),
    }
}

/// `lstat` & co. of one path.
pub fn entry_of(path: &Path) -> Entry {
    entry_from(&found_at(path))
}

/// Walks `root` without ever following a symlink.
pub fn walk(root: &Path) -> Tree {
    let mut tree = Tree {
        entries: BTreeMap::new(),
        listings: BTreeMap::new(),
    };
    for (rel, f) in scan(root) {
        tree.entries.insert(rel.clone(), entry_from(&f));
        if let Some(l) = f.listing {
            tree.listings.insert(rel, l);
        }
    }
    tree
}

pub fn snapshot(root: &Path) -> Snapshot {
    walk(root).entries
}

/// Fails with the first differences (up to 40) between two trees.
pub fn assert_same_tree(left_name: &str, left: &Tree, right_name: &str, right: &Tree) {
    let mut diffs = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = left.entries.keys().chain(right.entries.keys()).collect();
    for k in keys {
        match (left.entries.get(k), right.entries.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => diffs.push(format!(
                "{}:\n    {left_name}: {a:?}\n    {right_name}: {b:?}",
                show(k)
            )),
            (Some(_), None) => diffs.push(format!("{}: only in {left_name}", show(k))),
            (None, _) => diffs.push(format!("{}: only in {right_name}", show(k))),
        }
    }
    let dirs: BTreeSet<&Vec<u8>> = left.listings.keys().chain(right.listings.keys()).collect();
    for d in dirs {
        let (a, b) = (left.listings.get(d), right.listings.get(d));
        if a != b {
            diffs.push(format!(
                "readdir {}:\n    {left_name}: {}\n    {right_name}: {}",
                show(d),
                show_listing(a),
                show_listing(b)
            ));
        }
    }
    let n = diffs.len();
    diffs.truncate(40);
    assert!(
        n == 0,
        "{left_name} and {right_name} differ in {n} places (first {}):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn show_listing(l: Option<&Vec<(Vec<u8>, Kind)>>) -> String {
    match l {
        None => "(not listed)".into(),
        Some(v) => v
            .iter()
            .map(|(n, k)| format!("{}:{k:?}", show(n)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `walk(root)` without what may legitimately differ between a union and a plain
/// directory: the implementations' own xattrs that a *foreign* reader shows. fimfs
/// writes `trusted.overlay.opaque` beside `user.overlay.opaque` as root, and marks
/// copies with `user.fimfs.origin`; the kernel mounted with `userxattr` lists both,
/// fimfs hides them. (That fimfs hides every private xattr through its own mount is
/// checked in `mount_write_copy_up`.) With `nlink == false` link counts are left out too.
pub fn view(root: &Path, nlink: bool) -> Tree {
    let mut t = walk(root);
    for e in t.entries.values_mut() {
        if let Ok(x) = &mut e.xattrs {
            x.retain(|k, _| !is_foreign_private_xattr(k));
        }
        if !nlink {
            e.nlink = None;
        }
    }
    t
}

/// `trusted.overlay.*`, `user.fimfs.*`, `trusted.fimfs.*` (the key may be quoted).
pub fn is_foreign_private_xattr(key: &str) -> bool {
    let k = key.trim_start_matches('"');
    ["trusted.overlay.", "user.fimfs.", "trusted.fimfs."]
        .iter()
        .any(|p| k.starts_with(p))
}

/// The root's own attributes are the upper's or the backing directory's business.
pub fn without_root(mut t: Tree) -> Tree {
    t.entries.remove(&Vec::new());
    t
}

pub fn assert_same_view(a: &str, ta: &Tree, b: &str, tb: &Tree) {
    assert_same_tree(a, ta, b, tb);
}

/// Every path of a tree (relative, as bytes), root excluded.
pub fn paths(t: &Tree) -> Vec<Vec<u8>> {
    t.entries
        .keys()
        .filter(|k| !k.is_empty())
        .cloned()
        .collect()
}

/// Lists what is inside `dir` on disk, recursively, relative paths sorted.
pub fn disk_entries(dir: &Path) -> Vec<String> {
    paths(&walk(dir))
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------
// Inode numbers

/// What a file is, for telling two files apart by more than their number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    kind: u32,
    size: u64,
    nlink: u64,
    content: Option<u64>,
    target: Option<Vec<u8>>,
}

/// Every `st_ino` under `root` names one file: names that share a number
/// have the same type, size, link count and contents (they are hard links),
/// and no directory shares its number. Returns the conflicts, path by path.
pub fn numbers_naming_several_files(root: &Path) -> Vec<String> {
    let mut seen: std::collections::HashMap<u64, (Vec<u8>, Identity)> = Default::default();
    let mut bad = Vec::new();
    for (rel, f) in scan(root).into_iter().filter(|(r, _)| !r.is_empty()) {
        let Ok(md) = &f.md else { continue };
        let id = Identity {
            kind: md.mode() & libc::S_IFMT,
            size: if md.is_dir() { 0 } else { md.size() },
            nlink: if md.is_dir() { 0 } else { md.nlink() },
            content: f
                .data
                .as_ref()
                .map(|d| d.as_ref().map_or(0, |d| fnv1a64(d))),
            target: f.target.as_ref().map(|t| t.clone().unwrap_or_default()),
        };
        match seen.get(&md.ino()) {
            Some((other, _)) if md.is_dir() => bad.push(format!(
                "{} and {} share st_ino {} (a directory)",
                show(other),
                show(&rel),
                md.ino()
            )),
            Some((other, oid)) if *oid != id => bad.push(format!(
                "{} {oid:?} and {} {id:?} share st_ino {}",
                show(other),
                show(&rel),
                md.ino()
            )),
            Some(_) => {}
            None => {
                seen.insert(md.ino(), (rel, id));
            }
        }
    }
    bad
}

// ---------------------------------------------------------------------------------
// The short form of the tables

/// One entry of a merged tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `f CONTENT`, `d`, `l TARGET`, `p`, `c MAJ:MIN`, `s`, `b`; `?` for a name
    /// readdir lists but lookup does not find.
    pub desc: String,
    pub perm: u32,
    pub ino: u64,
    pub nlink: u32,
    /// Visible xattrs, name → value.
    pub xattrs: BTreeMap<String, String>,
}

/// The merged tree (without the root), path → entry, and the problems met on the way.
pub type View = BTreeMap<String, Seen>;

/// `f CONTENT`, `d`, `l TARGET`, `p`, `c MAJ:MIN`, `s`, `b`, or, for what
/// [`disk_snapshot`] keeps, `other MODE` for a kind the tables do not name.
fn short_desc(f: &Found, md: &fs::Metadata) -> String {
    let ft = md.file_type();
    if let Some(d) = &f.data {
        let d = d.as_deref().unwrap_or_default();
        format!("f {}", String::from_utf8_lossy(d))
    } else if ft.is_dir() {
        "d".into()
    } else if let Some(t) = &f.target {
        format!(
            "l {}",
            String::from_utf8_lossy(t.as_deref().unwrap_or_default())
        )
    } else if ft.is_fifo() {
        "p".into()
    } else if ft.is_char_device() {
        format!(
            "c {}:{}",
            nix::sys::stat::major(md.rdev()),
            nix::sys::stat::minor(md.rdev())
        )
    } else if ft.is_socket() {
        "s".into()
    } else {
        "b".into()
    }
}

fn raw_xattrs(f: &Found) -> BTreeMap<String, Vec<u8>> {
    let Ok(xs) = &f.xattrs else {
        return BTreeMap::new();
    };
    xs.iter()
        .filter_map(|(n, v)| Some((String::from_utf8_lossy(n).into_owned(), v.clone().ok()?)))
        .collect()
}

/// The children of `root` that `lstat` found, path (lossy) → what was found.
fn found_below(root: &Path) -> Vec<(String, Found, fs::Metadata)> {
    scan(root)
        .into_iter()
        .filter(|(rel, _)| !rel.is_empty())
        .filter_map(|(rel, f)| {
            let md = f.md.as_ref().ok()?.clone();
            Some((String::from_utf8_lossy(&rel).into_owned(), f, md))
        })
        .collect()
}

/// The tree below `root` read straight from a plain directory, in the same format
/// as `engine_view` (`ino` is the real inode number, for hard-link grouping).
pub fn plain_view(root: &Path) -> View {
    let mut view = View::new();
    for (path, f, md) in found_below(root) {
        let desc = short_desc(&f, &md);
        let desc = if desc.starts_with("f ") {
            desc.trim_end().to_string()
        } else {
            desc
        };
        let xattrs = raw_xattrs(&f)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let seen = Seen {
            desc,
            perm: md.mode() & 0o7777,
            ino: md.ino(),
            nlink: md.nlink() as u32,
            xattrs,
        };
        view.insert(path, seen);
    }
    view
}

// ---------------------------------------------------------------------------------
// Layers on disk, markers included

/// One entry of a directory tree on disk, everything that matters to the union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry {
    pub desc: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl DiskEntry {
    /// A whiteout in any dialect but `.wh.` files.
    pub fn is_whiteout(&self) -> bool {
        self.desc == "c 0:0"
            || (self.desc == "f " && WHITEOUT_XATTRS.iter().any(|x| self.xattrs.contains_key(*x)))
    }
}

/// Every entry below `root` as it is on disk (markers included), path → entry;
/// nothing when `root` does not exist.
pub fn disk_snapshot(root: &Path) -> BTreeMap<String, DiskEntry> {
    let mut out = BTreeMap::new();
    if fs::symlink_metadata(root).is_err() {
        return out;
    }
    for (path, f, md) in found_below(root) {
        let ft = md.file_type();
        let desc = if ft.is_file() || ft.is_dir() || ft.is_symlink() || ft.is_char_device() {
            short_desc(&f, &md)
        } else {
            format!("other {:o}", md.mode() & libc::S_IFMT)
        };
        let entry = DiskEntry {
            desc,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ino: md.ino(),
            xattrs: raw_xattrs(&f),
        };
        out.insert(path, entry);
    }
    out
}

const OPAQUE_XATTRS: [&str; 3] = [
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    "user.fuseoverlayfs.opaque",
];
const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// Is this on-disk entry an opaque directory (any dialect)?
pub fn is_opaque(snap: &BTreeMap<String, DiskEntry>, path: &str) -> bool {
    let Some(e) = snap.get(path) else {
        return false;
    };
    e.desc == "d"
        && (OPAQUE_XATTRS
            .iter()
            .any(|x| e.xattrs.get(*x).is_some_and(|v| v == b"y"))
            || snap.contains_key(&child(path, ".wh..wh..opq")))
}

pub fn child(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The format rules for what fimfs writes to an upper (SPEC §2), pushed to
/// `problems`: no `.wh.` files (this machine can make 0/0 character devices, so
/// whiteouts must be those), opaque directories carry `user.overlay.opaque=y`, no whiteout
/// sits inside an opaque directory, no redirect or metacopy xattrs.
///
/// Entries equal to those in `before` (the upper as the test built it) are not
/// fimfs' work and are left alone.
pub fn check_upper_format(
    upper: &Path,
    before: Option<&BTreeMap<String, DiskEntry>>,
    problems: &mut Vec<String>,
) {
    let snap = disk_snapshot(upper);
    for (path, e) in &snap {
        if before.is_some_and(|b| b.get(path) == Some(e)) {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with(".wh.") {
            problems.push(format!(
                "upper/{path}: a .wh. file, though the upper can hold 0/0 devices"
            ));
        }
        for x in e.xattrs.keys() {
            if x.ends_with(".redirect") || x.ends_with(".metacopy") {
                problems.push(format!("upper/{path}: carries {x}"));
            }
        }
        if e.desc == "d"
            && OPAQUE_XATTRS
                .iter()
                .any(|x| e.xattrs.get(*x).is_some_and(|v| v == b"y"))
        {
            let user = e
                .xattrs
                .get("user.overlay.opaque")
                .is_some_and(|v| v == b"y");
            if !user {
                problems.push(format!(
                    "upper/{path}: opaque without user.overlay.opaque=y"
                ));
            }
        }
        let whiteout = e.is_whiteout() || name.starts_with(".wh.") && name != ".wh..wh..opq";
        let dir = parent_of(path);
        if whiteout && !dir.is_empty() && is_opaque(&snap, dir) {
            problems.push(format!(
                "upper/{path}: a whiteout inside the opaque directory {dir}"
            ));
        }
    }
}

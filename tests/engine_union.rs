//! The union rules (SPEC §1-2), tested on the FUSE-free engine against real
//! directories in a scratch dir: no mount, milliseconds per case.
//!
//! - Table-driven cases: lower layers (and an optional initial upper) described
//!   line by line (see `engine_support`), a list of engine operations with their
//!   expected outcome, then the merged view afterwards, lookups that must fail, the
//!   merged directories (`st_nlink` 1), inode numbers that must survive the
//!   operations, and the upper's on-disk format.
//! - Checks made for every case: `d_ino` equals `st_ino`, distinct entries have
//!   distinct numbers (hard links share one), numbers are stable across lookups
//!   and forgets, overlay-private xattrs never show, the workdir is empty after
//!   every operation, the lowers never change, and what the engine writes to the
//!   upper follows SPEC §2.
//! - A seeded random-operation test comparing the engine with a plain directory
//!   after every operation.
mod common;
mod engine_support;

use common::*;
use engine_support::*;
use fimfs::sys::Errno;
use fimfs::union::{Caller, Make, Options, ROOT_INO, SetAttr, Union};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

// =================================================================================
// Operations

/// One engine operation, as written in the tables (`verb args… [=> ERRNO]`).
#[derive(Debug, Clone)]
enum Op {
    Mkdir(String),
    Create(String, String),
    Symlink(String, String),
    Mkfifo(String),
    /// A character device `major minor`.
    Mkchr(String, u64, u64),
    Unlink(String),
    Rmdir(String),
    Rename(String, String, u32),
    Link(String, String),
    /// `open(O_WRONLY|O_TRUNC)` and write.
    Write(String, String),
    /// `open(O_WRONLY)` and write at the end.
    Append(String, String),
    /// `open(O_RDWR)` and write at an offset.
    Pwrite(String, u64, String),
    /// `open` with the given flags, nothing written.
    Open(String, i32),
    Chmod(String, u32),
    Truncate(String, u64),
    Utime(String, i64),
    Chown(String, u32, u32),
    Setxattr(String, String, String),
    Removexattr(String, String),
    Getxattr(String, String),
    Lookup(String),
}

fn parse_op(line: &str) -> (Op, Result<(), Errno>) {
    let (body, want) = match line.split_once("=>") {
        Some((b, e)) => (b.trim(), Err(errno_named(e.trim()))),
        None => (line.trim(), Ok(())),
    };
    let w: Vec<&str> = body.split_whitespace().collect();
    let arg = |i: usize| -> String {
        w.get(i)
            .unwrap_or_else(|| panic!("op {line:?}: argument {i} missing"))
            .to_string()
    };
    let opt = |i: usize| w.get(i).map_or(String::new(), |s| s.to_string());
    let num = |i: usize| -> u64 {
        arg(i)
            .parse()
            .unwrap_or_else(|e| panic!("op {line:?}: {e}"))
    };
    let oct = |i: usize| -> u32 {
        u32::from_str_radix(&arg(i), 8).unwrap_or_else(|e| panic!("op {line:?}: {e}"))
    };
    let op = match w.first().copied().unwrap_or("") {
        "mkdir" => Op::Mkdir(arg(1)),
        "create" => Op::Create(arg(1), opt(2)),
        "symlink" => Op::Symlink(arg(1), arg(2)),
        "mkfifo" => Op::Mkfifo(arg(1)),
        "mkchr" => Op::Mkchr(arg(1), num(2), num(3)),
        "unlink" => Op::Unlink(arg(1)),
        "rmdir" => Op::Rmdir(arg(1)),
        "rename" => {
            let flags = match opt(3).as_str() {
                "" => 0,
                "noreplace" => libc::RENAME_NOREPLACE,
                "exchange" => libc::RENAME_EXCHANGE,
                f => panic!("op {line:?}: unknown rename flag {f}"),
            };
            Op::Rename(arg(1), arg(2), flags)
        }
        "link" => Op::Link(arg(1), arg(2)),
        "write" => Op::Write(arg(1), opt(2)),
        "append" => Op::Append(arg(1), arg(2)),
        "pwrite" => Op::Pwrite(arg(1), num(2), arg(3)),
        "openrw" => Op::Open(arg(1), libc::O_RDWR),
        "openw" => Op::Open(arg(1), libc::O_WRONLY),
        "opentrunc" => Op::Open(arg(1), libc::O_RDONLY | libc::O_TRUNC),
        "openr" => Op::Open(arg(1), libc::O_RDONLY),
        "chmod" => Op::Chmod(arg(1), oct(2)),
        "truncate" => Op::Truncate(arg(1), num(2)),
        "utime" => Op::Utime(arg(1), num(2) as i64),
        "chown" => Op::Chown(arg(1), num(2) as u32, num(3) as u32),
        "setxattr" => Op::Setxattr(arg(1), arg(2), opt(3)),
        "removexattr" => Op::Removexattr(arg(1), arg(2)),
        "getxattr" => Op::Getxattr(arg(1), arg(2)),
        "lookup" => Op::Lookup(arg(1)),
        v => panic!("unknown op {v:?} in {line:?}"),
    };
    (op, want)
}

fn pwrite_all(fd: std::os::fd::BorrowedFd<'_>, data: &[u8], off: u64) -> Result<(), Errno> {
    let mut done = 0;
    while done < data.len() {
        done += nix::sys::uio::pwrite(fd, &data[done..], (off + done as u64) as i64)?;
    }
    Ok(())
}

/// Applies `op` to the engine the way the kernel would drive it: every path
/// component looked up first (the last one too, when it exists), the lookups
/// forgotten afterwards when `forget`.
fn engine_apply(u: &Union, op: &Op, forget: bool) -> Result<(), Errno> {
    let mut l = Lookups::new(u);
    l.forget_on_drop = forget;
    // The kernel looks the last component up before unlink, rmdir, rename, create.
    fn touch(l: &mut Lookups<'_>, p: &str) {
        let _ = l.ino(p);
    }
    let set = SetAttr::default;
    match op {
        Op::Mkdir(p) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let (node, _, _) = u.make(d, n.as_bytes(), Make::Dir { mode: 0o755 }, ROOT)?;
            l.hold(node.ino);
        }
        Op::Create(p, content) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let how = Make::File {
                mode: 0o644,
                flags: libc::O_WRONLY,
            };
            let (node, _, fd) = u.make(d, n.as_bytes(), how, ROOT)?;
            l.hold(node.ino);
            let fd = fd.ok_or(Errno::EIO)?;
            pwrite_all(fd.as_fd(), content.as_bytes(), 0)?;
        }
        Op::Symlink(p, target) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let how = Make::Symlink {
                target: target.as_bytes().to_vec(),
            };
            let (node, _, _) = u.make(d, n.as_bytes(), how, ROOT)?;
            l.hold(node.ino);
        }
        Op::Mkfifo(p) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let how = Make::Node {
                mode: libc::S_IFIFO | 0o644,
                rdev: 0,
            };
            let (node, _, _) = u.make(d, n.as_bytes(), how, ROOT)?;
            l.hold(node.ino);
        }
        Op::Mkchr(p, major, minor) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let how = Make::Node {
                mode: libc::S_IFCHR | 0o644,
                rdev: nix::sys::stat::makedev(*major, *minor),
            };
            let (node, _, _) = u.make(d, n.as_bytes(), how, ROOT)?;
            l.hold(node.ino);
        }
        Op::Unlink(p) | Op::Rmdir(p) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            u.remove(d, n.as_bytes(), matches!(op, Op::Rmdir(_)))?;
        }
        Op::Rename(a, b, flags) => {
            touch(&mut l, a);
            touch(&mut l, b);
            let (d1, n1) = l.parent(a)?;
            let (d2, n2) = l.parent(b)?;
            u.rename(d1, n1.as_bytes(), d2, n2.as_bytes(), *flags)?;
        }
        Op::Link(a, b) => {
            let ino = l.ino(a)?;
            touch(&mut l, b);
            let (d, n) = l.parent(b)?;
            let (node, _) = u.link(ino, d, n.as_bytes())?;
            l.hold(node.ino);
        }
        Op::Write(p, c) => {
            let ino = l.ino(p)?;
            let (fd, _) = u.open(ino, libc::O_WRONLY | libc::O_TRUNC)?;
            pwrite_all(fd.as_fd(), c.as_bytes(), 0)?;
        }
        Op::Append(p, c) => {
            let ino = l.ino(p)?;
            let (fd, _) = u.open(ino, libc::O_WRONLY)?;
            let size = u.getattr(ino)?.size;
            pwrite_all(fd.as_fd(), c.as_bytes(), size)?;
        }
        Op::Pwrite(p, off, c) => {
            let ino = l.ino(p)?;
            let (fd, _) = u.open(ino, libc::O_RDWR)?;
            pwrite_all(fd.as_fd(), c.as_bytes(), *off)?;
        }
        Op::Open(p, flags) => {
            let ino = l.ino(p)?;
            u.open(ino, *flags)?;
        }
        Op::Chmod(p, mode) => {
            let ino = l.ino(p)?;
            let s = SetAttr {
                mode: Some(*mode),
                ..set()
            };
            u.setattr(ino, s, None)?;
        }
        Op::Truncate(p, size) => {
            let ino = l.ino(p)?;
            let s = SetAttr {
                size: Some(*size),
                ..set()
            };
            u.setattr(ino, s, None)?;
        }
        Op::Utime(p, secs) => {
            let ino = l.ino(p)?;
            let s = SetAttr {
                atime: Some((*secs, 0)),
                mtime: Some((*secs, 0)),
                ..set()
            };
            u.setattr(ino, s, None)?;
        }
        Op::Chown(p, uid, gid) => {
            let ino = l.ino(p)?;
            let s = SetAttr {
                uid: Some(*uid),
                gid: Some(*gid),
                ..set()
            };
            u.setattr(ino, s, None)?;
        }
        Op::Setxattr(p, n, v) => {
            let ino = l.ino(p)?;
            u.setxattr(ino, n.as_bytes(), v.as_bytes(), 0)?;
        }
        Op::Removexattr(p, n) => {
            let ino = l.ino(p)?;
            u.removexattr(ino, n.as_bytes())?;
        }
        Op::Getxattr(p, n) => {
            let ino = l.ino(p)?;
            u.getxattr(ino, n.as_bytes())?;
        }
        Op::Lookup(p) => {
            l.ino(p)?;
        }
    }
    Ok(())
}

// =================================================================================
// Expectations

/// The expected merged tree, from lines `f PATH [CONTENT]`, `d PATH`,
/// `l PATH TARGET`, `p PATH`, `c PATH MAJ:MIN`, `? PATH` (listed by readdir,
/// not found by lookup), plus `m PATH MODE` (permission bits), `x PATH NAME VALUE`
/// (a visible xattr; entries without `x` lines must show none) and `= A B`
/// (same `st_ino`; all other entries must have distinct numbers).
#[derive(Default)]
struct Expect {
    tree: BTreeMap<String, String>,
    perms: BTreeMap<String, u32>,
    xattrs: BTreeMap<String, BTreeMap<String, String>>,
    same: Vec<(String, String)>,
}

fn parse_expect(spec: &str) -> Expect {
    let mut e = Expect::default();
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut w = line.splitn(3, ' ');
        let (op, path, rest) = (
            w.next().unwrap_or(""),
            w.next()
                .unwrap_or_else(|| panic!("expect line {line:?}"))
                .to_string(),
            w.next().unwrap_or(""),
        );
        match op {
            "f" => {
                e.tree
                    .insert(path, format!("f {rest}").trim_end().to_string());
            }
            "d" | "p" | "?" => {
                e.tree.insert(path, op.to_string());
            }
            "l" | "c" => {
                e.tree.insert(path, format!("{op} {rest}"));
            }
            "m" => {
                e.perms
                    .insert(path, u32::from_str_radix(rest, 8).expect("mode"));
            }
            "x" => {
                let (n, v) = rest.split_once(' ').unwrap_or((rest, ""));
                e.xattrs.entry(path).or_default().insert(n.into(), v.into());
            }
            "=" => e.same.push((path, rest.to_string())),
            other => panic!("unknown expect op {other:?} in {line:?}"),
        }
    }
    e
}

/// Compares a view with the expectation; also the inode-number rules.
fn check_view(view: &View, e: &Expect, problems: &mut Vec<String>) {
    for (path, want) in &e.tree {
        match view.get(path) {
            None => problems.push(format!("{path}: missing from the view (want {want:?})")),
            Some(s) if &s.desc != want => {
                problems.push(format!("{path}: is {:?}, want {want:?}", s.desc))
            }
            Some(_) => {}
        }
    }
    for (path, s) in view {
        if !e.tree.contains_key(path) {
            problems.push(format!("{path}: unexpected in the view: {:?}", s.desc));
        }
    }
    for (path, mode) in &e.perms {
        if let Some(s) = view.get(path)
            && s.perm != *mode
        {
            problems.push(format!("{path}: mode {:o}, want {mode:o}", s.perm));
        }
    }
    let none = BTreeMap::new();
    for (path, s) in view.iter().filter(|(_, s)| s.desc != "?") {
        let want = e.xattrs.get(path).unwrap_or(&none);
        if &s.xattrs != want {
            problems.push(format!(
                "{path}: visible xattrs {:?}, want {want:?}",
                s.xattrs
            ));
        }
    }
    // Inode numbers: `=` groups share one, everything else is distinct.
    let mut group: HashMap<&str, usize> = HashMap::new();
    for (i, (a, b)) in e.same.iter().enumerate() {
        let ga = *group.entry(a).or_insert(i);
        let gb = *group.entry(b).or_insert(ga);
        if ga != gb {
            for g in group.values_mut() {
                if *g == gb {
                    *g = ga;
                }
            }
        }
        match (view.get(a), view.get(b)) {
            (Some(x), Some(y)) if x.ino != y.ino => problems.push(format!(
                "{a} and {b}: one file (hard links), but st_ino {:#x} != {:#x}",
                x.ino, y.ino
            )),
            _ => {}
        }
    }
    let mut by_ino: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (path, s) in view.iter().filter(|(_, s)| s.desc != "?") {
        by_ino.entry(s.ino).or_default().push(path);
    }
    for (ino, paths) in by_ino.iter().filter(|(_, p)| p.len() > 1) {
        let g = paths
            .iter()
            .map(|p| group.get(p).copied())
            .collect::<Vec<_>>();
        if g.iter().any(|x| x.is_none() || *x != g[0]) {
            problems.push(format!("distinct entries {paths:?} share st_ino {ino:#x}"));
        }
    }
}

/// Checks the lines of an on-disk expectation against the upper:
/// `w PATH` (0/0 char device), `- PATH` (nothing there, no `.wh.` file either),
/// `f PATH [CONTENT]`, `d PATH` (a directory, not opaque), `D PATH` (a directory),
/// `o PATH` (a directory with `user.overlay.opaque=y`), `l PATH TARGET`,
/// `m PATH MODE`, `t PATH MTIME`, `u PATH UID GID`, `x PATH NAME VALUE`,
/// `h A B` (one inode), `e PATH` (an empty directory, markers included),
/// `n PATH` (no whiteout of any dialect inside the directory).
fn check_disk(upper: &Path, spec: &str, problems: &mut Vec<String>) {
    let snap = disk_snapshot(upper);
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut w = line.splitn(3, ' ');
        let (op, path, rest) = (
            w.next().unwrap_or(""),
            w.next().unwrap_or_else(|| panic!("disk line {line:?}")),
            w.next().unwrap_or(""),
        );
        let e = snap.get(path);
        let desc = e.map_or("<absent>".to_string(), |e| e.desc.clone());
        let mut bad =
            |why: String| problems.push(format!("upper/{path}: {why} (disk line {line:?})"));
        match op {
            "w" if desc != "c 0:0" => bad(format!("is {desc:?}, want a 0/0 whiteout")),
            "-" => {
                let name = path.rsplit('/').next().unwrap_or(path);
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                if e.is_some() {
                    bad(format!("is {desc:?}, want nothing"));
                }
                if snap.contains_key(&child(dir, &format!(".wh.{name}"))) {
                    bad("a .wh. whiteout is there".into());
                }
            }
            "f" if desc != format!("f {rest}") => bad(format!("is {desc:?}, want \"f {rest}\"")),
            "d" | "D" | "o" | "e" | "n" if desc != "d" => {
                bad(format!("is {desc:?}, want a directory"))
            }
            "d" if is_opaque(&snap, path) => bad("opaque, want a plain directory".into()),
            "o" if !e.is_some_and(|e| {
                e.xattrs
                    .get("user.overlay.opaque")
                    .is_some_and(|v| v == b"y")
            }) =>
            {
                bad("not marked user.overlay.opaque=y".into())
            }
            "e" => {
                let inside: Vec<&String> = snap
                    .keys()
                    .filter(|k| k.starts_with(&format!("{path}/")))
                    .collect();
                if !inside.is_empty() {
                    bad(format!("not empty: {inside:?}"));
                }
            }
            "n" => {
                for (k, v) in snap.range(format!("{path}/")..) {
                    if !k.starts_with(&format!("{path}/")) {
                        break;
                    }
                    let name = k.rsplit('/').next().unwrap_or(k);
                    if v.is_whiteout() || (name.starts_with(".wh.") && name != ".wh..wh..opq") {
                        bad(format!("holds the whiteout {k}"));
                    }
                }
            }
            "l" if desc != format!("l {rest}") => bad(format!("is {desc:?}, want \"l {rest}\"")),
            "m" => {
                let want = u32::from_str_radix(rest, 8).expect("mode");
                match e {
                    Some(e) if e.mode & 0o7777 == want => {}
                    _ => bad(format!(
                        "mode {:o}, want {want:o}",
                        e.map_or(0, |e| e.mode & 0o7777)
                    )),
                }
            }
            "t" => {
                let want: i64 = rest.parse().expect("mtime");
                if e.is_none_or(|e| e.mtime.0 != want) {
                    bad(format!("mtime {:?}, want {want}", e.map(|e| e.mtime)));
                }
            }
            "u" => {
                let (uid, gid) = rest.split_once(' ').expect("u PATH UID GID");
                let want = (
                    uid.parse::<u32>().expect("uid"),
                    gid.parse::<u32>().expect("gid"),
                );
                if e.is_none_or(|e| (e.uid, e.gid) != want) {
                    bad(format!(
                        "owner {:?}, want {want:?}",
                        e.map(|e| (e.uid, e.gid))
                    ));
                }
            }
            "x" => {
                let (n, v) = rest.split_once(' ').unwrap_or((rest, ""));
                let have = e.and_then(|e| e.xattrs.get(n));
                if have.is_none_or(|h| h != v.as_bytes()) {
                    bad(format!(
                        "xattr {n} is {:?}, want {v:?}",
                        have.map(|h| String::from_utf8_lossy(h))
                    ));
                }
            }
            "h" => {
                let other = snap.get(rest);
                if e.is_none() || other.is_none() || e.map(|e| e.ino) != other.map(|o| o.ino) {
                    bad(format!("not the same inode as {rest}"));
                }
            }
            "w" | "f" | "d" | "D" | "o" | "l" => {}
            other => panic!("unknown disk op {other:?} in {line:?}"),
        }
    }
}

// =================================================================================
// The table runner

/// What upper a case runs with.
#[derive(Clone, Copy)]
enum Upper {
    /// Read-only union only (every op must fail with what it says).
    None,
    /// Twice: read-only, and over an empty upper that must stay empty (reads
    /// never copy up).
    Both,
    /// Over an upper built from this spec.
    Spec(&'static str),
}

struct Case {
    name: &'static str,
    /// Lower layer specs, top-most first.
    lowers: &'static [&'static str],
    upper: Upper,
    ops: &'static [&'static str],
    /// The merged tree after the ops (see [`parse_expect`]).
    tree: &'static str,
    /// Paths whose lookup must fail: `PATH` (ENOENT) or `PATH ERRNO`.
    absent: &'static [&'static str],
    /// Directories reported with `st_nlink` 1 (merged); `""` is the root. Every
    /// other directory must report at least 2.
    merged: &'static [&'static str],
    /// Paths whose `st_ino` must be the same before and after the ops.
    keep_ino: &'static [&'static str],
    /// Paths that name a different file after the ops: their `st_ino` must differ.
    new_ino: &'static [&'static str],
    /// The upper on disk afterwards (see [`check_disk`]).
    disk: &'static str,
}

const CASE: Case = Case {
    name: "",
    lowers: &[],
    upper: Upper::Both,
    ops: &[],
    tree: "",
    absent: &[],
    merged: &[],
    keep_ino: &[],
    new_ino: &[],
    disk: "",
};

/// Runs one case over one union; returns its problems.
fn run_case(c: &Case, with_upper: Option<&str>, tag: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let fx = Fixture::new(tag, c.lowers, with_upper, Options::default());
    let lowers_before: Vec<_> = fx.lowers.iter().map(|p| disk_snapshot(p)).collect();
    let upper_before = fx.upper.as_deref().map(disk_snapshot);
    let u = &fx.union;

    let ino_of = |p: &str| -> Option<u64> {
        let mut l = Lookups::new(u);
        let ino = l.ino(p).ok()?;
        u.getattr(ino).ok().map(|a| a.ino)
    };
    let inos_before: Vec<Option<u64>> = c.keep_ino.iter().map(|p| ino_of(p)).collect();
    let replaced_before: Vec<Option<u64>> = c.new_ino.iter().map(|p| ino_of(p)).collect();

    for line in c.ops {
        let (op, want) = parse_op(line);
        let got = engine_apply(u, &op, true);
        if got != want {
            problems.push(format!("op {line:?}: got {got:?}, want {want:?}"));
        }
        let left = fx.workdir_leftovers();
        if !left.is_empty() {
            problems.push(format!(
                "op {line:?}: workdir not empty afterwards: {left:?}"
            ));
        }
    }

    let expect = parse_expect(c.tree);
    let view = engine_view(u, &mut problems);
    check_view(&view, &expect, &mut problems);
    // Numbers are stable across lookups and forgets (the walk forgot everything).
    let again = engine_view(u, &mut Vec::new());
    for (path, s) in &view {
        if let Some(t) = again.get(path)
            && t.ino != s.ino
        {
            problems.push(format!(
                "{path}: st_ino {:#x} changed to {:#x} on a second walk",
                s.ino, t.ino
            ));
        }
    }
    if u.live_nodes() != 1 {
        problems.push(format!(
            "{} nodes live after every lookup was forgotten, want 1 (the root)",
            u.live_nodes()
        ));
    }

    for spec in c.absent {
        let (path, err) = match spec.split_once(' ') {
            Some((p, e)) => (p, errno_named(e)),
            None => (*spec, Errno::ENOENT),
        };
        let got = Lookups::new(u).ino(path).map(|_| ());
        if got != Err(err) {
            problems.push(format!("lookup {path}: got {got:?}, want Err({err})"));
        }
    }

    for dir in c.merged {
        let nlink = match *dir {
            "" => u.getattr(ROOT_INO).map(|a| a.nlink).unwrap_or(0),
            d => view.get(d).map_or(0, |s| s.nlink),
        };
        if nlink != 1 {
            problems.push(format!(
                "{dir:?}: merged directory with st_nlink {nlink}, want 1"
            ));
        }
    }
    for (path, s) in view.iter().filter(|(_, s)| s.desc == "d") {
        if !c.merged.contains(&path.as_str()) && s.nlink < 2 {
            problems.push(format!(
                "{path}: unmerged directory with st_nlink {}",
                s.nlink
            ));
        }
    }

    for (p, before) in c.keep_ino.iter().zip(inos_before) {
        let after = ino_of(p);
        if before.is_none() || before != after {
            problems.push(format!(
                "{p}: st_ino {before:?} before the ops, {after:?} after"
            ));
        }
    }

    for (p, before) in c.new_ino.iter().zip(replaced_before) {
        let after = ino_of(p);
        if before.is_none() || after.is_none() || before == after {
            problems.push(format!(
                "{p}: names a new file, but st_ino is {before:?} before the ops and {after:?} after"
            ));
        }
    }

    for (p, before) in fx.lowers.iter().zip(lowers_before) {
        if disk_snapshot(p) != before {
            problems.push(format!("lower {} changed", p.display()));
        }
    }
    if let Some(upper) = &fx.upper {
        match c.upper {
            Upper::Both => {
                if Some(disk_snapshot(upper)) != upper_before {
                    problems.push(format!(
                        "reads wrote to the upper: {:?}",
                        disk_snapshot(upper)
                    ));
                }
            }
            _ => {
                check_upper_format(upper, upper_before.as_ref(), &mut problems);
                check_disk(upper, c.disk, &mut problems);
            }
        }
    }
    problems
}

fn run_table(table: &[Case]) {
    let mut failed = Vec::new();
    for (i, c) in table.iter().enumerate() {
        let runs: Vec<(Option<&str>, &str)> = match c.upper {
            Upper::None => vec![(None, "read-only")],
            Upper::Both => vec![(None, "read-only"), (Some(""), "empty upper")],
            Upper::Spec(s) => vec![(Some(s), "with upper")],
        };
        for (upper, how) in runs {
            let problems = run_case(c, upper, &format!("case{i}"));
            if !problems.is_empty() {
                failed.push(format!(
                    "case {:?} ({how}):\n    {}",
                    c.name,
                    problems.join("\n    ")
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} failing case run(s):\n{}\n",
        failed.len(),
        failed.join("\n")
    );
}

// =================================================================================
// Reading: lookup, readdir, inode numbers

#[test]
fn read_rules() {
    run_table(&[
        Case {
            name: "one lower: files, dirs, symlinks, fifo, a real device",
            lowers: &["f a hello\nd b\nf b/c inner\nl s a\np fifo\nc dev\nd empty"],
            tree: "f a hello\nd b\nf b/c inner\nl s a\np fifo\nc dev 1:3\nd empty",
            absent: &["x", "b/x", ".wh.a", "a/x ENOTDIR"],
            ..CASE
        },
        Case {
            name: "the top-most lower wins for a file",
            lowers: &["f a top", "f a bottom\nf b only-bottom"],
            tree: "f a top\nf b only-bottom",
            ..CASE
        },
        Case {
            name: "directories merge across lowers; contents from the top-most",
            lowers: &[
                "f d/a top-a\nf d/x/1 one",
                "f d/a bottom-a\nf d/b bottom-b\nf d/x/2 two",
                "f d/c third\nd d/y",
            ],
            tree: "d d\nf d/a top-a\nf d/b bottom-b\nf d/c third\nd d/x\nf d/x/1 one\nf d/x/2 two\nd d/y",
            merged: &["d", "d/x"],
            ..CASE
        },
        Case {
            name: "a file hides a directory below it",
            lowers: &["f x file", "f x/y deep\nf z/k k"],
            tree: "f x file\nd z\nf z/k k",
            absent: &["x/y ENOTDIR"],
            ..CASE
        },
        Case {
            name: "a directory hides a file below it and is not merged",
            lowers: &["d x\nf x/in in", "f x file"],
            tree: "d x\nf x/in in",
            ..CASE
        },
        Case {
            name: "a symlink hides a directory below and is never merged",
            lowers: &["l d ../elsewhere", "f d/x x"],
            tree: "l d ../elsewhere",
            ..CASE
        },
        Case {
            name: "0/0 character-device whiteouts hide files and directories below",
            lowers: &["w a\nw d\nf keep k", "f a bottom\nf d/x x\nf keep2 k2"],
            tree: "f keep k\nf keep2 k2",
            absent: &["a", "d", "d/x"],
            ..CASE
        },
        Case {
            name: ".wh.NAME whiteouts hide files and directories below",
            lowers: &["W a\nW d\nf other o", "f a bottom\nf d/x x"],
            tree: "f other o",
            absent: &["a", "d", ".wh.a", ".wh.d"],
            ..CASE
        },
        Case {
            name: "a whiteout hides only what is below it",
            lowers: &[
                "f a top\nf d/t t\nf e/1 1",
                "w a\nw d\nw e/3",
                "f a bottom\nf d/b b\nf e/3 3\nf e/2 2",
            ],
            tree: "f a top\nd d\nf d/t t\nd e\nf e/1 1\nf e/2 2",
            absent: &["d/b", "e/3"],
            merged: &["e"],
            ..CASE
        },
        Case {
            name: "xattr whiteouts: lookup always hides them, readdir only below overlay.opaque=x",
            lowers: &[
                "z plain/t trusted.overlay.whiteout\nz plain/u user.overlay.whiteout\n\
                 z marked/t trusted.overlay.whiteout\nz marked/u user.overlay.whiteout\n\
                 f marked/keep k\nf marked/empty\nf marked/big data\n\
                 X marked/big trusted.overlay.whiteout y\nX marked user.overlay.opaque x",
                "f plain/t T\nf plain/u U\nf plain/keep k\nf marked/t T\nf marked/u U\nf marked/low L",
            ],
            tree: "d plain\n? plain/t\n? plain/u\nf plain/keep k\n\
                   d marked\nf marked/keep k\nf marked/empty\nf marked/big data\nf marked/low L",
            absent: &["plain/t", "plain/u", "marked/t", "marked/u"],
            merged: &["plain", "marked"],
            ..CASE
        },
        Case {
            name: "opaque directories, every dialect: nothing below merges in",
            lowers: &[
                "o a\nf a/top t\nO b trusted.overlay.opaque\nf b/top t\n\
                 O c user.overlay.opaque\nf c/top t\nO e user.fuseoverlayfs.opaque\nf e/top t",
                "f a/low l\nf b/low l\nf c/low l\nf e/low l\nf a/top x\nf b/top x",
            ],
            tree: "d a\nf a/top t\nd b\nf b/top t\nd c\nf c/top t\nd e\nf e/top t",
            absent: &["a/low", "b/low", "c/low", "e/low", "a/.wh..wh..opq"],
            ..CASE
        },
        Case {
            name: "an opaque xattr with a value other than y is not opaque",
            lowers: &["f a/top t\nX a user.overlay.opaque n", "f a/low l"],
            tree: "d a\nf a/top t\nf a/low l",
            merged: &["a"],
            ..CASE
        },
        Case {
            name: "an opaque directory in a middle layer cuts off only what is below it",
            lowers: &[
                "f d/a a1",
                "O d user.overlay.opaque\nf d/b b2",
                "f d/c c3\nf d/a a3",
            ],
            tree: "d d\nf d/a a1\nf d/b b2",
            absent: &["d/c"],
            merged: &["d"],
            ..CASE
        },
        Case {
            name: "a whiteout with nothing below it is simply not there",
            lowers: &["w ghost\nW ghost2\nf real r"],
            tree: "f real r",
            absent: &["ghost", "ghost2", ".wh.ghost2"],
            ..CASE
        },
        Case {
            name: "a merged directory whose every entry is whited out lists empty",
            lowers: &["w d/a\nw d/b", "f d/a a\nf d/b b"],
            tree: "d d",
            merged: &["d"],
            ..CASE
        },
        Case {
            name: "hard links inside one lower share one inode number",
            lowers: &["f a same\nH b a\nf c other"],
            tree: "f a same\nf b same\nf c other\n= a b",
            ..CASE
        },
        Case {
            name: "marker names are never looked up",
            lowers: &["o d\nf d/x x\nW foo"],
            tree: "d d\nf d/x x",
            absent: &[".wh.foo", "d/.wh..wh..opq", ".wh..wh..opq"],
            ..CASE
        },
        Case {
            name: "overlay.opaque=x on a lower root: readdir hides xattr whiteouts at the root",
            lowers: &[
                "X . user.overlay.opaque x\nz t trusted.overlay.whiteout\nf k k",
                "f t T",
            ],
            tree: "f k k",
            absent: &["t"],
            merged: &[""],
            ..CASE
        },
        Case {
            name: "user xattrs show, overlay-private ones never",
            lowers: &[
                "f a a\nX a user.color blue\nX a user.overlay.foo bar\nX a trusted.overlay.origin o\n\
                 X a user.fuseoverlayfs.z z\nX a user.fimfs.k v\nX a trusted.other t\n\
                 O d trusted.overlay.opaque\nX d user.overlay.opaque y",
            ],
            ops: &[
                "getxattr a user.color",
                "getxattr a user.overlay.foo => ENODATA",
                "getxattr a trusted.overlay.origin => ENODATA",
                "getxattr a user.fuseoverlayfs.z => ENODATA",
                "getxattr a user.fimfs.k => ENODATA",
                "getxattr d trusted.overlay.opaque => ENODATA",
                "getxattr d user.overlay.opaque => ENODATA",
                "getxattr a user.none => ENODATA",
                "openr a",
                "lookup a",
            ],
            tree: "f a a\nx a user.color blue\nx a trusted.other t\nd d",
            ..CASE
        },
        Case {
            name: "upper: whiteouts, an opaque dir and files over the lowers",
            lowers: &["f gone g\nf over low\nf op/old o\nf d/x x\nf d/l l"],
            upper: Upper::Spec(
                "w gone\nf over up\nO op user.overlay.opaque\nf op/new n\nf d/u u\nw d/x",
            ),
            tree: "f over up\nd op\nf op/new n\nd d\nf d/u u\nf d/l l",
            absent: &["gone", "op/old", "d/x"],
            merged: &["", "d"],
            keep_ino: &["over", "d"],
            disk: "w gone\nf over up\no op\nd d\nw d/x",
            ..CASE
        },
        Case {
            name: "upper: a dir over a lower file, a file over a lower dir",
            lowers: &["f a afile\nf b/deep d"],
            upper: Upper::Spec("d a\nf a/in i\nf b bfile"),
            tree: "d a\nf a/in i\nf b bfile",
            merged: &[""],
            disk: "d a\nf b bfile",
            ..CASE
        },
        Case {
            name: "upper: lower-dialect markers in the upper are read too",
            lowers: &["f a A\nf b B\nf d/x X\nf e/y Y"],
            upper: Upper::Spec(
                "W a\nz b user.overlay.whiteout\no d\nf d/n N\nO e user.fuseoverlayfs.opaque",
            ),
            tree: "? b\nd d\nf d/n N\nd e",
            absent: &["a", "b", "d/x", "e/y"],
            merged: &[""],
            ..CASE
        },
    ]);
}

#[test]
fn read_many_lowers() {
    // Twelve lowers, each adding one file to `d` and shadowing `same`; the
    // top-most (first) lower wins.
    let specs: Vec<String> = (0..12)
        .map(|i| format!("f d/f{i:02} {i}\nf same from{i}\nf d/shared s{i}"))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fx = Fixture::new("many", &refs, None, Options::default());
    let mut problems = Vec::new();
    let view = engine_view(&fx.union, &mut problems);
    let mut want = String::from("d d\nf same from0\nf d/shared s0\n");
    for i in 0..12 {
        want.push_str(&format!("f d/f{i:02} {i}\n"));
    }
    check_view(&view, &parse_expect(&want), &mut problems);
    if view.get("d").map(|s| s.nlink) != Some(1) {
        problems.push(format!(
            "d: merged over 12 lowers, nlink {:?}",
            view.get("d").map(|s| s.nlink)
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Once a lower directory has been listed (by a readdir of its merged
/// directory, or after a few misses), names it lacks are answered from
/// memory: every rule must come out as when each layer is probed.
#[test]
fn lowers_known_from_a_listing_resolve_as_probed() {
    let lowers = [
        "f d/a A1\nW d/x\nf d/y Y1",
        "f d/b B2\nf d/x X2\nf d/c C2\nw d/z",
        "f d/x X3\nf d/z Z3\nf d/c C3\nf d/e E3",
    ];
    let want = "d d\nf d/a A1\nf d/y Y1\nf d/b B2\nf d/c C2\nf d/e E3";
    for readdir_first in [false, true] {
        let fx = Fixture::new("listed", &lowers, Some(""), Options::default());
        let u = &fx.union;
        let mut problems = Vec::new();
        let mut l = Lookups::new(u);
        let d = l.ino("d").expect("lookup d");
        if readdir_first {
            let _ = engine_view(u, &mut problems);
        }
        // Enough misses in every lower of `d` to have each one listed.
        for i in 0..8 {
            let name = format!("missing{i}");
            if let Ok((n, _)) = u.lookup(d, name.as_bytes()) {
                u.forget(n.ino, 1);
                problems.push(format!("d/{name} found"));
            }
        }
        for (name, why) in [
            ("x", ".wh. file in the top lower"),
            ("z", "device whiteout"),
        ] {
            if let Ok((n, _)) = u.lookup(d, name.as_bytes()) {
                u.forget(n.ino, 1);
                problems.push(format!("d/{name} found through a {why}"));
            }
        }
        check_view(
            &engine_view(u, &mut problems),
            &parse_expect(want),
            &mut problems,
        );
        assert!(
            problems.is_empty(),
            "readdir first: {readdir_first}\n{}",
            problems.join("\n")
        );
    }
}

// =================================================================================
// Writing

#[test]
fn write_rules() {
    run_table(&[
        Case {
            name: "unlink of a lower-only file writes a 0/0 whiteout",
            lowers: &["f a a\nf b b"],
            upper: Upper::Spec(""),
            ops: &["unlink a"],
            tree: "f b b",
            absent: &["a"],
            merged: &[""],
            disk: "w a\n- b",
            ..CASE
        },
        Case {
            name: "unlink of an upper-only file writes no whiteout",
            lowers: &["f b b"],
            upper: Upper::Spec("f a a"),
            ops: &["unlink a"],
            tree: "f b b",
            disk: "- a",
            merged: &[""],
            ..CASE
        },
        Case {
            name: "unlink of a copied-up file writes a whiteout",
            lowers: &["f a low"],
            upper: Upper::Spec(""),
            ops: &["write a new", "unlink a"],
            tree: "",
            absent: &["a"],
            merged: &[""],
            disk: "w a",
            ..CASE
        },
        Case {
            name: "whether a whiteout is needed is read from the lowers now (three lowers)",
            lowers: &["d d", "f d/x mid", "f d/y bottom"],
            upper: Upper::Spec(""),
            ops: &[
                "chmod d/y 600",
                "unlink d/y",
                "truncate d/x 0",
                "unlink d/x",
            ],
            tree: "d d",
            absent: &["d/x", "d/y"],
            merged: &["", "d"],
            disk: "d d\nw d/x\nw d/y",
            ..CASE
        },
        Case {
            name: "unlink in a lower-only dir copies the dir up (mode, xattrs) first",
            lowers: &["f sub/a a\nf sub/b b\nm sub 750\nX sub user.k v"],
            upper: Upper::Spec(""),
            ops: &["unlink sub/a"],
            tree: "d sub\nf sub/b b\nm sub 750\nx sub user.k v",
            merged: &["", "sub"],
            keep_ino: &["sub", "sub/b"],
            disk: "d sub\nm sub 750\nx sub user.k v\nw sub/a\n- sub/b",
            ..CASE
        },
        Case {
            name: "rmdir of a lower empty dir writes a whiteout",
            lowers: &["d e\nf f f"],
            upper: Upper::Spec(""),
            ops: &["rmdir e"],
            tree: "f f f",
            absent: &["e"],
            merged: &[""],
            disk: "w e",
            ..CASE
        },
        Case {
            name: "rmdir of a dir non-empty through a lower is ENOTEMPTY",
            lowers: &["f d/x x"],
            upper: Upper::Spec("d d"),
            ops: &["rmdir d => ENOTEMPTY"],
            tree: "d d\nf d/x x",
            merged: &["", "d"],
            disk: "d d\n- d/x",
            ..CASE
        },
        Case {
            name: "rmdir of a merged dir empty in the union whites it out",
            lowers: &["f d/x x\nf d/y y"],
            upper: Upper::Spec(""),
            ops: &["unlink d/x", "unlink d/y", "rmdir d"],
            tree: "",
            absent: &["d", "d/x"],
            merged: &[""],
            disk: "w d",
            ..CASE
        },
        Case {
            name: "rmdir of an upper dir holding only whiteouts",
            lowers: &["f d/a A"],
            upper: Upper::Spec("d d\nw d/a"),
            ops: &["rmdir d"],
            tree: "",
            absent: &["d"],
            merged: &[""],
            disk: "w d",
            ..CASE
        },
        Case {
            name: "rmdir of an upper dir holding stale whiteouts, nothing below",
            lowers: &["f other O"],
            upper: Upper::Spec("d d\nw d/a"),
            ops: &["rmdir d"],
            tree: "f other O",
            absent: &["d"],
            merged: &[""],
            disk: "- d",
            ..CASE
        },
        Case {
            name: "rm -rf d; mkdir d gives an empty opaque d",
            lowers: &["f d/a a\nf d/sub/b b", "f d/c c"],
            upper: Upper::Spec(""),
            ops: &[
                "unlink d/a",
                "unlink d/sub/b",
                "rmdir d/sub",
                "unlink d/c",
                "rmdir d",
                "mkdir d",
            ],
            tree: "d d",
            absent: &["d/a", "d/c", "d/sub"],
            merged: &[""],
            disk: "o d\ne d",
            ..CASE
        },
        Case {
            name: "rm -rf d; mkdir d; rmdir d leaves a whiteout again",
            lowers: &["f d/a A"],
            upper: Upper::Spec(""),
            ops: &[
                "unlink d/a",
                "rmdir d",
                "mkdir d",
                "create d/new N",
                "unlink d/new",
                "rmdir d",
            ],
            tree: "",
            absent: &["d"],
            merged: &[""],
            disk: "w d",
            ..CASE
        },
        Case {
            name: "mkdir over a whited-out lower file makes an opaque dir",
            lowers: &["f x file"],
            upper: Upper::Spec(""),
            ops: &["unlink x", "mkdir x"],
            tree: "d x",
            merged: &[""],
            disk: "o x\ne x",
            ..CASE
        },
        Case {
            name: "create over a whiteout replaces it",
            lowers: &["f a old"],
            upper: Upper::Spec(""),
            ops: &["unlink a", "create a new"],
            tree: "f a new",
            merged: &[""],
            disk: "f a new",
            ..CASE
        },
        Case {
            name: "a new dir where no lower has the name is not opaque",
            lowers: &["f d/x X"],
            upper: Upper::Spec(""),
            ops: &[
                "symlink d/s ../x",
                "mkfifo d/p",
                "mkdir d/n",
                "create d/n/f new",
            ],
            tree: "d d\nf d/x X\nl d/s ../x\np d/p\nd d/n\nf d/n/f new",
            merged: &["", "d"],
            disk: "d d\nl d/s ../x\nd d/n\nf d/n/f new\n- d/x",
            ..CASE
        },
        Case {
            name: "no whiteout inside an opaque upper dir",
            lowers: &["f d/x X\nf d/y Y"],
            upper: Upper::Spec("O d user.overlay.opaque\nf d/x up"),
            ops: &["unlink d/x"],
            tree: "d d",
            absent: &["d/x", "d/y"],
            merged: &[""],
            disk: "o d\ne d",
            ..CASE
        },
        Case {
            name: "create in an opaque upper dir over a name only a lower has",
            lowers: &["f d/x X"],
            upper: Upper::Spec("O d user.overlay.opaque"),
            ops: &["create d/x new"],
            tree: "d d\nf d/x new",
            merged: &[""],
            disk: "o d\nf d/x new\nn d",
            ..CASE
        },
        Case {
            name: "copy-up keeps mode, owner, mtime, xattrs, contents and st_ino",
            lowers: &["f a hello\nm a 640\nu a 1234 5678\nX a user.k v\nt a 1000000"],
            upper: Upper::Spec(""),
            ops: &["setxattr a user.new n"],
            tree: "f a hello\nm a 640\nx a user.k v\nx a user.new n",
            merged: &[""],
            keep_ino: &["a"],
            disk: "f a hello\nm a 640\nu a 1234 5678\nx a user.k v\nx a user.new n\nt a 1000000",
            ..CASE
        },
        Case {
            name: "copy-up on open for write keeps the data; the lower is untouched",
            lowers: &["f a hello\nf b abcdef\nf c data\nf e keep"],
            upper: Upper::Spec(""),
            ops: &["pwrite a 0 J", "truncate b 3", "opentrunc c", "openrw e"],
            tree: "f a Jello\nf b abc\nf c\nf e keep",
            merged: &[""],
            keep_ino: &["a", "b", "c", "e"],
            disk: "f a Jello\nf b abc\nf c \nf e keep",
            ..CASE
        },
        Case {
            name: "chmod, utime and chown copy up and keep contents and st_ino",
            lowers: &["f a data\nt a 1000\nl s target"],
            upper: Upper::Spec(""),
            ops: &[
                "chmod a 600",
                "utime a 2000",
                "chown a 42 43",
                "chown s 7 8",
            ],
            tree: "f a data\nm a 600\nl s target",
            merged: &[""],
            keep_ino: &["a", "s"],
            disk: "f a data\nm a 600\nt a 2000\nu a 42 43\nl s target\nu s 7 8",
            ..CASE
        },
        Case {
            name: "chmod, utime and chown of directories: upper-only, lower-only, merged",
            lowers: &["d low\nf m/x X"],
            upper: Upper::Spec("d up\nd m"),
            ops: &[
                "chmod up 700",
                "chmod low 700",
                "chmod m 700",
                "utime up 3000",
                "utime low 3000",
                "chown m 5 6",
            ],
            tree: "d low\nm low 700\nd m\nm m 700\nf m/x X\nd up\nm up 700",
            merged: &["", "m", "low"],
            keep_ino: &["low", "m", "up"],
            disk: "d up\nm up 700\nt up 3000\nd low\nm low 700\nt low 3000\nd m\nm m 700\nu m 5 6",
            ..CASE
        },
        Case {
            name: "a deep copy-up copies the parents first, keeping their modes",
            lowers: &["f p/q/r/file x\nm p/q 700\nm p 711"],
            upper: Upper::Spec(""),
            ops: &["chmod p/q/r/file 600"],
            tree: "d p\nm p 711\nd p/q\nm p/q 700\nd p/q/r\nf p/q/r/file x\nm p/q/r/file 600",
            merged: &["", "p", "p/q", "p/q/r"],
            keep_ino: &["p", "p/q", "p/q/r", "p/q/r/file"],
            disk: "d p\nm p 711\nd p/q\nm p/q 700\nd p/q/r\nf p/q/r/file x\nm p/q/r/file 600",
            ..CASE
        },
        Case {
            name: "user xattrs: set copies up, remove works, a missing one is ENODATA without copy-up",
            lowers: &["f a A\nX a user.k v\nf b B"],
            upper: Upper::Spec(""),
            ops: &[
                "removexattr b user.none => ENODATA",
                "removexattr a user.k",
                "setxattr a user.n 1",
            ],
            tree: "f a A\nx a user.n 1\nf b B",
            merged: &[""],
            disk: "f a A\nx a user.n 1\n- b",
            ..CASE
        },
        Case {
            name: "private xattrs are refused (EPERM) and hidden; refusing copies nothing up",
            lowers: &["f a A\nX a user.k v\nO d user.overlay.opaque\nf d/x X"],
            upper: Upper::Spec("O u user.overlay.opaque\nX u trusted.overlay.opaque y"),
            ops: &[
                "setxattr a user.overlay.opaque y => EPERM",
                "setxattr a trusted.overlay.whiteout y => EPERM",
                "setxattr a user.fuseoverlayfs.opaque y => EPERM",
                "setxattr a trusted.overlay.redirect /x => EPERM",
                "setxattr a user.fimfs.layer 1 => EPERM",
                "removexattr d user.overlay.opaque => EPERM",
                "removexattr u user.overlay.opaque => EPERM",
                "getxattr d user.overlay.opaque => ENODATA",
                "getxattr u trusted.overlay.opaque => ENODATA",
                "getxattr u user.overlay.opaque => ENODATA",
                "getxattr a user.k",
            ],
            tree: "f a A\nx a user.k v\nd d\nf d/x X\nd u",
            merged: &[""],
            disk: "- a\n- d\no u",
            ..CASE
        },
        Case {
            name: "names starting with .wh. cannot be created",
            lowers: &["f a A\nd dir"],
            upper: Upper::Spec(""),
            ops: &[
                "create .wh.x => EPERM",
                "mkdir .wh.y => EPERM",
                "symlink .wh.z t => EPERM",
                "mkfifo .wh.p => EPERM",
                "mkdir .wh..wh..opq => EPERM",
                "create dir/.wh.a => EPERM",
                "create dir/.wh..wh..opq => EPERM",
                "rename a .wh.a => EPERM",
                "link a .wh.l => EPERM",
            ],
            tree: "f a A\nd dir",
            merged: &[""],
            disk: "- a\n- dir",
            ..CASE
        },
        Case {
            name: "mknod of a 0/0 character device (a whiteout) is refused; other devices are made",
            lowers: &["f w lower"],
            upper: Upper::Spec(""),
            ops: &[
                "mkchr x 0 0 => EPERM",
                "mkchr w 0 0 => EEXIST",
                "mkchr n 1 3",
            ],
            tree: "f w lower\nc n 1:3",
            absent: &["x"],
            merged: &[""],
            disk: "- x\n- w",
            ..CASE
        },
        Case {
            name: "errors: unlink of a dir EISDIR, rmdir of a file ENOTDIR, existing names EEXIST",
            lowers: &["d d\nf f F"],
            upper: Upper::Spec(""),
            ops: &[
                "unlink d => EISDIR",
                "rmdir f => ENOTDIR",
                "unlink nope => ENOENT",
                "rmdir nope => ENOENT",
                "rename nope x => ENOENT",
                "mkdir d => EEXIST",
                "mkdir f => EEXIST",
                "create f x => EEXIST",
                "symlink f t => EEXIST",
                "mkfifo d => EEXIST",
                "link f d => EEXIST",
            ],
            tree: "d d\nf f F",
            merged: &[""],
            disk: "- d\n- f",
            ..CASE
        },
        Case {
            name: "hard link of a lower file: one inode, one st_ino, writes seen through both",
            lowers: &["f a A"],
            upper: Upper::Spec(""),
            ops: &["link a b", "pwrite b 0 Z"],
            tree: "f a Z\nf b Z\n= a b",
            merged: &[""],
            disk: "f a Z\nf b Z\nh a b",
            ..CASE
        },
        Case {
            name: "a new file at a whited-out name does not take the deleted file's st_ino",
            lowers: &["f a old\nf b old"],
            upper: Upper::Spec(""),
            ops: &["unlink a", "create a new", "create tmp new", "rename tmp b"],
            tree: "f a new\nf b new",
            merged: &[""],
            new_ino: &["a", "b"],
            disk: "f a new\nf b new",
            ..CASE
        },
        Case {
            name: "a new file at a whited-out name never shares st_ino with a lower hard link",
            lowers: &["f a A\nH b a"],
            upper: Upper::Spec(""),
            ops: &["unlink b", "create b new"],
            tree: "f a A\nf b new",
            merged: &[""],
            disk: "f b new\n- a",
            ..CASE
        },
        Case {
            name: "hard links inside a renamed merged directory stay one file",
            lowers: &["f d/a A\nf d/x X"],
            upper: Upper::Spec(""),
            ops: &["link d/a d/b", "rename d e", "pwrite e/b 0 Z"],
            tree: "d e\nf e/a Z\nf e/b Z\nf e/x X\n= e/a e/b",
            merged: &[""],
            disk: "w d\nf e/a Z\nf e/b Z\nh e/a e/b",
            ..CASE
        },
        Case {
            name: "a failed directory rename leaves hard links inside it alone",
            lowers: &["f d/a A\nd d/s"],
            upper: Upper::Spec(""),
            ops: &["link d/a d/b", "rename d d/s/x => EINVAL", "pwrite d/b 0 Z"],
            tree: "d d\nf d/a Z\nf d/b Z\nd d/s\n= d/a d/b",
            merged: &["", "d"],
            disk: "f d/a Z\nf d/b Z\nh d/a d/b",
            ..CASE
        },
        Case {
            name: "hard link onto a whiteout",
            lowers: &["f a A\nf b B"],
            upper: Upper::Spec(""),
            ops: &["unlink b", "link a b"],
            tree: "f a A\nf b A\n= a b",
            merged: &[""],
            disk: "f b A\nh a b",
            ..CASE
        },
    ]);
}

#[test]
fn rename_rules() {
    run_table(&[
        Case {
            name: "rename of a lower file leaves a whiteout",
            lowers: &["f a A"],
            upper: Upper::Spec(""),
            ops: &["rename a b"],
            tree: "f b A",
            absent: &["a"],
            merged: &[""],
            disk: "w a\nf b A",
            ..CASE
        },
        Case {
            name: "rename of an upper-only file leaves no whiteout",
            lowers: &["f x x"],
            upper: Upper::Spec("f a A"),
            ops: &["rename a b"],
            tree: "f b A\nf x x",
            merged: &[""],
            disk: "- a\nf b A",
            ..CASE
        },
        Case {
            name: "rename of a file over a lower file",
            lowers: &["f a A\nf b B"],
            upper: Upper::Spec(""),
            ops: &["rename a b"],
            tree: "f b A",
            merged: &[""],
            disk: "w a\nf b A",
            ..CASE
        },
        Case {
            name: "rename of a file onto a whiteout",
            lowers: &["f a A\nf b B"],
            upper: Upper::Spec(""),
            ops: &["unlink b", "rename a b"],
            tree: "f b A",
            merged: &[""],
            disk: "w a\nf b A",
            ..CASE
        },
        Case {
            name: "rename within a lower-only directory",
            lowers: &["f s/a A\nf s/b B"],
            upper: Upper::Spec(""),
            ops: &["rename s/a s/c"],
            tree: "d s\nf s/b B\nf s/c A",
            merged: &["", "s"],
            disk: "d s\nw s/a\nf s/c A\n- s/b",
            ..CASE
        },
        Case {
            name: "rename of a merged directory brings every file along and whites out the source",
            lowers: &[
                "f d/a A1\nf d/sub/x X\nl d/link a",
                "f d/a A2\nf d/b B\nf d/gone G\nf d/sub/y Y",
            ],
            upper: Upper::Spec("f d/u U\nw d/gone"),
            ops: &["rename d e"],
            tree: "d e\nf e/a A1\nf e/b B\nf e/u U\nd e/sub\nf e/sub/x X\nf e/sub/y Y\nl e/link a",
            absent: &["d", "e/gone", "d/a"],
            merged: &[""],
            disk: "w d\nD e\nf e/a A1\nf e/b B\nf e/u U\nD e/sub\nf e/sub/x X\nf e/sub/y Y\nl e/link a\nn e",
            ..CASE
        },
        Case {
            name: "rename of a lower-only directory",
            lowers: &["f d/a A\nf d/s/b B\nm d 750"],
            upper: Upper::Spec(""),
            ops: &["rename d e"],
            tree: "d e\nm e 750\nf e/a A\nd e/s\nf e/s/b B",
            absent: &["d"],
            merged: &[""],
            disk: "w d\nD e\nm e 750\nf e/a A\nD e/s\nf e/s/b B",
            ..CASE
        },
        Case {
            name: "rename of a lower directory into another lower directory",
            lowers: &["f d/a A\nd t\nf t/k K"],
            upper: Upper::Spec(""),
            ops: &["rename d t/d"],
            tree: "d t\nf t/k K\nd t/d\nf t/d/a A",
            absent: &["d"],
            merged: &["", "t"],
            disk: "w d\nd t\nD t/d\nf t/d/a A",
            ..CASE
        },
        Case {
            name: "rename of a dir onto a removed lower dir: no resurrection of its files",
            lowers: &["f x/old O\nf y/new N"],
            upper: Upper::Spec(""),
            ops: &["unlink x/old", "rmdir x", "rename y x"],
            tree: "d x\nf x/new N",
            absent: &["x/old", "y"],
            merged: &[""],
            disk: "o x\nf x/new N\nw y",
            ..CASE
        },
        Case {
            name: "rename of a dir over a dir empty in the union: nothing of the target leaks",
            lowers: &["f src/s S\nf dst/hidden H"],
            upper: Upper::Spec(""),
            ops: &["unlink dst/hidden", "rename src dst"],
            tree: "d dst\nf dst/s S",
            absent: &["dst/hidden", "src"],
            merged: &[""],
            disk: "o dst\nf dst/s S\nn dst\nw src",
            ..CASE
        },
        Case {
            name: "rename of an upper dir over a lower dir empty in the union",
            lowers: &["f dst/hidden H"],
            upper: Upper::Spec("f src/s S\nd dst\nw dst/hidden"),
            ops: &["rename src dst"],
            tree: "d dst\nf dst/s S",
            absent: &["dst/hidden", "src"],
            merged: &[""],
            disk: "o dst\nf dst/s S\nn dst\n- src",
            ..CASE
        },
        Case {
            name: "RENAME_NOREPLACE onto an existing name is EEXIST and copies nothing up",
            lowers: &["f a A\nf b B\nd d\nf d/x X"],
            upper: Upper::Spec("f u U"),
            ops: &[
                "rename a b noreplace => EEXIST",
                "rename a u noreplace => EEXIST",
                "rename d b noreplace => EEXIST",
                "rename a c noreplace",
            ],
            tree: "f b B\nf c A\nd d\nf d/x X\nf u U",
            merged: &[""],
            disk: "w a\n- b\nf c A\n- d\nf u U",
            ..CASE
        },
        Case {
            name: "rename of a dir over a non-empty dir is ENOTEMPTY, even when only a lower fills it",
            lowers: &["d s\nf t/x X\nf v/y Y"],
            upper: Upper::Spec("d t"),
            ops: &["rename s t => ENOTEMPTY", "rename s v => ENOTEMPTY"],
            tree: "d s\nd t\nf t/x X\nd v\nf v/y Y",
            merged: &["", "t"],
            disk: "d t\n- s\n- v",
            ..CASE
        },
        Case {
            name: "rename file over dir is EISDIR, dir over file ENOTDIR",
            lowers: &["f f F\nd e"],
            upper: Upper::Spec(""),
            ops: &["rename f e => EISDIR", "rename e f => ENOTDIR"],
            tree: "f f F\nd e",
            merged: &[""],
            disk: "- f\n- e",
            ..CASE
        },
        Case {
            name: "rename of a dir into its own subdirectory is EINVAL",
            lowers: &["d a/b"],
            upper: Upper::Spec(""),
            ops: &["rename a a/b/c => EINVAL"],
            tree: "d a\nd a/b",
            merged: &[""],
            ..CASE
        },
        Case {
            name: "rename into its own subtree is EINVAL, onto its own ancestor ENOTEMPTY, before type errors",
            lowers: &["f d/b/f F\nd d/e"],
            upper: Upper::Spec(""),
            ops: &[
                "rename d d/e => EINVAL",
                "rename d d/b/f => EINVAL",
                "rename d d/b/new => EINVAL",
                "rename d/b/f d => ENOTEMPTY",
                "rename d/b/f d/b => ENOTEMPTY",
                "rename d/b d => ENOTEMPTY",
            ],
            tree: "d d\nd d/b\nf d/b/f F\nd d/e",
            ..CASE
        },
        Case {
            name: "rename onto itself changes nothing",
            lowers: &["f a A\nd d"],
            upper: Upper::Spec(""),
            ops: &["rename a a", "rename d d"],
            tree: "f a A\nd d",
            merged: &[""],
            keep_ino: &["a", "d"],
            disk: "- a\n- d",
            ..CASE
        },
        Case {
            name: "RENAME_EXCHANGE of a lower file and an upper file",
            lowers: &["f a A"],
            upper: Upper::Spec("f b B"),
            ops: &["rename a b exchange"],
            tree: "f a B\nf b A",
            merged: &[""],
            disk: "f a B\nf b A",
            ..CASE
        },
        Case {
            name: "RENAME_EXCHANGE of two dirs, one merged: no lower contents leak into either",
            lowers: &["f a/x X\nf b/y Y"],
            upper: Upper::Spec("f a/u U"),
            ops: &["rename a b exchange"],
            tree: "d a\nf a/y Y\nd b\nf b/x X\nf b/u U",
            merged: &[""],
            disk: "D a\nD b",
            ..CASE
        },
        Case {
            name: "RENAME_EXCHANGE with a missing target is ENOENT",
            lowers: &["f a A"],
            upper: Upper::Spec(""),
            ops: &["rename a b exchange => ENOENT"],
            tree: "f a A",
            merged: &[""],
            disk: "- a",
            ..CASE
        },
        Case {
            name: "rename of a file whose name is then recreated: the old lower stays hidden",
            lowers: &["f a A"],
            upper: Upper::Spec(""),
            ops: &["rename a b", "create a new", "rename a c", "unlink b"],
            tree: "f c new",
            absent: &["a", "b"],
            merged: &[""],
            disk: "w a\n- b\nf c new",
            ..CASE
        },
    ]);
}

/// Every mutation of a union without an upper fails with EROFS (private xattr
/// names with EPERM), and nothing changes.
#[test]
fn read_only_union_refuses_every_mutation() {
    run_table(&[Case {
        name: "read-only union",
        lowers: &["f a A\nX a user.k v\nd d\nf d/x X\nd empty\nl s a"],
        upper: Upper::None,
        ops: &[
            "mkdir n => EROFS",
            "mkdir d/n => EROFS",
            "create n => EROFS",
            "symlink n t => EROFS",
            "mkfifo n => EROFS",
            "unlink a => EROFS",
            "unlink d/x => EROFS",
            "unlink s => EROFS",
            "rmdir empty => EROFS",
            "rename a b => EROFS",
            "rename d e => EROFS",
            "rename a d/x exchange => EROFS",
            "link a l => EROFS",
            "write a x => EROFS",
            "append a x => EROFS",
            "pwrite a 0 x => EROFS",
            "openw a => EROFS",
            "openrw a => EROFS",
            "opentrunc a => EROFS",
            "truncate a 0 => EROFS",
            "chmod a 600 => EROFS",
            "chmod d 700 => EROFS",
            "utime a 5 => EROFS",
            "chown a 1 1 => EROFS",
            "setxattr a user.x y => EROFS",
            "removexattr a user.k => EROFS",
            "setxattr a user.overlay.opaque y => EPERM",
            "openr a",
            "getxattr a user.k",
        ],
        tree: "f a A\nx a user.k v\nd d\nf d/x X\nd empty\nl s a",
        ..CASE
    }]);
}

/// A privileged union also writes `trusted.overlay.opaque=y`, and hides it.
#[test]
fn privileged_union_marks_opaque_in_both_namespaces() {
    let opts = Options {
        privileged: true,
        ..Options::default()
    };
    let fx = Fixture::new("priv", &["f d/a A"], Some(""), opts);
    for line in ["unlink d/a", "rmdir d", "mkdir d", "create d/n N"] {
        let (op, want) = parse_op(line);
        assert_eq!(engine_apply(&fx.union, &op, true), want, "{line}");
    }
    let mut problems = Vec::new();
    let view = engine_view(&fx.union, &mut problems);
    check_view(&view, &parse_expect("d d\nf d/n N"), &mut problems);
    check_upper_format(fx.upper(), None, &mut problems);
    check_disk(
        fx.upper(),
        "o d\nx d trusted.overlay.opaque y\nf d/n N\nn d",
        &mut problems,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The layer directories the nodes keep open stay within their budget: over 24
/// lowers whose 10 directories each exist in every lower, with room for 40 fds,
/// every file is found with the top-most content, every listing is whole and a
/// create lands, twice over, while the nodes never hold more than the budget plus
/// the one directory just resolved.
#[test]
fn cached_directory_fds_stay_within_their_budget() {
    const LOWERS: usize = 24;
    const DIRS: usize = 10;
    const BUDGET: usize = 40;
    let specs: Vec<String> = (0..LOWERS)
        .map(|l| {
            let mut spec = String::new();
            for d in 0..DIRS {
                spec += &format!("d a/b{d}\nf a/b{d}/top L{l}\n");
                if (l + d) % 3 == 0 {
                    spec += &format!("f a/b{d}/f{l} L{l}\n");
                }
            }
            spec
        })
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let opts = Options {
        dir_fd_budget: Some(BUDGET),
        ..Options::default()
    };
    let fx = Fixture::new("fdbudget", &refs, Some(""), opts);
    let u = &fx.union;
    let (op, want) = parse_op("create a/b3/new N");
    assert_eq!(engine_apply(u, &op, true), want);
    let mut l = Lookups::new(u);
    for pass in 0..2 {
        for d in 0..DIRS {
            let dir = format!("a/b{d}");
            let mut names: BTreeSet<String> = BTreeSet::from(["top".to_string()]);
            let top = l.ino(&format!("{dir}/top")).expect("top");
            assert_eq!(read_through(u, top), Ok(b"L0".to_vec()), "{dir}/top");
            for lower in (0..LOWERS).filter(|lower| (lower + d) % 3 == 0) {
                let ino = l.ino(&format!("{dir}/f{lower}")).expect("file");
                let want = format!("L{lower}").into_bytes();
                assert_eq!(read_through(u, ino), Ok(want), "{dir}/f{lower}");
                names.insert(format!("f{lower}"));
            }
            if d == 3 {
                names.insert("new".into());
            }
            let (node, _) = u.opendir(l.ino(&dir).expect("dir")).expect("opendir");
            let listed: BTreeSet<String> = u
                .list_dir(&node)
                .expect("list_dir")
                .into_iter()
                .map(|e| String::from_utf8(e.name).expect("utf-8"))
                .collect();
            assert_eq!(listed, names, "listing of {dir}, pass {pass}");
            let held = u.cached_dir_fds();
            assert!(
                held <= BUDGET + LOWERS + 1,
                "{held} cached directory fds after {dir}, budget {BUDGET}"
            );
        }
    }
    // A lower-only directory whose layers were dropped for fds is opened
    // from one layer opened by path: nothing is cached again (reopening
    // every layer of every directory made a warm `find` over 100 lowers
    // reopen 20,000 directories a pass), and the answer is getattr's.
    let lower_only: Vec<u64> = (0..DIRS)
        .filter(|&d| d != 3)
        .map(|d| l.ino(&format!("a/b{d}")).expect("dir"))
        .collect();
    let mut opened = Vec::new();
    let mut shed = 0;
    for &ino in &lower_only {
        let was_shed = u.node(ino).expect("node").shed_generation().is_some();
        let (node, a) = u.opendir(ino).expect("opendir");
        if was_shed {
            shed += 1;
            assert!(
                node.shed_generation().is_some(),
                "opendir of shed directory {ino:#x} cached its layers again"
            );
        }
        opened.push(a);
    }
    assert!(
        shed >= DIRS / 2,
        "only {shed} directories were shed: the budget is not tested"
    );
    for (&ino, a) in lower_only.iter().zip(&opened) {
        assert_eq!(
            u.getattr(ino).as_ref(),
            Ok(a),
            "opendir and getattr of {ino:#x}"
        );
    }
    // An upper directory made behind the union under a shed directory's
    // name is still seen.
    let upper = fx.upper.as_ref().expect("upper");
    std::fs::create_dir_all(upper.join("a/b5")).expect("mkdir behind");
    std::fs::write(upper.join("a/b5/behind"), "B").expect("write behind");
    for _ in 0..2 {
        // Shed everything again, then open b5.
        for d in (0..DIRS).filter(|&d| d != 5) {
            u.opendir(l.ino(&format!("a/b{d}")).expect("dir"))
                .expect("opendir");
        }
        let (node, _) = u.opendir(l.ino("a/b5").expect("b5")).expect("opendir b5");
        let listed = u.list_dir(&node).expect("list b5");
        assert!(
            listed.iter().any(|e| e.name == b"behind"),
            "a/b5 lists what the upper gained behind the union"
        );
    }
}

/// Changes made to the upper behind the union are seen at once (SPEC §7.7).
#[test]
fn upper_changes_behind_the_union_are_seen() {
    let fx = Fixture::new("behind", &["f d/x X\nf a A"], Some(""), Options::default());
    let u = &fx.union;
    // Let the engine cache d's layers (lower only) first.
    let mut problems = Vec::new();
    let mut l = Lookups::new(u);
    l.forget_on_drop = false;
    let d = l.ino("d").expect("lookup d");
    let _ = engine_view(u, &mut problems);
    fs::create_dir_all(fx.upper().join("d")).unwrap();
    fs::write(fx.upper().join("d/new"), "N").unwrap();
    fs::write(fx.upper().join("top"), "T").unwrap();
    build_layer(fx.upper(), "w a");
    let view = engine_view(u, &mut problems);
    check_view(
        &view,
        &parse_expect("d d\nf d/x X\nf d/new N\nf top T"),
        &mut problems,
    );
    match u.lookup(d, b"new") {
        Ok((n, _)) => u.forget(n.ino, 1),
        Err(e) => problems.push(format!("lookup d/new through a node cached before: {e}")),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// =================================================================================
// Random operations against a plain-directory model

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// Names for new entries: one more than the layers use.
const NEW_NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// Whiteout dialects of the lowers: device, `.wh.` file, xattr files.
const WHITEOUTS: [&str; 4] = [
    "w",
    "W",
    "trusted.overlay.whiteout",
    "user.overlay.whiteout",
];

/// One entry of a generated layer.
#[derive(Debug, Clone, PartialEq)]
enum Gen {
    File(String),
    Dir {
        /// The opaque marker (`o` for `.wh..wh..opq`, else an xattr name).
        opaque: Option<&'static str>,
        /// `overlay.opaque=x`: holds xattr whiteouts.
        xmark: bool,
    },
    Sym(String),
    /// `w`, `W` or an xattr whiteout (the xattr name).
    Wh(&'static str),
}

#[derive(Debug, Default, Clone)]
struct GenLayer {
    entries: BTreeMap<String, Gen>,
    xattrs: BTreeMap<String, BTreeMap<String, String>>,
    root_xmark: bool,
}

fn parent_path(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn gen_layer(rng: &mut XorShift, tag: &str, upper: bool) -> GenLayer {
    let mut g = GenLayer::default();
    for i in 0..3 + rng.below(10) {
        let depth = 1 + rng.below(3);
        let comps: Vec<&str> = (0..depth).map(|_| *rng.pick(&NAMES)).collect();
        let path = comps.join("/");
        let mut ok = !g.entries.contains_key(&path);
        for k in 1..comps.len() {
            let pre = comps[..k].join("/");
            match g.entries.get(&pre) {
                None => {
                    g.entries.insert(
                        pre,
                        Gen::Dir {
                            opaque: None,
                            xmark: false,
                        },
                    );
                }
                Some(Gen::Dir { .. }) => {}
                Some(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let parent = parent_path(&path).to_string();
        let parent_opaque = matches!(
            g.entries.get(&parent),
            Some(Gen::Dir {
                opaque: Some(_),
                ..
            })
        );
        let entry = match rng.below(100) {
            0..35 => Gen::File(format!("{tag}{i}")),
            35..55 => Gen::Dir {
                opaque: None,
                xmark: false,
            },
            55..63 => Gen::Sym(format!("t{}", rng.below(3))),
            63..85 if upper && parent_opaque => continue,
            63..85 if upper => Gen::Wh("w"),
            63..85 => Gen::Wh(WHITEOUTS[rng.below(WHITEOUTS.len())]),
            _ if upper => Gen::Dir {
                opaque: Some("user.overlay.opaque"),
                xmark: false,
            },
            _ => Gen::Dir {
                opaque: Some(*rng.pick(&[
                    "o",
                    "trusted.overlay.opaque",
                    "user.overlay.opaque",
                    "user.fuseoverlayfs.opaque",
                ])),
                xmark: false,
            },
        };
        if let Gen::Wh(x) = &entry
            && x.contains('.')
        {
            match g.entries.get_mut(&parent) {
                Some(Gen::Dir { xmark, .. }) => *xmark = true,
                _ => g.root_xmark = true,
            }
        }
        if matches!(entry, Gen::File(_) | Gen::Dir { .. }) && rng.chance(15) {
            let name = format!("user.r{}", rng.below(2));
            g.xattrs
                .entry(path.clone())
                .or_default()
                .insert(name, format!("{tag}x{i}"));
        }
        g.entries.insert(path, entry);
    }
    g
}

/// The layer spec lines of a generated layer.
fn gen_spec(g: &GenLayer) -> String {
    let mut s = String::new();
    let xmark = |s: &mut String, p: &str, opaque: Option<&str>| {
        let attr = match opaque {
            Some("user.overlay.opaque") => "trusted.overlay.opaque",
            _ => "user.overlay.opaque",
        };
        s.push_str(&format!("X {p} {attr} x\n"));
    };
    if g.root_xmark {
        xmark(&mut s, ".", None);
    }
    for (p, e) in &g.entries {
        match e {
            Gen::File(c) => s.push_str(&format!("f {p} {c}\n")),
            Gen::Dir { opaque, xmark: x } => {
                match opaque {
                    None => s.push_str(&format!("d {p}\n")),
                    Some("o") => s.push_str(&format!("o {p}\n")),
                    Some(attr) => s.push_str(&format!("O {p} {attr}\n")),
                }
                if *x {
                    xmark(&mut s, p, *opaque);
                }
            }
            Gen::Sym(t) => s.push_str(&format!("l {p} {t}\n")),
            Gen::Wh("w") => s.push_str(&format!("w {p}\n")),
            Gen::Wh("W") => s.push_str(&format!("W {p}\n")),
            Gen::Wh(attr) => s.push_str(&format!("z {p} {attr}\n")),
        }
    }
    for (p, xs) in &g.xattrs {
        for (n, v) in xs {
            s.push_str(&format!("X {p} {n} {v}\n"));
        }
    }
    s
}

/// The reference merge (SPEC §1), written independently of the engine: layers
/// top-most first; returns path → (entry, xattrs of the winner).
fn oracle(layers: &[&GenLayer]) -> BTreeMap<String, (Gen, BTreeMap<String, String>)> {
    let mut out = BTreeMap::new();
    oracle_dir(layers.to_vec(), "", &mut out);
    out
}

fn oracle_dir(
    layers: Vec<&GenLayer>,
    dir: &str,
    out: &mut BTreeMap<String, (Gen, BTreeMap<String, String>)>,
) {
    let names: BTreeSet<String> = layers
        .iter()
        .flat_map(|l| l.entries.keys())
        .filter(|k| parent_path(k) == dir)
        .cloned()
        .collect();
    for path in names {
        let mut winner: Option<(&Gen, &GenLayer)> = None;
        let mut below = Vec::new();
        for l in &layers {
            match l.entries.get(&path) {
                None => continue,
                Some(Gen::Wh(_)) => break,
                Some(g @ Gen::Dir { opaque, .. }) => {
                    match winner {
                        None => winner = Some((g, l)),
                        Some((Gen::Dir { .. }, _)) => {}
                        Some(_) => break,
                    }
                    below.push(*l);
                    if opaque.is_some() {
                        break;
                    }
                }
                Some(g) => {
                    if winner.is_none() {
                        winner = Some((g, l));
                    }
                    break;
                }
            }
        }
        let Some((g, l)) = winner else { continue };
        let x = l.xattrs.get(&path).cloned().unwrap_or_default();
        out.insert(path.clone(), (g.clone(), x));
        if matches!(g, Gen::Dir { .. }) {
            oracle_dir(below, &path, out);
        }
    }
}

fn materialize(root: &Path, merged: &BTreeMap<String, (Gen, BTreeMap<String, String>)>) {
    fs::create_dir_all(root).unwrap();
    for (p, (g, xs)) in merged {
        let full = root.join(p);
        match g {
            Gen::File(c) => fs::write(&full, c).unwrap(),
            Gen::Dir { .. } => fs::create_dir(&full).unwrap(),
            Gen::Sym(t) => std::os::unix::fs::symlink(t, &full).unwrap(),
            Gen::Wh(_) => unreachable!("whiteouts never win"),
        }
        for (n, v) in xs {
            set_xattr(&full, n, v.as_bytes()).unwrap();
        }
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Applies `op` to the plain-directory model.
fn model_apply(root: &Path, op: &Op) -> Result<(), Errno> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let p = |s: &str| root.join(s);
    match op {
        Op::Mkdir(a) => fs::DirBuilder::new()
            .mode(0o755)
            .create(p(a))
            .map_err(io_errno),
        Op::Create(a, c) => {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(p(a))
                .map_err(io_errno)?;
            f.write_all(c.as_bytes()).map_err(io_errno)
        }
        Op::Symlink(a, t) => std::os::unix::fs::symlink(t, p(a)).map_err(io_errno),
        Op::Mkfifo(a) => {
            nix::unistd::mkfifo(&p(a), nix::sys::stat::Mode::from_bits_truncate(0o644))
        }
        Op::Unlink(a) => fs::remove_file(p(a)).map_err(io_errno),
        Op::Rmdir(a) => fs::remove_dir(p(a)).map_err(io_errno),
        Op::Rename(a, b, flags) => nix::fcntl::renameat2(
            None,
            &p(a),
            None,
            &p(b),
            nix::fcntl::RenameFlags::from_bits_truncate(*flags),
        ),
        Op::Link(a, b) => fs::hard_link(p(a), p(b)).map_err(io_errno),
        Op::Write(a, c) => {
            let mut o = fs::OpenOptions::new();
            o.write(true).truncate(true).custom_flags(libc::O_NOFOLLOW);
            let f = o.open(p(a)).map_err(io_errno)?;
            pwrite_all(f.as_fd(), c.as_bytes(), 0)
        }
        Op::Append(a, c) => {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(p(a))
                .map_err(io_errno)?;
            let size = f.metadata().map_err(io_errno)?.len();
            pwrite_all(f.as_fd(), c.as_bytes(), size)
        }
        Op::Truncate(a, n) => nix::unistd::truncate(&p(a), *n as i64),
        Op::Chmod(a, m) => {
            fs::set_permissions(p(a), fs::Permissions::from_mode(*m)).map_err(io_errno)
        }
        Op::Setxattr(a, n, v) => set_xattr(&p(a), n, v.as_bytes()).map_err(Errno::from_raw),
        Op::Removexattr(a, n) => remove_xattr(&p(a), n).map_err(Errno::from_raw),
        other => unreachable!("the random test does not generate {other:?}"),
    }
}

/// A random operation on the current state (`view` of the model).
fn random_op(rng: &mut XorShift, view: &View, n: usize) -> Op {
    let of = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        view.iter()
            .filter(|(_, s)| pred(&s.desc))
            .map(|(p, _)| p.clone())
            .collect()
    };
    let all = of(&|_| true);
    let files = of(&|d| d.starts_with('f'));
    let mut dirs = of(&|d| d == "d");
    dirs.push(String::new());
    // New names only up to depth 4, so the tree stays small.
    let shallow: Vec<String> = dirs
        .iter()
        .filter(|d| d.matches('/').count() < 3)
        .cloned()
        .collect();
    let fd = of(&|d| d.starts_with('f') || d == "d");
    let pick_from = |rng: &mut XorShift, v: &[String], fallback: &[String]| -> String {
        match (v.is_empty(), fallback.is_empty()) {
            (false, _) if !rng.chance(10) => rng.pick(v).clone(),
            (_, false) => rng.pick(fallback).clone(),
            _ => "a".to_string(),
        }
    };
    let fresh = |rng: &mut XorShift| {
        let d = rng.pick(&shallow).clone();
        child(&d, NEW_NAMES[rng.below(NEW_NAMES.len())])
    };
    let content = |rng: &mut XorShift| format!("r{n}x{}", rng.below(1000));
    match rng.below(100) {
        0..12 => Op::Create(fresh(rng), content(rng)),
        12..20 => Op::Mkdir(fresh(rng)),
        20..24 => Op::Symlink(fresh(rng), format!("t{}", rng.below(3))),
        24..26 => Op::Mkfifo(fresh(rng)),
        26..36 => Op::Unlink(pick_from(rng, &all, &all)),
        36..44 => Op::Rmdir(pick_from(rng, &dirs[..dirs.len() - 1], &all)),
        44..60 => {
            let src = pick_from(rng, &all, &all);
            let dst = if rng.chance(50) {
                fresh(rng)
            } else {
                pick_from(rng, &all, &all)
            };
            let flags = match rng.below(10) {
                0 | 1 => libc::RENAME_NOREPLACE,
                2 | 3 => libc::RENAME_EXCHANGE,
                _ => 0,
            };
            Op::Rename(src, dst, flags)
        }
        60..66 => Op::Link(pick_from(rng, &files, &all), fresh(rng)),
        66..76 => Op::Write(pick_from(rng, &files, &files), content(rng)),
        76..82 => Op::Append(pick_from(rng, &files, &files), content(rng)),
        82..86 => Op::Truncate(pick_from(rng, &files, &files), rng.below(8) as u64),
        86..90 => Op::Chmod(
            pick_from(rng, &fd, &fd),
            *rng.pick(&[0o600, 0o644, 0o755, 0o700]),
        ),
        90..96 => Op::Setxattr(
            pick_from(rng, &fd, &fd),
            format!("user.r{}", rng.below(3)),
            content(rng),
        ),
        _ => Op::Removexattr(pick_from(rng, &fd, &fd), format!("user.r{}", rng.below(3))),
    }
}

/// Only ops whose target exists in the model and is of the right kind are
/// generated against files; the fallbacks may pick anything (for the errors).
fn op_is_safe(view: &View, op: &Op) -> bool {
    // Never write through a fifo (the model would block) nor follow a symlink.
    let kind = |p: &str| view.get(p).map(|s| s.desc.chars().next().unwrap_or(' '));
    match op {
        Op::Write(p, _) | Op::Append(p, _) | Op::Truncate(p, _) => kind(p) == Some('f'),
        Op::Chmod(p, _) | Op::Setxattr(p, _, _) | Op::Removexattr(p, _) => {
            matches!(kind(p), Some('f') | Some('d'))
        }
        _ => true,
    }
}

/// One seeded run; the first divergence, with the layers and the last ops.
fn run_random(seed: u64, ops: usize) -> Result<(), String> {
    let mut rng = XorShift::from_state(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let nlowers = 1 + rng.below(3);
    let lowers: Vec<GenLayer> = (0..nlowers)
        .map(|i| gen_layer(&mut rng, &format!("L{i}"), false))
        .collect();
    let upper = gen_layer(&mut rng, "U", true);
    let specs: Vec<String> = lowers.iter().map(gen_spec).collect();
    let spec_refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let upper_spec = gen_spec(&upper);
    let fx = Fixture::new(
        &format!("rand{seed}"),
        &spec_refs,
        Some(&upper_spec),
        Options::default(),
    );
    let lowers_before: Vec<_> = fx.lowers.iter().map(|p| disk_snapshot(p)).collect();
    let model = fx.tmp.path().join("model");
    let all_layers: Vec<&GenLayer> = std::iter::once(&upper).chain(lowers.iter()).collect();
    materialize(&model, &oracle(&all_layers));

    let layout = format!(
        "seed {seed}\nupper:\n{upper_spec}\n{}",
        specs
            .iter()
            .enumerate()
            .map(|(i, s)| format!("lower{}:\n{s}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut history: Vec<String> = Vec::new();
    let mut hardlink_ino_findings: Vec<String> = Vec::new();
    for n in 0..=ops {
        let mut problems = Vec::new();
        let want = plain_view(&model);
        let got = engine_view(&fx.union, &mut problems);
        for (p, w) in &want {
            match got.get(p) {
                None => problems.push(format!(
                    "{p}: missing from the union, model has {:?}",
                    w.desc
                )),
                Some(g) if (&g.desc, g.perm, &g.xattrs) != (&w.desc, w.perm, &w.xattrs) => problems
                    .push(format!(
                        "{p}: union {:?} {:o} {:?}, model {:?} {:o} {:?}",
                        g.desc, g.perm, g.xattrs, w.desc, w.perm, w.xattrs
                    )),
                Some(_) => {}
            }
        }
        for (p, g) in &got {
            if !want.contains_key(p) {
                problems.push(format!(
                    "{p}: in the union ({:?}) but not in the model",
                    g.desc
                ));
            }
        }
        // One model inode ↔ one union number.
        let mut union_to_model: HashMap<u64, (u64, &str)> = HashMap::new();
        let mut model_to_union: HashMap<u64, (u64, &str)> = HashMap::new();
        for (p, g) in &got {
            let Some(w) = want.get(p) else { continue };
            if let Some((m, q)) = union_to_model.insert(g.ino, (w.ino, p))
                && m != w.ino
            {
                problems.push(format!(
                    "{p} and {q}: distinct files share st_ino {:#x}",
                    g.ino
                ));
            }
            if let Some((x, q)) = model_to_union.insert(w.ino, (g.ino, p))
                && x != g.ino
                && hardlink_ino_findings.is_empty()
            {
                hardlink_ino_findings.push(format!(
                    "seed {seed} after op {n} ({:?}): hard links {p} and {q} have st_ino {:#x} and {x:#x}",
                    history.last(),
                    g.ino
                ));
            }
        }
        check_upper_format(fx.upper(), None, &mut problems);
        let left = fx.workdir_leftovers();
        if !left.is_empty() {
            problems.push(format!("workdir not empty: {left:?}"));
        }
        if !problems.is_empty() {
            let recent = history.len().saturating_sub(25);
            return Err(format!(
                "diverged after {n} ops\n{layout}\nlast ops (from #{recent}):\n  {}\nproblems:\n  {}",
                history[recent..].join("\n  "),
                problems.join("\n  ")
            ));
        }
        if n == ops {
            break;
        }
        let op = loop {
            let op = random_op(&mut rng, &want, n);
            if op_is_safe(&want, &op) {
                break op;
            }
        };
        let forget = rng.chance(50);
        let m = model_apply(&model, &op);
        let e = engine_apply(&fx.union, &op, forget);
        history.push(format!("#{n} {op:?} -> model {m:?}, union {e:?}"));
        if m != e {
            let recent = history.len().saturating_sub(25);
            return Err(format!(
                "op #{n} {op:?}: model {m:?}, union {e:?}\n{layout}\nlast ops (from #{recent}):\n  {}",
                history[recent..].join("\n  ")
            ));
        }
    }
    for (p, before) in fx.lowers.iter().zip(lowers_before) {
        if disk_snapshot(p) != before {
            return Err(format!("lower {} changed\n{layout}", p.display()));
        }
    }
    match hardlink_ino_findings.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "hard links do not share st_ino: {}",
            hardlink_ino_findings.join("\n")
        )),
    }
}

/// 8 seeds × 300 operations, the engine's merged view compared with a plain
/// directory after every one; seeds run on two threads.
#[test]
fn random_ops_match_a_plain_directory() {
    let seeds: Vec<u64> = (1..=8).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = seeds
            .chunks(4)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|&seed| {
                            run_random(seed, 300)
                                .err()
                                .map(|e| format!("seed {seed}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec!["a worker panicked".to_string()])
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} seeds diverged from the plain-directory model:\n\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n\n")
    );
}

/// A second engine over the same layers: what a remount sees.
fn reopen(fx: &Fixture) -> Union {
    use fimfs::layer::{Layer, Stack, Workdir};
    let open = |p: &Path| Layer::open(p).unwrap_or_else(|e| panic!("Layer::open: {e}"));
    let upper = fx.upper.as_deref().map(open);
    let stack = Stack::new(upper, fx.lowers.iter().map(|p| open(p)).collect());
    let work = fx.tmp.path().join("work").join("2");
    let work = Workdir::open(&work).unwrap_or_else(|e| panic!("Workdir::open: {e}"));
    Union::new(stack, Some(work), Options::default())
}

/// The upper carries no mark of fimfs (the kernel overlay would list it), yet
/// numbers hold: a copy-up keeps its lower entry's number in the session and
/// after a remount; a file renamed away keeps its number in the session; a file
/// made at a name a deleted or renamed lower file had takes a fresh number in
/// the session (the kernel may still hold the old one) and, after a remount, the
/// number of the lower entry it hides, which no other live entry has.
#[test]
fn numbers_hold_without_marks_across_a_remount() {
    let fx = Fixture::new(
        "ino-nomark",
        &["f a A\nf b B\nf c C\nf d D\nf e E"],
        Some(""),
        Options::default(),
    );
    let num = |u: &Union, p: &str| -> u64 {
        let mut l = Lookups::new(u);
        let i = l.ino(p).unwrap_or_else(|e| panic!("lookup {p}: {e}"));
        u.getattr(i)
            .unwrap_or_else(|e| panic!("getattr {p}: {e}"))
            .ino
    };
    let u = &fx.union;
    let orig: BTreeMap<&str, u64> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|p| (*p, num(u, p)))
        .collect();
    for line in [
        "append a Z",
        "chmod b 600",
        "append c Z",
        "rename c moved",
        "unlink d",
        "create d new",
        "create tmp T",
        "rename tmp e",
    ] {
        let (op, want) = parse_op(line);
        assert_eq!(engine_apply(u, &op, true), want, "{line}");
    }
    // Every entry once, distinct numbers (`check_view`).
    let tree = parse_expect("f a AZ\nf b B\nf d new\nf e T\nf moved CZ");
    let mut problems = Vec::new();
    let view = engine_view(u, &mut problems);
    check_view(&view, &tree, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(num(u, "a"), orig["a"], "copy-up by a write");
    assert_eq!(num(u, "b"), orig["b"], "copy-up by chmod");
    assert_eq!(num(u, "moved"), orig["c"], "renamed copy-up, same session");
    for p in ["d", "e"] {
        assert!(
            view[p].ino != orig[p],
            "{p}: new file took the deleted one's number"
        );
    }
    let upper = fx.upper();
    for (path, x) in disk_snapshot(upper)
        .iter()
        .flat_map(|(p, e)| e.xattrs.keys().map(move |k| (p.clone(), k.clone())))
    {
        assert!(
            !x.contains("fimfs"),
            "{path}: fimfs wrote {x} into the upper"
        );
    }

    let again = reopen(&fx);
    let mut problems = Vec::new();
    let view2 = engine_view(&again, &mut problems);
    check_view(&view2, &tree, &mut problems);
    assert!(problems.is_empty(), "after a remount: {problems:#?}");
    assert_eq!(view2["a"].ino, view["a"].ino, "a: number after a remount");
    assert_eq!(view2["b"].ino, view["b"].ino, "b: number after a remount");
    assert_eq!(view2["d"].ino, orig["d"], "d hides the old d: its number");
    assert_eq!(view2["e"].ino, orig["e"], "e hides the old e: its number");
}

//! The engine's table runner, shared by the `engine_*` tests: a case is lower
//! layers (and an optional upper) in the fixture language, engine operations
//! written `verb args… [=> ERRNO]`, the merged view expected afterwards, lookups
//! that must fail, merged directories, inode numbers that must (or must not)
//! survive, and the upper on disk.
//!
//! Checks made for every case: `d_ino` equals `st_ino`, distinct entries have
//! distinct numbers (hard links share one), numbers are stable across lookups
//! and forgets, overlay-private xattrs never show, the workdir is empty after
//! every operation, the lowers never change, and what the engine writes to the
//! upper follows SPEC §2.
//!
//! Moved here verbatim from `engine_union.rs` (only `pub` added), so that an
//! engine API change is made once, in [`engine_apply`].
use super::{Fixture, Lookups, engine_view, errno_named};
use crate::common::*;
use fimfs::sys::Errno;
use fimfs::union::{Caller, Ino, Make, Options, ROOT_INO, SetAttr, Union};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

pub const ROOT: Caller = Caller { uid: 0, gid: 0 };

// =================================================================================
// Operations

/// One engine operation, as written in the tables (`verb args… [=> ERRNO]`).
#[derive(Debug, Clone)]
pub enum Op {
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

pub fn parse_op(line: &str) -> (Op, Result<(), Errno>) {
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

pub fn pwrite_all(fd: std::os::fd::BorrowedFd<'_>, data: &[u8], off: u64) -> Result<(), Errno> {
    let mut done = 0;
    while done < data.len() {
        done += nix::sys::uio::pwrite(fd, &data[done..], (off + done as u64) as i64)?;
    }
    Ok(())
}

/// Applies `op` to the engine the way the kernel would drive it: every path
/// component looked up first (the last one too, when it exists), the lookups
/// forgotten afterwards when `forget`.
pub fn engine_apply(u: &Union, op: &Op, forget: bool) -> Result<(), Errno> {
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
            let made = u.make(d, n.as_bytes(), Make::Dir { mode: 0o755 }, ROOT)?;
            l.hold(made.ino);
        }
        Op::Create(p, content) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let made = u.create(d, n.as_bytes(), (0o644, libc::O_WRONLY), ROOT)?;
            l.hold(made.entry.ino);
            let fd = made.opened.file.fd().ok_or(Errno::EIO)?;
            pwrite_all(fd, content.as_bytes(), 0)?;
        }
        Op::Symlink(p, target) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let how = Make::Symlink {
                target: target.as_bytes().to_vec(),
            };
            let made = u.make(d, n.as_bytes(), how, ROOT)?;
            l.hold(made.ino);
        }
        Op::Mkfifo(p) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let how = Make::Node {
                mode: libc::S_IFIFO | 0o644,
                rdev: 0,
            };
            let made = u.make(d, n.as_bytes(), how, ROOT)?;
            l.hold(made.ino);
        }
        Op::Mkchr(p, major, minor) => {
            touch(&mut l, p);
            let (d, n) = l.parent(p)?;
            let how = Make::Node {
                mode: libc::S_IFCHR | 0o644,
                rdev: nix::sys::stat::makedev(*major, *minor),
            };
            let made = u.make(d, n.as_bytes(), how, ROOT)?;
            l.hold(made.ino);
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
            let made = u.link(ino, d, n.as_bytes())?;
            l.hold(made.ino);
        }
        Op::Write(p, c) => {
            let ino = l.ino(p)?;
            let opened = u.open(ino, libc::O_WRONLY | libc::O_TRUNC)?;
            let fd = opened.file.fd().ok_or(Errno::EBADF)?;
            pwrite_all(fd, c.as_bytes(), 0)?;
        }
        Op::Append(p, c) => {
            let ino = l.ino(p)?;
            let opened = u.open(ino, libc::O_WRONLY)?;
            let fd = opened.file.fd().ok_or(Errno::EBADF)?;
            let size = u.getattr(ino)?.size;
            pwrite_all(fd, c.as_bytes(), size)?;
        }
        Op::Pwrite(p, off, c) => {
            let ino = l.ino(p)?;
            let opened = u.open(ino, libc::O_RDWR)?;
            let fd = opened.file.fd().ok_or(Errno::EBADF)?;
            pwrite_all(fd, c.as_bytes(), *off)?;
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
pub struct Expect {
    pub tree: BTreeMap<String, String>,
    pub perms: BTreeMap<String, u32>,
    pub xattrs: BTreeMap<String, BTreeMap<String, String>>,
    pub same: Vec<(String, String)>,
}

pub fn parse_expect(spec: &str) -> Expect {
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
pub fn check_view(view: &View, e: &Expect, problems: &mut Vec<String>) {
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
pub fn check_disk(upper: &Path, spec: &str, problems: &mut Vec<String>) {
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
pub enum Upper {
    /// Read-only union only (every op must fail with what it says).
    None,
    /// Twice: read-only, and over an empty upper that must stay empty (reads
    /// never copy up).
    Both,
    /// Over an upper built from this spec.
    Spec(&'static str),
}

#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    /// Lower layer specs, top-most first.
    pub lowers: &'static [&'static str],
    pub upper: Upper,
    pub ops: &'static [&'static str],
    /// The merged tree after the ops (see [`parse_expect`]).
    pub tree: &'static str,
    /// Paths whose lookup must fail: `PATH` (ENOENT) or `PATH ERRNO`.
    pub absent: &'static [&'static str],
    /// Directories reported with `st_nlink` 1 (merged); `""` is the root. Every
    /// other directory must report at least 2.
    pub merged: &'static [&'static str],
    /// Paths whose `st_ino` must be the same before and after the ops.
    pub keep_ino: &'static [&'static str],
    /// Paths that name a different file after the ops: their `st_ino` must differ.
    pub new_ino: &'static [&'static str],
    /// The upper on disk afterwards (see [`check_disk`]).
    pub disk: &'static str,
}

pub const CASE: Case = Case {
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

/// Runs one case over one union (its lowers packed into images with
/// `images`); returns its problems.
pub fn run_case(c: &Case, with_upper: Option<&str>, tag: &str, images: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let fx = match images {
        true => Fixture::over_images(tag, c.lowers, with_upper, Options::default()),
        false => Fixture::new(tag, c.lowers, with_upper, Options::default()),
    };
    let lowers_before: Vec<_> = fx.lowers.iter().map(|p| disk_snapshot(p)).collect();
    let upper_before = fx.upper.as_deref().map(disk_snapshot);
    let u = &fx.union;

    let ino_of = |p: &str| -> Option<Ino> {
        let mut l = Lookups::new(u);
        let ino = l.ino(p).ok()?;
        u.getattr(ino).ok().map(|a| a.ino)
    };
    let inos_before: Vec<Option<Ino>> = c.keep_ino.iter().map(|p| ino_of(p)).collect();
    let replaced_before: Vec<Option<Ino>> = c.new_ino.iter().map(|p| ino_of(p)).collect();

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
        check_remount(&fx, &view, &mut problems);
    }
    problems
}

/// A second engine over the same layers: what a remount sees.
pub fn reopen(fx: &Fixture) -> Union {
    fx.reopen_at(&fx.tmp.path().join("work").join("2"), Options::default())
}

/// What a remount shows: a second engine over the same layers must read the
/// upper as the first one shows it (contents, kinds, permissions, xattrs; not
/// inode numbers, which SPEC §3 lets a remount renumber).
fn check_remount(fx: &Fixture, view: &View, problems: &mut Vec<String>) {
    let fresh = reopen(fx);
    let again = engine_view(&fresh, problems);
    let paths: BTreeSet<&String> = view.keys().chain(again.keys()).collect();
    for path in paths {
        let short = |s: Option<&Seen>| s.map(|s| (s.desc.clone(), s.perm, s.xattrs.clone()));
        let (a, b) = (short(view.get(path)), short(again.get(path)));
        if a != b {
            problems.push(format!(
                "{path}: {a:?} in the session, {b:?} after a remount"
            ));
        }
    }
}

pub fn run_table(table: &[Case]) {
    run_table_on(table, false);
}

/// [`run_table`] with every case's lowers packed into DwarFS images: the
/// same union rules over the second kind of lower. Cases whose lowers set
/// xattrs other than markers are left out (an image keeps none; marker
/// xattrs become `.wh.` files when packed).
pub fn run_table_over_images(table: &[Case]) {
    let keeps_xattrs = |c: &&Case| {
        c.lowers
            .iter()
            .any(|l| l.lines().any(|line| line.starts_with("X ")))
    };
    let cases: Vec<Case> = table.iter().filter(|c| !keeps_xattrs(c)).cloned().collect();
    assert!(!cases.is_empty(), "no case of the table fits images");
    run_table_on(&cases, true);
}

fn run_table_on(table: &[Case], images: bool) {
    let mut failed = Vec::new();
    for (i, c) in table.iter().enumerate() {
        let runs: Vec<(Option<&str>, &str)> = match c.upper {
            Upper::None => vec![(None, "read-only")],
            Upper::Both => vec![(None, "read-only"), (Some(""), "empty upper")],
            Upper::Spec(s) => vec![(Some(s), "with upper")],
        };
        for (upper, how) in runs {
            let problems = run_case(c, upper, &format!("case{i}"), images);
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

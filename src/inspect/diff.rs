//! `fimfs diff`: what an upper changes, one line per path.
//!
//! - `D`: a whiteout. With the lowers, only where it hides something.
//! - `O`: an opaque directory (nothing below it shows); what it holds is
//!   listed as `A`.
//! - `A`/`M`: an entry that is new, or that replaces one the lowers have.
//!   With `--lowers` this is decided by resolving the name in the lowers
//!   (their whiteouts and opaque directories count). Without them, a
//!   non-directory is `M` when it carries a copy-up mark (the kernel
//!   overlay's `overlay.origin`, or `user.fimfs.origin` that fimfs wrote
//!   before it stopped marking the upper), else `A`.
//! - Directories: with `--lowers`, `A` when the lowers have nothing there,
//!   `M` when they have a non-directory there or one with another mode or
//!   owner; a directory that merely holds changes is not listed. Without
//!   `--lowers` only opaque directories are listed: an upper directory is
//!   new or a copy of a lower one, and only the lowers can tell which.
use super::scan::{self, Change, Item, Visitor};
use super::{Error, json_str, quote, type_name};
use crate::host::paths::absolute;
use crate::image::BlockCache;
use crate::image::source;
use crate::layer::marker::Probe;
use crate::layer::{Dir, Layer, Lower as LowerLayer};
use crate::mount::open_lowers;
use crate::sys::{self, Errno};
use crate::union::marker;
use std::fmt::Write as _;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Added,
    Modified,
    Deleted,
    Opaque,
}

impl Status {
    pub fn letter(self) -> char {
        match self {
            Status::Added => 'A',
            Status::Modified => 'M',
            Status::Deleted => 'D',
            Status::Opaque => 'O',
        }
    }
}

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub status: Status,
    /// Relative to the upper's root; empty for the root itself.
    pub path: Vec<u8>,
    /// `file`, `dir`, `symlink`, … of the upper entry; for `D`, of the
    /// deleted entry when the lowers are known, else `whiteout`.
    pub kind: &'static str,
}

/// What the lowers hold at one directory of the walk.
enum Below {
    /// No lowers given.
    Unknown,
    /// The lowers' directories that merge here, top-most first, each with
    /// the index of its lower (empty: nothing below shows here).
    Dirs(Vec<(usize, Dir)>),
}

/// What the lowers hold at one name.
enum Lower {
    /// No lowers given.
    Unknown,
    /// Nothing (or a whiteout) shows there.
    Absent,
    /// The winning entry, and for a directory the lower directories that
    /// merge into it, top-most first.
    Found(libc::stat, Vec<(usize, Dir)>),
}

/// Resolves `name` in the lowers' directories `dirs`.
fn find_below(
    lowers: &[Box<dyn LowerLayer>],
    dirs: &[(usize, Dir)],
    name: &[u8],
) -> sys::Result<Lower> {
    let mut found: Option<libc::stat> = None;
    let mut sub = Vec::new();
    for (i, d) in dirs {
        let layer = lowers.get(*i).ok_or(Errno::EIO)?;
        let st = match layer.probe(d, name, true)? {
            Probe::Absent => continue,
            Probe::Whiteout => break,
            Probe::Entry(st) => st,
        };
        found.get_or_insert(st);
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            // A non-directory wins, or ends the merge below a directory.
            break;
        }
        let dir = layer.open_dir(d, name)?;
        let opaque = layer.marks(&dir).opaque;
        sub.push((*i, dir));
        if opaque {
            break;
        }
    }
    Ok(match found {
        Some(st) => Lower::Found(st, sub),
        None => Lower::Absent,
    })
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

struct Differ {
    lowers: Vec<Box<dyn LowerLayer>>,
    below: Vec<Below>,
    root_below: Option<Below>,
    lines: Vec<Line>,
}

impl Differ {
    fn lookup(&self, item: &Item<'_>) -> Result<Lower, Error> {
        match self.below.last() {
            Some(Below::Dirs(ds)) => {
                find_below(&self.lowers, ds, item.name()).map_err(|e| lower_error(item.path, e))
            }
            _ => Ok(Lower::Unknown),
        }
    }

    fn push(&mut self, status: Status, item: &Item<'_>, kind: &'static str) {
        self.lines.push(Line {
            status,
            path: item.path.to_vec(),
            kind,
        });
    }
}

fn lower_error(path: &[u8], e: Errno) -> Error {
    Error::msg(format!(
        "cannot read the lowers at {}: {}",
        quote(path),
        e.desc()
    ))
}

impl Visitor for Differ {
    fn enter(&mut self, item: &Item<'_>, _fd: BorrowedFd<'_>) -> Result<(), Error> {
        let opaque = matches!(item.change, Change::Dir { opaque: true });
        if opaque {
            self.push(Status::Opaque, item, "dir");
            self.below.push(Below::Dirs(Vec::new()));
            return Ok(());
        }
        if item.path.is_empty() {
            let b = self.root_below.take().unwrap_or(Below::Unknown);
            self.below.push(b);
            return Ok(());
        }
        let next = match self.lookup(item)? {
            Lower::Unknown => Below::Unknown,
            Lower::Absent => {
                self.push(Status::Added, item, "dir");
                Below::Dirs(Vec::new())
            }
            Lower::Found(st, sub) if is_dir(&st) => {
                let meta = |s: &libc::stat| (s.st_mode & 0o7777, s.st_uid, s.st_gid);
                if meta(&st) != meta(item.st) {
                    self.push(Status::Modified, item, "dir");
                }
                Below::Dirs(sub)
            }
            Lower::Found(..) => {
                self.push(Status::Modified, item, "dir");
                Below::Dirs(Vec::new())
            }
        };
        self.below.push(next);
        Ok(())
    }

    fn leave(&mut self, _item: &Item<'_>, _fd: BorrowedFd<'_>) -> Result<(), Error> {
        self.below.pop();
        Ok(())
    }

    fn entry(&mut self, item: &Item<'_>) -> Result<(), Error> {
        let below = self.lookup(item)?;
        match (item.change, below) {
            (Change::Whiteout, Lower::Unknown) => self.push(Status::Deleted, item, "whiteout"),
            (Change::Whiteout, Lower::Found(st, _)) => {
                self.push(Status::Deleted, item, type_name(st.st_mode))
            }
            (Change::Whiteout, Lower::Absent) => {}
            (_, Lower::Unknown) => {
                let copied = marker::origin(item.dir, item.real) != marker::Origin::None;
                let status = if copied {
                    Status::Modified
                } else {
                    Status::Added
                };
                self.push(status, item, type_name(item.st.st_mode));
            }
            (_, Lower::Found(..)) => self.push(Status::Modified, item, type_name(item.st.st_mode)),
            (_, Lower::Absent) => self.push(Status::Added, item, type_name(item.st.st_mode)),
        }
        Ok(())
    }
}

/// The changes `upper` makes, optionally over `lowers` (top-most first;
/// directories, images, FlatImage binaries, as `fimfs mount` takes them).
pub fn diff(upper: &Path, lowers: Option<&[PathBuf]>) -> Result<Vec<Line>, String> {
    let up = Layer::open(upper).map_err(|e| format!("upper directory {e}"))?;
    let mut opened = Vec::new();
    let root_below = match lowers {
        None => Below::Unknown,
        Some(ls) => {
            let mut sources = Vec::new();
            for l in ls {
                let abs = absolute(l).map_err(|e| e.to_string())?;
                sources.extend(source::resolve(&abs).map_err(|e| format!("lower {e}"))?);
            }
            // Only the metadata is read: a small cache is plenty.
            opened = open_lowers(&sources, &BlockCache::new(1 << 20), None)
                .map_err(|e| e.to_string())?;
            let mut dirs = Vec::new();
            for (i, l) in opened.iter().enumerate() {
                let root = l
                    .root()
                    .map_err(|e| format!("lower {}: {}", l.path().display(), e.desc()))?;
                dirs.push((i, root));
            }
            Below::Dirs(dirs)
        }
    };
    let mut d = Differ {
        lowers: opened,
        below: Vec::new(),
        root_below: Some(root_below),
        lines: Vec::new(),
    };
    scan::walk(up.root(), &mut d).map_err(|e| e.render(upper))?;
    Ok(d.lines)
}

fn shown_path(l: &Line) -> Vec<u8> {
    let mut p = if l.path.is_empty() {
        b".".to_vec()
    } else {
        l.path.clone()
    };
    if l.kind == "dir" {
        p.push(b'/');
    }
    p
}

/// `X path` lines; directories end with `/`, the root is `./`.
pub fn render_text(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(out, "{} {}", l.status.letter(), quote(&shown_path(l)));
    }
    out
}

/// A JSON array of `{"status","path","type"}` objects, one per line. A
/// path that is not UTF-8 is given lossily in `path` and exactly, as hex
/// of its bytes, in `path_hex`.
pub fn render_json(lines: &[Line]) -> String {
    let mut out = String::from("[");
    for (i, l) in lines.iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        let path = if l.path.is_empty() { b"." } else { &l.path[..] };
        let _ = write!(
            out,
            "{{\"status\":\"{}\",\"path\":{},\"type\":\"{}\"",
            l.status.letter(),
            json_str(&String::from_utf8_lossy(path)),
            l.kind
        );
        if std::str::from_utf8(path).is_err() {
            let hex: String = path.iter().map(|b| format!("{b:02x}")).collect();
            let _ = write!(out, ",\"path_hex\":\"{hex}\"");
        }
        out.push('}');
    }
    out.push_str(if lines.is_empty() { "]\n" } else { "\n]\n" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(status: Status, path: &[u8], kind: &'static str) -> Line {
        Line {
            status,
            path: path.to_vec(),
            kind,
        }
    }

    #[test]
    fn text() {
        let lines = [
            line(Status::Modified, b"etc/hosts", "file"),
            line(Status::Opaque, b"var/cache", "dir"),
            line(Status::Deleted, b"old", "whiteout"),
            line(Status::Added, b"n\xff", "file"),
            line(Status::Opaque, b"", "dir"),
        ];
        assert_eq!(
            render_text(&lines),
            "M etc/hosts\nO var/cache/\nD old\nA \"n\\377\"\nO ./\n"
        );
    }

    #[test]
    fn json() {
        assert_eq!(render_json(&[]), "[]\n");
        let lines = [
            line(Status::Added, b"a \"b\"", "file"),
            line(Status::Deleted, b"\xff", "whiteout"),
        ];
        assert_eq!(
            render_json(&lines),
            "[\n  {\"status\":\"A\",\"path\":\"a \\\"b\\\"\",\"type\":\"file\"},\n  \
             {\"status\":\"D\",\"path\":\"\u{fffd}\",\"type\":\"whiteout\",\"path_hex\":\"ff\"}\n]\n"
        );
    }
}

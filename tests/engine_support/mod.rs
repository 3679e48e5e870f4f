//! Helpers for the engine-level tests: no FUSE, no mount, real directories in a
//! scratch dir, everything in milliseconds.
//!
//! - [`Fixture`]: lowers (top-most first), an optional upper, a workdir and the
//!   [`Union`] over them; the lowers as directories, or packed into DwarFS
//!   images ([`Fixture::over_images`]).
//! - [`engine_view`]: the merged tree as the engine shows it (`list_dir`, `lookup`,
//!   `getattr`, `open`+`pread`, `readlink`, `listxattr`), checking on the way that
//!   `d_ino` equals `st_ino`, that the readdir kind is the lookup kind and that
//!   `getattr` agrees with `lookup`.
//! - [`Lookups`]: resolves paths through counted lookups and forgets them on drop.
//! - [`table`]: the table runner the `engine_*` tests share ([`run_table`],
//!   [`engine_apply`]).
//!
//! Only what calls the engine lives here; scratch directories, the fixture
//! language, the tree model and the upper's format check are `tests/common`'s.
#![allow(dead_code)]

pub mod table;
#[allow(unused_imports)]
pub use table::*;

use crate::common::{Seen, TempDir, View, build_layer};
use fimfs::layer::{ImageLayer, Layer, Lower, Stack, Workdir};
use fimfs::sys::Errno;
use fimfs::union::{Ino, Kind, Options, ROOT_INO, Union};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------
// The union under test

/// Lowers, an optional upper with its workdir, and the union over them.
pub struct Fixture {
    pub tmp: TempDir,
    pub lowers: Vec<PathBuf>,
    /// The lowers packed into images, served in their place (empty when
    /// the directories are served).
    pub images: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub union: Union,
}

impl Fixture {
    /// `lowers` top-most first; `upper: None` gives a read-only union.
    pub fn new(tag: &str, lowers: &[&str], upper: Option<&str>, opts: Options) -> Fixture {
        Fixture::build(tag, lowers, upper, opts, false)
    }

    /// [`Fixture::new`] with each lower packed into a DwarFS image (zstd,
    /// small blocks) that the union reads instead of the directory. An
    /// image keeps no xattrs: xattr markers become `.wh.` files
    /// (`common::pack`), other xattrs are lost.
    pub fn over_images(tag: &str, lowers: &[&str], upper: Option<&str>, opts: Options) -> Fixture {
        Fixture::build(tag, lowers, upper, opts, true)
    }

    fn build(
        tag: &str,
        lowers: &[&str],
        upper: Option<&str>,
        opts: Options,
        images: bool,
    ) -> Fixture {
        let tmp = TempDir::new(tag);
        let mut lower_paths = Vec::new();
        for (i, spec) in lowers.iter().enumerate() {
            let p = tmp.path().join(format!("lower{}", i + 1));
            build_layer(&p, spec);
            lower_paths.push(p);
        }
        let upper_path = upper.map(|spec| {
            let p = tmp.path().join("upper");
            build_layer(&p, spec);
            p
        });
        let work_path = upper_path
            .as_ref()
            .map(|_| tmp.path().join("work").join("1"));
        let image_paths = match images {
            true => pack_images(&tmp, &lower_paths),
            false => Vec::new(),
        };
        let union = Self::open_union(
            &lower_paths,
            &image_paths,
            upper_path.as_deref(),
            work_path.as_deref(),
            opts,
        );
        Fixture {
            tmp,
            lowers: lower_paths,
            images: image_paths,
            upper: upper_path,
            work: work_path,
            union,
        }
    }

    fn open_union(
        lowers: &[PathBuf],
        images: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        opts: Options,
    ) -> Union {
        let open = |p: &Path| Layer::open(p).unwrap_or_else(|e| panic!("Layer::open: {e}"));
        let lowers: Vec<Box<dyn Lower>> = match images.is_empty() {
            true => lowers.iter().map(|p| Box::new(open(p)) as _).collect(),
            false => open_images(images),
        };
        let stack = Stack::with_lowers(upper.map(open), lowers);
        let work = work.map(|w| Workdir::open(w).unwrap_or_else(|e| panic!("Workdir::open: {e}")));
        Union::new(stack, work, opts)
    }

    /// A second engine over the same layers (what a remount sees), with
    /// its workdir at `work`.
    pub fn reopen_at(&self, work: &Path, opts: Options) -> Union {
        Self::open_union(
            &self.lowers,
            &self.images,
            self.upper.as_deref(),
            Some(work),
            opts,
        )
    }

    pub fn upper(&self) -> &Path {
        self.upper.as_deref().expect("this fixture has an upper")
    }

    /// Names left in the workdir (staging must never leave anything behind).
    pub fn workdir_leftovers(&self) -> Vec<String> {
        let Some(w) = &self.work else {
            return Vec::new();
        };
        match fs::read_dir(w) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) => vec![format!("<cannot read workdir: {e}>")],
        }
    }
}

/// Packs each lower directory into an image beside it.
fn pack_images(tmp: &TempDir, lowers: &[PathBuf]) -> Vec<PathBuf> {
    use crate::common::dwarfs::{Layout, ZSTD};
    let layout = Layout {
        data_codec: ZSTD,
        meta_codec: ZSTD,
        ..Layout::default()
    };
    lowers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let img = tmp.path().join(format!("lower{}.dwarfs", i + 1));
            fs::write(&img, crate::common::pack::pack_dir(l, 4096, layout))
                .unwrap_or_else(|e| panic!("write {}: {e}", img.display()));
            img
        })
        .collect()
}

/// The images at `paths` as lowers sharing one block cache.
fn open_images(paths: &[PathBuf]) -> Vec<Box<dyn Lower>> {
    let cache = fimfs::image::BlockCache::new(8 << 20);
    paths
        .iter()
        .map(|p| {
            let file = std::sync::Arc::new(fs::File::open(p).unwrap());
            let image = fimfs::image::Image::open(file, 0, None, p)
                .unwrap_or_else(|e| panic!("Image::open {}: {e}", p.display()));
            let layer = ImageLayer::new(image, &cache)
                .unwrap_or_else(|e| panic!("ImageLayer {}: {e}", p.display()));
            Box::new(layer) as Box<dyn Lower>
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Path resolution through counted lookups

/// Resolves paths through `Union::lookup`, remembering every lookup it made so
/// that they are all forgotten on drop (as the kernel would, eventually).
pub struct Lookups<'a> {
    pub u: &'a Union,
    held: Vec<Ino>,
    /// When false, lookups are never forgotten (a kernel with an endless cache).
    pub forget_on_drop: bool,
}

impl<'a> Lookups<'a> {
    pub fn new(u: &'a Union) -> Lookups<'a> {
        Lookups {
            u,
            held: Vec::new(),
            forget_on_drop: true,
        }
    }

    /// Counts one more lookup of `ino` made on this session's behalf.
    pub fn hold(&mut self, ino: Ino) {
        self.held.push(ino);
    }

    /// The node number of `path` (`""` or `"."` is the root).
    pub fn ino(&mut self, path: &str) -> Result<Ino, Errno> {
        let mut cur = ROOT_INO;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let node = self.u.lookup(cur, comp.as_bytes())?.ino;
            self.held.push(node);
            cur = node;
        }
        Ok(cur)
    }

    /// The node number of `path`'s parent directory and `path`'s last name.
    pub fn parent<'p>(&mut self, path: &'p str) -> Result<(Ino, &'p str), Errno> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path),
        };
        Ok((self.ino(dir)?, name))
    }
}

impl Drop for Lookups<'_> {
    fn drop(&mut self) {
        if self.forget_on_drop {
            for ino in self.held.drain(..) {
                self.u.forget(ino, 1);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The merged view

fn kind_letter(k: Kind) -> &'static str {
    match k {
        Kind::File => "f",
        Kind::Dir => "d",
        Kind::Symlink => "l",
        Kind::Fifo => "p",
        Kind::Socket => "s",
        Kind::Char => "c",
        Kind::Block => "b",
    }
}

/// Reads the whole file `ino` through `open` + `File::read_at`.
pub fn read_through(u: &Union, ino: Ino) -> Result<Vec<u8>, Errno> {
    let file = u.open(ino, libc::O_RDONLY)?.file;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = file.read_at(out.len() as u64, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Visible xattrs of `ino` through `listxattr` + `getxattr`.
pub fn xattrs_through(
    u: &Union,
    ino: Ino,
    problems: &mut Vec<String>,
    path: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let list = match u.listxattr(ino) {
        Ok(l) => l,
        Err(e) => {
            problems.push(format!("{path}: listxattr: {e}"));
            return out;
        }
    };
    for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(n).into_owned();
        match u.getxattr(ino, n) {
            Ok(v) => {
                out.insert(name, String::from_utf8_lossy(&v).into_owned());
            }
            Err(e) => problems.push(format!("{path}: getxattr {name} (listed): {e}")),
        }
    }
    out
}

fn describe(
    u: &Union,
    node: Ino,
    kind: Kind,
    rdev: u64,
    path: &str,
    problems: &mut Vec<String>,
) -> String {
    match kind {
        Kind::File => match read_through(u, node) {
            Ok(data) => format!("f {}", String::from_utf8_lossy(&data))
                .trim_end()
                .to_string(),
            Err(e) => {
                problems.push(format!("{path}: open+pread: {e}"));
                "f <unreadable>".into()
            }
        },
        Kind::Symlink => match u.readlink(node) {
            Ok(t) => format!("l {}", String::from_utf8_lossy(&t)),
            Err(e) => {
                problems.push(format!("{path}: readlink: {e}"));
                "l <unreadable>".into()
            }
        },
        Kind::Char => format!(
            "c {}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        ),
        k => kind_letter(k).to_string(),
    }
}

/// The merged tree below the root as the engine shows it. Every lookup made is
/// forgotten again. Checks on the way (pushed to `problems`): readdir's `d_ino`
/// and kind equal lookup's `st_ino` and kind, and `getattr` agrees with `lookup`.
pub fn engine_view(u: &Union, problems: &mut Vec<String>) -> View {
    let mut view = View::new();
    walk(u, ROOT_INO, "", &mut view, problems);
    view
}

fn walk(u: &Union, ino: Ino, prefix: &str, view: &mut View, problems: &mut Vec<String>) {
    let shown = if prefix.is_empty() { "/" } else { prefix };
    if let Err(e) = u.opendir(ino) {
        return problems.push(format!("{shown}: opendir: {e}"));
    }
    let entries = match u.list_dir(ino) {
        Ok(e) => e,
        Err(e) => return problems.push(format!("{shown}: list_dir: {e}")),
    };
    let mut names = std::collections::BTreeSet::new();
    for e in entries {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if !names.insert(name.clone()) {
            problems.push(format!("{path}: listed twice"));
            continue;
        }
        if name == "." || name == ".." {
            problems.push(format!("{shown}: list_dir returned {name:?}"));
            continue;
        }
        let (node, attr) = match u.lookup(ino, &e.name) {
            Ok(x) => (x.ino, x.attr),
            Err(Errno::ENOENT) => {
                view.insert(
                    path,
                    Seen {
                        desc: "?".into(),
                        perm: 0,
                        ino: e.ino.0,
                        nlink: 0,
                        xattrs: BTreeMap::new(),
                    },
                );
                continue;
            }
            Err(err) => {
                problems.push(format!("{path}: listed, but lookup gives {err}"));
                continue;
            }
        };
        if attr.ino != e.ino {
            problems.push(format!(
                "{path}: readdir d_ino {:#x} != lookup st_ino {:#x}",
                e.ino, attr.ino
            ));
        }
        if attr.kind != e.kind {
            problems.push(format!(
                "{path}: readdir kind {:?} != lookup kind {:?}",
                e.kind, attr.kind
            ));
        }
        if attr.ino == ROOT_INO {
            problems.push(format!("{path}: has the root's inode number"));
        }
        match u.getattr(node) {
            Ok(a)
                if a.ino != attr.ino
                    || a.kind != attr.kind
                    || a.nlink != attr.nlink
                    || a.size != attr.size =>
            {
                problems.push(format!("{path}: getattr {a:?} != lookup {attr:?}"))
            }
            Ok(_) => {}
            Err(err) => problems.push(format!("{path}: getattr: {err}")),
        }
        let desc = describe(u, node, attr.kind, attr.rdev, &path, problems);
        let xattrs = xattrs_through(u, node, problems, &path);
        view.insert(
            path.clone(),
            Seen {
                desc,
                perm: attr.perm as u32,
                ino: attr.ino.0,
                nlink: attr.nlink,
                xattrs,
            },
        );
        if attr.kind == Kind::Dir {
            walk(u, node, &path, view, problems);
        }
        u.forget(node, 1);
    }
}

/// Parses an errno name as written in the test tables.
pub fn errno_named(name: &str) -> Errno {
    match name {
        "ENOENT" => Errno::ENOENT,
        "EEXIST" => Errno::EEXIST,
        "ENOTEMPTY" => Errno::ENOTEMPTY,
        "ENOTDIR" => Errno::ENOTDIR,
        "EISDIR" => Errno::EISDIR,
        "EPERM" => Errno::EPERM,
        "EROFS" => Errno::EROFS,
        "EINVAL" => Errno::EINVAL,
        "EXDEV" => Errno::EXDEV,
        "ENODATA" => Errno::ENODATA,
        "EACCES" => Errno::EACCES,
        "ENAMETOOLONG" => Errno::ENAMETOOLONG,
        other => panic!("unknown errno name {other:?} in a test table"),
    }
}

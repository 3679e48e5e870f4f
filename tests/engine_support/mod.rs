//! Helpers for the engine-level tests: no FUSE, no mount, real directories in a
//! scratch dir, everything in milliseconds.
//!
//! - [`TempDir`]: a scratch directory removed on drop.
//! - [`build_layer`]: builds one layer directory from a line-oriented spec:
//!
//!   | line                  | makes                                                       |
//!   |-----------------------|-------------------------------------------------------------|
//!   | `f PATH [CONTENT]`    | regular file (parents made as directories)                  |
//!   | `d PATH`              | directory                                                   |
//!   | `l PATH TARGET`       | symlink                                                     |
//!   | `p PATH`              | fifo                                                        |
//!   | `c PATH`              | character device 1/3 (a real device, not a whiteout)        |
//!   | `w PATH`              | whiteout: character device 0/0                              |
//!   | `W PATH`              | whiteout: a `.wh.NAME` file beside it                       |
//!   | `z PATH XATTR`        | whiteout: zero-size file carrying the xattr `XATTR`         |
//!   | `o PATH`              | opaque directory: `.wh..wh..opq` inside it                  |
//!   | `O PATH XATTR`        | opaque directory: `XATTR=y` on it                           |
//!   | `X PATH NAME VALUE`   | sets an xattr (`.` is the layer root)                       |
//!   | `m PATH MODE`         | chmod, octal                                                |
//!   | `t PATH SECS`         | atime and mtime                                             |
//!   | `u PATH UID GID`      | lchown                                                      |
//!   | `H PATH EXISTING`     | hard link                                                   |
//!
//! - [`Fixture`]: lowers (top-most first), an optional upper, a workdir and the
//!   [`Union`] over them.
//! - [`engine_view`]: the merged tree as the engine shows it (`list_dir`, `lookup`,
//!   `getattr`, `open`+`pread`, `readlink`, `listxattr`), checking on the way that
//!   `d_ino` equals `st_ino`, that the readdir kind is the lookup kind and that
//!   `getattr` agrees with `lookup`.
//! - [`Lookups`]: resolves paths through counted lookups and forgets them on drop.
//! - [`check_upper_format`], [`disk_snapshot`]: the upper's on-disk format.
#![allow(dead_code)]

use fimfs::layer::{Layer, Stack, Workdir};
use fimfs::sys::Errno;
use fimfs::union::node::Node;
use fimfs::union::{Kind, Options, ROOT_INO, Union};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

// ---------------------------------------------------------------------------------
// Scratch directories

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fimfs-eng-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------
// Raw xattrs (nix 0.29 has no wrappers)

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn last_errno() -> Errno {
    Errno::last()
}

/// `lsetxattr(path, name, value)`.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<(), Errno> {
    let (cp, cn) = (cpath(p), CString::new(name).expect("xattr name"));
    // SAFETY: valid NUL-terminated strings and a valid buffer of `value.len()` bytes.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

/// `lgetxattr(path, name)`.
pub fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, Errno> {
    let (cp, cn) = (cpath(p), CString::new(name).expect("xattr name"));
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid strings; `buf` is writable for its length.
    let r =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(last_errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `lremovexattr(path, name)`.
pub fn remove_xattr(p: &Path, name: &str) -> Result<(), Errno> {
    let (cp, cn) = (cpath(p), CString::new(name).expect("xattr name"));
    // SAFETY: valid NUL-terminated strings.
    let r = unsafe { libc::lremovexattr(cp.as_ptr(), cn.as_ptr()) };
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

/// Every xattr of `p` (not following a symlink), name → value.
pub fn all_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let cp = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid string; `buf` is writable for its length.
    let r = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let mut out = BTreeMap::new();
    if r <= 0 {
        return out;
    }
    buf.truncate(r as usize);
    for n in buf.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(n).into_owned();
        if let Ok(v) = get_xattr(p, &name) {
            out.insert(name, v);
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Layer builder

fn mkparents(p: &Path) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
    }
}

fn mknod(p: &Path, major: u64, minor: u64) {
    use nix::sys::stat::{Mode, SFlag, makedev};
    nix::sys::stat::mknod(
        p,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o644),
        makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

fn set_times(p: &Path, secs: i64) {
    use nix::sys::stat::UtimensatFlags;
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// The path of a spec line, relative to `root` (`.` is the root itself).
fn spec_path(root: &Path, rel: &str) -> PathBuf {
    if rel == "." {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// `unwrap` with the spec line in the message.
trait OrSpec<T> {
    fn or_spec(self, line: &str, root: &Path) -> T;
}

impl<T, E: std::fmt::Display> OrSpec<T> for Result<T, E> {
    fn or_spec(self, line: &str, root: &Path) -> T {
        self.unwrap_or_else(|e| panic!("layer spec {line:?} in {}: {e}", root.display()))
    }
}

/// Builds the layer described by `spec` (see the module docs) into `root`.
pub fn build_layer(root: &Path, spec: &str) {
    fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
    for line in spec.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut w = line.splitn(3, ' ');
        let (op, rel, rest) = (
            w.next().unwrap_or(""),
            w.next()
                .unwrap_or_else(|| panic!("spec line without a path: {line:?}")),
            w.next().unwrap_or(""),
        );
        let p = spec_path(root, rel);
        match op {
            "f" => {
                mkparents(&p);
                fs::write(&p, rest).or_spec(line, root);
            }
            "d" => fs::create_dir_all(&p).or_spec(line, root),
            "l" => {
                mkparents(&p);
                std::os::unix::fs::symlink(rest, &p).or_spec(line, root);
            }
            "p" => {
                mkparents(&p);
                nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .or_spec(line, root);
            }
            "c" => {
                mkparents(&p);
                mknod(&p, 1, 3);
            }
            "w" => {
                mkparents(&p);
                mknod(&p, 0, 0);
            }
            "W" => {
                mkparents(&p);
                let name = p.file_name().expect("whiteout name").as_bytes();
                let mut wh = b".wh.".to_vec();
                wh.extend_from_slice(name);
                let whp = p.with_file_name(std::ffi::OsStr::from_bytes(&wh));
                fs::write(&whp, b"").or_spec(line, root);
            }
            "z" => {
                mkparents(&p);
                fs::write(&p, b"").or_spec(line, root);
                set_xattr(&p, rest, b"y").or_spec(line, root);
            }
            "o" => {
                fs::create_dir_all(&p).or_spec(line, root);
                fs::write(p.join(".wh..wh..opq"), b"").or_spec(line, root);
            }
            "O" => {
                fs::create_dir_all(&p).or_spec(line, root);
                set_xattr(&p, rest, b"y").or_spec(line, root);
            }
            "X" => {
                let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
                set_xattr(&p, name, value.as_bytes()).or_spec(line, root);
            }
            "m" => {
                let mode = u32::from_str_radix(rest, 8).or_spec(line, root);
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).or_spec(line, root);
            }
            "t" => set_times(&p, rest.parse().or_spec(line, root)),
            "u" => {
                let (uid, gid) = rest.split_once(' ').expect("u PATH UID GID");
                std::os::unix::fs::lchown(
                    &p,
                    Some(uid.parse().or_spec(line, root)),
                    Some(gid.parse().or_spec(line, root)),
                )
                .or_spec(line, root);
            }
            "H" => {
                mkparents(&p);
                fs::hard_link(root.join(rest), &p).or_spec(line, root);
            }
            other => panic!("unknown layer spec op {other:?} in {line:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// The union under test

/// Lowers, an optional upper with its workdir, and the union over them.
pub struct Fixture {
    pub tmp: TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub union: Union,
}

impl Fixture {
    /// `lowers` top-most first; `upper: None` gives a read-only union.
    pub fn new(tag: &str, lowers: &[&str], upper: Option<&str>, opts: Options) -> Fixture {
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
        let union = Self::open_union(
            &lower_paths,
            upper_path.as_deref(),
            work_path.as_deref(),
            opts,
        );
        Fixture {
            tmp,
            lowers: lower_paths,
            upper: upper_path,
            work: work_path,
            union,
        }
    }

    fn open_union(
        lowers: &[PathBuf],
        upper: Option<&Path>,
        work: Option<&Path>,
        opts: Options,
    ) -> Union {
        let open = |p: &Path| Layer::open(p).unwrap_or_else(|e| panic!("Layer::open: {e}"));
        let stack = Stack::new(upper.map(open), lowers.iter().map(|p| open(p)).collect());
        let work = work.map(|w| Workdir::open(w).unwrap_or_else(|e| panic!("Workdir::open: {e}")));
        Union::new(stack, work, opts)
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

// ---------------------------------------------------------------------------------
// Path resolution through counted lookups

/// Resolves paths through `Union::lookup`, remembering every lookup it made so
/// that they are all forgotten on drop (as the kernel would, eventually).
pub struct Lookups<'a> {
    pub u: &'a Union,
    held: Vec<u64>,
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
    pub fn hold(&mut self, ino: u64) {
        self.held.push(ino);
    }

    /// The node number of `path` (`""` or `"."` is the root).
    pub fn ino(&mut self, path: &str) -> Result<u64, Errno> {
        let mut cur = ROOT_INO;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let (node, _) = self.u.lookup(cur, comp.as_bytes())?;
            self.held.push(node.ino);
            cur = node.ino;
        }
        Ok(cur)
    }

    /// The node number of `path`'s parent directory and `path`'s last name.
    pub fn parent<'p>(&mut self, path: &'p str) -> Result<(u64, &'p str), Errno> {
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

/// Reads the whole file `ino` through `open` + `pread`.
pub fn read_through(u: &Union, ino: u64) -> Result<Vec<u8>, Errno> {
    let (fd, _) = u.open(ino, libc::O_RDONLY)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = nix::sys::uio::pread(fd.as_fd(), &mut buf, out.len() as i64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Visible xattrs of `ino` through `listxattr` + `getxattr`.
pub fn xattrs_through(
    u: &Union,
    ino: u64,
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
    node: &Arc<Node>,
    kind: Kind,
    rdev: u64,
    path: &str,
    problems: &mut Vec<String>,
) -> String {
    match kind {
        Kind::File => match read_through(u, node.ino) {
            Ok(data) => format!("f {}", String::from_utf8_lossy(&data))
                .trim_end()
                .to_string(),
            Err(e) => {
                problems.push(format!("{path}: open+pread: {e}"));
                "f <unreadable>".into()
            }
        },
        Kind::Symlink => match u.readlink(node.ino) {
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

fn walk(u: &Union, ino: u64, prefix: &str, view: &mut View, problems: &mut Vec<String>) {
    let shown = if prefix.is_empty() { "/" } else { prefix };
    let dir = match u.opendir(ino) {
        Ok((n, _)) => n,
        Err(e) => return problems.push(format!("{shown}: opendir: {e}")),
    };
    let entries = match u.list_dir(&dir) {
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
            Ok(x) => x,
            Err(Errno::ENOENT) => {
                view.insert(
                    path,
                    Seen {
                        desc: "?".into(),
                        perm: 0,
                        ino: e.ino,
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
        match u.getattr(node.ino) {
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
        let desc = describe(u, &node, attr.kind, attr.rdev, &path, problems);
        let xattrs = xattrs_through(u, node.ino, problems, &path);
        view.insert(
            path.clone(),
            Seen {
                desc,
                perm: attr.perm as u32,
                ino: attr.ino,
                nlink: attr.nlink,
                xattrs,
            },
        );
        if attr.kind == Kind::Dir {
            walk(u, node.ino, &path, view, problems);
        }
        u.forget(node.ino, 1);
    }
}

/// The tree below `root` read straight from a plain directory, in the same format
/// as [`engine_view`] (`ino` is the real inode number, for hard-link grouping).
pub fn plain_view(root: &Path) -> View {
    let mut view = View::new();
    plain_walk(root, "", &mut view);
    view
}

fn plain_walk(dir: &Path, prefix: &str, view: &mut View) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for e in rd {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let p = e.path();
        let md = fs::symlink_metadata(&p).expect("lstat");
        let ft = md.file_type();
        let desc = if ft.is_file() {
            format!(
                "f {}",
                String::from_utf8_lossy(&fs::read(&p).expect("read"))
            )
            .trim_end()
            .to_string()
        } else if ft.is_dir() {
            "d".into()
        } else if ft.is_symlink() {
            format!("l {}", fs::read_link(&p).expect("readlink").display())
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
        };
        let xattrs = all_xattrs(&p)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        view.insert(
            path.clone(),
            Seen {
                desc,
                perm: md.mode() & 0o7777,
                ino: md.ino(),
                nlink: md.nlink() as u32,
                xattrs,
            },
        );
        if ft.is_dir() {
            plain_walk(&p, &path, view);
        }
    }
}

// ---------------------------------------------------------------------------------
// On-disk inspection

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

/// Every entry below `root` as it is on disk (markers included), path → entry.
pub fn disk_snapshot(root: &Path) -> BTreeMap<String, DiskEntry> {
    let mut out = BTreeMap::new();
    disk_walk(root, "", &mut out);
    out
}

fn disk_walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, DiskEntry>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let p = e.path();
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = md.file_type();
        let desc = if ft.is_file() {
            format!(
                "f {}",
                String::from_utf8_lossy(&fs::read(&p).unwrap_or_default())
            )
        } else if ft.is_dir() {
            "d".into()
        } else if ft.is_symlink() {
            format!(
                "l {}",
                fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if ft.is_char_device() {
            format!(
                "c {}:{}",
                nix::sys::stat::major(md.rdev()),
                nix::sys::stat::minor(md.rdev())
            )
        } else {
            format!("other {:o}", md.mode() & libc::S_IFMT)
        };
        out.insert(
            path.clone(),
            DiskEntry {
                desc,
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                ino: md.ino(),
                xattrs: all_xattrs(&p),
            },
        );
        if ft.is_dir() {
            disk_walk(&p, &path, out);
        }
    }
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

/// Is this on-disk entry a whiteout (any dialect but `.wh.` files)?
pub fn is_whiteout(e: &DiskEntry) -> bool {
    e.desc == "c 0:0"
        || (e.desc == "f " && WHITEOUT_XATTRS.iter().any(|x| e.xattrs.contains_key(*x)))
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
        let whiteout = is_whiteout(e) || name.starts_with(".wh.") && name != ".wh..wh..opq";
        let dir = parent_of(path);
        if whiteout && !dir.is_empty() && is_opaque(&snap, dir) {
            problems.push(format!(
                "upper/{path}: a whiteout inside the opaque directory {dir}"
            ));
        }
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

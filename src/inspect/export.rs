//! `fimfs export`: an upper written out as a layer any packer can store.
//!
//! Deletions become plain files: a whiteout (any dialect) becomes an empty
//! `.wh.NAME` file, an opaque directory gets an empty `.wh..wh..opq`, and
//! fimfs reads both in a lower. Everything else is copied with its mode,
//! owner (when the exporter may set it), times, symlink target, hard links
//! and xattrs; the overlay's own xattrs (`*.overlay.*`,
//! `user.fuseoverlayfs.*`, `user.fimfs.*`) are left out.
//!
//! Invariants: the output is built under `.NAME.fimfs-export-PID` next to
//! the target and renamed into place only when complete; on any error the
//! temporary is removed. The target must not exist, or be empty.
use super::scan::{self, Change, Item, Visitor, open_dir};
use super::tar::{self, Header};
use super::{Error, mounts, quote};
use crate::layer::{Layer, remove_tree};
use crate::sys::{self, Errno};
use crate::union::marker::{self, EXPORT_MARK};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the export goes.
#[derive(Debug, Clone)]
pub enum Target {
    Dir(PathBuf),
    Tar(PathBuf),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::Dir(p) | Target::Tar(p) => p,
        }
    }
}

/// Receives warnings (the export goes on).
pub type Warn<'a> = &'a mut dyn FnMut(String);

/// The non-private xattrs of `dir/name`, name → value. What cannot be
/// read is reported through `warn` and left out.
fn xattrs_of(
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: &[u8],
    warn: Warn<'_>,
) -> Vec<(CString, Vec<u8>)> {
    let list = match sys::llistxattr_at(dir, name) {
        Ok(l) => l,
        Err(Errno::EOPNOTSUPP) => return Vec::new(),
        Err(e) => {
            warn(format!("{}: cannot list xattrs: {}", quote(path), e.desc()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if marker::is_private_xattr(n) {
            continue;
        }
        let Ok(cn) = sys::cstr(n) else { continue };
        match sys::lgetxattr_at(dir, name, &cn) {
            Ok(v) => out.push((cn, v)),
            Err(e) => warn(format!(
                "{}: cannot read xattr {}: {}",
                quote(path),
                String::from_utf8_lossy(n),
                e.desc()
            )),
        }
    }
    out
}

/// `.wh.NAME`, refused when too long for a file name.
fn whiteout_name(item: &Item<'_>) -> Result<Vec<u8>, Error> {
    let mut wh = marker::WH_PREFIX.to_vec();
    wh.extend_from_slice(item.name());
    if wh.len() > 255 {
        return Err(Error {
            path: Some(item.path.to_vec()),
            msg: "a whiteout of a name longer than 251 bytes cannot be written as a .wh. file"
                .into(),
        });
    }
    Ok(wh)
}

/// Hard links: the first exported path of each upper inode with links.
#[derive(Default)]
struct Links(HashMap<(u64, u64), Vec<u8>>);

impl Links {
    /// The earlier path of this inode, or None (and it is remembered).
    fn seen(&mut self, item: &Item<'_>) -> Option<Vec<u8>> {
        if item.st.st_nlink < 2 || item.file_type() == libc::S_IFDIR {
            return None;
        }
        let key = (item.st.st_dev, item.st.st_ino);
        if let Some(p) = self.0.get(&key) {
            return Some(p.clone());
        }
        self.0.insert(key, item.path.to_vec());
        None
    }
}

/// Writes the export as a directory tree.
struct DirSink<'a> {
    root: OwnedFd,
    stack: Vec<OwnedFd>,
    links: Links,
    root_user: bool,
    warn: Warn<'a>,
    /// A `.wh.` file was written: the export gets the launcher's mark.
    deletions: bool,
}

fn write_err(path: &[u8], what: &str, e: Errno) -> Error {
    Error::msg(format!(
        "cannot {what} {} in the export: {}",
        quote(path),
        e.desc()
    ))
}

/// Owner, xattrs, mode and times of `src` onto `dst` (in that order:
/// chown clears set-id bits).
fn copy_meta(
    warn: Warn<'_>,
    root_user: bool,
    src: (BorrowedFd<'_>, &CStr),
    dst: (BorrowedFd<'_>, &CStr),
    item: &Item<'_>,
) -> Result<(), Error> {
    let st = item.st;
    match sys::fchownat(dst.0, dst.1, st.st_uid, st.st_gid) {
        Ok(()) => {}
        // Only root gives files away; others keep their own.
        Err(Errno::EPERM) if !root_user => {}
        Err(e) => return Err(write_err(item.path, "set the owner of", e)),
    }
    for (n, v) in xattrs_of(src.0, src.1, item.path, warn) {
        if let Err(e) = sys::lsetxattr_at(dst.0, dst.1, &n, &v, 0) {
            warn(format!(
                "{}: cannot copy xattr {}: {}",
                quote(item.path),
                n.to_string_lossy(),
                e.desc()
            ));
        }
    }
    if item.file_type() != libc::S_IFLNK {
        sys::fchmodat(dst.0, dst.1, st.st_mode & 0o7777)
            .map_err(|e| write_err(item.path, "set the mode of", e))?;
    }
    set_times(dst, st).map_err(|e| write_err(item.path, "set the times of", e))
}

/// Creates `out/name` as a copy of the non-directory `item` (data, link
/// target or device number; metadata follows in `copy_meta`).
fn copy_entry(item: &Item<'_>, out: BorrowedFd<'_>, name: &CStr) -> Result<(), Error> {
    let rd = |e| Error::at(item.path, "read", e);
    let made = |e| write_err(item.path, "create", e);
    match item.file_type() {
        libc::S_IFREG => {
            let src = sys::openat(item.dir, item.real, libc::O_RDONLY, 0).map_err(rd)?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            let dst = sys::openat(out, name, flags, 0o600).map_err(made)?;
            let (mut src, mut dst) = (File::from(src), File::from(dst));
            std::io::copy(&mut src, &mut dst).map_err(|e| Error {
                path: Some(item.path.to_vec()),
                msg: format!("cannot copy: {e}"),
            })?;
        }
        libc::S_IFLNK => {
            let target = sys::readlinkat(item.dir, item.real).map_err(rd)?;
            let target = sys::cstr(&target).map_err(rd)?;
            sys::symlinkat(&target, out, name).map_err(made)?;
        }
        kind => sys::mknodat(out, name, kind | 0o600, item.st.st_rdev).map_err(made)?,
    }
    Ok(())
}

fn set_times(dst: (BorrowedFd<'_>, &CStr), st: &libc::stat) -> sys::Result<()> {
    let ts = |s: i64, ns: i64| libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    let times = [
        ts(st.st_atime, st.st_atime_nsec),
        ts(st.st_mtime, st.st_mtime_nsec),
    ];
    sys::utimensat(dst.0, dst.1, &times)
}

/// An empty regular file `dir/name` (a marker), owned like `like`.
fn marker_file(dir: BorrowedFd<'_>, name: &[u8], like: &libc::stat) -> sys::Result<()> {
    let c = sys::cstr(name)?;
    let fd = sys::openat(
        dir,
        &c,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o644,
    )?;
    let _ = sys::fchownat(fd.as_fd(), c"", like.st_uid, like.st_gid);
    sys::fchmod(fd.as_fd(), 0o644)
}

/// Leaves the launcher's mark (`launch::dialect`) at the root of a directory
/// export that holds `.wh.` files, then gives the root back the upper root's
/// times, which the new entry changed.
fn mark_dir(
    root: &OwnedFd,
    upper_root: BorrowedFd<'_>,
    at: (BorrowedFd<'_>, &CStr),
) -> sys::Result<()> {
    let st = sys::fstat(upper_root)?;
    match marker_file(root.as_fd(), EXPORT_MARK, &st) {
        // The upper held it already (an export used as an upper): it is there.
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    set_times(at, &st)
}

fn unbalanced() -> Error {
    Error::msg("export: unbalanced walk")
}

impl Visitor for DirSink<'_> {
    fn enter(&mut self, item: &Item<'_>, _fd: BorrowedFd<'_>) -> Result<(), Error> {
        let dir = if item.path.is_empty() {
            self.root
                .try_clone()
                .map_err(|e| Error::msg(format!("export: {e}")))?
        } else {
            let out = self.stack.last().ok_or_else(unbalanced)?.as_fd();
            let name = sys::cstr(item.name()).map_err(|e| write_err(item.path, "create", e))?;
            sys::mkdirat(out, &name, 0o700).map_err(|e| write_err(item.path, "create", e))?;
            open_dir(out, &name).map_err(|e| write_err(item.path, "open", e))?
        };
        if matches!(item.change, Change::Dir { opaque: true }) {
            marker_file(dir.as_fd(), marker::OPAQUE_FILE, item.st)
                .map_err(|e| write_err(item.path, "mark opaque", e))?;
            self.deletions = true;
        }
        self.stack.push(dir);
        Ok(())
    }

    fn leave(&mut self, item: &Item<'_>, fd: BorrowedFd<'_>) -> Result<(), Error> {
        let dir = self.stack.pop().ok_or_else(unbalanced)?;
        copy_meta(
            &mut *self.warn,
            self.root_user,
            (fd, c""),
            (dir.as_fd(), c""),
            item,
        )
    }

    fn entry(&mut self, item: &Item<'_>) -> Result<(), Error> {
        let out = self.stack.last().ok_or_else(unbalanced)?.as_fd();
        let err = |what| move |e| write_err(item.path, what, e);
        if item.change == Change::Whiteout {
            let wh = whiteout_name(item)?;
            marker_file(out, &wh, item.st).map_err(err("write the whiteout of"))?;
            self.deletions = true;
            let c = sys::cstr(&wh).map_err(err("write the whiteout of"))?;
            return set_times((out, &c), item.st).map_err(err("set the times of"));
        }
        let name = sys::cstr(item.name()).map_err(err("create"))?;
        if let Some(first) = self.links.seen(item) {
            let first = sys::cstr(&first).map_err(err("link"))?;
            return sys::linkat(self.root.as_fd(), &first, out, &name).map_err(err("link"));
        }
        copy_entry(item, out, &name)?;
        copy_meta(
            &mut *self.warn,
            self.root_user,
            (item.dir, item.real),
            (out, &name),
            item,
        )
    }
}

/// Writes the export as a tar archive.
struct TarSink<'a, W: Write> {
    w: tar::Writer<W>,
    links: Links,
    warn: Warn<'a>,
    file: String,
    deletions: bool,
}

impl<W: Write> TarSink<'_, W> {
    fn header(&mut self, item: &Item<'_>, path: Vec<u8>, kind: u8) -> Header {
        let st = item.st;
        let xattrs = xattrs_of(item.dir, item.real, item.path, &mut *self.warn)
            .into_iter()
            .map(|(n, v)| (n.into_bytes(), v))
            .collect();
        Header {
            path,
            kind,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: 0,
            mtime: st.st_mtime,
            link: Vec::new(),
            dev: (libc::major(st.st_rdev), libc::minor(st.st_rdev)),
            xattrs,
        }
    }

    fn put(&mut self, h: &Header) -> Result<(), Error> {
        self.w.append(h).map_err(|e| self.io_err(e))
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        Error::msg(format!("cannot write {}: {e}", self.file))
    }

    /// An empty `.wh.`-style marker file at `path`, owned like `st`.
    fn marker(&mut self, path: Vec<u8>, st: &libc::stat) -> Result<(), Error> {
        let h = Header {
            path,
            kind: tar::REGULAR,
            mode: 0o644,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime: st.st_mtime,
            ..Header::default()
        };
        self.put(&h)
    }
}

impl<W: Write> Visitor for TarSink<'_, W> {
    fn enter(&mut self, item: &Item<'_>, _fd: BorrowedFd<'_>) -> Result<(), Error> {
        let mut dir = item.path.to_vec();
        if !dir.is_empty() {
            dir.push(b'/');
            let h = self.header(item, dir.clone(), tar::DIRECTORY);
            self.put(&h)?;
        }
        if matches!(item.change, Change::Dir { opaque: true }) {
            dir.extend_from_slice(marker::OPAQUE_FILE);
            self.marker(dir, item.st)?;
            self.deletions = true;
        }
        Ok(())
    }

    fn leave(&mut self, _item: &Item<'_>, _fd: BorrowedFd<'_>) -> Result<(), Error> {
        Ok(())
    }

    fn entry(&mut self, item: &Item<'_>) -> Result<(), Error> {
        let parent = &item.path[..item.path.len() - item.name().len()];
        if item.change == Change::Whiteout {
            let mut path = parent.to_vec();
            path.extend(whiteout_name(item)?);
            self.deletions = true;
            return self.marker(path, item.st);
        }
        if let Some(first) = self.links.seen(item) {
            let mut h = self.header(item, item.path.to_vec(), tar::HARDLINK);
            h.link = first;
            return self.put(&h);
        }
        let rd = |e| Error::at(item.path, "read", e);
        let path = item.path.to_vec();
        match item.file_type() {
            libc::S_IFREG => {
                let src = sys::openat(item.dir, item.real, libc::O_RDONLY, 0).map_err(rd)?;
                let mut h = self.header(item, path, tar::REGULAR);
                h.size = item.st.st_size as u64;
                let mut f = File::from(src);
                self.w.append_data(&h, &mut f).map_err(|e| Error {
                    path: Some(item.path.to_vec()),
                    msg: format!("cannot archive: {e}"),
                })
            }
            libc::S_IFLNK => {
                let mut h = self.header(item, path, tar::SYMLINK);
                h.link = sys::readlinkat(item.dir, item.real).map_err(rd)?;
                self.put(&h)
            }
            libc::S_IFSOCK => {
                (self.warn)(format!(
                    "{}: a socket; tar cannot hold it, left out",
                    quote(item.path)
                ));
                Ok(())
            }
            kind => {
                let flag = match kind {
                    libc::S_IFCHR => tar::CHAR,
                    libc::S_IFBLK => tar::BLOCKDEV,
                    _ => tar::FIFO,
                };
                let h = self.header(item, path, flag);
                self.put(&h)
            }
        }
    }
}

/// The target's directory (opened), its final name, and whether an empty
/// target is already there (to be replaced).
fn check_target(upper: &Path, target: &Target) -> Result<(OwnedFd, Vec<u8>, bool), String> {
    let t = target.path();
    let abs_t = crate::host::paths::absolute(t).map_err(|e| e.to_string())?;
    let abs_u = crate::host::paths::absolute(upper).map_err(|e| e.to_string())?;
    if abs_t.starts_with(&abs_u) {
        return Err(format!(
            "{}: is inside the upper {}",
            t.display(),
            upper.display()
        ));
    }
    let (Some(parent), Some(name)) = (abs_t.parent(), abs_t.file_name()) else {
        return Err(format!("{}: not a path to write to", t.display()));
    };
    let parent_fd = sys::open_layer_root(parent)
        .and_then(|p| open_dir(p.as_fd(), c""))
        .map_err(|e| format!("{}: cannot open its directory: {}", t.display(), e.desc()))?;
    let name = name.as_bytes().to_vec();
    let exists = match (std::fs::symlink_metadata(&abs_t), target) {
        (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => false,
        (Err(e), _) => return Err(format!("{}: {e}", t.display())),
        (Ok(m), Target::Dir(_)) if !m.is_dir() => {
            return Err(format!("{}: exists and is not a directory", t.display()));
        }
        (Ok(_), Target::Dir(_)) => {
            let empty = std::fs::read_dir(&abs_t)
                .map_err(|e| format!("{}: {e}", t.display()))?
                .next()
                .is_none();
            if !empty {
                return Err(format!("{}: exists and is not empty", t.display()));
            }
            true
        }
        (Ok(m), Target::Tar(_)) if !m.is_file() => {
            return Err(format!("{}: exists and is not a regular file", t.display()));
        }
        (Ok(m), Target::Tar(_)) if m.len() > 0 => {
            return Err(format!("{}: exists and is not empty", t.display()));
        }
        (Ok(_), Target::Tar(_)) => true,
    };
    Ok((parent_fd, name, exists))
}

/// The temporary, removed on drop unless kept.
struct Temp<'a> {
    dir: BorrowedFd<'a>,
    name: CString,
    keep: bool,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_tree(self.dir, &self.name);
        }
    }
}

/// Exports `upper` to `target`; warnings go to `warn`.
pub fn export(upper: &Path, target: &Target, warn: Warn<'_>) -> Result<(), String> {
    let up = Layer::open(upper).map_err(|e| format!("upper directory {e}"))?;
    let (parent, name, replace) = check_target(upper, target)?;
    for why in mounts::upper_in_use(upper) {
        warn(format!(
            "upper {} is in use ({why}); it may change while it is read",
            upper.display()
        ));
    }
    let mut tmp_name = b".".to_vec();
    tmp_name.extend_from_slice(&name);
    tmp_name.extend_from_slice(format!(".fimfs-export-{}", std::process::id()).as_bytes());
    let tmp_c = sys::cstr(&tmp_name).map_err(|e| e.desc().to_string())?;
    let shown = target.path().display().to_string();
    let tmp_err = |e: Errno| {
        format!(
            "{shown}: cannot create a temporary next to it: {}",
            e.desc()
        )
    };
    // A leftover of an earlier run of this PID.
    let _ = remove_tree(parent.as_fd(), &tmp_c);
    let mut temp = Temp {
        dir: parent.as_fd(),
        name: tmp_c.clone(),
        keep: false,
    };
    match target {
        Target::Dir(_) => {
            sys::mkdirat(parent.as_fd(), &tmp_c, 0o700).map_err(tmp_err)?;
            let root = open_dir(parent.as_fd(), &tmp_c).map_err(tmp_err)?;
            write_dir(&up, upper, root, (parent.as_fd(), &tmp_c), &shown, warn)?;
        }
        Target::Tar(_) => {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            let fd = sys::openat(parent.as_fd(), &tmp_c, flags, 0o644).map_err(tmp_err)?;
            write_tar(&up, upper, File::from(fd), &shown, warn)?;
        }
    }
    let cname = sys::cstr(&name).map_err(|e| e.desc().to_string())?;
    let flags = if replace { 0 } else { sys::RENAME_NOREPLACE };
    sys::renameat2(parent.as_fd(), &tmp_c, parent.as_fd(), &cname, flags).map_err(|e| match e {
        Errno::EEXIST | Errno::ENOTEMPTY => {
            format!("{shown}: appeared while exporting; not replaced")
        }
        e => format!("{shown}: cannot rename the export into place: {}", e.desc()),
    })?;
    temp.keep = true;
    let _ = sys::fsync(parent.as_fd(), false);
    Ok(())
}

/// Writes the export of `up` as a directory tree into `root` (the
/// temporary `at` names), with its mark when it holds deletions.
fn write_dir(
    up: &Layer,
    upper: &Path,
    root: OwnedFd,
    at: (BorrowedFd<'_>, &CStr),
    shown: &str,
    warn: Warn<'_>,
) -> Result<(), String> {
    let mut sink = DirSink {
        root,
        stack: Vec::new(),
        links: Links::default(),
        root_user: sys::geteuid() == 0,
        warn,
        deletions: false,
    };
    scan::walk(up.root(), &mut sink).map_err(|e| e.render(upper))?;
    if sink.deletions {
        mark_dir(&sink.root, up.root(), at)
            .map_err(|e| format!("{shown}: cannot write its mark: {}", e.desc()))?;
    }
    sys::fsync(sink.root.as_fd(), false).map_err(|e| format!("{shown}: {}", e.desc()))
}

/// Writes the export of `up` as a tar archive into `file`.
fn write_tar(
    up: &Layer,
    upper: &Path,
    file: File,
    shown: &str,
    warn: Warn<'_>,
) -> Result<(), String> {
    let mut sink = TarSink {
        w: tar::Writer::new(BufWriter::with_capacity(1 << 20, file)),
        links: Links::default(),
        warn,
        file: shown.to_string(),
        deletions: false,
    };
    scan::walk(up.root(), &mut sink).map_err(|e| e.render(upper))?;
    if sink.deletions {
        let st = sys::fstat(up.root()).map_err(|e| format!("{upper:?}: {}", e.desc()))?;
        sink.marker(EXPORT_MARK.to_vec(), &st)
            .map_err(|e| e.render(upper))?;
    }
    let file = sink
        .w
        .finish()
        .and_then(|b| b.into_inner().map_err(|e| e.into_error()))
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    file.sync_all()
        .map_err(|e| format!("cannot write {shown}: {e}"))
}

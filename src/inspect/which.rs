//! `fimfs which PATH…`: which layer of a fimfs mount serves each path.
//!
//! The daemon answers the read-only xattr `user.fimfs.layer` on every
//! entry (see `union::Union::getxattr`): `upper`, or `lower N DIR` with N
//! counted from 1 at the top-most lower. The path's last component is
//! not followed (lgetxattr). The kernel lets `user.*` xattrs be read only
//! on files and directories; for a symlink, device, fifo or socket the
//! same answer is read from `trusted.fimfs.layer`, which needs root.
use super::mounts;
use crate::sys::{self, Errno};
use crate::union::marker::{LAYER_XATTR, LAYER_XATTR_TRUSTED};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The directory holding `path` (symlinks before the last component are
/// followed, as by lgetxattr) and the last component.
fn split(path: &Path) -> Result<(OwnedFd, CString), Errno> {
    let bytes = path.as_os_str().as_bytes();
    let trimmed = match bytes.iter().rposition(|&b| b != b'/') {
        Some(i) => &bytes[..=i],
        None => return Ok((sys::open_layer_root(Path::new("/"))?, CString::default())),
    };
    let (dir, name): (&[u8], &[u8]) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (b".", trimmed),
    };
    let dir = sys::open_layer_root(Path::new(std::ffi::OsStr::from_bytes(dir)))?;
    Ok((dir, sys::cstr(name)?))
}

/// The layer serving `path`, as the daemon names it.
pub fn which(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let fail = |e: Errno| format!("{shown}: {}", e.desc());
    let (dir, name) = split(path).map_err(fail)?;
    let st = sys::fstatat(dir.as_fd(), &name).map_err(fail)?;
    // As root the daemon mounts as plain `fuse`; through fusermount3 as
    // `fuse.fimfs`. Any other FUSE filesystem fails to answer below.
    let mount = match mounts::mount_of_dev(st.st_dev) {
        Some(m) if m.fstype == "fuse" || m.fstype.starts_with("fuse.") => m,
        Some(m) => {
            return Err(format!(
                "{shown}: not on a fimfs mount (it is on {} at {})",
                m.fstype,
                m.point.display()
            ));
        }
        None => return Err(format!("{shown}: not on a fimfs mount")),
    };
    let foreign = || {
        format!(
            "{shown}: not on a fimfs mount (the {} filesystem at {} does not answer \
             user.fimfs.layer)",
            mount.fstype,
            mount.point.display()
        )
    };
    let kind = st.st_mode & libc::S_IFMT;
    let value = match sys::lgetxattr_at(dir.as_fd(), &name, LAYER_XATTR) {
        Err(Errno::ENODATA) if kind != libc::S_IFREG && kind != libc::S_IFDIR => {
            if sys::geteuid() != 0 {
                return Err(format!(
                    "{shown}: a {}: the kernel lets user.* xattrs be read only on files \
                     and directories; as root, fimfs which reads trusted.fimfs.layer",
                    super::type_name(st.st_mode)
                ));
            }
            match sys::lgetxattr_at(dir.as_fd(), &name, LAYER_XATTR_TRUSTED) {
                Ok(v) => v,
                Err(Errno::ENODATA | Errno::EOPNOTSUPP) => return Err(foreign()),
                Err(e) => return Err(format!("{shown}: {}", e.desc())),
            }
        }
        Err(Errno::ENODATA | Errno::EOPNOTSUPP) => return Err(foreign()),
        Err(e) => return Err(format!("{shown}: {}", e.desc())),
        Ok(v) => v,
    };
    Ok(String::from_utf8_lossy(&value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_lstat() {
        let name = |p: &str| split(Path::new(p)).map(|(_, n)| n.into_bytes());
        assert_eq!(name("/tmp").unwrap(), b"tmp");
        assert_eq!(name("/tmp/").unwrap(), b"tmp");
        assert_eq!(name("/").unwrap(), b"");
        assert_eq!(name("/tmp/.").unwrap(), b".");
        assert_eq!(name("Cargo.toml").unwrap(), b"Cargo.toml");
        assert_eq!(name("/no/such/dir/x"), Err(Errno::ENOENT));
    }
}

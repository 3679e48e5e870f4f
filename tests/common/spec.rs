//! The one fixture language: a layer written line by line, as the engine tables,
//! the mount tests and the generated trees describe what a layer holds.
//!
//! [`build_layer`] builds one layer directory from a line-oriented spec:
//!
//! | line                  | makes                                                       |
//! |-----------------------|-------------------------------------------------------------|
//! | `f PATH [CONTENT]`    | regular file (parents made as directories)                  |
//! | `d PATH`              | directory                                                   |
//! | `l PATH TARGET`       | symlink                                                     |
//! | `p PATH`              | fifo                                                        |
//! | `c PATH`              | character device 1/3 (a real device, not a whiteout)        |
//! | `w PATH`              | whiteout: character device 0/0                              |
//! | `W PATH`              | whiteout: a `.wh.NAME` file beside it                       |
//! | `z PATH XATTR`        | whiteout: zero-size file carrying the xattr `XATTR`         |
//! | `o PATH`              | opaque directory: `.wh..wh..opq` inside it                  |
//! | `O PATH XATTR`        | opaque directory: `XATTR=y` on it                           |
//! | `X PATH NAME VALUE`   | sets an xattr (`.` is the layer root)                       |
//! | `m PATH MODE`         | chmod, octal                                                |
//! | `t PATH SECS`         | atime and mtime                                             |
//! | `u PATH UID GID`      | lchown                                                      |
//! | `H PATH EXISTING`     | hard link                                                   |
//!
//! Invariant: a line that cannot be carried out fails the test with the line in
//! the message; nothing is left half-built silently.
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::sys::{mknod, set_xattr, utimens};

fn mkparents(p: &Path) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
    }
}

/// A character device `major`:`minor`, mode 0644.
fn chardev(p: &Path, major: u32, minor: u32) {
    mknod(p, libc::S_IFCHR | 0o644, major, minor)
        .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

fn set_times(p: &Path, secs: i64) {
    utimens(p, (secs, 0), (secs, 0), true)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// An errno as `strerror` says it, for the panic message.
fn errno_text(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
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
                chardev(&p, 1, 3);
            }
            "w" => {
                mkparents(&p);
                chardev(&p, 0, 0);
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
                set_xattr(&p, rest, b"y")
                    .map_err(errno_text)
                    .or_spec(line, root);
            }
            "o" => {
                fs::create_dir_all(&p).or_spec(line, root);
                fs::write(p.join(".wh..wh..opq"), b"").or_spec(line, root);
            }
            "O" => {
                fs::create_dir_all(&p).or_spec(line, root);
                set_xattr(&p, rest, b"y")
                    .map_err(errno_text)
                    .or_spec(line, root);
            }
            "X" => {
                let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
                set_xattr(&p, name, value.as_bytes())
                    .map_err(errno_text)
                    .or_spec(line, root);
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

//! Looking at an upper from outside a mount: `fimfs diff` (what the upper
//! changes), `fimfs export` (the upper as a layer whose deletions are plain
//! files), and `fimfs which` (which layer serves a path of a mount).
//!
//! - `scan`: walks an upper and decodes every marker dialect of SPEC §2;
//! - `diff`: classifies each change (`A`, `M`, `D`, `O`), optionally
//!   against the lowers;
//! - `export` and `tar`: write the upper as a directory or a tar archive,
//!   whiteouts as `.wh.NAME` files and opaque directories with a
//!   `.wh..wh..opq` file; built under a temporary name and renamed into
//!   place, so a failure leaves nothing behind;
//! - `mounts`: who uses an upper (mountinfo, `/proc/locks`), and which
//!   filesystem serves a path;
//! - `which`: reads the daemon's read-only `user.fimfs.layer` xattr.
//!
//! Everything reads layers through directory fds with `*at()` calls and
//! never follows a symlink inside a layer, like the daemon.
pub mod diff;
pub mod export;
pub mod mounts;
pub mod scan;
pub mod tar;
pub mod which;

use crate::sys::Errno;
use std::path::Path;

/// A failure while reading an upper or writing an export.
#[derive(Debug)]
pub struct Error {
    /// The entry of the upper it concerns, relative to the upper's root.
    pub path: Option<Vec<u8>>,
    pub msg: String,
}

impl Error {
    /// `what` failed on the upper's entry `path`.
    pub fn at(path: &[u8], what: &str, e: Errno) -> Error {
        Error {
            path: Some(path.to_vec()),
            msg: format!("cannot {what}: {}", e.desc()),
        }
    }

    pub fn msg(msg: impl Into<String>) -> Error {
        Error {
            path: None,
            msg: msg.into(),
        }
    }

    /// The message, with the path spelled from the upper's own path.
    pub fn render(&self, upper: &Path) -> String {
        match self.path.as_deref() {
            None => self.msg.clone(),
            Some(b"") => format!("{}: {}", upper.display(), self.msg),
            Some(p) => format!(
                "{}/{}: {}",
                upper.display(),
                String::from_utf8_lossy(p),
                self.msg
            ),
        }
    }
}

/// A path for a line of text output: as is when it is printable UTF-8
/// without `"` or `\`, else C-quoted with octal escapes (as git quotes).
pub fn quote(path: &[u8]) -> String {
    let plain = std::str::from_utf8(path)
        .ok()
        .filter(|s| !s.chars().any(|c| c.is_control() || c == '"' || c == '\\'));
    if let Some(s) = plain {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for &b in path {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out.push('"');
    out
}

/// A JSON string literal of `s`.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The file type of a mode, as words for text and JSON output.
pub fn type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "char",
        libc::S_IFBLK => "block",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let table: &[(&[u8], &str)] = &[
            (b"a/b.txt", "a/b.txt"),
            ("caf\u{e9}".as_bytes(), "caf\u{e9}"),
            (b"names/\xff\xfe", "\"names/\\377\\376\""),
            (b"tab\there", "\"tab\\there\""),
            (b"q\"uote", "\"q\\\"uote\""),
            (b"back\\slash", "\"back\\\\slash\""),
        ];
        for (raw, want) in table {
            assert_eq!(quote(raw), *want);
        }
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(json_str("caf\u{e9}"), "\"caf\u{e9}\"");
    }

    #[test]
    fn rendering() {
        let e = Error::at(b"d/f", "read", Errno::EACCES);
        assert_eq!(
            e.render(Path::new("/up")),
            "/up/d/f: cannot read: Permission denied"
        );
        let e = Error::at(b"", "list", Errno::EIO);
        assert_eq!(e.render(Path::new("/up")), "/up: cannot list: I/O error");
    }
}

//! bubblewrap: finding it, its version, and the command lines the launcher
//! runs (SPEC §5). Building an argv is pure, so every form is testable.
//!
//! The sandbox for `--target /` (the layers are a whole root filesystem):
//!
//! ```text
//! bwrap --overlay-src BOTTOM … --overlay-src TOP --overlay UPPER WORK /   (BWRAP)
//! bwrap --bind MNT /                                                    (daemon)
//!       --dev /dev --proc /proc [--bwrap-arg …] --die-with-parent
//!       --json-status-fd FD -- COMMAND ARG…
//! ```
//!
//! For any other target the host's `/` is the sandbox root (`--bind / /`),
//! with a fresh `/dev` and `/proc`, and the view mounted at TARGET.
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// bwrap learnt `--overlay-src`/`--overlay` in 0.10.0.
pub const MIN_OVERLAY_VERSION: Version = Version(0, 10, 0);

/// A bubblewrap version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Parses the output of `bwrap --version` (`bubblewrap 0.12.0`).
    /// Missing minor or patch numbers count as 0.
    pub fn parse(output: &str) -> Option<Version> {
        let word = output.split_whitespace().nth(1)?;
        let mut parts = word.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

/// A bwrap binary the launcher can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bwrap {
    pub path: PathBuf,
}

impl Bwrap {
    /// Asks the binary (`--version`). Not done on the way to a normal run,
    /// which costs a process; only to explain a failure or a dry run.
    pub fn version(&self) -> Result<Version, FindError> {
        let out = std::process::Command::new(&self.path)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| FindError::Unusable {
                path: self.path.clone(),
                why: format!("cannot run it: {e}"),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        match Version::parse(&text) {
            Some(v) if out.status.success() => Ok(v),
            _ => Err(FindError::Unusable {
                path: self.path.clone(),
                why: format!("unexpected `--version` output {:?}", text.trim()),
            }),
        }
    }
}

/// Why no usable bwrap was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindError {
    /// Neither `FIMFS_BWRAP` nor `PATH` names one.
    NotFound,
    /// It exists but cannot be run, or `--version` printed something else.
    Unusable { path: PathBuf, why: String },
}

impl std::error::Error for FindError {}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindError::NotFound => {
                f.write_str("bwrap not found on PATH (install bubblewrap or set FIMFS_BWRAP)")
            }
            FindError::Unusable { path, why } => {
                write!(f, "bwrap {}: {why}", path.display())
            }
        }
    }
}

/// The bwrap to use: `FIMFS_BWRAP` when set (`fimfs_bwrap`), else the first
/// executable `bwrap` on `path_var`.
pub fn find(fimfs_bwrap: Option<&OsStr>, path_var: Option<&OsStr>) -> Result<Bwrap, FindError> {
    match fimfs_bwrap.filter(|v| !v.is_empty()) {
        Some(p) => {
            let path = PathBuf::from(p);
            if is_executable(&path) {
                Ok(Bwrap { path })
            } else {
                Err(FindError::Unusable {
                    path,
                    why: "(FIMFS_BWRAP) is not an executable file".into(),
                })
            }
        }
        None => search_path(path_var)
            .map(|path| Bwrap { path })
            .ok_or(FindError::NotFound),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn search_path(path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join("bwrap"))
        .find(|p| is_executable(p))
}

/// What the sandbox shows at its target.
#[derive(Debug, Clone, Copy)]
pub enum View<'a> {
    /// The kernel overlay made by bwrap; `lowers` top-most first.
    Overlay {
        lowers: &'a [PathBuf],
        upper: &'a Path,
        work: &'a Path,
    },
    /// A directory (the fimfs mount) bound read-write.
    Bind(&'a Path),
}

/// Everything a bwrap command line is made of.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox<'a> {
    pub view: View<'a>,
    /// Where the view appears inside the sandbox.
    pub target: &'a Path,
    /// `--bwrap-arg` values, inserted after the standard mounts.
    pub extra: &'a [OsString],
    /// The fd bwrap writes its JSON status documents to.
    pub status_fd: Option<i32>,
    /// The fd the sandbox waits on before it executes the command (only
    /// to tell why a command could not be executed, see `execfail`).
    pub block_fd: Option<i32>,
    pub command: &'a [OsString],
}

fn push(argv: &mut Vec<OsString>, words: &[&OsStr]) {
    argv.extend(words.iter().map(|w| w.to_os_string()));
}

impl Sandbox<'_> {
    /// True when the view is the sandbox's root directory.
    pub fn is_root(&self) -> bool {
        self.target == Path::new("/")
    }

    /// The argument vector after the bwrap binary itself.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let target = self.target.as_os_str();
        if !self.is_root() {
            push(&mut a, &["--bind".as_ref(), "/".as_ref(), "/".as_ref()]);
            push(&mut a, &["--dev".as_ref(), "/dev".as_ref()]);
            push(&mut a, &["--proc".as_ref(), "/proc".as_ref()]);
        }
        match self.view {
            View::Overlay {
                lowers,
                upper,
                work,
            } => {
                for l in lowers.iter().rev() {
                    push(&mut a, &["--overlay-src".as_ref(), l.as_os_str()]);
                }
                push(
                    &mut a,
                    &[
                        "--overlay".as_ref(),
                        upper.as_os_str(),
                        work.as_os_str(),
                        target,
                    ],
                );
            }
            View::Bind(mnt) => push(&mut a, &["--bind".as_ref(), mnt.as_os_str(), target]),
        }
        if self.is_root() {
            push(&mut a, &["--dev".as_ref(), "/dev".as_ref()]);
            push(&mut a, &["--proc".as_ref(), "/proc".as_ref()]);
        }
        a.extend(self.extra.iter().cloned());
        a.push("--die-with-parent".into());
        if let Some(fd) = self.status_fd {
            a.push("--json-status-fd".into());
            a.push(fd.to_string().into());
        }
        if let Some(fd) = self.block_fd {
            a.push("--block-fd".into());
            a.push(fd.to_string().into());
        }
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }
}

/// `argv` as one line a POSIX shell reads back unchanged.
pub fn shell_line(argv: &[OsString]) -> String {
    argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

fn quote(word: &OsStr) -> String {
    let b = word.as_bytes();
    let plain = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(c));
    if plain {
        return word.to_string_lossy().into_owned();
    }
    format!("'{}'", word.to_string_lossy().replace('\'', r"'\''"))
}

/// What bwrap reported on its `--json-status-fd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// `child-pid`: the sandbox's first process (written before setup).
    pub child_pid: Option<i32>,
    /// `exit-code`: written only when the command was started and ended.
    pub exit_code: Option<i32>,
}

impl Status {
    /// Folds the documents in `text` (one JSON object per write) into self.
    /// bwrap writes flat objects with integer values; this reads exactly
    /// the two keys it needs and ignores anything else.
    pub fn absorb(&mut self, text: &str) {
        if let Some(v) = int_after(text, "\"child-pid\"") {
            self.child_pid = Some(v);
        }
        if let Some(v) = int_after(text, "\"exit-code\"") {
            self.exit_code = Some(v);
        }
    }
}

fn int_after(text: &str, key: &str) -> Option<i32> {
    let rest = &text[text.rfind(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            Version::parse("bubblewrap 0.12.0\n"),
            Some(Version(0, 12, 0))
        );
        assert_eq!(Version::parse("bubblewrap 0.8"), Some(Version(0, 8, 0)));
        assert_eq!(
            Version::parse("bubblewrap 0.10.0-rc1"),
            Some(Version(0, 10, 0))
        );
        assert_eq!(Version::parse("bubblewrap"), None);
        assert_eq!(Version::parse(""), None);
        assert!(Version(0, 9, 9) < MIN_OVERLAY_VERSION);
        assert!(Version(0, 10, 0) >= MIN_OVERLAY_VERSION);
        assert!(Version(1, 0, 0) > Version(0, 12, 3));
    }

    #[test]
    fn overlay_at_root_lists_lowers_bottom_first() {
        let lowers = vec![PathBuf::from("/l/top"), PathBuf::from("/l/bottom")];
        let cmd = os(&["sh", "-c", "echo hi"]);
        let extra = os(&["--setenv", "A", "B"]);
        let s = Sandbox {
            view: View::Overlay {
                lowers: &lowers,
                upper: Path::new("/up"),
                work: Path::new("/wk"),
            },
            target: Path::new("/"),
            extra: &extra,
            status_fd: Some(5),
            block_fd: None,
            command: &cmd,
        };
        assert_eq!(
            s.args(),
            os(&[
                "--overlay-src",
                "/l/bottom",
                "--overlay-src",
                "/l/top",
                "--overlay",
                "/up",
                "/wk",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--setenv",
                "A",
                "B",
                "--die-with-parent",
                "--json-status-fd",
                "5",
                "--",
                "sh",
                "-c",
                "echo hi",
            ])
        );
    }

    #[test]
    fn other_targets_keep_the_host_root() {
        let cmd = os(&["true"]);
        let s = Sandbox {
            view: View::Bind(Path::new("/run/m")),
            target: Path::new("/opt/app"),
            extra: &[],
            status_fd: None,
            block_fd: Some(7),
            command: &cmd,
        };
        assert_eq!(
            s.args(),
            os(&[
                "--bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--bind",
                "/run/m",
                "/opt/app",
                "--die-with-parent",
                "--block-fd",
                "7",
                "--",
                "true",
            ])
        );
    }

    #[test]
    fn shell_lines_quote_what_needs_it() {
        let line = shell_line(&os(&["bwrap", "--bind", "/a b", "/", "--", "it's", ""]));
        assert_eq!(line, r"bwrap --bind '/a b' / -- 'it'\''s' ''");
    }

    #[test]
    fn status_documents_fold() {
        let mut s = Status::default();
        s.absorb("{ \"child-pid\": 16475, \"mnt-namespace\": 4026532177 }\n");
        assert_eq!(s.child_pid, Some(16475));
        assert_eq!(s.exit_code, None);
        s.absorb("{ \"exit-code\": 143 }\n");
        assert_eq!(s.exit_code, Some(143));
        let mut t = Status::default();
        t.absorb("{ \"child-pid\": }");
        assert_eq!(t, Status::default());
    }

    #[test]
    fn path_search_finds_executables_only() {
        let dir = std::env::temp_dir().join(format!("fimfs-bwrap-find-{}", std::process::id()));
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("bwrap"), "not executable").unwrap();
        std::fs::write(b.join("bwrap"), "#!/bin/sh\necho bubblewrap 0.11.1\n").unwrap();
        std::fs::set_permissions(
            b.join("bwrap"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        let found = find(None, Some(&path)).unwrap();
        assert_eq!(found.path, b.join("bwrap"));
        assert_eq!(found.version(), Ok(Version(0, 11, 1)));
        assert!(find(Some(a.join("bwrap").as_os_str()), None).is_err());
        assert_eq!(find(None, Some(a.as_os_str())), Err(FindError::NotFound));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Why a mount request was refused or its daemon did not come up.
//!
//! Each variant carries the path it is about and the reason; its message
//! names the path's role first (`lower directory /l: does not exist`), as
//! fuse-overlayfs does. The text is made only at the edge (`cli`, and the
//! launcher, which checks its paths with the same rules).
use crate::fuse::session::SessionError;
use crate::host::paths::AbsoluteError;
use crate::image::ImageError;
use crate::image::source::SourceError;
use crate::layer::{LayerError, WorkdirError};
use nix::errno::Errno;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// A refused mount request, or a daemon that did not come up.
#[derive(Debug)]
pub enum MountError {
    /// `what` ("lower directory", "mountpoint", …) is not a directory.
    NotADirectory {
        what: &'static str,
        path: PathBuf,
    },
    /// `what` does not exist.
    Missing {
        what: &'static str,
        path: PathBuf,
    },
    /// `what` could not be stat'ed or listed.
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    Absolute(AbsoluteError),
    /// The mountpoint is already served by a live fimfs daemon.
    AlreadyMounted {
        mountpoint: PathBuf,
        /// The live mount's source (its layers).
        source: Vec<u8>,
        /// The daemons serving it, where the kernel says.
        daemons: Vec<u32>,
    },
    /// The mountpoint holds files and `-o nonempty` was not given.
    NotEmpty {
        mountpoint: PathBuf,
    },
    WorkdirWithoutUpper {
        workdir: PathBuf,
    },
    /// `what` at `path` overlaps `other_what` ("lower directory", "the
    /// upper directory", "the mountpoint") at `other`.
    Overlap {
        what: &'static str,
        path: PathBuf,
        other_what: &'static str,
        other: PathBuf,
    },
    /// Copy-up renames from the workdir into the upper: one filesystem.
    OtherFilesystem {
        workdir: PathBuf,
        upper: PathBuf,
    },
    /// A layer could not be opened; `what` is its role.
    Layer {
        what: &'static str,
        source: LayerError,
    },
    CreateUpper {
        path: PathBuf,
        source: io::Error,
    },
    /// The workdir could not be made, locked or cleaned.
    Workdir(WorkdirError),
    Session(SessionError),
    /// The pipe to the daemon could not be made.
    Pipe(Errno),
    Fork(Errno),
    /// The daemon ended without saying whether it mounted.
    DaemonGone,
    /// The daemon's own error, as it reported it through the pipe.
    Daemon(String),
    /// A `LOWERS` entry that is neither a directory nor an image.
    Lower(SourceError),
    /// An image lower that could not be read.
    Image(ImageError),
    /// `offset=`/`imagesize=` given, but the lowers are not one image.
    ImagePlacement,
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MountError as E;
        match self {
            E::NotADirectory { what, path } => {
                write!(f, "{what} {}: is not a directory", path.display())
            }
            E::Missing { what, path } => write!(f, "{what} {}: does not exist", path.display()),
            E::Io { what, path, source } => write!(f, "{what} {}: {source}", path.display()),
            E::Absolute(e) => e.fmt(f),
            E::AlreadyMounted {
                mountpoint,
                source,
                daemons,
            } => already_mounted(f, mountpoint, source, daemons),
            E::NotEmpty { mountpoint } => write!(
                f,
                "mountpoint {}: is not an empty directory (use -o nonempty to mount over it)",
                mountpoint.display()
            ),
            E::WorkdirWithoutUpper { workdir } => write!(
                f,
                "workdir {}: given without an upper directory",
                workdir.display()
            ),
            E::Overlap {
                what,
                path,
                other_what,
                other,
            } => write!(
                f,
                "{what} {}: overlaps {other_what} {}",
                path.display(),
                other.display()
            ),
            E::OtherFilesystem { workdir, upper } => write!(
                f,
                "workdir {}: is on another filesystem than the upper directory {} \
                 (copy-up needs an atomic rename between them)",
                workdir.display(),
                upper.display()
            ),
            E::Layer { what, source } => write!(f, "{what} {source}"),
            E::CreateUpper { path, source } => {
                write!(
                    f,
                    "upper directory {}: cannot create: {source}",
                    path.display()
                )
            }
            E::Workdir(e) => e.fmt(f),
            E::Session(e) => e.fmt(f),
            E::Pipe(e) => write!(f, "pipe: {}", e.desc()),
            E::Fork(e) => write!(f, "fork: {}", e.desc()),
            E::DaemonGone => f.write_str("the daemon exited before the mount was ready"),
            E::Daemon(msg) => f.write_str(msg),
            E::Lower(e) => write!(f, "lower {e}"),
            E::Image(e) if e.reason == crate::image::Reason::NotAnImage => write!(
                f,
                "lower {}: is neither a directory nor a DwarFS image (no section header found)",
                e.path.display()
            ),
            E::Image(e) => write!(f, "lower {e}"),
            E::ImagePlacement => f.write_str(
                "offset= and imagesize= place one image: give exactly one lower, an image file",
            ),
        }
    }
}

/// Names the daemon that serves the mountpoint already, and how to free it.
fn already_mounted(
    f: &mut fmt::Formatter<'_>,
    mountpoint: &std::path::Path,
    source: &[u8],
    daemons: &[u32],
) -> fmt::Result {
    let by = match daemons {
        [] => String::new(),
        [pid] => format!(", served by process {pid}"),
        pids => format!(", served by processes {pids:?}"),
    };
    write!(
        f,
        "mountpoint {}: is already a fimfs mount ({}{by}); unmount it first \
         (fusermount3 -u {}), or mount elsewhere",
        mountpoint.display(),
        String::from_utf8_lossy(source),
        mountpoint.display()
    )
}

impl std::error::Error for MountError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use MountError as E;
        match self {
            E::Io { source, .. } | E::CreateUpper { source, .. } => Some(source),
            E::Absolute(e) => Some(e),
            E::Layer { source, .. } => Some(source),
            E::Workdir(e) => Some(e),
            E::Session(e) => Some(e),
            E::Pipe(e) | E::Fork(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AbsoluteError> for MountError {
    fn from(e: AbsoluteError) -> MountError {
        MountError::Absolute(e)
    }
}

impl From<SessionError> for MountError {
    fn from(e: SessionError) -> MountError {
        MountError::Session(e)
    }
}

//! Why `fimfs run` could not run its command (exit status 125).
//!
//! Each variant carries the path or the call it is about and the reason;
//! the text is made once, by the launcher, as a `fimfs: …` line.
use super::super::bwrap::FindError;
use super::super::rundir::{LockError, RunDirError};
use crate::fuse::session::SessionError;
use crate::host::paths::AbsoluteError;
use crate::image::binary::ImageError;
use crate::mount::MountError;
use nix::errno::Errno;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A launcher error: the run ends with `LAUNCHER_ERROR`, or with 128+N
/// for [`LockError::Interrupted`].
#[derive(Debug)]
pub enum RunError {
    NoCommand,
    TargetNotAbsolute(PathBuf),
    /// Neither LOWERS nor `--image` given.
    NoLower,
    /// `--image` without LOWERS, and the binary brings no layer.
    NoOwnLayers {
        binary: PathBuf,
    },
    /// A path broke the rules `fimfs mount` checks, or the daemon's
    /// union could not be built.
    Mount(MountError),
    Image(ImageError),
    NoBwrap(FindError),
    Signalfd(Errno),
    RunDir(RunDirError),
    Lock(LockError),
    Fork(Errno),
    Session(SessionError),
    /// The daemon's mount did not answer `statfs` in time.
    NotReady {
        mountpoint: PathBuf,
        waited: Duration,
    },
    Pipe(Errno),
    Fcntl(Errno),
    /// bwrap could not be started.
    Spawn {
        program: PathBuf,
        source: io::Error,
    },
    Wait(Errno),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RunError as E;
        match self {
            E::NoCommand => {
                f.write_str("no command given (fimfs run LOWERS UPPER -- COMMAND [ARG...])")
            }
            E::TargetNotAbsolute(t) => {
                write!(f, "--target {}: must be an absolute path", t.display())
            }
            E::NoLower => f.write_str(
                "no LOWERS given (fimfs run LOWERS UPPER -- COMMAND, or \
                 fimfs run --image FLATIMAGE UPPER -- COMMAND for the binary's own layers)",
            ),
            E::NoOwnLayers { binary } => write!(
                f,
                "{}: no layer to run on: the binary holds none, and FIM_LAYERS and {} add none",
                binary.display(),
                super::super::layers::data_dir(binary)
                    .join("layers")
                    .display()
            ),
            E::Mount(e) => e.fmt(f),
            E::Image(e) => e.fmt(f),
            E::NoBwrap(e) => write!(f, "{e}; fimfs run needs bubblewrap to enter the view"),
            E::Signalfd(e) => write!(f, "signalfd: {}", e.desc()),
            E::RunDir(e) => e.fmt(f),
            E::Lock(e) => e.fmt(f),
            E::Fork(e) => write!(f, "fork: {}", e.desc()),
            E::Session(e) => e.fmt(f),
            E::NotReady { mountpoint, waited } => write!(
                f,
                "the fimfs mount at {} did not answer within {} s",
                mountpoint.display(),
                waited.as_secs()
            ),
            E::Pipe(e) => write!(f, "pipe: {}", e.desc()),
            E::Fcntl(e) => write!(f, "fcntl: {}", e.desc()),
            E::Spawn { program, source } => write!(f, "running {}: {source}", program.display()),
            E::Wait(e) => write!(f, "waiting for bwrap: {}", e.desc()),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use RunError as E;
        match self {
            E::Mount(e) => Some(e),
            E::Image(e) => Some(e),
            E::NoBwrap(e) => Some(e),
            E::RunDir(e) => Some(e),
            E::Lock(e) => Some(e),
            E::Session(e) => Some(e),
            E::Spawn { source, .. } => Some(source),
            E::Signalfd(e) | E::Fork(e) | E::Pipe(e) | E::Fcntl(e) | E::Wait(e) => Some(e),
            E::NoCommand
            | E::TargetNotAbsolute(_)
            | E::NoLower
            | E::NoOwnLayers { .. }
            | E::NotReady { .. } => None,
        }
    }
}

macro_rules! from {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for RunError {
            fn from(e: $t) -> RunError {
                RunError::$v(e)
            }
        })*
    };
}

from!(
    MountError => Mount,
    ImageError => Image,
    RunDirError => RunDir,
    LockError => Lock,
    SessionError => Session,
);

impl From<AbsoluteError> for RunError {
    fn from(e: AbsoluteError) -> RunError {
        RunError::Mount(MountError::Absolute(e))
    }
}

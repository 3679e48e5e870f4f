//! Why a mount could not be made or served.
//!
//! Every variant that concerns the mount carries its mountpoint, and its
//! message starts with what the daemon was doing there: `mounting
//! /mnt: …`, `serving /mnt: …`. The text is made only where it is shown
//! (`fimfs mount`, `fimfs run`).
use nix::errno::Errno;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// A mount that did not come up, or a session that failed.
#[derive(Debug)]
pub enum SessionError {
    /// `/dev/fuse` could not be opened.
    DevFuse {
        mountpoint: PathBuf,
        source: io::Error,
    },
    /// The mountpoint could not be read, or fuser could not mount or
    /// complete INIT.
    Mounting {
        mountpoint: PathBuf,
        source: io::Error,
    },
    /// mount(2) refused for another reason than a missing privilege.
    Mount { mountpoint: PathBuf, errno: Errno },
    /// The session ended with an error after it served.
    Serving {
        mountpoint: PathBuf,
        source: io::Error,
    },
    /// The session thread could not get an fs_struct of its own.
    UnshareFs(Errno),
    /// The session thread could not be started.
    Thread(io::Error),
    /// The session thread ended without saying whether it mounted.
    ThreadEnded,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::DevFuse { mountpoint, source } => {
                write!(f, "mounting {}: /dev/fuse: {source}", mountpoint.display())
            }
            SessionError::Mounting { mountpoint, source } => {
                write!(f, "mounting {}: {source}", mountpoint.display())
            }
            SessionError::Mount { mountpoint, errno } => {
                write!(f, "mounting {}: {}", mountpoint.display(), errno.desc())
            }
            SessionError::Serving { mountpoint, source } => {
                write!(f, "serving {}: {source}", mountpoint.display())
            }
            SessionError::UnshareFs(e) => write!(f, "unshare(CLONE_FS): {}", e.desc()),
            SessionError::Thread(e) => write!(f, "starting the daemon thread: {e}"),
            SessionError::ThreadEnded => f.write_str("the daemon thread ended before mounting"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::DevFuse { source, .. }
            | SessionError::Mounting { source, .. }
            | SessionError::Serving { source, .. }
            | SessionError::Thread(source) => Some(source),
            SessionError::Mount { errno, .. } | SessionError::UnshareFs(errno) => Some(errno),
            SessionError::ThreadEnded => None,
        }
    }
}

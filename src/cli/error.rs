//! Why a `fimfs` subcommand other than `mount` and `run` failed (exit 1).
//!
//! Each variant carries the file it is about and the reason; `cli` turns
//! it into the one `fimfs: …` line.
use crate::launch::{ImageError, ParseBackendError};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// A failed `overlay`, `casefold`, `diff`, `export` or `install`.
#[derive(Debug)]
pub enum CliError {
    Image(ImageError),
    Backend(ParseBackendError),
    /// `fimfs export` without OUTDIR or `--tar`.
    NoExportTarget,
    Install(InstallError),
    /// `fimfs diff` or `export`: the message `inspect` made, which names
    /// the entry of the upper it is about.
    Inspect(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Image(e) => e.fmt(f),
            CliError::Backend(e) => e.fmt(f),
            CliError::NoExportTarget => f.write_str("export: give OUTDIR or --tar FILE"),
            CliError::Install(e) => e.fmt(f),
            CliError::Inspect(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Image(e) => Some(e),
            CliError::Backend(e) => Some(e),
            CliError::Install(e) => Some(e),
            CliError::NoExportTarget | CliError::Inspect(_) => None,
        }
    }
}

impl From<ImageError> for CliError {
    fn from(e: ImageError) -> CliError {
        CliError::Image(e)
    }
}

impl From<InstallError> for CliError {
    fn from(e: InstallError) -> CliError {
        CliError::Install(e)
    }
}

/// Why `fimfs install` stopped.
#[derive(Debug)]
pub enum InstallError {
    /// This binary's own path could not be found.
    CurrentExe(io::Error),
    /// This binary could not be read.
    Read { path: PathBuf, source: io::Error },
    /// A man page could not be rendered.
    ManPage { name: String, source: io::Error },
    /// A file could not be written to its place.
    Write { path: PathBuf, source: io::Error },
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::CurrentExe(e) => write!(f, "finding this binary: {e}"),
            InstallError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            InstallError::ManPage { name, source } => write!(f, "man page {name}: {source}"),
            InstallError::Write { path, source } => {
                write!(f, "install {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstallError::CurrentExe(source)
            | InstallError::Read { source, .. }
            | InstallError::ManPage { source, .. }
            | InstallError::Write { source, .. } => Some(source),
        }
    }
}

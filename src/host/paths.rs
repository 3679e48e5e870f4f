//! Absolute, symlink-free paths for things that need not exist yet.
use std::fmt;
use std::path::{Path, PathBuf};

/// Why [`absolute`] could not make a path absolute.
#[derive(Debug)]
pub enum AbsoluteError {
    /// The current directory could not be read (`std::path::absolute`).
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not even `/` could be resolved.
    NoExistingAncestor { path: PathBuf },
}

impl fmt::Display for AbsoluteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbsoluteError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            AbsoluteError::NoExistingAncestor { path } => {
                write!(f, "{}: no existing ancestor", path.display())
            }
        }
    }
}

impl std::error::Error for AbsoluteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AbsoluteError::Io { source, .. } => Some(source),
            AbsoluteError::NoExistingAncestor { .. } => None,
        }
    }
}

/// The absolute, symlink-free form of `p`, which need not exist yet: its
/// deepest existing ancestor is resolved and the rest appended.
pub fn absolute(p: &Path) -> Result<PathBuf, AbsoluteError> {
    let p = std::path::absolute(p).map_err(|source| AbsoluteError::Io {
        path: p.to_path_buf(),
        source,
    })?;
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut c) => {
                for part in rest.iter().rev() {
                    c.push(part);
                }
                return Ok(c);
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return Err(AbsoluteError::NoExistingAncestor { path: p.clone() }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tail_is_appended_to_its_resolved_ancestor() {
        let root = std::env::temp_dir().canonicalize().unwrap();
        let p = root.join("fimfs-no-such-dir/a");
        assert_eq!(absolute(&p).unwrap(), p);
        assert_eq!(absolute(Path::new("/")).unwrap(), Path::new("/"));
    }
}

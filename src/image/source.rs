//! What a `LOWERS` entry names: a directory, or one or more images.
//!
//! - a directory is a host lower;
//! - a regular file is an image: a DwarFS image (its sections may follow a
//!   header of any bytes), or a FlatImage binary, whose appended layers
//!   expand at that place of the list, topmost first (the last block of
//!   the binary is its highest layer, SPEC §8);
//! - `FILE@OFFSET` and `FILE@OFFSET+SIZE` name an image inside another
//!   file, as dwarfs' `offset=`/`imagesize=` do. A path that exists is
//!   always taken as itself, so a directory named `a@1` stays a directory.
//!
//! Resolution reads only the binary's framing; the images themselves are
//! opened (and checked) by the reader.
use super::binary::{self, ImageError};
use std::path::{Path, PathBuf};

/// One lower as named on the command line, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Dir(PathBuf),
    Image(ImageAt),
}

impl Source {
    /// The host path it comes from: the directory, or the image's file.
    pub fn path(&self) -> &Path {
        match self {
            Source::Dir(p) => p,
            Source::Image(at) => &at.file,
        }
    }
}

/// An image inside a file: from `offset`, `size` bytes (to the end of the
/// file when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageAt {
    pub file: PathBuf,
    pub offset: u64,
    pub size: Option<u64>,
}

impl ImageAt {
    /// How messages and `fimfs which` name it: the file, and `@OFFSET`
    /// when the image does not start the file.
    pub fn name(&self) -> String {
        match (self.offset, self.size) {
            (0, None) => self.file.display().to_string(),
            (o, None) => format!("{}@{o}", self.file.display()),
            (o, Some(s)) => format!("{}@{o}+{s}", self.file.display()),
        }
    }
}

/// Why an entry could not be resolved.
#[derive(Debug)]
pub enum SourceError {
    /// Neither a directory nor a regular file (nor `FILE@OFFSET` of one).
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    NotDirOrFile {
        path: PathBuf,
    },
    /// `@OFFSET+SIZE` that does not parse.
    BadOffset {
        path: PathBuf,
    },
    /// A FlatImage binary whose framing is broken.
    Binary(ImageError),
    /// A FlatImage binary without layers.
    NoLayers {
        path: PathBuf,
    },
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Missing { path, source } => write!(f, "{}: {source}", path.display()),
            SourceError::NotDirOrFile { path } => write!(
                f,
                "{}: is neither a directory nor an image file",
                path.display()
            ),
            SourceError::BadOffset { path } => write!(
                f,
                "{}: expected FILE@OFFSET or FILE@OFFSET+SIZE (decimal bytes)",
                path.display()
            ),
            SourceError::Binary(e) => write!(f, "{e}"),
            SourceError::NoLayers { path } => {
                write!(f, "{}: FlatImage binary holds no layers", path.display())
            }
        }
    }
}

impl std::error::Error for SourceError {}

/// Resolves one `LOWERS` entry, topmost lower first.
pub fn resolve(path: &Path) -> Result<Vec<Source>, SourceError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(vec![Source::Dir(path.to_path_buf())]),
        Ok(m) if m.is_file() => file(path),
        Ok(_) => Err(SourceError::NotDirOrFile {
            path: path.to_path_buf(),
        }),
        Err(e) => match split_offset(path)? {
            Some(at) if std::fs::metadata(&at.file).is_ok_and(|m| m.is_file()) => {
                Ok(vec![Source::Image(at)])
            }
            _ => Err(SourceError::Missing {
                path: path.to_path_buf(),
                source: e,
            }),
        },
    }
}

/// A regular file: the layers of a FlatImage binary, or one image.
fn file(path: &Path) -> Result<Vec<Source>, SourceError> {
    if !binary::is_elf(path) {
        return Ok(vec![whole(path)]);
    }
    let bin = binary::Image::open(path).map_err(SourceError::Binary)?;
    let layers = bin.layers().map_err(SourceError::Binary)?;
    if layers.is_empty() {
        return Err(SourceError::NoLayers {
            path: path.to_path_buf(),
        });
    }
    Ok(layers
        .iter()
        .rev()
        .map(|l| {
            Source::Image(ImageAt {
                file: path.to_path_buf(),
                offset: l.offset,
                size: Some(l.size),
            })
        })
        .collect())
}

fn whole(path: &Path) -> Source {
    Source::Image(ImageAt {
        file: path.to_path_buf(),
        offset: 0,
        size: None,
    })
}

/// `FILE@OFFSET[+SIZE]`; `None` when the path has no `@` part of digits.
fn split_offset(path: &Path) -> Result<Option<ImageAt>, SourceError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let Some(at) = bytes.iter().rposition(|&b| b == b'@') else {
        return Ok(None);
    };
    let (file, spec) = (&bytes[..at], &bytes[at + 1..]);
    if file.is_empty() || file.ends_with(b"/") || spec.contains(&b'/') {
        return Ok(None);
    }
    let bad = || SourceError::BadOffset {
        path: path.to_path_buf(),
    };
    let number = |s: &[u8]| -> Result<u64, SourceError> {
        match s.iter().all(u8::is_ascii_digit) && !s.is_empty() {
            true => std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad),
            false => Err(bad()),
        }
    };
    let (offset, size) = match spec.iter().position(|&b| b == b'+') {
        Some(p) => (number(&spec[..p])?, Some(number(&spec[p + 1..])?)),
        None => (number(spec)?, None),
    };
    Ok(Some(ImageAt {
        file: PathBuf::from(std::ffi::OsStr::from_bytes(file)),
        offset,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<ImageAt> {
        split_offset(Path::new(s)).ok().flatten()
    }

    #[test]
    fn offsets_parse_and_bad_ones_are_named() {
        let a = at("/x/app.flatimage@4096").unwrap();
        assert_eq!((a.offset, a.size), (4096, None));
        assert_eq!(a.file, PathBuf::from("/x/app.flatimage"));
        let b = at("img@10+20").unwrap();
        assert_eq!(
            (b.offset, b.size, b.name()),
            (10, Some(20), "img@10+20".into())
        );
        assert!(at("/x/dir@/y").is_none());
        assert!(at("/x/plain").is_none());
        for bad in [
            "f@",
            "f@x",
            "f@1+",
            "f@+1",
            "f@1+2+3",
            "f@99999999999999999999",
        ] {
            assert!(
                matches!(
                    split_offset(Path::new(bad)),
                    Err(SourceError::BadOffset { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_existing_path_is_itself_and_a_missing_one_an_error() {
        let dir = std::env::temp_dir().join(format!("fimfs-source-{}", std::process::id()));
        let named = dir.join("d@1");
        std::fs::create_dir_all(&named).unwrap();
        let file = dir.join("img");
        std::fs::write(&file, b"DWARFS").unwrap();
        assert_eq!(resolve(&named).unwrap(), vec![Source::Dir(named.clone())]);
        assert_eq!(resolve(&file).unwrap(), vec![whole(&file)]);
        let inside = dir.join("img@2+3");
        let Source::Image(i) = &resolve(&inside).unwrap()[0] else {
            panic!("not an image")
        };
        assert_eq!((i.offset, i.size), (2, Some(3)));
        let missing = dir.join("nothing@1");
        assert!(matches!(
            resolve(&missing),
            Err(SourceError::Missing { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

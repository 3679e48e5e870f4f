//! Errors from reading or writing a FlatImage binary.
//!
//! Every [`ImageError`] carries the path of the file, and its message always
//! starts with it: `"/path/app.flatimage: no `.fim_reserved_offset` ELF section …"`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An error about one FlatImage binary: the file, and what is wrong with it.
#[derive(Debug)]
pub struct ImageError {
    path: PathBuf,
    kind: ErrorKind,
}

impl ImageError {
    pub(crate) fn new(path: &Path, kind: ErrorKind) -> ImageError {
        ImageError {
            path: path.to_path_buf(),
            kind,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Consumes the error, returning what went wrong.
    pub fn into_kind(self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for ImageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What is wrong with the file. The messages do not repeat the path;
/// [`ImageError`]'s `Display` puts it in front.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An I/O call failed; `op` says what we were doing ("cannot open", …).
    Io {
        /// What we were doing, as a phrase: "cannot read the ELF header".
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Not a regular file (a directory, a FIFO, a device).
    NotRegularFile,
    /// No `\x7fELF` magic, or shorter than an ELF identification.
    NotElf,
    /// A valid ELF we do not handle: big-endian, unknown class.
    UnsupportedElf(&'static str),
    /// The ELF headers contradict themselves or point outside the file.
    MalformedElf(String),
    /// No section named `.fim_reserved_offset` (or no section headers at all:
    /// `sections` is then 0, typically a stripped binary).
    NoReservedSection {
        /// How many section headers were searched.
        sections: u64,
    },
    /// The section exists but holds fewer than the 4 bytes of a u32.
    SectionTooSmall {
        /// Its `sh_size`.
        size: u64,
    },
    /// The reserved offset is at or past the end of the file.
    OffsetPastEnd {
        /// The offset read from the section.
        offset: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The reserved offset is inside the file but the 4 MiB reserved space
    /// runs past its end.
    ReservedPastEnd {
        /// The offset read from the section.
        offset: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The reserved space overlaps part of the ELF itself; an unpatched boot
    /// binary (offset 0) ends here. Writing the overlay byte would corrupt it.
    ReservedOverlapsElf {
        /// The offset read from the section.
        offset: u64,
        /// What it overlaps: "the ELF header", "the section header table", …
        what: &'static str,
    },
    /// A write was asked of an image opened with [`Image::open`](super::Image::open).
    ReadOnly,
    /// An appended `[u64 size][DWARFS…]` block is not valid.
    BadLayer {
        /// Offset of the block's size field.
        offset: u64,
        /// What is wrong with it.
        problem: LayerProblem,
    },
}

/// What is wrong with an appended layer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerProblem {
    /// Fewer than 8 bytes remain: no room for the size field.
    TruncatedSize {
        /// Bytes left in the file.
        remaining: u64,
    },
    /// The size is smaller than the 6-byte `DWARFS` magic (0 included).
    TooSmall {
        /// The size read.
        size: u64,
    },
    /// The image would run past the end of the file.
    PastEnd {
        /// The size read.
        size: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The image does not start with `DWARFS`.
    BadMagic {
        /// The 6 bytes found instead.
        found: [u8; 6],
    },
}

impl fmt::Display for LayerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerProblem::TruncatedSize { remaining } => {
                write!(
                    f,
                    "only {remaining} bytes left, too few for the 8-byte size"
                )
            }
            LayerProblem::TooSmall { size } => {
                write!(f, "size {size} is too small for a DwarFS image")
            }
            LayerProblem::PastEnd { size, file_len } => write!(
                f,
                "size {size} runs past the end of the file ({file_len} bytes)"
            ),
            LayerProblem::BadMagic { found } => write!(
                f,
                "image does not start with DWARFS (found {:?})",
                found.escape_ascii().to_string()
            ),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind as K;
        match self {
            K::Io { op, source } => write!(f, "{op}: {source}"),
            K::NotRegularFile => f.write_str("not a regular file"),
            K::NotElf => f.write_str("not an ELF file (no \\x7fELF magic)"),
            K::UnsupportedElf(what) => write!(f, "unsupported ELF: {what}"),
            K::MalformedElf(what) => write!(f, "malformed ELF: {what}"),
            K::NoReservedSection { sections: 0 } => f.write_str(
                "no `.fim_reserved_offset` ELF section (the file has no section headers)",
            ),
            K::NoReservedSection { sections } => write!(
                f,
                "no `.fim_reserved_offset` ELF section (searched {sections} sections)"
            ),
            K::SectionTooSmall { size } => write!(
                f,
                "ELF section `.fim_reserved_offset` is {size} bytes, too small for a u32"
            ),
            K::OffsetPastEnd { offset, file_len } => write!(
                f,
                "reserved offset {offset} points past the end of the file ({file_len} bytes)"
            ),
            K::ReservedPastEnd { offset, file_len } => write!(
                f,
                "the 4 MiB reserved space at offset {offset} runs past the end of the file \
                 ({file_len} bytes)"
            ),
            K::ReservedOverlapsElf { offset, what } => write!(
                f,
                "the reserved space at offset {offset} overlaps {what} \
                 (is this an unpatched boot binary?)"
            ),
            K::ReadOnly => f.write_str("image opened read-only; cannot write"),
            K::BadLayer { offset, problem } => {
                write!(f, "bad layer block at offset {offset}: {problem}")
            }
        }
    }
}

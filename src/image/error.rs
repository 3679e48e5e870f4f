//! Why an image cannot be opened: [`ImageError`] names the image, the
//! section (its position and type) where that is known, and the reason.
//!
//! Every failure of the opener and the metadata index is one of these; none
//! is a panic. `Display` is one line, for the mount's error message.
use std::fmt;
use std::path::PathBuf;

use super::codec::CodecError;

/// Section types of the DwarFS format.
pub const BLOCK: u16 = 0;
pub const METADATA_V2_SCHEMA: u16 = 7;
pub const METADATA_V2: u16 = 8;
pub const SECTION_INDEX: u16 = 9;
pub const HISTORY: u16 = 10;

/// A section type's name, for messages.
pub fn section_type_name(kind: u16) -> &'static str {
    match kind {
        BLOCK => "BLOCK",
        METADATA_V2_SCHEMA => "METADATA_V2_SCHEMA",
        METADATA_V2 => "METADATA_V2",
        SECTION_INDEX => "SECTION_INDEX",
        HISTORY => "HISTORY",
        _ => "unknown type",
    }
}

/// One section of an image: its position in the image (0-based, in file
/// order) and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionId {
    pub number: u32,
    pub kind: u16,
}

impl fmt::Display for SectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = section_type_name(self.kind);
        write!(f, "section {} ({name}", self.number)?;
        if name == "unknown type" {
            write!(f, " {}", self.kind)?;
        }
        f.write_str(")")
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The file could not be read (the `io::ErrorKind` and its message).
    Io(std::io::ErrorKind, String),
    /// `offset`/`size` do not fit in the file.
    Bounds(String),
    /// No DwarFS section header at the offset, nor within the scan bound.
    NotAnImage,
    /// A format version this reader does not read (2.3–2.5 are read).
    Version { major: u8, minor: u8 },
    /// A header that is not one (bad magic, wrong number, unknown type, ...).
    BadHeader(String),
    /// A section or a table reaches outside the image.
    OutOfBounds(String),
    /// The XXH3-64 checksum does not match.
    Checksum,
    /// The payload could not be decoded.
    Codec(CodecError),
    /// A section the image needs is missing.
    Missing(u16),
    /// A section that must be unique appears twice.
    Duplicate(u16),
    /// The frozen metadata or its schema did not parse.
    Parse(String),
    /// The `dwarfs` crate panicked on this input (the panic's message).
    Panic(String),
    /// The metadata parsed but breaks an invariant (the rule broken).
    Invalid(String),
    /// The image uses a feature this reader does not know.
    Unsupported(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Io(_, msg) => write!(f, "read error: {msg}"),
            Reason::Bounds(msg) => write!(f, "image bounds: {msg}"),
            Reason::NotAnImage => f.write_str("not a DwarFS image (no section header found)"),
            Reason::Version { major, minor } => write!(
                f,
                "DwarFS format {major}.{minor} is not supported (2.3 to 2.5 are)"
            ),
            Reason::BadHeader(msg) => write!(f, "bad section header: {msg}"),
            Reason::OutOfBounds(msg) => write!(f, "out of bounds: {msg}"),
            Reason::Checksum => f.write_str("checksum mismatch (XXH3-64)"),
            Reason::Codec(e) => write!(f, "cannot decode: {e}"),
            Reason::Missing(t) => write!(f, "no {} section", section_type_name(*t)),
            Reason::Duplicate(t) => write!(f, "more than one {} section", section_type_name(*t)),
            Reason::Parse(msg) => write!(f, "cannot parse: {msg}"),
            Reason::Panic(msg) => write!(f, "the metadata decoder failed: {msg}"),
            Reason::Invalid(msg) => write!(f, "invalid metadata: {msg}"),
            Reason::Unsupported(msg) => write!(f, "unsupported: {msg}"),
        }
    }
}

/// An image that cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// The file that holds the image (with `@offset` where one was given).
    pub path: PathBuf,
    /// The section at fault, when one is.
    pub section: Option<SectionId>,
    pub reason: Reason,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DwarFS image {}: ", self.path.display())?;
        if let Some(s) = self.section {
            write!(f, "{s}: ")?;
        }
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for ImageError {}

/// A reason not yet tied to an image path: what the inner functions return.
/// [`Located::at`] adds the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub section: Option<SectionId>,
    pub reason: Reason,
}

impl Located {
    pub fn new(section: Option<SectionId>, reason: Reason) -> Located {
        Located { section, reason }
    }

    pub fn at(self, path: PathBuf) -> ImageError {
        ImageError {
            path,
            section: self.section,
            reason: self.reason,
        }
    }
}

/// Shorthand: an invariant broken in the metadata section.
pub fn invalid(section: SectionId, msg: impl Into<String>) -> Located {
    Located::new(Some(section), Reason::Invalid(msg.into()))
}

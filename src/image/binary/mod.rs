//! Reading and writing a FlatImage binary (SPEC §5).
//!
//! Layout: a boot ELF whose section `.fim_reserved_offset` holds a
//! little-endian u32, the start of the 4 MiB reserved space; inside it, byte
//! 9 is the overlay mask and byte 10 the casefold flag. After the reserved
//! space, DwarFS images follow as `[u64 LE size][image]` blocks up to the end
//! of the file, each image starting with `DWARFS`.
//!
//! Invariants:
//! - [`Image::open`] validates the whole path to the reserved space (ELF
//!   headers, section, offset and the 4 MiB area inside the file, not
//!   overlapping the ELF header, the section header table or the section
//!   itself), so the getters are infallible.
//! - Writes touch exactly one byte of the file, through the descriptor
//!   opened by [`Image::open_rw`]; nothing is truncated, moved or rewritten.
//! - FlatImage's mark (ELF header bytes 8, 9, 10 = `F`, `I`, `0x01`) is
//!   reported by [`Image::is_flatimage`] but not required: the structure
//!   above is what we depend on, and test images and hand-built binaries
//!   lack the mark. The launcher may warn when it is missing.
//! - The reserved bytes are read once at open; [`Image::set_overlay`] and
//!   [`Image::set_casefold`] update that snapshot along with the file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

mod elf;
mod error;

pub use elf::ElfClass;
use elf::Found;
pub use error::{ErrorKind, ImageError, LayerProblem};

/// Length of the reserved space.
pub const RESERVED_SIZE: u64 = 4 * 1024 * 1024;
/// Offset of the overlay byte inside the reserved space.
pub const OVERLAY_BYTE: u64 = 9;
/// Offset of the casefold byte inside the reserved space.
pub const CASEFOLD_BYTE: u64 = 10;
/// The ELF section holding the reserved offset (name bytes, no NUL).
pub const RESERVED_SECTION: &[u8] = b".fim_reserved_offset";
/// The magic every appended DwarFS image starts with.
pub const DWARFS_MAGIC: &[u8; 6] = b"DWARFS";

/// One appended DwarFS image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Offset of the image itself (its `DWARFS` magic), just after the size.
    pub offset: u64,
    /// Size of the image in bytes, as stored in the u64 before it.
    pub size: u64,
}

/// An open FlatImage binary.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    file: File,
    writable: bool,
    file_len: u64,
    class: ElfClass,
    fim_magic: bool,
    reserved_offset: u64,
    overlay_byte: u8,
    casefold_byte: u8,
}

impl Image {
    /// Opens read-only and validates the layout. The setters then fail with
    /// [`ErrorKind::ReadOnly`].
    pub fn open(path: impl AsRef<Path>) -> Result<Image, ImageError> {
        Image::open_with(path.as_ref(), false)
    }

    /// Opens read-write (never creating or truncating) and validates.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Image, ImageError> {
        Image::open_with(path.as_ref(), true)
    }

    fn open_with(path: &Path, writable: bool) -> Result<Image, ImageError> {
        let err = |kind| ImageError::new(path, kind);
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|source| {
                err(ErrorKind::Io {
                    op: "cannot open",
                    source,
                })
            })?;
        let meta = file.metadata().map_err(|source| {
            err(ErrorKind::Io {
                op: "cannot stat",
                source,
            })
        })?;
        if !meta.is_file() {
            return Err(err(ErrorKind::NotRegularFile));
        }
        let file_len = meta.len();
        let found = elf::find_section(&file, file_len, RESERVED_SECTION).map_err(err)?;
        let offset = elf::read_u32_section(&file, file_len, &found.section).map_err(err)?;
        let reserved_offset = u64::from(offset);
        check_reserved(&found, reserved_offset, file_len).map_err(err)?;
        let mut bytes = [0u8; 2];
        file.read_exact_at(&mut bytes, reserved_offset + OVERLAY_BYTE)
            .map_err(|source| {
                err(ErrorKind::Io {
                    op: "cannot read the reserved space",
                    source,
                })
            })?;
        Ok(Image {
            path: path.to_path_buf(),
            file,
            writable,
            file_len,
            class: found.header.class,
            fim_magic: found.header.fim_magic,
            reserved_offset,
            overlay_byte: bytes[0],
            casefold_byte: bytes[1],
        })
    }

    /// The path the image was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length at open.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// ELF32 or ELF64.
    pub fn elf_class(&self) -> ElfClass {
        self.class
    }

    /// Whether the ELF header carries FlatImage's mark (bytes 8, 9, 10 =
    /// `F`, `I`, `0x01`). Informational only; see the module docs.
    pub fn is_flatimage(&self) -> bool {
        self.fim_magic
    }

    /// Start of the reserved space: the u32 in `.fim_reserved_offset`.
    pub fn reserved_offset(&self) -> u64 {
        self.reserved_offset
    }

    /// End of the reserved space, where the first layer block starts.
    pub fn layers_offset(&self) -> u64 {
        self.reserved_offset + RESERVED_SIZE
    }

    /// The raw overlay byte (reserved offset 9).
    pub fn overlay_byte(&self) -> u8 {
        self.overlay_byte
    }

    /// The raw casefold byte (reserved offset 10).
    pub fn casefold_byte(&self) -> u8 {
        self.casefold_byte
    }

    /// Casefold is on when the casefold byte is non-zero.
    pub fn casefold(&self) -> bool {
        self.casefold_byte != 0
    }

    /// Stores `byte` in the overlay byte, as `fim-overlay set` does.
    /// Writes that one byte and nothing else.
    pub fn set_overlay_byte(&mut self, byte: u8) -> Result<(), ImageError> {
        self.write_byte(OVERLAY_BYTE, byte, "cannot write the overlay byte")?;
        self.overlay_byte = byte;
        Ok(())
    }

    /// Stores 1 (on) or 0 (off) in the casefold byte, as `fim-casefold`
    /// does. Writes that one byte and nothing else.
    pub fn set_casefold(&mut self, on: bool) -> Result<(), ImageError> {
        let byte = u8::from(on);
        self.write_byte(CASEFOLD_BYTE, byte, "cannot write the casefold byte")?;
        self.casefold_byte = byte;
        Ok(())
    }

    fn write_byte(&self, at: u64, byte: u8, op: &'static str) -> Result<(), ImageError> {
        let err = |kind| ImageError::new(&self.path, kind);
        if !self.writable {
            return Err(err(ErrorKind::ReadOnly));
        }
        self.file
            .write_all_at(&[byte], self.reserved_offset + at)
            .map_err(|source| err(ErrorKind::Io { op, source }))?;
        self.file
            .sync_data()
            .map_err(|source| err(ErrorKind::Io { op, source }))
    }

    /// Walks the appended layer blocks. Each item is a valid layer or,
    /// once, the error that stops the walk; it ends cleanly at the end of the
    /// file. FlatImage mounts the layers before a bad block and stops there;
    /// `blocks().map_while(Result::ok)` does the same.
    pub fn blocks(&self) -> Blocks<'_> {
        Blocks {
            image: self,
            pos: Some(self.layers_offset()),
        }
    }

    /// Walks the layer blocks from the block whose size field is at `pos`
    /// (to go on after a block [`Image::blocks`] refused).
    pub fn blocks_from(&self, pos: u64) -> Blocks<'_> {
        Blocks {
            image: self,
            pos: Some(pos),
        }
    }

    /// All appended layers, bottom first; any bad block is an error.
    pub fn layers(&self) -> Result<Vec<Layer>, ImageError> {
        self.blocks().collect()
    }

    fn read_block(&self, pos: u64) -> Result<Layer, ErrorKind> {
        let bad = |problem| ErrorKind::BadLayer {
            offset: pos,
            problem,
        };
        let remaining = self.file_len - pos;
        if remaining < 8 {
            return Err(bad(LayerProblem::TruncatedSize { remaining }));
        }
        let mut b = [0u8; 8];
        self.file
            .read_exact_at(&mut b, pos)
            .map_err(|source| ErrorKind::Io {
                op: "cannot read a layer size",
                source,
            })?;
        let size = u64::from_le_bytes(b);
        if size < DWARFS_MAGIC.len() as u64 {
            return Err(bad(LayerProblem::TooSmall { size }));
        }
        if size > remaining - 8 {
            let file_len = self.file_len;
            return Err(bad(LayerProblem::PastEnd { size, file_len }));
        }
        let mut found = [0u8; 6];
        self.file
            .read_exact_at(&mut found, pos + 8)
            .map_err(|source| ErrorKind::Io {
                op: "cannot read a layer magic",
                source,
            })?;
        if found != *DWARFS_MAGIC {
            return Err(bad(LayerProblem::BadMagic { found }));
        }
        Ok(Layer {
            offset: pos + 8,
            size,
        })
    }
}

/// Iterator over the appended layer blocks; see [`Image::blocks`].
#[derive(Debug)]
pub struct Blocks<'a> {
    image: &'a Image,
    /// Offset of the next block; `None` once an error was returned.
    pos: Option<u64>,
}

impl Iterator for Blocks<'_> {
    type Item = Result<Layer, ImageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let pos = self.pos?;
        if pos >= self.image.file_len {
            self.pos = None;
            return None;
        }
        match self.image.read_block(pos) {
            Ok(layer) => {
                self.pos = Some(layer.offset + layer.size);
                Some(Ok(layer))
            }
            Err(kind) => {
                self.pos = None;
                Some(Err(ImageError::new(&self.image.path, kind)))
            }
        }
    }
}

/// Checks the reserved space lies inside the file and clear of the ELF parts
/// we read: writing into it must never corrupt the boot binary.
fn check_reserved(found: &Found, offset: u64, file_len: u64) -> Result<(), ErrorKind> {
    if offset >= file_len {
        return Err(ErrorKind::OffsetPastEnd { offset, file_len });
    }
    // `offset` came from a u32: adding 4 MiB cannot overflow a u64.
    let end = offset + RESERVED_SIZE;
    if end > file_len {
        return Err(ErrorKind::ReservedPastEnd { offset, file_len });
    }
    let (table_off, table_len) = found.table;
    let parts = [
        (0, found.header.len(), "the ELF header"),
        (table_off, table_len, "the section header table"),
        (
            found.section.offset,
            found.section.size,
            "the `.fim_reserved_offset` section",
        ),
    ];
    // Every part was checked to lie inside the file: no overflow.
    match parts
        .iter()
        .find(|&&(start, len, _)| len > 0 && start < end && offset < start + len)
    {
        Some(&(_, _, what)) => Err(ErrorKind::ReservedOverlapsElf { offset, what }),
        None => Ok(()),
    }
}

/// Whether the file starts with the ELF magic (a FlatImage binary, or no
/// image at all); false when it cannot be read.
pub fn is_elf(path: &Path) -> bool {
    let mut id = [0u8; 4];
    File::open(path).is_ok_and(|f| f.read_exact_at(&mut id, 0).is_ok() && id == *b"\x7fELF")
}

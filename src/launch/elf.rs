//! Just enough ELF to find one section by name: the identification, the
//! section header table and the section name string table. ELF64 and ELF32,
//! little-endian only (FlatImage ships x86_64 and aarch64). Handles the
//! extended numbering escapes (`e_shnum == 0`, `e_shstrndx == SHN_XINDEX`).
//!
//! Every offset read from the file is checked against the file's length
//! before it is used, with checked arithmetic: a hostile file yields an
//! error, never a panic or a huge allocation.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::error::ErrorKind;

/// Random access reads; implemented by `File` and, for tests, by `[u8]`.
pub(crate) trait ReadAt {
    /// Fills `buf` from `offset`, or fails (`UnexpectedEof` when short).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(buf.len()));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.len() => {
                buf.copy_from_slice(&self[s..e]);
                Ok(())
            }
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// ELF class: the width of addresses and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfClass {
    /// 32-bit (`ELFCLASS32`).
    Elf32,
    /// 64-bit (`ELFCLASS64`).
    Elf64,
}

impl ElfClass {
    fn header_len(self) -> u64 {
        match self {
            ElfClass::Elf32 => 52,
            ElfClass::Elf64 => 64,
        }
    }

    fn min_shentsize(self) -> u64 {
        match self {
            ElfClass::Elf32 => 40,
            ElfClass::Elf64 => 64,
        }
    }
}

/// The parts of the ELF header we use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub class: ElfClass,
    /// Bytes 8, 9 and 10 (`e_ident[EI_ABIVERSION..]`) are `F`, `I`, `0x01`: FlatImage's mark.
    pub fim_magic: bool,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
    shstrndx: u64,
}

impl Header {
    /// Length of the ELF header in the file.
    pub fn len(&self) -> u64 {
        self.class.header_len()
    }
}

/// One section header, reduced to what we use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section {
    name: u32,
    kind: u32,
    pub offset: u64,
    pub size: u64,
    link: u32,
}

/// A found section, with the header and the table's extent for overlap checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub header: Header,
    pub section: Section,
    /// `(offset, length)` of the section header table.
    pub table: (u64, u64),
}

const SHT_NOBITS: u32 = 8;
const SHN_XINDEX: u64 = 0xffff;
const FIM_MAGIC: [u8; 3] = [b'F', b'I', 0x01];

fn io(op: &'static str) -> impl FnOnce(io::Error) -> ErrorKind {
    move |source| ErrorKind::Io { op, source }
}

fn malformed(what: impl Into<String>) -> ErrorKind {
    ErrorKind::MalformedElf(what.into())
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads and checks the ELF header.
pub(crate) fn read_header<R: ReadAt + ?Sized>(r: &R, file_len: u64) -> Result<Header, ErrorKind> {
    let mut b = [0u8; 64];
    if file_len < 16 {
        return Err(ErrorKind::NotElf);
    }
    r.read_exact_at(&mut b[..16], 0)
        .map_err(io("cannot read the ELF header"))?;
    if b[..4] != *b"\x7fELF" {
        return Err(ErrorKind::NotElf);
    }
    let class = match b[4] {
        1 => ElfClass::Elf32,
        2 => ElfClass::Elf64,
        _ => return Err(ErrorKind::UnsupportedElf("unknown ELF class")),
    };
    match b[5] {
        1 => {}
        2 => return Err(ErrorKind::UnsupportedElf("big-endian")),
        _ => return Err(ErrorKind::UnsupportedElf("unknown data encoding")),
    }
    let len = class.header_len();
    if file_len < len {
        return Err(malformed("file shorter than its ELF header"));
    }
    // `len` is 52 or 64: the cast cannot truncate.
    let b = &mut b[..len as usize];
    r.read_exact_at(b, 0)
        .map_err(io("cannot read the ELF header"))?;
    let fim_magic = b[8..11] == FIM_MAGIC;
    let (shoff, at) = match class {
        ElfClass::Elf32 => (u64::from(u32_at(b, 0x20)), 0x2e),
        ElfClass::Elf64 => (u64_at(b, 0x28), 0x3a),
    };
    Ok(Header {
        class,
        fim_magic,
        shoff,
        shentsize: u16_at(b, at),
        shnum: u16_at(b, at + 2),
        shstrndx: u16_at(b, at + 4),
    })
}

/// Reads section header `index`; the caller has bounds-checked the table.
fn read_section<R: ReadAt + ?Sized>(r: &R, h: &Header, index: u64) -> Result<Section, ErrorKind> {
    let at = index
        .checked_mul(h.shentsize)
        .and_then(|o| o.checked_add(h.shoff))
        .ok_or_else(|| malformed("section header offset overflows"))?;
    let mut b = [0u8; 64];
    // `min_shentsize` is 40 or 64: the cast cannot truncate.
    let b = &mut b[..h.class.min_shentsize() as usize];
    r.read_exact_at(b, at)
        .map_err(io("cannot read a section header"))?;
    Ok(match h.class {
        ElfClass::Elf32 => Section {
            name: u32_at(b, 0),
            kind: u32_at(b, 4),
            offset: u64::from(u32_at(b, 16)),
            size: u64::from(u32_at(b, 20)),
            link: u32_at(b, 24),
        },
        ElfClass::Elf64 => Section {
            name: u32_at(b, 0),
            kind: u32_at(b, 4),
            offset: u64_at(b, 24),
            size: u64_at(b, 32),
            link: u32_at(b, 40),
        },
    })
}

/// Checks that a section's bytes lie inside the file.
fn check_data(s: &Section, file_len: u64, what: &str) -> Result<(), ErrorKind> {
    if s.kind == SHT_NOBITS {
        return Err(malformed(format!(
            "{what} has no data in the file (SHT_NOBITS)"
        )));
    }
    match s.offset.checked_add(s.size) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(malformed(format!("{what} runs past the end of the file"))),
    }
}

/// Resolves the real section count and name-table index (extended numbering),
/// and checks the whole table lies inside the file. `Ok(None)`: no sections.
fn table_extent<R: ReadAt + ?Sized>(
    r: &R,
    h: &mut Header,
    file_len: u64,
) -> Result<Option<(u64, u64)>, ErrorKind> {
    if h.shoff == 0 {
        return Ok(None);
    }
    if h.shentsize < h.class.min_shentsize() {
        return Err(malformed(format!(
            "e_shentsize {} is too small",
            h.shentsize
        )));
    }
    let first_end = h.shoff.checked_add(h.shentsize);
    if first_end.is_none_or(|e| e > file_len) {
        return Err(malformed(
            "section header table starts past the end of the file",
        ));
    }
    if h.shnum == 0 || h.shstrndx == SHN_XINDEX {
        let zero = read_section(r, h, 0)?;
        if h.shnum == 0 {
            h.shnum = zero.size;
        }
        if h.shstrndx == SHN_XINDEX {
            h.shstrndx = u64::from(zero.link);
        }
    }
    let len = h.shnum.checked_mul(h.shentsize);
    match len.and_then(|l| l.checked_add(h.shoff)) {
        Some(end) if end <= file_len => Ok(len.map(|l| (h.shoff, l))),
        _ => Err(malformed(format!(
            "section header table ({} entries at offset {}) runs past the end of the file",
            h.shnum, h.shoff
        ))),
    }
}

/// Whether section `s` is named `name`, looked up in the name table `strtab`.
fn has_name<R: ReadAt + ?Sized>(
    r: &R,
    strtab: &Section,
    s: &Section,
    name: &[u8],
) -> Result<bool, ErrorKind> {
    let want = name.len() as u64 + 1; // with the NUL
    let at = u64::from(s.name);
    if at.checked_add(want).is_none_or(|end| end > strtab.size) {
        return Ok(false);
    }
    let mut buf = vec![0u8; name.len() + 1];
    r.read_exact_at(&mut buf, strtab.offset + at)
        .map_err(io("cannot read a section name"))?;
    Ok(buf[..name.len()] == *name && buf[name.len()] == 0)
}

/// Finds the first section named `name` (bytes, without the NUL).
pub(crate) fn find_section<R: ReadAt + ?Sized>(
    r: &R,
    file_len: u64,
    name: &[u8],
) -> Result<Found, ErrorKind> {
    let mut header = read_header(r, file_len)?;
    let Some(table) = table_extent(r, &mut header, file_len)? else {
        return Err(ErrorKind::NoReservedSection { sections: 0 });
    };
    if header.shnum == 0 || header.shstrndx == 0 {
        // No sections, or no name table (SHN_UNDEF): nothing can be named.
        return Err(ErrorKind::NoReservedSection {
            sections: header.shnum,
        });
    }
    if header.shstrndx >= header.shnum {
        return Err(malformed(format!(
            "e_shstrndx {} is not below the section count {}",
            header.shstrndx, header.shnum
        )));
    }
    let strtab = read_section(r, &header, header.shstrndx)?;
    check_data(&strtab, file_len, "the section name table")?;
    for index in 0..header.shnum {
        let section = read_section(r, &header, index)?;
        if has_name(r, &strtab, &section, name)? {
            return Ok(Found {
                header,
                section,
                table,
            });
        }
    }
    Err(ErrorKind::NoReservedSection {
        sections: header.shnum,
    })
}

/// Reads the little-endian u32 a found section holds.
pub(crate) fn read_u32_section<R: ReadAt + ?Sized>(
    r: &R,
    file_len: u64,
    s: &Section,
) -> Result<u32, ErrorKind> {
    if s.size < 4 {
        return Err(ErrorKind::SectionTooSmall { size: s.size });
    }
    check_data(s, file_len, "section `.fim_reserved_offset`")?;
    let mut b = [0u8; 4];
    r.read_exact_at(&mut b, s.offset)
        .map_err(io("cannot read section `.fim_reserved_offset`"))?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests;

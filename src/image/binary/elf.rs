//! Just enough ELF to find one section by name: the identification, the
//! section header table and the section name string table. ELF64 and ELF32,
//! little-endian only (FlatImage ships x86_64 and aarch64). Handles the
//! extended numbering escapes (`e_shnum == 0`, `e_shstrndx == SHN_XINDEX`).
//!
//! The record layouts (file header, section header, constants) are the
//! `object` crate's; the reading is ours, one fixed-size record at a time
//! through [`ReadAt`]. `object`'s own table reader (`sections()` over a
//! `ReadCache`) loads the whole section header table in one buffer: on a
//! 1 GB file whose section 0 claims 16 million sections it peaked at 1 GB
//! of memory. A FlatImage binary can be gigabytes, and is untrusted here.
//!
//! Every offset read from the file is checked against the file's length
//! before it is used, with checked arithmetic: a hostile file yields an
//! error, never a panic or a huge allocation.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::unix::fs::FileExt;

use object::elf::{
    DataEncoding, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, ELFMAG, FileClass,
    FileHeader32, FileHeader64, SHN_XINDEX, SHT_NOBITS, SectionHeader32, SectionHeader64,
};
use object::read::elf::{FileHeader as ElfHeader, SectionHeader as ElfSection};
use object::{LittleEndian as LE, Pod, pod};

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
            ElfClass::Elf32 => size_of::<FileHeader32<LE>>() as u64,
            ElfClass::Elf64 => size_of::<FileHeader64<LE>>() as u64,
        }
    }

    fn min_shentsize(self) -> u64 {
        match self {
            ElfClass::Elf32 => size_of::<SectionHeader32<LE>>() as u64,
            ElfClass::Elf64 => size_of::<SectionHeader64<LE>>() as u64,
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

/// Bytes 8, 9 and 10 of `e_ident` (`EI_ABIVERSION` and two of padding).
const FIM_MAGIC: [u8; 3] = [b'F', b'I', 0x01];
const HDR: &str = "cannot read the ELF header";

fn io(op: &'static str) -> impl FnOnce(io::Error) -> ErrorKind {
    move |source| ErrorKind::Io { op, source }
}

fn malformed(what: impl Into<String>) -> ErrorKind {
    ErrorKind::MalformedElf(what.into())
}

/// Reads one record of type `T` at `at` (at most 64 bytes: ELF headers).
fn read_pod<T: Pod, R: ReadAt + ?Sized>(r: &R, at: u64, op: &'static str) -> Result<T, ErrorKind> {
    let mut b = [0u8; 64];
    let b = &mut b[..size_of::<T>()];
    r.read_exact_at(b, at).map_err(io(op))?;
    // The buffer has the record's size, and `object`'s ELF records have
    // byte alignment: this cannot fail.
    pod::from_bytes::<T>(b)
        .map(|(t, _)| *t)
        .map_err(|()| malformed(op))
}

/// Reads and checks the ELF header.
pub(crate) fn read_header<R: ReadAt + ?Sized>(r: &R, file_len: u64) -> Result<Header, ErrorKind> {
    // `e_ident` (`object::elf::Ident`, 16 bytes) is bytes: no `Pod` record.
    let mut id = [0u8; 16];
    if file_len < id.len() as u64 {
        return Err(ErrorKind::NotElf);
    }
    r.read_exact_at(&mut id, 0).map_err(io(HDR))?;
    if id[..4] != ELFMAG {
        return Err(ErrorKind::NotElf);
    }
    let class = match FileClass(id[4]) {
        ELFCLASS32 => ElfClass::Elf32,
        ELFCLASS64 => ElfClass::Elf64,
        _ => return Err(ErrorKind::UnsupportedElf("unknown ELF class")),
    };
    match DataEncoding(id[5]) {
        ELFDATA2LSB => {}
        ELFDATA2MSB => return Err(ErrorKind::UnsupportedElf("big-endian")),
        _ => return Err(ErrorKind::UnsupportedElf("unknown data encoding")),
    }
    if file_len < class.header_len() {
        return Err(malformed("file shorter than its ELF header"));
    }
    let fim_magic = id[8..11] == FIM_MAGIC;
    Ok(match class {
        ElfClass::Elf32 => fields(
            &read_pod::<FileHeader32<LE>, R>(r, 0, HDR)?,
            class,
            fim_magic,
        ),
        ElfClass::Elf64 => fields(
            &read_pod::<FileHeader64<LE>, R>(r, 0, HDR)?,
            class,
            fim_magic,
        ),
    })
}

/// Our header from a file header of either class.
fn fields<H: ElfHeader<Endian = LE>>(h: &H, class: ElfClass, fim_magic: bool) -> Header {
    Header {
        class,
        fim_magic,
        shoff: h.e_shoff(LE).into(),
        shentsize: h.e_shentsize(LE).into(),
        shnum: h.e_shnum(LE).into(),
        shstrndx: u64::from(h.e_shstrndx(LE).0),
    }
}

/// A section header of either class, reduced to what we use.
fn section<S: ElfSection<Endian = LE>>(s: &S) -> Section {
    Section {
        name: s.sh_name(LE),
        kind: s.sh_type(LE).0,
        offset: s.sh_offset(LE).into(),
        size: s.sh_size(LE).into(),
        link: s.sh_link(LE),
    }
}

/// Reads section header `index`; the caller has bounds-checked the table.
fn read_section<R: ReadAt + ?Sized>(r: &R, h: &Header, index: u64) -> Result<Section, ErrorKind> {
    let at = index
        .checked_mul(h.shentsize)
        .and_then(|o| o.checked_add(h.shoff))
        .ok_or_else(|| malformed("section header offset overflows"))?;
    const OP: &str = "cannot read a section header";
    Ok(match h.class {
        ElfClass::Elf32 => section(&read_pod::<SectionHeader32<LE>, R>(r, at, OP)?),
        ElfClass::Elf64 => section(&read_pod::<SectionHeader64<LE>, R>(r, at, OP)?),
    })
}

/// Checks that a section's bytes lie inside the file.
fn check_data(s: &Section, file_len: u64, what: &str) -> Result<(), ErrorKind> {
    if s.kind == SHT_NOBITS.0 {
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
    let xindex = u64::from(SHN_XINDEX.0);
    if h.shnum == 0 || h.shstrndx == xindex {
        let zero = read_section(r, h, 0)?;
        if h.shnum == 0 {
            h.shnum = zero.size;
        }
        if h.shstrndx == xindex {
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

/// Little-endian field readers for the tests, which build and patch ELF
/// files byte by byte.
#[cfg(test)]
fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[cfg(test)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests;

//! ELF lookup over in-memory files, ELF32 and ELF64, and the malformed cases.

use super::*;

const NAME: &[u8] = b".fim_reserved_offset";

/// Offsets of header fields, per class: (e_shoff, e_shentsize, e_shnum, e_shstrndx).
fn fields(class: ElfClass) -> (usize, usize, usize, usize) {
    match class {
        ElfClass::Elf32 => (0x20, 0x2e, 0x30, 0x32),
        ElfClass::Elf64 => (0x28, 0x3a, 0x3c, 0x3e),
    }
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// Builds an ELF with a null section, then `sections` (name, type, data), then
/// `.shstrtab`; section headers last. Returns the bytes.
fn build(class: ElfClass, sections: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
    let (hlen, shent) = match class {
        ElfClass::Elf32 => (52usize, 40usize),
        ElfClass::Elf64 => (64, 64),
    };
    let mut out = vec![0u8; hlen];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = if class == ElfClass::Elf32 { 1 } else { 2 };
    out[5] = 1;
    out[6] = 1;
    let mut names = vec![0u8];
    let mut table = Vec::new(); // (name_off, type, offset, size)
    for &(name, kind, data) in sections {
        table.push((names.len(), kind, out.len(), data.len()));
        names.extend_from_slice(name);
        names.push(0);
        out.extend_from_slice(data);
    }
    let strtab_name = names.len();
    names.extend_from_slice(b".shstrtab\0");
    table.push((strtab_name, 3, out.len(), names.len()));
    out.extend_from_slice(&names);
    let shoff = out.len();
    out.resize(shoff + shent, 0); // null section
    for (name, kind, off, size) in table {
        let mut sh = vec![0u8; shent];
        put(&mut sh, 0, &(name as u32).to_le_bytes());
        put(&mut sh, 4, &kind.to_le_bytes());
        match class {
            ElfClass::Elf32 => {
                put(&mut sh, 16, &(off as u32).to_le_bytes());
                put(&mut sh, 20, &(size as u32).to_le_bytes());
            }
            ElfClass::Elf64 => {
                put(&mut sh, 24, &(off as u64).to_le_bytes());
                put(&mut sh, 32, &(size as u64).to_le_bytes());
            }
        }
        out.extend_from_slice(&sh);
    }
    let (f_off, f_ent, f_num, f_str) = fields(class);
    let n = sections.len() + 2;
    match class {
        ElfClass::Elf32 => put(&mut out, f_off, &(shoff as u32).to_le_bytes()),
        ElfClass::Elf64 => put(&mut out, f_off, &(shoff as u64).to_le_bytes()),
    }
    put(&mut out, f_ent, &(shent as u16).to_le_bytes());
    put(&mut out, f_num, &(n as u16).to_le_bytes());
    put(&mut out, f_str, &((n - 1) as u16).to_le_bytes());
    out
}

fn lookup(b: &[u8]) -> Result<u32, ErrorKind> {
    let found = find_section(b, b.len() as u64, NAME)?;
    read_u32_section(b, b.len() as u64, &found.section)
}

const SECTIONS: &[(&[u8], u32, &[u8])] = &[
    (b".text", 1, b"\x90\x90\x90\x90"),
    (b".fim_reserved_offset_x", 1, b"\x09\x09\x09\x09"),
    (b".fim_reserved_offset", 1, b"\x78\x56\x34\x12"),
    (b".fim_reserved", 1, b"\x01\x00\x00\x00"),
];

#[test]
fn finds_the_section_in_both_classes() {
    for class in [ElfClass::Elf32, ElfClass::Elf64] {
        let b = build(class, SECTIONS);
        assert_eq!(lookup(&b).unwrap(), 0x1234_5678, "{class:?}");
        let h = read_header(&b[..], b.len() as u64).unwrap();
        assert_eq!(h.class, class);
        assert!(!h.fim_magic);
    }
}

#[test]
fn reports_the_flatimage_mark() {
    let mut b = build(ElfClass::Elf64, SECTIONS);
    b[8..11].copy_from_slice(b"FI\x01");
    assert!(read_header(&b[..], b.len() as u64).unwrap().fim_magic);
    assert_eq!(lookup(&b).unwrap(), 0x1234_5678);
}

#[test]
fn extended_numbering() {
    for class in [ElfClass::Elf32, ElfClass::Elf64] {
        let mut b = build(class, SECTIONS);
        let (f_off, _, f_num, f_str) = fields(class);
        let shoff = match class {
            ElfClass::Elf32 => u64::from(u32_at(&b, f_off)),
            ElfClass::Elf64 => u64_at(&b, f_off),
        } as usize;
        let n = u16_at(&b, f_num) as usize;
        // Move the count to section 0's sh_size and the index to its sh_link.
        put(&mut b, f_num, &0u16.to_le_bytes());
        put(&mut b, f_str, &0xffffu16.to_le_bytes());
        match class {
            ElfClass::Elf32 => {
                put(&mut b, shoff + 20, &(n as u32).to_le_bytes());
                put(&mut b, shoff + 24, &((n - 1) as u32).to_le_bytes());
            }
            ElfClass::Elf64 => {
                put(&mut b, shoff + 32, &(n as u64).to_le_bytes());
                put(&mut b, shoff + 40, &((n - 1) as u32).to_le_bytes());
            }
        }
        assert_eq!(lookup(&b).unwrap(), 0x1234_5678, "{class:?}");
    }
}

#[test]
fn not_elf_and_unsupported() {
    assert!(matches!(lookup(b""), Err(ErrorKind::NotElf)));
    assert!(matches!(
        lookup(b"#!/bin/sh\necho hello world\n"),
        Err(ErrorKind::NotElf)
    ));
    let mut b = build(ElfClass::Elf64, SECTIONS);
    b[5] = 2;
    assert!(matches!(
        lookup(&b),
        Err(ErrorKind::UnsupportedElf("big-endian"))
    ));
    b[5] = 1;
    b[4] = 7;
    assert!(matches!(lookup(&b), Err(ErrorKind::UnsupportedElf(_))));
    let b = build(ElfClass::Elf64, SECTIONS);
    assert!(matches!(lookup(&b[..40]), Err(ErrorKind::MalformedElf(_))));
}

#[test]
fn missing_section() {
    let b = build(
        ElfClass::Elf64,
        &[(b".text", 1, b"abcd"), (b".fim_reserved", 1, b"abcd")],
    );
    assert!(matches!(
        lookup(&b),
        Err(ErrorKind::NoReservedSection { sections: 4 })
    ));
    let mut b = build(ElfClass::Elf64, SECTIONS);
    put(&mut b, 0x28, &0u64.to_le_bytes()); // stripped: no section headers
    assert!(matches!(
        lookup(&b),
        Err(ErrorKind::NoReservedSection { sections: 0 })
    ));
    let mut b = build(ElfClass::Elf64, SECTIONS);
    put(&mut b, 0x3e, &0u16.to_le_bytes()); // no name table
    assert!(matches!(
        lookup(&b),
        Err(ErrorKind::NoReservedSection { .. })
    ));
}

#[test]
fn small_or_empty_section() {
    let b = build(ElfClass::Elf64, &[(NAME, 1, b"\x01\x02")]);
    assert!(matches!(
        lookup(&b),
        Err(ErrorKind::SectionTooSmall { size: 2 })
    ));
    let b = build(ElfClass::Elf32, &[(NAME, 8, b"\x01\x02\x03\x04")]);
    assert!(matches!(lookup(&b), Err(ErrorKind::MalformedElf(m)) if m.contains("SHT_NOBITS")));
}

#[test]
fn malformed_tables_are_errors_not_panics() {
    let base = build(ElfClass::Elf64, SECTIONS);
    let patches: &[(usize, &[u8])] = &[
        (0x28, &u64::MAX.to_le_bytes()),                 // e_shoff huge
        (0x28, &(base.len() as u64 - 10).to_le_bytes()), // table past the end
        (0x3a, &8u16.to_le_bytes()),                     // e_shentsize too small
        (0x3a, &0xffffu16.to_le_bytes()),                // entries huge
        (0x3c, &0xffffu16.to_le_bytes()),                // count huge
        (0x3e, &0x00ffu16.to_le_bytes()),                // strndx out of range
    ];
    for &(at, v) in patches {
        let mut b = base.clone();
        put(&mut b, at, v);
        assert!(
            matches!(lookup(&b), Err(ErrorKind::MalformedElf(_))),
            "patch {at:#x}"
        );
    }
    // Name offsets and section data pointing outside: never a panic.
    for cut in 0..base.len() {
        let _ = lookup(&base[..cut]);
    }
    for at in 64..base.len() {
        let mut b = base.clone();
        b[at] = 0xff;
        let _ = lookup(&b);
    }
}

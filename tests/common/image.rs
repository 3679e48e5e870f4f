//! FlatImage binaries built for real: an ELF64 with a `.fim_reserved_offset`
//! section and a `.shstrtab`, the 4 MiB reserved space, then `[u64 size]DWARFS…`
//! blocks. Shared by the image and the launcher tests.

use fimfs::launch::RESERVED_SIZE;

/// How to build a test image.
pub struct Spec {
    /// Name of the section holding the offset.
    pub section: &'static [u8],
    /// Its contents (normally the u32 offset).
    pub section_data: Vec<u8>,
    /// Set ELF header bytes 8, 9, 10 to `F`, `I`, 0x01.
    pub fim_mark: bool,
    /// Where the reserved space starts; `None` for an ELF without one.
    pub reserved_at: Option<u64>,
    pub overlay: u8,
    pub casefold: u8,
    /// Appended after the reserved space, as raw bytes (see [`block`]).
    pub blocks: Vec<Vec<u8>>,
}

pub const RESERVED_AT: u64 = 8192;

impl Spec {
    pub fn new() -> Spec {
        Spec {
            section: b".fim_reserved_offset",
            section_data: (RESERVED_AT as u32).to_le_bytes().to_vec(),
            fim_mark: true,
            reserved_at: Some(RESERVED_AT),
            overlay: 0,
            casefold: 0,
            blocks: vec![dwarfs(100, 1), dwarfs(4000, 2)],
        }
    }
}

/// A block: the u64 size field, then `img`.
pub fn block(size: u64, img: &[u8]) -> Vec<u8> {
    let mut out = size.to_le_bytes().to_vec();
    out.extend_from_slice(img);
    out
}

/// A well-formed DwarFS image of `size` bytes: `DWARFS`, then filler.
pub fn dwarfs_image(size: usize, seed: u8) -> Vec<u8> {
    let mut img = b"DWARFS".to_vec();
    img.extend((6..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    img
}

/// A well-formed block holding a DwarFS image of `size` bytes.
pub fn dwarfs(size: usize, seed: u8) -> Vec<u8> {
    block(size as u64, &dwarfs_image(size, seed))
}

/// ELF64 header, section data, `.shstrtab`, section headers (null, ours,
/// `.shstrtab`), padding, reserved space (a non-zero pattern, so a stray
/// write shows), blocks.
pub fn build(spec: &Spec) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    if spec.fim_mark {
        out[8..11].copy_from_slice(b"FI\x01");
    }
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    let data_off = out.len() as u64;
    out.extend_from_slice(&spec.section_data);
    let mut names = b"\0".to_vec();
    names.extend_from_slice(spec.section);
    names.extend_from_slice(b"\0.shstrtab\0");
    let strtab_off = out.len() as u64;
    out.extend_from_slice(&names);
    let shoff = out.len() as u64;
    out.extend_from_slice(&[0u8; 64]);
    let ours = (1u32, 1u32, data_off, spec.section_data.len() as u64);
    let strtab = (
        2 + spec.section.len() as u32,
        3u32,
        strtab_off,
        names.len() as u64,
    );
    for (name, kind, off, size) in [ours, strtab] {
        let mut sh = [0u8; 64];
        sh[0..4].copy_from_slice(&name.to_le_bytes());
        sh[4..8].copy_from_slice(&kind.to_le_bytes());
        sh[24..32].copy_from_slice(&off.to_le_bytes());
        sh[32..40].copy_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&sh);
    }
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    out[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    out[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    if let Some(at) = spec.reserved_at {
        assert!(
            out.len() as u64 <= at,
            "test ELF too big for its reserved offset"
        );
        out.resize(at as usize, 0xcc);
        out.extend((0..RESERVED_SIZE).map(|i| (i % 251) as u8 | 1));
        out[at as usize + 9] = spec.overlay;
        out[at as usize + 10] = spec.casefold;
    }
    for b in &spec.blocks {
        out.extend_from_slice(b);
    }
    out
}

/// Asserts `after` equals `before` except at `at`, where it is `want`.
pub fn assert_only_byte_changed(before: &[u8], after: &[u8], at: usize, want: u8) {
    assert_eq!(before.len(), after.len(), "file length changed");
    assert_eq!(after[at], want, "byte {at}");
    let diff: Vec<usize> = (0..before.len())
        .filter(|&i| i != at && before[i] != after[i])
        .collect();
    assert!(diff.is_empty(), "unexpected bytes changed at {diff:?}");
}

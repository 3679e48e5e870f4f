//! Sections: where an image starts in its file, and where each of its
//! sections lies.
//!
//! An image is a run of sections, each a 64-byte header (see
//! [`BlockLoc`]) and a payload. It may sit inside a larger file (`offset`,
//! `size`), and may carry arbitrary bytes before its first section
//! (`mkdwarfs --header`): when no header is at `offset`, the first
//! [`SCAN_LIMIT`] bytes are scanned for one, as dwarfs' `image_offset=auto`
//! does. Offsets in the section index are relative to the first section.
//!
//! Invariants of a [`SectionMap`]: every section lies inside the image and
//! the sections tile it exactly, from the first header to the end; every
//! header has the magic, a version in 2.3–2.5, its position as its number
//! and a known type; there is exactly one schema and one metadata section.
//! Payload checksums are checked here for the metadata sections only
//! ([`read_payload`]); data blocks are checked by the cache at load.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3Default;

use super::BlockLoc;
use super::codec::Codec;
use super::error::{
    BLOCK, HISTORY, Located, METADATA_V2, METADATA_V2_SCHEMA, Reason, SECTION_INDEX, SectionId,
};

/// Size of a section header.
pub const HEADER_SIZE: u64 = 64;

/// How far past `offset` the opener looks for the first section header when
/// none is at `offset`: 64 MiB, far more than any `--header` script, and a
/// bound on the work a file that is no image at all can cause.
pub const SCAN_LIMIT: u64 = 64 << 20;

/// The scan reads this much at a time.
const SCAN_WINDOW: usize = 1 << 20;

/// Where the XXH3 checksum starts in the header (the section number).
const CHECKED_FROM: usize = 48;

/// One section header, as read.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub major: u8,
    pub minor: u8,
    pub number: u32,
    pub kind: u16,
    pub codec: u16,
    pub size: u64,
    raw: [u8; 64],
}

impl Header {
    /// A header if `raw` starts with the magic; nothing else is checked.
    pub fn parse(raw: [u8; 64]) -> Option<Header> {
        if &raw[..6] != b"DWARFS" {
            return None;
        }
        let le32 = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let le16 = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&raw[56..64]);
        Some(Header {
            major: raw[6],
            minor: raw[7],
            number: le32(48),
            kind: le16(52),
            codec: le16(54),
            size: u64::from_le_bytes(size),
            raw,
        })
    }

    fn version_ok(&self) -> bool {
        self.major == 2 && (3..=5).contains(&self.minor)
    }

    /// Whether `payload` matches the header's XXH3-64 checksum.
    pub fn checksum_ok(&self, payload: &[u8]) -> bool {
        let mut h = Xxh3Default::new();
        h.update(&self.raw[CHECKED_FROM..]);
        h.update(payload);
        self.raw[40..48] == h.digest().to_le_bytes()
    }
}

fn known_kind(kind: u16) -> bool {
    matches!(
        kind,
        BLOCK | METADATA_V2_SCHEMA | METADATA_V2 | SECTION_INDEX | HISTORY
    )
}

/// One section: its identity and where its payload lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub id: SectionId,
    pub loc: BlockLoc,
}

/// The sections of one image.
#[derive(Debug, Clone)]
pub struct SectionMap {
    /// Format version of the first section.
    pub version: (u8, u8),
    /// File offset of the first section header.
    pub start: u64,
    /// File offset just past the image.
    pub end: u64,
    /// The data blocks, in order: chunk block numbers index this.
    pub blocks: Vec<BlockLoc>,
    pub schema: Section,
    pub metadata: Section,
    /// Whether the section index was used (else the headers were walked).
    pub indexed: bool,
}

fn io_err(section: Option<SectionId>, e: &std::io::Error) -> Located {
    Located::new(section, Reason::Io(e.kind(), e.to_string()))
}

fn read_header(file: &File, at: u64) -> Result<Option<Header>, std::io::Error> {
    let mut raw = [0u8; 64];
    file.read_exact_at(&mut raw, at)?;
    Ok(Header::parse(raw))
}

/// Finds and maps the sections of the image at `offset` in `file`, `size`
/// bytes long (to the end of the file when `None`); `label` names it in
/// log lines.
pub fn open(
    file: &File,
    offset: u64,
    size: Option<u64>,
    label: &Path,
) -> Result<SectionMap, Located> {
    let file_len = file.metadata().map_err(|e| io_err(None, &e))?.len();
    let end = match size {
        Some(s) => offset.checked_add(s).filter(|&e| e <= file_len),
        None => Some(file_len).filter(|&l| offset <= l),
    };
    let end = end.ok_or_else(|| {
        let msg = format!("offset {offset} size {size:?} exceed the file's {file_len} bytes");
        Located::new(None, Reason::Bounds(msg))
    })?;
    let start = find_start(file, offset, end)?;
    let first = read_header(file, start)
        .map_err(|e| io_err(None, &e))?
        .ok_or_else(|| Located::new(None, Reason::NotAnImage))?;
    if !first.version_ok() {
        let (major, minor) = (first.major, first.minor);
        let id = SectionId {
            number: 0,
            kind: first.kind,
        };
        return Err(Located::new(Some(id), Reason::Version { major, minor }));
    }
    let (headers, indexed) = match from_index(file, start, end, &first, label) {
        Some(h) => (h, true),
        None => (walk(file, start, end)?, false),
    };
    classify(&headers, (first.major, first.minor), start, end, indexed)
}

/// A plausible first header at `at`: the magic, major 2, number 0, a known
/// type, a payload inside the image, and either the image's end or another
/// header (number 1) right after it.
fn plausible_first(file: &File, at: u64, end: u64) -> bool {
    let Ok(Some(h)) = read_header(file, at) else {
        return false;
    };
    if h.major != 2 || h.number != 0 || !known_kind(h.kind) {
        return false;
    }
    let next = at
        .checked_add(HEADER_SIZE)
        .and_then(|p| p.checked_add(h.size));
    match next {
        Some(n) if n == end => true,
        Some(n) if n.saturating_add(HEADER_SIZE) <= end => {
            matches!(read_header(file, n), Ok(Some(h2)) if h2.major == 2 && h2.number == 1)
        }
        _ => false,
    }
}

fn find_start(file: &File, offset: u64, end: u64) -> Result<u64, Located> {
    if end.saturating_sub(offset) < HEADER_SIZE {
        return Err(Located::new(None, Reason::NotAnImage));
    }
    // A header at `offset`, of any version: a wrong one is then refused
    // by name rather than scanned past.
    if let Ok(Some(_)) = read_header(file, offset) {
        return Ok(offset);
    }
    let limit = end.min(offset.saturating_add(SCAN_LIMIT));
    let mut buf = vec![0u8; SCAN_WINDOW];
    let mut pos = offset;
    while pos < limit {
        let want = usize::try_from((end - pos).min(SCAN_WINDOW as u64)).unwrap_or(SCAN_WINDOW);
        let window = buf.get_mut(..want).unwrap_or_default();
        file.read_exact_at(window, pos)
            .map_err(|e| io_err(None, &e))?;
        for (i, w) in window.windows(7).enumerate() {
            let at = pos + i as u64;
            if at >= limit {
                break;
            }
            if w == b"DWARFS\x02" && plausible_first(file, at, end) {
                return Ok(at);
            }
        }
        // Windows overlap by 6 bytes so that no magic is cut in two.
        pos = pos.saturating_add((want as u64).saturating_sub(6).max(1));
        if want < SCAN_WINDOW {
            break;
        }
    }
    Err(Located::new(None, Reason::NotAnImage))
}

/// The headers as the section index lists them, if the image has an index
/// and every header agrees with it; `None` sends the caller to [`walk`].
fn from_index(
    file: &File,
    start: u64,
    end: u64,
    first: &Header,
    label: &Path,
) -> Option<Vec<(u64, Header)>> {
    if (first.major, first.minor) < (2, 4) || end - start < HEADER_SIZE + 8 {
        return None;
    }
    let mut last = [0u8; 8];
    file.read_exact_at(&mut last, end - 8).ok()?;
    let last = u64::from_le_bytes(last);
    let index_at = start.checked_add(last & ((1 << 48) - 1))?;
    if last >> 48 != u64::from(SECTION_INDEX) || index_at.checked_add(HEADER_SIZE)? > end {
        return None;
    }
    let h = read_header(file, index_at).ok()??;
    let count = h.size / 8;
    let fits = h.size == end - index_at - HEADER_SIZE && h.size % 8 == 0;
    if !fits || h.kind != SECTION_INDEX || h.codec != 0 || u64::from(h.number) + 1 != count {
        return None;
    }
    let mut payload = vec![0u8; usize::try_from(h.size).ok()?];
    file.read_exact_at(&mut payload, index_at + HEADER_SIZE)
        .ok()?;
    if !h.checksum_ok(&payload) {
        tracing::warn!(
            "DwarFS image {}: section index checksum mismatch; walking the sections",
            label.display()
        );
        return None;
    }
    let entries: Vec<u64> = payload
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let headers = check_index(file, start, end, &entries);
    if headers.is_none() {
        tracing::warn!(
            "DwarFS image {}: section index disagrees with the sections; walking them",
            label.display()
        );
    }
    headers
}

/// Reads the header at every offset of the index and checks it agrees:
/// number, type, and a payload that ends where the next section starts.
fn check_index(file: &File, start: u64, end: u64, entries: &[u64]) -> Option<Vec<(u64, Header)>> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = start.checked_add(e & ((1 << 48) - 1))?;
        let next = match entries.get(i + 1) {
            Some(n) => start.checked_add(n & ((1 << 48) - 1))?,
            None => end,
        };
        if (i == 0 && at != start) || at.checked_add(HEADER_SIZE)? > end {
            return None;
        }
        let h = read_header(file, at).ok()??;
        let stop = at.checked_add(HEADER_SIZE)?.checked_add(h.size)?;
        let agrees = u64::from(h.kind) == e >> 48 && h.number as usize == i && stop == next;
        if !agrees {
            return None;
        }
        out.push((at, h));
    }
    Some(out)
}

/// Reads the headers one after the other, from the first to the image's end.
fn walk(file: &File, start: u64, end: u64) -> Result<Vec<(u64, Header)>, Located> {
    let mut out: Vec<(u64, Header)> = Vec::new();
    let mut at = start;
    while at < end {
        let number = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let here = SectionId { number, kind: 0 };
        if end - at < HEADER_SIZE {
            let msg = format!("{} bytes after the last section", end - at);
            return Err(Located::new(Some(here), Reason::OutOfBounds(msg)));
        }
        let h = read_header(file, at)
            .map_err(|e| io_err(Some(here), &e))?
            .ok_or_else(|| {
                let msg = format!("no magic at offset {}", at - start);
                Located::new(Some(here), Reason::BadHeader(msg))
            })?;
        let stop = at
            .checked_add(HEADER_SIZE)
            .and_then(|p| p.checked_add(h.size))
            .filter(|&s| s <= end)
            .ok_or_else(|| {
                let id = SectionId {
                    number,
                    kind: h.kind,
                };
                let msg = format!("payload of {} bytes ends past the image", h.size);
                Located::new(Some(id), Reason::OutOfBounds(msg))
            })?;
        out.push((at, h));
        at = stop;
    }
    Ok(out)
}

/// Checks every header and sorts the sections into blocks and metadata.
fn classify(
    headers: &[(u64, Header)],
    version: (u8, u8),
    start: u64,
    end: u64,
    indexed: bool,
) -> Result<SectionMap, Located> {
    let mut blocks = Vec::new();
    let (mut schema, mut metadata) = (None, None);
    for (i, (at, h)) in headers.iter().enumerate() {
        let number = u32::try_from(i)
            .map_err(|_| Located::new(None, Reason::BadHeader("more than 2^32 sections".into())))?;
        let id = SectionId {
            number,
            kind: h.kind,
        };
        check_header(id, h)?;
        let loc = BlockLoc {
            header: *at,
            payload: at + HEADER_SIZE,
            len: h.size,
            codec: Codec::from_u16(h.codec),
        };
        let section = Section { id, loc };
        let slot = match h.kind {
            BLOCK => {
                blocks.push(loc);
                continue;
            }
            METADATA_V2_SCHEMA => &mut schema,
            METADATA_V2 => &mut metadata,
            _ => continue,
        };
        if slot.replace(section).is_some() {
            return Err(Located::new(Some(id), Reason::Duplicate(h.kind)));
        }
    }
    let missing = |kind| Located::new(None, Reason::Missing(kind));
    Ok(SectionMap {
        version,
        start,
        end,
        blocks,
        schema: schema.ok_or_else(|| missing(METADATA_V2_SCHEMA))?,
        metadata: metadata.ok_or_else(|| missing(METADATA_V2))?,
        indexed,
    })
}

fn check_header(id: SectionId, h: &Header) -> Result<(), Located> {
    if !h.version_ok() {
        let (major, minor) = (h.major, h.minor);
        return Err(Located::new(Some(id), Reason::Version { major, minor }));
    }
    if h.number != id.number {
        let msg = format!("numbered {}", h.number);
        return Err(Located::new(Some(id), Reason::BadHeader(msg)));
    }
    if !known_kind(h.kind) {
        return Err(Located::new(
            Some(id),
            Reason::BadHeader("unknown type".into()),
        ));
    }
    Ok(())
}

/// Reads a section's payload (at most `max` bytes) and checks its checksum.
pub fn read_payload(file: &File, section: &Section, max: usize) -> Result<Vec<u8>, Located> {
    let id = Some(section.id);
    let len = usize::try_from(section.loc.len)
        .ok()
        .filter(|&l| l <= max)
        .ok_or_else(|| {
            let msg = format!("payload of {} bytes, more than {max}", section.loc.len);
            Located::new(id, Reason::OutOfBounds(msg))
        })?;
    let mut raw = [0u8; 64];
    file.read_exact_at(&mut raw, section.loc.header)
        .map_err(|e| io_err(id, &e))?;
    let header = Header::parse(raw)
        .ok_or_else(|| Located::new(id, Reason::BadHeader("magic changed".into())))?;
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, section.loc.payload)
        .map_err(|e| io_err(id, &e))?;
    if !header.checksum_ok(&payload) {
        return Err(Located::new(id, Reason::Checksum));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn section(number: u32, kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = b"DWARFS\x02\x05".to_vec();
        h.extend_from_slice(&[0u8; 40]);
        h.extend_from_slice(&number.to_le_bytes());
        h.extend_from_slice(&kind.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let mut x = Xxh3Default::new();
        x.update(&h[48..64]);
        x.update(payload);
        h[40..48].copy_from_slice(&x.digest().to_le_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn image() -> Vec<u8> {
        let mut v = section(0, BLOCK, b"data");
        v.extend(section(1, METADATA_V2_SCHEMA, b"schema"));
        v.extend(section(2, METADATA_V2, b"meta"));
        v
    }

    fn file_with(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "fimfs-sections-{}-{}",
            std::process::id(),
            xxhash_rust::xxh3::xxh3_64(bytes)
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn headers_are_walked_and_classified() {
        let f = file_with(&image());
        let map = open(&f, 0, None, Path::new("t")).unwrap();
        assert!(!map.indexed);
        assert_eq!(map.blocks.len(), 1);
        assert_eq!(map.blocks[0].payload, 64);
        assert_eq!(map.blocks[0].len, 4);
        assert_eq!(map.metadata.id.number, 2);
        assert_eq!(read_payload(&f, &map.metadata, 100).unwrap(), b"meta");
        assert!(read_payload(&f, &map.metadata, 3).is_err(), "bounded");
    }

    /// `image()` with a section index, behind `header` bytes.
    fn indexed_image(header: usize) -> Vec<u8> {
        let body = image();
        let mut entries = Vec::new();
        let mut at = 0usize;
        while at < body.len() {
            let kind = u16::from_le_bytes([body[at + 52], body[at + 53]]);
            entries.push((u64::from(kind) << 48) | at as u64);
            let size = u64::from_le_bytes(body[at + 56..at + 64].try_into().unwrap());
            at += 64 + size as usize;
        }
        entries.push((u64::from(SECTION_INDEX) << 48) | body.len() as u64);
        let payload: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        let mut out = vec![b'#'; header];
        out.extend(body);
        out.extend(section(3, SECTION_INDEX, &payload));
        out
    }

    #[test]
    fn the_section_index_is_used_when_it_agrees() {
        for header in [0, 100] {
            let f = file_with(&indexed_image(header));
            let map = open(&f, 0, None, Path::new("t")).unwrap();
            assert!(map.indexed, "header {header}");
            assert_eq!(map.start, header as u64);
            assert_eq!(map.metadata.loc.header, header as u64 + 64 + 4 + 64 + 6);
        }
        let mut bad = indexed_image(0);
        let n = bad.len();
        bad[n - 16] ^= 1; // the METADATA_V2 entry's offset
        let map = open(&file_with(&bad), 0, None, Path::new("t")).unwrap();
        assert!(!map.indexed, "a broken index is not used");
        assert_eq!(map.blocks.len(), 1);
    }

    #[test]
    fn the_scan_is_bounded_and_skips_false_magic() {
        let mut bytes = b"DWARFS\x02 is text, not a header".repeat(10);
        bytes.extend(image());
        let f = file_with(&bytes);
        let map = open(&f, 0, None, Path::new("t")).unwrap_err();
        // A header-like text at offset 0 is taken as the header and refused.
        assert!(matches!(
            map.reason,
            Reason::Version { .. } | Reason::BadHeader(_)
        ));
        let mut bytes = vec![b'x'; 1000];
        bytes.extend(image());
        let f = file_with(&bytes);
        assert_eq!(open(&f, 0, None, Path::new("t")).unwrap().start, 1000);
        assert_eq!(
            open(&f, 10, Some(bytes.len() as u64 - 10), Path::new("t"))
                .unwrap()
                .start,
            1000
        );
        let f = file_with(&vec![0u8; 4096]);
        assert_eq!(
            open(&f, 0, None, Path::new("t")).unwrap_err().reason,
            Reason::NotAnImage
        );
    }

    #[test]
    fn duplicates_missing_and_bad_numbers_are_refused() {
        let mut v = image();
        v.extend(section(3, METADATA_V2, b"again"));
        let e = open(&file_with(&v), 0, None, Path::new("t")).unwrap_err();
        assert_eq!(e.reason, Reason::Duplicate(METADATA_V2));
        let v = section(0, BLOCK, b"only");
        let e = open(&file_with(&v), 0, None, Path::new("t")).unwrap_err();
        assert_eq!(e.reason, Reason::Missing(METADATA_V2_SCHEMA));
        let mut v = section(0, BLOCK, b"x");
        v.extend(section(5, METADATA_V2_SCHEMA, b"s"));
        let e = open(&file_with(&v), 0, None, Path::new("t")).unwrap_err();
        assert!(matches!(e.reason, Reason::BadHeader(_)), "{e:?}");
        assert_eq!(e.section.unwrap().number, 1);
    }
}

//! Metadata: the schema and metadata sections decoded, parsed with the
//! `dwarfs` crate, and unpacked into plain tables ([`Tables`]).
//!
//! Every call into the crate runs after the pre-flight checks of `frozen`
//! (which bound what it allocates) and under `catch_unwind` (it panics on
//! some inputs); a panic becomes an error naming the section. The packed
//! encodings (delta-coded chunk table and directories, run-coded shared
//! files table, packed and FSST string tables) are undone here with checked
//! arithmetic; nothing here trusts an index yet: `tree` validates.
//!
//! The crate's `Metadata` has no field for sub-second times (which images
//! of mkdwarfs ≥ 0.14 may store; 0.5–0.13 store whole seconds): such times
//! are read to the second, with one log line.
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use dwarfs::metadata::{DirEntry, InodeData, Metadata, Schema, StringTable};

use super::codec::decode_all;
use super::error::{Located, Reason, SectionId, invalid};
use super::frozen;
use super::sections::{Section, SectionMap, read_payload};

/// Largest schema section, decoded (real ones are about 2 KiB).
pub const SCHEMA_MAX: usize = 64 << 10;

/// Largest metadata section, decoded: the crate addresses frozen data in
/// u32 bits, so 512 MiB is the most it reads correctly (about 15 million
/// files).
pub const METADATA_MAX: usize = 512 << 20;

/// Strings as one arena: string `i` is `bytes[ends[i]..ends[i + 1]]`.
#[derive(Debug, Default, Clone)]
pub struct Strings {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl Strings {
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.ends.len().saturating_sub(1)
    }

    pub fn get(&self, i: u32) -> Option<&[u8]> {
        let i = i as usize;
        let (a, b) = (*self.ends.get(i)?, *self.ends.get(i + 1)?);
        self.bytes.get(a as usize..b as usize)
    }

    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity()
    }
}

/// How stored times turn into seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    pub base: u64,
    pub resolution: u32,
    pub mtime_only: bool,
}

/// The metadata, unpacked but not yet validated.
#[derive(Debug, Default)]
pub struct Tables {
    pub names: Strings,
    pub links: Strings,
    /// `directories[].first_entry`, unpacked, with the sentinel.
    pub dir_first: Vec<u32>,
    pub dir_entries: Vec<DirEntry>,
    pub inodes: Vec<InodeData>,
    pub chunk_table: Vec<u32>,
    pub chunks: Vec<dwarfs::metadata::Chunk>,
    /// Shared file `i` (from the first shared inode) → its file store.
    pub shared: Vec<u32>,
    pub symlink_table: Vec<u32>,
    pub modes: Vec<u32>,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub devices: Vec<u64>,
    pub block_size: u32,
    pub times: Times,
}

/// Runs `f`, turning a panic into an error for `section`.
fn guarded<T>(section: SectionId, f: impl FnOnce() -> T) -> Result<T, Located> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Located::new(Some(section), Reason::Panic(msg))
    })
}

fn decoded(file: &File, section: &Section, max: usize) -> Result<Vec<u8>, Located> {
    let raw = read_payload(file, section, max)?;
    decode_all(section.loc.codec, &raw, max)
        .map_err(|e| Located::new(Some(section.id), Reason::Codec(e)))
}

/// Reads, checks, decodes, parses and unpacks the metadata of `map`.
/// `label` names the image in log lines.
pub fn load(file: &File, map: &SectionMap, label: &Path) -> Result<Tables, Located> {
    let (sid, mid) = (map.schema.id, map.metadata.id);
    let schema_bytes = decoded(file, &map.schema, SCHEMA_MAX)?;
    frozen::check_schema(&schema_bytes).map_err(|m| Located::new(Some(sid), Reason::Parse(m)))?;
    let schema = guarded(sid, || Schema::parse(&schema_bytes))?
        .map_err(|e| Located::new(Some(sid), Reason::Parse(e.to_string())))?;
    drop(schema_bytes);
    let bytes = decoded(file, &map.metadata, METADATA_MAX)?;
    frozen::census(&schema, &bytes).map_err(|m| invalid(mid, m))?;
    if let Some(m) = frozen::subsecond_multiplier(&schema, &bytes) {
        tracing::warn!(
            "DwarFS image {}: sub-second times (x{m} ns) are read to the second",
            label.display()
        );
    }
    let meta = guarded(mid, || Metadata::parse(&schema, &bytes))?
        .map_err(|e| Located::new(Some(mid), Reason::Parse(e.to_string())))?;
    drop(bytes);
    unpack(mid, meta)
}

/// Undoes the packed encodings.
pub fn unpack(id: SectionId, m: Metadata) -> Result<Tables, Located> {
    if let Some(features) = m.features.as_ref().filter(|f| !f.is_empty()) {
        let list: Vec<String> = features.0.iter().map(|f| f.to_string()).collect();
        let msg = format!("features {}", list.join(", "));
        return Err(Located::new(Some(id), Reason::Unsupported(msg)));
    }
    let opts = m.options.clone().unwrap_or_default();
    let resolution = opts.time_resolution_sec.unwrap_or(1);
    if resolution == 0 {
        return Err(invalid(id, "time resolution of 0 seconds"));
    }
    let dir_entries = m.dir_entries.unwrap_or_default();
    if dir_entries.is_empty() {
        let msg = "no dir_entries (a format before 2.3)".to_string();
        return Err(Located::new(Some(id), Reason::Unsupported(msg)));
    }
    let mut chunk_table = m.chunk_table;
    if opts.packed_chunk_table {
        prefix_sum(&mut chunk_table).ok_or_else(|| invalid(id, "packed chunk_table overflows"))?;
    }
    let mut dir_first: Vec<u32> = m.directories.iter().map(|d| d.first_entry).collect();
    drop(m.directories);
    if opts.packed_directories {
        prefix_sum(&mut dir_first).ok_or_else(|| invalid(id, "packed directories overflow"))?;
    }
    let shared = match m.shared_files_table {
        Some(t) if opts.packed_shared_files_table => unpack_shared(id, &t, m.inodes.len())?,
        Some(t) => t,
        None => Vec::new(),
    };
    Ok(Tables {
        names: strings(id, "names", m.names, m.compact_names)?,
        links: strings(id, "symlinks", m.symlinks, m.compact_symlinks)?,
        dir_first,
        dir_entries,
        inodes: m.inodes,
        chunk_table,
        chunks: m.chunks,
        shared,
        symlink_table: m.symlink_table,
        modes: m.modes,
        uids: m.uids,
        gids: m.gids,
        devices: m.devices.unwrap_or_default(),
        block_size: m.block_size,
        times: Times {
            base: m.timestamp_base,
            resolution,
            mtime_only: opts.mtime_only,
        },
    })
}

fn prefix_sum(v: &mut [u32]) -> Option<()> {
    let mut sum = 0u32;
    for x in v {
        sum = sum.checked_add(*x)?;
        *x = sum;
    }
    Some(())
}

/// Packed, entry `j` says `t[j] + 2` shared inodes use file store `j`.
fn unpack_shared(id: SectionId, t: &[u32], inodes: usize) -> Result<Vec<u32>, Located> {
    let total = t.iter().try_fold(0usize, |sum, &n| {
        sum.checked_add(n as usize)?
            .checked_add(2)
            .filter(|&s| s <= inodes)
    });
    let total = total.ok_or_else(|| invalid(id, "shared_files_table longer than the inodes"))?;
    let mut out = Vec::with_capacity(total);
    for (j, &n) in t.iter().enumerate() {
        let j = u32::try_from(j).map_err(|_| invalid(id, "shared_files_table too long"))?;
        out.extend(std::iter::repeat_n(j, n as usize + 2));
    }
    Ok(out)
}

/// One string table, from its plain or its compact form.
fn strings(
    id: SectionId,
    what: &str,
    plain: Vec<impl AsRef<[u8]>>,
    compact: Option<StringTable>,
) -> Result<Strings, Located> {
    let Some(table) = compact else {
        let total: usize = plain.iter().map(|s| s.as_ref().len()).sum();
        let mut out = Strings {
            bytes: Vec::with_capacity(total),
            ends: Vec::with_capacity(plain.len() + 1),
        };
        out.ends.push(0);
        for s in &plain {
            out.bytes.extend_from_slice(s.as_ref());
            let end = u32::try_from(out.bytes.len())
                .map_err(|_| invalid(id, format!("{what}: more than 4 GiB")))?;
            out.ends.push(end);
        }
        return Ok(out);
    };
    if !plain.is_empty() {
        return Err(invalid(
            id,
            format!("{what}: both a plain and a compact table"),
        ));
    }
    compact_strings(id, what, table)
}

fn compact_strings(id: SectionId, what: &str, t: StringTable) -> Result<Strings, Located> {
    let bad = || invalid(id, format!("{what}: index out of range"));
    let len = u32::try_from(t.buffer.len()).map_err(|_| bad())?;
    let mut ends = t.index;
    if t.packed_index {
        ends.insert(0, 0);
        prefix_sum(&mut ends).ok_or_else(bad)?;
    }
    let sorted = ends.windows(2).all(|w| w[0] <= w[1]);
    if !sorted || ends.last().is_some_and(|&e| e > len) {
        return Err(bad());
    }
    if ends.is_empty() {
        ends.push(0);
    }
    let buffer = Vec::from(t.buffer);
    let Some(symtab) = t.symtab else {
        return Ok(Strings {
            bytes: buffer,
            ends,
        });
    };
    fsst_decode(id, what, &symtab, &buffer, &ends)
}

/// Decodes each FSST-compressed string into a new arena.
fn fsst_decode(
    id: SectionId,
    what: &str,
    symtab: &[u8],
    buffer: &[u8],
    ends: &[u32],
) -> Result<Strings, Located> {
    use dwarfs::fsst::Decoder;
    let bad = |e: String| invalid(id, format!("{what}: FSST: {e}"));
    let decoder = guarded(id, || Decoder::parse(symtab))?.map_err(|e| bad(e.to_string()))?;
    let mut out = Strings {
        bytes: Vec::with_capacity(buffer.len().saturating_mul(2)),
        ends: Vec::with_capacity(ends.len()),
    };
    out.ends.push(0);
    let mut scratch = Vec::new();
    for w in ends.windows(2) {
        let enc = buffer.get(w[0] as usize..w[1] as usize).unwrap_or_default();
        scratch.resize(Decoder::max_decode_len(enc.len()), 0);
        let n = guarded(id, || decoder.decode_into(enc, &mut scratch))?
            .map_err(|e| bad(e.to_string()))?;
        out.bytes
            .extend_from_slice(scratch.get(..n).unwrap_or_default());
        let end = u32::try_from(out.bytes.len()).map_err(|_| bad("over 4 GiB".into()))?;
        out.ends.push(end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: SectionId = SectionId {
        number: 3,
        kind: super::super::error::METADATA_V2,
    };

    #[test]
    fn packed_shared_files_unpack_with_two_more_each() {
        let t = unpack_shared(ID, &[0, 3, 1, 0, 1], 100).unwrap();
        assert_eq!(t, [0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4]);
        assert!(unpack_shared(ID, &[0, 3, 1, 0, 1], 14).is_err());
        assert!(unpack_shared(ID, &[u32::MAX, u32::MAX], 1000).is_err());
    }

    #[test]
    fn string_tables_check_their_index() {
        let mut t = StringTable::default();
        t.buffer = "abcdef".into();
        t.index = vec![2, 3];
        t.packed_index = true;
        let s = compact_strings(ID, "names", t.clone()).unwrap();
        assert_eq!(
            (s.get(0), s.get(1), s.get(2)),
            (Some(&b"ab"[..]), Some(&b"cde"[..]), None)
        );
        t.index = vec![4, 3];
        assert!(compact_strings(ID, "names", t.clone()).is_err());
        t.packed_index = false;
        t.index = vec![0, 4, 2];
        assert!(compact_strings(ID, "names", t.clone()).is_err(), "unsorted");
        t.index = vec![0, 7];
        assert!(compact_strings(ID, "names", t).is_err(), "past the buffer");
    }

    #[test]
    fn a_panic_in_the_crate_becomes_an_error_for_the_section() {
        let e = guarded(ID, || -> u32 { panic!("index out of bounds") }).unwrap_err();
        assert_eq!(e.section, Some(ID));
        assert_eq!(e.reason, Reason::Panic("index out of bounds".into()));
        assert_eq!(guarded(ID, || 7).unwrap(), 7);
    }

    #[test]
    fn a_bad_fsst_table_is_an_error_not_a_panic() {
        let mut t = StringTable::default();
        t.buffer = vec![0u8, 1, 0xff].into();
        t.index = vec![0, 3];
        t.symtab = Some(vec![1, 2, 3].into());
        assert!(compact_strings(ID, "names", t).is_err());
    }
}

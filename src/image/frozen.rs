//! Pre-flight checks that make the `dwarfs` crate's decoders safe to call on
//! hostile bytes: they bound what the crate will allocate *before* it runs.
//!
//! The crate trusts counts read from its input: a thrift map's length
//! becomes a `Vec::with_capacity` (an allocation failure aborts the process,
//! which `catch_unwind` cannot stop), and a frozen list of N elements of
//! zero bits costs N iterations and N elements in memory for no bytes of
//! input. So, before each parse:
//! - [`check_schema`] walks the thrift compact encoding of the schema and
//!   refuses any map that claims more entries than the bytes left could hold;
//! - [`census`] reads, with the crate's own layout rules, the element count
//!   of every list in the frozen metadata (and the length of every string in
//!   a list of strings) and refuses metadata whose lists claim more elements
//!   than its bits could store (an element of zero bits counts as one bit),
//!   more string bytes than the buffer holds, or an estimated in-memory size
//!   above [`parsed_limit`].
//!
//! The field numbers are those of dwarfs' `metadata.thrift` (v2.3–2.5), the
//! same the crate's `Metadata` declares in order.
use dwarfs::metadata::{Schema, SchemaLayout};

/// The most the parsed metadata may cost in memory, whatever its size.
pub const PARSED_MAX: u64 = 4 << 30;

/// What metadata of `len` decoded bytes may cost once parsed: 32 bytes per
/// byte (a packed inode of 8 bits unpacks to 32 bytes) plus 64 MiB, at most
/// [`PARSED_MAX`].
pub fn parsed_limit(len: usize) -> u64 {
    (len as u64)
        .saturating_mul(32)
        .saturating_add(64 << 20)
        .min(PARSED_MAX)
}

/// Nested structs deeper than this are refused (the schema nests 3 deep).
const MAX_DEPTH: u32 = 16;

/// Checks that the thrift compact encoding of a schema is well formed and
/// that no map claims more entries than the bytes left (2 bytes an entry).
pub fn check_schema(bytes: &[u8]) -> Result<(), String> {
    let mut t = Thrift { rest: bytes };
    t.strukt(0)?;
    Ok(())
}

struct Thrift<'a> {
    rest: &'a [u8],
}

impl Thrift<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.rest.split_first().ok_or("schema ends early")?;
        self.rest = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u32, String> {
        let mut x = 0u32;
        for i in 0..5 {
            let b = self.byte()?;
            x |= u32::from(b & 0x7f) << (i * 7);
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err("schema varint too long".into())
    }

    fn strukt(&mut self, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("schema nests too deep".into());
        }
        loop {
            let b = self.byte()?;
            if b == 0 {
                return Ok(());
            }
            if b >> 4 == 0 {
                self.varint()?;
            }
            match b & 0xf {
                1 | 2 => {}
                t => self.value(t, depth)?,
            }
        }
    }

    fn value(&mut self, tag: u8, depth: u32) -> Result<(), String> {
        match tag {
            0..=2 => self.byte().map(drop),
            4 | 5 => self.varint().map(drop),
            8 => {
                let len = self.varint()? as usize;
                let (_, rest) = self.rest.split_at_checked(len).ok_or("schema ends early")?;
                self.rest = rest;
                Ok(())
            }
            11 => self.map(depth),
            12 => self.strukt(depth + 1),
            t => Err(format!("schema type tag {t} is not read")),
        }
    }

    fn map(&mut self, depth: u32) -> Result<(), String> {
        let len = self.varint()? as usize;
        if len == 0 {
            return Ok(());
        }
        let kv = self.byte()?;
        if len > self.rest.len() / 2 {
            return Err(format!("schema map claims {len} entries"));
        }
        let bool_free = |t: u8| if t == 1 || t == 2 { 0 } else { t };
        for _ in 0..len {
            self.value(bool_free(kv >> 4), depth + 1)?;
            self.value(bool_free(kv & 0xf), depth + 1)?;
        }
        Ok(())
    }
}

/// A position in frozen data, as the crate's deserializer keeps it.
#[derive(Clone, Copy)]
struct At<'a> {
    layout: Option<&'a SchemaLayout>,
    bit: u64,
    storage: u64,
}

struct Frozen<'a> {
    schema: &'a Schema,
    bytes: &'a [u8],
}

impl<'a> Frozen<'a> {
    fn layout(&self, id: i16) -> Option<&'a SchemaLayout> {
        let id = usize::try_from(id).ok()?;
        self.schema.layouts.0.get(id)?.as_ref()
    }

    fn field(&self, at: At<'a>, id: usize) -> At<'a> {
        let field = at.layout.and_then(|l| l.fields.0.get(id)?.as_ref());
        match field {
            Some(f) => {
                let o = i64::from(f.offset);
                let bits = if o >= 0 { o * 8 } else { -o };
                At {
                    layout: self.layout(f.layout_id),
                    bit: at.bit.saturating_add(bits as u64),
                    storage: at.storage,
                }
            }
            None => At { layout: None, ..at },
        }
    }

    /// The absolute bit position, refused where the crate's u32 would wrap.
    fn position(&self, at: At<'a>) -> Result<u64, String> {
        at.storage
            .checked_mul(8)
            .and_then(|s| s.checked_add(at.bit))
            .filter(|&p| p <= u64::from(u32::MAX))
            .ok_or_else(|| "frozen position beyond 2^32 bits".into())
    }

    fn uint(&self, at: At<'a>) -> Result<u64, String> {
        let Some(layout) = at.layout else {
            return Ok(0);
        };
        let bits = u64::try_from(layout.bits).unwrap_or(0);
        if !layout.fields.0.is_empty() || !(1..=64).contains(&bits) {
            return Err(format!("integer layout of {} bits", layout.bits));
        }
        let pos = self.position(at)?;
        let mut v = 0u64;
        for k in 0..bits {
            let p = pos.saturating_add(k);
            let byte = self
                .bytes
                .get((p / 8) as usize)
                .ok_or("frozen integer past the end")?;
            v |= u64::from((byte >> (p % 8)) & 1) << k;
        }
        Ok(v)
    }

    fn present(&self, at: At<'a>) -> Result<Option<At<'a>>, String> {
        let flag = self.field(at, 1);
        if flag.layout.is_none() {
            return Ok(None);
        }
        let pos = self.position(flag)?;
        let byte = self
            .bytes
            .get((pos / 8) as usize)
            .ok_or("frozen bool past the end")?;
        Ok(((byte >> (pos % 8)) & 1 == 1).then(|| self.field(at, 2)))
    }

    /// A list's element count, and where its elements start.
    fn list(&self, at: At<'a>) -> Result<(u64, At<'a>), String> {
        let distance = self.uint(self.field(at, 1))?;
        let count = self.uint(self.field(at, 2))?;
        let storage = at
            .storage
            .checked_add(distance)
            .filter(|&s| s <= u64::from(u32::MAX))
            .ok_or("frozen list storage beyond 2^32")?;
        let elem = self.field(at, 3);
        let elem = At {
            layout: elem.layout,
            bit: 0,
            storage,
        };
        Ok((count, elem))
    }
}

/// `options.subsecond_resolution_nsec_multiplier` (field 6 of the options,
/// added by dwarfs 0.14), which the crate's `Metadata` does not read: an
/// image that has it stores sub-second times this reader drops.
pub fn subsecond_multiplier(schema: &Schema, bytes: &[u8]) -> Option<u64> {
    let f = Frozen { schema, bytes };
    let root = At {
        layout: f.layout(schema.root_layout),
        bit: 0,
        storage: 0,
    };
    let options = f.present(f.field(root, 18)).ok()??;
    let multiplier = f.present(f.field(options, 6)).ok()??;
    f.uint(multiplier).ok().filter(|&m| m != 0)
}

/// Running totals of the census.
#[derive(Default)]
struct Tally {
    bits: u64,
    memory: u64,
    string_bytes: u64,
}

/// The census (see the module header): `Ok` when parsing is bounded.
pub fn census(schema: &Schema, bytes: &[u8]) -> Result<(), String> {
    let f = Frozen { schema, bytes };
    let root = At {
        layout: f.layout(schema.root_layout),
        bit: 0,
        storage: 0,
    };
    let mut t = Tally::default();
    // (field, bytes per element in memory, whether the field is optional)
    const LISTS: [(usize, u64, bool); 12] = [
        (1, 12, false),
        (2, 12, false),
        (3, 32, false),
        (4, 4, false),
        (5, 4, false),
        (6, 4, false),
        (7, 4, false),
        (8, 4, false),
        (9, 4, false),
        (17, 8, true),
        (19, 8, true),
        (20, 4, true),
    ];
    let mut inodes = 0;
    for (id, size, optional) in LISTS {
        let n = count_list(&f, root, id, optional, size, &mut t, bytes.len())?;
        if id == 3 {
            inodes = n;
        }
    }
    for id in [10, 11] {
        strings(&f, f.field(root, id), &mut t, bytes.len())?;
    }
    for id in [27, 28, 29] {
        if let Some(at) = f.present(f.field(root, id))? {
            strings(&f, at, &mut t, bytes.len())?;
        }
    }
    for id in [24, 25] {
        if let Some(table) = f.present(f.field(root, id))? {
            let index = f.field(table, 3);
            elements(&f, index, 4, &mut t, bytes.len())?;
        }
    }
    if let Some(cache) = f.present(f.field(root, 30))? {
        let n = elements(&f, f.field(cache, 1), 16, &mut t, bytes.len())?;
        if n > inodes {
            return Err(format!("{n} cached file sizes for {inodes} inodes"));
        }
    }
    let limit = parsed_limit(bytes.len());
    if t.memory.saturating_add(t.string_bytes) > limit {
        return Err(format!("would take more than {limit} bytes in memory"));
    }
    Ok(())
}

fn count_list(
    f: &Frozen<'_>,
    root: At<'_>,
    id: usize,
    optional: bool,
    size: u64,
    t: &mut Tally,
    len: usize,
) -> Result<u64, String> {
    let at = f.field(root, id);
    let at = if optional { f.present(at)? } else { Some(at) };
    match at {
        Some(at) => elements(f, at, size, t, len),
        None => Ok(0),
    }
}

/// Counts a list's elements into the tally; refuses when the lists so far
/// claim more bits than the buffer has (plus one element of slack each).
fn elements(
    f: &Frozen<'_>,
    at: At<'_>,
    size: u64,
    t: &mut Tally,
    len: usize,
) -> Result<u64, String> {
    let (count, elem) = f.list(at)?;
    let bits = elem
        .layout
        .map_or(1, |l| u64::try_from(l.bits).unwrap_or(1).max(1));
    t.bits = t.bits.saturating_add(count.saturating_mul(bits));
    t.memory = t.memory.saturating_add(count.saturating_mul(size));
    let room = (len as u64).saturating_mul(8).saturating_add(1 << 16);
    if t.bits > room {
        return Err(format!("a list claims {count} elements of {bits} bits"));
    }
    Ok(count)
}

/// A list of strings: its elements, and the bytes of each string.
fn strings(f: &Frozen<'_>, at: At<'_>, t: &mut Tally, len: usize) -> Result<(), String> {
    let count = elements(f, at, 24, t, len)?;
    let (_, first) = f.list(at)?;
    let stride = first
        .layout
        .map_or(0, |l| u64::try_from(l.bits).unwrap_or(0));
    for k in 0..count {
        let elem = At {
            bit: k.saturating_mul(stride),
            ..first
        };
        let n = f.uint(f.field(elem, 2))?;
        t.string_bytes = t.string_bytes.saturating_add(n);
        if t.string_bytes > len as u64 {
            return Err("strings longer than the metadata".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwarfs::metadata::{InodeData, Metadata};

    fn serialized(m: &Metadata) -> (Schema, Vec<u8>, Vec<u8>) {
        let (schema, bytes) = m.to_schema_and_bytes().unwrap();
        let raw = schema.to_bytes().unwrap();
        (schema, raw, bytes)
    }

    fn small() -> Metadata {
        let mut m = Metadata::default();
        m.inodes = vec![InodeData::default(); 3];
        m.inodes[1].mode_index = 1;
        m.modes = vec![0o40755, 0o100644];
        m.names = vec!["a".into(), "bc".into()];
        m
    }

    #[test]
    fn real_schema_and_metadata_pass() {
        let (schema, raw, bytes) = serialized(&small());
        check_schema(&raw).unwrap();
        census(&schema, &bytes).unwrap();
    }

    #[test]
    fn a_schema_map_claiming_more_than_its_bytes_is_refused() {
        // Field 2 (delta 2) of type map (11), a million entries, i16 → struct.
        let mut raw = vec![0x2b, 0xc0, 0x84, 0x3d, 0x4c];
        raw.extend_from_slice(&[0u8; 64]);
        let e = check_schema(&raw).unwrap_err();
        assert!(e.contains("claims 1000000 entries"), "{e}");
        assert!(check_schema(&[0x2b]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n(0x1c, 40).collect();
        assert!(check_schema(&deep).is_err(), "nesting is bounded");
    }

    #[test]
    fn zero_bit_elements_beyond_the_bits_of_the_buffer_are_refused() {
        // Identical inodes pack to zero bits each: a million of them cost
        // the crate a million elements for a few bytes of input.
        let mut m = Metadata::default();
        m.inodes = vec![InodeData::default(); 1_000_000];
        m.modes = vec![0o40755];
        let (schema, _, bytes) = serialized(&m);
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        let e = census(&schema, &bytes).unwrap_err();
        assert!(e.contains("1000000 elements"), "{e}");
        m.inodes.truncate(1000);
        let (schema, _, bytes) = serialized(&m);
        census(&schema, &bytes).unwrap();
    }

    #[test]
    fn a_truncated_buffer_is_refused_and_the_limit_is_capped() {
        let (schema, _, bytes) = serialized(&small());
        // The same bytes read under a schema whose string list claims more:
        // cut the buffer so the strings no longer fit.
        assert!(census(&schema, &bytes[..bytes.len() / 2]).is_err());
        assert_eq!(parsed_limit(0), 64 << 20);
        assert_eq!(parsed_limit(usize::MAX), PARSED_MAX);
    }
}

//! A minimal POSIX tar (ustar + pax) writer, enough for an exported layer.
//!
//! Each entry is a 512-byte ustar header, preceded by a pax extended header
//! (`x`) only when ustar cannot hold a field: a path that does not split
//! into prefix (155) and name (100), a link target over 100 bytes, a size,
//! id or time out of the octal fields' range, or xattrs (pax
//! `SCHILY.xattr.NAME` records, which GNU tar and bsdtar read). Times are
//! whole seconds, as in GNU tar's default format. Data is padded to 512
//! bytes; the archive ends with two zero blocks.
use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// Entry types (`typeflag`).
pub const REGULAR: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHAR: u8 = b'3';
pub const BLOCKDEV: u8 = b'4';
pub const DIRECTORY: u8 = b'5';
pub const FIFO: u8 = b'6';
const PAX: u8 = b'x';

/// One entry's metadata.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// Relative path; directories end with `/`.
    pub path: Vec<u8>,
    pub kind: u8,
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Bytes of data that follow (regular files only).
    pub size: u64,
    pub mtime: i64,
    /// Symlink target, or the earlier path of a hard link.
    pub link: Vec<u8>,
    pub dev: (u32, u32),
    /// Extended attributes, name → value.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Largest value of an octal field of `width` bytes (one byte is the NUL).
fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width as u32 - 1))) - 1
}

fn put_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn put_bytes(field: &mut [u8], v: &[u8]) {
    field[..v.len()].copy_from_slice(v);
}

/// Splits `path` into ustar's (prefix, name), if it fits.
fn split_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    // The name part keeps a directory's trailing slash.
    let body = path.strip_suffix(b"/").unwrap_or(path);
    for (i, &b) in body.iter().enumerate().rev() {
        if b != b'/' {
            continue;
        }
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && name.len() <= 100 && !name.is_empty() {
            return Some((prefix, name));
        }
        if name.len() > 100 {
            return None;
        }
    }
    None
}

/// One pax record: `LEN KEY=VALUE\n`, where LEN counts the whole record.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// The pax records `h` needs; empty when plain ustar holds it.
fn pax_records(h: &Header) -> Vec<u8> {
    let mut r = Vec::new();
    if split_path(&h.path).is_none() {
        r.extend(pax_record(b"path", &h.path));
    }
    if h.link.len() > 100 {
        r.extend(pax_record(b"linkpath", &h.link));
    }
    let num = |k: &[u8], v: u64, w: usize, r: &mut Vec<u8>| {
        if v > octal_max(w) {
            r.extend(pax_record(k, v.to_string().as_bytes()));
        }
    };
    num(b"size", h.size, 12, &mut r);
    num(b"uid", h.uid, 8, &mut r);
    num(b"gid", h.gid, 8, &mut r);
    if h.mtime < 0 || h.mtime as u64 > octal_max(12) {
        r.extend(pax_record(b"mtime", h.mtime.to_string().as_bytes()));
    }
    for (k, v) in &h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        r.extend(pax_record(&key, v));
    }
    r
}

/// The ustar header block of `h` (fields that do not fit are clamped;
/// the pax header carries them).
fn ustar_block(h: &Header) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let (prefix, name) = split_path(&h.path).unwrap_or((b"", &h.path));
    let name = &name[..name.len().min(100)];
    put_bytes(&mut b[0..100], name);
    put_octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    put_octal(&mut b[108..116], h.uid.min(octal_max(8)));
    put_octal(&mut b[116..124], h.gid.min(octal_max(8)));
    put_octal(&mut b[124..136], h.size.min(octal_max(12)));
    put_octal(
        &mut b[136..148],
        h.mtime.clamp(0, octal_max(12) as i64) as u64,
    );
    b[156] = h.kind;
    put_bytes(&mut b[157..257], &h.link[..h.link.len().min(100)]);
    put_bytes(&mut b[257..263], b"ustar\0");
    put_bytes(&mut b[263..265], b"00");
    if matches!(h.kind, CHAR | BLOCKDEV) {
        put_octal(&mut b[329..337], u64::from(h.dev.0));
        put_octal(&mut b[337..345], u64::from(h.dev.1));
    }
    put_bytes(&mut b[345..345 + prefix.len()], prefix);
    // The checksum is computed with its own field as spaces.
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    put_octal(&mut b[148..155], u64::from(sum));
    b[155] = b' ';
    b
}

/// The header blocks of `h`: a pax header (with its records) when needed,
/// then the ustar header.
pub fn encode(h: &Header) -> Vec<u8> {
    let mut out = Vec::new();
    let records = pax_records(h);
    if !records.is_empty() {
        let base = h.path.strip_suffix(b"/").unwrap_or(&h.path);
        let base = base.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        let mut path = b"PaxHeaders/".to_vec();
        path.extend_from_slice(&base[..base.len().min(80)]);
        let ph = Header {
            path,
            kind: PAX,
            mode: 0o644,
            size: records.len() as u64,
            mtime: h.mtime,
            ..Header::default()
        };
        out.extend_from_slice(&ustar_block(&ph));
        out.extend_from_slice(&records);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.extend_from_slice(&ustar_block(h));
    out
}

/// Writes entries to `W`.
pub struct Writer<W: Write> {
    w: W,
}

impl<W: Write> Writer<W> {
    pub fn new(w: W) -> Self {
        Writer { w }
    }

    /// Appends an entry without data.
    pub fn append(&mut self, h: &Header) -> io::Result<()> {
        self.w.write_all(&encode(h))
    }

    /// Appends a regular file whose `h.size` bytes come from `data`. Fewer
    /// bytes than announced is an error (the file shrank while read).
    pub fn append_data(&mut self, h: &Header, data: &mut dyn Read) -> io::Result<()> {
        self.w.write_all(&encode(h))?;
        let n = io::copy(&mut data.take(h.size), &mut self.w)?;
        if n != h.size {
            return Err(io::Error::other(format!(
                "changed while read: {n} bytes instead of {}",
                h.size
            )));
        }
        let pad = (BLOCK - (h.size as usize % BLOCK)) % BLOCK;
        self.w.write_all(&[0u8; BLOCK][..pad])
    }

    /// Writes the two closing zero blocks and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octal_field(b: &[u8]) -> u64 {
        let s: String = b
            .iter()
            .take_while(|&&c| c != 0 && c != b' ')
            .map(|&c| c as char)
            .collect();
        u64::from_str_radix(&s, 8).unwrap()
    }

    fn file(path: &[u8]) -> Header {
        Header {
            path: path.to_vec(),
            kind: REGULAR,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            size: 5,
            mtime: 1_700_000_000,
            ..Header::default()
        }
    }

    #[test]
    fn ustar_fields_and_checksum() {
        let b = encode(&file(b"dir/a.txt"));
        assert_eq!(b.len(), 512);
        assert_eq!(&b[0..9], b"dir/a.txt");
        assert_eq!(octal_field(&b[100..108]), 0o4755);
        assert_eq!(octal_field(&b[108..116]), 1000);
        assert_eq!(octal_field(&b[124..136]), 5);
        assert_eq!(octal_field(&b[136..148]), 1_700_000_000);
        assert_eq!(&b[257..265], b"ustar\x0000");
        let mut copy = b.clone();
        copy[148..156].fill(b' ');
        let sum: u64 = copy.iter().map(|&x| u64::from(x)).sum();
        assert_eq!(octal_field(&b[148..156]), sum);
    }

    #[test]
    fn long_paths_split_or_go_to_pax() {
        let dir = [b'd'; 120];
        let mut p = dir.to_vec();
        p.extend_from_slice(b"/name");
        let b = encode(&file(&p));
        assert_eq!(b.len(), 512, "fits as prefix + name");
        assert_eq!(&b[345..465], &dir[..]);
        assert_eq!(&b[0..5], b"name\0");

        let long = vec![b'n'; 200];
        let b = encode(&file(&long));
        assert_eq!(b[156], PAX);
        let records = &b[512..512 + octal_field(&b[124..136]) as usize];
        assert_eq!(records, pax_record(b"path", &long).as_slice());
        assert_eq!(b.len(), 3 * 512);
    }

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record(b"path", b"ab"), b"11 path=ab\n");
        // 98 bytes of body and 2 digits make 100: the length grows a digit.
        let r = pax_record(b"k", &[b'v'; 94]);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 k="));
        assert_eq!(pax_record(b"k", &[b'v'; 93]).len(), 99);
    }

    #[test]
    fn xattrs_and_big_ids_use_pax() {
        let mut h = file(b"f");
        h.uid = 1 << 30;
        h.xattrs = vec![(b"user.x".to_vec(), b"1".to_vec())];
        let b = encode(&h);
        let n = octal_field(&b[124..136]) as usize;
        let rec = String::from_utf8(b[512..512 + n].to_vec()).unwrap();
        assert_eq!(rec, "18 uid=1073741824\n25 SCHILY.xattr.user.x=1\n");
    }

    #[test]
    fn data_is_padded_and_shrinking_is_an_error() {
        let mut w = Writer::new(Vec::new());
        w.append_data(&file(b"f"), &mut &b"hello"[..]).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 512 + 512 + 1024);
        assert_eq!(&out[512..517], b"hello");
        let mut w = Writer::new(Vec::new());
        assert!(w.append_data(&file(b"f"), &mut &b"hel"[..]).is_err());
    }
}

//! The tar writer of `fimfs export --tar`: ustar headers, blocks, padding
//! and the end of the archive come from the `tar` crate; this module adds
//! what the crate does not write, a pax extended header (`x`).
//!
//! The pax header precedes an entry only when ustar cannot hold a field: a
//! path that does not split into prefix (155) and name (100), a link target
//! over 100 bytes, a size, id or time out of the octal fields' range, or
//! xattrs (pax `SCHILY.xattr.NAME` records, which GNU tar and bsdtar read).
//! The crate has no pax writer (only GNU long-name entries, which cannot
//! carry xattrs), and names here are bytes, never UTF-8: keys and values go
//! through [`pax_record`]. Times are whole seconds, as in GNU tar's default
//! format. Symlink targets are stored literally (the crate's path setters
//! would normalise `a//b` or `a/./b`).
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

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
/// Larger values go to pax: the crate would write GNU base-256 instead.
fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width as u32 - 1))) - 1
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

/// The ustar header of `h`, and whether its path fit (if not, the header
/// holds the path's first 100 bytes and pax carries it). Numbers that do not
/// fit are clamped; pax carries them too.
fn ustar(h: &Header) -> (tar::Header, bool) {
    let mut t = tar::Header::new_ustar();
    let fits = t.set_path(OsStr::from_bytes(&h.path)).is_ok();
    if !fits {
        let name = &mut t.as_old_mut().name;
        let n = h.path.len().min(name.len());
        name[..n].copy_from_slice(&h.path[..n]);
    }
    t.set_entry_type(tar::EntryType::new(h.kind));
    t.set_mode(h.mode & 0o7777);
    t.set_uid(h.uid.min(octal_max(8)));
    t.set_gid(h.gid.min(octal_max(8)));
    t.set_size(h.size.min(octal_max(12)));
    t.set_mtime(h.mtime.clamp(0, octal_max(12) as i64) as u64);
    // Over 100 bytes (or with a NUL) the target goes to pax; the field stays
    // empty, as GNU tar reads the pax record first.
    let _ = t.set_link_name_literal(&h.link);
    if matches!(h.kind, CHAR | BLOCKDEV) {
        // Only fails on a header that is not ustar or GNU.
        let _ = t.set_device_major(h.dev.0);
        let _ = t.set_device_minor(h.dev.1);
    }
    t.set_cksum();
    (t, fits)
}

/// The pax records `h` needs; empty when plain ustar holds it.
fn pax_records(h: &Header, path_fits: bool) -> Vec<u8> {
    let mut r = Vec::new();
    if !path_fits {
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

/// The headers of `h`: a pax header with its records when needed, then the
/// ustar header.
fn headers(h: &Header) -> (Option<(tar::Header, Vec<u8>)>, tar::Header) {
    let (main, fits) = ustar(h);
    let records = pax_records(h, fits);
    if records.is_empty() {
        return (None, main);
    }
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
    (Some((ustar(&ph).0, records)), main)
}

/// The header blocks of `h`, as [`Writer`] writes them.
pub fn encode(h: &Header) -> Vec<u8> {
    let (pax, main) = headers(h);
    let mut out = Vec::new();
    if let Some((ph, records)) = pax {
        out.extend_from_slice(ph.as_bytes());
        out.extend_from_slice(&records);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(main.as_bytes());
    out
}

/// Reads exactly `want` bytes, or fails: a file that shrank while read
/// must not leave an entry shorter than its header says.
struct Exact<'a> {
    inner: io::Take<&'a mut dyn Read>,
    want: u64,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let left = self.inner.limit();
        if n == 0 && left > 0 {
            let got = self.want - left;
            let msg = format!("changed while read: {got} bytes instead of {}", self.want);
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

/// Writes entries to `W`.
pub struct Writer<W: Write> {
    b: tar::Builder<W>,
}

impl<W: Write> Writer<W> {
    pub fn new(w: W) -> Self {
        Writer {
            b: tar::Builder::new(w),
        }
    }

    fn put(&mut self, h: &Header, data: impl Read) -> io::Result<()> {
        let (pax, main) = headers(h);
        if let Some((ph, records)) = pax {
            self.b.append(&ph, records.as_slice())?;
        }
        self.b.append(&main, data)
    }

    /// Appends an entry without data.
    pub fn append(&mut self, h: &Header) -> io::Result<()> {
        self.put(h, io::empty())
    }

    /// Appends a regular file whose `h.size` bytes come from `data`. Fewer
    /// bytes than announced is an error (the file shrank while read).
    pub fn append_data(&mut self, h: &Header, data: &mut dyn Read) -> io::Result<()> {
        let want = h.size;
        self.put(
            h,
            Exact {
                inner: data.take(want),
                want,
            },
        )
    }

    /// Writes the two closing zero blocks and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        let mut w = self.b.into_inner()?;
        w.flush()?;
        Ok(w)
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

//! The layers a FlatImage binary serves by itself, for
//! `fimfs run --image FLATIMAGE UPPER -- CMD` without LOWERS (SPEC §8).
//!
//! Order, bottom first (a later layer is higher):
//! 1. the images embedded in the binary, in file order. A block whose image
//!    does not start with `DWARFS` is skipped (its size field says where the
//!    next starts); a block that cannot be framed (truncated, running past
//!    the end) ends the walk;
//! 2. the `FIM_LAYERS` entries (`:`-separated) in the order given: a file
//!    is taken as it is, a directory is scanned one level deep and its
//!    regular files taken in numeric order;
//! 3. the regular files of `<data>/layers/`, in numeric order, where
//!    `<data>` is FlatImage's data directory of the binary:
//!    `.<NAME>.data` next to it (`fim-layer commit layer` writes
//!    `layer-000.layer` … there).
//!
//! Numeric order compares runs of digits by their value and everything
//! else bytewise, so `layer-9` sorts before `layer-10`.
//!
//! A candidate of (1), (2) or (3) that does not start with the 6 bytes
//! `DWARFS` is skipped without taking a place (SPEC §8), with a note; so
//! is a `FIM_LAYERS` entry that does not exist.
//!
//! The environment is passed in (`fim_layers`): nothing here reads the
//! process environment.
use crate::image::binary::{self, DWARFS_MAGIC, ErrorKind, ImageError, LayerProblem};
use crate::image::source::{ImageAt, Source};
use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The layers found, topmost first, and what was skipped on the way.
#[derive(Debug, Default)]
pub struct OwnLayers {
    /// Topmost first, as `LOWERS` lists them.
    pub lowers: Vec<Source>,
    /// How many came from each source: embedded, `FIM_LAYERS`, `<data>/layers`.
    pub counts: [usize; 3],
    /// One line per candidate skipped, and why.
    pub skipped: Vec<String>,
}

/// FlatImage's data directory of `binary`: `.<NAME>.data` next to it.
pub fn data_dir(binary: &Path) -> PathBuf {
    let mut name = b".".to_vec();
    name.extend_from_slice(binary.file_name().map_or(&b""[..], OsStr::as_bytes));
    name.extend_from_slice(b".data");
    binary
        .parent()
        .unwrap_or(Path::new("/"))
        .join(OsStr::from_bytes(&name))
}

/// The layers `binary` (an absolute path) serves, in SPEC §8's order.
pub fn own_layers(binary: &Path, fim_layers: Option<&OsStr>) -> Result<OwnLayers, ImageError> {
    let mut found = OwnLayers::default();
    let mut bottom_first = Vec::new();
    embedded(binary, &mut bottom_first, &mut found.skipped)?;
    found.counts[0] = bottom_first.len();
    let mut files = Vec::new();
    for entry in fim_layers
        .map(OsStr::as_bytes)
        .unwrap_or_default()
        .split(|&b| b == b':')
        .filter(|e| !e.is_empty())
    {
        let path = PathBuf::from(OsStr::from_bytes(entry));
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => files.extend(sorted_files(&path)),
            Ok(_) => files.push(path),
            Err(e) => found
                .skipped
                .push(format!("FIM_LAYERS entry {}: {e}", path.display())),
        }
    }
    found.counts[1] = take_images(files, &mut bottom_first, &mut found.skipped);
    let data_layers = sorted_files(&data_dir(binary).join("layers"));
    found.counts[2] = take_images(data_layers, &mut bottom_first, &mut found.skipped);
    bottom_first.reverse();
    found.lowers = bottom_first;
    Ok(found)
}

/// Appends the images embedded in `binary`, in file order. A block whose
/// image does not start with `DWARFS` is skipped (its size says where the
/// next one starts); any other bad block ends the walk.
fn embedded(
    binary: &Path,
    out: &mut Vec<Source>,
    skipped: &mut Vec<String>,
) -> Result<(), ImageError> {
    let bin = binary::Image::open(binary)?;
    let mut blocks = bin.blocks();
    while let Some(block) = blocks.next() {
        let e = match block {
            Ok(l) => {
                out.push(Source::Image(ImageAt {
                    file: binary.to_path_buf(),
                    offset: l.offset,
                    size: Some(l.size),
                }));
                continue;
            }
            Err(e) => e,
        };
        let next = match e.kind() {
            ErrorKind::BadLayer {
                offset,
                problem: LayerProblem::BadMagic { .. },
            } => size_at(binary, *offset).and_then(|size| offset.checked_add(8)?.checked_add(size)),
            _ => None,
        };
        match next {
            Some(pos) => {
                skipped.push(format!("{e}: not a layer"));
                blocks = bin.blocks_from(pos);
            }
            None => {
                skipped.push(format!("{e}: the layers after it are not read"));
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The u64 little-endian size field at `offset` of `file`.
fn size_at(file: &Path, offset: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    let f = std::fs::File::open(file).ok()?;
    f.read_exact_at(&mut b, offset).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Appends the candidates that start with `DWARFS`; how many.
fn take_images(files: Vec<PathBuf>, out: &mut Vec<Source>, skipped: &mut Vec<String>) -> usize {
    let before = out.len();
    for f in files {
        let file = crate::host::paths::absolute(&f).unwrap_or(f);
        if starts_with_magic(&file) {
            out.push(Source::Image(ImageAt {
                file,
                offset: 0,
                size: None,
            }));
        } else {
            skipped.push(format!(
                "{}: does not start with DWARFS, not a layer",
                file.display()
            ));
        }
    }
    out.len() - before
}

fn starts_with_magic(file: &Path) -> bool {
    let mut magic = [0u8; 6];
    std::fs::File::open(file).is_ok_and(|f| f.read_exact_at(&mut magic, 0).is_ok())
        && magic == *DWARFS_MAGIC
}

/// The regular files directly in `dir`, in numeric order; none when it
/// cannot be read.
fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort_by(|a, b| numeric_order(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()));
    files
}

/// Runs of digits compare by value (then by length, so `01` follows `1`),
/// everything else bytewise.
pub fn numeric_order(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let (ra, rb) = (digits(a.get(i..)), digits(b.get(j..)));
            let (ta, tb) = (trim_zeros(ra), trim_zeros(rb));
            let by_value = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
            let order = by_value.then_with(|| ra.len().cmp(&rb.len()));
            if order != Ordering::Equal {
                return order;
            }
            (i, j) = (i + ra.len(), j + rb.len());
        } else if x != y {
            return x.cmp(&y);
        } else {
            (i, j) = (i + 1, j + 1);
        }
    }
    (a.len() - i.min(a.len())).cmp(&(b.len() - j.min(b.len())))
}

fn digits(s: Option<&[u8]>) -> &[u8] {
    let s = s.unwrap_or_default();
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.get(..n).unwrap_or_default()
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    s.get(n..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_order_sorts_numbers_by_value() {
        let mut names = vec![
            "layer-10.layer",
            "layer-9.layer",
            "layer-000.layer",
            "layer-001.layer",
            "b",
            "a10",
            "a9x",
            "a",
            "layer-1.layer",
        ];
        names.sort_by(|a, b| numeric_order(a.as_bytes(), b.as_bytes()));
        assert_eq!(
            names,
            [
                "a",
                "a9x",
                "a10",
                "b",
                "layer-000.layer",
                "layer-1.layer",
                "layer-001.layer",
                "layer-9.layer",
                "layer-10.layer",
            ]
        );
        assert_eq!(numeric_order(b"x", b"x"), Ordering::Equal);
    }

    #[test]
    fn the_data_directory_sits_next_to_the_binary() {
        assert_eq!(
            data_dir(Path::new("/opt/apps/app.flatimage")),
            PathBuf::from("/opt/apps/.app.flatimage.data")
        );
    }
}

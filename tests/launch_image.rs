//! FlatImage binaries built for real on disk: an ELF64 with a
//! `.fim_reserved_offset` section and a `.shstrtab`, the 4 MiB reserved space,
//! then `[u64 size]DWARFS…` blocks. Checks reading, one-byte writes and errors.

use std::fs;
use std::path::{Path, PathBuf};

use fimfs::launch::{
    Backend, ErrorKind, Image, ImageError, Layer, LayerProblem, RESERVED_SIZE, choose,
};

mod common;
use common::TempDir;
use common::image::{
    RESERVED_AT, Spec, assert_only_byte_changed, block, build, dwarfs, dwarfs_image,
};

fn write_image(dir: &TempDir, name: &[u8], spec: &Spec) -> PathBuf {
    dir.write(name, &build(spec))
}

#[test]
fn reads_what_the_file_holds() {
    let dir = TempDir::new("read");
    let mut spec = Spec::new();
    spec.overlay = 0x08;
    spec.casefold = 1;
    let path = write_image(&dir, b"app.flatimage", &spec);
    let img = Image::open(&path).unwrap();
    assert_eq!(img.path(), path);
    assert!(img.is_flatimage());
    assert_eq!(img.reserved_offset(), RESERVED_AT);
    assert_eq!(img.layers_offset(), RESERVED_AT + RESERVED_SIZE);
    assert_eq!(img.overlay_byte(), 0x08);
    assert_eq!(img.overlay(), Some(Backend::Unionfs));
    assert!(img.casefold());
    let first = RESERVED_AT + RESERVED_SIZE + 8;
    let second = first + 100 + 8;
    assert_eq!(
        img.layers().unwrap(),
        vec![
            Layer {
                offset: first,
                size: 100
            },
            Layer {
                offset: second,
                size: 4000
            }
        ]
    );
    assert_eq!(second + 4000, img.file_len());
}

#[test]
fn fresh_image_and_plain_elf() {
    let dir = TempDir::new("fresh");
    let mut spec = Spec::new();
    spec.fim_mark = false;
    spec.blocks.clear();
    let path = write_image(&dir, b"plain", &spec);
    let img = Image::open(&path).unwrap();
    assert!(!img.is_flatimage(), "mark reported but not required");
    assert_eq!(img.overlay(), None);
    assert!(!img.casefold());
    assert_eq!(img.layers().unwrap(), vec![]);
    let c = choose(None, Some(img.overlay_byte()), img.casefold());
    assert_eq!(c.backend, Backend::Bwrap);
}

#[test]
fn set_overlay_changes_only_that_byte() {
    let dir = TempDir::new("overlay");
    let path = write_image(&dir, b"app.flatimage", &Spec::new());
    let at = RESERVED_AT as usize + 9;
    for backend in [
        Backend::Overlayfs,
        Backend::Unionfs,
        Backend::Bwrap,
        Backend::Bwrap,
    ] {
        let before = fs::read(&path).unwrap();
        let mut img = Image::open_rw(&path).unwrap();
        img.set_overlay(backend).unwrap();
        assert_eq!(img.overlay(), Some(backend));
        drop(img);
        assert_only_byte_changed(&before, &fs::read(&path).unwrap(), at, backend.mask());
        assert_eq!(Image::open(&path).unwrap().overlay(), Some(backend));
    }
}

#[test]
fn set_casefold_changes_only_that_byte() {
    let dir = TempDir::new("casefold");
    let path = write_image(&dir, b"app.flatimage", &Spec::new());
    let at = RESERVED_AT as usize + 10;
    for on in [true, false, true, true, false] {
        let before = fs::read(&path).unwrap();
        let mut img = Image::open_rw(&path).unwrap();
        img.set_casefold(on).unwrap();
        assert_eq!(img.casefold(), on);
        drop(img);
        assert_only_byte_changed(&before, &fs::read(&path).unwrap(), at, u8::from(on));
        let img = Image::open(&path).unwrap();
        assert_eq!(img.casefold(), on);
        assert_eq!(img.overlay(), None, "overlay byte untouched");
    }
}

#[test]
fn read_only_open_refuses_writes() {
    let dir = TempDir::new("ro");
    let path = write_image(&dir, b"app.flatimage", &Spec::new());
    let before = fs::read(&path).unwrap();
    let mut img = Image::open(&path).unwrap();
    let err = img.set_overlay(Backend::Unionfs).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::ReadOnly), "{err}");
    assert!(img.set_casefold(true).is_err());
    assert_eq!(img.overlay(), None);
    assert_eq!(fs::read(&path).unwrap(), before);
}

/// Opens `path`, expects an error, checks the message names the file.
fn open_err(path: &Path) -> ImageError {
    let err = Image::open(path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert_eq!(err.path(), path);
    err
}

#[test]
fn error_text_file() {
    let dir = TempDir::new("text");
    let path = dir.write(b"notes \xff.txt", b"just some text, not an ELF at all\n");
    let err = open_err(&path);
    assert!(matches!(err.kind(), ErrorKind::NotElf), "{err}");
    assert!(err.to_string().contains("not an ELF"), "{err}");
    assert!(err.to_string().contains("notes \u{fffd}.txt"), "{err}");
}

#[test]
fn error_elf_without_the_section() {
    let dir = TempDir::new("nosection");
    let mut spec = Spec::new();
    spec.section = b".fim_other";
    let path = write_image(&dir, b"app.flatimage", &spec);
    let err = open_err(&path);
    assert!(
        matches!(err.kind(), ErrorKind::NoReservedSection { sections: 3 }),
        "{err}"
    );
    assert!(err.to_string().contains(".fim_reserved_offset"), "{err}");
}

#[test]
fn error_section_too_small() {
    let dir = TempDir::new("small");
    let mut spec = Spec::new();
    spec.section_data = vec![0x20, 0x00];
    let err = open_err(&write_image(&dir, b"app.flatimage", &spec));
    assert!(
        matches!(err.kind(), ErrorKind::SectionTooSmall { size: 2 }),
        "{err}"
    );
}

#[test]
fn error_offset_past_the_end() {
    let dir = TempDir::new("pastend");
    let mut spec = Spec::new();
    spec.section_data = 0x7fff_0000u32.to_le_bytes().to_vec();
    let path = write_image(&dir, b"app.flatimage", &spec);
    let len = fs::metadata(&path).unwrap().len();
    let err = open_err(&path);
    assert!(
        matches!(err.kind(), ErrorKind::OffsetPastEnd { offset: 0x7fff_0000, file_len } if *file_len == len),
        "{err}"
    );
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn error_reserved_space_runs_past_the_end() {
    let dir = TempDir::new("truncated");
    let mut spec = Spec::new();
    spec.blocks.clear();
    let mut bytes = build(&spec);
    bytes.truncate(bytes.len() - 1);
    let path = dir.write(b"app.flatimage", &bytes);
    let err = open_err(&path);
    assert!(
        matches!(err.kind(), ErrorKind::ReservedPastEnd { .. }),
        "{err}"
    );
}

#[test]
fn error_unpatched_offset_overlaps_the_elf() {
    let dir = TempDir::new("zero");
    let mut spec = Spec::new();
    spec.section_data = 0u32.to_le_bytes().to_vec();
    let path = write_image(&dir, b"app.flatimage", &spec);
    let before = fs::read(&path).unwrap();
    let err = Image::open_rw(&path).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::ReservedOverlapsElf { offset: 0, .. }),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn error_missing_file_and_directory() {
    let dir = TempDir::new("io");
    let missing = dir.join("missing.flatimage");
    let err = open_err(&missing);
    assert!(matches!(err.kind(), ErrorKind::Io { .. }), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    let err = open_err(dir.path());
    assert!(matches!(err.kind(), ErrorKind::NotRegularFile), "{err}");
}

/// Builds an image with `blocks` and returns the walk's items.
fn walk(blocks: Vec<Vec<u8>>) -> (Vec<Layer>, Option<ImageError>) {
    let dir = TempDir::new("blocks");
    let mut spec = Spec::new();
    spec.blocks = blocks;
    let img = Image::open(write_image(&dir, b"app.flatimage", &spec)).unwrap();
    let mut good = Vec::new();
    let mut items = img.blocks();
    for item in items.by_ref() {
        match item {
            Ok(layer) => good.push(layer),
            Err(e) => {
                assert!(items.next().is_none(), "the walk stops after an error");
                assert!(img.layers().is_err());
                return (good, Some(e));
            }
        }
    }
    (good, None)
}

fn bad_problem(err: &ImageError) -> LayerProblem {
    match err.kind() {
        ErrorKind::BadLayer { problem, .. } => *problem,
        other => panic!("not a layer error: {other}"),
    }
}

#[test]
fn layer_errors() {
    let first = RESERVED_AT + RESERVED_SIZE;
    let (good, err) = walk(vec![dwarfs(50, 3), block(50, &[b'X'; 50])]);
    assert_eq!(good.len(), 1);
    let err = err.unwrap();
    assert_eq!(
        bad_problem(&err),
        LayerProblem::BadMagic { found: *b"XXXXXX" }
    );
    assert!(matches!(err.kind(), ErrorKind::BadLayer { offset, .. } if *offset == first + 58));
    assert!(err.to_string().contains("DWARFS"), "{err}");

    let (good, err) = walk(vec![dwarfs(50, 3), block(0, &[])]);
    assert_eq!(
        (good.len(), bad_problem(&err.unwrap())),
        (1, LayerProblem::TooSmall { size: 0 })
    );

    let (good, err) = walk(vec![block(1000, &dwarfs_image(999, 1))]);
    let problem = bad_problem(&err.unwrap());
    assert!(good.is_empty() && matches!(problem, LayerProblem::PastEnd { size: 1000, .. }));

    let (good, err) = walk(vec![dwarfs(10, 1), b"\x05\x00\x00".to_vec()]);
    let err = err.unwrap();
    assert_eq!(good.len(), 1);
    assert_eq!(
        bad_problem(&err),
        LayerProblem::TruncatedSize { remaining: 3 }
    );

    let (good, err) = walk(vec![block(u64::MAX, b"DWARFS")]);
    assert!(good.is_empty() && matches!(bad_problem(&err.unwrap()), LayerProblem::PastEnd { .. }));
}

//! The DwarFS image reader (src/image: sections, metadata, index) over
//! images the tests build: every kind of inode, every codec, images behind
//! a header or inside another file, hand-made metadata the writer cannot
//! express (non-UTF-8 and spoiled names, setuid modes, loops, bad indexes),
//! and seeded random corruptions of real images (`FIMFS_FUZZ_ITER`).
mod common;

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use ::dwarfs::metadata::{Metadata, StringTable};
use common::dwarfs::*;
use common::{TempDir, XorShift, fill, knob, splitmix};
use fimfs::image::codec::decode_all;
use fimfs::image::{Image, ImageError, InodeId, Kind, Reason};

const BS: u32 = 64 << 10;

fn open(bytes: &[u8]) -> Result<Image, ImageError> {
    let dir = TempDir::new("image-reader");
    open_bytes(dir.path(), bytes)
}

fn open_ok(bytes: &[u8]) -> Image {
    open(bytes).unwrap_or_else(|e| panic!("open: {e}"))
}

/// Resolves a `/`-separated path from the root.
fn find(img: &Image, path: &str) -> InodeId {
    let t = img.tree();
    path.split('/')
        .filter(|c| !c.is_empty())
        .fold(t.root(), |d, name| {
            t.lookup(d, name.as_bytes())
                .unwrap_or_else(|| panic!("{path}: no {name}"))
        })
}

/// A file's contents, read through its chunks from the image bytes.
fn read(img: &Image, bytes: &[u8], ino: InodeId) -> Vec<u8> {
    let mut blocks: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut out = Vec::new();
    for c in img.tree().chunks(ino) {
        let b = blocks.entry(c.block).or_insert_with(|| {
            let loc = img.blocks()[c.block as usize];
            let raw = &bytes[loc.payload as usize..(loc.payload + loc.len) as usize];
            decode_all(loc.codec, raw, img.block_size() as usize).unwrap()
        });
        out.extend_from_slice(&b[c.offset as usize..(c.offset + c.size) as usize]);
    }
    out
}

/// The name table of `meta`, decoded from dwarfs-enc's packed compact form.
fn names_of(meta: &Metadata) -> Vec<Vec<u8>> {
    let t = meta.compact_names.as_ref().expect("compact names");
    assert!(t.packed_index && t.symtab.is_none());
    let mut at = 0usize;
    t.index
        .iter()
        .map(|&n| {
            let s = t.buffer[at..at + n as usize].to_vec();
            at += n as usize;
            s
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Form {
    Plain,
    Compact,
    Packed,
    Fsst,
}

/// FSST symbols the tests' encoder uses (ordered by length 2..8 then 1).
const SYMBOLS: [&[u8]; 3] = [b"fi", b"le", b"dir"];

fn fsst_encode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    'outer: while i < s.len() {
        for (code, sym) in SYMBOLS.iter().enumerate() {
            if s[i..].starts_with(sym) {
                out.push(code as u8);
                i += sym.len();
                continue 'outer;
            }
        }
        out.extend_from_slice(&[0xff, s[i]]);
        i += 1;
    }
    out
}

/// Replaces the name table of `meta` with `names`, stored in `form`.
fn set_names(meta: &mut Metadata, names: &[Vec<u8>], form: Form) {
    if let Form::Plain = form {
        meta.compact_names = None;
        meta.names = names.iter().map(|n| n.clone().into()).collect();
        return;
    }
    let encoded: Vec<Vec<u8>> = match form {
        Form::Fsst => names.iter().map(|n| fsst_encode(n)).collect(),
        _ => names.to_vec(),
    };
    let mut t = StringTable::default();
    let mut buffer = Vec::new();
    let mut ends = vec![0u32];
    for n in &encoded {
        buffer.extend_from_slice(n);
        ends.push(buffer.len() as u32);
    }
    t.buffer = buffer.into();
    match form {
        Form::Packed => {
            t.packed_index = true;
            t.index = encoded.iter().map(|n| n.len() as u32).collect();
        }
        _ => t.index = ends,
    }
    if let Form::Fsst = form {
        t.symtab = Some(
            ::dwarfs::fsst::to_bytes(SYMBOLS.iter().copied())
                .unwrap()
                .into(),
        );
    }
    meta.names.clear();
    meta.compact_names = Some(t);
}

/// Renames every use of `old` in the name table.
fn rename(meta: &mut Metadata, old: &str, new: &[u8], form: Form) {
    let mut names = names_of(meta);
    let i = names
        .iter()
        .position(|n| n == old.as_bytes())
        .expect("name");
    names[i] = new.to_vec();
    set_names(meta, &names, form);
}

fn sample_tree() -> Tree {
    let mut t = Tree::new(BS);
    let m = im(0o644, 1000, 1000, 1_700_000_000);
    t.dir("d", &im(0o755, 1000, 1000, 1_700_000_001))
        .file("d/big", &fill(1, 300_000), &m)
        .file("d/empty", b"", &m)
        .file("d/small", b"hello", &m)
        .symlink("d/link", "big", &im(0o777, 0, 0, 5))
        .hard_link("d/big2", "d/big")
        .dir("e", &im(0o700, 0, 0, 9))
        .fifo("e/fifo", &im(0o600, 0, 0, 9))
        .socket("e/sock", &im(0o600, 0, 0, 9))
        .device("e/blk", true, 0x0801, &im(0o660, 0, 6, 9))
        .device("e/chr", false, 0x0103, &im(0o666, 0, 0, 9));
    t
}

fn sample() -> (Metadata, Vec<Vec<u8>>) {
    sample_tree().finish()
}

fn reason(r: Result<Image, ImageError>) -> ImageError {
    match r {
        Ok(_) => panic!("the image was accepted"),
        Err(e) => e,
    }
}

fn assert_invalid(meta: &Metadata, blocks: &[Vec<u8>], what: &str) {
    let e = reason(open(&assemble(meta, blocks, Layout::default())));
    assert!(matches!(e.reason, Reason::Invalid(_)), "{what}: {e}");
    assert_eq!(e.section.map(|s| s.kind), Some(METADATA), "{what}: {e}");
}

#[test]
fn regular_files_small_large_and_empty() {
    let (meta, blocks) = sample();
    assert!(blocks.len() >= 5, "300 KB in 64 KiB blocks");
    let bytes = assemble(&meta, &blocks, Layout::default());
    let img = open_ok(&bytes);
    let t = img.tree();
    assert_eq!(img.blocks().len(), blocks.len());
    assert_eq!(img.block_size(), BS);
    let big = find(&img, "d/big");
    assert_eq!(t.attr(big).unwrap().size, 300_000);
    assert!(t.chunks(big).len() >= 5);
    assert_eq!(read(&img, &bytes, big), fill(1, 300_000));
    assert_eq!(read(&img, &bytes, find(&img, "d/small")), b"hello");
    let empty = find(&img, "d/empty");
    assert_eq!(t.attr(empty).unwrap().size, 0);
    assert!(t.chunks(empty).is_empty());
    assert_eq!(t.totals().bytes, 300_005);
    assert_eq!(walk_all(&img), 11);
}

#[test]
fn directories_deep_and_wide_with_sorted_lookups() {
    let mut t = Tree::new(BS);
    let m = im(0o755, 0, 0, 0);
    let mut path = String::from("deep");
    t.dir(&path, &m);
    for i in 0..200 {
        path.push_str(&format!("/{i}"));
        t.dir(&path, &m);
    }
    t.dir("wide", &m);
    let mut rng = XorShift::new(7);
    let mut names: Vec<String> = (0..3000)
        .map(|i| format!("{:x}-{i}", rng.next_u64()))
        .collect();
    for n in &names {
        t.file(&format!("wide/{n}"), n.as_bytes(), &im(0o644, 0, 0, 0));
    }
    let (meta, blocks) = t.finish();
    let img = open_ok(&assemble(&meta, &blocks, Layout::default()));
    let tree = img.tree();
    let leaf = find(&img, &path);
    assert_eq!(tree.attr(leaf).unwrap().kind, Kind::Dir);
    let mut up = leaf;
    for _ in 0..201 {
        up = tree.parent(up).unwrap();
    }
    assert_eq!(up, tree.root());
    assert_eq!(tree.parent(tree.root()), Some(tree.root()));
    let wide = find(&img, "wide");
    names.sort();
    let listed: Vec<Vec<u8>> = tree.entries(wide).map(|(n, _)| n.to_vec()).collect();
    let want: Vec<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
    assert_eq!(listed, want, "entries in byte order");
    for n in &names {
        let ino = tree.lookup(wide, n.as_bytes()).unwrap();
        assert_eq!(tree.attr(ino).unwrap().size, n.len() as u64);
    }
    assert_eq!(tree.lookup(wide, b"zzz"), None);
    assert_eq!(tree.lookup(wide, b""), None);
    assert_eq!(tree.attr(wide).unwrap().nlink, 2);
    assert_eq!(tree.attr(tree.root()).unwrap().nlink, 4);
    assert_eq!(walk_all(&img), 3000 + 201 + 1);
}

#[test]
fn symlinks_devices_fifos_sockets_and_hard_links() {
    let (meta, blocks) = sample();
    let img = open_ok(&assemble(&meta, &blocks, Layout::default()));
    let t = img.tree();
    let link = find(&img, "d/link");
    assert_eq!(t.readlink(link), Some(&b"big"[..]));
    let a = t.attr(link).unwrap();
    assert_eq!((a.kind, a.mode, a.size), (Kind::Symlink, 0o120_777, 3));
    assert_eq!(t.readlink(find(&img, "d/big")), None);
    let kinds = [
        ("e/fifo", Kind::Fifo, 0o010_600, 0),
        ("e/sock", Kind::Socket, 0o140_600, 0),
        ("e/blk", Kind::BlockDev, 0o060_660, 0x0801),
        ("e/chr", Kind::CharDev, 0o020_666, 0x0103),
    ];
    for (path, kind, mode, rdev) in kinds {
        let a = t.attr(find(&img, path)).unwrap();
        assert_eq!((a.kind, a.mode, a.rdev), (kind, mode, rdev), "{path}");
    }
    assert_eq!(t.attr(find(&img, "e/blk")).unwrap().gid, 6);
    let (big, big2) = (find(&img, "d/big"), find(&img, "d/big2"));
    assert_eq!(big, big2, "hard links share one inode");
    assert_eq!(t.attr(big).unwrap().nlink, 2);
    assert_eq!(t.attr(find(&img, "d/small")).unwrap().nlink, 1);
    assert_eq!(t.attr(big).unwrap().ino, u64::from(big.0) + 1);
}

#[test]
fn owners_modes_times_and_setuid_bits() {
    let (mut meta, blocks) = sample();
    let img = open_ok(&assemble(&meta, &blocks, Layout::default()));
    let a = img.tree().attr(find(&img, "d/small")).unwrap();
    assert_eq!((a.mode, a.uid, a.gid), (0o100_644, 1000, 1000));
    assert_eq!(
        (a.mtime.sec, a.atime.sec, a.ctime.sec),
        (1_700_000_000, 1_700_000_000, 1_700_000_000)
    );
    assert_eq!(a.mtime.nsec, 0);
    // The writer keeps only 0o777: add setuid, setgid and sticky by hand.
    for m in meta.modes.iter_mut() {
        match *m {
            0o100_644 => *m = 0o106_755,
            0o040_700 => *m = 0o041_777,
            _ => {}
        }
    }
    let img = open_ok(&assemble(&meta, &blocks, Layout::default()));
    assert_eq!(
        img.tree().attr(find(&img, "d/small")).unwrap().mode,
        0o106_755
    );
    assert_eq!(img.tree().attr(find(&img, "e")).unwrap().mode, 0o041_777);
    // Time resolution and base, and mtime only.
    meta.timestamp_base = 100;
    meta.options.as_mut().unwrap().time_resolution_sec = Some(60);
    let img = open_ok(&assemble(&meta, &blocks, Layout::default()));
    let a = img.tree().attr(find(&img, "e")).unwrap();
    assert_eq!((a.mtime.sec, a.ctime.sec), (100 + 9 * 60, 100 + 9 * 60));
    meta.options.as_mut().unwrap().mtime_only = true;
    for i in meta.inodes.iter_mut() {
        i.atime_offset = 0;
        i.ctime_offset = 0;
        i.mtime_offset = 2;
    }
    let img = open_ok(&assemble(&meta, &blocks, Layout::default()));
    let a = img.tree().attr(find(&img, "d")).unwrap();
    assert_eq!((a.atime.sec, a.mtime.sec, a.ctime.sec), (220, 220, 220));
}

#[test]
fn every_codec_for_data_and_metadata() {
    let (meta, blocks) = sample();
    for codec in [NONE, ZSTD, LZMA, LZ4, LZ4HC] {
        let l = Layout {
            data_codec: codec,
            meta_codec: codec,
            ..Layout::default()
        };
        let bytes = assemble(&meta, &blocks, l);
        let img = open_ok(&bytes);
        assert_eq!(
            read(&img, &bytes, find(&img, "d/big")),
            fill(1, 300_000),
            "codec {codec}"
        );
        assert_eq!(walk_all(&img), 11);
    }
    // dwarfs-enc's own writer (its lzma panics on data that does not
    // compress: give it text).
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i} ").into_bytes())
        .collect();
    let mut t = Tree::new(BS);
    t.file("text", &text, &im(0o644, 0, 0, 0));
    let (meta, blocks) = t.finish();
    use dwarfs_enc::section::CompressParam;
    for c in [
        CompressParam::None,
        CompressParam::Zstd(19),
        CompressParam::Lzma(6),
    ] {
        let bytes = enc_image(&meta, &blocks, c);
        let img = open_ok(&bytes);
        assert_eq!(read(&img, &bytes, find(&img, "text")), text, "{c:?}");
    }
}

#[test]
fn versions_index_and_history() {
    let (meta, blocks) = sample();
    for (version, index) in [
        ((2, 3), false),
        ((2, 4), true),
        ((2, 5), false),
        ((2, 5), true),
    ] {
        let l = Layout {
            version,
            index,
            history: true,
            ..Layout::default()
        };
        let img = open_ok(&assemble(&meta, &blocks, l));
        assert_eq!(img.version(), version);
        assert_eq!(walk_all(&img), 11);
    }
    // A damaged or lying section index is not trusted: the headers are walked.
    let good = assemble(&meta, &blocks, Layout::default());
    let spans = section_spans(&good);
    let (at, len) = *spans.last().unwrap();
    let mut bad = good.clone();
    bad[at + 64] ^= 1;
    assert_eq!(walk_all(&open_ok(&bad)), 11, "index checksum broken");
    let mut lying = good.clone();
    lying[at + 64 + 8] ^= 0x10;
    let payload = lying[at + 64..at + 64 + len].to_vec();
    reseal(&mut lying[at..at + 64], &payload);
    assert_eq!(walk_all(&open_ok(&lying)), 11, "index offsets wrong");
    for version in [(2, 2), (2, 6), (3, 0)] {
        let l = Layout {
            version,
            ..Layout::default()
        };
        let e = reason(open(&assemble(&meta, &blocks, l)));
        let (major, minor) = version;
        assert_eq!(e.reason, Reason::Version { major, minor }, "{e}");
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}

#[test]
fn image_behind_a_header_is_found() {
    let (meta, blocks) = sample();
    let img_bytes = assemble(&meta, &blocks, Layout::default());
    for header_len in [1usize, 777, 70_000, 3 << 20] {
        let mut bytes = b"#!/bin/sh\necho DWARFS but not a header\n".repeat(header_len / 39 + 1);
        bytes.truncate(header_len);
        bytes.extend_from_slice(&img_bytes);
        let img = open_ok(&bytes);
        assert_eq!(img.span().0, header_len as u64);
        assert_eq!(read(&img, &bytes, find(&img, "d/big")), fill(1, 300_000));
    }
    let e = reason(open(&vec![7u8; 100_000]));
    assert_eq!(e.reason, Reason::NotAnImage);
}

#[test]
fn image_inside_another_file_by_offset_and_size() {
    let (meta, blocks) = sample();
    let img_bytes = assemble(&meta, &blocks, Layout::default());
    let mut bytes = fill(9, 12_345);
    bytes.extend_from_slice(&img_bytes);
    bytes.extend_from_slice(&fill(10, 5_000));
    let dir = TempDir::new("image-reader");
    let path = dir.write(b"outer", &bytes);
    let file = Arc::new(File::open(&path).unwrap());
    let size = img_bytes.len() as u64;
    let img = Image::open(file.clone(), 12_345, Some(size), &path).unwrap();
    assert_eq!(img.span(), (12_345, 12_345 + size));
    assert_eq!(read(&img, &bytes, find(&img, "d/big")), fill(1, 300_000));
    // Without the size, the trailing bytes are part of the "image".
    let e = Image::open(file.clone(), 12_345, None, &path).unwrap_err();
    assert!(e.to_string().contains("@12345"), "{e}");
    let e = Image::open(file.clone(), 12_345, Some(size + 1_000_000), &path).unwrap_err();
    assert!(matches!(e.reason, Reason::Bounds(_)), "{e}");
    let e = Image::open(file, 12_345, Some(size - 1), &path).unwrap_err();
    assert!(e.section.is_some(), "{e}");
}

#[test]
fn names_in_every_table_form_including_non_utf8() {
    let (mut meta, blocks) = sample();
    for form in [Form::Plain, Form::Compact, Form::Packed, Form::Fsst] {
        // "small" < "x\x80\xff" < ... keep d's entries sorted: rename "small"
        // to a non-UTF-8 name that sorts at the same place.
        let mut m = meta.clone();
        rename(&mut m, "small", b"s\xffmall", form);
        let img = open_ok(&assemble(&m, &blocks, Layout::default()));
        let d = find(&img, "d");
        let ino = img
            .tree()
            .lookup(d, b"s\xffmall")
            .unwrap_or_else(|| panic!("{form:?}"));
        assert_eq!(img.tree().attr(ino).unwrap().size, 5);
        let names: Vec<&[u8]> = img.tree().entries(d).map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [&b"big"[..], b"big2", b"empty", b"link", b"s\xffmall"],
            "{form:?}"
        );
    }
    rename(&mut meta, "small", b"x", Form::Fsst);
    open_ok(&assemble(&meta, &blocks, Layout::default()));
}

#[test]
fn spoiled_names_are_dropped_one_by_one() {
    let (meta, blocks) = sample();
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
        let mut m = meta.clone();
        // "big2" sits between "big" and "empty"; a spoiled name is dropped
        // before the order is checked.
        rename(&mut m, "big2", bad, Form::Packed);
        let img = open_ok(&assemble(&m, &blocks, Layout::default()));
        let d = find(&img, "d");
        assert_eq!(img.tree().dropped_entries(), 1, "{bad:?}");
        assert_eq!(img.tree().entries(d).count(), 4, "{bad:?}");
        assert_eq!(img.tree().lookup(d, bad), None);
        // big is now linked once.
        assert_eq!(img.tree().attr(find(&img, "d/big")).unwrap().nlink, 1);
    }
}

#[test]
fn unsorted_or_repeated_names_are_refused() {
    let (mut meta, blocks) = sample();
    rename(&mut meta, "small", b"a", Form::Packed);
    assert_invalid(&meta, &blocks, "unsorted");
    let (mut meta, blocks) = sample();
    rename(&mut meta, "big2", b"big", Form::Plain);
    assert_invalid(&meta, &blocks, "repeated");
}

/// A hand edit of the metadata.
type Edit = Box<dyn Fn(&mut Metadata)>;

#[test]
fn loops_second_parents_and_bad_indexes_are_refused() {
    let (meta, blocks) = sample();
    let entries = meta.dir_entries.clone().unwrap();
    let fifo = names_of(&meta).iter().position(|n| n == b"fifo").unwrap() as u32;
    let e_fifo = entries.iter().position(|e| e.name_index == fifo).unwrap();
    let e_dir = entries[1].inode_num; // the first entry of the root: a directory
    let cases: Vec<(&str, Edit)> = vec![
        (
            "loop to the root",
            Box::new(move |m| m.dir_entries.as_mut().unwrap()[e_fifo].inode_num = 0),
        ),
        (
            "second parent",
            Box::new(move |m| m.dir_entries.as_mut().unwrap()[e_fifo].inode_num = e_dir),
        ),
        (
            "inode out of range",
            Box::new(move |m| m.dir_entries.as_mut().unwrap()[e_fifo].inode_num = 999),
        ),
        (
            "name out of range",
            Box::new(move |m| m.dir_entries.as_mut().unwrap()[e_fifo].name_index = 999),
        ),
        ("chunk block", Box::new(|m| m.chunks[0].block = 99)),
        (
            "chunk past block",
            Box::new(|m| m.chunks[0].offset = BS - 1),
        ),
        (
            "chunk table",
            Box::new(|m| *m.chunk_table.last_mut().unwrap() += 1),
        ),
        ("mode index", Box::new(|m| m.inodes[3].mode_index = 99)),
        ("owner index", Box::new(|m| m.inodes[3].owner_index = 99)),
        ("group index", Box::new(|m| m.inodes[3].group_index = 99)),
        ("symlink target", Box::new(|m| m.symlink_table[0] = 99)),
        ("kind vs mode", Box::new(|m| m.inodes.swap(0, 4))),
        (
            "directories out of range",
            Box::new(|m| m.directories.last_mut().unwrap().first_entry = 999),
        ),
        (
            "too few inodes",
            Box::new(|m| {
                m.inodes.pop();
            }),
        ),
        (
            "time overflow",
            Box::new(|m| m.timestamp_base = u64::MAX - 5),
        ),
        ("block size", Box::new(|m| m.block_size = 1000)),
    ];
    for (what, edit) in cases {
        let mut m = meta.clone();
        edit(&mut m);
        assert_invalid(&m, &blocks, what);
    }
    let mut m = meta.clone();
    m.features = Some(::dwarfs::metadata::OrderedSet(vec!["future".into()]));
    let e = reason(open(&assemble(&m, &blocks, Layout::default())));
    assert!(matches!(e.reason, Reason::Unsupported(_)), "{e}");
}

#[test]
fn shared_files_table_packed_and_plain() {
    // Two files with the same content, turned into shared files of one store.
    let mut t = Tree::new(BS);
    let m = im(0o644, 0, 0, 0);
    t.file("a", b"same", &m).file("b", b"same", &m);
    let (mut meta, blocks) = t.finish();
    meta.chunk_table = vec![0, 1];
    meta.chunks.truncate(1);
    for (packed, table) in [(true, vec![0u32]), (false, vec![0, 0])] {
        let mut m = meta.clone();
        m.shared_files_table = Some(table);
        m.options.as_mut().unwrap().packed_shared_files_table = packed;
        let bytes = assemble(&m, &blocks, Layout::default());
        let img = open_ok(&bytes);
        for name in ["a", "b"] {
            assert_eq!(
                read(&img, &bytes, find(&img, name)),
                b"same",
                "{packed} {name}"
            );
        }
        assert_ne!(find(&img, "a"), find(&img, "b"));
    }
    let mut m = meta;
    m.shared_files_table = Some(vec![5]);
    m.options.as_mut().unwrap().packed_shared_files_table = true;
    assert_invalid(&m, &blocks, "shared files beyond the inodes");
}

#[test]
fn packed_chunk_table_and_directories() {
    let (mut meta, blocks) = sample();
    let opts = meta.options.as_mut().unwrap();
    opts.packed_chunk_table = true;
    opts.packed_directories = true;
    let ct = meta.chunk_table.clone();
    meta.chunk_table = std::iter::once(ct[0])
        .chain(ct.windows(2).map(|w| w[1] - w[0]))
        .collect();
    let firsts: Vec<u32> = meta.directories.iter().map(|d| d.first_entry).collect();
    for (i, d) in meta.directories.iter_mut().enumerate() {
        d.first_entry = if i == 0 {
            firsts[0]
        } else {
            firsts[i] - firsts[i - 1]
        };
        d.parent_entry = 0;
    }
    let bytes = assemble(&meta, &blocks, Layout::default());
    let img = open_ok(&bytes);
    assert_eq!(read(&img, &bytes, find(&img, "d/big")), fill(1, 300_000));
    assert_eq!(walk_all(&img), 11);
}

#[test]
fn damaged_sections_name_the_image_and_section() {
    let (meta, blocks) = sample();
    let bytes = assemble(&meta, &blocks, Layout::default());
    let img = open_ok(&bytes);
    let n = img.blocks().len();
    // The metadata payload starts after the schema section.
    let meta_at = {
        let mut at = 0usize;
        for _ in 0..n + 1 {
            let size = u64::from_le_bytes(bytes[at + 56..at + 64].try_into().unwrap());
            at += 64 + size as usize;
        }
        at
    };
    let mut bad = bytes.clone();
    bad[meta_at + 70] ^= 1;
    let e = reason(open(&bad));
    assert_eq!(e.reason, Reason::Checksum, "{e}");
    assert_eq!(e.section.unwrap().number as usize, n + 1);
    let line = e.to_string();
    assert!(
        line.contains("DwarFS image") && line.contains("METADATA_V2"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    let e = reason(open(&bytes[..bytes.len() - 100]));
    assert!(e.section.is_some(), "{e}");
    // A flipped block payload is not read at open (the cache checks it).
    let mut bad = bytes.clone();
    bad[100] ^= 1;
    open_ok(&bad);
}

#[test]
fn inode_numbers_are_stable_across_opens() {
    let (meta, blocks) = sample();
    let bytes = assemble(&meta, &blocks, Layout::default());
    let (a, b) = (open_ok(&bytes), open_ok(&bytes));
    for path in ["d", "d/big", "d/link", "e/sock"] {
        let (x, y) = (find(&a, path), find(&b, path));
        assert_eq!(a.tree().attr(x).unwrap().ino, b.tree().attr(y).unwrap().ino);
    }
    assert_eq!(a.tree().attr(a.tree().root()).unwrap().ino, 1);
}

#[test]
fn index_memory_is_compact() {
    let mut t = Tree::new(1 << 20);
    let m = im(0o644, 0, 0, 0);
    for d in 0..100 {
        t.dir(&format!("dir{d:03}"), &im(0o755, 0, 0, 0));
        for f in 0..1000 {
            t.file(&format!("dir{d:03}/file-{f:05}"), &[f as u8; 3], &m);
        }
    }
    let (meta, blocks) = t.finish();
    let (_, raw) = serialize(&meta);
    let img = open_ok(&assemble(&meta, &blocks, Layout::default()));
    let heap = img.tree().heap_bytes();
    let files = 100_000;
    eprintln!(
        "index: {heap} bytes for {files} files, metadata {} bytes",
        raw.len()
    );
    assert!(heap < files * 100, "{heap} bytes for {files} files");
    assert!(
        heap < raw.len() * 8,
        "{heap} bytes for {} bytes of metadata",
        raw.len()
    );
    assert_eq!(walk_all(&img), files + 100);
}

/// One corruption of an image, chosen by `rng`.
fn corrupt(rng: &mut XorShift, good: &[u8], sections: &[(usize, usize)]) -> Vec<u8> {
    let mut b = good.to_vec();
    let &(at, len) = rng.pick(sections);
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            // A header field: version, number, type, codec or size.
            let field = [6usize, 7, 48, 52, 54, 56, 60];
            let f = *rng.pick(&field);
            b[at + f] = rng.next_u64() as u8;
        }
        3 => {
            let size = rng.next_u64() >> rng.below(64);
            b[at + 56..at + 64].copy_from_slice(&size.to_le_bytes());
        }
        4 => {
            // Overwrite a header and re-seal it, so the checksum passes.
            let f = *rng.pick(&[48usize, 52, 54, 56]);
            b[at + f] = b[at + f].wrapping_add(1 + rng.below(3) as u8);
            let end = (at + 64 + len).min(b.len());
            let payload = b[at + 64..end].to_vec();
            reseal(&mut b[at..at + 64], &payload);
        }
        5 => {
            let i = b.len() - 8 + rng.below(8);
            b[i] = rng.next_u64() as u8;
        }
        _ => b
            .splice(at..at, fill(rng.next_u64(), rng.below(200)))
            .for_each(drop),
    }
    b
}

/// Mutates serialized metadata (a flipped bit or a rewritten byte) and
/// re-seals it, so the parser and the validation see it.
fn corrupt_metadata(rng: &mut XorShift, schema: &[u8], meta: &[u8], blocks: &[Vec<u8>]) -> Vec<u8> {
    let (mut s, mut m) = (schema.to_vec(), meta.to_vec());
    let target = if rng.chance(20) { &mut s } else { &mut m };
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(target.len());
        if rng.chance(50) {
            target[i] ^= 1 << rng.below(8);
        } else {
            target[i] = rng.next_u64() as u8;
        }
    }
    let l = Layout {
        meta_codec: *rng.pick(&[NONE, ZSTD, LZ4]),
        data_codec: NONE,
        ..Layout::default()
    };
    assemble_raw(&s, &m, blocks, l)
}

/// A value near the interesting edges of a table of `len` entries.
fn edge(rng: &mut XorShift, len: usize) -> u32 {
    let len = len as u32;
    match rng.below(6) {
        0 => 0,
        1 => len.saturating_sub(1),
        2 => len,
        3 => u32::MAX,
        4 => rng.below(20) as u32,
        _ => rng.next_u64() as u32,
    }
}

/// Rewrites one to three fields of the metadata itself (indexes, tables,
/// options), then serializes it: the validation sees well-formed input
/// that lies.
fn corrupt_struct(rng: &mut XorShift, good: &Metadata) -> Metadata {
    let mut m = good.clone();
    for _ in 0..1 + rng.below(3) {
        let r = rng.next_u64() as usize;
        match rng.below(12) {
            0 => {
                let n = m.chunks.len();
                let v = edge(rng, 1 << 16);
                let c = &mut m.chunks[r % n];
                *[&mut c.block, &mut c.offset, &mut c.size][r % 3] = v;
            }
            1 => {
                let (n, v) = (m.chunk_table.len(), edge(rng, m.chunks.len()));
                m.chunk_table[r % n] = v;
            }
            2 => {
                let (n, v) = (m.directories.len(), edge(rng, 60));
                m.directories[r % n].first_entry = v;
            }
            3 | 4 => {
                let v = edge(rng, m.inodes.len());
                let e = m.dir_entries.as_mut().unwrap();
                let n = e.len();
                if r.is_multiple_of(2) {
                    e[r % n].inode_num = v
                } else {
                    e[r % n].name_index = v
                }
            }
            5 => {
                let n = m.inodes.len();
                let v = edge(rng, 4);
                let i = &mut m.inodes[r % n];
                *[
                    &mut i.mode_index,
                    &mut i.owner_index,
                    &mut i.group_index,
                    &mut i.mtime_offset,
                ][r % 4] = v;
            }
            6 => {
                let n = m.modes.len();
                m.modes[r % n] = (rng.below(16) as u32) << 12 | 0o7777 & rng.next_u64() as u32;
            }
            7 => {
                let v = edge(rng, 2);
                m.symlink_table.iter_mut().for_each(|s| *s = v);
            }
            8 => {
                m.shared_files_table = Some((0..rng.below(4)).map(|_| edge(rng, 3)).collect());
                m.options.as_mut().unwrap().packed_shared_files_table = rng.chance(50);
            }
            9 => {
                let o = m.options.as_mut().unwrap();
                o.packed_chunk_table ^= r.is_multiple_of(3);
                o.packed_directories ^= r % 3 == 1;
                o.mtime_only ^= r % 3 == 2;
            }
            10 => {
                let names = names_of(&m);
                let mut names = names.clone();
                let n = names.len();
                names[r % n] = fill(r as u64, rng.below(4))
                    .iter()
                    .map(|b| b % 4 + 45)
                    .collect();
                set_names(&mut m, &names, Form::Packed);
            }
            _ => {
                if rng.chance(50) {
                    m.inodes.truncate(m.inodes.len() - 1);
                } else {
                    m.devices = Some(vec![1; rng.below(4)]);
                }
            }
        }
    }
    m
}

fn section_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 64 <= bytes.len() {
        let size = u64::from_le_bytes(bytes[at + 56..at + 64].try_into().unwrap()) as usize;
        out.push((at, size));
        at += 64 + size;
    }
    out
}

#[test]
fn fuzz_corrupted_images_never_panic() {
    let iterations = knob("FIMFS_FUZZ_ITER", 2000);
    let seed = splitmix(knob("FIMFS_FUZZ_SEED", 1));
    let mut t = sample_tree();
    t.dir("w", &im(0o755, 0, 0, 0));
    for i in 0..40 {
        t.file(
            &format!("w/f{i:02}"),
            &fill(i, 100 * i as usize),
            &im(0o644, 0, 0, 0),
        );
    }
    let (meta, mut blocks) = t.finish();
    blocks.truncate(blocks.len().min(3));
    for b in blocks.iter_mut() {
        b.truncate(64);
    }
    let mut m = meta.clone();
    for c in m.chunks.iter_mut() {
        c.block %= 3;
    }
    let (schema, raw) = serialize(&m);
    let goods: Vec<Vec<u8>> = [NONE, ZSTD, LZMA, LZ4]
        .iter()
        .map(|&c| {
            assemble_raw(
                &schema,
                &raw,
                &blocks,
                Layout {
                    data_codec: c,
                    meta_codec: c,
                    ..Layout::default()
                },
            )
        })
        .collect();
    let dir = TempDir::new("image-fuzz");
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut reasons: HashMap<String, u64> = HashMap::new();
    for i in 0..iterations {
        let mut rng = XorShift::new(seed ^ splitmix(i));
        let bytes = if rng.chance(30) {
            corrupt_metadata(&mut rng, &schema, &raw, &blocks)
        } else if rng.chance(50) {
            let bad = corrupt_struct(&mut rng, &m);
            assemble(&bad, &blocks, Layout::default())
        } else {
            let good = rng.pick(&goods);
            corrupt(&mut rng, good, &section_spans(good))
        };
        match open_bytes(dir.path(), &bytes) {
            Ok(img) => {
                walk_all(&img);
                ok += 1;
            }
            Err(e) => {
                let line = e.to_string();
                assert!(
                    line.starts_with("DwarFS image") && !line.contains('\n'),
                    "{line}"
                );
                let kind = format!("{:?}", e.reason);
                let kind = kind.split([' ', '(']).next().unwrap().to_string();
                *reasons.entry(kind).or_default() += 1;
                refused += 1;
            }
        }
    }
    eprintln!("fuzz: {iterations} images, {ok} opened and walked, {refused} refused: {reasons:?}");
    assert_eq!(ok + refused, iterations);
    assert!(refused > 0 && ok > 0, "the corruptions both pass and fail");
    // No corruption made the process balloon (the whole binary's peak).
    let peak = peak_rss_kib();
    assert!(peak < 1 << 20, "peak resident memory {peak} KiB");
}

/// The process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

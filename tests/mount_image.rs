//! DwarFS images as lowers, through real mounts: an image reads as the
//! directory it was packed from, alone or mixed with directories, under an
//! upper that copies up from it; a FlatImage binary expands to its layers;
//! the `dwarfs` drop-in form serves one of them; programs run from an
//! image; a corrupt image is refused at mount and a corrupt block costs
//! only its file's data.
//!
//! The images are packed by the tests (`common::pack`) from the sample
//! layers (`fixtures/`), whose xattr markers become `.wh.` files, as
//! FlatImage's commit writes them.

mod common;

use common::dwarfs::{LZ4, LZMA, Layout, NONE, ZSTD};
use common::image::{Spec, block, build};
use common::pack::pack_dir;
use common::tree::{Tree, assert_same_tree, walk};
use common::*;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn layout(codec: u16) -> Layout {
    Layout {
        data_codec: codec,
        meta_codec: codec,
        ..Layout::default()
    }
}

/// The sample layers, minus the one name the image writer cannot take
/// (non-UTF-8; the reader's own tests cover such names).
fn fixture_layers(tmp: &TempDir) -> Layers {
    let layers = build_fixtures(&tmp.join("fx"));
    fs::remove_file(layers.lowers[0].join(OsStr::from_bytes(b"names/\xff\xfe"))).unwrap();
    layers
}

/// Packs each lower into an image file next to it, each with a codec of
/// its own; returns the image paths, topmost first.
fn pack_all(tmp: &TempDir, lowers: &[PathBuf], block_size: u32) -> Vec<PathBuf> {
    let codecs = [ZSTD, LZMA, LZ4, NONE];
    lowers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let img = tmp.join(format!("layer{i}.dwarfs"));
            let bytes = pack_dir(l, block_size, layout(codecs[i % codecs.len()]));
            fs::write(&img, bytes).unwrap();
            img
        })
        .collect()
}

/// The tree without xattrs: an image keeps none, so only what the
/// directories hold besides them is compared.
fn without_xattrs(mut t: Tree) -> Tree {
    for e in t.entries.values_mut() {
        e.xattrs = Ok(Default::default());
    }
    t
}

#[test]
fn images_read_as_the_directories_they_were_packed_from() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-read");
    let layers = fixture_layers(&tmp);
    let images = pack_all(&tmp, &layers.lowers, 4096);
    let dirs_mnt = tmp.join("dirs");
    let imgs_mnt = tmp.join("imgs");
    let mixed_mnt = tmp.join("mixed");
    for m in [&dirs_mnt, &imgs_mnt, &mixed_mnt] {
        fs::create_dir(m).unwrap();
    }
    let dirs = MountGuard::new(&layers.lowers, None, &dirs_mnt, &[]);
    let imgs = MountGuard::new(&images, None, &imgs_mnt, &[]);
    // Directories and images mix freely.
    let mixed_lowers = vec![
        images[0].clone(),
        layers.lowers[1].clone(),
        images[2].clone(),
    ];
    let mixed = MountGuard::new(&mixed_lowers, None, &mixed_mnt, &[]);
    let want = without_xattrs(walk(dirs.path()));
    assert!(want.entries.len() > 40, "the fixtures were packed");
    assert_same_tree(
        "directories",
        &want,
        "images",
        &without_xattrs(walk(imgs.path())),
    );
    assert_same_tree(
        "directories",
        &want,
        "mixed",
        &without_xattrs(walk(mixed.path())),
    );
    // d_ino == st_ino for every listed entry, and numbers stay after the
    // kernel forgot them and after a remount.
    let numbers = inode_numbers(imgs.path());
    drop_caches(3);
    assert_eq!(numbers, inode_numbers(imgs.path()));
    for m in [dirs, imgs, mixed] {
        unmount_clean(m);
    }
    let again = MountGuard::new(&images, None, &imgs_mnt, &[]);
    assert_eq!(numbers, inode_numbers(again.path()));
    unmount_clean(again);
}

/// A zero-size chunk in the middle of a file (which mkdwarfs may write,
/// and on which the `dwarfs` crate's own reader stops early) is skipped.
#[test]
fn a_zero_size_chunk_inside_a_file_reads_through() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-chunk");
    let mut t = common::dwarfs::Tree::new(4);
    let m = common::dwarfs::im(0o644, 0, 0, 1_700_000_000);
    t.file("z", b"abcdefghij", &m);
    let (mut meta, blocks) = t.finish();
    assert_eq!(meta.chunks.len(), 3, "three chunks of at most 4 bytes");
    let mut empty = meta.chunks[0].clone();
    empty.size = 0;
    meta.chunks.insert(1, empty);
    // The file's chunk range grows by one: every later start moves.
    for start in meta.chunk_table.iter_mut().skip(1) {
        *start += 1;
    }
    let img = tmp.join("chunks.dwarfs");
    fs::write(&img, common::dwarfs::assemble(&meta, &blocks, layout(ZSTD))).unwrap();
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = MountGuard::new(std::slice::from_ref(&img), None, &mnt, &[]);
    assert_eq!(fs::read(m.join("z")).unwrap(), b"abcdefghij");
    let f = fs::File::open(m.join("z")).unwrap();
    let mut buf = [0u8; 6];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 2).unwrap();
    assert_eq!(&buf, b"cdefgh");
    drop(f);
    unmount_clean(m);
}

/// Every path's inode number, checked against `d_ino` of its listing.
fn inode_numbers(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            assert_eq!(e.ino(), md.ino(), "d_ino of {:?}", e.path());
            out.push((e.path(), md.ino()));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writes_copy_up_from_images_as_from_directories() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-write");
    let layers = fixture_layers(&tmp);
    let images = pack_all(&tmp, &layers.lowers, 4096);
    let run = |lowers: &[PathBuf], tag: &str| -> (Tree, Tree) {
        let upper = tmp.join(format!("{tag}-upper"));
        let mnt = tmp.join(format!("{tag}-mnt"));
        fs::create_dir(&mnt).unwrap();
        let m = MountGuard::new(lowers, Some(&upper), &mnt, &[]);
        let p = |r: &str| m.join(r);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(p("merged/common"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"appended\n").unwrap();
        drop(f);
        fs::remove_file(p("shadow.txt")).unwrap();
        fs::remove_dir_all(p("opq-wh")).unwrap();
        fs::create_dir(p("opq-wh")).unwrap();
        fs::write(p("opq-wh/new"), b"new\n").unwrap();
        fs::rename(p("merged/sub"), p("moved")).unwrap();
        fs::set_permissions(p("readonly.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::hard_link(p("bin/hello.sh"), p("hello-link")).unwrap();
        let view = without_xattrs(walk(m.path()));
        unmount_clean(m);
        (view, without_xattrs(walk(&upper)))
    };
    let (dir_view, _) = run(&layers.lowers, "dirs");
    let (img_view, img_upper) = run(&images, "imgs");
    assert_same_tree("directories", &dir_view, "images", &img_view);
    // The copy-up holds the image's data and the append.
    let copied = &img_upper.entries[&b"merged/common".to_vec()];
    assert_eq!(
        copied.size,
        Some(b"merged/common from lower2\nappended\n".len() as u64)
    );
}

/// Files of images the kernel holds (read once, so their dentries are
/// cached) keep their numbers and their data after their directory is
/// renamed: the daemon keeps no node for them (`union::direct`), and must
/// find them at the new name from their number alone.
#[test]
fn files_the_kernel_holds_follow_their_directory_when_it_moves() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-dirmove");
    let layers = fixture_layers(&tmp);
    let images = pack_all(&tmp, &layers.lowers, 4096);
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = MountGuard::new(&images, Some(&tmp.join("upper")), &mnt, &[]);
    let names = ["a", "b"];
    let before: Vec<(Vec<u8>, u64)> = names
        .iter()
        .map(|n| {
            let p = m.join(format!("merged/sub/{n}"));
            (fs::read(&p).unwrap(), fs::metadata(&p).unwrap().ino())
        })
        .collect();
    fs::rename(m.join("merged/sub"), m.join("moved")).unwrap();
    for (n, (data, ino)) in names.iter().zip(&before) {
        let p = m.join(format!("moved/{n}"));
        let read = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        assert_eq!(&read, data, "{n} after the move");
        assert_eq!(
            fs::metadata(&p).unwrap().ino(),
            *ino,
            "{n} keeps its number"
        );
    }
    unmount_clean(m);
}

/// A FlatImage binary with two layers: `bottom` then `top` appended.
fn flatimage_with(tmp: &TempDir, bottom: &[u8], top: &[u8]) -> (PathBuf, Vec<(u64, u64)>) {
    let mut spec = Spec::new();
    spec.blocks = vec![
        block(bottom.len() as u64, bottom),
        block(top.len() as u64, top),
    ];
    let bytes = build(&spec);
    let path = tmp.join("app.flatimage");
    fs::write(&path, &bytes).unwrap();
    let img = fimfs::launch::Image::open(&path).unwrap();
    let spans = img
        .layers()
        .unwrap()
        .iter()
        .map(|l| (l.offset, l.size))
        .collect();
    (path, spans)
}

fn layer_image(tmp: &TempDir, tag: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tmp.join(tag);
    for (name, content) in files {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    pack_dir(&dir, 1 << 16, layout(ZSTD))
}

#[test]
fn a_flatimage_binary_expands_to_its_layers_and_dwarfs_argv_serves_one() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-fim");
    let bottom = layer_image(
        &tmp,
        "bottom",
        &[("a", "bottom a\n"), ("only-bottom", "b\n")],
    );
    let top = layer_image(&tmp, "top", &[("a", "top a\n"), ("only-top", "t\n")]);
    let (bin, spans) = flatimage_with(&tmp, &bottom, &top);
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    // `fimfs mount BINARY MNT`: the later layer is the higher one.
    let m = MountGuard::new(std::slice::from_ref(&bin), None, &mnt, &[]);
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "top a\n");
    assert_eq!(fs::read_to_string(m.join("only-bottom")).unwrap(), "b\n");
    assert_eq!(fs::read_to_string(m.join("only-top")).unwrap(), "t\n");
    unmount_clean(m);
    // Under the name dwarfs, FlatImage's own command line for one layer.
    let dwarfs = tmp.join("bin/dwarfs");
    fs::create_dir_all(dwarfs.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fimfs"), &dwarfs).unwrap();
    let (offset, size) = spans[0];
    let opts = format!("uid=1234,gid=4321,auto_unmount,offset={offset},imagesize={size}");
    let args: Vec<OsString> = vec![
        bin.clone().into(),
        mnt.clone().into(),
        "-f".into(),
        "-o".into(),
        opts.into(),
    ];
    let m = MountGuard::spawn_program(&dwarfs, &args, &mnt);
    assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "bottom a\n");
    assert!(!m.join("only-top").exists());
    let md = fs::metadata(m.join("a")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 4321));
    let err = fs::write(m.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // auto_unmount: a killed daemon does not leave its mount behind.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid() as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !fimfs::mountinfo::read().iter().any(|e| e.point == mnt)
    });
    assert!(gone, "the mount outlived its killed daemon");
    drop(m);
}

#[test]
fn programs_run_from_an_image_and_large_files_read_whole() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-exec");
    let src = tmp.join("src");
    fs::create_dir_all(src.join("bin")).unwrap();
    // A dynamically linked program: the loader maps it from the mount.
    fs::copy("/usr/bin/env", src.join("bin/env")).unwrap();
    let mut rng = XorShift::new(7);
    let big: Vec<u8> = (0..40 << 20)
        .map(|_| (rng.next_u64() >> 60) as u8)
        .collect();
    fs::write(src.join("big"), &big).unwrap();
    fs::write(src.join("x"), b"one").unwrap();
    fs::hard_link(src.join("x"), src.join("y")).unwrap();
    let img = tmp.join("exec.dwarfs");
    fs::write(&img, pack_dir(&src, 16 << 20, layout(ZSTD))).unwrap();
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = MountGuard::new(std::slice::from_ref(&img), None, &mnt, &[]);
    let out = Command::new(m.join("bin/env"))
        .arg("echo")
        .arg("ran from the image")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ran from the image\n");
    assert_eq!(fs::read(m.join("big")).unwrap(), big, "sequential read");
    let f = fs::File::open(m.join("big")).unwrap();
    for _ in 0..200 {
        let at = rng.next_u64() % (big.len() as u64 - 10_000);
        let mut buf = vec![0u8; (rng.next_u64() % 10_000) as usize + 1];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, at).unwrap();
        assert_eq!(buf, big[at as usize..at as usize + buf.len()], "at {at}");
    }
    let (x, y) = (
        fs::metadata(m.join("x")).unwrap(),
        fs::metadata(m.join("y")).unwrap(),
    );
    assert_eq!(
        (x.ino(), x.nlink()),
        (y.ino(), 2),
        "hard links are one inode"
    );
    drop(f);
    unmount_clean(m);
}

#[test]
fn a_corrupt_image_is_refused_and_a_corrupt_block_costs_only_its_file() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-bad");
    let src = tmp.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("first"), vec![b'1'; 100_000]).unwrap();
    fs::write(src.join("second"), vec![b'2'; 100_000]).unwrap();
    // One file per block: 100,000 bytes in blocks of 128 KiB would share.
    let bytes = pack_dir(&src, 1 << 16, layout(NONE));
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();

    // The metadata is the last sections: a flipped byte there fails the
    // mount with a message naming the image.
    let mut bad_meta = bytes.clone();
    let at = bad_meta.len() - 200;
    bad_meta[at] ^= 0x55;
    let img = tmp.join("bad-meta.dwarfs");
    fs::write(&img, &bad_meta).unwrap();
    let out = run_fimfs(
        &mount_args(std::slice::from_ref(&img), None, &mnt, &[]),
        &tmp.join("log"),
    );
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("bad-meta.dwarfs"), "{out}");

    // A flipped byte in the first data block: that file's data is EIO,
    // the other file reads, the daemon lives on.
    let mut bad_block = bytes.clone();
    bad_block[64 + 1000] ^= 0x55;
    let img = tmp.join("bad-block.dwarfs");
    fs::write(&img, &bad_block).unwrap();
    let m = MountGuard::new(std::slice::from_ref(&img), None, &mnt, &[]);
    let e = fs::read(m.join("first")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert_eq!(fs::read(m.join("second")).unwrap(), vec![b'2'; 100_000]);
    unmount_clean(m);
}

/// `fimfs diff --lowers` reads images as it reads directories; `fimfs
/// which` names the image (and where in its file it starts); casefold
/// folds names across images.
#[test]
fn diff_which_and_casefold_read_images() {
    require_root_and_fuse();
    let tmp = TempDir::new("mi-inspect");
    let layers = fixture_layers(&tmp);
    let images = pack_all(&tmp, &layers.lowers, 4096);
    let upper = tmp.join("upper");
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = MountGuard::new(&images, Some(&upper), &mnt, &[]);
    fs::write(m.join("merged/common"), b"changed\n").unwrap();
    fs::write(m.join("brand-new"), b"new\n").unwrap();
    fs::remove_file(m.join("merged/from3")).unwrap();
    let out = run_fimfs(
        &[
            "which".into(),
            m.join("merged/from2").into(),
            m.join("brand-new").into(),
        ],
        &tmp.join("logs"),
    );
    assert!(out.success(), "{out}");
    let want = format!("lower 2 {}", images[1].display());
    assert!(out.stdout.contains(&want), "which names the image: {out}");
    assert!(out.stdout.contains("upper"), "{out}");
    unmount_clean(m);
    let diff = |lowers: &[PathBuf]| {
        let out = run_fimfs(
            &[
                "diff".into(),
                "--lowers".into(),
                lowers_arg(lowers),
                upper.clone().into(),
            ],
            &tmp.join("logs"),
        );
        assert!(out.success(), "{out}");
        out.stdout
    };
    let from_images = diff(&images);
    assert_eq!(from_images, diff(&layers.lowers));
    for line in ["M merged/common", "A brand-new", "D merged/from3"] {
        assert!(
            from_images.lines().any(|l| l == line),
            "{line}: {from_images}"
        );
    }
    // Case-folded lookups across images.
    let m = MountGuard::new(&images, None, &mnt, &["casefold"]);
    assert_eq!(
        fs::read_to_string(m.join("MERGED/FROM1")).unwrap(),
        "only in lower1\n"
    );
    assert_eq!(
        fs::read_to_string(m.join("names/readme.txt")).unwrap(),
        "mixed-case name\n"
    );
    unmount_clean(m);
}

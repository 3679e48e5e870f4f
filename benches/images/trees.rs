//! The layer trees, generated once into `FIMFS_IMAGES_DIR/trees/` (each
//! with a `STAMP` of its parameters; a mismatch regenerates it), and
//! packed once into images (see [`crate::packer`]):
//!
//! - **main** (5 layers, `l1` the top): the union benchmark's tree
//!   ([`crate::tree::generate`]: 20,000 merged files over 400 directories,
//!   shadowed copies, `app/`, …) whose `big/big.bin` is text-like
//!   (compressible, as real layers are) of `big_mib` MiB, plus the union
//!   benchmark's 6,000-file source tree under `src/`, spread round-robin
//!   over the five layers (the `grep -r` workload).
//! - **many** (20 layers, `l00` the top): the scale benchmark's flatness
//!   tree ([`crate::scale_tree::flat_tree`]): 200 directories present in
//!   every layer, 20,000 empty files round-robin, 1,000 only in the bottom.
//! - **py**: a root filesystem holding the host's `python3` (its
//!   libraries, its standard library with the compiled `__pycache__`, the
//!   libraries of every extension module) and `true`; the start-up stack
//!   is the top 19 layers of **many** over it.
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tree::Rng;

/// Bump when a layout below changes.
const VERSION: u32 = 1;

/// A layer set, top-most first, with the stamp its images are keyed by.
pub struct Layers {
    pub dirs: Vec<PathBuf>,
    pub stamp: String,
}

/// Reuses `root` when its stamp is `stamp`, else builds it with `make`
/// (into `root.tmp`, renamed into place once complete).
pub fn ensure(
    root: &Path,
    stamp: &str,
    make: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    if fs::read_to_string(root.join("STAMP")).ok().as_deref() == Some(stamp) {
        return Ok(());
    }
    let tmp = root.with_extension("tmp");
    for d in [root, tmp.as_path()] {
        if d.exists() {
            fs::remove_dir_all(d)?;
        }
    }
    eprintln!("fimfs-images: generating {} …", root.display());
    fs::create_dir_all(&tmp)?;
    make(&tmp)?;
    fs::write(tmp.join("STAMP"), stamp)?;
    fs::rename(&tmp, root)
}

// ---------------------------------------------------------------------------
// main

const WORDS: &[&str] = &[
    "the",
    "layer",
    "image",
    "block",
    "cache",
    "inode",
    "mount",
    "daemon",
    "lookup",
    "read",
    "write",
    "directory",
    "entry",
    "name",
    "file",
    "size",
    "offset",
    "chunk",
    "zstd",
    "decode",
    "fimfs",
    "overlay",
    "kernel",
    "union",
    "sandbox",
    "python",
    "library",
    "module",
    "import",
    "0",
    "1",
    "42",
    "=",
    "{",
    "}",
    ";",
    "(",
    ")",
    "->",
    "return",
];

/// `size` bytes of text-like lines (compresses about 3:1, as text does).
fn write_text(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut w = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut written = 0u64;
    let mut line = String::new();
    while written < size {
        line.clear();
        for i in 0..4 + rng.below(10) {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            if rng.below(8) == 0 {
                line.push_str(&rng.below(1_000_000).to_string());
            }
        }
        line.push('\n');
        let take = (line.len() as u64).min(size - written) as usize;
        w.write_all(&line.as_bytes()[..take])?;
        written += take as u64;
    }
    w.flush()
}

/// The **main** layers and what their checks need.
pub fn main_tree(root: &Path, big_mib: u64) -> io::Result<Layers> {
    let stamp = format!("fimfs-images main v{VERSION} big_mib={big_mib}\n");
    ensure(root, &stamp, |tmp| {
        let t = crate::tree::generate(tmp, 0)?;
        write_text(&t.bottom().join(crate::tree::BIG_REL), big_mib << 20, 0xb16)?;
        let tar = tmp.join("src.tar");
        crate::fixtures::source_tarball(&tar)?;
        let x = tmp.join("srcx");
        fs::create_dir_all(&x)?;
        let ok = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&x)
            .status()?;
        if !ok.success() {
            return Err(io::Error::other("tar -xf src.tar failed"));
        }
        spread(&x.join(crate::fixtures::SRC_TOP), &t.lowers, "src")?;
        fs::remove_dir_all(&x)?;
        fs::remove_file(&tar)
    })?;
    let dirs = (1..=crate::tree::LOWERS)
        .map(|i| root.join(format!("l{i}")))
        .collect();
    Ok(Layers { dirs, stamp })
}

/// Moves the files under `from` into `lowers[i % n]/to/…`, round-robin
/// in sorted order.
fn spread(from: &Path, lowers: &[PathBuf], to: &str) -> io::Result<()> {
    let mut files = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(from.join(&rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(r);
            } else {
                files.insert(r);
            }
        }
    }
    for (i, rel) in files.iter().enumerate() {
        let dest = lowers[i % lowers.len()].join(to).join(rel);
        fs::create_dir_all(dest.parent().unwrap_or(Path::new("/")))?;
        fs::rename(from.join(rel), dest)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// many

/// The **many** layers, with the list files of the stat workloads:
/// `bottom.txt` (the 1,000 names only the bottom layer holds) and
/// `missing.txt` (1,000 names in the same directories that no layer has).
pub struct Many {
    pub layers: Layers,
    pub bottom_list: PathBuf,
    pub missing_list: PathBuf,
}

pub fn many_tree(root: &Path, lowers: usize) -> io::Result<Many> {
    let files = 20_000;
    let t = crate::scale_tree::flat_tree(root, files, lowers)?;
    let stamp = format!("fimfs-images many v{VERSION} files={files} lowers={lowers}\n");
    let bottom_list = root.join("bottom.txt");
    let missing_list = root.join("missing.txt");
    let mut bottom = t.bottom_only.clone();
    // A fixed shuffle, so the stats do not follow the directory order.
    let mut rng = Rng::new(0x5eed_0020);
    for i in (1..bottom.len()).rev() {
        bottom.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let missing: Vec<String> = bottom.iter().map(|p| p.replace("/b", "/nope")).collect();
    fs::write(&bottom_list, bottom.join("\n") + "\n")?;
    fs::write(&missing_list, missing.join("\n") + "\n")?;
    Ok(Many {
        layers: Layers {
            dirs: t.many,
            stamp,
        },
        bottom_list,
        missing_list,
    })
}

// ---------------------------------------------------------------------------
// py

/// The Python module list the start-up workload imports.
pub const PY_IMPORTS: &str = "json, sqlite3, ssl, ctypes, decimal, lzma, bz2, email.mime.text, \
                              http.client, xml.etree.ElementTree, asyncio, unittest, hashlib, csv, zipfile";

/// The host's `python3` and its standard library directory.
fn host_python() -> io::Result<(PathBuf, PathBuf)> {
    let exe = fs::canonicalize("/usr/bin/python3")?;
    let out = Command::new(&exe)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()?;
    let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !lib.join("os.py").is_file() {
        return Err(io::Error::other(format!("no stdlib at {}", lib.display())));
    }
    Ok((exe, lib))
}

/// What `ldd` lists for `bin`: libraries and the loader, as the paths named.
fn ldd(bin: &Path, into: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    let out = Command::new("ldd").arg(bin).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            into.insert(PathBuf::from(p));
        }
    }
    Ok(())
}

/// Copies `src` (following symlinks) to `root/src`.
fn copy_in(root: &Path, src: &Path) -> io::Result<()> {
    let dest = root.join(src.strip_prefix("/").unwrap_or(src));
    fs::create_dir_all(dest.parent().unwrap_or(root))?;
    fs::copy(src, dest).map(|_| ())
}

pub fn py_tree(root: &Path) -> io::Result<Layers> {
    let (exe, lib) = host_python()?;
    let stamp = format!(
        "fimfs-images py v{VERSION} {} {}\n",
        exe.display(),
        lib.display()
    );
    ensure(root, &stamp, |tmp| {
        let mut libs = BTreeSet::new();
        let truth = fs::canonicalize("/usr/bin/true")?;
        ldd(&exe, &mut libs)?;
        ldd(&truth, &mut libs)?;
        for e in fs::read_dir(lib.join("lib-dynload"))? {
            ldd(&e?.path(), &mut libs)?;
        }
        for l in &libs {
            copy_in(tmp, l)?;
        }
        fs::create_dir_all(tmp.join("usr/bin"))?;
        fs::copy(&exe, tmp.join("usr/bin/python3"))?;
        fs::copy(&truth, tmp.join("usr/bin/true"))?;
        let dest = tmp.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(dest.parent().unwrap_or(tmp))?;
        let ok = Command::new("cp").arg("-a").arg(&lib).arg(&dest).status()?;
        if !ok.success() {
            return Err(io::Error::other("cp -a of the stdlib failed"));
        }
        for d in ["dev", "proc", "tmp", "etc", "home"] {
            fs::create_dir_all(tmp.join(d))?;
        }
        Ok(())
    })?;
    Ok(Layers {
        dirs: vec![root.to_path_buf()],
        stamp,
    })
}

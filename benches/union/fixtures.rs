//! The smaller fixtures next to the 5-lower tree ([`crate::tree`]), each
//! generated once per run and deterministic:
//!
//! - [`rootfs`]: a two-lower root filesystem holding `sh`, `touch` and `seq`
//!   (copied from the host with the libraries `ldd` lists), for the workload
//!   that runs with the union as its `/`.
//! - [`wide`]: one directory of 50,000 entries split over two lowers.
//! - [`deep`]: 20 lowers whose directories exist in every lower while the
//!   files exist only in the bottom one, and the list of those files.
//! - [`source_tarball`]: a 6,000-file source-like tree, written straight
//!   into a ustar archive (never onto disk), for untar + `grep -r`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::tree::Rng;

// ---------------------------------------------------------------------------
// Root filesystem

/// Programs the root filesystem provides (and the workload uses).
pub const ROOT_PROGRAMS: &[&str] = &["sh", "touch", "seq"];

pub struct RootFs {
    /// Top-most first: `r1` (a small "app" layer), `r2` (the base system).
    pub lowers: Vec<PathBuf>,
    /// Regular files copied from the host.
    pub files: usize,
}

/// Builds the root filesystem under `root` (`root/r1`, `root/r2`).
///
/// `r2` gets the host's top-level usrmerge symlinks (`/bin -> usr/bin`, …)
/// as the host has them, the programs of [`ROOT_PROGRAMS`] under the path
/// the host has them, every library `ldd` lists plus the dynamic loader,
/// each under the path `ldd` names with every symlink on the way replicated,
/// and empty `dev/`, `proc/` and `tmp/` for bwrap to mount on. `r1` holds
/// `etc/hostname` and an empty `home/`, so the root is a real union.
pub fn rootfs(root: &Path) -> io::Result<RootFs> {
    let top = root.join("r1");
    let base = root.join("r2");
    fs::create_dir_all(top.join("etc"))?;
    fs::create_dir_all(top.join("home"))?;
    fs::write(top.join("etc/hostname"), "fimfs-bench\n")?;
    fs::create_dir_all(&base)?;
    for d in ["dev", "proc", "tmp"] {
        fs::create_dir_all(base.join(d))?;
    }
    fs::set_permissions(base.join("tmp"), fs::Permissions::from_mode(0o1777))?;

    let mut copier = Copier {
        dst: base.clone(),
        files: 0,
    };
    let mut libs = BTreeSet::new();
    for prog in ROOT_PROGRAMS {
        let host = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(prog))
            .find(|p| p.exists())
            .ok_or_else(|| io::Error::other(format!("{prog} not found in /bin or /usr/bin")))?;
        copier.copy(&host, 0)?;
        libs.extend(ldd(&host)?);
    }
    for lib in &libs {
        copier.copy(lib, 0)?;
    }
    Ok(RootFs {
        lowers: vec![top, base],
        files: copier.files,
    })
}

/// The absolute paths `ldd` lists for `bin` (libraries and the loader).
fn ldd(bin: &Path) -> io::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ldd {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(io::Error::other(format!("ldd {}: {line}", bin.display())));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; vdso lines name no file.
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            v.push(PathBuf::from(path));
        }
    }
    Ok(v)
}

/// Copies host paths into `dst`, replicating every symlink met on the way.
struct Copier {
    dst: PathBuf,
    files: usize,
}

/// `p` with `.` and `..` removed lexically (correct here: every prefix the
/// copier walks is a real directory, symlinks are followed by recursion).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl Copier {
    fn copy(&mut self, host: &Path, depth: usize) -> io::Result<()> {
        if depth > 40 {
            return Err(io::Error::other(format!(
                "{}: too many symlinks",
                host.display()
            )));
        }
        let host = normalize(host);
        let comps: Vec<_> = host.components().skip(1).collect();
        let mut cur = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            let next = cur.join(c);
            let rel = next.strip_prefix("/").expect("absolute");
            let dst = self.dst.join(rel);
            let meta = fs::symlink_metadata(&next)?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&next)?;
                if fs::symlink_metadata(&dst).is_err() {
                    symlink(&target, &dst)?;
                }
                let mut resolved = if target.is_absolute() {
                    target
                } else {
                    cur.join(target)
                };
                for rest in &comps[i + 1..] {
                    resolved.push(rest);
                }
                return self.copy(&resolved, depth + 1);
            } else if meta.is_dir() {
                if !dst.is_dir() {
                    fs::create_dir(&dst)?;
                    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))?;
                }
            } else if i + 1 == comps.len() {
                if !dst.exists() {
                    fs::copy(&next, &dst)?;
                    self.files += 1;
                }
            } else {
                return Err(io::Error::other(format!(
                    "{}: not a directory",
                    next.display()
                )));
            }
            cur = next;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// A wide directory

/// The directory, relative to the union root.
pub const WIDE_DIR: &str = "wide";

pub struct Wide {
    /// `w1` (top), `w2`.
    pub lowers: Vec<PathBuf>,
    /// Entries of the merged `wide/`.
    pub entries: usize,
}

/// `root/w1` and `root/w2`, each with `wide/`: entry `eNNNNN` is an empty
/// file in `w1` when NNNNN is even, else in `w2`; every tenth odd entry
/// also has a copy in `w1`, which shadows the one in `w2`.
pub fn wide(root: &Path, entries: usize) -> io::Result<Wide> {
    let lowers = vec![root.join("w1"), root.join("w2")];
    for l in &lowers {
        fs::create_dir_all(l.join(WIDE_DIR))?;
    }
    for i in 0..entries {
        let name = format!("{WIDE_DIR}/e{i:05}");
        fs::File::create(lowers[i % 2].join(&name))?;
        if i % 20 == 1 {
            fs::File::create(lowers[0].join(&name))?;
        }
    }
    Ok(Wide { lowers, entries })
}

// ---------------------------------------------------------------------------
// Many lowers

pub const DEEP_LOWERS: usize = 20;
const DEEP_TOP: usize = 10;
const DEEP_SUB: usize = 10;
const DEEP_FILES_PER_DIR: usize = 10;

pub struct Deep {
    /// `k01` (top) … `k20` (bottom).
    pub lowers: Vec<PathBuf>,
    /// Relative paths of the bottom-only files, in the order to stat them.
    pub list: PathBuf,
    pub files: usize,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Regular files of the merged view: the bottom-only files and the
    /// `xNN` files of each directory.
    pub merged_files: usize,
}

/// `root/k01..k20`: directories `pN/qN` (100 of them) in all 20 lowers; in
/// every lower but the bottom one file `xNN` per directory, so that each
/// directory really is merged from 20 layers; in the bottom lower ten files
/// `bN` per directory (1000, 0–4 KiB): the files to stat. Their relative
/// paths go to `list` in a shuffled (fixed) order.
pub fn deep(root: &Path, list: &Path) -> io::Result<Deep> {
    let mut rng = Rng::new(0x5eed_f1f5_2024_0020);
    let lowers: Vec<PathBuf> = (1..=DEEP_LOWERS)
        .map(|i| root.join(format!("k{i:02}")))
        .collect();
    let mut paths = Vec::new();
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    for t in 0..DEEP_TOP {
        for s in 0..DEEP_SUB {
            let dir = format!("p{t}/q{s}");
            for (l, lower) in lowers.iter().enumerate() {
                fs::create_dir_all(lower.join(&dir))?;
                if l + 1 < DEEP_LOWERS {
                    fs::write(lower.join(format!("{dir}/x{:02}", l + 1)), b"x\n")?;
                }
            }
            for f in 0..DEEP_FILES_PER_DIR {
                let rel = format!("{dir}/b{f}");
                let size = rng.below(4096) as usize;
                buf.resize(size, 0);
                rng.fill(&mut buf);
                fs::write(lowers[DEEP_LOWERS - 1].join(&rel), &buf)?;
                bytes += size as u64;
                paths.push(rel);
            }
        }
    }
    // Fisher–Yates, so the stats do not follow the directory order.
    for i in (1..paths.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        paths.swap(i, j);
    }
    let mut text = paths.join("\n");
    text.push('\n');
    fs::write(list, text)?;
    Ok(Deep {
        lowers,
        list: list.to_path_buf(),
        files: paths.len(),
        bytes,
        merged_files: paths.len() + DEEP_TOP * DEEP_SUB * (DEEP_LOWERS - 1),
    })
}

// ---------------------------------------------------------------------------
// A source tree, as a tarball

/// The string `grep -r` looks for; no generated word contains it.
pub const NEEDLE: &str = "FIMFS_BENCH_NEEDLE";
/// The tarball's top directory.
pub const SRC_TOP: &str = "proj";
const SRC_MODULES: usize = 15;
const SRC_SUBDIRS: usize = 20;
const SRC_FILES_PER_DIR: usize = 20;
/// A fixed mtime for every entry (2023-11-14).
const SRC_MTIME: u64 = 1_700_000_000;

pub struct SrcTar {
    pub path: PathBuf,
    pub files: usize,
    /// Directories, `proj/` included.
    pub dirs: usize,
    /// Bytes of file content.
    pub bytes: u64,
    /// Lines containing [`NEEDLE`].
    pub needle_lines: usize,
}

const WORDS: &[&str] = &[
    "static", "int", "return", "struct", "void", "if", "else", "for", "while", "const", "unsigned",
    "char", "size_t", "buffer", "length", "index", "count", "node", "list", "next", "prev",
    "error", "result", "value", "key", "table", "hash", "lock", "unlock", "alloc", "free", "init",
    "exit", "read", "write", "open", "close", "flags", "mode", "offset", "{", "}", "(", ")", ";",
    "=", "+", "*", "->", "0", "1", "NULL", "&&", "||", "u32", "u64", "self", "match", "fn", "let",
    "mut", "impl", "pub", "use",
];

/// Writes `path`, a ustar archive of `proj/modNN/subNN/fileNN.{c,h,rs}`:
/// 15 × 20 directories of 20 files (6,000 files, 316 directories), 1–20 KB
/// of code-like text each (skewed towards small), one line in about 150
/// carrying [`NEEDLE`]. Modes 0644/0755, owner 0:0, one fixed mtime.
pub fn source_tarball(path: &Path) -> io::Result<SrcTar> {
    let mut rng = Rng::new(0x5eed_f1f5_2024_0600);
    let mut tar = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut st = SrcTar {
        path: path.to_path_buf(),
        files: 0,
        dirs: 0,
        bytes: 0,
        needle_lines: 0,
    };
    let mut dir = |tar: &mut BufWriter<fs::File>, name: String| -> io::Result<()> {
        st.dirs += 1;
        tar_entry(tar, &format!("{name}/"), b'5', 0o755, &[])
    };
    dir(&mut tar, SRC_TOP.into())?;
    let mut text = Vec::new();
    let mut files = 0;
    let mut bytes = 0;
    let mut needles = 0;
    for m in 0..SRC_MODULES {
        dir(&mut tar, format!("{SRC_TOP}/mod{m:02}"))?;
        for s in 0..SRC_SUBDIRS {
            let d = format!("{SRC_TOP}/mod{m:02}/sub{s:02}");
            dir(&mut tar, d.clone())?;
            for f in 0..SRC_FILES_PER_DIR {
                let ext = ["c", "h", "rs"][rng.below(3) as usize];
                let u = rng.below(1000);
                let size = 1000 + (u * u * 19) / 1000;
                text.clear();
                while (text.len() as u64) < size {
                    if rng.below(150) == 0 {
                        writeln!(text, "    /* {NEEDLE} {} */", rng.below(100_000))?;
                        needles += 1;
                        continue;
                    }
                    let indent = rng.below(4) as usize * 4;
                    text.extend(std::iter::repeat_n(b' ', indent));
                    let n = 2 + rng.below(9);
                    for w in 0..n {
                        if w > 0 {
                            text.push(b' ');
                        }
                        text.extend_from_slice(
                            WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes(),
                        );
                    }
                    text.push(b'\n');
                }
                tar_entry(
                    &mut tar,
                    &format!("{d}/file{f:02}.{ext}"),
                    b'0',
                    0o644,
                    &text,
                )?;
                files += 1;
                bytes += text.len() as u64;
            }
        }
    }
    // End of archive: two zero blocks, padded to tar's 10 KiB records.
    let mut end = 1024;
    let written = tar.get_ref().metadata()?.len() + tar.buffer().len() as u64;
    let total = written + end;
    if !total.is_multiple_of(10240) {
        end += 10240 - total % 10240;
    }
    tar.write_all(&vec![0u8; end as usize])?;
    tar.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    st.files = files;
    st.bytes = bytes;
    st.needle_lines = needles;
    Ok(st)
}

/// One ustar header (and the data, padded to 512 bytes).
fn tar_entry(w: &mut impl Write, name: &str, kind: u8, mode: u32, data: &[u8]) -> io::Result<()> {
    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{v:0width$o}", width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
        field[s.len()] = 0;
    }
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], SRC_MTIME);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    w.write_all(&h)?;
    w.write_all(data)?;
    let pad = (512 - data.len() % 512) % 512;
    w.write_all(&[0u8; 512][..pad])
}

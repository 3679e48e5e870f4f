//! The two generated trees, kept between runs in `FIMFS_SCALE_DIR`.
//!
//! Each tree lives in its own directory with a `STAMP` file that records the
//! parameters it was built with. A tree whose stamp matches is reused; any
//! other (missing stamp, other parameters, interrupted generation) is
//! removed and built again, into `NAME.tmp` first and renamed into place
//! only once complete. Files are empty and created with `mknodat(2)`, a few
//! threads in parallel: a million take well under a minute on ext4.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bump when the layout below changes, so old trees are rebuilt.
const LAYOUT_VERSION: u32 = 2;

/// Files per directory in the memory tree.
pub const MEM_PER_DIR: u64 = 1000;
/// Lowers of the memory tree (`l1` is the top).
pub const MEM_LOWERS: usize = 3;

/// Regular files per directory in the flatness tree.
pub const FLAT_PER_DIR: u64 = 100;
/// Files per directory that exist only in the bottom lower.
pub const FLAT_BOTTOM_PER_DIR: u64 = 5;
/// An empty directory beside the single lower (`o/e`).
pub const EMPTY_LOWER: &str = "e";

// ---------------------------------------------------------------------------
// Creating files

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Creates `dir` and the empty regular files `names` in it.
fn make_dir_with_files(dir: &Path, names: &[String]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let cdir = cstr(dir)?;
    // SAFETY: open(2) on a NUL-terminated path; the fd is closed below.
    let fd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut result = Ok(());
    for name in names {
        let Ok(cname) = CString::new(name.as_bytes()) else {
            result = Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"));
            break;
        };
        // SAFETY: mknodat(2) relative to a directory fd we own.
        let r = unsafe { libc::mknodat(fd, cname.as_ptr(), libc::S_IFREG | 0o644, 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            result = Err(io::Error::new(
                e.kind(),
                format!("{}/{name}: {e}", dir.display()),
            ));
            break;
        }
    }
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    result
}

/// Runs `job(i)` for `i in 0..n` on a few threads.
fn parallel(n: u64, job: impl Fn(u64) -> io::Result<()> + Sync) -> io::Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2)
        .clamp(2, 8) as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let job = &job;
                s.spawn(move || {
                    let mut i = t;
                    while i < n {
                        job(i)?;
                        i += threads;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("generator thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Reuses `root` if its stamp is `stamp`, else rebuilds it with `generate`
/// (which fills the directory it is given). Returns the seconds the
/// generation took, or `None` when the tree was reused.
fn ensure(
    root: &Path,
    stamp: &str,
    what: &str,
    generate: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<Option<f64>> {
    if fs::read_to_string(root.join("STAMP")).ok().as_deref() == Some(stamp) {
        eprintln!(
            "fimfs-scale: reusing the {what} in {} (stamp matches)",
            root.display()
        );
        return Ok(None);
    }
    let mut tmp = root.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    for d in [root, tmp.as_path()] {
        if d.exists() {
            eprintln!("fimfs-scale: removing the outdated {}", d.display());
            fs::remove_dir_all(d)?;
        }
    }
    eprintln!(
        "fimfs-scale: generating the {what} in {} ...",
        root.display()
    );
    let t0 = Instant::now();
    fs::create_dir_all(&tmp)?;
    generate(&tmp)?;
    fs::write(tmp.join("STAMP"), stamp)?;
    fs::rename(&tmp, root)?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("fimfs-scale: generated in {secs:.1}s");
    Ok(Some(secs))
}

// ---------------------------------------------------------------------------
// The memory tree: FILES empty files, MEM_PER_DIR per directory, over three
// lowers.

pub struct MemTree {
    /// Top-most first.
    pub lowers: Vec<PathBuf>,
    /// Merged regular files (what `find -type f` counts).
    pub files: u64,
    pub dirs: u64,
    /// Files stored in the lowers, shadowed copies included.
    pub stored: u64,
    /// Files with a second, shadowed copy in a lower layer.
    pub shadowed: u64,
    pub generated_secs: Option<f64>,
}

/// Where file `j` of directory `i` lives: its visible copy's lower and the
/// lower of a shadowed copy below it, if any (indices into `lowers`, 0 is
/// the top).
///
/// - Every 4th directory lives entirely in the bottom lower.
/// - Other directories spread their files round-robin over the three
///   lowers; every 10th file not in the bottom lower also has a copy one
///   lower down, which the union hides.
fn mem_place(i: u64, j: u64) -> (usize, Option<usize>) {
    let bottom = MEM_LOWERS - 1;
    if i.is_multiple_of(4) {
        return (bottom, None);
    }
    let p = ((i + j) % MEM_LOWERS as u64) as usize;
    if j.is_multiple_of(10) && p < bottom {
        (p, Some(p + 1))
    } else {
        (p, None)
    }
}

fn mem_dir_files(i: u64, files: u64) -> u64 {
    files.saturating_sub(i * MEM_PER_DIR).min(MEM_PER_DIR)
}

fn mem_dir_name(i: u64) -> String {
    format!("d{i:05}")
}

fn mem_file_name(j: u64) -> String {
    format!("f{j:03}")
}

pub fn mem_tree(root: &Path, files: u64) -> io::Result<MemTree> {
    let dirs = files.div_ceil(MEM_PER_DIR);
    let mut stored = 0;
    let mut shadowed = 0;
    for i in 0..dirs {
        for j in 0..mem_dir_files(i, files) {
            stored += 1;
            if mem_place(i, j).1.is_some() {
                stored += 1;
                shadowed += 1;
            }
        }
    }
    let stamp = format!(
        "fimfs-scale memory tree, layout v{LAYOUT_VERSION}\nfiles={files}\nper_dir={MEM_PER_DIR}\n\
         lowers={MEM_LOWERS}\ndirs={dirs}\nstored={stored}\n"
    );
    let generated_secs = ensure(root, &stamp, "memory tree", |tmp| {
        parallel(dirs, |i| {
            let mut per_lower: Vec<Vec<String>> = vec![Vec::new(); MEM_LOWERS];
            for j in 0..mem_dir_files(i, files) {
                let (p, s) = mem_place(i, j);
                per_lower[p].push(mem_file_name(j));
                if let Some(s) = s {
                    per_lower[s].push(mem_file_name(j));
                }
            }
            for (l, names) in per_lower.iter().enumerate() {
                if !names.is_empty() {
                    let dir = tmp.join(format!("l{}", l + 1)).join(mem_dir_name(i));
                    make_dir_with_files(&dir, names)?;
                }
            }
            Ok(())
        })?;
        for l in 0..MEM_LOWERS {
            fs::create_dir_all(tmp.join(format!("l{}", l + 1)))?;
        }
        Ok(())
    })?;
    Ok(MemTree {
        lowers: (0..MEM_LOWERS)
            .map(|l| root.join(format!("l{}", l + 1)))
            .collect(),
        files,
        dirs,
        stored,
        shadowed,
        generated_secs,
    })
}

// ---------------------------------------------------------------------------
// The flatness tree: the same merged content once in a single lower
// (`o/l0`) and once spread over LOWERS lowers (`m/l00` … , `m/l00` the top).

pub struct FlatTree {
    /// The single-lower variant's base directory and lower.
    pub one_base: PathBuf,
    pub one: Vec<PathBuf>,
    /// The many-lower variant's base directory and lowers, top-most first.
    pub many_base: PathBuf,
    pub many: Vec<PathBuf>,
    /// Merged regular files (round-robin ones and bottom-only ones).
    pub files: u64,
    pub dirs: u64,
    /// Paths, relative to the union's root, of the files that only the
    /// bottom lower holds.
    pub bottom_only: Vec<String>,
    /// `find -mindepth 1 -printf '%P %y\n'` of the union, sorted bytewise.
    pub listing: Vec<String>,
    pub generated_secs: Option<f64>,
}

fn flat_dir_name(i: u64) -> String {
    format!("d{i:03}")
}

pub fn lower_name(l: usize, lowers: usize) -> String {
    let width = (lowers.saturating_sub(1)).to_string().len().max(2);
    format!("l{l:0width$}")
}

pub fn flat_tree(root: &Path, files: u64, lowers: usize) -> io::Result<FlatTree> {
    let dirs = files.div_ceil(FLAT_PER_DIR);
    let per_dir = |i: u64| files.saturating_sub(i * FLAT_PER_DIR).min(FLAT_PER_DIR);
    let stamp = format!(
        "fimfs-scale flatness tree, layout v{LAYOUT_VERSION}\nfiles={files}\nper_dir={FLAT_PER_DIR}\n\
         bottom_only_per_dir={FLAT_BOTTOM_PER_DIR}\nlowers=1,{lowers}\ndirs={dirs}\n"
    );
    let generated_secs = ensure(root, &stamp, "flatness trees", |tmp| {
        parallel(dirs, |i| {
            let d = flat_dir_name(i);
            let n = per_dir(i);
            let regular: Vec<String> = (0..n).map(|k| format!("f{k:02}")).collect();
            let bottom: Vec<String> = (0..FLAT_BOTTOM_PER_DIR).map(|k| format!("b{k}")).collect();
            // One lower: everything.
            let all: Vec<String> = regular.iter().chain(bottom.iter()).cloned().collect();
            make_dir_with_files(&tmp.join("o").join("l0").join(&d), &all)?;
            // Many lowers: the directory in every lower, the regular files
            // round-robin by their global index, the bottom-only ones in
            // the bottom lower.
            let mut per_lower: Vec<Vec<String>> = vec![Vec::new(); lowers];
            for (k, name) in regular.iter().enumerate() {
                let g = i * FLAT_PER_DIR + k as u64;
                per_lower[(g % lowers as u64) as usize].push(name.clone());
            }
            per_lower[lowers - 1].extend(bottom.iter().cloned());
            for (l, names) in per_lower.iter().enumerate() {
                make_dir_with_files(&tmp.join("m").join(lower_name(l, lowers)).join(&d), names)?;
            }
            Ok(())
        })?;
        fs::create_dir_all(tmp.join("o").join("l0"))?;
        // The kernel overlay needs two lowers without an upper: its
        // "1 lower" variant gets this empty one below.
        fs::create_dir_all(tmp.join("o").join(EMPTY_LOWER))?;
        for l in 0..lowers {
            fs::create_dir_all(tmp.join("m").join(lower_name(l, lowers)))?;
        }
        Ok(())
    })?;
    let mut listing = Vec::new();
    let mut bottom_only = Vec::new();
    for i in 0..dirs {
        let d = flat_dir_name(i);
        listing.push(format!("{d} d"));
        for k in 0..per_dir(i) {
            listing.push(format!("{d}/f{k:02} f"));
        }
        for k in 0..FLAT_BOTTOM_PER_DIR {
            listing.push(format!("{d}/b{k} f"));
            bottom_only.push(format!("{d}/b{k}"));
        }
    }
    listing.sort();
    Ok(FlatTree {
        one_base: root.join("o"),
        one: vec![root.join("o").join("l0")],
        many_base: root.join("m"),
        many: (0..lowers)
            .map(|l| root.join("m").join(lower_name(l, lowers)))
            .collect(),
        files: files + dirs * FLAT_BOTTOM_PER_DIR,
        dirs,
        bottom_only,
        listing,
        generated_secs,
    })
}

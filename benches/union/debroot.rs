//! The package-install fixture: a Debian minbase root made by `debootstrap`
//! (the lower) and a fixed set of `.deb` files to `dpkg -i` into it, both
//! made once and cached under `$FIMFS_BENCH_DIR/cache/`, never rebuilt
//! while present.
//!
//! Invariants:
//! - A cache entry is complete or absent: each is built in `NAME.tmp` and
//!   renamed into place as the last step; a leftover `.tmp` is removed.
//! - The root is keyed by variant, suite and mirror (its directory name and
//!   its `STAMP`); the `.debs` by suite, mirror, package list and the root's
//!   dpkg status (a hash in the directory name). Their `MANIFEST` records the exact files (name,
//!   version, architecture) that were downloaded, so every run installs the
//!   same versions.
//! - The `.debs` come from the archive the root was made from: the host's
//!   `apt-get` runs on the root's own sources, package lists and dpkg
//!   status, and must want to install exactly [`PACKAGES`] (nothing more:
//!   the list is closed over minbase, so `dpkg -i` needs no apt).
//! - Nothing here writes into a finished root: it is a read-only lower.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sys;

pub const VARIANT: &str = "minbase";
pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Not in minbase, closed over minbase plus themselves, no `Pre-Depends`
/// outside minbase, and about 3,600 files: perl with its modules (1,666
/// files) and vim's runtime files (1,928). Python was left out on purpose:
/// its maintainer scripts byte-compile the standard library, seconds of
/// CPU that say nothing about the file system.
pub const PACKAGES: &[&str] = &[
    "libgdbm-compat4",
    "libgdbm6",
    "libperl5.36",
    "perl",
    "perl-modules-5.36",
    "vim-runtime",
];

pub struct DebRoot {
    /// The minbase root, the union's only lower.
    pub root: PathBuf,
    /// The `.deb` files, in the order given to `dpkg -i`.
    pub debs: Vec<PathBuf>,
    /// Files (non-directory entries) in all the `.debs`.
    pub files: usize,
}

/// The cached root and `.debs` under `cache`, made first if missing.
/// `Err` says why the workload cannot run (e.g. no `debootstrap`).
pub fn prepare(cache: &Path) -> Result<DebRoot, String> {
    fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let root_dir = cache.join(format!("debootstrap-{VARIANT}-{SUITE}"));
    let stamp = format!("debootstrap --variant={VARIANT} {SUITE} ROOT {MIRROR}\n");
    if fs::read_to_string(root_dir.join("STAMP")).ok().as_deref() != Some(stamp.as_str()) {
        if !sys::on_path("debootstrap") {
            return Err(
                "`debootstrap` is not installed (`apt-get install debootstrap`; \
                 see benches/README.md)"
                    .into(),
            );
        }
        build_root(&root_dir, &stamp)?;
    }
    let root = root_dir.join("root");
    let debs_dir = cache.join(format!("debs-{SUITE}-{:016x}", fnv(&debs_key(&root)?)));
    if !debs_dir.join("MANIFEST").is_file() {
        download(&root, &debs_dir)?;
    }
    let (debs, files) = read_manifest(&debs_dir)?;
    Ok(DebRoot { root, debs, files })
}

/// What the `.debs` cache is keyed by: suite, mirror, the list, and the
/// root's dpkg status (a rebuilt root may hold newer versions that the
/// cached `.debs` no longer fit, e.g. `perl` wants `perl-base` of its own
/// version).
fn debs_key(root: &Path) -> Result<String, String> {
    let status = root.join("var/lib/dpkg/status");
    let status = fs::read_to_string(&status).map_err(|e| format!("{}: {e}", status.display()))?;
    Ok(format!(
        "{SUITE}\n{MIRROR}\n{}\n{:016x}\n",
        PACKAGES.join("\n"),
        fnv(&status)
    ))
}

/// FNV-1a, 64 bits: a stable name for a cache key.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Runs `cmd`; `Err` with its stderr's end when it fails.
fn run(cmd: &mut Command) -> Result<String, String> {
    let desc = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {desc}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{desc}: {}: {}",
            out.status,
            crate::common::tail(String::from_utf8_lossy(&out.stderr).trim(), 800)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prepares `NAME.tmp` for building `dir`: removes what a killed build left.
fn fresh_tmp(dir: &Path) -> Result<PathBuf, String> {
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    Ok(tmp)
}

fn finish(tmp: &Path, dir: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(dir);
    fs::rename(tmp, dir)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), dir.display()))
}

/// `debootstrap --variant=minbase SUITE DIR/root MIRROR`, once.
fn build_root(dir: &Path, stamp: &str) -> Result<(), String> {
    let tmp = fresh_tmp(dir)?;
    eprintln!(
        "fimfs-bench: debootstrap --variant={VARIANT} {SUITE} into {} (once; cached) ...",
        dir.display()
    );
    run(Command::new("debootstrap")
        .arg(format!("--variant={VARIANT}"))
        .arg(SUITE)
        .arg(tmp.join("root"))
        .arg(MIRROR))
    .map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        format!("debootstrap failed: {e}")
    })?;
    fs::write(tmp.join("STAMP"), stamp).map_err(|e| e.to_string())?;
    finish(&tmp, dir)
}

/// The host's `apt-get` on the root's sources, lists and dpkg status, with
/// no cache files and no recommends: it sees what the root's own apt sees.
fn root_apt(root: &Path) -> Command {
    let mut c = Command::new("apt-get");
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    for o in [
        opt("Dir::Etc::SourceList", &root.join("etc/apt/sources.list")),
        opt(
            "Dir::Etc::SourceParts",
            &root.join("etc/apt/sources.list.d"),
        ),
        opt("Dir::State::Lists", &root.join("var/lib/apt/lists")),
        opt("Dir::State::status", &root.join("var/lib/dpkg/status")),
        "Dir::Cache::pkgcache=".into(),
        "Dir::Cache::srcpkgcache=".into(),
        "APT::Install-Recommends=false".into(),
        "APT::Sandbox::User=root".into(),
    ] {
        c.arg("-o").arg(o);
    }
    c
}

/// Checks that installing [`PACKAGES`] into the root needs exactly them,
/// then `apt-get download`s them into `dir` and writes its `MANIFEST`.
fn download(root: &Path, dir: &Path) -> Result<(), String> {
    let sim = run(root_apt(root).args(["-s", "install"]).args(PACKAGES))
        .map_err(|e| format!("resolving the package list: {e}"))?;
    let mut wanted: Vec<&str> = sim
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    wanted.sort_unstable();
    if wanted != PACKAGES {
        return Err(format!(
            "the package list is not closed over {VARIANT} {SUITE}: apt would install {wanted:?}"
        ));
    }
    let tmp = fresh_tmp(dir)?;
    eprintln!(
        "fimfs-bench: apt-get download {} into {} (once; cached) ...",
        PACKAGES.join(" "),
        dir.display()
    );
    run(root_apt(root)
        .arg("download")
        .args(PACKAGES)
        .current_dir(&tmp))
    .map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        format!("downloading the .debs: {e}")
    })?;
    let mut manifest = String::new();
    for name in sorted_names(&tmp)? {
        let files = run(Command::new("dpkg-deb").arg("-c").arg(tmp.join(&name)))?
            .lines()
            .filter(|l| !l.starts_with('d'))
            .count();
        manifest.push_str(&format!("{name} {files}\n"));
    }
    fs::write(tmp.join("MANIFEST"), manifest).map_err(|e| e.to_string())?;
    finish(&tmp, dir)
}

/// The `.deb` names in `dir`, sorted.
fn sorted_names(dir: &Path) -> Result<Vec<String>, String> {
    let rd = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".deb"))
        .collect();
    names.sort();
    Ok(names)
}

/// The `.debs` the `MANIFEST` lists (each must be there) and their files.
fn read_manifest(dir: &Path) -> Result<(Vec<PathBuf>, usize), String> {
    let text = fs::read_to_string(dir.join("MANIFEST")).map_err(|e| e.to_string())?;
    let (mut debs, mut files) = (Vec::new(), 0);
    for line in text.lines() {
        let (name, n) = line
            .split_once(' ')
            .ok_or_else(|| format!("{}/MANIFEST: bad line {line:?}", dir.display()))?;
        let deb = dir.join(name);
        if !deb.is_file() || name.contains('\'') {
            return Err(format!("{}: missing or badly named", deb.display()));
        }
        files += n.parse::<usize>().map_err(|e| format!("{line:?}: {e}"))?;
        debs.push(deb);
    }
    if debs.len() != PACKAGES.len() {
        return Err(format!(
            "{}/MANIFEST lists {} files for {} packages",
            dir.display(),
            debs.len(),
            PACKAGES.len()
        ));
    }
    Ok((debs, files))
}

impl DebRoot {
    /// The `.deb` file names (package, version, architecture), for reports.
    pub fn names(&self) -> Vec<String> {
        self.debs
            .iter()
            .filter_map(|d| d.file_name()?.to_str().map(str::to_string))
            .collect()
    }
}

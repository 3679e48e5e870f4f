//! The daemon's memory over one image of 1,000,000 files
//! (`FIMFS_BENCH_MILLION=1`, or the `memory` part by name): 1,000
//! directories of 1,000 files, every 100th file 2–6 KiB of text (about
//! 40 MiB in all, three 16 MiB blocks), the rest empty. Mounted alone
//! (`fimfs mount -o cache_size=32m IMG MNT`), then: `find` of all files,
//! `find -size +0` (a stat of every file), `cat` of every non-empty file
//! (more data than the cache holds), each followed by the daemon's
//! VmRSS / VmHWM / RssAnon; then `drop_caches` and the same again after
//! 5 s. The bound is the cache size plus the image's metadata as the
//! reader holds it (`Tree::heap_bytes`), plus what the daemon holds over an
//! image of one file (its code, libraries, thread stacks: the base), which
//! is measured first in the same run.
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::common::mounts::{Daemon, Flavor, drop_caches};
use crate::common::report::{Table, thousands};
use crate::common::run;
use crate::packer::{self as pack, dwarfs};
use crate::tree::Rng;

const DIRS: u64 = 1000;
const PER_DIR: u64 = 1000;
const CACHE: u64 = 32 << 20;

fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 16);
    while out.len() < size {
        out.extend_from_slice(
            format!("line {} of {} ", rng.below(1000), rng.below(100_000)).as_bytes(),
        );
        if rng.below(6) == 0 {
            out.push(b'\n');
        }
    }
    out.truncate(size);
    out
}

/// An image of one small file: what the daemon costs over any image.
fn tiny_image(cache: &Path) -> PathBuf {
    pack::cached(cache, "tiny-v1.dwarfs", || {
        let mut t = dwarfs::Tree::new(pack::BLOCK_SIZE);
        t.file(
            "only",
            b"one file\n",
            &dwarfs::im(0o644, 0, 0, 1_700_000_000),
        );
        let (meta, blocks) = t.finish();
        dwarfs::assemble(&meta, &blocks, pack::layout(7))
    })
}

/// The daemon's VmHWM (KiB) over the tiny image, once it is mounted.
fn base_kib(bin: &Path, cache: &Path, run_dir: &Path) -> Result<u64, String> {
    let img = tiny_image(cache);
    let mnt = run_dir.join("tiny");
    fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let flavor = Flavor::Fimfs {
        bin: bin.to_path_buf(),
        opts: Some(format!("cache_size={CACHE}")),
    };
    let mut d = Daemon::new(flavor, mnt.clone(), &[img], run_dir.join("tiny.log"));
    d.mount(None)?;
    thread::sleep(Duration::from_secs(1));
    let [_, hwm, _] = status(d.pid());
    d.unmount()?;
    Ok(hwm)
}

/// The image (cached), the number of non-empty files and their bytes.
fn image(cache: &Path, level: i32) -> (PathBuf, u64, u64) {
    let mut rng = Rng::new(0x1_000_000);
    let sizes: Vec<usize> = (0..DIRS * PER_DIR / 100)
        .map(|_| 2048 + rng.below(4096) as usize)
        .collect();
    let bytes = sizes.iter().map(|&s| s as u64).sum();
    let name = format!(
        "million-{}.dwarfs",
        pack::key(&format!("v1 {DIRS} {PER_DIR} zstd={level}"))
    );
    let path = pack::cached(cache, &name, || {
        let mut t = dwarfs::Tree::new(pack::BLOCK_SIZE);
        let m = dwarfs::im(0o644, 0, 0, 1_700_000_000);
        let mut rng = Rng::new(0x2_000_000);
        for d in 0..DIRS {
            t.dir(&format!("d{d:03}"), &dwarfs::im(0o755, 0, 0, 1_700_000_000));
            for f in 0..PER_DIR {
                let i = d * PER_DIR + f;
                let data = if i.is_multiple_of(100) {
                    text(&mut rng, sizes[(i / 100) as usize])
                } else {
                    Vec::new()
                };
                t.file(&format!("d{d:03}/f{f:03}"), &data, &m);
            }
        }
        let (meta, blocks) = t.finish();
        dwarfs::assemble(&meta, &blocks, pack::layout(level))
    });
    (path, sizes.len() as u64, bytes)
}

fn status(pid: u32) -> [u64; 3] {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    [kib("VmRSS:"), kib("VmHWM:"), kib("RssAnon:")]
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn measure(
    bin: &Path,
    cache: &Path,
    run_dir: &Path,
    level: i32,
    timeout: Duration,
) -> Result<String, String> {
    let base = base_kib(bin, cache, run_dir)?;
    let (img, nonempty, bytes) = image(cache, level);
    let opened = fimfs::image::Image::open(
        Arc::new(fs::File::open(&img).map_err(|e| e.to_string())?),
        0,
        None,
        &img,
    )
    .map_err(|e| e.to_string())?;
    let heap = opened.tree().heap_bytes() as u64;
    drop(opened);
    let meta_stored = pack::section_bytes(&img, dwarfs::METADATA);
    let mnt = run_dir.join("million");
    fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let flavor = Flavor::Fimfs {
        bin: bin.to_path_buf(),
        opts: Some(format!("cache_size={CACHE}")),
    };
    let mut d = Daemon::new(
        flavor,
        mnt.clone(),
        std::slice::from_ref(&img),
        run_dir.join("million.log"),
    );
    drop_caches(3)?;
    d.mount(None)?;
    let pid = d.pid();
    let table = steps(&mnt, pid, nonempty, bytes, timeout)?;
    let [_, hwm, _] = status(pid);
    d.unmount()?;
    let bound = CACHE + heap + base * 1024;
    Ok(format!(
        "Image: {} files ({} non-empty, {} MiB of data), {} MiB on disk; \
         metadata section {} KiB stored; the reader's index `Tree::heap_bytes()` = {:.1} MiB; \
         cache_size = {} MiB; the daemon over a one-file image (base): VmHWM {}.\n\n{}\n\
         Peak VmHWM {} vs. cache_size + heap_bytes + base = {}: {}.\n",
        thousands(DIRS * PER_DIR),
        thousands(nonempty),
        bytes >> 20,
        fs::metadata(&img).map(|m| m.len() >> 20).unwrap_or(0),
        meta_stored >> 10,
        heap as f64 / (1 << 20) as f64,
        CACHE >> 20,
        mib(base),
        table,
        mib(hwm),
        mib(bound >> 10),
        if hwm * 1024 <= bound {
            "under"
        } else {
            "**over**"
        }
    ))
}

/// Runs the steps on the mount at `mnt` (daemon `pid`): the table of the
/// daemon's memory after each. A command whose output is not the expected
/// count is an error.
fn steps(
    mnt: &Path,
    pid: u32,
    nonempty: u64,
    bytes: u64,
    timeout: Duration,
) -> Result<String, String> {
    let m = mnt.display();
    let steps = [
        ("after mount", String::new(), String::new()),
        (
            "after `find -type f`",
            format!("find {m} -type f | wc -l"),
            (DIRS * PER_DIR).to_string(),
        ),
        (
            "after `find -type f -size +0` (stat of all)",
            format!("find {m} -type f -size +0 | wc -l"),
            nonempty.to_string(),
        ),
        (
            "after `cat` of the non-empty files",
            format!("find {m} -type f -size +0 -exec cat {{}} + | wc -c"),
            bytes.to_string(),
        ),
        ("5 s after drop_caches", String::new(), String::new()),
    ];
    let mut t = Table::new(&["step", "VmRSS", "VmHWM", "RssAnon"]);
    for (name, cmd, want) in steps {
        if !cmd.is_empty() {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(&cmd);
            let r = run(c, timeout, true)?;
            if r.stdout.trim() != want {
                return Err(format!(
                    "{cmd}: printed {:?}, expected {want}",
                    r.stdout.trim()
                ));
            }
        } else if name.contains("drop") {
            drop_caches(3)?;
            thread::sleep(Duration::from_secs(5));
        } else {
            thread::sleep(Duration::from_secs(1));
        }
        let [rss, hwm, anon] = status(pid);
        t.row(&[name.to_string(), mib(rss), mib(hwm), mib(anon)]);
    }
    Ok(t.text())
}

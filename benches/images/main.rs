//! DwarFS images as layers: fimfs reading the images in-process against
//! the stacks FlatImage builds today (issue 20, "Benchmarks"). One plain
//! `main` (`harness = false`, no criterion): every workload runs on four
//! sides in the same run over the same trees (see [`sides`]), interleaved,
//! and the medians go into one markdown table, printed and written to
//! `target/fimfs-images-report.md`. See `benches/README.md`.
//!
//! Parts (free arguments): none = the workload table and the `fimfs run`
//! start-up table (plus the million-file memory part with
//! `FIMFS_BENCH_MILLION=1`); `startup` or `memory` = that part only; any
//! other word = the workloads whose name contains it.
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../union/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "../scale/tree.rs"]
mod scale_tree;
#[allow(dead_code)]
#[path = "../union/tree.rs"]
mod tree;

mod helper;
mod memory;
mod packer;
mod sides;
mod startup;
mod trees;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{Args, env_flag, env_num, env_path, env_str};
use common::report::{cpus, date_utc, git_describe, uname};
use sides::Stack;
use workloads::{Runner, Workload};

const TAG: &str = "fimfs-images";

/// The cross-check of every side's tree against the directories'.
/// (The size of a directory is the filesystem's own business.)
const LISTING: &str = "cd {M} && { find . -type d -printf '%P %m %U %G\\n'; \
                       find . ! -type d -printf '%P %y %s %m %U %G %l\\n'; } | LC_ALL=C sort | cksum";

struct Config {
    dir: PathBuf,
    big_mib: u64,
    level: i32,
    runner: Runner,
    opts: Option<String>,
}

fn config(args: &Args) -> Config {
    let quick = args.test;
    Config {
        dir: env_path("FIMFS_IMAGES_DIR", "/var/tmp/fimfs-images"),
        big_mib: env_num(TAG, "FIMFS_IMAGES_BIG_MIB", 64),
        level: env_num(TAG, "FIMFS_IMAGES_ZSTD", 22),
        runner: Runner {
            reps: if quick {
                1
            } else {
                env_num(TAG, "FIMFS_IMAGES_REPS", 5)
            },
            cold_reps: if quick {
                1
            } else {
                env_num(TAG, "FIMFS_IMAGES_COLD_REPS", 3)
            },
            timeout: Duration::from_secs(env_num(TAG, "FIMFS_IMAGES_TIMEOUT", 300)),
        },
        opts: env_str("FIMFS_IMAGES_MOUNT_OPTS"),
    }
}

/// The three stacks: main (5 layers), many (20), py (19 of many over py).
fn stacks(c: &Config, bin: &Path, run: &Path) -> Result<(Vec<Stack>, trees::Many), String> {
    let e = |e: std::io::Error| e.to_string();
    let t = c.dir.join("trees");
    let cache = common::target_dir().join("fimfs-images");
    let main = trees::main_tree(&t.join("main"), c.big_mib).map_err(e)?;
    let many = trees::many_tree(&t.join("many"), 20).map_err(e)?;
    let py = trees::py_tree(&t.join("py")).map_err(e)?;
    let pack_all = |name: &str, l: &trees::Layers| -> Vec<PathBuf> {
        l.dirs
            .iter()
            .enumerate()
            .map(|(i, d)| packer::image_of(&cache, &format!("{name}-{i:02}"), d, &l.stamp, c.level))
            .collect()
    };
    let main_img = pack_all("main", &main);
    let many_img = pack_all("many", &many.layers);
    let py_img = pack_all("py", &py);
    let mut py_imgs = many_img[..19].to_vec();
    py_imgs.extend(py_img);
    let mut py_dirs = many.layers.dirs[..19].to_vec();
    py_dirs.extend(py.dirs);
    let o = || c.opts.clone();
    let s = vec![
        Stack::new(run, "main5", bin, o(), main_img, main.dirs)?,
        Stack::new(run, "many20", bin, o(), many_img, many.layers.dirs.clone())?,
        Stack::new(run, "py20", bin, o(), py_imgs, py_dirs)?,
    ];
    Ok((s, many))
}

fn catalogue(many: &trees::Many) -> Vec<Workload> {
    let exe = std::env::current_exe().unwrap_or_default();
    let h = format!("{} --fimfs-images-helper", exe.display());
    let (b, m) = (many.bottom_list.display(), many.missing_list.display());
    let py = format!(
        "chroot {{M}} /usr/bin/python3 -c \"import {}; print('ok')\"",
        trees::PY_IMPORTS
    );
    let rows: Vec<(&str, usize, String, bool)> = vec![
        ("find_5", 0, "find {M} -type f | wc -l".into(), false),
        ("ls_lR_5", 0, "ls -lR {M} > /dev/null".into(), false),
        (
            "read_seq_64m",
            0,
            format!("{h} seqread {{M}}/big/big.bin"),
            false,
        ),
        (
            "read_rand_4k_x2000",
            0,
            format!("{h} randread {{M}}/big/big.bin 2000"),
            false,
        ),
        (
            "grep_r_6000",
            0,
            "grep -rF FIMFS_BENCH_NEEDLE {M}/src | wc -l".into(),
            false,
        ),
        ("find_20", 1, "find {M} -type f | wc -l".into(), true),
        ("ls_lR_20", 1, "ls -lR {M} > /dev/null".into(), true),
        (
            "stat_bottom_of_20_x1000",
            1,
            format!("{h} stat {{M}} {b}"),
            true,
        ),
        (
            "stat_missing_20_x1000",
            1,
            format!("{h} stat {{M}} {m}"),
            true,
        ),
        ("python_start_20", 2, py, true),
    ];
    let mut out = Vec::new();
    for (name, stack, cmd, tight) in rows {
        for cold in [true, false] {
            let name = name.replace("read_seq_64m", "read_seq_big");
            out.push(Workload {
                name: format!("{name}_{}", if cold { "cold" } else { "warm" }),
                stack,
                cold,
                cmd: cmd.clone(),
                // The tight target: cold metadata over 20 layers, start-up.
                tight: tight && (cold || stack == 2),
            });
        }
    }
    out
}

fn describe(c: &Config, bin: &Path, args: &Args) -> String {
    format!(
        "{} · Linux {} · {} CPUs · fimfs {} ({}) · images: zstd level {}, {} MiB blocks, big file {} MiB · \
         {} warm / {} cold runs per side, medians{}\n",
        date_utc(),
        uname(),
        cpus(),
        git_describe(),
        bin.display(),
        c.level,
        packer::BLOCK_SIZE >> 20,
        c.big_mib,
        c.runner.reps,
        c.runner.cold_reps,
        if args.test {
            " (--test: one run each)"
        } else {
            ""
        },
    )
}

/// Each stack's listing compared across the sides: what differs.
fn listings(c: &Config, stacks: &mut [Stack]) -> Vec<String> {
    let check = Runner {
        reps: 0,
        cold_reps: 0,
        timeout: c.runner.timeout,
    };
    let mut out = Vec::new();
    for (i, name) in ["main5", "many20", "py20"].iter().enumerate() {
        let w = Workload {
            name: format!("listing of {name}"),
            stack: i,
            cold: false,
            cmd: LISTING.to_string(),
            tight: false,
        };
        let notes = check.measure(stacks, &w).notes;
        out.extend(notes.into_iter().filter(|n| !n.starts_with("disturbed")));
        let _ = stacks[i].down();
    }
    out
}

/// The listing check, the workloads `filter` selects, their table, notes
/// and missed targets.
fn workload_part(
    c: &Config,
    stacks: &mut [Stack],
    many: &trees::Many,
    filter: Option<&str>,
) -> String {
    let checks = listings(c, stacks);
    let mut rows = Vec::new();
    for w in catalogue(many)
        .iter()
        .filter(|w| filter.is_none_or(|f| w.name.contains(f)))
    {
        rows.push(c.runner.measure(stacks, w));
        let _ = stacks[w.stack].down();
    }
    let (table, missed) = workloads::table(&rows);
    let mut report = format!("\n## Workloads\n\n{table}");
    for r in &rows {
        for n in &r.notes {
            report += &format!("\n- {}: {}", r.name, common::report::cell_text(n, 400));
        }
    }
    let or = |v: Vec<String>, none: &str| {
        if v.is_empty() {
            none.to_string()
        } else {
            v.join("; ")
        }
    };
    report += &format!(
        "\n\nListings (`{LISTING}`) on every side equal the directories': {}\n",
        or(checks, "yes")
    );
    report += &format!("\nMissed targets: {}\n", or(missed, "none"));
    report
}

fn bench(args: &Args) -> Result<String, String> {
    let c = config(args);
    let bin = common::find_fimfs(TAG)?;
    let (_, run) = common::fresh_run_dir(&c.dir, "FIMFS_IMAGES_DIR", TAG)?;
    std::fs::create_dir_all(&run).map_err(|e| e.to_string())?;
    common::install_signal_cleanup(run.clone(), false, TAG);
    let bin = common::pin(&bin, &run, "fimfs")?;
    let part = args.filter.as_deref();
    let mut report = format!(
        "# fimfs: DwarFS images in-process vs. FlatImage's stacks\n\n{}",
        describe(&c, &bin, args)
    );
    if part == Some("memory") || (part.is_none() && env_flag("FIMFS_BENCH_MILLION")) {
        let cache = common::target_dir().join("fimfs-images");
        report += "\n## Memory over 1,000,000 files\n\n";
        report += &memory::measure(&bin, &cache, &run, c.level, c.runner.timeout)?;
    }
    if part != Some("memory") {
        let (mut stacks, many) = stacks(&c, &bin, &run)?;
        if part != Some("startup") {
            report += &workload_part(&c, &mut stacks, &many, part);
        }
        if part.is_none() || part == Some("startup") {
            report += "\n## `fimfs run` start-up, 20 layers\n\n";
            report +=
                &startup::measure(&bin, &run, &mut stacks[2], c.runner.reps, c.runner.timeout);
        }
    }
    let _ = std::fs::remove_dir_all(&run);
    Ok(report)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--fimfs-images-helper") {
        helper::main(&argv[2..]);
    }
    let args = Args::parse(&argv[1..]);
    if !args.bench && !env_flag("FIMFS_IMAGES_IN_TEST") {
        println!("{TAG}: a benchmark; run it with `cargo bench --bench images`");
        return;
    }
    if !common::is_root() {
        eprintln!("{TAG}: needs root (FUSE, overlay mounts, drop_caches, chroot)");
        std::process::exit(1);
    }
    match bench(&args) {
        Ok(report) => {
            println!("{report}");
            let path = common::target_dir().join("fimfs-images-report.md");
            common::write_report(TAG, "report", &path, &report);
        }
        Err(e) => {
            eprintln!("{TAG}: {e}");
            std::process::exit(1);
        }
    }
}

//! `fimfs run` start-up over the 20-layer Python stack: the wall time of
//! `fimfs run LOWERS UPPER -- /usr/bin/true` (start, the command, and the
//! teardown), a fresh empty UPPER each run, caches warm, per backend and
//! lower kind:
//!
//! - daemon backend (`FIM_OVERLAY=unionfs`) over the images in-process;
//! - kernel-overlay backend (`FIM_OVERLAY=bwrap`) over the images, where
//!   the launcher takes image lowers there;
//! - both backends over single-image fimfs mounts made afresh before each
//!   run (as FlatImage starts `dwarfs` per launch); the time to mount the
//!   20 of them is timed too and given as its own row;
//! - the kernel-overlay backend over the directories (reference).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::report::{Table, fmt_dur, median};
use crate::common::run;
use crate::sides::Stack;

struct Variant {
    name: &'static str,
    backend: &'static str,
    lowers: Vec<PathBuf>,
    singles: bool,
}

fn join(v: &[PathBuf]) -> String {
    v.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn once(
    bin: &Path,
    dir: &Path,
    v: &Variant,
    n: usize,
    timeout: Duration,
) -> Result<Duration, String> {
    let upper = dir.join(format!("upper-{n}"));
    let _ = fs::remove_dir_all(&upper);
    fs::create_dir_all(&upper).map_err(|e| e.to_string())?;
    let mut c = Command::new(bin);
    c.env("FIM_OVERLAY", v.backend)
        .arg("run")
        .arg(join(&v.lowers))
        .arg(&upper)
        .args(["--", "/usr/bin/true"]);
    let r = run(c, timeout, true)?;
    let _ = fs::remove_dir_all(&upper);
    if !r.status.success() {
        return Err(r.describe_failure());
    }
    Ok(r.elapsed)
}

fn variant(
    name: &'static str,
    backend: &'static str,
    lowers: Vec<PathBuf>,
    singles: bool,
) -> Variant {
    Variant {
        name,
        backend,
        lowers,
        singles,
    }
}

/// The variants; the one the ratios are taken against comes third.
fn variants(st: &Stack) -> Vec<Variant> {
    let singles = st.single_mnts();
    vec![
        variant(
            "daemon backend (unionfs), images in-process",
            "unionfs",
            st.images.clone(),
            false,
        ),
        variant(
            "kernel-overlay backend (bwrap), image lowers",
            "bwrap",
            st.images.clone(),
            false,
        ),
        variant(
            "kernel-overlay backend (bwrap) over 20 single-image mounts",
            "bwrap",
            singles.clone(),
            true,
        ),
        variant(
            "daemon backend (unionfs) over 20 single-image mounts",
            "unionfs",
            singles,
            true,
        ),
        variant(
            "kernel-overlay backend (bwrap) over directories",
            "bwrap",
            st.dirs.clone(),
            false,
        ),
    ]
}

/// One warm-up run of each variant (mounting the single-image daemons
/// first where it needs them); which ones work, and why not.
fn warm_up(
    bin: &Path,
    dir: &Path,
    st: &mut Stack,
    vs: &[Variant],
    timeout: Duration,
    notes: &mut Vec<String>,
) -> Vec<bool> {
    let mut ok = vec![true; vs.len()];
    for (i, v) in vs.iter().enumerate() {
        if v.singles
            && let Err(e) = st.singles_up()
        {
            notes.push(format!("{}: {e}", v.name));
        }
        if let Err(e) = once(bin, dir, v, 0, timeout) {
            ok[i] = false;
            notes.push(format!(
                "{}: fails: {}",
                v.name,
                crate::common::report::cell_text(&e, 300)
            ));
        }
    }
    ok
}

/// The start-up table, and the notes (failures, what is not supported).
pub fn measure(
    bin: &Path,
    run_dir: &Path,
    st: &mut Stack,
    reps: usize,
    timeout: Duration,
) -> String {
    let dir = run_dir.join("startup");
    let _ = fs::create_dir_all(&dir);
    let variants = variants(st);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len() + 1];
    let mut notes = Vec::new();
    let mut ok = warm_up(bin, &dir, st, &variants, timeout, &mut notes);
    for round in 0..reps {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            if !ok[i] {
                continue;
            }
            // Fresh single-image daemons for each run that uses them, as
            // FlatImage starts its `dwarfs` per launch (their mount timed
            // apart): an empty block cache, the image files' pages warm.
            if variants[i].singles && st.down().is_ok() {
                let t0 = Instant::now();
                if st.singles_up().is_ok() {
                    times[variants.len()].push(t0.elapsed());
                }
            }
            match once(bin, &dir, &variants[i], round + 1, timeout) {
                Ok(d) => times[i].push(d),
                Err(e) => {
                    ok[i] = false;
                    notes.push(format!("{}: {e}", variants[i].name));
                }
            }
        }
    }
    let _ = st.down();
    render(&variants, &times, &notes)
}

/// The table: each variant's median, its ratio to the kernel overlay over
/// the single-image mounts (and to that plus their mount); the notes.
fn render(variants: &[Variant], times: &[Vec<Duration>], notes: &[String]) -> String {
    let base = median(&times[2]).as_secs_f64();
    let mut t = Table::new(&[
        "`fimfs run … -- /usr/bin/true`, 20 layers",
        "median",
        "ratio to kernel overlay over single mounts (+ their mount)",
    ]);
    let mount = median(&times[variants.len()]);
    for (i, v) in variants.iter().enumerate() {
        let m = median(&times[i]);
        let cell = if times[i].is_empty() {
            "–".to_string()
        } else {
            fmt_dur(m)
        };
        let r = if times[i].is_empty() || base <= 0.0 {
            "–".to_string()
        } else {
            format!(
                "{:.2}x ({:.2}x)",
                m.as_secs_f64() / base,
                m.as_secs_f64() / (base + mount.as_secs_f64())
            )
        };
        t.row(&[v.name.to_string(), cell, r]);
    }
    t.row(&[
        "mounting the 20 single-image daemons (one by one)".to_string(),
        fmt_dur(mount),
        "–".to_string(),
    ]);
    let mut out = t.text();
    for n in notes {
        out.push_str(&format!("\n- {n}"));
    }
    out.push('\n');
    out
}

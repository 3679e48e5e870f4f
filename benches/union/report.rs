//! The union benchmark's report: the `workload | kernel | fimfs | ratio |
//! target` table (with the baseline's columns when there is one), the
//! peers table, and the notes (cross-checks, skips, failures).
use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::catalogue::{Side, Workload};
use crate::common::report::{
    Table, cell_text, cpus, date_utc, fmt_ns, fmt_ratio, git_describe, mean_ns, uname,
};
use crate::common::target_dir;
use crate::{Bench, debroot, fixtures, sys};

fn criterion_dir() -> PathBuf {
    if let Some(h) = env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    target_dir().join("criterion")
}

/// criterion's mean estimate (ns) for `group/function`, if written by this run.
fn criterion_mean(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let p = criterion_dir()
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let modified = fs::metadata(&p).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let text = fs::read_to_string(&p).ok()?;
    let mean = &text[text.find("\"mean\"")?..];
    let pe = &mean[mean.find("\"point_estimate\"")? + "\"point_estimate\"".len()..];
    let pe = pe.trim_start().strip_prefix(':')?.trim_start();
    let end = pe.find([',', '}']).unwrap_or(pe.len());
    pe[..end].trim().parse().ok()
}

fn fmt_target(t: Option<f64>) -> String {
    t.map_or("–".into(), |t| format!("≤ {t}x"))
}

/// A measured mean, or why there is none.
enum Cell {
    Mean(f64),
    Skipped(String),
    Failed(usize, String),
    NotRun,
}

pub struct Status<'a> {
    pub skipped: &'a BTreeMap<(String, Side), String>,
    pub notes: &'a [String],
}

impl Bench {
    fn cell(&self, w: &Workload, side: Side, st: &Status) -> Cell {
        let key = (w.group.clone(), side);
        if let Some(why) = st.skipped.get(&key) {
            return Cell::Skipped(why.clone());
        }
        if let Some((n, first)) = self.failures.borrow().get(&key) {
            return Cell::Failed(*n, first.clone());
        }
        let crit = if self.criterion_sides().contains(&side) {
            criterion_mean(&w.group, side.name(), self.started)
        } else {
            None
        };
        match crit.or_else(|| self.own_mean(&key)) {
            Some(ns) => Cell::Mean(ns),
            None => Cell::NotRun,
        }
    }

    /// A reason for a table cell: the run directory elided, one line, short.
    fn short(&self, why: &str) -> String {
        let run = self.run.display().to_string();
        cell_text(&why.replace(&run, "…"), 90)
    }

    fn mode_line(&self) -> String {
        format!(
            "kernel {}, {} CPUs, {} mode (sample size {}, warm-up {:?}, measurement {:?})",
            uname(),
            cpus(),
            if self.cfg.full { "FULL" } else { "quick" },
            self.cfg.samples,
            self.cfg.warm_up,
            self.cfg.measure
        )
    }

    fn fixtures_lines(&self, r: &mut String) {
        let t = &self.tree;
        let _ = writeln!(
            r,
            "- main tree: 5 lowers, {} merged files ({} stored, {} shadowed), {} dirs, {} MiB big file",
            t.merged_files, t.physical_files, t.shadowed, t.merged_dirs, self.cfg.big_mib
        );
        let _ = writeln!(
            r,
            "- also: a 2-lower root filesystem ({} files from the host: {}), a {}-entry directory \
             over 2 lowers, {} lowers with {} bottom-only files, a source tarball of {} files in \
             {} dirs ({:.0} MiB); new file of {} MiB",
            self.rootfs.files,
            fixtures::ROOT_PROGRAMS.join(", "),
            self.wide.entries,
            self.deep.lowers.len(),
            self.deep.files,
            self.src.files,
            self.src.dirs,
            self.src.bytes as f64 / (1 << 20) as f64,
            self.cfg.write_mib
        );
        if let Some(Ok(d)) = &self.debroot {
            let _ = writeln!(
                r,
                "- package install: `debootstrap --variant={} {}` root (cached, the one lower) \
                 and {} .debs with {} files: {}",
                debroot::VARIANT,
                debroot::SUITE,
                d.debs.len(),
                d.files,
                d.names().join(", ")
            );
        }
    }

    pub(crate) fn report(&self, workloads: &[Workload], st: &Status) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "# fimfs vs kernel overlay\n");
        self.fixtures_lines(&mut r);
        let _ = writeln!(r, "- sandbox: {}", self.launcher.describe());
        let _ = writeln!(
            r,
            "- fimfs: {}{}",
            self.fimfs_origin,
            self.cfg.opts_suffix()
        );
        if let Some(b) = &self.baseline_origin {
            let _ = writeln!(r, "- fimfs-baseline: {b}{}", self.cfg.opts_suffix());
        }
        let _ = writeln!(r, "- {}\n", self.mode_line());
        r.push_str(&self.main_table(workloads, st));
        let _ = writeln!(
            r,
            "\nMeans per iteration (criterion's estimate when it ran, else this run's own mean); \
             ratio = fimfs / kernel, below 1 means fimfs is faster; target: the issue's goal \
             for the ratio.{}",
            if self.baseline_origin.is_some() {
                " fimfs-baseline: the FIMFS_BENCH_BASELINE binary on the same workload, \
                 and its ratio to the kernel beside fimfs'."
            } else {
                ""
            }
        );
        let cpu = self.cpu.borrow();
        for w in workloads.iter().filter(|w| w.cpu) {
            for side in self.sides().into_iter().skip(1) {
                let key = (w.group.clone(), side);
                if let (Some(c), Some(wall)) =
                    (cpu.get(&key).and_then(|v| mean_ns(v)), self.own_mean(&key))
                {
                    let _ = writeln!(
                        r,
                        "\nDaemon CPU, {} / {}: {} per iteration (user + system, all threads, \
                         mean of {} runs; {:.0}% of the wall time {})",
                        w.group,
                        side.name(),
                        fmt_ns(c),
                        cpu[&key].len(),
                        100.0 * c / wall,
                        fmt_ns(wall)
                    );
                }
            }
        }
        r.push_str(&self.requests_section(workloads));
        self.notes(&mut r, workloads, st, &self.criterion_sides());
        r
    }

    /// `workload | kernel | fimfs | ratio | target`, with `fimfs-baseline |
    /// baseline ratio` after `ratio` when the run has a baseline.
    fn main_table(&self, workloads: &[Workload], st: &Status) -> String {
        let baseline = self.baseline_origin.is_some();
        let mut head = vec!["workload", "kernel", "fimfs", "ratio"];
        if baseline {
            head.extend(["fimfs-baseline", "baseline ratio"]);
        }
        head.push("target");
        let mut t = Table::new(&head);
        let text = |c: &Cell| match c {
            Cell::Mean(ns) => fmt_ns(*ns),
            Cell::Skipped(_) => "skipped".into(),
            Cell::Failed(n, _) => format!("FAILED ({n} runs)"),
            Cell::NotRun => "not run".into(),
        };
        for w in workloads {
            let k = self.cell(w, Side::Kernel, st);
            let ratio = |c: &Cell| match (&k, c) {
                (Cell::Mean(k), Cell::Mean(x)) => fmt_ratio(*x, *k),
                _ => "–".into(),
            };
            let f = self.cell(w, Side::Fimfs, st);
            let mut row = vec![w.group.clone(), text(&k), text(&f), ratio(&f)];
            if baseline {
                let b = self.cell(w, Side::Baseline, st);
                row.extend([text(&b), ratio(&b)]);
            }
            row.push(fmt_target(w.target));
            t.row(&row);
        }
        t.text()
    }

    /// The "Notes" section: cross-check results, skip reasons, failures and
    /// daemon warnings for `sides`.
    fn notes(&self, r: &mut String, workloads: &[Workload], st: &Status, sides: &[Side]) {
        let mut notes = st.notes.to_vec();
        for side in sides {
            let warnings: usize = self
                .daemons
                .borrow()
                .iter()
                .filter(|((_, s), _)| s == side)
                .map(|(_, d)| d.problems.len())
                .sum();
            if warnings > 0 {
                notes.push(format!(
                    "{warnings} of the {} daemon's unmounts were not clean (lazy, a slow \
                     exit or a workdir left behind; see the warnings above)",
                    side.name()
                ));
            }
        }
        // One line per distinct skip reason, listing the benchmarks it hit.
        let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((g, side), why) in st.skipped {
            if sides.contains(side) {
                reasons
                    .entry(why.as_str())
                    .or_default()
                    .push(format!("{g}/{}", side.name()));
            }
        }
        for (why, which) in &reasons {
            let which = if which.len() == workloads.len() {
                format!("all of {}", which[0].rsplit('/').next().unwrap_or(""))
            } else {
                which.join(", ")
            };
            notes.push(format!("skipped {which}: {why}"));
        }
        for ((g, side), (n, first)) in self.failures.borrow().iter() {
            if sides.contains(side) {
                notes.push(format!(
                    "{g}/{} failed {n} times; first: {first}",
                    side.name()
                ));
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(r, "\n## Notes\n");
            for n in &notes {
                let _ = writeln!(r, "- {}", n.replace('\n', "\n  "));
            }
        }
    }

    /// The peers table: every workload's ratio to the kernel overlay for
    /// fuse-overlayfs, unionfs-fuse and fimfs, with the target.
    pub(crate) fn peers_report(&self, workloads: &[Workload], st: &Status) -> String {
        let mut r = String::new();
        let date = date_utc();
        let git = git_describe();
        let _ = writeln!(r, "# fimfs and its peers vs the kernel overlay\n");
        let _ = writeln!(r, "- date: {date}");
        let _ = writeln!(r, "- {}", self.mode_line());
        let _ = writeln!(
            r,
            "- peers: mean of {} runs each (a plain loop, no criterion), after one untimed \
             run for warm workloads",
            self.cfg.peers_runs
        );
        let _ = writeln!(
            r,
            "- fimfs: {} (git {git}){}",
            self.fimfs_origin,
            self.cfg.opts_suffix()
        );
        let _ = writeln!(
            r,
            "- fuse-overlayfs: {}",
            sys::version_line("fuse-overlayfs", "fuse-overlayfs")
        );
        let _ = writeln!(
            r,
            "- unionfs-fuse: {} (`-o cow,hide_meta_files`)",
            sys::version_line("unionfs", "unionfs-fuse")
        );
        let _ = writeln!(r, "- sandbox: {}", self.launcher.describe());
        self.fixtures_lines(&mut r);
        let _ = writeln!(
            r,
            "\n| workload | fuse-overlayfs | unionfs-fuse | fimfs | target |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        let ratio = |w: &Workload, side: Side| -> String {
            let k = self.cell(w, Side::Kernel, st);
            match (k, self.cell(w, side, st)) {
                (Cell::Mean(k), Cell::Mean(x)) if k > 0.0 => format!("{:.2}x", x / k),
                (_, Cell::Skipped(why)) => format!("fails: {}", self.short(&why)),
                (_, Cell::Failed(n, first)) => {
                    format!("fails ({n}×): {}", self.short(&first))
                }
                _ => "not run".into(),
            }
        };
        let sides = [Side::FuseOverlayfs, Side::UnionfsFuse, Side::Fimfs];
        for w in workloads {
            let cells: Vec<String> = sides.iter().map(|&s| ratio(w, s)).collect();
            let _ = writeln!(
                r,
                "| {} (`{}`) | {} | {} | {} | {} |",
                w.row,
                w.group,
                cells[0],
                cells[1],
                cells[2],
                fmt_target(w.target)
            );
        }
        // Daemon CPU: relative to fuse-overlayfs.
        let cpu = self.cpu.borrow();
        for w in workloads.iter().filter(|w| w.cpu) {
            let mean = |s: Side| cpu.get(&(w.group.clone(), s)).and_then(|v| mean_ns(v));
            let base = mean(Side::FuseOverlayfs);
            let cells: Vec<String> = sides
                .iter()
                .map(|&s| match (mean(s), base) {
                    (Some(c), Some(b)) if b > 0.0 => format!("{:.2}x ({})", c / b, fmt_ns(c)),
                    (Some(c), _) => fmt_ns(c),
                    (None, _) => match self.cell(w, s, st) {
                        Cell::Skipped(why) => format!("fails: {}", self.short(&why)),
                        Cell::Failed(..) => "fails".into(),
                        _ => "not run".into(),
                    },
                })
                .collect();
            let _ = writeln!(
                r,
                "| daemon CPU time per run of `{}`, ratio to fuse-overlayfs | {} | {} | {} | ≤ 0.5x |",
                w.group, cells[0], cells[1], cells[2]
            );
        }
        let _ = writeln!(
            r,
            "\nRatio = mean time of the side / mean time of the kernel overlay in this run \
             (below 1: faster than the kernel); target: the issue's goal for fimfs. \
             Daemon CPU: user + system time of the daemon process (all threads, \
             /proc/PID/stat) per run, ratio to fuse-overlayfs' (fimfs target: at most half)."
        );
        let _ = writeln!(
            r,
            "\n### Means per run\n\n| workload | kernel | fuse-overlayfs | unionfs-fuse | fimfs |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        for w in workloads {
            let cells: Vec<String> = [Side::Kernel, sides[0], sides[1], sides[2]]
                .iter()
                .map(|&s| match self.cell(w, s, st) {
                    Cell::Mean(ns) => fmt_ns(ns),
                    Cell::Skipped(_) | Cell::Failed(..) => "fails".into(),
                    Cell::NotRun => "not run".into(),
                })
                .collect();
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} |",
                w.group, cells[0], cells[1], cells[2], cells[3]
            );
        }
        self.notes(&mut r, workloads, st, &Side::PEERS);
        r
    }
}

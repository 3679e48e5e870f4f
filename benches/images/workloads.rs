//! The workloads (one row of the table each), how they run on the four
//! sides, and the table.
//!
//! Every run is `sh -c CMD` spawned by the benchmark on mounts already in
//! place (`{M}` in CMD is the side's mount point); wall time from spawn to
//! exit. The sides of a workload are interleaved, the order reversed every
//! other round. Before measuring, each side runs the workload once and its
//! output must equal that of the directory side (4): a side that differs
//! is not measured, and the note says why.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::mounts::ForeignDrops;
use crate::common::report::{Table, fmt_dur, median};
use crate::common::{Ran, run};
use crate::sides::{SIDES, Side, Stack};

pub struct Workload {
    pub name: String,
    /// Index of the stack it reads.
    pub stack: usize,
    pub cold: bool,
    pub cmd: String,
    /// The tighter target for (1)/(2): cold metadata over 20
    /// layers and start-up.
    pub tight: bool,
}

/// One row's results: per side the times (empty when not measured) and
/// why not.
pub struct Row {
    pub name: String,
    pub tight: bool,
    pub times: [Vec<Duration>; 4],
    pub notes: Vec<String>,
}

pub struct Runner {
    pub reps: usize,
    pub cold_reps: usize,
    pub timeout: Duration,
}

fn sh(cmd: &str, mnt: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "set -e; {}",
        cmd.replace("{M}", &mnt.display().to_string())
    ));
    c
}

impl Runner {
    fn once(&self, st: &mut Stack, side: Side, w: &Workload) -> Result<Ran, String> {
        if w.cold {
            st.cold(side)?;
        } else {
            st.warm(side)?;
        }
        let r = run(sh(&w.cmd, st.mnt(side)), self.timeout, true)?;
        if !r.status.success() || !r.stderr.trim().is_empty() {
            return Err(format!("{}: {}", side.label(), r.describe_failure()));
        }
        Ok(r)
    }

    /// Preflight (each side once, checked against side 4), then the timed
    /// rounds.
    pub fn measure(&self, stacks: &mut [Stack], w: &Workload) -> Row {
        let st = &mut stacks[w.stack];
        let mut row = Row {
            name: w.name.clone(),
            tight: w.tight,
            times: Default::default(),
            notes: Vec::new(),
        };
        eprintln!("fimfs-images: {} …", w.name);
        let foreign = ForeignDrops::start();
        if let Some((reference, mut ok)) = self.preflight(st, w, &mut row.notes) {
            let reps = if w.cold { self.cold_reps } else { self.reps };
            for round in 0..reps {
                let mut order = SIDES;
                if round % 2 == 1 {
                    order.reverse();
                }
                for side in order.into_iter().filter(|s| ok[s.index()]) {
                    match self.once(st, side, w) {
                        Ok(r) if r.stdout == reference => row.times[side.index()].push(r.elapsed),
                        Ok(_) => row.notes.push(format!("{}: output changed", side.label())),
                        Err(e) => row.notes.push(e),
                    }
                }
                // A side that failed once is not run again.
                for (i, t) in row.times.iter().enumerate() {
                    ok[i] &= t.len() > round;
                }
            }
        }
        if w.cold {
            let _ = st.down();
        }
        if foreign.count() > 0 {
            row.notes.push(format!(
                "disturbed: {} drop_caches by other processes during the runs",
                foreign.count()
            ));
        }
        row
    }

    /// Runs `w` once on side 4 (the reference output) and on every side;
    /// returns the reference and which sides matched it, or `None` when the
    /// reference itself failed. What went wrong goes to `notes`.
    fn preflight(
        &self,
        st: &mut Stack,
        w: &Workload,
        notes: &mut Vec<String>,
    ) -> Option<(String, [bool; 4])> {
        let reference = match self.once(st, Side::KernelDir, w) {
            Ok(r) => r.stdout,
            Err(e) => {
                notes.push(format!("reference failed: {e}"));
                return None;
            }
        };
        let mut ok = [true; 4];
        for side in SIDES {
            match self.once(st, side, w) {
                Ok(r) if r.stdout == reference => {}
                Ok(r) => {
                    ok[side.index()] = false;
                    notes.push(format!(
                        "{}: output differs from the directories': {:?} vs {:?}",
                        side.label(),
                        crate::common::tail(r.stdout.trim(), 120),
                        crate::common::tail(reference.trim(), 120)
                    ));
                }
                Err(e) => {
                    ok[side.index()] = false;
                    notes.push(e);
                }
            }
        }
        Some((reference, ok))
    }
}

/// `a / b` of the medians, if both were measured.
fn ratio(a: &[Duration], b: &[Duration]) -> Option<f64> {
    let (a, b) = (median(a).as_secs_f64(), median(b).as_secs_f64());
    (!a.is_nan() && a > 0.0 && b > 0.0).then(|| a / b)
}

fn cell(v: &[Duration]) -> String {
    if v.is_empty() {
        "–".into()
    } else {
        fmt_dur(median(v))
    }
}

/// The table: medians per side, (1)/(2) against its target, (1)/(3).
/// Returns the table and the rows that miss a target.
pub fn table(rows: &[Row]) -> (String, Vec<String>) {
    let mut t = Table::new(&[
        "workload",
        "(1) in-process",
        "(2) kernel/img",
        "(3) fimfs/img",
        "(4) kernel/dir",
        "(1)/(2)",
        "target",
        "(1)/(3)",
    ]);
    let mut missed = Vec::new();
    for r in rows {
        let target = if r.tight { 0.7 } else { 1.0 };
        let r12 = ratio(&r.times[0], &r.times[1]);
        let r13 = ratio(&r.times[0], &r.times[2]);
        let fmt = |x: Option<f64>, limit: f64, strict: bool| match x {
            None => "–".to_string(),
            Some(x) if x > limit || (strict && x >= limit) => format!("**{x:.2}x MISSED**"),
            Some(x) => format!("{x:.2}x"),
        };
        if r12.is_none_or(|x| x > target) {
            missed.push(format!("{}: (1)/(2) = {}", r.name, fmt(r12, target, false)));
        }
        if r13.is_none_or(|x| x >= 1.0) {
            missed.push(format!("{}: (1)/(3) = {}", r.name, fmt(r13, 1.0, true)));
        }
        t.row(&[
            r.name.clone(),
            cell(&r.times[0]),
            cell(&r.times[1]),
            cell(&r.times[2]),
            cell(&r.times[3]),
            fmt(r12, target, false),
            format!("≤ {target:.1}x"),
            fmt(r13, 1.0, true),
        ]);
    }
    (t.text(), missed)
}

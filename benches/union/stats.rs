//! Request counts: for a workload with `Spec::stats`, one untimed run on a
//! fresh read-write fimfs mount whose daemon counts the requests it
//! handles, by kind (`FIMFS_STATS=FILE`, written when the daemon exits),
//! and the report section that divides them by the workload's units
//! (requests per package).
//!
//! The counted run is the timed command alone (no check), on its own
//! daemon, unmounted before the file is read; the counts include the few
//! requests of mounting, entering the sandbox and unmounting.
use std::fmt::Write as _;
use std::fs;

use crate::catalogue::{Id, Kind, Side, Workload};
use crate::common::mounts::{self, Daemon};
use crate::common::report::{Table, thousands};
use crate::{Bench, sys};

/// Request counts by kind, largest first, then the total.
pub type Counts = Vec<(String, u64)>;

impl Bench {
    /// Counts fimfs' requests for one run of `w` and keeps them (or why
    /// there are none) for the report.
    pub(crate) fn count_requests(&self, w: &Workload) {
        let res = self.counted_run(w);
        match &res {
            Ok(c) => eprintln!(
                "{}/fimfs: {} requests in one run (FIMFS_STATS)",
                w.group,
                thousands(total(c))
            ),
            Err(e) => eprintln!("fimfs-bench: counting {}'s requests: {e}", w.group),
        }
        self.requests.borrow_mut().insert(w.group.clone(), res);
    }

    fn counted_run(&self, w: &Workload) -> Result<Counts, String> {
        let flavor = match self.flavors.get(&Side::Fimfs) {
            Some(Ok(f)) => f.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err("fimfs is not part of this run".into()),
        };
        self.unmount_daemons();
        let io = |e: std::io::Error| e.to_string();
        let dir = self.side_dir(w.union, Side::Fimfs);
        let (upper, mnt) = (dir.join("upper"), dir.join("mnt"));
        mounts::reset_dir(&upper).map_err(io)?;
        mounts::reset_dir(&dir.join("work")).map_err(io)?;
        fs::create_dir_all(&mnt).map_err(io)?;
        let logs = self.run.join("logs");
        let file = logs.join(format!("{}-requests.txt", w.group));
        let log = logs.join(format!("fimfs-{}-counted.log", w.group));
        let mut d =
            Daemon::new(flavor, mnt, self.lowers(w.union), log).with_env("FIMFS_STATS", &file);
        d.mount((w.kind == Kind::Write).then_some(upper.as_path()))?;
        mounts::sync();
        let cmd = self.command(Side::Fimfs, w.union, w.kind, w.as_root, &w.script);
        let ran = sys::run(cmd, self.cfg.timeout, true);
        // The daemon writes the counts as it exits; unmount waits for that.
        d.unmount()?;
        let ran = ran?;
        if !ran.status.success() {
            return Err(format!(
                "the counted run failed: {}",
                ran.describe_failure()
            ));
        }
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        parse(&text)
    }

    /// The "Requests" section: per counted workload, each kind of request,
    /// its count and its count per unit.
    pub(crate) fn requests_section(&self, workloads: &[Workload]) -> String {
        let mut r = String::new();
        let requests = self.requests.borrow();
        for w in workloads {
            let Some(res) = requests.get(&w.group) else {
                continue;
            };
            let _ = writeln!(r, "\n### fimfs requests, one run of `{}`\n", w.group);
            let c = match res {
                Ok(c) => c,
                Err(e) => {
                    let _ = writeln!(r, "Not counted: {e}");
                    continue;
                }
            };
            let (units, unit) = w.units.unwrap_or((1, "run"));
            let per = |n: u64| per_unit(n, units);
            let per_file = match (w.id, &self.debroot) {
                (Id::DpkgInstall, Some(Ok(d))) => format!(
                    ", {} per file of the .debs ({} files)",
                    per_unit(total(c), d.files),
                    thousands(d.files as u64)
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                r,
                "{} requests, {} per {unit} ({units} {unit}s){per_file}. `FIMFS_STATS` of a \
                 daemon mounted for this one run, mount and unmount included:\n",
                thousands(total(c)),
                per(total(c)),
            );
            let per_head = format!("per {unit}");
            let mut t = Table::new(&["request", "count", per_head.as_str()]);
            for (kind, n) in c {
                t.row(&[kind.clone(), thousands(*n), per(*n)]);
            }
            t.row(&["total".into(), thousands(total(c)), per(total(c))]);
            r.push_str(&t.text());
        }
        r
    }
}

/// `n / units`: with a decimal below 100, else rounded with separators.
fn per_unit(n: u64, units: usize) -> String {
    let x = n as f64 / units.max(1) as f64;
    if x < 100.0 {
        format!("{x:.1}")
    } else {
        thousands(x.round() as u64)
    }
}

fn total(c: &Counts) -> u64 {
    c.iter().map(|(_, n)| n).sum()
}

/// `KIND COUNT` lines (and the daemon's own `total` line, checked against
/// the sum), largest count first.
fn parse(text: &str) -> Result<Counts, String> {
    let mut c = Vec::new();
    let mut said_total = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, n) = line
            .split_once(' ')
            .and_then(|(k, n)| Some((k, n.trim().parse::<u64>().ok()?)))
            .ok_or_else(|| format!("bad FIMFS_STATS line {line:?}"))?;
        if kind == "total" {
            said_total = Some(n);
        } else {
            c.push((kind.to_string(), n));
        }
    }
    c.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    match said_total {
        Some(t) if t == total(&c) => Ok(c),
        Some(t) => Err(format!(
            "FIMFS_STATS total {t} is not the sum {}",
            total(&c)
        )),
        None => Err("FIMFS_STATS has no total line (did the daemon exit cleanly?)".into()),
    }
}

//! What the benchmark reports share: number and time formats, means and
//! medians, markdown tables, and the lines that say where a run happened
//! (kernel, CPUs, source revision, date).
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

/// Nanoseconds as `1.234 s`, `12.3 ms` or `12.3 µs`.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// A wall time as `12.3 s`, `1.23 s` or `12.3 ms`.
pub fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

/// `x / base` as `1.23x`, or `–` when there is no base.
pub fn fmt_ratio(x: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}x", x / base)
    } else {
        "–".into()
    }
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Mean in nanoseconds; `None` for no samples.
pub fn mean_ns(v: &[Duration]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e9 / v.len() as f64)
}

/// The median (the mean of the middle two for an even count); zero for none.
pub fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let n = v.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// One line, short, and safe inside a markdown table cell.
pub fn cell_text(s: &str, max: usize) -> String {
    let one = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let one = one.replace('|', "\\|");
    if one.chars().count() <= max {
        one
    } else {
        format!("{}…", one.chars().take(max).collect::<String>())
    }
}

/// A markdown table: the first column left-aligned, the others right.
pub struct Table {
    text: String,
}

impl Table {
    pub fn new<S: AsRef<str>>(head: &[S]) -> Table {
        let mut t = Table {
            text: String::new(),
        };
        t.row(head);
        t.text.push_str("|---|");
        t.text
            .push_str(&"---:|".repeat(head.len().saturating_sub(1)));
        t.text.push('\n');
        t
    }

    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        let cells: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
        let _ = writeln!(self.text, "| {} |", cells.join(" | "));
    }

    pub fn text(self) -> String {
        self.text
    }
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The running kernel's release.
pub fn uname() -> String {
    output(Command::new("uname").arg("-r")).unwrap_or_default()
}

/// CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// `git describe --always --dirty` of the source tree, or `?`.
pub fn git_describe() -> String {
    output(
        Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap_or_else(|| "?".into())
}

/// `git -C SOURCE ARGS` output, if git answers.
pub fn git(args: &[&str]) -> Option<String> {
    output(
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args),
    )
}

/// Now, as `2026-01-31 12:34 UTC`.
pub fn date_utc() -> String {
    output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default()
}

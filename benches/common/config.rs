//! The environment knobs and the command line every benchmark reads: the
//! `FIMFS_BENCH_*` / `FIMFS_SCALE_*` variables (see `benches/README.md`),
//! whether this is a real `cargo bench` run, and the part of criterion's
//! command line a harness must know before criterion parses it.
use std::env;
use std::ffi::OsString;
use std::path::PathBuf;

/// `1`, `true`, `yes` or `on`.
pub fn env_flag(name: &str) -> bool {
    matches!(
        env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes") | Ok("on")
    )
}

/// A number from the environment; unset, empty or unparsable gives
/// `default` (the last said so on stderr, under `tag`).
pub fn env_num<T: std::str::FromStr>(tag: &str, name: &str, default: T) -> T {
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{tag}: ignoring unparsable {name}={v:?}");
            default
        }),
        _ => default,
    }
}

/// A non-empty string from the environment.
pub fn env_str(name: &str) -> Option<String> {
    env::var(name).ok().filter(|s| !s.is_empty())
}

/// A path from the environment, or `default`.
pub fn env_path(name: &str, default: &str) -> PathBuf {
    env::var_os(name)
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// `FIMFS_BENCH_BASELINE=BIN`: an older fimfs binary to run beside the
/// current one on every fimfs workload.
pub fn baseline_bin() -> Option<PathBuf> {
    env::var_os("FIMFS_BENCH_BASELINE")
        .filter(|s| !s.is_empty())
        .map(|s: OsString| PathBuf::from(s))
}

/// The subset of criterion's command line a harness needs to know about
/// before handing it to `Criterion::configure_from_args`.
pub struct Args {
    /// `--bench`: cargo bench (not `cargo test --benches`).
    pub bench: bool,
    pub list: bool,
    /// criterion's `--test`: each benchmark once.
    pub test: bool,
    pub exact: bool,
    /// The first free argument (criterion's filter).
    pub filter: Option<String>,
    /// Every free argument (the scale benchmark's part names).
    pub free: Vec<String>,
}

/// criterion options that take a value (see Criterion::configure_from_args).
const WITH_VALUE: &[&str] = &[
    "-c",
    "--color",
    "--colour",
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--format",
    "--profile-time",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

impl Args {
    pub fn parse(argv: &[String]) -> Args {
        let mut a = Args {
            bench: false,
            list: false,
            test: false,
            exact: false,
            filter: None,
            free: Vec::new(),
        };
        let mut it = argv.iter();
        while let Some(s) = it.next() {
            match s.as_str() {
                "--bench" => a.bench = true,
                "--list" => a.list = true,
                "--test" => a.test = true,
                "--exact" => a.exact = true,
                o if WITH_VALUE.contains(&o) => {
                    it.next();
                }
                o if o.starts_with('-') => {}
                f => a.free.push(f.to_string()),
            }
        }
        a.filter = a.free.first().cloned();
        a
    }

    /// Whether criterion may run the benchmark `id` ("group/function").
    /// Conservative: a filter that looks like a real regex selects all.
    pub fn may_select(&self, id: &str) -> bool {
        match &self.filter {
            None => true,
            Some(f) if self.exact => id == f,
            Some(f)
                if f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-/ ".contains(&b)) =>
            {
                id.contains(f.as_str())
            }
            Some(_) => true,
        }
    }
}

//! Mount options and the three command-line forms that carry them.
//!
//! Pure parsing, no I/O: `fimfs mount`, fuse-overlayfs' form (the binary
//! called `fuse-overlayfs` or `overlayfs`) and unionfs-fuse's form (called
//! `unionfs` or `unionfs-fuse`) all end in one `MountRequest`. Unknown
//! options are refused by name; options the replaced tools document as
//! no-ops are accepted and ignored.
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// Everything a mount needs, before any path is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub opts: MountOpts,
    pub foreground: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOpts {
    pub workdir: Option<PathBuf>,
    pub threads: Option<usize>,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub ro: bool,
    pub debug: bool,
    pub nonempty: bool,
    /// Case-insensitive, case-preserving names (`casefold`).
    pub casefold: bool,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// Entry and attribute cache lifetime, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `nopassthrough`: never open upper files in FUSE passthrough mode.
    pub no_passthrough: bool,
    /// `lower_timeout=S`: cache lifetime of what only the lowers have.
    pub lower_timeout_ms: Option<u64>,
    lowerdir: Option<OsString>,
    upperdir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptError(pub String);

impl std::fmt::Display for OptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptError {}

fn err<T>(msg: impl Into<String>) -> Result<T, OptError> {
    Err(OptError(msg.into()))
}

/// Accepted and ignored: mount flags the kernel or FUSE handle, and the
/// options fuse-overlayfs, unionfs-fuse and the kernel overlay document as
/// having no effect on the result.
const NO_OPS: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "async",
    "noacl",
    "static_nlink",
    "userxattr",
    "cow",
    "use_ino",
    "hide_meta_files",
    "statfs_omit_ro",
    "relaxed_permissions",
    "auto_cache",
    "kernel_cache",
    "big_writes",
    "splice_read",
    "splice_write",
    "splice_move",
];
/// `name=value` options ignored whatever their value.
const NO_OP_KEYS: &[&str] = &[
    "fsync",
    "redirect_dir",
    "index",
    "metacopy",
    "xino",
    "max_files",
    "fsname",
    "subtype",
    "xattr_permissions",
    "plugins",
    "uidmapping",
    "gidmapping",
];

fn parse_num<T: std::str::FromStr>(key: &str, v: &[u8]) -> Result<T, OptError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            OptError(format!(
                "option {key}: {:?} is not a valid number",
                String::from_utf8_lossy(v)
            ))
        })
}

impl MountOpts {
    /// Applies one `-o` argument (comma-separated options).
    pub fn apply(&mut self, arg: &OsStr) -> Result<(), OptError> {
        for opt in arg
            .as_bytes()
            .split(|&b| b == b',')
            .filter(|o| !o.is_empty())
        {
            self.apply_one(opt)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, opt: &[u8]) -> Result<(), OptError> {
        let (key, val) = match opt.iter().position(|&b| b == b'=') {
            Some(i) => (&opt[..i], Some(&opt[i + 1..])),
            None => (opt, None),
        };
        let key_s = String::from_utf8_lossy(key).into_owned();
        let path = |v: &[u8]| PathBuf::from(OsStr::from_bytes(v));
        match (key_s.as_str(), val) {
            ("workdir", Some(v)) if !v.is_empty() => self.workdir = Some(path(v)),
            ("upperdir", Some(v)) if !v.is_empty() => self.upperdir = Some(path(v)),
            ("lowerdir", Some(v)) if !v.is_empty() => {
                self.lowerdir = Some(OsString::from_vec(v.to_vec()))
            }
            ("threads", Some(v)) => {
                let n: usize = parse_num("threads", v)?;
                if n == 0 || n > 1024 {
                    return err(format!("option threads: {n} is out of range (1 to 1024)"));
                }
                self.threads = Some(n);
            }
            ("squash_to_uid", Some(v)) => self.squash_uid = Some(parse_num("squash_to_uid", v)?),
            ("squash_to_gid", Some(v)) => self.squash_gid = Some(parse_num("squash_to_gid", v)?),
            (k @ ("timeout" | "lower_timeout"), Some(v)) => {
                let t: f64 = parse_num(k, v)?;
                if !(0.0..=86400.0).contains(&t) {
                    return err(format!("option {k}: {t} is out of range (0 to 86400 s)"));
                }
                let ms = Some((t * 1000.0) as u64);
                match k {
                    "timeout" => self.timeout_ms = ms,
                    _ => self.lower_timeout_ms = ms,
                }
            }
            ("allow_other", None) | ("allow_root", None) => self.allow_other = true,
            ("default_permissions", None) => self.default_permissions = true,
            ("ro", None) => self.ro = true,
            ("debug", None) => self.debug = true,
            ("nonempty", None) => self.nonempty = true,
            ("casefold", None) => self.casefold = true,
            ("nopassthrough", None) => self.no_passthrough = true,
            (k, None) if NO_OPS.contains(&k) => {}
            (k, Some(_)) if NO_OP_KEYS.contains(&k) => {}
            (k, Some(_))
                if ["workdir", "upperdir", "lowerdir"].contains(&k)
                    || [
                        "allow_other",
                        "default_permissions",
                        "ro",
                        "debug",
                        "nonempty",
                        "casefold",
                    ]
                    .contains(&k) =>
            {
                return err(format!(
                    "option {k}: bad value (use {k} or {k}=PATH as documented)"
                ));
            }
            (k, None)
                if [
                    "workdir",
                    "upperdir",
                    "lowerdir",
                    "threads",
                    "timeout",
                    "lower_timeout",
                ]
                .contains(&k) =>
            {
                return err(format!("option {k} needs a value ({k}=...)"));
            }
            _ => return err(format!("unknown option: {}", String::from_utf8_lossy(opt))),
        }
        Ok(())
    }
}

/// Splits `DIR[:DIR…]`, top-most first.
pub fn split_lowers(s: &OsStr) -> Result<Vec<PathBuf>, OptError> {
    let parts: Vec<PathBuf> = s
        .as_bytes()
        .split(|&b| b == b':')
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .collect();
    if parts.iter().any(|p| p.as_os_str().is_empty()) {
        return err(format!(
            "lower directories {:?}: empty entry (write DIR[:DIR...], top-most first)",
            s
        ));
    }
    Ok(parts)
}

/// `fimfs mount [-f] [-o OPTS]... [LOWERS] [UPPER] MOUNTPOINT`, after clap
/// has split flags from positionals.
pub fn mount_request(
    positionals: &[OsString],
    opt_args: &[OsString],
    foreground: bool,
) -> Result<MountRequest, OptError> {
    let mut opts = MountOpts::default();
    for o in opt_args {
        opts.apply(o)?;
    }
    let (lowers_arg, upper, mnt) = match (positionals, opts.lowerdir.take()) {
        ([m], Some(l)) => (l, opts.upperdir.take(), m),
        ([l, m], None) => (l.clone(), opts.upperdir.take(), m),
        ([l, u, m], None) if opts.upperdir.is_none() => (l.clone(), Some(PathBuf::from(u)), m),
        (_, Some(_)) => {
            return err("lower directories given twice: as lowerdir= and as an argument");
        }
        ([] | [_], None) => return err("missing arguments: LOWERS [UPPER] MOUNTPOINT"),
        _ => return err("too many arguments: expected LOWERS [UPPER] MOUNTPOINT"),
    };
    Ok(MountRequest {
        lowers: split_lowers(&lowers_arg)?,
        upper,
        mountpoint: PathBuf::from(mnt),
        opts,
        foreground,
    })
}

/// unionfs-fuse's branch list: `UP=RW:TOP=RO:…:BOTTOM=RO`.
pub fn unionfs_branches(s: &OsStr) -> Result<(Vec<PathBuf>, Option<PathBuf>), OptError> {
    let mut lowers = Vec::new();
    let mut upper = None;
    for b in s.as_bytes().split(|&c| c == b':') {
        let (dir, mode) = match b.iter().rposition(|&c| c == b'=') {
            Some(i) => (&b[..i], &b[i + 1..]),
            None => (b, &b"RO"[..]),
        };
        if dir.is_empty() {
            return err(format!("branches {s:?}: empty branch"));
        }
        let p = PathBuf::from(OsStr::from_bytes(dir));
        match mode.to_ascii_uppercase().as_slice() {
            b"RW" if upper.is_none() && lowers.is_empty() => upper = Some(p),
            b"RW" => return err(format!("branches {s:?}: only the first branch may be RW")),
            b"RO" => lowers.push(p),
            m => {
                return err(format!(
                    "branches {s:?}: unknown mode {:?} (RW or RO)",
                    String::from_utf8_lossy(m)
                ));
            }
        }
    }
    if lowers.is_empty() {
        return err(format!("branches {s:?}: no read-only branch"));
    }
    Ok((lowers, upper))
}

/// The drop-in forms: `[-f] [-d] [-o OPTS]... ARGS...` in any order.
pub fn dropin_args(args: &[OsString]) -> Result<(Vec<OsString>, Vec<OsString>, bool), OptError> {
    let mut pos = Vec::new();
    let mut opts = Vec::new();
    let mut fg = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_bytes() {
            b"-f" => fg = true,
            b"-d" | b"--debug" => {
                fg = true;
                opts.push(OsString::from("debug"));
            }
            b"-o" => match it.next() {
                Some(v) => opts.push(v.clone()),
                None => return err("-o needs a value"),
            },
            x if x.starts_with(b"-o") => opts.push(OsString::from_vec(x[2..].to_vec())),
            x if x.starts_with(b"-") && x.len() > 1 => {
                return err(format!("unknown flag: {}", String::from_utf8_lossy(x)));
            }
            _ => pos.push(a.clone()),
        }
    }
    Ok((pos, opts, fg))
}

/// fuse-overlayfs' command line (`-o lowerdir=…,upperdir=…,workdir=… MNT`).
pub fn fuse_overlayfs_request(args: &[OsString]) -> Result<MountRequest, OptError> {
    let (pos, opts, fg) = dropin_args(args)?;
    mount_request(&pos, &opts, fg)
}

/// unionfs-fuse's command line (`-o cow UP=RW:TOP=RO:… MNT`).
pub fn unionfs_request(args: &[OsString]) -> Result<MountRequest, OptError> {
    let (pos, opt_args, fg) = dropin_args(args)?;
    let mut opts = MountOpts::default();
    for o in &opt_args {
        opts.apply(o)?;
    }
    let [branches, mnt] = pos.as_slice() else {
        return err("expected BRANCHES MOUNTPOINT (UP=RW:TOP=RO:...:BOTTOM=RO MNT)");
    };
    let (lowers, upper) = unionfs_branches(branches)?;
    Ok(MountRequest {
        lowers,
        upper,
        mountpoint: PathBuf::from(mnt),
        opts,
        foreground: fg,
    })
}

#[cfg(test)]
mod tests;

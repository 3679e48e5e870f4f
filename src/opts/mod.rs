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

pub mod table;

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
    /// `handles` / `nohandles`: whether the kernel asks the daemon at
    /// every open (None: the daemon decides, see `fuse::nodeio`).
    pub handles: Option<bool>,
    /// `lower_timeout=S`: cache lifetime of what only the lowers have.
    pub lower_timeout_ms: Option<u64>,
    /// `cache_size=SIZE`: bytes of decoded image blocks kept, shared by
    /// every image lower.
    pub cache_size: Option<u64>,
    /// `offset=N` / `imagesize=N`: where the one image lower starts in its
    /// file and how long it is (dwarfs' spelling; `offset=auto` scans).
    pub image_offset: Option<u64>,
    pub image_size: Option<u64>,
    /// `auto_unmount`: the mount goes away when the daemon does.
    pub auto_unmount: bool,
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

/// A byte count: digits with an optional `k`, `m`, `g` or `t` suffix
/// (powers of 1024, either case), as dwarfs spells sizes.
pub fn parse_size(key: &str, v: &[u8]) -> Result<u64, OptError> {
    let (digits, shift) = match v.last().map(u8::to_ascii_lowercase) {
        Some(b'k') => (&v[..v.len() - 1], 10),
        Some(b'm') => (&v[..v.len() - 1], 20),
        Some(b'g') => (&v[..v.len() - 1], 30),
        Some(b't') => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    let bad = || {
        OptError(format!(
            "option {key}: {:?} is not a size (digits, optionally followed by k, m, g or t)",
            String::from_utf8_lossy(v)
        ))
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let n: u64 = parse_num(key, digits).map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
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
        let Some(spec) = table::spec(&key_s) else {
            if table::ignored(&key_s, val.is_some()) {
                return Ok(());
            }
            return err(format!("unknown option: {}", String::from_utf8_lossy(opt)));
        };
        match (spec.value, val) {
            (Some(_), None) => err(format!("option {key_s} needs a value ({key_s}=...)")),
            (None, Some(_)) => err(format!(
                "option {key_s}: bad value (use {key_s} or {key_s}=PATH as documented)"
            )),
            (Some(_), Some(v)) => self.apply_valued(spec.name, v),
            (None, None) => {
                self.apply_flag(spec.name);
                Ok(())
            }
        }
    }

    fn apply_flag(&mut self, name: &str) {
        match name {
            "allow_other" | "allow_root" => self.allow_other = true,
            "default_permissions" => self.default_permissions = true,
            "ro" => self.ro = true,
            "debug" => self.debug = true,
            "nonempty" => self.nonempty = true,
            "casefold" => self.casefold = true,
            "nopassthrough" => self.no_passthrough = true,
            "handles" => self.handles = Some(true),
            "nohandles" => self.handles = Some(false),
            "case_insensitive" => self.casefold = true,
            "auto_unmount" => self.auto_unmount = true,
            // The table and this match are checked against each other by
            // `every_table_option_is_parsed`.
            _ => {}
        }
    }

    fn apply_valued(&mut self, k: &str, v: &[u8]) -> Result<(), OptError> {
        let path = |v: &[u8]| PathBuf::from(OsStr::from_bytes(v));
        match k {
            "workdir" | "upperdir" | "lowerdir" if v.is_empty() => {
                return err(format!(
                    "option {k}: bad value (use {k} or {k}=PATH as documented)"
                ));
            }
            "workdir" => self.workdir = Some(path(v)),
            "upperdir" => self.upperdir = Some(path(v)),
            "lowerdir" => self.lowerdir = Some(OsString::from_vec(v.to_vec())),
            "threads" => {
                let n: usize = parse_num("threads", v)?;
                if n == 0 || n > 1024 {
                    return err(format!("option threads: {n} is out of range (1 to 1024)"));
                }
                self.threads = Some(n);
            }
            "squash_to_uid" | "uid" => self.squash_uid = Some(parse_num(k, v)?),
            "squash_to_gid" | "gid" => self.squash_gid = Some(parse_num(k, v)?),
            "cache_size" | "cachesize" => self.cache_size = Some(parse_size(k, v)?),
            "offset" if v == b"auto" => self.image_offset = None,
            "offset" => self.image_offset = Some(parse_size(k, v)?),
            "imagesize" => self.image_size = Some(parse_size(k, v)?),
            "timeout" | "lower_timeout" => {
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
            _ => {}
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
    build_request(positionals, opt_args, foreground, false)
}

/// `label`: the form `PROG SOURCE MOUNTPOINT -o OPTS` that `mount.fuse3`
/// runs for `mount -t fuse.PROG` and fstab lines; with `lowerdir=` given,
/// SOURCE is only fstab's first field (often `none`) and is ignored, as
/// fuse-overlayfs does.
fn build_request(
    positionals: &[OsString],
    opt_args: &[OsString],
    foreground: bool,
    label: bool,
) -> Result<MountRequest, OptError> {
    let mut opts = MountOpts::default();
    for o in opt_args {
        opts.apply(o)?;
    }
    let (lowers_arg, upper, mnt) = match (positionals, opts.lowerdir.take()) {
        ([m], Some(l)) => (l, opts.upperdir.take(), m),
        ([_, m], Some(l)) if label => (l, opts.upperdir.take(), m),
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
/// A source before the mountpoint is ignored when `lowerdir=` is given.
pub fn fuse_overlayfs_request(args: &[OsString]) -> Result<MountRequest, OptError> {
    let (pos, opts, fg) = dropin_args(args)?;
    build_request(&pos, &opts, fg, true)
}

/// `fimfs SOURCE MOUNTPOINT [-o OPTS]...`, the line `mount.fuse3` runs for
/// `mount -t fuse.fimfs` and fstab: SOURCE is LOWERS, or a label when the
/// options carry `lowerdir=`. `None` when `args` (after the program name)
/// do not have that shape (exactly two arguments besides flags, and either
/// an `-o` or a SOURCE that looks like paths), so that a mistyped
/// subcommand still gets clap's message.
pub fn source_form_request(args: &[OsString]) -> Option<Result<MountRequest, OptError>> {
    let first = args.first()?.as_bytes();
    if first.starts_with(b"-") {
        return None;
    }
    let (pos, opts, fg) = dropin_args(args).ok()?;
    let pathish = first.contains(&b'/') || first.contains(&b':');
    if pos.len() != 2 || (opts.is_empty() && !pathish) {
        return None;
    }
    Some(build_request(&pos, &opts, fg, true))
}

/// dwarfs' command line (`IMAGE MOUNTPOINT [-f] [-o OPTS]...`): one image,
/// read-only, as FlatImage starts its layer daemons (SPEC §8). The image
/// path is taken whole (no `:` splitting); `offset=`/`imagesize=` place it.
pub fn dwarfs_request(args: &[OsString]) -> Result<MountRequest, OptError> {
    let (pos, opt_args, fg) = dropin_args(args)?;
    let mut opts = MountOpts::default();
    for o in &opt_args {
        opts.apply(o)?;
    }
    let [image, mnt] = pos.as_slice() else {
        return err("expected IMAGE MOUNTPOINT (dwarfs IMAGE MNT [-f] [-o OPTS])");
    };
    Ok(MountRequest {
        lowers: vec![PathBuf::from(image)],
        upper: None,
        mountpoint: PathBuf::from(mnt),
        opts,
        foreground: fg,
    })
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

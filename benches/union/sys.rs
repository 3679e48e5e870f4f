//! Sandboxes for the union benchmark: the two ways of entering a kernel
//! overlay (bwrap `--overlay`, or `unshare` + `mount -t overlay`), with the
//! union at a directory or as `/`, and of entering a daemon's mount the
//! same way; the peers' versions; the scratch filesystem a run lives on.
//! The daemons themselves are `common::mounts`.

pub use crate::common::{install_signal_cleanup, is_root, run, unmount_all_under};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------
// Launchers

/// `sh -c INNER sh ARGS…` (the caller adds ARGS, `$1`… in INNER) in a
/// private mount namespace: the fallback when bwrap is too old.
fn unshare_sh(inner: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        inner,
        "sh",
    ]);
    c
}

/// `mount -t overlay` options for `lowers` (top-most first): read-only, or
/// over `(upper, work)`.
fn overlay_opts(lowers: &[PathBuf], rw: Option<(&Path, &Path)>) -> String {
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let lowerdir = lowerdir.join(":");
    match rw {
        Some((upper, work)) => format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        ),
        None => format!("ro,lowerdir={lowerdir}"),
    }
}

/// bwrap's `--overlay-src` for each of `lowers` (top-most first): bwrap
/// takes the layers bottom-most first.
fn overlay_srcs(c: &mut Command, lowers: &[PathBuf]) {
    for l in lowers.iter().rev() {
        c.arg("--overlay-src").arg(l);
    }
}

/// How a workload enters its mount namespace.
pub enum Launcher {
    /// bwrap >= 0.10: `--overlay-src`/`--overlay`/`--ro-overlay` for the
    /// kernel side, `--bind` of the fimfs mount for the fimfs side.
    Bwrap { bin: PathBuf, version: String },
    /// No usable bwrap: `unshare --mount` + `mount -t overlay` / `mount --bind`.
    Unshare { why: String },
}

fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let v = s.split_whitespace().last()?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        it.next()??,
        it.next().flatten().unwrap_or(0),
        it.next().flatten().unwrap_or(0),
    ))
}

impl Launcher {
    pub fn detect() -> Launcher {
        if std::env::var("FIMFS_BENCH_LAUNCHER").as_deref() == Ok("unshare") {
            return Launcher::Unshare {
                why: "FIMFS_BENCH_LAUNCHER=unshare".into(),
            };
        }
        let bin = std::env::var_os("FIMFS_BWRAP")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/fimfs-bwrap/bin/bwrap"));
        let out = Command::new(&bin).arg("--version").output();
        let text = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Ok(o) => {
                return Launcher::Unshare {
                    why: format!("{} --version failed: {}", bin.display(), o.status),
                };
            }
            Err(e) => {
                return Launcher::Unshare {
                    why: format!("no bwrap at {}: {e}", bin.display()),
                };
            }
        };
        match parse_version(&text) {
            Some(v) if v >= (0, 10, 0) => Launcher::Bwrap { bin, version: text },
            _ => Launcher::Unshare {
                why: format!("{} is `{text}`, need >= 0.10 for --overlay", bin.display()),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Launcher::Bwrap { bin, version } => format!("{version} ({})", bin.display()),
            Launcher::Unshare { why } => {
                format!("unshare --mount + mount -t overlay (bwrap unusable: {why})")
            }
        }
    }

    /// The kernel-overlay side: `script` runs with the overlay of `lowers`
    /// (top-most first) mounted at `mnt`; read-only when `rw` is `None`,
    /// else with `(upper, work)`.
    pub fn kernel(
        &self,
        lowers: &[PathBuf],
        rw: Option<(&Path, &Path)>,
        mnt: &Path,
        script: &str,
    ) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                c.args(["--dev-bind", "/", "/"]);
                overlay_srcs(&mut c, lowers);
                match rw {
                    Some((upper, work)) => {
                        c.arg("--overlay").arg(upper).arg(work).arg(mnt);
                    }
                    None => {
                        c.arg("--ro-overlay").arg(mnt);
                    }
                }
                c.args(["--", "sh", "-c", script]);
                c
            }
            Launcher::Unshare { .. } => {
                let opts = overlay_opts(lowers, rw);
                let inner = format!(
                    "mount -t overlay overlay -o {opts} {} && {{\n{script}\n}}",
                    mnt.display()
                );
                unshare_sh(&inner)
            }
        }
    }

    /// A daemon side: `script` runs with the FUSE mount at `src` bound onto
    /// `mnt`, in the same kind of sandbox as the kernel side.
    pub fn bind(&self, src: &Path, mnt: &Path, script: &str) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                c.args(["--dev-bind", "/", "/", "--bind"])
                    .arg(src)
                    .arg(mnt)
                    .args(["--", "sh", "-c", script]);
                c
            }
            Launcher::Unshare { .. } => {
                let inner = format!(
                    "mount --bind {} {} && {{\n{script}\n}}",
                    src.display(),
                    mnt.display()
                );
                unshare_sh(&inner)
            }
        }
    }

    /// The kernel side with the union as the command's root: `/bin/sh -c
    /// script` from the overlay of `lowers` (top-most first) over
    /// `upper`/`work`, with a fresh `/dev` and `/proc`. The fallback mounts
    /// the overlay on `mnt` and `chroot`s into it (no `/dev`, `/proc`).
    pub fn kernel_root(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        script: &str,
    ) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                overlay_srcs(&mut c, lowers);
                c.arg("--overlay").arg(upper).arg(work).arg("/");
                c.args([
                    "--dev", "/dev", "--proc", "/proc", "--", "/bin/sh", "-c", script,
                ]);
                c
            }
            Launcher::Unshare { .. } => {
                let opts = overlay_opts(lowers, Some((upper, work)));
                let inner = format!(
                    "mount -t overlay overlay -o {opts} \"$1\" && exec chroot \"$1\" /bin/sh -c \"$2\""
                );
                let mut c = unshare_sh(&inner);
                c.arg(mnt).arg(script);
                c
            }
        }
    }

    /// A daemon side with the FUSE mount at `src` as the command's root
    /// (`bwrap --bind SRC /`), otherwise like [`Launcher::kernel_root`].
    pub fn bind_root(&self, src: &Path, mnt: &Path, script: &str) -> Command {
        match self {
            Launcher::Bwrap { bin, .. } => {
                let mut c = Command::new(bin);
                c.arg("--bind").arg(src).arg("/");
                c.args([
                    "--dev", "/dev", "--proc", "/proc", "--", "/bin/sh", "-c", script,
                ]);
                c
            }
            Launcher::Unshare { .. } => {
                let inner = "mount --bind \"$1\" \"$2\" && exec chroot \"$2\" /bin/sh -c \"$3\"";
                let mut c = unshare_sh(inner);
                c.arg(src).arg(mnt).arg(script);
                c
            }
        }
    }
}

/// The first line of `PROG --version` (stdout or stderr), for the report.
pub fn version_line(prog: &str, pick: &str) -> String {
    match Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find(|l| l.contains(pick))
                .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

/// Whether `prog` is on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            fs::metadata(d.join(prog))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Makes `dir` the mount point of a fresh, journaled ext4 of `gib` GiB on a
/// loop device, so that every run starts from the same clean filesystem.
///
/// Why: on a filesystem without a journal (this VM's root ext4 has none),
/// ext4 skips inodes whose deletion is still in a dirty inode-table block
/// when it allocates new ones (`recently_deleted`). A create-heavy workload
/// that runs after many deletes in the same block group then spends most of
/// its time in that scan, and which side pays depends on where each side's
/// upper landed: the same 5000-file create/rename/delete took 0.5 s or
/// 2.7 s on the kernel overlay depending on the history of the directory.
///
/// The image file is unlinked once mounted: the loop device holds it, and
/// the unmount at the end (or `clean_stale_runs` after a crash) frees it.
pub fn mount_scratch_fs(dir: &Path, gib: u64) -> Result<(), String> {
    let img = dir.with_extension("img");
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let f = fs::File::create(&img).map_err(|e| format!("{}: {e}", img.display()))?;
    f.set_len(gib << 30)
        .map_err(|e| format!("{}: {e}", img.display()))?;
    drop(f);
    let run = |c: &mut Command| -> Result<(), String> {
        let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    };
    let res = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(&img))
    .and_then(|()| {
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir))
    });
    let _ = fs::remove_file(&img);
    res
}

//! What the benchmark binaries (`benches/union`, `benches/scale`) share:
//! finding the `fimfs` binary and cargo's target directory, and leaving no
//! mount behind (the mount table is read with `fimfs::mountinfo`).
//! Included by each with `#[path = "../common/mod.rs"] mod common;`.
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Cargo's target directory, from the running benchmark's own path
/// (`target/<profile>/deps/<bench>-<hash>`).
pub fn target_dir() -> PathBuf {
    if let Ok(exe) = env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(t) = deps.parent().and_then(Path::parent)
    {
        return t.to_path_buf();
    }
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The release `fimfs` binary: `$FIMFS_BIN`, cargo's `CARGO_BIN_EXE_fimfs`,
/// `target/release/fimfs`, or failing all that, built with
/// `cargo build --release --bin fimfs`. `tag` starts the progress line.
pub fn find_fimfs(tag: &str) -> Result<PathBuf, String> {
    if let Some(p) = env::var_os("FIMFS_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("FIMFS_BIN={} does not exist", p.display()))
        };
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_fimfs").map(PathBuf::from)
        && p.is_file()
    {
        return Ok(p);
    }
    let p = target_dir().join("release").join("fimfs");
    if p.is_file() {
        return Ok(p);
    }
    eprintln!(
        "{tag}: {} missing; running cargo build --release --bin fimfs",
        p.display()
    );
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--bin", "fimfs"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if st.success() && p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no fimfs binary: `cargo build --release --bin fimfs` gave {st} and {} is missing",
            p.display()
        ))
    }
}

/// The last `max` bytes of `s` (on a character boundary), marked with `…`
/// when cut.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Paths that go into `sh -c` strings and mount options must not need
/// quoting.
pub fn shell_safe(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    })
}

/// Runs `cmd` with no input or output; true when it exits 0.
pub fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_fuse_mounted(path: &Path) -> bool {
    fimfs::mountinfo::read()
        .iter()
        .any(|m| m.point == path && m.is_fuse())
}

/// Unmounts everything mounted at or below `dir`, deepest first. Returns
/// what it unmounted.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut done = Vec::new();
    for _round in 0..5 {
        let mut found: Vec<_> = fimfs::mountinfo::read()
            .into_iter()
            .filter(|m| m.point.starts_with(dir))
            .collect();
        if found.is_empty() {
            break;
        }
        found.sort_by_key(|m| std::cmp::Reverse(m.point.components().count()));
        for m in found {
            let p = &m.point;
            let ok = if m.is_fuse() {
                quiet(Command::new("fusermount3").arg("-u").arg(p))
                    || quiet(Command::new("fusermount3").arg("-uz").arg(p))
                    || quiet(Command::new("umount").arg("-l").arg(p))
            } else {
                quiet(Command::new("umount").arg(p))
                    || quiet(Command::new("umount").arg("-l").arg(p))
            };
            if ok {
                done.push(m.point);
            }
        }
    }
    done
}

/// Removes `run-<pid>` directories of earlier benchmark processes that
/// died without cleaning up, unmounting what they left first.
pub fn clean_stale_runs(base: &Path, tag: &str) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if alive {
            continue;
        }
        let dir = e.path();
        let gone = unmount_all_under(&dir);
        if !gone.is_empty() {
            eprintln!("{tag}: unmounted stale {gone:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

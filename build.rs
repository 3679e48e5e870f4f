//! Puts the git commit into `fimfs --version` (`FIMFS_GIT_COMMIT`), or
//! `unknown` when the tree is not a git checkout (a source tarball).
use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Rebuild when HEAD moves: HEAD itself (a checkout), the branch's ref (a
/// commit) and packed-refs. Only files that exist: cargo reruns a build
/// script on every build when a watched path is missing.
fn watch_head() {
    let mut paths = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(git(&["rev-parse", "--git-path", &r]));
    }
    paths.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for p in paths.into_iter().flatten() {
        if Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    if commit.is_some() {
        watch_head();
    }
    println!(
        "cargo:rustc-env=FIMFS_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

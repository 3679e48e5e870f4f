//! `fimfs run` never shows a layer through the kernel overlay when that layer holds
//! deletions as `.wh.` files (the dialect `fimfs export` writes, which the kernel
//! shows as plain files): the run goes to the fimfs daemon, with one `fimfs:` line
//! naming the layer, and `--dry-run` says so. A layer without deletions still goes
//! to BWRAP. See `src/launch/dialect.rs`.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// `fimfs run [--dry-run] --target T LOWERS UPPER -- sh -c LOOK T`, FIM_OVERLAY
/// and FIM_CASEFOLD left unset: the default backend, BWRAP.
fn run(tmp: &TempDir, lowers: &[PathBuf], upper: &Path, dry: bool) -> Outcome {
    let view = tmp.join("view").into_os_string();
    let mut args: Vec<OsString> = vec!["run".into()];
    if dry {
        args.push("--dry-run".into());
    }
    args.extend([
        "--target".into(),
        view.clone(),
        lowers_arg(lowers),
        upper.as_os_str().to_owned(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        LOOK.into(),
        view,
    ]);
    let o = run_fimfs(&args, &tmp.join("logs"));
    assert!(o.success(), "fimfs run: {o}");
    o
}

/// The `fimfs:` lines of a run's stderr.
fn notes(o: &Outcome) -> Vec<&str> {
    o.stderr
        .lines()
        .filter(|l| l.starts_with("fimfs:"))
        .collect()
}

/// What the sandbox sees at the target: its listing (`ls -A`, recursive) and the
/// filesystem type serving it (`overlayfs` for the kernel overlay, `fuseblk` for
/// the daemon).
/// (`sh -c LOOK T`: `$0` is the target.)
const LOOK: &str = "cd \"$0\" && ls -AR . && stat -f -c 'fs=%T' .";

fn setup(tag: &str) -> (TempDir, PathBuf) {
    require_root_and_fuse();
    let tmp = TempDir::new(tag);
    tmp.mkdir("view");
    let base = tmp.mkdir("base");
    put(&base.join("keep"), "keep\n");
    put(&base.join("gone"), "gone\n");
    put(&base.join("d/x"), "x\n");
    (tmp, base)
}

/// `fimfs export UPPER OUT`.
fn export(tmp: &TempDir, upper: &Path, out: &Path) {
    let args: Vec<OsString> = vec![
        "export".into(),
        upper.as_os_str().to_owned(),
        out.as_os_str().to_owned(),
    ];
    let o = run_fimfs(&args, &tmp.join("logs"));
    assert!(o.success(), "fimfs export: {o}");
}

#[test]
fn exported_layer_with_a_deletion_runs_on_the_daemon() {
    let (tmp, base) = setup("dialect-export");
    let up1 = tmp.mkdir("up1");
    mkwhiteout(&up1.join("gone"));
    put(&up1.join("added"), "added\n");
    let layer = tmp.join("layer");
    export(&tmp, &up1, &layer);
    assert!(layer.join(".wh.gone").exists(), "export wrote the deletion");
    assert!(
        layer.join(".wh..wh.fimfs").exists(),
        "export marked the layer"
    );

    let lowers = vec![layer.clone(), base];
    let upper = tmp.join("upper");
    let o = run(&tmp, &lowers, &upper, false);
    assert!(
        !o.stdout.contains("gone"),
        "the deleted file came back: {o}"
    );
    assert!(!o.stdout.contains(".wh."), "a marker shows: {o}");
    assert!(
        o.stdout.contains("added") && o.stdout.contains("keep"),
        "{o}"
    );
    assert!(o.stdout.contains("fs=fuseblk"), "not on the daemon: {o}");
    let n = notes(&o);
    assert_eq!(n.len(), 1, "one fimfs: line, got {n:?}\n{o}");
    assert!(
        n[0].contains(&format!("lower 1 {}", layer.display())) && n[0].contains("daemon"),
        "the line names the layer and the daemon: {n:?}"
    );

    let dry = run(&tmp, &lowers, &upper, true);
    assert!(
        dry.stdout.contains("daemon: fimfs mount")
            && dry.stdout.contains(&format!("lower 1 {}", layer.display())),
        "--dry-run reports the daemon and why: {dry}"
    );
}

/// Its only deletion is an opaque directory: `d` made again in the upper.
#[test]
fn exported_layer_with_only_an_opaque_marker_runs_on_the_daemon() {
    let (tmp, base) = setup("dialect-opq");
    let up1 = tmp.mkdir("up1");
    put(&up1.join("d/new"), "new\n");
    let o = std::process::Command::new("setfattr")
        .args(["-n", "user.overlay.opaque", "-v", "y"])
        .arg(up1.join("d"))
        .status()
        .expect("run setfattr");
    assert!(o.success(), "setfattr");
    let layer = tmp.join("layer");
    export(&tmp, &up1, &layer);
    assert!(
        layer.join("d/.wh..wh..opq").exists(),
        "export wrote the opaque marker"
    );
    let lowers = vec![layer.clone(), base];
    let o = run(&tmp, &lowers, &tmp.join("upper"), false);
    assert!(o.stdout.contains("new"), "{o}");
    assert!(
        !o.stdout.contains("\nx\n") && !o.stdout.contains(".wh."),
        "d is not opaque: {o}"
    );
    assert!(o.stdout.contains("fs=fuseblk"), "not on the daemon: {o}");
    let n = notes(&o);
    assert_eq!(n.len(), 1, "one fimfs: line, got {n:?}\n{o}");
    assert!(
        n[0].contains(&format!("lower 1 {}", layer.display())),
        "{n:?}"
    );
}

/// A layer made by hand (no mark) with a `.wh.` file in its root: the bounded
/// check reads each layer's root directory.
#[test]
fn hand_made_layer_with_a_whiteout_in_its_root_runs_on_the_daemon() {
    let (tmp, base) = setup("dialect-hand");
    let layer = tmp.mkdir("hand");
    put(&layer.join(".wh.gone"), "");
    put(&layer.join("only"), "only\n");
    let lowers = vec![layer.clone(), base];
    let o = run(&tmp, &lowers, &tmp.join("upper"), false);
    assert!(
        o.stdout.contains("only") && o.stdout.contains("keep"),
        "{o}"
    );
    assert!(
        !o.stdout.contains("gone"),
        "the deleted file came back: {o}"
    );
    assert!(o.stdout.contains("fs=fuseblk"), "not on the daemon: {o}");
    let n = notes(&o);
    assert_eq!(n.len(), 1, "one fimfs: line, got {n:?}\n{o}");
    assert!(
        n[0].contains(&format!("lower 1 {}", layer.display())),
        "{n:?}"
    );
    assert!(n[0].contains(".wh.gone"), "{n:?}");
}

#[test]
fn layer_without_deletions_still_goes_to_bwrap() {
    let (tmp, base) = setup("dialect-clean");
    let up1 = tmp.mkdir("up1");
    put(&up1.join("added"), "added\n");
    let layer = tmp.join("layer");
    export(&tmp, &up1, &layer);
    let names: Vec<_> = fs::read_dir(&layer)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["added"], "no mark without deletions");
    let o = run(&tmp, &[layer, base], &tmp.join("upper"), false);
    assert!(
        o.stdout.contains("fs=overlayfs"),
        "not on the kernel overlay: {o}"
    );
    assert!(notes(&o).is_empty(), "{o}");
}

//! `fimfs diff`, `fimfs export` (directory and `--tar`) and `fimfs which`
//! through real mounts: the export round trip (changes made through a mount
//! over several lowers, exported, and mounted again as the new top lower
//! show the same view), every marker dialect of SPEC §2 read by diff and
//! written as `.wh.` files by export, the read-only `user.fimfs.layer`
//! xattr, and the errors (non-empty target, unreadable entries, an upper in
//! use) leaving nothing behind.

mod common;

use common::*;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const NOBODY: u32 = 65534;

fn fimfs(args: &[&dyn AsRef<std::ffi::OsStr>], logs: &Path) -> Outcome {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    run_fimfs(&args, logs)
}

fn ok(o: Outcome, what: &str) -> Outcome {
    assert!(o.success(), "{what}: {o}");
    o
}

/// `fimfs diff [--lowers …] UPPER`, stdout.
fn diff(s: &Stack, lowers: Option<&[PathBuf]>, json: bool) -> String {
    let mut args: Vec<OsString> = vec!["diff".into()];
    if let Some(l) = lowers {
        args.push("--lowers".into());
        args.push(lowers_arg(l));
    }
    if json {
        args.push("--json".into());
    }
    args.push(s.upper.clone().into());
    ok(run_fimfs(&args, &s.tmp.join("logs")), "fimfs diff").stdout
}

fn sh_in(dir: &Path, script: &str) {
    let (code, out) = run_as(0, 0, dir, &format!("set -e\n{script}"));
    assert_eq!(code, 0, "`{script}` in {}: {out}", dir.display());
}

/// Three lowers with entries to delete, a directory to recreate, files to
/// change and link.
fn round_trip_lowers(s: &Stack) {
    put(&s.l(3, "d/old3"), "3");
    put(&s.l(3, "d/sub/x"), "x");
    put(&s.l(3, "keep"), "from 3\n");
    put(&s.l(3, "gone-a"), "a");
    put(&s.l(3, "tree/t1"), "t1");
    put(&s.l(3, "tree/deep/t2"), "t2");
    put(&s.l(2, "d/old2"), "2");
    put(&s.l(2, "gone-b"), "b");
    put(&s.l(2, "shown"), "2");
    put(&s.l(1, "d/old1"), "1");
    put(&s.l(1, "gone-c"), "c");
    put(&s.l(1, "stays"), "stays");
    put(&s.l(1, "meta"), "meta");
    chmod(&s.l(1, "meta"), 0o644);
    symlink("shown", &s.l(1, "lsym"));
}

/// Deletes, recreates and changes through the mount.
fn round_trip_changes(mnt: &Path) {
    sh_in(
        mnt,
        "rm gone-a gone-b gone-c
         rm -rf d tree
         mkdir d
         echo new > d/new
         echo more >> keep
         chmod 600 meta
         ln stays hard
         ln -s keep newlink
         mkdir newdir
         echo f > newdir/f
         setfattr -n user.tag -v hello newdir/f
         mkfifo fifo",
    );
}

#[test]
fn export_round_trip_keeps_deletions_and_opaque_dirs() {
    let mut s = Stack::new("inspect-trip", 3);
    round_trip_lowers(&s);
    s.seal_lowers();
    let m = s.mount();
    round_trip_changes(m.path());
    assert_eq!(names(&m.join("d")), ["new"], "the recreated d is empty");
    let before = without_root(view(m.path(), true));
    unmount_clean(m);

    // What the upper changes, without and with the lowers. fimfs marks no
    // copy-up in the upper (the kernel overlay would list the mark), so only
    // the lowers tell a changed file from a new one.
    assert_eq!(
        diff(&s, None, false),
        "O d/\nA d/new\nA fifo\nD gone-a\nD gone-b\nD gone-c\nA hard\nA keep\nA meta\n\
         A newdir/f\nA newlink\nA stays\nD tree\n"
    );
    assert_eq!(
        diff(&s, Some(&s.lowers), false),
        "O d/\nA d/new\nA fifo\nD gone-a\nD gone-b\nD gone-c\nA hard\nM keep\nM meta\n\
         A newdir/\nA newdir/f\nA newlink\nM stays\nD tree/\n"
    );

    // Export: deletions as plain files.
    let logs = s.tmp.join("logs");
    let exp = s.tmp.join("export");
    ok(fimfs(&[&"export", &s.upper, &exp], &logs), "fimfs export");
    for wh in ["gone-a", "gone-b", "gone-c", "tree"] {
        let md = lstat(&exp.join(format!(".wh.{wh}")));
        assert!(md.is_file() && md.len() == 0, ".wh.{wh}: {md:?}");
        assert_eq!(lstat_errno(&exp.join(wh)), libc::ENOENT);
    }
    assert!(lstat(&exp.join("d/.wh..wh..opq")).is_file());
    assert_eq!(
        names(&exp.join("d")),
        [".wh..wh..opq", "new"],
        "the opaque directory holds only its marker and its new content"
    );
    assert_eq!(
        lstat(&exp.join("hard")).ino(),
        lstat(&exp.join("stays")).ino()
    );
    assert!(lstat(&exp.join("fifo")).file_type().is_fifo());
    assert_eq!(lstat(&exp.join("meta")).mode() & 0o7777, 0o600);
    assert_eq!(
        lstat(&exp.join("keep")).mtime(),
        lstat(&s.u("keep")).mtime(),
        "times kept"
    );
    let exported = walk(&exp);
    for (rel, e) in &exported.entries {
        let keys: Vec<&String> = e
            .xattrs
            .as_ref()
            .map(|x| x.keys().collect())
            .unwrap_or_default();
        assert!(
            keys.iter()
                .all(|k| !k.contains("overlay.") && !k.contains("fimfs.")),
            "{}: overlay-private xattrs exported: {keys:?}",
            show(rel)
        );
    }

    // The export as the new top lower, with an empty upper: the same view.
    let upper2 = s.tmp.mkdir("upper2");
    let mnt2 = s.tmp.mkdir("mnt2");
    let mut lowers2 = vec![exp.clone()];
    lowers2.extend(s.lowers.iter().cloned());
    let m2 = MountGuard::new(&lowers2, Some(&upper2), &mnt2, &[]);
    let after = without_root(view(m2.path(), true));
    assert_same_view("view before export", &before, "export as a lower", &after);
    let which = ok(
        fimfs(
            &[
                &"which",
                &m2.join("d/new"),
                &m2.join("shown"),
                &m2.join("d"),
            ],
            &logs,
        ),
        "fimfs which",
    );
    assert_eq!(
        which.stdout,
        format!(
            "{}: lower 1 {e}\n{}: lower 3 {}\n{}: lower 1 {e}\n",
            m2.join("d/new").display(),
            m2.join("shown").display(),
            s.lowers[1].display(),
            m2.join("d").display(),
            e = exp.display()
        )
    );
    unmount_clean(m2);

    // The same layer as a tar: extracted by GNU tar, it is the export.
    let tarball = s.tmp.join("layer.tar");
    ok(
        fimfs(&[&"export", &"--tar", &tarball, &s.upper], &logs),
        "fimfs export --tar",
    );
    let x = s.tmp.mkdir("extracted");
    let out = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&x)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar -x: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(
        "export",
        &without_root(walk(&exp)),
        "tar",
        &without_root(walk(&x)),
    );
    assert_eq!(
        lstat(&x.join("keep")).mtime(),
        lstat(&exp.join("keep")).mtime()
    );
    s.assert_lowers_untouched();
}

#[test]
fn diff_and_export_read_every_marker_dialect() {
    let s = Stack::new("inspect-dialects", 1);
    for name in ["wchr", "wfile", "wux", "wtx", "both", "empty", "copied"] {
        put(&s.l(1, name), "below");
    }
    for d in ["o1", "o2", "o3", "o4", "o5"] {
        put(&s.l(1, &format!("{d}/below")), "below");
    }
    let u = |rel: &str| s.u(rel);
    mkwhiteout(&u("wchr"));
    put(&u(".wh.wfile"), "");
    put(&u("wux"), "");
    set_xattr(&u("wux"), "user.overlay.whiteout", b"").unwrap();
    put(&u("wtx"), "");
    set_xattr(&u("wtx"), "trusted.overlay.whiteout", b"").unwrap();
    put(&u("both"), "real");
    put(&u(".wh.both"), "");
    put(&u("empty"), "");
    put(&u("copied"), "changed");
    set_xattr(&u("copied"), "user.fimfs.origin", b"").unwrap();
    put(&u(".wh.nothing-below"), "");
    put(&u(".wh..wh.plnk"), "");
    for (d, x, v) in [
        ("o1", "trusted.overlay.opaque", "y"),
        ("o2", "user.overlay.opaque", "y"),
        ("o3", "user.fuseoverlayfs.opaque", "y"),
        ("o5", "user.overlay.opaque", "x"),
    ] {
        mkdirs(&u(d));
        set_xattr(&u(d), x, v.as_bytes()).unwrap();
    }
    put(&u("o4/.wh..wh..opq"), "");
    put(&u("o1/.wh.ignored"), "");
    put(&u("o2/f"), "f");

    assert_eq!(
        diff(&s, None, false),
        "A both\nM copied\nA empty\nD nothing-below\nO o1/\nO o2/\nA o2/f\nO o3/\nO o4/\n\
         D wchr\nD wfile\nD wtx\nD wux\n"
    );
    assert_eq!(
        diff(&s, Some(&s.lowers), false),
        "M both\nM copied\nM empty\nO o1/\nO o2/\nA o2/f\nO o3/\nO o4/\n\
         D wchr\nD wfile\nD wtx\nD wux\n"
    );
    let json = diff(&s, Some(&s.lowers), true);
    assert!(
        json.starts_with("[\n  {\"status\":\"M\",\"path\":\"both\",\"type\":\"file\"},"),
        "{json}"
    );
    assert!(
        json.contains("{\"status\":\"O\",\"path\":\"o1\",\"type\":\"dir\"}"),
        "{json}"
    );
    assert!(
        json.ends_with("{\"status\":\"D\",\"path\":\"wux\",\"type\":\"file\"}\n]\n"),
        "{json}"
    );

    let exp = s.tmp.join("export");
    ok(
        fimfs(&[&"export", &s.upper, &exp], &s.tmp.join("logs")),
        "fimfs export",
    );
    let mut want: Vec<String> = [
        "both",
        "copied",
        "empty",
        "o1",
        "o2",
        "o3",
        "o4",
        "o5",
        ".wh.nothing-below",
        ".wh.wchr",
        ".wh.wfile",
        ".wh.wtx",
        ".wh.wux",
        // The launcher's mark: this layer's deletions are `.wh.` files.
        ".wh..wh.fimfs",
    ]
    .iter()
    .map(|n| n.to_string())
    .collect();
    want.sort();
    assert_eq!(names(&exp), want);
    for d in ["o1", "o2", "o3", "o4"] {
        assert!(
            lstat(&exp.join(d).join(".wh..wh..opq")).is_file(),
            "{d} marked opaque"
        );
    }
    assert_eq!(
        names(&exp.join("o1")),
        [".wh..wh..opq"],
        "a whiteout in an opaque dir hides nothing"
    );
    assert_eq!(
        names(&exp.join("o5")),
        Vec::<String>::new(),
        "opaque=x is not opaque"
    );
    assert_eq!(read_str(&exp.join("both")), "real");
    assert_eq!(
        list_xattrs(&exp.join("copied")).unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(list_xattrs(&exp.join("o2")).unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn which_names_the_layer_and_the_xattr_is_read_only() {
    let s = Stack::new("inspect-which", 3);
    put(&s.l(3, "dir/c"), "c");
    put(&s.l(2, "dir/b"), "b");
    put(&s.l(1, "dir/a"), "a");
    put(&s.l(3, "low"), "low");
    symlink("low", &s.l(2, "sym"));
    let m = s.mount();
    put(&m.join("dir/new"), "new");
    let lines: Vec<(PathBuf, String)> = vec![
        (
            m.join("dir/a"),
            format!("lower 1 {}", s.lowers[0].display()),
        ),
        (
            m.join("dir/b"),
            format!("lower 2 {}", s.lowers[1].display()),
        ),
        (
            m.join("dir/c"),
            format!("lower 3 {}", s.lowers[2].display()),
        ),
        (m.join("dir/new"), "upper".into()),
        (m.join("dir"), "upper".into()),
        (m.join("low"), format!("lower 3 {}", s.lowers[2].display())),
        (m.join("sym"), format!("lower 2 {}", s.lowers[1].display())),
        (m.path().to_path_buf(), "upper".into()),
    ];
    let mut args: Vec<OsString> = vec!["which".into()];
    args.extend(lines.iter().map(|(p, _)| p.clone().into()));
    let o = ok(run_fimfs(&args, &s.tmp.join("logs")), "fimfs which");
    let want: String = lines
        .iter()
        .map(|(p, l)| format!("{}: {l}\n", p.display()))
        .collect();
    assert_eq!(o.stdout, want);

    // The xattr itself: answered, never listed, never changed.
    let f = m.join("low");
    assert_eq!(
        get_xattr(&f, "user.fimfs.layer").unwrap(),
        format!("lower 3 {}", s.lowers[2].display()).into_bytes()
    );
    assert!(
        !list_xattrs(&f)
            .unwrap()
            .iter()
            .any(|n| n.starts_with(b"user.fimfs"))
    );
    assert_eq!(
        set_xattr(&f, "user.fimfs.layer", b"upper"),
        Err(libc::EPERM)
    );
    assert_eq!(remove_xattr(&f, "user.fimfs.layer"), Err(libc::EPERM));
    assert_eq!(
        lstat_errno(&s.u("low")),
        libc::ENOENT,
        "no copy-up for a refused change"
    );
    // A copy-up moves the file to the upper.
    sh_in(m.path(), "echo more >> low");
    assert_eq!(get_xattr(&f, "user.fimfs.layer").unwrap(), b"upper");

    // Not on a fimfs mount.
    let o = run_fimfs(
        &["which".into(), s.l(1, "dir/a").into()],
        &s.tmp.join("logs"),
    );
    assert_eq!(o.status.and_then(|st| st.code()), Some(1), "{o}");
    assert!(o.stderr.contains("not on a fimfs mount"), "{o}");
    unmount_clean(m);
}

#[test]
fn export_refuses_a_non_empty_target_and_warns_about_an_upper_in_use() {
    let s = Stack::new("inspect-errors", 1);
    put(&s.l(1, "f"), "f");
    put(&s.u("new"), "new");
    let logs = s.tmp.join("logs");
    let out = s.tmp.mkdir("out");
    put(&out.join("precious"), "keep me");
    for args in [
        vec![
            "export".into(),
            s.upper.clone().into_os_string(),
            out.clone().into(),
        ],
        vec![
            "export".into(),
            "--tar".into(),
            out.join("precious").into(),
            s.upper.clone().into(),
        ],
    ] {
        let o = run_fimfs(&args, &logs);
        assert_eq!(o.status.and_then(|st| st.code()), Some(1), "{o}");
        assert!(o.stderr.contains("exists and is not empty"), "{o}");
    }
    assert_eq!(names(&out), ["precious"]);
    assert_eq!(read_str(&out.join("precious")), "keep me");

    let o = run_fimfs(
        &[
            "export".into(),
            s.upper.clone().into(),
            s.u("inside").into(),
        ],
        &logs,
    );
    assert!(!o.success() && o.stderr.contains("inside the upper"), "{o}");
    let o = run_fimfs(
        &[
            "export".into(),
            s.tmp.join("nope").into(),
            s.tmp.join("x").into(),
        ],
        &logs,
    );
    assert!(!o.success() && o.stderr.contains("does not exist"), "{o}");

    // An existing empty directory is filled; an upper in use is exported
    // with a warning.
    let empty = s.tmp.mkdir("empty");
    let m = s.mount();
    put(&m.join("during"), "x");
    let o = ok(
        fimfs(&[&"export", &s.upper, &empty], &logs),
        "export of an upper in use",
    );
    assert!(
        o.stderr.contains("is in use") && o.stderr.contains(&m.path().display().to_string()),
        "{o}"
    );
    assert_eq!(names(&empty), ["during", "new"]);
    unmount_clean(m);
}

#[test]
fn export_of_an_unreadable_entry_fails_and_leaves_nothing() {
    let s = Stack::new("inspect-unreadable", 1);
    put(&s.u("a/readable"), "r");
    put(&s.u("a/secret"), "s");
    put(&s.u("z"), "z");
    let parent = s.tmp.mkdir("outparent");
    for p in [
        s.upper.clone(),
        s.u("a"),
        s.u("a/readable"),
        s.u("a/secret"),
        s.u("z"),
        parent.clone(),
    ] {
        chown(&p, NOBODY, NOBODY);
    }
    chmod(&s.u("a/secret"), 0o000);
    chmod(s.tmp.path(), 0o755);
    let bin = FIMFS;
    for target in ["--tar out.tar", "out"] {
        let script = match target {
            "out" => format!("{bin} export {} out", s.upper.display()),
            t => format!("{bin} export {t} {}", s.upper.display()),
        };
        let (code, msg) = run_as(NOBODY, NOBODY, &parent, &script);
        assert_eq!(code, 1, "{script}: {msg}");
        assert!(
            msg.contains(&format!(
                "{}: cannot read: Permission denied",
                s.u("a/secret").display()
            )),
            "{script}: {msg}"
        );
        assert_eq!(
            names(&parent),
            Vec::<String>::new(),
            "{script} left something behind"
        );
    }
}

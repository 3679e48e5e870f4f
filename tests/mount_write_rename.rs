//! Renames through a real fimfs mount: upper, lower and merged directories,
//! entries renamed twice while the kernel holds their old names, and renames
//! over existing names, `RENAME_NOREPLACE` and `RENAME_EXCHANGE` compared with a
//! plain filesystem.
//!
//! Every test also checks that nothing was written to the lowers, and most of them
//! remount to check that what the upper holds means the same thing to a fresh daemon.

mod common;
use common::*;
use std::fs::{self};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[test]
fn directory_rename_of_upper_lower_and_merged_dirs() {
    let mut s = Stack::new("mw-dirrename", 2);
    put(&s.l(2, "m/a"), "m/a from l2\n");
    put(&s.l(2, "m/sub/s2"), "s2\n");
    put(&s.l(2, "m/gone"), "deleted later\n");
    put(&s.l(2, "m/sub/deep/d2"), "d2\n");
    put(&s.l(1, "m/b"), "m/b from l1\n");
    put(&s.l(1, "m/sub/s1"), "s1\n");
    put(&s.l(1, "m/a"), "m/a from l1 (shadows l2)\n");
    put(&s.l(1, "lo/f"), "lo/f\n");
    put(&s.l(1, "lo/x/y/z"), "lo/x/y/z\n");
    put(&s.l(2, "w/old"), "w/old: must never show again\n");
    put(&s.l(2, "target/inside"), "t\n");
    put(&s.l(2, "k"), "lower k\n");
    chmod(&s.l(1, "lo/x"), 0o700);
    s.seal_lowers();
    let m = s.mount();

    // Upper state: a file in the merged dir, a whiteout in it, an upper-only dir.
    put(&m.join("m/c"), "m/c upper\n");
    fs::remove_file(m.join("m/gone")).unwrap();
    put(&m.join("up/f"), "up/f\n");
    // Upper-only directory.
    fs::rename(m.join("up"), m.join("up2")).expect("rename an upper dir");
    // Lower-only directory.
    fs::rename(m.join("lo"), m.join("lo2")).expect("rename a lower-only dir");
    // Merged directory (two lowers + upper).
    fs::rename(m.join("m"), m.join("m2")).expect("rename a merged dir");
    // A merged subdirectory into a renamed lower-only directory.
    fs::rename(m.join("m2/sub"), m.join("lo2/x/sub")).expect("rename a merged subdir");
    // A dir onto the name of a deleted lower dir: it must not merge with it.
    fs::remove_dir_all(m.join("w")).unwrap();
    fs::rename(m.join("up2"), m.join("w")).expect("rename onto a whited-out dir name");
    // A file onto a whited-out name.
    fs::remove_file(m.join("k")).unwrap();
    fs::rename(m.join("w/f"), m.join("k")).expect("rename a file onto a whited-out name");

    let expect = |m: &Path, when: &str| {
        let want: &[(&str, &str)] = &[
            ("m2/a", "m/a from l1 (shadows l2)\n"),
            ("m2/b", "m/b from l1\n"),
            ("m2/c", "m/c upper\n"),
            ("lo2/f", "lo/f\n"),
            ("lo2/x/y/z", "lo/x/y/z\n"),
            ("lo2/x/sub/s1", "s1\n"),
            ("lo2/x/sub/s2", "s2\n"),
            ("lo2/x/sub/deep/d2", "d2\n"),
            ("k", "up/f\n"),
            ("target/inside", "t\n"),
        ];
        for (p, c) in want {
            assert_eq!(read_str(&m.join(p)), *c, "{p} {when}");
        }
        for gone in ["m", "lo", "up", "up2", "m2/gone", "m2/sub", "w/old", "w/f"] {
            assert_eq!(lstat_errno(&m.join(gone)), libc::ENOENT, "{gone} {when}");
        }
        assert_eq!(names(m), ["k", "lo2", "m2", "target", "w"], "root {when}");
        assert_eq!(names(&m.join("m2")), ["a", "b", "c"], "m2 {when}");
        assert_eq!(names(&m.join("lo2/x")), ["sub", "y"], "lo2/x {when}");
        assert_eq!(names(&m.join("lo2/x/sub")), ["deep", "s1", "s2"], "{when}");
        assert_eq!(names(&m.join("w")), Vec::<String>::new(), "w {when}");
        assert_eq!(
            lstat(&m.join("lo2/x")).mode() & 0o7777,
            0o700,
            "mode kept {when}"
        );
    };
    expect(m.path(), "after the renames");
    // The old names are free, and never show lower entries again.
    fs::create_dir(m.join("m")).unwrap();
    fs::create_dir(m.join("lo")).unwrap();
    assert_eq!(
        names(&m.join("m")),
        Vec::<String>::new(),
        "mkdir m after renaming m away"
    );
    assert_eq!(
        names(&m.join("lo")),
        Vec::<String>::new(),
        "mkdir lo after renaming lo away"
    );
    fs::remove_dir(m.join("m")).unwrap();
    fs::remove_dir(m.join("lo")).unwrap();
    unmount_clean(m);
    let m = s.mount();
    expect(m.path(), "after remount");
    drop(m);
    s.assert_lowers_untouched();
}

/// A directory renamed again after a first rename, or whose parent was renamed, or
/// that was exchanged, still shows every file it holds (the upper holds them; the
/// daemon must not keep looking under an old name); and so does a file renamed twice.
#[test]
fn entries_renamed_twice_keep_working() {
    let mut s = Stack::new("mw-rename-twice", 1);
    for case in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        put(&s.l(1, &format!("{case}/a/d/f9")), "f9\n");
        put(&s.l(1, &format!("{case}/a/d/f8")), "f8\n");
        mkdirs(&s.l(1, &format!("{case}/p")));
    }
    put(&s.l(1, "c7/file"), "file\n");
    s.seal_lowers();
    let m = s.mount();
    let r = |rel: &str| m.join(rel);
    // (case, what was done, directory that must list f8 and f9)
    let mut checks: Vec<(&str, &str)> = Vec::new();
    fs::rename(r("c1/a"), r("c1/x")).unwrap();
    fs::rename(r("c1/x"), r("c1/y")).unwrap();
    checks.push(("mv a x; mv x y", "c1/y/d"));
    fs::rename(r("c2/a/d"), r("c2/x")).unwrap();
    fs::rename(r("c2/x"), r("c2/y")).unwrap();
    checks.push(("mv a/d x; mv x y", "c2/y"));
    fs::rename(r("c3/a/d"), r("c3/a/x")).unwrap();
    fs::rename(r("c3/a/x"), r("c3/a/y")).unwrap();
    checks.push(("mv a/d a/x; mv a/x a/y", "c3/a/y"));
    append(&r("c4/a/d/f8"), b"+");
    fs::rename(r("c4/a"), r("c4/n")).unwrap();
    fs::rename(r("c4/n/d"), r("c4/n/e")).unwrap();
    checks.push(("echo >> a/d/f8; mv a n; mv n/d n/e", "c4/n/e"));
    append(&r("c5/a/d/f8"), b"+");
    rename2(&r("c5/a"), &r("c5/p"), libc::RENAME_EXCHANGE).unwrap();
    fs::rename(r("c5/p/d"), r("c5/x")).unwrap();
    checks.push(("echo >> a/d/f8; exchange a p; mv p/d x", "c5/x"));
    fs::rename(r("c6/a"), r("c6/p/a")).unwrap();
    fs::rename(r("c6/p"), r("c6/q")).unwrap();
    checks.push(("mv a p/a; mv p q", "c6/q/a/d"));
    // A lower file renamed twice, then used by name (no readdir in between).
    fs::rename(r("c7/file"), r("c7/g")).unwrap();
    fs::rename(r("c7/g"), r("c7/h")).unwrap();
    let chmod_h = fs::set_permissions(
        r("c7/h"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    let read_h = fs::read_to_string(r("c7/h"));

    let verify = |m: &Path, when: &str, mut bad: Vec<String>| {
        for (what, dir) in &checks {
            let listed = fs::read_dir(m.join(dir)).map(|rd| {
                let mut v: Vec<String> = rd
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            });
            let f9 = fs::read_to_string(m.join(dir).join("f9"));
            if listed.as_ref().ok().map(|v| v.as_slice())
                != Some(&["f8".to_string(), "f9".to_string()][..])
                || f9.as_deref().ok() != Some("f9\n")
            {
                bad.push(format!(
                    "`{what}`: readdir {dir} = {listed:?}, read {dir}/f9 = {f9:?}"
                ));
            }
        }
        assert!(bad.is_empty(), "{when}:\n{}", bad.join("\n"));
    };
    let mut file_case = Vec::new();
    if chmod_h.is_err() || read_h.as_deref().ok() != Some("file\n") {
        file_case.push(format!(
            "`mv file g; mv g h` (a lower file): chmod h = {chmod_h:?}, read h = {read_h:?}"
        ));
    }
    verify(
        m.path(),
        "through the mount that did the renames",
        file_case,
    );
    unmount_clean(m);
    let m = s.mount();
    assert_eq!(read_str(&m.join("c7/h")), "file\n");
    verify(m.path(), "after remount", Vec::new());
    drop(m);
    s.assert_lowers_untouched();
}

/// Renames over existing names, NOREPLACE and EXCHANGE, checked against the same
/// sequence on a plain directory holding the same merged tree.
#[test]
fn rename_over_existing_names_as_on_a_plain_filesystem() {
    let mut s = Stack::new("mw-rename", 2);
    put(&s.l(2, "f1"), "f1\n");
    put(&s.l(1, "f2"), "f2\n");
    put(&s.l(2, "f3"), "f3\n");
    put(&s.l(2, "src/a"), "src/a\n");
    put(&s.l(1, "src/b"), "src/b\n");
    mkdirs(&s.l(2, "empty-lower"));
    put(&s.l(2, "looks-empty/x"), "x\n");
    put(&s.l(1, "looks-empty/y"), "y\n");
    put(&s.l(2, "full/z"), "z\n");
    put(&s.l(2, "dead"), "dead\n");
    put(&s.l(1, "dx/one"), "dx one\n");
    put(&s.l(2, "dy/two"), "dy two\n");
    put(&s.l(1, "dy/three"), "dy three\n");
    put(&s.l(2, "src2/q"), "q\n");
    put(&s.l(2, "src3/r"), "r\n");
    s.seal_lowers();
    let plain = s.tmp.join("plain");
    plain_copy_of_lowers(&s.lowers, &s.tmp.join("kro"), &plain);
    let m = s.mount();
    let roots = [m.path().to_path_buf(), plain.clone()];

    let both = |what: &str, op: &dyn Fn(&Path) -> std::io::Result<()>| -> Result<(), i32> {
        let r: Vec<Result<(), i32>> = roots.iter().map(|r| outcome(op(r))).collect();
        assert_eq!(
            r[0], r[1],
            "{what}: fimfs (left) and a plain directory (right) differ"
        );
        r[0]
    };
    // Set up: empty an upper dir and a merged dir; whiteout a file.
    both("mkdir empty-upper", &|r| {
        fs::create_dir(r.join("empty-upper"))
    })
    .unwrap();
    both("rm looks-empty/x", &|r| {
        fs::remove_file(r.join("looks-empty/x"))
    })
    .unwrap();
    both("rm looks-empty/y", &|r| {
        fs::remove_file(r.join("looks-empty/y"))
    })
    .unwrap();
    both("rm dead", &|r| fs::remove_file(r.join("dead"))).unwrap();

    let rn = |a: &'static str, b: &'static str, flags: u32| {
        move |r: &Path| rename2(&r.join(a), &r.join(b), flags)
    };
    let (noreplace, exchange) = (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE);
    let cases: &[(&str, &str, u32, Result<(), i32>)] = &[
        ("f1", "empty-upper", 0, Err(libc::EISDIR)),
        ("src", "f1", 0, Err(libc::ENOTDIR)),
        ("src", "full", 0, Err(libc::ENOTEMPTY)),
        ("src", "empty-upper", 0, Ok(())),
        ("empty-upper", "empty-lower", 0, Ok(())),
        ("empty-lower", "looks-empty", 0, Ok(())),
        ("f1", "dead", 0, Ok(())),
        ("f2", "f3", noreplace, Err(libc::EEXIST)),
        ("f2", "new-name", noreplace, Ok(())),
        ("f3", "f1", noreplace, Ok(())),
        ("new-name", "dead", exchange, Ok(())),
        ("f1", "missing", exchange, Err(libc::ENOENT)),
        ("f1", "dx", exchange, Ok(())),
        ("dx", "dy", exchange, Ok(())),
        ("src2", "src3", exchange, Ok(())),
        ("src2", "src2/r", 0, Err(libc::EINVAL)),
        ("f1", "f1", 0, Ok(())),
    ];
    for (a, b, flags, want) in cases {
        let what = format!("renameat2({a}, {b}, {flags:#x})");
        let got = both(&what, &rn(a, b, *flags));
        assert_eq!(got, *want, "{what}");
    }
    let reference = without_root(view(&plain, true));
    assert_same_view(
        "plain",
        &reference,
        "fimfs",
        &without_root(view(m.path(), true)),
    );
    // A few facts spelled out.
    assert_eq!(read_str(&m.join("looks-empty/a")), "src/a\n");
    assert_eq!(read_str(&m.join("dead")), "f2\n");
    assert_eq!(read_str(&m.join("new-name")), "f1\n");
    assert_eq!(read_str(&m.join("dy")), "f3\n");
    assert_eq!(names(&m.join("f1")), ["one"]);
    assert_eq!(names(&m.join("dx")), ["three", "two"]);
    unmount_clean(m);
    let m = s.mount();
    assert_same_view(
        "plain",
        &reference,
        "fimfs after remount",
        &without_root(view(m.path(), true)),
    );
    drop(m);
    s.assert_lowers_untouched();
}

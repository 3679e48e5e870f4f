//! What the kernel overlay shows of an upper written by fimfs: the same xattrs as
//! fimfs shows, on every entry, whether it is mounted with `userxattr` (bwrap's
//! dialect) or without. fimfs writes nothing of its own into the upper (no
//! `user.fimfs.*`, no `trusted.fimfs.*`): the kernel hides no name that fimfs could
//! use in both modes (without `userxattr` it hides `trusted.overlay.*` and lists
//! `user.overlay.*`; with it, the other way round, `trusted.*` listed to root).
//!
//! The workload runs through a fimfs mount: copy-ups (write, chmod, setxattr,
//! utimes of a symlink), renames of files and of lower-only and merged directories,
//! a rename over a lower file, hard links of lower, copied-up and new files,
//! deletions and `rm -rf` + `mkdir`, and user xattrs set by the user. Then the
//! upper is mounted again by fimfs and by the kernel overlay (both modes), and
//! `listxattr`/`getxattr` of every entry are compared.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

type Xattrs = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

fn lowers(s: &Stack) {
    put(&s.l(2, "etc/conf"), "conf\n");
    put(&s.l(2, "etc/old"), "old\n");
    put(&s.l(2, "lib/a.so"), "a\n");
    set_xattr(&s.l(2, "lib/a.so"), "user.mime", b"application/x-sharedlib").unwrap();
    put(&s.l(2, "lib/b.so"), "b\n");
    put(&s.l(2, "tree/t1"), "t1\n");
    put(&s.l(2, "tree/deep/t2"), "t2\n");
    put(&s.l(2, "only-low/x"), "x\n");
    set_xattr(&s.l(2, "only-low"), "user.dir", b"low").unwrap();
    put(&s.l(2, "keep"), "keep\n");
    symlink("keep", &s.l(2, "link"));
    put(&s.l(2, "hard1"), "hard\n");
    fs::hard_link(s.l(2, "hard1"), s.l(2, "hard2")).unwrap();
    put(&s.l(2, "gone"), "gone\n");
    put(&s.l(1, "tree/t3"), "t3\n");
    put(&s.l(1, "top-file"), "top\n");
    put(&s.l(1, "lib/c.so"), "c\n");
}

/// The session, through fimfs.
fn workload(mnt: &Path) {
    let out = std::process::Command::new("sh")
        .arg("-ec")
        .arg(
            "echo more >> keep
             chmod 600 etc/conf
             setfattr -n user.tag -v v1 lib/a.so
             touch -h -d @1000000 link
             mv etc/old etc/renamed
             echo x >> top-file
             mv top-file moved-top
             mv tree tree2
             mv only-low only-low2
             ln keep keep-link
             ln hard1 hard3
             echo new > newf
             setfattr -n user.color -v blue newf
             ln newf newf-link
             mkdir newd
             setfattr -n user.d -v 1 newd
             mv newf-link lib/b.so
             rm gone
             rm -rf etc
             mkdir etc
             echo e > etc/fresh
             setfattr -n user.fresh -v yes etc/fresh
             ln -s keep sym2",
        )
        .current_dir(mnt)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "workload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `listxattr` and `getxattr` of every entry below `root` (the root included).
fn xattrs(root: &Path) -> Xattrs {
    let mut out = Xattrs::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) {
                todo.push(e.unwrap().path());
            }
        }
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let names = list_xattrs(&p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
        let mut m = BTreeMap::new();
        for n in names {
            let n = String::from_utf8_lossy(&n).into_owned();
            let v = get_xattr(&p, &n)
                .unwrap_or_else(|e| panic!("getxattr {} {n}: errno {e}", p.display()));
            m.insert(n, v);
        }
        out.insert(rel, m);
    }
    out
}

/// SPEC §2 has fimfs write the overlay format's own opaque mark in both namespaces
/// when privileged (`user.overlay.opaque` for bwrap's `userxattr` mounts,
/// `trusted.overlay.opaque` for the others), and each kernel mode lists the other
/// namespace's copy. Those names, and the format's whiteout mark, are the only
/// difference allowed.
fn without_format_marks(mut x: Xattrs) -> Xattrs {
    for m in x.values_mut() {
        m.retain(|k, _| {
            let format = ["user.overlay.", "trusted.overlay."].iter().any(|p| {
                k.strip_prefix(p)
                    .is_some_and(|r| r == "opaque" || r == "whiteout")
            });
            !format
        });
    }
    x
}

fn assert_same(what: &str, fimfs: &Xattrs, kernel: &Xattrs) {
    let kernel = without_format_marks(kernel.clone());
    let paths: std::collections::BTreeSet<_> = fimfs.keys().chain(kernel.keys()).collect();
    let mut diffs = Vec::new();
    for p in paths {
        let (a, b) = (fimfs.get(p), kernel.get(p));
        if a != b {
            diffs.push(format!("{p:?}: fimfs {a:?}\n    {what} {b:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "xattrs differ, fimfs vs {what}:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn kernel_overlay_shows_the_xattrs_fimfs_shows() {
    let mut s = Stack::new("kernel-reads-upper", 2);
    lowers(&s);
    s.seal_lowers();
    let m = s.mount();
    workload(m.path());
    unmount_clean(m);

    let m = s.mount();
    let through_fimfs = xattrs(m.path());
    unmount_clean(m);
    // What the user set went through, identically.
    let want: &[(&str, &str, &[u8])] = &[
        ("lib/a.so", "user.tag", b"v1"),
        ("lib/a.so", "user.mime", b"application/x-sharedlib"),
        ("lib/b.so", "user.color", b"blue"),
        ("newf", "user.color", b"blue"),
        ("newd", "user.d", b"1"),
        ("only-low2", "user.dir", b"low"),
        ("etc/fresh", "user.fresh", b"yes"),
    ];
    for (p, n, v) in want {
        let got = through_fimfs.get(*p).and_then(|m| m.get(*n));
        assert_eq!(got.map(Vec::as_slice), Some(*v), "{p} {n} through fimfs");
    }

    // Each kernel mount gets its own copy of the upper (`cp -a` keeps xattrs, links
    // and whiteouts): the kernel stores marks of its own on lookup (`impure`,
    // `origin`, `uuid`), which the other mode would then list.
    let copy = |name: &str| {
        let dst = s.tmp.join(name);
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&s.upper)
            .arg(&dst)
            .status()
            .expect("run cp");
        assert!(st.success(), "cp -a upper {name}");
        dst
    };
    let (upper_t, upper_u) = (copy("upper-trusted"), copy("upper-user"));
    let kwork = s.tmp.mkdir("kwork-trusted");
    let k = KernelOverlayGuard::with_upper(&s.lowers, &upper_t, &kwork, &s.mnt);
    let trusted = xattrs(k.path());
    k.unmount();
    let k = KernelOverlayGuard::userxattr(&s.lowers, Some((&upper_u, &s.kwork)), &s.mnt);
    let user = xattrs(k.path());
    k.unmount();
    assert_same("kernel overlay without userxattr", &through_fimfs, &trusted);
    assert_same("kernel overlay with userxattr", &through_fimfs, &user);

    // Nothing of fimfs is stored anywhere in the upper.
    let on_disk = xattrs(&s.upper);
    for (p, m) in &on_disk {
        for n in m.keys() {
            assert!(!n.contains(".fimfs."), "upper {p:?} carries {n}");
        }
    }
    s.assert_lowers_untouched();
}

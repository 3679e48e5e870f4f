//! The upper means the same to fimfs and to the kernel overlay (`mount -t overlay -o
//! userxattr`, as bwrap mounts it for FlatImage), in both directions:
//!
//! - an upper written through fimfs (deletes, `rm -rf` + `mkdir`, renames of files and
//!   of merged and lower directories, copy-ups, chmod, chown, truncate, links,
//!   xattrs) and then mounted by the kernel over the same lowers shows exactly what
//!   fimfs showed;
//! - an upper written through the kernel overlay with the same workload (its `mv`
//!   falls back to copy + delete where the kernel says EXDEV) and then mounted by
//!   fimfs shows exactly what the kernel showed.
//!
//! Views are full snapshots: names, types, modes, owners, sizes, link counts,
//! contents, symlink targets, readdir lists with d_type, and user xattrs (the
//! implementations' own markers aside, see `common::tree::view`). Two layer sets: a
//! hand-made one that hits each case on purpose, and a generated one (three lowers,
//! opaque directories, whiteouts, odd names) with a deterministic workload.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

// ---------------------------------------------------------------------------------
// Hand-made layers and workload

fn build_handmade(s: &Stack) {
    let (l1, l2, l3) = (1, 2, 3);
    put(&s.l(l3, "etc/conf"), "bottom conf\n");
    put(&s.l(l3, "etc/old"), "old\n");
    put(&s.l(l3, "app/lib/a.so"), fill(1, 5000));
    put(&s.l(l3, "app/lib/b.so"), fill(2, 3000));
    put(&s.l(l3, "app/share/doc/readme"), "readme\n");
    put(&s.l(l3, "data/db.sqlite"), fill(3, 64 * 1024));
    put(&s.l(l3, "gone/x"), "x\n");
    put(&s.l(l3, "gone/sub/y"), "y\n");
    put(&s.l(l3, "deep/a/b/c/file"), "deep\n");
    put(&s.l(l3, "merged/from3"), "3\n");
    put(&s.l(l3, "merged/sub/s3"), "s3\n");
    put(&s.l(l3, "both/x3"), "x3\n");
    put(&s.l(l3, "ro/file"), "read-only\n");
    chmod(&s.l(l3, "ro/file"), 0o444);
    put(&s.l(l3, "rodir/inside"), "inside\n");
    chmod(&s.l(l3, "rodir"), 0o555);
    put(&s.l(l3, "owned/f"), "owned\n");
    chown(&s.l(l3, "owned/f"), 1234, 1234);
    chown(&s.l(l3, "owned"), 1234, 1234);
    put(&s.l(l3, "opq/hidden"), "hidden below an opaque dir\n");
    put(&s.l(l3, "wh-gone"), "whited out by lower2\n");
    symlink("etc/conf", &s.l(l3, "link"));
    nix::unistd::mkfifo(
        &s.l(l3, "fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    put(&s.l(l2, "etc/conf"), "middle conf (shadows bottom)\n");
    put(&s.l(l2, "merged/from2"), "2\n");
    put(&s.l(l2, "merged/sub/s2"), "s2\n");
    put(&s.l(l2, "app/lib/c.so"), fill(4, 2000));
    put(&s.l(l2, "opq/visible"), "visible\n");
    set_xattr(&s.l(l2, "opq"), "user.overlay.opaque", b"y").unwrap();
    mkwhiteout(&s.l(l2, "wh-gone"));

    put(&s.l(l1, "merged/from1"), "1\n");
    put(&s.l(l1, "merged/sub/s1"), "s1\n");
    put(&s.l(l1, "etc/new"), "new\n");
    put(&s.l(l1, "app/bin/tool"), "#!/bin/sh\necho tool\n");
    chmod(&s.l(l1, "app/bin/tool"), 0o755);
    set_xattr(&s.l(l1, "app/bin/tool"), "user.note", b"a note").unwrap();
    put(&s.l(l1, "both/x1"), "x1\n");
}

/// The same user-level operations on any mount; renames go through `mv`, which falls
/// back to copy + delete where the kernel overlay answers EXDEV.
fn workload_handmade(r: &Path) {
    let p = |rel: &str| r.join(rel);
    let rm = |rel: &str| fs::remove_file(p(rel)).unwrap_or_else(|e| panic!("rm {rel}: {e}"));
    let rm_rf =
        |rel: &str| fs::remove_dir_all(p(rel)).unwrap_or_else(|e| panic!("rm -rf {rel}: {e}"));
    let append = |rel: &str, data: &[u8]| {
        OpenOptions::new()
            .append(true)
            .open(p(rel))
            .and_then(|mut f| std::io::Write::write_all(&mut f, data))
            .unwrap_or_else(|e| panic!("append {rel}: {e}"))
    };
    // Deletes: lower files, a file shadowed in two lowers, a whole lower tree.
    rm("etc/old");
    rm("merged/from2");
    rm_rf("gone");
    rm("link");
    // rm -rf + mkdir: opaque directories, reusing lower names inside.
    rm_rf("app/share");
    fs::create_dir(p("app/share")).unwrap();
    put(&p("app/share/new"), "new share\n");
    rm_rf("merged/sub");
    fs::create_dir(p("merged/sub")).unwrap();
    put(&p("merged/sub/s1"), "recreated s1\n");
    // Renames: a shadowed file, a merged dir (files in three lowers and the upper), a
    // lower-only dir, a file onto a whited-out name.
    mv(&p("etc/conf"), &p("etc/conf.bak"));
    put(&p("merged/upper-file"), "upper\n");
    mv(&p("merged"), &p("merged2"));
    mv(&p("deep/a"), &p("deep/z"));
    mv(&p("app/lib/b.so"), &p("etc/old"));
    // Copy-ups: in-place page writes, appends, truncate, chmod, chown, xattrs.
    let db = OpenOptions::new()
        .write(true)
        .open(p("data/db.sqlite"))
        .unwrap();
    for page in [3u64, 0, 15, 7, 20] {
        db.write_all_at(&fill(100 + page, 4096), page * 4096)
            .unwrap();
    }
    drop(db);
    append("app/lib/a.so", b"appended");
    OpenOptions::new()
        .write(true)
        .open(p("app/lib/c.so"))
        .unwrap()
        .set_len(3)
        .unwrap();
    chmod(&p("etc/old"), 0o600);
    chmod(&p("app/lib"), 0o700);
    chmod(&p("ro/file"), 0o644);
    append("ro/file", b"now writable\n");
    chown(&p("etc/new"), 1234, 4321);
    set_xattr(&p("etc/conf.bak"), "user.added", b"added").unwrap();
    put(&p("rodir/new"), "in a 0555 dir\n");
    put(&p("owned/g"), "root wrote this\n");
    // New things: symlink, hard link, fifo, deep tree, odd name.
    symlink("../etc/conf.bak", &p("app/cfg"));
    fs::hard_link(p("app/bin/tool"), p("app/bin/tool2")).unwrap();
    nix::unistd::mkfifo(
        &p("app/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    put(&p("new/tree/deep/f"), "deep new\n");
    put(
        &r.join(OsStr::from_bytes(b"caf\xe9 \xff")),
        "latin-1 name\n",
    );
    // A new dir onto the name of a deleted lower dir, then a file in it with a name
    // the deleted dir had.
    mv(&p("new"), &p("gone"));
    put(&p("gone/x"), "not the lower x\n");
    // The opaque lower dir: delete what shows, reuse a hidden name.
    rm("opq/visible");
    put(&p("opq/hidden"), "recreated, not the hidden one\n");
    // A merged dir emptied file by file, then removed.
    rm("both/x1");
    rm("both/x3");
    fs::remove_dir(p("both")).unwrap();
    // A whited-out lower name reused.
    put(&p("wh-gone"), "reborn\n");
}

// ---------------------------------------------------------------------------------
// Generated layers and workload

fn build_generated(s: &mut Stack, seed: u64) {
    let g = generate_tree(&s.tmp.join("gen"), 3, 600, seed);
    for l in &g.lowers {
        add_user_opaque(l);
    }
    s.lowers = g.lowers;
}

/// Deterministic operations chosen from the view before any change: every path is
/// checked with `lstat` on the mount at the time, so both implementations do the same
/// thing as long as they show the same tree.
fn workload_generated(r: &Path) {
    let before = view(r, false);
    let rels: Vec<Vec<u8>> = paths(&before);
    let at = |rel: &[u8]| r.join(OsStr::from_bytes(rel));
    let kind = |rel: &[u8]| {
        fs::symlink_metadata(at(rel))
            .ok()
            .map(|m| Kind::of(m.file_type()))
    };
    let (mut dirs, mut files) = (0usize, 0usize);
    for rel in &rels {
        let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(rel);
        match kind(rel) {
            Some(Kind::Dir) => {
                dirs += 1;
                match dirs % 9 {
                    0 => fs::remove_dir_all(at(rel)).unwrap(),
                    4 => {
                        let to = r.join(format!("moved-{dirs}"));
                        mv(&at(rel), &to);
                    }
                    7 => {
                        fs::remove_dir_all(at(rel)).unwrap();
                        fs::create_dir(at(rel)).unwrap();
                        put(&at(rel).join(OsStr::from_bytes(name)), "recreated\n");
                    }
                    2 => chmod(&at(rel), 0o750),
                    _ => {}
                }
            }
            Some(Kind::File) => {
                files += 1;
                match files % 13 {
                    0 | 5 => {
                        let mut f = OpenOptions::new().append(true).open(at(rel)).unwrap();
                        std::io::Write::write_all(&mut f, b"+appended").unwrap();
                    }
                    2 => chmod(&at(rel), 0o600),
                    3 | 9 => fs::remove_file(at(rel)).unwrap(),
                    6 => {
                        let len = lstat(&at(rel)).size() / 2;
                        OpenOptions::new()
                            .write(true)
                            .open(at(rel))
                            .unwrap()
                            .set_len(len)
                            .unwrap();
                    }
                    8 if name.len() < 240 => {
                        let mut to = rel.clone();
                        to.extend_from_slice(b".renamed");
                        mv(&at(rel), &at(&to));
                    }
                    11 => set_xattr(&at(rel), "user.touched", b"yes").unwrap(),
                    12 => {
                        let mut to = rel.clone();
                        to.extend_from_slice(b".link");
                        if name.len() < 240 {
                            fs::hard_link(at(rel), at(&to)).unwrap();
                        }
                    }
                    _ => {}
                }
            }
            Some(Kind::Symlink) if (dirs + files) % 5 == 0 => fs::remove_file(at(rel)).unwrap(),
            _ => {}
        }
    }
    assert!(
        dirs > 20 && files > 200,
        "the generated tree is too small: {dirs} dirs, {files} files"
    );
}

// ---------------------------------------------------------------------------------
// Both directions

/// Which implementation writes the upper.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Writer {
    Fimfs,
    Kernel,
}

/// Runs `workload` through `writer`, returns the view it showed, then mounts the same
/// lowers and upper with the other implementation and returns that view.
fn write_then_read(s: &Stack, writer: Writer, workload: &dyn Fn(&Path)) -> (Tree, Tree) {
    let written = match writer {
        Writer::Fimfs => {
            let m = s.mount();
            workload(m.path());
            let v = view(m.path(), true);
            unmount_clean(m);
            v
        }
        Writer::Kernel => {
            let k = s.kernel();
            workload(k.path());
            let v = view(k.path(), true);
            k.unmount();
            v
        }
    };
    let read = match writer {
        Writer::Fimfs => {
            let k = s.kernel();
            let v = view(k.path(), true);
            k.unmount();
            v
        }
        Writer::Kernel => {
            let m = s.mount();
            let v = view(m.path(), true);
            unmount_clean(m);
            v
        }
    };
    (written, read)
}

/// Guards against a vacuous comparison: what the hand-made workload must have done.
fn handmade_facts(t: &Tree, who: &str) {
    let has = |p: &str| t.entries.contains_key(p.as_bytes());
    for p in [
        "merged2/from1",
        "merged2/from3",
        "merged2/upper-file",
        "merged2/sub/s1",
        "deep/z/b/c/file",
        "etc/conf.bak",
        "app/share/new",
        "gone/x",
        "opq/hidden",
        "wh-gone",
        "app/bin/tool2",
    ] {
        assert!(has(p), "{who}: {p} is missing");
    }
    for p in [
        "merged",
        "merged2/from2",
        "merged2/sub/s2",
        "merged2/sub/s3",
        "etc/conf",
        "app/share/doc",
        "gone/sub",
        "opq/visible",
        "both",
        "deep/a",
        "link",
    ] {
        assert!(!has(p), "{who}: {p} is still there");
    }
}

fn generated_facts(t: &Tree, who: &str) {
    let moved = t
        .entries
        .keys()
        .filter(|k| k.starts_with(b"moved-"))
        .count();
    assert!(
        t.entries.len() > 300 && moved > 2,
        "{who}: the generated workload left {} entries, {moved} moved",
        t.entries.len()
    );
}

fn check_direction(
    s: &mut Stack,
    writer: Writer,
    workload: &dyn Fn(&Path),
    facts: fn(&Tree, &str),
) {
    s.seal_lowers();
    let (written, read) = write_then_read(s, writer, workload);
    facts(&written, "the writer");
    let (w, r) = match writer {
        Writer::Fimfs => ("fimfs (writer)", "kernel overlay on fimfs' upper"),
        Writer::Kernel => ("kernel overlay (writer)", "fimfs on the kernel's upper"),
    };
    assert_same_view(w, &written, r, &read);
    s.assert_lowers_untouched();
}

/// A second upper over the same lowers.
fn sibling(s: &Stack, tag: &str) -> Stack {
    let mut t = Stack::new(tag, 0);
    t.lowers = s.lowers.clone();
    t
}

#[test]
fn handmade_fimfs_upper_reads_the_same_in_the_kernel() {
    let mut s = Stack::new("ik-hand-f", 3);
    build_handmade(&s);
    check_direction(&mut s, Writer::Fimfs, &workload_handmade, handmade_facts);
    // What the upper must hold for the kernel to see that view.
    assert!(
        lstat(&s.u("etc/old")).file_type().is_file(),
        "etc/old was renamed onto"
    );
    assert!(
        is_whiteout(&s.u("merged")),
        "renamed merged dir: whiteout expected"
    );
    assert_eq!(
        get_xattr(&s.u("app/share"), "user.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    assert_eq!(
        get_xattr(&s.u("gone"), "user.overlay.opaque"),
        Ok(b"y".to_vec())
    );
}

#[test]
fn handmade_kernel_upper_reads_the_same_in_fimfs() {
    let mut s = Stack::new("ik-hand-k", 3);
    build_handmade(&s);
    check_direction(&mut s, Writer::Kernel, &workload_handmade, handmade_facts);
}

/// The same workload through either implementation ends in the same view.
#[test]
fn handmade_same_workload_same_view() {
    let mut f = Stack::new("ik-hand-same", 3);
    build_handmade(&f);
    f.seal_lowers();
    let k = sibling(&f, "ik-hand-same-k");
    let (fv, _) = write_then_read(&f, Writer::Fimfs, &workload_handmade);
    let (kv, _) = write_then_read(&k, Writer::Kernel, &workload_handmade);
    handmade_facts(&kv, "kernel overlay");
    assert_same_view("kernel overlay", &kv, "fimfs", &fv);
    f.assert_lowers_untouched();
}

#[test]
fn generated_fimfs_upper_reads_the_same_in_the_kernel() {
    let mut s = Stack::new("ik-gen-f", 0);
    build_generated(&mut s, 0x1a7e);
    check_direction(&mut s, Writer::Fimfs, &workload_generated, generated_facts);
}

#[test]
fn generated_kernel_upper_reads_the_same_in_fimfs() {
    let mut s = Stack::new("ik-gen-k", 0);
    build_generated(&mut s, 0x1a7e);
    check_direction(&mut s, Writer::Kernel, &workload_generated, generated_facts);
}

// ---------------------------------------------------------------------------------
// A lower changed on purpose behind the mount

/// fimfs remembers what a lower directory lacks once it has listed it, so a file
/// added to a lower behind the mount is not seen (the kernel calls changing a lower
/// under a mount undefined; the README says so). `SIGUSR1` to the daemon drops what
/// it remembers of the lowers and has the kernel drop its cached entries, pages and
/// listings; the kernel's negative entry for the name cannot be named and lasts
/// `timeout` (1 s by default), which the bounded poll covers.
#[test]
fn sigusr1_shows_what_was_added_to_a_lower() {
    let s = Stack::new("sigusr1-lowers", 2);
    put(&s.l(1, "d/a"), "a\n");
    put(&s.l(2, "d/b"), "b\n");
    let m = s.mount();
    assert_eq!(names(&s.m("d")), ["a", "b"]);
    put(&s.l(2, "d/new"), "new\n");
    assert_eq!(
        lstat_errno(&s.m("d/new")),
        libc::ENOENT,
        "a file added to a lower behind the mount is not seen until SIGUSR1"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .expect("kill -USR1 the daemon");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lstat_errno(&s.m("d/new")) != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(read_str(&s.m("d/new")), "new\n", "seen after SIGUSR1");
    assert_eq!(names(&s.m("d")), ["a", "b", "new"], "listed after SIGUSR1");
    unmount_clean(m);
}

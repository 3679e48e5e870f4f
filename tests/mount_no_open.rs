//! Files the kernel opens without asking the daemon (FUSE no-open mode, the
//! default of a union with an upper): no `OPEN` or `RELEASE` per open, and
//! every open-file behaviour still that of the kernel overlay: reads, writes
//! and copy-up at the first write, `O_TRUNC`, `O_APPEND`, and files unlinked
//! or replaced before their first read or write.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// The daemon's request counts of one mount of `s` with `opts`, over which
/// `work` ran (`FIMFS_STATS`, written when the daemon exits).
fn requests(s: &Stack, opts: &[&str], work: impl FnOnce(&Path)) -> BTreeMap<String, u64> {
    let stats = s.tmp.join(format!("stats-{}", opts.join("-")));
    let env = [("FIMFS_STATS", stats.as_os_str())];
    let m = MountGuard::with_env(&s.lowers, Some(&s.upper), &s.mnt, opts, &env);
    work(m.path());
    unmount_clean(m);
    let text = fs::read_to_string(&stats).expect("FIMFS_STATS file");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().expect("count")))
        .collect()
}

/// Reads 20 lower files and appends to 5 of them, each open its own.
fn read_and_append(mnt: &Path) {
    for i in 0..20 {
        let got = fs::read(mnt.join(format!("f{i}"))).expect("read");
        assert_eq!(got, format!("file {i}\n").into_bytes());
    }
    for i in 0..5 {
        let mut f = OpenOptions::new()
            .append(true)
            .open(mnt.join(format!("f{i}")))
            .expect("open for append");
        f.write_all(b"more\n").expect("append");
    }
    for i in 0..5 {
        let got = fs::read(mnt.join(format!("f{i}"))).expect("read back");
        assert_eq!(got, format!("file {i}\nmore\n").into_bytes());
    }
}

/// With an upper, the kernel asks the daemon at no open (the first `OPEN`,
/// answered ENOSYS, is the only one) and releases nothing; `-o handles`
/// brings back one `OPEN` and one `RELEASE` per open. The data is the same
/// both ways, and the appends copied the five files up.
#[test]
fn a_union_with_an_upper_opens_files_without_asking() {
    let mut s = Stack::new("no-open-counts", 1);
    for i in 0..20 {
        fs::write(s.l(1, &format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    s.seal_lowers();
    let quiet = requests(&s, &[], read_and_append);
    let count = |c: &BTreeMap<String, u64>, k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(
        (count(&quiet, "open"), count(&quiet, "release")),
        (1, 0),
        "{quiet:?}"
    );
    for i in 0..5 {
        let up = fs::read(s.u(&format!("f{i}"))).expect("copied up");
        assert_eq!(up, format!("file {i}\nmore\n").into_bytes());
    }
    fs::remove_dir_all(&s.upper).unwrap();
    fs::create_dir(&s.upper).unwrap();
    let asked = requests(&s, &["handles"], read_and_append);
    assert_eq!(
        (count(&asked, "open"), count(&asked, "release")),
        (30, 30),
        "{asked:?}"
    );
    s.assert_lowers_untouched();
}

/// What one mount shows of files that lose their name while open, before
/// their first read or write: (what was read, what was read back after a
/// write, sizes), in one string.
fn unlinked_before_first_use(dir: &Path) -> String {
    let mut out = String::new();
    // A lower file, unlinked.
    let a = fs::File::open(dir.join("a")).unwrap();
    fs::remove_file(dir.join("a")).unwrap();
    let mut buf = [0u8; 64];
    let n = a.read_at(&mut buf, 0).unwrap();
    out += &format!(
        "a: {:?} {}\n",
        String::from_utf8_lossy(&buf[..n]),
        a.metadata().unwrap().len()
    );
    // A lower file open for writing, replaced by a rename, then written.
    let b = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("b"))
        .unwrap();
    fs::rename(dir.join("c"), dir.join("b")).unwrap();
    b.write_at(b"XY", 1).unwrap();
    let n = b.read_at(&mut buf, 0).unwrap();
    out += &format!(
        "b: {:?} {}\n",
        String::from_utf8_lossy(&buf[..n]),
        b.metadata().unwrap().len()
    );
    b.set_len(2).unwrap();
    out += &format!("b cut: {}\n", b.metadata().unwrap().len());
    // A copied-up file (it keeps its lower number), unlinked.
    fs::set_permissions(
        dir.join("d"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let d = fs::File::open(dir.join("d")).unwrap();
    fs::remove_file(dir.join("d")).unwrap();
    let n = d.read_at(&mut buf, 0).unwrap();
    out += &format!("d: {:?}\n", String::from_utf8_lossy(&buf[..n]));
    // What the names show now.
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    out += &format!(
        "names: {names:?} b={:?}\n",
        fs::read_to_string(dir.join("b")).unwrap()
    );
    out
}

/// A file unlinked or replaced while open, before the daemon saw any of
/// its I/O, still reads and writes as the file it was, as on the kernel
/// overlay (which copied it up at the open for writing).
#[test]
fn files_that_lose_their_name_before_their_first_read_are_still_served() {
    let specs = ["f a alpha\nf b bravo\nf c charlie\nf d delta"];
    let mut s = Stack::from_specs("no-open-unlinked", &specs, "");
    s.seal_lowers();
    let m = s.mount();
    let ours = unlinked_before_first_use(m.path());
    unmount_clean(m);
    let k = Stack::from_specs("no-open-unlinked-k", &specs, "");
    let km = k.kernel();
    let kernel = unlinked_before_first_use(km.path());
    drop(km);
    assert_eq!(ours, kernel, "fimfs against the kernel overlay");
    assert!(ours.contains("a: \"alpha\" 5"), "{ours}");
    assert!(ours.contains("b: \"bXYvo\" 5"), "{ours}");
    s.assert_lowers_untouched();
    let work_left: Vec<_> = fs::read_dir(s.tmp.join("work"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    for w in work_left {
        let inside = fs::read_dir(&w).map(|rd| rd.count()).unwrap_or(0);
        assert_eq!(inside, 0, "workdir {} kept entries", w.display());
    }
}

/// `open(O_TRUNC)` of a lower file and of an upper file empties it (the
/// kernel sends a truncate, since no `OPEN` carries the flag), and a
/// writer's `O_APPEND` lands at the end.
#[test]
fn truncating_and_appending_opens_without_asking() {
    let mut s = Stack::from_specs(
        "no-open-trunc",
        &["f low lowdata\nf keep kept"],
        "f up updata",
    );
    s.seal_lowers();
    let m = s.mount();
    for name in ["low", "up"] {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.join(name))
            .unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(fs::read(m.join(name)).unwrap(), b"new", "{name}");
        let mut f = OpenOptions::new().append(true).open(m.join(name)).unwrap();
        f.write_all(b"+1").unwrap();
        drop(f);
        assert_eq!(fs::read(m.join(name)).unwrap(), b"new+1", "{name}");
        assert_eq!(
            fs::read(s.u(name)).unwrap(),
            b"new+1",
            "{name} in the upper"
        );
    }
    // Opened for writing but never written: no copy-up.
    drop(OpenOptions::new().write(true).open(m.join("keep")).unwrap());
    assert!(!s.u("keep").exists(), "an unwritten open copied keep up");
    assert_eq!(fs::read(m.join("keep")).unwrap(), b"kept");
    unmount_clean(m);
    s.assert_lowers_untouched();
}

const NOBODY: u32 = 65534;

/// `sh -c script` run as `uid`: whether it succeeded, its stdout and its
/// stderr.
fn sh_as(uid: u32, script: &str) -> (bool, String, String) {
    let out = setpriv(uid, "sh").arg("-c").arg(script).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Without `default_permissions` (an unprivileged mount) the kernel checks
/// no permission: the daemon's own open is what refuses an open its user
/// may not make, so such a mount keeps open requests, and the refusal
/// comes from `open`, not from the first read or write: a root-owned
/// 0600 lower file, and the user's own 0444 upper file opened for writing.
#[test]
fn an_unprivileged_mount_refuses_opens_at_the_open() {
    let s = Stack::from_specs(
        "no-open-user",
        &["f secret hidden\nf open visible"],
        "f ro mine",
    );
    fs::set_permissions(s.l(1, "secret"), PermissionsExt::from_mode(0o600)).unwrap();
    let work = s.tmp.mkdir("work");
    for d in [&s.upper, &s.mnt, &work, &s.u("ro")] {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    fs::set_permissions(s.u("ro"), PermissionsExt::from_mode(0o444)).unwrap();
    for d in [s.tmp.path(), &s.upper, &s.mnt, &work] {
        fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_fimfs");
    let (l, u, m) = (s.lowers[0].display(), s.upper.display(), s.mnt.display());
    let mount = format!("{bin} mount -o workdir={w} {l} {u} {m}", w = work.display());
    let (ok, _, err) = sh_as(NOBODY, &mount);
    assert!(ok, "the user's mount: {err}");
    let tries = format!(
        "cd {m} && cat open; \
         (exec 3<secret) && echo 'secret opened'; \
         (exec 4>>ro) && echo 'ro opened for writing'; \
         cat ro"
    );
    let (_, seen, refused) = sh_as(NOBODY, &tries);
    let (ok, _, err) = sh_as(NOBODY, &format!("fusermount3 -u {m}"));
    assert!(ok, "unmount: {err}");
    assert_eq!(seen, "visiblemine", "{refused}");
    let lines: Vec<&str> = refused.lines().collect();
    assert_eq!(lines.len(), 2, "{refused}");
    assert!(
        lines[0].contains("secret") && lines[1].contains("ro"),
        "{refused}"
    );
    assert!(
        lines.iter().all(|l| l.ends_with("Permission denied")),
        "{refused}"
    );
}

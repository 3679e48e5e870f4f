//! Reading the fixtures (`fixtures/layers.manifest`) through a real fimfs mount:
//! what only a mount shows. What readdirplus lists (never a marker, never a name
//! lookup cannot find), symlinks resolved by the kernel, inode numbers after
//! `drop_caches` and `d_ino` through getdents, non-UTF-8 and 255-byte names
//! through the kernel, the read-only mount flag, statfs, xattrs through the
//! kernel's size probes, the SELinux label, exec, and the daemon's life cycle.
//!
//! The union rules themselves (merging, opaque directories, whiteouts, type
//! clashes, modes, link counts, distinct numbers, settable xattrs) are checked
//! on the engine over the same layers, in `engine_read.rs`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fimfs mount over freshly built fixtures. Field order is drop order: unmount
/// first, then remove the files.
struct Mounted {
    m: MountGuard,
    layers: Layers,
    tmp: TempDir,
}

impl Mounted {
    fn p(&self, rel: &str) -> PathBuf {
        self.m.join(rel)
    }
    fn pb(&self, rel: &[u8]) -> PathBuf {
        at(self.m.path(), rel)
    }
}

fn mount_fixtures(tag: &str, with_upper: bool, opts: &[&str]) -> Mounted {
    require_root_and_fuse();
    let tmp = TempDir::new(tag);
    let layers = build_fixtures(&tmp.join("fx"));
    let upper = with_upper.then_some(layers.upper.as_path());
    let m = MountGuard::new(&layers.lowers, upper, &layers.mnt, opts);
    Mounted { m, layers, tmp }
}

fn long_name() -> Vec<u8> {
    let mut n = vec![b'n'; 251];
    n.extend_from_slice(b".txt");
    n
}

/// What the kernel lists through readdirplus: no marker of any dialect, no
/// 0/0 device, no name twice, and no name that lookup cannot find. The engine
/// lists the xattr whiteouts `gone-tx` and `merged/gone-ux` (their directories
/// are not `overlay.opaque=x`, see `engine_read`); the adapter drops them
/// because their lookup fails.
#[test]
fn no_marker_is_ever_listed() {
    let t = mount_fixtures("mr-markers", false, &[]);
    // The layers do hold the markers (else this test proves nothing).
    let l = &t.layers.lowers;
    for (layer, rel) in [(0, ".wh.gone-wh"), (1, "opq-wh/.wh..wh..opq")] {
        assert!(
            l[layer].join(rel).is_file(),
            "fixture marker lower{}/{rel}",
            layer + 1
        );
    }
    for (layer, rel) in [(0, "gone-chr"), (0, "stray/nothing-below"), (1, "deadtree")] {
        assert!(is_whiteout(&l[layer].join(rel)), "lower{}/{rel}", layer + 1);
    }
    for (layer, rel) in [(0, "gone-tx"), (1, "merged/gone-ux")] {
        assert!(l[layer].join(rel).is_file(), "lower{}/{rel}", layer + 1);
    }
    let tree = walk(t.m.path());
    for (dir, entries) in &tree.listings {
        for (name, kind) in entries {
            let rel = join_rel(dir, name);
            let path = show(&rel);
            assert!(!name.starts_with(b".wh."), "marker {path} is listed");
            assert!(
                !matches!(name.as_slice(), b"gone-chr" | b"gone-tx" | b"gone-ux"),
                "whited-out {path} is listed"
            );
            if *kind == Kind::CharDev {
                let rdev = tree.entries.get(&rel).and_then(|e| e.rdev);
                assert_ne!(rdev, Some(0), "the 0/0 whiteout {path} is listed");
            }
        }
        let mut once = entries.clone();
        once.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(
            once.len(),
            entries.len(),
            "{} lists a name twice",
            show(dir)
        );
    }
    assert_eq!(
        names(&t.p("stray")),
        ["kept"],
        "a whiteout in an unmerged directory must not be listed (the kernel lists it)"
    );
    assert!(
        tree.entries.len() >= 40,
        "the walk saw too little: {}",
        tree.entries.len()
    );
}

#[test]
fn symlinks_are_returned_not_followed_by_the_daemon() {
    let t = mount_fixtures("mr-symlinks", false, &[]);
    for (rel, target) in [
        ("links/rel", "../merged/from3"),
        ("links/passwd", "/etc/passwd"),
        ("links/up", "../../.."),
        ("links/dangling", "does/not/exist"),
    ] {
        let p = t.p(rel);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {rel}: {e}"));
        assert!(
            md.file_type().is_symlink(),
            "{rel} is a {:?}",
            md.file_type()
        );
        assert_eq!(md.len(), target.len() as u64, "st_size of {rel}");
        assert_eq!(
            fs::read_link(&p).unwrap(),
            Path::new(target),
            "readlink {rel}"
        );
    }
    // The kernel resolves them, relative to where they appear in the mount.
    assert_eq!(read_str(&t.p("links/rel")), "only in lower3\n");
    assert_eq!(
        fs::read(t.p("links/passwd")).unwrap(),
        fs::read("/etc/passwd").unwrap()
    );
    let up = fs::metadata(t.p("links/up")).expect("stat links/up");
    let expected = t.layers.mnt.parent().unwrap().parent().unwrap();
    let want = fs::metadata(expected).unwrap();
    assert_eq!(
        (up.dev(), up.ino()),
        (want.dev(), want.ino()),
        "links/up must lead to {} (outside the mount, resolved by the kernel), not into a layer",
        expected.display()
    );
    assert_eq!(
        errno_of("stat links/dangling", fs::metadata(t.p("links/dangling"))),
        libc::ENOENT
    );
}

/// `st_ino` of every path below `root`, by `lstat`.
fn inode_map(root: &Path) -> BTreeMap<Vec<u8>, u64> {
    scan(root)
        .into_iter()
        .map(|(rel, f)| {
            let md =
                f.md.unwrap_or_else(|e| panic!("lstat {}: errno {e}", show(&rel)));
            (rel, md.ino())
        })
        .collect()
}

/// The numbers the kernel reports stay the same when it forgets its inodes
/// (`drop_caches`: FORGETs, then fresh lookups), open files agree with
/// `lstat`, and distinct files keep distinct numbers.
#[test]
fn inode_numbers_are_stable() {
    let t = mount_fixtures("mr-ino-stable", false, &[]);
    let first = inode_map(t.m.path());
    assert_eq!(
        first,
        inode_map(t.m.path()),
        "st_ino changed between two walks"
    );
    drop_caches(3);
    assert_eq!(
        first,
        inode_map(t.m.path()),
        "st_ino changed after drop_caches"
    );
    for rel in ["shadow.txt", "merged/from3", "names/ReadMe.TXT"] {
        let f = fs::File::open(t.p(rel)).unwrap();
        assert_eq!(
            f.metadata().unwrap().ino(),
            first[rel.as_bytes()],
            "fstat vs lstat of {rel}"
        );
    }
    let shared = numbers_naming_several_files(t.m.path());
    assert!(shared.is_empty(), "{}", shared.join("\n"));
}

#[test]
fn readdir_d_ino_equals_st_ino() {
    let t = mount_fixtures("mr-dino", false, &[]);
    let tree = walk(t.m.path());
    let mut checked = 0;
    for dir in tree.listings.keys() {
        for (name, d_ino) in dir_inos(&at(t.m.path(), dir)) {
            let st_ino = lstat(&at(t.m.path(), &join_rel(dir, &name))).ino();
            assert_eq!(
                d_ino,
                st_ino,
                "d_ino vs st_ino of {}/{}",
                show(dir),
                show(&name)
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        tree.entries.len() - 1,
        "entries checked vs entries walked"
    );
    assert!(checked >= 40, "only {checked} entries checked");
}

/// Names cross the kernel as bytes: a non-UTF-8 name and a 255-byte one are
/// listed, found and read (each from its own lower); a 256-byte one is refused.
#[test]
fn odd_names_work() {
    let t = mount_fixtures("mr-names", false, &[]);
    let long = long_name();
    assert_eq!(long.len(), 255);
    let mut want = vec![b"ReadMe.TXT".to_vec(), b"\xff\xfe".to_vec(), long.clone()];
    want.sort();
    let listed: Vec<Vec<u8>> = dir_inos(&t.p("names")).into_keys().collect();
    assert_eq!(listed, want, "readdir of names/");
    for (name, layer) in [(b"\xff\xfe".as_slice(), 0), (b"ReadMe.TXT", 1), (&long, 2)] {
        let rel = join_rel(b"names", name);
        let p = t.pb(&rel);
        let md = lstat(&p);
        assert!(md.is_file(), "{} is a file", show(name));
        let got = read(&p);
        assert_eq!(got.len() as u64, md.len(), "st_size of {}", show(name));
        assert_eq!(
            got,
            read(&at(&t.layers.lowers[layer], &rel)),
            "contents of {} (from lower{})",
            show(name),
            layer + 1
        );
    }
    // No case-folding unless asked for.
    assert_eq!(lstat_errno(&t.p("names/readme.txt")), libc::ENOENT);
    let too_long = join_rel(b"names", &[b'n'; 256]);
    let e = lstat_errno(&t.pb(&too_long));
    assert!(
        e == libc::ENAMETOOLONG || e == libc::ENOENT,
        "lstat of a 256-byte name: errno {e}"
    );
}

/// Without an upper the mount itself is read-only (`MS_RDONLY`): the kernel
/// refuses every write with EROFS before the daemon hears of it, and the lowers
/// stay as they were. (The engine's own refusals: `engine_create`.)
#[test]
fn writes_without_an_upper_fail_with_erofs() {
    let t = mount_fixtures("mr-erofs", false, &[]);
    let before: Vec<Snapshot> = t.layers.lowers.iter().map(|l| snapshot(l)).collect();
    let erofs = |what: &str, r: std::io::Result<()>| {
        assert_eq!(errno_of(what, r), libc::EROFS, "{what}");
    };
    erofs("create", fs::File::create(t.p("new-file")).map(drop));
    erofs(
        "open O_WRONLY",
        OpenOptions::new()
            .write(true)
            .open(t.p("shadow.txt"))
            .map(drop),
    );
    erofs(
        "open O_TRUNC",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(t.p("merged/from3"))
            .map(drop),
    );
    erofs(
        "append",
        OpenOptions::new().append(true).open(t.p("empty")).map(drop),
    );
    erofs("mkdir", fs::create_dir(t.p("new-dir")));
    erofs("unlink", fs::remove_file(t.p("shadow.txt")));
    erofs("rmdir", fs::remove_dir(t.p("emptydir")));
    erofs("rename", fs::rename(t.p("shadow.txt"), t.p("renamed.txt")));
    erofs("symlink", std::os::unix::fs::symlink("x", t.p("new-link")));
    erofs(
        "link",
        fs::hard_link(t.p("shadow.txt"), t.p("new-hardlink")),
    );
    erofs(
        "chmod",
        fs::set_permissions(t.p("shadow.txt"), PermissionsExt::from_mode(0o600)),
    );
    erofs(
        "chown",
        std::os::unix::fs::lchown(t.p("shadow.txt"), Some(1), Some(1)),
    );
    erofs(
        "mkfifo",
        mknod(&t.p("new-fifo"), libc::S_IFIFO | 0o644, 0, 0),
    );
    erofs(
        "setxattr",
        set_xattr(&t.p("xattr/tagged"), "user.new", b"1")
            .map_err(std::io::Error::from_raw_os_error),
    );
    erofs(
        "utimensat",
        utimens(&t.p("shadow.txt"), (1, 0), (1, 0), true),
    );
    let after: Vec<Snapshot> = t.layers.lowers.iter().map(|l| snapshot(l)).collect();
    assert!(before == after, "a refused write changed a lower layer");
    assert_eq!(lstat_errno(&t.p("new-file")), libc::ENOENT);
}

/// `-o ro` makes the mount read-only even over an upper, which stays empty.
#[test]
fn ro_option_with_an_upper_refuses_writes() {
    let t = mount_fixtures("mr-ro-opt", true, &["ro"]);
    assert_eq!(
        errno_of("create", fs::File::create(t.p("new-file"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of("unlink", fs::remove_file(t.p("shadow.txt"))),
        libc::EROFS
    );
    assert_eq!(read_str(&t.p("shadow.txt")), "shadow.txt from lower1\n");
    assert!(
        names(&t.layers.upper).is_empty(),
        "-o ro wrote into the upper"
    );
}

#[test]
fn statfs_works() {
    let t = mount_fixtures("mr-statfs", false, &[]);
    let s = nix::sys::statfs::statfs(t.m.path()).expect("statfs");
    assert_eq!(
        i128::from(s.filesystem_type().0),
        i128::from(FUSE_SUPER_MAGIC),
        "f_type"
    );
    assert!(i128::from(s.block_size()) > 0, "f_bsize");
    assert!(i128::from(s.blocks()) > 0, "f_blocks");
    assert!(i128::from(s.maximum_name_length()) >= 255, "f_namelen");
    let v = nix::sys::statvfs::statvfs(t.m.path()).expect("statvfs");
    assert!(i128::from(v.name_max()) >= 255, "f_namemax");
}

/// xattrs through the kernel, whose listxattr and getxattr first ask for the
/// size and then for the value: `getfattr -R` over the whole mount shows the
/// user xattrs (a merged directory's from its top-most copy) and never an
/// overlay-private one. Which names show on which entry is `engine_read`'s.
#[test]
fn user_xattrs_are_shown_and_overlay_xattrs_never() {
    let t = mount_fixtures("mr-xattr", false, &[]);
    assert_eq!(
        list_xattrs(&t.p("xattr/tagged")),
        Ok(vec![b"user.demo".to_vec()])
    );
    assert_eq!(
        get_xattr(&t.p("opq-user"), "user.overlay.opaque"),
        Err(libc::ENODATA)
    );
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-R", "-h", "-d", "-m", "-"])
        .arg(t.m.path())
        .output()
        .expect("run getfattr");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["user.demo=\"hello\"", "user.dirtag=\"from-lower2\""] {
        assert!(text.contains(want), "getfattr shows no {want}:\n{text}");
    }
    assert!(
        !text.contains(".overlay.") && !text.contains("fuseoverlayfs"),
        "getfattr shows an overlay xattr:\n{text}"
    );
}

/// Without SELinux, FUSE asks the daemon for `security.selinux` at every
/// `ls -l` of every file (it caches no xattrs). EOPNOTSUPP for a file that
/// has none makes `ls` stop asking for the rest of the mount. With SELinux,
/// the kernel labels inodes from that xattr and needs ENODATA there.
#[test]
fn a_missing_security_label_is_unsupported_without_selinux() {
    let t = mount_fixtures("mr-selinux", true, &[]);
    let selinux = fimfs::fuse::selinux_active();
    let f = t.p("xattr/tagged");
    let missing = if selinux {
        libc::ENODATA
    } else {
        libc::EOPNOTSUPP
    };
    assert_eq!(get_xattr(&f, "security.selinux"), Err(missing));
    assert_eq!(get_xattr(&t.p("xattr"), "security.selinux"), Err(missing));
    // Any other missing name keeps ENODATA.
    assert_eq!(get_xattr(&f, "security.capability"), Err(libc::ENODATA));
    assert_eq!(get_xattr(&f, "user.none"), Err(libc::ENODATA));
    if !selinux {
        // A label that is there reads back like any other xattr.
        let label = b"system_u:object_r:etc_t:s0\0";
        assert_eq!(set_xattr(&f, "security.selinux", label), Ok(()));
        assert_eq!(get_xattr(&f, "security.selinux"), Ok(label.to_vec()));
        let names = list_xattrs(&f).unwrap();
        assert!(names.contains(&b"security.selinux".to_vec()), "{names:?}");
    }
    let out = Command::new("ls")
        .arg("-lR")
        .arg(t.m.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ls -lR: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tagged"),
        "ls -lR lists the files"
    );
}

/// Special files reach the kernel with their type (`d_type` in getdents,
/// `st_rdev`), and a lower script runs from the mount. Their modes are
/// `engine_read`'s.
#[test]
fn special_files_keep_their_type_and_scripts_run() {
    let t = mount_fixtures("mr-special", false, &[]);
    assert!(lstat(&t.p("fifo")).file_type().is_fifo(), "fifo");
    let tree = walk(t.m.path());
    let root = &tree.listings[b"".as_slice()];
    assert!(
        root.contains(&(b"fifo".to_vec(), Kind::Fifo)),
        "d_type of fifo: {root:?}"
    );
    let null = lstat(&t.p("devices/null"));
    assert!(null.file_type().is_char_device(), "devices/null");
    assert_eq!(
        null.rdev(),
        nix::sys::stat::makedev(1, 3),
        "rdev of devices/null"
    );
    let out = Command::new(t.p("bin/hello.sh"))
        .output()
        .expect("exec bin/hello.sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from fimfs\n");
}

/// The daemon's default workdir, `<parent of UPPER>/work/<PID>`.
fn workdir_of(t: &Mounted, pid: u32) -> PathBuf {
    t.layers
        .upper
        .parent()
        .unwrap()
        .join("work")
        .join(pid.to_string())
}

/// Detaches the mount with `cmd MNT`, then requires the foreground daemon to exit
/// cleanly and its workdir to be gone.
fn detach_and_expect_clean_exit(t: Mounted, cmd: &[&str]) {
    let work = workdir_of(&t, t.m.pid());
    assert!(
        work.is_dir(),
        "default workdir {} missing while mounted",
        work.display()
    );
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .arg(t.m.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let Mounted {
        m,
        layers: _,
        tmp: _tmp,
    } = t;
    let (status, log) = m.wait_exit();
    assert!(
        status.is_some_and(|s| s.success()),
        "daemon exit {status:?}:\n{log}"
    );
    assert!(!work.exists(), "workdir {} left behind", work.display());
}

#[test]
fn foreground_daemon_exits_and_removes_its_workdir_on_fusermount_u() {
    let t = mount_fixtures("mr-exit-fusermount", true, &[]);
    detach_and_expect_clean_exit(t, &["fusermount3", "-u"]);
}

#[test]
fn foreground_daemon_exits_on_umount() {
    let t = mount_fixtures("mr-exit-umount", true, &[]);
    detach_and_expect_clean_exit(t, &["umount"]);
}

#[test]
fn without_f_the_parent_exits_once_the_mount_is_live() {
    require_root_and_fuse();
    let tmp = TempDir::new("mr-daemonize");
    let layers = build_fixtures(&tmp.join("fx"));
    let out = run_fimfs(
        &mount_args(&layers.lowers, Some(&layers.upper), &layers.mnt, &[]),
        &tmp.join("logs"),
    );
    assert!(out.success(), "fimfs mount without -f: {out}");
    // No waiting: the parent must not exit before the mount is live.
    assert!(
        is_fuse_mount(&layers.mnt),
        "the parent exited 0 but {} is not a FUSE mount",
        layers.mnt.display()
    );
    assert_eq!(
        read_str(&layers.mnt.join("shadow.txt")),
        "shadow.txt from lower1\n"
    );

    let work_root = tmp.join("fx/work");
    let pids: Vec<u32> = names(&work_root)
        .iter()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{n:?}: not a PID")))
        .collect();
    let [pid] = pids[..] else {
        panic!("{} should hold one workdir: {pids:?}", work_root.display())
    };
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|e| panic!("daemon {pid} not running: {e}"));
    assert_eq!(
        exe,
        fs::canonicalize(FIMFS).unwrap(),
        "process {pid} owning the workdir"
    );

    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&layers.mnt)
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u");
    assert_eq!(
        wait_gone(&[pid]),
        [] as [u32; 0],
        "daemon {pid} still running after the unmount"
    );
    assert!(
        !work_root.join(pid.to_string()).exists(),
        "workdir left behind"
    );
}

/// Bytes the daemon process has read with `read`/`pread` so far.
fn daemon_rchar(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io")
}

/// How many bytes of an 8 MiB lower file the daemon itself reads when a
/// program reads it (and maps it) through a mount of these options.
fn daemon_bytes_for_a_lower_read(tag: &str, with_upper: bool, opts: &[&str]) -> u64 {
    require_root_and_fuse();
    let tmp = TempDir::new(tag);
    let layers = build_fixtures(&tmp.join("fx"));
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(layers.lowers[1].join("big.bin"), &data).unwrap();
    let upper = with_upper.then_some(layers.upper.as_path());
    let m = MountGuard::new(&layers.lowers, upper, &layers.mnt, opts);
    let before = daemon_rchar(m.pid());
    assert!(fs::read(m.join("big.bin")).unwrap() == data, "{tag}: read");
    let f = fs::File::open(m.join("big.bin")).unwrap();
    // SAFETY: a private read-only mapping of a file nobody writes meanwhile.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "{tag}: mmap");
    // SAFETY: the mapping is data.len() bytes long and readable.
    let mapped = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), data.len()) } == data;
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(map, data.len()) };
    assert!(mapped, "{tag}: mapped bytes");
    daemon_rchar(m.pid()) - before
}

/// Whether the daemon may open files in passthrough here, by its own rule:
/// Linux 6.9+ and CAP_SYS_ADMIN in the initial user namespace.
fn passthrough_possible() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let uid_map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let init_ns = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    cap_eff & (1 << 21) != 0 && init_ns && (major, minor) >= (6, 9)
}

/// A union without an upper can never copy a file up, so a handle never
/// has to move: the daemon hands the lower file itself to the kernel (FUSE
/// passthrough, Linux 6.9+, as root), which then reads and maps it with no
/// request and no copy through the daemon. `-o nopassthrough` keeps the
/// daemon in the path (the control: it reads every byte). In a writable
/// union a read-only handle of a lower file stays with the daemon, which
/// moves it to the copy once the file is copied up
/// (`mount_write_data::fd_opened_before_copy_up_sees_later_writes`).
#[test]
fn a_union_without_an_upper_hands_its_files_to_the_kernel() {
    let size = 8u64 << 20;
    let passed = daemon_bytes_for_a_lower_read("mr-pt", false, &[]);
    if passthrough_possible() {
        assert!(
            passed < size / 8,
            "the daemon read {passed} bytes of an {size}-byte lower file of a read-only union"
        );
    } else {
        // Where the kernel or the privileges forbid it, the daemon reads
        // the file itself, as with nopassthrough.
        assert!(
            passed >= size,
            "without passthrough the daemon read only {passed} bytes"
        );
    }
    let kept = daemon_bytes_for_a_lower_read("mr-nopt", false, &["nopassthrough"]);
    assert!(
        kept >= size,
        "with nopassthrough the daemon read only {kept} bytes"
    );
    let writable = daemon_bytes_for_a_lower_read("mr-pt-rw", true, &[]);
    assert!(
        writable >= size,
        "a writable union passed a lower file through ({writable} bytes read by the daemon)"
    );
}

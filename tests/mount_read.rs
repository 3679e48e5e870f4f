//! Reading the fixtures (`fixtures/layers.manifest`) through a real fimfs mount: the
//! union rules, markers never leaking, symlinks, inode numbers, odd names, xattrs,
//! read-only behaviour, and the daemon's life cycle.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

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
        self.m.join(OsStr::from_bytes(rel))
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

/// `readdir` names, sorted, duplicates kept.
fn listing(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|de| de.expect("readdir entry").file_name().into_vec())
        .collect();
    names.sort();
    names
}

fn names(list: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = list.iter().map(|n| n.to_vec()).collect();
    v.sort();
    v
}

fn long_name() -> Vec<u8> {
    let mut n = vec![b'n'; 251];
    n.extend_from_slice(b".txt");
    n
}

fn read(path: &Path) -> String {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    String::from_utf8(data).expect("fixture contents are UTF-8")
}

fn lstat_errno(path: &Path) -> i32 {
    errno_of(
        &format!("lstat {}", path.display()),
        fs::symlink_metadata(path),
    )
}

const ROOT: &[&[u8]] = &[
    b"bin",
    b"clash",
    b"devices",
    b"dirwins",
    b"empty",
    b"emptydir",
    b"fifo",
    b"links",
    b"merged",
    b"names",
    b"opq-trusted",
    b"opq-user",
    b"opq-wh",
    b"private.txt",
    b"readonly.txt",
    b"revived",
    b"shadow.txt",
    b"stray",
    b"xattr",
];

#[test]
fn merged_directories_list_each_name_once() {
    let t = mount_fixtures("mr-merged", false, &[]);
    let expect: &[(&str, &[&[u8]])] = &[
        ("", ROOT),
        ("merged", &[b"common", b"from1", b"from2", b"from3", b"sub"]),
        ("merged/sub", &[b"a", b"b"]),
        ("links", &[b"dangling", b"passwd", b"rel", b"up"]),
        ("xattr", &[b"below", b"tagged"]),
        ("dirwins", &[b"x"]),
        ("emptydir", &[]),
    ];
    for (dir, want) in expect {
        assert_eq!(
            listing(&t.p(dir)),
            names(want),
            "readdir of {dir:?} through fimfs"
        );
    }
}

#[test]
fn opaque_directories_hide_what_is_below() {
    let t = mount_fixtures("mr-opaque", false, &[]);
    let expect: &[(&str, &[&[u8]])] = &[
        ("opq-trusted", &[b"visible"]),
        ("opq-user", &[b"mid", b"top"]),
        ("opq-wh", &[b"mid", b"top"]),
    ];
    for (dir, want) in expect {
        assert_eq!(listing(&t.p(dir)), names(want), "readdir of {dir:?}");
    }
    for hidden in [
        "opq-trusted/hidden2",
        "opq-trusted/hidden3",
        "opq-user/hidden",
        "opq-wh/hidden",
    ] {
        assert_eq!(lstat_errno(&t.p(hidden)), libc::ENOENT, "lstat {hidden}");
    }
    assert_eq!(
        read(&t.p("opq-user/mid")),
        "lower2 carries user.overlay.opaque=y\n"
    );
    assert_eq!(
        read(&t.p("opq-wh/top")),
        "lower1 is above the opaque marker: merged\n"
    );
}

#[test]
fn whited_out_and_marker_names_give_enoent() {
    let t = mount_fixtures("mr-whiteout", false, &[]);
    for hidden in [
        "gone-chr",
        "gone-wh",
        "gone-tx",
        "merged/gone-ux",
        "deadtree",
        "deadtree/inside",
        "dirwins/y",
        "stray/nothing-below",
        ".wh.gone-wh",
        "opq-wh/.wh..wh..opq",
    ] {
        let p = t.p(hidden);
        assert_eq!(lstat_errno(&p), libc::ENOENT, "lstat {hidden}");
        assert_eq!(
            errno_of(&format!("open {hidden}"), fs::File::open(&p)),
            libc::ENOENT,
            "open {hidden}"
        );
    }
    // A file hides the directory below it: its children are not there either.
    assert_eq!(lstat_errno(&t.p("clash/under")), libc::ENOTDIR);
    // A whiteout hides only what is below it.
    assert_eq!(
        read(&t.p("revived")),
        "revived from lower1, above the whiteout\n"
    );
}

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
        let md = fs::symlink_metadata(l[layer].join(rel)).unwrap();
        assert!(
            md.file_type().is_char_device() && md.rdev() == 0,
            "lower{}/{rel}",
            layer + 1
        );
    }
    let tree = walk(t.m.path());
    for (dir, entries) in &tree.listings {
        for (name, kind) in entries {
            let path = show(&[dir.as_slice(), b"/", name].concat());
            assert!(!name.starts_with(b".wh."), "marker {path} is listed");
            assert!(
                !(name.as_slice() == b"gone-chr" || name.as_slice() == b"gone-tx"),
                "whited-out {path} is listed"
            );
            if *kind == Kind::CharDev {
                let full = if dir.is_empty() {
                    name.clone()
                } else {
                    [dir.as_slice(), b"/", name].concat()
                };
                let rdev = fs::symlink_metadata(t.pb(&full)).map(|m| m.rdev());
                assert_ne!(rdev.ok(), Some(0), "the 0/0 whiteout {path} is listed");
            }
        }
        let mut sorted = entries.clone();
        sorted.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(
            sorted.len(),
            entries.len(),
            "{} lists a name twice",
            show(dir)
        );
    }
    assert_eq!(
        listing(&t.p("stray")),
        names(&[b"kept"]),
        "a whiteout in an unmerged directory must not be listed (the kernel lists it)"
    );
    assert!(
        tree.entries.len() >= 40,
        "the walk saw too little: {}",
        tree.entries.len()
    );
}

#[test]
fn shadowed_files_read_the_top_layer() {
    let t = mount_fixtures("mr-shadow", false, &[]);
    assert_eq!(read(&t.p("shadow.txt")), "shadow.txt from lower1\n");
    assert_eq!(read(&t.p("merged/common")), "merged/common from lower2\n");
    assert_eq!(
        read(&t.p("clash")),
        "a file in lower1 hides the directory below\n"
    );
    assert!(fs::symlink_metadata(t.p("clash")).unwrap().is_file());
    assert!(fs::symlink_metadata(t.p("dirwins")).unwrap().is_dir());
    // The top-most copy of a merged directory gives its attributes.
    let merged = fs::symlink_metadata(t.p("merged")).unwrap();
    assert_eq!(
        merged.mode() & 0o7777,
        0o755,
        "mode of merged (lower3's is 0700)"
    );
}

#[test]
fn files_from_every_layer_open_and_read() {
    let t = mount_fixtures("mr-layers", false, &[]);
    let cases: &[(&[u8], usize)] = &[
        (b"merged/from1", 0),
        (b"merged/from2", 1),
        (b"merged/from3", 2),
        (b"merged/sub/a", 0),
        (b"merged/sub/b", 2),
        (b"opq-user/mid", 1),
        (b"xattr/below", 2),
        (b"xattr/tagged", 1),
        (b"bin/hello.sh", 0),
        (b"readonly.txt", 2),
        (b"private.txt", 2),
        (b"empty", 1),
        (b"names/\xff\xfe", 0),
        (b"names/ReadMe.TXT", 1),
    ];
    for (rel, layer) in cases {
        let backing = t.layers.lowers[*layer].join(OsStr::from_bytes(rel));
        let want = fs::read(&backing).unwrap_or_else(|e| panic!("{}: {e}", backing.display()));
        let got = fs::read(t.pb(rel)).unwrap_or_else(|e| panic!("read {}: {e}", show(rel)));
        assert_eq!(
            got,
            want,
            "contents of {} (from lower{})",
            show(rel),
            layer + 1
        );
    }
    let long = [b"names/".as_slice(), &long_name()].concat();
    assert_eq!(
        fs::read(t.pb(&long)).expect("read the 255-byte name"),
        b"255-byte name\n"
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
    assert_eq!(read(&t.p("links/rel")), "only in lower3\n");
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

fn inode_map(root: &Path) -> BTreeMap<Vec<u8>, (u64, u64)> {
    walk(root)
        .entries
        .keys()
        .map(|rel| {
            let p = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(OsStr::from_bytes(rel))
            };
            let md =
                fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            (rel.clone(), (md.ino(), md.dev()))
        })
        .collect()
}

fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "3\n").expect("echo 3 > /proc/sys/vm/drop_caches");
}

#[test]
fn inode_numbers_are_stable() {
    let t = mount_fixtures("mr-ino-stable", false, &[]);
    let first = inode_map(t.m.path());
    assert_eq!(
        first,
        inode_map(t.m.path()),
        "st_ino changed between two walks"
    );
    drop_caches();
    assert_eq!(
        first,
        inode_map(t.m.path()),
        "st_ino changed after drop_caches"
    );
    // Open files agree with lstat.
    for rel in ["shadow.txt", "merged/from3", "names/ReadMe.TXT"] {
        let f = fs::File::open(t.p(rel)).unwrap();
        assert_eq!(
            f.metadata().unwrap().ino(),
            first[rel.as_bytes()].0,
            "fstat vs lstat of {rel}"
        );
    }
}

#[test]
fn readdir_d_ino_equals_st_ino() {
    let t = mount_fixtures("mr-dino", false, &[]);
    let tree = walk(t.m.path());
    let mut checked = 0;
    for dir in tree.listings.keys() {
        let abs = if dir.is_empty() {
            t.m.path().to_path_buf()
        } else {
            t.pb(dir)
        };
        for (name, d_ino) in dir_inos(&abs) {
            let st_ino = fs::symlink_metadata(abs.join(OsStr::from_bytes(&name)))
                .unwrap_or_else(|e| panic!("lstat {}/{}: {e}", show(dir), show(&name)))
                .ino();
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

#[test]
fn distinct_files_have_distinct_inodes() {
    let t = mount_fixtures("mr-ino-distinct", false, &[]);
    let mut seen: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for (rel, key) in inode_map(t.m.path()) {
        if let Some(other) = seen.insert(key, rel.clone()) {
            panic!("{} and {} share st_ino {}", show(&other), show(&rel), key.0);
        }
    }
}

#[test]
fn merged_directories_have_one_link() {
    let t = mount_fixtures("mr-nlink", false, &[]);
    for dir in [
        "",
        "merged",
        "merged/sub",
        "links",
        "names",
        "opq-user",
        "opq-wh",
        "xattr",
    ] {
        let md = fs::symlink_metadata(t.p(dir)).unwrap();
        assert_eq!(md.nlink(), 1, "st_nlink of the merged directory {dir:?}");
    }
}

#[test]
fn odd_names_work() {
    let t = mount_fixtures("mr-names", false, &[]);
    let long = long_name();
    assert_eq!(long.len(), 255);
    assert_eq!(
        listing(&t.p("names")),
        names(&[b"ReadMe.TXT", b"\xff\xfe", &long]),
        "readdir of names/"
    );
    for name in [b"\xff\xfe".as_slice(), &long, b"ReadMe.TXT"] {
        let p = t.p("names").join(OsStr::from_bytes(name));
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", show(name)));
        assert!(md.is_file(), "{} is a file", show(name));
        assert_eq!(
            fs::read(&p).unwrap().len() as u64,
            md.len(),
            "read {}",
            show(name)
        );
    }
    // No case-folding unless asked for.
    assert_eq!(lstat_errno(&t.p("names/readme.txt")), libc::ENOENT);
    let too_long = [b"names/".as_slice(), &[b'n'; 256]].concat();
    let e = lstat_errno(&t.pb(&too_long));
    assert!(
        e == libc::ENAMETOOLONG || e == libc::ENOENT,
        "lstat of a 256-byte name: errno {e}"
    );
}

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
        fs::set_permissions(t.p("shadow.txt"), fs::Permissions::from_mode(0o600)),
    );
    erofs(
        "chown",
        std::os::unix::fs::lchown(t.p("shadow.txt"), Some(1), Some(1)),
    );
    erofs(
        "mkfifo",
        nix::unistd::mkfifo(
            &t.p("new-fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .map_err(std::io::Error::from),
    );
    erofs(
        "setxattr",
        set_xattr(&t.p("xattr/tagged"), "user.new", b"1")
            .map_err(std::io::Error::from_raw_os_error),
    );
    let now = nix::sys::time::TimeSpec::new(1, 0);
    erofs(
        "utimensat",
        nix::sys::stat::utimensat(
            None,
            &t.p("shadow.txt"),
            &now,
            &now,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from),
    );
    let after: Vec<Snapshot> = t.layers.lowers.iter().map(|l| snapshot(l)).collect();
    assert!(before == after, "a refused write changed a lower layer");
    assert_eq!(lstat_errno(&t.p("new-file")), libc::ENOENT);
}

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
    assert_eq!(read(&t.p("shadow.txt")), "shadow.txt from lower1\n");
    assert!(
        listing(&t.layers.upper).is_empty(),
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

fn has_overlay_name(names: &[Vec<u8>]) -> Option<String> {
    names
        .iter()
        .find(|n| n.windows(9).any(|w| w == b".overlay.") || n.starts_with(b"user.fuseoverlayfs."))
        .map(|n| show(n))
}

#[test]
fn user_xattrs_are_shown_and_overlay_xattrs_never() {
    let t = mount_fixtures("mr-xattr", false, &[]);
    assert_eq!(
        list_xattrs(&t.p("xattr/tagged")),
        Ok(vec![b"user.demo".to_vec()])
    );
    assert_eq!(
        get_xattr(&t.p("xattr/tagged"), "user.demo"),
        Ok(b"hello".to_vec())
    );
    // A merged directory's xattrs come from its top-most copy.
    assert_eq!(
        get_xattr(&t.p("xattr"), "user.dirtag"),
        Ok(b"from-lower2".to_vec())
    );

    for (rel, name) in [
        ("opq-trusted", "trusted.overlay.opaque"),
        ("opq-user", "user.overlay.opaque"),
    ] {
        assert_eq!(
            get_xattr(&t.p(rel), name),
            Err(libc::ENODATA),
            "getxattr {rel} {name}"
        );
    }
    let tree = walk(t.m.path());
    let mut listed = 0;
    for rel in tree.entries.keys() {
        let path = if rel.is_empty() {
            t.m.path().to_path_buf()
        } else {
            t.pb(rel)
        };
        let names = list_xattrs(&path)
            .unwrap_or_else(|errno| panic!("listxattr {}: errno {errno}", show(rel)));
        listed += names.len();
        assert_eq!(has_overlay_name(&names), None, "listxattr of {}", show(rel));
    }
    assert!(listed >= 2, "no xattr listed at all");

    let out = Command::new("getfattr")
        .args(["--absolute-names", "-R", "-h", "-d", "-m", "-"])
        .arg(t.m.path())
        .output()
        .expect("run getfattr");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("user.demo=\"hello\""),
        "getfattr output:\n{text}"
    );
    assert!(
        !text.contains(".overlay."),
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

#[test]
fn overlay_xattrs_cannot_be_set_through_the_mount() {
    let t = mount_fixtures("mr-xattr-set", true, &[]);
    for (rel, name) in [
        ("opq-wh", "trusted.overlay.opaque"),
        ("merged", "user.overlay.opaque"),
        ("shadow.txt", "user.overlay.whiteout"),
        ("shadow.txt", "trusted.overlay.redirect"),
    ] {
        assert_eq!(
            set_xattr(&t.p(rel), name, b"y"),
            Err(libc::EPERM),
            "setxattr {rel} {name}"
        );
    }
    assert_eq!(
        listing(&t.p("merged")),
        names(&[b"common", b"from1", b"from2", b"from3", b"sub"])
    );
    // An ordinary xattr can be set (the refusal above is about the name).
    assert_eq!(set_xattr(&t.p("shadow.txt"), "user.test", b"1"), Ok(()));
    assert_eq!(
        get_xattr(&t.p("shadow.txt"), "user.test"),
        Ok(b"1".to_vec())
    );
}

#[test]
fn special_files_keep_their_type_and_mode() {
    let t = mount_fixtures("mr-special", false, &[]);
    let fifo = fs::symlink_metadata(t.p("fifo")).unwrap();
    assert!(
        fifo.file_type().is_fifo(),
        "fifo is a {:?}",
        fifo.file_type()
    );
    let tree = walk(t.m.path());
    let root = &tree.listings[b"".as_slice()];
    assert!(
        root.contains(&(b"fifo".to_vec(), Kind::Fifo)),
        "d_type of fifo: {root:?}"
    );

    let null = fs::symlink_metadata(t.p("devices/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        null.rdev(),
        nix::sys::stat::makedev(1, 3),
        "rdev of devices/null"
    );

    for (rel, mode) in [
        ("bin/hello.sh", 0o755),
        ("readonly.txt", 0o444),
        ("private.txt", 0o600),
        ("devices", 0o555),
        ("devices/null", 0o666),
        ("fifo", 0o644),
    ] {
        assert_eq!(
            fs::symlink_metadata(t.p(rel)).unwrap().mode() & 0o7777,
            mode,
            "mode of {rel}"
        );
    }
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

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // "PID (comm) STATE ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
    }
}

fn wait_exit_of(pid: u32) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > DAEMON_DEADLINE {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
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
        read(&layers.mnt.join("shadow.txt")),
        "shadow.txt from lower1\n"
    );

    let work_root = tmp.join("fx/work");
    let pids: Vec<u32> = listing(&work_root)
        .iter()
        .map(|n| {
            String::from_utf8_lossy(n)
                .parse()
                .unwrap_or_else(|_| panic!("{}: not a PID", show(n)))
        })
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
    assert!(
        wait_exit_of(pid),
        "daemon {pid} still running after the unmount"
    );
    assert!(
        !work_root.join(pid.to_string()).exists(),
        "workdir left behind"
    );
}

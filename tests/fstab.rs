//! The mount as the mount table, `mount(8)` and fstab see it: type `fuse.fimfs`
//! with the layers as its source (as root, and as a user through fusermount3);
//! `mount --fstab FILE -a` through `mount.fuse3`, and `umount` ending the daemon;
//! fuse-overlayfs' `fuse-overlayfs none MNT -o lowerdir=…` form.

mod common;

use common::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NOBODY: u32 = 65534;

/// The mountinfo line of the mount at exactly `mnt` (the top one).
fn line_at(mnt: &Path) -> fimfs::mountinfo::MountLine {
    fimfs::mountinfo::read()
        .into_iter()
        .rev()
        .find(|m| m.point == mnt)
        .unwrap_or_else(|| panic!("{} is not a mount point", mnt.display()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Two lowers with a file each, an upper, a mount point.
fn layers(t: &TempDir, lower1: &str) -> (Vec<PathBuf>, PathBuf, PathBuf) {
    let l1 = t.mkdir(lower1);
    let l2 = t.mkdir("l2");
    fs::write(l1.join("top"), "top\n").unwrap();
    fs::write(l2.join("bottom"), "bottom\n").unwrap();
    (vec![l1, l2], t.join("u"), t.mkdir("mnt"))
}

fn source_of(upper: &Path, lowers: &[PathBuf]) -> String {
    let mut s = format!("{}=RW", upper.display());
    for l in lowers {
        s.push_str(&format!(":{}=RO", l.display()));
    }
    s
}

/// `findmnt -t fuse.fimfs` lists `mnt`.
fn findmnt_lists(mnt: &Path) -> bool {
    let out = Command::new("findmnt")
        .args(["-n", "-l", "-o", "TARGET", "-t", "fuse.fimfs"])
        .output()
        .expect("run findmnt");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| Path::new(l.trim()) == mnt)
}

#[test]
fn a_root_mount_is_fuse_fimfs_and_names_its_layers() {
    require_root_and_fuse();
    let t = TempDir::new("fstab-root");
    // A comma and a space: the source is not an option string for mount(2).
    let (lowers, upper, mnt) = layers(&t, "l1, odd");
    let g = MountGuard::new(&lowers, Some(&upper), &mnt, &[]);
    let m = line_at(&mnt);
    assert_eq!(m.fstype, "fuse.fimfs");
    assert_eq!(text(&m.source), source_of(&upper, &lowers));
    assert!(findmnt_lists(&mnt), "findmnt -t fuse.fimfs misses {mnt:?}");
    drop(g);

    // Read-only: the lowers alone.
    let g = MountGuard::new(&lowers[1..], None, &mnt, &[]);
    assert_eq!(
        text(&line_at(&mnt).source),
        format!("{}=RO", lowers[1].display())
    );
    drop(g);
}

/// Forty long lowers do not fit in a readable source: the upper and the top
/// lowers are named, the rest counted.
#[test]
fn a_long_lower_list_is_abbreviated_from_the_bottom() {
    require_root_and_fuse();
    let t = TempDir::new("fstab-long");
    let lowers: Vec<PathBuf> = (0..40)
        .map(|i| {
            t.mkdir(format!(
                "{}-{i:02}",
                "a-long-layer-directory-name".repeat(2)
            ))
        })
        .collect();
    let (upper, mnt) = (t.join("u"), t.mkdir("mnt"));
    let _g = MountGuard::new(&lowers, Some(&upper), &mnt, &[]);
    let src = text(&line_at(&mnt).source);
    assert!(src.len() <= 1024, "{} bytes: {src}", src.len());
    let head = format!("{}=RW:{}=RO:", upper.display(), lowers[0].display());
    assert!(src.starts_with(&head), "{src}");
    let named = src.matches("=RO").count();
    assert!(named > 1 && named < 40, "{src}");
    assert!(
        src.ends_with(&format!(":...+{}", 40 - named)),
        "the count of lowers left out: {src}"
    );
}

/// A user's mount goes through fusermount3, which builds the type from
/// `subtype=` and unescapes `\,` in `fsname=`.
#[test]
fn a_user_mount_through_fusermount3_is_fuse_fimfs_and_names_its_layers() {
    require_root_and_fuse();
    let t = TempDir::new("fstab-user");
    let (lowers, upper, mnt) = layers(&t, "l1,comma");
    let work = t.mkdir("work");
    fs::create_dir(&upper).unwrap();
    for d in [&upper, &mnt, &work] {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let mut perms = fs::metadata(t.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(t.path(), perms).unwrap();
    let out = setpriv(NOBODY, FIMFS)
        .arg("mount")
        .arg("-o")
        .arg(format!("workdir={}", work.join("w").display()))
        .arg(lowers_arg(&lowers))
        .arg(&upper)
        .arg(&mnt)
        .stdout(Stdio::null())
        .output()
        .expect("run fimfs as nobody");
    assert!(
        out.status.success(),
        "fimfs mount as {NOBODY}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = line_at(&mnt);
    assert_eq!(m.fstype, "fuse.fimfs");
    assert_eq!(text(&m.source), source_of(&upper, &lowers));
    let st = setpriv(NOBODY, "fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .expect("fusermount3 -u");
    assert!(st.success(), "fusermount3 -u as {NOBODY}");
}

/// `mount.fuse3` runs the program named by `fuse.TYPE` through `/bin/sh` with
/// mount(8)'s environment, which has no PATH: the shell's default
/// (`/usr/local/sbin:/usr/local/bin:/usr/sbin:…`) applies. This puts the fimfs
/// under test first on it, as `/usr/local/sbin/fimfs`, and puts back whatever
/// was there.
struct OnMountPath {
    link: PathBuf,
    saved: Option<PathBuf>,
}

impl OnMountPath {
    fn new(name: &str) -> OnMountPath {
        let link = Path::new("/usr/local/sbin").join(name);
        fs::create_dir_all("/usr/local/sbin").unwrap();
        let saved = fs::symlink_metadata(&link).is_ok().then(|| {
            let s = link.with_file_name(format!(".{name}.fimfs-test-{}", std::process::id()));
            fs::rename(&link, &s).unwrap_or_else(|e| panic!("move {} aside: {e}", link.display()));
            s
        });
        let guard = OnMountPath { link, saved };
        std::os::unix::fs::symlink(FIMFS, &guard.link)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", guard.link.display()));
        guard
    }
}

impl Drop for OnMountPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.link);
        if let Some(s) = &self.saved {
            let _ = fs::rename(s, &self.link);
        }
    }
}

/// The fimfs processes whose command line names `mnt`.
fn daemons_of(mnt: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for p in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let exe = fs::read_link(p.path().join("exe")).unwrap_or_default();
        let cmdline = fs::read(p.path().join("cmdline")).unwrap_or_default();
        let names_mnt = cmdline
            .split(|&b| b == 0)
            .any(|a| a == mnt.as_os_str().as_bytes());
        if exe.file_name().is_some_and(|n| n == "fimfs") && names_mnt && process_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn an_fstab_line_mounts_through_mount_fuse3_and_umount_ends_the_daemon() {
    require_root_and_fuse();
    let t = TempDir::new("fstab-a");
    let (lowers, upper, mnt) = layers(&t, "l1");
    let other = t.mkdir("noauto-mnt");
    let fstab = t.join("fstab");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers_arg(&lowers).to_string_lossy(),
        upper.display(),
        t.join("work").display()
    );
    fs::write(
        &fstab,
        format!(
            "# a test fstab\n\
             fimfs-demo {m} fuse.fimfs {opts},nofail,_netdev,x-systemd.automount,x-fimfs.note=1 0 0\n\
             fimfs-other {o} fuse.fimfs noauto,{opts} 0 0\n",
            m = mnt.display(),
            o = other.display()
        ),
    )
    .unwrap();
    let _path = OnMountPath::new("fimfs");
    let out = Command::new("mount")
        .arg("--fstab")
        .arg(&fstab)
        .arg("-a")
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount --fstab {} -a: {}",
        fstab.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(mnt.join("top")).unwrap(), "top\n");
    assert_eq!(fs::read_to_string(mnt.join("bottom")).unwrap(), "bottom\n");
    fs::write(mnt.join("new"), "new\n").unwrap();
    assert_eq!(fs::read_to_string(upper.join("new")).unwrap(), "new\n");
    assert!(findmnt_lists(&mnt), "findmnt -t fuse.fimfs misses {mnt:?}");
    assert_eq!(text(&line_at(&mnt).source), source_of(&upper, &lowers));
    assert!(!is_fuse_mount(&other), "-a mounted a noauto line");

    let daemons = daemons_of(&mnt);
    assert_eq!(daemons.len(), 1, "one daemon serves {mnt:?}: {daemons:?}");
    let st = Command::new("umount").arg(&mnt).status().expect("umount");
    assert!(st.success(), "umount {}", mnt.display());
    assert_eq!(
        wait_gone(&daemons),
        Vec::<u32>::new(),
        "the daemon outlived umount"
    );
    assert!(!is_fuse_mount(&mnt));
}

/// What `mount -t fuse.fuse-overlayfs none MNT -o lowerdir=…` and fstab run:
/// fuse-overlayfs 1.10 ignores `none`, and so does fimfs under that name.
#[test]
fn fuse_overlayfs_takes_a_source_before_the_mountpoint() {
    require_root_and_fuse();
    let t = TempDir::new("fstab-fo");
    let (lowers, upper, mnt) = layers(&t, "l1");
    let prog = t.join("fuse-overlayfs");
    std::os::unix::fs::symlink(FIMFS, &prog).unwrap();
    let opts = format!(
        "rw,lowerdir={},upperdir={},workdir={}",
        lowers_arg(&lowers).to_string_lossy(),
        upper.display(),
        t.join("work").display()
    );
    let err = t.join("stderr");
    let st = Command::new(&prog)
        .arg("none")
        .arg(&mnt)
        .args(["-o", &opts])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .status()
        .expect("run fuse-overlayfs");
    assert!(
        st.success(),
        "fuse-overlayfs none MNT -o …: {}",
        fs::read_to_string(&err).unwrap_or_default()
    );
    assert_eq!(fs::read_to_string(mnt.join("bottom")).unwrap(), "bottom\n");
    let daemons = daemons_of(&mnt);
    let st = Command::new("umount").arg(&mnt).status().expect("umount");
    assert!(st.success());
    assert_eq!(
        wait_gone(&daemons),
        Vec::<u32>::new(),
        "the daemon outlived umount"
    );
}

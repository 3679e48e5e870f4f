//! `-o squash_to_uid=N,squash_to_gid=N` through real mounts (SPEC §3): every
//! inode of every layer is reported as owned by N, chown to anyone succeeds and
//! changes nothing visible, new files belong to the daemon's user, and a package
//! manager's moves (`tar --same-owner` of files owned by several users, `chown -R`,
//! `chmod` of copied-up files) succeed with their modes kept. Run as root, and as an
//! unprivileged user whose mount goes through `fusermount3`, which is how FlatImage
//! runs it.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const NOBODY: u32 = 65534;

fn sh(script: &str, as_user: Option<u32>) {
    let mut cmd = match as_user {
        Some(id) => setpriv(id, "sh"),
        None => Command::new("sh"),
    };
    let out = cmd.arg("-ec").arg(script).output().expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` as {as_user:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An archive of files owned by several users, with modes a package has.
fn archive(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("pkg-src");
    put(&src.join("usr/bin/tool"), "#!/bin/sh\n");
    put(&src.join("usr/share/doc/README"), "doc\n");
    put(&src.join("etc/secret.conf"), "secret\n");
    let owners = [
        ("usr/bin/tool", 0o4755, 0, 0),
        ("usr/share/doc/README", 0o644, 1000, 1000),
        ("etc/secret.conf", 0o640, 2000, 3000),
    ];
    for (p, mode, uid, gid) in owners {
        let f = src.join(p);
        std::os::unix::fs::chown(&f, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
    }
    let tar = dir.join("pkg.tar");
    sh(
        &format!(
            "tar -C {} --numeric-owner -cf {} .",
            src.display(),
            tar.display()
        ),
        None,
    );
    fs::set_permissions(&tar, fs::Permissions::from_mode(0o644)).unwrap();
    tar
}

/// What a package manager does, through the mount at `m`, as `user`.
fn package_manager_moves(m: &Path, tar: &Path, user: Option<u32>) {
    sh(
        &format!(
            "mkdir -p {m}/opt/pkg
             tar -C {m}/opt/pkg --same-owner --numeric-owner -xf {tar}
             chown -R 0:0 {m}/opt/pkg {m}/lower
             chown 123:456 {m}/lower/file
             chmod 0600 {m}/lower/file
             chmod 0750 {m}/lower/dir",
            m = m.display(),
            tar = tar.display()
        ),
        user,
    );
}

fn check_view(m: &Path, uid: u32, gid: u32) {
    for p in [
        "",
        "lower",
        "lower/file",
        "lower/dir",
        "lower/dir/inner",
        "other-owner",
        "opt/pkg/usr/bin/tool",
        "opt/pkg/etc/secret.conf",
        "opt/pkg/usr/share/doc/README",
    ] {
        let md = lstat(&m.join(p));
        assert_eq!((md.uid(), md.gid()), (uid, gid), "owner of /{p}");
    }
    let mode = |p: &str| lstat(&m.join(p)).mode() & 0o7777;
    assert_eq!(mode("lower/file"), 0o600, "chmod of a copied-up file");
    assert_eq!(mode("lower/dir"), 0o750, "chmod of a copied-up directory");
    // tar restored 04755; the `chown -R` after it cleared the set-uid bit, as chown
    // does on any filesystem (the kernel sends that mode change along with it).
    assert_eq!(
        mode("opt/pkg/usr/bin/tool"),
        0o755,
        "set-uid bit cleared by chown"
    );
    assert_eq!(mode("opt/pkg/etc/secret.conf"), 0o640);
    assert_eq!(mode("opt/pkg/usr/share/doc/README"), 0o644);
    assert_eq!(read(&m.join("opt/pkg/etc/secret.conf")), b"secret\n");
}

fn lowers(s: &Stack) {
    put(&s.l(1, "lower/file"), "file\n");
    put(&s.l(1, "lower/dir/inner"), "inner\n");
    put(&s.l(1, "other-owner"), "x\n");
    std::os::unix::fs::chown(s.l(1, "lower/file"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(s.l(1, "other-owner"), Some(4242), Some(4343)).unwrap();
}

#[test]
fn squash_as_root() {
    let mut s = Stack::new("squash-root", 1);
    lowers(&s);
    s.seal_lowers();
    let tar = archive(s.tmp.path());
    let m = s.mount_opts(&["squash_to_uid=1234,squash_to_gid=5678"]);
    package_manager_moves(m.path(), &tar, None);
    check_view(m.path(), 1234, 5678);
    // New files belong to the daemon's user (root), whatever tar asked for.
    let up = lstat(&s.u("opt/pkg/etc/secret.conf"));
    assert_eq!((up.uid(), up.gid()), (0, 0));
    assert_eq!(up.mode() & 0o7777, 0o640);
    // Each option alone.
    drop(m);
    let m = s.mount_opts(&["squash_to_uid=77"]);
    let md = lstat(&m.join("other-owner"));
    assert_eq!((md.uid(), md.gid()), (77, 4343));
    drop(m);
    let m = s.mount_opts(&["squash_to_gid=88"]);
    let md = lstat(&m.join("other-owner"));
    assert_eq!((md.uid(), md.gid()), (4242, 88));
    drop(m);
    s.assert_lowers_untouched();
}

/// An unprivileged user mounts through `fusermount3` and works as "root" would.
#[test]
fn squash_as_an_unprivileged_user() {
    let mut s = Stack::new("squash-user", 1);
    lowers(&s);
    s.seal_lowers();
    let tar = archive(s.tmp.path());
    // The user owns the upper, the workdir and the mount point; the lowers are
    // readable by everyone.
    let work = s.tmp.mkdir("work");
    for d in [s.tmp.path(), &s.upper, &s.mnt, &work] {
        if d != s.tmp.path() {
            std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_fimfs");
    sh(
        &format!(
            "{bin} mount -o squash_to_uid={NOBODY},squash_to_gid={NOBODY},workdir={w} {l} {u} {m}",
            w = work.display(),
            l = s.lowers[0].display(),
            u = s.upper.display(),
            m = s.mnt.display()
        ),
        Some(NOBODY),
    );
    let fstype = mounts()
        .into_iter()
        .find(|(p, _)| p == &s.mnt)
        .map(|(_, t)| t);
    assert_eq!(
        fstype.as_deref(),
        Some("fuse.fimfs"),
        "the user's mount is live"
    );
    package_manager_moves(&s.mnt, &tar, Some(NOBODY));
    // Read the view as the user too (no allow_other: root cannot look in).
    sh(
        &format!(
            "test \"$(stat -c %u:%g {m}/other-owner {m}/opt/pkg/usr/bin/tool | sort -u)\" = {NOBODY}:{NOBODY}
             test \"$(stat -c %a {m}/lower/file {m}/opt/pkg/usr/bin/tool)\" = \"600
755\"
             test \"$(cat {m}/opt/pkg/etc/secret.conf)\" = secret",
            m = s.mnt.display()
        ),
        Some(NOBODY),
    );
    sh(&format!("fusermount3 -u {}", s.mnt.display()), Some(NOBODY));
    // On disk: the user's files, modes kept.
    let up = lstat(&s.u("opt/pkg/usr/bin/tool"));
    assert_eq!((up.uid(), up.gid()), (NOBODY, NOBODY));
    assert_eq!(up.mode() & 0o7777, 0o755);
    assert_eq!(lstat(&s.u("lower/file")).mode() & 0o7777, 0o600);
    s.assert_lowers_untouched();
}

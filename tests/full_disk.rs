//! A full upper: the upper and workdir on an 8 MiB tmpfs. Copy-ups, writes and
//! directory renames that do not fit fail with ENOSPC; nothing half-copied
//! becomes visible (the lower version stays in the view, nothing stays in the
//! upper or the workdir); the daemon keeps serving; once space is freed the
//! same operations succeed.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MIB: usize = 1024 * 1024;

/// A tmpfs of `size` mounted at `dir`, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Tmpfs {
        mkdirs(dir);
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        lazy_unmount(&self.0);
    }
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn append(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(p)?;
    f.write_all(data)
}

fn write_new(p: &Path, len: usize) -> std::io::Result<()> {
    let mut f = fs::File::create(p)?;
    f.write_all(&vec![7u8; len])?;
    f.sync_all()
}

/// Waits until the filesystem of `dir` has `bytes` free. FUSE sends RELEASE
/// asynchronously after `close`, so a file closed and deleted a moment ago
/// may still be open in the daemon, and its blocks not yet freed. A bound
/// against a leak, not a timing.
fn wait_for_space(dir: &Path, bytes: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = nix::sys::statvfs::statvfs(dir).unwrap();
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free >= bytes {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "space was not freed: {free} bytes free, {bytes} expected"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn enospc_is_reported_and_nothing_half_copied_shows() {
    let s = Stack::new("full-disk", 1);
    let big = fill(6, 4 * MIB);
    put(&s.l(1, "big4"), &big);
    for i in 0..3 {
        put(&s.l(1, &format!("tree/f{i}")), fill(10 + i, MIB));
    }
    put(&s.l(1, "tree/sub/small"), "small\n");
    put(&s.l(1, "keep"), "keep\n");

    let small = Tmpfs::new(&s.tmp.join("small"), "8m");
    let upper = small.0.join("upper");
    let work = small.0.join("work");
    mkdirs(&upper);
    let m = MountGuard::new(
        &s.lowers,
        Some(&upper),
        &s.mnt,
        &[&format!("workdir={}", work.display())],
    );
    // Fill most of it through the mount: 2 MiB stay free.
    write_new(&s.m("filler"), 6 * MIB).expect("6 MiB fit in 8");

    // Copy-up of a 4 MiB lower file does not fit.
    let e = errno_of(append(&s.m("big4"), b"X"));
    assert_eq!(e, Some(libc::ENOSPC), "append to big4");
    assert_eq!(read(&s.m("big4")), big, "the view keeps the lower big4");
    assert!(!upper.join("big4").exists(), "a partial big4 in the upper");
    assert!(
        entries(&work).is_empty(),
        "staged leftovers: {:?}",
        entries(&work)
    );

    // Renaming a 3 MiB lower directory copies it: does not fit either.
    let e = errno_of(fs::rename(s.m("tree"), s.m("tree2")));
    assert_eq!(e, Some(libc::ENOSPC), "rename of tree");
    assert_eq!(names(&s.m("tree")), ["f0", "f1", "f2", "sub"]);
    assert_eq!(read(&s.m("tree/f2")), fill(12, MIB));
    assert!(!s.m("tree2").exists());
    assert!(!upper.join("tree2").exists() && !upper.join("tree").exists());
    assert!(
        entries(&work).is_empty(),
        "staged leftovers: {:?}",
        entries(&work)
    );

    // A new file larger than what is left.
    let e = errno_of(write_new(&s.m("toolarge"), 3 * MIB));
    assert_eq!(e, Some(libc::ENOSPC), "writing toolarge");
    fs::remove_file(s.m("toolarge")).unwrap();
    wait_for_space(&upper, 2 * MIB as u64);

    // The daemon keeps serving.
    assert_eq!(read_str(&s.m("keep")), "keep\n");
    put(&s.m("note"), "still here\n");
    assert_eq!(read_str(&s.m("note")), "still here\n");

    // Space freed: everything works.
    fs::remove_file(s.m("filler")).unwrap();
    wait_for_space(&upper, 7 * MIB as u64);
    append(&s.m("big4"), b"X").expect("copy-up after freeing space");
    let mut grown = big.clone();
    grown.push(b'X');
    assert_eq!(read(&s.m("big4")), grown);
    fs::rename(s.m("tree"), s.m("tree2")).expect("rename after freeing space");
    assert_eq!(read(&s.m("tree2/f2")), fill(12, MIB));
    assert_eq!(read_str(&s.m("tree2/sub/small")), "small\n");
    assert!(!s.m("tree").exists());
    unmount_clean(m);
    assert_eq!(read(&upper.join("big4")), grown);
    drop(small);
}

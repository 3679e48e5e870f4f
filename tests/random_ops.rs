//! A seeded random walk of namespace and data operations (create, write at offsets,
//! truncate, O_TRUNC, rename of files and directories with and without
//! `RENAME_NOREPLACE`/`RENAME_EXCHANGE`, link, unlink, mkdir, rmdir, rm -r, chmod,
//! symlink) applied to a fimfs mount over three generated lowers and, in the same
//! order, to a plain directory holding the same merged tree (copied from the kernel
//! overlay's view of the lowers).
//!
//! Each operation must succeed on both or fail on both with the same errno; every
//! `CHECK_EVERY` operations and at the end the two trees must be identical (names,
//! types, modes, owners, sizes, link counts, contents, symlink targets, user xattrs,
//! readdir lists). Then the upper must mean the same to a fresh fimfs daemon and to
//! the kernel overlay (`userxattr`).
//!
//! Knobs: `FIMFS_RANDOM_OPS` (default 3000), `FIMFS_RANDOM_SEED` (default fixed; the
//! seed is printed on failure so that a run can be replayed).
//!
//! Every operation goes through directory fds opened component by component with
//! `O_NOFOLLOW`, and never follows a final symlink: the generated lowers hold symlinks
//! to `/etc/passwd` and `../../..`, and a wrong type in the mount must not make the
//! test write outside it.

mod common;

use common::*;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const DEFAULT_OPS: u64 = 3000;
const DEFAULT_SEED: u64 = 0x0dd5_eed5;
const CHECK_EVERY: u64 = 100;
// `FIMFS_RANDOM_CHECK_EVERY=1` compares the trees after every operation (slow;
// finds the first operation that made them differ).
const GEN_FILES: usize = 400;
const FILE_MODES: [u32; 7] = [0o644, 0o600, 0o755, 0o4755, 0o640, 0o000, 0o444];
const DIR_MODES: [u32; 5] = [0o755, 0o700, 0o555, 0o1777, 0o711];

// ---------------------------------------------------------------------------------
// Operations

#[derive(Clone, Debug)]
enum Op {
    Create {
        path: Vec<u8>,
        mode: u32,
        seed: u64,
        len: usize,
    },
    Write {
        path: Vec<u8>,
        off: u64,
        seed: u64,
        len: usize,
    },
    Truncate {
        path: Vec<u8>,
        len: u64,
    },
    OTrunc {
        path: Vec<u8>,
        seed: u64,
        len: usize,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        flags: u32,
    },
    Link {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Unlink {
        path: Vec<u8>,
    },
    Mkdir {
        path: Vec<u8>,
        mode: u32,
    },
    Rmdir {
        path: Vec<u8>,
    },
    Chmod {
        path: Vec<u8>,
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
    },
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Create {
                path, mode, len, ..
            } => {
                write!(f, "create {} mode {mode:o}, write {len} bytes", show(path))
            }
            Op::Write { path, off, len, .. } => {
                write!(f, "pwrite {} {len} bytes at {off}", show(path))
            }
            Op::Truncate { path, len } => write!(f, "truncate {} to {len}", show(path)),
            Op::OTrunc { path, len, .. } => {
                write!(f, "open(O_TRUNC) {}, write {len} bytes", show(path))
            }
            Op::Rename { from, to, flags } => {
                write!(
                    f,
                    "renameat2 {} -> {} flags {flags:#x}",
                    show(from),
                    show(to)
                )
            }
            Op::Link { from, to } => write!(f, "link {} -> {}", show(from), show(to)),
            Op::Unlink { path } => write!(f, "unlink {}", show(path)),
            Op::Mkdir { path, mode } => write!(f, "mkdir {} mode {mode:o}", show(path)),
            Op::Rmdir { path } => write!(f, "rmdir {}", show(path)),
            Op::Chmod { path, mode } => write!(f, "chmod {} {mode:o}", show(path)),
            Op::Symlink { target, path } => write!(f, "symlink {} -> {}", show(path), show(target)),
        }
    }
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|c| format!("{c:02x}")).collect()
}

impl Op {
    /// One line, paths in hex: what `FIMFS_RANDOM_KEEP` writes for replaying.
    fn encode(&self) -> String {
        match self {
            Op::Create {
                path,
                mode,
                seed,
                len,
            } => format!("create {} {mode} {seed} {len}", hex(path)),
            Op::Write {
                path,
                off,
                seed,
                len,
            } => format!("write {} {off} {seed} {len}", hex(path)),
            Op::Truncate { path, len } => format!("truncate {} {len}", hex(path)),
            Op::OTrunc { path, seed, len } => format!("otrunc {} {seed} {len}", hex(path)),
            Op::Rename { from, to, flags } => format!("rename {} {} {flags}", hex(from), hex(to)),
            Op::Link { from, to } => format!("link {} {}", hex(from), hex(to)),
            Op::Unlink { path } => format!("unlink {}", hex(path)),
            Op::Mkdir { path, mode } => format!("mkdir {} {mode}", hex(path)),
            Op::Rmdir { path } => format!("rmdir {}", hex(path)),
            Op::Chmod { path, mode } => format!("chmod {} {mode}", hex(path)),
            Op::Symlink { target, path } => format!("symlink {} {}", hex(target), hex(path)),
        }
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn ck(r: libc::c_int) -> Result<(), i32> {
    if r < 0 { Err(last_errno()) } else { Ok(()) }
}

fn cstr(b: &[u8]) -> CString {
    CString::new(b).expect("name without NUL")
}

/// Opens every directory of `rel` but the last component, from `root`, without ever
/// following a symlink; returns the parent's fd and the last name.
fn parent_of(root: &OwnedFd, rel: &[u8]) -> Result<(OwnedFd, CString), i32> {
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let (last, dirs) = parts.split_last().expect("a non-empty path");
    // SAFETY: dup of an fd we own.
    let mut fd = unsafe { OwnedFd::from_raw_fd(ck_fd(libc::dup(root.as_raw_fd()))?) };
    for d in dirs {
        let c = cstr(d);
        // SAFETY: c is NUL-terminated; the result is checked before use.
        let next = ck_fd(unsafe {
            libc::openat(
                fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: a fresh fd from openat.
        fd = unsafe { OwnedFd::from_raw_fd(next) };
    }
    Ok((fd, cstr(last)))
}

fn ck_fd(r: libc::c_int) -> Result<libc::c_int, i32> {
    if r < 0 { Err(last_errno()) } else { Ok(r) }
}

fn open_at(root: &OwnedFd, rel: &[u8], flags: libc::c_int, mode: u32) -> Result<OwnedFd, i32> {
    let (dir, name) = parent_of(root, rel)?;
    // SAFETY: name is NUL-terminated; the fd is checked before use.
    let fd = ck_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: a fresh fd from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pwrite_all(fd: &OwnedFd, data: &[u8], off: u64) -> Result<(), i32> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: the buffer is valid for the given length.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                data[done..].as_ptr().cast(),
                data.len() - done,
                (off + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(last_errno());
        }
        done += n as usize;
    }
    Ok(())
}

fn apply(root: &OwnedFd, op: &Op) -> Result<(), i32> {
    let wr = libc::O_WRONLY | libc::O_NONBLOCK;
    match op {
        Op::Create {
            path,
            mode,
            seed,
            len,
        } => {
            let fd = open_at(root, path, wr | libc::O_CREAT | libc::O_EXCL, *mode)?;
            pwrite_all(&fd, &fill(*seed, *len), 0)
        }
        Op::Write {
            path,
            off,
            seed,
            len,
        } => {
            let fd = open_at(root, path, wr, 0)?;
            pwrite_all(&fd, &fill(*seed, *len), *off)
        }
        Op::Truncate { path, len } => {
            let fd = open_at(root, path, wr, 0)?;
            // SAFETY: plain syscall on an owned fd.
            ck(unsafe { libc::ftruncate(fd.as_raw_fd(), *len as libc::off_t) })
        }
        Op::OTrunc { path, seed, len } => {
            let fd = open_at(root, path, wr | libc::O_TRUNC, 0)?;
            pwrite_all(&fd, &fill(*seed, *len), 0)
        }
        Op::Rename { from, to, flags } => {
            let (fd1, n1) = parent_of(root, from)?;
            let (fd2, n2) = parent_of(root, to)?;
            // SAFETY: both names are NUL-terminated; the fds are open.
            ck(unsafe {
                libc::renameat2(
                    fd1.as_raw_fd(),
                    n1.as_ptr(),
                    fd2.as_raw_fd(),
                    n2.as_ptr(),
                    *flags,
                )
            })
        }
        Op::Link { from, to } => {
            let (fd1, n1) = parent_of(root, from)?;
            let (fd2, n2) = parent_of(root, to)?;
            // SAFETY: as above; flags 0 never follows a symlink.
            ck(unsafe {
                libc::linkat(
                    fd1.as_raw_fd(),
                    n1.as_ptr(),
                    fd2.as_raw_fd(),
                    n2.as_ptr(),
                    0,
                )
            })
        }
        Op::Unlink { path } | Op::Rmdir { path } => {
            let flags = if matches!(op, Op::Rmdir { .. }) {
                libc::AT_REMOVEDIR
            } else {
                0
            };
            let (fd, n) = parent_of(root, path)?;
            // SAFETY: n is NUL-terminated.
            ck(unsafe { libc::unlinkat(fd.as_raw_fd(), n.as_ptr(), flags) })
        }
        Op::Mkdir { path, mode } => {
            let (fd, n) = parent_of(root, path)?;
            // SAFETY: n is NUL-terminated.
            ck(unsafe { libc::mkdirat(fd.as_raw_fd(), n.as_ptr(), *mode) })
        }
        Op::Chmod { path, mode } => {
            let fd = open_at(root, path, libc::O_PATH, 0)?;
            // SAFETY: an all-zero stat is a valid out-buffer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is a valid out-pointer.
            ck(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(libc::ELOOP);
            }
            let p = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes());
            // SAFETY: p names the inode behind fd, which is not a symlink.
            ck(unsafe { libc::chmod(p.as_ptr(), *mode) })
        }
        Op::Symlink { target, path } => {
            let (fd, n) = parent_of(root, path)?;
            let t = cstr(target);
            // SAFETY: both are NUL-terminated.
            ck(unsafe { libc::symlinkat(t.as_ptr(), fd.as_raw_fd(), n.as_ptr()) })
        }
    }
}

fn open_root(p: &Path) -> OwnedFd {
    let c = cpath(p);
    // SAFETY: c is NUL-terminated; the fd is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    assert!(
        fd >= 0,
        "open {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    // SAFETY: a fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// ---------------------------------------------------------------------------------
// Choosing operations from the reference tree

/// Every entry below `root` (not `root` itself) with its type, never following a
/// symlink.
fn list(root: &Path) -> Vec<(Vec<u8>, Kind)> {
    let mut out = Vec::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let rd = fs::read_dir(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
        for de in rd {
            let de = de.unwrap();
            let kind = Kind::of(de.file_type().unwrap());
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(de.file_name().as_bytes());
            if kind == Kind::Dir {
                stack.push(p.clone());
            }
            out.push((p, kind));
        }
    }
    out.sort();
    out
}

struct Chooser {
    rng: XorShift,
    /// Base names that occur in the lowers: reusing them hits whiteouts, shadowed
    /// names and opaque directories.
    lower_names: Vec<Vec<u8>>,
}

impl Chooser {
    fn pick_existing<'a>(
        &mut self,
        tree: &'a [(Vec<u8>, Kind)],
        want: &[Kind],
    ) -> Option<&'a Vec<u8>> {
        let matching: Vec<&(Vec<u8>, Kind)> =
            tree.iter().filter(|(_, k)| want.contains(k)).collect();
        if matching.is_empty() {
            None
        } else {
            Some(&self.rng.pick(&matching).0)
        }
    }

    fn any_existing(&mut self, tree: &[(Vec<u8>, Kind)]) -> Vec<u8> {
        self.rng.pick(tree).0.clone()
    }

    /// A name in an existing directory (root included); often one not there yet.
    fn new_path(&mut self, tree: &[(Vec<u8>, Kind)]) -> Vec<u8> {
        let dirs: Vec<&Vec<u8>> = tree
            .iter()
            .filter(|(_, k)| *k == Kind::Dir)
            .map(|(p, _)| p)
            .collect();
        let mut p = if dirs.is_empty() || self.rng.chance(15) {
            Vec::new()
        } else {
            self.rng.pick(&dirs).to_vec()
        };
        let name = if self.rng.chance(30) && !self.lower_names.is_empty() {
            self.rng.pick(&self.lower_names).clone()
        } else {
            format!("n{}", self.rng.below(40)).into_bytes()
        };
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(&name);
        p
    }

    fn target(&mut self, tree: &[(Vec<u8>, Kind)]) -> Vec<u8> {
        if self.rng.chance(70) {
            self.new_path(tree)
        } else {
            self.any_existing(tree)
        }
    }

    fn next(&mut self, tree: &[(Vec<u8>, Kind)], queue: &mut Vec<Op>) {
        use Kind::*;
        let r = &mut self.rng;
        // With everything deleted, only creations make sense.
        let roll = if tree.is_empty() {
            r.below(12)
        } else {
            r.below(100)
        };
        let seed = r.next_u64();
        let len = match r.below(10) {
            0 => 0,
            1..=6 => 1 + r.below(600),
            _ => 1 + r.below(20_000),
        };
        let op = match roll {
            0..=11 => Op::Create {
                path: self.new_path(tree),
                mode: *self.rng.pick(&FILE_MODES),
                seed,
                len,
            },
            12..=27 => {
                let Some(path) = self
                    .pick_existing(tree, &[File, File, File, Dir, Symlink])
                    .cloned()
                else {
                    return;
                };
                let size = 30_000;
                Op::Write {
                    path,
                    off: self.rng.below(size) as u64,
                    seed,
                    len,
                }
            }
            28..=33 => {
                let Some(path) = self
                    .pick_existing(tree, &[File, File, Dir, Symlink])
                    .cloned()
                else {
                    return;
                };
                Op::Truncate {
                    path,
                    len: self.rng.below(24_000) as u64,
                }
            }
            34..=36 => {
                let Some(path) = self.pick_existing(tree, &[File]).cloned() else {
                    return;
                };
                Op::OTrunc { path, seed, len }
            }
            37..=52 => {
                let from = if self.rng.chance(40) {
                    match self.pick_existing(tree, &[Dir]) {
                        Some(p) => p.clone(),
                        None => return,
                    }
                } else {
                    self.any_existing(tree)
                };
                let to = self.target(tree);
                let flags = match self.rng.below(10) {
                    0 => libc::RENAME_NOREPLACE,
                    1 => libc::RENAME_EXCHANGE,
                    _ => 0,
                };
                Op::Rename { from, to, flags }
            }
            53..=58 => Op::Link {
                from: self.any_existing(tree),
                to: self.new_path(tree),
            },
            59..=70 => Op::Unlink {
                path: self.any_existing(tree),
            },
            71..=78 => Op::Mkdir {
                path: self.target(tree),
                mode: *self.rng.pick(&DIR_MODES),
            },
            79..=85 => {
                let Some(path) = self.pick_existing(tree, &[Dir, Dir, Dir, File]).cloned() else {
                    return;
                };
                Op::Rmdir { path }
            }
            86..=87 => {
                // rm -r: children first (a child sorts after its parent).
                let Some(top) = self.pick_existing(tree, &[Dir]).cloned() else {
                    return;
                };
                let mut prefix = top.clone();
                prefix.push(b'/');
                // `tree` is sorted, a parent before its children; `queue` is popped
                // from the end, so the deepest entries go first.
                let sub = tree
                    .iter()
                    .filter(|(p, _)| p.starts_with(&prefix) || *p == top);
                for (p, k) in sub {
                    queue.push(if *k == Dir {
                        Op::Rmdir { path: p.clone() }
                    } else {
                        Op::Unlink { path: p.clone() }
                    });
                }
                return;
            }
            88..=95 => {
                let path = self.any_existing(tree);
                let dir = tree.iter().any(|(p, k)| *p == path && *k == Dir);
                let mode = if dir {
                    *self.rng.pick(&DIR_MODES)
                } else {
                    *self.rng.pick(&FILE_MODES)
                };
                Op::Chmod { path, mode }
            }
            _ => {
                let target = if self.rng.chance(50) {
                    format!("n{}", self.rng.below(40)).into_bytes()
                } else {
                    b"../dangling/target".to_vec()
                };
                Op::Symlink {
                    target,
                    path: self.new_path(tree),
                }
            }
        };
        queue.push(op);
    }
}

// ---------------------------------------------------------------------------------
// The test

/// With `FIMFS_RANDOM_KEEP=1`, copies the lowers and the operations (readable, and
/// one per line with paths in hex) to `$TMPDIR/fimfs-random-ops-SEED/` for replaying.
fn keep_for_replay(
    s: &Stack,
    seed: u64,
    history: &[String],
    encoded: &[String],
) -> Option<std::path::PathBuf> {
    if knob("FIMFS_RANDOM_KEEP", 0) == 0 {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("fimfs-random-ops-{seed}"));
    let _ = fs::remove_dir_all(&dir);
    mkdirs(&dir);
    for (i, l) in s.lowers.iter().enumerate() {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(l)
            .arg(dir.join(format!("lower{}", i + 1)))
            .status();
        assert!(st.is_ok_and(|s| s.success()), "cp -a {}", l.display());
    }
    fs::write(dir.join("history.txt"), history.join("\n")).ok()?;
    fs::write(dir.join("ops"), encoded.join("\n")).ok()?;
    // The daemon's log (`RUST_LOG=fimfs=trace` makes it tell the story).
    let mut log = s.mnt.file_name()?.to_os_string();
    log.push(".fimfs-stderr");
    let _ = fs::copy(s.mnt.with_file_name(log), dir.join("daemon.log"));
    Some(dir)
}

fn compare(plain: &Path, other: &Path, what: &str) -> Result<(), String> {
    let a = without_root(view(plain, true));
    let b = without_root(view(other, true));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_same_view("plain", &a, what, &b)
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn random_operations_match_a_plain_directory_and_the_kernel() {
    let ops = knob("FIMFS_RANDOM_OPS", DEFAULT_OPS);
    let seed = knob("FIMFS_RANDOM_SEED", DEFAULT_SEED);
    let check_every = knob("FIMFS_RANDOM_CHECK_EVERY", CHECK_EVERY).max(1);
    let replay = format!("FIMFS_RANDOM_SEED={seed} FIMFS_RANDOM_OPS={ops}");
    eprintln!("random_ops: {replay}");

    let mut s = Stack::new("random-ops", 0);
    // XorShift::new ignores bit 0 of its seed: spread the knob's value first.
    let generated = generate_tree(&s.tmp.join("gen"), 3, GEN_FILES, splitmix(seed));
    for l in &generated.lowers {
        add_user_opaque(l);
    }
    s.lowers = generated.lowers.clone();
    s.seal_lowers();
    let plain = s.tmp.join("plain");
    plain_copy_of_lowers(&s.lowers, &s.tmp.join("kro"), &plain);
    let initial = list(&plain);
    assert!(
        initial.len() >= GEN_FILES / 2 && initial.iter().any(|(_, k)| *k == Kind::Dir),
        "the reference tree is too small: {} entries",
        initial.len()
    );
    let mut lower_names: Vec<Vec<u8>> = initial
        .iter()
        .map(|(p, _)| p.rsplit(|&b| b == b'/').next().unwrap_or(p).to_vec())
        .collect();
    lower_names.sort();
    lower_names.dedup();

    let m = s.mount();
    if let Err(diff) = compare(&plain, m.path(), "fimfs") {
        panic!("[{replay}] before any operation, fimfs differs from the merged lowers:\n{diff}");
    }
    let roots = [open_root(m.path()), open_root(&plain)];
    let mut chooser = Chooser {
        rng: XorShift::new(splitmix(splitmix(seed))),
        lower_names,
    };
    let mut queue: Vec<Op> = Vec::new();
    let mut history: Vec<String> = Vec::new();
    let mut encoded: Vec<String> = Vec::new();
    let mut failures = [0usize; 2];
    let mut n = 0u64;
    while n < ops {
        let tree = list(&plain);
        if queue.is_empty() {
            chooser.next(&tree, &mut queue);
        }
        let Some(op) = queue.pop() else { continue };
        n += 1;
        let on_fimfs = apply(&roots[0], &op);
        let on_plain = apply(&roots[1], &op);
        history.push(format!("#{n} {op}: {on_plain:?}"));
        encoded.push(op.encode());
        failures[usize::from(on_plain.is_err())] += 1;
        let recent = || {
            let tail = history[history.len().saturating_sub(25)..].join("\n");
            match keep_for_replay(&s, seed, &history, &encoded) {
                Some(dir) => format!(
                    "{tail}\n(lowers and the whole sequence kept in {})",
                    dir.display()
                ),
                None => {
                    format!("{tail}\n(set FIMFS_RANDOM_KEEP=1 to keep the lowers and the sequence)")
                }
            }
        };
        assert_eq!(
            on_fimfs,
            on_plain,
            "[{replay}] op #{n} `{op}`: fimfs (left) and a plain directory (right) disagree (Err = errno)\nlast operations:\n{}",
            recent()
        );
        if n.is_multiple_of(check_every) || n == ops {
            if let Err(diff) = compare(&plain, m.path(), "fimfs") {
                panic!(
                    "[{replay}] after op #{n} the trees differ:\n{diff}\nlast operations:\n{}",
                    recent()
                );
            }
            let shared = numbers_naming_several_files(m.path());
            assert!(
                shared.is_empty(),
                "[{replay}] after op #{n}, one inode number names several files:\n{}\nlast operations:\n{}",
                shared.join("\n"),
                recent()
            );
        }
    }
    eprintln!(
        "random_ops: {ops} operations, {} succeeded, {} failed alike",
        failures[0], failures[1]
    );
    assert!(
        failures[0] > ops as usize / 3 && failures[1] > ops as usize / 20,
        "the walk is degenerate: {} succeeded, {} failed",
        failures[0],
        failures[1]
    );
    drop(roots);
    unmount_clean(m);
    s.assert_lowers_untouched();

    // The upper, read by a fresh daemon and by the kernel overlay.
    let m = s.mount();
    if let Err(diff) = compare(&plain, m.path(), "fimfs after remount") {
        panic!("[{replay}] after remounting fimfs:\n{diff}");
    }
    unmount_clean(m);
    let k = s.kernel();
    if let Err(diff) = compare(&plain, k.path(), "kernel overlay on fimfs' upper") {
        panic!("[{replay}] the kernel overlay reads fimfs' upper differently:\n{diff}");
    }
    k.unmount();
}

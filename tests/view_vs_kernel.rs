//! fimfs must show exactly what the kernel overlay shows over the same layers: the
//! same names, types, modes, owners, sizes, contents, symlink targets, device numbers,
//! visible xattrs and per-directory readdir lists (with d_type, duplicates counted).
//!
//! The kernel reads only its own marker dialect, so on the fixtures the kernel mounts
//! the `--kernel-dialect` build of the same manifest while fimfs mounts the build with
//! every dialect (`.wh.*`, `.wh..wh..opq`, `user.overlay.*`, `trusted.overlay.*`).
//! The generated tree is written in the kernel's dialect and mounted by both.

mod common;

use common::*;
use std::path::Path;

const GEN_LOWERS: usize = 5;
const GEN_FILES: usize = 20_000;
const GEN_SEED: u64 = 0x5eed_f1f5;

/// Entries the fixtures must show; guards against a broken build.sh making the
/// comparison vacuous.
const FIXTURE_VISIBLE: &[&str] = &[
    "shadow.txt",
    "merged/from1",
    "merged/from2",
    "merged/from3",
    "merged/sub/b",
    "revived",
    "opq-user/top",
    "opq-wh/mid",
    "links/up",
    "fifo",
    "devices/null",
    "xattr/tagged",
];
const FIXTURE_HIDDEN: &[&str] = &[
    "gone-chr",
    "gone-wh",
    "gone-tx",
    "merged/gone-ux",
    "deadtree",
    "opq-trusted/hidden2",
    "opq-user/hidden",
    "opq-wh/hidden",
    "dirwins/y",
    "clash/under",
];

fn check_fixture_reference(kernel: &Tree) {
    for p in FIXTURE_VISIBLE {
        assert!(
            kernel.entries.contains_key(p.as_bytes()),
            "the kernel's view of the fixtures lacks {p}: fixtures/build.sh is broken"
        );
    }
    for p in FIXTURE_HIDDEN {
        assert!(
            !kernel.entries.contains_key(p.as_bytes()),
            "the kernel's view of the fixtures shows {p}: fixtures/build.sh is broken"
        );
    }
}

fn fixture_pair(tmp: &TempDir) -> (Layers, Layers) {
    let native = build_fixtures(&tmp.join("native"));
    let kernel = build_fixtures_kernel_dialect(&tmp.join("kernel"));
    (native, kernel)
}

#[test]
fn fixtures_lowers_only_match_the_kernel() {
    require_root_and_fuse();
    let tmp = TempDir::new("vk-fix-ro");
    let (native, kernel) = fixture_pair(&tmp);

    let k = KernelOverlayGuard::lowers_only(&kernel.lowers, &kernel.mnt);
    let reference = walk(k.path());
    check_fixture_reference(&reference);

    let f = MountGuard::new(&native.lowers, None, &native.mnt, &[]);
    let view = walk(f.path());
    assert_same_tree("kernel", &reference, "fimfs", &view);
}

#[test]
fn fixtures_with_empty_upper_match_the_kernel() {
    require_root_and_fuse();
    let tmp = TempDir::new("vk-fix-rw");
    let (native, kernel) = fixture_pair(&tmp);
    let kwork = tmp.mkdir("kernel-work");

    let k = KernelOverlayGuard::with_upper(&kernel.lowers, &kernel.upper, &kwork, &kernel.mnt);
    let reference = walk(k.path());
    check_fixture_reference(&reference);

    let f = MountGuard::new(&native.lowers, Some(&native.upper), &native.mnt, &[]);
    let view = walk(f.path());
    assert_same_tree("kernel", &reference, "fimfs", &view);
}

fn generate(tmp: &TempDir) -> Generated {
    let g = generate_tree(&tmp.join("gen"), GEN_LOWERS, GEN_FILES, GEN_SEED);
    let s = &g.stats;
    eprintln!("generated tree: {s:?}");
    assert!(
        s.regular >= GEN_FILES,
        "generator made too few files: {s:?}"
    );
    assert!(
        s.whiteouts >= 100
            && s.effective_whiteouts >= 50
            && s.opaque_dirs >= 5
            && s.opaque_hidden >= 10
            && s.merged_dirs >= 50
            && s.shadowed >= 500
            && s.symlinks >= 100
            && s.fifos >= 10
            && s.user_xattrs >= 100,
        "the generated tree does not exercise the union enough: {s:?}"
    );
    g
}

/// The kernel must show what the generator's model of the union predicts; if not,
/// the generator (not fimfs) is wrong and the comparisons below prove nothing.
fn check_against_model(g: &Generated, kernel: &Tree) {
    let shown: std::collections::BTreeSet<Vec<u8>> = kernel.entries.keys().cloned().collect();
    let missing: Vec<String> = g
        .expected
        .difference(&shown)
        .take(20)
        .map(|p| show(p))
        .collect();
    let extra: Vec<String> = shown
        .difference(&g.expected)
        .take(20)
        .map(|p| show(p))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the kernel overlay disagrees with the generator's model:\n  missing: {missing:?}\n  extra: {extra:?}"
    );
}

fn mount_point(tmp: &TempDir, name: &str) -> std::path::PathBuf {
    tmp.mkdir(name)
}

#[test]
fn generated_tree_lowers_only_matches_the_kernel() {
    require_root_and_fuse();
    let tmp = TempDir::new("vk-gen-ro");
    let g = generate(&tmp);

    let k = KernelOverlayGuard::lowers_only(&g.lowers, &mount_point(&tmp, "mnt-kernel"));
    let reference = walk(k.path());
    check_against_model(&g, &reference);

    let f = MountGuard::new(&g.lowers, None, &mount_point(&tmp, "mnt-fimfs"), &[]);
    let view = walk(f.path());
    assert_same_tree("kernel", &reference, "fimfs", &view);
}

#[test]
fn generated_tree_with_empty_upper_matches_the_kernel() {
    require_root_and_fuse();
    let tmp = TempDir::new("vk-gen-rw");
    let g = generate(&tmp);
    let (kupper, kwork) = (tmp.mkdir("kernel-upper"), tmp.mkdir("kernel-work"));
    let fupper = tmp.mkdir("fimfs-upper");

    let kmnt = mount_point(&tmp, "mnt-kernel");
    let k = KernelOverlayGuard::with_upper(&g.lowers, &kupper, &kwork, &kmnt);
    let reference = walk(k.path());
    check_against_model(&g, &reference);

    let f = MountGuard::new(
        &g.lowers,
        Some(&fupper),
        &mount_point(&tmp, "mnt-fimfs"),
        &[],
    );
    let view = walk(f.path());
    assert_same_tree("kernel", &reference, "fimfs", &view);
    assert_empty_dir(&fupper);
}

/// Reading must not write anything into the upper.
fn assert_empty_dir(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .expect("readdir");
    assert!(
        names.is_empty(),
        "reading through fimfs wrote into the upper {}: {names:?}",
        dir.display()
    );
}

#[test]
fn generated_tree_is_deterministic() {
    require_root_and_fuse();
    let tmp = TempDir::new("vk-gen-det");
    let a = generate_tree(&tmp.join("a"), 3, 2_000, 7);
    let b = generate_tree(&tmp.join("b"), 3, 2_000, 7);
    let c = generate_tree(&tmp.join("c"), 3, 2_000, 8);
    assert_eq!(a.expected, b.expected, "same seed, different trees");
    assert_ne!(a.expected, c.expected, "different seeds, same tree");
    for (la, lb) in a.lowers.iter().zip(&b.lowers) {
        assert_eq!(
            snapshot(la),
            snapshot(lb),
            "{} and {} differ",
            la.display(),
            lb.display()
        );
    }
}

#[test]
fn fixtures_build_refuses_a_non_empty_dest() {
    require_root_and_fuse();
    let tmp = TempDir::new("vk-fix-refuse");
    let dest = tmp.mkdir("dest");
    std::fs::write(dest.join("precious"), "keep me\n").unwrap();
    let out = std::process::Command::new("bash")
        .arg(build_sh())
        .arg(&dest)
        .output()
        .expect("run fixtures/build.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "build.sh into a non-empty DEST: {stderr}"
    );
    assert!(
        stderr.contains(&dest.display().to_string()) && stderr.contains("not empty"),
        "build.sh's message should name DEST and say it is not empty: {stderr}"
    );
    let names: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["precious"], "build.sh touched a non-empty DEST");
    assert_eq!(
        std::fs::read_to_string(dest.join("precious")).unwrap(),
        "keep me\n"
    );

    // An existing empty DEST is fine, and gets the documented layout.
    let empty = tmp.mkdir("empty");
    let layers = build_fixtures(&empty);
    for d in layers.lowers.iter().chain([&layers.upper, &layers.mnt]) {
        assert!(d.is_dir(), "{} missing", d.display());
    }
    assert_eq!(
        std::fs::read_dir(&layers.upper).unwrap().count(),
        0,
        "upper not empty"
    );
    assert_eq!(
        std::fs::read_dir(&layers.mnt).unwrap().count(),
        0,
        "mnt not empty"
    );
}

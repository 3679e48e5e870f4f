//! Seeded random operations on the FUSE-free engine, compared after every
//! operation with a plain directory that a reference merge (SPEC §1, written
//! independently of the engine) built from the same layers; the lowers as
//! directories, or packed into DwarFS images (markers an image can hold
//! only: devices, `.wh.` files; no xattrs).

mod common;
mod engine_support;

use common::*;
use engine_support::*;
use fimfs::sys::Errno;
use fimfs::union::Options;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// Names for new entries: one more than the layers use.
const NEW_NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// Whiteout dialects of the lowers: device, `.wh.` file, xattr files.
const WHITEOUTS: [&str; 4] = [
    "w",
    "W",
    "trusted.overlay.whiteout",
    "user.overlay.whiteout",
];

/// One entry of a generated layer.
#[derive(Debug, Clone, PartialEq)]
enum Gen {
    File(String),
    Dir {
        /// The opaque marker (`o` for `.wh..wh..opq`, else an xattr name).
        opaque: Option<&'static str>,
        /// `overlay.opaque=x`: holds xattr whiteouts.
        xmark: bool,
    },
    Sym(String),
    /// `w`, `W` or an xattr whiteout (the xattr name).
    Wh(&'static str),
}

#[derive(Debug, Default, Clone)]
struct GenLayer {
    entries: BTreeMap<String, Gen>,
    xattrs: BTreeMap<String, BTreeMap<String, String>>,
    root_xmark: bool,
}

fn parent_path(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

/// A random layer; `image`: only what an image can hold (no xattrs, so no
/// xattr markers).
fn gen_layer(rng: &mut XorShift, tag: &str, upper: bool, image: bool) -> GenLayer {
    let mut g = GenLayer::default();
    for i in 0..3 + rng.below(10) {
        let depth = 1 + rng.below(3);
        let comps: Vec<&str> = (0..depth).map(|_| *rng.pick(&NAMES)).collect();
        let path = comps.join("/");
        let mut ok = !g.entries.contains_key(&path);
        for k in 1..comps.len() {
            let pre = comps[..k].join("/");
            match g.entries.get(&pre) {
                None => {
                    g.entries.insert(
                        pre,
                        Gen::Dir {
                            opaque: None,
                            xmark: false,
                        },
                    );
                }
                Some(Gen::Dir { .. }) => {}
                Some(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let parent = parent_path(&path).to_string();
        let parent_opaque = matches!(
            g.entries.get(&parent),
            Some(Gen::Dir {
                opaque: Some(_),
                ..
            })
        );
        let entry = match rng.below(100) {
            0..35 => Gen::File(format!("{tag}{i}")),
            35..55 => Gen::Dir {
                opaque: None,
                xmark: false,
            },
            55..63 => Gen::Sym(format!("t{}", rng.below(3))),
            63..85 if upper && parent_opaque => continue,
            63..85 if upper => Gen::Wh("w"),
            63..85 if image => Gen::Wh(["w", "W"][rng.below(2)]),
            63..85 => Gen::Wh(WHITEOUTS[rng.below(WHITEOUTS.len())]),
            _ if upper => Gen::Dir {
                opaque: Some("user.overlay.opaque"),
                xmark: false,
            },
            _ if image => Gen::Dir {
                opaque: Some("o"),
                xmark: false,
            },
            _ => Gen::Dir {
                opaque: Some(*rng.pick(&[
                    "o",
                    "trusted.overlay.opaque",
                    "user.overlay.opaque",
                    "user.fuseoverlayfs.opaque",
                ])),
                xmark: false,
            },
        };
        if let Gen::Wh(x) = &entry
            && x.contains('.')
        {
            match g.entries.get_mut(&parent) {
                Some(Gen::Dir { xmark, .. }) => *xmark = true,
                _ => g.root_xmark = true,
            }
        }
        if !image && matches!(entry, Gen::File(_) | Gen::Dir { .. }) && rng.chance(15) {
            let name = format!("user.r{}", rng.below(2));
            g.xattrs
                .entry(path.clone())
                .or_default()
                .insert(name, format!("{tag}x{i}"));
        }
        g.entries.insert(path, entry);
    }
    g
}

/// The layer spec lines of a generated layer.
fn gen_spec(g: &GenLayer) -> String {
    let mut s = String::new();
    let xmark = |s: &mut String, p: &str, opaque: Option<&str>| {
        let attr = match opaque {
            Some("user.overlay.opaque") => "trusted.overlay.opaque",
            _ => "user.overlay.opaque",
        };
        s.push_str(&format!("X {p} {attr} x\n"));
    };
    if g.root_xmark {
        xmark(&mut s, ".", None);
    }
    for (p, e) in &g.entries {
        match e {
            Gen::File(c) => s.push_str(&format!("f {p} {c}\n")),
            Gen::Dir { opaque, xmark: x } => {
                match opaque {
                    None => s.push_str(&format!("d {p}\n")),
                    Some("o") => s.push_str(&format!("o {p}\n")),
                    Some(attr) => s.push_str(&format!("O {p} {attr}\n")),
                }
                if *x {
                    xmark(&mut s, p, *opaque);
                }
            }
            Gen::Sym(t) => s.push_str(&format!("l {p} {t}\n")),
            Gen::Wh("w") => s.push_str(&format!("w {p}\n")),
            Gen::Wh("W") => s.push_str(&format!("W {p}\n")),
            Gen::Wh(attr) => s.push_str(&format!("z {p} {attr}\n")),
        }
    }
    for (p, xs) in &g.xattrs {
        for (n, v) in xs {
            s.push_str(&format!("X {p} {n} {v}\n"));
        }
    }
    s
}

/// The reference merge (SPEC §1), written independently of the engine: layers
/// top-most first; returns path → (entry, xattrs of the winner).
fn oracle(layers: &[&GenLayer]) -> BTreeMap<String, (Gen, BTreeMap<String, String>)> {
    let mut out = BTreeMap::new();
    oracle_dir(layers.to_vec(), "", &mut out);
    out
}

fn oracle_dir(
    layers: Vec<&GenLayer>,
    dir: &str,
    out: &mut BTreeMap<String, (Gen, BTreeMap<String, String>)>,
) {
    let names: BTreeSet<String> = layers
        .iter()
        .flat_map(|l| l.entries.keys())
        .filter(|k| parent_path(k) == dir)
        .cloned()
        .collect();
    for path in names {
        let mut winner: Option<(&Gen, &GenLayer)> = None;
        let mut below = Vec::new();
        for l in &layers {
            match l.entries.get(&path) {
                None => continue,
                Some(Gen::Wh(_)) => break,
                Some(g @ Gen::Dir { opaque, .. }) => {
                    match winner {
                        None => winner = Some((g, l)),
                        Some((Gen::Dir { .. }, _)) => {}
                        Some(_) => break,
                    }
                    below.push(*l);
                    if opaque.is_some() {
                        break;
                    }
                }
                Some(g) => {
                    if winner.is_none() {
                        winner = Some((g, l));
                    }
                    break;
                }
            }
        }
        let Some((g, l)) = winner else { continue };
        let x = l.xattrs.get(&path).cloned().unwrap_or_default();
        out.insert(path.clone(), (g.clone(), x));
        if matches!(g, Gen::Dir { .. }) {
            oracle_dir(below, &path, out);
        }
    }
}

fn materialize(root: &Path, merged: &BTreeMap<String, (Gen, BTreeMap<String, String>)>) {
    fs::create_dir_all(root).unwrap();
    for (p, (g, xs)) in merged {
        let full = root.join(p);
        match g {
            Gen::File(c) => fs::write(&full, c).unwrap(),
            Gen::Dir { .. } => fs::create_dir(&full).unwrap(),
            Gen::Sym(t) => std::os::unix::fs::symlink(t, &full).unwrap(),
            Gen::Wh(_) => unreachable!("whiteouts never win"),
        }
        for (n, v) in xs {
            set_xattr(&full, n, v.as_bytes()).unwrap();
        }
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Applies `op` to the plain-directory model.
fn model_apply(root: &Path, op: &Op) -> Result<(), Errno> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let p = |s: &str| root.join(s);
    match op {
        Op::Mkdir(a) => fs::DirBuilder::new()
            .mode(0o755)
            .create(p(a))
            .map_err(io_errno),
        Op::Create(a, c) => {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(p(a))
                .map_err(io_errno)?;
            f.write_all(c.as_bytes()).map_err(io_errno)
        }
        Op::Symlink(a, t) => std::os::unix::fs::symlink(t, p(a)).map_err(io_errno),
        Op::Mkfifo(a) => {
            nix::unistd::mkfifo(&p(a), nix::sys::stat::Mode::from_bits_truncate(0o644))
        }
        Op::Unlink(a) => fs::remove_file(p(a)).map_err(io_errno),
        Op::Rmdir(a) => fs::remove_dir(p(a)).map_err(io_errno),
        Op::Rename(a, b, flags) => nix::fcntl::renameat2(
            None,
            &p(a),
            None,
            &p(b),
            nix::fcntl::RenameFlags::from_bits_truncate(*flags),
        ),
        Op::Link(a, b) => fs::hard_link(p(a), p(b)).map_err(io_errno),
        Op::Write(a, c) => {
            let mut o = fs::OpenOptions::new();
            o.write(true).truncate(true).custom_flags(libc::O_NOFOLLOW);
            let f = o.open(p(a)).map_err(io_errno)?;
            pwrite_all(f.as_fd(), c.as_bytes(), 0)
        }
        Op::Append(a, c) => {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(p(a))
                .map_err(io_errno)?;
            let size = f.metadata().map_err(io_errno)?.len();
            pwrite_all(f.as_fd(), c.as_bytes(), size)
        }
        Op::Truncate(a, n) => nix::unistd::truncate(&p(a), *n as i64),
        Op::Chmod(a, m) => {
            fs::set_permissions(p(a), fs::Permissions::from_mode(*m)).map_err(io_errno)
        }
        Op::Setxattr(a, n, v) => set_xattr(&p(a), n, v.as_bytes()).map_err(Errno::from_raw),
        Op::Removexattr(a, n) => remove_xattr(&p(a), n).map_err(Errno::from_raw),
        other => unreachable!("the random test does not generate {other:?}"),
    }
}

/// A random operation on the current state (`view` of the model).
fn random_op(rng: &mut XorShift, view: &View, n: usize) -> Op {
    let of = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        view.iter()
            .filter(|(_, s)| pred(&s.desc))
            .map(|(p, _)| p.clone())
            .collect()
    };
    let all = of(&|_| true);
    let files = of(&|d| d.starts_with('f'));
    let mut dirs = of(&|d| d == "d");
    dirs.push(String::new());
    // New names only up to depth 4, so the tree stays small.
    let shallow: Vec<String> = dirs
        .iter()
        .filter(|d| d.matches('/').count() < 3)
        .cloned()
        .collect();
    let fd = of(&|d| d.starts_with('f') || d == "d");
    let pick_from = |rng: &mut XorShift, v: &[String], fallback: &[String]| -> String {
        match (v.is_empty(), fallback.is_empty()) {
            (false, _) if !rng.chance(10) => rng.pick(v).clone(),
            (_, false) => rng.pick(fallback).clone(),
            _ => "a".to_string(),
        }
    };
    let fresh = |rng: &mut XorShift| {
        let d = rng.pick(&shallow).clone();
        child(&d, NEW_NAMES[rng.below(NEW_NAMES.len())])
    };
    let content = |rng: &mut XorShift| format!("r{n}x{}", rng.below(1000));
    match rng.below(100) {
        0..12 => Op::Create(fresh(rng), content(rng)),
        12..20 => Op::Mkdir(fresh(rng)),
        20..24 => Op::Symlink(fresh(rng), format!("t{}", rng.below(3))),
        24..26 => Op::Mkfifo(fresh(rng)),
        26..36 => Op::Unlink(pick_from(rng, &all, &all)),
        36..44 => Op::Rmdir(pick_from(rng, &dirs[..dirs.len() - 1], &all)),
        44..60 => {
            let src = pick_from(rng, &all, &all);
            let dst = if rng.chance(50) {
                fresh(rng)
            } else {
                pick_from(rng, &all, &all)
            };
            let flags = match rng.below(10) {
                0 | 1 => libc::RENAME_NOREPLACE,
                2 | 3 => libc::RENAME_EXCHANGE,
                _ => 0,
            };
            Op::Rename(src, dst, flags)
        }
        60..66 => Op::Link(pick_from(rng, &files, &all), fresh(rng)),
        66..76 => Op::Write(pick_from(rng, &files, &files), content(rng)),
        76..82 => Op::Append(pick_from(rng, &files, &files), content(rng)),
        82..86 => Op::Truncate(pick_from(rng, &files, &files), rng.below(8) as u64),
        86..90 => Op::Chmod(
            pick_from(rng, &fd, &fd),
            *rng.pick(&[0o600, 0o644, 0o755, 0o700]),
        ),
        90..96 => Op::Setxattr(
            pick_from(rng, &fd, &fd),
            format!("user.r{}", rng.below(3)),
            content(rng),
        ),
        _ => Op::Removexattr(pick_from(rng, &fd, &fd), format!("user.r{}", rng.below(3))),
    }
}

/// Only ops whose target exists in the model and is of the right kind are
/// generated against files; the fallbacks may pick anything (for the errors).
fn op_is_safe(view: &View, op: &Op) -> bool {
    // Never write through a fifo (the model would block) nor follow a symlink.
    let kind = |p: &str| view.get(p).map(|s| s.desc.chars().next().unwrap_or(' '));
    match op {
        Op::Write(p, _) | Op::Append(p, _) | Op::Truncate(p, _) => kind(p) == Some('f'),
        Op::Chmod(p, _) | Op::Setxattr(p, _, _) | Op::Removexattr(p, _) => {
            matches!(kind(p), Some('f') | Some('d'))
        }
        _ => true,
    }
}

/// One seeded run; the first divergence, with the layers and the last ops.
fn run_random(seed: u64, ops: usize, images: bool) -> Result<(), String> {
    let mut rng = XorShift::from_state(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let nlowers = 1 + rng.below(3);
    let lowers: Vec<GenLayer> = (0..nlowers)
        .map(|i| gen_layer(&mut rng, &format!("L{i}"), false, images))
        .collect();
    let upper = gen_layer(&mut rng, "U", true, false);
    let specs: Vec<String> = lowers.iter().map(gen_spec).collect();
    let spec_refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let upper_spec = gen_spec(&upper);
    let open = match images {
        true => Fixture::over_images,
        false => Fixture::new,
    };
    let fx = open(
        &format!("rand{seed}"),
        &spec_refs,
        Some(&upper_spec),
        Options::default(),
    );
    let lowers_before: Vec<_> = fx.lowers.iter().map(|p| disk_snapshot(p)).collect();
    let model = fx.tmp.path().join("model");
    let all_layers: Vec<&GenLayer> = std::iter::once(&upper).chain(lowers.iter()).collect();
    materialize(&model, &oracle(&all_layers));

    let layout = format!(
        "seed {seed}\nupper:\n{upper_spec}\n{}",
        specs
            .iter()
            .enumerate()
            .map(|(i, s)| format!("lower{}:\n{s}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut history: Vec<String> = Vec::new();
    let mut hardlink_ino_findings: Vec<String> = Vec::new();
    for n in 0..=ops {
        let mut problems = Vec::new();
        let want = plain_view(&model);
        let got = engine_view(&fx.union, &mut problems);
        for (p, w) in &want {
            match got.get(p) {
                None => problems.push(format!(
                    "{p}: missing from the union, model has {:?}",
                    w.desc
                )),
                Some(g) if (&g.desc, g.perm, &g.xattrs) != (&w.desc, w.perm, &w.xattrs) => problems
                    .push(format!(
                        "{p}: union {:?} {:o} {:?}, model {:?} {:o} {:?}",
                        g.desc, g.perm, g.xattrs, w.desc, w.perm, w.xattrs
                    )),
                Some(_) => {}
            }
        }
        for (p, g) in &got {
            if !want.contains_key(p) {
                problems.push(format!(
                    "{p}: in the union ({:?}) but not in the model",
                    g.desc
                ));
            }
        }
        // One model inode ↔ one union number.
        let mut union_to_model: HashMap<u64, (u64, &str)> = HashMap::new();
        let mut model_to_union: HashMap<u64, (u64, &str)> = HashMap::new();
        for (p, g) in &got {
            let Some(w) = want.get(p) else { continue };
            if let Some((m, q)) = union_to_model.insert(g.ino, (w.ino, p))
                && m != w.ino
            {
                problems.push(format!(
                    "{p} and {q}: distinct files share st_ino {:#x}",
                    g.ino
                ));
            }
            if let Some((x, q)) = model_to_union.insert(w.ino, (g.ino, p))
                && x != g.ino
                && hardlink_ino_findings.is_empty()
            {
                hardlink_ino_findings.push(format!(
                    "seed {seed} after op {n} ({:?}): hard links {p} and {q} have st_ino {:#x} and {x:#x}",
                    history.last(),
                    g.ino
                ));
            }
        }
        check_upper_format(fx.upper(), None, &mut problems);
        let left = fx.workdir_leftovers();
        if !left.is_empty() {
            problems.push(format!("workdir not empty: {left:?}"));
        }
        if !problems.is_empty() {
            let recent = history.len().saturating_sub(25);
            return Err(format!(
                "diverged after {n} ops\n{layout}\nlast ops (from #{recent}):\n  {}\nproblems:\n  {}",
                history[recent..].join("\n  "),
                problems.join("\n  ")
            ));
        }
        if n == ops {
            break;
        }
        let op = loop {
            let op = random_op(&mut rng, &want, n);
            if op_is_safe(&want, &op) {
                break op;
            }
        };
        let forget = rng.chance(50);
        let m = model_apply(&model, &op);
        let e = engine_apply(&fx.union, &op, forget);
        history.push(format!("#{n} {op:?} -> model {m:?}, union {e:?}"));
        if m != e {
            let recent = history.len().saturating_sub(25);
            return Err(format!(
                "op #{n} {op:?}: model {m:?}, union {e:?}\n{layout}\nlast ops (from #{recent}):\n  {}",
                history[recent..].join("\n  ")
            ));
        }
    }
    for (p, before) in fx.lowers.iter().zip(lowers_before) {
        if disk_snapshot(p) != before {
            return Err(format!("lower {} changed\n{layout}", p.display()));
        }
    }
    match hardlink_ino_findings.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "hard links do not share st_ino: {}",
            hardlink_ino_findings.join("\n")
        )),
    }
}

/// 8 seeds × 300 operations, the engine's merged view compared with a plain
/// directory after every one; seeds run on two threads.
#[test]
fn random_ops_match_a_plain_directory() {
    run_seeds(false);
}

/// The same with every lower packed into a DwarFS image: numbers given out
/// without a node (`union::direct`) must follow their files through every
/// operation as nodes do.
#[test]
fn random_ops_over_images_match_a_plain_directory() {
    run_seeds(true);
}

fn run_seeds(images: bool) {
    let seeds: Vec<u64> = (1..=8).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = seeds
            .chunks(4)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|&seed| {
                            run_random(seed, 300, images)
                                .err()
                                .map(|e| format!("seed {seed}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec!["a worker panicked".to_string()])
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} seeds diverged from the plain-directory model:\n\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n\n")
    );
}

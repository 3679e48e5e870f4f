//! `fimfs run` over DwarFS images, through the real binary and real mounts:
//! image lowers read as the directories they were packed from on every
//! backend (on BWRAP each image mounted by the keeper, one FUSE session per
//! layer; on the daemon read in-process), writes land in the upper;
//! `--image FLATIMAGE` without LOWERS serves the binary's own layers in
//! SPEC §8's order (embedded, `FIM_LAYERS`, `<data>/layers`), skipping
//! what does not start with `DWARFS`; casefold reads them on the daemon; a
//! layer holding `.wh.` files goes to the daemon; an unprivileged user runs
//! over them on each backend; image entries show the caller as owner on
//! every backend (dwarfs' `uid=`/`gid=`), copy up as the caller, while
//! directory lowers keep their owners; SIGKILL of the launcher (or of its
//! keeper) on BWRAP leaves no mount and no process.
//!
//! The sandbox shows the view below the host's root (`--target`), so the
//! commands use the host's tools. Nothing is timed: waits poll a condition
//! with a bound against hangs.

mod common;

use common::dwarfs::{Layout, Tree, assemble, im, open_bytes};
use common::image::{Spec, block, build};
use common::pack::pack_dir;
use common::run::{DEADLINE, Done, Turn, os, tagged, wait_for};
use common::{TempDir, is_whiteout, lowers_arg, mounts, put, require_root_and_fuse, setpriv};
use fimfs::image::BlockCache;
use fimfs::layer::{ImageLayer, Layer, Lower, Stack, Workdir};
use fimfs::union::{Options, ROOT_INO, Union};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const FIMFS: &str = env!("CARGO_BIN_EXE_fimfs");
const BACKENDS: [&str; 3] = ["bwrap", "overlayfs", "unionfs"];

/// What the command reports about the view at `$0`: every entry with its
/// type and mode (and a symlink's target), then the contents of the regular
/// files. (A directory's size is its filesystem's, so it is left out.)
const LOOK: &str = "cd \"$0\" && find . -printf '%p %y %m %l\\n' | LC_ALL=C sort \
     && find . -type f | LC_ALL=C sort | xargs cat";

/// `LOOK`, then how many image layer mounts of this run's work base the
/// sandbox sees.
fn look_and_count(work: &Path) -> String {
    format!(
        "{LOOK} && echo layer-mounts=$(grep -c ' {}/[0-9]*/layers/' /proc/self/mountinfo)",
        work.display()
    )
}

/// Fails with the first line where `got` and `want` differ.
fn assert_same_lines(got: &str, want: &str, what: &str) {
    let first = got
        .lines()
        .zip(want.lines())
        .enumerate()
        .find(|(_, (g, w))| g != w);
    if let Some((i, (g, w))) = first {
        panic!("{what}: line {}: got {g:?}, want {w:?}", i + 1);
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "{what}: line counts"
    );
}

/// A scene: a scratch directory with the view target, an upper and its
/// work base inside `data/`.
struct Scene {
    t: TempDir,
    view: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    _turn: Turn,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        Scene::with_turn(tag, Turn::shared())
    }

    /// A scene no other test runs beside (see `common::run::Turn`).
    fn alone(tag: &str) -> Scene {
        Scene::with_turn(tag, Turn::alone())
    }

    fn with_turn(tag: &str, turn: Turn) -> Scene {
        require_root_and_fuse();
        let t = TempDir::new(tag);
        let view = t.mkdir("view");
        Scene {
            view,
            upper: t.join("data/root"),
            work: t.join("data/work"),
            t,
            _turn: turn,
        }
    }

    /// `fimfs run [PRE...] --target VIEW [LOWERS] UPPER -- sh -c SCRIPT VIEW`,
    /// with `env` and nothing else of the FIM_ variables.
    fn start(
        &self,
        pre: &[OsString],
        lowers: Option<OsString>,
        env: &[(&str, &str)],
        script: &str,
    ) -> (Child, u64) {
        let n = common::scratch::next_serial();
        let mut cmd = Command::new(FIMFS);
        cmd.arg("run")
            .args(pre)
            .arg("--target")
            .arg(&self.view)
            .args(lowers)
            .arg(&self.upper)
            .args(["--", "sh", "-c", script])
            .arg(&self.view)
            .stdin(Stdio::null())
            .stdout(fs::File::create(self.t.join(format!("run-{n}.out"))).unwrap())
            .stderr(fs::File::create(self.t.join(format!("run-{n}.err"))).unwrap());
        for k in ["FIM_OVERLAY", "FIM_CASEFOLD", "FIM_LAYERS", "FIMFS_BWRAP"] {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {FIMFS}: {e}"));
        (child, n)
    }

    fn run(
        &self,
        pre: &[OsString],
        lowers: Option<OsString>,
        env: &[(&str, &str)],
        script: &str,
    ) -> Done {
        let (mut child, n) = self.start(pre, lowers, env, script);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fimfs run still running after {DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(10));
        };
        Done {
            status,
            stdout: text(&self.t.join(format!("run-{n}.out"))),
            stderr: text(&self.t.join(format!("run-{n}.err"))),
        }
    }

    /// Nothing of a finished run is left: no mount below the scene, no run
    /// directory in the work base.
    fn assert_clean(&self) {
        let here = self.t.path();
        let left: Vec<_> = mounts()
            .into_iter()
            .filter(|(p, _)| p.starts_with(here))
            .collect();
        assert!(left.is_empty(), "mounts left behind: {left:?}");
        let runs = fs::read_dir(&self.work).map_or(0, |d| d.count());
        assert_eq!(runs, 0, "run directories left behind");
    }
}

fn text(p: &Path) -> String {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned()
}

/// Two layers: `top` shadows one file of `bottom` and adds a directory, a
/// symlink and a file larger than a block.
fn two_layers(t: &TempDir) -> Vec<PathBuf> {
    let top = t.mkdir("layers/top");
    let bottom = t.mkdir("layers/bottom");
    put(&bottom.join("etc/app.conf"), "bottom\n");
    put(&bottom.join("etc/keep"), "keep\n");
    put(&bottom.join("usr/share/doc/readme"), "readme\n");
    put(&top.join("etc/app.conf"), "top\n");
    put(&top.join("opt/app/bin/run"), "#!/bin/sh\necho run\n");
    fs::set_permissions(
        top.join("opt/app/bin/run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 94) as u8 + b'!').collect();
    put(&top.join("opt/app/data"), &big);
    std::os::unix::fs::symlink("../etc/keep", top.join("opt/keep")).unwrap();
    vec![top, bottom]
}

/// Packs `dir` into an image file `to` (4 KiB blocks, zstd).
fn pack(dir: &Path, to: &Path) -> PathBuf {
    fs::write(to, pack_dir(dir, 4096, Layout::default())).unwrap();
    to.to_path_buf()
}

/// Packs each of `dirs` into `l<i>.dwarfs` in `t`, in order.
fn pack_each(t: &TempDir, dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| pack(d, &t.join(format!("l{i}.dwarfs"))))
        .collect()
}

#[test]
fn image_lowers_read_as_their_directories_on_every_backend() {
    for backend in BACKENDS {
        let s = Scene::new(&format!("ri-read-{backend}"));
        let dirs = two_layers(&s.t);
        let images = pack_each(&s.t, &dirs);
        let env = [("FIM_OVERLAY", backend)];
        let look = look_and_count(&s.work);
        let over_dirs = s.run(&[], Some(lowers_arg(&dirs)), &env, &look);
        assert!(
            over_dirs.status.success(),
            "{backend} over dirs: {over_dirs}"
        );
        s.assert_clean();
        let write = format!("{look} && echo new > \"$0\"/etc/new && rm \"$0\"/etc/keep");
        let over_images = s.run(&[], Some(lowers_arg(&images)), &env, &write);
        assert!(
            over_images.status.success(),
            "{backend} over images: {over_images}"
        );
        // Same entries, same bytes; BWRAP over images with one fimfs mount
        // per layer, the daemon reading them in-process.
        let mounted = match backend {
            "bwrap" => "layer-mounts=2",
            _ => "layer-mounts=0",
        };
        assert!(over_dirs.stdout.ends_with("layer-mounts=0\n"), "{backend}");
        assert!(
            over_images.stdout.ends_with(&format!("{mounted}\n")),
            "{backend}: {}",
            over_images.stderr
        );
        assert_same_lines(
            over_images.stdout.replace(mounted, "").as_str(),
            over_dirs.stdout.replace("layer-mounts=0", "").as_str(),
            &format!("{backend}: images against their directories"),
        );
        assert!(over_images.stdout.contains("top\n") && !over_images.stdout.contains("bottom\n"));
        assert_eq!(
            fs::read_to_string(s.upper.join("etc/new")).unwrap(),
            "new\n"
        );
        assert!(
            is_whiteout(&s.upper.join("etc/keep")),
            "{backend}: no whiteout"
        );
        s.assert_clean();
        // The next run over the images sees what this one left.
        let again = s.run(
            &[],
            Some(lowers_arg(&images)),
            &env,
            "cat \"$0\"/etc/new && test ! -e \"$0\"/etc/keep && \"$0\"/opt/app/bin/run",
        );
        assert!(again.status.success(), "{backend}, second run: {again}");
        assert_eq!(
            again.stdout, "new\nrun\n",
            "{backend}: a program in an image runs"
        );
        s.assert_clean();
    }
}

#[test]
fn dry_run_shows_the_layers_and_the_mounts_bwrap_gets() {
    let s = Scene::new("ri-dry");
    let dirs = two_layers(&s.t);
    let img = pack(&dirs[0], &s.t.join("top.dwarfs"));
    let bytes = fs::read(&img).unwrap();
    let mut spec = Spec::new();
    spec.blocks = vec![block(bytes.len() as u64, &bytes)];
    let bin = s.t.join("app.flatimage");
    fs::write(&bin, build(&spec)).unwrap();
    let offset = common::image::RESERVED_AT + fimfs::launch::RESERVED_SIZE + 8;
    let lowers = lowers_arg(&[bin.clone(), dirs[1].clone()]);
    let pre = os(&["--dry-run"]);
    let d = s.run(&pre, Some(lowers.clone()), &[], "true");
    assert!(d.status.success(), "{d}");
    let name = format!("{}@{offset}+{}", bin.display(), bytes.len());
    for want in [
        "backend: BWRAP\n".to_string(),
        "layers: LOWERS as given\n".to_string(),
        format!("lower 1: {name}\n"),
        format!("lower 2: {}\n", dirs[1].display()),
        format!("layer mount: {name} at {}/", s.work.display()),
        "/layers/1\n".to_string(),
        "--overlay-src /".to_string(),
    ] {
        assert!(d.stdout.contains(&want), "missing {want:?}:\n{d}");
    }
    assert!(
        d.stdout
            .contains(&format!("--overlay-src {}", dirs[1].display())),
        "{d}"
    );
    let d = s.run(&pre, Some(lowers), &[("FIM_OVERLAY", "unionfs")], "true");
    assert!(d.status.success(), "{d}");
    assert!(
        d.stdout
            .contains(&format!("daemon: fimfs mount {name}:{}", dirs[1].display())),
        "{d}"
    );
    assert!(!d.stdout.contains("layer mount:"), "{d}");
    s.assert_clean();
}

/// Layer `k` of `n` holds `slot-j` = `k` for every `j >= k`: reading
/// `slot-j` gives `j` exactly when layer `j` sits above layers `0..j`.
fn ordered_layer(t: &TempDir, k: usize, n: usize) -> Vec<u8> {
    let dir = t.mkdir(format!("ordered/{k}"));
    for j in k..n {
        put(&dir.join(format!("slot-{j}")), format!("{k}\n"));
    }
    pack_dir(&dir, 4096, Layout::default())
}

#[test]
fn a_binary_serves_its_own_layers_in_flatimage_order() {
    let s = Scene::new("ri-own");
    const N: usize = 7;
    let layers: Vec<Vec<u8>> = (0..N).map(|k| ordered_layer(&s.t, k, N)).collect();
    // (1) embedded: layers 0 and 1, in file order, with a block between
    // them that holds no image.
    let mut spec = Spec::new();
    spec.blocks = vec![
        block(layers[0].len() as u64, &layers[0]),
        block(50, &[b'x'; 50]),
        block(layers[1].len() as u64, &layers[1]),
    ];
    let bin = s.t.join("app.flatimage");
    fs::write(&bin, build(&spec)).unwrap();
    // (2) FIM_LAYERS: a directory (b-9 = layer 2, b-10 = layer 3, and a
    // file that is no image), then a file (layer 4); a missing entry.
    let extra = s.t.mkdir("extra");
    fs::write(extra.join("b-10.layer"), &layers[3]).unwrap();
    fs::write(extra.join("b-9.layer"), &layers[2]).unwrap();
    fs::write(extra.join("a-junk.layer"), b"not an image").unwrap();
    let single = s.t.join("c.layer");
    fs::write(&single, &layers[4]).unwrap();
    let fim_layers = format!(
        "{}:{}:{}",
        extra.display(),
        single.display(),
        s.t.join("missing.layer").display()
    );
    // (3) <data>/layers next to the binary: layers 5 and 6.
    let data = s.t.mkdir(".app.flatimage.data/layers");
    fs::write(data.join("layer-001.layer"), &layers[6]).unwrap();
    fs::write(data.join("layer-000.layer"), &layers[5]).unwrap();
    let pre = vec![OsString::from("--image"), bin.clone().into()];
    let look = "cd \"$0\" && for j in 0 1 2 3 4 5 6; do cat slot-$j; done";
    let want: String = (0..N).map(|k| format!("{k}\n")).collect();
    for backend in ["bwrap", "unionfs"] {
        let env = [
            ("FIM_OVERLAY", backend),
            ("FIM_LAYERS", fim_layers.as_str()),
        ];
        let d = s.run(&pre, None, &env, look);
        assert!(d.status.success(), "{backend}: {d}");
        assert_eq!(d.stdout, want, "{backend}: layer order: {d}");
        assert!(
            d.stderr
                .contains("a-junk.layer: does not start with DWARFS"),
            "{d}"
        );
        assert!(d.stderr.contains("missing.layer"), "{d}");
        assert!(d.stderr.contains("does not start with"), "{d}");
        let junk_block = d
            .stderr
            .lines()
            .filter(|l| l.contains("not a layer"))
            .count();
        assert_eq!(junk_block, 2, "the block without an image and a-junk: {d}");
        s.assert_clean();
    }
    // --dry-run says which form was used, and names the embedded images.
    let mut dry = vec![OsString::from("--dry-run")];
    dry.extend(pre.clone());
    let d = s.run(&dry, None, &[("FIM_LAYERS", fim_layers.as_str())], "true");
    assert!(d.status.success(), "{d}");
    assert!(
        d.stdout.contains("(2 embedded, 3 from FIM_LAYERS, 2 from"),
        "{d}"
    );
    assert!(
        d.stdout.contains(&format!("lower 7: {}@", bin.display())),
        "{d}"
    );
    assert_eq!(d.stdout.matches("layer mount: ").count(), N, "{d}");
    // Without FIM_LAYERS only the embedded and <data> layers: 0, 1, 5, 6
    // (slot-2..4 then come from layer 1, slot-5 and 6 from themselves).
    let d = s.run(&pre, None, &[("FIM_OVERLAY", "unionfs")], look);
    assert!(d.status.success(), "{d}");
    assert_eq!(d.stdout, "0\n1\n1\n1\n1\n5\n6\n", "{d}");
    // LOWERS given with --image: LOWERS are the layers.
    let d = s.run(&pre, Some(lowers_arg(&[s.t.join("ordered/3")])), &[], look);
    assert_eq!(d.stdout, "3\n3\n3\n3\n", "only LOWERS: {d}");
    assert!(d.stderr.contains("slot-0: No such file"), "{d}");
    s.assert_clean();
}

#[test]
fn lowers_are_required_without_image() {
    let s = Scene::new("ri-cli");
    let d = s.run(&[], None, &[], "true");
    assert_eq!(d.status.code(), Some(125), "{d}");
    assert!(d.stderr.contains("no LOWERS given"), "{d}");
    assert!(d.stderr.contains("--image FLATIMAGE UPPER"), "{d}");
    // A binary without layers, and nothing else: a clear error.
    let mut spec = Spec::new();
    spec.blocks.clear();
    let bin = s.t.join("empty.flatimage");
    fs::write(&bin, build(&spec)).unwrap();
    let pre = vec![OsString::from("--image"), bin.into()];
    let d = s.run(&pre, None, &[], "true");
    assert_eq!(d.status.code(), Some(125), "{d}");
    assert!(d.stderr.contains("no layer to run on"), "{d}");
}

#[test]
fn an_image_layer_with_wh_files_goes_to_the_daemon() {
    let s = Scene::new("ri-wh");
    let bottom = s.t.mkdir("wh/bottom");
    put(&bottom.join("gone"), "gone\n");
    put(&bottom.join("keep"), "keep\n");
    let top = s.t.mkdir("wh/top");
    put(&top.join(".wh.gone"), "");
    put(&top.join("new"), "new\n");
    let images = vec![
        pack(&top, &s.t.join("top.dwarfs")),
        pack(&bottom, &s.t.join("bottom.dwarfs")),
    ];
    let look = "cd \"$0\" && ls -A && stat -f -c 'fs=%T' .";
    let d = s.run(&[], Some(lowers_arg(&images)), &[], look);
    assert!(d.status.success(), "{d}");
    assert_eq!(d.stdout, "keep\nnew\nfs=fuseblk\n", "{d}");
    let note = format!("lower 1 {} holds .wh.gone", images[0].display());
    assert!(d.stderr.contains(&note), "{d}");
    let d = s.run(&os(&["--dry-run"]), Some(lowers_arg(&images)), &[], look);
    assert!(
        d.stdout.contains("note: ") && d.stdout.contains("daemon: fimfs mount"),
        "{d}"
    );
    // Without the .wh. layer, the same images go to the kernel overlay.
    let d = s.run(&[], Some(lowers_arg(&images[1..])), &[], look);
    assert!(d.status.success(), "{d}");
    assert_eq!(d.stdout, "gone\nkeep\nfs=overlayfs\n", "{d}");
    s.assert_clean();
}

/// The fuse mounts below `dir`, from `/proc/mounts`.
fn fuse_mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("fuse") && l.split(' ').nth(1).is_some_and(|p| p.starts_with(&dir)))
        .map(str::to_string)
        .collect()
}

/// The keeper: the launcher's child that is itself `fimfs`.
fn keeper_of(launcher: u32) -> Option<i32> {
    let children = fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .find(|c| {
            fs::read(format!("/proc/{c}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|&b| b == 0).nth(1) == Some(b"run"))
        })
}

#[test]
fn sigkill_on_bwrap_with_image_layers_leaves_no_mount_and_no_process() {
    let s = Scene::alone("ri-kill");
    let dirs = two_layers(&s.t);
    let images = pack_each(&s.t, &dirs);
    for victim in ["launcher", "keeper"] {
        let token = format!("ri-kill-{victim}-{}", std::process::id());
        let ready = s.t.join(format!("ready-{victim}"));
        let script = format!(
            "cat \"$0\"/etc/app.conf > {r}.tmp && mv {r}.tmp {r}; exec sleep 600",
            r = ready.display()
        );
        let env = [
            ("FIM_OVERLAY", "bwrap"),
            ("FIMFS_TREE_TOKEN", token.as_str()),
        ];
        let (mut l, _) = s.start(&[], Some(lowers_arg(&images)), &env, &script);
        wait_for("the command to start", || ready.exists());
        assert_eq!(fs::read_to_string(&ready).unwrap(), "top\n");
        let layer_mounts = fuse_mounts_below(&s.work);
        assert_eq!(
            layer_mounts.len(),
            2,
            "one mount per image: {layer_mounts:?}"
        );
        assert!(
            layer_mounts.iter().all(|m| m.contains("/layers/")),
            "{layer_mounts:?}"
        );
        match victim {
            "launcher" => l.kill().unwrap(),
            _ => {
                let keeper = keeper_of(l.id()).expect("the keeper");
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(keeper),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
            }
        }
        let _ = l.wait();
        wait_for("every process of the run to end", || {
            tagged(&token).is_empty()
        });
        wait_for("the mounts and the run directory to go", || {
            fuse_mounts_below(s.t.path()).is_empty()
                && fs::read_dir(&s.work).map_or(0, |d| d.count()) == 0
        });
        s.assert_clean();
    }
    // The next run on the same upper just works.
    let d = s.run(
        &[],
        Some(lowers_arg(&images)),
        &[("FIM_OVERLAY", "bwrap")],
        "cat \"$0\"/etc/app.conf",
    );
    assert!(d.status.success(), "{d}");
    assert_eq!(d.stdout, "top\n");
    s.assert_clean();
}

#[test]
fn an_unprivileged_user_runs_over_images_on_each_backend() {
    // FlatImage runs as the desktop user; its images hold files of another
    // owner (its base layers are built as 1000:1000, here root's).
    const NOBODY: u32 = 65534;
    let s = Scene::new("ri-user");
    let dirs = two_layers(&s.t);
    let images = pack_each(&s.t, &dirs);
    let data = s.t.join("data");
    fs::create_dir_all(&s.upper).unwrap();
    let host = s.t.mkdir("host");
    for d in [&data, &s.upper, &host] {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    for backend in BACKENDS {
        let out = host.join(format!("seen-{backend}"));
        // Every backend shows image entries owned by the user (dwarfs'
        // uid=/gid=), so the kernel overlay copies a lower directory up; the
        // daemon copies up as the user whatever the owner shown.
        let copy_up = format!("&& echo up > {v}/etc/new-{backend}", v = s.view.display());
        let script = format!(
            "id -u > {o} && cat {v}/etc/app.conf {v}/opt/keep >> {o} && echo mine > {v}/{backend} {copy_up}",
            o = out.display(),
            v = s.view.display(),
        );
        let l = setpriv(NOBODY, FIMFS)
            .args(["run", "--target"])
            .arg(&s.view)
            .arg(lowers_arg(&images))
            .arg(&s.upper)
            .args(["--", "sh", "-c", &script])
            .env("FIM_OVERLAY", backend)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            l.status.success(),
            "{backend}: {}\n{}",
            l.status,
            String::from_utf8_lossy(&l.stderr)
        );
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            format!("{NOBODY}\ntop\nkeep\n"),
            "{backend}"
        );
        assert_eq!(fs::read_to_string(s.upper.join(backend)).unwrap(), "mine\n");
        let new = s.upper.join(format!("etc/new-{backend}"));
        assert_eq!(fs::read_to_string(&new).unwrap(), "up\n", "{backend}");
        assert_eq!(fs::metadata(&new).unwrap().uid(), NOBODY, "{backend}");
        s.assert_clean();
    }
}

#[test]
fn casefold_runs_over_images_on_the_daemon() {
    let s = Scene::new("ri-casefold");
    let dirs = two_layers(&s.t);
    let images = pack_each(&s.t, &dirs);
    let script = "cat \"$0\"/ETC/App.Conf \"$0\"/usr/SHARE/doc/ReadMe && stat -f -c 'fs=%T' \"$0\"";
    // FIM_OVERLAY=bwrap asks for the kernel overlay; casefold never uses it.
    let env = [("FIM_OVERLAY", "bwrap"), ("FIM_CASEFOLD", "1")];
    let d = s.run(&[], Some(lowers_arg(&images)), &env, script);
    assert!(d.status.success(), "{d}");
    assert_eq!(d.stdout, "top\nreadme\nfs=fuseblk\n", "{d}");
    s.assert_clean();
}

/// The owner the images of the owner tests store their entries as.
const STORED: u32 = 1234;

/// An image whose entries are stored as `STORED`:`STORED`: `etc/conf`,
/// `etc/link` and `shared/`.
fn stored_as_another_owner() -> Vec<u8> {
    let m = |mode| im(mode, STORED, STORED, 1_700_000_000);
    let mut t = Tree::new(4096);
    t.dir("etc", &m(0o755))
        .file("etc/conf", b"conf\n", &m(0o644))
        .symlink("etc/link", "conf", &m(0o777))
        .dir("shared", &m(0o755));
    let (meta, blocks) = t.finish();
    assemble(&meta, &blocks, Layout::default())
}

#[test]
fn an_image_layer_given_an_owner_shows_it_and_copies_up_as_it() {
    let t = TempDir::new("ri-owner-engine");
    let bytes = stored_as_another_owner();
    for (n, owner) in [None, Some((4242, 4343))].into_iter().enumerate() {
        let cache = BlockCache::new(1 << 20);
        let layer = ImageLayer::new(open_bytes(t.path(), &bytes).unwrap(), &cache).unwrap();
        let layer = match owner {
            Some((uid, gid)) => layer.with_owner(uid, gid),
            None => layer,
        };
        let want = owner.unwrap_or((STORED, STORED));
        let root = layer.root().unwrap();
        let etc = layer.open_dir(&root, b"etc").unwrap();
        for (dir, name) in [(&root, c"etc"), (&etc, c"conf"), (&etc, c"link")] {
            let st = layer.stat(dir, name).unwrap();
            assert_eq!((st.st_uid, st.st_gid), want, "{owner:?}: {name:?}");
        }
        // A root daemon copies up with the owner the layer shows.
        let upper = t.mkdir(format!("upper-{n}"));
        let work = Workdir::open(&t.join(format!("work-{n}/1"))).unwrap();
        let stack = Stack::with_lowers(Some(Layer::open(&upper).unwrap()), vec![Box::new(layer)]);
        let opts = Options {
            privileged: true,
            ..Options::default()
        };
        let union = Union::new(stack, Some(work), opts);
        let etc = union.lookup(ROOT_INO, b"etc").unwrap();
        let conf = union.lookup(etc.ino, b"conf").unwrap();
        assert_eq!((conf.attr.uid, conf.attr.gid), want, "{owner:?}");
        drop(union.open(conf.ino, libc::O_WRONLY).unwrap());
        for p in ["etc", "etc/conf"] {
            let md = fs::symlink_metadata(upper.join(p)).unwrap();
            assert_eq!((md.uid(), md.gid()), want, "{owner:?}: copied-up {p}");
        }
    }
}

#[test]
fn image_entries_show_the_caller_as_owner_and_directories_their_own_on_each_backend() {
    // As FlatImage mounts its layers with dwarfs' uid=/gid=: entries of an
    // image appear owned by whoever runs (root here), whatever they were
    // stored as; a directory lower shows its real owners. A merged
    // directory shows its topmost layer's owner.
    const DIR_OWNER: (u32, u32) = (4321, 4322);
    let script = "cd \"$0\" && stat -c '%n %u:%g' etc etc/conf etc/link shared \
         plain plain/g shared/d && echo x >> etc/conf && echo y >> plain/g \
         && stat -f -c 'fs=%T' .";
    let want = "etc 0:0\netc/conf 0:0\netc/link 0:0\nshared 0:0\n\
         plain 4321:4322\nplain/g 4321:4322\nshared/d 4321:4322\n";
    for backend in BACKENDS {
        let s = Scene::new(&format!("ri-owner-{backend}"));
        let image = s.t.join("stored.dwarfs");
        fs::write(&image, stored_as_another_owner()).unwrap();
        let dir = s.t.mkdir("plain-lower");
        put(&dir.join("plain/g"), "g\n");
        put(&dir.join("shared/d"), "d\n");
        for p in ["plain", "plain/g", "shared/d"] {
            std::os::unix::fs::lchown(dir.join(p), Some(DIR_OWNER.0), Some(DIR_OWNER.1)).unwrap();
        }
        let env = [("FIM_OVERLAY", backend)];
        let d = s.run(&[], Some(lowers_arg(&[image, dir])), &env, script);
        assert!(d.status.success(), "{backend}: {d}");
        let fs_type = match backend {
            "bwrap" => "fs=overlayfs\n",
            _ => "fs=fuseblk\n",
        };
        assert_eq!(
            d.stdout,
            format!("{want}{fs_type}"),
            "{backend}: owners seen: {d}"
        );
        // Copied up with the owner each layer showed.
        for (p, owner) in [
            ("etc", (0, 0)),
            ("etc/conf", (0, 0)),
            ("plain", DIR_OWNER),
            ("plain/g", DIR_OWNER),
        ] {
            let md = fs::symlink_metadata(s.upper.join(p)).unwrap();
            assert_eq!((md.uid(), md.gid()), owner, "{backend}: upper {p}");
        }
        assert_eq!(
            fs::read_to_string(s.upper.join("etc/conf")).unwrap(),
            "conf\nx\n"
        );
        s.assert_clean();
    }
}

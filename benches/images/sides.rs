//! The four ways the benchmark serves one layer stack, all mounted under
//! `run-<pid>/<stack>/`:
//!
//! 1. `inproc`: one fimfs daemon over the images (`fimfs mount IMG1:…`);
//! 2. `kernel/img`: the kernel overlay over one single-image fimfs mount
//!    per layer (FlatImage's default stack, fimfs standing in for dwarfs);
//! 3. `fimfs/img`: a fimfs daemon over those same single-image mounts
//!    (FlatImage's union backends today);
//! 4. `kernel/dir`: the kernel overlay over the layers as directories.
//!
//! The single-image mounts are shared by sides 2 and 3. A cold start
//! ([`Stack::cold`]) takes the whole stack down, mounts only what the side
//! needs (every daemon fresh), then drops the page cache; a warm start
//! ([`Stack::warm`]) mounts what is missing and leaves the rest.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::mounts::{Daemon, Flavor, drop_caches};
use crate::common::quiet;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    InProc,
    KernelImg,
    FimfsImg,
    KernelDir,
}

pub const SIDES: [Side; 4] = [
    Side::InProc,
    Side::KernelImg,
    Side::FimfsImg,
    Side::KernelDir,
];

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::InProc => "(1) fimfs, images in-process",
            Side::KernelImg => "(2) kernel overlay over fimfs image mounts",
            Side::FimfsImg => "(3) fimfs over fimfs image mounts",
            Side::KernelDir => "(4) kernel overlay over directories",
        }
    }

    pub fn index(self) -> usize {
        SIDES.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// A kernel overlay (read-only, `lowerdir=` only) mounted in our own
/// namespace at `mnt`.
struct Overlay {
    mnt: PathBuf,
    mounted: bool,
}

impl Overlay {
    fn mount(&mut self, lowers: &[PathBuf]) -> Result<(), String> {
        self.umount();
        let opt: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        let ok = quiet(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!("ro,lowerdir={}", opt.join(":")))
                .arg(&self.mnt),
        );
        self.mounted = ok;
        ok.then_some(())
            .ok_or_else(|| format!("mount -t overlay at {} failed", self.mnt.display()))
    }

    fn umount(&mut self) {
        if self.mounted {
            if !quiet(Command::new("umount").arg(&self.mnt)) {
                let _ = quiet(Command::new("umount").arg("-l").arg(&self.mnt));
            }
            self.mounted = false;
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.umount();
    }
}

pub struct Stack {
    pub images: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    // Field order is drop order: what is stacked on the single-image
    // mounts goes first.
    kimg: Overlay,
    kdir: Overlay,
    over: Daemon,
    inproc: Daemon,
    singles: Vec<Daemon>,
}

fn mnt_dir(p: PathBuf) -> Result<PathBuf, String> {
    fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

impl Stack {
    /// `images` and `dirs`: the same layers, top-most first.
    pub fn new(
        run: &Path,
        name: &str,
        bin: &Path,
        opts: Option<String>,
        images: Vec<PathBuf>,
        dirs: Vec<PathBuf>,
    ) -> Result<Stack, String> {
        let base = run.join(name);
        let fimfs = Flavor::Fimfs {
            bin: bin.to_path_buf(),
            opts,
        };
        let log = |n: &str| base.join(format!("{n}.log"));
        let mut singles = Vec::new();
        let mut single_mnts = Vec::new();
        for (i, img) in images.iter().enumerate() {
            let m = mnt_dir(base.join(format!("single/{i:02}")))?;
            singles.push(Daemon::new(
                fimfs.clone(),
                m.clone(),
                std::slice::from_ref(img),
                log(&format!("single-{i:02}")),
            ));
            single_mnts.push(m);
        }
        Ok(Stack {
            inproc: Daemon::new(
                fimfs.clone(),
                mnt_dir(base.join("inproc"))?,
                &images,
                log("inproc"),
            ),
            over: Daemon::new(
                fimfs,
                mnt_dir(base.join("over"))?,
                &single_mnts,
                log("over"),
            ),
            kimg: Overlay {
                mnt: mnt_dir(base.join("kimg"))?,
                mounted: false,
            },
            kdir: Overlay {
                mnt: mnt_dir(base.join("kdir"))?,
                mounted: false,
            },
            singles,
            images,
            dirs,
        })
    }

    /// Where `side` serves the stack.
    pub fn mnt(&self, side: Side) -> &Path {
        match side {
            Side::InProc => &self.inproc.mnt,
            Side::KernelImg => &self.kimg.mnt,
            Side::FimfsImg => &self.over.mnt,
            Side::KernelDir => &self.kdir.mnt,
        }
    }

    /// Everything unmounted, tops first.
    pub fn down(&mut self) -> Result<(), String> {
        self.kimg.umount();
        self.kdir.umount();
        self.over.unmount()?;
        self.inproc.unmount()?;
        for s in &mut self.singles {
            s.unmount()?;
        }
        Ok(())
    }

    pub fn singles_up(&mut self) -> Result<(), String> {
        for s in &mut self.singles {
            if !s.is_ro() {
                s.mount(None)?;
            }
        }
        Ok(())
    }

    pub fn single_mnts(&self) -> Vec<PathBuf> {
        self.singles.iter().map(|s| s.mnt.clone()).collect()
    }

    /// Mounts what `side` needs that is not mounted yet.
    pub fn warm(&mut self, side: Side) -> Result<(), String> {
        match side {
            Side::InProc if !self.inproc.is_ro() => self.inproc.mount(None),
            Side::KernelImg if !self.kimg.mounted => {
                self.singles_up()?;
                let m = self.single_mnts();
                self.kimg.mount(&m)
            }
            Side::FimfsImg if !self.over.is_ro() => {
                self.singles_up()?;
                self.over.mount(None)
            }
            Side::KernelDir if !self.kdir.mounted => {
                let d = self.dirs.clone();
                self.kdir.mount(&d)
            }
            _ => Ok(()),
        }
    }

    /// Takes the stack down, mounts `side` afresh, drops the page cache.
    pub fn cold(&mut self, side: Side) -> Result<(), String> {
        self.down()?;
        self.warm(side)?;
        drop_caches(3)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("fimfs-images: {e}");
        }
    }
}

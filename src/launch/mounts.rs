//! BWRAP over image lowers: the kernel overlay cannot read a DwarFS image,
//! so the keeper mounts each image lower with fimfs's own reader, read-only,
//! at `BASE/<PID>/layers/<N>` (FlatImage's `instance/<PID>/layers/<N>`), and
//! bwrap stacks those directories.
//!
//! - One process, one FUSE session per image: each session is served by
//!   threads of the keeper ([`session::start`]), all reading through one
//!   block cache. No `dwarfs` process.
//! - `N` counts from the bottom of the whole lower list (0 is the lowest
//!   layer, as FlatImage numbers them); a directory lower keeps its number
//!   but has no mount.
//! - Entries appear owned by the user who runs ([`caller_owner`], dwarfs'
//!   `uid=`/`gid=`, as FlatImage mounts its layers): the kernel overlay
//!   copies a file up as that user. The daemon gives its image lowers the
//!   same owner (`run_daemon`); directory lowers keep theirs on both.
//! - The mounts end with [`LayerMounts`] (dropped when the command is over,
//!   lazily unmounted); if the keeper is killed, whoever cleans the run
//!   directory detaches what is left in `layers/` (`mount::clean_stale`).
use super::run::error::RunError;
use super::rundir::RunPaths;
use crate::fuse::session::{self, Running};
use crate::image::source::Source;
use crate::image::{BlockCache, DEFAULT_CACHE_BYTES, Image};
use crate::mount::{MountError, image_layer, image_mount};
use crate::opts::MountOpts;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// FUSE threads per layer mount. The kernel overlay asks each lower in
/// turn, and a read decodes at most a 256 KiB step before it answers, so
/// one thread per layer serves it; each more thread costs a 16 MiB
/// receive buffer that fuser zeroes (20 layers with two threads each took
/// 269 ms to start a run, with one 202 ms: `cargo bench --bench images --
/// startup`).
const LAYER_THREADS: usize = 1;

/// The live layer mounts of a run; unmounted on drop.
pub struct LayerMounts {
    running: Vec<Running>,
}

impl LayerMounts {
    /// How many layers are mounted.
    pub fn len(&self) -> usize {
        self.running.len()
    }
}

/// The number of the lower at `index` (topmost first) among `count`
/// lowers: 0 for the bottom one.
fn number(index: usize, count: usize) -> usize {
    count.saturating_sub(index + 1)
}

/// The directories the kernel overlay stacks, topmost first: a directory
/// lower itself, an image lower its mount.
pub fn overlay_dirs(lowers: &[Source], paths: &RunPaths) -> Vec<PathBuf> {
    lowers
        .iter()
        .enumerate()
        .map(|(i, l)| match l {
            Source::Dir(p) => p.clone(),
            Source::Image(_) => paths.layer(number(i, lowers.len())),
        })
        .collect()
}

/// The owner every entry of an image lower shows on a run, on either
/// backend: the user who runs, as `(uid, gid)`.
pub(super) fn caller_owner() -> (u32, u32) {
    (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
}

/// The mounts [`mount_images`] makes, as `(image name, mountpoint)`.
pub fn planned(lowers: &[Source], paths: &RunPaths) -> Vec<(String, PathBuf)> {
    lowers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match l {
            Source::Image(at) => Some((at.name(), paths.layer(number(i, lowers.len())))),
            Source::Dir(_) => None,
        })
        .collect()
}

/// Mounts every image lower; `opened[i]` is lower `i`'s image, opened when
/// the run was prepared. Fails, unmounting what was made, if one cannot
/// be mounted.
pub fn mount_images(
    lowers: &[Source],
    opened: Vec<Option<Image>>,
    paths: &RunPaths,
) -> Result<LayerMounts, RunError> {
    let mut mounts = LayerMounts {
        running: Vec::new(),
    };
    if !lowers.iter().any(|l| matches!(l, Source::Image(_))) {
        return Ok(mounts);
    }
    let cache = BlockCache::new(DEFAULT_CACHE_BYTES);
    let mut opts = MountOpts::default();
    let (uid, gid) = caller_owner();
    (opts.squash_uid, opts.squash_gid) = (Some(uid), Some(gid));
    opts.threads = Some(LAYER_THREADS);
    for (i, (lower, image)) in lowers.iter().zip(opened).enumerate() {
        let (Source::Image(at), Some(image)) = (lower, image) else {
            continue;
        };
        let mnt = paths.layer(number(i, lowers.len()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&mnt)
            .map_err(|source| MountError::Io {
                what: "layer mountpoint",
                path: mnt.clone(),
                source,
            })?;
        let layer = image_layer(image, at, &cache)?;
        let (union, cfg) = image_mount(layer, at, &mnt, opts.clone());
        let running = session::start(Arc::new(union), &cfg)?;
        mounts.running.push(running);
    }
    // Each session answers INIT on its own threads: the mounts made above
    // come up together, and are waited for once they all exist.
    for running in &mounts.running {
        wait_ready(running.mountpoint())?;
    }
    Ok(mounts)
}

/// How long a run waits for a FUSE mount to answer `statfs`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until `statfs(mnt)` reports the FUSE magic, as FlatImage does.
pub(super) fn wait_ready(mnt: &Path) -> Result<(), RunError> {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    let start = Instant::now();
    loop {
        if let Ok(s) = nix::sys::statfs::statfs(mnt)
            && i128::from(s.filesystem_type().0) == i128::from(FUSE_SUPER_MAGIC)
        {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(RunError::NotReady {
                mountpoint: mnt.to_path_buf(),
                waited: READY_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::source::ImageAt;
    use std::path::Path;

    #[test]
    fn images_are_numbered_from_the_bottom_and_directories_kept() {
        let paths = RunPaths::new(Path::new("/w"), 7);
        let image = |offset| {
            Source::Image(ImageAt {
                file: PathBuf::from("/app"),
                offset,
                size: Some(10),
            })
        };
        let lowers = [image(30), Source::Dir(PathBuf::from("/d")), image(10)];
        assert_eq!(
            overlay_dirs(&lowers, &paths),
            [
                PathBuf::from("/w/7/layers/2"),
                PathBuf::from("/d"),
                PathBuf::from("/w/7/layers/0"),
            ]
        );
        assert_eq!(
            planned(&lowers, &paths),
            [
                ("/app@30+10".to_string(), PathBuf::from("/w/7/layers/2")),
                ("/app@10+10".to_string(), PathBuf::from("/w/7/layers/0")),
            ]
        );
    }
}

//! The layers and paths of one run, checked before anything is made.
//!
//! - `LOWERS` given: each entry resolves as for `fimfs mount` (a directory,
//!   an image, `FILE@OFFSET[+SIZE]`, a FlatImage binary expanded to its
//!   layers). `--image` then only gives the bytes that choose the backend.
//! - `LOWERS` omitted with `--image`: the binary's own layers, in SPEC §8's
//!   order (`launch::layers`).
//! - The upper and BASE obey `fimfs mount`'s rules (no overlap with a
//!   lower, one filesystem).
//!
//! On BWRAP the image lowers are opened here (metadata read and validated
//! once, no thread started: the launcher forks after this), so that their
//! root can be checked for `.wh.` files and the keeper can mount them.
use super::super::dialect::{self, Root, Unreadable};
use super::super::layers::{data_dir, own_layers};
use super::Environment;
use super::RunRequest;
use super::error::RunError;
use crate::host::paths::absolute;
use crate::image::source::{self, Source, SourceError};
use crate::mount::{MountError, check_layout, default_work_base, is_dir_named};
use std::path::{Path, PathBuf};

/// Where a run's lowers come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `LOWERS` on the command line.
    Lowers,
    /// The `--image` binary's own layers.
    Own {
        binary: PathBuf,
        /// Embedded, from `FIM_LAYERS`, from `<data>/layers`.
        counts: [usize; 3],
        /// `<data>/layers` of the binary.
        data_layers: PathBuf,
        /// Candidates left out, and why.
        skipped: Vec<String>,
    },
}

/// The checked lowers (topmost first), where they came from, the upper and
/// BASE, absolute.
pub(super) struct Checked {
    pub lowers: Vec<Source>,
    pub origin: Origin,
    pub upper: PathBuf,
    pub base: PathBuf,
}

fn lowers_of(req: &RunRequest, env: &Environment) -> Result<(Vec<Source>, Origin), RunError> {
    let image = match (&req.lowers, &req.image) {
        (Some(given), _) if !given.is_empty() => {
            let mut lowers = Vec::new();
            for l in given {
                lowers.extend(resolve(l)?);
            }
            return Ok((lowers, Origin::Lowers));
        }
        (None, Some(image)) => image,
        _ => return Err(RunError::NoLower),
    };
    let binary = absolute(image)?;
    let own = own_layers(&binary, env.fim_layers.as_deref())?;
    if own.lowers.is_empty() {
        return Err(RunError::NoOwnLayers { binary });
    }
    let origin = Origin::Own {
        data_layers: data_dir(&binary).join("layers"),
        binary,
        counts: own.counts,
        skipped: own.skipped,
    };
    Ok((own.lowers, origin))
}

/// One `LOWERS` entry resolved; a missing one is named as such.
fn resolve(l: &Path) -> Result<Vec<Source>, RunError> {
    let path = absolute(l)?;
    source::resolve(&path).map_err(|e| match e {
        SourceError::Missing { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            MountError::Missing {
                what: "lower",
                path,
            }
            .into()
        }
        e => MountError::Lower(e).into(),
    })
}

/// Resolves the lowers and checks every path of `req`.
pub(super) fn checked_paths(req: &RunRequest, env: &Environment) -> Result<Checked, RunError> {
    let (lowers, origin) = lowers_of(req, env)?;
    if req.upper.exists() {
        is_dir_named("upper directory", &req.upper)?;
    }
    let upper = absolute(&req.upper)?;
    let base = match &req.workdir {
        Some(w) => absolute(w)?,
        None => default_work_base(&upper),
    };
    let paths: Vec<PathBuf> = lowers.iter().map(|l| l.path().to_path_buf()).collect();
    check_layout(&paths, &upper, &base)?;
    Ok(Checked {
        lowers,
        origin,
        upper,
        base,
    })
}

/// Opens each image lower (`None` for a directory).
pub(super) fn open_images(lowers: &[Source]) -> Result<Vec<Option<crate::image::Image>>, RunError> {
    lowers
        .iter()
        .map(|l| match l {
            Source::Dir(_) => Ok(None),
            Source::Image(at) => Ok(Some(crate::mount::read_image(at)?)),
        })
        .collect()
}

/// The first layer the kernel overlay would misread (`dialect`); an image
/// lower is judged by the root of its index.
pub(super) fn first_unreadable(
    upper: &Path,
    lowers: &[Source],
    opened: &[Option<crate::image::Image>],
) -> Option<Unreadable> {
    let names: Vec<String> = lowers.iter().map(super::describe::name).collect();
    let roots: Vec<Root<'_>> = lowers
        .iter()
        .zip(&names)
        .enumerate()
        .map(
            |(i, (l, name))| match (l, opened.get(i).and_then(Option::as_ref)) {
                (Source::Image(_), Some(img)) => Root::Image {
                    name,
                    tree: img.tree(),
                },
                _ => Root::Dir(l.path()),
            },
        )
        .collect();
    dialect::first_unreadable(upper, &roots)
}

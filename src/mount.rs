//! From a `MountRequest` to a serving daemon.
//!
//! Every path is checked before anything is created: a refused mount leaves
//! the disk as it found it. Without `-f` the process forks once; the parent
//! exits 0 only after the child's mount answers, or prints the child's error
//! and exits 1.
mod error;

pub use error::MountError;

use crate::fuse::Ttl;
use crate::fuse::session::{MountConfig, SessionError, serve};
use crate::host::mountpoint::{detach_if_dead, is_mountpoint, unmount_lazy};
use crate::host::paths::absolute;
use crate::host::process::fuse_daemons;
use crate::image::source::{self, ImageAt, Source};
use crate::image::{BlockCache, DEFAULT_CACHE_BYTES, Image};
use crate::layer::{ImageLayer, Layer, Lower, Stack, Workdir};
use crate::opts::MountRequest;
use crate::union::{Options, Squash, Union};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest mount source written (before fusermount3's escaping). The
/// kernel takes at most 4096 bytes; a tenth of that keeps `findmnt` and `df`
/// readable and leaves room for any escaping.
const SOURCE_MAX: usize = 1024;

/// The mount's source, as `findmnt`, `df` and `/proc/self/mountinfo` show
/// it: the layers in unionfs-fuse's branch syntax, `UPPER=RW:TOP=RO:…`
/// (`TOP=RO:…` without an upper), which `unionfs -o cow SOURCE MNT` reads
/// back. The upper is always there whole, so that its users can be found;
/// lowers that would take it past [`SOURCE_MAX`] bytes are left out from the
/// bottom and counted, `…:L7=RO:...+13`. Paths appear byte for byte (the
/// kernel escapes space, tab, newline and backslash in mountinfo).
pub fn mount_source(upper: Option<&Path>, lowers: &[PathBuf]) -> OsString {
    source_of(upper, lowers.iter().map(|l| l.as_os_str().to_owned()))
}

/// [`mount_source`] of resolved lowers: an image is named as
/// `FILE@OFFSET+SIZE` when it does not start its file.
fn source_of(upper: Option<&Path>, lowers: impl ExactSizeIterator<Item = OsString>) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    if let Some(u) = upper {
        out.extend_from_slice(u.as_os_str().as_bytes());
        out.extend_from_slice(b"=RW");
    }
    let count = lowers.len();
    for (i, l) in lowers.enumerate() {
        let left = count - i;
        // Room for the count of what may still be left out.
        let tail = if left > 1 { 16 } else { 0 };
        let item = l.as_os_str().as_bytes();
        if !out.is_empty() && out.len() + 1 + item.len() + 3 + tail > SOURCE_MAX {
            out.extend_from_slice(format!(":...+{left}").as_bytes());
            break;
        }
        if !out.is_empty() {
            out.push(b':');
        }
        out.extend_from_slice(item);
        out.extend_from_slice(b"=RO");
    }
    std::os::unix::ffi::OsStringExt::from_vec(out)
}

/// A request whose paths passed every check.
#[derive(Debug, Clone)]
pub struct Plan {
    pub req: MountRequest,
    /// Topmost first; a FlatImage binary already expanded to its layers.
    lowers: Vec<Source>,
    upper: Option<PathBuf>,
    /// None: the default `<parent of UPPER>/work/<PID>`, fixed in the daemon.
    workdir: Option<PathBuf>,
    mountpoint: PathBuf,
    /// `(uid, gid)` the entries of image lowers show (`fimfs run`'s
    /// daemon, as dwarfs' `uid=`/`gid=`); None: their stored owners.
    image_owner: Option<(u32, u32)>,
}

pub(crate) fn is_dir_named(what: &'static str, p: &Path) -> Result<(), MountError> {
    let path = p.to_path_buf();
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(MountError::NotADirectory { what, path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(MountError::Missing { what, path })
        }
        Err(source) => Err(MountError::Io { what, path, source }),
    }
}

/// Refuses a mountpoint that a live fimfs mount already covers, naming the
/// daemon, instead of calling it merely non-empty.
fn refuse_live_fimfs(mountpoint: &Path) -> Result<(), MountError> {
    let Some(m) = crate::host::mountinfo::read()
        .into_iter()
        .rev()
        .find(|m| m.point == mountpoint)
        .filter(|m| m.fstype == "fuse.fimfs")
    else {
        return Ok(());
    };
    Err(MountError::AlreadyMounted {
        mountpoint: mountpoint.to_path_buf(),
        daemons: fuse_daemons(m.dev.1),
        source: m.source,
    })
}

fn nearest_dev(p: &Path) -> Option<u64> {
    p.ancestors()
        .find_map(|a| std::fs::metadata(a).ok().map(|m| m.dev()))
}

fn inside(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

/// The lowers, topmost first: each entry resolved (a FlatImage binary to
/// its layers). With `offset=`/`imagesize=` (dwarfs' options) the one
/// entry is the file that holds the image, taken whole, binary or not.
fn resolve_lowers(req: &MountRequest) -> Result<Vec<Source>, MountError> {
    let o = &req.opts;
    if o.image_offset.is_some() || o.image_size.is_some() {
        let [file] = req.lowers.as_slice() else {
            return Err(MountError::ImagePlacement);
        };
        let file = absolute(file)?;
        if !std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            return Err(MountError::ImagePlacement);
        }
        return Ok(vec![Source::Image(ImageAt {
            file,
            offset: o.image_offset.unwrap_or(0),
            size: o.image_size,
        })]);
    }
    let mut lowers = Vec::new();
    for l in &req.lowers {
        lowers.extend(source::resolve(&absolute(l)?).map_err(MountError::Lower)?);
    }
    Ok(lowers)
}

/// Opens resolved lowers, topmost first; images read through `cache`,
/// their entries owned by `image_owner` when given (directories keep
/// their owners).
pub fn open_lowers(
    sources: &[Source],
    cache: &BlockCache,
    image_owner: Option<(u32, u32)>,
) -> Result<Vec<Box<dyn Lower>>, MountError> {
    let mut lowers: Vec<Box<dyn Lower>> = Vec::new();
    for l in sources {
        lowers.push(match l {
            Source::Dir(p) => Box::new(Layer::open(p).map_err(|source| MountError::Layer {
                what: "lower directory",
                source,
            })?),
            Source::Image(at) => {
                let layer = open_image(at, cache)?;
                Box::new(match image_owner {
                    Some((uid, gid)) => layer.with_owner(uid, gid),
                    None => layer,
                })
            }
        });
    }
    Ok(lowers)
}

/// Opens one image lower and registers its blocks in the mount's cache.
fn open_image(at: &ImageAt, cache: &BlockCache) -> Result<ImageLayer, MountError> {
    image_layer(read_image(at)?, at, cache)
}

/// Opens the image `at` names and reads its metadata.
pub(crate) fn read_image(at: &ImageAt) -> Result<Image, MountError> {
    let file = std::fs::File::open(&at.file).map_err(|source| MountError::Io {
        what: "lower image",
        path: at.file.clone(),
        source,
    })?;
    Image::open(Arc::new(file), at.offset, at.size, &at.file).map_err(MountError::Image)
}

/// Serves an opened image as a lower, its blocks read through `cache`.
pub(crate) fn image_layer(
    image: Image,
    at: &ImageAt,
    cache: &BlockCache,
) -> Result<ImageLayer, MountError> {
    ImageLayer::new(image, cache).map_err(|e| MountError::Io {
        what: "lower image",
        path: at.file.clone(),
        source: std::io::Error::from_raw_os_error(e as i32),
    })
}

/// The rules every upper and workdir obey (absolute paths): neither
/// overlaps a lower, they do not overlap each other, and they are on one
/// filesystem (copy-up renames from one into the other).
pub(crate) fn check_layout(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), MountError> {
    for (what, p) in [("upper directory", upper), ("workdir", work)] {
        for l in lowers {
            if inside(p, l) || inside(l, p) {
                return Err(overlap(what, p, "lower directory", l));
            }
        }
    }
    if inside(work, upper) || inside(upper, work) {
        return Err(overlap("workdir", work, "the upper directory", upper));
    }
    if nearest_dev(work) != nearest_dev(upper) {
        return Err(MountError::OtherFilesystem {
            workdir: work.to_path_buf(),
            upper: upper.to_path_buf(),
        });
    }
    Ok(())
}

fn overlap(what: &'static str, p: &Path, other_what: &'static str, other: &Path) -> MountError {
    MountError::Overlap {
        what,
        path: p.to_path_buf(),
        other_what,
        other: other.to_path_buf(),
    }
}

pub(crate) fn default_work_base(upper: &Path) -> PathBuf {
    upper
        .parent()
        .map(|p| p.join("work"))
        .unwrap_or_else(|| PathBuf::from("/work"))
}

impl Plan {
    /// Checks every path of `req`; creates nothing.
    pub fn check(req: MountRequest) -> Result<Plan, MountError> {
        let lowers = resolve_lowers(&req)?;
        Plan::check_resolved(req, lowers)
    }

    /// As [`Plan::check`], with the lowers already resolved (topmost
    /// first); `req.lowers` is not read.
    pub fn check_resolved(req: MountRequest, lowers: Vec<Source>) -> Result<Plan, MountError> {
        detach_if_dead(&req.mountpoint);
        is_dir_named("mountpoint", &req.mountpoint)?;
        let mountpoint = absolute(&req.mountpoint)?;
        let empty = std::fs::read_dir(&mountpoint)
            .map_err(|source| MountError::Io {
                what: "mountpoint",
                path: mountpoint.clone(),
                source,
            })?
            .next()
            .is_none();
        if !req.opts.nonempty {
            refuse_live_fimfs(&mountpoint)?;
        }
        if !empty && !req.opts.nonempty {
            return Err(MountError::NotEmpty { mountpoint });
        }
        let upper = match &req.upper {
            Some(u) => {
                if u.exists() {
                    is_dir_named("upper directory", u)?;
                }
                Some(absolute(u)?)
            }
            None => None,
        };
        let workdir = match &req.opts.workdir {
            Some(w) if upper.is_none() => {
                return Err(MountError::WorkdirWithoutUpper { workdir: w.clone() });
            }
            Some(w) => Some(absolute(w)?),
            None => None,
        };
        let plan = Plan {
            req,
            lowers,
            upper,
            workdir,
            mountpoint,
            image_owner: None,
        };
        plan.check_overlaps()?;
        Ok(plan)
    }

    /// This plan with the entries of its image lowers owned by `uid`/`gid`
    /// (dwarfs' `uid=`/`gid=` per image; not a squash of the union).
    pub fn with_image_owner(self, uid: u32, gid: u32) -> Plan {
        Plan {
            image_owner: Some((uid, gid)),
            ..self
        }
    }

    fn check_overlaps(&self) -> Result<(), MountError> {
        let Some(upper) = &self.upper else {
            return Ok(());
        };
        let work = self
            .workdir
            .clone()
            .unwrap_or_else(|| default_work_base(upper));
        for (what, p) in [("upper directory", upper), ("workdir", &work)] {
            if inside(p, &self.mountpoint) || inside(&self.mountpoint, p) {
                return Err(overlap(what, p, "the mountpoint", &self.mountpoint));
            }
        }
        let paths: Vec<PathBuf> = self.lowers.iter().map(|l| l.path().to_path_buf()).collect();
        check_layout(&paths, upper, &work)
    }

    /// The work base whose stale per-PID directories this mount sweeps:
    /// the default one, or the parent of a `-o workdir=` named by the PID
    /// of this process or of its parent (FlatImage's `<data>/work/<PID>`,
    /// given to the helper it starts). Any other explicit workdir is not
    /// known to follow the per-PID convention: its siblings are left alone.
    fn work_base(&self) -> Option<PathBuf> {
        let upper = self.upper.as_ref()?;
        let Some(w) = &self.workdir else {
            return Some(default_work_base(upper));
        };
        let name = w.file_name()?.to_str()?;
        let ours = [std::process::id(), nix::unistd::getppid().as_raw() as u32];
        ours.iter()
            .any(|pid| pid.to_string() == name)
            .then(|| w.parent().map(Path::to_path_buf))
            .flatten()
    }

    /// Bytes of decoded image blocks the mount keeps (`cache_size=`).
    fn cache_bytes(&self) -> usize {
        self.req.opts.cache_size.map_or(DEFAULT_CACHE_BYTES, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
    }

    fn workdir_path(&self) -> Option<PathBuf> {
        let upper = self.upper.as_ref()?;
        Some(
            self.workdir
                .clone()
                .unwrap_or_else(|| default_work_base(upper).join(std::process::id().to_string())),
        )
    }

    /// Creates the upper and the workdir, opens every layer.
    pub(crate) fn build(&self) -> Result<Union, MountError> {
        let layer = |what| move |source| MountError::Layer { what, source };
        let cache = BlockCache::new(self.cache_bytes());
        let lowers = open_lowers(&self.lowers, &cache, self.image_owner)?;
        let (upper, work) = match (&self.upper, self.workdir_path()) {
            (Some(u), Some(w)) => {
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o755,
                )
                .create(u)
                .map_err(|source| MountError::CreateUpper {
                    path: u.clone(),
                    source,
                })?;
                if let Some(base) = self.work_base() {
                    sweep(&base);
                }
                let work = Workdir::open(&w).map_err(MountError::Workdir)?;
                let upper = Layer::open(u).map_err(layer("upper directory"))?;
                (Some(upper), Some(work))
            }
            _ => (None, None),
        };
        Ok(Union::new(
            Stack::with_lowers(upper, lowers),
            work,
            self.options(),
        ))
    }

    fn options(&self) -> Options {
        Options {
            squash: Squash {
                uid: self.req.opts.squash_uid,
                gid: self.req.opts.squash_gid,
            },
            privileged: crate::sys::geteuid() == 0,
            casefold: self.req.opts.casefold,
            dir_fd_budget: None,
        }
    }

    pub(crate) fn mount_config(&self) -> MountConfig {
        let o = &self.req.opts;
        let root = crate::sys::geteuid() == 0;
        let threads = o
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let mut ttl = match self.upper.is_some() {
            true => Ttl::WRITABLE,
            false => Ttl::READ_ONLY,
        };
        if let Some(ms) = o.timeout_ms {
            let t = Duration::from_millis(ms);
            (ttl.entry, ttl.attr, ttl.negative) = (t, t, t);
            if self.upper.is_none() {
                ttl.lower = t;
            }
        }
        // Casefold: a missing spelling may exist under another one after a
        // rename or create through the mount, which updates only the
        // spelling it used; so nothing missing is remembered.
        if o.casefold {
            ttl.negative = Duration::ZERO;
        }
        if let Some(ms) = o.lower_timeout_ms {
            ttl.lower = Duration::from_millis(ms);
        }
        MountConfig {
            mountpoint: self.mountpoint.clone(),
            threads,
            // As fuse-overlayfs: a root mount is for every user, with the
            // kernel's permission checks.
            allow_other: o.allow_other || root,
            default_permissions: o.default_permissions || root,
            read_only: o.ro || self.upper.is_none(),
            passthrough: !o.no_passthrough,
            handles: o.handles,
            auto_unmount: o.auto_unmount,
            ttl,
            source: source_of(
                self.upper.as_deref(),
                self.lowers.iter().map(|l| match l {
                    Source::Dir(p) => p.as_os_str().to_owned(),
                    Source::Image(at) => at.name().into(),
                }),
            ),
        }
    }

    /// Builds the union and serves it here, until the daemon is stopped.
    /// `ready` hears once whether the mount answers.
    pub fn serve(
        &self,
        ready: impl FnOnce(Result<(), &dyn std::error::Error>),
    ) -> Result<(), MountError> {
        crate::sys::raise_nofile_limit();
        crate::sys::umask(0);
        let union = match self.build() {
            Ok(u) => Arc::new(u),
            Err(e) => {
                ready(Err(&e));
                return Err(e);
            }
        };
        let ready =
            |r: Result<(), &SessionError>| ready(r.map_err(|e| e as &dyn std::error::Error));
        Ok(serve(union, &self.mount_config(), ready)?)
    }
}

/// One image, already opened, served read-only at `mountpoint` as
/// `dwarfs IMAGE MNT -o offset=,imagesize=` serves it (`opts` gives
/// `uid=`/`gid=` and the threads): the union and how to mount it. The
/// mountpoint is the caller's (an empty directory it made).
pub(crate) fn image_mount(
    layer: ImageLayer,
    at: &ImageAt,
    mountpoint: &Path,
    opts: crate::opts::MountOpts,
) -> (Union, MountConfig) {
    let plan = Plan {
        req: MountRequest {
            lowers: Vec::new(),
            upper: None,
            mountpoint: mountpoint.to_path_buf(),
            opts,
            foreground: true,
        },
        lowers: vec![Source::Image(at.clone())],
        upper: None,
        workdir: None,
        mountpoint: mountpoint.to_path_buf(),
        image_owner: None,
    };
    let lowers: Vec<Box<dyn Lower>> = vec![Box::new(layer)];
    let union = Union::new(Stack::with_lowers(None, lowers), None, plan.options());
    (union, plan.mount_config())
}

/// Removes the per-PID directories of `base` whose owner is gone (a daemon
/// or a `fimfs run`, killed): a run's dead mount in `<PID>/mount` is
/// detached first. A live owner's directory is never touched.
pub(crate) fn sweep(base: &Path) {
    for stale in crate::layer::stale_dirs(base) {
        tracing::info!(
            "removing the leftovers of process {}: {}",
            stale.pid,
            stale.path.display()
        );
        clean_stale(&stale.path);
    }
}

/// Detaches the leftover mounts of a run in `dir` (`mount`, and the
/// per-layer image mounts `layers/<N>` of a BWRAP run) and removes `dir`.
pub(crate) fn clean_stale(dir: &Path) {
    let layers = std::fs::read_dir(dir.join("layers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for mnt in std::iter::once(dir.join("mount")).chain(layers) {
        if is_mountpoint(&mnt) {
            unmount_lazy(&mnt);
        }
    }
    remove_dir(dir);
}

/// `rm -rf dir` through fds, never following a symlink; a failure is logged.
pub(crate) fn remove_dir(dir: &Path) {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let res = crate::sys::open_layer_root(parent).and_then(|p| {
        let name = crate::sys::cstr(name.as_bytes())?;
        crate::layer::remove_tree(p.as_fd(), &name)
    });
    match res {
        Ok(()) | Err(crate::sys::Errno::ENOENT) => {}
        Err(e) => tracing::warn!("removing {}: {}", dir.display(), e.desc()),
    }
}

/// Runs a checked mount request: serves it here with `-f`, else forks a
/// daemon and returns once its mount answers. An error of the daemon after
/// that is its own (its stderr is `/dev/null` by then).
pub fn run(plan: Plan) -> Result<(), MountError> {
    if plan.req.foreground {
        return plan.serve(|_| {});
    }
    let (rd, wr) = nix::unistd::pipe().map_err(MountError::Pipe)?;
    match crate::sys::fork().map_err(MountError::Fork)? {
        Some(_child) => {
            drop(wr);
            let mut msg = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut msg);
            match msg.as_str() {
                "OK" => Ok(()),
                "" => Err(MountError::DaemonGone),
                _ => Err(MountError::Daemon(msg)),
            }
        }
        None => {
            drop(rd);
            let _ = nix::unistd::setsid();
            let mut wr = Some(std::fs::File::from(wr));
            plan.serve(|r| {
                if let Some(mut w) = wr.take() {
                    let _ = match r {
                        Ok(()) => w.write_all(b"OK"),
                        Err(e) => w.write_all(e.to_string().as_bytes()),
                    };
                }
                crate::sys::stdio_to_devnull();
            })
        }
    }
}

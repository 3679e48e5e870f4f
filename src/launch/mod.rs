//! The launcher: which backend serves the union for one run, and the
//! FlatImage binary it reads that from (SPEC §5).
//!
//! Owns:
//! - [`choice`]: the backend choice (`FIM_OVERLAY`, the image's overlay byte,
//!   the BWRAP default, casefold never using BWRAP) as a pure function, and
//!   the value `overlay show` prints;
//! - [`image`]: the image's overlay byte as a backend; the FlatImage
//!   binary itself (the ELF section `.fim_reserved_offset`, the 4 MiB
//!   reserved space, the appended `[u64 size][DWARFS…]` layer blocks) is
//!   read and written by `crate::image::binary`, re-exported here;
//! - [`bwrap`]: finding bubblewrap, its version, the sandbox command lines,
//!   its JSON status documents;
//! - [`run`]: `fimfs run`, which runs one command on the chosen backend,
//!   falls back to the daemon when the kernel refuses the overlay, and
//!   forwards signals;
//! - [`layers`]: the layers a FlatImage binary serves by itself (embedded,
//!   `FIM_LAYERS`, `<data>/layers`), for `fimfs run --image` without LOWERS;
//! - `mounts`: on BWRAP, each image lower mounted read-only by the keeper
//!   (one FUSE session per layer, one process) for bwrap to stack;
//! - [`rundir`]: the per-run directory and the upper's lock;
//! - `tree`: the run's processes (keeper, subreaper), all ended with it;
//! - `execfail`: 127 or 126 for a command bwrap could not execute;
//! - the launcher's errors are typed ([`run::RunError`],
//!   [`rundir::RunDirError`], [`rundir::LockError`]), each with its path and
//!   reason; only [`run::run`] turns them into a `fimfs:` line and 125.
//!
//! Invariants:
//! - Nothing in this module reads the process environment: callers pass
//!   `FIM_OVERLAY`/`FIM_CASEFOLD`/`FIM_LAYERS` values in ([`run::Environment`]), so every
//!   decision is testable as a table.
//! - Reading an image never panics on a hostile file: every offset is
//!   bounds-checked against the file's length with checked arithmetic.
//! - Writing an image changes exactly one byte (overlay or casefold), and
//!   only after the layout was validated so that byte is inside the
//!   reserved space and clear of the ELF headers.
//! - No `unsafe`; file access is `std::fs` positional I/O (`FileExt`).

pub mod bwrap;
pub mod choice;
pub mod dialect;
mod execfail;
pub mod image;
pub mod layers;
mod mounts;
pub mod run;
pub mod rundir;
mod tree;

pub use crate::image::binary::{
    Blocks, CASEFOLD_BYTE, DWARFS_MAGIC, ElfClass, ErrorKind, Image, ImageError, Layer,
    LayerProblem, OVERLAY_BYTE, RESERVED_SECTION, RESERVED_SIZE,
};
pub use choice::{
    ALL_BACKENDS, Backend, CASEFOLD_BACKEND, Choice, ParseBackendError, Reason, Rule,
    casefold_enabled, choose, overlay_show,
};

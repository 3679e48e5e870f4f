//! Facts about the host process and system that every part may need:
//! the mount table, who holds a `flock`, absolute paths, lazy unmounts,
//! the signal sets that stop a daemon or a run, and whether a process is
//! alive or dying.
//!
//! Invariants:
//! - This module sits below `fuse/`, `launch/`, `inspect/` and `mount`,
//!   and imports none of them (nor `union/` or `layer/`): only `sys` and
//!   outside crates. So a fact any part needs never ties two parts
//!   together, and no import runs back up.
//! - Everything here only reads the system, except [`mountpoint::unmount_lazy`]
//!   and the locks taken by [`locks::lock_dir`]; nothing panics on what
//!   `/proc` holds (every field is parsed, never indexed blindly).
//! - No `unsafe`: the calls that need it are `sys`'s.

pub mod locks;
pub mod mountinfo;
pub mod mountpoint;
pub mod paths;
pub mod process;
pub mod signals;

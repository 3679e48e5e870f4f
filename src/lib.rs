//! fimfs: a union filesystem for FlatImage.
//!
//! Layers of the code, each using only those above it:
//! `sys` (the only unsafe code) → `host` (mount table, locks, processes,
//! signal sets) → `image` (DwarFS images, read in-process) → `layer` →
//! `union` (FUSE-free engine) →
//! `fuse` (the `fuser` adapter) → `mount` → `inspect` / `launch` → `cli`.
#![deny(unsafe_code)]

pub mod cli;
pub mod fuse;
pub mod host;
pub mod image;
pub mod inspect;
pub mod launch;
pub mod layer;
pub mod mount;
/// The mount table, under the name tests and benchmarks know it by.
pub use host::mountinfo;
pub mod opts;
pub mod sys;
pub mod union;

//! fimfs: a union filesystem for FlatImage.
//!
//! Layers of the code, each using only those above it:
//! `sys` (the only unsafe code) → `layer` → `union` (FUSE-free engine) →
//! `fuse` (the `fuser` adapter) → `launch` / `inspect` / `cli`.
#![deny(unsafe_code)]

pub mod cli;
pub mod fuse;
pub mod inspect;
pub mod launch;
pub mod layer;
pub mod mount;
pub mod mountinfo;
pub mod opts;
pub mod sys;
pub mod union;

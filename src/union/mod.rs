//! The union engine: the merged view of a layer stack, FUSE-free.
//!
//! Every operation takes inode numbers (`Ino`) and byte-string names and returns
//! `Result<_, Errno>`; nothing here knows about `fuser`, so the union rules
//! are tested directly (see `tests/engine_*.rs`), and the `fuse` adapter only
//! translates. Lowers are reached only through `layer::Lower`; the upper
//! and the workdir are host directories.
//!
//! This file is the index, as `overlayfs.h` is for Linux' `fs/overlayfs/`:
//! what each file offers, from the bottom up. Every operation is a method
//! of [`Union`], defined in the file of its concern.
//!
//! - `attr`: the `Ino` newtype and the `st_ino` policy (`InoMap`), `st_nlink` of merged
//!   directories, ownership squashing; `Attr`, `Kind`.
//! - `marker`: writing whiteouts and opaque marks (reading them is
//!   `layer::marker`'s), private and layer xattr names, origin marks.
//! - `names`: what a lower directory lacks (hashes of its names).
//! - `fold`: case-folding and folded indexes (`-o casefold`).
//! - `node`: nodes, the inode table, cached layer directories
//!   (`dirlayers`: `DirLayers`); `dirfds`: their fd budget (`DirFds`).
//!   Private: callers hold numbers (`Ino`), never nodes.
//! - `data`: copying file data (reflink, `copy_file_range`, holes, or a
//!   lower's reads).
//! - `engine`: the `Union` value, its options and small accessors,
//!   forgetting nodes and what is known of the lowers.
//! - `cache`: the values operations hand out (`Entry`, `Opened`,
//!   `OpenedDir`, `Created`) and how long the kernel may keep them
//!   (`Cache`, `Lifetime`, whether the daemon is `Alone` on its upper).
//! - `lookup`: resolution (`resolve_in`, `dir_layers`, `Found`) and
//!   `lookup`/`lookup_listed`/`hand_out`.
//! - `numbers`: which number an entry reports (`ino_of`, `attr_of`).
//! - `direct`: entries of an image given to the kernel without a node
//!   (their number says where they are); `node`/`peek`, a number's node;
//!   `moves`: the directory renames their paths are carried through.
//! - `place`: where a node lives (`place`, `cached_place`,
//!   `writable_place`).
//! - `read`: `getattr`, `readlink`, xattrs, `statfs`, `open`.
//! - `access`: permission checks the engine makes itself (`access(2)`,
//!   an `O_CREAT` open of a file that appeared meanwhile).
//! - `readdir`: merged listings, directory snapshots (`.`, `..`),
//!   listing stamps, `opendir` (whether the kernel may keep a cached
//!   listing).
//! - `copy_up`: promoting an entry into the upper.
//! - `write`: create, mkdir, mknod, symlink, link, unlink, rmdir.
//! - `setattr`: setattr and xattrs, on the upper copy.
//! - `rename`: rename, including directories that live in the lowers.
//! - `unlinked`: what a file the kernel may hold open still is once its
//!   last name is gone (reads, writes and attributes without a name).
//! - `flags`: inode flags (`lsattr`/`chattr`).
pub mod access;
pub mod attr;
mod cache;
mod copy_up;
mod data;
mod direct;
mod dirfds;
mod dirlayers;
mod engine;
mod flags;
pub mod fold;
mod lookup;
pub mod marker;
mod moves;
mod names;
mod node;
mod numbers;
mod place;
mod read;
mod readdir;
mod rename;
mod setattr;
mod unlinked;
mod write;

pub use attr::{Attr, CIOPFS_INO, CIOPFS_NAME, Ino, Kind, ROOT_INO, Squash};
pub use cache::{Cache, Created, Entry, Lifetime, Opened, OpenedDir, UpperWatch};
pub use engine::{Alone, LowerOnlyName, Options, Union};
pub use flags::InodeFlags;
pub use lookup::ListedDir;
pub use readdir::DirEntry;
pub use setattr::SetAttr;
pub use write::{Caller, Make};

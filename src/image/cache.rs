//! The block cache: one per mount, shared by all its images.
//!
//! An image registers its data blocks (`BlockCache::register`) and reads
//! them through the `ImageBlocks` handle it gets back, one block range per
//! call. Each block is a `Slot` (its `block::State` behind a mutex) kept in
//! one LRU list with the bytes it holds.
//!
//! Invariants:
//! - Bytes are reserved before they are allocated: loading a block first
//!   charges its `load_bound` (evicting least recently used blocks until the
//!   total fits the limit), then its real size. So the blocks in the cache
//!   hold at most `limit` bytes; besides them, a read in flight may hold the
//!   block it is reading after that block was evicted, until it returns.
//!   A single block larger than the limit is still read, then evicted first.
//!   Charges are upper bounds: a partly decoded block is charged its payload,
//!   its whole output buffer (allocated once, touched only as far as it is
//!   decoded) and its decoder's bound.
//! - Decode once: the slot's mutex is held while its block loads or decodes
//!   a step, so readers of one block wait for one decoder and then copy.
//! - Readahead (see `readahead`) never evicts beyond the limit either, and is
//!   dropped when the queue is full or when blocks read ahead but not yet
//!   read would pass `limit / SPECULATIVE_SHARE`.
//! - Bad data gives EIO, never a panic: one log line per failed block
//!   (the failure is kept, so it is not decoded again) and one per image and
//!   unsupported codec.
//! - Lock order: a slot's mutex, then the LRU's; never the other way.
use super::BlockLoc;
use super::block::{self, Source, State};
use super::codec::Codec;
use super::readahead::{self, Ahead, Pool, Streams};
use crate::sys::Errno;
use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The default bound of a mount's block cache: 512 MiB. That is the
/// `cachesize` the `dwarfs` driver uses per image, so a FlatImage of one
/// layer keeps its memory profile, while a stack of 20 layers now shares one
/// cache instead of 20; it holds 32 of mkdwarfs' 16 MiB blocks (a few
/// programs' working sets), and is under a tenth of the RAM of the small
/// machines FlatImage runs on. Set with `-o cache_size=`.
pub const DEFAULT_CACHE_BYTES: usize = 512 << 20;

/// The largest block size an image may declare (mkdwarfs allows 2^30).
pub const MAX_BLOCK_SIZE: usize = 1 << 30;

/// Reads round the decoding point up to a multiple of this, so that small
/// reads in a row do not each take a decoder step.
const STEP: usize = 256 * 1024;

/// Blocks read ahead and not yet read hold at most `limit / this`.
const SPECULATIVE_SHARE: usize = 4;

type Key = (u32, u32);

/// A bounded cache of decoded blocks for all images of a mount.
#[derive(Clone)]
pub struct BlockCache {
    shared: Arc<Shared>,
}

/// What the cache did so far, and what it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Block payloads read from an image and decoded (started).
    pub loads: u64,
    /// Bytes decoded, all blocks together.
    pub decoded_bytes: u64,
    /// Reads served without decoding anything.
    pub hits: u64,
    /// Reads that had to load or decode.
    pub misses: u64,
    /// Blocks dropped to stay under the limit.
    pub evictions: u64,
    /// Readahead parts decoded, and dropped (queue full or no room).
    pub readahead_runs: u64,
    pub readahead_dropped: u64,
    /// Bytes the cached blocks hold now, and the bound.
    pub held_bytes: usize,
    pub limit: usize,
}

struct Shared {
    limit: usize,
    lru: Mutex<Lru>,
    counters: Counters,
    next_image: AtomicU32,
    pool: Pool,
}

#[derive(Default)]
struct Counters {
    loads: AtomicU64,
    decoded_bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    readahead_runs: AtomicU64,
    readahead_dropped: AtomicU64,
}

struct Lru {
    map: LruCache<Key, Entry>,
    /// Sum of the entries' charges.
    charged: usize,
    /// Sum of the charges of entries read ahead and not read yet.
    speculative: usize,
}

struct Entry {
    slot: Arc<Slot>,
    charge: usize,
    speculative: bool,
}

struct Slot {
    state: Mutex<State>,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache::new(DEFAULT_CACHE_BYTES)
    }
}

impl BlockCache {
    /// A cache holding at most `limit_bytes` of blocks.
    pub fn new(limit_bytes: usize) -> BlockCache {
        BlockCache {
            shared: Arc::new(Shared {
                limit: limit_bytes,
                lru: Mutex::new(Lru {
                    map: LruCache::unbounded(),
                    charged: 0,
                    speculative: 0,
                }),
                counters: Counters::default(),
                next_image: AtomicU32::new(0),
                pool: Pool::new(readahead::THREADS, readahead::QUEUE),
            }),
        }
    }

    /// Registers an image's data blocks (in block number order) and the
    /// image's block size; `name` names the image in log lines.
    pub fn register(
        &self,
        name: impl Into<String>,
        file: Arc<File>,
        blocks: Vec<BlockLoc>,
        block_size: usize,
    ) -> Result<ImageBlocks, Errno> {
        if block_size == 0 || block_size > MAX_BLOCK_SIZE || u32::try_from(blocks.len()).is_err() {
            return Err(Errno::EINVAL);
        }
        let id = self.shared.next_image.fetch_add(1, Relaxed);
        Ok(ImageBlocks {
            image: Arc::new(Image {
                id,
                name: name.into(),
                file,
                blocks,
                block_size,
                cache: Arc::clone(&self.shared),
                warned: Mutex::new(HashSet::new()),
                streams: Mutex::new(Streams::default()),
            }),
        })
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        let held_bytes = self.shared.lru.lock().charged;
        CacheStats {
            loads: c.loads.load(Relaxed),
            decoded_bytes: c.decoded_bytes.load(Relaxed),
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            readahead_runs: c.readahead_runs.load(Relaxed),
            readahead_dropped: c.readahead_dropped.load(Relaxed),
            held_bytes,
            limit: self.shared.limit,
        }
    }
}

impl Shared {
    /// The slot of `key`, made (empty) if the cache has none.
    fn slot(&self, key: Key, speculative: bool) -> Arc<Slot> {
        let mut guard = self.lru.lock();
        let lru = &mut *guard;
        if let Some(e) = lru.map.get_mut(&key) {
            if e.speculative && !speculative {
                e.speculative = false;
                lru.speculative = lru.speculative.saturating_sub(e.charge);
            }
            return Arc::clone(&e.slot);
        }
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Empty),
        });
        let entry = Entry {
            slot: Arc::clone(&slot),
            charge: 0,
            speculative,
        };
        lru.map.push(key, entry);
        slot
    }

    /// Sets the bytes `slot` is charged, evicting other blocks until the
    /// total fits. A speculative charge that would grow the read-ahead share
    /// past its part is refused (false) and changes nothing.
    fn charge(&self, key: Key, slot: &Arc<Slot>, bytes: usize, speculative: bool) -> bool {
        let mut evicted = Vec::new();
        let mut guard = self.lru.lock();
        let lru = &mut *guard;
        match lru.map.peek_mut(&key) {
            Some(e) if Arc::ptr_eq(&e.slot, slot) => {
                let grow = bytes.saturating_sub(e.charge);
                let share = self.limit / SPECULATIVE_SHARE;
                if speculative && grow > 0 && lru.speculative.saturating_add(grow) > share {
                    return false;
                }
                lru.charged = lru.charged.saturating_sub(e.charge).saturating_add(bytes);
                if e.speculative {
                    lru.speculative = lru
                        .speculative
                        .saturating_sub(e.charge)
                        .saturating_add(bytes);
                }
                e.charge = bytes;
            }
            // Evicted under a readahead: it gives up.
            _ if speculative => return false,
            // Another slot took the key after ours was evicted: ours lives
            // only as long as the read that holds it.
            Some(_) => return true,
            // Evicted while its reader waited: back in, charged.
            None => {
                let slot = Arc::clone(slot);
                let (charge, speculative) = (bytes, false);
                lru.charged = lru.charged.saturating_add(bytes);
                let entry = Entry {
                    slot,
                    charge,
                    speculative,
                };
                lru.map.push(key, entry);
            }
        }
        self.evict(lru, key, &mut evicted);
        drop(guard);
        drop(evicted);
        true
    }

    /// Drops least recently used blocks other than `keep` until the total
    /// fits the limit. The dropped slots go to `out`, freed after unlocking.
    fn evict(&self, lru: &mut Lru, keep: Key, out: &mut Vec<Arc<Slot>>) {
        let mut kept = false;
        while lru.charged > self.limit {
            let Some((key, e)) = lru.map.pop_lru() else {
                break;
            };
            if key == keep {
                lru.map.push(key, e);
                if kept {
                    break;
                }
                kept = true;
                continue;
            }
            lru.charged = lru.charged.saturating_sub(e.charge);
            if e.speculative {
                lru.speculative = lru.speculative.saturating_sub(e.charge);
            }
            if e.charge > 0 {
                self.counters.evictions.fetch_add(1, Relaxed);
            }
            out.push(e.slot);
        }
    }
}

/// One image's blocks, read through the cache it was registered with.
#[derive(Clone)]
pub struct ImageBlocks {
    image: Arc<Image>,
}

struct Image {
    id: u32,
    name: String,
    file: Arc<File>,
    blocks: Vec<BlockLoc>,
    block_size: usize,
    cache: Arc<Shared>,
    /// Unsupported codecs already logged for this image.
    warned: Mutex<HashSet<Codec>>,
    streams: Mutex<Streams>,
}

impl ImageBlocks {
    /// Reads from block `block` at `offset` into `buf`; returns the bytes
    /// read, fewer at the end of the block (0 at or past it). EIO for a
    /// block that is corrupt, unreadable, or in a codec not supported.
    pub fn read(&self, block: u32, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let img = &self.image;
        let loc = img.loc(block)?;
        let Ok(offset) = usize::try_from(offset) else {
            return Ok(0);
        };
        if buf.is_empty() || offset >= img.block_size {
            return Ok(0);
        }
        let len = buf.len().min(img.block_size - offset);
        let buf = buf.get_mut(..len).unwrap_or_default();
        let n = img.serve(block, loc, offset, buf)?;
        let ahead =
            img.streams
                .lock()
                .note(block, offset, offset + n, img.block_size, img.blocks.len());
        for part in ahead {
            self.prefetch(part.block, part.upto);
        }
        Ok(n)
    }

    /// Asks for `block` to be decoded up to `upto` bytes, off this thread,
    /// if the queue and the cache have room.
    pub fn prefetch(&self, block: u32, upto: usize) {
        let image = Arc::clone(&self.image);
        let job = Box::new(move || image.read_ahead(Ahead { block, upto }));
        if !self.image.cache.pool.submit(job) {
            let c = &self.image.cache.counters;
            c.readahead_dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn block_count(&self) -> usize {
        self.image.blocks.len()
    }

    pub fn block_size(&self) -> usize {
        self.image.block_size
    }

    pub fn name(&self) -> &str {
        &self.image.name
    }
}

impl Image {
    fn loc(&self, block: u32) -> Result<&BlockLoc, Errno> {
        let loc = usize::try_from(block).ok().and_then(|b| self.blocks.get(b));
        loc.ok_or_else(|| {
            tracing::debug!("{}: no block {block}", self.name);
            Errno::EIO
        })
    }

    /// Serves one read: waits for (or does) the decoding it needs, copies.
    fn serve(
        &self,
        block: u32,
        loc: &BlockLoc,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        if !loc.codec.is_supported() {
            if self.warned.lock().insert(loc.codec) {
                tracing::warn!(
                    "{}: data compressed with {} cannot be read (not supported): reads give EIO",
                    self.name,
                    loc.codec
                );
            }
            return Err(Errno::EIO);
        }
        let key = (self.id, block);
        let want = offset + buf.len();
        let slot = self.cache.slot(key, false);
        let mut state = slot.state.lock();
        let mut hit = true;
        loop {
            if let State::Done(data) = &*state {
                let data = Arc::clone(data);
                drop(state);
                self.count_hit(hit);
                return Ok(block::copy_from(&data, offset, buf));
            }
            if matches!(*state, State::Failed) {
                return Err(Errno::EIO);
            }
            if state.available() >= want {
                self.count_hit(hit);
                return Ok(state.copy(offset, buf));
            }
            hit = false;
            self.step(key, loc, &slot, &mut state, want, false)?;
        }
    }

    fn count_hit(&self, hit: bool) {
        let c = &self.cache.counters;
        if hit { &c.hits } else { &c.misses }.fetch_add(1, Relaxed);
    }

    /// Loads the block or decodes it one step on towards `want`. Ok(false)
    /// when a speculative load found no room (nothing changed).
    fn step(
        &self,
        key: Key,
        loc: &BlockLoc,
        slot: &Arc<Slot>,
        state: &mut MutexGuard<'_, State>,
        want: usize,
        speculative: bool,
    ) -> Result<bool, Errno> {
        let cache = &self.cache;
        let result = match &**state {
            State::Empty => {
                let bound = State::load_bound(loc, self.block_size);
                if !cache.charge(key, slot, bound, speculative) {
                    return Ok(false);
                }
                cache.counters.loads.fetch_add(1, Relaxed);
                let src = Source {
                    file: &self.file,
                    loc,
                    block_size: self.block_size,
                };
                State::load(&src).map(|(loaded, n)| {
                    **state = loaded;
                    n
                })
            }
            State::Partial(_) => {
                let target = want.div_ceil(STEP).saturating_mul(STEP);
                state.advance(target.min(self.block_size))
            }
            State::Done(_) | State::Failed => return Ok(true),
        };
        let failed = match result {
            Ok(n) => {
                cache.counters.decoded_bytes.fetch_add(n as u64, Relaxed);
                false
            }
            Err(e) => {
                tracing::warn!("{}: block {}: {e}; its data reads as EIO", self.name, key.1);
                **state = State::Failed;
                true
            }
        };
        cache.charge(key, slot, state.charge(), speculative);
        if failed { Err(Errno::EIO) } else { Ok(true) }
    }

    /// Decodes a part of a block ahead of its reader (on a pool thread), a
    /// step at a time so that a reader of the same block waits for one step
    /// at most. Gives up when a reader holds the block or there is no room.
    fn read_ahead(&self, part: Ahead) {
        let Ok(loc) = self.loc(part.block) else {
            return;
        };
        if !loc.codec.is_supported() {
            return;
        }
        let key = (self.id, part.block);
        let slot = self.cache.slot(key, true);
        let counters = &self.cache.counters;
        let upto = part.upto.min(self.block_size);
        loop {
            let Some(mut state) = slot.state.try_lock() else {
                return;
            };
            if state.is_final() || state.available() >= upto {
                return;
            }
            let want = state.available().saturating_add(1).min(upto);
            match self.step(key, loc, &slot, &mut state, want, true) {
                Ok(true) => counters.readahead_runs.fetch_add(1, Relaxed),
                Ok(false) => {
                    counters.readahead_dropped.fetch_add(1, Relaxed);
                    return;
                }
                Err(_) => return,
            };
            if !matches!(*state, State::Partial(_)) || state.available() >= upto {
                return;
            }
        }
    }
}

impl Drop for Image {
    /// Frees the image's blocks from the cache.
    fn drop(&mut self) {
        let mut freed = Vec::new();
        let mut guard = self.cache.lru.lock();
        let lru = &mut *guard;
        for block in 0..self.blocks.len() {
            let Ok(block) = u32::try_from(block) else {
                break;
            };
            if let Some(e) = lru.map.pop(&(self.id, block)) {
                lru.charged = lru.charged.saturating_sub(e.charge);
                if e.speculative {
                    lru.speculative = lru.speculative.saturating_sub(e.charge);
                }
                freed.push(e.slot);
            }
        }
        drop(guard);
    }
}

#[cfg(test)]
mod tests;

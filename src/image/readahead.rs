//! Readahead: spotting sequential reads, and the threads that decode ahead.
//!
//! `Streams` remembers the last few read positions of one image; a read
//! that starts where one of them ended (or at the start of the next block
//! after one that reached its block's end) is sequential, and asks for the
//! next `WINDOW` bytes to be decoded ahead, again each time the reader has
//! used half of that. `Pool` runs those jobs on a few threads off the FUSE
//! threads, from a bounded queue: a job that does not fit is dropped, never
//! waited for. What a job may hold in the cache is decided by the cache.
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// How far ahead of a sequential reader blocks are decoded.
pub const WINDOW: usize = 2 << 20;

/// How far from the last end a read may start and still count as
/// sequential (the kernel may reorder or skip a little).
const SLACK: usize = 128 * 1024;

/// Read positions remembered per image (concurrent sequential readers).
const STREAMS: usize = 4;

/// Decoder threads for readahead (the machines we aim at have few cores).
pub const THREADS: usize = 2;

/// Readahead jobs queued at most; more are dropped.
pub const QUEUE: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    live: bool,
    block: u32,
    end: usize,
    /// Stream position (block * block size + offset) read ahead up to.
    ahead: u64,
}

/// Recent read positions of one image.
#[derive(Debug, Default)]
pub struct Streams {
    recent: [Stream; STREAMS],
    next: usize,
}

/// A part of a block to decode ahead: up to `upto` bytes into `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    pub block: u32,
    pub upto: usize,
}

impl Streams {
    /// Notes a read of `[start, end)` in `block`; returns what to decode
    /// ahead (at most two parts: the rest of this block's window and the
    /// start of the next block).
    pub fn note(
        &mut self,
        block: u32,
        start: usize,
        end: usize,
        block_size: usize,
        blocks: usize,
    ) -> Vec<Ahead> {
        let found = self.recent.iter().position(|s| {
            s.live
                && ((s.block == block && start.abs_diff(s.end) <= SLACK)
                    || (s.block.checked_add(1) == Some(block)
                        && start <= SLACK
                        && s.end.saturating_add(SLACK) >= block_size))
        });
        let Some(i) = found else {
            let slot = self.next % STREAMS;
            self.next = slot + 1;
            if let Some(s) = self.recent.get_mut(slot) {
                *s = Stream {
                    live: true,
                    block,
                    end,
                    ahead: 0,
                };
            }
            return Vec::new();
        };
        let Some(s) = self.recent.get_mut(i) else {
            return Vec::new();
        };
        s.block = block;
        s.end = end;
        let base = u64::from(block).saturating_mul(block_size as u64);
        let here = base.saturating_add(end as u64);
        if s.ahead >= here.saturating_add(WINDOW as u64 / 2) {
            return Vec::new();
        }
        let target = here.saturating_add(WINDOW as u64);
        s.ahead = target;
        let mut out = vec![Ahead {
            block,
            upto: usize::try_from(target - base)
                .unwrap_or(usize::MAX)
                .min(block_size),
        }];
        let next_base = base.saturating_add(block_size as u64);
        if target > next_base && (block as usize).saturating_add(1) < blocks {
            out.push(Ahead {
                block: block.saturating_add(1),
                upto: usize::try_from(target - next_base).unwrap_or(usize::MAX),
            });
        }
        out
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A few threads running readahead jobs from a bounded queue.
pub struct Pool {
    tx: SyncSender<Job>,
}

impl Pool {
    /// Starts `threads` threads; they end when the pool is dropped and the
    /// queue is empty.
    pub fn new(threads: usize, queue: usize) -> Pool {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("fimfs-ahead-{i}"))
                .spawn(move || work(&rx));
            if let Err(e) = spawned {
                tracing::warn!("no readahead thread: {e}");
            }
        }
        Pool { tx }
    }

    /// Queues a job; false when the queue is full (the job is dropped).
    pub fn submit(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = rx.lock().recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 16 << 20;

    #[test]
    fn a_first_read_asks_nothing_the_second_in_a_row_asks_a_window() {
        let mut s = Streams::default();
        assert!(s.note(0, 0, 4096, BS, 4).is_empty());
        let ahead = s.note(0, 4096, 8192, BS, 4);
        assert_eq!(
            ahead,
            vec![Ahead {
                block: 0,
                upto: 8192 + WINDOW
            }]
        );
        // Within the half window already asked for: nothing new.
        assert!(s.note(0, 8192, 12288, BS, 4).is_empty());
    }

    #[test]
    fn a_window_past_the_block_end_asks_for_the_next_block() {
        let mut s = Streams::default();
        s.note(2, BS - 8192, BS - 4096, BS, 4);
        let ahead = s.note(2, BS - 4096, BS, BS, 4);
        assert_eq!(
            ahead,
            vec![
                Ahead { block: 2, upto: BS },
                Ahead {
                    block: 3,
                    upto: WINDOW
                }
            ]
        );
        // The last block has no next one.
        let mut s = Streams::default();
        s.note(3, BS - 8192, BS - 4096, BS, 4);
        assert_eq!(s.note(3, BS - 4096, BS, BS, 4).len(), 1);
        // Reading on into the next block stays sequential.
        let mut s = Streams::default();
        s.note(0, BS - 4096, BS, BS, 4);
        assert!(!s.note(1, 0, 4096, BS, 4).is_empty());
    }

    #[test]
    fn random_reads_ask_nothing() {
        let mut s = Streams::default();
        for (b, off) in [(0, 0), (3, 9 << 20), (1, 5 << 20), (0, 12 << 20), (2, 0)] {
            assert!(s.note(b, off, off + 4096, BS, 4).is_empty());
        }
    }

    #[test]
    fn the_pool_runs_jobs_and_drops_what_does_not_fit() {
        let pool = Pool::new(1, 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = Arc::clone(&gate);
        assert!(pool.submit(Box::new(move || {
            g.wait();
        })));
        // The worker is blocked in the first job or about to take it: at
        // most one more fits, so of three further jobs two are dropped.
        let sent: usize = (0..3)
            .map(|i| {
                let tx = tx.clone();
                usize::from(pool.submit(Box::new(move || tx.send(i).unwrap())))
            })
            .sum();
        assert!(sent <= 1, "{sent} jobs queued behind a busy worker");
        gate.wait();
        drop(tx);
        assert_eq!(rx.iter().count(), sent);
    }
}

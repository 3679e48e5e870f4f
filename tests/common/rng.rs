//! The one source of deterministic randomness, and the hash that stands for file
//! contents in tree snapshots.
//!
//! Invariant: a seed always gives the same sequence, so that a failure is replayed
//! by its seed.

/// xorshift64*: deterministic, good enough to pick names and bytes.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// Starts from `state` as it is (it must be odd): for sequences that were
    /// seeded some other way and must stay what they were.
    pub fn from_state(state: u64) -> Self {
        XorShift(state)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// splitmix64: spreads a seed that a person typed (small, bit 0 meaningful) over
/// all 64 bits, since [`XorShift::new`] ignores bit 0.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic bytes: the same `seed` and `len`, the same bytes.
pub fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut r = XorShift::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// FNV-1a 64: a file's contents in one number.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

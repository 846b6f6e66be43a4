//! Helpers for the crate's own unit tests.

pub mod mmdb;

/// A fixed xorshift sequence: randomized tests that are the same on every run.
pub struct Xorshift(u64);

impl Xorshift {
    /// A sequence from a non-zero seed.
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(seed)
    }

    /// The next number below `bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

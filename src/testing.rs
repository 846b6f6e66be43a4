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

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    /// A new, empty directory.
    pub fn new() -> ScratchDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "portcullis-unit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("the temporary directory is writable");
        ScratchDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

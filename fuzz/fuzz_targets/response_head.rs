#![no_main]
//! See `portcullis::invariants::response_head` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::invariants::response_head(data));

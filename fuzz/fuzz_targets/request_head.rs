#![no_main]
//! See `portcullis::invariants::request_head` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::invariants::request_head(data));

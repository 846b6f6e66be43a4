#![no_main]
//! See `portcullis::invariants::chunked_body` for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::invariants::chunked_body(data));

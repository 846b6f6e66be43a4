#![no_main]
//! See `portcullis::invariants::path` for what this target checks.

libfuzzer_sys::fuzz_target!(|text: &str| portcullis::invariants::path(text));

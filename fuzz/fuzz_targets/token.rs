#![no_main]
//! See `portcullis::invariants::token` for what this target checks.

libfuzzer_sys::fuzz_target!(|text: &str| portcullis::invariants::token(text));

#![no_main]
//! See `portcullis::invariants::config_file` for what this target checks.

libfuzzer_sys::fuzz_target!(|text: &str| portcullis::invariants::config_file(text));

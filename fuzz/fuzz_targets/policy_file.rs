#![no_main]
//! See `portcullis::invariants::policy_file` for what this target checks.

libfuzzer_sys::fuzz_target!(|text: &str| portcullis::invariants::policy_file(text));

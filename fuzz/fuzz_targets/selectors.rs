//! See `skiff::fuzzing::selectors` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff::fuzzing::selectors(data));

//! See `skiff::fuzzing::decode_body` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff::fuzzing::decode_body(data));

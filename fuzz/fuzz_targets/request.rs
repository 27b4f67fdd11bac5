//! See `latchkeyd::fuzz::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkeyd::fuzz::request(data));

//! See `latchkeyd::fuzz::fields`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkeyd::fuzz::fields(data));

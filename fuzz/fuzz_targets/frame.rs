//! See `latchkeyd::fuzz::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkeyd::fuzz::frame(data));

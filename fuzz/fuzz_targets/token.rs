//! See `latchkeyd::fuzz::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkeyd::fuzz::token(data));

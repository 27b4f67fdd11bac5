//! See `latchkeyd::fuzz::template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkeyd::fuzz::template(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickrelay::fuzz::request_head(data));

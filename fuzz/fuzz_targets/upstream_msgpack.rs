#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickrelay::fuzz::upstream_msgpack(data));

//! Fuzz target `api_decode`: see `netd_fuzz::api_decode` for what it feeds and which invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netd_fuzz::api_decode(data));

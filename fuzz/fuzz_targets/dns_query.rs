//! Fuzz target `dns_query`: see `netd_fuzz::dns_query` for what it feeds and which invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netd_fuzz::dns_query(data));

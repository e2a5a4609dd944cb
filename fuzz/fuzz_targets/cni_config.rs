//! Fuzz target `cni_config`: see `netd_fuzz::cni_config` for what it feeds and which invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netd_fuzz::cni_config(data));

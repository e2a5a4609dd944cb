//! Fuzz target `cni_run`: see `netd_fuzz::cni_run` for what it feeds and which invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netd_fuzz::cni_run(data));

//! Link settings of the netd binaries.

fn main() {
    // Relative relocations packed (DT_RELR, glibc >= 2.36, Debian 12's 2.36 included): the
    // loader reads 6 KB instead of a 174 KB `.rela.dyn` at start-up, pages that otherwise stay
    // in the daemon's resident set (-128 KiB RSS measured).
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|o| o == "linux");
    if gnu && linux {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

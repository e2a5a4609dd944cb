//! Crash failpoints for fault-injection tests: when `NETD_FAILPOINT` names a point, netd aborts
//! there (as a `SIGKILL` would stop it), so tests can hit every window between two steps of a
//! flow deterministically. Unset in production; the cost is one cached comparison.

use std::sync::OnceLock;

/// Environment variable naming the failpoint to crash at.
pub const ENV: &str = "NETD_FAILPOINT";

/// Aborts the process if `name` is the configured failpoint.
pub fn hit(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if point.as_deref() == Some(name) {
        eprintln!("netd: failpoint {name} hit; aborting");
        std::process::abort();
    }
}

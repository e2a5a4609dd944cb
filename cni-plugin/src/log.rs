//! Minimal stderr logging. Runtimes pass the plugin's stderr through to their own (Podman to
//! the user's terminal), so nothing but the final error (written by [`crate::run`]) is printed
//! unless `NETD_CNI_LOG=info|debug` asks for more. A logging framework would cost start-up
//! time on every container operation.

use std::io::Write;
use std::sync::OnceLock;

/// Environment variable selecting the log level (`error`, `info`, `debug`).
pub const LOG_ENV: &str = "NETD_CNI_LOG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Quiet,
    Info,
    Debug,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var(LOG_ENV).as_deref() {
        Ok("debug") => Level::Debug,
        Ok("info") => Level::Info,
        _ => Level::Quiet,
    })
}

fn emit(l: Level, tag: &str, msg: &str) {
    if l <= level() {
        let _ = writeln!(
            std::io::stderr(),
            "netd-cni[{}] {tag}: {msg}",
            std::process::id()
        );
    }
}

/// Logs a notable event (shown with `NETD_CNI_LOG=info` or `debug`).
pub fn info(msg: &str) {
    emit(Level::Info, "info", msg);
}

/// Logs detail for debugging (shown with `NETD_CNI_LOG=debug`).
pub fn debug(msg: &str) {
    emit(Level::Debug, "debug", msg);
}

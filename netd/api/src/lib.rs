//! netd's public API: the JSON wire types exchanged over the Unix socket, the stable error
//! codes, and a small client used by `netctl` and the CNI plugin. It contains no kernel code so
//! that clients stay small and start fast.

pub mod client;
pub mod expect;
pub mod types;

pub use client::{socket_path, Client, ClientError, DEFAULT_SOCKET, SOCKET_ENV};
pub use expect::NetworkDef;
pub use types::*;

//! netd: the container networking daemon as a library. Data flows one way:
//! `server` (HTTP/JSON on a Unix socket) → `daemon` (orchestration) → `store`, `netd_ipam`,
//! `netlink`, `netd_firewall`, `netd_dns`.

pub(crate) mod batch;
pub mod daemon;
pub mod failpoint;
pub mod memory;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod server;
pub mod store;

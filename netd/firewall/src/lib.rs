//! netd's firewall: NAT, isolation, published ports and anti-spoofing, programmed over
//! netlink (libnftnl + libmnl, no `nft` or `iptables` process) into netd's own tables
//! `inet netd` and `bridge netd`, never touching anyone else's.
//!
//! Shape (mullvad's `talpid-core` firewall): [`spec`] is the declarative input,
//! [`policy`] is a pure function from it to rule specs and batch operations, `render` turns
//! those into nftables netlink messages and `apply` sends each change as one atomic batch.
//! [`Firewall`] keeps what it installed so per-endpoint changes are small element-only
//! batches, and [`Firewall::spawn_drift_watch`] notices when someone else changes or deletes
//! the tables so the daemon can [`Firewall::sync`] again. Table layout and coexistence with
//! Docker, firewalld and user tables: `docs/firewall.md`.

mod apply;
mod conntrack;
mod firewall;
pub mod policy;
mod ports;
mod render;
pub mod spec;
mod sysctl;
mod watch;

pub use firewall::{BatchStats, Firewall};
pub use spec::{check_port_conflicts, EndpointSpec, NetworkSpec, PortMapping, Protocol};
pub use sysctl::prepare_bridge_sysctls;
pub use watch::{DriftReason, DriftWatch, DriftWatchOptions};

/// Errors of the firewall subsystem. Each message says what was being done and to what.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A `-p` / `portMappings` value could not be parsed or is out of range.
    #[error("invalid port mapping {input:?}: {reason}")]
    InvalidPortMapping {
        /// The text (or rendering) of the mapping.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host port is already published.
    #[error("cannot publish {mapping}: {held} is already published by endpoint {holder}")]
    PortConflict {
        /// The mapping being published.
        mapping: String,
        /// Endpoint holding the port.
        holder: String,
        /// The mapping that holds it.
        held: String,
    },
    /// Ports cannot be published on an internal network.
    #[error("cannot publish ports of endpoint {endpoint}: network {network} is internal")]
    PublishOnInternal {
        /// Endpoint key.
        endpoint: String,
        /// Network name.
        network: String,
    },
    /// The mapping's host address family has no container address to forward to.
    #[error("cannot publish {mapping} for endpoint {endpoint}: the endpoint has no address of that IP family")]
    NoAddressForMapping {
        /// Endpoint key.
        endpoint: String,
        /// The mapping.
        mapping: String,
    },
    /// An endpoint refers to a network the firewall does not know.
    #[error("network {0} is not installed in the firewall")]
    UnknownNetwork(String),
    /// A network spec is not usable.
    #[error("invalid network {network}: {reason}")]
    InvalidNetwork {
        /// Network name.
        network: String,
        /// What is wrong.
        reason: String,
    },
    /// An endpoint spec is not usable.
    #[error("invalid endpoint {endpoint}: {reason}")]
    InvalidEndpoint {
        /// Endpoint key.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The table name is not usable.
    #[error("invalid nftables table name {0:?}: must be 1-64 bytes of [A-Za-z0-9_-]")]
    InvalidTableName(String),
    /// Talking netlink failed (socket, send, receive).
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a batch; nothing of it was applied.
    #[error("{context}: the kernel refused {step}: {source}")]
    Rejected {
        /// What was being done ("adding endpoint c1 to network web").
        context: String,
        /// The failing step of the batch.
        step: String,
        /// errno from the kernel.
        #[source]
        source: std::io::Error,
    },
    /// Writing a sysctl failed.
    #[error("setting {path} to {value}: {source}")]
    Sysctl {
        /// /proc/sys path.
        path: String,
        /// Value written.
        value: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Entering the firewall's network namespace for the drift watch failed.
    #[error("starting the nftables drift watch: {0}")]
    Watch(#[source] std::io::Error),
}

impl FirewallError {
    /// errno of a kernel rejection, if this is one (e.g. `EEXIST`, `ENOENT`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            FirewallError::Rejected { source, .. } | FirewallError::Netlink { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

//! The daemon's error type and its mapping to the API's stable error codes.

use netd_api::ErrorCode;
use netd_ipam::IpamError;

use crate::names::NameError;
use crate::netlink::NetlinkError;
use crate::netns::NetnsError;
use crate::store::StoreError;

/// Ports a Linux bridge takes (`BR_MAX_PORTS` − 1: port number 0 is reserved).
pub const BRIDGE_MAX_PORTS: usize = 1023;

/// Why a daemon operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A malformed name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An invalid subnet, gateway, range or address.
    #[error("{0}")]
    InvalidAddress(String),
    /// Any other malformed request.
    #[error("{0}")]
    InvalidRequest(String),
    /// The subnet overlaps something.
    #[error("subnet {subnet} overlaps {with}")]
    SubnetOverlap {
        /// The requested subnet.
        subnet: ipnet::IpNet,
        /// What it overlaps.
        with: String,
    },
    /// No free subnet in the pools.
    #[error("no free subnet is left in the address pools ({0}); pass --subnet")]
    NoSubnetAvailable(String),
    /// The network exists.
    #[error("{0}")]
    NetworkExists(String),
    /// The network does not exist.
    #[error("network {0} does not exist")]
    NetworkNotFound(String),
    /// The network has endpoints.
    #[error("network {name} still has {count} endpoint(s); disconnect them or use --force")]
    NetworkInUse {
        /// Network.
        name: String,
        /// Endpoint count.
        count: usize,
    },
    /// The network exists with another definition.
    #[error("{0}")]
    NetworkConflict(String),
    /// No such endpoint.
    #[error("container {container_id} has no interface {ifname} on network {network}")]
    EndpointNotFound {
        /// Network.
        network: String,
        /// Container id.
        container_id: String,
        /// Interface.
        ifname: String,
    },
    /// The interface name is taken in the container.
    #[error("attaching {container_id} to {network}: interface {ifname} already exists in {netns}")]
    InterfaceExists {
        /// Network.
        network: String,
        /// Container id.
        container_id: String,
        /// Interface.
        ifname: String,
        /// Namespace path.
        netns: String,
    },
    /// The network's bridge has as many ports as the kernel allows.
    #[error(
        "network {network} is full: its bridge {bridge} has the kernel's maximum of {BRIDGE_MAX_PORTS} ports; detach a container or use another network"
    )]
    NetworkFull {
        /// Network.
        network: String,
        /// Its bridge.
        bridge: String,
    },
    /// A published port is taken.
    #[error("{0}")]
    PortConflict(String),
    /// A CHECK found a difference.
    #[error("check of {what}: {problem}")]
    CheckFailed {
        /// The endpoint.
        what: String,
        /// What differs.
        problem: String,
    },
    /// Namespace problems.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Kernel refusals.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Store failures.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A subsystem (firewall, DNS) failed.
    #[error("{0}")]
    Subsystem(String),
    /// Several independent failures (teardown keeps going and reports them all).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<DaemonError>),
}

impl DaemonError {
    /// The stable API code for this error.
    pub fn code(&self) -> ErrorCode {
        use DaemonError::*;
        match self {
            Name(_) => ErrorCode::InvalidName,
            InvalidAddress(_) => ErrorCode::InvalidAddress,
            InvalidRequest(_) => ErrorCode::InvalidRequest,
            SubnetOverlap { .. } => ErrorCode::SubnetOverlap,
            NoSubnetAvailable(_) => ErrorCode::NoSubnetAvailable,
            NetworkExists(_) => ErrorCode::NetworkExists,
            NetworkNotFound(_) => ErrorCode::NetworkNotFound,
            NetworkInUse { .. } => ErrorCode::NetworkInUse,
            NetworkConflict(_) => ErrorCode::NetworkConflict,
            EndpointNotFound { .. } => ErrorCode::EndpointNotFound,
            InterfaceExists { .. } => ErrorCode::InterfaceExists,
            PortConflict(_) => ErrorCode::PortConflict,
            // Like an exhausted pool: a slot frees when a container leaves.
            NetworkFull { .. } => ErrorCode::PoolExhausted,
            CheckFailed { .. } => ErrorCode::CheckFailed,
            Netns(NetnsError::NotFound { .. }) => ErrorCode::NetnsNotFound,
            Netns(_) => ErrorCode::Kernel,
            Netlink(_) => ErrorCode::Kernel,
            Store(StoreError::NetworkExists(_)) => ErrorCode::NetworkExists,
            Store(StoreError::EndpointExists { .. }) => ErrorCode::EndpointExists,
            Store(StoreError::NoSubnetFor { .. }) => ErrorCode::InvalidAddress,
            Store(StoreError::Ipam { source, .. }) => match **source {
                IpamError::Exhausted { .. } => ErrorCode::PoolExhausted,
                IpamError::AddressInUse { .. } => ErrorCode::AddressInUse,
                _ => ErrorCode::InvalidAddress,
            },
            Store(_) => ErrorCode::Store,
            Subsystem(_) => ErrorCode::Internal,
            Many(v) => v.first().map_or(ErrorCode::Internal, |e| e.code()),
        }
    }
}

impl From<IpamError> for DaemonError {
    fn from(e: IpamError) -> Self {
        DaemonError::InvalidAddress(e.to_string())
    }
}

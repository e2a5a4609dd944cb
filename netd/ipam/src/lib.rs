//! Pure IP address management for netd: no I/O, no global state.
//!
//! [`Pool`] holds one subnet's allocation rules (dynamic range, gateway, auxiliary addresses)
//! and answers "which address next?" and "may this container have that address?" given the
//! set of addresses the caller's store says are in use. [`pick_subnet`] chooses a subnet for a
//! new network from [`SubnetPool`]s (like Docker's and Podman's default address pools).
//!
//! Addresses are handled as `u128` so IPv4 and IPv6 share one code path, and every operation
//! costs time proportional to the number of used and reserved addresses, never to the size of
//! the subnet: an IPv6 /64 is as cheap as an IPv4 /24.

mod pool;
mod subnet_pool;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

pub use pool::Pool;
pub use subnet_pool::{default_pools, overlaps, pick_subnet, SubnetPool};

/// Why an address of a subnet is not handed out to containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRole {
    /// The subnet's network address (for IPv6 the subnet-router anycast address).
    Network,
    /// The IPv4 broadcast address (IPv6 has none).
    Broadcast,
    /// The gateway, owned by the bridge.
    Gateway,
    /// An auxiliary address reserved by the network's configuration.
    Reserved,
}

impl fmt::Display for AddressRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressRole::Network => "network address",
            AddressRole::Broadcast => "broadcast address",
            AddressRole::Gateway => "gateway address",
            AddressRole::Reserved => "reserved auxiliary address",
        })
    }
}

/// Errors from validating pools, allocating addresses and choosing subnets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The subnet leaves no room for a gateway and at least one container.
    #[error("subnet {subnet} is too small: at least /30 for IPv4 and /126 for IPv6 is needed")]
    SubnetTooSmall {
        /// The refused subnet.
        subnet: IpNet,
    },
    /// A subnet or range was written with host bits set (10.0.0.1/24 instead of 10.0.0.0/24).
    #[error("{what} {given} has host bits set: write it as {network}")]
    HostBitsSet {
        /// What was being validated ("subnet", "allocation range", "subnet pool").
        what: &'static str,
        /// The value as given.
        given: IpNet,
        /// The same network with host bits cleared.
        network: IpNet,
    },
    /// A gateway, range, reserved or requested address is of the other IP family.
    #[error("{what} {value} is {} but subnet {subnet} is {}", family_of(.subnet, true), family_of(.subnet, false))]
    FamilyMismatch {
        /// What was being validated ("gateway", "allocation range", "reserved address", "address").
        what: &'static str,
        /// The offending value, formatted.
        value: String,
        /// The subnet it was checked against.
        subnet: IpNet,
    },
    /// The gateway does not lie inside the subnet.
    #[error("gateway {gateway} is outside subnet {subnet}")]
    GatewayOutsideSubnet {
        /// The refused gateway.
        gateway: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// The gateway is the network or broadcast address, which no host may use.
    #[error("gateway {gateway} is the {role} of subnet {subnet} and cannot be assigned to a host")]
    GatewayIsNetworkOrBroadcast {
        /// The refused gateway.
        gateway: IpAddr,
        /// The subnet.
        subnet: IpNet,
        /// [`AddressRole::Network`] or [`AddressRole::Broadcast`].
        role: AddressRole,
    },
    /// The dynamic allocation range does not lie inside the subnet.
    #[error("allocation range {range} is not inside subnet {subnet}")]
    RangeOutsideSubnet {
        /// The refused range.
        range: IpNet,
        /// The subnet.
        subnet: IpNet,
    },
    /// A reserved (auxiliary) address does not lie inside the subnet.
    #[error("reserved address {address} is outside subnet {subnet}")]
    ReservedOutsideSubnet {
        /// The refused reserved address.
        address: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// A requested static address does not lie inside the subnet.
    #[error("address {address} is outside subnet {subnet}")]
    AddressOutsideSubnet {
        /// The requested address.
        address: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// A requested static address is the network, broadcast, gateway or a reserved address.
    #[error("address {address} cannot be assigned: it is the {role} of subnet {subnet}")]
    AddressReserved {
        /// The requested address.
        address: IpAddr,
        /// The subnet.
        subnet: IpNet,
        /// Why the address is not available.
        role: AddressRole,
    },
    /// A requested static address is already assigned to another endpoint.
    #[error("address {address} in subnet {subnet} is already in use")]
    AddressInUse {
        /// The requested address.
        address: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// Dynamic allocation found no free address.
    #[error("no free address left in {}", scope(.subnet, .range))]
    Exhausted {
        /// The subnet.
        subnet: IpNet,
        /// The dynamic range, when the pool has one.
        range: Option<IpNet>,
    },
    /// A subnet pool specification could not be parsed or makes no sense.
    #[error("invalid subnet pool {input:?} (expected BASE/LEN or BASE/LEN:PREFIX, e.g. 10.88.0.0/13:16): {reason}")]
    InvalidSubnetPool {
        /// The specification as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// "IPv4"/"IPv6" for error messages; `other` gives the family that is not the subnet's.
fn family_of(subnet: &IpNet, other: bool) -> &'static str {
    match (subnet, other) {
        (IpNet::V4(_), false) | (IpNet::V6(_), true) => "IPv4",
        (IpNet::V6(_), false) | (IpNet::V4(_), true) => "IPv6",
    }
}

fn scope(subnet: &IpNet, range: &Option<IpNet>) -> String {
    match range {
        Some(range) => format!("range {range} of subnet {subnet}"),
        None => format!("subnet {subnet}"),
    }
}

/// An address as a number, so that both families share the arithmetic.
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`]; `v` must fit the family.
pub(crate) fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        // Callers only produce values inside an IPv4 network, so this never truncates.
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// First and last address of `net` (host bits of the given address are ignored).
pub(crate) fn bounds(net: &IpNet) -> (u128, u128) {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

pub(crate) fn same_family(a: &IpAddr, net: &IpNet) -> bool {
    matches!(
        (a, net),
        (IpAddr::V4(_), IpNet::V4(_)) | (IpAddr::V6(_), IpNet::V6(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_message_names_range_and_subnet() {
        let e = IpamError::Exhausted {
            subnet: "10.0.0.0/24".parse().unwrap(),
            range: Some("10.0.0.128/25".parse().unwrap()),
        };
        assert_eq!(
            e.to_string(),
            "no free address left in range 10.0.0.128/25 of subnet 10.0.0.0/24"
        );
    }

    #[test]
    fn family_mismatch_message() {
        let e = IpamError::FamilyMismatch {
            what: "gateway",
            value: "fd00::1".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "gateway fd00::1 is IPv6 but subnet 10.0.0.0/24 is IPv4"
        );
    }

    #[test]
    fn u128_round_trip() {
        for s in [
            "0.0.0.0",
            "10.1.2.3",
            "255.255.255.255",
            "::",
            "fd00::1",
            "ffff::ffff",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(from_u128(to_u128(ip), ip.is_ipv6()), ip);
        }
    }
}

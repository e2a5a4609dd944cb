//! Wire types. Field names are snake_case JSON; optional fields may be omitted by clients.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// API version prefix of every path.
pub const API_PREFIX: &str = "/v1";

/// One subnet of a network as requested by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRequest {
    /// The subnet (host bits zero).
    pub subnet: IpNet,
    /// Gateway address; default: the first host address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Range dynamic addresses are taken from; default: the whole subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
}

/// Request body of `POST /v1/networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// Network name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 bytes.
    pub name: String,
    /// At most one IPv4 and one IPv6 subnet; empty means "pick an IPv4 subnet from the pool".
    #[serde(default)]
    pub subnets: Vec<SubnetRequest>,
    /// Addresses never handed out (Docker's `--aux-address`).
    #[serde(default)]
    pub aux_addresses: Vec<IpAddr>,
    /// Internal networks have no route out and are never masqueraded.
    #[serde(default)]
    pub internal: bool,
    /// MTU of the bridge and veths; default: kernel default (1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Bridge name (at most 15 bytes); default `nd-<name>` or `nd-<hash>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Masquerade traffic leaving the host (default true; ignored for internal networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<bool>,
    /// Inter-container communication inside the bridge (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// SNAT outgoing traffic to this host address instead of masquerading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat: Option<IpAddr>,
    /// DNS search domain served for this network, e.g. `mynet.netd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    /// Upstream DNS servers (`ip` or `ip:port`); default: the host's resolv.conf.
    #[serde(default)]
    pub dns_upstreams: Vec<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One subnet of an existing network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The subnet.
    pub subnet: IpNet,
    /// Gateway address, held by the bridge.
    pub gateway: IpAddr,
    /// Dynamic allocation range, if narrower than the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
}

/// A network as netd stores and reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Network name.
    pub name: String,
    /// Stable random id (hex).
    pub id: String,
    /// Linux bridge name.
    pub bridge: String,
    /// Subnets (IPv4 first).
    pub subnets: Vec<Subnet>,
    /// Reserved addresses.
    #[serde(default)]
    pub aux_addresses: Vec<IpAddr>,
    /// No route out, no masquerade.
    pub internal: bool,
    /// MTU, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Masquerade outgoing traffic.
    pub masquerade: bool,
    /// Inter-container communication allowed.
    pub icc: bool,
    /// Fixed source address for outgoing traffic (instead of masquerade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat: Option<IpAddr>,
    /// DNS search domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    /// Upstream DNS servers.
    #[serde(default)]
    pub dns_upstreams: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

/// `GET /v1/networks` row: a network plus its endpoint count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSummary {
    /// The network.
    #[serde(flatten)]
    pub network: Network,
    /// Number of attached endpoints.
    pub endpoints: usize,
}

/// `GET /v1/networks/{name}`: a network with its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInspect {
    /// The network.
    #[serde(flatten)]
    pub network: Network,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Address leases (each belongs to exactly one endpoint).
    #[serde(default)]
    pub leases: Vec<Lease>,
    /// Per-subnet address usage.
    #[serde(default)]
    pub usage: Vec<SubnetUsage>,
}

/// How full one subnet's dynamic range is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetUsage {
    /// The subnet.
    pub subnet: IpNet,
    /// Leased addresses in the subnet.
    pub used: u64,
    /// Addresses dynamic allocation can still hand out (saturates for huge IPv6 ranges).
    pub free: u64,
}

/// One leased address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The address.
    pub address: IpAddr,
    /// Owner, `container_id/ifname`.
    pub endpoint: String,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// A published port (range): host `host_port..host_port+count` to container `container_port..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on; none means every local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    /// First host port.
    pub host_port: u16,
    /// First container port.
    pub container_port: u16,
    /// Number of consecutive ports (1 for a single port).
    #[serde(default = "one")]
    pub count: u16,
    /// Protocol.
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

fn one() -> u16 {
    1
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

/// Request body of `POST /v1/networks/{name}/endpoints` (attach a container).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// Container id: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    pub container_id: String,
    /// Interface name inside the container (default `eth0`, at most 15 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Path of the container's network namespace (`/run/netns/x`, `/proc/PID/ns/net`).
    pub netns: String,
    /// Container name, resolvable by DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extra DNS names (service aliases).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Static addresses requested (at most one per family).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Requested MAC address (`aa:bb:cc:dd:ee:ff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Published ports.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Free-form labels (e.g. Kubernetes pod namespace/name).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the caller expects of the network: the attach is refused (`network_conflict`)
    /// before anything is done if the network differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<crate::NetworkDef>,
}

/// An attached container interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Network name.
    pub network: String,
    /// Container id.
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// Container name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// DNS aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Namespace path given at attach time.
    pub netns: String,
    /// Host-side veth name.
    pub host_veth: String,
    /// Container interface MAC.
    pub mac: String,
    /// Addresses with the subnet prefix length.
    pub ips: Vec<IpNet>,
    /// Gateways (one per family).
    pub gateways: Vec<IpAddr>,
    /// Published ports.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Attach time, seconds since the Unix epoch.
    pub created: u64,
}

/// A route installed in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings for the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsInfo {
    /// Nameservers (the network's gateways).
    pub nameservers: Vec<IpAddr>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
}

/// Response of attach: the endpoint plus what a CNI result needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachResult {
    /// The new endpoint.
    pub endpoint: Endpoint,
    /// Bridge name.
    pub bridge: String,
    /// Bridge MAC.
    pub bridge_mac: String,
    /// Host veth MAC.
    pub host_veth_mac: String,
    /// Routes installed in the container.
    pub routes: Vec<RouteInfo>,
    /// DNS settings.
    pub dns: DnsInfo,
    /// The network's MTU, when it sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Request body of `POST /v1/networks/{name}/gc`: keep these attachments, release the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    /// Attachments to keep.
    pub valid: Vec<AttachmentId>,
}

/// Identifies one attachment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentId {
    /// Container id.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// Result of GC: what was released and what failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResult {
    /// Released attachments.
    pub released: Vec<AttachmentId>,
    /// Errors met (GC keeps going past them).
    pub errors: Vec<String>,
}

/// `GET /v1/networks/{name}/dns/{qname}`: what a name resolves to on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// Network.
    pub network: String,
    /// Name asked.
    pub name: String,
    /// Addresses (empty: the name is unknown on this network).
    pub addresses: Vec<IpAddr>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// netd version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Number of networks.
    pub networks: usize,
    /// Number of endpoints.
    pub endpoints: usize,
    /// State directory.
    pub state_dir: String,
}

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or path could not be understood.
    InvalidRequest,
    /// A name (network, container, interface, bridge) is malformed or too long.
    InvalidName,
    /// A subnet, gateway, range or address is invalid.
    InvalidAddress,
    /// The subnet overlaps another network or a host route.
    SubnetOverlap,
    /// A network with that name (or bridge) exists.
    NetworkExists,
    /// No such network.
    NetworkNotFound,
    /// The network still has endpoints.
    NetworkInUse,
    /// The network exists with a different definition.
    NetworkConflict,
    /// An endpoint with that (container id, ifname) exists.
    EndpointExists,
    /// No such endpoint.
    EndpointNotFound,
    /// A requested address is taken.
    AddressInUse,
    /// No free address is left.
    PoolExhausted,
    /// No free subnet is left in the pools.
    NoSubnetAvailable,
    /// The network namespace does not exist.
    NetnsNotFound,
    /// The interface name is taken inside the container.
    InterfaceExists,
    /// A published port is already taken.
    PortConflict,
    /// The kernel refused an operation.
    Kernel,
    /// The state store failed.
    Store,
    /// The caller is not allowed.
    PermissionDenied,
    /// A CHECK found the endpoint differs from what was set up.
    CheckFailed,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// HTTP status used for this code.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest | InvalidName | InvalidAddress => 400,
            PermissionDenied => 403,
            NetworkNotFound | EndpointNotFound | NetnsNotFound => 404,
            SubnetOverlap | NetworkExists | NetworkInUse | NetworkConflict | EndpointExists
            | AddressInUse | InterfaceExists | PortConflict | CheckFailed => 409,
            PoolExhausted | NoSubnetAvailable => 507,
            Kernel | Store | Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("internal"))
    }
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message saying what was being done and to what.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        let b = ErrorBody {
            code: ErrorCode::PoolExhausted,
            message: "m".into(),
        };
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(s, r#"{"code":"pool_exhausted","message":"m"}"#);
        assert_eq!(ErrorCode::PoolExhausted.to_string(), "pool_exhausted");
    }
}

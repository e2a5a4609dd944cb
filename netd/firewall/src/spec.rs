//! The declarative input of the firewall: what networks and endpoints exist, and what ports
//! they publish. These are plain values the daemon builds from its store; everything the
//! kernel ends up holding is derived from them (see [`crate::policy`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::FirewallError;

/// One bridge network as the firewall needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Network name (unique; names the per-network chains `nw-<name>-*`).
    pub name: String,
    /// Bridge interface name (at most 15 bytes).
    pub bridge: String,
    /// Subnets of the network (IPv4 and/or IPv6).
    pub subnets: Vec<IpNet>,
    /// Gateway addresses (on the bridge), one per subnet family.
    pub gateways: Vec<IpAddr>,
    /// Internal network: reaches nothing outside its bridge, no NAT, no published ports.
    pub internal: bool,
    /// Masquerade traffic from the subnets leaving through another interface.
    pub masquerade: bool,
    /// SNAT to this fixed host address instead of masquerading (same-family subnets only).
    pub snat: Option<IpAddr>,
    /// Inter-container communication: `false` blocks traffic inside the bridge except to the
    /// gateway.
    pub icc: bool,
    /// Port of the DNS server on the gateway; traffic subnet -> gateway:dns_port (udp+tcp)
    /// is accepted.
    pub dns_port: u16,
}

/// One container interface attached to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Name of the network the endpoint is attached to.
    pub network: String,
    /// Unique endpoint id (used in error messages and as the key of the installed state).
    pub key: String,
    /// Host side of the veth pair (bridge port).
    pub host_veth: String,
    /// Addresses of the container interface.
    pub ips: Vec<IpAddr>,
    /// MAC address of the container interface.
    pub mac: [u8; 6],
    /// Published ports.
    pub ports: Vec<PortMapping>,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// IANA protocol number (as matched by `meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
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

impl FromStr for Protocol {
    type Err = FirewallError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(FirewallError::InvalidPortMapping {
                input: s.to_string(),
                reason: "protocol must be tcp, udp or sctp".into(),
            }),
        }
    }
}

/// A published port (range): `host_ip:host_port..+count -> container_port..+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// Host address to publish on; `None` publishes on every local address.
    pub host_ip: Option<IpAddr>,
    /// First host port.
    pub host_port: u16,
    /// First container port.
    pub container_port: u16,
    /// Length of the range (1 = a single port).
    pub count: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl PortMapping {
    /// Host ports covered by this mapping (inclusive range).
    pub fn host_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.host_port..=self.host_port + (self.count - 1)
    }

    /// Checks the invariants the parser enforces, for values built in code.
    pub fn validate(&self) -> Result<(), FirewallError> {
        let err = |reason: &str| FirewallError::InvalidPortMapping {
            input: self.to_string(),
            reason: reason.into(),
        };
        if self.count == 0 {
            return Err(err("port range is empty"));
        }
        if self.host_port == 0 || self.container_port == 0 {
            return Err(err("port 0 cannot be published"));
        }
        if u32::from(self.host_port) + u32::from(self.count) - 1 > 65535
            || u32::from(self.container_port) + u32::from(self.count) - 1 > 65535
        {
            return Err(err("port range goes beyond 65535"));
        }
        Ok(())
    }

    pub(crate) fn overlaps(&self, other: &PortMapping) -> bool {
        let ips_overlap = match (self.host_ip, other.host_ip) {
            (None, _) | (_, None) => true,
            (Some(a), Some(b)) => a == b,
        };
        ips_overlap
            && self.protocol == other.protocol
            && self.host_ports().start() <= other.host_ports().end()
            && other.host_ports().start() <= self.host_ports().end()
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            None => {}
        }
        let end = |start: u16| u32::from(start) + u32::from(self.count.max(1)) - 1;
        if self.count > 1 {
            write!(
                f,
                "{}-{}:{}-{}/{}",
                self.host_port,
                end(self.host_port),
                self.container_port,
                end(self.container_port),
                self.protocol
            )
        } else {
            write!(
                f,
                "{}:{}/{}",
                self.host_port, self.container_port, self.protocol
            )
        }
    }
}

/// Parses `start[-end]` into (start, length).
fn parse_range(s: &str, what: &str, input: &str) -> Result<(u16, u16), FirewallError> {
    let err = |reason: String| FirewallError::InvalidPortMapping {
        input: input.to_string(),
        reason,
    };
    let port = |p: &str| -> Result<u16, FirewallError> {
        let v: u16 = p
            .parse()
            .map_err(|_| err(format!("{what} port {p:?} is not a number in 1-65535")))?;
        if v == 0 {
            return Err(err(format!("{what} port 0 cannot be published")));
        }
        Ok(v)
    };
    match s.split_once('-') {
        None => Ok((port(s)?, 1)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(err(format!(
                    "{what} port range {a}-{b} ends before it starts"
                )));
            }
            Ok((a, b - a + 1))
        }
    }
}

impl FromStr for PortMapping {
    type Err = FirewallError;

    /// Docker syntax: `[hostIP:]hostPort[-end]:containerPort[-end][/tcp|udp|sctp]`; an IPv6
    /// host address is written in brackets (`[::1]:8080:80`).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| FirewallError::InvalidPortMapping {
            input: input.to_string(),
            reason: reason.into(),
        };
        let (spec, protocol) = match input.rsplit_once('/') {
            Some((spec, proto)) => (
                spec,
                proto
                    .parse::<Protocol>()
                    .map_err(|_| err("protocol must be tcp, udp or sctp"))?,
            ),
            None => (input, Protocol::Tcp),
        };
        let (host_ip, rest) = if let Some(stripped) = spec.strip_prefix('[') {
            let (ip, rest) = stripped
                .split_once("]:")
                .ok_or_else(|| err("unterminated [IPv6] host address"))?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| err("host address in brackets is not an IPv6 address"))?;
            (Some(IpAddr::V6(ip)), rest)
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                2 => (None, spec),
                3 => {
                    let ip: IpAddr = parts[0]
                        .parse()
                        .map_err(|_| err("host address is not an IP address"))?;
                    (Some(ip), &spec[parts[0].len() + 1..])
                }
                1 => return Err(err("expected hostPort:containerPort")),
                _ => return Err(err("too many ':' (write IPv6 host addresses in brackets)")),
            }
        };
        let (host, container) = rest
            .split_once(':')
            .ok_or_else(|| err("expected hostPort:containerPort"))?;
        if host.is_empty() {
            return Err(err(
                "host port is missing (netd does not pick random host ports)",
            ));
        }
        let (host_port, host_len) = parse_range(host, "host", input)?;
        let (container_port, container_len) = parse_range(container, "container", input)?;
        if host_len != container_len {
            return Err(err(&format!(
                "host range has {host_len} ports but container range has {container_len}"
            )));
        }
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            count: host_len,
            protocol,
        })
    }
}

/// Refuses `new` if one of its published ports is already published by an endpoint in
/// `existing` (same protocol, overlapping host ports, same host address or a wildcard on
/// either side), or if `new` overlaps itself. The error names the holder.
pub fn check_port_conflicts<'a, I>(existing: I, new: &EndpointSpec) -> Result<(), FirewallError>
where
    I: IntoIterator<Item = &'a EndpointSpec>,
    I::IntoIter: Clone,
{
    // Borrowed, not cloned: this runs on every attach, with every other endpoint installed.
    let existing = existing.into_iter();
    for (i, m) in new.ports.iter().enumerate() {
        m.validate()?;
        if let Some(prev) = new.ports[..i].iter().find(|p| p.overlaps(m)) {
            return Err(FirewallError::PortConflict {
                mapping: m.to_string(),
                holder: new.key.clone(),
                held: prev.to_string(),
            });
        }
        for ep in existing.clone().filter(|e| e.key != new.key) {
            if let Some(held) = ep.ports.iter().find(|p| p.overlaps(m)) {
                return Err(FirewallError::PortConflict {
                    mapping: m.to_string(),
                    holder: ep.key.clone(),
                    held: held.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pm(s: &str) -> PortMapping {
        s.parse().unwrap()
    }

    #[test]
    fn parses_docker_syntax() {
        assert_eq!(
            pm("8080:80"),
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                count: 1,
                protocol: Protocol::Tcp
            }
        );
        let m = pm("127.0.0.1:5000-5009:6000-6009/udp");
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((m.host_port, m.container_port, m.count), (5000, 6000, 10));
        assert_eq!(m.protocol, Protocol::Udp);
        let m = pm("[::1]:53:53/sctp");
        assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(m.protocol, Protocol::Sctp);
        assert_eq!(pm("1-1:2-2").count, 1);
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        for (input, needle) in [
            ("80", "expected hostPort:containerPort"),
            ("0:80", "port 0"),
            ("80:0", "port 0"),
            ("8080-8081:80", "2 ports but container range has 1"),
            ("90-80:90-80", "ends before it starts"),
            ("80:80/icmp", "protocol"),
            ("x:80", "not a number"),
            ("1.2.3:80:80", "not an IP address"),
            ("::1:80:80", "too many ':'"),
            ("[::1:80:80", "unterminated"),
            (":80", "host port is missing"),
            ("70000:80", "not a number"),
        ] {
            let e = input.parse::<PortMapping>().unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
            assert!(e.contains(input), "{input}: error names the input: {e}");
        }
    }

    fn ep(key: &str, ports: &[&str]) -> EndpointSpec {
        EndpointSpec {
            network: "n".into(),
            key: key.into(),
            host_veth: format!("v{key}"),
            ips: vec!["10.0.0.2".parse().unwrap()],
            mac: [2, 0, 0, 0, 0, 1],
            ports: ports.iter().map(|p| pm(p)).collect(),
        }
    }

    #[test]
    fn conflicts_name_the_holder() {
        let existing = [ep("a", &["8080:80", "127.0.0.1:9000-9010:9000-9010/udp"])];
        let e = check_port_conflicts(&existing, &ep("b", &["8080:81"])).unwrap_err();
        assert!(e.to_string().contains("endpoint a"), "{e}");
        // wildcard overlaps a specific address
        assert!(check_port_conflicts(&existing, &ep("b", &["9005:1/udp"])).is_err());
        // different address, protocol or port: fine
        check_port_conflicts(&existing, &ep("b", &["10.0.0.1:9005:1/udp"])).unwrap();
        check_port_conflicts(&existing, &ep("b", &["8080:80/udp"])).unwrap();
        check_port_conflicts(&existing, &ep("b", &["9011:1/udp"])).unwrap();
        // self overlap
        assert!(
            check_port_conflicts(&[] as &[EndpointSpec], &ep("b", &["1-5:1-5", "5:9"])).is_err()
        );
        // re-adding the same endpoint is not a conflict with itself
        check_port_conflicts(&existing, &existing[0]).unwrap();
    }

    fn arb_mapping() -> impl Strategy<Value = PortMapping> {
        (
            prop::option::of(prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
            ]),
            1u16..=65535,
            1u16..=65535,
            1u16..=64,
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
        )
            .prop_filter_map("range fits", |(host_ip, h, c, n, protocol)| {
                let m = PortMapping {
                    host_ip,
                    host_port: h,
                    container_port: c,
                    count: n,
                    protocol,
                };
                m.validate().ok().map(|_| m)
            })
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(m in arb_mapping()) {
            prop_assert_eq!(m.to_string().parse::<PortMapping>().unwrap(), m);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<PortMapping>();
        }

        #[test]
        fn overlap_is_symmetric(a in arb_mapping(), b in arb_mapping()) {
            prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
        }
    }
}

//! An index of the host ports that installed endpoints publish, so that checking a new
//! endpoint's ports looks at the few mappings near them instead of at every endpoint.

use std::collections::btree_map::{BTreeMap, Entry};
use std::net::{IpAddr, Ipv6Addr};

use crate::spec::{EndpointSpec, PortMapping, Protocol};

/// One indexed mapping: protocol and first host port first, so a port range is a key range.
type Key = (Protocol, u16, u16, Option<IpAddr>);

/// Published mappings by protocol and first host port, each with the number of endpoints
/// that publish exactly it.
#[derive(Debug, Default)]
pub(crate) struct PortIndex {
    by_start: BTreeMap<Key, u32>,
    /// Longest range ever indexed: a mapping starting up to this far below a port can cover
    /// it. Never lowered (an upper bound stays correct, only less tight).
    widest: u16,
}

fn key(m: &PortMapping) -> Key {
    (m.protocol, m.host_port, m.count, m.host_ip)
}

impl PortIndex {
    /// Indexes `ep`'s mappings.
    pub(crate) fn insert(&mut self, ep: &EndpointSpec) {
        for m in &ep.ports {
            self.widest = self.widest.max(m.count);
            *self.by_start.entry(key(m)).or_default() += 1;
        }
    }

    /// Drops `ep`'s mappings (as indexed by [`PortIndex::insert`]).
    pub(crate) fn remove(&mut self, ep: &EndpointSpec) {
        for m in &ep.ports {
            if let Entry::Occupied(mut e) = self.by_start.entry(key(m)) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// Whether an indexed mapping overlaps one of `ep`'s: `false` means no endpoint holds any
    /// of its ports; `true` may also be `ep`'s own mappings, indexed under its key.
    pub(crate) fn may_conflict(&self, ep: &EndpointSpec) -> bool {
        const TOP: Option<IpAddr> = Some(IpAddr::V6(Ipv6Addr::from_bits(u128::MAX)));
        ep.ports.iter().any(|m| {
            let last = m.host_port.saturating_add(m.count.saturating_sub(1));
            let first = m.host_port.saturating_sub(self.widest.saturating_sub(1));
            self.by_start
                .range((m.protocol, first, 0, None)..=(m.protocol, last, u16::MAX, TOP))
                .any(|(&(protocol, host_port, count, host_ip), _)| {
                    let held = PortMapping {
                        host_ip,
                        host_port,
                        container_port: host_port,
                        count,
                        protocol,
                    };
                    held.overlaps(m)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::check_port_conflicts;
    use proptest::prelude::*;

    fn ep(key: &str, ports: &[&str]) -> EndpointSpec {
        EndpointSpec {
            network: "n".into(),
            key: key.into(),
            host_veth: String::new(),
            ips: vec![],
            mac: [0; 6],
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn finds_ranges_that_start_below_the_port() {
        let mut idx = PortIndex::default();
        idx.insert(&ep("a", &["127.0.0.1:9000-9010:9000-9010/udp", "80:80"]));
        assert!(idx.may_conflict(&ep("b", &["9010:1/udp"])));
        assert!(idx.may_conflict(&ep("b", &["8990-9000:8990-9000/udp"])));
        assert!(!idx.may_conflict(&ep("b", &["9011:1/udp"])));
        assert!(!idx.may_conflict(&ep("b", &["10.0.0.1:9005:1/udp"])));
        assert!(!idx.may_conflict(&ep("b", &["9005:1/tcp"])));
        assert!(idx.may_conflict(&ep("b", &["[::1]:80:8080"])));
        idx.remove(&ep("a", &["127.0.0.1:9000-9010:9000-9010/udp", "80:80"]));
        assert!(!idx.may_conflict(&ep("b", &["9010:1/udp", "80:80"])));
    }

    fn arb_ports() -> impl Strategy<Value = Vec<String>> {
        let one = (
            prop::option::of(prop_oneof![
                Just("127.0.0.1"),
                Just("10.0.0.1"),
                Just("[::1]")
            ]),
            1u16..40,
            1u16..6,
            prop_oneof![Just("tcp"), Just("udp")],
        )
            .prop_map(|(ip, port, n, proto)| {
                let ip = ip.map(|i| format!("{i}:")).unwrap_or_default();
                let last = port + n - 1;
                format!("{ip}{port}-{last}:{port}-{last}/{proto}")
            });
        prop::collection::vec(one, 0..3)
    }

    proptest! {
        /// The index finds exactly the conflicts the full scan finds (besides `new`'s own).
        #[test]
        fn agrees_with_the_full_scan(
            held in prop::collection::vec(arb_ports(), 0..12),
            gone in prop::collection::vec(any::<bool>(), 12),
            new in arb_ports(),
        ) {
            let mut idx = PortIndex::default();
            let mut eps = Vec::new();
            for (i, ports) in held.iter().enumerate() {
                let refs: Vec<&str> = ports.iter().map(String::as_str).collect();
                let e = ep(&format!("e{i}"), &refs);
                idx.insert(&e);
                if gone[i] {
                    idx.remove(&e);
                } else {
                    eps.push(e);
                }
            }
            let refs: Vec<&str> = new.iter().map(String::as_str).collect();
            let new = ep("new", &refs);
            let alone = check_port_conflicts(std::iter::empty::<&EndpointSpec>(), &new).is_err();
            let scan = check_port_conflicts(&eps, &new).is_err();
            prop_assert_eq!(scan, alone || idx.may_conflict(&new));
        }
    }
}

//! One subnet's allocation rules and the allocator over them.
//!
//! A [`Pool`] is validated once at construction and is immutable afterwards; which addresses are
//! taken is not part of it but passed in by the caller (the store is the single source of truth
//! for leases, so the allocator cannot drift from it). Every query builds the sorted list of
//! excluded addresses that fall in the dynamic range and walks it, which is why cost depends on
//! the number of used and reserved addresses and not on the range size.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{bounds, from_u128, same_family, to_u128, AddressRole, IpamError};

/// Largest prefix lengths accepted: a /30 (IPv4) or /126 (IPv6) still fits a gateway and a host.
const MAX_PREFIX_V4: u8 = 30;
const MAX_PREFIX_V6: u8 = 126;

/// One subnet's allocation rules: subnet, dynamic range, gateway and reserved addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    subnet: IpNet,
    range: Option<IpNet>,
    gateway: Option<IpAddr>,
    reserved: BTreeSet<IpAddr>,
}

impl Pool {
    /// Validates and builds a pool.
    ///
    /// The subnet must have no host bits set and be at most /30 (IPv4) or /126 (IPv6); the
    /// range, gateway and reserved addresses must be of the subnet's family and inside it; the
    /// gateway must not be the network or (IPv4) broadcast address. A reserved address that is
    /// also the gateway, network or broadcast address is accepted: it is excluded anyway.
    pub fn new(
        subnet: IpNet,
        range: Option<IpNet>,
        gateway: Option<IpAddr>,
        reserved: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Pool, IpamError> {
        let max = match subnet {
            IpNet::V4(_) => MAX_PREFIX_V4,
            IpNet::V6(_) => MAX_PREFIX_V6,
        };
        if subnet.prefix_len() > max {
            return Err(IpamError::SubnetTooSmall { subnet });
        }
        if subnet != subnet.trunc() {
            return Err(IpamError::HostBitsSet {
                what: "subnet",
                given: subnet,
                network: subnet.trunc(),
            });
        }
        if let Some(range) = range {
            if !matches!(
                (range, subnet),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            ) {
                return Err(IpamError::FamilyMismatch {
                    what: "allocation range",
                    value: range.to_string(),
                    subnet,
                });
            }
            if range != range.trunc() {
                return Err(IpamError::HostBitsSet {
                    what: "allocation range",
                    given: range,
                    network: range.trunc(),
                });
            }
            if !subnet.contains(&range) {
                return Err(IpamError::RangeOutsideSubnet { range, subnet });
            }
        }
        if let Some(gateway) = gateway {
            if !same_family(&gateway, &subnet) {
                return Err(IpamError::FamilyMismatch {
                    what: "gateway",
                    value: gateway.to_string(),
                    subnet,
                });
            }
            if !subnet.contains(&gateway) {
                return Err(IpamError::GatewayOutsideSubnet { gateway, subnet });
            }
        }
        let reserved: BTreeSet<IpAddr> = reserved.into_iter().collect();
        for &address in &reserved {
            if !same_family(&address, &subnet) {
                return Err(IpamError::FamilyMismatch {
                    what: "reserved address",
                    value: address.to_string(),
                    subnet,
                });
            }
            if !subnet.contains(&address) {
                return Err(IpamError::ReservedOutsideSubnet { address, subnet });
            }
        }
        let pool = Pool {
            subnet,
            range,
            gateway,
            reserved,
        };
        if let Some(gateway) = gateway {
            if let Some(role @ (AddressRole::Network | AddressRole::Broadcast)) =
                pool.special_role(gateway)
            {
                return Err(IpamError::GatewayIsNetworkOrBroadcast {
                    gateway,
                    subnet,
                    role,
                });
            }
        }
        Ok(pool)
    }

    /// The conventional gateway of a subnet: its first host address (10.88.0.1 for 10.88.0.0/16).
    pub fn default_gateway(subnet: IpNet) -> IpAddr {
        let (network, _) = bounds(&subnet);
        // Only a /32 or /128 has no first host; wrapping keeps this total, Pool::new refuses those.
        from_u128(network.wrapping_add(1), subnet.network().is_ipv6())
    }

    /// The subnet.
    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    /// The dynamic allocation range, if one was configured.
    pub fn range(&self) -> Option<IpNet> {
        self.range
    }

    /// Where dynamic allocation draws from: the range if configured, otherwise the whole subnet.
    pub fn allocation_range(&self) -> IpNet {
        self.range.unwrap_or(self.subnet)
    }

    /// The gateway, if the network has one.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    /// Auxiliary addresses never handed out to containers.
    pub fn reserved(&self) -> &BTreeSet<IpAddr> {
        &self.reserved
    }

    /// Whether the pool is IPv6.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.subnet, IpNet::V6(_))
    }

    /// Next free address for dynamic allocation, round-robin.
    ///
    /// Returns the first free address strictly after `last` (wrapping to the start of the
    /// range), or from the start of the range when `last` is `None` or outside it, so a
    /// just-freed address is not reused immediately (like CNI host-local). The network address,
    /// IPv4 broadcast address, gateway, reserved addresses and `used` are skipped. Addresses in
    /// `used` that are outside the range or of the other family are ignored.
    pub fn allocate(
        &self,
        used: &BTreeSet<IpAddr>,
        last: Option<IpAddr>,
    ) -> Result<IpAddr, IpamError> {
        let (lo, hi) = bounds(&self.allocation_range());
        let excluded = self.excluded(used);
        let start = self.start_after(last);
        let found = first_free(start, hi, &excluded).or_else(|| {
            // start > lo here whenever the first search could have missed something.
            (start > lo)
                .then(|| first_free(lo, start - 1, &excluded))
                .flatten()
        });
        match found {
            Some(v) => Ok(from_u128(v, self.is_ipv6())),
            None => Err(IpamError::Exhausted {
                subnet: self.subnet,
                range: self.range,
            }),
        }
    }

    /// The addresses [`Pool::allocate`] would consider, in its order: round-robin from just
    /// after `last`, wrapping once, without the network, broadcast, gateway and reserved
    /// addresses. The first one not taken is what `allocate` returns; a caller whose leases are
    /// keyed by address can probe these one by one instead of reading every lease.
    pub fn candidates(&self, last: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + '_ {
        let (lo, hi) = bounds(&self.allocation_range());
        let start = self.start_after(last);
        let v6 = self.is_ipv6();
        (start..=hi)
            .chain(lo..start)
            .map(move |v| from_u128(v, v6))
            .filter(move |ip| self.special_role(*ip).is_none())
    }

    /// Where a round-robin search begins: just after `last` if it is in the range, else at the
    /// range's start.
    fn start_after(&self, last: Option<IpAddr>) -> u128 {
        let (lo, hi) = bounds(&self.allocation_range());
        match last {
            Some(l) if same_family(&l, &self.subnet) => {
                let l = to_u128(l);
                if (lo..hi).contains(&l) {
                    l + 1
                } else {
                    lo
                }
            }
            _ => lo,
        }
    }

    /// Validates a static address request; `in_use` says whether another endpoint holds it.
    ///
    /// The address must be of the subnet's family and inside the subnet (it may be outside the
    /// dynamic range), and must not be the network, broadcast, gateway or a reserved address,
    /// nor in use.
    pub fn check_static(&self, ip: IpAddr, in_use: bool) -> Result<(), IpamError> {
        let subnet = self.subnet;
        if !same_family(&ip, &subnet) {
            return Err(IpamError::FamilyMismatch {
                what: "address",
                value: ip.to_string(),
                subnet,
            });
        }
        if !subnet.contains(&ip) {
            return Err(IpamError::AddressOutsideSubnet {
                address: ip,
                subnet,
            });
        }
        if let Some(role) = self.special_role(ip) {
            return Err(IpamError::AddressReserved {
                address: ip,
                subnet,
                role,
            });
        }
        if in_use {
            return Err(IpamError::AddressInUse {
                address: ip,
                subnet,
            });
        }
        Ok(())
    }

    /// How many addresses dynamic allocation could still hand out, saturating at `u128::MAX`
    /// (only reachable by an IPv6 ::/0 with nothing excluded, which cannot happen).
    pub fn free_count(&self, used: &BTreeSet<IpAddr>) -> u128 {
        let (lo, hi) = bounds(&self.allocation_range());
        let excluded = self.excluded(used).len() as u128;
        match (hi - lo).checked_add(1) {
            Some(size) => size - excluded,
            // The range holds 2^128 addresses: 2^128 - k == u128::MAX - (k - 1).
            None => u128::MAX - excluded.saturating_sub(1),
        }
    }

    /// Why `ip` (inside the subnet) is never handed out, if it is not.
    fn special_role(&self, ip: IpAddr) -> Option<AddressRole> {
        if ip == self.subnet.network() {
            Some(AddressRole::Network)
        } else if !self.is_ipv6() && ip == self.subnet.broadcast() {
            Some(AddressRole::Broadcast)
        } else if Some(ip) == self.gateway {
            Some(AddressRole::Gateway)
        } else if self.reserved.contains(&ip) {
            Some(AddressRole::Reserved)
        } else {
            None
        }
    }

    /// Sorted, deduplicated addresses of the allocation range that must not be handed out.
    fn excluded(&self, used: &BTreeSet<IpAddr>) -> Vec<u128> {
        let range = self.allocation_range();
        let (lo, hi) = bounds(&range);
        let span = range.network()..=range.broadcast();
        let mut out: Vec<u128> = used
            .range(span.clone())
            .chain(self.reserved.range(span))
            .map(|&a| to_u128(a))
            .collect();
        out.push(to_u128(self.subnet.network()));
        if !self.is_ipv6() {
            out.push(to_u128(self.subnet.broadcast()));
        }
        out.extend(self.gateway.map(to_u128));
        out.retain(|v| (lo..=hi).contains(v));
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// First value in `from..=to` that is not in the sorted `excluded`; costs O(log n + skipped).
fn first_free(from: u128, to: u128, excluded: &[u128]) -> Option<u128> {
    let mut cur = from;
    let mut i = excluded.partition_point(|&e| e < from);
    while cur <= to {
        if excluded.get(i) != Some(&cur) {
            return Some(cur);
        }
        i += 1;
        cur = cur.checked_add(1)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
        addrs.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn refuses_tiny_subnets() {
        for s in ["10.0.0.0/31", "10.0.0.1/32", "fd00::/127", "fd00::/128"] {
            let err = Pool::new(net(s), None, None, []).unwrap_err();
            assert!(
                matches!(err, IpamError::SubnetTooSmall { .. }),
                "{s}: {err}"
            );
        }
        assert_eq!(
            Pool::new(net("10.0.0.0/31"), None, None, [])
                .unwrap_err()
                .to_string(),
            "subnet 10.0.0.0/31 is too small: at least /30 for IPv4 and /126 for IPv6 is needed"
        );
        assert!(Pool::new(net("10.0.0.0/30"), None, None, []).is_ok());
        assert!(Pool::new(net("fd00::/126"), None, None, []).is_ok());
    }

    #[test]
    fn refuses_host_bits() {
        let err = Pool::new(net("10.0.0.1/24"), None, None, []).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 10.0.0.1/24 has host bits set: write it as 10.0.0.0/24"
        );
        let err = Pool::new(net("10.0.0.0/24"), Some(net("10.0.0.130/25")), None, []).unwrap_err();
        assert_eq!(
            err.to_string(),
            "allocation range 10.0.0.130/25 has host bits set: write it as 10.0.0.128/25"
        );
    }

    #[test]
    fn refuses_bad_gateway() {
        let s = net("10.0.0.0/24");
        assert_eq!(
            Pool::new(s, None, Some(ip("10.0.1.1")), [])
                .unwrap_err()
                .to_string(),
            "gateway 10.0.1.1 is outside subnet 10.0.0.0/24"
        );
        assert_eq!(
            Pool::new(s, None, Some(ip("10.0.0.0")), [])
                .unwrap_err()
                .to_string(),
            "gateway 10.0.0.0 is the network address of subnet 10.0.0.0/24 and cannot be assigned to a host"
        );
        assert_eq!(
            Pool::new(s, None, Some(ip("10.0.0.255")), [])
                .unwrap_err()
                .to_string(),
            "gateway 10.0.0.255 is the broadcast address of subnet 10.0.0.0/24 and cannot be assigned to a host"
        );
        assert_eq!(
            Pool::new(s, None, Some(ip("fd00::1")), [])
                .unwrap_err()
                .to_string(),
            "gateway fd00::1 is IPv6 but subnet 10.0.0.0/24 is IPv4"
        );
        // IPv6: the network (subnet-router anycast) address is refused, the last one is fine.
        let s6 = net("fd00::/64");
        assert!(matches!(
            Pool::new(s6, None, Some(ip("fd00::")), []),
            Err(IpamError::GatewayIsNetworkOrBroadcast {
                role: AddressRole::Network,
                ..
            })
        ));
        assert!(Pool::new(s6, None, Some(ip("fd00::ffff:ffff:ffff:ffff")), []).is_ok());
    }

    #[test]
    fn refuses_range_and_reserved_outside() {
        let s = net("10.0.0.0/24");
        assert_eq!(
            Pool::new(s, Some(net("10.0.0.0/23")), None, [])
                .unwrap_err()
                .to_string(),
            "allocation range 10.0.0.0/23 is not inside subnet 10.0.0.0/24"
        );
        assert_eq!(
            Pool::new(s, Some(net("fd00::/120")), None, [])
                .unwrap_err()
                .to_string(),
            "allocation range fd00::/120 is IPv6 but subnet 10.0.0.0/24 is IPv4"
        );
        assert_eq!(
            Pool::new(s, None, None, [ip("10.0.1.5")])
                .unwrap_err()
                .to_string(),
            "reserved address 10.0.1.5 is outside subnet 10.0.0.0/24"
        );
        assert!(Pool::new(s, Some(s), None, [ip("10.0.0.0")]).is_ok());
    }

    #[test]
    fn default_gateway_is_first_host() {
        assert_eq!(Pool::default_gateway(net("10.88.0.0/16")), ip("10.88.0.1"));
        assert_eq!(Pool::default_gateway(net("fd00:1::/64")), ip("fd00:1::1"));
    }

    #[test]
    fn allocates_in_order_skipping_specials() {
        let p = Pool::new(
            net("10.0.0.0/29"),
            None,
            Some(ip("10.0.0.1")),
            [ip("10.0.0.3")],
        )
        .unwrap();
        let mut used = BTreeSet::new();
        let mut last = None;
        let mut got = vec![];
        loop {
            match p.allocate(&used, last) {
                Ok(a) => {
                    got.push(a);
                    used.insert(a);
                    last = Some(a);
                }
                Err(e) => {
                    assert_eq!(
                        e,
                        IpamError::Exhausted {
                            subnet: net("10.0.0.0/29"),
                            range: None
                        }
                    );
                    break;
                }
            }
        }
        assert_eq!(
            got,
            vec![
                ip("10.0.0.2"),
                ip("10.0.0.4"),
                ip("10.0.0.5"),
                ip("10.0.0.6")
            ]
        );
    }

    #[test]
    fn round_robin_does_not_reuse_freed_address_at_once() {
        let p = Pool::new(net("10.0.0.0/24"), None, Some(ip("10.0.0.1")), []).unwrap();
        let used = set(&["10.0.0.3"]);
        // 10.0.0.2 was just freed; the allocator continues after `last`.
        assert_eq!(
            p.allocate(&used, Some(ip("10.0.0.3"))).unwrap(),
            ip("10.0.0.4")
        );
        // Wraps around after the end of the range, skipping the network address.
        assert_eq!(
            p.allocate(&used, Some(ip("10.0.0.254"))).unwrap(),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn range_restricts_dynamic_but_not_static() {
        let p = Pool::new(
            net("10.0.0.0/24"),
            Some(net("10.0.0.128/25")),
            Some(ip("10.0.0.1")),
            [],
        )
        .unwrap();
        let used = BTreeSet::new();
        assert_eq!(p.allocate(&used, None).unwrap(), ip("10.0.0.128"));
        // `last` outside the range restarts at the range start.
        assert_eq!(
            p.allocate(&used, Some(ip("10.0.0.7"))).unwrap(),
            ip("10.0.0.128")
        );
        assert_eq!(p.free_count(&used), 127); // .128-.254
        assert!(p
            .check_static(ip("10.0.0.7"), used.contains(&ip("10.0.0.7")))
            .is_ok());
    }

    #[test]
    fn check_static_errors() {
        let p = Pool::new(
            net("10.0.0.0/24"),
            None,
            Some(ip("10.0.0.1")),
            [ip("10.0.0.9")],
        )
        .unwrap();
        let used = set(&["10.0.0.5"]);
        let msg = |a: &str| {
            p.check_static(ip(a), used.contains(&ip(a)))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg("10.0.1.5"),
            "address 10.0.1.5 is outside subnet 10.0.0.0/24"
        );
        assert_eq!(
            msg("10.0.0.0"),
            "address 10.0.0.0 cannot be assigned: it is the network address of subnet 10.0.0.0/24"
        );
        assert_eq!(
            msg("10.0.0.255"),
            "address 10.0.0.255 cannot be assigned: it is the broadcast address of subnet 10.0.0.0/24"
        );
        assert_eq!(
            msg("10.0.0.1"),
            "address 10.0.0.1 cannot be assigned: it is the gateway address of subnet 10.0.0.0/24"
        );
        assert_eq!(
            msg("10.0.0.9"),
            "address 10.0.0.9 cannot be assigned: it is the reserved auxiliary address of subnet 10.0.0.0/24"
        );
        assert_eq!(
            msg("10.0.0.5"),
            "address 10.0.0.5 in subnet 10.0.0.0/24 is already in use"
        );
        assert_eq!(
            msg("fd00::5"),
            "address fd00::5 is IPv6 but subnet 10.0.0.0/24 is IPv4"
        );
        assert!(p
            .check_static(ip("10.0.0.6"), used.contains(&ip("10.0.0.6")))
            .is_ok());
    }

    #[test]
    fn ipv6_has_no_broadcast() {
        let p = Pool::new(net("fd00::/126"), None, Some(ip("fd00::1")), []).unwrap();
        let used = BTreeSet::new();
        assert_eq!(p.free_count(&used), 2); // ::2 and ::3
        assert_eq!(
            p.allocate(&used, Some(ip("fd00::2"))).unwrap(),
            ip("fd00::3")
        );
        assert!(p
            .check_static(ip("fd00::3"), used.contains(&ip("fd00::3")))
            .is_ok());
        assert!(matches!(
            p.check_static(ip("fd00::"), used.contains(&ip("fd00::"))),
            Err(IpamError::AddressReserved {
                role: AddressRole::Network,
                ..
            })
        ));
    }

    #[test]
    fn ipv6_slash64_is_cheap() {
        let s = net("fd00:1:2:3::/64");
        let p = Pool::new(s, None, Some(ip("fd00:1:2:3::1")), []).unwrap();
        // 100k used addresses right where allocation starts: cost is bounded by them.
        let used: BTreeSet<IpAddr> = (2u128..100_002)
            .map(|i| from_u128(to_u128(s.network()) + i, true))
            .collect();
        assert_eq!(
            p.allocate(&used, None).unwrap(),
            from_u128(to_u128(s.network()) + 100_002, true)
        );
        assert_eq!(p.free_count(&used), (1u128 << 64) - 2 - 100_000);
        // Wrap from the very last address.
        assert_eq!(
            p.allocate(&used, Some(s.broadcast())).unwrap(),
            from_u128(to_u128(s.network()) + 100_002, true)
        );
    }

    #[test]
    fn ipv6_range_exhaustion_terminates() {
        let s = net("fd00::/64");
        let r = net("fd00::1:0/112");
        let p = Pool::new(s, Some(r), Some(ip("fd00::1")), []).unwrap();
        let used: BTreeSet<IpAddr> = (0u128..65536)
            .map(|i| from_u128(to_u128(r.network()) + i, true))
            .collect();
        assert_eq!(p.free_count(&used), 0);
        assert_eq!(
            p.allocate(&used, Some(ip("fd00::1:1234"))).unwrap_err(),
            IpamError::Exhausted {
                subnet: s,
                range: Some(r)
            }
        );
    }

    #[test]
    fn whole_ipv6_space_counts_saturate_correctly() {
        let p = Pool::new(net("::/0"), None, None, []).unwrap();
        let used = BTreeSet::new();
        // 2^128 addresses minus the network address.
        assert_eq!(p.free_count(&used), u128::MAX);
        assert_eq!(p.allocate(&used, None).unwrap(), ip("::1"));
        assert_eq!(
            p.allocate(&used, Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")))
                .unwrap(),
            ip("::1")
        );
    }

    #[test]
    fn other_family_and_outside_used_entries_are_ignored() {
        let p = Pool::new(net("10.0.0.0/30"), None, None, []).unwrap();
        let used = set(&["10.0.0.1", "fd00::2", "10.0.1.2", "0.0.0.2"]);
        assert_eq!(
            p.allocate(&used, Some(ip("fd00::1"))).unwrap(),
            ip("10.0.0.2")
        );
        assert_eq!(p.free_count(&used), 1);
    }

    // ---------- property tests against a brute-force model ----------

    /// A small pool described by offsets, so the strategy can only build valid input.
    #[derive(Debug, Clone)]
    struct Case {
        pool: Pool,
        used: BTreeSet<IpAddr>,
        last: Option<IpAddr>,
    }

    fn addr(subnet: &IpNet, off: u128) -> IpAddr {
        from_u128(to_u128(subnet.network()) + off, subnet.network().is_ipv6())
    }

    fn case() -> impl Strategy<Value = Case> {
        (any::<bool>(), any::<u128>(), 0u8..=6)
            .prop_flat_map(|(v6, base, host_bits)| {
                let host_bits = host_bits + 2; // /30../24 or /126../120
                let subnet = if v6 {
                    IpNet::new(IpAddr::V6(Ipv6Addr::from(base)), 128 - host_bits)
                } else {
                    IpNet::new(IpAddr::V4(Ipv4Addr::from(base as u32)), 32 - host_bits)
                }
                .unwrap()
                .trunc();
                let size = 1u128 << host_bits;
                (
                    Just(subnet),
                    proptest::option::of((0..=host_bits, 0..size)),
                    proptest::option::of(1..size),
                    proptest::collection::btree_set(0..size, 0..4),
                    proptest::collection::btree_set(0..size, 0..(size as usize)),
                    proptest::option::of(0..size + 4),
                )
            })
            .prop_filter_map(
                "gateway on network/broadcast",
                |(subnet, range, gw, reserved, used, last)| {
                    let max = subnet.max_prefix_len();
                    let host_bits = max - subnet.prefix_len();
                    let range = range.map(|(rb, off)| {
                        IpNet::new(addr(&subnet, off), max - rb.min(host_bits))
                            .unwrap()
                            .trunc()
                    });
                    let gateway = gw.map(|o| addr(&subnet, o));
                    let pool = Pool::new(
                        subnet,
                        range,
                        gateway,
                        reserved.into_iter().map(|o| addr(&subnet, o)),
                    )
                    .ok()?;
                    // `last` may point just past the subnet to exercise the "outside" path.
                    let last = last.map(|o| {
                        from_u128(
                            to_u128(subnet.network()).wrapping_add(o),
                            subnet.network().is_ipv6(),
                        )
                    });
                    Some(Case {
                        used: used.into_iter().map(|o| addr(&subnet, o)).collect(),
                        pool,
                        last,
                    })
                },
            )
    }

    /// Brute force: every address of the range in order, minus everything excluded.
    fn model_free(p: &Pool, used: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
        let (lo, hi) = bounds(&p.allocation_range());
        (lo..=hi)
            .map(|v| from_u128(v, p.is_ipv6()))
            .filter(|a| {
                *a != p.subnet().network()
                    && (p.is_ipv6() || *a != p.subnet().broadcast())
                    && Some(*a) != p.gateway()
                    && !p.reserved().contains(a)
                    && !used.contains(a)
            })
            .collect()
    }

    fn model_allocate(p: &Pool, used: &BTreeSet<IpAddr>, last: Option<IpAddr>) -> Option<IpAddr> {
        let free = model_free(p, used);
        let range = p.allocation_range();
        match last.filter(|l| range.contains(l)) {
            Some(l) => free
                .iter()
                .find(|a| **a > l)
                .or_else(|| free.first())
                .copied(),
            None => free.first().copied(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn allocate_matches_model(c in case()) {
            let got = c.pool.allocate(&c.used, c.last);
            let want = model_allocate(&c.pool, &c.used, c.last);
            match (got, want) {
                (Ok(a), Some(b)) => prop_assert_eq!(a, b),
                (Err(IpamError::Exhausted { .. }), None) => {}
                (got, want) => prop_assert!(false, "got {:?}, model {:?}", got, want),
            }
            prop_assert_eq!(c.pool.free_count(&c.used), model_free(&c.pool, &c.used).len() as u128);
        }

        #[test]
        fn first_free_candidate_is_what_allocate_returns(c in case()) {
            // Probing candidates one by one (the store's fast path) must pick exactly the
            // address the full-set allocator picks, and never a special address.
            let probed = c.pool.candidates(c.last).find(|a| !c.used.contains(a));
            prop_assert_eq!(probed, c.pool.allocate(&c.used, c.last).ok());
            for a in c.pool.candidates(c.last).take(300) {
                prop_assert!(c.pool.allocation_range().contains(&a));
                prop_assert_eq!(c.pool.check_static(a, false), Ok(()));
            }
        }

        #[test]
        fn allocated_address_is_valid(c in case()) {
            if let Ok(a) = c.pool.allocate(&c.used, c.last) {
                let p = &c.pool;
                prop_assert!(p.allocation_range().contains(&a));
                prop_assert!(!c.used.contains(&a));
                prop_assert!(!p.reserved().contains(&a));
                prop_assert_ne!(Some(a), p.gateway());
                prop_assert_ne!(a, p.subnet().network());
                if !p.is_ipv6() {
                    prop_assert_ne!(a, p.subnet().broadcast());
                }
                // Whatever allocate hands out, a static request for it would also pass.
                prop_assert_eq!(p.check_static(a, c.used.contains(&a)), Ok(()));
            }
        }

        #[test]
        fn check_static_matches_model(c in case(), off in 0u128..300) {
            let p = &c.pool;
            let a = from_u128(to_u128(p.subnet().network()).wrapping_add(off), p.is_ipv6());
            let ok = p.check_static(a, c.used.contains(&a)).is_ok();
            let want = p.subnet().contains(&a)
                && a != p.subnet().network()
                && (p.is_ipv6() || a != p.subnet().broadcast())
                && Some(a) != p.gateway()
                && !p.reserved().contains(&a)
                && !c.used.contains(&a);
            prop_assert_eq!(ok, want);
        }

        #[test]
        fn repeated_allocation_is_distinct_until_exhausted(c in case()) {
            let mut used = c.used.clone();
            let mut last = c.last;
            let free = c.pool.free_count(&used);
            let mut handed = BTreeSet::new();
            loop {
                match c.pool.allocate(&used, last) {
                    Ok(a) => {
                        prop_assert!(handed.insert(a), "{} handed out twice", a);
                        used.insert(a);
                        last = Some(a);
                    }
                    Err(e) => {
                        prop_assert!(matches!(e, IpamError::Exhausted { .. }), "unexpected error {}", e);
                        break;
                    }
                }
            }
            prop_assert_eq!(handed.len() as u128, free);
            prop_assert_eq!(c.pool.free_count(&used), 0);
        }

        #[test]
        fn freed_address_waits_for_a_full_cycle(c in case(), k in 1usize..64, pick in any::<prop::sample::Index>()) {
            let mut used = c.used.clone();
            let free = c.pool.free_count(&used) as usize;
            prop_assume!(free >= 2);
            let k = k.min(free - 1).max(1);
            let mut last = c.last;
            let mut handed = vec![];
            for _ in 0..k {
                let a = c.pool.allocate(&used, last).unwrap();
                used.insert(a);
                handed.push(a);
                last = Some(a);
            }
            let freed = handed[pick.index(handed.len())];
            used.remove(&freed);
            // Every other free address comes out before the freed one does.
            for _ in 0..(free - k) {
                let a = c.pool.allocate(&used, last).unwrap();
                prop_assert_ne!(a, freed);
                used.insert(a);
                last = Some(a);
            }
            prop_assert_eq!(c.pool.allocate(&used, last), Ok(freed));
        }
    }
}

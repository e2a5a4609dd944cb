//! Automatic subnet choice for networks created without an explicit subnet.
//!
//! A [`SubnetPool`] is a base network carved into equal-sized subnets (Docker's
//! `default-address-pools`, Podman's `default_subnet_pools`). [`pick_subnet`] returns the first
//! carved subnet that overlaps nothing the caller says is taken: other networks' subnets and the
//! host's routes, so a container network never shadows a LAN or VPN the host can reach.
//! The search jumps over taken blocks instead of stepping through candidates, so carving /64s
//! out of an IPv6 /8 costs O(taken²), not O(candidates).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{bounds, from_u128, IpamError};

/// A base network carved into subnets of one prefix length ("10.88.0.0/13:16").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubnetPool {
    /// The network subnets are carved from (host bits should be zero).
    pub base: IpNet,
    /// Prefix length of each carved subnet, between `base.prefix_len()` and the family maximum.
    pub prefix: u8,
}

impl SubnetPool {
    /// Validated constructor: `base` without host bits, `prefix` no shorter than the base's.
    pub fn new(base: IpNet, prefix: u8) -> Result<SubnetPool, IpamError> {
        let invalid = |reason: String| IpamError::InvalidSubnetPool {
            input: format!("{base}:{prefix}"),
            reason,
        };
        if base != base.trunc() {
            return Err(IpamError::HostBitsSet {
                what: "subnet pool base",
                given: base,
                network: base.trunc(),
            });
        }
        if prefix < base.prefix_len() || prefix > base.max_prefix_len() {
            return Err(invalid(format!(
                "prefix /{prefix} must be between /{} and /{}",
                base.prefix_len(),
                base.max_prefix_len()
            )));
        }
        Ok(SubnetPool { base, prefix })
    }

    /// Whether the fields make sense (they are public, so this is rechecked where it matters).
    fn is_valid(&self) -> bool {
        (self.base.prefix_len()..=self.base.max_prefix_len()).contains(&self.prefix)
    }
}

impl fmt::Display for SubnetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == self.base.prefix_len() {
            write!(f, "{}", self.base)
        } else {
            write!(f, "{}:{}", self.base, self.prefix)
        }
    }
}

impl FromStr for SubnetPool {
    type Err = IpamError;

    /// Parses "BASE/LEN:PREFIX" (carve /PREFIX subnets out of BASE/LEN) or "BASE/LEN" (one subnet).
    fn from_str(s: &str) -> Result<SubnetPool, IpamError> {
        let invalid = |reason: String| IpamError::InvalidSubnetPool {
            input: s.to_owned(),
            reason,
        };
        let s_trim = s.trim();
        // IPv6 bases contain ':' too, so the separator is looked for after the '/' only.
        let slash = s_trim
            .find('/')
            .ok_or_else(|| invalid("missing /LEN after the base address".into()))?;
        let (base, prefix) = match s_trim[slash..].find(':') {
            Some(i) => (&s_trim[..slash + i], Some(&s_trim[slash + i + 1..])),
            None => (s_trim, None),
        };
        let base: IpNet = base
            .parse()
            .map_err(|e| invalid(format!("base {base:?}: {e}")))?;
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|e| invalid(format!("prefix {p:?}: {e}")))?,
            None => base.prefix_len(),
        };
        SubnetPool::new(base, prefix).map_err(|e| match e {
            IpamError::InvalidSubnetPool { reason, .. } => invalid(reason),
            other => other,
        })
    }
}

impl Serialize for SubnetPool {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SubnetPool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SubnetPool, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The pools Docker and Podman use by default: 10.88.0.0/13 as /16s (10.88–10.95), then
/// 172.17.0.0/16 through 172.31.0.0/16, then 192.168.0.0/16 as /20s.
pub fn default_pools() -> Vec<SubnetPool> {
    let v4 = |a, b, c, d, len, prefix| SubnetPool {
        base: IpNet::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len).expect("valid prefix"),
        prefix,
    };
    let mut pools = vec![v4(10, 88, 0, 0, 13, 16)];
    pools.extend((17..=31).map(|b| v4(172, b, 0, 0, 16, 16)));
    pools.push(v4(192, 168, 0, 0, 16, 20));
    pools
}

/// Whether two networks share at least one address (networks of different families never do).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    if a.network().is_ipv6() != b.network().is_ipv6() {
        return false;
    }
    let (a_lo, a_hi) = bounds(a);
    let (b_lo, b_hi) = bounds(b);
    a_lo <= b_hi && b_lo <= a_hi
}

/// The first subnet carved from `pools`, in order, that overlaps none of `taken`.
///
/// `taken` should hold every existing network's subnet and the host's routes; callers must
/// leave out the default route (0.0.0.0/0, ::/0), which overlaps everything. Pools with an
/// impossible prefix are skipped. Returns `None` when every candidate is taken.
pub fn pick_subnet(pools: &[SubnetPool], taken: &[IpNet]) -> Option<IpNet> {
    pools.iter().find_map(|pool| pick_from(pool, taken))
}

fn pick_from(pool: &SubnetPool, taken: &[IpNet]) -> Option<IpNet> {
    if !pool.is_valid() {
        return None;
    }
    let v6 = pool.base.network().is_ipv6();
    let host_bits = u32::from(pool.base.max_prefix_len() - pool.prefix);
    // Block size minus one; a /0 carved into /0 spans the whole u128.
    let mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let (lo, hi) = bounds(&pool.base.trunc());
    let mut cur = lo;
    loop {
        let cand_end = cur + mask;
        let blocker_end = taken
            .iter()
            .filter(|t| t.network().is_ipv6() == v6)
            .map(bounds)
            .filter(|&(t_lo, t_hi)| t_lo <= cand_end && cur <= t_hi)
            .map(|(_, t_hi)| t_hi)
            .max();
        let Some(end) = blocker_end else {
            return IpNet::new(from_u128(cur, v6), pool.prefix).ok();
        };
        // Jump to the first aligned candidate past the blocker; that blocker is then behind us,
        // so each taken network causes at most one jump.
        let next = end.checked_add(1)?;
        cur = match next & mask {
            0 => next,
            r => (next - r).checked_add(mask)?.checked_add(1)?,
        };
        if cur > hi {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| net(s)).collect()
    }

    #[test]
    fn parses_and_displays() {
        let p: SubnetPool = "10.88.0.0/13:16".parse().unwrap();
        assert_eq!(p.base, net("10.88.0.0/13"));
        assert_eq!(p.prefix, 16);
        assert_eq!(p.to_string(), "10.88.0.0/13:16");
        let p: SubnetPool = "10.88.0.0/16".parse().unwrap();
        assert_eq!(p.prefix, 16);
        assert_eq!(p.to_string(), "10.88.0.0/16");
        let p: SubnetPool = "fd00::/8:64".parse().unwrap();
        assert_eq!((p.base, p.prefix), (net("fd00::/8"), 64));
        assert_eq!(p.to_string(), "fd00::/8:64");
    }

    #[test]
    fn parse_errors_are_clear() {
        let msg = |s: &str| s.parse::<SubnetPool>().unwrap_err().to_string();
        assert_eq!(
            msg("10.88.0.0/16:8"),
            "invalid subnet pool \"10.88.0.0/16:8\" (expected BASE/LEN or BASE/LEN:PREFIX, e.g. 10.88.0.0/13:16): prefix /8 must be between /16 and /32"
        );
        assert!(msg("10.88.0.0").contains("missing /LEN"));
        assert!(msg("10.88.0.0/13:x").contains("prefix \"x\""));
        assert!(msg("10.888.0.0/13:16").contains("base \"10.888.0.0/13\""));
        assert_eq!(
            msg("10.88.0.1/13:16"),
            "subnet pool base 10.88.0.1/13 has host bits set: write it as 10.88.0.0/13"
        );
    }

    #[test]
    fn serde_as_string() {
        let p: SubnetPool = serde_json::from_str("\"172.17.0.0/16\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"172.17.0.0/16\"");
        assert!(serde_json::from_str::<SubnetPool>("\"nonsense\"").is_err());
    }

    #[test]
    fn default_pools_order() {
        let pools = default_pools();
        assert_eq!(pools.len(), 17);
        assert_eq!(pools[0].to_string(), "10.88.0.0/13:16");
        assert_eq!(pools[1].to_string(), "172.17.0.0/16");
        assert_eq!(pools[15].to_string(), "172.31.0.0/16");
        assert_eq!(pools[16].to_string(), "192.168.0.0/16:20");
        for p in &pools {
            assert_eq!(SubnetPool::new(p.base, p.prefix).as_ref(), Ok(p));
        }
    }

    #[test]
    fn picks_from_default_pools() {
        let pools = default_pools();
        let pick = |taken: &[&str]| pick_subnet(&pools, &nets(taken));
        assert_eq!(pick(&[]), Some(net("10.88.0.0/16")));
        assert_eq!(pick(&["10.88.0.0/16"]), Some(net("10.89.0.0/16")));
        // A host route inside a candidate blocks it.
        assert_eq!(
            pick(&["10.88.0.0/16", "10.89.3.0/24"]),
            Some(net("10.90.0.0/16"))
        );
        assert_eq!(pick(&["10.0.0.0/8"]), Some(net("172.17.0.0/16")));
        assert_eq!(
            pick(&["10.0.0.0/8", "172.16.0.0/12", "192.168.1.0/24"]),
            Some(net("192.168.16.0/20"))
        );
        assert_eq!(
            pick(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]),
            None
        );
        // IPv6 routes do not block IPv4 pools.
        assert_eq!(pick(&["::/0"]), Some(net("10.88.0.0/16")));
    }

    #[test]
    fn ipv6_pool_jumps_over_large_blocks() {
        let pools = vec!["fd00::/8:64".parse().unwrap()];
        // Skipping 2^56 /64s must not iterate through them.
        let taken = nets(&["fd00::/9", "fd80::/10", "fdc0::/11", "fde0::1/128"]);
        assert_eq!(pick_subnet(&pools, &taken), Some(net("fde0:0:0:1::/64")));
        assert_eq!(pick_subnet(&pools, &nets(&["fc00::/7"])), None);
    }

    #[test]
    fn whole_space_pool() {
        let pools = vec![SubnetPool::new(net("::/0"), 0).unwrap()];
        assert_eq!(pick_subnet(&pools, &[]), Some(net("::/0")));
        assert_eq!(pick_subnet(&pools, &nets(&["ffff::/16"])), None);
        let pools = vec![SubnetPool::new(net("::/0"), 1).unwrap()];
        assert_eq!(
            pick_subnet(&pools, &nets(&["::1/128"])),
            Some(net("8000::/1"))
        );
    }

    #[test]
    fn overlap_cases() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.2.0/24")));
        assert!(overlaps(&net("10.1.2.0/24"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.0.0.0/24"), &net("10.0.1.0/24")));
        assert!(!overlaps(&net("0.0.0.0/0"), &net("::/0")));
        assert!(overlaps(&net("10.0.0.5/24"), &net("10.0.0.0/30")));
    }

    fn small_pool() -> impl Strategy<Value = SubnetPool> {
        (any::<u32>(), 20u8..=28, 0u8..=4).prop_map(|(a, len, extra)| {
            let base = IpNet::new(IpAddr::V4(Ipv4Addr::from(a & 0x0a0f_ffff)), len)
                .unwrap()
                .trunc();
            SubnetPool {
                base,
                prefix: len + extra,
            }
        })
    }

    fn taken_net() -> impl Strategy<Value = IpNet> {
        // Concentrated in the same area as the pools so that overlaps are common.
        (any::<u32>(), 16u8..=32).prop_map(|(a, len)| {
            IpNet::new(IpAddr::V4(Ipv4Addr::from(a & 0x0a0f_ffff)), len).unwrap()
        })
    }

    /// Brute force: every carved candidate, in order.
    fn model(pools: &[SubnetPool], taken: &[IpNet]) -> Option<IpNet> {
        pools.iter().find_map(|p| {
            let (lo, hi) = bounds(&p.base);
            let step = 1u128 << (32 - p.prefix);
            (lo..=hi)
                .step_by(step as usize)
                .map(|v| IpNet::new(from_u128(v, false), p.prefix).unwrap())
                .find(|c| !taken.iter().any(|t| overlaps(c, t)))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn pick_matches_model_and_never_overlaps(
            pools in proptest::collection::vec(small_pool(), 1..4),
            taken in proptest::collection::vec(taken_net(), 0..12),
        ) {
            let got = pick_subnet(&pools, &taken);
            if let Some(s) = got {
                prop_assert!(taken.iter().all(|t| !overlaps(&s, t)), "{} overlaps {:?}", s, taken);
                prop_assert!(pools.iter().any(|p| p.base.contains(&s) && s.prefix_len() == p.prefix));
            }
            prop_assert_eq!(got, model(&pools, &taken));
        }

        #[test]
        fn overlaps_matches_address_check(a in taken_net(), b in taken_net()) {
            let want = a.contains(&b.network()) || b.contains(&a.network());
            prop_assert_eq!(overlaps(&a, &b), want);
        }

        #[test]
        fn display_parse_round_trip(p in small_pool()) {
            prop_assert_eq!(p.to_string().parse::<SubnetPool>(), Ok(p));
        }
    }
}

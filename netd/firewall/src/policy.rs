//! Pure policy: turns the declarative state ([`NetworkSpec`], [`EndpointSpec`]) into rule
//! specs and batch operations. Nothing here touches the kernel; [`crate::render`] turns an
//! [`Op`] list into netlink messages and [`crate::apply`] sends them as one atomic batch.
//!
//! Layout (documented with examples in `docs/firewall.md`):
//! * table `inet netd`: NAT (published ports through concatenated maps, masquerade/SNAT,
//!   hairpin, localhost), isolation between networks (`forward` dispatches through verdict
//!   maps keyed by bridge name into per-network chains) and DNS/host access (`input`).
//! * table `bridge netd`: layer-2 concerns the inet family cannot see because bridged frames
//!   never reach it: anti-spoofing per host veth (source MAC, IP, ARP sender) and `icc=false`.
//!
//! Rules are O(networks); endpoints only ever add or remove set/map elements.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::spec::{EndpointSpec, NetworkSpec};
use crate::FirewallError;

/// Address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableFamily {
    /// `inet`: IPv4 and IPv6 layer 3.
    Inet,
    /// `bridge`: frames crossing a Linux bridge.
    Bridge,
}

/// IP version of a match or NAT statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// Family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// Type of one component of a set key or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Interface name (16 bytes, NUL padded).
    Ifname,
    /// IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// Ethernet address.
    Ether,
    /// IP protocol number (`meta l4proto`).
    InetProto,
    /// Transport port, big endian.
    InetService,
}

impl KeyType {
    /// Length in bytes of a value of this type.
    pub fn byte_len(self) -> u32 {
        match self {
            KeyType::Ifname | KeyType::Ipv6 => 16,
            KeyType::Ipv4 => 4,
            KeyType::Ether => 6,
            KeyType::InetProto => 1,
            KeyType::InetService => 2,
        }
    }

    /// nftables userspace datatype id (only used by `nft list` to print elements).
    pub fn nft_type(self) -> u32 {
        match self {
            KeyType::Ifname => 41,
            KeyType::Ipv4 => 7,
            KeyType::Ipv6 => 8,
            KeyType::Ether => 9,
            KeyType::InetProto => 12,
            KeyType::InetService => 13,
        }
    }
}

/// What a set maps its keys to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetData {
    /// Plain set.
    None,
    /// Verdict map (`vmap`).
    Verdict,
    /// Data map with a (concatenated) value.
    Value(Vec<KeyType>),
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// Set name.
    pub name: &'static str,
    /// Key type (several components = concatenation).
    pub key: Vec<KeyType>,
    /// Map data.
    pub data: SetData,
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// prerouting
    Prerouting,
    /// input
    Input,
    /// forward
    Forward,
    /// output
    Output,
    /// postrouting
    Postrouting,
}

/// Base chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// `type filter`
    Filter,
    /// `type nat`
    Nat,
}

/// Hook registration of a base chain (policy is always accept: netd decides only about its
/// own traffic and never drops what it does not own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// Hook.
    pub hook: Hook,
    /// Chain type.
    pub kind: ChainKind,
    /// Priority.
    pub priority: i32,
}

/// A chain with its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// Chain name.
    pub name: String,
    /// Hook registration for base chains.
    pub base: Option<BaseChain>,
    /// Rules in order.
    pub rules: Vec<RuleSpec>,
}

/// A packet field loaded into a register (for matches and set lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `meta iifname`
    IifName,
    /// `meta oifname`
    OifName,
    /// `meta l4proto`
    L4Proto,
    /// `ip saddr`
    Ip4Saddr,
    /// `ip daddr`
    Ip4Daddr,
    /// `ip6 saddr`
    Ip6Saddr,
    /// `ip6 daddr`
    Ip6Daddr,
    /// `ether saddr`
    EtherSaddr,
    /// `arp saddr ether` (sender hardware address)
    ArpSha,
    /// `arp saddr ip` (sender protocol address)
    ArpSpa,
    /// `th dport`
    ThDport,
}

impl Field {
    /// Number of bytes loaded.
    pub fn byte_len(self) -> u32 {
        match self {
            Field::IifName | Field::OifName => 16,
            Field::L4Proto => 1,
            Field::Ip4Saddr | Field::Ip4Daddr | Field::ArpSpa => 4,
            Field::Ip6Saddr | Field::Ip6Daddr => 16,
            Field::EtherSaddr | Field::ArpSha => 6,
            Field::ThDport => 2,
        }
    }
}

/// One condition of a rule. Payload matches on IP headers must be preceded by a family
/// guard ([`Match::NfProto`] in inet, [`Match::EtherType`] in bridge), as `nft` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `meta nfproto ipv4|ipv6`
    NfProto(IpFamily),
    /// `ether type <v>`
    EtherType(u16),
    /// `iifname [!=] <name>`
    IifName(String, bool),
    /// `oifname [!=] <name>`
    OifName(String, bool),
    /// `meta l4proto <n>`
    L4Proto(u8),
    /// `th dport <port>`
    ThDport(u16),
    /// `icmpv6 type <t>` (after `meta l4proto ipv6-icmp`)
    Icmp6Type(u8),
    /// `ip[6] saddr <prefix>`
    Saddr(IpNet),
    /// `ip[6] daddr <addr>`
    Daddr(IpAddr),
    /// `ct state & <mask> != 0`
    CtState(u32),
    /// `ct status dnat`
    CtStatusDnat,
    /// `fib daddr type local`
    FibDaddrLocal,
    /// `<fields concatenated> [!=] @set`
    InSet {
        /// Key fields.
        key: Vec<Field>,
        /// Set name.
        set: &'static str,
        /// Negate (`!= @set`).
        negate: bool,
    },
}

/// What a rule does when all matches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// accept
    Accept,
    /// drop
    Drop,
    /// jump to a chain
    Jump(String),
    /// `<key> vmap @set`
    Vmap {
        /// Key fields.
        key: Vec<Field>,
        /// Verdict map name.
        set: &'static str,
    },
    /// masquerade
    Masquerade,
    /// `snat to <addr>`
    Snat(IpAddr),
    /// `dnat ip[6] to <key> map @set` (map value: address . port)
    DnatMap {
        /// Family of the NAT.
        family: IpFamily,
        /// Key fields.
        key: Vec<Field>,
        /// Map name.
        set: &'static str,
    },
}

/// A rule: all matches, then the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Conditions.
    pub matches: Vec<Match>,
    /// Statement.
    pub action: Action,
}

fn rule(matches: Vec<Match>, action: Action) -> RuleSpec {
    RuleSpec { matches, action }
}

/// One component of an element key or value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// Interface name.
    Ifname(String),
    /// IPv4 address.
    Ipv4(Ipv4Addr),
    /// IPv6 address.
    Ipv6(Ipv6Addr),
    /// Ethernet address.
    Ether([u8; 6]),
    /// IP protocol number.
    Proto(u8),
    /// Transport port.
    Port(u16),
}

impl From<IpAddr> for Value {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(ip) => Value::Ipv4(ip),
            IpAddr::V6(ip) => Value::Ipv6(ip),
        }
    }
}

/// Value of a map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElemData {
    /// Set element without value.
    None,
    /// `jump <chain>`
    Jump(String),
    /// Data value.
    Value(Vec<Value>),
}

/// One set/map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    /// Key components.
    pub key: Vec<Value>,
    /// Value.
    pub data: ElemData,
}

/// A table identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableId {
    /// Family.
    pub family: TableFamily,
    /// Name.
    pub name: String,
}

/// One step of a batch. A batch is a `Vec<Op>` the kernel applies atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the table (no error if it exists).
    AddTable(TableId),
    /// Delete the table and everything in it.
    DelTable(TableId),
    /// Create a set or map.
    AddSet(TableId, SetSpec),
    /// Create a chain (rules come as separate [`Op::AddRule`]s).
    AddChain(TableId, ChainSpec),
    /// Delete every rule of a chain.
    FlushChain(TableId, String),
    /// Delete an (empty, unreferenced) chain.
    DelChain(TableId, String),
    /// Append a rule to a chain.
    AddRule(TableId, String, RuleSpec),
    /// Add elements (fails if one exists).
    AddElements(TableId, &'static str, Vec<Element>),
    /// Delete elements (fails if one is missing).
    DelElements(TableId, &'static str, Vec<Element>),
}

impl Op {
    /// Short description for error messages ("adding elements to inet netd map pub4_any").
    pub fn describe(&self) -> String {
        fn t(id: &TableId) -> String {
            let fam = match id.family {
                TableFamily::Inet => "inet",
                TableFamily::Bridge => "bridge",
            };
            format!("{fam} {}", id.name)
        }
        match self {
            Op::AddTable(id) => format!("creating table {}", t(id)),
            Op::DelTable(id) => format!("deleting table {}", t(id)),
            Op::AddSet(id, s) => format!("creating set {} in table {}", s.name, t(id)),
            Op::AddChain(id, c) => format!("creating chain {} in table {}", c.name, t(id)),
            Op::FlushChain(id, c) => format!("flushing chain {c} in table {}", t(id)),
            Op::DelChain(id, c) => format!("deleting chain {c} in table {}", t(id)),
            Op::AddRule(id, c, _) => format!("adding a rule to chain {c} in table {}", t(id)),
            Op::AddElements(id, s, e) => {
                format!(
                    "adding {} element(s) to set {s} in table {}",
                    e.len(),
                    t(id)
                )
            }
            Op::DelElements(id, s, e) => {
                format!(
                    "deleting {} element(s) from set {s} in table {}",
                    e.len(),
                    t(id)
                )
            }
        }
    }
}

// ---- names -------------------------------------------------------------------------------

/// Map: `meta l4proto . th dport : ipv4_addr . inet_service` (wildcard host address).
pub const PUB4_ANY: &str = "pub4_any";
/// Map: `ip daddr . meta l4proto . th dport : ipv4_addr . inet_service`.
pub const PUB4_IP: &str = "pub4_ip";
/// Map: `meta l4proto . th dport : ipv6_addr . inet_service`.
pub const PUB6_ANY: &str = "pub6_any";
/// Map: `ip6 daddr . meta l4proto . th dport : ipv6_addr . inet_service`.
pub const PUB6_IP: &str = "pub6_ip";
/// Verdict map: bridge -> `jump nw-<net>-from` (traffic forwarded from the network).
pub const FROM_NET: &str = "from_net";
/// Verdict map: bridge -> `jump nw-<net>-to` (traffic forwarded into the network).
pub const TO_NET: &str = "to_net";
/// Verdict map: bridge -> `jump nw-<net>-in` (traffic from the network to the host).
pub const IN_NET: &str = "in_net";
/// Bridge table set: host veths whose frames are checked against the allow sets.
pub const VETHS: &str = "veths";
/// Bridge table set: `iifname . ether saddr` of each endpoint's own MAC.
pub const ALLOW_MAC: &str = "allow_mac";
/// Bridge table set: every endpoint's MAC; one of them from any other port is a spoof.
pub const ALL_MACS: &str = "all_macs";
/// Bridge table set: `iifname . ip saddr` allowed (also ARP sender address).
pub const ALLOW4: &str = "allow4";
/// Bridge table set: `iifname . ether saddr . ip saddr` of each endpoint's own MAC and IPv4
/// addresses: the common frame, accepted after one lookup.
pub const OWN4: &str = "own4";
/// Bridge table set: `iifname . ip6 saddr` allowed.
pub const ALLOW6: &str = "allow6";
/// Bridge table set: host veths of endpoints on `icc=false` networks (keyed by port rather
/// than by bridge so it needs no `meta ibrname`, which kernels without
/// `CONFIG_NFT_BRIDGE_META` lack).
pub const NO_ICC: &str = "no_icc";

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
/// ICMPv6 router advertisement.
const ND_ROUTER_ADVERT: u8 = 134;
/// ICMPv6 redirect.
const ND_REDIRECT: u8 = 137;
const CT_INVALID: u32 = 1;
const CT_ESTABLISHED: u32 = 2;
const CT_RELATED: u32 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// The two table ids for a table name.
pub fn table_ids(name: &str) -> (TableId, TableId) {
    (
        TableId {
            family: TableFamily::Inet,
            name: name.to_string(),
        },
        TableId {
            family: TableFamily::Bridge,
            name: name.to_string(),
        },
    )
}

/// Chain names of a network: (from, to, in).
pub fn network_chains(net: &str) -> [String; 3] {
    [
        format!("nw-{net}-from"),
        format!("nw-{net}-to"),
        format!("nw-{net}-in"),
    ]
}

// ---- static skeleton ---------------------------------------------------------------------

fn inet_sets() -> Vec<SetSpec> {
    use KeyType::*;
    let map = |name, key: Vec<KeyType>, data| SetSpec {
        name,
        key,
        data: SetData::Value(data),
    };
    let vmap = |name| SetSpec {
        name,
        key: vec![Ifname],
        data: SetData::Verdict,
    };
    vec![
        map(
            PUB4_ANY,
            vec![InetProto, InetService],
            vec![Ipv4, InetService],
        ),
        map(
            PUB4_IP,
            vec![Ipv4, InetProto, InetService],
            vec![Ipv4, InetService],
        ),
        map(
            PUB6_ANY,
            vec![InetProto, InetService],
            vec![Ipv6, InetService],
        ),
        map(
            PUB6_IP,
            vec![Ipv6, InetProto, InetService],
            vec![Ipv6, InetService],
        ),
        vmap(FROM_NET),
        vmap(TO_NET),
        vmap(IN_NET),
    ]
}

fn bridge_sets() -> Vec<SetSpec> {
    use KeyType::*;
    let set = |name, key| SetSpec {
        name,
        key,
        data: SetData::None,
    };
    vec![
        set(VETHS, vec![Ifname]),
        set(ALLOW_MAC, vec![Ifname, Ether]),
        set(ALL_MACS, vec![Ether]),
        set(ALLOW4, vec![Ifname, Ipv4]),
        set(OWN4, vec![Ifname, Ether, Ipv4]),
        set(ALLOW6, vec![Ifname, Ipv6]),
        set(NO_ICC, vec![Ifname]),
    ]
}

fn base(name: &str, hook: Hook, kind: ChainKind, priority: i32, rules: Vec<RuleSpec>) -> ChainSpec {
    ChainSpec {
        name: name.into(),
        base: Some(BaseChain {
            hook,
            kind,
            priority,
        }),
        rules,
    }
}

fn regular(name: String, rules: Vec<RuleSpec>) -> ChainSpec {
    ChainSpec {
        name,
        base: None,
        rules,
    }
}

/// Static chains of the inet table (everything but `postrouting` rules and per-network chains).
fn inet_static_chains() -> Vec<ChainSpec> {
    use Field::*;
    let to_published = || {
        vec![rule(
            vec![Match::FibDaddrLocal],
            Action::Jump("published".into()),
        )]
    };
    let dnat = |family, daddr: Option<Field>, set| {
        let mut key: Vec<Field> = daddr.into_iter().collect();
        key.extend([L4Proto, ThDport]);
        rule(
            vec![Match::NfProto(family)],
            Action::DnatMap { family, key, set },
        )
    };
    vec![
        // DNAT for published ports, for traffic arriving from outside or from containers
        // (hairpin) and for traffic the host itself sends (incl. 127.0.0.1:hostPort).
        base(
            "prerouting",
            Hook::Prerouting,
            ChainKind::Nat,
            -100,
            to_published(),
        ),
        base("output", Hook::Output, ChainKind::Nat, -100, to_published()),
        regular(
            "published".into(),
            vec![
                // a specific host address wins over the wildcard
                dnat(IpFamily::V4, Some(Ip4Daddr), PUB4_IP),
                dnat(IpFamily::V4, None, PUB4_ANY),
                dnat(IpFamily::V6, Some(Ip6Daddr), PUB6_IP),
                dnat(IpFamily::V6, None, PUB6_ANY),
            ],
        ),
        base(
            "forward",
            Hook::Forward,
            ChainKind::Filter,
            0,
            vec![
                rule(
                    vec![],
                    Action::Vmap {
                        key: vec![IifName],
                        set: FROM_NET,
                    },
                ),
                rule(
                    vec![],
                    Action::Vmap {
                        key: vec![OifName],
                        set: TO_NET,
                    },
                ),
            ],
        ),
        base(
            "input",
            Hook::Input,
            ChainKind::Filter,
            0,
            vec![rule(
                vec![],
                Action::Vmap {
                    key: vec![IifName],
                    set: IN_NET,
                },
            )],
        ),
    ]
}

/// Chains of the bridge table (all static: endpoints only add set elements).
fn bridge_chains() -> Vec<ChainSpec> {
    use Field::*;
    let in_set = |key: Vec<Field>, set, negate| Match::InSet { key, set, negate };
    vec![
        // Before anything else sees the frame (conntrack in br_netfilter runs at -200).
        base(
            "prerouting",
            Hook::Prerouting,
            ChainKind::Filter,
            -300,
            vec![rule(
                vec![in_set(vec![IifName], VETHS, false)],
                Action::Jump("guard".into()),
            )],
        ),
        regular(
            "guard".into(),
            vec![
                // The common frame first: IPv4 from the port's endpoint, its own MAC and
                // address (whatever the rules below would do with it, they accept it), in one
                // lookup instead of four.
                rule(
                    vec![
                        Match::EtherType(ETH_P_IP),
                        in_set(vec![IifName, EtherSaddr, Ip4Saddr], OWN4, false),
                    ],
                    Action::Accept,
                ),
                // Another endpoint's MAC from this port is a spoof. A MAC no endpoint owns is
                // allowed: a chained `tuning` plugin may change the container's MAC after ADD.
                rule(
                    vec![
                        in_set(vec![EtherSaddr], ALL_MACS, false),
                        in_set(vec![IifName, EtherSaddr], ALLOW_MAC, true),
                    ],
                    Action::Drop,
                ),
                rule(
                    vec![
                        Match::EtherType(ETH_P_ARP),
                        in_set(vec![IifName, ArpSpa], ALLOW4, false),
                    ],
                    Action::Accept,
                ),
                rule(vec![Match::EtherType(ETH_P_ARP)], Action::Drop),
                rule(
                    vec![
                        Match::EtherType(ETH_P_IP),
                        in_set(vec![IifName, Ip4Saddr], ALLOW4, false),
                    ],
                    Action::Accept,
                ),
                // RA guard: a container is never a router on netd's networks. Its router
                // advertisements or redirects would give its neighbours a default route through
                // it (and addresses on IPv4-only networks, whose container ends keep IPv6 on
                // without any address).
                rule(
                    vec![
                        Match::EtherType(ETH_P_IPV6),
                        Match::L4Proto(IPPROTO_ICMPV6),
                        Match::Icmp6Type(ND_ROUTER_ADVERT),
                    ],
                    Action::Drop,
                ),
                rule(
                    vec![
                        Match::EtherType(ETH_P_IPV6),
                        Match::L4Proto(IPPROTO_ICMPV6),
                        Match::Icmp6Type(ND_REDIRECT),
                    ],
                    Action::Drop,
                ),
                rule(
                    vec![
                        Match::EtherType(ETH_P_IPV6),
                        in_set(vec![IifName, Ip6Saddr], ALLOW6, false),
                    ],
                    Action::Accept,
                ),
                // link-local (neighbour discovery) and the unspecified address (DAD) with the
                // endpoint's own MAC, checked above
                rule(
                    vec![
                        Match::EtherType(ETH_P_IPV6),
                        Match::Saddr("fe80::/10".parse().expect("valid prefix")),
                    ],
                    Action::Accept,
                ),
                rule(
                    vec![
                        Match::EtherType(ETH_P_IPV6),
                        Match::Saddr("::/128".parse().expect("valid prefix")),
                    ],
                    Action::Accept,
                ),
                // anything else (other IPs, VLAN tags, other ethertypes) is refused
                rule(vec![], Action::Drop),
            ],
        ),
        base(
            "forward",
            Hook::Forward,
            ChainKind::Filter,
            -200,
            // icc=false: frames from such a port are never bridged to another port (traffic to
            // the gateway is not forwarded but delivered locally, so it still passes)
            vec![rule(
                vec![in_set(vec![IifName], NO_ICC, false)],
                Action::Drop,
            )],
        ),
    ]
}

// ---- per network -------------------------------------------------------------------------

fn family_of_net(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// Postrouting rules for all networks (re-rendered on every network change: O(networks)).
pub fn postrouting_rules(nets: &[NetworkSpec]) -> Vec<RuleSpec> {
    let mut rules = Vec::new();
    for net in nets.iter().filter(|n| !n.internal) {
        for subnet in &net.subnets {
            let fam = family_of_net(subnet);
            let src = || vec![Match::NfProto(fam), Match::Saddr(*subnet)];
            // Hairpin: a container reached its own or a sibling's published port through a
            // host address; without SNAT the reply would bypass the host and be dropped.
            let mut hairpin = src();
            hairpin.extend([
                Match::OifName(net.bridge.clone(), false),
                Match::CtStatusDnat,
            ]);
            rules.push(rule(hairpin, Action::Masquerade));
            let action = match net.snat {
                Some(ip) if IpFamily::of(&ip) == fam => Some(Action::Snat(ip)),
                _ if net.masquerade => Some(Action::Masquerade),
                _ => None,
            };
            if let Some(action) = action {
                // Never NAT container-to-container traffic on the same bridge.
                let mut egress = src();
                egress.push(Match::OifName(net.bridge.clone(), true));
                rules.push(rule(egress, action));
            }
        }
        if net.subnets.iter().any(|s| matches!(s, IpNet::V4(_))) {
            // 127.0.0.1:hostPort from the host, DNATed into this bridge: the container
            // cannot answer 127.0.0.1, so the source becomes the gateway.
            rules.push(rule(
                vec![
                    Match::NfProto(IpFamily::V4),
                    Match::Saddr("127.0.0.0/8".parse().expect("valid prefix")),
                    Match::OifName(net.bridge.clone(), false),
                ],
                Action::Masquerade,
            ));
        }
    }
    rules
}

/// Per-network chains: `nw-<net>-from`, `nw-<net>-to`, `nw-<net>-in`.
pub fn network_chain_specs(net: &NetworkSpec) -> Vec<ChainSpec> {
    let [from, to, input] = network_chains(&net.name);
    let br = || net.bridge.clone();
    let mut from_rules = vec![rule(vec![Match::OifName(br(), false)], Action::Accept)];
    if net.internal {
        from_rules.push(rule(vec![], Action::Drop));
    } else {
        from_rules.push(rule(vec![Match::CtState(CT_INVALID)], Action::Drop));
    }
    let mut to_rules = Vec::new();
    if net.internal {
        to_rules.push(rule(vec![], Action::Drop));
    } else {
        to_rules.extend([
            rule(
                vec![Match::CtState(CT_ESTABLISHED | CT_RELATED)],
                Action::Accept,
            ),
            // published ports (DNAT happened in prerouting)
            rule(vec![Match::CtStatusDnat], Action::Accept),
            // isolation: nothing else enters the network (other networks, routed outsiders)
            rule(vec![], Action::Drop),
        ]);
    }
    let mut in_rules = Vec::new();
    for gw in &net.gateways {
        let fam = IpFamily::of(gw);
        for subnet in net.subnets.iter().filter(|s| family_of_net(s) == fam) {
            for proto in [IPPROTO_UDP, IPPROTO_TCP] {
                in_rules.push(rule(
                    vec![
                        Match::NfProto(fam),
                        Match::Saddr(*subnet),
                        Match::Daddr(*gw),
                        Match::L4Proto(proto),
                        Match::ThDport(net.dns_port),
                    ],
                    Action::Accept,
                ));
            }
        }
    }
    if net.internal {
        // The host is outside the bridge too: only DNS, replies and ICMP (neighbour
        // discovery needs ICMPv6).
        in_rules.extend([
            rule(
                vec![Match::CtState(CT_ESTABLISHED | CT_RELATED)],
                Action::Accept,
            ),
            rule(vec![Match::L4Proto(IPPROTO_ICMP)], Action::Accept),
            rule(vec![Match::L4Proto(IPPROTO_ICMPV6)], Action::Accept),
            rule(vec![], Action::Drop),
        ]);
    }
    vec![
        regular(from, from_rules),
        regular(to, to_rules),
        regular(input, in_rules),
    ]
}

/// Elements binding a network's bridge to its chains.
fn network_elements(net: &NetworkSpec) -> Vec<(&'static str, Element)> {
    let [from, to, input] = network_chains(&net.name);
    let el = |chain: String| Element {
        key: vec![Value::Ifname(net.bridge.clone())],
        data: ElemData::Jump(chain),
    };
    vec![(FROM_NET, el(from)), (TO_NET, el(to)), (IN_NET, el(input))]
}

/// Per-endpoint elements, grouped by (table family, set). Deterministic order.
pub fn endpoint_elements(
    net: &NetworkSpec,
    ep: &EndpointSpec,
) -> Result<BTreeMap<(TableFamily, &'static str), Vec<Element>>, FirewallError> {
    let mut out: BTreeMap<(TableFamily, &'static str), Vec<Element>> = BTreeMap::new();
    let mut push = |fam, set, e| out.entry((fam, set)).or_default().push(e);
    let veth = || Value::Ifname(ep.host_veth.clone());
    let mac = Value::Ether(ep.mac);
    push(
        TableFamily::Bridge,
        VETHS,
        Element {
            key: vec![veth()],
            data: ElemData::None,
        },
    );
    push(
        TableFamily::Bridge,
        ALLOW_MAC,
        Element {
            key: vec![veth(), mac.clone()],
            data: ElemData::None,
        },
    );
    push(
        TableFamily::Bridge,
        ALL_MACS,
        Element {
            key: vec![mac],
            data: ElemData::None,
        },
    );
    if !net.icc {
        push(
            TableFamily::Bridge,
            NO_ICC,
            Element {
                key: vec![veth()],
                data: ElemData::None,
            },
        );
    }
    for ip in &ep.ips {
        let set = match ip {
            IpAddr::V4(v4) => {
                push(
                    TableFamily::Bridge,
                    OWN4,
                    Element {
                        key: vec![veth(), Value::Ether(ep.mac), Value::Ipv4(*v4)],
                        data: ElemData::None,
                    },
                );
                ALLOW4
            }
            IpAddr::V6(_) => ALLOW6,
        };
        push(
            TableFamily::Bridge,
            set,
            Element {
                key: vec![veth(), Value::from(*ip)],
                data: ElemData::None,
            },
        );
    }
    if !ep.ports.is_empty() && net.internal {
        return Err(FirewallError::PublishOnInternal {
            endpoint: ep.key.clone(),
            network: net.name.clone(),
        });
    }
    for m in &ep.ports {
        m.validate()?;
        let families: Vec<IpFamily> = match m.host_ip {
            Some(ip) => vec![IpFamily::of(&ip)],
            None => vec![IpFamily::V4, IpFamily::V6],
        };
        let mut published = false;
        for fam in families {
            let Some(target) = ep.ips.iter().find(|ip| IpFamily::of(ip) == fam) else {
                continue;
            };
            published = true;
            let set = match (fam, m.host_ip.is_some()) {
                (IpFamily::V4, false) => PUB4_ANY,
                (IpFamily::V4, true) => PUB4_IP,
                (IpFamily::V6, false) => PUB6_ANY,
                (IpFamily::V6, true) => PUB6_IP,
            };
            for i in 0..m.count {
                let mut key: Vec<Value> = m.host_ip.map(Value::from).into_iter().collect();
                key.extend([
                    Value::Proto(m.protocol.number()),
                    Value::Port(m.host_port + i),
                ]);
                let data = ElemData::Value(vec![
                    Value::from(*target),
                    Value::Port(m.container_port + i),
                ]);
                push(TableFamily::Inet, set, Element { key, data });
            }
        }
        if !published {
            return Err(FirewallError::NoAddressForMapping {
                endpoint: ep.key.clone(),
                mapping: m.to_string(),
            });
        }
    }
    Ok(out)
}

// ---- batches -----------------------------------------------------------------------------

/// Ops creating one network's chains, rules and binding elements (not `postrouting`).
fn add_network_ops(inet: &TableId, net: &NetworkSpec) -> Vec<Op> {
    let mut ops = Vec::new();
    let chains = network_chain_specs(net);
    for c in &chains {
        ops.push(Op::AddChain(inet.clone(), c.clone()));
    }
    for c in chains {
        for r in c.rules {
            ops.push(Op::AddRule(inet.clone(), c.name.clone(), r));
        }
    }
    for (set, e) in network_elements(net) {
        ops.push(Op::AddElements(inet.clone(), set, vec![e]));
    }
    ops
}

/// Ops removing one network's binding elements and chains (not `postrouting`).
fn remove_network_ops(inet: &TableId, net: &NetworkSpec) -> Vec<Op> {
    let mut ops = Vec::new();
    // Elements first: a chain referenced by a verdict map element cannot be deleted.
    for (set, e) in network_elements(net) {
        ops.push(Op::DelElements(inet.clone(), set, vec![e]));
    }
    for c in network_chains(&net.name) {
        ops.push(Op::FlushChain(inet.clone(), c.clone()));
        ops.push(Op::DelChain(inet.clone(), c));
    }
    ops
}

fn element_ops(
    inet: &TableId,
    bridge: &TableId,
    elems: BTreeMap<(TableFamily, &'static str), Vec<Element>>,
    add: bool,
) -> Vec<Op> {
    elems
        .into_iter()
        .map(|((fam, set), e)| {
            let t = match fam {
                TableFamily::Inet => inet.clone(),
                TableFamily::Bridge => bridge.clone(),
            };
            if add {
                Op::AddElements(t, set, e)
            } else {
                Op::DelElements(t, set, e)
            }
        })
        .collect()
}

fn postrouting_ops(inet: &TableId, nets: &[NetworkSpec]) -> Vec<Op> {
    let mut ops = vec![Op::FlushChain(inet.clone(), "postrouting".into())];
    ops.extend(
        postrouting_rules(nets)
            .into_iter()
            .map(|r| Op::AddRule(inet.clone(), "postrouting".into(), r)),
    );
    ops
}

fn find_net<'a>(nets: &'a [NetworkSpec], name: &str) -> Result<&'a NetworkSpec, FirewallError> {
    nets.iter()
        .find(|n| n.name == name)
        .ok_or_else(|| FirewallError::UnknownNetwork(name.to_string()))
}

/// Validates a network spec (names and addresses the rules depend on).
pub fn validate_network(net: &NetworkSpec) -> Result<(), FirewallError> {
    let bad = |reason: String| FirewallError::InvalidNetwork {
        network: net.name.clone(),
        reason,
    };
    if net.name.is_empty() || net.name.len() > 200 || net.name.contains('\0') {
        return Err(bad("name must be 1-200 bytes without NUL".into()));
    }
    if net.bridge.is_empty() || net.bridge.len() > 15 || net.bridge.contains('\0') {
        return Err(bad(format!(
            "bridge name {:?} must be 1-15 bytes",
            net.bridge
        )));
    }
    for gw in &net.gateways {
        if !net.subnets.iter().any(|s| s.contains(gw)) {
            return Err(bad(format!("gateway {gw} is in none of the subnets")));
        }
    }
    Ok(())
}

/// Validates an endpoint spec (interface name length).
pub fn validate_endpoint(ep: &EndpointSpec) -> Result<(), FirewallError> {
    if ep.host_veth.is_empty() || ep.host_veth.len() > 15 || ep.host_veth.contains('\0') {
        return Err(FirewallError::InvalidEndpoint {
            endpoint: ep.key.clone(),
            reason: format!("host veth name {:?} must be 1-15 bytes", ep.host_veth),
        });
    }
    Ok(())
}

/// The whole ruleset from scratch, replacing whatever tables of ours exist (add, delete,
/// add again: "delete if present" inside one atomic batch).
pub fn sync_ops(
    table: &str,
    nets: &[NetworkSpec],
    eps: &[EndpointSpec],
) -> Result<Vec<Op>, FirewallError> {
    let (inet, bridge) = table_ids(table);
    let mut ops = Vec::new();
    for t in [&inet, &bridge] {
        ops.push(Op::AddTable(t.clone()));
        ops.push(Op::DelTable(t.clone()));
        ops.push(Op::AddTable(t.clone()));
    }
    for s in inet_sets() {
        ops.push(Op::AddSet(inet.clone(), s));
    }
    for s in bridge_sets() {
        ops.push(Op::AddSet(bridge.clone(), s));
    }
    let mut post = base(
        "postrouting",
        Hook::Postrouting,
        ChainKind::Nat,
        100,
        vec![],
    );
    post.rules = postrouting_rules(nets);
    let mut chains: Vec<(TableId, ChainSpec)> = inet_static_chains()
        .into_iter()
        .chain([post])
        .map(|c| (inet.clone(), c))
        .collect();
    chains.extend(bridge_chains().into_iter().map(|c| (bridge.clone(), c)));
    // chains first (jumps may point forward), then rules
    for (t, c) in &chains {
        ops.push(Op::AddChain(t.clone(), c.clone()));
    }
    for (t, c) in chains {
        for r in c.rules {
            ops.push(Op::AddRule(t.clone(), c.name.clone(), r));
        }
    }
    for (i, net) in nets.iter().enumerate() {
        validate_network(net)?;
        if nets[..i]
            .iter()
            .any(|n| n.name == net.name || n.bridge == net.bridge)
        {
            return Err(FirewallError::InvalidNetwork {
                network: net.name.clone(),
                reason: "name or bridge used twice".into(),
            });
        }
        ops.extend(add_network_ops(&inet, net));
    }
    for (i, ep) in eps.iter().enumerate() {
        validate_endpoint(ep)?;
        crate::spec::check_port_conflicts(&eps[..i], ep)?;
        let net = find_net(nets, &ep.network)?;
        ops.extend(element_ops(
            &inet,
            &bridge,
            endpoint_elements(net, ep)?,
            true,
        ));
    }
    Ok(ops)
}

/// Adds `net` to a table that currently holds `installed` (which must not contain it).
pub fn add_network_batch(
    table: &str,
    installed: &[NetworkSpec],
    net: &NetworkSpec,
) -> Result<Vec<Op>, FirewallError> {
    validate_network(net)?;
    if let Some(other) = installed
        .iter()
        .find(|n| n.name == net.name || n.bridge == net.bridge)
    {
        return Err(FirewallError::InvalidNetwork {
            network: net.name.clone(),
            reason: format!(
                "network {} with bridge {} is already installed",
                other.name, other.bridge
            ),
        });
    }
    let (inet, _) = table_ids(table);
    let mut ops = add_network_ops(&inet, net);
    let mut all = installed.to_vec();
    all.push(net.clone());
    ops.extend(postrouting_ops(&inet, &all));
    Ok(ops)
}

/// Removes `net` (and the elements of `eps`, its endpoints still installed) from a table
/// holding `installed`.
pub fn remove_network_batch(
    table: &str,
    installed: &[NetworkSpec],
    net: &NetworkSpec,
    eps: &[EndpointSpec],
) -> Result<Vec<Op>, FirewallError> {
    let (inet, bridge) = table_ids(table);
    let mut ops = Vec::new();
    for ep in eps {
        ops.extend(element_ops(
            &inet,
            &bridge,
            endpoint_elements(net, ep)?,
            false,
        ));
    }
    ops.extend(remove_network_ops(&inet, net));
    let rest: Vec<NetworkSpec> = installed
        .iter()
        .filter(|n| n.name != net.name)
        .cloned()
        .collect();
    ops.extend(postrouting_ops(&inet, &rest));
    Ok(ops)
}

/// Element-only batch adding (`add = true`) or removing an endpoint. Its size depends on the
/// endpoint alone, never on how many other endpoints exist.
pub fn endpoint_batch(
    table: &str,
    net: &NetworkSpec,
    ep: &EndpointSpec,
    add: bool,
) -> Result<Vec<Op>, FirewallError> {
    validate_endpoint(ep)?;
    let (inet, bridge) = table_ids(table);
    Ok(element_ops(
        &inet,
        &bridge,
        endpoint_elements(net, ep)?,
        add,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PortMapping, Protocol};
    use proptest::prelude::*;

    fn net(name: &str, n: u8) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            bridge: format!("br-{name}"),
            subnets: vec![format!("10.{n}.0.0/24").parse().unwrap()],
            gateways: vec![format!("10.{n}.0.1").parse().unwrap()],
            internal: false,
            masquerade: true,
            snat: None,
            icc: true,
            dns_port: 53,
        }
    }

    fn ep(key: &str, ports: Vec<PortMapping>) -> EndpointSpec {
        EndpointSpec {
            network: "a".into(),
            key: key.into(),
            host_veth: format!("veth{key}"),
            ips: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            mac: [2, 0, 0, 0, 0, 5],
            ports,
        }
    }

    fn rules_in(ops: &[Op]) -> usize {
        ops.iter().filter(|o| matches!(o, Op::AddRule(..))).count()
    }

    #[test]
    fn masquerade_excludes_own_bridge_and_internal() {
        let mut a = net("a", 1);
        let mut b = net("b", 2);
        b.internal = true;
        let rules = postrouting_rules(&[a.clone(), b.clone()]);
        let egress: Vec<_> = rules
            .iter()
            .filter(|r| r.matches.contains(&Match::OifName("br-a".into(), true)))
            .collect();
        assert_eq!(egress.len(), 1);
        assert_eq!(egress[0].action, Action::Masquerade);
        assert!(egress[0].matches.contains(&Match::Saddr(a.subnets[0])));
        assert!(rules.iter().all(|r| !r
            .matches
            .iter()
            .any(|m| matches!(m, Match::OifName(b, _) if b == "br-b"))));
        a.masquerade = false;
        assert!(!postrouting_rules(&[a.clone()])
            .iter()
            .any(|r| r.matches.contains(&Match::OifName("br-a".into(), true))));
        a.snat = Some("192.0.2.7".parse().unwrap());
        assert!(postrouting_rules(&[a])
            .iter()
            .any(|r| r.action == Action::Snat("192.0.2.7".parse().unwrap())));
    }

    #[test]
    fn internal_network_drops_everything_leaving_the_bridge() {
        let mut a = net("a", 1);
        a.internal = true;
        let chains = network_chain_specs(&a);
        let from = &chains[0];
        assert_eq!(
            from.rules[0],
            rule(vec![Match::OifName("br-a".into(), false)], Action::Accept)
        );
        assert_eq!(from.rules.last().unwrap(), &rule(vec![], Action::Drop));
        assert_eq!(chains[1].rules, vec![rule(vec![], Action::Drop)]);
        // DNS still accepted to the gateway
        assert!(chains[2].rules[0].matches.contains(&Match::ThDport(53)));
    }

    #[test]
    fn ports_become_one_element_per_port_and_family() {
        let n = net("a", 1);
        let m: PortMapping = "8000-8002:9000-9002/udp".parse().unwrap();
        let els = endpoint_elements(&n, &ep("x", vec![m])).unwrap();
        let v4 = &els[&(TableFamily::Inet, PUB4_ANY)];
        assert_eq!(v4.len(), 3);
        assert_eq!(v4[2].key, vec![Value::Proto(17), Value::Port(8002)]);
        assert_eq!(
            v4[2].data,
            ElemData::Value(vec![
                Value::Ipv4("10.1.0.5".parse().unwrap()),
                Value::Port(9002)
            ])
        );
        assert_eq!(els[&(TableFamily::Inet, PUB6_ANY)].len(), 3);
        let m: PortMapping = "127.0.0.1:80:81".parse().unwrap();
        let els = endpoint_elements(&n, &ep("x", vec![m])).unwrap();
        assert_eq!(
            els[&(TableFamily::Inet, PUB4_IP)][0].key,
            vec![
                Value::Ipv4(Ipv4Addr::LOCALHOST),
                Value::Proto(6),
                Value::Port(80)
            ]
        );
        assert!(!els.contains_key(&(TableFamily::Inet, PUB6_ANY)));
    }

    #[test]
    fn publish_errors_are_clear() {
        let mut n = net("a", 1);
        let m: PortMapping = "[::1]:80:80".parse().unwrap();
        let mut e = ep("x", vec![m]);
        e.ips.retain(|ip| ip.is_ipv4());
        let err = endpoint_elements(&n, &e).unwrap_err().to_string();
        assert!(
            err.contains("x") && err.contains("[::1]:80:80/tcp"),
            "{err}"
        );
        n.internal = true;
        let err = endpoint_elements(&n, &ep("x", vec!["1:1".parse().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("internal"), "{err}");
    }

    #[test]
    fn anti_spoofing_elements_bind_ip_and_mac_to_the_veth() {
        let els = endpoint_elements(&net("a", 1), &ep("x", vec![])).unwrap();
        assert_eq!(
            els[&(TableFamily::Bridge, ALLOW4)],
            vec![Element {
                key: vec![
                    Value::Ifname("vethx".into()),
                    Value::Ipv4("10.1.0.5".parse().unwrap()),
                ],
                data: ElemData::None
            }]
        );
        assert_eq!(
            els[&(TableFamily::Bridge, OWN4)],
            vec![Element {
                key: vec![
                    Value::Ifname("vethx".into()),
                    Value::Ether([2, 0, 0, 0, 0, 5]),
                    Value::Ipv4("10.1.0.5".parse().unwrap()),
                ],
                data: ElemData::None
            }]
        );
        assert_eq!(els[&(TableFamily::Bridge, ALLOW6)].len(), 1);
        assert_eq!(els[&(TableFamily::Bridge, VETHS)].len(), 1);
        assert_eq!(
            els[&(TableFamily::Bridge, ALL_MACS)][0].key,
            vec![Value::Ether([2, 0, 0, 0, 0, 5])]
        );
    }

    #[test]
    fn icc_off_adds_the_endpoint_port_to_no_icc() {
        let mut a = net("a", 1);
        assert!(!endpoint_elements(&a, &ep("x", vec![]))
            .unwrap()
            .contains_key(&(TableFamily::Bridge, NO_ICC)));
        a.icc = false;
        let els = endpoint_elements(&a, &ep("x", vec![])).unwrap();
        assert_eq!(
            els[&(TableFamily::Bridge, NO_ICC)][0].key,
            vec![Value::Ifname("vethx".into())]
        );
    }

    #[test]
    fn remove_network_undoes_add_network() {
        let a = net("a", 1);
        let add = add_network_batch("netd", &[], &a).unwrap();
        let del = remove_network_batch("netd", std::slice::from_ref(&a), &a, &[]).unwrap();
        let added_chains: Vec<_> = add
            .iter()
            .filter_map(|o| match o {
                Op::AddChain(_, c) => Some(c.name.clone()),
                _ => None,
            })
            .collect();
        for c in &added_chains {
            assert!(del.contains(&Op::DelChain(table_ids("netd").0, c.clone())));
        }
        let added_elems: Vec<_> = add
            .iter()
            .filter_map(|o| match o {
                Op::AddElements(t, s, e) => Some((t.clone(), *s, e.clone())),
                _ => None,
            })
            .collect();
        for (t, s, e) in added_elems {
            assert!(del.contains(&Op::DelElements(t, s, e)));
        }
        // chains are deleted only after the elements referring to them
        let first_del_chain = del
            .iter()
            .position(|o| matches!(o, Op::DelChain(..)))
            .unwrap();
        let last_del_elem = del
            .iter()
            .rposition(|o| matches!(o, Op::DelElements(..)))
            .unwrap();
        assert!(last_del_elem < first_del_chain);
    }

    #[test]
    fn ip_payload_matches_have_a_family_guard() {
        let mut nets: Vec<_> = (1..4).map(|i| net(&format!("n{i}"), i)).collect();
        nets[1].internal = true;
        nets[2].subnets.push("fd00:2::/64".parse().unwrap());
        nets[2].gateways.push("fd00:2::1".parse().unwrap());
        let ops = sync_ops("netd", &nets, &[]).unwrap();
        for op in &ops {
            let Op::AddRule(_, chain, r) = op else {
                continue;
            };
            let mut guarded = false;
            for m in &r.matches {
                match m {
                    Match::NfProto(_) | Match::EtherType(_) => guarded = true,
                    Match::Saddr(_) | Match::Daddr(_) => {
                        assert!(guarded, "unguarded {m:?} in {chain}: {r:?}")
                    }
                    // A transport-header byte means something only for its protocol.
                    Match::Icmp6Type(_) => assert!(
                        r.matches.contains(&Match::L4Proto(IPPROTO_ICMPV6)),
                        "icmpv6 type without l4proto in {chain}: {r:?}"
                    ),
                    _ => {}
                }
            }
        }
    }

    fn arb_ep(i: usize) -> impl Strategy<Value = EndpointSpec> {
        (
            prop::collection::vec((1u16..60000, 1u16..8, any::<bool>(), any::<bool>()), 0..4),
            any::<bool>(),
        )
            .prop_map(move |(ports, v6)| {
                let mut e = ep(&format!("e{i}"), vec![]);
                if !v6 {
                    e.ips.truncate(1);
                }
                e.ports = ports
                    .into_iter()
                    .map(|(p, n, udp, lo)| PortMapping {
                        host_ip: lo.then(|| "127.0.0.1".parse().unwrap()),
                        host_port: p,
                        container_port: p,
                        count: n,
                        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                    })
                    .collect();
                e
            })
    }

    proptest! {
        /// Per-endpoint batches are element-only and their size depends only on the endpoint.
        #[test]
        fn endpoint_batch_is_flat(e in arb_ep(0), others in 0usize..50) {
            let n = net("a", 1);
            let ops = endpoint_batch("netd", &n, &e, true).unwrap();
            prop_assert!(ops.iter().all(|o| matches!(o, Op::AddElements(..))));
            let n_elems: usize = ops.iter().map(|o| match o { Op::AddElements(_, _, e) => e.len(), _ => 0 }).sum();
            let expected_ports: usize = e.ports.iter().map(|m| {
                let fams = if m.host_ip.is_some() { 1 } else { e.ips.len() };
                usize::from(m.count) * fams
            }).sum();
            let own4 = e.ips.iter().filter(|ip| ip.is_ipv4()).count();
            prop_assert_eq!(n_elems, 3 + e.ips.len() + own4 + expected_ports);
            // the inverse batch deletes exactly what was added
            let del = endpoint_batch("netd", &n, &e, false).unwrap();
            prop_assert_eq!(del.len(), ops.len());
            for (a, d) in ops.iter().zip(&del) {
                match (a, d) {
                    (Op::AddElements(t1, s1, e1), Op::DelElements(t2, s2, e2)) =>
                        prop_assert!(t1 == t2 && s1 == s2 && e1 == e2),
                    _ => prop_assert!(false),
                }
            }
            let _ = others;
        }

        /// Rules are O(networks): the number of rules does not depend on endpoints or ports.
        #[test]
        fn rules_do_not_grow_with_endpoints(n_nets in 1u8..6, eps in prop::collection::vec(arb_ep(1), 0..6)) {
            let nets: Vec<_> = (1..=n_nets).map(|i| net(if i == 1 { "a" } else { "z" }, i)).enumerate()
                .map(|(i, mut n)| { n.name = format!("{}{i}", n.name); n.bridge = format!("br{i}"); n }).collect();
            let mut nets = nets;
            nets[0].name = "a".into();
            let eps: Vec<_> = eps.into_iter().enumerate().map(|(i, mut e)| {
                e.key = format!("e{i}");
                e.host_veth = format!("v{i}");
                // make ports disjoint between endpoints
                for m in &mut e.ports { m.host_port = (i as u16) * 8000 + (m.host_port % 7000) + 1; }
                e
            }).filter(|e| crate::spec::check_port_conflicts(&[] as &[EndpointSpec], e).is_ok()).collect();
            let without = rules_in(&sync_ops("netd", &nets, &[]).unwrap());
            let with = rules_in(&sync_ops("netd", &nets, &eps).unwrap());
            prop_assert_eq!(without, with);
            prop_assert!(with <= 30 + 20 * usize::from(n_nets));
        }
    }
}

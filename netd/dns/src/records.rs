//! The records view: an immutable snapshot of every network's names, swapped atomically on change.
//!
//! Readers (the request handler) load the current snapshot without locking; writers build a new
//! snapshot (rebuilding only the network that changed) and swap it in. That is what makes a record
//! visible to the very next query after `add_endpoint` returns, with no reload window.
//! Everything here is pure: the answer to a question is a function of (snapshot, client, question).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use imbl::OrdMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::{EndpointDns, NetworkDns};

/// All networks DNS knows about, keyed by network name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    /// Networks by name; each is shared between snapshots until it changes.
    pub(crate) networks: BTreeMap<String, Arc<NetRecords>>,
}

/// One network's configuration plus the indexes answering queries for it.
#[derive(Debug, Clone)]
pub(crate) struct NetRecords {
    /// Network name as given (lookups use the lowercase form).
    pub(crate) name: String,
    /// Lowercase network name: the `name.<network>` zone.
    pub(crate) zone: String,
    /// Lowercase domain without trailing dot (e.g. `mynet.netd`).
    pub(crate) domain: Option<String>,
    /// Subnets of the network: clients inside them belong to it, their reverse zones are ours.
    pub(crate) subnets: Vec<IpNet>,
    /// Gateway addresses the listeners bind.
    pub(crate) listen: Vec<IpAddr>,
    /// Configured upstreams; empty means the host's resolv.conf.
    pub(crate) upstreams: Vec<SocketAddr>,
    /// Internal networks never forward.
    pub(crate) internal: bool,
    /// Endpoints by key, names already normalised. The indexes below share these records
    /// (`Arc`), so a query reads an endpoint's addresses without looking its key up again.
    endpoints: OrdMap<Arc<str>, Arc<EndpointDns>>,
    /// Hash of a bare lowercase name -> the endpoints that have a name with that hash, sorted
    /// by key (lookups keep the ones that really hold the name). Only the bare form is
    /// stored: `name.<network>` and `name.<domain>` are found by stripping the suffix at
    /// lookup, and addresses are read from the endpoints, so a name costs one entry (storing
    /// every form with its addresses cost ~2 KiB of memory per name).
    ///
    /// Keyed by hash, because every name query starts here: a B-tree keyed by the names
    /// compared strings behind pointers all the way down (an A query cost 2.1 µs of server
    /// CPU with 10,000 names against 1.7 µs in a hash trie), and a hash trie keyed by the
    /// names reserved 32 slots of name and list per node however few it held (1.2 MiB for
    /// 11,000 names). A B-tree of 64-bit hashes compares integers held in the node, and an
    /// entry is a hash and (for a name one endpoint holds) one pointer.
    holders: OrdMap<u64, Holders>,
    /// Address -> the endpoints holding it, sorted by key. A B-tree: address comparisons
    /// are cheap, and a trie node reserves all 32 of its slots however few it holds. The
    /// PTR target of an address (its first holder's container name in the network zone) is
    /// built when asked: kept as an index of hickory `Name`s it cost 210 bytes per address.
    by_ip: OrdMap<IpAddr, Holders>,
    /// How many names of the endpoints contain a dot. Without any, a dotted query name can
    /// only be `name.<network>` or `name.<domain>`, and its lookup as a bare name is skipped:
    /// it cost every such query a second hash and B-tree walk.
    dotted: usize,
}

/// Lowercases a name and strips one trailing dot, the form every index key uses.
pub(crate) fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The index key for a DNS name: lowercase labels joined by dots, no trailing dot.
pub(crate) fn key_of(name: &Name) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
    }
    out
}

/// Checks that a name can be served: parses as a DNS name, labels <= 63 bytes, total <= 253.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    if trimmed.len() > 253 {
        return Err("longer than 253 bytes".into());
    }
    if trimmed
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/' || b == b'\\')
    {
        return Err("contains whitespace, control characters, '/' or '\\'".into());
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} longer than 63 bytes"));
        }
    }
    Name::from_ascii(trimmed).map_err(|e| e.to_string())?;
    Ok(())
}

impl NetRecords {
    /// A network with no endpoints yet.
    pub(crate) fn new(net: &NetworkDns) -> Self {
        let mut this = Self {
            name: net.name.clone(),
            zone: normalize(&net.name),
            domain: net.domain.as_deref().map(normalize),
            subnets: net.subnets.clone(),
            listen: net.listen.clone(),
            upstreams: net.upstreams.clone(),
            internal: net.internal,
            endpoints: OrdMap::new(),
            holders: OrdMap::new(),
            by_ip: OrdMap::new(),
            dotted: 0,
        };
        this.reindex();
        this
    }

    /// A copy of this network with `ep` added (or replacing the endpoint with the same key).
    /// The copy shares everything untouched with `self`; only the entries of `ep`'s names and
    /// addresses are recomputed, so the cost does not grow with the network.
    pub(crate) fn with_endpoint(&self, ep: EndpointDns) -> Self {
        let mut next = self.clone();
        let mut ep = ep;
        ep.names = ep.names.iter().map(|n| normalize(n)).collect();
        let key: Arc<str> = match next.endpoints.remove_with_key(ep.key.as_str()) {
            Some((key, old)) => {
                next.unindex(&key, &old);
                key
            }
            None => Arc::from(ep.key.as_str()),
        };
        let ep = Arc::new(ep);
        next.index(&ep);
        next.endpoints.insert(key, ep);
        next
    }

    /// A copy of this network without the endpoint `key`, or None when it is not there.
    pub(crate) fn without_endpoint(&self, key: &str) -> Option<Self> {
        let mut next = self.clone();
        let (key, old) = next.endpoints.remove_with_key(key)?;
        next.unindex(&key, &old);
        Some(next)
    }

    /// Adds the name and address entries of endpoint `ep`.
    fn index(&mut self, ep: &Arc<EndpointDns>) {
        for name in &ep.names {
            self.dotted += usize::from(name.contains('.'));
            let hash = name_hash(name);
            let next = match self.holders.get(&hash) {
                Some(h) => h.with(ep),
                None => Holders::One(ep.clone()),
            };
            self.holders.insert(hash, next);
        }
        for addr in &ep.addrs {
            let next = match self.by_ip.get(addr) {
                Some(h) => h.with(ep),
                None => Holders::One(ep.clone()),
            };
            self.by_ip.insert(*addr, next);
        }
    }

    /// Removes the entries of endpoint `key`, whose record was `ep` (already gone from
    /// `endpoints`).
    fn unindex(&mut self, key: &str, ep: &EndpointDns) {
        for name in &ep.names {
            self.dotted -= usize::from(name.contains('.'));
            let hash = name_hash(name);
            if let Some(h) = self.holders.get(&hash) {
                match h.without(key) {
                    Some(next) => self.holders.insert(hash, next),
                    None => self.holders.remove(&hash),
                };
            }
        }
        for addr in &ep.addrs {
            if let Some(h) = self.by_ip.get(addr) {
                match h.without(key) {
                    Some(next) => self.by_ip.insert(*addr, next),
                    None => self.by_ip.remove(addr),
                };
            }
        }
    }

    /// The PTR target of an address: the container name (first name) of its first holder
    /// that has one, in the network's zone.
    fn ptr_target(&self, addr: &IpAddr) -> Option<Name> {
        let zone = Name::from_ascii(&self.zone).ok()?;
        self.by_ip.get(addr)?.as_slice().iter().find_map(|ep| {
            let mut t = Name::from_ascii(ep.names.first()?)
                .ok()?
                .append_name(&zone)
                .ok()?;
            t.set_fqdn(true);
            Some(t)
        })
    }

    /// Whether an endpoint with this key is registered here.
    pub(crate) fn has_endpoint(&self, key: &str) -> bool {
        self.endpoints.contains_key(key)
    }

    /// Rebuilds every index from `endpoints` from scratch: O(endpoints). The incremental
    /// updates must always agree with it (checked by a property test).
    fn reindex(&mut self) {
        self.holders = OrdMap::new();
        self.by_ip = OrdMap::new();
        self.dotted = 0;
        let eps: Vec<Arc<EndpointDns>> = self.endpoints.values().cloned().collect();
        for ep in &eps {
            self.index(ep);
        }
    }

    /// Appends the addresses of a (normalised) name in this network to `out`, skipping ones
    /// already there, in endpoint-key order; false when the name is not known here (no holder,
    /// or holders without addresses). The name may be bare, `name.<network>` or
    /// `name.<domain>`; an endpoint holding it in any of those forms counts.
    pub(crate) fn collect_addrs(&self, name: &str, out: &mut Vec<IpAddr>) -> bool {
        let strip = |zone: &str| {
            name.strip_suffix(zone)
                .and_then(|n| n.strip_suffix('.'))
                .filter(|n| !n.is_empty())
        };
        let as_is = (self.dotted > 0 || !name.contains('.')).then_some(name);
        let mut found = [
            as_is,
            strip(&self.zone),
            self.domain.as_deref().and_then(strip),
        ]
        .into_iter()
        .flatten()
        .filter_map(|bare| self.holders_of(bare));
        let Some(first) = found.next() else {
            return false;
        };
        // Almost always one form matches: its holder list is already sorted and unique, so
        // the per-query path allocates nothing; only an ambiguous name merges lists.
        match found.next() {
            None => self.addrs_of_holders(first, out),
            Some(second) => {
                let mut all: Vec<&Arc<EndpointDns>> =
                    first.chain(second).chain(found.flatten()).collect();
                all.sort_by(|a, b| a.key.cmp(&b.key));
                all.dedup_by(|a, b| a.key == b.key);
                self.addrs_of_holders(all.into_iter(), out)
            }
        }
    }

    /// The endpoints holding the (normalised, bare) name, in key order; None when none does.
    fn holders_of<'a>(
        &'a self,
        bare: &'a str,
    ) -> Option<impl Iterator<Item = &'a Arc<EndpointDns>> + Clone + 'a> {
        let holds = move |ep: &Arc<EndpointDns>| ep.names.iter().any(|n| n == bare);
        let all = self.holders.get(&name_hash(bare))?.as_slice();
        // Another name with the same hash may share the entry; the first true holder is
        // checked once, here, and the iterator starts at it.
        let first = all.iter().position(holds)?;
        let (head, rest) = all[first..].split_first()?;
        Some(std::iter::once(head).chain(rest.iter().filter(move |ep| holds(ep))))
    }

    /// Appends the addresses of the endpoints `eps` (in that order, skipping ones already in
    /// `out`); false when they have none.
    fn addrs_of_holders<'a>(
        &self,
        eps: impl Iterator<Item = &'a Arc<EndpointDns>>,
        out: &mut Vec<IpAddr>,
    ) -> bool {
        let mut known = false;
        for a in eps.flat_map(|ep| &ep.addrs) {
            known = true;
            if !out.contains(a) {
                out.push(*a);
            }
        }
        known
    }

    /// Addresses of a (normalised) name in this network, None when it is not known here.
    pub(crate) fn addrs(&self, name: &str) -> Option<Vec<IpAddr>> {
        let mut out = Vec::new();
        self.collect_addrs(name, &mut out).then_some(out)
    }

    /// Whether `name` is this network's zone apex or lies under it (`x.<network>`, `x.<domain>`).
    fn owns_zone(&self, name: &str) -> bool {
        let under = |zone: &str| {
            name == zone
                || (name.len() > zone.len()
                    && name.ends_with(zone)
                    && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
        };
        under(&self.zone) || self.domain.as_deref().is_some_and(under)
    }
}

/// What the local view says about a question.
#[derive(Debug, PartialEq)]
pub(crate) enum Local {
    /// Answer from netd's own data, authoritatively.
    Answer {
        /// NOERROR or NXDOMAIN.
        rcode: ResponseCode,
        /// Records for the answer section (may be empty: NODATA).
        records: Vec<Record>,
    },
    /// Not a netd name: forward it (if the client's networks allow it).
    Forward,
}

impl Records {
    /// The networks a client may resolve names of, by its source address.
    ///
    /// A source that is an endpoint address gets every network where an endpoint with the same key
    /// (the same container) is registered, so a container on A and B resolves both whichever
    /// gateway it asks. Otherwise a source inside a subnet, or equal to a gateway (the host), gets
    /// that network. Anything else gets nothing: it is refused.
    pub(crate) fn scope(&self, src: IpAddr) -> Vec<&Arc<NetRecords>> {
        let src = canonical(src);
        let holders: Vec<&Arc<EndpointDns>> = self
            .networks
            .values()
            .filter_map(|n| n.by_ip.get(&src))
            .flat_map(Holders::as_slice)
            .collect();
        if !holders.is_empty() {
            // A network holding the address holds its endpoint: only the others need a look-up
            // by key (none on a host with one network).
            return self
                .networks
                .values()
                .filter(|n| {
                    n.by_ip.contains_key(&src) || holders.iter().any(|e| n.has_endpoint(&e.key))
                })
                .collect();
        }
        self.networks
            .values()
            .filter(|n| n.listen.contains(&src) || n.subnets.iter().any(|s| s.contains(&src)))
            .collect()
    }

    /// Whether an address lies in any netd subnet (its reverse zone is ours, never forwarded).
    fn in_any_subnet(&self, addr: &IpAddr) -> bool {
        self.networks
            .values()
            .any(|n| n.subnets.iter().any(|s| s.contains(addr)))
    }

    /// Whether a reverse-zone prefix overlaps any netd subnet.
    fn overlaps_any_subnet(&self, prefix: &IpNet) -> bool {
        self.networks.values().any(|n| {
            n.subnets
                .iter()
                .any(|s| s.contains(prefix) || prefix.contains(s))
        })
    }

    /// Answers `qname`/`qtype` for a client whose scope is `scope`.
    ///
    /// `rotate` picks the rotation of multi-address answers so that a service name shared by
    /// several containers spreads clients across them.
    pub(crate) fn answer(
        &self,
        scope: &[&Arc<NetRecords>],
        qname: &Name,
        qtype: RecordType,
        ttl: u32,
        rotate: usize,
    ) -> Local {
        let key = key_of(qname);
        match self.find(scope, &key, Some(qname), qtype, rotate) {
            Found::Forward => Local::Forward,
            Found::Answer { rcode, data } => {
                let records = match data {
                    Data::Empty => Vec::new(),
                    Data::Addrs(addrs) => addrs
                        .into_iter()
                        .map(|a| {
                            let data = match a {
                                IpAddr::V4(v4) => RData::A(A(v4)),
                                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                            };
                            Record::from_rdata(qname.clone(), ttl, data)
                        })
                        .collect(),
                    Data::Ptrs(targets) => targets
                        .into_iter()
                        .map(|t| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(t.clone()))))
                        .collect(),
                };
                Local::Answer { rcode, records }
            }
        }
    }

    /// What netd's data says about the (normalised) name `key` and `qtype`, without building
    /// records; shared by the hickory handler and the UDP fast path so both answer alike.
    ///
    /// `qname` is the question as hickory decoded it, used for reverse names; the fast path,
    /// which only takes plain ASCII labels, passes None and the name is rebuilt from `key`.
    pub(crate) fn find(
        &self,
        scope: &[&Arc<NetRecords>],
        key: &str,
        qname: Option<&Name>,
        qtype: RecordType,
        rotate: usize,
    ) -> Found {
        if key.ends_with("in-addr.arpa") || key.ends_with("ip6.arpa") {
            let fqdn = match qname {
                Some(n) => {
                    let mut n = n.clone();
                    n.set_fqdn(true);
                    n
                }
                None => match Name::from_ascii(key) {
                    Ok(mut n) => {
                        n.set_fqdn(true);
                        n
                    }
                    Err(_) => return Found::Forward,
                },
            };
            return self.find_reverse(scope, &fqdn, qtype);
        }

        let mut addrs: Vec<IpAddr> = Vec::new();
        let mut known = false;
        for net in scope {
            known |= net.collect_addrs(key, &mut addrs);
        }
        if !known {
            if scope.iter().any(|n| n.owns_zone(key)) {
                // A zone apex exists (NOERROR, no data); anything else under it does not.
                let rcode = if scope
                    .iter()
                    .any(|n| n.zone == key || n.domain.as_deref() == Some(key))
                {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                };
                return Found::Answer {
                    rcode,
                    data: Data::Empty,
                };
            }
            return Found::Forward;
        }

        let want_v4 = matches!(qtype, RecordType::A | RecordType::ANY);
        let want_v6 = matches!(qtype, RecordType::AAAA | RecordType::ANY);
        addrs.retain(|a| (a.is_ipv4() && want_v4) || (a.is_ipv6() && want_v6));
        if !addrs.is_empty() {
            let n = addrs.len();
            addrs.rotate_left(rotate % n);
        }
        // A known name lacking the family is NOERROR/NODATA, never forwarded: forwarding would
        // leak container names upstream and could return a stranger's address for them.
        Found::Answer {
            rcode: ResponseCode::NoError,
            data: Data::Addrs(addrs),
        }
    }

    fn find_reverse(&self, scope: &[&Arc<NetRecords>], fqdn: &Name, qtype: RecordType) -> Found {
        let Ok(prefix) = fqdn.parse_arpa_name() else {
            return Found::Forward;
        };
        if prefix.prefix_len() != prefix.max_prefix_len() {
            // A partial reverse name (e.g. `0.10.in-addr.arpa`): ours when it touches a netd
            // subnet; it exists as an empty non-terminal, so NOERROR with no data.
            if self.overlaps_any_subnet(&prefix) {
                return Found::Answer {
                    rcode: ResponseCode::NoError,
                    data: Data::Empty,
                };
            }
            return Found::Forward;
        }
        let addr = canonical(prefix.addr());
        let targets: Vec<Name> = scope.iter().filter_map(|n| n.ptr_target(&addr)).collect();
        if !targets.is_empty() {
            let mut seen: Vec<Name> = Vec::new();
            if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                for t in targets {
                    if !seen.contains(&t) {
                        seen.push(t);
                    }
                }
            }
            return Found::Answer {
                rcode: ResponseCode::NoError,
                data: Data::Ptrs(seen),
            };
        }
        if self.in_any_subnet(&addr) {
            // netd's subnets are private to this host: upstream cannot know them, and asking would
            // leak which addresses containers use.
            return Found::Answer {
                rcode: ResponseCode::NXDomain,
                data: Data::Empty,
            };
        }
        Found::Forward
    }
}

/// What the local view knows about a question, before it becomes records or wire bytes.
#[derive(Debug, PartialEq)]
pub(crate) enum Found {
    /// Answer from netd's own data, authoritatively.
    Answer {
        /// NOERROR or NXDOMAIN.
        rcode: ResponseCode,
        /// The answer section's data (may be empty: NODATA).
        data: Data,
    },
    /// Not a netd name: forward it (if the client's networks allow it).
    Forward,
}

/// Answer data of a local answer.
#[derive(Debug, PartialEq)]
pub(crate) enum Data {
    /// No records.
    Empty,
    /// A / AAAA records, in answer order.
    Addrs(Vec<IpAddr>),
    /// PTR targets, in answer order.
    Ptrs(Vec<Name>),
}

/// The endpoints of one name-index entry, sorted by key: almost always one, held without a
/// list of its own.
#[derive(Debug, Clone, PartialEq)]
enum Holders {
    /// A name (hash) one endpoint holds.
    One(Arc<EndpointDns>),
    /// A name (hash) several endpoints hold: a service alias, or a hash collision.
    Many(Arc<[Arc<EndpointDns>]>),
}

impl Holders {
    /// The endpoints, in key order.
    fn as_slice(&self) -> &[Arc<EndpointDns>] {
        match self {
            Holders::One(ep) => std::slice::from_ref(ep),
            Holders::Many(eps) => eps,
        }
    }

    /// These endpoints with `ep` added or replacing the one with its key.
    fn with(&self, ep: &Arc<EndpointDns>) -> Holders {
        let mut eps = self.as_slice().to_vec();
        match eps.binary_search_by(|e| e.key.cmp(&ep.key)) {
            Ok(at) => eps[at] = ep.clone(),
            Err(at) => eps.insert(at, ep.clone()),
        }
        Holders::from_vec(eps).unwrap_or_else(|| Holders::One(ep.clone()))
    }

    /// These endpoints without the one keyed `key`; None when none is left.
    fn without(&self, key: &str) -> Option<Holders> {
        let eps: Vec<Arc<EndpointDns>> = self
            .as_slice()
            .iter()
            .filter(|e| e.key != key)
            .cloned()
            .collect();
        Holders::from_vec(eps)
    }

    fn from_vec(mut eps: Vec<Arc<EndpointDns>>) -> Option<Holders> {
        match eps.len() {
            0 => None,
            1 => eps.pop().map(Holders::One),
            _ => Some(Holders::Many(eps.into())),
        }
    }
}

/// The name index's key for a bare lowercase name: SipHash with fixed keys. Names come from
/// the API (root), so nobody picks collisions, and lookups check the name anyway.
fn name_hash(bare: &str) -> u64 {
    let mut h = DefaultHasher::new();
    bare.hash(&mut h);
    let hash = h.finish();
    // Unit tests fold the hashes into three, so every test also exercises names that share
    // an entry.
    if cfg!(test) {
        hash % 3
    } else {
        hash
    }
}

/// Maps IPv4-mapped IPv6 addresses to IPv4 so a dual-stack socket's peers match v4 records.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str, gw: &str, domain: Option<&str>) -> NetworkDns {
        NetworkDns {
            name: name.into(),
            subnets: vec![subnet.parse().unwrap()],
            listen: vec![gw.parse().unwrap()],
            domain: domain.map(Into::into),
            upstreams: vec![],
            internal: false,
        }
    }

    fn ep(key: &str, names: &[&str], addrs: &[&str]) -> EndpointDns {
        EndpointDns {
            key: key.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            addrs: addrs.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    /// The incremental index after any sequence of adds, replacements and removals equals a
    /// from-scratch rebuild of the same endpoints.
    mod incremental {
        use super::*;
        use proptest::prelude::*;

        fn arb_op() -> impl Strategy<Value = (bool, u8, Vec<u8>, Vec<u8>)> {
            (
                any::<bool>(),
                0u8..6,
                proptest::collection::vec(0u8..5, 0..3),
                proptest::collection::vec(0u8..6, 0..3),
            )
        }

        proptest! {
            #[test]
            fn matches_a_full_rebuild(ops in proptest::collection::vec(arb_op(), 0..40)) {
                let mut recs = NetRecords::new(&net("n", "10.9.0.0/24", "10.9.0.1", Some("n.netd")));
                for (add, key, names, addrs) in ops {
                    let key = format!("k{key}");
                    if add {
                        // Name4.n is also the zone form of Name4: both must answer it.
                        let names: Vec<String> = names
                            .iter()
                            .map(|n| if *n == 4 { "Name4.n".into() } else { format!("Name{n}") })
                            .collect();
                        let addrs: Vec<IpAddr> =
                            addrs.iter().map(|a| format!("10.9.0.{}", a + 2).parse().unwrap()).collect();
                        recs = recs.with_endpoint(EndpointDns { key, names, addrs });
                    } else if let Some(next) = recs.without_endpoint(&key) {
                        recs = next;
                    }
                    let mut fresh = recs.clone();
                    fresh.reindex();
                    prop_assert_eq!(&recs.by_ip, &fresh.by_ip);
                    prop_assert_eq!(&recs.holders, &fresh.holders);
                    prop_assert_eq!(recs.dotted, fresh.dotted);
                    // An independent oracle: the straightforward definition of each index.
                    let mut names: std::collections::HashMap<String, Vec<IpAddr>> = Default::default();
                    let mut by_ip: std::collections::HashMap<IpAddr, Vec<String>> = Default::default();
                    for ep in recs.endpoints.values() {
                        for n in &ep.names {
                            let mut forms = vec![n.clone(), format!("{n}.{}", recs.zone)];
                            forms.extend(recs.domain.iter().map(|d| format!("{n}.{d}")));
                            for form in forms {
                                let v = names.entry(form).or_default();
                                for a in &ep.addrs {
                                    if !v.contains(a) {
                                        v.push(*a);
                                    }
                                }
                            }
                        }
                        for a in &ep.addrs {
                            let keys = by_ip.entry(*a).or_default();
                            if !keys.contains(&ep.key) {
                                keys.push(ep.key.clone());
                            }
                        }
                    }
                    // Every form of every name answers exactly its holders' addresses; a name
                    // whose holders have no address is unknown.
                    for (form, want) in &names {
                        let want = Some(want.clone()).filter(|w| !w.is_empty());
                        prop_assert_eq!(recs.addrs(form), want, "{}", form);
                    }
                    for probe in ["name9", "name9.n", "n", "name1.other"] {
                        if !names.contains_key(probe) {
                            prop_assert_eq!(recs.addrs(probe), None, "{}", probe);
                        }
                    }
                    let got: std::collections::HashMap<IpAddr, Vec<String>> = recs
                        .by_ip
                        .iter()
                        .map(|(k, v)| (*k, v.as_slice().iter().map(|e| e.key.clone()).collect()))
                        .collect();
                    // The PTR target is the first holder's (by key) first name in the zone.
                    for (addr, keys) in &by_ip {
                        let mut keys = keys.clone();
                        keys.sort();
                        let want = keys.iter().find_map(|k| {
                            let first = recs.endpoints.get(k.as_str())?.names.first()?;
                            Some(format!("{first}.{}.", recs.zone))
                        });
                        prop_assert_eq!(recs.ptr_target(addr).map(|n| n.to_ascii()), want);
                    }
                    prop_assert_eq!(got, by_ip);
                }
            }
        }
    }

    /// A service alias that hundreds of replicas share answers every replica in key order,
    /// through additions, a replacement and removals in any order.
    #[test]
    fn an_alias_many_replicas_share() {
        let key = |i: usize| format!("r{i:04}");
        let addr = |i: usize| format!("10.1.{}.{}", i / 200, i % 200 + 2);
        let mut n = NetRecords::new(&net("neta", "10.1.0.0/16", "10.1.0.1", None));
        // Added out of key order, so insertions land inside the list, not only at its end.
        for i in (0..300).map(|i| (i * 7) % 300) {
            n = n.with_endpoint(ep(&key(i), &[&format!("c{i}"), "web"], &[&addr(i)]));
        }
        let want = |n: &NetRecords, ids: &[usize]| {
            let got = n.addrs("web").unwrap_or_default();
            let want: Vec<IpAddr> = ids.iter().map(|&i| addr(i).parse().unwrap()).collect();
            assert_eq!(got, want);
        };
        want(&n, &(0..300).collect::<Vec<_>>());
        n = n.with_endpoint(ep(&key(150), &["c150", "web"], &["10.9.0.1"]));
        assert_eq!(n.addrs("c150"), Some(vec!["10.9.0.1".parse().unwrap()]));
        for i in (0..300).filter(|i| i % 3 != 0) {
            n = n.without_endpoint(&key(i)).unwrap();
        }
        let left: Vec<usize> = (0..300).filter(|i| i % 3 == 0).collect();
        let mut want_addrs: Vec<IpAddr> = left.iter().map(|&i| addr(i).parse().unwrap()).collect();
        want_addrs[50] = "10.9.0.1".parse().unwrap();
        assert_eq!(n.addrs("web"), Some(want_addrs));
        for &i in &left[1..] {
            n = n.without_endpoint(&key(i)).unwrap();
        }
        want(&n, &[0]);
        assert!(matches!(
            n.holders.get(&name_hash("web")),
            Some(Holders::One(_))
        ));
        n = n.without_endpoint(&key(0)).unwrap();
        assert_eq!(n.addrs("web"), None);
    }

    fn records() -> Records {
        let a = NetRecords::new(&net("neta", "10.1.0.0/24", "10.1.0.1", Some("a.netd")))
            .with_endpoint(ep("c1", &["web", "svc"], &["10.1.0.2", "fd00:1::2"]))
            .with_endpoint(ep("c2", &["db", "svc"], &["10.1.0.3"]))
            .with_endpoint(ep("both", &["both"], &["10.1.0.9"]));
        let b = NetRecords::new(&net("netb", "10.2.0.0/24", "10.2.0.1", None))
            .with_endpoint(ep("c3", &["cache"], &["10.2.0.2"]))
            .with_endpoint(ep("both", &["both"], &["10.2.0.9"]));
        let mut r = Records::default();
        r.networks.insert("neta".into(), Arc::new(a));
        r.networks.insert("netb".into(), Arc::new(b));
        r
    }

    fn ask(r: &Records, src: &str, q: &str, t: RecordType) -> Local {
        let scope = r.scope(src.parse().unwrap());
        r.answer(&scope, &Name::from_ascii(q).unwrap(), t, 5, 0)
    }

    fn addrs_of(l: &Local) -> Vec<String> {
        match l {
            Local::Answer { records, .. } => records.iter().map(|r| r.data.to_string()).collect(),
            Local::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn names_aliases_and_qualified_forms_resolve_case_insensitively() {
        let r = records();
        assert_eq!(
            addrs_of(&ask(&r, "10.1.0.3", "WeB", RecordType::A)),
            ["10.1.0.2"]
        );
        assert_eq!(
            addrs_of(&ask(&r, "10.1.0.3", "web.NETA.", RecordType::A)),
            ["10.1.0.2"]
        );
        assert_eq!(
            addrs_of(&ask(&r, "10.1.0.3", "web.a.netd", RecordType::AAAA)),
            ["fd00:1::2"]
        );
        let mut svc = addrs_of(&ask(&r, "10.1.0.3", "svc", RecordType::A));
        svc.sort();
        assert_eq!(svc, ["10.1.0.2", "10.1.0.3"]);
    }

    #[test]
    fn rotation_changes_the_first_address() {
        let r = records();
        let scope = r.scope("10.1.0.2".parse().unwrap());
        let name = Name::from_ascii("svc").unwrap();
        let first = |rot| addrs_of(&r.answer(&scope, &name, RecordType::A, 5, rot))[0].clone();
        assert_ne!(first(0), first(1));
    }

    #[test]
    fn known_name_without_family_is_nodata_not_forwarded() {
        let r = records();
        assert_eq!(
            ask(&r, "10.1.0.2", "db", RecordType::AAAA),
            Local::Answer {
                rcode: ResponseCode::NoError,
                records: vec![]
            }
        );
        assert_eq!(
            ask(&r, "10.1.0.2", "db", RecordType::MX),
            Local::Answer {
                rcode: ResponseCode::NoError,
                records: vec![]
            }
        );
    }

    #[test]
    fn scope_isolates_networks_and_joins_a_multi_network_container() {
        let r = records();
        assert_eq!(ask(&r, "10.1.0.2", "cache", RecordType::A), Local::Forward);
        assert_eq!(
            addrs_of(&ask(&r, "10.2.0.2", "cache", RecordType::A)),
            ["10.2.0.2"]
        );
        // "both" is on A and B: asking from its A address resolves B's names.
        assert_eq!(
            addrs_of(&ask(&r, "10.1.0.9", "cache", RecordType::A)),
            ["10.2.0.2"]
        );
        assert_eq!(
            addrs_of(&ask(&r, "10.2.0.9", "web", RecordType::A)),
            ["10.1.0.2"]
        );
        // The host on a gateway address, an unregistered address in a subnet, a stranger.
        assert_eq!(r.scope("10.1.0.1".parse().unwrap()).len(), 1);
        assert_eq!(r.scope("10.2.0.77".parse().unwrap()).len(), 1);
        assert!(r.scope("192.0.2.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn unknown_names_in_a_network_zone_are_nxdomain() {
        let r = records();
        assert_eq!(
            ask(&r, "10.1.0.2", "nope.neta", RecordType::A),
            Local::Answer {
                rcode: ResponseCode::NXDomain,
                records: vec![]
            }
        );
        assert_eq!(
            ask(&r, "10.1.0.2", "nope.a.netd", RecordType::A),
            Local::Answer {
                rcode: ResponseCode::NXDomain,
                records: vec![]
            }
        );
        assert_eq!(
            ask(&r, "10.1.0.2", "example.com", RecordType::A),
            Local::Forward
        );
        // Another network's zone is not ours for this client: forwarded, not answered.
        assert_eq!(
            ask(&r, "10.1.0.2", "nope.netb", RecordType::A),
            Local::Forward
        );
    }

    #[test]
    fn ptr_and_reverse_zones() {
        let r = records();
        assert_eq!(
            addrs_of(&ask(
                &r,
                "10.1.0.3",
                "2.0.1.10.in-addr.arpa",
                RecordType::PTR
            )),
            ["web.neta."]
        );
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(
            addrs_of(&ask(&r, "10.1.0.3", v6, RecordType::PTR)),
            ["web.neta."]
        );
        assert_eq!(
            ask(&r, "10.1.0.3", "77.0.1.10.in-addr.arpa", RecordType::PTR),
            Local::Answer {
                rcode: ResponseCode::NXDomain,
                records: vec![]
            }
        );
        // Another network's container: NXDOMAIN for this client, but still never forwarded.
        assert_eq!(
            ask(&r, "10.1.0.3", "2.0.2.10.in-addr.arpa", RecordType::PTR),
            Local::Answer {
                rcode: ResponseCode::NXDomain,
                records: vec![]
            }
        );
        assert_eq!(
            ask(&r, "10.1.0.3", "1.2.0.192.in-addr.arpa", RecordType::PTR),
            Local::Forward
        );
        assert_eq!(
            ask(&r, "10.1.0.3", "1.10.in-addr.arpa", RecordType::PTR),
            Local::Answer {
                rcode: ResponseCode::NoError,
                records: vec![]
            }
        );
    }

    #[test]
    fn removing_an_endpoint_removes_its_names() {
        let r = records();
        let a = r.networks["neta"].without_endpoint("c1").unwrap();
        assert!(a.addrs("web").is_none());
        assert_eq!(
            a.addrs("svc").unwrap(),
            ["10.1.0.3".parse::<IpAddr>().unwrap()]
        );
        assert!(a.without_endpoint("c1").is_none());
    }

    #[test]
    fn name_validation() {
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("my_container").is_ok());
        assert!(validate_name("a.b.c.").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a..b").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name(&"x".repeat(64)).is_err());
    }
}

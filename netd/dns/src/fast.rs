//! UDP fast path: the common questions answered straight from wire bytes to wire bytes.
//!
//! hickory-server's per-request machinery (decoding into a `MessageRequest`, an async handler,
//! records built and encoded one by one) costs more CPU than the whole answer is worth for a
//! container asking `A web`. Here the header and the single question are parsed in place, the
//! answer comes from the same records snapshot and the same `Records::find` as the handler, and
//! the reply is written by hand (the answer's owner is a pointer to the question). Forwarded
//! names found in the cache are served from their pre-encoded form with the ID, question case
//! and TTLs patched.
//!
//! Anything unusual (other opcodes, more than one question, compression in the question, labels
//! beyond `[A-Za-z0-9_-]`, EDNS options other than cookies, other classes, zone transfers,
//! replies that would need truncation, cache misses) is [`Outcome::Slow`]: the caller hands the
//! datagram to the hickory path, which stays the reference. Unit tests compare both paths.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};

use crate::handler::{upstreams_of, Shared, MAX_UDP_PAYLOAD};
use crate::records::{Data, Found};

/// What the fast path did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The reply is in the output buffer.
    Reply,
    /// Nothing is sent (shorter than a header), as hickory-server does.
    Drop,
    /// Hand it to the hickory path.
    Slow,
}

/// Header flag bits (byte 2 and byte 3 of the message).
const QR: u8 = 0x80;
const AA: u8 = 0x04;
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const AD: u8 = 0x20;
const CD: u8 = 0x10;
const OPT: u16 = 41;
const COOKIE: u16 = 10;

/// A question the fast path can take.
struct Question<'p> {
    id: [u8; 2],
    rd: bool,
    cd: bool,
    /// The question section as sent (name, type, class).
    question: &'p [u8],
    /// Lowercase dotted name without trailing dot, as `records::key_of` makes it.
    key: [u8; 256],
    key_len: usize,
    qtype: RecordType,
    /// The client's EDNS payload size, when it sent an OPT record.
    edns: Option<u16>,
}

impl Question<'_> {
    fn key(&self) -> &str {
        // Only [a-z0-9_-] and dots are ever written into the key.
        std::str::from_utf8(&self.key[..self.key_len]).unwrap_or("")
    }

    /// Largest reply this client takes over UDP.
    fn limit(&self) -> usize {
        usize::from(self.edns.map_or(512, |p| p.clamp(512, MAX_UDP_PAYLOAD)))
    }
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Question types answered on the fast path; others (zone transfers, meta types, numbers
/// hickory may treat specially) take the hickory path.
fn fast_qtype(t: u16) -> bool {
    matches!(t, 1 | 2 | 5 | 6 | 12 | 15 | 16 | 28 | 33 | 64 | 65 | 255)
}

/// Parses a plain one-question query; Err says what to do instead.
fn parse(p: &[u8]) -> Result<Question<'_>, Outcome> {
    if p.len() < 12 {
        return Err(Outcome::Drop);
    }
    let slow = Outcome::Slow;
    if p[2] & QR != 0 || (p[2] >> 3) & 0x0F != 0 {
        return Err(slow);
    }
    let counts = [be16(p, 4), be16(p, 6), be16(p, 8), be16(p, 10)];
    let [Some(1), Some(0), Some(0), Some(ar)] = counts else {
        return Err(slow);
    };
    if ar > 1 {
        return Err(slow);
    }
    let mut key = [0u8; 256];
    let mut key_len = 0;
    let mut at = 12;
    loop {
        let len = usize::from(*p.get(at).ok_or(slow)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 || at + 1 + len - 12 > 254 {
            return Err(slow);
        }
        let label = p.get(at + 1..at + 1 + len).ok_or(slow)?;
        if key_len > 0 {
            key[key_len] = b'.';
            key_len += 1;
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(slow);
            }
            key[key_len] = b.to_ascii_lowercase();
            key_len += 1;
        }
        at += 1 + len;
    }
    let qtype = be16(p, at).ok_or(slow)?;
    let qclass = be16(p, at + 2).ok_or(slow)?;
    if !fast_qtype(qtype) || qclass != u16::from(DNSClass::IN) {
        return Err(slow);
    }
    let question = &p[12..at + 4];
    at += 4;
    let mut edns = None;
    if ar == 1 {
        // OPT: root owner, type 41, class = payload, TTL = ext-rcode/version/flags, options.
        if p.get(at) != Some(&0) || be16(p, at + 1) != Some(OPT) {
            return Err(slow);
        }
        let payload = be16(p, at + 3).ok_or(slow)?;
        let (ext_rcode, version) = (*p.get(at + 5).ok_or(slow)?, *p.get(at + 6).ok_or(slow)?);
        if ext_rcode != 0 || version != 0 {
            return Err(slow);
        }
        let rdlen = usize::from(be16(p, at + 9).ok_or(slow)?);
        at += 11;
        let end = at + rdlen;
        if end != p.len() {
            return Err(slow);
        }
        // Options are not echoed; only cookies (which dig sends by default) stay on this path.
        while at < end {
            let code = be16(p, at).ok_or(slow)?;
            let len = usize::from(be16(p, at + 2).ok_or(slow)?);
            if code != COOKIE || !(8..=40).contains(&len) || at + 4 + len > end {
                return Err(slow);
            }
            at += 4 + len;
        }
        edns = Some(payload);
    }
    if at != p.len() {
        return Err(slow);
    }
    Ok(Question {
        id: [p[0], p[1]],
        rd: p[2] & RD != 0,
        cd: p[3] & CD != 0,
        question,
        key,
        key_len,
        qtype: RecordType::from(qtype),
        edns,
    })
}

/// Writes the header and question; counts are patched by `finish`.
fn start(out: &mut Vec<u8>, q: &Question<'_>, aa: bool, ad: bool, rcode: ResponseCode) {
    out.clear();
    out.extend_from_slice(&q.id);
    out.push(QR | if aa { AA } else { 0 } | if q.rd { RD } else { 0 });
    out.push(RA | if ad { AD } else { 0 } | if q.cd { CD } else { 0 } | rcode.low());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(q.question);
}

/// Appends the OPT record when the client used EDNS, sets the counts and checks the size.
fn finish(out: &mut Vec<u8>, q: &Question<'_>, counts: [u16; 3]) -> Outcome {
    let mut ar = counts[2];
    if let Some(payload) = q.edns {
        let payload = payload.clamp(512, MAX_UDP_PAYLOAD).to_be_bytes();
        out.extend_from_slice(&[0, 0, 41, payload[0], payload[1], 0, 0, 0, 0, 0, 0]);
        ar += 1;
    }
    if out.len() > q.limit() {
        // hickory truncates and sets TC; leave that to it.
        return Outcome::Slow;
    }
    out[6..8].copy_from_slice(&counts[0].to_be_bytes());
    out[8..10].copy_from_slice(&counts[1].to_be_bytes());
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    Outcome::Reply
}

fn error(out: &mut Vec<u8>, q: &Question<'_>, rcode: ResponseCode) -> Outcome {
    start(out, q, false, false, rcode);
    finish(out, q, [0, 0, 0])
}

/// Answers `packet` from `src` into `out` when it is a plain question with a local answer or a
/// cached forwarded one.
pub(crate) fn answer(
    shared: &Shared,
    packet: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> Outcome {
    let q = match parse(packet) {
        Ok(q) => q,
        Err(outcome) => return outcome,
    };
    let records = shared.records.load();
    let scope = records.scope(src.ip());
    if scope.is_empty() {
        return error(out, &q, ResponseCode::Refused);
    }
    let rotate = shared.rotation.fetch_add(1, Ordering::Relaxed);
    match records.find(&scope, q.key(), None, q.qtype, rotate) {
        Found::Answer { rcode, data } => {
            start(out, &q, true, false, rcode);
            let ttl = shared.local_ttl.to_be_bytes();
            let mut n: u16 = 0;
            match data {
                Data::Empty => {}
                Data::Addrs(addrs) => {
                    for a in addrs {
                        out.extend_from_slice(&[0xC0, 0x0C]);
                        match a {
                            IpAddr::V4(v4) => {
                                out.extend_from_slice(&[0, 1, 0, 1]);
                                out.extend_from_slice(&ttl);
                                out.extend_from_slice(&[0, 4]);
                                out.extend_from_slice(&v4.octets());
                            }
                            IpAddr::V6(v6) => {
                                out.extend_from_slice(&[0, 28, 0, 1]);
                                out.extend_from_slice(&ttl);
                                out.extend_from_slice(&[0, 16]);
                                out.extend_from_slice(&v6.octets());
                            }
                        }
                        n += 1;
                    }
                }
                Data::Ptrs(targets) => {
                    // Several targets could share a suffix that hickory would compress; rare
                    // (one address in several networks of the scope), so left to it.
                    if targets.len() > 1 {
                        return Outcome::Slow;
                    }
                    for t in targets {
                        out.extend_from_slice(&[0xC0, 0x0C, 0, 12, 0, 1]);
                        out.extend_from_slice(&ttl);
                        let len_at = out.len();
                        out.extend_from_slice(&[0, 0]);
                        for label in t.iter() {
                            out.push(label.len() as u8);
                            out.extend_from_slice(label);
                        }
                        out.push(0);
                        let len = (out.len() - len_at - 2) as u16;
                        out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
                        n += 1;
                    }
                }
            }
            finish(out, &q, [n, 0, 0])
        }
        Found::Forward => {
            let Some(upstreams) = upstreams_of(shared, &scope) else {
                return error(out, &q, ResponseCode::Refused);
            };
            drop(scope);
            drop(records);
            if upstreams.is_empty() {
                return Outcome::Slow;
            }
            let key =
                shared
                    .forwarder
                    .cache_key(&upstreams, q.key().to_string(), q.qtype, DNSClass::IN);
            let Some((wire, age)) = shared.forwarder.cached_wire(&key) else {
                return Outcome::Slow;
            };
            let qlen = q.question.len();
            if wire.question_len != qlen
                || !wire.bytes[12..12 + qlen].eq_ignore_ascii_case(q.question)
            {
                return Outcome::Slow;
            }
            start(out, &q, false, wire.authentic_data, wire.rcode);
            out.extend_from_slice(&wire.bytes[12 + qlen..]);
            for &off in &wire.ttl_offsets {
                let ttl = u32::from_be_bytes([out[off], out[off + 1], out[off + 2], out[off + 3]]);
                out[off..off + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
            }
            finish(out, &q, wire.counts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Answer, CacheKey};
    use crate::handler::answer_udp_slow;
    use crate::{Dns, DnsConfig, EndpointDns, NetworkDns};
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record};
    use proptest::prelude::*;

    const UP: &str = "192.0.2.53:53";

    fn net(name: &str, subnet: &str, gw: &str, domain: Option<&str>, internal: bool) -> NetworkDns {
        NetworkDns {
            name: name.into(),
            subnets: vec![subnet.parse().unwrap()],
            listen: vec![],
            domain: domain.map(Into::into),
            upstreams: vec![UP.parse().unwrap()],
            internal,
        }
        .with_gw(gw)
    }

    trait WithGw {
        fn with_gw(self, gw: &str) -> Self;
    }
    impl WithGw for NetworkDns {
        // The gateway counts for scope through `listen`; nothing is bound because the tests
        // never call add_network with it (see `lab`).
        fn with_gw(mut self, gw: &str) -> Self {
            self.listen = vec![gw.parse().unwrap()];
            self
        }
    }

    fn ep(key: &str, names: &[&str], addrs: &[&str]) -> EndpointDns {
        EndpointDns {
            key: key.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            addrs: addrs.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    /// A DNS with networks A (domain a.netd), B and an internal one, and a warm cache; records
    /// are registered straight into the snapshot, so nothing is bound.
    fn lab() -> Dns {
        let dns = Dns::new(DnsConfig::default());
        for n in [
            net("neta", "10.1.0.0/24", "10.1.0.1", Some("a.netd"), false),
            net("netb", "10.2.0.0/24", "10.2.0.1", None, false),
            net("inner", "10.3.0.0/24", "10.3.0.1", None, true),
            net("six", "fd00:6::/64", "fd00:6::1", None, false),
        ] {
            dns.update(|r| {
                r.networks.insert(
                    n.name.clone(),
                    std::sync::Arc::new(crate::records::NetRecords::new(&n)),
                );
            });
        }
        let eps = [
            (
                "neta",
                ep("c1", &["web", "svc", "abc123"], &["10.1.0.2", "fd00:1::2"]),
            ),
            ("neta", ep("c2", &["db", "svc"], &["10.1.0.3"])),
            ("neta", ep("both", &["both"], &["10.1.0.9"])),
            ("netb", ep("c3", &["cache"], &["10.2.0.2"])),
            ("netb", ep("both", &["both"], &["10.2.0.9"])),
            ("inner", ep("c4", &["secret"], &["10.3.0.2"])),
            ("six", ep("c5", &["v6only"], &["fd00:6::2"])),
        ];
        for (n, e) in eps {
            dns.add_endpoint(n, e).unwrap();
        }
        let many: Vec<String> = (0..60).map(|i| format!("10.1.0.{}", 100 + i)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        dns.add_endpoint("neta", ep("big", &["big"], &many))
            .unwrap();

        let shared = &dns.inner.shared;
        let name = |s: &str| Name::from_ascii(s).unwrap();
        let a = |n: &str, ttl, ip: &str| {
            Record::from_rdata(name(n), ttl, RData::A(A(ip.parse().unwrap())))
        };
        let ups = [UP.parse().unwrap()];
        let put = |q: &str, t: RecordType, answer: Answer| {
            let key: CacheKey = shared
                .forwarder
                .cache_key(&ups, q.to_string(), t, DNSClass::IN);
            shared.forwarder.cache_put(key, &answer);
        };
        put(
            "example.com",
            RecordType::A,
            Answer {
                rcode: ResponseCode::NoError,
                answers: vec![
                    a("example.com.", 300, "192.0.2.1"),
                    a("example.com.", 200, "192.0.2.2"),
                ],
                authorities: vec![],
                additionals: vec![],
                authentic_data: true,
            },
        );
        put(
            "www.example.org",
            RecordType::A,
            Answer {
                rcode: ResponseCode::NoError,
                answers: vec![
                    Record::from_rdata(
                        name("www.Example.org."),
                        60,
                        RData::CNAME(CNAME(name("cdn.example.net."))),
                    ),
                    a("cdn.example.net.", 30, "192.0.2.7"),
                ],
                authorities: vec![],
                additionals: vec![a("ns.example.org.", 100, "192.0.2.8")],
                authentic_data: false,
            },
        );
        let soa = Record::from_rdata(
            name("example.com."),
            900,
            RData::SOA(SOA::new(
                name("ns.example.com."),
                name("hostmaster.example.com."),
                1,
                2,
                3,
                4,
                300,
            )),
        );
        put(
            "nothere.example.com",
            RecordType::A,
            Answer {
                rcode: ResponseCode::NXDomain,
                answers: vec![],
                authorities: vec![soa],
                additionals: vec![],
                authentic_data: false,
            },
        );
        dns
    }

    fn query(
        name: &str,
        t: RecordType,
        edns: Option<u16>,
        rd: bool,
        cd: bool,
        cookie: bool,
    ) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x4242;
        m.metadata.recursion_desired = rd;
        m.metadata.checking_disabled = cd;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            if cookie {
                e.options_mut()
                    .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                        10,
                        vec![1, 2, 3, 4, 5, 6, 7, 8],
                    ));
            }
            m.set_edns(e);
        }
        let mut bytes = m.to_vec().unwrap();
        if let Some(p) = edns {
            // hickory raises payloads below 512 when encoding; put the client's value back.
            let at = bytes.len() - if cookie { 12 } else { 0 } - 8;
            bytes[at..at + 2].copy_from_slice(&p.to_be_bytes());
        }
        bytes
    }

    /// Runs both paths with the same rotation; asserts that a fast reply equals the slow one.
    async fn compare(dns: &Dns, packet: &[u8], src: &str) -> Outcome {
        let shared = &dns.inner.shared;
        let src: SocketAddr = src.parse().unwrap();
        shared.rotation.store(7, Ordering::Relaxed);
        let mut out = Vec::new();
        let outcome = answer(shared, packet, src, &mut out);
        shared.rotation.store(7, Ordering::Relaxed);
        let slow = answer_udp_slow(&crate::handler::Handler(shared.clone()), packet, src).await;
        match outcome {
            Outcome::Reply => {
                let slow = slow.expect("slow path answered nothing where the fast path did");
                let f = Message::from_vec(&out).expect("fast reply decodes");
                let s = Message::from_vec(&slow).unwrap();
                assert_eq!(f, s, "fast and slow replies differ for {packet:02x?}");
                let ttls = |m: &Message| m.answers.iter().map(|r| r.ttl).collect::<Vec<_>>();
                assert_eq!(ttls(&f), ttls(&s));
                // Not byte for byte: hickory does not point the first answer's owner at the
                // question, the fast path does, so its replies are a little smaller.
                assert!(out.len() <= slow.len());
            }
            Outcome::Drop => assert!(slow.is_none(), "fast path dropped what hickory answers"),
            Outcome::Slow => {}
        }
        outcome
    }

    #[tokio::test]
    async fn fast_answers_equal_hickory_answers() {
        use RecordType::*;
        let dns = lab();
        let v6ptr = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa";
        let fast_cases: &[(&str, RecordType, &str)] = &[
            ("web", A, "10.1.0.3:5000"),
            ("WeB", A, "10.1.0.3:5000"),
            ("web.neta", A, "10.1.0.3:5000"),
            ("WEB.NetA.", A, "10.1.0.3:5000"),
            ("web.a.netd", AAAA, "10.1.0.3:5000"),
            ("abc123", ANY, "10.1.0.3:5000"),
            ("svc", A, "10.1.0.3:5000"),
            ("svc", ANY, "10.1.0.1:5000"),
            ("db", AAAA, "10.1.0.2:5000"),
            ("db", MX, "10.1.0.2:5000"),
            ("db", TXT, "10.1.0.2:5000"),
            ("nope.neta", A, "10.1.0.2:5000"),
            ("nope.a.netd", AAAA, "10.1.0.77:5000"),
            ("neta", A, "10.1.0.2:5000"),
            ("a.netd", SOA, "10.1.0.2:5000"),
            ("2.0.1.10.in-addr.arpa", PTR, "10.1.0.3:5000"),
            ("2.0.1.10.in-addr.arpa", A, "10.1.0.3:5000"),
            (v6ptr, PTR, "10.1.0.3:5000"),
            ("77.0.1.10.in-addr.arpa", PTR, "10.1.0.3:5000"),
            ("2.0.2.10.in-addr.arpa", PTR, "10.1.0.3:5000"),
            ("1.10.in-addr.arpa", PTR, "10.1.0.3:5000"),
            ("cache", A, "10.1.0.9:5000"),
            ("web", A, "10.2.0.9:5000"),
            ("v6only", AAAA, "[fd00:6::9]:5000"),
            ("v6only", A, "[fd00:6::9]:5000"),
            ("web", A, "192.0.2.99:5000"),
            ("example.com", A, "198.51.100.1:53"),
            ("secret", A, "10.3.0.2:5000"),
            ("example.com", A, "10.3.0.2:5000"),
            ("example.com", A, "10.1.0.2:5000"),
            ("EXAMPLE.com", A, "10.2.0.2:5000"),
            ("www.example.org", A, "10.1.0.2:5000"),
            ("nothere.example.com", A, "10.1.0.2:5000"),
            ("web", A, "[::ffff:10.1.0.3]:5000"),
        ];
        for &(name, t, src) in fast_cases {
            for edns in [None, Some(1232), Some(4096), Some(100), Some(600)] {
                for (rd, cd, cookie) in [
                    (true, false, false),
                    (false, true, true),
                    (true, true, false),
                ] {
                    let p = query(name, t, edns, rd, cd, cookie && edns.is_some());
                    let outcome = compare(&dns, &p, src).await;
                    assert_eq!(
                        outcome,
                        Outcome::Reply,
                        "{name} {t} from {src} edns {edns:?} not on the fast path"
                    );
                }
            }
        }
        // Left to hickory: misses, oversize answers, other classes, transfers, odd packets.
        let slow_cases: &[(&str, RecordType, &str)] = &[
            ("example.net", A, "10.1.0.2:5000"),
            ("example.com", AAAA, "10.1.0.2:5000"),
            ("1.2.0.192.in-addr.arpa", PTR, "10.1.0.2:5000"),
            ("big", A, "10.1.0.2:5000"),
            ("web", AXFR, "10.1.0.2:5000"),
            ("web", CAA, "10.1.0.2:5000"),
        ];
        for &(name, t, src) in slow_cases {
            let p = query(name, t, None, true, false, false);
            assert_eq!(compare(&dns, &p, src).await, Outcome::Slow, "{name} {t}");
        }
        let mut chaos = query("web", A, None, true, false, false);
        let n = chaos.len();
        chaos[n - 1] = 3; // class CH
        assert_eq!(compare(&dns, &chaos, "10.1.0.2:5000").await, Outcome::Slow);
        // "big" fits in 1232 bytes with EDNS: answered fast then, truncated by hickory without.
        let p = query("big", A, Some(1232), true, false, false);
        assert_eq!(compare(&dns, &p, "10.1.0.2:5000").await, Outcome::Reply);
        assert_eq!(
            compare(&dns, &[0; 11], "10.1.0.2:5000").await,
            Outcome::Drop
        );
    }

    fn mutations() -> impl Strategy<Value = Vec<u8>> {
        let names = prop_oneof![
            Just("web"),
            Just("svc.neta"),
            Just("nope.a.netd"),
            Just("2.0.1.10.in-addr.arpa"),
            Just("example.com"),
            Just("www.example.org"),
        ];
        let base = (
            names,
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            any::<bool>(),
        )
            .prop_map(|(n, t, e, c)| {
                let t = RecordType::from(t % 70);
                query(n, t, e, true, false, c && e.is_some())
            });
        let edits = proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..4);
        (base, edits).prop_map(|(mut p, edits)| {
            for (at, byte, op) in edits {
                let at = at % (p.len() + 1);
                match op {
                    0 if at < p.len() => p[at] = byte,
                    1 => p.insert(at, byte),
                    _ => p.truncate(at),
                }
            }
            p
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn fast_path_never_panics_and_agrees_with_hickory(
            packet in prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), mutations()],
            src in prop_oneof![Just("10.1.0.2:5000"), Just("10.1.0.9:1"), Just("192.0.2.9:53"), Just("10.3.0.2:9")],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            thread_local!(static LAB: Dns = lab());
            LAB.with(|dns| rt.block_on(compare(dns, &packet, src)));
        }
    }
}

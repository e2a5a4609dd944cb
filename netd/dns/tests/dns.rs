//! End-to-end tests of netd's DNS: real sockets in throwaway namespaces, queried with `dig`.
//!
//! Each test builds its own `Lab` (host namespace with bridges and the DNS under test, an outside
//! namespace with fake upstreams, containers on the bridges) and runs the DNS on a thread that
//! joined the host namespace before creating its tokio runtime, so every socket the DNS opens
//! (listeners and upstream pools, on runtime worker threads) lives there.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netd_dns::{Dns, DnsConfig, DnsError, EndpointDns, NetworkDns};
use support::{dig, udp_exchange, FakeUpstream, Lab, Mode};

const PORT: u16 = 5300;

fn cfg() -> DnsConfig {
    DnsConfig {
        port: PORT,
        upstream_timeout: Duration::from_millis(500),
        tcp_idle_timeout: Duration::from_secs(1),
        resolv_conf: "/nonexistent/resolv.conf".into(),
        systemd_resolv_conf: "/nonexistent/systemd-resolv.conf".into(),
        ..DnsConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(
    name: &str,
    subnets: &[&str],
    listen: &[&str],
    domain: Option<&str>,
    upstreams: &[SocketAddr],
    internal: bool,
) -> NetworkDns {
    NetworkDns {
        name: name.into(),
        subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        listen: listen.iter().map(|s| ip(s)).collect(),
        domain: domain.map(Into::into),
        upstreams: upstreams.to_vec(),
        internal,
    }
}

/// A DNS serving network `neta` (10.1.0.0/24, listening on 10.1.0.1) forwarding to `upstream`.
async fn dns_on_neta(upstream: SocketAddr) -> Dns {
    dns_on_neta_with(cfg(), upstream).await
}

/// [`dns_on_neta`] with a given configuration.
async fn dns_on_neta_with(config: DnsConfig, upstream: SocketAddr) -> Dns {
    let dns = Dns::new(config);
    dns.add_network(net(
        "neta",
        &["10.1.0.0/24"],
        &["10.1.0.1"],
        None,
        &[upstream],
        false,
    ))
    .await
    .unwrap();
    dns
}

fn ep(key: &str, names: &[&str], addrs: &[&str]) -> EndpointDns {
    EndpointDns {
        key: key.into(),
        names: names.iter().map(|s| s.to_string()).collect(),
        addrs: addrs.iter().map(|s| ip(s)).collect(),
    }
}

fn assert_status(d: &support::Dig, want: &str) {
    assert_eq!(d.status.as_deref(), Some(want), "dig output:\n{}", d.raw);
}

#[test]
fn names_aliases_case_qualified_nodata_and_ptr() {
    let mut lab = Lab::new("names");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c2 = lab.container("c2", &[("br-a", &["10.1.0.3/24"])]);
    lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let gw = ip("10.1.0.1");

    lab.host.run(|| {
        rt().block_on(async {
            let dns = Dns::new(cfg());
            dns.add_network(net(
                "neta",
                &["10.1.0.0/24"],
                &["10.1.0.1"],
                Some("a.netd"),
                &[up.addr],
                false,
            ))
            .await
            .unwrap();
            dns.add_endpoint("neta", ep("c1", &["web", "svc", "abc123"], &["10.1.0.2"]))
                .unwrap();
            dns.add_endpoint("neta", ep("c2", &["db", "svc"], &["10.1.0.3"]))
                .unwrap();

            for name in [
                "web",
                "WeB",
                "web.neta",
                "WEB.NetA.",
                "web.a.netd",
                "abc123",
            ] {
                let d = dig(&c2, gw, PORT, &[name]);
                assert_status(&d, "NOERROR");
                assert_eq!(d.data("A"), ["10.1.0.2"], "{name}: {}", d.raw);
                assert!(d.flag("aa"), "local answers are authoritative: {}", d.raw);
                assert!(d.ttls.iter().all(|t| *t == 5), "local TTL: {}", d.raw);
            }

            // A service alias shared by two containers: all addresses, order rotated.
            let mut firsts = std::collections::BTreeSet::new();
            for _ in 0..4 {
                let d = dig(&c2, gw, PORT, &["svc"]);
                assert_eq!(d.sorted("A"), ["10.1.0.2", "10.1.0.3"], "{}", d.raw);
                firsts.insert(d.data("A")[0].clone());
            }
            assert_eq!(firsts.len(), 2, "answers should rotate");
            let mut looked = dns.lookup("neta", "SVC");
            looked.sort();
            assert_eq!(looked, [ip("10.1.0.2"), ip("10.1.0.3")]);

            // Known name without an IPv6 address: NOERROR, no answer, not forwarded.
            let d = dig(&c2, gw, PORT, &["db", "AAAA"]);
            assert_status(&d, "NOERROR");
            assert!(d.answers.is_empty(), "{}", d.raw);

            // Unknown name inside a netd zone: NXDOMAIN, not forwarded.
            assert_status(&dig(&c2, gw, PORT, &["nope.neta"]), "NXDOMAIN");
            assert_status(&dig(&c2, gw, PORT, &["nope.a.netd"]), "NXDOMAIN");

            // PTR for a container, NXDOMAIN for an unused address of the subnet.
            let d = dig(&c2, gw, PORT, &["-x", "10.1.0.2"]);
            assert_status(&d, "NOERROR");
            assert_eq!(d.data("PTR"), ["web.neta."]);
            assert_status(&dig(&c2, gw, PORT, &["-x", "10.1.0.77"]), "NXDOMAIN");

            assert_eq!(
                up.count(),
                0,
                "nothing above may be forwarded: {:?}",
                up.seen
            );
            dns.shutdown().await;
        })
    });
}

#[test]
fn scope_follows_the_client_and_strangers_are_refused() {
    let mut lab = Lab::new("scope");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    lab.bridge("br-b", &["10.2.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let c3 = lab.container("c3", &[("br-b", &["10.2.0.2/24"])]);
    let both = lab.container(
        "both",
        &[("br-a", &["10.1.0.9/24"]), ("br-b", &["10.2.0.9/24"])],
    );
    let stranger = lab.stranger("x", "10.55.0.2", "10.55.0.1");
    let host = lab.host.name.clone();
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let (gwa, gwb) = (ip("10.1.0.1"), ip("10.2.0.1"));

    lab.host.run(|| {
        rt().block_on(async {
            let dns = Dns::new(cfg());
            for (n, s, g) in [
                ("neta", "10.1.0.0/24", "10.1.0.1"),
                ("netb", "10.2.0.0/24", "10.2.0.1"),
            ] {
                dns.add_network(net(n, &[s], &[g], None, &[up.addr], false))
                    .await
                    .unwrap();
            }
            dns.add_endpoint("neta", ep("c1", &["web"], &["10.1.0.2"]))
                .unwrap();
            dns.add_endpoint("netb", ep("c3", &["cache"], &["10.2.0.2"]))
                .unwrap();
            dns.add_endpoint("neta", ep("both", &["both"], &["10.1.0.9"]))
                .unwrap();
            dns.add_endpoint("netb", ep("both", &["both"], &["10.2.0.9"]))
                .unwrap();

            // A container on A only cannot see B's names, in any form.
            for name in ["cache", "cache.netb"] {
                let d = dig(&c1, gwa, PORT, &[name]);
                assert!(d.status.is_some(), "{}", d.raw);
                assert!(d.answers.is_empty(), "{name} leaked to A: {}", d.raw);
            }
            let d = dig(&c3, gwb, PORT, &["web"]);
            assert!(d.answers.is_empty(), "web leaked to B: {}", d.raw);

            // A container on A and B resolves both, whichever gateway it asks.
            for gw in [gwa, gwb] {
                assert_eq!(dig(&both, gw, PORT, &["cache"]).data("A"), ["10.2.0.2"]);
                assert_eq!(dig(&both, gw, PORT, &["web"]).data("A"), ["10.1.0.2"]);
            }

            // The host may ask a network's names on its gateway address.
            let d = dig(&host, gwa, PORT, &["-b", "10.1.0.1", "web"]);
            assert_eq!(d.data("A"), ["10.1.0.2"], "{}", d.raw);

            // A client outside every network is refused, for local and forwarded names alike.
            let before = up.count();
            for name in ["web", "www.example.test"] {
                assert_status(&dig(&stranger, gwa, PORT, &[name]), "REFUSED");
            }
            assert_eq!(up.count(), before, "a refused client caused a forward");
            dns.shutdown().await;
        })
    });
}

#[test]
fn records_appear_on_attach_and_vanish_on_detach_without_delay() {
    let mut lab = Lab::new("attach");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let gw = ip("10.1.0.1");

    lab.host.run(|| {
        rt().block_on(async {
            let dns = dns_on_neta(up.addr).await;
            for i in 0..5 {
                let name = format!("tmp{i}");
                let qualified = format!("{name}.neta");
                dns.add_endpoint("neta", ep("tmp", &[&name], &["10.1.0.50"]))
                    .unwrap();
                let d = dig(&c1, gw, PORT, &[&name]);
                assert_eq!(d.data("A"), ["10.1.0.50"], "right after attach: {}", d.raw);
                let d = dig(&c1, gw, PORT, &["-x", "10.1.0.50"]);
                assert_eq!(d.data("PTR"), [format!("{name}.neta.")], "{}", d.raw);

                dns.remove_endpoint("neta", "tmp");
                let d = dig(&c1, gw, PORT, &[&qualified]);
                assert_status(&d, "NXDOMAIN");
                let d = dig(&c1, gw, PORT, &[&name]);
                assert!(d.answers.is_empty(), "right after detach: {}", d.raw);
                assert_status(&dig(&c1, gw, PORT, &["-x", "10.1.0.50"]), "NXDOMAIN");
            }
            // Removing again is a no-op, not an error.
            dns.remove_endpoint("neta", "tmp");
            dns.shutdown().await;
        })
    });
}

#[test]
fn forwards_caches_and_uses_tcp_and_host_resolv_conf() {
    let mut lab = Lab::new("fwd");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    lab.bridge("br-b", &["10.2.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let c3 = lab.container("c3", &[("br-b", &["10.2.0.2/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let gw = ip("10.1.0.1");

    // resolv.conf lists only systemd-resolved's stub: the real upstreams come from its file.
    let dir = std::env::temp_dir().join(format!("netd-dns-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    let systemd = dir.join("systemd-resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.53\nsearch example.org\n").unwrap();
    std::fs::write(&systemd, "nameserver 10.99.0.2\n").unwrap();
    let config = DnsConfig {
        resolv_conf: resolv.clone(),
        systemd_resolv_conf: systemd.clone(),
        ..cfg()
    };

    lab.host.run(|| {
        rt().block_on(async {
            let dns = dns_on_neta_with(config, up.addr).await;
            dns.add_network(net(
                "netb",
                &["10.2.0.0/24"],
                &["10.2.0.1"],
                None,
                &[],
                false,
            ))
            .await
            .unwrap();

            let d = dig(&c1, gw, PORT, &["www.example.test"]);
            assert_status(&d, "NOERROR");
            assert_eq!(d.data("A"), ["198.51.100.7"]);
            assert!(d.flag("ra") && !d.flag("aa"), "{}", d.raw);
            assert_eq!(up.count_name("www.example.test."), 1);

            // Cache hit: same answer, no upstream traffic, TTL counting down from 300.
            let d = dig(&c1, gw, PORT, &["WWW.example.test"]);
            assert_eq!(d.data("A"), ["198.51.100.7"]);
            assert!(d.ttls[0] <= 300, "{}", d.raw);
            assert_eq!(up.count_name("www.example.test."), 1, "{:?}", up.seen);

            // Negative caching (RFC 2308): NXDOMAIN with SOA is cached too.
            assert_status(&dig(&c1, gw, PORT, &["nxthing.example.test"]), "NXDOMAIN");
            assert_status(&dig(&c1, gw, PORT, &["nxthing.example.test"]), "NXDOMAIN");
            assert_eq!(up.count_name("nxthing.example.test."), 1);

            // A query over TCP is forwarded over TCP.
            let d = dig(&c1, gw, PORT, &["+tcp", "tcponly.example.test"]);
            assert_eq!(d.data("A"), ["198.51.100.7"], "{}", d.raw);
            assert_eq!(up.count_proto("tcp", "tcponly.example.test."), 1);
            assert_eq!(up.count_proto("udp", "tcponly.example.test."), 0);

            // A network without upstreams uses the host's (systemd-resolved's) resolvers.
            let d = dig(&c3, ip("10.2.0.1"), PORT, &["other.example.test"]);
            assert_eq!(d.data("A"), ["198.51.100.7"], "{}", d.raw);
            assert_eq!(up.count_name("other.example.test."), 1);
            dns.shutdown().await;
        })
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fails_over_dead_upstreams_and_servfails_when_all_are_dead() {
    let mut lab = Lab::new("failover");
    for (br, gw) in [
        ("br-a", "10.1.0.1/24"),
        ("br-b", "10.2.0.1/24"),
        ("br-c", "10.3.0.1/24"),
    ] {
        lab.bridge(br, &[gw]);
    }
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let c2 = lab.container("c2", &[("br-b", &["10.2.0.2/24"])]);
    let c3 = lab.container("c3", &[("br-c", &["10.3.0.2/24"])]);
    let live = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let silent = FakeUpstream::start(&lab.outside, 5301, Mode::Silent);
    let silent2 = FakeUpstream::start(&lab.outside, 5302, Mode::Silent);
    let servfail = FakeUpstream::start(&lab.outside, 5303, Mode::ServFail);

    lab.host.run(|| {
        rt().block_on(async {
            let dns = Dns::new(cfg());
            let nets = [
                ("neta", "10.1.0", vec![silent.addr, live.addr]),
                ("netb", "10.2.0", vec![silent.addr, silent2.addr]),
                ("netc", "10.3.0", vec![servfail.addr, live.addr]),
            ];
            for (name, p, ups) in &nets {
                dns.add_network(net(
                    name,
                    &[&format!("{p}.0/24")],
                    &[&format!("{p}.1")],
                    None,
                    ups,
                    false,
                ))
                .await
                .unwrap();
            }

            // Dead first upstream: answered by the second within the client's timeout.
            let d = dig(&c1, ip("10.1.0.1"), PORT, &["+time=4", "www.example.test"]);
            assert_eq!(d.data("A"), ["198.51.100.7"], "{}", d.raw);
            assert_eq!(silent.count_name("www.example.test."), 1);

            // All dead: SERVFAIL arrives before dig gives up, rather than silence.
            let d = dig(
                &c2,
                ip("10.2.0.1"),
                PORT,
                &["+time=3", "+tries=1", "dead.example.test"],
            );
            assert_status(&d, "SERVFAIL");
            assert_eq!(silent2.count_name("dead.example.test."), 1);

            // SERVFAIL from the first upstream: the next one answers.
            let d = dig(&c3, ip("10.3.0.1"), PORT, &["www.example.test"]);
            assert_eq!(d.data("A"), ["198.51.100.7"], "{}", d.raw);
            assert_eq!(servfail.count_name("www.example.test."), 1);
            dns.shutdown().await;
        })
    });
}

#[test]
fn caps_inflight_forwards_with_servfail_instead_of_queueing() {
    let mut lab = Lab::new("cap");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let silent = FakeUpstream::start(&lab.outside, 53, Mode::Silent);
    let gw = ip("10.1.0.1");
    let config = DnsConfig {
        max_inflight_forwards: 1,
        upstream_timeout: Duration::from_secs(4),
        ..cfg()
    };

    lab.host.run(|| {
        rt().block_on(async {
            let dns = Dns::new(config);
            dns.add_network(net(
                "neta",
                &["10.1.0.0/24"],
                &["10.1.0.1"],
                None,
                &[silent.addr],
                false,
            ))
            .await
            .unwrap();
            std::thread::scope(|s| {
                let first =
                    s.spawn(|| dig(&c1, gw, PORT, &["+time=8", "+tries=1", "slow.example.test"]));
                silent.wait_for(1);
                // The only forward slot is taken: this one fails at once (dig's 2 s timeout is
                // well under the 4 s upstream timeout it would otherwise wait for).
                let d = dig(
                    &c1,
                    gw,
                    PORT,
                    &["+time=2", "+tries=1", "other.example.test"],
                );
                assert_status(&d, "SERVFAIL");
                assert_eq!(silent.count_name("other.example.test."), 0);
                assert_status(&first.join().unwrap(), "SERVFAIL");
            });
            dns.shutdown().await;
        })
    });
}

#[test]
fn truncates_oversize_udp_answers_and_serves_them_over_tcp() {
    let mut lab = Lab::new("tc");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let gw = ip("10.1.0.1");

    lab.host.run(|| {
        rt().block_on(async {
            let dns = dns_on_neta(up.addr).await;
            for i in 0..40 {
                let addr = format!("10.1.0.{}", 100 + i);
                dns.add_endpoint("neta", ep(&format!("m{i}"), &["many"], &[&addr]))
                    .unwrap();
            }

            // No EDNS: 512 bytes max, so 40 A records do not fit -> TC.
            for opts in [["+ignore", "+noedns"], ["+ignore", "+bufsize=512"]] {
                let d = dig(&c1, gw, PORT, &[opts[0], opts[1], "many"]);
                assert!(d.flag("tc"), "{opts:?}: {}", d.raw);
                assert!(d.answers.len() < 40, "{}", d.raw);
            }
            // EDNS 1232 fits them; TCP always does.
            assert_eq!(dig(&c1, gw, PORT, &["many"]).data("A").len(), 40);
            let d = dig(&c1, gw, PORT, &["+tcp", "+noedns", "many"]);
            assert_eq!(d.data("A").len(), 40, "{}", d.raw);
            assert!(!d.flag("tc"));

            // Forwarded 2.5 KB answer: upstream truncates over UDP, netd retries over TCP, the
            // client gets TC over UDP and the full answer (from cache) over TCP.
            let d = dig(&c1, gw, PORT, &["+ignore", "big.example.test", "TXT"]);
            assert!(d.flag("tc"), "{}", d.raw);
            assert_eq!(up.count_proto("udp", "big.example.test."), 1);
            assert_eq!(up.count_proto("tcp", "big.example.test."), 1);
            let d = dig(&c1, gw, PORT, &["big.example.test", "TXT"]);
            assert_eq!(d.data("TXT").len(), 1, "{}", d.raw);
            assert!(d.data("TXT")[0].contains("24xxxx"), "{}", d.raw);
            assert_eq!(
                up.count_name("big.example.test."),
                2,
                "second answer is cached"
            );
            dns.shutdown().await;
        })
    });
}

#[test]
fn binds_ipv6_gateway_before_the_address_exists() {
    let mut lab = Lab::new("v6");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24", "fd00:1::2/64"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);

    lab.host.run(|| {
        rt().block_on(async {
            let dns = Dns::new(cfg());
            // fd00:1::1 is on no interface yet: freebind makes the bind work, as it does for an
            // address still tentative during DAD.
            dns.add_network(net(
                "neta",
                &["10.1.0.0/24", "fd00:1::/64"],
                &["10.1.0.1", "fd00:1::1"],
                None,
                &[up.addr],
                false,
            ))
            .await
            .unwrap();
            lab.add_addr("br-a", "fd00:1::1/64");
            dns.add_endpoint("neta", ep("c1", &["web"], &["10.1.0.2", "fd00:1::2"]))
                .unwrap();

            let gw6 = ip("fd00:1::1");
            let d = dig(&c1, gw6, PORT, &["web", "AAAA"]);
            assert_eq!(d.data("AAAA"), ["fd00:1::2"], "{}", d.raw);
            assert_eq!(dig(&c1, gw6, PORT, &["web"]).data("A"), ["10.1.0.2"]);
            let d = dig(&c1, gw6, PORT, &["-x", "fd00:1::2"]);
            assert_eq!(d.data("PTR"), ["web.neta."], "{}", d.raw);
            // The client's v6 address scopes it like its v4 one.
            assert_eq!(
                dig(&c1, ip("10.1.0.1"), PORT, &["web", "AAAA"]).data("AAAA"),
                ["fd00:1::2"]
            );
            dns.shutdown().await;
        })
    });
}

#[test]
fn internal_networks_never_forward() {
    let mut lab = Lab::new("internal");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let gw = ip("10.1.0.1");

    lab.host.run(|| {
        rt().block_on(async {
            let dns = Dns::new(cfg());
            dns.add_network(net(
                "neti",
                &["10.1.0.0/24"],
                &["10.1.0.1"],
                None,
                &[up.addr],
                true,
            ))
            .await
            .unwrap();
            dns.add_endpoint("neti", ep("c1", &["web"], &["10.1.0.2"]))
                .unwrap();
            assert_eq!(dig(&c1, gw, PORT, &["web"]).data("A"), ["10.1.0.2"]);
            assert_eq!(
                dig(&c1, gw, PORT, &["-x", "10.1.0.2"]).data("PTR"),
                ["web.neti."]
            );
            assert_status(&dig(&c1, gw, PORT, &["www.example.test"]), "REFUSED");
            assert_status(&dig(&c1, gw, PORT, &["-x", "192.0.2.1"]), "REFUSED");
            assert_eq!(
                up.count(),
                0,
                "an internal network forwarded: {:?}",
                up.seen
            );
            dns.shutdown().await;
        })
    });
}

/// Pseudo-random bytes without a dependency (xorshift); quality is irrelevant here.
fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

fn query_bytes(names: &[&str]) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    for n in names {
        m.add_query(Query::query(Name::from_ascii(n).unwrap(), RecordType::A));
    }
    m.to_vec().unwrap()
}

fn rcode_of(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

/// Bursts of queries from two clients at once: every query gets its own reply datagram, with
/// its id, its question and the right answer. Under load replies of equal size to one client
/// leave as one UDP GSO message after a short pause that lets a batch gather; the client must
/// still see separate, well-formed datagrams, and no reply may go to the wrong client.
#[test]
fn bursts_get_one_correct_reply_per_query() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    let mut lab = Lab::new("burst");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    lab.container("c2", &[("br-a", &["10.1.0.3/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let target = SocketAddr::new(ip("10.1.0.1"), PORT);
    let clients = [lab.node("c1"), lab.node("c2")];
    // Equal-length names (equal-size answers), half of them unknown (NXDOMAIN).
    let names: Vec<String> = (0..32).map(|i| format!("n{i:02}")).collect();

    lab.host.run(|| {
        rt().block_on(async {
            let dns = dns_on_neta(up.addr).await;
            let known: Vec<&str> = names[..16].iter().map(String::as_str).collect();
            dns.add_endpoint("neta", ep("c1", &known, &["10.1.0.2"]))
                .unwrap();
            std::thread::scope(|s| {
                for (c, node) in clients.iter().enumerate() {
                    let names = &names;
                    s.spawn(move || {
                        node.run(|| {
                            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                            let mut pending = std::collections::HashMap::new();
                            for round in 0..8u16 {
                                for i in 0..64u16 {
                                    let id = (c as u16) << 12 | round << 6 | i;
                                    let name = &names[usize::from(i) % names.len()];
                                    let mut m = Message::query();
                                    m.metadata.id = id;
                                    m.metadata.recursion_desired = true;
                                    let q = Name::from_ascii(format!("{name}.neta.")).unwrap();
                                    m.add_query(Query::query(q, RecordType::A));
                                    sock.send_to(&m.to_vec().unwrap(), target).unwrap();
                                    pending.insert(id, name.clone());
                                }
                                let mut buf = [0u8; 4096];
                                for _ in 0..64 {
                                    let (len, from) = sock.recv_from(&mut buf).expect("a reply");
                                    assert_eq!(from, target);
                                    let r = Message::from_vec(&buf[..len])
                                        .expect("each datagram is one DNS message");
                                    let name = pending
                                        .remove(&r.metadata.id)
                                        .expect("reply to a query of this client, once");
                                    assert_eq!(
                                        r.queries[0].name().to_ascii(),
                                        format!("{name}.neta.")
                                    );
                                    let known = names[..16].contains(&name);
                                    let rcode = u16::from(r.metadata.response_code);
                                    assert_eq!(rcode, if known { 0 } else { 3 }, "{name}");
                                    assert_eq!(r.answers.len(), usize::from(known), "{name}");
                                }
                            }
                            assert!(pending.is_empty());
                        })
                    });
                }
            });
            dns.shutdown().await;
        })
    });
}

/// The load hook (the daemon trims its heap after a burst) is told about bursts, rate-limited,
/// and never about queries that arrive one at a time.
#[test]
fn load_hook_hears_of_bursts_not_of_single_queries() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let mut lab = Lab::new("loadhook");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let target = SocketAddr::new(ip("10.1.0.1"), PORT);
    let client = lab.node("c1");
    let told = Arc::new(AtomicUsize::new(0));
    let counter = told.clone();

    lab.host.run(|| {
        rt().block_on(async {
            let config = DnsConfig {
                on_load: Some(netd_dns::LoadHook(Arc::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                }))),
                ..cfg()
            };
            let dns = dns_on_neta_with(config, up.addr).await;
            dns.add_endpoint("neta", ep("c1", &["web"], &["10.1.0.2"]))
                .unwrap();
            let told = told.clone();
            std::thread::scope(|s| {
                s.spawn(|| {
                    client.run(|| {
                        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                        let query = |id: u16| {
                            let mut m = Message::query();
                            m.metadata.id = id;
                            let q = Name::from_ascii("web.neta.").unwrap();
                            m.add_query(Query::query(q, RecordType::A));
                            m.to_vec().unwrap()
                        };
                        let mut buf = [0u8; 4096];
                        // One at a time: every read finds a single query.
                        for id in 0..20 {
                            sock.send_to(&query(id), target).unwrap();
                            sock.recv_from(&mut buf).expect("a reply");
                        }
                        assert_eq!(told.load(Ordering::SeqCst), 0, "no load, no hook");
                        // Bursts of 64 without waiting: some read finds several. The packets
                        // are built before each burst: built between sends (slow in a debug
                        // build) they gave the server time to drain each one (CI saw ten
                        // bursts pass without a read finding two).
                        for round in 0..50u16 {
                            let burst: Vec<Vec<u8>> =
                                (0..64).map(|i| query(round << 6 | i)).collect();
                            for packet in &burst {
                                sock.send_to(packet, target).unwrap();
                            }
                            for _ in 0..64 {
                                sock.recv_from(&mut buf).expect("a reply");
                            }
                            if told.load(Ordering::SeqCst) > 0 {
                                break;
                            }
                        }
                        let after_bursts = told.load(Ordering::SeqCst);
                        assert!(after_bursts > 0, "bursts reach the hook");
                        // Rate-limited: bursts within a few ms tell it a few times at most.
                        assert!(after_bursts <= 10, "told {after_bursts} times");
                    })
                });
            });
            dns.shutdown().await;
        })
    });
}

#[test]
fn garbage_truncated_frames_and_slow_clients_do_not_disturb_others() {
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use support::{closed_by_peer, write_quietly};

    let mut lab = Lab::new("garbage");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    lab.container("c2", &[("br-a", &["10.1.0.3/24"])]);
    let up = FakeUpstream::start(&lab.outside, 53, Mode::Answer);
    let gw = ip("10.1.0.1");
    let target = SocketAddr::new(gw, PORT);
    let attacker = lab.node("c2");

    lab.host.run(|| {
        rt().block_on(async {
            let dns = dns_on_neta(up.addr).await;
            dns.add_endpoint("neta", ep("c1", &["web"], &["10.1.0.2"]))
                .unwrap();

            let stop = AtomicBool::new(false);
            let sent = AtomicUsize::new(0);
            std::thread::scope(|s| {
                let flood = s.spawn(|| {
                    attacker.run(|| {
                        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
                        let mut crafted = query_bytes(&["web."]);
                        crafted[4] = 0xff; // QDCOUNT 65535 with one question present
                        crafted[5] = 0xff;
                        let mut response = query_bytes(&["web."]);
                        response[2] |= 0x80; // QR: a response, must be ignored
                                             // A burst pattern (100 datagrams, short pause) rather than a line-rate
                                             // flood: no UDP server can answer a client whose packets the kernel
                                             // already dropped from a full socket queue.
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(5));
                            for i in 0..100 {
                                let len = (i * 37) % 700;
                                let pkt = match i % 10 {
                                    0 => crafted.clone(),
                                    1 => response.clone(),
                                    _ => noise(&mut seed, len),
                                };
                                let _ = sock.send_to(&pkt, target);
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                });
                let frames = s.spawn(|| {
                    attacker.run(|| {
                        let mut seed = 42u64;
                        let mut held = Vec::new();
                        for i in 0..40 {
                            let mut st = TcpStream::connect(target).unwrap();
                            match i % 4 {
                                // Declares 1024 bytes, sends 10, then stalls.
                                0 => {
                                    write_quietly(&mut st, &[0x04, 0x00]);
                                    write_quietly(&mut st, &noise(&mut seed, 10));
                                    held.push(st);
                                }
                                // Half a length prefix, then hangs up.
                                1 => write_quietly(&mut st, &[0x00]),
                                // A complete frame of garbage, then hangs up.
                                2 => {
                                    write_quietly(&mut st, &[0x00, 0x14]);
                                    write_quietly(&mut st, &noise(&mut seed, 20));
                                }
                                // Connects and says nothing.
                                _ => held.push(st),
                            }
                        }
                        held
                    })
                });

                // Stops the flood even when an assertion below fails, so the scope can end.
                struct StopOnDrop<'a>(&'a AtomicBool);
                impl Drop for StopOnDrop<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Relaxed);
                    }
                }
                let stopper = StopOnDrop(&stop);
                for _ in 0..20 {
                    let d = dig(&c1, gw, PORT, &["web"]);
                    assert_eq!(d.data("A"), ["10.1.0.2"], "during the flood: {}", d.raw);
                    let d = dig(&c1, gw, PORT, &["+tcp", "web"]);
                    assert_eq!(d.data("A"), ["10.1.0.2"], "TCP during the flood: {}", d.raw);
                }
                let held = frames.join().unwrap();
                drop(stopper);
                flood.join().unwrap();
                assert!(sent.load(Ordering::Relaxed) > 1000);

                // Stalled and silent connections are closed by the idle timeout.
                for mut st in held {
                    assert!(
                        closed_by_peer(&mut st, Duration::from_secs(20)),
                        "a stalled TCP client was never disconnected"
                    );
                }
            });

            // Many questions, or a count that lies: FORMERR, not a crash or silence.
            let wait = Duration::from_secs(3);
            let reply = udp_exchange(attacker, target, query_bytes(&["web.", "db."]), wait)
                .expect("no reply to a two-question query");
            assert_eq!(rcode_of(&reply), 1, "FORMERR expected");
            let mut lying = query_bytes(&["web."]);
            lying[5] = 0xff;
            let reply = udp_exchange(attacker, target, lying, wait).expect("no reply");
            assert_eq!(rcode_of(&reply), 1, "FORMERR expected");
            let reply = udp_exchange(attacker, target, query_bytes(&[]), wait).expect("no reply");
            assert_eq!(rcode_of(&reply), 1, "FORMERR expected for zero questions");
            // A maximal-length name is a legitimate query: answered (forwarded), not dropped.
            let long = [
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61),
            ]
            .join(".");
            let d = dig(&c1, gw, PORT, &[&long]);
            assert!(d.status.is_some(), "{}", d.raw);

            assert_eq!(dig(&c1, gw, PORT, &["web"]).data("A"), ["10.1.0.2"]);
            dns.shutdown().await;
        })
    });
}

#[test]
fn lifecycle_errors_and_rebinding() {
    let mut lab = Lab::new("life");
    lab.bridge("br-a", &["10.1.0.1/24"]);
    let c1 = lab.container("c1", &[("br-a", &["10.1.0.2/24"])]);
    let gw = ip("10.1.0.1");
    let host_ns = std::fs::metadata(format!("/run/netns/{}", lab.host.name)).unwrap();

    lab.host.run(|| {
        rt().block_on(async {
            // Runtime workers were spawned by a thread inside the host namespace: they are in it.
            use std::os::unix::fs::MetadataExt;
            let worker_ns = tokio::spawn(async {
                std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
            })
            .await
            .unwrap();
            assert_eq!(worker_ns, host_ns.ino());

            let neta = || net("neta", &["10.1.0.0/24"], &["10.1.0.1"], None, &[], true);
            let dns = Dns::new(cfg());
            dns.add_network(neta()).await.unwrap();
            dns.add_endpoint("neta", ep("c1", &["web"], &["10.1.0.2"]))
                .unwrap();
            assert_eq!(dig(&c1, gw, PORT, &["web"]).data("A"), ["10.1.0.2"]);

            let err = dns.add_network(neta()).await.unwrap_err();
            assert!(matches!(err, DnsError::NetworkExists(_)), "{err}");
            let err = dns
                .add_endpoint("nope", ep("c9", &["x"], &["10.9.0.2"]))
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "adding DNS names of endpoint c9 on network nope: no such network"
            );
            let err = dns
                .add_endpoint("neta", ep("c9", &["bad name"], &["10.1.0.9"]))
                .unwrap_err();
            assert!(matches!(err, DnsError::InvalidName { .. }), "{err}");
            assert!(dns.lookup("neta", "bad name").is_empty());
            let mut bad_domain = neta();
            bad_domain.name = "netz".into();
            bad_domain.domain = Some("a..b".into());
            let err = dns.add_network(bad_domain).await.unwrap_err();
            assert!(matches!(err, DnsError::InvalidNetwork { .. }), "{err}");

            // Someone else holds the port: a clear error, and nothing registered.
            let other = Dns::new(cfg());
            let err = other.add_network(neta()).await.unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("binding DNS udp listener for network neta on 10.1.0.1:5300"),
                "{err}"
            );
            assert!(other
                .add_endpoint("neta", ep("c1", &["web"], &["10.1.0.2"]))
                .is_err());

            // Removing stops the listener and drops the records; re-adding binds again.
            dns.remove_network("neta").await;
            assert!(dns.lookup("neta", "web").is_empty());
            let d = dig(&c1, gw, PORT, &["+time=1", "web"]);
            assert!(
                d.status.is_none(),
                "still answering after removal: {}",
                d.raw
            );
            dns.add_network(neta()).await.unwrap();
            dns.add_endpoint("neta", ep("c1", &["web"], &["10.1.0.2"]))
                .unwrap();
            assert_eq!(dig(&c1, gw, PORT, &["web"]).data("A"), ["10.1.0.2"]);
            assert_eq!(dig(&c1, gw, PORT, &["+tcp", "web"]).data("A"), ["10.1.0.2"]);

            dns.shutdown().await;
            let d = dig(&c1, gw, PORT, &["+time=1", "web"]);
            assert!(
                d.status.is_none(),
                "still answering after shutdown: {}",
                d.raw
            );
            dns.remove_network("neta").await;
        })
    });
}

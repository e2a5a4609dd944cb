//! Real-kernel tests: every test builds its own host / outside / container namespaces,
//! programs the firewall in the host namespace and checks what packets do.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netd_firewall::{DriftWatchOptions, EndpointSpec, FirewallError, NetworkSpec};
use support::*;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];

fn internet(port: u16) -> std::net::SocketAddr {
    format!("{INTERNET}:{port}").parse().unwrap()
}

#[test]
fn tables_have_the_documented_layout() {
    let lab = Lab::new();
    let net = network("web", 10);
    lab.bridge(&net);
    lab.fw.sync(std::slice::from_ref(&net), &[]).unwrap();
    assert!(lab.fw.table_exists().unwrap());
    let inet = lab.inet();
    let chains = chain_names(&inet);
    for c in [
        "prerouting",
        "output",
        "published",
        "postrouting",
        "forward",
        "input",
        "nw-web-from",
        "nw-web-to",
        "nw-web-in",
    ] {
        assert!(
            chains.contains(&c.to_string()),
            "chain {c} missing: {chains:?}"
        );
    }
    let sets = element_counts(&inet);
    assert_eq!(sets["from_net"], 1);
    assert_eq!(sets["pub4_any"], 0);
    let br = lab.bridge_table();
    assert_eq!(chain_names(&br), vec!["prerouting", "guard", "forward"]);
    // nothing else in the host namespace was created by us
    let all = lab.host.exec(&["nft", "-j", "list", "tables"]);
    let v: serde_json::Value = serde_json::from_str(&all).unwrap();
    let tables: Vec<_> = nft_objects(&v)
        .into_iter()
        .map(|(_, t)| {
            format!(
                "{} {}",
                t["family"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(tables, vec!["inet netd", "bridge netd"]);
}

#[test]
fn container_reaches_outside_masqueraded() {
    let mut lab = Lab::new();
    let net = network("web", 11);
    lab.bridge(&net);
    let (c, ep) = lab.container(&net, "a", ip("10.11.0.2"), MAC_A, &[]);
    lab.fw.sync(&[net], &[ep]).unwrap();
    let _srv = PeerEcho::start(&lab.outside, ip(INTERNET), 7000, 1);
    let seen = tcp_ask(&lab.containers[c], internet(7000), None).unwrap();
    assert_eq!(seen.ip(), ip(HOST_UP), "outside sees the host's address");
    let seen = udp_ask(&lab.containers[c], internet(7000), 0).unwrap();
    assert_eq!(seen.ip(), ip(HOST_UP));
}

#[test]
fn masquerade_off_and_snat() {
    let mut lab = Lab::new();
    let mut net = network("web", 12);
    net.masquerade = false;
    lab.bridge(&net);
    let (c, ep) = lab.container(&net, "a", ip("10.12.0.2"), MAC_A, &[]);
    lab.fw
        .sync(std::slice::from_ref(&net), std::slice::from_ref(&ep))
        .unwrap();
    let _srv = PeerEcho::start(&lab.outside, ip(INTERNET), 7000, 1);
    // unmasqueraded: the outside has no route back to 10.12.0.0/24
    assert!(tcp_ask(&lab.containers[c], internet(7000), None).is_err());
    // SNAT to a second host address on the uplink
    lab.host
        .ip(&["addr", "add", "198.51.100.3/24", "dev", "up0"]);
    net.snat = Some(ip("198.51.100.3"));
    lab.fw.add_network(&net).unwrap();
    let seen = tcp_ask(&lab.containers[c], internet(7000), None).unwrap();
    assert_eq!(seen.ip(), ip("198.51.100.3"));
}

#[test]
fn internal_network_reaches_nothing_outside_its_bridge() {
    let mut lab = Lab::new();
    let mut net = network("priv", 13);
    net.internal = true;
    lab.bridge(&net);
    let (a, ea) = lab.container(&net, "a", ip("10.13.0.2"), MAC_A, &[]);
    let (_b, eb) = lab.container(&net, "b", ip("10.13.0.3"), MAC_B, &[]);
    // give it a route anyway: the firewall, not the routing table, must stop it
    lab.containers[a].ip(&["route", "add", "default", "via", "10.13.0.1"]);
    lab.fw.sync(&[net], &[ea, eb]).unwrap();
    let _srv = PeerEcho::start(&lab.outside, ip(INTERNET), 7000, 1);
    assert!(tcp_ask(&lab.containers[a], internet(7000), None).is_err());
    assert!(udp_ask(&lab.containers[a], internet(7000), 0).is_err());
    // siblings on the same bridge still talk
    let _sib = PeerEcho::start(&lab.containers[1], ip("10.13.0.3"), 8000, 1);
    let seen = tcp_ask(&lab.containers[a], sa("10.13.0.3:8000"), None).unwrap();
    assert_eq!(seen.ip(), ip("10.13.0.2"));
    // publishing on an internal network is refused with a clear error
    let ec = EndpointSpec {
        network: "priv".into(),
        key: "c".into(),
        host_veth: "vh-c".into(),
        ips: vec![ip("10.13.0.4")],
        mac: MAC_C,
        ports: vec!["8080:80".parse().unwrap()],
    };
    let err = lab.fw.add_endpoint(&ec).unwrap_err();
    assert!(
        matches!(err, FirewallError::PublishOnInternal { .. }),
        "{err}"
    );
}

#[test]
fn networks_are_isolated_and_icc_off_blocks_siblings() {
    let mut lab = Lab::new();
    let a_net = network("na", 14);
    let mut b_net = network("nb", 15);
    b_net.icc = false;
    lab.bridge(&a_net);
    lab.bridge(&b_net);
    let (a, ea) = lab.container(&a_net, "a", ip("10.14.0.2"), MAC_A, &[]);
    let (b1, eb1) = lab.container(&b_net, "b1", ip("10.15.0.2"), MAC_B, &[]);
    let (b2, eb2) = lab.container(&b_net, "b2", ip("10.15.0.3"), MAC_C, &[]);
    lab.fw.add_network(&a_net).unwrap();
    lab.fw.add_network(&b_net).unwrap();
    for e in [&ea, &eb1, &eb2] {
        lab.fw.add_endpoint(e).unwrap();
    }
    let _on_b1 = PeerEcho::start(&lab.containers[b1], ip("10.15.0.2"), 8000, 1);
    let _on_a = PeerEcho::start(&lab.containers[a], ip("10.14.0.2"), 8000, 1);
    // A -> B and B -> A blocked
    assert!(tcp_ask(&lab.containers[a], sa("10.15.0.2:8000"), None).is_err());
    assert!(tcp_ask(&lab.containers[b2], sa("10.14.0.2:8000"), None).is_err());
    // icc=false: b2 cannot reach its sibling b1 ...
    assert!(tcp_ask(&lab.containers[b2], sa("10.15.0.2:8000"), None).is_err());
    // ... but reaches the gateway (DNS port accepted) and the outside
    let _dns = PeerEcho::start(&lab.host, ip("10.15.0.1"), 53, 1);
    assert_eq!(
        udp_ask(&lab.containers[b2], sa("10.15.0.1:53"), 0)
            .unwrap()
            .ip(),
        ip("10.15.0.3")
    );
    let _srv = PeerEcho::start(&lab.outside, ip(INTERNET), 7000, 1);
    assert!(tcp_ask(&lab.containers[b2], internet(7000), None).is_ok());
    // network A with icc on: a sibling works
    let (a2, ea2) = lab.container(&a_net, "a2", ip("10.14.0.3"), [2, 0, 0, 0, 0, 0x1a], &[]);
    lab.fw.add_endpoint(&ea2).unwrap();
    assert!(tcp_ask(&lab.containers[a2], sa("10.14.0.2:8000"), None).is_ok());
}

#[test]
fn published_ports_tcp_udp_range_hairpin_and_localhost() {
    published_ports(true);
}

#[test]
fn published_ports_without_br_netfilter() {
    published_ports(false);
}

/// `br_netfilter`: whether bridged IP traffic also traverses the inet hooks
/// (`net.bridge.bridge-nf-call-iptables`); netd must work either way.
fn published_ports(br_netfilter: bool) {
    let mut lab = Lab::new();
    let v = if br_netfilter { "1" } else { "0" };
    for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        lab.host
            .exec(&["sysctl", "-qw", &format!("net.bridge.{key}={v}")]);
    }
    let net = network("web", 16);
    lab.bridge(&net);
    let (a, ea) = lab.container(
        &net,
        "a",
        ip("10.16.0.2"),
        MAC_A,
        &["8080:80", "5300-5302:6300-6302/udp", "9000-9001:9100-9101"],
    );
    let (b, eb) = lab.container(&net, "b", ip("10.16.0.3"), MAC_B, &[]);
    lab.fw.add_network(&net).unwrap();
    lab.fw.add_endpoint(&ea).unwrap();
    lab.fw.add_endpoint(&eb).unwrap();
    let _s80 = PeerEcho::start(&lab.containers[a], ip("10.16.0.2"), 80, 1);
    let _s6300 = PeerEcho::start(&lab.containers[a], ip("10.16.0.2"), 6300, 3);
    let _s9100 = PeerEcho::start(&lab.containers[a], ip("10.16.0.2"), 9100, 2);
    let host = |p: u16| format!("{HOST_UP}:{p}").parse().unwrap();
    // outside -> host:published reaches the container, source preserved
    let seen = tcp_ask(&lab.outside, host(8080), None).unwrap();
    assert_eq!(seen.ip(), ip(OUTSIDE_UP));
    for p in 5300..=5302 {
        let seen = udp_ask(&lab.outside, host(p), 0).unwrap();
        assert_eq!(seen.ip(), ip(OUTSIDE_UP), "udp {p}");
    }
    assert!(tcp_ask(&lab.outside, host(9001), None).is_ok());
    // unpublished port: nothing
    assert!(tcp_ask(&lab.outside, host(8081), None).is_err());
    // the container itself is not reachable directly from the outside
    lab.outside
        .ip(&["route", "add", "10.16.0.0/24", "via", HOST_UP]);
    assert!(tcp_ask(&lab.outside, sa("10.16.0.2:80"), None).is_err());
    // hairpin: the container and its sibling reach the published port via host addresses
    // A container reaching its OWN published port: with br_netfilter active
    // (bridge-nf-call-iptables=1, the default once loaded) the kernel bridges the DNATed
    // frame back out of the port it came in on, which a bridge only does in hairpin mode.
    // The daemon sets it on every host veth (as Docker does without the userland proxy).
    // Without br_netfilter the frame is routed out of the bridge device and needs nothing.
    if br_netfilter {
        lab.host.ip(&[
            "link",
            "set",
            "vh-a",
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ]);
    }
    for (c, via) in [
        (a, HOST_UP),
        (a, "10.16.0.1"),
        (b, HOST_UP),
        (b, "10.16.0.1"),
    ] {
        let seen = tcp_ask(
            &lab.containers[c],
            format!("{via}:8080").parse().unwrap(),
            None,
        )
        .unwrap_or_else(|e| panic!("hairpin from {c} via {via}: {e}"));
        assert_eq!(
            seen.ip(),
            ip("10.16.0.1"),
            "hairpin is masqueraded to the gateway"
        );
    }
    // host -> 127.0.0.1:hostPort and host -> own address
    let seen = tcp_ask(&lab.host, sa("127.0.0.1:8080"), None).unwrap();
    assert_eq!(seen.ip(), ip("10.16.0.1"));
    assert!(udp_ask(&lab.host, sa("127.0.0.1:5301"), 0).is_ok());
    assert!(tcp_ask(&lab.host, host(8080), None).is_ok());
    // conflicts are refused naming the holder, and nothing changes
    let (_c, mut ec) = lab.container(&net, "c", ip("10.16.0.4"), MAC_C, &["8080:81"]);
    let err = lab.fw.add_endpoint(&ec).unwrap_err();
    assert!(err.to_string().contains("endpoint a"), "{err}");
    ec.ports = vec!["127.0.0.1:5301:1/udp".parse().unwrap()];
    assert!(lab.fw.add_endpoint(&ec).is_err());
    assert_eq!(element_counts(&lab.inet())["pub4_any"], 6);
}

#[test]
fn specific_host_ip_publishes_only_there() {
    let mut lab = Lab::new();
    let net = network("web", 17);
    lab.bridge(&net);
    lab.host
        .ip(&["addr", "add", "198.51.100.3/24", "dev", "up0"]);
    let (a, ea) = lab.container(&net, "a", ip("10.17.0.2"), MAC_A, &["198.51.100.3:8080:80"]);
    lab.fw.sync(&[net], &[ea]).unwrap();
    let _s = PeerEcho::start(&lab.containers[a], ip("10.17.0.2"), 80, 1);
    assert!(tcp_ask(&lab.outside, sa("198.51.100.3:8080"), None).is_ok());
    assert!(tcp_ask(&lab.outside, sa("198.51.100.2:8080"), None).is_err());
}

#[test]
fn spoofed_source_ip_or_mac_is_dropped() {
    let mut lab = Lab::new();
    let net = network("web", 18);
    lab.bridge(&net);
    let (a, ea) = lab.container(&net, "a", ip("10.18.0.2"), MAC_A, &[]);
    let (b, eb) = lab.container(&net, "b", ip("10.18.0.3"), MAC_B, &[]);
    lab.fw.sync(&[net], &[ea, eb]).unwrap();
    let on_b = PeerEcho::start(&lab.containers[b], ip("10.18.0.3"), 8000, 1);
    let on_gw = PeerEcho::start(&lab.host, ip("10.18.0.1"), 9999, 1);
    let srv = PeerEcho::start(&lab.outside, ip(INTERNET), 7000, 1);
    let ca = &lab.containers[a];
    let gw = sa("10.18.0.1:9999");
    // Spoofed datagrams are sent first, then an honest one on the same path: once the
    // honest one arrived, the spoofed ones would have too.
    let honest_arrives = |server: &PeerEcho, dst| {
        let before = server.seen().len();
        udp_send(ca, sa("10.18.0.2:0"), dst);
        wait_for(Duration::from_secs(2), || server.seen().len() > before)
    };
    // an address that is nobody's
    ca.ip(&["addr", "add", "10.18.0.99/24", "dev", "eth0"]);
    udp_send(ca, sa("10.18.0.99:4000"), gw);
    udp_send(ca, sa("10.18.0.99:4000"), sa("10.18.0.3:8000"));
    assert!(tcp_ask(ca, internet(7000), Some(ip("10.18.0.99"))).is_err());
    ca.ip(&["addr", "del", "10.18.0.99/24", "dev", "eth0"]);
    // the sibling's address (with our own MAC)
    ca.ip(&["addr", "add", "10.18.0.3/32", "dev", "eth0"]);
    udp_send(ca, sa("10.18.0.3:4001"), gw);
    ca.ip(&["addr", "del", "10.18.0.3/32", "dev", "eth0"]);
    assert!(honest_arrives(&on_gw, gw));
    assert!(honest_arrives(&on_b, sa("10.18.0.3:8000")));
    assert!(tcp_ask(ca, internet(7000), None).is_ok());
    let spoofed = |s: &PeerEcho| {
        s.seen()
            .into_iter()
            .filter(|p| p.ip() != ip("10.18.0.2") && p.ip() != ip(HOST_UP))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        spoofed(&on_gw),
        vec![],
        "spoofed source reached the gateway"
    );
    assert_eq!(spoofed(&on_b), vec![], "spoofed source reached the sibling");
    assert_eq!(
        srv.seen().len(),
        1,
        "only the honest connection reached the outside"
    );
    // the sibling's MAC: everything from the port is dropped, also with the right IP
    ca.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:0b"]);
    udp_send(ca, sa("10.18.0.2:4002"), gw);
    assert!(tcp_ask(ca, sa("10.18.0.3:8000"), None).is_err());
    ca.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:0a"]);
    assert!(honest_arrives(&on_gw, gw));
    // Judged by the source port, not by a count: the echo server may still be reading the
    // honest burst when the first of it is seen.
    assert_eq!(
        on_gw
            .seen()
            .into_iter()
            .filter(|p| p.port() == 4002)
            .collect::<Vec<_>>(),
        vec![],
        "datagrams sent with the sibling's MAC reached the gateway"
    );
    // a MAC nobody owns (what a chained `tuning` plugin sets) keeps working with its own IP
    ca.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:66"]);
    ca.ip(&["neigh", "flush", "all"]);
    assert!(
        honest_arrives(&on_gw, gw),
        "a tuned MAC must still reach the gateway"
    );
    ca.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:0a"]);
}

#[test]
fn removal_leaves_no_element_or_chain_behind() {
    let mut lab = Lab::new();
    let mut a_net = network("na", 19);
    a_net.icc = false;
    let b_net = network("nb", 20);
    lab.bridge(&a_net);
    lab.bridge(&b_net);
    let (_a, ea) = lab.container(
        &a_net,
        "a",
        ip("10.19.0.2"),
        MAC_A,
        &["8080:80", "5000-5003:5000-5003/udp"],
    );
    let (_b, eb) = lab.container(
        &b_net,
        "b",
        ip("10.20.0.2"),
        MAC_B,
        &["127.0.0.1:9000:90/sctp"],
    );
    lab.fw.sync(&[], &[]).unwrap();
    let empty_inet = lab.inet();
    let empty_bridge = lab.bridge_table();
    lab.fw.add_network(&a_net).unwrap();
    lab.fw.add_network(&b_net).unwrap();
    lab.fw.add_endpoint(&ea).unwrap();
    lab.fw.add_endpoint(&eb).unwrap();
    let counts = element_counts(&lab.inet());
    assert_eq!((counts["pub4_any"], counts["pub4_ip"]), (5, 1));
    assert_eq!(element_counts(&lab.bridge_table())["allow4"], 2);
    assert_eq!(element_counts(&lab.bridge_table())["no_icc"], 1);
    // disconnect
    lab.fw.remove_endpoint(&ea).unwrap();
    lab.fw.remove_endpoint(&ea).unwrap(); // idempotent
    let counts = element_counts(&lab.inet());
    assert_eq!((counts["pub4_any"], counts["pub4_ip"]), (0, 1));
    // removing a network also removes its endpoints' elements
    lab.fw.remove_network("nb").unwrap();
    lab.fw.remove_network("na").unwrap();
    lab.fw.remove_network("na").unwrap(); // idempotent
    let inet = lab.inet();
    let bridge = lab.bridge_table();
    assert_eq!(chain_names(&inet), chain_names(&empty_inet));
    assert!(
        element_counts(&inet).values().all(|n| *n == 0),
        "{:?}",
        element_counts(&inet)
    );
    assert!(
        element_counts(&bridge).values().all(|n| *n == 0),
        "{:?}",
        element_counts(&bridge)
    );
    assert_eq!(rule_count(&inet, "postrouting"), 0);
    assert_eq!(nft_objects(&inet).len(), nft_objects(&empty_inet).len());
    assert_eq!(nft_objects(&bridge).len(), nft_objects(&empty_bridge).len());
    assert!(!chain_names(&inet).iter().any(|c| c.starts_with("nw-")));
}

#[test]
fn flushed_ruleset_is_restored_by_the_drift_watch() {
    let mut lab = Lab::new();
    let net = network("web", 21);
    lab.bridge(&net);
    let (a, ea) = lab.container(&net, "a", ip("10.21.0.2"), MAC_A, &["8080:80"]);
    let state: Arc<Mutex<(Vec<NetworkSpec>, Vec<EndpointSpec>)>> =
        Arc::new(Mutex::new((vec![net.clone()], vec![ea.clone()])));
    lab.fw
        .sync(std::slice::from_ref(&net), std::slice::from_ref(&ea))
        .unwrap();
    let fw = lab.fw.clone();
    let st = state.clone();
    let syncs = Arc::new(Mutex::new(0usize));
    let syncs2 = syncs.clone();
    let _watch = lab
        .fw
        .spawn_drift_watch(DriftWatchOptions::default(), move |_reason| {
            let (n, e) = st.lock().unwrap().clone();
            fw.sync(&n, &e).expect("re-sync");
            *syncs2.lock().unwrap() += 1;
        })
        .unwrap();
    // our own changes do not count as drift (nor do they wake the watch: a socket filter
    // drops them), however many
    for _ in 0..20 {
        lab.fw.remove_endpoint(&ea).unwrap();
        lab.fw.add_endpoint(&ea).unwrap();
    }
    std::thread::sleep(DriftWatchOptions::default().debounce * 3);
    assert_eq!(*syncs.lock().unwrap(), 0, "own changes taken for drift");
    lab.host.exec(&["nft", "flush", "ruleset"]);
    assert!(
        wait_for(Duration::from_secs(3), || lab
            .fw
            .table_exists()
            .unwrap_or(false)
            && element_counts(&lab.inet()).get("pub4_any") == Some(&1)),
        "table restored after nft flush ruleset"
    );
    // and it works again
    let _s = PeerEcho::start(&lab.containers[a], ip("10.21.0.2"), 80, 1);
    assert!(tcp_ask(
        &lab.outside,
        format!("{HOST_UP}:8080").parse().unwrap(),
        None
    )
    .is_ok());
    // a foreign edit of one element is drift too
    lab.host.exec(&[
        "nft",
        "delete",
        "element",
        "inet",
        "netd",
        "pub4_any",
        "{ tcp . 8080 }",
    ]);
    assert!(wait_for(Duration::from_secs(3), || element_counts(
        &lab.inet()
    )
    .get("pub4_any")
        == Some(&1)));
    assert!(*syncs.lock().unwrap() >= 2);
}

#[test]
fn stale_udp_conntrack_entries_are_flushed() {
    let mut lab = Lab::new();
    let net = network("web", 22);
    lab.bridge(&net);
    let (a, ea) = lab.container(&net, "a", ip("10.22.0.2"), MAC_A, &["5353:5353/udp"]);
    let (b, mut eb) = lab.container(&net, "b", ip("10.22.0.3"), MAC_B, &[]);
    lab.fw.sync(&[net], &[ea.clone(), eb.clone()]).unwrap();
    let _sa = PeerEcho::start(&lab.containers[a], ip("10.22.0.2"), 5353, 1);
    let _sb = PeerEcho::start(&lab.containers[b], ip("10.22.0.3"), 5353, 1);
    let dst = sa(&format!("{HOST_UP}:5353"));
    // the same client flow (fixed source port) first reaches a ...
    assert!(udp_ask(&lab.outside, dst, 40000).is_ok());
    // ... the port moves to b: the same flow must now reach b, not the stale a entry
    lab.fw.remove_endpoint(&ea).unwrap();
    eb.ports = ea.ports.clone();
    lab.fw.add_endpoint(&eb).unwrap();
    // a no longer answers: the client gets a reply only if the flow now goes to b
    drop(_sa);
    assert!(
        udp_ask(&lab.outside, dst, 40000).is_ok(),
        "flow re-DNATed to the new container"
    );
}

#[test]
fn endpoint_batches_do_not_grow_with_existing_endpoints() {
    let lab = Lab::new();
    let net = network("web", 23);
    lab.bridge(&net);
    lab.fw.add_network(&net).unwrap();
    // Elements only reference interface names; no real veths are needed to fill the sets.
    let ep = |i: u16| EndpointSpec {
        network: "web".into(),
        key: format!("e{i}"),
        host_veth: format!("vx{i}"),
        ips: vec![format!("10.23.{}.{}", i / 250, i % 250 + 2)
            .parse()
            .unwrap()],
        mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8],
        ports: vec![
            format!("{}:80", 10000 + i).parse().unwrap(),
            format!("{}:53/udp", 20000 + i).parse().unwrap(),
        ],
    };
    let mut net = net;
    net.subnets = vec!["10.23.0.0/16".parse().unwrap()];
    net.gateways = vec!["10.23.0.1".parse().unwrap()];
    lab.fw.add_network(&net).unwrap();
    lab.fw.add_endpoint(&ep(0)).unwrap();
    let first = lab.fw.last_batch();
    for i in 1..300 {
        lab.fw.add_endpoint(&ep(i)).unwrap();
    }
    lab.fw.add_endpoint(&ep(300)).unwrap();
    assert_eq!(
        lab.fw.last_batch(),
        first,
        "same batch with 0 and 300 endpoints present"
    );
    assert_eq!(element_counts(&lab.inet())["pub4_any"], 2 * 301);
    lab.fw.remove_endpoint(&ep(300)).unwrap();
    assert_eq!(lab.fw.last_batch().messages, first.messages);
}

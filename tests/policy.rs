//! NAT, isolation and published ports as netd programs them (the firewall plugged into the
//! daemon): real traffic between namespaces, checked from both ends.

use std::time::Duration;

use netd_tests::{must, outside, wait_for, Host, Netns};

fn ip_of(h: &Host, net: &str, name: &str) -> String {
    let v = h.netctl_json(&["inspect", net]);
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| {
            e["ips"][0]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .expect("endpoint")
}

fn nft_json(h: &Host) -> serde_json::Value {
    let out = must(h.ns.cmd(&["nft", "-j", "list", "table", "inet", "netd"]));
    serde_json::from_str(&out).expect("nft json")
}

/// Elements of a named set or map in `inet netd` (empty when the set has none).
fn set_elems(h: &Host, set: &str) -> Vec<serde_json::Value> {
    nft_json(h)["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("set").or_else(|| o.get("map")))
        .filter(|s| s["name"] == set)
        .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn masquerade_out_and_published_ports_in() {
    let h = Host::start();
    let out = outside(&h.ns);
    h.netctl_ok(&["create", "web", "--subnet", "10.91.0.0/24"]);
    let c1 = h.container("c1");
    let c2 = h.container("c2");
    h.netctl_ok(&[
        "connect",
        "web",
        "--netns",
        &c1.path(),
        "--name",
        "app",
        "-p",
        "8080:80",
        "-p",
        "9000-9001:7000-7001/udp",
    ]);
    h.netctl_ok(&["connect", "web", "--netns", &c2.path(), "--name", "peer"]);
    let app = ip_of(&h, "web", "app");

    // Container -> outside: works, and the outside sees the host's address.
    out.tcp_whoami("203.0.113.2:7777");
    assert_eq!(
        c1.tcp_ask("203.0.113.2:7777").as_deref(),
        Some("203.0.113.1")
    );
    // Container-to-container on the bridge is not masqueraded.
    c2.tcp_whoami("0.0.0.0:7778");
    let peer = ip_of(&h, "web", "peer");
    assert_eq!(
        c1.tcp_ask(&format!("{peer}:7778")).as_deref(),
        Some(app.as_str())
    );

    // Outside -> host:8080 reaches the container's port 80 (TCP), and a UDP range.
    c1.tcp_whoami("0.0.0.0:80");
    c1.udp_whoami("0.0.0.0:7001");
    assert_eq!(
        out.tcp_ask("203.0.113.1:8080").as_deref(),
        Some("203.0.113.2")
    );
    assert_eq!(
        out.udp_ask("203.0.113.1:9001").as_deref(),
        Some("203.0.113.2")
    );
    // Unpublished ports are not reachable.
    assert!(out.tcp_ask("203.0.113.1:8081").is_none());
    // Hairpin: a sibling and the container itself through the host address.
    assert!(c2.tcp_ask("203.0.113.1:8080").is_some(), "sibling hairpin");
    assert!(c1.tcp_ask("203.0.113.1:8080").is_some(), "own hairpin");
    // The host reaches it on 127.0.0.1.
    assert!(h.ns.tcp_ask("127.0.0.1:8080").is_some(), "host localhost");

    // A conflicting publication is refused with a clear error, nothing is attached.
    let c3 = h.container("c3");
    let o = h.netctl(&[
        "connect",
        "web",
        "--netns",
        &c3.path(),
        "--name",
        "dup",
        "-p",
        "8080:81",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already published"), "{err}");
    assert!(!c3.links().contains(&"eth0".to_string()));

    // Disconnect removes the elements: no port leads anywhere, no anti-spoofing element left.
    h.netctl_ok(&["disconnect", "web", "--name", "app"]);
    assert!(out.tcp_ask("203.0.113.1:8080").is_none());
    let left: Vec<_> = ["veths", "allow4", "all_macs"]
        .iter()
        .flat_map(|s| {
            let h = &h;
            nft_json_bridge(h, s)
        })
        .collect();
    assert_eq!(left.len(), 3, "only the peer's elements remain: {left:?}");
    h.netctl_ok(&["rm", "web", "--force"]);
    for s in ["veths", "allow4", "all_macs"] {
        assert!(nft_json_bridge(&h, s).is_empty(), "{s} not empty after rm");
    }
}

fn nft_json_bridge(h: &Host, set: &str) -> Vec<serde_json::Value> {
    let out = must(h.ns.cmd(&["nft", "-j", "list", "table", "bridge", "netd"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft json");
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("set"))
        .filter(|s| s["name"] == set)
        .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn networks_are_isolated_and_internal_networks_stay_inside() {
    let h = Host::start();
    let out = outside(&h.ns);
    out.tcp_whoami("203.0.113.2:7777");
    h.netctl_ok(&["create", "a", "--subnet", "10.92.0.0/24"]);
    h.netctl_ok(&["create", "b", "--subnet", "10.93.0.0/24"]);
    h.netctl_ok(&["create", "i", "--internal", "--subnet", "10.94.0.0/24"]);
    let ca = h.container("ca");
    let cb = h.container("cb");
    let ci = h.container("ci");
    let ci2 = h.container("ci2");
    h.netctl_ok(&["connect", "a", "--netns", &ca.path(), "--name", "ca"]);
    h.netctl_ok(&["connect", "b", "--netns", &cb.path(), "--name", "cb"]);
    h.netctl_ok(&["connect", "i", "--netns", &ci.path(), "--name", "ci"]);
    h.netctl_ok(&["connect", "i", "--netns", &ci2.path(), "--name", "ci2"]);
    cb.tcp_whoami("0.0.0.0:7000");
    let b_ip = ip_of(&h, "b", "cb");
    assert!(!ca.ping(&b_ip), "network a reached network b");
    assert!(ca.tcp_ask(&format!("{b_ip}:7000")).is_none());
    assert!(
        ca.tcp_ask("203.0.113.2:7777").is_some(),
        "a still reaches the outside"
    );
    // Internal: no way out even with a route added by hand; siblings still talk.
    assert!(ci.tcp_ask("203.0.113.2:7777").is_none());
    must(ci.cmd(&["ip", "route", "add", "default", "via", "10.94.0.1"]));
    assert!(
        ci.tcp_ask("203.0.113.2:7777").is_none(),
        "internal network got out"
    );
    assert!(ci.ping(&ip_of(&h, "i", "ci2")));
    // A container on both a and b reaches both.
    h.netctl_ok(&[
        "connect",
        "b",
        "--netns",
        &ca.path(),
        "--name",
        "ca",
        "--ifname",
        "eth1",
    ]);
    assert!(
        ca.tcp_ask(&format!("{b_ip}:7000")).is_some(),
        "connected on purpose"
    );
}

#[test]
fn icc_off_blocks_siblings_but_not_the_way_out() {
    let h = Host::start();
    let out = outside(&h.ns);
    out.tcp_whoami("203.0.113.2:7777");
    h.netctl_ok(&["create", "q", "--subnet", "10.95.0.0/24", "--disable-icc"]);
    let c1 = h.container("c1");
    let c2 = h.container("c2");
    h.netctl_ok(&["connect", "q", "--netns", &c1.path(), "--name", "one"]);
    h.netctl_ok(&["connect", "q", "--netns", &c2.path(), "--name", "two"]);
    c2.tcp_whoami("0.0.0.0:7000");
    assert!(c1
        .tcp_ask(&format!("{}:7000", ip_of(&h, "q", "two")))
        .is_none());
    assert!(c1.tcp_ask("203.0.113.2:7777").is_some());
}

#[test]
fn spoofed_source_addresses_are_dropped() {
    let h = Host::start();
    let out = outside(&h.ns);
    out.tcp_whoami("203.0.113.2:7777");
    h.netctl_ok(&["create", "s", "--subnet", "10.96.0.0/24"]);
    let c1 = h.container("c1");
    h.netctl_ok(&["connect", "s", "--netns", &c1.path(), "--name", "one"]);
    // The fast path holds exactly the endpoint's own port, MAC and address.
    let own4 = must(h.ns.cmd(&["nft", "list", "set", "bridge", "netd", "own4"]));
    let mac = must(c1.cmd(&["cat", "/sys/class/net/eth0/address"]));
    let mac = mac.trim();
    assert!(
        own4.contains(&format!("{mac} . 10.96.0.")),
        "own4 lacks the endpoint:\n{own4}"
    );
    assert!(c1.ping("10.96.0.1"), "the endpoint's own frames pass");
    must(c1.cmd(&["ip", "addr", "flush", "dev", "eth0"]));
    must(c1.cmd(&["ip", "addr", "add", "10.96.0.77/24", "dev", "eth0"]));
    must(c1.cmd(&["ip", "route", "add", "default", "via", "10.96.0.1"]));
    assert!(
        c1.tcp_ask("203.0.113.2:7777").is_none(),
        "spoofed source got out"
    );
    assert!(!c1.ping("10.96.0.1"));
}

#[test]
fn firewall_tables_are_restored_after_a_flush() {
    let h = Host::start();
    h.netctl_ok(&["create", "d", "--subnet", "10.97.0.0/24"]);
    let c1 = h.container("c1");
    h.netctl_ok(&[
        "connect",
        "d",
        "--netns",
        &c1.path(),
        "--name",
        "one",
        "-p",
        "8080:80",
    ]);
    let before = set_elems(&h, "pub4_any").len();
    assert!(before > 0);
    must(h.ns.cmd(&["nft", "flush", "ruleset"]));
    let restored = wait_for(Duration::from_secs(10), || {
        let o = h.ns.exec(&["nft", "-j", "list", "table", "inet", "netd"]);
        (o.status.success() && set_elems(&h, "pub4_any").len() == before).then_some(())
    });
    assert!(restored.is_some(), "table not restored:\n{}", h.log());
    // A restart rebuilds it as well.
    let mut h = h;
    must(h.ns.cmd(&["nft", "delete", "table", "inet", "netd"]));
    h.restart();
    assert_eq!(set_elems(&h, "pub4_any").len(), before);
    // The daemon's index of published ports is rebuilt with the tables: 8080 is still taken
    // (refused by netd, naming it, not by the kernel's duplicate-element error), 8081 is free.
    let c2 = h.container("c2");
    let dup = |port: &str| {
        h.netctl(&[
            "connect",
            "d",
            "--netns",
            &c2.path(),
            "--name",
            "two",
            "-p",
            port,
        ])
    };
    let o = dup("8080:81");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already published"),
        "{err}"
    );
    assert!(dup("8081:81").status.success(), "{}", h.log());
}

#[test]
fn snat_to_a_fixed_host_address() {
    let h = Host::start();
    let out = outside(&h.ns);
    out.tcp_whoami("203.0.113.2:7777");
    let uplink =
        h.ns.links()
            .into_iter()
            .find(|l| l.starts_with("up"))
            .expect("uplink");
    must(h.ns.cmd(&["ip", "addr", "add", "203.0.113.5/24", "dev", &uplink]));
    h.netctl_ok(&[
        "create",
        "sn",
        "--subnet",
        "10.98.0.0/24",
        "--snat",
        "203.0.113.5",
    ]);
    let c = h.container("c");
    h.netctl_ok(&["connect", "sn", "--netns", &c.path(), "--name", "c"]);
    assert_eq!(
        c.tcp_ask("203.0.113.2:7777").as_deref(),
        Some("203.0.113.5")
    );
    let o = h.netctl(&["create", "bad", "--internal", "--snat", "203.0.113.5"]);
    assert!(!o.status.success());
}

/// Sends one router advertisement (default router, prefix `prefix::/64` for SLAAC) to all
/// nodes on `ifname`, from inside `ns`.
fn send_ra(ns: &Netns, ifname: &str, prefix: [u8; 8]) {
    let ifname = std::ffi::CString::new(ifname).unwrap();
    ns.thread(move || {
        let mut ra = vec![134u8, 0, 0, 0, 64, 0];
        ra.extend(1800u16.to_be_bytes()); // router lifetime
        ra.extend([0; 8]); // reachable time, retransmission timer
        ra.extend([3, 4, 64, 0xc0]); // prefix information: on-link, autonomous
        ra.extend(3600u32.to_be_bytes());
        ra.extend(3600u32.to_be_bytes());
        ra.extend([0; 4]);
        ra.extend(prefix);
        ra.extend([0; 8]);
        // SAFETY: plain socket calls on a socket this closure owns; every pointer refers to a
        // live local of the size passed.
        unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
            assert!(
                fd >= 0,
                "raw ICMPv6 socket: {}",
                std::io::Error::last_os_error()
            );
            let hops: libc::c_int = 255; // receivers drop neighbour discovery from farther away
            let rc = libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                (&hops as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0);
            let mut dst: libc::sockaddr_in6 = std::mem::zeroed();
            dst.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            dst.sin6_addr.s6_addr = "ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
            dst.sin6_scope_id = libc::if_nametoindex(ifname.as_ptr());
            let n = libc::sendto(
                fd,
                ra.as_ptr().cast(),
                ra.len(),
                0,
                (&dst as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n, ra.len() as isize, "sending the RA: {err}");
        }
    })
    .join()
    .unwrap();
}

/// Waits until `ifname` in `ns` has a usable (non-tentative) link-local address.
fn wait_link_local(ns: &Netns, ifname: &str) {
    let ok = wait_for(Duration::from_secs(10), || {
        let out = ns.exec(&["ip", "-6", "addr", "show", "dev", ifname, "scope", "link"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("inet6") && !text.contains("tentative")).then_some(())
    });
    assert!(ok.is_some(), "no link-local address on {ifname}");
}

#[test]
fn router_advertisements_from_containers_are_dropped() {
    let h = Host::start();
    h.netctl_ok(&[
        "create",
        "ra",
        "--subnet",
        "10.98.0.0/24",
        "--subnet",
        "fd00:98::/64",
    ]);
    let (c1, c2) = (h.container("c1"), h.container("c2"));
    h.netctl_ok(&["connect", "ra", "--netns", &c1.path(), "--name", "one"]);
    h.netctl_ok(&["connect", "ra", "--netns", &c2.path(), "--name", "two"]);
    wait_link_local(&c1, "eth0");
    wait_link_local(&c2, "eth0");
    let slaac = |c: &Netns, prefix: &str| {
        let addrs = String::from_utf8_lossy(&c.exec(&["ip", "-6", "addr"]).stdout).into_owned();
        let routes = String::from_utf8_lossy(&c.exec(&["ip", "-6", "route"]).stdout).into_owned();
        (addrs.contains(prefix) || routes.contains("proto ra")).then_some(())
    };
    // A container advertising itself as a router: its neighbour must not learn a route or an
    // address from it (it would hand the neighbour's traffic to it).
    for _ in 0..3 {
        send_ra(&c1, "eth0", [0x20, 0x01, 0x0d, 0xb8, 0, 0x66, 0, 0]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        slaac(&c2, "2001:db8:66:").is_none(),
        "c2 accepted a container's router advertisement"
    );
    // The same advertisement from the gateway side reaches c2 and is accepted: the packet is
    // valid and c2 listens, so only the guard stopped the first one.
    send_ra(&h.ns, "nd-ra", [0x20, 0x01, 0x0d, 0xb8, 0, 0x67, 0, 0]);
    assert!(
        wait_for(Duration::from_secs(5), || slaac(&c2, "2001:db8:67:")).is_some(),
        "c2 ignored a router advertisement from the bridge"
    );
}

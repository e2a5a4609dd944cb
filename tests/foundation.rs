//! Foundation end-to-end tests: real netd in a private host namespace, containers as
//! namespaces, real bridges and veths, assertions on what a user would check.

use std::collections::BTreeSet;
use std::process::Command;

use netd_api::{AttachRequest, ErrorCode};
use netd_tests::{must, run, soon, Host};

fn endpoints(h: &Host, net: &str) -> Vec<serde_json::Value> {
    h.netctl_json(&["inspect", net])["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn first_ip(v: &serde_json::Value) -> String {
    let s = v["ips"][0].as_str().expect("ip").to_string();
    s.split('/').next().unwrap().to_string()
}

fn connect_json(h: &Host, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["connect"];
    a.extend_from_slice(args);
    h.netctl_json(&a)
}

#[test]
fn two_containers_ping_through_the_bridge() {
    let h = Host::start();
    let c1 = h.container("c1");
    let c2 = h.container("c2");
    h.netctl_ok(&["create", "mynet"]);
    let net = h.netctl_json(&["inspect", "mynet"]);
    assert_eq!(
        net["subnets"][0]["subnet"], "10.88.0.0/16",
        "first pool subnet"
    );
    assert_eq!(net["bridge"], "nd-mynet");
    let r1 = connect_json(&h, &["mynet", "--netns", &c1.path(), "--name", "web"]);
    let r2 = connect_json(
        &h,
        &[
            "mynet",
            "--netns",
            &c2.path(),
            "--name",
            "db",
            "--ip",
            "10.88.0.50",
        ],
    );
    assert_eq!(first_ip(&r2["endpoint"]), "10.88.0.50");
    let ip1 = first_ip(&r1["endpoint"]);
    assert_eq!(
        ip1, "10.88.0.2",
        "first dynamic address follows the gateway"
    );
    // The container end is eth0 with the address and a default route via the gateway.
    assert_eq!(c1.addrs("eth0"), vec!["10.88.0.2/16".to_string()]);
    let routes = String::from_utf8_lossy(&c1.exec(&["ip", "route"]).stdout).into_owned();
    assert!(
        routes.contains("default via 10.88.0.1 dev eth0"),
        "{routes}"
    );
    // On an IPv4-only network the container end has no IPv6 address (addrgenmode none): no
    // link-local address, so no DAD probes, router solicitations or MLD reports flooded to
    // every port. A new interface with a link-local address sends its MLD report at once.
    let link = String::from_utf8_lossy(&c1.exec(&["ip", "-d", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(link.contains("addrgenmode none"), "{link}");
    // Both ends are created with the one queue a veth uses (asked for, not cut back to: the
    // cut waits for an RCU grace period with the RTNL lock held).
    assert!(link.contains("numtxqueues 1 numrxqueues 1"), "{link}");
    let host_end = h.bridge_ports("nd-mynet")[0].clone();
    let host_link = must(h.ns.cmd(&["ip", "-d", "link", "show", &host_end]));
    assert!(
        host_link.contains("numtxqueues 1 numrxqueues 1"),
        "{host_link}"
    );
    // The host end has IPv6 off (no link-local address and routes on every port).
    let sysctl = format!("/proc/sys/net/ipv6/conf/{host_end}/disable_ipv6");
    assert_eq!(must(h.ns.cmd(&["cat", &sysctl])).trim(), "1", "{sysctl}");
    assert!(
        !String::from_utf8_lossy(&c1.exec(&["ip", "-6", "addr", "show", "dev", "eth0"]).stdout)
            .contains("inet6"),
        "no IPv6 address in a container of an IPv4-only network"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    for c in [&c1, &c2] {
        let tx = c.exec(&["cat", "/sys/class/net/eth0/statistics/tx_packets"]);
        assert_eq!(
            String::from_utf8_lossy(&tx.stdout).trim(),
            "0",
            "a fresh container end of an IPv4-only network stays silent"
        );
    }
    // netd acts inside containers from pool threads that return home after each job: none
    // may stay in a container's namespace (that would keep it, and its veth, alive).
    for c in [&c1, &c2] {
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(c.path()).unwrap());
        assert!(
            !h.thread_namespaces().contains(&ino),
            "a netd thread is still inside {}",
            c.path()
        );
    }
    // Bridge holds the gateway and both host ends.
    assert_eq!(h.ns.addrs("nd-mynet"), vec!["10.88.0.1/16".to_string()]);
    assert_eq!(h.bridge_ports("nd-mynet").len(), 2);
    // The host ends carry the bridge's MAC, so the bridge keeps one local forwarding entry,
    // its own, not one per port (each new port walks them all).
    let fdb = must(h.ns.cmd(&["bridge", "fdb", "show", "br", "nd-mynet"]));
    let local: Vec<&str> = fdb
        .lines()
        .filter(|l| l.contains("master nd-mynet permanent"))
        .collect();
    assert_eq!(local.len(), 1, "{fdb}");
    assert!(local[0].contains("dev nd-mynet "), "{fdb}");
    assert!(c1.ping("10.88.0.50"), "c1 -> db");
    assert!(c2.ping(&ip1), "c2 -> web");
    assert!(c1.ping("10.88.0.1"), "c1 -> gateway");
    let fwd = must(h.ns.cmd(&["cat", "/proc/sys/net/ipv4/ip_forward"]));
    assert_eq!(fwd.trim(), "1");
    // Table output has the documented columns.
    let ls = h.netctl_ok(&["ls"]);
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(
        ls.contains("mynet") && ls.contains("10.88.0.0/16") && ls.contains("nd-mynet"),
        "{ls}"
    );

    // rm is refused while endpoints exist; nothing changes.
    let out = h.netctl(&["rm", "mynet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still has 2 endpoint"));
    assert_eq!(endpoints(&h, "mynet").len(), 2);

    h.netctl_ok(&["disconnect", "mynet", "--netns", &c1.path()]);
    assert!(
        soon(|| !c1.links().contains(&"eth0".to_string())),
        "eth0 gone from c1"
    );
    assert_eq!(h.bridge_ports("nd-mynet").len(), 1);
    assert!(!c2.ping(&ip1));
    // Disconnect is idempotent at the API level.
    h.client()
        .detach("mynet", "web", "eth0")
        .expect("repeated detach succeeds");

    h.netctl_ok(&["rm", "mynet", "--force"]);
    assert!(h.ns.link("nd-mynet").is_none(), "bridge removed");
    assert!(
        !c2.links().contains(&"eth0".to_string()),
        "forced rm detached db"
    );
    assert!(h.netctl_json(&["ls"]).as_array().unwrap().is_empty());
}

/// netd's bridges do without multicast snooping (with it, every port coming up re-armed query
/// timers on every other port, a cost growing with each container); multicast between the
/// containers of a network still flows, flooded by the bridge.
#[test]
fn multicast_between_containers_flows_on_a_bridge_without_snooping() {
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::Duration;
    let h = Host::start();
    let c1 = h.container("m1");
    let c2 = h.container("m2");
    h.netctl_ok(&["create", "mc", "--subnet", "10.97.0.0/24"]);
    let r1 = connect_json(&h, &["mc", "--netns", &c1.path(), "--name", "m1"]);
    connect_json(&h, &["mc", "--netns", &c2.path(), "--name", "m2"]);
    let link = must(h.ns.cmd(&["ip", "-d", "link", "show", "nd-mc"]));
    assert!(link.contains("mcast_snooping 0"), "{link}");

    let ip1: Ipv4Addr = first_ip(&r1["endpoint"]).parse().unwrap();
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let (ready, joined) = std::sync::mpsc::channel();
    let receiver = c1.thread(move || {
        let s = UdpSocket::bind("0.0.0.0:4999").expect("bind");
        s.join_multicast_v4(&group, &ip1).expect("join 239.1.2.3");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).ok()?;
        Some((buf[..n].to_vec(), from.ip()))
    });
    joined.recv().expect("receiver joined the group");
    let sender = c2.thread(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        // A few tries: the first may leave before the receiver's membership report.
        for _ in 0..20 {
            s.send_to(b"to the group", (group, 4999)).expect("send");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let got = receiver.join().unwrap();
    sender.join().unwrap();
    let (payload, from) = got.expect("the multicast datagram reached the other container");
    assert_eq!(payload, b"to the group");
    assert_ne!(
        from,
        std::net::IpAddr::V4(ip1),
        "it came from the other container"
    );
}

#[test]
fn subnet_range_gateway_aux_and_static_addresses() {
    let h = Host::start();
    h.netctl_ok(&[
        "create",
        "backend",
        "--subnet",
        "10.89.0.0/24",
        "--gateway",
        "10.89.0.254",
        "--ip-range",
        "10.89.0.128/30",
        "--aux-address",
        "10.89.0.129",
        "--mtu",
        "1400",
    ]);
    let net = h.netctl_json(&["inspect", "backend"]);
    assert_eq!(net["subnets"][0]["gateway"], "10.89.0.254");
    assert_eq!(net["subnets"][0]["ip_range"], "10.89.0.128/30");
    let bridge = h.ns.link("nd-backend").expect("bridge");
    assert_eq!(bridge["mtu"], 1400);
    let mut got = Vec::new();
    let mut keep = Vec::new();
    for i in 0..3 {
        let c = h.container(&format!("b{i}"));
        let r = connect_json(
            &h,
            &["backend", "--netns", &c.path(), "--name", &format!("b{i}")],
        );
        got.push(first_ip(&r["endpoint"]));
        assert_eq!(c.link("eth0").unwrap()["mtu"], 1400);
        keep.push(c);
    }
    // .128 .130 .131: the aux address .129 is skipped; the range is then exhausted.
    assert_eq!(got, ["10.89.0.128", "10.89.0.130", "10.89.0.131"]);
    let c = h.container("full");
    let out = h.netctl(&["connect", "backend", "--netns", &c.path(), "--name", "full"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no free address"), "{err}");
    assert!(
        !c.links().contains(&"eth0".to_string()),
        "failed attach left an interface"
    );
    // A static address outside the range but inside the subnet works.
    let r = connect_json(
        &h,
        &[
            "backend",
            "--netns",
            &c.path(),
            "--name",
            "st",
            "--ip",
            "10.89.0.7",
        ],
    );
    assert_eq!(first_ip(&r["endpoint"]), "10.89.0.7");
    // The gateway and aux addresses cannot be requested.
    for ip in ["10.89.0.254", "10.89.0.129", "10.89.0.7"] {
        let c = h.container("bad");
        let out = h.netctl(&[
            "connect",
            "backend",
            "--netns",
            &c.path(),
            "--name",
            "x",
            "--ip",
            ip,
        ]);
        assert!(!out.status.success(), "{ip} must be refused");
    }
    assert_eq!(endpoints(&h, "backend").len(), 4);
}

#[test]
fn invalid_networks_are_refused_and_create_nothing() {
    let h = Host::start();
    h.netctl_ok(&["create", "a", "--subnet", "10.50.0.0/16"]);
    let links_before = h.ns.links();
    let cases: &[(&[&str], &str)] = &[
        (
            &["create", "b", "--subnet", "10.50.3.0/24"],
            "overlaps network a",
        ),
        (
            &["create", "a", "--subnet", "10.60.0.0/24"],
            "already exists",
        ),
        (
            &[
                "create",
                "c",
                "--subnet",
                "10.61.0.0/24",
                "--gateway",
                "10.62.0.1",
            ],
            "outside subnet",
        ),
        (&["create", "d", "--subnet", "10.63.0.0/31"], "too small"),
        (&["create", "e", "--subnet", "10.63.0.1/32"], "too small"),
        (&["create", "f", "--subnet", "10.64.0.1/24"], "host bits"),
        (
            &["create", "g", "--bridge", "this-is-too-long0"],
            "IFNAMSIZ",
        ),
        (&["create", "--", "-bad"], "must start with a letter"),
        (&["create", "bad/name"], "only letters"),
        (
            &[
                "create",
                "h",
                "--subnet",
                "10.65.0.0/24",
                "--subnet",
                "10.66.0.0/24",
            ],
            "at most one IPv4",
        ),
        (
            &[
                "create",
                "i",
                "--subnet",
                "10.67.0.0/24",
                "--ip-range",
                "10.68.0.0/28",
            ],
            "not inside",
        ),
        (&["create", "j", "--mtu", "20"], "mtu"),
        (
            &["create", "k", "--bridge", "nd-a"],
            "already used by network a",
        ),
    ];
    for (args, want) in cases {
        let out = h.netctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    }
    assert_eq!(h.netctl_json(&["ls"]).as_array().unwrap().len(), 1);
    assert_eq!(
        h.ns.links(),
        links_before,
        "a refused create left an interface"
    );

    // A host route makes a subnet unavailable: explicit use is refused, auto choice skips it.
    must(h.ns.cmd(&[
        "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplinkp",
    ]));
    must(h.ns.cmd(&["ip", "link", "set", "uplinkp", "up"]));
    must(h.ns.cmd(&["ip", "addr", "add", "10.88.0.1/16", "dev", "uplink"]));
    must(h.ns.cmd(&["ip", "link", "set", "uplink", "up"]));
    let out = h.netctl(&["create", "r", "--subnet", "10.88.5.0/24"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("host route 10.88.0.0/16 dev uplink"));
    h.netctl_ok(&["create", "auto"]);
    assert_eq!(
        h.netctl_json(&["inspect", "auto"])["subnets"][0]["subnet"],
        "10.89.0.0/16"
    );
}

#[test]
fn invalid_attachments_are_refused_and_leak_nothing() {
    let h = Host::start();
    h.netctl_ok(&["create", "n", "--subnet", "10.70.0.0/24"]);
    let c = h.container("c");
    let client = h.client();
    let attach = |req: AttachRequest| client.attach("n", &req).unwrap_err();
    let base = AttachRequest {
        container_id: "ctr".into(),
        netns: c.path(),
        ..Default::default()
    };
    let cases: Vec<(AttachRequest, ErrorCode)> = vec![
        (
            AttachRequest {
                netns: "/run/netns/does-not-exist".into(),
                ..base.clone()
            },
            ErrorCode::NetnsNotFound,
        ),
        (
            AttachRequest {
                netns: "/etc/hostname".into(),
                ..base.clone()
            },
            ErrorCode::NetnsNotFound,
        ),
        (
            AttachRequest {
                ifname: Some("x".repeat(16)),
                ..base.clone()
            },
            ErrorCode::InvalidName,
        ),
        (
            AttachRequest {
                ifname: Some("a/b".into()),
                ..base.clone()
            },
            ErrorCode::InvalidName,
        ),
        (
            AttachRequest {
                container_id: "../x".into(),
                ..base.clone()
            },
            ErrorCode::InvalidName,
        ),
        (
            AttachRequest {
                ips: vec!["10.71.0.5".parse().unwrap()],
                ..base.clone()
            },
            ErrorCode::InvalidAddress,
        ),
        (
            AttachRequest {
                ips: vec!["10.70.0.255".parse().unwrap()],
                ..base.clone()
            },
            ErrorCode::InvalidAddress,
        ),
        (
            AttachRequest {
                mac: Some("01:00:5e:00:00:01".into()),
                ..base.clone()
            },
            ErrorCode::InvalidName,
        ),
        (
            // The network is not what the caller expects (the CNI plugin sends its config).
            AttachRequest {
                expect: Some(netd_api::NetworkDef {
                    subnets: vec![netd_api::SubnetRequest {
                        subnet: "10.71.0.0/24".parse().unwrap(),
                        gateway: None,
                        ip_range: None,
                    }],
                    mtu: Some(9000),
                    ..Default::default()
                }),
                ..base.clone()
            },
            ErrorCode::NetworkConflict,
        ),
    ];
    for (req, code) in cases {
        let e = attach(req.clone());
        assert_eq!(e.code(), Some(code), "{req:?}: {e}");
    }
    // Interface name taken inside the container: refused, the existing one untouched.
    must(c.cmd(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]));
    let e = attach(base.clone());
    assert_eq!(e.code(), Some(ErrorCode::InterfaceExists), "{e}");
    assert!(
        c.link("eth0p").is_some(),
        "the existing eth0 pair is untouched"
    );
    must(c.cmd(&["ip", "link", "del", "eth0"]));
    // Unknown network.
    let e = client.attach("nope", &base).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NetworkNotFound));
    // Nothing leaked: no endpoint, no veth on the bridge; then a good attach gets the first address.
    assert!(endpoints(&h, "n").is_empty());
    assert!(h.bridge_ports("nd-n").is_empty());
    // An expectation the network meets is no obstacle.
    let matching = netd_api::NetworkDef {
        subnets: vec![netd_api::SubnetRequest {
            subnet: "10.70.0.0/24".parse().unwrap(),
            gateway: None,
            ip_range: None,
        }],
        internal: Some(false),
        ..Default::default()
    };
    let expecting = AttachRequest {
        expect: Some(matching),
        ..base.clone()
    };
    let ok = client.attach("n", &expecting).expect("attach");
    assert_eq!(ok.endpoint.ips[0].to_string(), "10.70.0.2/24");
    let e = attach(base.clone());
    assert_eq!(e.code(), Some(ErrorCode::EndpointExists));
    let c2 = h.container("c2");
    let e = attach(AttachRequest {
        container_id: "other".into(),
        netns: c2.path(),
        ips: vec!["10.70.0.2".parse().unwrap()],
        ..Default::default()
    });
    assert_eq!(e.code(), Some(ErrorCode::AddressInUse), "{e}");
    assert_eq!(endpoints(&h, "n").len(), 1);
}

#[test]
fn state_survives_restart_and_kernel_state_outlives_the_daemon() {
    let mut h = Host::start();
    let c1 = h.container("c1");
    let c2 = h.container("c2");
    h.netctl_ok(&["create", "p", "--subnet", "10.72.0.0/24"]);
    connect_json(&h, &["p", "--netns", &c1.path(), "--name", "one"]);
    connect_json(&h, &["p", "--netns", &c2.path(), "--name", "two"]);
    h.stop();
    // Containers keep their network while netd is down.
    assert!(c1.ping("10.72.0.3"));
    h.spawn();
    let eps = endpoints(&h, "p");
    assert_eq!(eps.len(), 2);
    assert!(c1.ping("10.72.0.3"));
    // The allocator continues round-robin after the restart: a freed address is not reused at once.
    h.netctl_ok(&["disconnect", "p", "--name", "one"]);
    let c3 = h.container("c3");
    let r = connect_json(&h, &["p", "--netns", &c3.path(), "--name", "three"]);
    assert_eq!(first_ip(&r["endpoint"]), "10.72.0.4");
    // A crash (SIGKILL) loses nothing either.
    h.kill();
    h.spawn();
    assert_eq!(endpoints(&h, "p").len(), 2);
    let status = h.netctl_json(&["status"]);
    assert_eq!(status["networks"], 1);
    assert_eq!(status["endpoints"], 2);
}

#[test]
fn reconcile_recreates_bridges_and_forgets_dead_containers() {
    let mut h = Host::start();
    let c1 = h.container("c1");
    let c2 = h.container("c2");
    h.netctl_ok(&["create", "r", "--subnet", "10.73.0.0/24"]);
    connect_json(&h, &["r", "--netns", &c1.path(), "--name", "one"]);
    connect_json(&h, &["r", "--netns", &c2.path(), "--name", "two"]);
    h.stop();
    must(h.ns.cmd(&["ip", "link", "del", "nd-r"]));
    drop(c2); // the container's namespace vanishes while netd is down
    h.spawn();
    let br = h.ns.link("nd-r").expect("bridge recreated at start");
    assert!(
        br["flags"].as_array().unwrap().contains(&"UP".into()),
        "{br}"
    );
    assert_eq!(h.ns.addrs("nd-r"), vec!["10.73.0.1/24".to_string()]);
    let eps = endpoints(&h, "r");
    // one's veth died with the bridge? No: deleting a bridge only frees its ports. one keeps
    // its veth and stays; two's namespace is gone, so it is released with its lease.
    let names: Vec<&str> = eps.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["one"], "{eps:?}");
    let c4 = h.container("c4");
    let r = connect_json(
        &h,
        &[
            "r",
            "--netns",
            &c4.path(),
            "--name",
            "four",
            "--ip",
            "10.73.0.3",
        ],
    );
    assert_eq!(
        first_ip(&r["endpoint"]),
        "10.73.0.3",
        "two's lease was freed"
    );

    // Deleting the bridge while netd runs: the next attach recreates it.
    must(h.ns.cmd(&["ip", "link", "del", "nd-r"]));
    let c5 = h.container("c5");
    connect_json(&h, &["r", "--netns", &c5.path(), "--name", "five"]);
    assert!(h.ns.link("nd-r").is_some());
    assert!(c5.ping("10.73.0.1"));
    assert!(c5.ping("10.73.0.3"));
}

#[test]
fn dead_namespaces_are_collected_while_running() {
    let h = Host::start_with(&["--gc-interval", "1"]);
    h.netctl_ok(&["create", "g", "--subnet", "10.74.0.0/24"]);
    let c = h.container("gone");
    connect_json(&h, &["g", "--netns", &c.path(), "--name", "gone"]);
    drop(c);
    let released = netd_tests::wait_for(std::time::Duration::from_secs(15), || {
        endpoints(&h, "g").is_empty().then_some(())
    });
    assert!(
        released.is_some(),
        "endpoint of a vanished namespace was not released"
    );
    assert!(h.bridge_ports("nd-g").is_empty());
}

#[test]
fn hundred_parallel_connects_get_distinct_addresses() {
    let h = Host::start();
    h.netctl_ok(&["create", "par", "--subnet", "10.75.0.0/24"]);
    let containers: Vec<_> = (0..100).map(|i| h.container(&format!("p{i}"))).collect();
    let socket = h.socket();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let socket = socket.clone();
                s.spawn(move || {
                    let client = netd_api::Client::new(socket);
                    let req = AttachRequest {
                        container_id: format!("ctr{i}"),
                        netns: c.path(),
                        name: Some(format!("c{i}")),
                        ..Default::default()
                    };
                    client.attach("par", &req)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: BTreeSet<String> = results
        .iter()
        .map(|r| r.as_ref().expect("attach").endpoint.ips[0].to_string())
        .collect();
    assert_eq!(ips.len(), 100, "duplicates among {ips:?}");
    assert_eq!(h.bridge_ports("nd-par").len(), 100);
    // Every container really has its address and reaches the gateway.
    for (i, c) in containers.iter().enumerate().step_by(11) {
        let want = results[i].as_ref().unwrap().endpoint.ips[0].to_string();
        assert_eq!(c.addrs("eth0"), vec![want]);
        assert!(c.ping("10.75.0.1"));
    }
    std::thread::scope(|s| {
        for i in 0..100 {
            let socket = socket.clone();
            s.spawn(move || {
                let client = netd_api::Client::new(socket);
                let cid = format!("ctr{i}");
                client.detach("par", &cid, "eth0").expect("detach");
            });
        }
    });
    assert!(endpoints(&h, "par").is_empty());
    assert!(h.bridge_ports("nd-par").is_empty(), "veths leaked");
    for c in &containers {
        assert!(soon(|| !c.links().contains(&"eth0".to_string())));
    }
    h.netctl_ok(&["rm", "par"]);
    assert!(h.ns.link("nd-par").is_none());
}

#[test]
fn dual_stack_network() {
    let h = Host::start();
    h.netctl_ok(&[
        "create",
        "ds",
        "--subnet",
        "10.76.0.0/24",
        "--subnet",
        "fd00:76::/64",
    ]);
    let c1 = h.container("c1");
    let c2 = h.container("c2");
    let r1 = connect_json(&h, &["ds", "--netns", &c1.path(), "--name", "a"]);
    let r2 = connect_json(
        &h,
        &[
            "ds",
            "--netns",
            &c2.path(),
            "--name",
            "b",
            "--mac",
            "02:00:00:00:00:42",
        ],
    );
    assert_eq!(
        r1["endpoint"]["ips"],
        serde_json::json!(["10.76.0.2/24", "fd00:76::2/64"])
    );
    assert_eq!(r2["endpoint"]["mac"], "02:00:00:00:00:42");
    assert_eq!(c2.link("eth0").unwrap()["address"], "02:00:00:00:00:42");
    assert!(c1.ping("fd00:76::3"), "IPv6 between containers");
    assert!(c1.ping("fd00:76::1"), "IPv6 gateway");
    let routes = String::from_utf8_lossy(&c1.exec(&["ip", "-6", "route"]).stdout).into_owned();
    assert!(routes.contains("default via fd00:76::1"), "{routes}");
}

#[test]
fn internal_network_has_no_default_route() {
    let h = Host::start();
    h.netctl_ok(&["create", "int", "--internal", "--subnet", "10.77.0.0/24"]);
    let c = h.container("c");
    let r = connect_json(&h, &["int", "--netns", &c.path(), "--name", "a"]);
    assert!(r["routes"].as_array().unwrap().is_empty());
    let routes = String::from_utf8_lossy(&c.exec(&["ip", "route"]).stdout).into_owned();
    assert!(!routes.contains("default"), "{routes}");
    assert!(c.ping("10.77.0.1"));
}

#[test]
fn existing_bridge_is_validated_not_clobbered() {
    let h = Host::start();
    must(h.ns.cmd(&[
        "ip",
        "link",
        "add",
        "nd-taken",
        "type",
        "veth",
        "peer",
        "name",
        "nd-takenp",
    ]));
    let out = h.netctl(&["create", "taken", "--subnet", "10.78.0.0/24"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a bridge"));
    assert!(
        h.netctl_json(&["ls"]).as_array().unwrap().is_empty(),
        "store rolled back"
    );
    must(h.ns.cmd(&["ip", "link", "del", "nd-taken"]));
    must(h.ns.cmd(&["ip", "link", "add", "nd-taken", "type", "bridge"]));
    h.netctl_ok(&["create", "taken", "--subnet", "10.78.0.0/24"]);
    assert_eq!(
        h.ns.addrs("nd-taken"),
        vec!["10.78.0.1/24".to_string()],
        "adopted"
    );
}

#[test]
fn clients_fail_clearly_without_a_daemon_and_api_errors_are_json() {
    let out = run(Command::new(netd_tests::bin("netctl"))
        .env("NETD_SOCKET", "/nonexistent/netd.sock")
        .arg("ls"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("netctl: cannot reach netd at /nonexistent/netd.sock:"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1);
    let out = run(Command::new(netd_tests::bin("netctl")).args([
        "--socket",
        "/nonexistent/other.sock",
        "ls",
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/other.sock"));

    let h = Host::start();
    let mode = std::fs::metadata(h.socket()).unwrap();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let client = h.client();
    let raw = |m: &str, path: &str, body: &str| {
        let body = (!body.is_empty()).then(|| body.as_bytes().to_vec());
        let (status, bytes) = client.raw(m, path, body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
        (status, v["code"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        raw("POST", "/v1/networks", "{\"name\":"),
        (400, "invalid_request".into())
    );
    assert_eq!(
        raw("POST", "/v1/networks", "{\"name\":5}"),
        (400, "invalid_request".into())
    );
    assert_eq!(
        raw("POST", "/v1/networks", "{\"name\":\"x\",\"bogus\":1}"),
        (400, "invalid_request".into())
    );
    assert_eq!(
        raw("GET", "/v1/nothing", ""),
        (400, "invalid_request".into())
    );
    assert_eq!(
        raw("GET", "/v1/networks/none", ""),
        (404, "network_not_found".into())
    );
    assert_eq!(
        raw("DELETE", "/v1/networks/none/endpoints/c/eth0", "").0,
        200,
        "DEL of unknown succeeds"
    );
    // A body over the limit is refused (400 with a JSON error, or the connection is cut
    // before the client finishes sending); nothing is created either way.
    let huge = format!("{{\"name\":\"{}\"}}", "a".repeat(3 << 20));
    match client.raw("POST", "/v1/networks", Some(huge.into_bytes())) {
        Ok((status, body)) => {
            assert_eq!(status, 400);
            assert!(
                String::from_utf8_lossy(&body).contains("length limit"),
                "{body:?}"
            );
        }
        Err(e) => assert!(e.to_string().contains("sending request"), "{e}"),
    }
    let almost = format!("{{\"name\":\"{}\"}}", "a".repeat(900 << 10));
    assert_eq!(
        raw("POST", "/v1/networks", &almost),
        (400, "invalid_name".into())
    );
    assert!(h.netctl_json(&["ls"]).as_array().unwrap().is_empty());
}

#[test]
fn api_refuses_non_root_peers_and_has_no_tcp_listener() {
    let h = Host::start();
    // Loosen the file mode on purpose so an unprivileged process can connect: the peer
    // credential check must still refuse it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(h.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(h.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "--unix-socket",
        ])
        .arg(h.socket())
        .args([
            "-X",
            "POST",
            "-d",
            r#"{"name":"sneaky"}"#,
            "http://netd/v1/networks",
        ]));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON refusal");
    assert_eq!(body["code"], "permission_denied", "{body}");
    assert!(body["message"].as_str().unwrap().contains("uid 65534"));
    assert!(
        h.netctl_json(&["ls"]).as_array().unwrap().is_empty(),
        "nothing was created"
    );
    // Root is served over the same socket.
    h.netctl_ok(&["ls"]);
    // No TCP listener of ours in the host namespace besides DNS (port 53 on gateways).
    let ss = must(h.ns.cmd(&["ss", "-Hltnp"]));
    let api: Vec<&str> = ss
        .lines()
        .filter(|l| l.contains("netd") && !l.contains(":53 "))
        .collect();
    assert!(api.is_empty(), "netd listens on TCP: {api:?}");
}

#[test]
fn a_request_body_that_never_arrives_gets_an_error_not_a_stuck_connection() {
    use std::io::{Read, Write};
    let h = Host::start();
    let mut s = std::os::unix::net::UnixStream::connect(h.socket()).unwrap();
    // Announce 100 bytes, send 10, then wait: netd must answer on its own.
    s.write_all(
        b"POST /v1/networks HTTP/1.1\r\nhost: netd\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":\"x",
    )
    .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s
        .read(&mut buf)
        .expect("netd answered before the client gave up");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("invalid_request"), "{text}");
    // The daemon is unaffected and nothing was created.
    assert!(h.netctl_json(&["ls"]).as_array().unwrap().is_empty());
}

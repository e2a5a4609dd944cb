//! DNS as netd serves it: names registered by attach, gone with detach, scoped per network,
//! queried with `dig` and resolved by `ping` from real container namespaces.

use netd_tests::{outside, Host};

#[test]
fn containers_ping_each_other_by_name() {
    let h = Host::start();
    h.netctl_ok(&[
        "create",
        "mynet",
        "--subnet",
        "10.101.0.0/24",
        "--dns-domain",
        "mynet.netd",
    ]);
    let c1 = h.container("c1");
    let c2 = h.container("c2");
    h.netctl_ok(&[
        "connect",
        "mynet",
        "--netns",
        &c1.path(),
        "--name",
        "web",
        "--alias",
        "frontend",
    ]);
    h.netctl_ok(&[
        "connect",
        "mynet",
        "--netns",
        &c2.path(),
        "--name",
        "db",
        "--alias",
        "store",
    ]);
    // Visible the moment connect returned: no sleep.
    assert_eq!(c1.dig("10.101.0.1", "A", "db"), ["10.101.0.3"]);
    assert_eq!(
        c2.dig("10.101.0.1", "A", "WEB"),
        ["10.101.0.2"],
        "case-insensitive"
    );
    assert_eq!(c1.dig("10.101.0.1", "A", "store"), ["10.101.0.3"]);
    assert_eq!(c1.dig("10.101.0.1", "A", "db.mynet"), ["10.101.0.3"]);
    assert_eq!(c1.dig("10.101.0.1", "A", "db.mynet.netd"), ["10.101.0.3"]);
    assert_eq!(
        c1.dig("10.101.0.1", "PTR", "3.0.101.10.in-addr.arpa"),
        ["db.mynet."]
    );
    assert_eq!(c1.dig_status("10.101.0.1", "AAAA", "db"), "NOERROR");
    assert!(c1.dig("10.101.0.1", "AAAA", "db").is_empty());
    assert_eq!(c1.dig_status("10.101.0.1", "A", "nobody.mynet"), "NXDOMAIN");
    // ping by name through the container's resolver.
    c1.use_nameserver("10.101.0.1");
    assert!(c1.ping("db"), "ping db by name");
    // netctl dns shows the same.
    assert_eq!(
        h.netctl_ok(&["dns", "db", "--network", "mynet"]).trim(),
        "10.101.0.3"
    );
    // The search domain reaches the attach result (and so the CNI result).
    let c3 = h.container("c3");
    let r = h.netctl_json(&["connect", "mynet", "--netns", &c3.path(), "--name", "x"]);
    assert_eq!(r["dns"]["search"], serde_json::json!(["mynet.netd"]));
    assert_eq!(r["dns"]["nameservers"], serde_json::json!(["10.101.0.1"]));
    // Gone the moment disconnect returned.
    h.netctl_ok(&["disconnect", "mynet", "--name", "db"]);
    assert_eq!(c1.dig_status("10.101.0.1", "A", "db.mynet"), "NXDOMAIN");
    // A bare unknown name is forwarded; the test upstream is dead, so SERVFAIL (never silence).
    assert_eq!(c1.dig_status("10.101.0.1", "A", "db"), "SERVFAIL");
    assert!(h.netctl(&["dns", "db", "--network", "mynet"]).status.code() != Some(0));
}

#[test]
fn shared_alias_returns_every_address_and_scope_follows_the_networks() {
    let h = Host::start();
    h.netctl_ok(&["create", "a", "--subnet", "10.102.0.0/24"]);
    h.netctl_ok(&["create", "b", "--subnet", "10.103.0.0/24"]);
    let s1 = h.container("s1");
    let s2 = h.container("s2");
    let cb = h.container("cb");
    let both = h.container("both");
    h.netctl_ok(&[
        "connect",
        "a",
        "--netns",
        &s1.path(),
        "--name",
        "s1",
        "--alias",
        "svc",
    ]);
    h.netctl_ok(&[
        "connect",
        "a",
        "--netns",
        &s2.path(),
        "--name",
        "s2",
        "--alias",
        "svc",
    ]);
    h.netctl_ok(&["connect", "b", "--netns", &cb.path(), "--name", "bonly"]);
    let mut svc = s1.dig("10.102.0.1", "A", "svc");
    svc.sort();
    assert_eq!(svc, ["10.102.0.2", "10.102.0.3"]);
    // A container on b cannot resolve a's names, and a stranger is refused.
    assert!(cb.dig("10.103.0.1", "A", "s1").is_empty());
    // Another network's zone is not this client's: it is forwarded (dead test upstream).
    assert_eq!(cb.dig_status("10.103.0.1", "A", "s1.a"), "SERVFAIL");
    // A container on both networks resolves names of both, through either gateway.
    h.netctl_ok(&["connect", "a", "--netns", &both.path(), "--name", "both"]);
    h.netctl_ok(&[
        "connect",
        "b",
        "--netns",
        &both.path(),
        "--name",
        "both",
        "--ifname",
        "eth1",
    ]);
    assert_eq!(both.dig("10.102.0.1", "A", "bonly"), ["10.103.0.2"]);
    assert_eq!(both.dig("10.103.0.1", "A", "s1"), ["10.102.0.2"]);
}

#[test]
fn names_survive_a_restart_and_strangers_are_refused() {
    let mut h = Host::start();
    h.netctl_ok(&["create", "r", "--subnet", "10.104.0.0/24"]);
    let c1 = h.container("c1");
    h.netctl_ok(&["connect", "r", "--netns", &c1.path(), "--name", "keep"]);
    h.restart();
    assert_eq!(c1.dig("10.104.0.1", "A", "keep"), ["10.104.0.2"]);
    // A namespace that is not on any netd network but can route to the gateway is refused.
    let out = outside(&h.ns);
    netd_tests::must(out.cmd(&["ip", "route", "add", "10.104.0.0/24", "via", "203.0.113.1"]));
    assert_eq!(out.dig_status("10.104.0.1", "A", "keep"), "REFUSED");
}

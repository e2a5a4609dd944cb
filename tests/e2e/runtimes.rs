//! Real container runtimes from Debian 12 start real containers on netd networks through
//! `netd-cni`: Podman 4 (CNI backend), containerd's `ctr run --cni`, containerd's CRI plugin
//! driven like kubelet (`cri-client`), and Docker with `--network none` + `netctl connect`.
//! netd runs in a private "host" namespace and every runtime runs inside it with private
//! configuration, so nothing leaks to the machine. A scenario whose runtime is not installed
//! prints `SKIPPED …` and passes; CI installs them all (`scripts/install-deps.sh`).
//!
//! The plugin directory holds a logging wrapper in front of `netd-cni`, so the tests also
//! assert on what each runtime sends (documented in `docs/runtimes.md`).

#[path = "support.rs"]
mod support;

use std::time::Duration;

use netd_tests::{soon, wait_for, Host};
use serde_json::{json, Value};
use support::*;

const PODMAN: &[(&str, &str)] = &[
    ("podman", "podman"),
    ("runc", "runc"),
    ("busybox", "busybox-static"),
];
const CONTAINERD: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("busybox", "busybox-static"),
];
const DOCKER: &[(&str, &str)] = &[
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("busybox", "busybox-static"),
];

fn endpoints(h: &Host, net: &str) -> Vec<Value> {
    h.netctl_json(&["inspect", net])["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ip_of(ep: &Value) -> String {
    ep["ips"][0]
        .as_str()
        .and_then(|s| s.split('/').next())
        .expect("endpoint address")
        .to_string()
}

fn endpoint_named<'a>(eps: &'a [Value], name: &str) -> &'a Value {
    eps.iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint named {name} in {eps:#?}"))
}

/// Addresses of `ifname` in the container, from inside it (busybox `ip`).
fn container_ipv4(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "inet")
        .map(|w| w[1].to_string())
        .collect()
}

/// `nslookup NAME SERVER` from busybox (its own resolver); the addresses in the answer.
fn nslookup(out: &std::process::Output) -> Vec<String> {
    let s = String::from_utf8_lossy(&out.stdout);
    // The first "Address" block is the server; answers follow the "Name:" line.
    s.split("Name:")
        .skip(1)
        .flat_map(|b| {
            b.lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().split(' ').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Asserts that netd keeps nothing of network `net` after its containers are gone: no
/// endpoint (lease), no port on the bridge, no rule naming a former address.
fn assert_clean(h: &Host, net: &str, bridge: &str, former: &[String]) {
    let eps = endpoints(h, net);
    assert!(eps.is_empty(), "endpoints left in {net}: {eps:#?}");
    assert!(
        h.bridge_ports(bridge).is_empty(),
        "veths left on {bridge}: {:?}",
        h.bridge_ports(bridge)
    );
    for ip in former {
        let rules = nft_lines_with(h, ip);
        assert!(rules.is_empty(), "rules still name {ip}: {rules:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Podman
// ---------------------------------------------------------------------------------------

/// Addresses, connectivity, `network connect/disconnect`, restart and teardown under Podman,
/// plus what Podman sends to the plugin.
#[test]
fn podman_containers_get_netd_addresses_connect_and_leave_nothing() {
    if !require(
        "podman_containers_get_netd_addresses_connect_and_leave_nothing",
        PODMAN,
    ) {
        return;
    }
    let h = Host::start();
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "front.conflist",
        &h,
        "front",
        json!({"subnet": "10.91.0.0/24"}),
    );
    cni.conflist(
        "back.conflist",
        &h,
        "back",
        json!({"subnet": "10.92.0.0/24"}),
    );
    let pm = Podman::new(&h, &cni, &img);
    let nets = pm.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.contains("front netd-cni"), "{nets}");

    pm.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "www",
        PODMAN_IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "front",
        PODMAN_IMAGE,
        "sleep",
        "600",
    ]);
    let eps = endpoints(&h, "front");
    assert_eq!(eps.len(), 2, "{eps:#?}");
    let web = endpoint_named(&eps, "web");
    let db = endpoint_named(&eps, "db");
    let (web_ip, db_ip) = (ip_of(web), ip_of(db));
    // Podman passes the container name in K8S_POD_NAME and aliases (plus the short id).
    assert!(
        web["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "www"),
        "{web:#?}"
    );
    // The address netd leased is the one inside the container, with the subnet prefix.
    let addrs = container_ipv4(&pm.exec("db", &["ip", "-4", "-o", "addr", "show", "eth0"]));
    assert_eq!(addrs, vec![format!("{db_ip}/24")]);
    let route = String::from_utf8_lossy(&pm.exec("db", &["ip", "route"]).stdout).into_owned();
    assert!(route.contains("default via 10.91.0.1 dev eth0"), "{route}");
    // Podman writes the result's DNS server (the gateway) first into resolv.conf.
    let resolv =
        String::from_utf8_lossy(&pm.exec("db", &["cat", "/etc/resolv.conf"]).stdout).into_owned();
    assert!(
        resolv.lines().find(|l| l.starts_with("nameserver")) == Some("nameserver 10.91.0.1"),
        "{resolv}"
    );
    assert!(pm.ping("db", &web_ip), "db -> web by address");
    let body = http_get(&mut pm.cmd(&["exec", "db", "sh", "-c", &nc_get(&web_ip, 80)]));
    assert_eq!(body.as_deref().map(str::trim), Some(INDEX), "db -> web:80");
    assert_eq!(h.bridge_ports("nd-front").len(), 2);

    // network connect: ADD on eth1 into the running container; disconnect: DEL.
    pm.ok(&["network", "connect", "--alias", "store", "back", "db"]);
    let back = endpoints(&h, "back");
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0]["ifname"], "eth1");
    let back_ip = ip_of(&back[0]);
    assert_eq!(
        container_ipv4(&pm.exec("db", &["ip", "-4", "-o", "addr", "show", "eth1"])),
        vec![format!("{back_ip}/24")]
    );
    assert!(h.ns.ping(&back_ip), "host -> db on back");
    pm.ok(&["network", "disconnect", "back", "db"]);
    assert!(
        endpoints(&h, "back").is_empty(),
        "disconnect released the lease"
    );
    assert!(
        !String::from_utf8_lossy(&pm.exec("db", &["ip", "link"]).stdout).contains("eth1"),
        "eth1 removed"
    );

    // restart = DEL then ADD of the same container: still one endpoint, still reachable.
    pm.ok(&["restart", "--time", "0", "web"]);
    let eps = endpoints(&h, "front");
    assert_eq!(eps.len(), 2, "{eps:#?}");
    let web_ip2 = ip_of(endpoint_named(&eps, "web"));
    assert!(pm.ping("db", &web_ip2), "db -> restarted web");

    // A container that exits by itself is torn down by Podman's cleanup process.
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "short",
        "--network",
        "front",
        PODMAN_IMAGE,
        "true",
    ]);
    let gone = wait_for(Duration::from_secs(30), || {
        endpoints(&h, "front")
            .iter()
            .all(|e| e["name"] != "short")
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "exited container's lease not released:\n{}",
        cni.dump()
    );

    // What Podman sends.
    let calls = cni.calls();
    assert!(
        calls.iter().all(|c| c.rc == 0),
        "a plugin call failed:\n{}",
        cni.dump()
    );
    assert!(!cni.calls_of("VERSION").is_empty(), "Podman probes VERSION");
    let add = cni
        .calls_of("ADD")
        .into_iter()
        .find(|c| {
            c.var("CNI_ARGS")
                .is_some_and(|a| a.contains("K8S_POD_NAME=web"))
        })
        .expect("ADD for web");
    assert_eq!(add.var("CNI_IFNAME"), Some("eth0"));
    assert!(
        add.var("CNI_NETNS")
            .unwrap_or("")
            .starts_with("/run/netns/"),
        "{}",
        add.summary()
    );
    assert!(add.var("CNI_ARGS").unwrap().contains("IgnoreUnknown=1"));
    let aliases = &add.stdin["runtimeConfig"]["aliases"]["front"];
    assert_eq!(aliases[0], "www", "{}", add.summary());
    assert_eq!(
        aliases.as_array().map(Vec::len),
        Some(2),
        "alias + short id"
    );
    let dels = cni.calls_of("DEL");
    assert!(
        dels.iter().any(|c| c.var("CNI_IFNAME") == Some("eth1")),
        "disconnect DEL"
    );
    assert!(
        dels.iter().all(|c| c.stdin.get("prevResult").is_some()),
        "Podman passes prevResult on DEL"
    );

    pm.ok(&["rm", "--force", "--time", "0", "web", "db", "short"]);
    assert_clean(&h, "front", "nd-front", &[web_ip, web_ip2, db_ip]);
    assert_clean(&h, "back", "nd-back", &[back_ip]);
    assert!(
        soon(|| h.ns.links().iter().all(|l| !l.starts_with("ndv"))),
        "host veths left: {:?}",
        h.ns.links()
    );
}

/// Name resolution through netd's DNS under Podman: by name, by `--network-alias`, and on
/// both networks of a container connected to a second one. Needs netd's DNS.
#[test]
fn podman_containers_resolve_each_other_by_name_and_alias() {
    if !require(
        "podman_containers_resolve_each_other_by_name_and_alias",
        PODMAN,
    ) {
        return;
    }
    let h = Host::start();
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "front.conflist",
        &h,
        "front",
        json!({"subnet": "10.91.0.0/24"}),
    );
    cni.conflist(
        "back.conflist",
        &h,
        "back",
        json!({"subnet": "10.92.0.0/24"}),
    );
    let pm = Podman::new(&h, &cni, &img);
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "www",
        PODMAN_IMAGE,
        "sleep",
        "600",
    ]);
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "front",
        PODMAN_IMAGE,
        "sleep",
        "600",
    ]);
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "cache",
        "--network",
        "back",
        PODMAN_IMAGE,
        "sleep",
        "600",
    ]);
    let eps = endpoints(&h, "front");
    let web_ip = ip_of(endpoint_named(&eps, "web"));
    let db_ip = ip_of(endpoint_named(&eps, "db"));
    let cache_ip = ip_of(&endpoints(&h, "back")[0]);

    let answers = nslookup(&pm.exec("db", &["nslookup", "web", "10.91.0.1"]));
    assert_eq!(
        answers,
        vec![web_ip.clone()],
        "web via the gateway resolver"
    );
    assert!(pm.ping("db", "web"), "db pings web by name");
    assert!(pm.ping("db", "www"), "db pings web by its alias");
    assert!(pm.ping("web", "db"), "web pings db by name");

    // Connected to back as well: resolves names of both networks.
    pm.ok(&["network", "connect", "back", "db"]);
    assert!(pm.ping("db", "cache"), "db -> cache (back)");
    assert!(pm.ping("db", "web"), "db -> web (front) still");
    assert_eq!(
        nslookup(&pm.exec("cache", &["nslookup", "db", "10.92.0.1"])).len(),
        1
    );
    // A container only on front does not see back's names.
    assert!(
        nslookup(&pm.exec("web", &["nslookup", "cache", "10.91.0.1"])).is_empty(),
        "cache must not resolve from front only"
    );

    // Removed containers leave no record.
    pm.ok(&["rm", "--force", "--time", "0", "web"]);
    assert!(
        nslookup(&pm.exec("db", &["nslookup", "web", "10.91.0.1"])).is_empty(),
        "record of removed web"
    );
    pm.ok(&["rm", "--force", "--time", "0", "db", "cache"]);
    assert_clean(&h, "front", "nd-front", &[web_ip, db_ip.clone()]);
    assert_clean(&h, "back", "nd-back", &[cache_ip]);
}

/// `podman run -p 8080:80` reaches busybox httpd from the host namespace and from outside.
/// Needs netd's firewall (DNAT).
#[test]
fn podman_published_port_reaches_httpd() {
    if !require("podman_published_port_reaches_httpd", PODMAN) {
        return;
    }
    let h = Host::start();
    let out = Outside::new(&h);
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "front.conflist",
        &h,
        "front",
        json!({"subnet": "10.91.0.0/24"}),
    );
    let pm = Podman::new(&h, &cni, &img);
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "--network",
        "front",
        "-p",
        "8080:80",
        PODMAN_IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let eps = endpoints(&h, "front");
    let ip = ip_of(&eps[0]);
    // Recorded with the endpoint as Podman sent it.
    let pmap = &eps[0]["port_mappings"];
    assert!(pmap.to_string().contains("8080"), "{pmap}");
    let add = cni.calls_of("ADD").pop().expect("ADD");
    assert_eq!(
        add.stdin["runtimeConfig"]["portMappings"],
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    );

    let from_outside = out.http_get_ready(HOST_OUT_IP, 8080);
    assert_eq!(
        from_outside.as_deref().map(str::trim),
        Some(INDEX),
        "outside -> host:8080"
    );
    let from_host = http_get(&mut h.ns.cmd(&["sh", "-c", &nc_get(HOST_OUT_IP, 8080)]));
    assert_eq!(
        from_host.as_deref().map(str::trim),
        Some(INDEX),
        "host -> host:8080"
    );

    pm.ok(&["rm", "--force", "--time", "0", "pub"]);
    assert!(
        out.http_get(HOST_OUT_IP, 8080).is_none(),
        "port still published after rm"
    );
    assert_clean(&h, "front", "nd-front", &[ip]);
}

// ---------------------------------------------------------------------------------------
// containerd: ctr run --cni
// ---------------------------------------------------------------------------------------

/// `ctr run --cni`: addresses, sibling connectivity, DEL from a foreground run, and the
/// lease of a detached container (never DELeted by ctr) reclaimed once its process is gone.
#[test]
fn ctr_cni_containers_get_addresses_and_leases_are_reclaimed() {
    if !require(
        "ctr_cni_containers_get_addresses_and_leases_are_reclaimed",
        CONTAINERD,
    ) {
        return;
    }
    let h = Host::start();
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "10-ctrnet.conflist",
        &h,
        "ctrnet",
        json!({"subnet": "10.93.0.0/24"}),
    );
    let ctd = Containerd::start(&h, &cni, &img);
    ctd.track("default", "c1");
    ctd.ctr_ok(&[
        "run", "--cni", "-d", CTR_IMAGE, "c1", "httpd", "-f", "-p", "80", "-h", "/www",
    ]);
    ctd.track("default", "c2");
    ctd.ctr_ok(&["run", "--cni", "-d", CTR_IMAGE, "c2", "sleep", "600"]);
    let eps = endpoints(&h, "ctrnet");
    assert_eq!(eps.len(), 2, "{eps:#?}");
    let c1 = eps
        .iter()
        .find(|e| e["container_id"] == "default-c1")
        .expect("c1");
    let c1_ip = ip_of(c1);
    assert!(
        c1["netns"].as_str().unwrap().starts_with("/proc/"),
        "{c1:#?}"
    );

    // A foreground `ctr run --rm --cni`: ADD, the workload, then DEL (with an empty netns).
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--cni",
        CTR_IMAGE,
        "c3",
        "sh",
        "-c",
        &format!(
            "ip -4 -o addr show eth0; ping -c1 -W2 {c1_ip} >/dev/null && echo PING-OK; {}",
            nc_get(&c1_ip, 80)
        ),
    ]);
    assert!(out.contains("inet 10.93.0."), "{out}");
    assert!(out.contains("PING-OK"), "c3 -> c1:\n{out}");
    assert!(out.contains(INDEX), "c3 -> c1:80:\n{out}");
    let eps = endpoints(&h, "ctrnet");
    assert!(
        eps.iter().all(|e| e["container_id"] != "default-c3"),
        "c3 released: {eps:#?}"
    );

    // What ctr sends.
    let adds = cni.calls_of("ADD");
    assert_eq!(adds.len(), 3, "{}", cni.dump());
    for a in &adds {
        assert!(
            a.var("CNI_NETNS").unwrap_or("").starts_with("/proc/"),
            "{}",
            a.summary()
        );
        assert_eq!(a.var("CNI_ARGS"), Some(""), "{}", a.summary());
        assert!(a.var("CNI_CONTAINERID").unwrap().starts_with("default-"));
    }
    let dels = cni.calls_of("DEL");
    assert_eq!(
        dels.len(),
        1,
        "only the foreground run is DELeted:\n{}",
        cni.dump()
    );
    assert_eq!(dels[0].var("CNI_NETNS"), Some(""), "{}", dels[0].summary());
    assert!(cni.calls().iter().all(|c| c.rc == 0), "{}", cni.dump());

    // Detached c1 is killed and removed: nobody sends DEL; netd reclaims its lease because
    // the process (and its /proc/<pid>/ns/net) is gone.
    ctd.ctr_ok(&["tasks", "kill", "-s", "KILL", "c1"]);
    let _ = wait_for(Duration::from_secs(10), || {
        ctd.ctr_run(&["tasks", "rm", "c1"])
            .status
            .success()
            .then_some(())
    });
    ctd.ctr_ok(&["containers", "rm", "c1"]);
    let reclaimed = wait_for(Duration::from_secs(60), || {
        endpoints(&h, "ctrnet")
            .iter()
            .all(|e| e["container_id"] != "default-c1")
            .then_some(())
    });
    assert!(
        reclaimed.is_some(),
        "lease of the vanished detached container not reclaimed:\n{:#?}",
        endpoints(&h, "ctrnet")
    );
    assert_eq!(cni.calls_of("DEL").len(), 1, "ctr sent no DEL for c1");
    assert_eq!(
        h.bridge_ports("nd-ctrnet").len(),
        1,
        "only c2's veth is left"
    );
}

/// `ctr run --cni` gives no container name (empty `CNI_ARGS`), so a sibling is reached by its
/// CNI container id (`<namespace>-<id>`). Needs netd's DNS and the id-as-name fallback.
#[test]
fn ctr_cni_container_resolves_sibling_by_name() {
    if !require("ctr_cni_container_resolves_sibling_by_name", CONTAINERD) {
        return;
    }
    let h = Host::start();
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "10-ctrnet.conflist",
        &h,
        "ctrnet",
        json!({"subnet": "10.93.0.0/24"}),
    );
    let ctd = Containerd::start(&h, &cni, &img);
    ctd.track("default", "web");
    ctd.ctr_ok(&["run", "--cni", "-d", CTR_IMAGE, "web", "sleep", "600"]);
    let web_ip = ip_of(&endpoints(&h, "ctrnet")[0]);
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--cni",
        CTR_IMAGE,
        "client",
        "sh",
        "-c",
        "nslookup default-web 10.93.0.1; echo 'nameserver 10.93.0.1' > /etc/resolv.conf; \
         ping -c1 -W2 default-web >/dev/null && echo PING-OK",
    ]);
    assert!(
        out.contains(&web_ip),
        "default-web resolves to {web_ip}:\n{out}"
    );
    assert!(
        out.contains("PING-OK"),
        "client pings default-web by name:\n{out}"
    );
}

/// A `ctr run --cni` container reaches the outside namespace (which has no route back to the
/// container subnet) through netd's masquerade. Needs netd's firewall (NAT).
#[test]
fn ctr_cni_container_reaches_outside_through_nat() {
    if !require("ctr_cni_container_reaches_outside_through_nat", CONTAINERD) {
        return;
    }
    let h = Host::start();
    let out = Outside::new(&h);
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "10-ctrnet.conflist",
        &h,
        "ctrnet",
        json!({"subnet": "10.93.0.0/24"}),
    );
    let ctd = Containerd::start(&h, &cni, &img);
    // Control: without NAT the outside could not answer the container subnet.
    assert!(
        !out.ns.ping("10.93.0.1"),
        "outside must have no route to the containers"
    );
    let got = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--cni",
        CTR_IMAGE,
        "nat",
        "sh",
        "-c",
        &format!("ping -c1 -W2 {OUTSIDE_IP} >/dev/null && echo PING-OK"),
    ]);
    assert!(
        got.contains("PING-OK"),
        "container -> outside through NAT:\n{got}"
    );
}

// ---------------------------------------------------------------------------------------
// containerd CRI (the kubelet path)
// ---------------------------------------------------------------------------------------

fn cri_ready(ctd: &Containerd) -> bool {
    let st = ctd.cri_json(&["status"]);
    st["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "NetworkReady" && c["status"] == true)
    })
}

/// RunPodSandbox / PodSandboxStatus / StopPodSandbox / RemovePodSandbox over containerd's
/// CRI socket: the pod's IP is netd's, kubelet's metadata reaches netd, both DELs succeed,
/// nothing is left, and the node stays NetworkReady throughout.
#[test]
fn cri_pod_gets_its_ip_from_netd_and_tears_down_cleanly() {
    if !require(
        "cri_pod_gets_its_ip_from_netd_and_tears_down_cleanly",
        CONTAINERD,
    ) {
        return;
    }
    if cri_client().is_none() {
        eprintln!(
            "SKIPPED cri_pod_gets_its_ip_from_netd_and_tears_down_cleanly: cri-client is not \
             built (cargo build -p cri-client)"
        );
        return;
    }
    let h = Host::start();
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "10-netd.conflist",
        &h,
        "k8s-pods",
        json!({"subnet": "10.94.0.0/24"}),
    );
    let ctd = Containerd::start(&h, &cni, &img);
    let ready = wait_for(Duration::from_secs(20), || cri_ready(&ctd).then_some(()));
    assert!(
        ready.is_some(),
        "NetworkReady before any pod: {}",
        ctd.cri_json(&["status"])
    );

    let id = ctd.cri_json(&[
        "run-pod",
        "--name",
        "web",
        "--namespace",
        "shop",
        "--uid",
        "uid-web-1",
        "-p",
        "8081:80",
    ])["podSandboxId"]
        .as_str()
        .expect("pod id")
        .to_string();
    ctd.track_pod(&id);
    let st = ctd.cri_json(&["pod-status", &id]);
    let pod_ip = st["status"]["network"]["ip"]
        .as_str()
        .expect("pod ip")
        .to_string();
    let eps = endpoints(&h, "k8s-pods");
    assert_eq!(eps.len(), 1, "{eps:#?}");
    assert_eq!(ip_of(&eps[0]), pod_ip, "kubelet sees netd's address");
    assert_eq!(eps[0]["container_id"], id.as_str());
    assert_eq!(eps[0]["name"], "web");
    assert_eq!(eps[0]["labels"]["k8s.pod.namespace"], "shop");
    assert_eq!(eps[0]["labels"]["k8s.pod.uid"], "uid-web-1");
    assert!(
        eps[0]["port_mappings"].to_string().contains("8081"),
        "{:#?}",
        eps[0]
    );
    let netns = eps[0]["netns"].as_str().unwrap().to_string();
    assert!(netns.starts_with("/var/run/netns/cni-"), "{netns}");
    // The sandbox serves httpd: reachable at the pod IP from the host namespace.
    let body = http_get(&mut h.ns.cmd(&["sh", "-c", &nc_get(&pod_ip, 80)]));
    assert_eq!(
        body.as_deref().map(str::trim),
        Some(INDEX),
        "host -> pod:80"
    );
    assert!(cri_ready(&ctd), "NetworkReady with a pod");

    // What the CRI plugin sends.
    let add = cni.calls_of("ADD").pop().expect("ADD");
    let args = add.var("CNI_ARGS").unwrap_or("");
    for k in [
        "K8S_POD_NAMESPACE=shop",
        "K8S_POD_NAME=web",
        &format!("K8S_POD_INFRA_CONTAINER_ID={id}"),
        "K8S_POD_UID=uid-web-1",
        "IgnoreUnknown=1",
    ] {
        assert!(args.contains(k), "{k} missing: {}", add.summary());
    }
    assert_eq!(
        add.stdin["runtimeConfig"]["portMappings"],
        json!([{"HostPort": 8081, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]),
        "CRI sends upper camel case"
    );

    ctd.cri_json(&["stop-pod", &id]);
    assert!(
        endpoints(&h, "k8s-pods").is_empty(),
        "lease released on StopPodSandbox"
    );
    ctd.cri_json(&["rm-pod", &id]);
    ctd.untrack_pod(&id);
    let dels = cni.calls_of("DEL");
    assert_eq!(dels.len(), 2, "stop and remove each DEL:\n{}", cni.dump());
    assert_eq!(dels[0].var("CNI_NETNS"), Some(netns.as_str()));
    assert!(dels[0].stdin.get("prevResult").is_some());
    assert_eq!(dels[1].var("CNI_NETNS"), Some(""), "{}", dels[1].summary());
    assert!(
        dels[1].stdin.get("prevResult").is_none(),
        "{}",
        dels[1].summary()
    );
    assert!(cni.calls().iter().all(|c| c.rc == 0), "{}", cni.dump());
    assert!(!std::path::Path::new(&netns).exists(), "pod netns removed");
    assert_clean(&h, "k8s-pods", "nd-k8s-pods", &[pod_ip]);
    assert!(cri_ready(&ctd), "NetworkReady after teardown");
}

/// A pod's `hostPort` reaches its sandbox from the outside namespace. Needs netd's firewall.
#[test]
fn cri_host_port_reaches_pod() {
    if !require("cri_host_port_reaches_pod", CONTAINERD) {
        return;
    }
    if cri_client().is_none() {
        eprintln!("SKIPPED cri_host_port_reaches_pod: cri-client is not built");
        return;
    }
    let h = Host::start();
    let out = Outside::new(&h);
    let img = Image::build();
    let cni = CniDirs::new();
    cni.conflist(
        "10-netd.conflist",
        &h,
        "k8s-pods",
        json!({"subnet": "10.94.0.0/24"}),
    );
    let ctd = Containerd::start(&h, &cni, &img);
    let id = ctd.cri_json(&[
        "run-pod", "--name", "web", "--uid", "uid-2", "-p", "8081:80",
    ])["podSandboxId"]
        .as_str()
        .expect("pod id")
        .to_string();
    ctd.track_pod(&id);
    let body = out.http_get_ready(HOST_OUT_IP, 8081);
    assert_eq!(
        body.as_deref().map(str::trim),
        Some(INDEX),
        "outside -> hostPort 8081"
    );
    ctd.cri_json(&["stop-pod", &id]);
    assert!(
        out.http_get(HOST_OUT_IP, 8081).is_none(),
        "hostPort still open after stop"
    );
}

// ---------------------------------------------------------------------------------------
// Docker: --network none + netctl connect
// ---------------------------------------------------------------------------------------

/// Docker has no CNI: containers started with `--network none` are attached with
/// `netctl connect --netns /proc/<pid>/ns/net`. Addresses and connectivity first; name
/// resolution (`--dns <gateway>`) last, since it needs netd's DNS.
#[test]
fn docker_network_none_with_netctl_connect() {
    if !require("docker_network_none_with_netctl_connect", DOCKER) {
        return;
    }
    let h = Host::start();
    let img = Image::build();
    h.netctl_ok(&["create", "dock", "--subnet", "10.95.0.0/24"]);
    let dk = Dockerd::start(&h, &img);
    let image = PODMAN_IMAGE.trim_start_matches("localhost/");
    let mut ips = Vec::new();
    for (name, cmd) in [("web", "httpd -f -p 80 -h /www"), ("client", "sleep 600")] {
        let id = dk.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--dns",
            "10.95.0.1",
            image,
            "sh",
            "-c",
            cmd,
        ]);
        let pid = dk.ok(&["inspect", "--format", "{{.State.Pid}}", &id]);
        let r = h.netctl_json(&[
            "connect",
            "dock",
            "--netns",
            &format!("/proc/{pid}/ns/net"),
            "--name",
            name,
            "--container-id",
            &id,
        ]);
        ips.push(ip_of(&r["endpoint"]));
    }
    let exec = |name: &str, sh: &str| dk.run(&["exec", name, "sh", "-c", sh]);
    let out = exec("client", "ip -4 -o addr show eth0");
    assert_eq!(container_ipv4(&out), vec![format!("{}/24", ips[1])]);
    assert!(
        exec("client", &format!("ping -c1 -W2 {}", ips[0]))
            .status
            .success(),
        "client -> web"
    );
    let body = http_get(&mut dk.cmd(&["exec", "client", "sh", "-c", &nc_get(&ips[0], 80)]));
    assert_eq!(body.as_deref().map(str::trim), Some(INDEX));

    // Removing the container: disconnect first (or let netd reclaim it when the netns goes).
    h.netctl_ok(&["disconnect", "dock", "--name", "web"]);
    dk.ok(&["rm", "-f", "web"]);
    assert_eq!(endpoints(&h, "dock").len(), 1);
    dk.ok(&["rm", "-f", "client"]);
    let reclaimed = wait_for(Duration::from_secs(60), || {
        endpoints(&h, "dock").is_empty().then_some(())
    });
    assert!(reclaimed.is_some(), "lease of removed client not reclaimed");

    // Names, through netd's DNS at the gateway (docker wrote it into resolv.conf).
    for name in ["alpha", "beta"] {
        let id = dk.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--dns",
            "10.95.0.1",
            image,
            "sleep",
            "600",
        ]);
        let pid = dk.ok(&["inspect", "--format", "{{.State.Pid}}", &id]);
        h.netctl_ok(&[
            "connect",
            "dock",
            "--netns",
            &format!("/proc/{pid}/ns/net"),
            "--name",
            name,
            "--container-id",
            &id,
        ]);
    }
    assert!(
        exec("alpha", "ping -c1 -W2 beta").status.success(),
        "alpha pings beta by name"
    );
}

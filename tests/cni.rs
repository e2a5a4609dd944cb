//! CNI plugin end-to-end tests: the real `netd-cni` binary, exec'd the way a runtime does
//! (environment + stdin), against a real netd running in a private host namespace, with
//! containers played by network namespaces. Chained tests run Debian's reference plugins
//! (`containernetworking-plugins`) inside the private host namespace.
//!
//! Build the binaries first: `cargo build -p netd -p netd-cni`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use netd_api::{CreateNetwork, SubnetRequest};
use netd_tests::{bin, soon, Host, Netns};
use serde_json::{json, Value};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// What one plugin execution produced.
#[derive(Debug)]
struct Reply {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Reply {
    #[track_caller]
    fn ok(&self) -> &Reply {
        assert_eq!(
            self.status, 0,
            "plugin failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// The success result (ADD, VERSION).
    #[track_caller]
    fn result(&self) -> Value {
        self.ok();
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Success with nothing on stdout (DEL, CHECK, GC, STATUS).
    #[track_caller]
    fn silent(&self) {
        self.ok();
        assert!(
            self.stdout.trim().is_empty(),
            "unexpected stdout: {}",
            self.stdout
        );
    }

    /// The CNI error object: asserts the exit status and its shape, returns (code, msg).
    #[track_caller]
    fn error(&self) -> (u64, String) {
        assert_ne!(self.status, 0, "expected a failure, got: {}", self.stdout);
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "error is not JSON on stdout ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        });
        for k in ["cniVersion", "code", "msg", "details"] {
            assert!(v.get(k).is_some(), "error object lacks {k}: {v}");
        }
        let msg = v["msg"].as_str().unwrap().to_string();
        assert!(
            !msg.to_lowercase().contains("not found"),
            "error says 'not found': {msg}"
        );
        (v["code"].as_u64().unwrap(), msg)
    }

    #[track_caller]
    fn code(&self, want: u64) -> String {
        let (code, msg) = self.error();
        assert_eq!(code, want, "wrong code; msg: {msg}");
        msg
    }
}

/// Execs `program` (inside `ns` if given) with exactly `env` and `stdin`.
fn exec(program: &Path, ns: Option<&Netns>, env: &[(String, String)], stdin: &str) -> Reply {
    let mut cmd = match ns {
        Some(ns) => ns.cmd(&[program.to_str().unwrap()]),
        None => Command::new(program),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for plugin");
    Reply {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs netd-cni with `pairs` as its whole environment.
fn netd_cni(pairs: &[(&str, &str)], stdin: &str) -> Reply {
    exec(&bin("netd-cni"), None, &env(pairs), stdin)
}

/// The environment of a per-container command.
fn container_env(
    cmd: &str,
    cid: &str,
    netns: &str,
    ifname: &str,
    args: &str,
) -> Vec<(String, String)> {
    env(&[
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_ARGS", args),
        ("CNI_PATH", REFERENCE_PLUGINS),
    ])
}

/// A running netd plus a CNI network configuration for it.
struct Cni {
    host: Host,
    name: String,
    version: String,
    extra: Value,
}

impl Cni {
    fn new(name: &str, version: &str, extra: Value) -> Cni {
        Cni {
            host: Host::start(),
            name: name.to_string(),
            version: version.to_string(),
            extra,
        }
    }

    /// The plugin configuration as libcni passes it (name and version injected).
    fn conf(&self) -> Value {
        let mut c = json!({
            "cniVersion": self.version,
            "name": self.name,
            "type": "netd-cni",
            "socket": self.host.socket(),
        });
        merge(&mut c, &self.extra);
        c
    }

    fn conf_with(&self, extra: Value) -> Value {
        let mut c = self.conf();
        merge(&mut c, &extra);
        c
    }

    fn call(&self, cmd: &str, cid: &str, netns: &str, args: &str, conf: &Value) -> Reply {
        exec(
            &bin("netd-cni"),
            None,
            &container_env(cmd, cid, netns, "eth0", args),
            &conf.to_string(),
        )
    }

    fn add(&self, ns: &Netns, cid: &str) -> Reply {
        self.call("ADD", cid, &ns.path(), "", &self.conf())
    }

    fn del(&self, cid: &str, netns: &str) -> Reply {
        self.call("DEL", cid, netns, "", &self.conf())
    }

    fn check(&self, ns: &Netns, cid: &str, prev: &Value) -> Reply {
        self.call(
            "CHECK",
            cid,
            &ns.path(),
            "",
            &self.conf_with(json!({ "prevResult": prev })),
        )
    }

    fn endpoints(&self) -> Vec<Value> {
        let v = self
            .host
            .client()
            .inspect_network(&self.name)
            .expect("inspect");
        serde_json::to_value(v.endpoints)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn network(&self) -> netd_api::Network {
        self.host
            .client()
            .inspect_network(&self.name)
            .expect("inspect")
            .network
    }

    /// Host-side interface names in the private host namespace.
    fn host_links(&self) -> Vec<String> {
        self.host.ns.links()
    }
}

fn merge(into: &mut Value, extra: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

fn container_addr(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().to_string()
}

fn bare(addr: &str) -> &str {
    addr.split('/').next().unwrap()
}

// ---------------------------------------------------------------------------------------------
// VERSION, about, environment, versions, decoding: no daemon needed.

#[test]
fn version_answers_with_dummy_environment() {
    for stdin in ["", "{}", r#"{"cniVersion":"1.0.0"}"#] {
        let v = netd_cni(&[("CNI_COMMAND", "VERSION")], stdin).result();
        assert_eq!(v["supportedVersions"], json!(VERSIONS));
        assert!(v["cniVersion"].is_string());
    }
    // libcni probes with dummy values for everything else.
    let v = netd_cni(
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_CONTAINERID", "dummy"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ],
        r#"{"cniVersion":"0.4.0"}"#,
    )
    .result();
    assert_eq!(v["cniVersion"], "0.4.0");
}

#[test]
fn no_command_prints_about_on_stderr() {
    let r = netd_cni(&[], "");
    r.ok();
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("netd-cni"), "{}", r.stderr);
    for v in VERSIONS {
        assert!(r.stderr.contains(v), "{}", r.stderr);
    }
}

#[test]
fn environment_errors_are_code_4_naming_the_variable() {
    let conf = r#"{"cniVersion":"1.0.0","name":"n","socket":"/nonexistent/netd.sock"}"#;
    let base = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ];
    let with = |k: &'static str, v: Option<&str>| -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = base
            .iter()
            .filter(|(bk, _)| *bk != k)
            .map(|(bk, bv)| (*bk, bv.to_string()))
            .collect();
        if let Some(v) = v {
            out.push((k, v.to_string()));
        }
        out
    };
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (with("CNI_COMMAND", Some("FROB")), "CNI_COMMAND"),
        (with("CNI_CONTAINERID", None), "CNI_CONTAINERID"),
        (with("CNI_CONTAINERID", Some("")), "CNI_CONTAINERID"),
        (with("CNI_CONTAINERID", Some("-bad")), "CNI_CONTAINERID"),
        (with("CNI_CONTAINERID", Some("a/b")), "CNI_CONTAINERID"),
        (with("CNI_IFNAME", None), "CNI_IFNAME"),
        (with("CNI_IFNAME", Some("abcdefghijklmnop")), "CNI_IFNAME"),
        (with("CNI_IFNAME", Some("..")), "CNI_IFNAME"),
        (with("CNI_IFNAME", Some("a:b")), "CNI_IFNAME"),
        (with("CNI_IFNAME", Some("a b")), "CNI_IFNAME"),
        (with("CNI_NETNS", None), "CNI_NETNS"),
        (with("CNI_NETNS", Some("/nonexistent/netns")), "CNI_NETNS"),
        (
            {
                let mut e = with("CNI_ARGS", None);
                e.push(("CNI_ARGS", "IgnoreUnknown=1;garbage".into()));
                e
            },
            "CNI_ARGS",
        ),
    ];
    for (vars, var) in cases {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let msg = netd_cni(&pairs, conf).code(4);
        assert!(msg.contains(var), "{var}: {msg}");
    }
}

#[test]
fn version_errors_are_code_1() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ];
    let msg = netd_cni(&add, r#"{"cniVersion":"0.2.0","name":"n"}"#).code(1);
    assert!(msg.contains("0.2.0"), "{msg}");
    netd_cni(&add, r#"{"cniVersion":"2.0.0","name":"n"}"#).code(1);
    netd_cni(&add, r#"{"name":"n"}"#).code(1);
    let check = [
        ("CNI_COMMAND", "CHECK"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ];
    for v in ["0.3.0", "0.3.1"] {
        let conf = json!({"cniVersion": v, "name": "n", "prevResult": {}});
        netd_cni(&check, &conf.to_string()).code(1);
    }
    for verb in ["GC", "STATUS"] {
        for v in ["0.4.0", "1.0.0"] {
            let conf = json!({"cniVersion": v, "name": "n", "cni.dev/valid-attachments": []});
            netd_cni(&[("CNI_COMMAND", verb)], &conf.to_string()).code(1);
        }
    }
}

#[test]
fn undecodable_stdin_is_code_6_and_bad_config_code_7_or_2() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ];
    netd_cni(&add, "{not json").code(6);
    netd_cni(&add, "[1,2]").code(6);
    netd_cni(&add, "").code(6);
    // Missing name, bad types, bad subnet: code 7 naming the key.
    netd_cni(&add, r#"{"cniVersion":"1.0.0"}"#).code(7);
    let msg = netd_cni(&add, r#"{"cniVersion":"1.0.0","name":"n","mtu":"x"}"#).code(7);
    assert!(msg.contains("mtu"), "{msg}");
    let msg = netd_cni(
        &add,
        r#"{"cniVersion":"1.0.0","name":"n","subnet":"10.0.0.0/99"}"#,
    )
    .code(7);
    assert!(msg.contains("subnet"), "{msg}");
    // Unsupported: code 2 naming key and value.
    let msg = netd_cni(
        &add,
        r#"{"cniVersion":"1.0.0","name":"n","isGateway":false}"#,
    )
    .code(2);
    assert!(msg.contains("isGateway") && msg.contains("false"), "{msg}");
    let msg = netd_cni(
        &add,
        r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"dhcp"}}"#,
    )
    .code(2);
    assert!(msg.contains("ipam.type") && msg.contains("dhcp"), "{msg}");
    let conf = json!({"cniVersion": "1.0.0", "name": "n",
        "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]}});
    let msg = netd_cni(&add, &conf.to_string()).code(2);
    assert!(msg.contains("protocol") && msg.contains("icmp"), "{msg}");
}

#[test]
fn unreachable_netd_is_try_again_later_and_status_50() {
    let ns = Netns::new("unreach");
    let conf = json!({"cniVersion": "1.1.0", "name": "n", "socket": "/nonexistent/netd.sock"});
    let r = exec(
        &bin("netd-cni"),
        None,
        &container_env("ADD", "c1", &ns.path(), "eth0", ""),
        &conf.to_string(),
    );
    let msg = r.code(11);
    assert!(msg.contains("/nonexistent/netd.sock"), "{msg}");
    assert_eq!(ns.links(), vec!["lo"], "a failed ADD left an interface");
    let r = exec(
        &bin("netd-cni"),
        None,
        &container_env("DEL", "c1", "", "eth0", ""),
        &conf.to_string(),
    );
    r.code(11);
    netd_cni(&[("CNI_COMMAND", "STATUS")], &conf.to_string()).code(50);
}

// ---------------------------------------------------------------------------------------------
// ADD.

#[test]
fn add_result_in_every_version_has_the_bridge_layout() {
    let cni = Cni::new(
        "vers",
        "1.0.0",
        json!({"subnet": "10.61.0.0/24", "gateway": "10.61.0.1", "mtu": 1400,
               "dnsDomain": "vers.test"}),
    );
    for (i, version) in VERSIONS.iter().enumerate() {
        let ns = cni.host.container(&format!("v{i}"));
        let cid = format!("ver{i}");
        let conf = cni.conf_with(json!({"cniVersion": version}));
        let r = cni.call("ADD", &cid, &ns.path(), "", &conf);
        let res = r.result();
        let net = cni.network();
        assert_eq!(res["cniVersion"], *version);

        // interfaces = [bridge, host veth, container iface in the sandbox]
        let ifs = res["interfaces"].as_array().unwrap();
        assert_eq!(ifs.len(), 3, "{res}");
        assert_eq!(ifs[0]["name"], net.bridge);
        assert!(ifs[0].get("sandbox").is_none());
        assert!(ifs[1].get("sandbox").is_none());
        assert_eq!(ifs[2]["name"], "eth0");
        assert_eq!(ifs[2]["sandbox"], ns.path());
        for i in ifs {
            assert!(i["mac"].as_str().unwrap().len() == 17, "{i}");
        }
        let host_veth = ifs[1]["name"].as_str().unwrap();
        assert!(cni
            .host
            .bridge_ports(&net.bridge)
            .contains(&host_veth.to_string()));
        let kernel_mac = ns.link("eth0").unwrap()["address"].clone();
        assert_eq!(ifs[2]["mac"], kernel_mac);

        // ips: interface 2 serialized, prefix length of the subnet, version only before 1.0.0
        let ips = res["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 1);
        assert!(r.stdout.contains("\"interface\":2"), "{}", r.stdout);
        assert_eq!(ips[0]["gateway"], "10.61.0.1");
        let addr = ips[0]["address"].as_str().unwrap();
        assert!(
            addr.starts_with("10.61.0.") && addr.ends_with("/24"),
            "{addr}"
        );
        if version.starts_with("0.") {
            assert_eq!(ips[0]["version"], "4");
        } else {
            assert!(ips[0].get("version").is_none(), "{res}");
        }
        // mtu only in 1.1.0
        if *version == "1.1.0" {
            assert_eq!(ifs[2]["mtu"], 1400);
        } else {
            assert!(ifs[2].get("mtu").is_none());
        }
        assert_eq!(ns.link("eth0").unwrap()["mtu"], 1400);

        // routes and dns
        assert_eq!(
            res["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.61.0.1"}])
        );
        assert_eq!(res["dns"]["nameservers"], json!(["10.61.0.1"]));
        assert_eq!(res["dns"]["search"], json!(["vers.test"]));

        // The kernel agrees, and the container reaches its gateway.
        assert_eq!(ns.addrs("eth0"), vec![addr.to_string()]);
        assert!(
            ns.ping("10.61.0.1"),
            "container {cid} cannot reach its gateway"
        );
        cni.del(&cid, &ns.path()).silent();
    }
    assert!(cni.endpoints().is_empty());
}

#[test]
fn first_add_creates_the_network_from_the_config() {
    let cni = Cni::new(
        "made",
        "1.0.0",
        json!({"bridge": "nd-made0", "ipMasq": true,
               "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                        "ranges": [[{"subnet": "10.62.0.0/24", "gateway": "10.62.0.254",
                                     "rangeStart": "10.62.0.128", "rangeEnd": "10.62.0.254"}]]}}),
    );
    let ns = cni.host.container("made");
    let res = cni.add(&ns, "m1").result();
    let net = cni.network();
    assert_eq!(net.bridge, "nd-made0");
    assert_eq!(net.subnets[0].subnet.to_string(), "10.62.0.0/24");
    assert_eq!(net.subnets[0].gateway.to_string(), "10.62.0.254");
    assert_eq!(
        net.subnets[0].ip_range.map(|r| r.to_string()).as_deref(),
        Some("10.62.0.128/25")
    );
    assert!(net.masquerade);
    assert_eq!(
        net.labels.get("created_by").map(String::as_str),
        Some("netd-cni")
    );
    let addr = container_addr(&res);
    let last: u8 = bare(&addr).rsplit('.').next().unwrap().parse().unwrap();
    assert!(last >= 128, "address {addr} outside the configured range");
    assert!(cni.host.ns.links().contains(&"nd-made0".to_string()));
    // A second ADD uses the existing network (same definition).
    let ns2 = cni.host.container("made2");
    cni.add(&ns2, "m2").result();
    assert_eq!(cni.endpoints().len(), 2);
}

#[test]
fn existing_network_with_another_definition_is_code_7() {
    let cni = Cni::new("clash", "1.0.0", json!({"subnet": "10.63.1.0/24"}));
    let req = CreateNetwork {
        name: "clash".into(),
        subnets: vec![SubnetRequest {
            subnet: "10.63.0.0/24".parse().unwrap(),
            gateway: None,
            ip_range: None,
        }],
        ..CreateNetwork::default()
    };
    cni.host.client().create_network(&req).expect("create");
    let ns = cni.host.container("clash");
    let msg = cni.add(&ns, "c1").code(7);
    assert!(
        msg.contains("10.63.0.0/24") && msg.contains("10.63.1.0/24"),
        "{msg}"
    );
    assert!(cni.endpoints().is_empty());
    assert_eq!(ns.links(), vec!["lo"]);
    // A config that says nothing about the subnet uses the network as it is.
    let plain = json!({"cniVersion": "1.0.0", "name": "clash", "socket": cni.host.socket()});
    let res = cni.call("ADD", "c2", &ns.path(), "", &plain).result();
    assert!(container_addr(&res).starts_with("10.63.0."), "{res}");
}

#[test]
fn an_existing_interface_is_refused_and_left_untouched() {
    let cni = Cni::new("dup", "1.0.0", json!({"subnet": "10.64.0.0/24"}));
    let ns = cni.host.container("dup");
    let first = cni.add(&ns, "first").result();
    let addr = container_addr(&first);
    let links_before = cni.host_links();
    let (code, msg) = cni.add(&ns, "second").error();
    assert_eq!(code, 100, "{msg}");
    assert!(msg.contains("eth0"), "{msg}");
    assert_eq!(
        ns.addrs("eth0"),
        vec![addr],
        "the first attachment was disturbed"
    );
    let eps = cni.endpoints();
    assert_eq!(eps.len(), 1, "the failed ADD kept a lease: {eps:?}");
    assert_eq!(
        cni.host_links(),
        links_before,
        "the failed ADD left a host veth"
    );
}

#[test]
fn failed_adds_leave_nothing_behind() {
    // A /30 holds exactly one container.
    let cni = Cni::new("tiny", "1.1.0", json!({"subnet": "10.65.0.0/30"}));
    let a = cni.host.container("tinya");
    let b = cni.host.container("tinyb");
    cni.add(&a, "a").result();
    let links = cni.host_links();
    let msg = cni.add(&b, "b").code(11);
    assert!(msg.contains("10.65.0.0/30"), "{msg}");
    assert_eq!(b.links(), vec!["lo"]);
    assert_eq!(cni.host_links(), links);
    assert_eq!(cni.endpoints().len(), 1);

    // A static address already taken: conflict, nothing kept.
    let cni = Cni::new("taken", "1.0.0", json!({"subnet": "10.66.0.0/24"}));
    let a = cni.host.container("takena");
    let b = cni.host.container("takenb");
    cni.call("ADD", "a", &a.path(), "IP=10.66.0.50", &cni.conf())
        .result();
    let links = cni.host_links();
    let msg = cni
        .call("ADD", "b", &b.path(), "IP=10.66.0.50", &cni.conf())
        .code(100);
    assert!(msg.contains("10.66.0.50"), "{msg}");
    assert_eq!(b.links(), vec!["lo"]);
    assert_eq!(cni.host_links(), links);
    assert_eq!(cni.endpoints().len(), 1);

    // A static address outside the subnet: invalid config.
    cni.call("ADD", "b", &b.path(), "IP=10.99.0.5", &cni.conf())
        .code(7);
    assert_eq!(cni.endpoints().len(), 1);
}

#[test]
fn a_configuration_larger_than_the_plugins_arena_works() {
    // The plugin serves its memory from a 1 MiB arena and the rest from the system allocator:
    // a configuration three times that size (a runtime's prevResult, annotations) still works,
    // for ADD, CHECK and DEL.
    let cni = Cni::new("roomy", "1.0.0", json!({"subnet": "10.64.8.0/24"}));
    let ns = cni.host.container("roomya");
    let padding = json!({ "annotations": { "big": "x".repeat(3 << 20) } });
    let conf = cni.conf_with(padding);
    let result = cni.call("ADD", "big", &ns.path(), "", &conf).result();
    let addr = container_addr(&result);
    assert!(addr.starts_with("10.64.8."), "{addr}");
    assert!(ns.addrs("eth0").contains(&addr), "{addr} on eth0");
    let mut check = conf.clone();
    merge(&mut check, &json!({ "prevResult": result }));
    cni.call("CHECK", "big", &ns.path(), "", &check).silent();
    cni.call("DEL", "big", &ns.path(), "", &conf).silent();
    assert!(cni.endpoints().is_empty());
    assert_eq!(ns.links(), vec!["lo"]);
}

#[test]
fn cni_args_and_runtime_config_reach_the_endpoint() {
    let cni = Cni::new("opts", "1.0.0", json!({"subnet": "10.67.0.0/24"}));
    // Podman: CNI_ARGS with name, static IP and MAC; aliases as a map; ports lower camel case.
    let ns = cni.host.container("optsa");
    let args = "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.67.0.40;MAC=02:aa:bb:cc:dd:01;FOO=bar";
    let conf = cni.conf_with(json!({"runtimeConfig": {
        "aliases": {"opts": ["www", "3f2a1b"], "othernet": ["nope"]},
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    }}));
    let res = cni.call("ADD", "podman1", &ns.path(), args, &conf).result();
    assert_eq!(container_addr(&res), "10.67.0.40/24");
    assert_eq!(res["interfaces"][2]["mac"], "02:aa:bb:cc:dd:01");
    assert_eq!(ns.link("eth0").unwrap()["address"], "02:aa:bb:cc:dd:01");
    // containerd CRI: K8S_* args, upper camel case ports, aliases as a list, runtimeConfig ips
    // and mac winning over CNI_ARGS.
    let ns2 = cni.host.container("optsb");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-b;K8S_POD_INFRA_CONTAINER_ID=cri2;\
                K8S_POD_UID=uid-2;IP=10.67.0.41";
    let conf = cni.conf_with(json!({"runtimeConfig": {
        "aliases": ["svc-b"],
        "ips": ["10.67.0.42/24"],
        "mac": "02:aa:bb:cc:dd:02",
        "portMappings": [{"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": "127.0.0.1"}],
        "bandwidth": {"IngressRate": 1000}
    }}));
    let res = cni.call("ADD", "cri2", &ns2.path(), args, &conf).result();
    assert_eq!(container_addr(&res), "10.67.0.42/24");
    assert_eq!(ns2.link("eth0").unwrap()["address"], "02:aa:bb:cc:dd:02");

    let eps = cni.endpoints();
    let by_id = |id: &str| {
        eps.iter()
            .find(|e| e["container_id"] == id)
            .unwrap()
            .clone()
    };
    let p = by_id("podman1");
    assert_eq!(p["name"], "web");
    assert_eq!(p["aliases"], json!(["www", "3f2a1b"]));
    assert_eq!(p["port_mappings"][0]["host_port"], 8080);
    assert_eq!(p["port_mappings"][0]["container_port"], 80);
    assert_eq!(p["port_mappings"][0]["protocol"], "tcp");
    let c = by_id("cri2");
    assert_eq!(c["name"], "pod-b");
    assert_eq!(c["aliases"], json!(["svc-b"]));
    assert_eq!(c["labels"]["k8s.pod.namespace"], "default");
    assert_eq!(c["labels"]["k8s.pod.infra_container_id"], "cri2");
    assert_eq!(c["labels"]["k8s.pod.uid"], "uid-2");
    assert_eq!(c["port_mappings"][0]["host_port"], 5353);
    assert_eq!(c["port_mappings"][0]["protocol"], "udp");
    assert_eq!(c["port_mappings"][0]["host_ip"], "127.0.0.1");
}

#[test]
fn socket_comes_from_config_then_netd_socket_env() {
    let host = Host::start();
    let sock = host.socket();
    let sock = sock.to_str().unwrap();
    let ns = host.container("sock");
    let conf = json!({"cniVersion": "1.0.0", "name": "sock", "subnet": "10.68.0.0/24"});
    let mut e = container_env("ADD", "s1", &ns.path(), "eth0", "");
    e.push(("NETD_SOCKET".into(), sock.into()));
    exec(&bin("netd-cni"), None, &e, &conf.to_string()).result();
    // The config key wins over the environment.
    let ns2 = host.container("sock2");
    let mut conf2 = conf.clone();
    conf2["socket"] = json!(sock);
    let mut e = container_env("ADD", "s2", &ns2.path(), "eth0", "");
    e.push(("NETD_SOCKET".into(), "/nonexistent/netd.sock".into()));
    exec(&bin("netd-cni"), None, &e, &conf2.to_string()).result();
}

#[test]
fn proc_pid_netns_paths_work_like_ctr() {
    let cni = Cni::new("procns", "1.0.0", json!({"subnet": "10.69.0.0/24"}));
    let ns = cni.host.container("procns");
    let mut sleeper = ns
        .cmd(&["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep");
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = sleeper.id();
    let _reap = Reap(&mut sleeper);
    let path = format!("/proc/{pid}/ns/net");
    let res = cni.call("ADD", "ctr1", &path, "", &cni.conf()).result();
    assert_eq!(res["interfaces"][2]["sandbox"], path);
    assert_eq!(ns.addrs("eth0"), vec![container_addr(&res)]);
    // ctr's DEL comes with an empty netns.
    cni.del("ctr1", "").silent();
    assert!(cni.endpoints().is_empty());
}

#[test]
fn one_hundred_parallel_adds_get_distinct_working_interfaces() {
    const N: usize = 100;
    let cni = Cni::new("many", "1.0.0", json!({"subnet": "10.70.0.0/24"}));
    let nss: Vec<Netns> = (0..N)
        .map(|i| cni.host.container(&format!("p{i}")))
        .collect();
    // Every ADD races to create the network too.
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let cni = &cni;
                s.spawn(move || cni.add(ns, &format!("par{i}")).result())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let addrs: BTreeSet<String> = results.iter().map(container_addr).collect();
    assert_eq!(addrs.len(), N, "addresses are not distinct");
    assert_eq!(cni.endpoints().len(), N);
    std::thread::scope(|s| {
        for (ns, res) in nss.iter().zip(&results) {
            s.spawn(move || {
                assert_eq!(ns.addrs("eth0"), vec![container_addr(res)]);
                assert!(
                    ns.ping("10.70.0.1"),
                    "{} cannot reach the gateway",
                    ns.name()
                );
            });
        }
    });
    std::thread::scope(|s| {
        for (i, ns) in nss.iter().enumerate() {
            let cni = &cni;
            s.spawn(move || cni.del(&format!("par{i}"), &ns.path()).silent());
        }
    });
    assert!(cni.endpoints().is_empty());
    let net = cni.network();
    assert!(cni.host.bridge_ports(&net.bridge).is_empty());
}

// ---------------------------------------------------------------------------------------------
// DEL.

#[test]
fn del_is_idempotent_and_best_effort() {
    let cni = Cni::new("del", "1.0.0", json!({"subnet": "10.71.0.0/24"}));
    // Unknown container, unknown network: fine.
    cni.del("never-added", "").silent();
    let other = json!({"cniVersion": "1.0.0", "name": "no-such-net", "socket": cni.host.socket()});
    cni.call("DEL", "x", "", "", &other).silent();

    let ns = cni.host.container("del");
    let res = cni.add(&ns, "d1").result();
    let host_veth = res["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(cni.host_links().contains(&host_veth));
    // A config changed since ADD, with prevResult.
    let changed = cni.conf_with(json!({"subnet": "10.99.0.0/24", "mtu": "junk",
                                       "prevResult": res}));
    cni.call("DEL", "d1", &ns.path(), "", &changed).silent();
    assert!(cni.endpoints().is_empty());
    assert!(soon(|| !cni.host_links().contains(&host_veth)));
    assert!(soon(|| ns.links() == ["lo"]), "{:?}", ns.links());
    // Again, and with an empty netns (containerd's second DEL).
    cni.del("d1", &ns.path()).silent();
    cni.del("d1", "").silent();

    // The netns vanished before DEL.
    let gone = cni.host.container("gone");
    let gone_path = gone.path();
    cni.add(&gone, "d2").result();
    drop(gone);
    assert!(!Path::new(&gone_path).exists());
    cni.del("d2", &gone_path).silent();
    assert!(cni.endpoints().is_empty());
}

// ---------------------------------------------------------------------------------------------
// CHECK.

#[test]
fn check_verifies_the_attachment() {
    let cni = Cni::new("chk", "1.0.0", json!({"subnet": "10.72.0.0/24"}));
    let ns = cni.host.container("chk");
    let res = cni.add(&ns, "k1").result();
    cni.check(&ns, "k1", &res).silent();
    // 0.4.0 prevResult (with ips[].version) works too.
    let v040 = cni.call(
        "CHECK",
        "k1",
        &ns.path(),
        "",
        &cni.conf_with(json!({"cniVersion": "0.4.0", "prevResult": res})),
    );
    v040.silent();
    // No prevResult: invalid config.
    cni.call("CHECK", "k1", &ns.path(), "", &cni.conf()).code(7);
    // Unknown container: code 3.
    cni.check(&ns, "nobody", &res).code(3);
    // prevResult disagreeing with netd.
    let mut wrong = res.clone();
    wrong["ips"][0]["address"] = json!("10.72.0.250/24");
    let msg = cni.check(&ns, "k1", &wrong).code(101);
    assert!(msg.contains("10.72.0.250/24"), "{msg}");
    // The address removed behind netd's back.
    let addr = container_addr(&res);
    netd_tests::must(&mut ns.cmd(&["ip", "addr", "del", &addr, "dev", "eth0"]));
    let msg = cni.check(&ns, "k1", &res).code(101);
    assert!(msg.contains(bare(&addr)), "{msg}");
    // The interface deleted.
    netd_tests::must(&mut ns.cmd(&["ip", "link", "del", "eth0"]));
    cni.check(&ns, "k1", &res).code(101);
    cni.del("k1", &ns.path()).silent();
}

// ---------------------------------------------------------------------------------------------
// GC and STATUS.

#[test]
fn gc_releases_attachments_not_listed() {
    let cni = Cni::new("gc", "1.1.0", json!({"subnet": "10.73.0.0/24"}));
    let nss: Vec<Netns> = (0..3)
        .map(|i| cni.host.container(&format!("gc{i}")))
        .collect();
    let veths: Vec<String> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            cni.add(ns, &format!("g{i}")).result()["interfaces"][1]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let gc = |key: &str, keep: &[&str]| {
        let list: Vec<Value> = keep
            .iter()
            .map(|c| json!({"containerID": c, "ifname": "eth0"}))
            .collect();
        let conf = cni.conf_with(json!({ key: list }));
        netd_cni(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", REFERENCE_PLUGINS)],
            &conf.to_string(),
        )
    };
    gc("cni.dev/valid-attachments", &["g0", "g1"]).silent();
    let left: Vec<Value> = cni
        .endpoints()
        .iter()
        .map(|e| e["container_id"].clone())
        .collect();
    assert_eq!(left, vec![json!("g0"), json!("g1")]);
    assert!(soon(|| !cni.host_links().contains(&veths[2])));
    assert!(soon(|| nss[2].links() == ["lo"]), "{:?}", nss[2].links());
    assert_eq!(nss[0].addrs("eth0").len(), 1);
    // The older key.
    gc("cni.dev/attachments", &["g0"]).silent();
    assert_eq!(cni.endpoints().len(), 1);
    // No list at all: refused, nothing released.
    netd_cni(&[("CNI_COMMAND", "GC")], &cni.conf().to_string()).code(7);
    assert_eq!(cni.endpoints().len(), 1);
    // A network netd does not have: nothing to do.
    let other = json!({"cniVersion": "1.1.0", "name": "no-such-net", "socket": cni.host.socket(),
                       "cni.dev/valid-attachments": []});
    netd_cni(&[("CNI_COMMAND", "GC")], &other.to_string()).silent();
}

#[test]
fn status_fails_only_when_add_cannot_work() {
    let cni = Cni::new("stat", "1.1.0", json!({"subnet": "10.74.0.0/30"}));
    let status = || netd_cni(&[("CNI_COMMAND", "STATUS")], &cni.conf().to_string());
    // Network not created yet: ADD would create it.
    status().silent();
    let ns = cni.host.container("stat");
    cni.add(&ns, "s1").result();
    // The /30's only address is taken.
    let msg = status().code(50);
    assert!(msg.contains("10.74.0.0/30"), "{msg}");
    cni.del("s1", &ns.path()).silent();
    status().silent();
}

// ---------------------------------------------------------------------------------------------
// Chaining with the reference plugins.

fn reference(plugin: &str) -> Option<std::path::PathBuf> {
    let p = Path::new(REFERENCE_PLUGINS).join(plugin);
    p.exists().then_some(p)
}

/// Executes a conflist the way libcni does: ADD in order passing `prevResult` on, CHECK in
/// order with the final result, DEL in reverse. Each plugin gets `name`, `cniVersion` and the
/// `runtimeConfig` of the capabilities it declares. Plugins run in the host namespace.
struct Chain<'a> {
    host: &'a Host,
    list: Value,
    runtime: Value,
}

impl Chain<'_> {
    fn plugin_conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        c["name"] = self.list["name"].clone();
        c["cniVersion"] = self.list["cniVersion"].clone();
        let mut rc = serde_json::Map::new();
        if let Some(caps) = plugin["capabilities"].as_object() {
            for (cap, on) in caps {
                if on == &json!(true) {
                    if let Some(v) = self.runtime.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            c["runtimeConfig"] = Value::Object(rc);
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn program(&self, plugin: &Value) -> std::path::PathBuf {
        match plugin["type"].as_str().unwrap() {
            "netd-cni" => bin("netd-cni"),
            other => reference(other).unwrap(),
        }
    }

    fn plugins(&self) -> Vec<Value> {
        self.list["plugins"].as_array().unwrap().clone()
    }

    fn add(&self, cid: &str, ns: &Netns) -> Value {
        let mut prev: Option<Value> = None;
        for p in self.plugins() {
            let conf = self.plugin_conf(&p, prev.as_ref());
            let r = exec(
                &self.program(&p),
                Some(&self.host.ns),
                &container_env("ADD", cid, &ns.path(), "eth0", ""),
                &conf.to_string(),
            );
            prev = Some(r.result());
        }
        prev.unwrap()
    }

    fn check(&self, cid: &str, ns: &Netns, result: &Value) -> Vec<Reply> {
        self.plugins()
            .iter()
            .map(|p| {
                exec(
                    &self.program(p),
                    Some(&self.host.ns),
                    &container_env("CHECK", cid, &ns.path(), "eth0", ""),
                    &self.plugin_conf(p, Some(result)).to_string(),
                )
            })
            .collect()
    }

    fn del(&self, cid: &str, ns: &Netns, result: &Value) -> Vec<Reply> {
        self.plugins()
            .iter()
            .rev()
            .map(|p| {
                exec(
                    &self.program(p),
                    Some(&self.host.ns),
                    &container_env("DEL", cid, &ns.path(), "eth0", ""),
                    &self.plugin_conf(p, Some(result)).to_string(),
                )
            })
            .collect()
    }
}

#[test]
fn chain_with_portmap_firewall_tuning_bandwidth() {
    let missing: Vec<&str> = ["portmap", "firewall", "tuning", "bandwidth"]
        .into_iter()
        .filter(|p| reference(p).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: reference CNI plugins {missing:?} are not in {REFERENCE_PLUGINS} \
             (apt-get install containernetworking-plugins)"
        );
        return;
    }
    let host = Host::start();
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "chained",
        "plugins": [
            // Dual stack, so portmap has IPv4 and IPv6 work to do.
            {"type": "netd-cni", "socket": host.socket(), "subnet": "10.75.0.0/24",
             "subnets": [{"subnet": "fd00:75::/64"}], "capabilities": {"aliases": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"},
            {"type": "tuning", "mac": "02:11:22:33:44:55"},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    });
    let chain = Chain {
        host: &host,
        list,
        runtime: json!({
            "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000,
                          "egressRate": 1000000, "egressBurst": 100000},
            "aliases": {"chained": ["web"]}
        }),
    };
    let ns = host.container("chain");
    let result = chain.add("chain1", &ns);

    // The final result still has our layout, with tuning's MAC on the container interface.
    let ifs = result["interfaces"].as_array().unwrap();
    let host_veth = ifs[1]["name"].as_str().unwrap().to_string();
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ns.link("eth0").unwrap()["address"], "02:11:22:33:44:55");
    let addr = container_addr(&result);
    let addr6 = result["ips"][1]["address"].as_str().unwrap().to_string();
    assert!(
        addr.starts_with("10.75.0.") && addr6.starts_with("fd00:75::"),
        "{result}"
    );
    assert_eq!(result["ips"][1]["interface"], 2);
    assert!(ns.ping("10.75.0.1"));

    // portmap found the container addresses: its DNAT rules point there.
    let nat6 = netd_tests::must(&mut host.ns.cmd(&["ip6tables-save", "-t", "nat"]));
    assert!(
        nat6.contains(&format!("[{}]:80", bare(&addr6))),
        "portmap has no IPv6 DNAT to {addr6}:\n{nat6}"
    );
    let nat = netd_tests::must(&mut host.ns.cmd(&["iptables-save", "-t", "nat"]));
    assert!(
        nat.contains(&format!("{}:80", bare(&addr))),
        "portmap has no DNAT to {addr}:\n{nat}"
    );
    assert!(nat.contains("18080"), "{nat}");
    // firewall admitted the container's addresses.
    let filter = netd_tests::must(&mut host.ns.cmd(&["iptables-save", "-t", "filter"]));
    assert!(
        filter.contains(&format!("-A CNI-FORWARD -d {}", bare(&addr))),
        "firewall has no rule for {addr}:\n{filter}"
    );
    // bandwidth found the host veth (by its peer index) and shaped it.
    let qdisc = netd_tests::must(&mut host.ns.cmd(&["tc", "qdisc", "show", "dev", &host_veth]));
    assert!(
        qdisc.contains("tbf"),
        "no tbf qdisc on {host_veth}: {qdisc}"
    );

    // CHECK of every plugin passes, ours despite the MAC tuning changed. portmap 1.1's CHECK
    // compares its IPv4 rules with ip6tables and so always fails on a host with ip6tables
    // (containernetworking/plugins#819, fixed upstream after 1.1): only that failure is let by.
    for (p, r) in chain
        .plugins()
        .iter()
        .zip(chain.check("chain1", &ns, &result))
    {
        if p["type"] == "portmap" && r.stdout.contains("could not check ipv6 dnat") {
            eprintln!(
                "portmap CHECK hit containernetworking/plugins#819: {}",
                r.stdout
            );
            continue;
        }
        assert_eq!(
            r.status, 0,
            "CHECK of {} failed: {} {}",
            p["type"], r.stdout, r.stderr
        );
    }

    // DEL in reverse order succeeds and removes everything.
    for r in chain.del("chain1", &ns, &result) {
        r.silent();
    }
    assert!(soon(|| !host.ns.links().contains(&host_veth)));
    let nat = netd_tests::must(&mut host.ns.cmd(&["iptables-save", "-t", "nat"]));
    assert!(!nat.contains(&format!("{}:80", bare(&addr))), "{nat}");
    let filter = netd_tests::must(&mut host.ns.cmd(&["iptables-save", "-t", "filter"]));
    assert!(!filter.contains(&format!("-d {}", bare(&addr))), "{filter}");
    assert!(soon(|| ns.links() == ["lo"]), "{:?}", ns.links());
    let eps = host.client().inspect_network("chained").unwrap().endpoints;
    assert!(eps.is_empty());
}

#[test]
fn example_conflists_work() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("docs/examples") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conflist") {
            continue;
        }
        seen += 1;
        let mut list: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let host = Host::start();
        // Only our own plugin is exercised here; the chain test covers the others.
        let mut ours = list["plugins"][0].clone();
        assert_eq!(ours["type"], "netd-cni", "{}", path.display());
        ours["socket"] = json!(host.socket());
        list["plugins"] = json!([ours]);
        let chain = Chain {
            host: &host,
            list,
            runtime: json!({"portMappings": [{"hostPort": 8080, "containerPort": 80}],
                            "aliases": ["x"]}),
        };
        let ns = host.container("example");
        let result = chain.add("ex1", &ns);
        assert_eq!(
            ns.addrs("eth0"),
            vec![container_addr(&result)],
            "{}",
            path.display()
        );
        for r in chain.check("ex1", &ns, &result) {
            r.silent();
        }
        for r in chain.del("ex1", &ns, &result) {
            r.silent();
        }
        assert!(soon(|| ns.links() == ["lo"]), "{:?}", ns.links());
    }
    assert!(seen >= 3, "expected example conflists in {}", dir.display());
}

#[test]
fn internal_network_gets_no_default_route() {
    let cni = Cni::new(
        "inner",
        "1.1.0",
        json!({"subnet": "10.76.0.0/24", "internal": true}),
    );
    let ns = cni.host.container("inner");
    let res = cni.add(&ns, "i1").result();
    assert!(cni.network().internal);
    assert!(res.get("routes").is_none(), "{res}");
    let routes = netd_tests::must(&mut ns.cmd(&["ip", "route", "show", "default"]));
    assert!(
        routes.trim().is_empty(),
        "default route on an internal network: {routes}"
    );
    assert!(
        ns.ping("10.76.0.1"),
        "the gateway is on-link even when internal"
    );
    // The same name with internal=false is a different network definition.
    let other = cni.conf_with(json!({"internal": false}));
    let ns2 = cni.host.container("inner2");
    let msg = cni.call("ADD", "i2", &ns2.path(), "", &other).code(7);
    assert!(msg.contains("internal"), "{msg}");
}

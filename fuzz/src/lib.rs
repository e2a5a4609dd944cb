//! The checks behind netd's fuzz targets, as plain functions of the input bytes so that the
//! libFuzzer targets (`fuzz_targets/*.rs`) and the stable replay test (`tests/replay.rs`, which
//! runs every seed and every regression input) share them. Each check panics when an invariant
//! is broken; returning means the input was handled as documented.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use netd_api::{AttachRequest, AttachResult, CreateNetwork, GcRequest, Network};
use netd_cni::config;
use netd_cni::error::Error as CniErr;
use netd_cni::version::CniVersion;
use serde_json::Value;

/// Socket path every CNI invocation made by a fuzz target is pointed at: nothing listens there,
/// so no input can ever reach a real netd.
pub const NOWHERE: &str = "/nonexistent/netd-fuzz.sock";

/// CNI codes the plugin documents (docs/cni.md "Errors").
const CNI_CODES: [u32; 13] = [1, 2, 3, 4, 5, 6, 7, 11, 50, 100, 101, 999, 51];

/// Every CNI error renders as a documented code with a message that never says "not found".
fn check_cni_error(e: &CniErr, version: &str) {
    let obj = e.to_cni(version);
    assert!(
        CNI_CODES.contains(&obj.code),
        "undocumented code {}",
        obj.code
    );
    assert_ne!(obj.code, 51, "code 51 is documented as never returned");
    assert!(!obj.msg.is_empty(), "empty message for code {}", obj.code);
    let lower = obj.msg.to_ascii_lowercase();
    assert!(
        !lower.contains("not found"),
        "message says not found: {}",
        obj.msg
    );
    serde_json::to_string(&obj).expect("error object serializes");
}

/// `config::*` over arbitrary stdin: every parser either accepts or fails with a documented
/// code; what it accepts is consistent (a network definition becomes a create request that
/// survives the wire, and the request differs in nothing from the network it describes).
pub fn cni_config(data: &[u8]) {
    let sanitized = netd_cni::error::sanitize(&String::from_utf8_lossy(data));
    assert!(!sanitized.to_ascii_lowercase().contains("not found"));
    let obj = match config::parse_stdin(data) {
        Ok(o) => o,
        Err(e) => {
            assert_eq!(e.code(), 6, "undecodable stdin must be code 6: {e}");
            check_cni_error(&e, "1.1.0");
            return;
        }
    };
    let version = config::peek_version(&obj).unwrap_or("1.1.0").to_string();
    let report = |r: Result<(), CniErr>| {
        if let Err(e) = r {
            check_cni_error(&e, &version);
        }
    };
    report(CniVersion::from_request(config::peek_version(&obj)).map(drop));
    report(config::socket(&obj).map(drop));
    report(config::prev_result(&obj).map(drop));
    report(config::valid_attachments(&obj).map(drop));
    let name = match config::network_name(&obj) {
        Ok(n) => n,
        Err(e) => {
            assert_eq!(e.code(), 7, "{e}");
            return check_cni_error(&e, &version);
        }
    };
    let _ = config::valid_network_name(&name);
    report(config::runtime_options(&obj, &name).map(|o| {
        for p in &o.port_mappings {
            assert!(p.count >= 1);
        }
    }));
    match config::network_def(&obj) {
        Ok(def) => {
            let req = def.create_request(&name);
            let wire = serde_json::to_vec(&req).expect("create request serializes");
            let back: CreateNetwork = serde_json::from_slice(&wire).expect("and decodes");
            assert_eq!(back, req, "create request changed on the wire");
            if let Some(net) = network_from(&req) {
                let diff = def.differences(&net);
                assert!(
                    diff.is_empty(),
                    "a network made from the config differs: {diff:?}"
                );
            }
        }
        Err(e) => {
            assert!(
                matches!(e.code(), 2 | 7),
                "network_def code {}: {e}",
                e.code()
            );
            check_cni_error(&e, &version);
        }
    }
}

/// The network netd would store for `req` when every subnet has an explicit gateway and
/// every field is decided (the comparison `differences` makes is then exact).
fn network_from(req: &CreateNetwork) -> Option<Network> {
    let subnets = req
        .subnets
        .iter()
        .map(|s| {
            Some(netd_api::Subnet {
                subnet: s.subnet,
                gateway: s.gateway?,
                ip_range: s.ip_range,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Network {
        name: req.name.clone(),
        id: "0".into(),
        bridge: req.bridge.clone()?,
        subnets,
        aux_addresses: req.aux_addresses.clone(),
        internal: req.internal,
        mtu: req.mtu,
        masquerade: req.masquerade?,
        icc: req.icc?,
        dns_domain: req.dns_domain.clone(),
        dns_upstreams: req.dns_upstreams.clone(),
        snat: req.snat,
        labels: req.labels.clone(),
        created: 0,
    })
}

/// Environment variables a CNI invocation can see; the fuzzer fills them from its input.
const ENV_KEYS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// Splits a fuzz input into an environment and stdin: the first line holds the values of
/// [`ENV_KEYS`] separated by `\x1f` (a missing value is an unset variable), the rest is stdin.
pub fn split_invocation(data: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let (head, stdin) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env = ENV_KEYS
        .iter()
        .zip(head.split(|b| *b == 0x1f))
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    (env, stdin.to_vec())
}

/// Points the CNI plugin at [`NOWHERE`] whatever the input says: the configuration's `socket`
/// is replaced and `NETD_SOCKET` set, so an input can never reach a real netd.
fn confine_socket(stdin: &[u8]) -> Vec<u8> {
    static ENV: OnceLock<()> = OnceLock::new();
    ENV.get_or_init(|| {
        // Set once, before any other thread of this process can read the environment.
        std::env::set_var(netd_api::SOCKET_ENV, NOWHERE);
    });
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(mut o)) if o.contains_key("socket") => {
            o.insert("socket".into(), Value::String(NOWHERE.into()));
            serde_json::to_vec(&o).expect("object serializes")
        }
        _ => stdin.to_vec(),
    }
}

/// The whole plugin (`netd_cni::run`) over an arbitrary environment and stdin, with netd
/// unreachable: it must exit 0 or 1, print exactly one JSON document on stdout when it fails
/// (the CNI error object, with a documented code) and never panic.
pub fn cni_run(data: &[u8]) {
    let (env, stdin) = split_invocation(data);
    let stdin = confine_socket(&stdin);
    let var = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = netd_cni::run(&var, &mut stdin.as_slice(), &mut out, &mut err);
    let out = String::from_utf8(out).expect("stdout is UTF-8");
    match code {
        0 => {
            // Success prints nothing (DEL, CHECK, GC, STATUS) or one JSON object.
            if !out.trim().is_empty() {
                let v: Value = serde_json::from_str(&out).expect("success output is JSON");
                assert!(v.get("cniVersion").is_some(), "{out}");
            }
        }
        1 => {
            let v: Value = serde_json::from_str(&out).expect("error output is one JSON object");
            let code = v["code"].as_u64().expect("code is a number") as u32;
            assert!(
                CNI_CODES.contains(&code) && code != 51,
                "undocumented code {code}"
            );
            let msg = v["msg"].as_str().expect("msg is a string");
            assert!(!msg.to_ascii_lowercase().contains("not found"), "{msg}");
            assert!(
                v["cniVersion"].is_string() && v["details"].is_string(),
                "{out}"
            );
            let e = String::from_utf8_lossy(&err);
            assert!(e.contains("error"), "stderr lacks the error line: {e}");
        }
        other => panic!("exit code {other}"),
    }
}

/// Result rendering: an [`AttachResult`] netd could send (decoded from the input) renders in
/// every version to the bridge layout, and what ADD prints is a `prevResult` CHECK accepts.
pub fn cni_result(data: &[u8]) {
    let Ok(r) = serde_json::from_slice::<AttachResult>(data) else {
        return;
    };
    let ep = &r.endpoint;
    // Only what netd can produce: a valid interface name and a namespace path.
    if netd_cni::env::validate_ifname(&ep.ifname).is_err()
        || ep.ifname.is_empty()
        || ep.netns.is_empty()
    {
        return;
    }
    for v in netd_cni::version::SUPPORTED {
        let version = CniVersion::parse(v).expect("supported");
        let mtu = ep.ips.first().map(|_| 1400);
        let out = netd_cni::result::render(version, &r, &ep.netns, mtu);
        assert_eq!(out["cniVersion"], v);
        let ifaces = out["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifaces.len(), 3, "bridge, host veth, container");
        assert_eq!(ifaces[2]["sandbox"], Value::String(ep.netns.clone()));
        let ips = out["ips"].as_array().expect("ips");
        assert_eq!(ips.len(), ep.ips.len());
        for ip in ips {
            assert_eq!(ip["interface"], 2);
            assert_eq!(ip.get("version").is_some(), version.ips_carry_version());
        }
        // Round trip through the text a runtime stores and hands back on CHECK.
        let text = serde_json::to_string(&out).expect("result serializes");
        let mut conf = serde_json::Map::new();
        conf.insert(
            "prevResult".into(),
            serde_json::from_str(&text).expect("result parses"),
        );
        let prev = config::prev_result(&conf)
            .expect("our own result is a valid prevResult")
            .expect("present");
        netd_cni::commands::compare_prev(&prev, &ep.ifname, &ep.netns, &ep.ips)
            .expect("CHECK accepts what ADD returned");
    }
}

/// The API request decoder: the request bodies netd decodes (`CreateNetwork`,
/// `AttachRequest`, `GcRequest`), the Docker `-p` parser (`netctl connect --publish`) and netd's name
/// validation. Whatever decodes survives a round trip; what validates fits the kernel's limits.
pub fn api_decode(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => round_trip::<CreateNetwork>(body),
        1 => round_trip::<AttachRequest>(body),
        2 => round_trip::<GcRequest>(body),
        3 => port_mapping(&String::from_utf8_lossy(body)),
        _ => names(&String::from_utf8_lossy(body)),
    }
}

fn round_trip<T>(body: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        let wire = serde_json::to_vec(&v).expect("serializes");
        let back: T = serde_json::from_slice(&wire).expect("decodes what it encoded");
        assert_eq!(back, v);
    }
}

fn port_mapping(s: &str) {
    match s.parse::<netd_firewall::PortMapping>() {
        Ok(p) => {
            assert!(
                p.count >= 1 && p.host_port >= 1 && p.container_port >= 1,
                "{p:?}"
            );
            let last = |first: u16| u32::from(first) + u32::from(p.count) - 1;
            assert!(last(p.host_port) <= 65535 && last(p.container_port) <= 65535);
            // What netctl prints back (Display) is what it parses.
            let text = p.to_string();
            let back: netd_firewall::PortMapping = text.parse().expect("own rendering parses");
            assert_eq!(back, p, "{s:?} -> {text:?}");
        }
        Err(e) => assert!(e.to_string().starts_with("invalid port mapping"), "{e}"),
    }
}

fn names(s: &str) {
    use netd::names;
    let (a, b) = s.split_once('\u{1f}').unwrap_or((s, "eth0"));
    if names::check_network_name(a).is_ok() {
        assert!(names::bridge_name(a).len() <= names::IFNAMSIZ_MAX);
        assert!(a.len() <= names::NETWORK_NAME_MAX);
        // Path traversal is impossible in a valid name.
        assert!(!a.contains('/') && a != "." && a != "..");
    }
    if names::check_container_id(a).is_ok() && names::check_ifname("interface", b).is_ok() {
        let veth = names::host_veth_name("net", a, b);
        assert!(
            veth.len() <= names::IFNAMSIZ_MAX && !veth.is_empty(),
            "{veth}"
        );
        assert!(b.len() <= names::IFNAMSIZ_MAX);
    }
    let _ = names::check_dns_name("name", a);
    if let Ok(mac) = names::parse_mac(a) {
        let text = names::format_mac(&mac);
        assert_eq!(names::parse_mac(&text).expect("own format parses"), mac);
    }
    let mac = names::derived_mac(a);
    assert_eq!(mac[0] & 1, 0, "derived MAC is multicast");
    assert_eq!(names::parse_mac(&names::format_mac(&mac)).unwrap(), mac);
}

/// Sources a DNS query can come from in [`dns_query`], chosen by the input's first byte.
fn dns_sources() -> [IpAddr; 8] {
    [
        IpAddr::V4(Ipv4Addr::new(10, 89, 0, 2)), // container a on alpha
        IpAddr::V4(Ipv4Addr::new(10, 89, 0, 3)), // container b on alpha and beta
        IpAddr::V4(Ipv4Addr::new(10, 90, 0, 3)), // b's address on beta
        IpAddr::V4(Ipv4Addr::new(10, 89, 0, 1)), // alpha's gateway (the host)
        IpAddr::V4(Ipv4Addr::new(10, 90, 0, 77)), // unknown address inside beta
        IpAddr::V6("fd00:90::3".parse::<Ipv6Addr>().expect("v6")), // b on beta, IPv6
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), // a stranger
        IpAddr::V6("::ffff:10.89.0.2".parse::<Ipv6Addr>().expect("mapped")), // a, v4-mapped
    ]
}

/// The stranger's index in [`dns_sources`].
const STRANGER: usize = 6;

/// One query for the DNS thread, and where its reply goes.
type DnsJob = (
    Vec<u8>,
    SocketAddr,
    bool,
    std::sync::mpsc::Sender<Option<Vec<u8>>>,
);

/// A channel to the thread that owns the DNS subsystem shared by every run (see
/// [`dns_thread`]); guarded by a mutex because `Sender` is not `Sync` on older toolchains.
fn dns_fixture() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<DnsJob>> {
    static F: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<DnsJob>>> = OnceLock::new();
    F.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<DnsJob>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || dns_thread(rx, ready_tx));
        ready_rx.recv().expect("DNS fixture thread started");
        std::sync::Mutex::new(tx)
    })
}

/// Owns the DNS subsystem: three networks (one forwarding to a loopback upstream, one
/// internal, one forwarding to the host's resolv.conf, which here names nobody) and
/// containers on them. Nothing is bound: every network has an empty listen list.
fn dns_thread(rx: std::sync::mpsc::Receiver<DnsJob>, ready: std::sync::mpsc::Sender<()>) {
    // This thread moves to a private network namespace whose loopback is down, so forwarding
    // fails at once with ENETUNREACH and nothing ever leaves the process, not even to the
    // host's loopback. Without the privilege, no upstream is configured at all.
    // SAFETY: unshare(2) with a flag constant; it changes only this thread's namespace.
    let private = unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dns = netd_dns::Dns::new(netd_dns::DnsConfig {
        port: 0,
        upstream_timeout: std::time::Duration::from_millis(20),
        resolv_conf: "/nonexistent/resolv.conf".into(),
        systemd_resolv_conf: "/nonexistent/resolv.conf".into(),
        cache_entries: 64,
        ..Default::default()
    });
    let upstreams: Vec<SocketAddr> = if private {
        vec!["127.0.0.1:53".parse().expect("addr")]
    } else {
        Vec::new()
    };
    let net = |name: &str, subnets: &[&str], domain: Option<&str>, internal, upstreams| {
        netd_dns::NetworkDns {
            name: name.into(),
            subnets: subnets.iter().map(|s| s.parse().expect("net")).collect(),
            listen: Vec::new(),
            domain: domain.map(str::to_string),
            upstreams,
            internal,
        }
    };
    let nets = [
        net(
            "alpha",
            &["10.89.0.0/24"],
            Some("alpha.netd"),
            false,
            upstreams,
        ),
        net(
            "beta",
            &["10.90.0.0/24", "fd00:90::/64"],
            None,
            true,
            Vec::new(),
        ),
        net(
            "Gamma.Net",
            &["10.91.0.0/16"],
            Some("corp.example"),
            false,
            Vec::new(),
        ),
    ];
    rt.block_on(async {
        for n in nets {
            dns.add_network(n).await.expect("add network");
        }
    });
    let ep = |key: &str, names: &[&str], addrs: &[&str]| netd_dns::EndpointDns {
        key: key.into(),
        names: names.iter().map(|s| s.to_string()).collect(),
        addrs: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
    };
    for (net, e) in [
        ("alpha", ep("a", &["web", "www", "A1b2c3"], &["10.89.0.2"])),
        ("alpha", ep("b", &["db", "www"], &["10.89.0.3"])),
        (
            "beta",
            ep("b", &["db", "cache"], &["10.90.0.3", "fd00:90::3"]),
        ),
        ("Gamma.Net", ep("g", &["g"], &["10.91.2.3"])),
    ] {
        dns.add_endpoint(net, e).expect("add endpoint");
    }
    let _ = ready.send(());
    while let Ok((packet, src, tcp, reply)) = rx.recv() {
        let _ = reply.send(rt.block_on(dns.answer_raw(&packet, src, tcp)));
    }
}

/// The DNS request path: a raw message from one of several sources, over UDP or TCP. Every
/// decodable query gets exactly one reply, with the query's id, that decodes; UDP replies fit
/// the client's buffer (512 without EDNS, at most 1232); strangers are REFUSED.
pub fn dns_query(data: &[u8]) {
    let Some((&sel, packet)) = data.split_first() else {
        return;
    };
    let sources = dns_sources();
    let which = usize::from(sel & 0x7) % sources.len();
    let tcp = sel & 0x80 != 0;
    let src = SocketAddr::new(sources[which], 40000 + u16::from(sel));
    let (tx, rx) = std::sync::mpsc::channel();
    dns_fixture()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((packet.to_vec(), src, tcp, tx))
        .expect("DNS thread alive");
    let reply = rx.recv().expect("DNS thread answers");
    let request = Message::from_vec(packet).ok();
    let Some(reply) = reply else {
        // Silence is allowed only where the listener would be silent too.
        if let Some(req) = &request {
            assert_ne!(
                req.metadata.message_type,
                MessageType::Query,
                "a decodable query got no reply"
            );
        }
        return;
    };
    let Some(req) = request else {
        // hickory-server's request decoder is more lenient than Message's; fine.
        return;
    };
    let msg = match Message::from_vec(&reply) {
        Ok(m) => m,
        // hickory-server echoes the question section byte for byte; a compression pointer in
        // it points elsewhere in the reply. Only such a (broken) request gets a broken echo.
        Err(_) if question_is_compressed(packet) => return,
        Err(e) => panic!("reply does not decode: {e}"),
    };
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(msg.metadata.id, req.metadata.id, "reply id differs");
    if !tcp {
        let limit = req
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().clamp(512, 1232));
        assert!(
            reply.len() <= usize::from(limit),
            "UDP reply of {} bytes over the limit {limit}",
            reply.len()
        );
    }
    if which == STRANGER {
        // REFUSED, or the bare SERVFAIL header hickory sends when even the refusal (which
        // echoes the questions) cannot be encoded within the size limit: nothing leaks.
        let bare_servfail =
            msg.metadata.response_code == ResponseCode::ServFail && reply.len() == 12;
        assert!(
            msg.metadata.response_code == ResponseCode::Refused || bare_servfail,
            "a stranger was answered: {:?}",
            msg.metadata.response_code
        );
    }
}

/// Whether a name in the question section of `packet` uses a compression pointer.
fn question_is_compressed(packet: &[u8]) -> bool {
    let Some(count) = packet.get(4..6).map(|c| u16::from_be_bytes([c[0], c[1]])) else {
        return false;
    };
    let mut at = 12;
    for _ in 0..count {
        loop {
            let Some(&len) = packet.get(at) else {
                return false;
            };
            if len & 0xC0 != 0 {
                return true;
            }
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        at += 4; // type and class
    }
    false
}

/// Reads every file under `dir` (seed corpus or regression inputs), sorted by path.
pub fn inputs(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: BTreeSet<_> = entries.flatten().map(|e| e.path()).collect();
    while let Some(p) = paths.pop_first() {
        if p.is_dir() {
            if let Ok(more) = std::fs::read_dir(&p) {
                paths.extend(more.flatten().map(|e| e.path()));
            }
        } else if let Ok(mut f) = std::fs::File::open(&p) {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_ok() {
                out.push((p, buf));
            }
        }
    }
    out
}

/// The check of a target by name.
pub fn check_of(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "cni_config" => cni_config,
        "cni_run" => cni_run,
        "cni_result" => cni_result,
        "api_decode" => api_decode,
        "dns_query" => dns_query,
        _ => return None,
    })
}

/// Every target's name.
pub const TARGETS: [&str; 5] = [
    "cni_config",
    "cni_run",
    "cni_result",
    "api_decode",
    "dns_query",
];

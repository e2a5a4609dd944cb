//! Hostile input, table-driven: bad command lines for `netctl`, raw HTTP requests on the API
//! socket and hostile environments and stdin for the `netd-cni` plugin. Each case must get its
//! documented answer (netctl exit status and one-line message, API error code and HTTP status,
//! CNI error code) and leave everything as it was: netd's networks and endpoints (`netctl
//! --format json ls` / `inspect`), the nftables ruleset and the links and addresses of the
//! host namespace, and the links of the containers. The number of cases is printed and
//! recorded in `docs/reliability.md`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use netd_tests::{bin, must, Host, Netns};
use serde_json::{json, Value};

/// What one case sends.
enum Input {
    /// `netctl ARGS` (arguments may be non-UTF-8).
    Netctl(Vec<OsString>),
    /// Bytes written as they are to the API socket.
    Raw(Vec<u8>),
    /// `netd-cni` with exactly this environment (plus PATH) and stdin.
    Cni(Env, Vec<u8>),
}

/// The documented answer.
enum Expect {
    /// netctl exits 1 with one line `netctl: …` containing the text.
    Netctl1(&'static str),
    /// netctl exits 2 with clap's usage error (`error: …` first).
    Usage(&'static str),
    /// An API error: HTTP status and `{"code", "message"}`.
    Api(u16, &'static str),
    /// An API success that changes nothing (idempotent DELETE of something unknown).
    ApiOk(u16),
    /// Refused by the HTTP layer before the API (no JSON body): this status.
    Http(u16),
    /// A CNI error object with this code, the plugin exiting 1.
    Cni(u64),
}

struct Case {
    name: String,
    input: Input,
    expect: Expect,
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// An HTTP/1.1 request with a body (JSON content type unless `json` is false).
fn http(method: &str, path: &str, body: &[u8], json: bool) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n");
    if json {
        r.push_str("Content-Type: application/json\r\n");
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

fn post(path: &str, body: impl AsRef<[u8]>) -> Input {
    Input::Raw(http("POST", path, body.as_ref(), true))
}

/// Sends raw bytes on the socket and returns (status, body). The request is written from
/// another thread: for huge bodies netd answers and closes before reading everything.
fn exchange(socket: &Path, bytes: Vec<u8>) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // A refused body ends in EPIPE or a reset: that is netd not reading junk, fine. No
        // shutdown(Write): the server treats a half-closed connection as gone.
        let _ = w.write_all(&bytes);
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in the answer: {text:?}"));
    let body = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

/// Everything a hostile input must leave unchanged.
fn snapshot(h: &Host, containers: &[&Netns]) -> Value {
    let ls = h.netctl_json(&["ls"]);
    let mut inspect = serde_json::Map::new();
    for n in ls.as_array().expect("ls is a list") {
        let name = n["name"].as_str().expect("name");
        inspect.insert(name.into(), h.netctl_json(&["inspect", name]));
    }
    let nft: Value =
        serde_json::from_str(&must(h.ns.cmd(&["nft", "-j", "list", "ruleset"]))).expect("nft -j");
    let addrs: Value =
        serde_json::from_str(&must(h.ns.cmd(&["ip", "-j", "addr", "show"]))).expect("ip -j");
    // Keep what configuration decides; drop kernel bookkeeping (link-local addresses appear
    // on their own, lifetimes and operstate move).
    let links: Vec<Value> = addrs
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            let addrs: Vec<String> = l["addr_info"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|x| x["scope"] != "link")
                        .map(|x| format!("{}/{}", x["local"], x["prefixlen"]))
                        .collect()
                })
                .unwrap_or_default();
            json!({"ifname": l["ifname"], "master": l["master"], "mtu": l["mtu"],
                   "address": l["address"], "flags": l["flags"], "addrs": addrs})
        })
        .collect();
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({"ns": c.name(), "links": c.links(), "eth0": c.addrs("eth0")}))
        .collect();
    json!({"ls": ls, "inspect": inspect, "nft": nft, "links": links, "containers": containers})
}

/// Runs one case and checks its answer; returns a description of what came back.
fn run_case(h: &Host, case: &Case) -> String {
    match &case.input {
        Input::Netctl(args) => {
            let out = netd_tests::run(h.netctl_cmd(&[]).args(args));
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let code = out.status.code().unwrap_or(-1);
            match case.expect {
                Expect::Netctl1(text) => {
                    assert_eq!(code, 1, "exit status; stderr: {stderr}");
                    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
                    assert_eq!(lines.len(), 1, "one line of error: {stderr:?}");
                    assert!(lines[0].starts_with("netctl: "), "{stderr}");
                    assert!(lines[0].contains(text), "want {text:?} in {stderr}");
                }
                Expect::Usage(text) => {
                    assert_eq!(code, 2, "exit status; stderr: {stderr}");
                    let first = stderr.lines().next().unwrap_or_default();
                    assert!(first.starts_with("error: "), "{stderr}");
                    assert!(stderr.contains(text), "want {text:?} in {stderr}");
                }
                _ => unreachable!("netctl cases expect an exit status"),
            }
            stderr.lines().next().unwrap_or_default().to_string()
        }
        Input::Raw(bytes) => {
            let (status, body) = exchange(&h.socket(), bytes.clone());
            let text = String::from_utf8_lossy(&body).into_owned();
            match case.expect {
                Expect::Api(want_status, want_code) => {
                    assert_eq!(status, want_status, "HTTP status; body {text}");
                    let v: Value = serde_json::from_slice(&body)
                        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text:?}"));
                    assert_eq!(v["code"], want_code, "{text}");
                    let msg = v["message"].as_str().expect("message");
                    assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
                }
                Expect::ApiOk(want_status) => assert_eq!(status, want_status, "{text}"),
                Expect::Http(want_status) => assert_eq!(status, want_status, "{text}"),
                _ => unreachable!("API cases expect an HTTP answer"),
            }
            format!("{status} {}", text.chars().take(160).collect::<String>())
        }
        Input::Cni(env, stdin) => {
            let mut child = Command::new(bin("netd-cni"))
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning netd-cni");
            let mut input = child.stdin.take().unwrap();
            let stdin = stdin.clone();
            let writer = std::thread::spawn(move || {
                let _ = input.write_all(&stdin);
            });
            let out = child.wait_with_output().expect("netd-cni");
            writer.join().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let Expect::Cni(want) = case.expect else {
                unreachable!("CNI cases expect a CNI code")
            };
            assert_eq!(out.status.code(), Some(1), "exit status; stdout {stdout}");
            let v: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
            for k in ["cniVersion", "code", "msg", "details"] {
                assert!(v.get(k).is_some(), "error object lacks {k}: {stdout}");
            }
            assert_eq!(v["code"], want, "{stdout}");
            let msg = v["msg"].as_str().unwrap_or_default();
            assert!(!msg.to_lowercase().contains("not found"), "{msg}");
            format!(
                "code {} {}",
                v["code"],
                msg.chars().take(160).collect::<String>()
            )
        }
    }
}

fn netctl_cases(ns: &str) -> Vec<Case> {
    let sub = |v: &[&str], e| (os(v), e);
    let long_name = "n".repeat(65);
    let mut cases: Vec<(Vec<OsString>, Expect)> = vec![
        sub(&["create"], Expect::Usage("<NAME>")),
        sub(
            &["create", "../../etc", "--subnet", "10.87.0.0/24"],
            Expect::Netctl1("invalid network name"),
        ),
        sub(
            &["create", &long_name, "--subnet", "10.87.0.0/24"],
            Expect::Netctl1("at most 64"),
        ),
        sub(
            &["create", "a\nb", "--subnet", "10.87.0.0/24"],
            Expect::Netctl1("invalid network name"),
        ),
        sub(
            &["create", "x", "--subnet", "10.87.0.0/33"],
            Expect::Usage("--subnet"),
        ),
        sub(
            &["create", "x", "--subnet", "300.1.1.0/24"],
            Expect::Usage("--subnet"),
        ),
        sub(
            &["create", "x", "--subnet", "10.87.0.1/24"],
            Expect::Netctl1("host bits set"),
        ),
        sub(
            &["create", "x", "--subnet", "10.87.0.0/32"],
            Expect::Netctl1("too small"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--gateway",
                "fd00::1",
            ],
            Expect::Netctl1("no --subnet of its address family"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--gateway",
                "10.99.0.1",
            ],
            Expect::Netctl1("10.99.0.1"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--ip-range",
                "10.99.0.0/25",
            ],
            Expect::Netctl1("not inside any --subnet"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--subnet",
                "10.88.0.0/24",
            ],
            Expect::Netctl1("at most one IPv4"),
        ),
        sub(
            &["create", "x", "--subnet", "10.86.0.0/16"],
            Expect::Netctl1("overlaps"),
        ),
        sub(
            &["create", "h", "--subnet", "10.87.0.0/24"],
            Expect::Netctl1("h"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--bridge",
                "abcdefghijklmnop",
            ],
            Expect::Netctl1("abcdefghijklmnop"),
        ),
        sub(&["create", "x", "--mtu", "abc"], Expect::Usage("--mtu")),
        sub(
            &["create", "x", "--subnet", "10.87.0.0/24", "--mtu", "10"],
            Expect::Netctl1("mtu 10"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--label",
                "novalue",
            ],
            Expect::Netctl1("KEY=VALUE"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--dns-domain",
                "a..b",
            ],
            Expect::Netctl1("a..b"),
        ),
        sub(
            &[
                "create",
                "x",
                "--subnet",
                "10.87.0.0/24",
                "--dns-upstream",
                "bogus",
            ],
            Expect::Netctl1("bogus"),
        ),
        sub(&["inspect", "nosuch"], Expect::Netctl1("nosuch")),
        sub(&["inspect", "../../etc"], Expect::Netctl1("../../etc")),
        sub(&["rm", "nosuch"], Expect::Netctl1("nosuch")),
        sub(&["rm", "h"], Expect::Netctl1("h")),
        sub(&["rm"], Expect::Usage("<NAMES>")),
        sub(
            &["connect", "h", "--netns", "/nonexistent/ns", "--name", "z"],
            Expect::Netctl1("/nonexistent/ns"),
        ),
        sub(
            &[
                "connect",
                "nosuch",
                "--netns",
                "/run/netns/x",
                "--name",
                "z",
            ],
            Expect::Netctl1("nosuch"),
        ),
        sub(&["connect", "h", "--netns"], Expect::Usage("--netns")),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "--ip", "fd00::5",
            ],
            Expect::Netctl1("fd00::5"),
        ),
        sub(
            &[
                "connect",
                "h",
                "--netns",
                ns,
                "--name",
                "z",
                "--ip",
                "10.99.0.5",
            ],
            Expect::Netctl1("10.99.0.5"),
        ),
        sub(
            &[
                "connect",
                "h",
                "--netns",
                ns,
                "--name",
                "z",
                "--ip",
                "10.86.0.1",
            ],
            Expect::Netctl1("gateway"),
        ),
        sub(
            &[
                "connect",
                "h",
                "--netns",
                ns,
                "--name",
                "z",
                "--ip",
                "10.86.0.999",
            ],
            Expect::Usage("--ip"),
        ),
        sub(
            &["connect", "h", "--netns", ns, "--name", "z", "-p", "0:80"],
            Expect::Usage("host port 0"),
        ),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "-p", "70000:80",
            ],
            Expect::Usage("--publish"),
        ),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "-p", "1-3:1-2",
            ],
            Expect::Usage("--publish"),
        ),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "-p", "8080:80",
            ],
            Expect::Netctl1("8080"),
        ),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "--mac", "zz:zz",
            ],
            Expect::Netctl1("zz:zz"),
        ),
        sub(
            &[
                "connect",
                "h",
                "--netns",
                ns,
                "--name",
                "z",
                "--mac",
                "01:00:5e:00:00:01",
            ],
            Expect::Netctl1("multicast"),
        ),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "--alias", "a", "--alias", "a",
            ],
            Expect::Netctl1("given twice"),
        ),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "--alias", "a b",
            ],
            Expect::Netctl1("a b"),
        ),
        sub(
            &["connect", "h", "--netns", ns, "--name", "../../etc"],
            Expect::Netctl1("../../etc"),
        ),
        sub(
            &[
                "connect",
                "h",
                "--netns",
                ns,
                "--name",
                "z",
                "--ifname",
                "abcdefghijklmnop",
            ],
            Expect::Netctl1("IFNAMSIZ"),
        ),
        sub(
            &[
                "connect", "h", "--netns", ns, "--name", "z", "--ifname", "lo",
            ],
            Expect::Netctl1("lo"),
        ),
        sub(
            &["connect", "h", "--netns", ns, "--container-id", "keep"],
            Expect::Netctl1("keep"),
        ),
        sub(&["disconnect", "h"], Expect::Usage("--netns")),
        sub(
            &["disconnect", "h", "--container-id", "nobody"],
            Expect::Netctl1("no matching endpoint"),
        ),
        sub(&["--format", "yaml", "ls"], Expect::Usage("yaml")),
        sub(&["frobnicate"], Expect::Usage("frobnicate")),
        sub(
            &["--socket", "/nonexistent/netd.sock", "status"],
            Expect::Netctl1("cannot reach netd"),
        ),
        sub(
            &["dns", "web", "--network", "nosuch"],
            Expect::Netctl1("nosuch"),
        ),
    ];
    cases.push((
        vec![
            OsString::from("create"),
            OsString::from_vec(b"\xff\xfe".to_vec()),
        ],
        Expect::Usage("UTF-8"),
    ));
    cases
        .into_iter()
        .map(|(args, expect)| Case {
            name: format!("netctl {:?}", args),
            input: Input::Netctl(args),
            expect,
        })
        .collect()
}

fn api_cases(ns: &str) -> Vec<Case> {
    const NETS: &str = "/v1/networks";
    const EPS: &str = "/v1/networks/h/endpoints";
    let attach = |extra: Value| {
        let mut v = json!({"container_id": "z", "netns": ns});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        post(EPS, v.to_string())
    };
    let create = |extra: Value| {
        let mut v = json!({"name": "x", "subnets": [{"subnet": "10.87.0.0/24"}]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        post(NETS, v.to_string())
    };
    let huge = {
        let mut b = br#"{"name":"big","labels":{"x":""#.to_vec();
        b.extend(std::iter::repeat_n(b'a', 2 << 20));
        b.extend_from_slice(br#""}}"#);
        b
    };
    let deep = {
        let mut b = br#"{"name":"deep","labels":"#.to_vec();
        b.extend(std::iter::repeat_n(b'[', 100_000));
        b
    };
    let bad = |code| Expect::Api(400, code);
    let cases: Vec<(&str, Input, Expect)> = vec![
        // Bodies that do not decode.
        (
            "truncated JSON",
            post(NETS, r#"{"name":"x","subnets":["#),
            bad("invalid_request"),
        ),
        ("empty body", post(NETS, ""), bad("invalid_request")),
        (
            "not an object",
            post(NETS, "[1,2,3]"),
            bad("invalid_request"),
        ),
        (
            "wrong type: name",
            post(NETS, r#"{"name":5}"#),
            bad("invalid_request"),
        ),
        (
            "wrong type: subnets",
            post(NETS, r#"{"name":"x","subnets":"10.87.0.0/24"}"#),
            bad("invalid_request"),
        ),
        (
            "wrong type: mtu",
            create(json!({"mtu": "1500"})),
            bad("invalid_request"),
        ),
        (
            "negative mtu",
            create(json!({"mtu": -1})),
            bad("invalid_request"),
        ),
        (
            "unknown field (create)",
            create(json!({"bogus": 1})),
            bad("invalid_request"),
        ),
        (
            "unknown field (attach)",
            attach(json!({"ip": "10.86.0.9"})),
            bad("invalid_request"),
        ),
        (
            "no content type",
            Input::Raw(http("POST", NETS, br#"{"name":"x"}"#, false)),
            bad("invalid_request"),
        ),
        ("body over 1 MiB", post(NETS, huge), bad("invalid_request")),
        (
            "nested 100000 deep",
            post(NETS, deep),
            bad("invalid_request"),
        ),
        (
            "non-UTF-8 in a string",
            post(NETS, b"{\"name\":\"\xff\xfe\",\"subnets\":[]}"),
            bad("invalid_request"),
        ),
        (
            "invalid CIDR",
            post(
                NETS,
                r#"{"name":"x","subnets":[{"subnet":"10.87.0.0/33"}]}"#,
            ),
            bad("invalid_request"),
        ),
        (
            "not an address",
            create(json!({"aux_addresses": ["10.87.0.300"]})),
            bad("invalid_request"),
        ),
        // Names.
        (
            "path traversal in a network name",
            create(json!({"name": "../../etc"})),
            bad("invalid_name"),
        ),
        (
            "network name of 65 bytes",
            create(json!({"name": "n".repeat(65)})),
            bad("invalid_name"),
        ),
        (
            "NUL in a network name",
            create(json!({"name": "a\u{0}b"})),
            bad("invalid_name"),
        ),
        (
            "empty network name",
            create(json!({"name": ""})),
            bad("invalid_name"),
        ),
        (
            "bridge name of 16 bytes",
            create(json!({"bridge": "abcdefghijklmnop"})),
            bad("invalid_name"),
        ),
        // Addresses.
        (
            "host bits set",
            create(json!({"subnets": [{"subnet": "10.87.0.1/24"}]})),
            bad("invalid_address"),
        ),
        (
            "subnet too small",
            create(json!({"subnets": [{"subnet": "10.87.0.0/31"}]})),
            bad("invalid_address"),
        ),
        (
            "IPv6 gateway on an IPv4 subnet",
            create(json!({"subnets": [{"subnet": "10.87.0.0/24", "gateway": "fd00::1"}]})),
            bad("invalid_address"),
        ),
        (
            "gateway outside the subnet",
            create(json!({"subnets": [{"subnet": "10.87.0.0/24", "gateway": "10.99.0.1"}]})),
            bad("invalid_address"),
        ),
        (
            "range outside the subnet",
            create(json!({"subnets": [{"subnet": "10.87.0.0/24", "ip_range": "10.99.0.0/25"}]})),
            bad("invalid_address"),
        ),
        (
            "two IPv4 subnets",
            create(json!({"subnets": [{"subnet": "10.87.0.0/24"}, {"subnet": "10.88.0.0/24"}]})),
            bad("invalid_address"),
        ),
        (
            "aux address outside",
            create(json!({"aux_addresses": ["10.99.0.1"]})),
            bad("invalid_address"),
        ),
        (
            "overlapping subnet",
            create(json!({"subnets": [{"subnet": "10.86.0.0/16"}]})),
            Expect::Api(409, "subnet_overlap"),
        ),
        (
            "existing name",
            create(json!({"name": "h"})),
            Expect::Api(409, "network_exists"),
        ),
        ("mtu 10", create(json!({"mtu": 10})), bad("invalid_request")),
        (
            "mtu 70000",
            create(json!({"mtu": 70000})),
            bad("invalid_request"),
        ),
        (
            "bad DNS upstream",
            create(json!({"dns_upstreams": ["bogus"]})),
            bad("invalid_request"),
        ),
        (
            "bad DNS domain",
            create(json!({"dns_domain": "a..b"})),
            bad("invalid_request"),
        ),
        // Attach.
        (
            "path traversal in a container id",
            attach(json!({"container_id": "../../x"})),
            bad("invalid_name"),
        ),
        (
            "container id of 256 bytes",
            attach(json!({"container_id": "c".repeat(256)})),
            bad("invalid_name"),
        ),
        (
            "NUL in a container id",
            attach(json!({"container_id": "c\u{0}"})),
            bad("invalid_name"),
        ),
        (
            "interface name of 16 bytes",
            attach(json!({"ifname": "abcdefghijklmnop"})),
            bad("invalid_name"),
        ),
        (
            "path traversal in an interface name",
            attach(json!({"ifname": "../x"})),
            bad("invalid_name"),
        ),
        (
            "path traversal in a container name",
            attach(json!({"name": "../../etc"})),
            bad("invalid_name"),
        ),
        (
            "duplicate aliases",
            attach(json!({"aliases": ["www", "www"]})),
            bad("invalid_name"),
        ),
        (
            "alias with a space",
            attach(json!({"aliases": ["a b"]})),
            bad("invalid_name"),
        ),
        (
            "alias of 254 bytes",
            attach(json!({"aliases": ["a".repeat(254)]})),
            bad("invalid_name"),
        ),
        ("bad MAC", attach(json!({"mac": "zz"})), bad("invalid_name")),
        (
            "multicast MAC",
            attach(json!({"mac": "01:00:5e:00:00:01"})),
            bad("invalid_name"),
        ),
        (
            "IPv6 address on an IPv4 network",
            attach(json!({"ips": ["fd00::5"]})),
            bad("invalid_address"),
        ),
        (
            "address outside the subnet",
            attach(json!({"ips": ["10.99.0.5"]})),
            bad("invalid_address"),
        ),
        (
            "the gateway's address",
            attach(json!({"ips": ["10.86.0.1"]})),
            bad("invalid_address"),
        ),
        (
            "the broadcast address",
            attach(json!({"ips": ["10.86.0.255"]})),
            bad("invalid_address"),
        ),
        (
            "two IPv4 addresses",
            attach(json!({"ips": ["10.86.0.5", "10.86.0.6"]})),
            bad("invalid_address"),
        ),
        (
            "an address in use",
            attach(json!({"ips": ["10.86.0.2"]})),
            Expect::Api(409, "address_in_use"),
        ),
        (
            "host port 0",
            attach(json!({"port_mappings": [{"host_port": 0, "container_port": 80}]})),
            bad("invalid_request"),
        ),
        (
            "port range past 65535",
            attach(
                json!({"port_mappings": [{"host_port": 65535, "container_port": 80, "count": 2}]}),
            ),
            bad("invalid_request"),
        ),
        (
            "port 70000",
            attach(json!({"port_mappings": [{"host_port": 70000, "container_port": 80}]})),
            bad("invalid_request"),
        ),
        (
            "protocol icmp",
            attach(
                json!({"port_mappings": [{"host_port": 81, "container_port": 80, "protocol": "icmp"}]}),
            ),
            bad("invalid_request"),
        ),
        (
            "a published port in use",
            attach(json!({"port_mappings": [{"host_port": 8080, "container_port": 80}]})),
            Expect::Api(409, "port_conflict"),
        ),
        (
            "netns that does not exist",
            attach(json!({"netns": "/nonexistent/ns"})),
            Expect::Api(404, "netns_not_found"),
        ),
        (
            "netns that is a regular file",
            attach(json!({"netns": "/etc/hostname"})),
            Expect::Api(404, "netns_not_found"),
        ),
        (
            "relative netns path",
            attach(json!({"netns": "../../etc"})),
            Expect::Api(404, "netns_not_found"),
        ),
        (
            "empty netns",
            attach(json!({"netns": ""})),
            bad("invalid_request"),
        ),
        (
            "interface name taken in the container",
            attach(json!({"ifname": "lo"})),
            Expect::Api(409, "interface_exists"),
        ),
        (
            "endpoint exists",
            attach(json!({"container_id": "keep"})),
            Expect::Api(409, "endpoint_exists"),
        ),
        (
            "attach to an unknown network",
            post(
                "/v1/networks/nosuch/endpoints",
                json!({"container_id": "z", "netns": ns}).to_string(),
            ),
            Expect::Api(404, "network_not_found"),
        ),
        // GC, paths, methods.
        (
            "GC without a list",
            post("/v1/networks/h/gc", "{}"),
            bad("invalid_request"),
        ),
        (
            "GC list of the wrong type",
            post("/v1/networks/h/gc", r#"{"valid":"x"}"#),
            bad("invalid_request"),
        ),
        (
            "GC of an unknown network",
            post("/v1/networks/nosuch/gc", r#"{"valid":[]}"#),
            Expect::Api(404, "network_not_found"),
        ),
        (
            "encoded path traversal",
            Input::Raw(http("GET", "/v1/networks/..%2F..%2Fetc", b"", false)),
            Expect::Api(404, "network_not_found"),
        ),
        (
            "path traversal",
            Input::Raw(http("GET", "/v1/networks/../../etc/passwd", b"", false)),
            bad("invalid_request"),
        ),
        (
            "NUL in a path",
            Input::Raw(http("GET", "/v1/networks/a%00b", b"", false)),
            Expect::Api(404, "network_not_found"),
        ),
        (
            "delete with a bad query",
            Input::Raw(http("DELETE", "/v1/networks/h?force=maybe", b"", false)),
            bad("invalid_request"),
        ),
        (
            "delete a network in use",
            Input::Raw(http("DELETE", "/v1/networks/h", b"", false)),
            Expect::Api(409, "network_in_use"),
        ),
        (
            "delete an unknown network",
            Input::Raw(http("DELETE", "/v1/networks/..%2Fh", b"", false)),
            Expect::Api(404, "network_not_found"),
        ),
        (
            "detach with path traversal (unknown: nothing to do)",
            Input::Raw(http(
                "DELETE",
                "/v1/networks/h/endpoints/..%2F..%2Fetc/eth0",
                b"",
                false,
            )),
            Expect::ApiOk(200),
        ),
        (
            "check of an unknown endpoint",
            Input::Raw(http(
                "GET",
                "/v1/networks/h/endpoints/x/eth0/check",
                b"",
                false,
            )),
            Expect::Api(404, "endpoint_not_found"),
        ),
        (
            "unknown API path",
            Input::Raw(http("GET", "/v2/networks", b"", false)),
            bad("invalid_request"),
        ),
        (
            "wrong method",
            Input::Raw(http("PUT", NETS, b"{}", true)),
            Expect::Api(405, "invalid_request"),
        ),
        // Not HTTP at all, or HTTP netd's server refuses before routing.
        (
            "garbage request line",
            Input::Raw(b"GARBAGE\r\n\r\n".to_vec()),
            Expect::Http(400),
        ),
        (
            "non-UTF-8 path",
            Input::Raw(b"GET /v1/networks/\xff HTTP/1.1\r\nHost: netd\r\n\r\n".to_vec()),
            Expect::Http(400),
        ),
        (
            "header of 1 MiB",
            Input::Raw({
                let mut r = b"GET /v1/status HTTP/1.1\r\nHost: netd\r\nX-Junk: ".to_vec();
                r.extend(std::iter::repeat_n(b'a', 1 << 20));
                r.extend_from_slice(b"\r\n\r\n");
                r
            }),
            Expect::Http(431),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, input, expect)| Case {
            name: format!("api: {name}"),
            input,
            expect,
        })
        .collect()
}

/// A plugin's whole environment.
type Env = Vec<(OsString, OsString)>;

fn cni_cases(socket: &str, ns: &str) -> Vec<Case> {
    let env = |cmd: &str, cid: &str, netns: &str, ifname: &str| -> Env {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/usr/lib/cni"),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
    };
    let add = || env("ADD", "z", ns, "eth0");
    let with = |mut e: Env, k: &str, v: OsString| {
        e.retain(|(key, _)| key != k);
        e.push((k.into(), v));
        e
    };
    let conf = |extra: Value| {
        let mut v =
            json!({"cniVersion": "1.0.0", "name": "h", "type": "netd-cni", "socket": socket});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string().into_bytes()
    };
    let ten_mb = 10 << 20;
    let cases: Vec<(&str, Env, Vec<u8>, u64)> = vec![
        ("10 MB of garbage", add(), vec![b'x'; ten_mb], 6),
        (
            "10 MB config with a bad subnet",
            add(),
            {
                let mut c = conf(json!({"name": "big", "subnet": "10.87.0.0/33"}));
                c.truncate(c.len() - 1);
                c.extend_from_slice(b",\"junk\":\"");
                c.extend(std::iter::repeat_n(b'j', ten_mb));
                c.extend_from_slice(b"\"}");
                c
            },
            7,
        ),
        ("10 MB of nested arrays", add(), vec![b'['; ten_mb], 6),
        (
            "truncated JSON",
            add(),
            br#"{"cniVersion":"1.0.0","name":"h","sub"#.to_vec(),
            6,
        ),
        ("empty stdin", add(), Vec::new(), 6),
        ("a JSON list", add(), b"[1,2]".to_vec(), 6),
        (
            "non-UTF-8 in a string",
            add(),
            b"{\"cniVersion\":\"1.0.0\",\"name\":\"\xff\"}".to_vec(),
            6,
        ),
        (
            "cniVersion as a number",
            add(),
            conf(json!({"cniVersion": 1.0})),
            1,
        ),
        (
            "cniVersion as an object",
            add(),
            conf(json!({"cniVersion": {"v": "1.0.0"}})),
            1,
        ),
        (
            "cniVersion 0.2.0",
            add(),
            conf(json!({"cniVersion": "0.2.0"})),
            1,
        ),
        (
            "cniVersion 9.9.9",
            add(),
            conf(json!({"cniVersion": "9.9.9"})),
            1,
        ),
        ("no cniVersion", add(), conf(json!({"cniVersion": null})), 1),
        ("name as a number", add(), conf(json!({"name": 7})), 7),
        ("no name", add(), conf(json!({"name": ""})), 7),
        (
            "path traversal in the network name",
            add(),
            conf(json!({"name": "../../etc"})),
            7,
        ),
        (
            "network name of 65 bytes",
            add(),
            conf(json!({"name": "n".repeat(65)})),
            7,
        ),
        ("mtu as a string", add(), conf(json!({"mtu": "big"})), 7),
        (
            "invalid CIDR",
            add(),
            conf(json!({"name": "new", "subnet": "10.87.0.0/33"})),
            7,
        ),
        (
            "IPv6 gateway for an IPv4 subnet",
            add(),
            conf(json!({"name": "new", "subnet": "10.87.0.0/24", "gateway": "fd00::1"})),
            7,
        ),
        (
            "config disagreeing with the existing network",
            add(),
            conf(json!({"subnet": "10.99.0.0/24"})),
            7,
        ),
        (
            "IPv6 static address on an IPv4 network",
            add(),
            conf(json!({"runtimeConfig": {"ips": ["fd00::5/64"]}})),
            7,
        ),
        (
            "static address outside the subnet",
            add(),
            conf(json!({"runtimeConfig": {"ips": ["10.99.0.5/24"]}})),
            7,
        ),
        (
            "port 70000",
            add(),
            conf(
                json!({"runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 80}]}}),
            ),
            7,
        ),
        (
            "protocol icmp",
            add(),
            conf(
                json!({"runtimeConfig": {"portMappings": [{"hostPort": 81, "containerPort": 80, "protocol": "icmp"}]}}),
            ),
            2,
        ),
        (
            "a published port in use",
            add(),
            conf(
                json!({"runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
            ),
            100,
        ),
        (
            "alias with a space",
            add(),
            conf(json!({"runtimeConfig": {"aliases": ["a b"]}})),
            7,
        ),
        (
            "ipam dhcp",
            add(),
            conf(json!({"ipam": {"type": "dhcp"}})),
            2,
        ),
        (
            "unknown command",
            with(add(), "CNI_COMMAND", "add".into()),
            conf(json!({})),
            4,
        ),
        (
            "path traversal in CNI_CONTAINERID",
            with(add(), "CNI_CONTAINERID", "../../etc".into()),
            conf(json!({})),
            4,
        ),
        (
            "non-UTF-8 CNI_CONTAINERID",
            with(
                add(),
                "CNI_CONTAINERID",
                OsString::from_vec(b"\xff".to_vec()),
            ),
            conf(json!({})),
            4,
        ),
        (
            "CNI_IFNAME of 16 bytes",
            with(add(), "CNI_IFNAME", "abcdefghijklmnop".into()),
            conf(json!({})),
            4,
        ),
        (
            "CNI_IFNAME ..",
            with(add(), "CNI_IFNAME", "..".into()),
            conf(json!({})),
            4,
        ),
        (
            "CNI_NETNS missing",
            env("ADD", "z", "", "eth0"),
            conf(json!({})),
            4,
        ),
        (
            "CNI_NETNS that does not exist",
            with(add(), "CNI_NETNS", "/nonexistent/ns".into()),
            conf(json!({})),
            4,
        ),
        (
            "CNI_NETNS a regular file",
            with(add(), "CNI_NETNS", "/etc/hostname".into()),
            conf(json!({})),
            4,
        ),
        (
            "CNI_ARGS without =",
            with(add(), "CNI_ARGS", "IgnoreUnknown=1;garbage".into()),
            conf(json!({})),
            4,
        ),
        (
            "CNI_ARGS IP not an address",
            with(add(), "CNI_ARGS", "IP=10.86.0.999".into()),
            conf(json!({})),
            4,
        ),
        (
            "CNI_ARGS bad MAC",
            with(add(), "CNI_ARGS", "MAC=zz:zz".into()),
            conf(json!({})),
            4,
        ),
        (
            "CNI_ARGS of 100 KB",
            with(
                add(),
                "CNI_ARGS",
                OsString::from("K=".to_string() + &"v".repeat(100_000) + ";x"),
            ),
            conf(json!({})),
            4,
        ),
        (
            "ADD of an existing endpoint",
            env("ADD", "keep", ns, "eth0"),
            conf(json!({})),
            100,
        ),
        (
            "CHECK without prevResult",
            env("CHECK", "keep", ns, "eth0"),
            conf(json!({})),
            7,
        ),
        (
            "CHECK with an undecodable prevResult",
            env("CHECK", "keep", ns, "eth0"),
            conf(json!({"prevResult": {"ips": "x"}})),
            6,
        ),
        (
            "GC without the list",
            env("GC", "", "", ""),
            conf(json!({"cniVersion": "1.1.0"})),
            7,
        ),
        (
            "GC list of the wrong type",
            env("GC", "", "", ""),
            conf(json!({"cniVersion": "1.1.0", "cni.dev/valid-attachments": {"a": 1}})),
            7,
        ),
        (
            "STATUS before 1.1.0",
            env("STATUS", "", "", ""),
            conf(json!({})),
            1,
        ),
    ];
    cases
        .into_iter()
        .map(|(name, env, stdin, code)| Case {
            name: format!("cni: {name}"),
            input: Input::Cni(env, stdin),
            expect: Expect::Cni(code),
        })
        .collect()
}

#[test]
fn every_hostile_input_gets_its_documented_error_and_changes_nothing() {
    let h = Host::start();
    h.netctl_ok(&["create", "h", "--subnet", "10.86.0.0/24"]);
    let keep = h.container("keep");
    let target = h.container("target");
    h.netctl_ok(&[
        "connect",
        "h",
        "--netns",
        &keep.path(),
        "--container-id",
        "keep",
        "--name",
        "web",
        "--alias",
        "www",
        "-p",
        "8080:80",
    ]);
    let socket = h.socket().to_str().expect("utf8").to_string();
    let target_path = target.path();
    let mut cases = netctl_cases(&target_path);
    let n_netctl = cases.len();
    cases.extend(api_cases(&target_path));
    let n_api = cases.len() - n_netctl;
    cases.extend(cni_cases(&socket, &target_path));
    let n_cni = cases.len() - n_netctl - n_api;

    let containers = [&keep, &target];
    let before = snapshot(&h, &containers);
    for case in &cases {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&h, case)));
        let got = match got {
            Ok(g) => g,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("case {:?}: {msg}", case.name);
            }
        };
        eprintln!("ok  {:<60} -> {got}", case.name);
        let after = snapshot(&h, &containers);
        assert!(
            after == before,
            "case {:?} changed the state:\nbefore: {before:#}\nafter: {after:#}",
            case.name
        );
    }
    eprintln!(
        "{} hostile cases: {n_netctl} netctl, {n_api} API, {n_cni} CNI",
        cases.len()
    );
    // netd is still there and still works.
    let out = h.netctl_ok(&["connect", "h", "--netns", &target_path, "--name", "after"]);
    assert!(out.contains("10.86.0."), "{out}");
    assert!(target.ping("10.86.0.1"));
    h.assert_consistent("h");
}

//! Test support: throwaway network namespaces, a fake upstream DNS server, and `dig`.
//!
//! A `Lab` is a private "host" namespace (bridges holding gateway addresses; the DNS under test
//! runs here), an "outside" namespace reachable from the host over a veth (fake upstreams live
//! there), and container namespaces plugged into the host's bridges. Every namespace is deleted
//! when the `Lab` drops, also when the test panics. Nothing touches the machine's own namespace.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nix::sched::{setns, CloneFlags};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One query a fake upstream received: (protocol, lowercase name, type).
pub type SeenQuery = (&'static str, String, String);
/// Shared log of received queries.
pub type Seen = Arc<Mutex<Vec<SeenQuery>>>;

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    /// Name under /run/netns.
    pub name: String,
}

impl Netns {
    fn new(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs `f` on a new thread that has joined this namespace, so sockets it opens live here.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|s| {
            s.spawn(move || {
                enter(&path);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Like `run` but does not wait; the thread stays in the namespace.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> thread::JoinHandle<R> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A set of namespaces for one test.
pub struct Lab {
    prefix: String,
    /// Where the DNS under test runs (bridges, gateways).
    pub host: Netns,
    /// Where fake upstreams run, at 10.99.0.2 (host side 10.99.0.1).
    pub outside: Netns,
    /// Containers and strangers by short name.
    pub nodes: HashMap<String, Netns>,
    veths: usize,
}

/// Address of the outside namespace, where fake upstreams listen.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

impl Lab {
    /// A host and an outside namespace connected by a veth.
    pub fn new(tag: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("nd-dns-{}-{n}-{tag}", std::process::id());
        let host = Netns::new(format!("{prefix}-host"));
        let outside = Netns::new(format!("{prefix}-out"));
        host.ip(&[
            "link",
            "add",
            "vout",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        host.ip(&["addr", "add", "10.99.0.1/24", "dev", "vout"]);
        host.ip(&["link", "set", "vout", "up"]);
        outside.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        outside.ip(&["route", "add", "default", "via", "10.99.0.1"]);
        Lab {
            prefix,
            host,
            outside,
            nodes: HashMap::new(),
            veths: 0,
        }
    }

    /// A bridge in the host namespace holding `addrs` (CIDR; IPv6 ones without DAD).
    pub fn bridge(&self, name: &str, addrs: &[&str]) {
        self.host
            .ip(&["link", "add", name, "type", "bridge", "stp_state", "0"]);
        self.host.ip(&["link", "set", name, "up"]);
        for a in addrs {
            self.add_addr(name, a);
        }
    }

    /// Adds an address to a host interface (IPv6 without DAD).
    pub fn add_addr(&self, dev: &str, cidr: &str) {
        if cidr.contains(':') {
            self.host.ip(&["addr", "add", cidr, "dev", dev, "nodad"]);
        } else {
            self.host.ip(&["addr", "add", cidr, "dev", dev]);
        }
    }

    /// A container namespace with one interface per (bridge, addresses) pair.
    pub fn container(&mut self, name: &str, links: &[(&str, &[&str])]) -> String {
        let ns = Netns::new(format!("{}-{name}", self.prefix));
        for (i, (bridge, addrs)) in links.iter().enumerate() {
            self.veths += 1;
            let host_if = format!("v{}", self.veths);
            let ifname = format!("eth{i}");
            self.host.ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ifname, "netns", &ns.name,
            ]);
            self.host.ip(&["link", "set", &host_if, "master", bridge]);
            self.host.ip(&["link", "set", &host_if, "up"]);
            for a in *addrs {
                if a.contains(':') {
                    ns.ip(&["addr", "add", a, "dev", &ifname, "nodad"]);
                } else {
                    ns.ip(&["addr", "add", a, "dev", &ifname]);
                }
            }
            ns.ip(&["link", "set", &ifname, "up"]);
        }
        let full = ns.name.clone();
        self.nodes.insert(name.to_string(), ns);
        full
    }

    /// A namespace routed to the host over a plain veth (no bridge), at `addr`/24 with the host
    /// at `host_addr`/24: a client outside every netd network.
    pub fn stranger(&mut self, name: &str, addr: &str, host_addr: &str) -> String {
        let ns = Netns::new(format!("{}-{name}", self.prefix));
        self.veths += 1;
        let host_if = format!("v{}", self.veths);
        self.host.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.host
            .ip(&["addr", "add", &format!("{host_addr}/24"), "dev", &host_if]);
        self.host.ip(&["link", "set", &host_if, "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", host_addr]);
        let full = ns.name.clone();
        self.nodes.insert(name.to_string(), ns);
        full
    }

    /// The namespace of a node by short name.
    pub fn node(&self, name: &str) -> &Netns {
        &self.nodes[name]
    }
}

/// Parsed `dig` output.
#[derive(Debug, Clone)]
pub struct Dig {
    /// Response code (`NOERROR`, ...), None when no reply came.
    pub status: Option<String>,
    /// Header flags (`qr`, `aa`, `tc`, ...).
    pub flags: Vec<String>,
    /// Answer records as (type, rdata).
    pub answers: Vec<(String, String)>,
    /// TTLs of the answers.
    pub ttls: Vec<u32>,
    /// Whole output, for failure messages.
    pub raw: String,
}

impl Dig {
    /// Rdata of answers of one type.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|(t, _)| t == rtype)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Rdata of answers of one type, sorted.
    pub fn sorted(&self, rtype: &str) -> Vec<String> {
        let mut v = self.data(rtype);
        v.sort();
        v
    }

    /// Whether a header flag is set.
    pub fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// Runs `dig @server -p port <args>` inside namespace `ns` (defaults: +time=2 +tries=1).
pub fn dig(ns: &str, server: IpAddr, port: u16, args: &[&str]) -> Dig {
    let server = format!("@{server}");
    let port = port.to_string();
    let mut cmd = vec![
        "ip",
        "netns",
        "exec",
        ns,
        "dig",
        &server,
        "-p",
        &port,
        "+time=2",
        "+tries=1",
        "+nocmd",
        "+noall",
        "+comments",
        "+answer",
    ];
    cmd.extend_from_slice(args);
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("running dig");
    let raw = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_dig(raw)
}

fn parse_dig(raw: String) -> Dig {
    let mut status = None;
    let mut flags = Vec::new();
    let mut answers = Vec::new();
    let mut ttls = Vec::new();
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            status = Some(rest.split(',').next().unwrap_or("").trim().to_string());
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let f = rest.split(';').next().unwrap_or("");
            flags = f.split_whitespace().map(str::to_string).collect();
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() >= 5 {
                ttls.push(parts[1].parse().unwrap_or(0));
                answers.push((parts[3].to_string(), parts[4..].join(" ")));
            }
        }
    }
    Dig {
        status,
        flags,
        answers,
        ttls,
        raw,
    }
}

/// How a fake upstream behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Answers from its little zone.
    Answer = 0,
    /// Receives and never replies.
    Silent = 1,
    /// Replies SERVFAIL to everything.
    ServFail = 2,
}

/// A fake upstream DNS server in the outside namespace, UDP and TCP, counting what it sees.
///
/// Zone: `*.example.test` A 198.51.100.7 (TTL 300); `nx*.example.test` and anything outside the
/// zone NXDOMAIN with an SOA (TTL 300, MINIMUM 60); `big.example.test` TXT of ~2.5 KB (truncated
/// over UDP); other types NOERROR/NODATA with SOA.
pub struct FakeUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Every (protocol, qname, qtype) received.
    pub seen: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts one on `port` in `ns`.
    pub fn start(ns: &Netns, port: u16, mode: Mode) -> FakeUpstream {
        let addr = SocketAddr::new(IpAddr::V4(OUTSIDE), port);
        let mode = Arc::new(AtomicU8::new(mode as u8));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (m, s) = (mode.clone(), seen.clone());
        let thread = ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let udp = Arc::new(tokio::net::UdpSocket::bind(addr).await.unwrap());
                let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready_tx.send(()).unwrap();
                let u = tokio::spawn(serve_udp(udp, m.clone(), s.clone()));
                let t = tokio::spawn(serve_tcp(tcp, m, s));
                let _ = stop_rx.await;
                u.abort();
                t.abort();
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake upstream did not start");
        FakeUpstream {
            addr,
            mode,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Changes behaviour.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Number of queries received so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Queries received for a name (any protocol), e.g. "www.example.test.".
    pub fn count_name(&self, name: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Queries received over a protocol ("udp"/"tcp") for a name.
    pub fn count_proto(&self, proto: &str, name: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, n, _)| *p == proto && n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Waits until at least `n` queries arrived (panics after 10 s).
    pub fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "fake upstream never got {n} queries"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_udp(sock: Arc<tokio::net::UdpSocket>, mode: Arc<AtomicU8>, seen: Seen) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = respond(&buf[..n], "udp", &mode, &seen) {
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, mode: Arc<AtomicU8>, seen: Seen) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (mode, seen) = (mode.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok(len) = stream.read_u16().await else {
                    return;
                };
                let mut msg = vec![0u8; usize::from(len)];
                if stream.read_exact(&mut msg).await.is_err() {
                    return;
                }
                if let Some(reply) = respond(&msg, "tcp", &mode, &seen) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

fn soa() -> Record {
    let zone = Name::from_ascii("example.test.").unwrap();
    Record::from_rdata(
        zone.clone(),
        300,
        RData::SOA(SOA::new(
            Name::from_ascii("ns.example.test.").unwrap(),
            Name::from_ascii("admin.example.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            60,
        )),
    )
}

fn respond(
    raw: &[u8],
    proto: &'static str,
    mode: &AtomicU8,
    seen: &Mutex<Vec<SeenQuery>>,
) -> Option<Vec<u8>> {
    let req = Message::from_vec(raw).ok()?;
    let q = req.queries.first()?.clone();
    let qname = q.name.to_string().to_ascii_lowercase();
    seen.lock()
        .unwrap()
        .push((proto, qname.clone(), q.query_type.to_string()));
    let mut meta = Metadata::new(req.metadata.id, MessageType::Response, OpCode::Query);
    meta.recursion_desired = req.metadata.recursion_desired;
    meta.recursion_available = true;
    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata = meta;
    resp.add_query(q.clone());
    match mode.load(Ordering::SeqCst) {
        1 => return None,
        2 => {
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp.to_vec().ok();
        }
        _ => {}
    }
    let in_zone = qname.ends_with(".example.test.");
    let label = qname.split('.').next().unwrap_or("");
    if !in_zone || label.starts_with("nx") {
        resp.metadata.response_code = ResponseCode::NXDomain;
        resp.add_authority(soa());
    } else if qname == "big.example.test." && q.query_type == RecordType::TXT {
        let chunks: Vec<String> = (0..25)
            .map(|i| format!("{i:02}{}", "x".repeat(98)))
            .collect();
        resp.add_answer(Record::from_rdata(
            q.name.clone(),
            300,
            RData::TXT(TXT::new(chunks)),
        ));
    } else if q.query_type == RecordType::A {
        resp.add_answer(Record::from_rdata(
            q.name.clone(),
            300,
            RData::A(A(Ipv4Addr::new(198, 51, 100, 7))),
        ));
    } else {
        resp.add_authority(soa());
    }
    let limit = if proto == "udp" {
        req.edns.as_ref().map_or(512, Edns::max_payload) as usize
    } else {
        usize::MAX
    };
    let bytes = resp.to_vec().ok()?;
    if bytes.len() > limit {
        let mut t = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        t.metadata.recursion_available = true;
        t.metadata.truncation = true;
        t.add_query(q);
        return t.to_vec().ok();
    }
    Some(bytes)
}

/// Sends raw bytes to a UDP server from inside `ns` and returns the reply, if any within `wait`.
pub fn udp_exchange(
    ns: &Netns,
    to: SocketAddr,
    payload: Vec<u8>,
    wait: Duration,
) -> Option<Vec<u8>> {
    ns.run(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(&payload, to).unwrap();
        let mut buf = vec![0u8; 65535];
        s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    })
}

/// Reads from a TCP stream until EOF/error or `wait`; true when the peer closed it.
pub fn closed_by_peer(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Writes bytes, ignoring errors (the server may already have hung up).
pub fn write_quietly(stream: &mut std::net::TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

//! Test support: throwaway network namespaces (always deleted, also on panic), a lab
//! topology (host, outside, bridges, containers) built with `ip`, and tiny TCP/UDP servers
//! and clients that run inside a namespace on their own thread and report peer addresses.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netd_firewall::{EndpointSpec, Firewall, NetworkSpec, PortMapping};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, panicking with its output on failure.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
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
    /// Creates `nd-fw-<pid>-<n>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("nd-fw-{}-{n}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// `ip netns exec <ns> <args>`.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs `f` on a fresh thread that entered this namespace.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }

    /// Parsed `nft -j list table <family> <name>` in this namespace (None if absent).
    pub fn nft_table(&self, family: &str, table: &str) -> Option<serde_json::Value> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "-j", "list", "table", family, table,
            ])
            .output()
            .expect("spawning nft");
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("nft -j output is JSON"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: valid fd; this thread is ours alone.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Objects of one nft JSON listing: (kind, object) for every entry but metainfo.
pub fn nft_objects(v: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| {
            let (k, v) = o.as_object()?.iter().next()?;
            (k != "metainfo").then(|| (k.clone(), v.clone()))
        })
        .collect()
}

/// Names of chains of a listing.
pub fn chain_names(v: &serde_json::Value) -> Vec<String> {
    nft_objects(v)
        .into_iter()
        .filter(|(k, _)| k == "chain")
        .map(|(_, c)| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Element count per set/map name.
pub fn element_counts(v: &serde_json::Value) -> std::collections::BTreeMap<String, usize> {
    nft_objects(v)
        .into_iter()
        .filter(|(k, _)| k == "set" || k == "map")
        .map(|(_, s)| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["elem"].as_array().map(|a| a.len()).unwrap_or(0),
            )
        })
        .collect()
}

/// Number of rules in a chain.
pub fn rule_count(v: &serde_json::Value, chain: &str) -> usize {
    nft_objects(v)
        .into_iter()
        .filter(|(k, r)| k == "rule" && r["chain"] == chain)
        .count()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

// ---- servers and clients ---------------------------------------------------------------

/// TCP + UDP server on `addr:port` in a namespace answering each client with the peer
/// address it saw ("1.2.3.4:5678"). Stops on drop.
pub struct PeerEcho {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    seen: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl PeerEcho {
    /// Starts serving `port` (and, with `count`, the following ports) on `addr`.
    pub fn start(ns: &Netns, addr: IpAddr, port: u16, count: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for p in port..port + count {
            let seen2 = seen.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let path = format!("/run/netns/{}", ns.name);
            let stop2 = stop.clone();
            threads.push(std::thread::spawn(move || {
                enter(&path);
                let tcp = TcpListener::bind((addr, p)).expect("bind tcp");
                let udp = UdpSocket::bind((addr, p)).expect("bind udp");
                tcp.set_nonblocking(true).unwrap();
                udp.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 512];
                while !stop2.load(Ordering::Relaxed) {
                    if let Ok((mut s, peer)) = tcp.accept() {
                        seen2.lock().unwrap().push(peer);
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(peer.to_string().as_bytes());
                    }
                    if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                        seen2.lock().unwrap().push(peer);
                        let _ = udp.send_to(peer.to_string().as_bytes(), peer);
                    }
                }
            }));
            ready_rx.recv().expect("server ready");
        }
        PeerEcho {
            stop,
            threads,
            seen,
        }
    }

    /// Every peer address seen so far (TCP accepts and UDP datagrams).
    pub fn seen(&self) -> Vec<SocketAddr> {
        self.seen.lock().unwrap().clone()
    }
}

/// Sends three UDP datagrams from `src` (an address of `ns`) to `dst`, without waiting for
/// an answer.
pub fn udp_send(ns: &Netns, src: SocketAddr, dst: SocketAddr) {
    ns.run_in(move || {
        let s = udp_bind(src).expect("bind udp source");
        for _ in 0..3 {
            let _ = s.send_to(b"spoof?", dst);
        }
    })
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` (optionally from `src`) and returns what the server saw as
/// our address, or the error.
pub fn tcp_ask(ns: &Netns, dst: SocketAddr, src: Option<IpAddr>) -> Result<SocketAddr, String> {
    ns.run_in(move || {
        let sock = socket2_connect(dst, src)?;
        let mut s = sock;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        out.parse().map_err(|e| format!("bad answer {out:?}: {e}"))
    })
}

fn socket2_connect(dst: SocketAddr, src: Option<IpAddr>) -> Result<TcpStream, String> {
    let Some(src) = src else {
        return TcpStream::connect_timeout(&dst, Duration::from_millis(1500))
            .map_err(|e| e.to_string());
    };
    // std has no bind-before-connect: the spoof tests bind first, then connect.
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 500_000,
    };
    let fd = bound_socket(
        libc::SOCK_STREAM,
        SocketAddr::new(src, 0),
        libc::SO_SNDTIMEO,
        &tv,
    )
    .map_err(|e| format!("binding {src}: {e}"))?;
    let (da, len) = sockaddr(dst);
    // SAFETY: a valid sockaddr buffer of `len` bytes on a socket we own.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&da as *const libc::sockaddr_storage).cast(),
            len,
        )
    } != 0
    {
        return Err(format!("connect: {}", std::io::Error::last_os_error()));
    }
    Ok(TcpStream::from(fd))
}

/// A UDP socket bound to `addr` with `SO_REUSEADDR`, so a test can send from the port a
/// socket it just closed used: a process spawned by a parallel test holds every open
/// descriptor between its fork and exec, and kept the closed one bound (CI saw EADDRINUSE).
fn udp_bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let on: libc::c_int = 1;
    bound_socket(libc::SOCK_DGRAM, addr, libc::SO_REUSEADDR, &on).map(UdpSocket::from)
}

/// A new socket of `kind` with the socket-level option `opt` set to `value`, bound to `addr`.
fn bound_socket<T>(
    kind: libc::c_int,
    addr: SocketAddr,
    opt: libc::c_int,
    value: &T,
) -> std::io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls with valid buffers; the descriptor is owned from the moment
    // it exists, so every error path closes it.
    unsafe {
        let fd = libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let (sa, len) = sockaddr(addr);
        if libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: zeroed sockaddr_storage is valid; we write a matching sockaddr_in(6) into it.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        match a {
            SocketAddr::V4(v4) => {
                let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                (ss, std::mem::size_of::<libc::sockaddr_in>() as u32)
            }
            SocketAddr::V6(v6) => {
                let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6);
                sin.sin6_family = libc::AF_INET6 as u16;
                sin.sin6_port = v6.port().to_be();
                sin.sin6_addr.s6_addr = v6.ip().octets();
                (ss, std::mem::size_of::<libc::sockaddr_in6>() as u32)
            }
        }
    }
}

/// Sends a UDP datagram from inside `ns` (from `src_port`, 0 = any) and returns the peer
/// address the server saw. Retries a few times (first packets may wait for ARP).
pub fn udp_ask(ns: &Netns, dst: SocketAddr, src_port: u16) -> Result<SocketAddr, String> {
    ns.run_in(move || {
        let bind: SocketAddr = if dst.is_ipv4() {
            ([0, 0, 0, 0], src_port).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, src_port).into()
        };
        let s = udp_bind(bind).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 256];
        let mut last = String::new();
        for _ in 0..3 {
            s.send_to(b"who am i", dst).map_err(|e| e.to_string())?;
            match s.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let out = String::from_utf8_lossy(&buf[..n]).to_string();
                    return out.parse().map_err(|e| format!("bad answer {out:?}: {e}"));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    })
}

// ---- lab topology ----------------------------------------------------------------------

/// Host address on the uplink to the outside.
pub const HOST_UP: &str = "198.51.100.2";
/// Outside router address on the uplink.
pub const OUTSIDE_UP: &str = "198.51.100.1";
/// An "internet" address owned by the outside namespace.
pub const INTERNET: &str = "203.0.113.1";

/// Host + outside namespaces, firewall created inside the host namespace.
pub struct Lab {
    /// Containers (dropped first).
    pub containers: Vec<Netns>,
    /// The host namespace (where netd runs).
    pub host: Netns,
    /// The "internet".
    pub outside: Netns,
    /// The firewall under test (lives in `host`).
    pub fw: Arc<Firewall>,
    /// Table name.
    pub table: String,
}

impl Lab {
    /// Builds host and outside, links them, and creates the firewall in host.
    pub fn new() -> Self {
        let host = Netns::new("host");
        let outside = Netns::new("out");
        host.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        host.ip(&["addr", "add", &format!("{HOST_UP}/24"), "dev", "up0"]);
        host.ip(&["link", "set", "up0", "up"]);
        host.ip(&["route", "add", "default", "via", OUTSIDE_UP]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_UP}/24"), "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        // an address beyond the uplink subnet (no dummy module needed: loopback holds it)
        outside.ip(&["addr", "add", &format!("{INTERNET}/32"), "dev", "lo"]);
        // The outside knows nothing about the containers' subnets: unmasqueraded traffic
        // could not be answered, which is what the masquerade tests rely on.
        let table = "netd".to_string();
        let t2 = table.clone();
        let fw = host
            .run_in(move || Firewall::new(&t2))
            .expect("Firewall::new");
        Lab {
            containers: Vec::new(),
            host,
            outside,
            fw: Arc::new(fw),
            table,
        }
    }

    /// Creates the bridge of `net` in the host with its gateways, prepares sysctls.
    pub fn bridge(&self, net: &NetworkSpec) {
        self.host
            .ip(&["link", "add", &net.bridge, "type", "bridge"]);
        for (gw, subnet) in net.gateways.iter().zip(&net.subnets) {
            let cidr = format!("{gw}/{}", subnet.prefix_len());
            self.host.ip(&["addr", "add", &cidr, "dev", &net.bridge]);
        }
        self.host.ip(&["link", "set", &net.bridge, "up"]);
        let br = net.bridge.clone();
        let v6 = net.subnets.iter().any(|s| matches!(s, ipnet::IpNet::V6(_)));
        self.host
            .run_in(move || netd_firewall::prepare_bridge_sysctls(&br, v6))
            .expect("sysctls");
    }

    /// Creates a container namespace attached to `net` with `ip` and the given MAC; returns
    /// (index into `containers`, endpoint spec).
    pub fn container(
        &mut self,
        net: &NetworkSpec,
        key: &str,
        ip: IpAddr,
        mac: [u8; 6],
        ports: &[&str],
    ) -> (usize, EndpointSpec) {
        let c = Netns::new(key);
        let veth = format!("vh-{key}");
        let mac_s = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        self.host.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "address", &mac_s,
            "netns", &c.name,
        ]);
        self.host.ip(&["link", "set", &veth, "master", &net.bridge]);
        self.host.ip(&["link", "set", &veth, "up"]);
        let subnet = net
            .subnets
            .iter()
            .find(|s| s.contains(&ip))
            .expect("ip in subnet");
        c.ip(&[
            "addr",
            "add",
            &format!("{ip}/{}", subnet.prefix_len()),
            "dev",
            "eth0",
        ]);
        c.ip(&["link", "set", "eth0", "up"]);
        if !net.internal {
            let gw = net
                .gateways
                .iter()
                .find(|g| g.is_ipv4() == ip.is_ipv4())
                .expect("gateway");
            c.ip(&["route", "add", "default", "via", &gw.to_string()]);
        }
        let ep = EndpointSpec {
            network: net.name.clone(),
            key: key.to_string(),
            host_veth: veth,
            ips: vec![ip],
            mac,
            ports: ports
                .iter()
                .map(|p| p.parse::<PortMapping>().expect("port mapping"))
                .collect(),
        };
        self.containers.push(c);
        (self.containers.len() - 1, ep)
    }

    /// The inet table listing (panics if absent).
    pub fn inet(&self) -> serde_json::Value {
        self.host
            .nft_table("inet", &self.table)
            .expect("inet table exists")
    }

    /// The bridge table listing (panics if absent).
    pub fn bridge_table(&self) -> serde_json::Value {
        self.host
            .nft_table("bridge", &self.table)
            .expect("bridge table exists")
    }
}

/// A bridge network spec for tests.
pub fn network(name: &str, octet: u8) -> NetworkSpec {
    NetworkSpec {
        name: name.to_string(),
        bridge: format!("br-{name}"),
        subnets: vec![format!("10.{octet}.0.0/24").parse().unwrap()],
        gateways: vec![format!("10.{octet}.0.1").parse().unwrap()],
        internal: false,
        masquerade: true,
        snat: None,
        icc: true,
        dns_port: 53,
    }
}

/// `a.b.c.d` parsed.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `a.b.c.d:p` parsed.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

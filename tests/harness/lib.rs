//! Test harness: runs the real `netd` inside a private "host" network namespace with its own
//! state directory and socket, and plays containers with network namespaces. Everything is
//! removed on drop — also when the test panics — so the machine's own interfaces, routes and
//! nftables rules are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netd_api::Client;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Path of a binary built by this workspace (`target/<profile>/<name>`), found next to the
/// test executable's `deps` directory.
pub fn bin(name: &str) -> PathBuf {
    // The plugin as shipped (scripts/build-cni-plugin.sh: static musl) instead of the dev build.
    if name == "netd-cni" {
        if let Some(p) = std::env::var_os("NETD_TEST_CNI_PLUGIN") {
            return PathBuf::from(p);
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Runs a command and returns its output (never panics on a non-zero exit).
pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> Output {
    let cmd = cmd.borrow_mut();
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn must(mut cmd: impl std::borrow::BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` until it returns `Some`, for at most `limit` (readiness waits, not assertions).
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `cond` holds within 5 s, polled: for what a detach leaves to netd's reaper (the
/// veth pair of a detached endpoint is down and off its bridge at once, and deleted with the
/// other retired ones in the reaper's next batch, a few milliseconds later).
pub fn soon(mut cond: impl FnMut() -> bool) -> bool {
    wait_for(Duration::from_secs(5), || cond().then_some(())).is_some()
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name containing `tag`.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("ndt{}-{n}-{tag}", std::process::id());
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        // Loopback up, as a container runtime would leave it.
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path (`/run/netns/NAME`).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, argv: &[&str]) -> Output {
        run(&mut self.cmd(argv))
    }

    /// Runs `f` on a new thread inside this namespace (sockets it opens live here).
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
            f()
        })
    }

    /// Serves TCP on `addr` inside this namespace: every connection gets back the peer
    /// address it came from, as text. Runs until the process ends.
    pub fn tcp_whoami(&self, addr: &str) {
        let addr: std::net::SocketAddr = addr.parse().expect("addr");
        let (tx, rx) = std::sync::mpsc::channel();
        self.thread(move || {
            let l = std::net::TcpListener::bind(addr).expect("bind whoami");
            tx.send(()).unwrap();
            for c in l.incoming().flatten() {
                let peer = c
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                let mut c = c;
                let _ = std::io::Write::write_all(&mut c, peer.as_bytes());
            }
        });
        rx.recv().expect("whoami listening");
    }

    /// Serves UDP on `addr` inside this namespace, answering each datagram with its source IP.
    pub fn udp_whoami(&self, addr: &str) {
        let addr: std::net::SocketAddr = addr.parse().expect("addr");
        let (tx, rx) = std::sync::mpsc::channel();
        self.thread(move || {
            let s = std::net::UdpSocket::bind(addr).expect("bind udp whoami");
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(from.ip().to_string().as_bytes(), from);
            }
        });
        rx.recv().expect("udp whoami listening");
    }

    /// Connects to `addr` from inside this namespace and returns what the server said
    /// (`None` when the connection fails within two seconds).
    pub fn tcp_ask(&self, addr: &str) -> Option<String> {
        let addr: std::net::SocketAddr = addr.parse().expect("addr");
        self.thread(move || {
            let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut s = String::new();
            std::io::Read::read_to_string(&mut c, &mut s).ok()?;
            Some(s)
        })
        .join()
        .expect("tcp_ask thread")
    }

    /// Sends one UDP datagram to `addr` from inside this namespace and returns the reply.
    pub fn udp_ask(&self, addr: &str) -> Option<String> {
        let addr: std::net::SocketAddr = addr.parse().expect("addr");
        self.thread(move || {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = std::net::UdpSocket::bind(bind).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.send_to(b"hi", addr).ok()?;
            let mut buf = [0u8; 512];
            let (n, _) = s.recv_from(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .join()
        .expect("udp_ask thread")
    }

    /// Points the namespace's resolver at `nameserver` (`/etc/netns/NAME/resolv.conf`, which
    /// `ip netns exec` mounts over /etc/resolv.conf); removed again on drop.
    pub fn use_nameserver(&self, nameserver: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).expect("mkdir /etc/netns");
        std::fs::write(
            format!("{dir}/resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .expect("resolv.conf");
    }

    /// `dig +short` of `name` (type `qtype`) against `server`, from inside the namespace.
    pub fn dig(&self, server: &str, qtype: &str, name: &str) -> Vec<String> {
        let out = self.exec(&[
            "dig",
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{server}"),
            qtype,
            name,
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .collect()
    }

    /// The status (`NOERROR`, `NXDOMAIN`, `REFUSED`, …) of a query from inside the namespace.
    pub fn dig_status(&self, server: &str, qtype: &str, name: &str) -> String {
        let out = self.exec(&[
            "dig",
            "+time=2",
            "+tries=1",
            &format!("@{server}"),
            qtype,
            name,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("status: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("NO ANSWER")
            .to_string()
    }

    /// Whether `ping -c1` from here to `addr` gets an answer.
    pub fn ping(&self, addr: &str) -> bool {
        self.exec(&["ping", "-c1", "-W2", addr]).status.success()
    }

    /// Interface names in the namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.exec(&["ip", "-j", "link", "show"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `ip -j` output of one link, if it exists.
    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.exec(&["ip", "-j", "-d", "addr", "show", "dev", name]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// Addresses (`addr/prefix`) on an interface, link-local IPv6 excluded.
    pub fn addrs(&self, name: &str) -> Vec<String> {
        self.link(name)
            .and_then(|l| {
                l["addr_info"].as_array().map(|a| {
                    a.iter()
                        .filter(|x| x["scope"] != "link")
                        .map(|x| {
                            format!("{}/{}", x["local"].as_str().unwrap_or(""), x["prefixlen"])
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// An "outside" namespace playing the internet: linked to `host` by a veth, holding
/// 203.0.113.2/24 (TEST-NET-3) while the host side holds 203.0.113.1 and routes by default
/// through it. The outside has no route to container subnets, so only masqueraded traffic
/// can be answered.
pub fn outside(host: &Netns) -> Netns {
    let out = Netns::new("out");
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let (a, b) = (format!("up{n}"), format!("wan{n}"));
    must(host.cmd(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]));
    must(host.cmd(&["ip", "link", "set", &b, "netns", out.name()]));
    must(host.cmd(&["ip", "addr", "add", "203.0.113.1/24", "dev", &a]));
    must(host.cmd(&["ip", "link", "set", &a, "up"]));
    must(host.cmd(&["ip", "route", "add", "default", "via", "203.0.113.2"]));
    must(out.cmd(&["ip", "addr", "add", "203.0.113.2/24", "dev", &b]));
    must(out.cmd(&["ip", "link", "set", &b, "up"]));
    out
}

/// netd running in its own "host" namespace.
pub struct Host {
    /// The host namespace (dropped last).
    pub ns: Netns,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Extra environment for the next `spawn` (e.g. `NETD_FAILPOINT`).
    pub env: Vec<(String, String)>,
}

impl Host {
    /// Starts netd in a fresh namespace and waits until its API answers.
    pub fn start() -> Host {
        Host::start_with(&[])
    }

    /// Like [`Host::start`] with extra `netd` arguments.
    pub fn start_with(args: &[&str]) -> Host {
        let ns = Netns::new("host");
        let dir = tempfile::Builder::new()
            .prefix("netd-test-")
            .tempdir()
            .expect("tempdir");
        let mut h = Host {
            ns,
            dir,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        };
        h.spawn();
        h
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("netd.sock")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The daemon log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("netd.log")
    }

    /// The test's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// netd's pid (`ip netns exec` execs it in place), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The namespaces (nsfs inode numbers) netd's threads are in right now.
    pub fn thread_namespaces(&self) -> Vec<u64> {
        let pid = self.pid().expect("netd running");
        let mut out = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
            let ns = t.expect("task").path().join("ns/net");
            if let Ok(m) = std::fs::metadata(&ns) {
                out.push(std::os::unix::fs::MetadataExt::ino(&m));
            }
        }
        out
    }

    /// Starts netd (after a stop or crash) and waits until it answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "netd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = self
            .ns
            .cmd(&[bin("netd").to_str().expect("utf8 path")])
            .arg("--socket")
            .arg(self.socket())
            .args(if self.extra_args.iter().any(|a| a == "--state-dir") {
                vec![]
            } else {
                vec!["--state-dir".into(), self.state_dir().into_os_string()]
            })
            .args(if self.extra_args.iter().any(|a| a == "--resolv-conf") {
                vec![]
            } else {
                // Upstream DNS for tests: loopback of the host namespace, where nothing
                // listens, so forwarded names fail fast and no query leaves the sandbox.
                let rc = self.dir.path().join("resolv.conf");
                std::fs::write(&rc, "nameserver 127.0.0.1\n").expect("resolv.conf");
                vec!["--resolv-conf".into(), rc.into_os_string()]
            })
            .args(&self.extra_args)
            .env("NETD_LOG", "debug,hickory_server=warn,hickory_proto=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning netd");
        self.child = Some(child);
        let client = self.client();
        let up = wait_for(Duration::from_secs(20), || client.status().ok());
        if up.is_none() {
            panic!("netd did not come up:\n{}", self.log());
        }
    }

    /// Checks the invariants netd promises for `network` and panics with the details if one is
    /// broken: no address twice, every lease owned by a live endpoint and every endpoint's
    /// addresses leased, every endpoint passes CHECK, and the bridge holds exactly the
    /// endpoints' host veths. Returns the endpoints.
    pub fn assert_consistent(&self, network: &str) -> Vec<netd_api::Endpoint> {
        let client = self.client();
        let inspect = client
            .inspect_network(network)
            .unwrap_or_else(|e| panic!("inspect {network}: {e}"));
        let mut seen = std::collections::BTreeSet::new();
        let mut want_leases = std::collections::BTreeSet::new();
        for e in &inspect.endpoints {
            for ip in &e.ips {
                assert!(
                    seen.insert(ip.addr()),
                    "address {} handed out twice",
                    ip.addr()
                );
                want_leases.insert((ip.addr(), format!("{}/{}", e.container_id, e.ifname)));
            }
            if let Err(err) = client.check(network, &e.container_id, &e.ifname) {
                panic!(
                    "endpoint {}/{} fails CHECK: {err}",
                    e.container_id, e.ifname
                );
            }
        }
        let leases: std::collections::BTreeSet<_> = inspect
            .leases
            .iter()
            .map(|l| (l.address, l.endpoint.clone()))
            .collect();
        assert_eq!(leases, want_leases, "leases and endpoints disagree");
        let mut ports = self.bridge_ports(&inspect.network.bridge);
        ports.sort();
        let mut veths: Vec<String> = inspect
            .endpoints
            .iter()
            .map(|e| e.host_veth.clone())
            .collect();
        veths.sort();
        assert_eq!(
            ports, veths,
            "bridge ports and endpoints disagree (orphan or missing veth)"
        );
        inspect.endpoints
    }

    /// Stops netd with SIGTERM (graceful) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), libc::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Waits for netd to exit on its own (e.g. at a failpoint); false if it is still running
    /// after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let exited = wait_for(limit, || child.try_wait().ok().flatten()).is_some();
        if exited {
            self.child = None;
        }
        exited
    }

    /// Whether netd is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills netd with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Graceful restart.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A blocking API client.
    pub fn client(&self) -> Client {
        Client::new(self.socket())
    }

    /// A `netctl` command talking to this daemon.
    pub fn netctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("netctl"));
        c.env("NETD_SOCKET", self.socket()).args(args);
        c
    }

    /// Runs netctl; returns its output.
    pub fn netctl(&self, args: &[&str]) -> Output {
        run(&mut self.netctl_cmd(args))
    }

    /// Runs netctl, which must succeed; returns stdout.
    pub fn netctl_ok(&self, args: &[&str]) -> String {
        must(&mut self.netctl_cmd(args))
    }

    /// `netctl --format json ARGS`, parsed.
    pub fn netctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--format", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.netctl_ok(&a)).expect("netctl json")
    }

    /// A container namespace.
    pub fn container(&self, tag: &str) -> Netns {
        Netns::new(tag)
    }

    /// Interfaces whose controller is `bridge`, in the host namespace.
    pub fn bridge_ports(&self, bridge: &str) -> Vec<String> {
        let out = self
            .ns
            .exec(&["ip", "-j", "link", "show", "master", bridge]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- netd log ----\n{}", self.log());
        }
    }
}

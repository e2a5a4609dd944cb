//! netd's embedded DNS server: containers resolve each other by name, scoped per network.
//!
//! The daemon holds one [`Dns`] handle. [`Dns::add_network`] binds UDP and TCP listeners on the
//! network's gateway addresses; [`Dns::add_endpoint`] / [`Dns::remove_endpoint`] swap an
//! immutable records snapshot, so a name is answerable by the very next query after the call
//! returns and gone right after removal. Queries for names that are not netd's are forwarded to
//! upstream resolvers through pooled sockets with a TTL-honouring cache; every failure becomes a
//! prompt SERVFAIL, never silence. Clients are identified by source address: a container resolves
//! the names of every network it is attached to, strangers are REFUSED. See `docs/dns.md`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use ipnet::IpNet;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

mod cache;
mod fast;
mod forward;
mod handler;
mod records;
mod resolv;
mod udp;

use handler::{Handler, Shared};
use records::{normalize, validate_name, NetRecords, Records};

/// Tunables of the DNS subsystem.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Port the listeners bind on each gateway address (53 in production).
    pub port: u16,
    /// TTL of answers about netd's own names, kept small because addresses change.
    pub local_ttl: u32,
    /// How long one upstream gets to answer before the next one is tried.
    pub upstream_timeout: Duration,
    /// Forwards allowed in flight at once; past it clients get SERVFAIL at once.
    pub max_inflight_forwards: usize,
    /// Forwarded answers kept in the cache (0 disables the cache).
    pub cache_entries: usize,
    /// The host's resolv.conf, source of upstreams for networks that configure none.
    pub resolv_conf: PathBuf,
    /// systemd-resolved's upstream list, used when `resolv_conf` lists only 127.0.0.53.
    pub systemd_resolv_conf: PathBuf,
    /// A TCP client connection idle (no complete query) for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Told, at most every [`LOAD_HOOK_EVERY`] per listener, that a UDP listener is under load
    /// (the daemon trims its heap once the load is over).
    pub on_load: Option<LoadHook>,
}

/// How often a listener under load calls [`DnsConfig::on_load`] at most.
pub const LOAD_HOOK_EVERY: Duration = Duration::from_millis(250);

/// A callback for [`DnsConfig::on_load`].
#[derive(Clone)]
pub struct LoadHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for LoadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadHook")
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            port: 53,
            local_ttl: 5,
            upstream_timeout: Duration::from_millis(1000),
            max_inflight_forwards: 1024,
            cache_entries: 10_000,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            systemd_resolv_conf: PathBuf::from(resolv::SYSTEMD_RESOLV_CONF),
            tcp_idle_timeout: Duration::from_secs(5),
            on_load: None,
        }
    }
}

/// DNS view of a network, given when the network is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDns {
    /// Network name; `name.<network>` resolves for its endpoints.
    pub name: String,
    /// Subnets: clients inside them may query, their reverse zones are answered locally.
    pub subnets: Vec<IpNet>,
    /// Gateway addresses the listeners bind (UDP and TCP on each).
    pub listen: Vec<IpAddr>,
    /// Optional search domain (e.g. `mynet.netd`); `name.<domain>` resolves too.
    pub domain: Option<String>,
    /// Upstream resolvers; empty means the host's resolv.conf.
    pub upstreams: Vec<SocketAddr>,
    /// Internal networks never forward queries (non-local names get REFUSED).
    pub internal: bool,
}

/// DNS view of an endpoint (a container attached to a network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointDns {
    /// The container's id, the same on every network it is attached to: it is what lets a
    /// container on networks A and B resolve the names of both, whichever gateway it asks.
    pub key: String,
    /// Names: container name first (it is the PTR target), then aliases and short id.
    pub names: Vec<String>,
    /// The endpoint's addresses on this network.
    pub addrs: Vec<IpAddr>,
}

/// Errors of the DNS subsystem; each says what was being done and to what.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// `add_network` for a network that already has DNS.
    #[error("adding DNS for network {0}: it already has DNS (remove it first)")]
    NetworkExists(String),
    /// An endpoint was added to a network DNS does not know.
    #[error("adding DNS names of endpoint {key} on network {network}: no such network")]
    UnknownNetwork {
        /// Network asked for.
        network: String,
        /// Endpoint key.
        key: String,
    },
    /// A network name or domain that cannot be a DNS name.
    #[error("adding DNS for network {network}: invalid {what} {value:?}: {reason}")]
    InvalidNetwork {
        /// Network name.
        network: String,
        /// "name" or "domain".
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An endpoint name that cannot be a DNS name.
    #[error("adding DNS name {name:?} of endpoint {key} on network {network}: {reason}")]
    InvalidName {
        /// Network name.
        network: String,
        /// Endpoint key.
        key: String,
        /// The offending name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A listener socket could not be set up.
    #[error("binding DNS {proto} listener for network {network} on {addr}: {source}")]
    Bind {
        /// Network name.
        network: String,
        /// "udp" or "tcp".
        proto: &'static str,
        /// Address being bound.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Cloneable handle to the DNS subsystem; all clones share the same state.
#[derive(Clone)]
pub struct Dns {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: DnsConfig,
    shared: Arc<Shared>,
    /// Serialises snapshot writers (readers never take it).
    write: std::sync::Mutex<()>,
    /// Running listeners per network; a tokio mutex because stopping one awaits.
    servers: tokio::sync::Mutex<HashMap<String, Listeners>>,
}

/// A network's listeners: hickory serves TCP, netd's own loop (`udp::serve`) serves UDP.
struct Listeners {
    tcp: Server<Handler>,
    udp: Vec<tokio::task::JoinHandle<()>>,
}

impl Dns {
    /// Creates the subsystem; nothing is bound until [`Dns::add_network`].
    pub fn new(cfg: DnsConfig) -> Dns {
        let shared = Arc::new(Shared {
            records: ArcSwap::from_pointee(Records::default()),
            forwarder: forward::Forwarder::new(
                cfg.upstream_timeout,
                cfg.max_inflight_forwards,
                cfg.cache_entries,
            ),
            host: resolv::HostResolvers::new(
                cfg.resolv_conf.clone(),
                cfg.systemd_resolv_conf.clone(),
            ),
            local_ttl: cfg.local_ttl,
            rotation: AtomicUsize::new(0),
            on_load: cfg.on_load.clone(),
        });
        Dns {
            inner: Arc::new(Inner {
                cfg,
                shared,
                write: std::sync::Mutex::new(()),
                servers: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration this handle was created with.
    pub fn config(&self) -> &DnsConfig {
        &self.inner.cfg
    }

    /// Registers a network's zone and starts UDP+TCP listeners on every `listen` address.
    ///
    /// Sockets use IP_FREEBIND / IPV6_FREEBIND, so binding works before the gateway address is
    /// configured or while an IPv6 address is still tentative (DAD). On any bind failure nothing
    /// is left behind. Must be called within a tokio runtime.
    pub async fn add_network(&self, net: NetworkDns) -> Result<(), DnsError> {
        let invalid = |what, value: &str, reason| DnsError::InvalidNetwork {
            network: net.name.clone(),
            what,
            value: value.to_string(),
            reason,
        };
        validate_name(&net.name).map_err(|r| invalid("name", &net.name, r))?;
        if let Some(d) = &net.domain {
            validate_name(d).map_err(|r| invalid("domain", d, r))?;
        }

        let mut servers = self.inner.servers.lock().await;
        if self
            .inner
            .shared
            .records
            .load()
            .networks
            .contains_key(&net.name)
        {
            return Err(DnsError::NetworkExists(net.name));
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for ip in &net.listen {
            let addr = SocketAddr::new(*ip, self.inner.cfg.port);
            let bind_err = |proto, source| DnsError::Bind {
                network: net.name.clone(),
                proto,
                addr,
                source,
            };
            udp.push(bind_udp(addr).map_err(|e| bind_err("udp", e))?);
            tcp.push(bind_tcp(addr).map_err(|e| bind_err("tcp", e))?);
        }

        self.update(|r| {
            r.networks
                .insert(net.name.clone(), Arc::new(NetRecords::new(&net)));
        });
        let mut server = Server::new(Handler(self.inner.shared.clone()));
        let udp = udp
            .into_iter()
            .map(|s| tokio::spawn(udp::serve(s, Handler(self.inner.shared.clone()))))
            .collect();
        for l in tcp {
            // The response buffer is per connection; queries on one connection are handled in
            // order, so a few slots suffice.
            server.register_listener(l, self.inner.cfg.tcp_idle_timeout, 8);
        }
        if !net.listen.is_empty() {
            servers.insert(net.name.clone(), Listeners { tcp: server, udp });
        }
        info!(network = %net.name, listen = ?net.listen, port = self.inner.cfg.port, "DNS serving network");
        Ok(())
    }

    /// Stops the network's listeners and drops its records. Unknown networks are ignored.
    pub async fn remove_network(&self, name: &str) {
        let mut servers = self.inner.servers.lock().await;
        if let Some(mut listeners) = servers.remove(name) {
            for task in &listeners.udp {
                task.abort();
            }
            // Awaiting the aborted loops means their sockets are closed: a rebind may follow.
            for task in listeners.udp {
                let _ = task.await;
            }
            if let Err(e) = listeners.tcp.shutdown_gracefully().await {
                warn!(network = %name, cause = %e, "stopping DNS listeners");
            }
        }
        self.update(|r| {
            r.networks.remove(name);
        });
        let mut keep: Vec<SocketAddr> = self
            .inner
            .shared
            .records
            .load()
            .networks
            .values()
            .flat_map(|n| n.upstreams.iter().copied())
            .collect();
        keep.extend(self.inner.shared.host.get().iter().copied());
        self.inner.shared.forwarder.retain(&keep);
        debug!(network = %name, "DNS stopped serving network");
    }

    /// Adds (or replaces, by key) an endpoint's names; answered by the very next query.
    pub fn add_endpoint(&self, network: &str, ep: EndpointDns) -> Result<(), DnsError> {
        for name in &ep.names {
            validate_name(name).map_err(|reason| DnsError::InvalidName {
                network: network.to_string(),
                key: ep.key.clone(),
                name: name.clone(),
                reason,
            })?;
        }
        let mut missing = false;
        let key = ep.key.clone();
        let mut ep = Some(ep);
        self.update(|r| match r.networks.get(network) {
            Some(net) => {
                let ep = ep.take().expect("update closure runs once");
                let next = net.with_endpoint(ep);
                r.networks.insert(network.to_string(), Arc::new(next));
            }
            None => missing = true,
        });
        if missing {
            return Err(DnsError::UnknownNetwork {
                network: network.to_string(),
                key,
            });
        }
        debug!(%network, %key, "DNS names added");
        Ok(())
    }

    /// Removes an endpoint's names; gone for the very next query. Unknown keys are ignored.
    pub fn remove_endpoint(&self, network: &str, key: &str) {
        self.update(|r| {
            if let Some(next) = r
                .networks
                .get(network)
                .and_then(|n| n.without_endpoint(key))
            {
                r.networks.insert(network.to_string(), Arc::new(next));
            }
        });
        debug!(%network, %key, "DNS names removed");
    }

    /// What `name` (bare, `name.<network>` or `name.<domain>`) resolves to on `network`.
    pub fn lookup(&self, network: &str, name: &str) -> Vec<IpAddr> {
        self.inner
            .shared
            .records
            .load()
            .networks
            .get(network)
            .and_then(|n| n.addrs(&normalize(name)))
            .unwrap_or_default()
    }

    /// Test hook for fuzzing and tests: answers one raw DNS message as if it had arrived from
    /// `src` over UDP (or TCP), with no socket involved, and returns the encoded reply; `None`
    /// where a listener sends nothing or hickory-server answers before netd's handler runs
    /// (shorter than a header, a response message, an undecodable body). Networks added with
    /// an empty `listen` list are answered for without binding anything.
    #[doc(hidden)]
    pub async fn answer_raw(&self, packet: &[u8], src: SocketAddr, tcp: bool) -> Option<Vec<u8>> {
        let handler = Handler(self.inner.shared.clone());
        if !tcp {
            // The way a UDP listener answers: the fast path first, hickory for the rest.
            let mut out = Vec::new();
            match fast::answer(&handler.0, packet, src, &mut out) {
                fast::Outcome::Reply => return Some(out),
                fast::Outcome::Drop => return None,
                fast::Outcome::Slow => {}
            }
        }
        handler::answer_raw(&handler, packet, src, tcp).await
    }

    /// Stops every listener and forgets every network.
    pub async fn shutdown(&self) {
        let names: Vec<String> = self.inner.servers.lock().await.keys().cloned().collect();
        for name in names {
            self.remove_network(&name).await;
        }
        self.update(|r| r.networks.clear());
        self.inner.shared.forwarder.retain(&[]);
    }

    /// Copy-on-write update of the snapshot; writers are serialised, readers never block.
    fn update(&self, f: impl FnOnce(&mut Records)) {
        let _w = self.inner.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Records::clone(&self.inner.shared.records.load());
        f(&mut next);
        self.inner.shared.records.store(Arc::new(next));
    }
}

fn socket_for(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    // Freebind: the gateway address may not be up yet, or still tentative (IPv6 DAD).
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bind_udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    // A larger receive buffer absorbs bursts; the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(1 << 20);
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    // Rebinding after a restart must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

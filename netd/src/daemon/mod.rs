//! Orchestration: network create/remove and endpoint attach/detach/check/GC, with ordered
//! rollback. The daemon owns the in-memory view of networks, calls the store for anything that
//! must survive a crash, and drives the kernel-facing modules. Firewall and DNS plug in through
//! the `plug_*` seams in [`plugs`], called at fixed points of each flow.

mod endpoint;
mod error;
mod network;
mod plugs;
mod reconcile;
mod turns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use netd_api::{Network, NetworkInspect, NetworkSummary, Status};
use netd_ipam::{Pool, SubnetPool};

pub use error::DaemonError;

use crate::netlink::Netlink;
use crate::store::Store;

/// Size at which the endpoint-key lock map drops the entries of finished operations.
const KEY_LOCKS_PRUNE_AT: usize = 64;

/// Daemon settings.
#[derive(Clone)]
pub struct Config {
    /// State directory (the store lives here).
    pub state_dir: PathBuf,
    /// Pools automatic subnets are carved from, in order.
    pub subnet_pools: Vec<SubnetPool>,
    /// How often dead endpoints (namespace gone) are garbage-collected.
    pub gc_interval: std::time::Duration,
    /// Program NAT, isolation and published ports in nftables.
    pub firewall: bool,
    /// Serve DNS on the gateways (None: off).
    pub dns: Option<netd_dns::DnsConfig>,
}

impl Config {
    /// Defaults for a state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            state_dir: state_dir.into(),
            subnet_pools: netd_ipam::default_pools(),
            gc_interval: std::time::Duration::from_secs(10),
            firewall: true,
            dns: Some(netd_dns::DnsConfig::default()),
        }
    }
}

/// A network plus the derived allocation pools; immutable once built.
#[derive(Debug)]
pub(crate) struct NetState {
    pub(crate) net: Network,
    pub(crate) pools: Vec<Pool>,
    /// Attach/detach hold it shared; removing the network holds it exclusively.
    pub(crate) gate: tokio::sync::RwLock<()>,
}

/// Cloneable handle to the daemon.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("state_dir", &self.inner.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: Config,
    store: Store,
    host: Netlink,
    networks: RwLock<BTreeMap<String, Arc<NetState>>>,
    /// Serializes network create/remove (rare; keeps subnet/bridge checks race-free).
    net_ops: tokio::sync::Mutex<()>,
    started: Instant,
    firewall: Option<Arc<netd_firewall::Firewall>>,
    dns: Option<netd_dns::Dns>,
    /// True until start-up reconcile is done (firewall changes are batched into one sync).
    starting: std::sync::atomic::AtomicBool,
    drift_watch: std::sync::Mutex<Option<netd_firewall::DriftWatch>>,
    /// Per-endpoint-key locks (weak, so finished keys cost nothing).
    key_locks: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>,
    >,
    /// Attaches and detaches that arrive together run in arrival order (see [`turns`]).
    turns: turns::Turns,
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs blocking work (firewall batches, whole-store reads, opening the store) off the async
/// workers. Store writes do not come here: they go to the store's committer.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Subsystem(format!("blocking task failed: {e}")))
}

impl Daemon {
    /// Opens the store, loads state and reconciles the kernel with it. Must run inside the
    /// namespace netd serves as "host".
    pub async fn start(cfg: Config) -> Result<Daemon, DaemonError> {
        let dir = cfg.state_dir.clone();
        let store = blocking(move || Store::open(&dir)).await??;
        let host = Netlink::current()?;
        let firewall = if cfg.firewall {
            let fw = netd_firewall::Firewall::new("netd")
                .map_err(|e| DaemonError::Subsystem(format!("opening nftables: {e}")))?;
            Some(Arc::new(fw))
        } else {
            None
        };
        let dns = cfg.dns.clone().map(netd_dns::Dns::new);
        let daemon = Daemon {
            inner: Arc::new(Inner {
                cfg,
                store,
                host,
                networks: RwLock::new(BTreeMap::new()),
                net_ops: tokio::sync::Mutex::new(()),
                started: Instant::now(),
                firewall,
                dns,
                starting: std::sync::atomic::AtomicBool::new(true),
                drift_watch: std::sync::Mutex::new(None),
                key_locks: std::sync::Mutex::new(std::collections::HashMap::new()),
                turns: turns::Turns::new(),
            }),
        };
        daemon.reconcile().await?;
        daemon.firewall_sync().await?;
        daemon
            .inner
            .starting
            .store(false, std::sync::atomic::Ordering::Release);
        daemon.spawn_drift_repair()?;
        Ok(daemon)
    }

    /// The lock serializing operations on one endpoint key.
    pub(crate) fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inner.key_locks.lock().expect("key lock map");
        if let Some(lock) = map.get(key).and_then(|w| w.upgrade()) {
            return lock;
        }
        // Dead entries (their operation finished) are dropped in passes of O(entries): at 64
        // the map stays at a few KiB, where a bound of 1,024 kept ~150 KiB of finished keys
        // resident on a host with a thousand containers.
        if map.len() >= KEY_LOCKS_PRUNE_AT {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }

    /// Waits for this operation's turn on netd's thread (see [`turns`]).
    pub(crate) async fn take_turn(&self) -> turns::Turn {
        self.inner.turns.take().await
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn host(&self) -> &Netlink {
        &self.inner.host
    }

    /// Deletes the retired veths now (see [`Netlink::retire_link`]). A failure is only
    /// logged: the reaper tries again at the next retirement.
    pub(crate) async fn flush_retired(&self) {
        if let Err(e) = self.host().flush_retired().await {
            tracing::warn!(cause = %e, "deleting retired interfaces failed");
        }
    }

    pub(crate) fn net_state(&self, name: &str) -> Result<Arc<NetState>, DaemonError> {
        self.inner
            .networks
            .read()
            .expect("networks lock")
            .get(name)
            .cloned()
            .ok_or_else(|| DaemonError::NetworkNotFound(name.to_string()))
    }

    pub(crate) fn all_networks(&self) -> Vec<Arc<NetState>> {
        self.inner
            .networks
            .read()
            .expect("networks lock")
            .values()
            .cloned()
            .collect()
    }

    /// Stops DNS listeners and deletes retired veths (the endpoints' kernel state and the
    /// firewall tables stay in place).
    pub async fn shutdown(&self) {
        if let Some(dns) = &self.inner.dns {
            dns.shutdown().await;
        }
        self.flush_retired().await;
        self.inner.drift_watch.lock().expect("drift lock").take();
    }

    /// What `name` resolves to on `network` (for `netctl dns`).
    pub fn resolve(&self, network: &str, name: &str) -> Result<Vec<std::net::IpAddr>, DaemonError> {
        self.net_state(network)?;
        Ok(self
            .inner
            .dns
            .as_ref()
            .map(|d| d.lookup(network, name))
            .unwrap_or_default())
    }

    /// Daemon status.
    pub async fn status(&self) -> Result<Status, DaemonError> {
        let store = self.store().clone();
        let snap = blocking(move || store.load()).await??;
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            networks: snap.networks.len(),
            endpoints: snap.endpoints.len(),
            state_dir: self.inner.cfg.state_dir.display().to_string(),
        })
    }

    /// Every network with its endpoint count.
    pub async fn list_networks(&self) -> Result<Vec<NetworkSummary>, DaemonError> {
        let store = self.store().clone();
        let snap = blocking(move || store.load()).await??;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &snap.endpoints {
            *counts.entry(e.endpoint.network.as_str()).or_default() += 1;
        }
        Ok(self
            .all_networks()
            .iter()
            .map(|s| NetworkSummary {
                endpoints: counts.get(s.net.name.as_str()).copied().unwrap_or(0),
                network: s.net.clone(),
            })
            .collect())
    }

    /// One network; with `detail`, also its endpoints, leases and per-subnet usage.
    pub async fn inspect_network(
        &self,
        name: &str,
        detail: bool,
    ) -> Result<NetworkInspect, DaemonError> {
        let st = self.net_state(name)?;
        if !detail {
            return Ok(NetworkInspect {
                network: st.net.clone(),
                endpoints: vec![],
                leases: vec![],
                usage: vec![],
            });
        }
        let store = self.store().clone();
        let n = name.to_string();
        let (eps, leases) =
            blocking(move || Ok::<_, DaemonError>((store.endpoints(&n)?, store.leases(&n)?)))
                .await??;
        let used: std::collections::BTreeSet<std::net::IpAddr> =
            leases.iter().map(|(ip, _)| *ip).collect();
        let usage = st
            .pools
            .iter()
            .map(|p| netd_api::SubnetUsage {
                subnet: p.subnet(),
                used: used.iter().filter(|ip| p.subnet().contains(*ip)).count() as u64,
                free: u64::try_from(p.free_count(&used)).unwrap_or(u64::MAX),
            })
            .collect();
        let prefix = format!("{name}/");
        Ok(NetworkInspect {
            network: st.net.clone(),
            endpoints: eps.into_iter().map(|r| r.endpoint).collect(),
            leases: leases
                .into_iter()
                .map(|(address, key)| netd_api::Lease {
                    address,
                    endpoint: key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
                })
                .collect(),
            usage,
        })
    }
}

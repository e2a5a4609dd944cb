//! The kernel side: a [`Firewall`] owns netlink sockets bound in the network namespace it was
//! created in, remembers what it installed, and turns each change into one atomic batch.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};

use tracing::{debug, info, warn};

use crate::apply::NlSocket;
use crate::conntrack::{self, UdpTarget};
use crate::policy::{self, Op};
use crate::ports::PortIndex;
use crate::render::{self, Rendered};
use crate::spec::{check_port_conflicts, EndpointSpec, NetworkSpec, Protocol};
use crate::FirewallError;

/// Size of the last batch sent (for logs and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Number of nftables messages (excluding BATCH_BEGIN/END).
    pub messages: usize,
    /// Bytes sent.
    pub bytes: usize,
}

struct Inner {
    sock: NlSocket,
    /// Separate socket for ctnetlink so dumps never interleave with batch acks.
    ct: NlSocket,
    synced: bool,
    nets: Vec<NetworkSpec>,
    eps: BTreeMap<String, EndpointSpec>,
    /// The published ports of `eps`, indexed.
    ports: PortIndex,
    last: BatchStats,
}

impl Inner {
    fn put_endpoint(&mut self, ep: &EndpointSpec) {
        if let Some(old) = self.eps.insert(ep.key.clone(), ep.clone()) {
            self.ports.remove(&old);
        }
        self.ports.insert(ep);
    }

    fn drop_endpoint(&mut self, key: &str) {
        if let Some(old) = self.eps.remove(key) {
            self.ports.remove(&old);
        }
    }

    /// Refuses `ep`'s ports if another endpoint holds one. The index rules out nearly every
    /// attach at once; only a possible overlap (or `ep` re-added) walks every endpoint, which
    /// skips `ep`'s own key and names the holder. Walking them on every attach cost a cache
    /// miss or two per endpoint, 4,000 with 1,000 containers publishing 2 ports each.
    fn port_conflicts(&self, ep: &EndpointSpec) -> Result<(), FirewallError> {
        if self.ports.may_conflict(ep) {
            check_port_conflicts(self.eps.values(), ep)
        } else {
            check_port_conflicts(std::iter::empty::<&EndpointSpec>(), ep)
        }
    }
}

/// netd's nftables tables `inet <table>` and `bridge <table>` in one network namespace.
///
/// Create it on a thread whose network namespace is the one to program (the sockets bind
/// to it); afterwards it may be used from any thread.
pub struct Firewall {
    table: String,
    portid: u32,
    netns: OwnedFd,
    inner: Mutex<Inner>,
}

fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Firewall {
    /// Opens the netlink sockets in the current thread's network namespace. Does not touch
    /// the kernel's tables: call [`Firewall::sync`] first (the other changes sync an empty
    /// state implicitly if that has not happened).
    pub fn new(table: &str) -> Result<Self, FirewallError> {
        if !valid_table_name(table) {
            return Err(FirewallError::InvalidTableName(table.to_string()));
        }
        let ctx = |what: &str| {
            let what = what.to_string();
            move |source| FirewallError::Netlink {
                context: format!("opening {what} for table {table}"),
                source,
            }
        };
        let sock = NlSocket::open().map_err(ctx("the nftables netlink socket"))?;
        let ct = NlSocket::open().map_err(ctx("the conntrack netlink socket"))?;
        let netns: OwnedFd = File::open("/proc/thread-self/ns/net")
            .map_err(ctx("/proc/thread-self/ns/net"))?
            .into();
        Ok(Firewall {
            table: table.to_string(),
            portid: sock.portid(),
            netns,
            inner: Mutex::new(Inner {
                sock,
                ct,
                synced: false,
                nets: Vec::new(),
                eps: BTreeMap::new(),
                ports: PortIndex::default(),
                last: BatchStats::default(),
            }),
        })
    }

    /// Name of the tables (`inet <name>`, `bridge <name>`).
    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn portid(&self) -> u32 {
        self.portid
    }

    pub(crate) fn netns(&self) -> &OwnedFd {
        &self.netns
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the kernel half-changed (batches are
        // atomic), and the in-memory state is only updated after a commit.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds both tables from `nets` and `eps` in ONE atomic batch (our tables are
    /// deleted if present and created again). For startup and drift repair.
    pub fn sync(&self, nets: &[NetworkSpec], eps: &[EndpointSpec]) -> Result<(), FirewallError> {
        let ops = policy::sync_ops(&self.table, nets, eps)?;
        let mut inner = self.lock();
        self.apply(&mut inner, &ops, "rebuilding the netd nftables tables")?;
        inner.synced = true;
        inner.nets = nets.to_vec();
        inner.eps.clear();
        inner.ports = PortIndex::default();
        for ep in eps {
            inner.put_endpoint(ep);
        }
        info!(
            table = %self.table,
            networks = nets.len(),
            endpoints = eps.len(),
            messages = inner.last.messages,
            bytes = inner.last.bytes,
            "firewall synced"
        );
        Ok(())
    }

    fn ensure_synced(&self, inner: &mut Inner) -> Result<(), FirewallError> {
        if !inner.synced {
            let ops = policy::sync_ops(&self.table, &[], &[])?;
            self.apply(inner, &ops, "creating the netd nftables tables")?;
            inner.synced = true;
        }
        Ok(())
    }

    /// Installs a network (chains, rules, bridge bindings) in one atomic batch. Installing
    /// the same spec again is a no-op; a changed spec replaces the old one (endpoints kept).
    pub fn add_network(&self, net: &NetworkSpec) -> Result<(), FirewallError> {
        let mut inner = self.lock();
        self.ensure_synced(&mut inner)?;
        let context = format!("installing firewall rules for network {}", net.name);
        let old = inner.nets.iter().find(|n| n.name == net.name).cloned();
        let ops = match &old {
            Some(old) if old == net => return Ok(()),
            Some(old) => {
                let eps: Vec<EndpointSpec> = inner
                    .eps
                    .values()
                    .filter(|e| e.network == net.name)
                    .cloned()
                    .collect();
                let mut ops = policy::remove_network_batch(&self.table, &inner.nets, old, &eps)?;
                let rest: Vec<NetworkSpec> = inner
                    .nets
                    .iter()
                    .filter(|n| n.name != net.name)
                    .cloned()
                    .collect();
                ops.extend(policy::add_network_batch(&self.table, &rest, net)?);
                for ep in &eps {
                    ops.extend(policy::endpoint_batch(&self.table, net, ep, true)?);
                }
                ops
            }
            None => policy::add_network_batch(&self.table, &inner.nets, net)?,
        };
        self.apply(&mut inner, &ops, &context)?;
        inner.nets.retain(|n| n.name != net.name);
        inner.nets.push(net.clone());
        debug!(network = %net.name, messages = inner.last.messages, "network installed");
        Ok(())
    }

    /// Removes a network, and the elements of endpoints still attached to it, in one atomic
    /// batch. Unknown networks are a no-op.
    pub fn remove_network(&self, name: &str) -> Result<(), FirewallError> {
        let mut inner = self.lock();
        let Some(net) = inner.nets.iter().find(|n| n.name == name).cloned() else {
            debug!(network = %name, "remove_network: not installed");
            return Ok(());
        };
        let eps: Vec<EndpointSpec> = inner
            .eps
            .values()
            .filter(|e| e.network == name)
            .cloned()
            .collect();
        let ops = policy::remove_network_batch(&self.table, &inner.nets, &net, &eps)?;
        self.apply(
            &mut inner,
            &ops,
            &format!("removing firewall rules of network {name}"),
        )?;
        inner.nets.retain(|n| n.name != name);
        for ep in &eps {
            inner.drop_endpoint(&ep.key);
        }
        let targets = udp_targets(&eps);
        self.flush_conntrack(&inner, &targets);
        Ok(())
    }

    /// Adds an endpoint's anti-spoofing and published-port elements: one small batch of
    /// set/map elements whose size depends only on this endpoint. Refuses ports already
    /// published (naming the holder). Re-adding the same spec is a no-op; a changed spec
    /// under the same key replaces the old one atomically.
    pub fn add_endpoint(&self, ep: &EndpointSpec) -> Result<(), FirewallError> {
        let mut inner = self.lock();
        self.ensure_synced(&mut inner)?;
        let net = inner
            .nets
            .iter()
            .find(|n| n.name == ep.network)
            .cloned()
            .ok_or_else(|| FirewallError::UnknownNetwork(ep.network.clone()))?;
        let old = inner.eps.get(&ep.key).cloned();
        if old.as_ref() == Some(ep) {
            return Ok(());
        }
        inner.port_conflicts(ep)?;
        let mut ops = Vec::new();
        if let Some(old) = &old {
            let old_net = inner
                .nets
                .iter()
                .find(|n| n.name == old.network)
                .cloned()
                .ok_or_else(|| FirewallError::UnknownNetwork(old.network.clone()))?;
            ops.extend(policy::endpoint_batch(&self.table, &old_net, old, false)?);
        }
        ops.extend(policy::endpoint_batch(&self.table, &net, ep, true)?);
        let context = format!(
            "adding firewall elements of endpoint {} on network {}",
            ep.key, ep.network
        );
        self.apply(&mut inner, &ops, &context)?;
        inner.put_endpoint(ep);
        debug!(
            endpoint = %ep.key,
            network = %ep.network,
            messages = inner.last.messages,
            bytes = inner.last.bytes,
            "endpoint installed"
        );
        let mut targets = udp_targets(std::slice::from_ref(ep));
        if let Some(old) = &old {
            targets.extend(udp_targets(std::slice::from_ref(old)));
        }
        self.flush_conntrack(&inner, &targets);
        Ok(())
    }

    /// Removes the elements installed for `ep.key` (what was installed, not what `ep` says).
    /// Unknown endpoints are a no-op. Elements already gone (someone flushed our table) are
    /// tolerated.
    pub fn remove_endpoint(&self, ep: &EndpointSpec) -> Result<(), FirewallError> {
        let mut inner = self.lock();
        let Some(old) = inner.eps.get(&ep.key).cloned() else {
            debug!(endpoint = %ep.key, "remove_endpoint: not installed");
            return Ok(());
        };
        let Some(net) = inner.nets.iter().find(|n| n.name == old.network).cloned() else {
            inner.drop_endpoint(&ep.key);
            return Ok(());
        };
        let ops = policy::endpoint_batch(&self.table, &net, &old, false)?;
        let context = format!(
            "removing firewall elements of endpoint {} on network {}",
            old.key, old.network
        );
        match self.apply(&mut inner, &ops, &context) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                // Drift: some elements vanished. Delete the rest one by one.
                warn!(endpoint = %old.key, "elements already missing; removing the rest individually");
                for op in explode(&ops) {
                    match self.apply(&mut inner, std::slice::from_ref(&op), &context) {
                        Ok(()) => {}
                        Err(e) if e.errno() == Some(libc::ENOENT) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
        inner.drop_endpoint(&old.key);
        self.flush_conntrack(&inner, &udp_targets(std::slice::from_ref(&old)));
        Ok(())
    }

    /// Whether both of our tables exist in the kernel.
    pub fn table_exists(&self) -> Result<bool, FirewallError> {
        let inner = self.lock();
        for family in [nftnl::ProtoFamily::Inet, nftnl::ProtoFamily::Bridge] {
            let exists = inner
                .sock
                .table_exists(family, &self.table)
                .map_err(|source| FirewallError::Netlink {
                    context: format!("looking up table {}", self.table),
                    source,
                })?;
            if !exists {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Size of the last batch this firewall sent.
    pub fn last_batch(&self) -> BatchStats {
        self.lock().last
    }

    /// Networks currently installed (what the firewall believes the kernel holds).
    pub fn installed_networks(&self) -> Vec<NetworkSpec> {
        self.lock().nets.clone()
    }

    /// Refuses `candidate`'s published ports if an installed endpoint (other than one with
    /// the same key) holds any of them; nothing is changed.
    pub fn check_port_conflicts(&self, candidate: &EndpointSpec) -> Result<(), FirewallError> {
        self.lock().port_conflicts(candidate)
    }

    fn flush_conntrack(&self, inner: &Inner, targets: &[UdpTarget]) {
        if targets.is_empty() {
            return;
        }
        match conntrack::flush_udp(&inner.ct, targets) {
            Ok(n) => debug!(
                deleted = n,
                "flushed UDP conntrack entries of published ports"
            ),
            // Not fatal: the rules are in place; only long-lived UDP flows keep a stale path.
            Err(e) => warn!(cause = %e, "flushing UDP conntrack entries failed"),
        }
    }

    fn apply(&self, inner: &mut Inner, ops: &[Op], context: &str) -> Result<(), FirewallError> {
        if ops.is_empty() {
            return Ok(());
        }
        let rendered: Rendered = render::render(ops);
        inner.last = BatchStats {
            messages: rendered.messages(),
            bytes: render::batch_bytes(&rendered),
        };
        let errors = inner
            .sock
            .send_batch(&rendered)
            .map_err(|source| FirewallError::Netlink {
                context: format!("{context}: sending the nftables batch"),
                source,
            })?;
        if let Some(first) = errors.first() {
            let step = rendered
                .op_for_seq(first.seq)
                .and_then(|i| ops.get(i))
                .map(|op| op.describe())
                .unwrap_or_else(|| "the batch".to_string());
            return Err(FirewallError::Rejected {
                context: context.to_string(),
                step,
                source: std::io::Error::from_raw_os_error(first.errno),
            });
        }
        Ok(())
    }
}

/// One op per element, for tolerant deletion.
fn explode(ops: &[Op]) -> Vec<Op> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::DelElements(t, s, elems) => out.extend(
                elems
                    .iter()
                    .map(|e| Op::DelElements(t.clone(), s, vec![e.clone()])),
            ),
            other => out.push(other.clone()),
        }
    }
    out
}

fn udp_targets(eps: &[EndpointSpec]) -> Vec<UdpTarget> {
    eps.iter()
        .flat_map(|e| e.ports.iter())
        .filter(|m| m.protocol == Protocol::Udp)
        .flat_map(|m| {
            m.host_ports().map(move |port| UdpTarget {
                addr: m.host_ip,
                port,
            })
        })
        .collect()
}

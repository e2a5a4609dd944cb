//! Persistent state in one embedded redb database: networks, endpoints, address leases and the
//! round-robin cursor of each pool. Every change is one ACID transaction committed with
//! `Durability::Immediate` (fsync) before the API call returns, so a crash loses nothing that was
//! acknowledged and never leaves half an attach on disk. Address allocation runs *inside* the
//! write transaction, which redb serializes: two concurrent attaches can never get one address.
//!
//! Writes go to one committer thread. Those that arrive while a commit is under way go together
//! in the next transaction (group commit): eight attaches at once cost one or two fsyncs, not
//! eight. A caller learns its write's outcome only once it is durable (awaiting it holds no
//! thread), and a write that fails leaves the others of its group unaffected (the group runs
//! again without it).

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::batch::Batcher;
use ipnet::IpNet;
use netd_api::{Endpoint, Network};
use netd_ipam::{IpamError, Pool};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
const LEASES: TableDefinition<&str, &str> = TableDefinition::new("leases");
const CURSORS: TableDefinition<&str, &str> = TableDefinition::new("cursors");

/// Schema version written by this build; a newer one on disk is refused, never overwritten.
pub const SCHEMA_VERSION: u32 = 1;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or written.
    #[error("{op} {}: {source}", path.display())]
    Db {
        /// What was being done.
        op: &'static str,
        /// Database file.
        path: PathBuf,
        /// Cause (shared: one failed group commit fails every write in it; redb's error is
        /// large and this path is cold).
        source: Arc<redb::Error>,
    },
    /// The state directory could not be prepared.
    #[error("preparing state directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A queued write never ran to its end: the store closed, or a write of its group
    /// panicked.
    #[error("{op}: the write was lost (the store closed, or a write committed with it panicked)")]
    Lost {
        /// What was being done.
        op: &'static str,
    },
    /// The database was written by a newer netd.
    #[error("state in {} has schema version {found}, newer than this netd understands ({SCHEMA_VERSION}); refusing to touch it", path.display())]
    NewerSchema {
        /// Database file.
        path: PathBuf,
        /// Version found.
        found: String,
    },
    /// A stored record could not be decoded.
    #[error("decoding stored {what} {key:?}: {message}")]
    Corrupt {
        /// Record kind.
        what: &'static str,
        /// Its key.
        key: String,
        /// Cause.
        message: String,
    },
    /// The network already exists.
    #[error("network {0} already exists")]
    NetworkExists(String),
    /// The endpoint already exists.
    #[error("container {container_id} already has interface {ifname} on network {network}")]
    EndpointExists {
        /// Network.
        network: String,
        /// Container id.
        container_id: String,
        /// Interface name.
        ifname: String,
    },
    /// Address allocation failed.
    #[error("allocating an address on network {network}: {source}")]
    Ipam {
        /// Network.
        network: String,
        /// Cause.
        source: Box<IpamError>,
    },
    /// A static address names no subnet of the network.
    #[error("address {ip} is not in any subnet of network {network}")]
    NoSubnetFor {
        /// Network.
        network: String,
        /// Requested address.
        ip: IpAddr,
    },
}

/// An endpoint as stored: the API view plus the identity of its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// st_dev of the namespace file at attach time.
    pub netns_dev: u64,
    /// st_ino of the namespace file at attach time.
    pub netns_ino: u64,
}

impl EndpointRecord {
    /// Store key of this endpoint.
    pub fn key(&self) -> String {
        endpoint_key(
            &self.endpoint.network,
            &self.endpoint.container_id,
            &self.endpoint.ifname,
        )
    }
}

/// What a transaction body can fail with: a database error (wrapped with context by the
/// caller) or a store-level refusal passed through as is.
enum Fail {
    Db(redb::Error),
    Store(StoreError),
}

macro_rules! fail_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Fail::Db(e.into())
            }
        }
    )*};
}
fail_from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError
);

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// Key of an endpoint: names never contain '/', so it is unambiguous and prefix-scannable.
pub fn endpoint_key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}/{container_id}/{ifname}")
}

/// The key range holding every entry of `network` (`'0'` is the byte after `'/'`).
fn prefix_range(network: &str) -> (String, String) {
    (format!("{network}/"), format!("{network}0"))
}

/// redb's page cache: enough for the B-tree's upper levels. 1 MiB -> 256 KiB: heap with 1,000
/// endpoints 3.2 -> 2.8 MiB, ADD p50 unchanged (A/B, tests/bench/ab.py: 1.97 vs 1.93 ms).
const CACHE_BYTES: usize = 1 << 18;

/// Key of the lease of `ip` in `network`.
fn lease_key(network: &str, ip: IpAddr) -> String {
    format!("{network}/{ip}")
}

/// How many round-robin candidates an allocation probes one by one before it reads the whole
/// network's leases instead.
const PROBES: usize = 64;

/// The first of `pool`'s round-robin candidates after `last` that `network` has not leased,
/// looked up one key at a time: the next address is almost always free, so this costs a few
/// point lookups whatever the population. `None` after [`PROBES`] taken ones in a row (a
/// crowded stretch: the caller reads the leases once instead).
fn probe_free(
    leases: &impl ReadableTable<&'static str, &'static str>,
    network: &str,
    pool: &Pool,
    last: Option<IpAddr>,
) -> Result<Option<IpAddr>, redb::StorageError> {
    for ip in pool.candidates(last).take(PROBES) {
        if leases.get(lease_key(network, ip).as_str())?.is_none() {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// Every address `network` has leased.
fn used_addresses(
    leases: &impl ReadableTable<&'static str, &'static str>,
    network: &str,
) -> Result<BTreeSet<IpAddr>, redb::StorageError> {
    let (lo, hi) = prefix_range(network);
    let mut used = BTreeSet::new();
    for row in leases.range(lo.as_str()..hi.as_str())? {
        used.extend(lease_ip(row?.0.value()));
    }
    Ok(used)
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "v4"
    } else {
        "v6"
    }
}

/// Handle to the store; cheap to clone. Reads block briefly (no fsync); writes return a
/// [`Pending`] to await (or `wait()` for, outside async code).
#[derive(Clone)]
pub struct Store {
    core: Arc<Core>,
    /// The committer: one thread, each batch of queued writes one transaction. The last
    /// handle's drop lets it finish and joins it.
    writer: Arc<Batcher<Job>>,
}

/// What the handles and the committer share.
struct Core {
    db: Database,
    path: PathBuf,
    /// Transactions committed (each one fsync), for tests and diagnostics.
    commits: std::sync::atomic::AtomicU64,
}

/// A write handed to the committer; resolves once it is durable (or refused).
#[must_use = "a write's outcome says whether it was stored"]
pub struct Pending<T> {
    op: &'static str,
    rx: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T> Pending<T> {
    /// A write refused before it was queued.
    fn refused(op: &'static str, e: StoreError) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(e));
        Pending { op, rx }
    }

    /// Blocks until the write is durable or refused. Not for async code (it would block a
    /// runtime thread): await the `Pending` there.
    pub fn wait(self) -> Result<T, StoreError> {
        let op = self.op;
        self.rx
            .blocking_recv()
            .unwrap_or(Err(StoreError::Lost { op }))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let op = self.op;
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Lost { op })))
    }
}

/// A write as the committing thread runs it, its result kept aside.
type WriteFn = dyn FnMut(&redb::WriteTransaction) -> Result<(), Fail> + Send;

/// One caller's write, as the committing thread runs it.
struct Job {
    op: &'static str,
    /// Applies the write to the group's transaction (again, if the group starts over).
    run: Box<WriteFn>,
    /// Hands the outcome to the waiting caller, once: after the commit, or the job's own error.
    settle: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.core.path)
            .finish()
    }
}

/// Everything the daemon loads at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Networks.
    pub networks: Vec<Network>,
    /// Endpoints.
    pub endpoints: Vec<EndpointRecord>,
}

impl Core {
    fn db_err(&self, op: &'static str, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            op,
            path: self.path.clone(),
            source: Arc::new(e.into()),
        }
    }

    fn fail(&self, op: &'static str, f: Fail) -> StoreError {
        match f {
            Fail::Db(e) => self.db_err(op, e),
            Fail::Store(e) => e,
        }
    }

    /// Commits `jobs` in one transaction and settles each. A job that fails is settled with
    /// its error and the transaction begins again without it (its partial changes, and the
    /// others', are thrown away with the aborted one). Settled jobs leave `jobs`.
    fn commit_group(&self, jobs: &mut Vec<Job>) {
        while !jobs.is_empty() {
            let tx = match self.db.begin_write() {
                Ok(tx) => tx,
                Err(e) => {
                    let e = Arc::new(redb::Error::from(e));
                    self.settle_all(jobs, &e);
                    return;
                }
            };
            let mut failed = None;
            for (i, j) in jobs.iter_mut().enumerate() {
                if let Err(e) = (j.run)(&tx) {
                    failed = Some((i, e));
                    break;
                }
            }
            match failed {
                Some((i, e)) => {
                    let _ = tx.abort();
                    let j = jobs.remove(i);
                    (j.settle)(Err(self.fail(j.op, e)));
                }
                None => match tx.commit() {
                    Ok(()) => {
                        self.commits
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        jobs.drain(..).for_each(|j| (j.settle)(Ok(())));
                    }
                    Err(e) => self.settle_all(jobs, &Arc::new(e.into())),
                },
            }
        }
    }

    /// Fails every job with the same database error.
    fn settle_all(&self, jobs: &mut Vec<Job>, e: &Arc<redb::Error>) {
        for j in jobs.drain(..) {
            (j.settle)(Err(StoreError::Db {
                op: j.op,
                path: self.path.clone(),
                source: e.clone(),
            }));
        }
    }
}

impl Store {
    /// Opens (creating if needed) `dir/netd.redb` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("netd.redb");
        // redb caches every page it reads or writes up to its cache size (default 1 GiB), so
        // the daemon's resident memory grew with the database; the working set of one attach
        // is a few B-tree paths, and the kernel's page cache keeps the file anyway.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Db {
                op: "opening",
                path: path.clone(),
                source: Arc::new(e.into()),
            })?;
        let core = Arc::new(Core {
            db,
            path,
            commits: Default::default(),
        });
        let writer = Batcher::spawn("netd-store", {
            let core = core.clone();
            move |mut jobs| core.commit_group(&mut jobs)
        })
        .map_err(|e| core.db_err("starting the committer thread", redb::StorageError::Io(e)))?;
        let store = Store {
            core,
            writer: Arc::new(writer),
        };
        let path = store.core.path.clone();
        store
            .write("initialising", move |tx| {
                let mut meta = tx.open_table(META)?;
                let found = meta.get("schema_version")?.map(|v| v.value().to_string());
                match found {
                    Some(v) if v.parse::<u32>().map_or(true, |n| n > SCHEMA_VERSION) => {
                        return Err(Fail::Store(StoreError::NewerSchema {
                            path: path.clone(),
                            found: v,
                        }));
                    }
                    Some(_) => {}
                    None => {
                        meta.insert("schema_version", SCHEMA_VERSION.to_string().as_str())?;
                    }
                }
                drop(meta);
                // Create every table so readers never meet a missing one.
                tx.open_table(NETWORKS)?;
                tx.open_table(ENDPOINTS)?;
                tx.open_table(LEASES)?;
                tx.open_table(CURSORS)?;
                Ok(())
            })
            .wait()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// Queues `f` for the committer, which runs it in a write transaction; the result comes
    /// once that is durable, and its changes are kept only if it succeeds. Writes queued
    /// together share a transaction (group commit), so `f` may run more than once: again,
    /// without the others' changes, if another write of its group failed.
    fn write<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl Fn(&redb::WriteTransaction) -> Result<T, Fail> + Send + 'static,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        let value = Arc::new(Mutex::new(None));
        let job = Job {
            op,
            run: Box::new({
                let value = value.clone();
                move |tx| {
                    let v = f(tx)?;
                    *lock(&value) = Some(v);
                    Ok(())
                }
            }),
            settle: Box::new(move |r| {
                let r = r.map(|()| {
                    lock(&value)
                        .take()
                        .expect("a committed write has its value")
                });
                // The caller may have stopped waiting; the write stands either way.
                let _ = tx.send(r);
            }),
        };
        self.writer.submit(job);
        Pending { op, rx }
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let core = &self.core;
        let tx = core.db.begin_read().map_err(|e| core.db_err(op, e))?;
        f(&tx).map_err(|e| core.fail(op, e))
    }

    /// Loads every network and endpoint.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        self.read("reading", |tx| {
            let mut snap = Snapshot::default();
            for row in tx.open_table(NETWORKS)?.iter()? {
                let (k, v) = row?;
                snap.networks.push(decode("network", k.value(), v.value())?);
            }
            for row in tx.open_table(ENDPOINTS)?.iter()? {
                let (k, v) = row?;
                snap.endpoints
                    .push(decode("endpoint", k.value(), v.value())?);
            }
            Ok(snap)
        })
    }

    /// Every lease of `network` as (address, endpoint key).
    pub fn leases(&self, network: &str) -> Result<Vec<(IpAddr, String)>, StoreError> {
        let (lo, hi) = prefix_range(network);
        self.read("reading leases", |tx| {
            let mut out = Vec::new();
            for row in tx.open_table(LEASES)?.range(lo.as_str()..hi.as_str())? {
                let (k, v) = row?;
                if let Some(ip) = lease_ip(k.value()) {
                    out.push((ip, v.value().to_string()));
                }
            }
            Ok(out)
        })
    }

    /// Adds a network; fails if the name is taken.
    pub fn insert_network(&self, net: &Network) -> Pending<()> {
        let bytes = serde_json::to_vec(net).expect("network serializes");
        let name = net.name.clone();
        self.write("storing network", move |tx| {
            let mut t = tx.open_table(NETWORKS)?;
            if t.get(name.as_str())?.is_some() {
                return Err(Fail::Store(StoreError::NetworkExists(name.clone())));
            }
            t.insert(name.as_str(), bytes.as_slice())?;
            Ok(())
        })
    }

    /// Removes a network with its endpoints, leases and cursors.
    pub fn remove_network(&self, name: &str) -> Pending<()> {
        let (lo, hi) = prefix_range(name);
        let name = name.to_string();
        self.write("removing network", move |tx| {
            tx.open_table(NETWORKS)?.remove(name.as_str())?;
            tx.open_table(ENDPOINTS)?
                .retain_in(lo.as_str()..hi.as_str(), |_, _| false)?;
            tx.open_table(LEASES)?
                .retain_in(lo.as_str()..hi.as_str(), |_, _| false)?;
            tx.open_table(CURSORS)?
                .retain_in(lo.as_str()..hi.as_str(), |_, _| false)?;
            Ok(())
        })
    }

    /// In one transaction: refuses a duplicate endpoint, takes one address per pool (the static
    /// one requested for that family, else the next round-robin one), records the leases and
    /// the endpoint: `template` (its network, container and interface name the key) with the
    /// addresses and their pools' gateways filled in.
    pub fn attach(
        &self,
        template: EndpointRecord,
        pools: &[Pool],
        statics: &[IpAddr],
    ) -> Pending<EndpointRecord> {
        let key = template.key();
        let ep = &template.endpoint;
        for ip in statics {
            if !pools.iter().any(|p| p.subnet().contains(ip)) {
                let e = StoreError::NoSubnetFor {
                    network: ep.network.clone(),
                    ip: *ip,
                };
                return Pending::refused("recording endpoint", e);
            }
        }
        let (pools, statics) = (pools.to_vec(), statics.to_vec());
        self.write("recording endpoint", move |tx| {
            let ep = &template.endpoint;
            let network = ep.network.as_str();
            let mut eps = tx.open_table(ENDPOINTS)?;
            if eps.get(key.as_str())?.is_some() {
                return Err(Fail::Store(StoreError::EndpointExists {
                    network: ep.network.clone(),
                    container_id: ep.container_id.clone(),
                    ifname: ep.ifname.clone(),
                }));
            }
            let mut leases = tx.open_table(LEASES)?;
            let mut cursors = tx.open_table(CURSORS)?;
            let mut chosen = Vec::new();
            for pool in &pools {
                let ipam_err = |source| {
                    Fail::Store(StoreError::Ipam {
                        network: network.to_string(),
                        source: Box::new(source),
                    })
                };
                let want = statics.iter().find(|ip| pool.subnet().contains(*ip));
                let ip = match want {
                    Some(ip) => {
                        let taken = leases.get(lease_key(network, *ip).as_str())?.is_some();
                        pool.check_static(*ip, taken).map_err(ipam_err)?;
                        *ip
                    }
                    None => {
                        let ckey = format!("{network}/{}", family(&pool.subnet().addr()));
                        let last = cursors
                            .get(ckey.as_str())?
                            .and_then(|v| v.value().parse::<IpAddr>().ok());
                        let ip = match probe_free(&leases, network, pool, last)? {
                            Some(ip) => ip,
                            None => {
                                let used = used_addresses(&leases, network)?;
                                pool.allocate(&used, last).map_err(ipam_err)?
                            }
                        };
                        cursors.insert(ckey.as_str(), ip.to_string().as_str())?;
                        ip
                    }
                };
                leases.insert(lease_key(network, ip).as_str(), key.as_str())?;
                chosen.push((ip, pool));
            }
            let mut rec = template.clone();
            rec.endpoint.ips = chosen
                .iter()
                .map(|(ip, p)| IpNet::new(*ip, p.subnet().prefix_len()).expect("valid prefix"))
                .collect();
            rec.endpoint.gateways = chosen.iter().filter_map(|(_, p)| p.gateway()).collect();
            let bytes = serde_json::to_vec(&rec).expect("endpoint serializes");
            eps.insert(key.as_str(), bytes.as_slice())?;
            Ok(rec)
        })
    }

    /// Removes an endpoint and its leases; returns it, or `None` if it was unknown.
    pub fn detach(&self, key: &str) -> Pending<Option<EndpointRecord>> {
        let key = key.to_string();
        self.write("removing endpoint", move |tx| {
            let key = key.as_str();
            let mut eps = tx.open_table(ENDPOINTS)?;
            let rec: EndpointRecord = match eps.remove(key)? {
                Some(v) => match decode("endpoint", key, v.value()) {
                    Ok(r) => r,
                    Err(e) => return Err(Fail::Store(e)),
                },
                None => return Ok(None),
            };
            let mut leases = tx.open_table(LEASES)?;
            for ip in &rec.endpoint.ips {
                let lkey = lease_key(&rec.endpoint.network, ip.addr());
                // Only drop a lease that really is this endpoint's.
                let owned = leases.get(lkey.as_str())?.map(|v| v.value() == key);
                if owned == Some(true) {
                    leases.remove(lkey.as_str())?;
                }
            }
            Ok(Some(rec))
        })
    }

    /// Looks one endpoint up.
    pub fn endpoint(&self, key: &str) -> Result<Option<EndpointRecord>, StoreError> {
        self.read("reading endpoint", |tx| {
            match tx.open_table(ENDPOINTS)?.get(key)? {
                Some(v) => Ok(Some(decode("endpoint", key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Endpoints of one network.
    pub fn endpoints(&self, network: &str) -> Result<Vec<EndpointRecord>, StoreError> {
        let (lo, hi) = prefix_range(network);
        self.read("reading endpoints", |tx| {
            let mut out = Vec::new();
            for row in tx.open_table(ENDPOINTS)?.range(lo.as_str()..hi.as_str())? {
                let (k, v) = row?;
                out.push(decode("endpoint", k.value(), v.value())?);
            }
            Ok(out)
        })
    }
}

fn lease_ip(key: &str) -> Option<IpAddr> {
    key.rsplit_once('/').and_then(|(_, ip)| ip.parse().ok())
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what,
        key: key.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn net(name: &str) -> Network {
        Network {
            name: name.into(),
            id: "x".into(),
            bridge: format!("nd-{name}"),
            subnets: vec![],
            aux_addresses: vec![],
            internal: false,
            mtu: None,
            masquerade: true,
            icc: true,
            snat: None,
            dns_domain: None,
            dns_upstreams: vec![],
            labels: BTreeMap::new(),
            created: 0,
        }
    }

    /// The record an attach of `cid` on `network` starts from.
    fn tpl(network: &str, cid: &str) -> EndpointRecord {
        EndpointRecord {
            endpoint: Endpoint {
                network: network.into(),
                container_id: cid.into(),
                ifname: "eth0".into(),
                name: None,
                aliases: vec![],
                netns: "/x".into(),
                host_veth: "v".into(),
                mac: String::new(),
                ips: vec![],
                gateways: vec![],
                port_mappings: vec![],
                labels: BTreeMap::new(),
                created: 0,
            },
            netns_dev: 0,
            netns_ino: 0,
        }
    }

    #[test]
    fn allocation_skips_a_crowded_stretch_longer_than_the_probes() {
        // Static leases on .2-.100 are more than PROBES candidates in a row: the allocation
        // must fall back to reading the leases and still hand out the first free address, and
        // a static request for a taken address is refused.
        let dir = tempfile::tempdir().unwrap();
        let gw = Some("10.2.0.1".parse().unwrap());
        let pool = Pool::new("10.2.0.0/24".parse().unwrap(), None, gw, []).unwrap();
        let pools = std::slice::from_ref(&pool);
        let s = Store::open(dir.path()).unwrap();
        s.insert_network(&net("a")).wait().unwrap();
        for i in 2..=100u8 {
            let ip: IpAddr = format!("10.2.0.{i}").parse().unwrap();
            let cid = format!("s{i}");
            s.attach(tpl("a", &cid), pools, &[ip]).wait().unwrap();
        }
        const { assert!(100 - 2 + 1 > PROBES) };
        let got = |cid: &str| {
            s.attach(tpl("a", cid), pools, &[])
                .wait()
                .unwrap()
                .endpoint
                .ips[0]
                .addr()
                .to_string()
        };
        assert_eq!(got("d1"), "10.2.0.101");
        assert_eq!(got("d2"), "10.2.0.102");
        let taken: IpAddr = "10.2.0.50".parse().unwrap();
        let err = s.attach(tpl("a", "x"), pools, &[taken]).wait().unwrap_err();
        assert!(err.to_string().contains("10.2.0.50"), "{err}");
        assert_eq!(s.leases("a").unwrap().len(), 101);
    }

    #[test]
    fn writes_that_arrive_together_commit_together_and_one_failing_spares_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let gw = Some("10.3.0.1".parse().unwrap());
        let pool = Pool::new("10.3.0.0/24".parse().unwrap(), None, gw, []).unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.insert_network(&net("a")).wait().unwrap();
        let wanted: IpAddr = "10.3.0.50".parse().unwrap();
        // Hold the committer as if a commit were under way; six attaches queue up behind it,
        // the first two asking for the same static address.
        s.writer.hold(true);
        let writers: Vec<_> = (0..6)
            .map(|i| {
                let (s, pools) = (s.clone(), vec![pool.clone()]);
                std::thread::spawn(move || {
                    let statics = if i < 2 { vec![wanted] } else { vec![] };
                    let cid = format!("c{i}");
                    s.attach(tpl("a", &cid), &pools, &statics).wait()
                })
            })
            .collect();
        while s.writer.queued() < 6 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let before = s.core.commits.load(std::sync::atomic::Ordering::Relaxed);
        s.writer.hold(false);
        let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let after = s.core.commits.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(after - before, 1, "the five that succeed share one commit");
        let (won, lost): (Vec<_>, Vec<_>) = results[..2].iter().partition(|r| r.is_ok());
        assert_eq!((won.len(), lost.len()), (1, 1), "{results:?}");
        assert!(
            matches!(lost[0], Err(StoreError::Ipam { .. })),
            "{:?}",
            lost[0]
        );
        assert!(results[2..].iter().all(|r| r.is_ok()), "{results:?}");
        drop(s);
        // Durable, and exactly what the callers were told.
        let s = Store::open(dir.path()).unwrap();
        let snap = s.load().unwrap();
        let told: BTreeSet<String> = results
            .iter()
            .flatten()
            .map(|r| format!("{} {}", r.key(), r.endpoint.ips[0]))
            .collect();
        let stored: BTreeSet<String> = snap
            .endpoints
            .iter()
            .map(|r| format!("{} {}", r.key(), r.endpoint.ips[0]))
            .collect();
        assert_eq!(told, stored);
        assert_eq!(told.len(), 5);
        assert_eq!(
            s.leases("a").unwrap().len(),
            5,
            "no lease of the failed write"
        );
    }

    #[test]
    fn attach_detach_round_robin_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(
            "10.1.0.0/29".parse().unwrap(),
            None,
            Some("10.1.0.1".parse().unwrap()),
            [],
        )
        .unwrap();
        let pools = std::slice::from_ref(&pool);
        {
            let s = Store::open(dir.path()).unwrap();
            s.insert_network(&net("a")).wait().unwrap();
            assert!(matches!(
                s.insert_network(&net("a")).wait(),
                Err(StoreError::NetworkExists(_))
            ));
            let e1 = s.attach(tpl("a", "c1"), pools, &[]).wait().unwrap();
            assert_eq!(e1.endpoint.ips[0].addr().to_string(), "10.1.0.2");
            assert!(matches!(
                s.attach(tpl("a", "c1"), pools, &[]).wait(),
                Err(StoreError::EndpointExists { .. })
            ));
            s.detach(&e1.key()).wait().unwrap().unwrap();
            assert!(s.detach(&e1.key()).wait().unwrap().is_none());
        }
        // Reopen: the cursor survived, so the freed .2 is not handed out again at once.
        let s = Store::open(dir.path()).unwrap();
        let e2 = s.attach(tpl("a", "c2"), pools, &[]).wait().unwrap();
        assert_eq!(e2.endpoint.ips[0].addr().to_string(), "10.1.0.3");
        // Fill the /29: .2 .4 .5 .6 remain, then exhaustion.
        for i in 0..4 {
            let cid = format!("f{i}");
            s.attach(tpl("a", &cid), pools, &[]).wait().unwrap();
        }
        let err = s.attach(tpl("a", "z"), pools, &[]).wait().unwrap_err();
        assert!(err.to_string().contains("no free address"), "{err}");
        assert_eq!(s.leases("a").unwrap().len(), 5);
        s.remove_network("a").wait().unwrap();
        assert!(s.leases("a").unwrap().is_empty());
        assert!(s.load().unwrap().endpoints.is_empty());
    }

    #[test]
    fn static_address_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let pool = Pool::new(
            "10.2.0.0/24".parse().unwrap(),
            None,
            Some("10.2.0.1".parse().unwrap()),
            [],
        )
        .unwrap();
        let pools = std::slice::from_ref(&pool);
        let ip: IpAddr = "10.2.0.50".parse().unwrap();
        s.attach(tpl("b", "c1"), pools, &[ip]).wait().unwrap();
        let err = s.attach(tpl("b", "c2"), pools, &[ip]).wait().unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        let err = s
            .attach(tpl("b", "c3"), &[pool], &["10.3.0.5".parse().unwrap()])
            .wait()
            .unwrap_err();
        assert!(matches!(err, StoreError::NoSubnetFor { .. }));
        assert_eq!(s.leases("b").unwrap().len(), 1);
    }

    #[test]
    fn a_write_that_panics_is_lost_and_later_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let err = s
            .write("exploding", |_| -> Result<(), Fail> {
                panic!("write body panicked")
            })
            .wait()
            .unwrap_err();
        assert!(matches!(err, StoreError::Lost { op: "exploding" }), "{err}");
        // The committer survived, and awaiting a write works from async code too.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(s.insert_network(&net("a"))).unwrap();
        assert_eq!(s.load().unwrap().networks.len(), 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.write("test", |tx| {
                tx.open_table(META)?.insert("schema_version", "99")?;
                Ok(())
            })
            .wait()
            .unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}

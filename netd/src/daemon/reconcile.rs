//! Start-up reconciliation and periodic garbage collection: kernel state outlives the daemon,
//! so on start netd re-creates what is missing from its store and forgets what is dead.

use std::collections::HashSet;
use std::path::Path;

use tracing::{info, warn};

use super::{blocking, Daemon, DaemonError};
use crate::netns::{still_exists, NetnsId};
use crate::store::EndpointRecord;

/// Host veth names netd derives all start with this.
const VETH_PREFIX: &str = "ndv";

fn netns_alive(rec: &EndpointRecord) -> bool {
    still_exists(
        Path::new(&rec.endpoint.netns),
        NetnsId {
            dev: rec.netns_dev,
            ino: rec.netns_ino,
        },
    )
}

impl Daemon {
    /// Deletes retired veths, loads the store, brings every network up (recreating missing
    /// bridges), forgets endpoints whose namespace or veth is gone, and removes orphan veths.
    pub(crate) async fn reconcile(&self) -> Result<(), DaemonError> {
        // Retired veths are condemned, whatever their records say (a crash between retiring a
        // veth and forgetting its endpoint): gone first, so nothing below puts them back on a
        // bridge, and their endpoints fail the check below and are released.
        self.flush_retired().await;
        let store = self.store().clone();
        let snap = blocking(move || store.load()).await??;
        for net in snap.networks {
            if let Err(e) = self.bring_up_network(&net, false).await {
                // Keep serving the other networks; this one reports errors on use.
                warn!(network = %net.name, cause = %e, "bringing network up at start failed");
            }
            self.insert_state(net)?;
        }
        for st in self.all_networks() {
            if let Ok(Some(bridge)) = self.host().link_by_name(&st.net.bridge).await {
                if let Err(e) = self.reattach_ports(&st, bridge.index).await {
                    warn!(network = %st.net.name, cause = %e, "re-attaching ports failed");
                }
            }
        }
        let mut live = HashSet::new();
        for rec in snap.endpoints {
            let Ok(st) = self.net_state(&rec.endpoint.network) else {
                continue;
            };
            // A crash between two steps of an attach leaves a half-built endpoint: keep only
            // those the kernel fully agrees with; the runtime retries the others.
            let verdict = self.verify(&st, &rec).await;
            if verdict.is_ok() {
                if let Err(e) = self.plug_endpoint_up(&st.net, &rec).await {
                    warn!(endpoint = %rec.key(), cause = %e, "restoring endpoint plugs failed");
                }
                live.insert(rec.endpoint.host_veth.clone());
                continue;
            }
            info!(endpoint = %rec.key(), netns = %rec.endpoint.netns, cause = %verdict.unwrap_err(), "endpoint not intact; releasing");
            if let Err(e) = self.teardown_endpoint(&st, rec).await {
                warn!(cause = %e, "releasing dead endpoint failed");
            }
        }
        self.remove_orphan_veths(&live).await?;
        // What start-up retired goes in one batch.
        self.flush_retired().await;
        Ok(())
    }

    /// Deletes host veths netd created (`ndv*`, derived from endpoint keys) that no live
    /// endpoint owns, wherever they are: on a bridge, or freed from one that was deleted.
    async fn remove_orphan_veths(&self, live: &HashSet<String>) -> Result<(), DaemonError> {
        for link in self.host().links().await? {
            if link.name.starts_with(VETH_PREFIX) && !live.contains(&link.name) {
                info!(veth = %link.name, "removing orphan veth");
                if let Err(e) = self.host().retire_link(&link.name).await {
                    warn!(veth = %link.name, cause = %e, "removing orphan veth failed");
                }
            }
        }
        Ok(())
    }

    /// Releases endpoints whose namespace vanished without a detach (e.g. `ctr` containers that
    /// exit without CNI DEL). Returns how many were released.
    pub async fn collect_dead_endpoints(&self) -> usize {
        let mut released = 0;
        for st in self.all_networks() {
            let store = self.store().clone();
            let n = st.net.name.clone();
            let eps = match blocking(move || store.endpoints(&n)).await {
                Ok(Ok(eps)) => eps,
                _ => continue,
            };
            for rec in eps {
                if netns_alive(&rec) {
                    continue;
                }
                let _gate = st.gate.read().await;
                let key_lock = self.key_lock(&rec.key());
                let _key_guard = key_lock.lock().await;
                info!(endpoint = %rec.key(), "namespace gone; releasing endpoint");
                match self.teardown_endpoint(&st, rec).await {
                    Ok(()) => released += 1,
                    Err(e) => warn!(cause = %e, "releasing dead endpoint failed"),
                }
            }
        }
        released
    }

    /// Runs [`Daemon::collect_dead_endpoints`] every `gc_interval` until the daemon is dropped.
    pub fn spawn_gc(&self) -> tokio::task::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(&self.inner);
        let every = self.inner.cfg.gc_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                Daemon { inner }.collect_dead_endpoints().await;
            }
        })
    }
}

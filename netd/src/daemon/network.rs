//! Network create and remove.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use netd_api::{CreateNetwork, Network, Subnet};
use netd_ipam::{overlaps, pick_subnet, Pool};
use tracing::{info, warn};

use super::{blocking, now, Daemon, DaemonError, NetState};
use crate::names::{self, check_ifname, check_network_name};
use crate::netlink::{set_sysctl, BridgeSpec};

/// Pools of a stored network (its subnets, gateways, ranges and aux addresses).
pub(crate) fn pools_of(net: &Network) -> Result<Vec<Pool>, DaemonError> {
    net.subnets
        .iter()
        .map(|s| {
            let aux = net
                .aux_addresses
                .iter()
                .copied()
                .filter(|a| s.subnet.contains(a));
            Pool::new(s.subnet, s.ip_range, Some(s.gateway), aux).map_err(DaemonError::from)
        })
        .collect()
}

pub(crate) fn bridge_spec(net: &Network) -> BridgeSpec {
    BridgeSpec {
        name: net.bridge.clone(),
        mtu: net.mtu,
        mac: names::derived_mac(&format!("bridge/{}", net.id)),
        addrs: net
            .subnets
            .iter()
            .filter_map(|s| IpNet::new(s.gateway, s.subnet.prefix_len()).ok())
            .collect(),
    }
}

fn new_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let seed = format!(
        "{name}/{}/{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Daemon {
    pub(crate) fn insert_state(&self, net: Network) -> Result<Arc<NetState>, DaemonError> {
        let pools = pools_of(&net)?;
        let st = Arc::new(NetState {
            net,
            pools,
            gate: tokio::sync::RwLock::new(()),
        });
        self.inner
            .networks
            .write()
            .expect("networks lock")
            .insert(st.net.name.clone(), st.clone());
        Ok(st)
    }

    /// Validates a request and turns it into a complete network definition.
    async fn plan_network(&self, req: &CreateNetwork) -> Result<Network, DaemonError> {
        check_network_name(&req.name)?;
        let existing = self.all_networks();
        if existing.iter().any(|s| s.net.name == req.name) {
            return Err(DaemonError::NetworkExists(format!(
                "network {} already exists",
                req.name
            )));
        }
        let bridge = match &req.bridge {
            Some(b) => {
                check_ifname("bridge name", b)?;
                b.clone()
            }
            None => names::bridge_name(&req.name),
        };
        if let Some(other) = existing.iter().find(|s| s.net.bridge == bridge) {
            return Err(DaemonError::NetworkExists(format!(
                "bridge {bridge} is already used by network {}",
                other.net.name
            )));
        }
        if let Some(mtu) = req.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(DaemonError::InvalidRequest(format!(
                    "mtu {mtu} is out of range 68..65535"
                )));
            }
        }
        if let Some(d) = &req.dns_domain {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(DaemonError::InvalidRequest(format!(
                    "dns domain {d:?} is not a valid domain name"
                )));
            }
        }
        if let Some(ip) = req.snat {
            if req.internal {
                return Err(DaemonError::InvalidRequest(
                    "an internal network has no outgoing traffic to SNAT".into(),
                ));
            }
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                return Err(DaemonError::InvalidAddress(format!(
                    "snat address {ip} must be a unicast host address"
                )));
            }
        }
        for u in &req.dns_upstreams {
            let ok = u.parse::<IpAddr>().is_ok() || u.parse::<std::net::SocketAddr>().is_ok();
            if !ok {
                return Err(DaemonError::InvalidRequest(format!(
                    "dns upstream {u:?} is not an address or address:port"
                )));
            }
        }

        // Host routes, minus defaults (they overlap everything) and routes through netd bridges.
        let ours: Vec<String> = existing.iter().map(|s| s.net.bridge.clone()).collect();
        let links = self.host().links().await?;
        let host_routes: Vec<(IpNet, String)> = self
            .host()
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.dst.prefix_len() > 0)
            .filter_map(|r| {
                let dev = r
                    .oif
                    .and_then(|i| links.iter().find(|l| l.index == i))
                    .map(|l| l.name.clone())
                    .unwrap_or_default();
                (!ours.contains(&dev) && dev != bridge).then_some((r.dst, dev))
            })
            .collect();
        let taken_nets: Vec<(IpNet, String)> = existing
            .iter()
            .flat_map(|s| {
                s.net
                    .subnets
                    .iter()
                    .map(|sn| (sn.subnet, format!("network {}", s.net.name)))
            })
            .collect();

        let mut requested = req.subnets.clone();
        if requested.is_empty() {
            let taken: Vec<IpNet> = taken_nets
                .iter()
                .chain(host_routes.iter())
                .map(|(n, _)| *n)
                .collect();
            let subnet = pick_subnet(&self.inner.cfg.subnet_pools, &taken).ok_or_else(|| {
                let pools: Vec<String> = self
                    .inner
                    .cfg
                    .subnet_pools
                    .iter()
                    .map(|p| p.to_string())
                    .collect();
                DaemonError::NoSubnetAvailable(pools.join(", "))
            })?;
            requested.push(netd_api::SubnetRequest {
                subnet,
                gateway: None,
                ip_range: None,
            });
        }
        let v4 = requested
            .iter()
            .filter(|s| s.subnet.addr().is_ipv4())
            .count();
        if v4 > 1 || requested.len() - v4 > 1 {
            return Err(DaemonError::InvalidAddress(
                "at most one IPv4 and one IPv6 subnet per network".into(),
            ));
        }
        for (i, s) in requested.iter().enumerate() {
            if let Some((_, with)) = taken_nets.iter().find(|(n, _)| overlaps(n, &s.subnet)) {
                return Err(DaemonError::SubnetOverlap {
                    subnet: s.subnet,
                    with: with.clone(),
                });
            }
            if let Some((n, dev)) = host_routes.iter().find(|(n, _)| overlaps(n, &s.subnet)) {
                return Err(DaemonError::SubnetOverlap {
                    subnet: s.subnet,
                    with: format!("host route {n} dev {dev}"),
                });
            }
            if requested[..i]
                .iter()
                .any(|o| overlaps(&o.subnet, &s.subnet))
            {
                return Err(DaemonError::SubnetOverlap {
                    subnet: s.subnet,
                    with: "another subnet of the same request".into(),
                });
            }
        }
        for a in &req.aux_addresses {
            if !requested.iter().any(|s| s.subnet.contains(a)) {
                return Err(DaemonError::InvalidAddress(format!(
                    "aux address {a} is not in any subnet of network {}",
                    req.name
                )));
            }
        }
        let mut subnets: Vec<Subnet> = Vec::new();
        for s in &requested {
            let gateway = s.gateway.unwrap_or_else(|| Pool::default_gateway(s.subnet));
            // Validate with the allocator's own rules (prefix, gateway, range, aux).
            let aux = req
                .aux_addresses
                .iter()
                .copied()
                .filter(|a| s.subnet.contains(a));
            Pool::new(s.subnet, s.ip_range, Some(gateway), aux)?;
            subnets.push(Subnet {
                subnet: s.subnet,
                gateway,
                ip_range: s.ip_range,
            });
        }
        subnets.sort_by_key(|s| s.subnet.addr().is_ipv6());
        Ok(Network {
            name: req.name.clone(),
            id: new_id(&req.name),
            bridge,
            subnets,
            aux_addresses: req.aux_addresses.clone(),
            internal: req.internal,
            mtu: req.mtu,
            masquerade: req.masquerade.unwrap_or(true) && !req.internal,
            icc: req.icc.unwrap_or(true),
            snat: req.snat,
            dns_domain: req.dns_domain.clone(),
            dns_upstreams: req.dns_upstreams.clone(),
            labels: req.labels.clone(),
            created: now(),
        })
    }

    /// Creates a network: validate, store, bridge, plugs. Any failure undoes the earlier steps.
    pub async fn create_network(&self, req: CreateNetwork) -> Result<Network, DaemonError> {
        let _ops = self.inner.net_ops.lock().await;
        let net = self.plan_network(&req).await?;
        self.store().insert_network(&net).await?;
        crate::failpoint::hit("create-after-store");
        match self.bring_up_network(&net, true).await {
            Ok(()) => {
                self.insert_state(net.clone())?;
                info!(network = %net.name, bridge = %net.bridge, subnets = ?net.subnets.iter().map(|s| s.subnet).collect::<Vec<_>>(), "network created");
                Ok(net)
            }
            Err(e) => {
                if let Err(se) = self.store().remove_network(&net.name).await {
                    warn!(network = %net.name, cause = %se, "rolling back stored network failed");
                }
                Err(e)
            }
        }
    }

    /// Bridge, forwarding sysctls and plugs for a network. When `fresh`, a failure deletes a
    /// bridge this call created.
    pub(crate) async fn bring_up_network(
        &self,
        net: &Network,
        fresh: bool,
    ) -> Result<(), DaemonError> {
        let (_, created) = self.host().ensure_bridge(&bridge_spec(net)).await?;
        let result = async {
            set_sysctl("net.ipv4.ip_forward", "1")?;
            if net.subnets.iter().any(|s| s.subnet.addr().is_ipv6()) {
                set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
            }
            self.plug_network_up(net).await
        }
        .await;
        if let Err(e) = result {
            if fresh && created {
                if let Err(de) = self.host().delete_link(&net.bridge).await {
                    warn!(bridge = %net.bridge, cause = %de, "rolling back bridge failed");
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes a network; refused while it has endpoints unless `force` detaches them first.
    pub async fn remove_network(&self, name: &str, force: bool) -> Result<(), DaemonError> {
        let _ops = self.inner.net_ops.lock().await;
        let st = self.net_state(name)?;
        let _gate = st.gate.write().await;
        let store = self.store().clone();
        let n = name.to_string();
        let eps = blocking(move || store.endpoints(&n)).await??;
        if !eps.is_empty() && !force {
            return Err(DaemonError::NetworkInUse {
                name: name.to_string(),
                count: eps.len(),
            });
        }
        let mut errors = Vec::new();
        for rec in eps {
            if let Err(e) = self.teardown_endpoint(&st, rec).await {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(DaemonError::Many(errors));
        }
        // The endpoints' veths go in one batch, before the bridge.
        self.flush_retired().await;
        self.plug_network_down(&st.net).await;
        if let Err(e) = self.host().delete_link(&st.net.bridge).await {
            return Err(e.into());
        }
        self.store().remove_network(name).await?;
        self.inner
            .networks
            .write()
            .expect("networks lock")
            .remove(name);
        info!(network = %name, "network removed");
        Ok(())
    }
}

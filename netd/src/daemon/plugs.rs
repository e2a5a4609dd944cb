//! The seams where the firewall and DNS subsystems plug into the network and endpoint flows.
//! Each `*_up` may fail (the caller rolls back); each `*_down` is best effort and only logs.
//! While the daemon is starting, firewall changes are not made one by one: reconcile ends with
//! one `sync` that rebuilds the tables from the store in a single atomic batch.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use netd_api::Network;
use netd_dns::{EndpointDns, NetworkDns};
use netd_firewall::{EndpointSpec, Firewall, NetworkSpec, PortMapping, Protocol};
use tracing::{info, warn};

use super::{blocking, Daemon, DaemonError};
use crate::names;
use crate::store::EndpointRecord;

/// Firewall view of a network.
pub(crate) fn network_spec(net: &Network, dns_port: u16) -> NetworkSpec {
    NetworkSpec {
        name: net.name.clone(),
        bridge: net.bridge.clone(),
        subnets: net.subnets.iter().map(|s| s.subnet).collect(),
        gateways: net.subnets.iter().map(|s| s.gateway).collect(),
        internal: net.internal,
        masquerade: net.masquerade,
        snat: net.snat,
        icc: net.icc,
        dns_port,
    }
}

/// Firewall view of an endpoint.
pub(crate) fn endpoint_spec(rec: &EndpointRecord) -> EndpointSpec {
    let ep = &rec.endpoint;
    EndpointSpec {
        network: ep.network.clone(),
        key: rec.key(),
        host_veth: ep.host_veth.clone(),
        ips: ep.ips.iter().map(|n| n.addr()).collect(),
        mac: names::parse_mac(&ep.mac).unwrap_or_default(),
        ports: fw_ports(&ep.port_mappings),
    }
}

/// Firewall view of published ports.
fn fw_ports(ports: &[netd_api::PortMapping]) -> Vec<PortMapping> {
    ports
        .iter()
        .map(|p| PortMapping {
            host_ip: p.host_ip,
            host_port: p.host_port,
            container_port: p.container_port,
            count: p.count,
            protocol: match p.protocol {
                netd_api::Protocol::Tcp => Protocol::Tcp,
                netd_api::Protocol::Udp => Protocol::Udp,
                netd_api::Protocol::Sctp => Protocol::Sctp,
            },
        })
        .collect()
}

fn network_dns(net: &Network) -> NetworkDns {
    NetworkDns {
        name: net.name.clone(),
        subnets: net.subnets.iter().map(|s| s.subnet).collect(),
        listen: net.subnets.iter().map(|s| s.gateway).collect(),
        domain: net.dns_domain.clone(),
        upstreams: net
            .dns_upstreams
            .iter()
            .filter_map(|u| {
                u.parse::<SocketAddr>()
                    .ok()
                    .or_else(|| u.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
            })
            .collect(),
        internal: net.internal,
    }
}

/// DNS names of an endpoint: container name first (the PTR target), aliases, short id.
pub(crate) fn endpoint_names(rec: &EndpointRecord) -> Vec<String> {
    let ep = &rec.endpoint;
    let mut names: Vec<String> = ep.name.iter().cloned().collect();
    for a in &ep.aliases {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(a)) {
            names.push(a.clone());
        }
    }
    let short: String = ep.container_id.chars().take(12).collect();
    if !names.iter().any(|n| n.eq_ignore_ascii_case(&short)) {
        names.push(short);
    }
    names
}

fn endpoint_dns(rec: &EndpointRecord) -> EndpointDns {
    EndpointDns {
        key: rec.endpoint.container_id.clone(),
        names: endpoint_names(rec),
        addrs: rec.endpoint.ips.iter().map(|n| n.addr()).collect(),
    }
}

fn fw_err(e: netd_firewall::FirewallError) -> DaemonError {
    match e {
        e @ netd_firewall::FirewallError::PortConflict { .. } => {
            DaemonError::PortConflict(e.to_string())
        }
        e @ netd_firewall::FirewallError::PublishOnInternal { .. } => {
            DaemonError::InvalidRequest(e.to_string())
        }
        e => DaemonError::Subsystem(e.to_string()),
    }
}

impl Daemon {
    fn firewall(&self) -> Option<Arc<Firewall>> {
        if self.inner.starting.load(Ordering::Acquire) {
            return None;
        }
        self.inner.firewall.clone()
    }

    fn dns_port(&self) -> u16 {
        self.inner.dns.as_ref().map_or(53, |d| d.config().port)
    }

    /// After the bridge is up: sysctls and firewall rules for the network, DNS listener.
    pub(crate) async fn plug_network_up(&self, net: &Network) -> Result<(), DaemonError> {
        if self.inner.firewall.is_some() {
            let v6 = net.subnets.iter().any(|s| s.subnet.addr().is_ipv6());
            netd_firewall::prepare_bridge_sysctls(&net.bridge, v6).map_err(fw_err)?;
        }
        if let Some(fw) = self.firewall() {
            let spec = network_spec(net, self.dns_port());
            blocking(move || fw.add_network(&spec))
                .await?
                .map_err(fw_err)?;
        }
        if let Some(dns) = &self.inner.dns {
            if let Err(e) = dns.add_network(network_dns(net)).await {
                if let Some(fw) = self.firewall() {
                    let name = net.name.clone();
                    let _ = blocking(move || fw.remove_network(&name)).await;
                }
                return Err(DaemonError::Subsystem(e.to_string()));
            }
        }
        Ok(())
    }

    /// Before the bridge goes: the network's DNS listener and firewall rules.
    pub(crate) async fn plug_network_down(&self, net: &Network) {
        if let Some(dns) = &self.inner.dns {
            dns.remove_network(&net.name).await;
        }
        if let Some(fw) = self.firewall() {
            let name = net.name.clone();
            match blocking(move || fw.remove_network(&name)).await {
                Ok(Err(e)) => {
                    warn!(network = %net.name, cause = %e, "removing firewall rules failed")
                }
                Err(e) => warn!(network = %net.name, cause = %e, "removing firewall rules failed"),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Refuses published ports that another endpoint holds (before any lease is taken).
    pub(crate) fn check_ports(
        &self,
        network: &str,
        key: &str,
        ports: &[netd_api::PortMapping],
    ) -> Result<(), DaemonError> {
        let Some(fw) = &self.inner.firewall else {
            return Ok(());
        };
        if ports.is_empty() {
            return Ok(());
        }
        let candidate = EndpointSpec {
            network: network.to_string(),
            key: key.to_string(),
            host_veth: String::new(),
            ips: vec![],
            mac: [0; 6],
            ports: fw_ports(ports),
        };
        fw.check_port_conflicts(&candidate).map_err(fw_err)
    }

    /// After the veth is configured: firewall elements (ports, anti-spoofing), DNS records.
    pub(crate) async fn plug_endpoint_up(
        &self,
        net: &Network,
        rec: &EndpointRecord,
    ) -> Result<(), DaemonError> {
        if let Some(fw) = self.firewall() {
            // Inline, not on the blocking pool: one small batch whose commit the kernel
            // finishes inside the send (its acks are queued before sendmsg returns), like every
            // rtnetlink request of the attach; a hop to a pool thread and back cost two
            // wake-ups on this attach's critical path. While a whole-table re-sync (start-up,
            // drift) holds the firewall's lock this waits for it, as the port check before
            // the attach already did.
            fw.add_endpoint(&endpoint_spec(rec)).map_err(fw_err)?;
        }
        if let Some(dns) = &self.inner.dns {
            if let Err(e) = dns.add_endpoint(&net.name, endpoint_dns(rec)) {
                return Err(DaemonError::InvalidRequest(e.to_string()));
            }
        }
        Ok(())
    }

    /// Before the veth goes: DNS records, firewall elements.
    pub(crate) async fn plug_endpoint_down(&self, net: &Network, rec: &EndpointRecord) {
        if let Some(dns) = &self.inner.dns {
            dns.remove_endpoint(&net.name, &rec.endpoint.container_id);
        }
        if let Some(fw) = self.firewall() {
            // Inline for the reason given in `plug_endpoint_up`.
            if let Err(e) = fw.remove_endpoint(&endpoint_spec(rec)) {
                warn!(endpoint = %rec.key(), cause = %e, "removing firewall elements failed")
            }
        }
    }

    /// Rebuilds the firewall tables from the store in one atomic batch (start-up, drift repair).
    pub(crate) async fn firewall_sync(&self) -> Result<(), DaemonError> {
        let Some(fw) = self.inner.firewall.clone() else {
            return Ok(());
        };
        let dns_port = self.dns_port();
        let nets: Vec<NetworkSpec> = self
            .all_networks()
            .iter()
            .map(|s| network_spec(&s.net, dns_port))
            .collect();
        let store = self.store().clone();
        let snap = blocking(move || store.load()).await??;
        let eps: Vec<EndpointSpec> = snap.endpoints.iter().map(endpoint_spec).collect();
        let n = (nets.len(), eps.len());
        blocking(move || fw.sync(&nets, &eps))
            .await?
            .map_err(fw_err)?;
        info!(networks = n.0, endpoints = n.1, "firewall tables synced");
        Ok(())
    }

    /// Watches our nftables tables and re-syncs them when someone else changes them.
    pub(crate) fn spawn_drift_repair(&self) -> Result<(), DaemonError> {
        let Some(fw) = self.inner.firewall.clone() else {
            return Ok(());
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = fw
            .spawn_drift_watch(Default::default(), move |reason| {
                let _ = tx.send(reason);
            })
            .map_err(fw_err)?;
        *self.inner.drift_watch.lock().expect("drift lock") = Some(watch);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(reason) = rx.recv().await {
                while rx.try_recv().is_ok() {}
                let Some(inner) = weak.upgrade() else { break };
                warn!(
                    ?reason,
                    "firewall tables changed behind netd's back; restoring"
                );
                if let Err(e) = (Daemon { inner }).firewall_sync().await {
                    warn!(cause = %e, "restoring firewall tables failed");
                }
            }
        });
        Ok(())
    }
}

//! Endpoint attach, detach, check and GC.

use std::net::IpAddr;
use std::sync::Arc;

use futures::future::join_all;

use netd_api::{AttachRequest, AttachResult, AttachmentId, DnsInfo, Endpoint, GcResult, RouteInfo};
use tracing::{debug, info, warn};

use super::network::bridge_spec;
use super::{blocking, now, turns, Daemon, DaemonError, NetState};
use crate::names::{self, check_container_id, check_dns_name, check_ifname};
use crate::netlink::{Netlink, VethSpec};
use crate::netns::{still_exists, Netns, NetnsId};
use crate::store::{endpoint_key, EndpointRecord};

/// The interfaces of a freshly created veth pair.
struct Links {
    bridge_mac: [u8; 6],
    host_mac: [u8; 6],
    /// Index of the container's end, in its namespace.
    inner: u32,
}

/// Base metric of container default routes (netavark uses 100 too).
const DEFAULT_ROUTE_METRIC: u32 = 100;

/// Default interface name inside the container.
pub const DEFAULT_IFNAME: &str = "eth0";

fn validate(req: &AttachRequest, st: &NetState) -> Result<(), DaemonError> {
    check_container_id(&req.container_id)?;
    check_ifname(
        "interface name",
        req.ifname.as_deref().unwrap_or(DEFAULT_IFNAME),
    )?;
    if let Some(n) = &req.name {
        check_dns_name("container name", n)?;
    }
    for (i, a) in req.aliases.iter().enumerate() {
        check_dns_name("alias", a)?;
        // A repeated alias is a client mistake; stored twice it would be listed twice forever.
        if req.aliases[..i].contains(a) {
            return Err(names::NameError {
                what: "alias",
                value: a.clone(),
                reason: "is given twice".into(),
            }
            .into());
        }
    }
    if req.netns.is_empty() {
        return Err(DaemonError::InvalidRequest("netns path is required".into()));
    }
    let v4 = req.ips.iter().filter(|ip| ip.is_ipv4()).count();
    if v4 > 1 || req.ips.len() - v4 > 1 {
        return Err(DaemonError::InvalidAddress(
            "at most one static address per family".into(),
        ));
    }
    for ip in &req.ips {
        if !st.pools.iter().any(|p| p.subnet().contains(ip)) {
            return Err(DaemonError::InvalidAddress(format!(
                "address {ip} is not in any subnet of network {}",
                st.net.name
            )));
        }
    }
    if let Some(m) = &req.mac {
        names::parse_mac(m)?;
    }
    for p in &req.port_mappings {
        if p.host_port == 0 || p.container_port == 0 || p.count == 0 {
            return Err(DaemonError::InvalidRequest(format!(
                "port mapping {}:{}/{} (count {}): ports and count must be non-zero",
                p.host_port, p.container_port, p.protocol, p.count
            )));
        }
        let last_h = u32::from(p.host_port) + u32::from(p.count) - 1;
        let last_c = u32::from(p.container_port) + u32::from(p.count) - 1;
        if last_h > 65535 || last_c > 65535 {
            return Err(DaemonError::InvalidRequest(format!(
                "port mapping {}:{}/{} (count {}) runs past port 65535",
                p.host_port, p.container_port, p.protocol, p.count
            )));
        }
    }
    Ok(())
}

impl Daemon {
    /// Attaches a container: lease(s) in one durable transaction while the veth is born in the
    /// container namespace, then addresses, routes and the plugs. Any failure undoes every step.
    pub async fn attach(
        &self,
        network: &str,
        req: AttachRequest,
    ) -> Result<AttachResult, DaemonError> {
        let st = self.net_state(network)?;
        if let Some(def) = &req.expect {
            let diffs = def.differences(&st.net);
            if !diffs.is_empty() {
                return Err(DaemonError::NetworkConflict(format!(
                    "network {network} exists with a definition that differs from the expected one: {}",
                    diffs.join("; ")
                )));
            }
        }
        validate(&req, &st)?;
        let ns = Netns::open(&req.netns)?;
        let _gate = st.gate.read().await;
        let ifname = req.ifname.clone().unwrap_or_else(|| DEFAULT_IFNAME.into());
        let key = endpoint_key(network, &req.container_id, &ifname);
        // One operation per endpoint key at a time: a second attach of the same key waits and
        // then finds it taken, instead of racing for the same interface names.
        let key_lock = self.key_lock(&key);
        let _key_guard = key_lock.lock().await;
        let host_veth = names::host_veth_name(network, &req.container_id, &ifname);
        let mac = match &req.mac {
            Some(m) => names::parse_mac(m)?,
            None => names::fresh_mac(&key),
        };
        let netns_id = ns.id();
        // Cheap early answers before any lease is taken; the transaction re-checks the first.
        // A read transaction takes microseconds: not worth a hop to the blocking pool.
        if self.store().endpoint(&key)?.is_some() {
            return Err(crate::store::StoreError::EndpointExists {
                network: network.to_string(),
                container_id: req.container_id.clone(),
                ifname,
            }
            .into());
        }
        // Published ports another endpoint holds.
        self.check_ports(network, &key, &req.port_mappings)?;
        // Refuse a taken interface name before any lease is taken (the first attachment of that
        // name stays untouched).
        let cont = Netlink::in_netns(&ns)?;
        // A detach of this name a moment ago left the interface to the reaper: take it now
        // (if the reaper is at it already, the flush waits behind it on the same socket).
        let mut taken = cont.index_of(&ifname)?.is_some();
        if taken {
            self.flush_retired().await;
            taken = cont.index_of(&ifname)?.is_some();
        }
        if taken {
            return Err(DaemonError::InterfaceExists {
                network: network.to_string(),
                container_id: req.container_id.clone(),
                ifname,
                netns: req.netns.clone(),
            });
        }

        // 1. The durable lease + record (an fsync) and the veth pair (which needs no address)
        //    proceed together; each undoes itself if the other fails. The store's part is
        //    queued before this attach's turn: the committer works on it while the attaches
        //    ahead do their kernel work, and it is done when the turn comes (8 at once: p90 -1
        //    to -2 ms, p50 the same; docs/benchmarks.md, eleventh round).
        let stored = {
            // The record as stored; the transaction fills in the addresses it chooses.
            let template = EndpointRecord {
                endpoint: Endpoint {
                    network: network.to_string(),
                    container_id: req.container_id.clone(),
                    ifname: ifname.clone(),
                    name: req.name.clone(),
                    aliases: req.aliases.clone(),
                    netns: req.netns.clone(),
                    host_veth: host_veth.clone(),
                    mac: names::format_mac(&mac),
                    ips: vec![],
                    gateways: vec![],
                    port_mappings: req.port_mappings.clone(),
                    labels: req.labels.clone(),
                    created: now(),
                },
                netns_dev: netns_id.dev,
                netns_ino: netns_id.ino,
            };
            self.store().attach(template, &st.pools, &req.ips)
        };
        let turn = self.take_turn().await;
        let linked = self.create_link(&st, &ns, &cont, &host_veth, &ifname, mac);
        // The first attach of a burst finds its commit still on the disk when its veth is
        // done: the next attach's turn begins then, not after that fsync.
        let (linked, stored, _turn) = turns::overlap(turn, linked, stored).await;
        let rec = match stored.map_err(DaemonError::from) {
            Ok(rec) => rec,
            Err(e) => {
                if let Err(de) = self.host().delete_link(&host_veth).await {
                    warn!(network, veth = %host_veth, cause = %de, "removing veth after a failed store update");
                }
                return Err(e);
            }
        };
        crate::failpoint::hit("attach-after-store");

        // 2. Addresses, routes and plugs; undo everything on failure.
        let result = match linked {
            Ok(links) => self.configure_endpoint(&st, &rec, &cont, links).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(result) => {
                crate::failpoint::hit("attach-before-reply");
                info!(network, container = %req.container_id, ifname = %ifname, ips = ?rec.endpoint.ips, "endpoint attached");
                Ok(result)
            }
            Err(e) => {
                warn!(network, container = %req.container_id, ifname = %ifname, cause = %e, "attach failed; rolling back");
                if let Err(re) = self.teardown_endpoint(&st, rec).await {
                    warn!(network, cause = %re, "rollback incomplete");
                }
                // A failed attach leaves nothing behind by the time it answers.
                self.flush_retired().await;
                Err(e)
            }
        }
    }

    /// Creates the veth pair (bridge recreated if it vanished), brings both ends up (each
    /// without IPv6 where it needs none) and the container's loopback; reads back the inner end.
    async fn create_link(
        &self,
        st: &Arc<NetState>,
        ns: &Netns,
        cont: &Netlink,
        host_veth: &str,
        ifname: &str,
        mac: [u8; 6],
    ) -> Result<Links, DaemonError> {
        let host = self.host();
        // The bridge may have been deleted behind our back: recreate it rather than fail.
        let (bridge, bridge_mac) = match host.index_and_mac(&st.net.bridge)? {
            Some(b) => b,
            None => {
                warn!(bridge = %st.net.bridge, "bridge missing; recreating");
                let bridge = host.ensure_bridge(&bridge_spec(&st.net)).await?.0;
                self.reattach_ports(st, bridge.index).await?;
                (bridge.index, bridge.mac.unwrap_or_default())
            }
        };
        // The bridge's own MAC: a port whose MAC the bridge already holds as a local address
        // adds no forwarding-database entry of its own (the kernel keeps the first holder), so
        // the entries every new port makes the bridge walk (`br_fdb_unsync_static`) stay at
        // one instead of one per container. The host end never sends a frame of its own (no
        // address, IPv6 off), so sharing it is invisible on the wire. A bridge whose MAC could
        // not be read gets a fresh one per port, as before.
        let host_mac = if bridge_mac == [0; 6] {
            names::fresh_mac(host_veth)
        } else {
            bridge_mac
        };
        let spec = VethSpec {
            host_name: host_veth.to_string(),
            peer_name: ifname.to_string(),
            peer_netns: ns,
            master: bridge,
            mtu: st.net.mtu,
            peer_mac: Some(mac),
            host_mac: Some(host_mac),
        };
        match host.create_veth(&spec).await {
            // A leftover host end of this very key (its record is gone) holds the name; the
            // container's interface name was checked free before.
            Err(e) if e.errno() == Some(libc::EEXIST) && host.delete_link(host_veth).await? => {
                debug!(veth = %host_veth, "removed stale host veth");
                host.create_veth(&spec).await?;
            }
            // A Linux bridge numbers its ports in 10 bits: the 1,024th is refused (EXFULL).
            Err(e) if e.errno() == Some(libc::EXFULL) => {
                return Err(DaemonError::NetworkFull {
                    network: st.net.name.clone(),
                    bridge: st.net.bridge.clone(),
                });
            }
            other => other?,
        }
        let v4_only = !st.net.subnets.iter().any(|s| s.subnet.addr().is_ipv6());
        let host_side = async {
            crate::netlink::disable_ipv6(host_veth)?;
            host.activate_port(host_veth).await?;
            Ok::<_, DaemonError>(())
        };
        let container_side = async {
            let inner = cont
                .index_of(ifname)?
                .ok_or_else(|| DaemonError::CheckFailed {
                    what: format!("{ifname} in {}", ns.path().display()),
                    problem: "interface vanished right after creation".into(),
                })?;
            // On an IPv4-only network the container end gets no IPv6 address either: otherwise
            // every new interface sends MLD reports, router solicitations and DAD probes that
            // the bridge floods to every port, a cost that grows with each container. The
            // bridge's RA guard keeps a neighbour from handing it addresses later. Sent
            // together on the one socket, in this order (the kernel applies them in order): no
            // link-local address before the interface comes up.
            let quiet = async {
                if v4_only {
                    cont.no_link_local(ifname).await
                } else {
                    Ok(())
                }
            };
            let (quiet, up, lo) =
                tokio::join!(quiet, cont.set_up(inner, ifname), cont.set_up(1, "lo"));
            quiet?;
            up?;
            lo?;
            Ok::<_, DaemonError>(inner)
        };
        let (host_up, inner) = tokio::join!(host_side, container_side);
        host_up?;
        Ok(Links {
            bridge_mac,
            host_mac,
            inner: inner?,
        })
    }

    /// Addresses, routes and the plugs of an endpoint whose veth is up.
    async fn configure_endpoint(
        &self,
        st: &Arc<NetState>,
        rec: &EndpointRecord,
        cont: &Netlink,
        links: Links,
    ) -> Result<AttachResult, DaemonError> {
        let ep = &rec.endpoint;
        let inner = links.inner;
        // The requests go out together on the one socket, in this order, and the kernel applies
        // them in order: the routes find their gateways on-link through the addresses.
        let addrs = ep
            .ips
            .iter()
            .map(|ip| cont.add_address(inner, &ep.ifname, *ip));
        let gateways: &[IpAddr] = if st.net.internal { &[] } else { &ep.gateways };
        // The first interface of a container (lowest index) wins the default route.
        let metric = DEFAULT_ROUTE_METRIC + inner;
        let defaults = gateways
            .iter()
            .map(|gw| cont.add_default_route(inner, &ep.ifname, *gw, metric));
        let (addrs, defaults) = tokio::join!(join_all(addrs), join_all(defaults));
        addrs
            .into_iter()
            .chain(defaults)
            .collect::<Result<(), _>>()?;
        crate::failpoint::hit("attach-after-addresses");
        let routes = gateways
            .iter()
            .map(|gw| RouteInfo {
                dst: if gw.is_ipv4() {
                    "0.0.0.0/0".parse().expect("literal")
                } else {
                    "::/0".parse().expect("literal")
                },
                gw: Some(*gw),
            })
            .collect();
        self.plug_endpoint_up(&st.net, rec).await?;
        Ok(AttachResult {
            endpoint: ep.clone(),
            bridge: st.net.bridge.clone(),
            bridge_mac: names::format_mac(&links.bridge_mac),
            host_veth_mac: names::format_mac(&links.host_mac),
            routes,
            dns: DnsInfo {
                nameservers: st.net.subnets.iter().map(|s| s.gateway).collect(),
                search: st.net.dns_domain.iter().cloned().collect(),
            },
            mtu: st.net.mtu,
        })
    }

    /// Puts the host ends of a network's endpoints back on its (recreated) bridge.
    pub(crate) async fn reattach_ports(
        &self,
        st: &NetState,
        bridge: u32,
    ) -> Result<(), DaemonError> {
        let store = self.store().clone();
        let n = st.net.name.clone();
        let eps = blocking(move || store.endpoints(&n)).await??;
        for rec in eps {
            if let Some(link) = self.host().link_by_name(&rec.endpoint.host_veth).await? {
                if link.master != Some(bridge) {
                    self.host()
                        .set_master(link.index, &link.name, bridge)
                        .await?;
                    // A new port starts without hairpin mode.
                    self.host().activate_port(&link.name).await?;
                }
            }
        }
        Ok(())
    }

    /// Undoes an endpoint: plugs and veth together (gone with its namespace is fine), then
    /// lease and record. The veth is retired (down and off the bridge at once, deleted in the
    /// reaper's next batch). Keeps going past failures and reports them together; the lease is
    /// kept only while the veth could not be retired, so a retry can finish the job.
    pub(crate) async fn teardown_endpoint(
        &self,
        st: &NetState,
        rec: EndpointRecord,
    ) -> Result<(), DaemonError> {
        self.teardown(st, rec, None).await
    }

    /// [`Self::teardown_endpoint`] in a detach's turn, which ends with the kernel work: the
    /// store write that follows (an fsync) then overlaps the next detach's kernel work and can
    /// share its commit.
    async fn teardown(
        &self,
        st: &NetState,
        rec: EndpointRecord,
        turn: Option<super::turns::Turn>,
    ) -> Result<(), DaemonError> {
        let mut errors = Vec::new();
        let (retired, ()) = tokio::join!(
            self.host().retire_link(&rec.endpoint.host_veth),
            self.plug_endpoint_down(&st.net, &rec)
        );
        if let Err(e) = retired {
            errors.push(DaemonError::from(e));
        }
        crate::failpoint::hit("detach-after-veth");
        drop(turn);
        if errors.is_empty() {
            if let Err(e) = self.store().detach(&rec.key()).await {
                errors.push(e.into());
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(DaemonError::Many(errors)),
        }
    }

    /// Detaches a container interface. Idempotent: unknown networks and endpoints succeed.
    pub async fn detach(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), DaemonError> {
        let Ok(st) = self.net_state(network) else {
            return Ok(());
        };
        let _gate = st.gate.read().await;
        let key = endpoint_key(network, container_id, ifname);
        let key_lock = self.key_lock(&key);
        let _key_guard = key_lock.lock().await;
        let turn = self.take_turn().await;
        // A read transaction takes microseconds: not worth a hop to the blocking pool.
        let Some(rec) = self.store().endpoint(&key)? else {
            return Ok(());
        };
        self.teardown(&st, rec, Some(turn)).await?;
        info!(network, container = %container_id, ifname, "endpoint detached");
        Ok(())
    }

    /// Verifies an endpoint against the kernel: namespace, interface, addresses, host veth on
    /// the bridge. The MAC is not compared (a later plugin such as tuning may change it).
    pub async fn check(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Endpoint, DaemonError> {
        let st = self.net_state(network)?;
        let key = endpoint_key(network, container_id, ifname);
        let store = self.store().clone();
        let k = key.clone();
        let rec = blocking(move || store.endpoint(&k))
            .await??
            .ok_or_else(|| DaemonError::EndpointNotFound {
                network: network.into(),
                container_id: container_id.into(),
                ifname: ifname.into(),
            })?;
        self.verify(&st, &rec).await?;
        Ok(rec.endpoint)
    }

    /// Compares one endpoint with the kernel: namespace identity, bridge, host veth on the
    /// bridge, container interface and its addresses.
    pub(crate) async fn verify(
        &self,
        st: &NetState,
        rec: &EndpointRecord,
    ) -> Result<(), DaemonError> {
        let (network, container_id, ifname) = (
            &st.net.name,
            &rec.endpoint.container_id,
            &rec.endpoint.ifname,
        );
        let ep = &rec.endpoint;
        let fail = |problem: String| DaemonError::CheckFailed {
            what: format!("{container_id}/{ifname} on {network}"),
            problem,
        };
        let id = NetnsId {
            dev: rec.netns_dev,
            ino: rec.netns_ino,
        };
        if !still_exists(std::path::Path::new(&ep.netns), id) {
            return Err(fail(format!("network namespace {} is gone", ep.netns)));
        }
        let bridge = self
            .host()
            .link_by_name(&st.net.bridge)
            .await?
            .ok_or_else(|| fail(format!("bridge {} is missing", st.net.bridge)))?;
        let host_end = self
            .host()
            .link_by_name(&ep.host_veth)
            .await?
            .ok_or_else(|| fail(format!("host veth {} is missing", ep.host_veth)))?;
        if host_end.master != Some(bridge.index) {
            return Err(fail(format!(
                "host veth {} is not attached to bridge {}",
                ep.host_veth, st.net.bridge
            )));
        }
        let ns = Netns::open(&ep.netns)?;
        let cont = Netlink::in_netns(&ns)?;
        let inner = cont
            .link_by_name(ifname)
            .await?
            .ok_or_else(|| fail(format!("interface {ifname} is missing in {}", ep.netns)))?;
        if !inner.up {
            return Err(fail(format!("interface {ifname} is down")));
        }
        let have = cont.addresses(inner.index).await?;
        for ip in &ep.ips {
            if !have.contains(ip) {
                return Err(fail(format!("address {ip} is missing on {ifname}")));
            }
        }
        if !st.net.internal {
            let routes = cont.routes().await?;
            for gw in &ep.gateways {
                let ok = routes.iter().any(|r| {
                    r.dst.prefix_len() == 0 && r.gateway == Some(*gw) && r.oif == Some(inner.index)
                });
                if !ok {
                    return Err(fail(format!("default route via {gw} is missing")));
                }
            }
        }
        Ok(())
    }

    /// Releases every endpoint of `network` not in `valid`, continuing past errors.
    pub async fn gc(&self, network: &str, valid: &[AttachmentId]) -> Result<GcResult, DaemonError> {
        let st = self.net_state(network)?;
        let _gate = st.gate.read().await;
        let store = self.store().clone();
        let n = network.to_string();
        let eps = blocking(move || store.endpoints(&n)).await??;
        let mut out = GcResult::default();
        for rec in eps {
            let id = AttachmentId {
                container_id: rec.endpoint.container_id.clone(),
                ifname: rec.endpoint.ifname.clone(),
            };
            if valid.contains(&id) {
                continue;
            }
            let key_lock = self.key_lock(&rec.key());
            let _key_guard = key_lock.lock().await;
            match self.teardown_endpoint(&st, rec).await {
                Ok(()) => out.released.push(id),
                Err(e) => out
                    .errors
                    .push(format!("releasing {}/{}: {e}", id.container_id, id.ifname)),
            }
        }
        Ok(out)
    }
}

//! The CNI commands as calls to netd: ADD ensures the network and attaches, DEL detaches,
//! CHECK asks netd to verify and compares with `prevResult`, GC and STATUS forward to netd.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use netd_api::{
    socket_path, AttachRequest, Client, ClientError, ErrorCode, GcRequest, NetworkInspect,
};
use serde_json::Value;

use crate::config::{self, NetworkDef, Object};
use crate::env::Env;
use crate::error::{netd_code, Error, Verb};
use crate::log;
use crate::result;
use crate::version::CniVersion;

/// How long STATUS waits for netd before calling it unavailable: long enough for a busy
/// daemon, short enough for the runtime's status loop.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// One invocation: the validated environment, the configuration and its version.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// The environment.
    pub env: &'a Env,
    /// The configuration object from stdin.
    pub conf: &'a Object,
    /// Its `cniVersion`.
    pub version: CniVersion,
}

fn netd_err(verb: Verb, doing: String, source: ClientError) -> Error {
    Error::Netd {
        doing,
        code: netd_code(verb, &source),
        source,
    }
}

fn client(conf: &Object, timeout: Option<Duration>) -> Result<Client, Error> {
    let socket = socket_path(config::socket(conf)?.as_deref());
    log::debug(&format!("using netd socket {}", socket.display()));
    let c = Client::new(socket);
    Ok(match timeout {
        Some(t) => c.with_timeout(t),
        None => c,
    })
}

fn is(e: &ClientError, codes: &[ErrorCode]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

/// ADD: returns the result in the request's version.
pub fn add(inv: &Invocation<'_>) -> Result<Value, Error> {
    let (env, conf) = (inv.env, inv.conf);
    let name = config::network_name(conf)?;
    if !config::valid_network_name(&name) {
        return Err(Error::InvalidConfig(format!(
            "network name {name:?} is not valid for netd: letters, digits, '_', '.', '-', \
             starting with a letter or digit, at most 64 bytes"
        )));
    }
    let def = config::network_def(conf)?;
    let opts = config::runtime_options(conf, &name)?;
    // Checked here, not only by netd, so the error names the variable the runtime set.
    if !Path::new(&env.netns).exists() {
        return Err(Error::Env {
            var: "CNI_NETNS",
            reason: format!(
                "{}: no such network namespace (the path does not exist)",
                env.netns
            ),
        });
    }
    let client = client(conf, None)?;

    let args = &env.args;
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("k8s.pod.namespace", &args.pod_namespace),
        ("k8s.pod.name", &args.pod_name),
        ("k8s.pod.infra_container_id", &args.pod_infra_container_id),
        ("k8s.pod.uid", &args.pod_uid),
    ] {
        if let Some(v) = v {
            labels.insert(k.to_string(), v.clone());
        }
    }
    let req = AttachRequest {
        container_id: env.container_id.clone(),
        ifname: Some(env.ifname.clone()),
        netns: env.netns.clone(),
        name: args.pod_name.clone(),
        aliases: opts.aliases,
        ips: if opts.ips.is_empty() {
            args.ips.clone()
        } else {
            opts.ips
        },
        mac: opts.mac.or_else(|| args.mac.clone()),
        port_mappings: opts.port_mappings,
        labels,
        // netd checks the network against the configuration as part of the attach: one
        // request in the common case instead of a look-up and an attach.
        expect: Some(def.clone()),
    };
    let doing = || {
        format!(
            "attaching container {} ({}) to network {name}",
            env.container_id, env.ifname
        )
    };
    let attached = match client.attach(&name, &req) {
        // First container of the network: create it from the configuration, once. A network
        // that differs is refused by netd (network_conflict naming every difference: code 7).
        Err(e) if is(&e, &[ErrorCode::NetworkNotFound]) => {
            ensure_network(&client, &name, &def)?;
            client.attach(&name, &req)
        }
        other => other,
    }
    .map_err(|e| netd_err(Verb::Add, doing(), e))?;
    log::debug(&format!(
        "attached {} ({}) to {name}: {:?}",
        env.container_id, env.ifname, attached.endpoint.ips
    ));
    Ok(result::render(
        inv.version,
        &attached,
        &env.netns,
        attached.mtu,
    ))
}

/// Makes sure the network `name` exists, creating it from `def` when it does not; an existing
/// network must agree with every key the configuration sets (code 7 naming the differences).
pub fn ensure_network(client: &Client, name: &str, def: &NetworkDef) -> Result<(), Error> {
    let mut last = None;
    // A racing ADD may create the network between our look-up and our create; the loser
    // re-reads it. Three rounds cover a create/remove race too.
    for _ in 0..3 {
        match client.get_network(name) {
            Ok(found) => {
                let diffs = def.differences(&found);
                if !diffs.is_empty() {
                    return Err(Error::InvalidConfig(format!(
                        "network {name} exists with a definition that differs from the CNI \
                         configuration: {}",
                        diffs.join("; ")
                    )));
                }
                return Ok(());
            }
            Err(e) if is(&e, &[ErrorCode::NetworkNotFound]) => {
                let req = def.create_request(name);
                match client.create_network(&req) {
                    Ok(_) => {
                        log::info(&format!(
                            "created network {name} from the CNI configuration"
                        ));
                        return Ok(());
                    }
                    Err(e) if is(&e, &[ErrorCode::NetworkExists]) => last = Some(e),
                    Err(e) => {
                        return Err(netd_err(
                            Verb::Add,
                            format!("creating network {name} from the CNI configuration"),
                            e,
                        ))
                    }
                }
            }
            Err(e) => return Err(netd_err(Verb::Add, format!("looking up network {name}"), e)),
        }
    }
    Err(netd_err(
        Verb::Add,
        format!("creating network {name} from the CNI configuration"),
        last.expect("the loop only continues after a create error"),
    ))
}

/// DEL: best effort and idempotent; only netd's own state matters.
pub fn del(inv: &Invocation<'_>) -> Result<(), Error> {
    let (env, conf) = (inv.env, inv.conf);
    let name = config::network_name(conf)?;
    if !config::valid_network_name(&name) {
        // No ADD can have succeeded with this name, so there is nothing to release; failing
        // would only leave the runtime unable to remove the container.
        log::info(&format!(
            "DEL: {name:?} is not a netd network name, nothing to do"
        ));
        return Ok(());
    }
    let client = client(conf, None)?;
    match client.detach(&name, &env.container_id, &env.ifname) {
        Ok(()) => Ok(()),
        Err(e)
            if is(
                &e,
                &[ErrorCode::NetworkNotFound, ErrorCode::EndpointNotFound],
            ) =>
        {
            log::debug(&format!("DEL: nothing attached ({e})"));
            Ok(())
        }
        Err(e) => Err(netd_err(
            Verb::Del,
            format!(
                "detaching container {} ({}) from network {name}",
                env.container_id, env.ifname
            ),
            e,
        )),
    }
}

/// CHECK: netd verifies the kernel state and the lease; we compare with `prevResult`.
pub fn check(inv: &Invocation<'_>) -> Result<(), Error> {
    let (env, conf) = (inv.env, inv.conf);
    inv.version.require("CHECK", CniVersion::V040)?;
    let name = config::network_name(conf)?;
    let prev = config::prev_result(conf)?.ok_or_else(|| {
        Error::InvalidConfig("CHECK needs prevResult (the result of the ADD)".into())
    })?;
    let client = client(conf, None)?;
    let what = format!(
        "container {} ({}) on network {name}",
        env.container_id, env.ifname
    );
    let ep = client
        .check(&name, &env.container_id, &env.ifname)
        .map_err(|e| {
            if is(
                &e,
                &[ErrorCode::NetworkNotFound, ErrorCode::EndpointNotFound],
            ) {
                Error::UnknownContainer(format!("netd has no attachment of {what}"))
            } else {
                netd_err(Verb::Check, format!("checking {what}"), e)
            }
        })?;
    compare_prev(&prev, &env.ifname, &env.netns, &ep.ips)
}

/// Compares `prevResult` with netd's endpoint. MACs are not compared: a later plugin
/// (tuning) may change the MAC and the result it passes on.
pub fn compare_prev(
    prev: &config::PrevResult,
    ifname: &str,
    netns: &str,
    have: &[IpNet],
) -> Result<(), Error> {
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            Error::CheckFailed(format!("prevResult lists no container interface {ifname}"))
        })?;
    let sandbox = &prev.interfaces[idx].sandbox;
    if sandbox != netns {
        return Err(Error::CheckFailed(format!(
            "prevResult puts {ifname} in {sandbox}, CNI_NETNS is {netns}"
        )));
    }
    let want: BTreeSet<IpNet> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(idx))
        .map(|ip| ip.address)
        .collect();
    let have: BTreeSet<IpNet> = have.iter().copied().collect();
    if want != have {
        let fmt = |s: &BTreeSet<IpNet>| {
            s.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::CheckFailed(format!(
            "addresses of {ifname}: prevResult has [{}], netd has [{}]",
            fmt(&want),
            fmt(&have)
        )));
    }
    Ok(())
}

/// GC: releases every attachment of the network not in the valid list.
pub fn gc(inv: &Invocation<'_>) -> Result<(), Error> {
    let conf = inv.conf;
    inv.version.require("GC", CniVersion::V110)?;
    let name = config::network_name(conf)?;
    let valid = config::valid_attachments(conf)?;
    if !config::valid_network_name(&name) {
        return Ok(());
    }
    let client = client(conf, None)?;
    let req = GcRequest { valid };
    match client.gc(&name, &req) {
        Ok(r) => {
            for a in &r.released {
                log::info(&format!(
                    "GC released {} ({}) on {name}",
                    a.container_id, a.ifname
                ));
            }
            if r.errors.is_empty() {
                Ok(())
            } else {
                Err(Error::Gc {
                    network: name,
                    errors: r.errors,
                })
            }
        }
        Err(e) if is(&e, &[ErrorCode::NetworkNotFound]) => Ok(()),
        Err(e) => Err(netd_err(
            Verb::Gc,
            format!("garbage-collecting network {name}"),
            e,
        )),
    }
}

/// STATUS: succeeds when an ADD could work now. A failing STATUS marks a Kubernetes node
/// NotReady, so only a daemon that cannot answer or a full address pool fail it.
pub fn status(inv: &Invocation<'_>) -> Result<(), Error> {
    let conf = inv.conf;
    inv.version.require("STATUS", CniVersion::V110)?;
    let name = config::network_name(conf)?;
    let client = client(conf, Some(STATUS_TIMEOUT))?;
    client
        .status()
        .map_err(|e| netd_err(Verb::Status, "asking netd for its status".into(), e))?;
    if !config::valid_network_name(&name) {
        return Err(Error::InvalidConfig(format!(
            "network name {name:?} is not valid for netd"
        )));
    }
    match client.inspect_network(&name) {
        Ok(found) => match exhausted(&found) {
            Some(msg) => Err(Error::NotAvailable(msg)),
            None => Ok(()),
        },
        // ADD creates it.
        Err(e) if is(&e, &[ErrorCode::NetworkNotFound]) => Ok(()),
        Err(e) => Err(netd_err(
            Verb::Status,
            format!("looking up network {name}"),
            e,
        )),
    }
}

/// Why ADD would fail for lack of addresses, if it would: netd reports a subnet whose dynamic
/// range has no free address left (its own IPAM's count, so the rules cannot drift apart).
pub fn exhausted(net: &NetworkInspect) -> Option<String> {
    net.usage.iter().find(|u| u.free == 0).map(|u| {
        format!(
            "network {}: no free address left in {} ({} in use)",
            net.network.name, u.subnet, u.used
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PrevInterface, PrevIp, PrevResult};
    use netd_api::{Endpoint, Network, Subnet};
    use std::net::IpAddr;

    fn net(subnet: &str, gw: &str, range: Option<&str>, used: &[&str]) -> NetworkInspect {
        let pool = netd_ipam::Pool::new(
            subnet.parse().unwrap(),
            range.map(|r| r.parse().unwrap()),
            Some(gw.parse().unwrap()),
            [],
        )
        .unwrap();
        let used_set: BTreeSet<IpAddr> = used
            .iter()
            .map(|u| u.parse::<IpNet>().unwrap().addr())
            .collect();
        NetworkInspect {
            usage: vec![netd_api::SubnetUsage {
                subnet: subnet.parse().unwrap(),
                used: used.len() as u64,
                free: u64::try_from(pool.free_count(&used_set)).unwrap_or(u64::MAX),
            }],
            network: Network {
                name: "n".into(),
                id: "1".into(),
                bridge: "nd-n".into(),
                subnets: vec![Subnet {
                    subnet: subnet.parse().unwrap(),
                    gateway: gw.parse().unwrap(),
                    ip_range: range.map(|r| r.parse().unwrap()),
                }],
                aux_addresses: vec![],
                internal: false,
                mtu: None,
                masquerade: true,
                icc: true,
                snat: None,
                dns_domain: None,
                dns_upstreams: vec![],
                labels: Default::default(),
                created: 0,
            },
            leases: vec![],
            endpoints: used
                .iter()
                .enumerate()
                .map(|(i, ip)| Endpoint {
                    network: "n".into(),
                    container_id: format!("c{i}"),
                    ifname: "eth0".into(),
                    name: None,
                    aliases: vec![],
                    netns: String::new(),
                    host_veth: String::new(),
                    mac: String::new(),
                    ips: vec![ip.parse().unwrap()],
                    gateways: vec![],
                    port_mappings: vec![],
                    labels: Default::default(),
                    created: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_slash_30_holds_one_container() {
        assert!(exhausted(&net("10.0.0.0/30", "10.0.0.1", None, &[])).is_none());
        let full = net("10.0.0.0/30", "10.0.0.1", None, &["10.0.0.2/30"]);
        let msg = exhausted(&full).unwrap();
        assert!(msg.contains("10.0.0.0/30"), "{msg}");
    }

    #[test]
    fn a_range_is_full_when_its_addresses_are_used() {
        // Range 10.0.0.8/30 inside a /24: all four addresses are assignable.
        let used = ["10.0.0.8/24", "10.0.0.9/24", "10.0.0.10/24"];
        assert!(exhausted(&net("10.0.0.0/24", "10.0.0.1", Some("10.0.0.8/30"), &used)).is_none());
        let used = ["10.0.0.8/24", "10.0.0.9/24", "10.0.0.10/24", "10.0.0.11/24"];
        assert!(exhausted(&net("10.0.0.0/24", "10.0.0.1", Some("10.0.0.8/30"), &used)).is_some());
    }

    #[test]
    fn ipv6_is_not_exhausted_by_a_few_containers() {
        assert!(exhausted(&net("fd00::/64", "fd00::1", None, &["fd00::2/64"])).is_none());
    }

    fn prev(sandbox: &str, ips: &[(&str, Option<usize>)]) -> PrevResult {
        PrevResult {
            interfaces: vec![
                PrevInterface {
                    name: "nd-n".into(),
                    sandbox: String::new(),
                },
                PrevInterface {
                    name: "veth1".into(),
                    sandbox: String::new(),
                },
                PrevInterface {
                    name: "eth0".into(),
                    sandbox: sandbox.into(),
                },
            ],
            ips: ips
                .iter()
                .map(|(a, i)| PrevIp {
                    address: a.parse().unwrap(),
                    interface: *i,
                })
                .collect(),
        }
    }

    #[test]
    fn check_compares_addresses_of_the_container_interface() {
        let have: Vec<IpNet> = vec!["10.0.0.2/24".parse().unwrap()];
        let p = prev("/run/netns/a", &[("10.0.0.2/24", Some(2))]);
        compare_prev(&p, "eth0", "/run/netns/a", &have).unwrap();
        let e = compare_prev(&p, "eth0", "/run/netns/b", &have).unwrap_err();
        assert_eq!(e.code(), 101);
        let p = prev("/run/netns/a", &[("10.0.0.3/24", Some(2))]);
        let e = compare_prev(&p, "eth0", "/run/netns/a", &have).unwrap_err();
        assert!(e.to_string().contains("10.0.0.3/24"), "{e}");
        let e = compare_prev(&p, "eth1", "/run/netns/a", &have).unwrap_err();
        assert!(e.to_string().contains("eth1"), "{e}");
    }
}

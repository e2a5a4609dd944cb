//! A network definition a client expects, and how an existing network differs from it.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::types::{CreateNetwork, Network, SubnetRequest};

/// What a caller expects of a network (the keys a CNI configuration sets); `None`/empty means
/// "not said". Sent with an attach, netd refuses it before doing anything if the network
/// differs, so a client needs no look-up of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkDef {
    /// Subnets (at most one per family), from `subnet`, `subnets`, `ranges` or `ipam`.
    pub subnets: Vec<SubnetRequest>,
    /// `bridge`.
    pub bridge: Option<String>,
    /// `mtu` (0 means unset, as for the reference bridge plugin).
    pub mtu: Option<u32>,
    /// `internal`.
    pub internal: Option<bool>,
    /// `ipMasq`.
    pub masquerade: Option<bool>,
    /// `icc`.
    pub icc: Option<bool>,
    /// `dnsDomain` (or dnsname's `domainName`).
    pub dns_domain: Option<String>,
    /// `dnsUpstreams`.
    pub dns_upstreams: Option<Vec<String>>,
}

impl NetworkDef {
    /// The create request for a network of this definition named `name`.
    pub fn create_request(&self, name: &str) -> CreateNetwork {
        CreateNetwork {
            name: name.to_string(),
            subnets: self.subnets.clone(),
            internal: self.internal.unwrap_or(false),
            mtu: self.mtu,
            bridge: self.bridge.clone(),
            masquerade: self.masquerade,
            icc: self.icc,
            dns_domain: self.dns_domain.clone(),
            dns_upstreams: self.dns_upstreams.clone().unwrap_or_default(),
            labels: [("created_by".to_string(), "netd-cni".to_string())].into(),
            ..CreateNetwork::default()
        }
    }

    /// Every way the existing network `net` differs from what this definition says (keys
    /// the configuration leaves out never differ).
    pub fn differences(&self, net: &Network) -> Vec<String> {
        let mut out = Vec::new();
        if !self.subnets.is_empty() {
            let want: BTreeSet<IpNet> = self.subnets.iter().map(|s| s.subnet).collect();
            let have: BTreeSet<IpNet> = net.subnets.iter().map(|s| s.subnet).collect();
            if want != have {
                out.push(format!(
                    "subnets: the network has {}, the configuration asks for {}",
                    list(&have),
                    list(&want)
                ));
            } else {
                for w in &self.subnets {
                    let Some(h) = net.subnets.iter().find(|h| h.subnet == w.subnet) else {
                        continue;
                    };
                    if let Some(g) = w.gateway.filter(|g| *g != h.gateway) {
                        out.push(format!(
                            "gateway of {}: the network has {}, the configuration asks for {g}",
                            w.subnet, h.gateway
                        ));
                    }
                    if let Some(r) = w.ip_range {
                        let have = h.ip_range.unwrap_or(h.subnet);
                        if r != have {
                            out.push(format!(
                                "range of {}: the network allocates from {have}, the \
                                 configuration asks for {r}",
                                w.subnet
                            ));
                        }
                    }
                }
            }
        }
        let mut diff = |key: &str, have: String, want: String| {
            if have != want {
                out.push(format!(
                    "{key}: the network has {have}, the configuration asks for {want}"
                ));
            }
        };
        if let Some(b) = &self.bridge {
            diff("bridge", net.bridge.clone(), b.clone());
        }
        if let Some(m) = self.mtu {
            diff("mtu", net.mtu.unwrap_or(1500).to_string(), m.to_string());
        }
        if let Some(i) = self.internal {
            diff("internal", net.internal.to_string(), i.to_string());
        }
        // Internal networks are never masqueraded whatever their flag says.
        if let (Some(m), false) = (self.masquerade, net.internal) {
            diff("ipMasq", net.masquerade.to_string(), m.to_string());
        }
        if let Some(i) = self.icc {
            diff("icc", net.icc.to_string(), i.to_string());
        }
        if let Some(d) = &self.dns_domain {
            diff(
                "dnsDomain",
                net.dns_domain.clone().unwrap_or_else(|| "none".into()),
                d.clone(),
            );
        }
        if let Some(u) = &self.dns_upstreams {
            diff(
                "dnsUpstreams",
                format!("[{}]", net.dns_upstreams.join(", ")),
                format!("[{}]", u.join(", ")),
            );
        }
        out
    }
}

fn list(s: &BTreeSet<IpNet>) -> String {
    if s.is_empty() {
        return "no subnet".into();
    }
    s.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

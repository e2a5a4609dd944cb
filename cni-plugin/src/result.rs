//! The ADD result in the request's CNI version, in the layout of the reference `bridge`
//! plugin: `interfaces = [bridge, host veth, container interface]`, every address on
//! interface 2. portmap, bandwidth, firewall, tuning, containerd and Podman all find "the
//! container interface" and "the host veth" by that layout, so it is kept exactly.

use std::net::IpAddr;

use netd_api::AttachResult;
use serde_json::{json, Map, Value};

use crate::version::CniVersion;

/// Index of the container interface in `interfaces`.
pub const CONTAINER_IFACE_INDEX: usize = 2;

/// Renders the result of an attach for `version`. `netns` is `CNI_NETNS` (the sandbox), `mtu`
/// the network's MTU when it has one (reported for 1.1.0, which added `interfaces[].mtu`).
pub fn render(version: CniVersion, r: &AttachResult, netns: &str, mtu: Option<u32>) -> Value {
    let ep = &r.endpoint;
    let iface = |name: &str, mac: &str, sandbox: Option<&str>| {
        let mut o = Map::new();
        o.insert("name".into(), json!(name));
        if !mac.is_empty() {
            o.insert("mac".into(), json!(mac));
        }
        if let (CniVersion::V110, Some(m)) = (version, mtu) {
            o.insert("mtu".into(), json!(m));
        }
        if let Some(s) = sandbox {
            o.insert("sandbox".into(), json!(s));
        }
        Value::Object(o)
    };
    let interfaces = vec![
        iface(&r.bridge, &r.bridge_mac, None),
        iface(&ep.host_veth, &r.host_veth_mac, None),
        iface(&ep.ifname, &ep.mac, Some(netns)),
    ];
    let ips: Vec<Value> = ep
        .ips
        .iter()
        .map(|net| {
            let v4 = net.addr().is_ipv4();
            let mut o = Map::new();
            if version.ips_carry_version() {
                o.insert("version".into(), json!(if v4 { "4" } else { "6" }));
            }
            o.insert("address".into(), json!(net.to_string()));
            if let Some(gw) = ep.gateways.iter().find(|g| g.is_ipv4() == v4) {
                o.insert("gateway".into(), json!(gw.to_string()));
            }
            // Serialized even though it is small: libcni's `interface` is a pointer, and
            // plugins treat a missing index as "no interface".
            o.insert("interface".into(), json!(CONTAINER_IFACE_INDEX));
            Value::Object(o)
        })
        .collect();
    let routes: Vec<Value> = r
        .routes
        .iter()
        .map(|rt| {
            let mut o = Map::new();
            o.insert("dst".into(), json!(rt.dst.to_string()));
            if let Some(gw) = rt.gw {
                o.insert("gw".into(), json!(gw.to_string()));
            }
            Value::Object(o)
        })
        .collect();
    let mut dns = Map::new();
    if !r.dns.nameservers.is_empty() {
        let ns: Vec<String> = r.dns.nameservers.iter().map(IpAddr::to_string).collect();
        dns.insert("nameservers".into(), json!(ns));
    }
    if !r.dns.search.is_empty() {
        dns.insert("search".into(), json!(r.dns.search));
    }
    let mut out = json!({
        "cniVersion": version.as_str(),
        "interfaces": interfaces,
        "ips": ips,
        "dns": Value::Object(dns),
    });
    // Like libcni's `omitempty`: an internal network has no routes, and says nothing.
    if !routes.is_empty() {
        out["routes"] = Value::Array(routes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_api::{DnsInfo, Endpoint, RouteInfo};

    fn sample(dual: bool) -> AttachResult {
        let mut ips = vec!["10.88.0.5/16".parse().unwrap()];
        let mut gateways = vec!["10.88.0.1".parse().unwrap()];
        let mut routes = vec![RouteInfo {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.88.0.1".parse().unwrap()),
        }];
        if dual {
            ips.push("fd00:88::5/64".parse().unwrap());
            gateways.push("fd00:88::1".parse().unwrap());
            routes.push(RouteInfo {
                dst: "::/0".parse().unwrap(),
                gw: Some("fd00:88::1".parse().unwrap()),
            });
        }
        AttachResult {
            endpoint: Endpoint {
                network: "web".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
                name: None,
                aliases: vec![],
                netns: "/run/netns/c1".into(),
                host_veth: "vethabc".into(),
                mac: "02:00:00:00:00:05".into(),
                ips,
                gateways,
                port_mappings: vec![],
                labels: Default::default(),
                created: 0,
            },
            bridge: "nd-web".into(),
            bridge_mac: "02:00:00:00:00:01".into(),
            host_veth_mac: "02:00:00:00:00:02".into(),
            routes,
            dns: DnsInfo {
                nameservers: vec!["10.88.0.1".parse().unwrap()],
                search: vec!["web.netd".into()],
            },
            mtu: None,
        }
    }

    #[test]
    fn v100_result_has_the_bridge_layout_and_no_ip_version() {
        let v = render(
            CniVersion::V100,
            &sample(false),
            "/run/netns/c1",
            Some(1400),
        );
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "nd-web", "mac": "02:00:00:00:00:01"},
                    {"name": "vethabc", "mac": "02:00:00:00:00:02"},
                    {"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": "/run/netns/c1"}
                ],
                "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
                "dns": {"nameservers": ["10.88.0.1"], "search": ["web.netd"]}
            })
        );
    }

    #[test]
    fn v110_result_adds_interface_mtu_only_when_known() {
        let v = render(CniVersion::V110, &sample(false), "/n", Some(1400));
        assert_eq!(v["cniVersion"], "1.1.0");
        for i in 0..3 {
            assert_eq!(v["interfaces"][i]["mtu"], 1400);
        }
        assert!(v["ips"][0].get("version").is_none());
        let v = render(CniVersion::V110, &sample(false), "/n", None);
        assert!(v["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn pre_100_results_carry_ip_version_and_no_mtu() {
        for ver in [CniVersion::V030, CniVersion::V031, CniVersion::V040] {
            let v = render(ver, &sample(true), "/n", Some(1400));
            assert_eq!(v["cniVersion"], ver.as_str());
            assert_eq!(
                v["ips"],
                json!([
                    {"version": "4", "address": "10.88.0.5/16", "gateway": "10.88.0.1",
                     "interface": 2},
                    {"version": "6", "address": "fd00:88::5/64", "gateway": "fd00:88::1",
                     "interface": 2}
                ])
            );
            assert!(v["interfaces"][2].get("mtu").is_none());
        }
    }

    #[test]
    fn interface_index_is_serialized_as_a_number() {
        let text = render(CniVersion::V100, &sample(false), "/n", None).to_string();
        assert!(text.contains("\"interface\":2"), "{text}");
    }

    #[test]
    fn internal_network_result_has_no_routes_key_and_unknown_macs_are_left_out() {
        let mut r = sample(false);
        r.routes.clear();
        r.bridge_mac.clear();
        let v = render(CniVersion::V100, &r, "/n", None);
        assert!(v.get("routes").is_none(), "{v}");
        assert_eq!(v["interfaces"][0], json!({"name": "nd-web"}));
    }

    #[test]
    fn dns_object_is_present_even_when_empty() {
        let mut r = sample(false);
        r.dns = DnsInfo::default();
        let v = render(CniVersion::V100, &r, "/n", None);
        assert_eq!(v["dns"], json!({}));
    }
}

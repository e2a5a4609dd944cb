//! The network configuration on stdin: the netd network it names and describes, the
//! per-container options a runtime passes (`runtimeConfig`, `args`), `prevResult` for CHECK
//! and the valid attachments of GC.
//!
//! The configuration is read as a JSON object and only the keys this plugin understands are
//! looked at; unknown keys are ignored so that conflists written for the reference `bridge`
//! plugin (Podman's, kubelet's) work after changing `type`.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
pub use netd_api::NetworkDef;
use netd_api::{AttachmentId, PortMapping, Protocol, SubnetRequest};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::env::{normalize_mac, parse_ip};
use crate::error::Error;

/// A JSON object.
pub type Object = Map<String, Value>;

/// Decodes stdin into a JSON object (code 6 otherwise).
pub fn parse_stdin(bytes: &[u8]) -> Result<Object, Error> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(Error::Decode(format!(
            "expected a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(Error::Decode(e.to_string())),
    }
}

/// The `cniVersion` string, if stdin is an object that has one (used for error replies even
/// when the rest of the configuration is bad).
pub fn peek_version(obj: &Object) -> Option<&str> {
    obj.get("cniVersion").and_then(Value::as_str)
}

/// The network name (`name`), required and non-empty.
pub fn network_name(obj: &Object) -> Result<String, Error> {
    match opt_str(obj, "name", "name")? {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(Error::InvalidConfig(
            "the network configuration has no \"name\"; it names the netd network".into(),
        )),
    }
}

/// Whether `name` is a valid netd network name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 bytes).
pub fn valid_network_name(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= 64
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// The optional `socket` key.
pub fn socket(obj: &Object) -> Result<Option<PathBuf>, Error> {
    Ok(opt_str(obj, "socket", "socket")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from))
}

/// Reads the network definition keys (ADD only: DEL must work whatever the config became).
pub fn network_def(obj: &Object) -> Result<NetworkDef, Error> {
    let mut def = NetworkDef {
        bridge: opt_str(obj, "bridge", "bridge")?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        mtu: opt_u64(obj, "mtu", "mtu")?
            .filter(|m| *m != 0)
            .map(|m| {
                u32::try_from(m).map_err(|_| Error::InvalidConfig(format!("mtu: {m} is too large")))
            })
            .transpose()?,
        internal: opt_bool(obj, "internal", "internal")?,
        masquerade: opt_bool(obj, "ipMasq", "ipMasq")?,
        icc: opt_bool(obj, "icc", "icc")?,
        dns_domain: match opt_str(obj, "dnsDomain", "dnsDomain")? {
            Some(d) => Some(d),
            None => opt_str(obj, "domainName", "domainName")?,
        }
        .filter(|s| !s.is_empty())
        .map(str::to_string),
        dns_upstreams: opt_str_list(obj, "dnsUpstreams", "dnsUpstreams")?,
        subnets: Vec::new(),
    };
    if opt_bool(obj, "isGateway", "isGateway")? == Some(false) {
        return Err(Error::UnsupportedField {
            key: "isGateway".into(),
            value: "false".into(),
            reason: "netd's bridge always holds the gateway address; use \"internal\": true \
                     for a network without a route out"
                .into(),
        });
    }

    let mut subnets = Vec::new();
    collect_subnets(obj, "", &mut subnets)?;
    if let Some(list) = obj.get("subnets").filter(|v| !v.is_null()) {
        let arr = list
            .as_array()
            .ok_or_else(|| type_err("subnets", "a list of objects", list))?;
        for (i, s) in arr.iter().enumerate() {
            let path = format!("subnets[{i}]");
            let o = s
                .as_object()
                .ok_or_else(|| type_err(&path, "an object", s))?;
            subnets.push(range_entry(o, &path)?);
        }
    }
    if let Some(ipam) = obj.get("ipam").filter(|v| !v.is_null()) {
        let ipam = ipam
            .as_object()
            .ok_or_else(|| type_err("ipam", "an object", ipam))?;
        match opt_str(ipam, "type", "ipam.type")? {
            None | Some("") | Some("host-local") | Some("netd") => {}
            Some(t) => {
                return Err(Error::UnsupportedField {
                    key: "ipam.type".into(),
                    value: t.into(),
                    reason: "netd allocates addresses itself; leave ipam out or use host-local \
                             keys (subnet, gateway, ranges)"
                        .into(),
                })
            }
        }
        collect_subnets(ipam, "ipam.", &mut subnets)?;
        check_routes(ipam)?;
    }
    for fam in [true, false] {
        let n = subnets
            .iter()
            .filter(|s: &&SubnetRequest| matches!(s.subnet, IpNet::V4(_)) == fam)
            .count();
        if n > 1 {
            let all: Vec<String> = subnets.iter().map(|s| s.subnet.to_string()).collect();
            return Err(Error::UnsupportedField {
                key: "subnet".into(),
                value: all.join(", "),
                reason: format!(
                    "a netd network has at most one {} subnet",
                    if fam { "IPv4" } else { "IPv6" }
                ),
            });
        }
    }
    def.subnets = subnets;
    Ok(def)
}

/// Reads `subnet` (with `gateway`, `rangeStart`/`rangeEnd`, `ipRange`) and host-local's
/// `ranges` from `obj`.
fn collect_subnets(obj: &Object, prefix: &str, out: &mut Vec<SubnetRequest>) -> Result<(), Error> {
    if obj.get("subnet").is_some_and(|v| !v.is_null()) {
        out.push(range_entry(obj, prefix.trim_end_matches('.'))?);
    }
    let Some(ranges) = obj.get("ranges").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let key = format!("{prefix}ranges");
    let sets = ranges
        .as_array()
        .ok_or_else(|| type_err(&key, "a list of range sets", ranges))?;
    for (i, set) in sets.iter().enumerate() {
        let path = format!("{key}[{i}]");
        let set = set
            .as_array()
            .ok_or_else(|| type_err(&path, "a list of ranges", set))?;
        if set.len() > 1 {
            return Err(Error::UnsupportedField {
                key: path,
                value: Value::Array(set.clone()).to_string(),
                reason: "netd allocates from one range per subnet".into(),
            });
        }
        for (j, r) in set.iter().enumerate() {
            let path = format!("{path}[{j}]");
            let o = r
                .as_object()
                .ok_or_else(|| type_err(&path, "an object", r))?;
            out.push(range_entry(o, &path)?);
        }
    }
    Ok(())
}

/// One range: `subnet`, optional `gateway`, optional `ipRange` or `rangeStart`/`rangeEnd`.
fn range_entry(o: &Object, path: &str) -> Result<SubnetRequest, Error> {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let subnet_s = opt_str(o, "subnet", &at("subnet"))?
        .ok_or_else(|| Error::InvalidConfig(format!("{}: missing", at("subnet"))))?;
    let subnet: IpNet = subnet_s.parse().map_err(|_| {
        Error::InvalidConfig(format!(
            "{}: {subnet_s:?} is not a subnet in CIDR notation",
            at("subnet")
        ))
    })?;
    let subnet = subnet.trunc();
    let addr = |key: &str| -> Result<Option<IpAddr>, Error> {
        let k = at(key);
        let Some(s) = opt_str(o, key, &k)?.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let ip = parse_ip(s)
            .ok_or_else(|| Error::InvalidConfig(format!("{k}: {s:?} is not an IP address")))?;
        if !subnet.contains(&ip) {
            return Err(Error::InvalidConfig(format!(
                "{k}: {ip} is outside the subnet {subnet}"
            )));
        }
        Ok(Some(ip))
    };
    let gateway = addr("gateway")?;
    let mut ip_range = match opt_str(o, "ipRange", &at("ipRange"))?.filter(|s| !s.is_empty()) {
        None => None,
        Some(r) => {
            let net: IpNet = r.parse().map_err(|_| {
                Error::InvalidConfig(format!("{}: {r:?} is not a CIDR range", at("ipRange")))
            })?;
            let net = net.trunc();
            if !subnet.contains(&net) {
                return Err(Error::InvalidConfig(format!(
                    "{}: {net} is outside the subnet {subnet}",
                    at("ipRange")
                )));
            }
            Some(net)
        }
    };
    let (start, end) = (addr("rangeStart")?, addr("rangeEnd")?);
    if start.is_some() || end.is_some() {
        let start = start.unwrap_or_else(|| first_host(&subnet));
        let end = end.unwrap_or_else(|| last_host(&subnet));
        let net = range_as_prefix(start, end).ok_or_else(|| Error::UnsupportedField {
            key: at("rangeStart"),
            value: format!("{start}-{end}"),
            reason: "netd allocates from a CIDR block; this range is not one (use \"ipRange\", \
                     e.g. 10.88.1.0/24)"
                .into(),
        })?;
        ip_range = Some(net);
    }
    Ok(SubnetRequest {
        subnet,
        gateway,
        ip_range: ip_range.filter(|r| *r != subnet),
    })
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn from_bits(v: u128, width: u8) -> IpAddr {
    if width == 32 {
        IpAddr::V4((v as u32).into())
    } else {
        IpAddr::V6(v.into())
    }
}

fn first_host(net: &IpNet) -> IpAddr {
    let (v, w) = bits(net.network());
    from_bits(v + 1, w)
}

fn last_host(net: &IpNet) -> IpAddr {
    let (v, w) = bits(net.broadcast());
    from_bits(v - 1, w)
}

/// The CIDR block a host-local `rangeStart`..`rangeEnd` stands for, if it is one: the block
/// spanning both ends, covered except perhaps for its first and last address (host-local's
/// defaults skip the network and broadcast addresses).
pub fn range_as_prefix(start: IpAddr, end: IpAddr) -> Option<IpNet> {
    let ((s, ws), (e, we)) = (bits(start), bits(end));
    if ws != we || s > e {
        return None;
    }
    let common = (s ^ e).leading_zeros() as u8 - (128 - ws);
    let net = IpNet::new(start, common).ok()?.trunc();
    let (lo, _) = bits(net.network());
    let (hi, _) = bits(net.broadcast());
    (s <= lo + 1 && e + 1 >= hi).then_some(net)
}

/// Only default routes can be honoured: netd installs exactly those (none on internal networks).
fn check_routes(ipam: &Object) -> Result<(), Error> {
    let Some(routes) = ipam.get("routes").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let arr = routes
        .as_array()
        .ok_or_else(|| type_err("ipam.routes", "a list", routes))?;
    for (i, r) in arr.iter().enumerate() {
        let path = format!("ipam.routes[{i}]");
        let o = r
            .as_object()
            .ok_or_else(|| type_err(&path, "an object", r))?;
        let dst = opt_str(o, "dst", &format!("{path}.dst"))?.unwrap_or("");
        let is_default = dst.parse::<IpNet>().is_ok_and(|n| n.prefix_len() == 0);
        if !is_default {
            return Err(Error::UnsupportedField {
                key: format!("{path}.dst"),
                value: dst.into(),
                reason: "netd installs only the default route via the gateway".into(),
            });
        }
    }
    Ok(())
}

/// Per-container options from `runtimeConfig` (capabilities) and `args.cni`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Requested static addresses (`ips`).
    pub ips: Vec<IpAddr>,
    /// Requested MAC (`mac`).
    pub mac: Option<String>,
    /// DNS aliases (`aliases`, a list or Podman's `{"<network>": [..]}` map).
    pub aliases: Vec<String>,
    /// Published ports (`portMappings`).
    pub port_mappings: Vec<PortMapping>,
}

/// Reads `runtimeConfig` (keys and port-mapping fields in any case: containerd's CRI sends
/// `HostPort`, Podman `hostPort`) and the `args.cni` conventions (`ips`, `mac`).
pub fn runtime_options(obj: &Object, network: &str) -> Result<RuntimeOptions, Error> {
    let mut opts = RuntimeOptions::default();
    let rc = match get_ci(obj, "runtimeConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(v) => return Err(type_err("runtimeConfig", "an object", v)),
    };
    let args_cni = obj
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(Value::as_object);
    for (src, prefix) in [(rc, "runtimeConfig"), (args_cni, "args.cni")] {
        let Some(src) = src else { continue };
        if opts.ips.is_empty() {
            if let Some(v) = get_ci(src, "ips").filter(|v| !v.is_null()) {
                opts.ips = ip_list(v, &format!("{prefix}.ips"))?;
            }
        }
        if opts.mac.is_none() {
            if let Some(v) = get_ci(src, "mac").filter(|v| !v.is_null()) {
                let key = format!("{prefix}.mac");
                let s = v.as_str().ok_or_else(|| type_err(&key, "a string", v))?;
                if !s.is_empty() {
                    opts.mac = Some(normalize_mac(s).ok_or_else(|| {
                        Error::InvalidConfig(format!("{key}: {s:?} is not a MAC address"))
                    })?);
                }
            }
        }
    }
    let Some(rc) = rc else { return Ok(opts) };
    if let Some(v) = get_ci(rc, "aliases").filter(|v| !v.is_null()) {
        opts.aliases = aliases(v, network)?;
    }
    if let Some(v) = get_ci(rc, "portMappings").filter(|v| !v.is_null()) {
        let arr = v
            .as_array()
            .ok_or_else(|| type_err("runtimeConfig.portMappings", "a list", v))?;
        for (i, m) in arr.iter().enumerate() {
            if let Some(pm) = port_mapping(m, &format!("runtimeConfig.portMappings[{i}]"))? {
                if !opts.port_mappings.contains(&pm) {
                    opts.port_mappings.push(pm);
                }
            }
        }
    }
    Ok(opts)
}

fn ip_list(v: &Value, key: &str) -> Result<Vec<IpAddr>, Error> {
    let arr = v
        .as_array()
        .ok_or_else(|| type_err(key, "a list of addresses", v))?;
    arr.iter()
        .map(|x| {
            let s = x
                .as_str()
                .ok_or_else(|| type_err(key, "a list of addresses", v))?;
            parse_ip(s)
                .ok_or_else(|| Error::InvalidConfig(format!("{key}: {s:?} is not an IP address")))
        })
        .collect()
}

fn aliases(v: &Value, network: &str) -> Result<Vec<String>, Error> {
    let key = "runtimeConfig.aliases";
    let list = match v {
        Value::Array(_) => v,
        // Podman: {"<network>": [aliases…]}; entries of other networks are not ours.
        Value::Object(m) => match m.get(network) {
            Some(l) => l,
            None => return Ok(Vec::new()),
        },
        _ => return Err(type_err(key, "a list or a map of network to list", v)),
    };
    let arr = list
        .as_array()
        .ok_or_else(|| type_err(key, "a list of names", list))?;
    let mut out: Vec<String> = Vec::new();
    for a in arr {
        let s = a
            .as_str()
            .ok_or_else(|| type_err(key, "a list of names", list))?;
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

/// One `portMappings` entry; `None` for entries without a host port (nothing to publish).
fn port_mapping(v: &Value, path: &str) -> Result<Option<PortMapping>, Error> {
    let o = v
        .as_object()
        .ok_or_else(|| type_err(path, "an object", v))?;
    let port = |key: &str| -> Result<u16, Error> {
        match get_ci(o, key) {
            None | Some(Value::Null) => Ok(0),
            Some(p) => p
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| type_err(&format!("{path}.{key}"), "a port number", p)),
        }
    };
    let host_port = port("hostPort")?;
    let container_port = port("containerPort")?;
    if host_port == 0 {
        return Ok(None);
    }
    if container_port == 0 {
        return Err(Error::InvalidConfig(format!(
            "{path}.containerPort: missing or 0"
        )));
    }
    let protocol = match get_ci(o, "protocol").and_then(Value::as_str).unwrap_or("") {
        "" => Protocol::Tcp,
        p if p.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
        p if p.eq_ignore_ascii_case("udp") => Protocol::Udp,
        p if p.eq_ignore_ascii_case("sctp") => Protocol::Sctp,
        p => {
            return Err(Error::UnsupportedField {
                key: format!("{path}.protocol"),
                value: p.into(),
                reason: "netd publishes tcp, udp and sctp ports".into(),
            })
        }
    };
    let host_ip = match get_ci(o, "hostIP").and_then(Value::as_str).unwrap_or("") {
        "" => None,
        s => Some(s.parse::<IpAddr>().map_err(|_| {
            Error::InvalidConfig(format!("{path}.hostIP: {s:?} is not an IP address"))
        })?),
    };
    Ok(Some(PortMapping {
        host_ip,
        host_port,
        container_port,
        count: 1,
        protocol,
    }))
}

/// An interface listed in `prevResult`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PrevInterface {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace path; empty for host interfaces.
    #[serde(default)]
    pub sandbox: String,
}

/// An address listed in `prevResult`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PrevIp {
    /// Address with prefix.
    pub address: IpNet,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// The parts of `prevResult` CHECK compares (any version's layout).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PrevResult {
    /// Interfaces.
    #[serde(default)]
    pub interfaces: Vec<PrevInterface>,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<PrevIp>,
}

/// `prevResult`, if present.
pub fn prev_result(obj: &Object) -> Result<Option<PrevResult>, Error> {
    match obj.get("prevResult") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| Error::Decode(format!("prevResult: {e}"))),
    }
}

/// GC's `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
pub fn valid_attachments(obj: &Object) -> Result<Vec<AttachmentId>, Error> {
    #[derive(Deserialize)]
    struct Att {
        #[serde(rename = "containerID")]
        container_id: String,
        ifname: String,
    }
    let (key, v) = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .iter()
        .find_map(|k| obj.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
        .ok_or_else(|| {
            // Without the list every attachment would look stale: refuse rather than wipe.
            Error::InvalidConfig(
                "GC needs \"cni.dev/valid-attachments\" (the attachments to keep)".into(),
            )
        })?;
    let atts: Vec<Att> = serde_json::from_value(v.clone())
        .map_err(|e| Error::InvalidConfig(format!("{key}: {e}")))?;
    Ok(atts
        .into_iter()
        .map(|a| AttachmentId {
            container_id: a.container_id,
            ifname: a.ifname,
        })
        .collect())
}

/// Case-insensitive key lookup (exact match first).
fn get_ci<'a>(o: &'a Object, key: &str) -> Option<&'a Value> {
    o.get(key).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn type_err(key: &str, want: &str, got: &Value) -> Error {
    Error::InvalidConfig(format!("{key}: expected {want}, got {} {got}", kind(got)))
}

fn opt_str<'a>(o: &'a Object, key: &str, path: &str) -> Result<Option<&'a str>, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(type_err(path, "a string", v)),
    }
}

fn opt_bool(o: &Object, key: &str, path: &str) -> Result<Option<bool>, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(type_err(path, "true or false", v)),
    }
}

fn opt_u64(o: &Object, key: &str, path: &str) -> Result<Option<u64>, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| type_err(path, "a non-negative integer", v)),
    }
}

fn opt_str_list(o: &Object, key: &str, path: &str) -> Result<Option<Vec<String>>, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_err(path, "a list of strings", x))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => Err(type_err(path, "a list of strings", v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_api::{Network, Subnet};
    use serde_json::json;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    fn sub(subnet: &str, gateway: Option<&str>, range: Option<&str>) -> SubnetRequest {
        SubnetRequest {
            subnet: subnet.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            ip_range: range.map(|r| r.parse().unwrap()),
        }
    }

    fn network() -> Network {
        Network {
            name: "web".into(),
            id: "1".into(),
            bridge: "nd-web".into(),
            subnets: vec![Subnet {
                subnet: "10.88.0.0/16".parse().unwrap(),
                gateway: "10.88.0.1".parse().unwrap(),
                ip_range: None,
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
        }
    }

    #[test]
    fn stdin_must_be_a_json_object() {
        assert_eq!(parse_stdin(b"{nope").unwrap_err().code(), 6);
        let e = parse_stdin(b"[1]").unwrap_err();
        assert_eq!(e.code(), 6);
        assert!(e.to_string().contains("a list"), "{e}");
        assert!(parse_stdin(b"{}").is_ok());
    }

    #[test]
    fn name_is_required() {
        let e = network_name(&obj(json!({"cniVersion": "1.0.0"}))).unwrap_err();
        assert_eq!(e.code(), 7);
        assert_eq!(network_name(&obj(json!({"name": "web"}))).unwrap(), "web");
        assert!(valid_network_name("web-1.a_b"));
        assert!(!valid_network_name("-web"));
        assert!(!valid_network_name(&"a".repeat(65)));
    }

    #[test]
    fn podman_bridge_conflist_entry_parses() {
        let def = network_def(&obj(json!({
            "cniVersion": "1.0.0", "name": "podman1", "type": "netd-cni",
            "bridge": "cni-podman1", "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                     "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]}
        })))
        .unwrap();
        assert_eq!(
            def,
            NetworkDef {
                subnets: vec![sub("10.89.0.0/24", Some("10.89.0.1"), None)],
                bridge: Some("cni-podman1".into()),
                masquerade: Some(true),
                ..NetworkDef::default()
            }
        );
    }

    #[test]
    fn flat_keys_and_dual_stack() {
        let def = network_def(&obj(json!({
            "name": "n", "subnet": "10.1.0.0/24", "gateway": "10.1.0.254",
            "ipRange": "10.1.0.128/25", "mtu": 1400, "internal": true, "icc": false,
            "dnsDomain": "n.test", "dnsUpstreams": ["9.9.9.9"],
            "subnets": [{"subnet": "fd00:1::/64"}]
        })))
        .unwrap();
        assert_eq!(
            def.subnets,
            vec![
                sub("10.1.0.0/24", Some("10.1.0.254"), Some("10.1.0.128/25")),
                sub("fd00:1::/64", None, None)
            ]
        );
        assert_eq!(def.mtu, Some(1400));
        assert_eq!(def.internal, Some(true));
        assert_eq!(def.icc, Some(false));
        assert_eq!(def.dns_domain.as_deref(), Some("n.test"));
        assert_eq!(def.dns_upstreams, Some(vec!["9.9.9.9".to_string()]));
        let req = def.create_request("n");
        assert_eq!(req.name, "n");
        assert!(req.internal);
        assert_eq!(req.subnets.len(), 2);
    }

    #[test]
    fn host_bits_in_subnet_are_dropped_and_mtu_zero_is_unset() {
        let def = network_def(&obj(json!({"subnet": "10.1.0.7/24", "mtu": 0}))).unwrap();
        assert_eq!(def.subnets, vec![sub("10.1.0.0/24", None, None)]);
        assert_eq!(def.mtu, None);
    }

    #[test]
    fn host_local_start_end_that_form_a_block_become_the_range() {
        let def = network_def(&obj(json!({"ipam": {"ranges": [[{
            "subnet": "10.2.0.0/16", "rangeStart": "10.2.1.1", "rangeEnd": "10.2.1.254"}]]}})))
        .unwrap();
        assert_eq!(
            def.subnets,
            vec![sub("10.2.0.0/16", None, Some("10.2.1.0/24"))]
        );
        // Defaults (whole subnet) collapse to "no range".
        let def = network_def(&obj(json!({"ipam": {"subnet": "10.3.0.0/24",
            "rangeStart": "10.3.0.1"}})))
        .unwrap();
        assert_eq!(def.subnets, vec![sub("10.3.0.0/24", None, None)]);
    }

    #[test]
    fn range_as_prefix_cases() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            range_as_prefix(ip("10.0.0.0"), ip("10.0.0.255")),
            Some("10.0.0.0/24".parse().unwrap())
        );
        assert_eq!(
            range_as_prefix(ip("10.0.0.128"), ip("10.0.0.255")),
            Some("10.0.0.128/25".parse().unwrap())
        );
        assert_eq!(range_as_prefix(ip("10.0.0.10"), ip("10.0.0.200")), None);
        assert_eq!(range_as_prefix(ip("10.0.0.9"), ip("10.0.0.1")), None);
        assert_eq!(
            range_as_prefix(ip("fd00::1"), ip("fd00::ffff")),
            Some("fd00::/112".parse().unwrap())
        );
        assert_eq!(range_as_prefix(ip("10.0.0.1"), ip("fd00::1")), None);
    }

    fn code_and_msg(v: Value) -> (u32, String) {
        let e = network_def(&obj(v)).unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn unsupported_fields_are_code_2_with_key_and_value() {
        for (conf, key, value) in [
            (
                json!({"ipam": {"ranges": [[{"subnet": "10.2.0.0/16", "rangeStart": "10.2.0.10",
                    "rangeEnd": "10.2.0.200"}]]}}),
                "ipam.ranges[0][0].rangeStart",
                "10.2.0.10-10.2.0.200",
            ),
            (json!({"isGateway": false}), "isGateway", "false"),
            (json!({"ipam": {"type": "dhcp"}}), "ipam.type", "dhcp"),
            (
                json!({"ipam": {"subnet": "10.0.0.0/24", "routes": [{"dst": "192.168.0.0/16"}]}}),
                "ipam.routes[0].dst",
                "192.168.0.0/16",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "ipam": {"subnet": "10.1.0.0/24"}}),
                "subnet",
                "10.0.0.0/24, 10.1.0.0/24",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.1.0/24"}]]}),
                "ranges[0]",
                "10.0.1.0/24",
            ),
        ] {
            let (code, msg) = code_and_msg(conf);
            assert_eq!(code, 2, "{msg}");
            assert!(msg.contains(key), "{msg} lacks {key}");
            assert!(msg.contains(value), "{msg} lacks {value}");
        }
    }

    #[test]
    fn invalid_values_are_code_7_naming_the_key() {
        for (conf, needle) in [
            (json!({"mtu": "big"}), "mtu"),
            (json!({"ipMasq": "yes"}), "ipMasq"),
            (json!({"subnet": "10.0.0.0/33"}), "subnet"),
            (
                json!({"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"}),
                "gateway",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "ipRange": "10.1.0.0/25"}),
                "ipRange",
            ),
            (
                json!({"ipam": {"ranges": [[{"gateway": "10.0.0.1"}]]}}),
                "ranges[0][0].subnet",
            ),
            (json!({"ipam": "host-local"}), "ipam"),
            (json!({"dnsUpstreams": [1]}), "dnsUpstreams"),
        ] {
            let (code, msg) = code_and_msg(conf);
            assert_eq!(code, 7, "{msg}");
            assert!(msg.contains(needle), "{msg} lacks {needle}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let def = network_def(&obj(json!({"vlan": 5, "hairpinMode": true,
            "promiscMode": true, "capabilities": {"portMappings": true}})))
        .unwrap();
        assert_eq!(def, NetworkDef::default());
    }

    #[test]
    fn differences_only_for_keys_the_config_sets() {
        let net = network();
        assert!(NetworkDef::default().differences(&net).is_empty());
        let same = NetworkDef {
            subnets: vec![sub("10.88.0.0/16", Some("10.88.0.1"), Some("10.88.0.0/16"))],
            bridge: Some("nd-web".into()),
            mtu: Some(1500),
            internal: Some(false),
            masquerade: Some(true),
            ..NetworkDef::default()
        };
        assert!(
            same.differences(&net).is_empty(),
            "{:?}",
            same.differences(&net)
        );
        let other = NetworkDef {
            subnets: vec![sub("10.89.0.0/16", None, None)],
            bridge: Some("br9".into()),
            mtu: Some(9000),
            ..NetworkDef::default()
        };
        let d = other.differences(&net);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(
            d[0].contains("10.88.0.0/16") && d[0].contains("10.89.0.0/16"),
            "{d:?}"
        );
        assert!(d[1].contains("bridge") && d[1].contains("br9"), "{d:?}");
        assert!(d[2].contains("mtu") && d[2].contains("9000"), "{d:?}");
        let gw = NetworkDef {
            subnets: vec![sub("10.88.0.0/16", Some("10.88.0.254"), None)],
            ..NetworkDef::default()
        };
        assert!(gw.differences(&net)[0].contains("10.88.0.254"));
    }

    #[test]
    fn masquerade_is_not_compared_on_internal_networks() {
        let mut net = network();
        net.internal = true;
        net.masquerade = false;
        let def = NetworkDef {
            masquerade: Some(true),
            ..NetworkDef::default()
        };
        assert!(def.differences(&net).is_empty());
    }

    #[test]
    fn port_mappings_in_both_casings() {
        let o = runtime_options(
            &obj(json!({"runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"HostPort": 5353, "ContainerPort": 53, "Protocol": "UDP", "HostIP": "127.0.0.1"},
                {"hostPort": 0, "containerPort": 9000},
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 7000, "containerPort": 7000, "protocol": "sctp", "hostIP": ""}
            ]}})),
            "web",
        )
        .unwrap();
        assert_eq!(
            o.port_mappings,
            vec![
                PortMapping {
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                    count: 1,
                    protocol: Protocol::Tcp
                },
                PortMapping {
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                    host_port: 5353,
                    container_port: 53,
                    count: 1,
                    protocol: Protocol::Udp
                },
                PortMapping {
                    host_ip: None,
                    host_port: 7000,
                    container_port: 7000,
                    count: 1,
                    protocol: Protocol::Sctp
                },
            ]
        );
    }

    #[test]
    fn bad_port_mappings() {
        let e = runtime_options(
            &obj(json!({"runtimeConfig": {"portMappings": [
                {"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]}})),
            "n",
        )
        .unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(e.to_string().contains("icmp"));
        let e = runtime_options(
            &obj(json!({"runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 1}]}})),
            "n",
        )
        .unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("hostPort"), "{e}");
    }

    #[test]
    fn aliases_as_list_and_as_podman_map() {
        let l = runtime_options(
            &obj(json!({"runtimeConfig": {"aliases": ["a", "b", "a", ""]}})),
            "web",
        )
        .unwrap();
        assert_eq!(l.aliases, vec!["a", "b"]);
        let m = runtime_options(
            &obj(json!({"runtimeConfig": {"aliases": {"web": ["db", "3f2a1b"], "other": ["x"]}}})),
            "web",
        )
        .unwrap();
        assert_eq!(m.aliases, vec!["db", "3f2a1b"]);
        let none = runtime_options(
            &obj(json!({"runtimeConfig": {"aliases": {"other": ["x"]}}})),
            "web",
        )
        .unwrap();
        assert!(none.aliases.is_empty());
        let bad = runtime_options(&obj(json!({"runtimeConfig": {"aliases": 5}})), "web");
        assert_eq!(bad.unwrap_err().code(), 7);
    }

    #[test]
    fn ips_and_mac_from_runtime_config_then_args() {
        let o = runtime_options(
            &obj(json!({
                "runtimeConfig": {"ips": ["10.0.0.5/24", "fd00::5"], "mac": "AA:BB:CC:DD:EE:0F"},
                "args": {"cni": {"ips": ["10.0.0.9"], "mac": "02:00:00:00:00:01"}}
            })),
            "n",
        )
        .unwrap();
        assert_eq!(
            o.ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(o.mac.as_deref(), Some("aa:bb:cc:dd:ee:0f"));
        let o = runtime_options(
            &obj(json!({"args": {"cni": {"ips": ["10.0.0.9"], "mac": "02:00:00:00:00:01"}}})),
            "n",
        )
        .unwrap();
        assert_eq!(o.ips, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(o.mac.as_deref(), Some("02:00:00:00:00:01"));
        let e = runtime_options(&obj(json!({"runtimeConfig": {"ips": ["nope"]}})), "n");
        assert_eq!(e.unwrap_err().code(), 7);
        let e = runtime_options(&obj(json!({"runtimeConfig": {"mac": "00:11"}})), "n");
        assert_eq!(e.unwrap_err().code(), 7);
    }

    #[test]
    fn prev_result_of_any_version() {
        let p = prev_result(&obj(json!({"prevResult": {
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "br"}, {"name": "veth"}, {"name": "eth0", "sandbox": "/n"}],
            "ips": [{"version": "4", "address": "10.0.0.2/24", "interface": 2}],
            "dns": {}
        }})))
        .unwrap()
        .unwrap();
        assert_eq!(p.interfaces[2].sandbox, "/n");
        assert_eq!(p.ips[0].interface, Some(2));
        assert!(prev_result(&obj(json!({}))).unwrap().is_none());
        let e = prev_result(&obj(json!({"prevResult": {"ips": [{"address": "x"}]}})));
        assert_eq!(e.unwrap_err().code(), 6);
    }

    #[test]
    fn gc_attachments_under_both_keys() {
        let list = json!([{"containerID": "c1", "ifname": "eth0"}]);
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let a = valid_attachments(&obj(json!({ key: list.clone() }))).unwrap();
            assert_eq!(
                a,
                vec![AttachmentId {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                }]
            );
        }
        assert_eq!(valid_attachments(&obj(json!({}))).unwrap_err().code(), 7);
        assert!(
            valid_attachments(&obj(json!({"cni.dev/valid-attachments": []})))
                .unwrap()
                .is_empty()
        );
    }
}

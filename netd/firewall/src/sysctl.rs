//! Sysctls the rules depend on, written under `/proc/sys` of the calling thread's network
//! namespace (net sysctls are resolved per opener's namespace).

use crate::FirewallError;

fn write(path: &str, value: &str) -> Result<(), FirewallError> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| FirewallError::Sysctl {
        path: path.to_string(),
        value: value.to_string(),
        source,
    })
}

/// Prepares the current network namespace for a netd bridge:
/// * `net.ipv4.ip_forward=1` — containers reach the outside through the host;
/// * `net.ipv4.conf.<bridge>.route_localnet=1` — `127.0.0.1:hostPort` from the host is DNATed
///   into the bridge with source 127.0.0.1 (masqueraded in postrouting); without it the
///   kernel refuses to route a loopback source out of a non-loopback device (as Docker);
/// * with `ipv6`: `net.ipv6.conf.all.forwarding=1` (note: this makes the host ignore router
///   advertisements on interfaces with `accept_ra=1`; set `accept_ra=2` there if the host
///   configures itself by SLAAC).
///
/// The bridge must exist. Idempotent.
pub fn prepare_bridge_sysctls(bridge: &str, ipv6: bool) -> Result<(), FirewallError> {
    if bridge.is_empty() || bridge.contains('/') || bridge.len() > 15 {
        return Err(FirewallError::Sysctl {
            path: format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            value: "1".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid bridge name"),
        });
    }
    write("/proc/sys/net/ipv4/ip_forward", "1")?;
    write(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )?;
    if ipv6 {
        write("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

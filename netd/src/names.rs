//! Validation of user-supplied names and derivation of kernel interface names. Interface names
//! must fit IFNAMSIZ (16 bytes with the NUL, so 15 visible bytes).

use sha2::{Digest, Sha256};

/// Longest interface name the kernel accepts.
pub const IFNAMSIZ_MAX: usize = 15;
/// Longest network name.
pub const NETWORK_NAME_MAX: usize = 64;
/// Longest container id.
pub const CONTAINER_ID_MAX: usize = 255;

/// A name that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct NameError {
    /// What kind of name ("network name", "interface name", …).
    pub what: &'static str,
    /// The rejected value.
    pub value: String,
    /// Why.
    pub reason: String,
}

fn err(what: &'static str, value: &str, reason: impl Into<String>) -> NameError {
    NameError {
        what,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*` of at most `max` bytes.
fn check_token(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(err(what, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(err(
            what,
            value,
            format!("is {} bytes long, at most {max} are allowed", value.len()),
        ));
    }
    let mut chars = value.chars();
    let first = chars.next().unwrap_or(' ');
    if !first.is_ascii_alphanumeric() {
        return Err(err(what, value, "must start with a letter or digit"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        return Err(err(
            what,
            value,
            format!("contains {bad:?}; only letters, digits, '_', '.' and '-' are allowed"),
        ));
    }
    Ok(())
}

/// Validates a network name.
pub fn check_network_name(name: &str) -> Result<(), NameError> {
    check_token("network name", name, NETWORK_NAME_MAX)
}

/// Validates a container id.
pub fn check_container_id(id: &str) -> Result<(), NameError> {
    check_token("container id", id, CONTAINER_ID_MAX)
}

/// Validates a DNS-ish container name or alias.
pub fn check_dns_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.len() > 253 {
        return Err(err(what, name, "is longer than 253 bytes"));
    }
    check_token(what, name, 253)
}

/// Validates a Linux interface name (what the kernel's `dev_valid_name` accepts).
pub fn check_ifname(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(err(what, name, "must not be empty"));
    }
    if name.len() > IFNAMSIZ_MAX {
        return Err(err(
            what,
            name,
            format!(
                "is {} bytes long; the kernel allows at most {IFNAMSIZ_MAX} (IFNAMSIZ)",
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(err(what, name, "is reserved"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(err(what, name, format!("must not contain {bad:?}")));
    }
    Ok(())
}

fn short_hash(parts: &[&str], len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len].to_string()
}

/// Default bridge name: `nd-<name>` when it fits IFNAMSIZ, else `nd-<12 hex of its hash>`.
pub fn bridge_name(network: &str) -> String {
    let plain = format!("nd-{network}");
    if plain.len() <= IFNAMSIZ_MAX && check_ifname("bridge name", &plain).is_ok() {
        plain
    } else {
        format!("nd-{}", short_hash(&[network], 12))
    }
}

/// Host-side veth name, derived from the endpoint key so a restarted netd can find it.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!("ndv{}", short_hash(&[network, container_id, ifname], 12))
}

/// A locally administered unicast MAC derived from `seed`.
pub fn derived_mac(seed: &str) -> [u8; 6] {
    let h = Sha256::digest(seed.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&h[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// A locally administered unicast MAC unique to `tag` and this moment (a new interface's).
pub fn fresh_mac(tag: &str) -> [u8; 6] {
    derived_mac(&format!("{tag}/{:?}", std::time::SystemTime::now()))
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (a unicast address).
pub fn parse_mac(s: &str) -> Result<[u8; 6], NameError> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(err(
            "MAC address",
            s,
            "expected six ':'-separated hex bytes",
        ));
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(err("MAC address", s, "each byte is two hex digits"));
        }
        mac[i] = u8::from_str_radix(p, 16)
            .map_err(|_| err("MAC address", s, format!("{p:?} is not hex")))?;
    }
    if mac[0] & 1 == 1 {
        return Err(err("MAC address", s, "is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(err("MAC address", s, "is all zeros"));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names() {
        assert!(check_network_name("my-net_1.x").is_ok());
        assert!(check_network_name("").is_err());
        assert!(check_network_name("-x").is_err());
        assert!(check_network_name("a/b").is_err());
        assert!(check_network_name("../etc").is_err());
        assert!(check_network_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn ifnames_fit_ifnamsiz() {
        assert!(check_ifname("interface name", "eth0").is_ok());
        assert!(check_ifname("interface name", &"e".repeat(15)).is_ok());
        let e = check_ifname("interface name", &"e".repeat(16)).unwrap_err();
        assert!(e.to_string().contains("IFNAMSIZ"), "{e}");
        for bad in [".", "..", "a/b", "a:b", "a b", ""] {
            assert!(check_ifname("interface name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_names_fit() {
        assert_eq!(bridge_name("web"), "nd-web");
        let long = bridge_name("a-very-long-network-name");
        assert!(long.len() <= IFNAMSIZ_MAX && long.starts_with("nd-"));
        assert_ne!(long, bridge_name("a-very-long-network-namf"));
        let v = host_veth_name("n", "c", "eth0");
        assert_eq!(v.len(), 15);
        assert_ne!(v, host_veth_name("n", "c", "eth1"));
    }

    #[test]
    fn macs() {
        let m = derived_mac("x");
        assert_eq!(m[0] & 3, 2);
        assert_eq!(parse_mac(&format_mac(&m)).unwrap(), m);
        assert!(parse_mac("01:00:00:00:00:01").is_err());
        assert!(parse_mac("zz:00:00:00:00:01").is_err());
        assert!(parse_mac("00:00:00:00:00").is_err());
    }
}

//! The `CNI_*` environment: which command, for which container, interface and namespace, and
//! the `CNI_ARGS` key/value pairs. Pure functions over a variable lookup, so tests need no
//! process environment.

use std::net::IpAddr;

use crate::error::Error;

/// A CNI command (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container (idempotent).
    Del,
    /// Verify an attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Release attachments not in the valid list.
    Gc,
    /// Report whether ADD can work.
    Status,
}

impl Command {
    /// Parses `CNI_COMMAND` (exact upper case, as the spec writes it).
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }

    /// The command as the spec spells it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// Whether the command acts on one container (needs container id and ifname).
    pub fn per_container(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    /// Whether the command needs `CNI_NETNS` (DEL tolerates an empty or vanished one).
    pub fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

/// `CNI_ARGS` keys this plugin understands; all others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IP=`: requested static addresses (comma separated, prefix lengths dropped).
    pub ips: Vec<IpAddr>,
    /// `MAC=`: requested MAC, normalised to lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// `K8S_POD_NAME`: the container's DNS name (Podman sends the container name here).
    pub pod_name: Option<String>,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub pod_infra_container_id: Option<String>,
    /// `K8S_POD_UID`.
    pub pod_uid: Option<String>,
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// The command.
    pub command: Command,
    /// `CNI_CONTAINERID` (present for ADD/DEL/CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (empty when absent, which DEL, GC and STATUS allow).
    pub netns: String,
    /// `CNI_IFNAME` (present for ADD/DEL/CHECK).
    pub ifname: String,
    /// Parsed `CNI_ARGS`.
    pub args: CniArgs,
}

/// Reads `CNI_COMMAND`: `Ok(None)` when it is unset or empty (print the "about" text).
pub fn command(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Command>, Error> {
    match var("CNI_COMMAND").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(c) => Command::parse(&c).map(Some).ok_or_else(|| Error::Env {
            var: "CNI_COMMAND",
            reason: format!(
                "unknown command {c:?}; expected ADD, DEL, CHECK, VERSION, GC or STATUS"
            ),
        }),
    }
}

/// Reads and validates the variables `command` needs. Empty variables count as absent.
pub fn parse(command: Command, var: &dyn Fn(&str) -> Option<String>) -> Result<Env, Error> {
    let get = |name: &str| var(name).filter(|v| !v.is_empty());
    let required = |name: &'static str| {
        get(name).ok_or_else(|| Error::Env {
            var: name,
            reason: format!("required for {} but missing or empty", command.name()),
        })
    };
    let mut env = Env {
        command,
        container_id: String::new(),
        netns: String::new(),
        ifname: String::new(),
        args: CniArgs::default(),
    };
    if command.per_container() {
        env.container_id = required("CNI_CONTAINERID")?;
        validate_container_id(&env.container_id)?;
        env.ifname = required("CNI_IFNAME")?;
        validate_ifname(&env.ifname)?;
        if command.needs_netns() {
            env.netns = required("CNI_NETNS")?;
        } else {
            env.netns = get("CNI_NETNS").unwrap_or_default();
        }
        env.args = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?;
    }
    Ok(env)
}

/// `CNI_CONTAINERID` must match `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn validate_container_id(id: &str) -> Result<(), Error> {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(Error::Env {
            var: "CNI_CONTAINERID",
            reason: format!(
                "{id:?} is not a valid container id (letters, digits, '_', '.', '-', \
                 starting with a letter or digit)"
            ),
        })
    }
}

/// `CNI_IFNAME` must be a valid Linux interface name.
pub fn validate_ifname(name: &str) -> Result<(), Error> {
    let reason = if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not a valid interface name")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(r) => Err(Error::Env {
            var: "CNI_IFNAME",
            reason: format!("{name:?} {r}"),
        }),
    }
}

/// Parses `CNI_ARGS` (`K=V;K=V`). Unknown keys are ignored whatever `IgnoreUnknown` says: the
/// runtimes that send them (Podman, kubelet) expect every plugin of a chain to tolerate them.
pub fn parse_cni_args(s: &str) -> Result<CniArgs, Error> {
    let bad = |reason: String| Error::Env {
        var: "CNI_ARGS",
        reason,
    };
    let mut args = CniArgs::default();
    for pair in s.split(';').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{pair:?} is not a KEY=VALUE pair")))?;
        let (k, v) = (k.trim(), v.trim());
        if v.is_empty() {
            continue;
        }
        match k {
            "IP" => {
                for ip in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    args.ips.push(
                        parse_ip(ip).ok_or_else(|| bad(format!("IP={ip} is not an IP address")))?,
                    );
                }
            }
            "MAC" => {
                args.mac = Some(
                    normalize_mac(v).ok_or_else(|| bad(format!("MAC={v} is not a MAC address")))?,
                )
            }
            "K8S_POD_NAME" => args.pod_name = Some(v.to_string()),
            "K8S_POD_NAMESPACE" => args.pod_namespace = Some(v.to_string()),
            "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = Some(v.to_string()),
            "K8S_POD_UID" => args.pod_uid = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(args)
}

/// Parses an address, accepting and dropping a `/prefix` (runtimes send both forms).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse().ok()
}

/// Normalises a MAC (`aa:bb:cc:dd:ee:ff` or with `-`) to lower case with colons.
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn env_err(pairs: &[(&str, &str)], cmd: Command) -> Error {
        parse(cmd, &vars(pairs)).unwrap_err()
    }

    #[test]
    fn command_absent_or_empty_means_about() {
        assert_eq!(command(&vars(&[])).unwrap(), None);
        assert_eq!(command(&vars(&[("CNI_COMMAND", "")])).unwrap(), None);
    }

    #[test]
    fn unknown_command_is_code_4_naming_the_variable() {
        let e = command(&vars(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("CNI_COMMAND"), "{e}");
        assert!(e.to_string().contains("FROB"), "{e}");
    }

    #[test]
    fn every_command_parses() {
        for (s, c) in [
            ("ADD", Command::Add),
            ("DEL", Command::Del),
            ("CHECK", Command::Check),
            ("VERSION", Command::Version),
            ("GC", Command::Gc),
            ("STATUS", Command::Status),
        ] {
            assert_eq!(Command::parse(s), Some(c));
        }
    }

    #[test]
    fn add_env_parses() {
        let env = parse(Command::Add, &vars(&add_env())).unwrap();
        assert_eq!(env.container_id, "abc123");
        assert_eq!(env.netns, "/run/netns/x");
        assert_eq!(env.ifname, "eth0");
    }

    #[test]
    fn missing_required_variables_are_named() {
        for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            let pairs: Vec<_> = add_env().into_iter().filter(|(k, _)| *k != var).collect();
            let e = env_err(&pairs, Command::Add);
            assert_eq!(e.code(), 4);
            assert!(e.to_string().starts_with(var), "{e}");
            assert!(e.to_string().contains("ADD"), "{e}");
        }
    }

    #[test]
    fn empty_but_present_variables_count_as_absent() {
        let mut pairs = add_env();
        pairs.push(("CNI_ARGS", ""));
        pairs.retain(|(k, _)| *k != "CNI_PATH");
        pairs.push(("CNI_PATH", ""));
        assert!(parse(Command::Add, &vars(&pairs)).is_ok());
        // DEL with an empty netns (containerd's second DEL) is fine.
        let del = [
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ];
        let env = parse(Command::Del, &vars(&del)).unwrap();
        assert_eq!(env.netns, "");
        // ...but ADD with an empty netns is not.
        let mut pairs = add_env();
        pairs.retain(|(k, _)| *k != "CNI_NETNS");
        pairs.push(("CNI_NETNS", ""));
        assert_eq!(env_err(&pairs, Command::Add).code(), 4);
    }

    #[test]
    fn gc_status_version_need_no_container_variables() {
        for c in [Command::Gc, Command::Status, Command::Version] {
            assert!(parse(c, &vars(&[])).is_ok());
        }
    }

    #[test]
    fn container_id_rules() {
        for ok in ["a", "0", "abc-DEF_1.2", "f".repeat(64).as_str()] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["-a", "_a", ".a", "a/b", "a b", "a:b", "ä"] {
            let e = validate_container_id(bad).unwrap_err();
            assert_eq!(e.code(), 4);
            assert!(e.to_string().contains("CNI_CONTAINERID"));
        }
    }

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "e", "a.b", "x".repeat(15).as_str()] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "x".repeat(16).as_str(),
        ] {
            let e = validate_ifname(bad).unwrap_err();
            assert_eq!(e.code(), 4, "{bad}");
            assert!(e.to_string().contains("CNI_IFNAME"));
        }
    }

    #[test]
    fn cni_args_known_and_unknown_keys() {
        let a = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IP=10.0.0.5/24,fd00::5;\
             MAC=AA-bb-CC-dd-EE-ff;FOO=bar",
        )
        .unwrap();
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.pod_infra_container_id.as_deref(), Some("abc"));
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(
            a.ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(a.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    }

    #[test]
    fn cni_args_tolerates_empty_pieces_and_values() {
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
        assert_eq!(parse_cni_args(";;").unwrap(), CniArgs::default());
        assert_eq!(parse_cni_args("IP=;MAC=").unwrap(), CniArgs::default());
        // Unknown keys without IgnoreUnknown are still ignored.
        assert_eq!(parse_cni_args("FOO=1").unwrap(), CniArgs::default());
    }

    #[test]
    fn cni_args_errors_name_the_variable_and_pair() {
        for (s, needle) in [
            ("garbage", "garbage"),
            ("IP=10.0.0.999", "10.0.0.999"),
            ("MAC=zz:00:00:00:00:00", "zz:00"),
        ] {
            let e = parse_cni_args(s).unwrap_err();
            assert_eq!(e.code(), 4);
            assert!(e.to_string().starts_with("CNI_ARGS"), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}

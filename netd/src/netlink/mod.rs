//! Links, addresses and routes over rtnetlink. A [`Netlink`] is bound to the namespace its
//! socket was opened in; everything here is kernel plumbing and knows nothing of the API.

mod error;
mod graveyard;
mod ops;

pub use error::NetlinkError;
pub use ops::{BridgeSpec, LinkInfo, Netlink, RouteEntry, VethSpec};

use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

/// Turns IPv6 off on an interface of netd's own namespace, before it goes up.
///
/// A host-side veth is a bridge port and needs no address, but with IPv6 on it gets a link-local
/// address and three routes; every interface event then walks the whole IPv6 FIB
/// (`fib6_ifdown`), so each attach got slower with every container (profiled: ADD 4 ms of netd
/// CPU with 50 containers, 11 ms with 900). Only the sysctl can do it (rtnetlink sets an
/// interface's IPv6 address generation, not `disable_ipv6`); it is written relative to
/// [`ipv6_conf_dir`], not by its full path.
pub fn disable_ipv6(ifname: &str) -> Result<(), NetlinkError> {
    let res = match ipv6_conf_dir() {
        Some(dir) => openat(
            dir,
            format!("{ifname}/disable_ipv6").as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .and_then(|fd| File::from(fd).write_all(b"1")),
        None => std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
            "1",
        ),
    };
    match res {
        Ok(()) => Ok(()),
        // No IPv6 in this kernel or namespace: nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetlinkError::Sysctl {
            key: format!("net.ipv6.conf.{ifname}.disable_ipv6"),
            source: e,
        }),
    }
}

/// `/proc/sys/net/ipv6/conf` of netd's own namespace, opened on first use (`None` without IPv6).
///
/// Every namespace has its own `ipv6` directory under `/proc/sys/net`, all of them in one dentry
/// hash chain, and `/proc/sys` lookups cannot take the lock-free path walk: resolving a full
/// `/proc/sys/net/ipv6/...` path compares, under a lock, one entry per namespace on the machine
/// whose IPv6 sysctls anyone ever read or wrote (every container of the reference plugins and
/// netavark: 90 µs per open with 1,000 of them, ~1 ms with cold caches, the largest part of
/// netd's growth from the 1st to the 1,000th attach interleaved with them; docs/benchmarks.md,
/// fourteenth round). Opened relative to this directory, the walk starts below that chain.
/// Only called on netd's own threads outside any container's namespace (`/proc/sys` answers
/// for the namespace of the thread that looks a name up).
fn ipv6_conf_dir() -> Option<&'static File> {
    static DIR: OnceLock<Option<File>> = OnceLock::new();
    DIR.get_or_init(|| File::open("/proc/sys/net/ipv6/conf").ok())
        .as_ref()
}

/// Writes a sysctl under `/proc/sys` of the calling thread's network namespace.
pub fn set_sysctl(key: &str, value: &str) -> Result<(), NetlinkError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| NetlinkError::Sysctl {
        key: key.to_string(),
        source: e,
    })
}

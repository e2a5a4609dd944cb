//! Links, addresses and routes over rtnetlink. A [`Netlink`] is bound to the namespace its
//! socket was opened in; everything here is kernel plumbing and knows nothing of the API.

mod error;
mod ops;

pub use error::NetlinkError;
pub use ops::{BridgeSpec, LinkInfo, Netlink, RouteEntry, VethSpec};

/// Writes a sysctl under `/proc/sys` of the calling thread's network namespace.
pub fn set_sysctl(key: &str, value: &str) -> Result<(), NetlinkError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| NetlinkError::Sysctl {
        key: key.to_string(),
        source: e,
    })
}

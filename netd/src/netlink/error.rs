//! The netlink error type: what was being done, to what, and the kernel's errno.

/// A failed netlink operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel (or the socket) refused an operation.
    #[error("{op} {target}: {message}")]
    Kernel {
        /// What was being done, e.g. "creating bridge".
        op: &'static str,
        /// To what, e.g. "nd-web".
        target: String,
        /// Errno, when the kernel gave one.
        errno: Option<i32>,
        /// Human text of the cause.
        message: String,
    },
    /// Opening the netlink socket failed.
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// An interface was not found.
    #[error("{op} {target}: no such interface")]
    NoSuchLink {
        /// What was being done.
        op: &'static str,
        /// Which interface.
        target: String,
    },
    /// A sysctl could not be written.
    #[error("setting sysctl {key}: {source}")]
    Sysctl {
        /// The key.
        key: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The kernel did not answer in time.
    #[error("{op} {target}: the kernel did not answer within 30s")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// To what.
        target: String,
    },
    /// An existing interface does not match what netd needs.
    #[error("{0}")]
    Conflict(String),
}

impl NetlinkError {
    /// Wraps an rtnetlink error with context.
    pub(crate) fn kernel(op: &'static str, target: impl Into<String>, e: rtnetlink::Error) -> Self {
        let (errno, message) = match &e {
            rtnetlink::Error::NetlinkError(m) => {
                let code = -m.raw_code();
                (
                    Some(code),
                    std::io::Error::from_raw_os_error(code).to_string(),
                )
            }
            other => (None, other.to_string()),
        };
        NetlinkError::Kernel {
            op,
            target: target.into(),
            errno,
            message,
        }
    }

    /// The errno, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => *errno,
            NetlinkError::NoSuchLink { .. } => Some(libc::ENODEV),
            _ => None,
        }
    }
}

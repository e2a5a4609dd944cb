//! Network namespaces as handles. A namespace is an open file (`OwnedFd`); to act inside it we
//! open a netlink socket on a short-lived dedicated thread that has `setns`ed into it, then use
//! that socket from async code. A tokio worker thread never switches namespace (kata-containers
//! and containrs both hit that bug: the worker keeps serving other tasks in the wrong netns).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// Errors opening or entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace path does not exist.
    #[error("network namespace {} does not exist", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path exists but is not a network namespace or cannot be opened.
    #[error("opening network namespace {}: {source}", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Entering the namespace or opening a netlink socket in it failed.
    #[error("entering network namespace {}: {message}", path.display())]
    Enter {
        /// The path given.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
    id: NetnsId,
}

/// Identity of a namespace file (device, inode), stable while the namespace lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetnsId {
    /// st_dev of the nsfs inode.
    pub dev: u64,
    /// st_ino of the nsfs inode.
    pub ino: u64,
}

/// nsfs magic from `linux/magic.h`: a bind-mounted /run/netns file or /proc/PID/ns/net.
const NSFS_MAGIC: i64 = 0x6e73_6673;

impl Netns {
    /// Opens the namespace at `path` and checks it really is a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NetnsError::NotFound { path: path.clone() }
            } else {
                NetnsError::Open {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| NetnsError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        // A plain file left behind after `ip netns delete` unmounted it is not a namespace.
        if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(NetnsError::NotFound { path });
        }
        let meta = file.metadata().map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        let id = NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok(Netns {
            fd: file.into(),
            path,
            id,
        })
    }

    /// The namespace the calling thread is in (`/proc/thread-self/ns/net`).
    pub fn current() -> Result<Netns, NetnsError> {
        Netns::open("/proc/thread-self/ns/net")
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its identity.
    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The file descriptor (for `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Runs `f` on a fresh thread that has entered this namespace and returns its result.
    /// Sockets created by `f` stay bound to this namespace after the thread ends.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        let fd = self.fd.try_clone().map_err(|e| NetnsError::Enter {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("netd-netns".into())
            .spawn(move || {
                setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
                    path: path.clone(),
                    message: format!("setns: {e}"),
                })?;
                Ok(f())
            })
            .map_err(|e| NetnsError::Enter {
                path: self.path.clone(),
                message: format!("spawning thread: {e}"),
            })?
            .join()
            .map_err(|_| NetnsError::Enter {
                path: self.path.clone(),
                message: "namespace thread panicked".into(),
            })?
    }
}

/// Whether the namespace at `path` still exists and is the one identified by `id`.
pub fn still_exists(path: &Path, id: NetnsId) -> bool {
    match Netns::open(path) {
        Ok(ns) => ns.id() == id,
        Err(_) => false,
    }
}

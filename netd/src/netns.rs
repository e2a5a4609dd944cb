//! Network namespaces as handles. A namespace is an open file (`OwnedFd`); to act inside it a
//! thread `setns`es into it for one synchronous job (open a netlink socket, write a sysctl) and
//! straight back, then async code uses the socket.
//!
//! The job runs on the calling thread (netd's runtime thread): it takes tens of microseconds, while a
//! hop to another thread costs two wake-ups, which on an idle machine cost more than the job
//! (measured, docs/benchmarks.md). Earlier versions spawned a thread per job, then used a pool.
//! A thread never stays in a container's namespace (that would keep the namespace, and the
//! container's veth, alive after the runtime deleted it): a test checks it.

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

    /// Runs `f` on the calling thread inside this namespace and brings the thread back, before
    /// anything else can run on it, to the namespace it was in when it first called `run`
    /// (netd's threads never leave netd's namespace otherwise). Sockets created by `f` stay
    /// bound to this namespace after `f` returns.
    ///
    /// `f` is synchronous and must not call `run` itself: nothing else runs on the thread
    /// while it is away, so a tokio worker can call this (it is never parked or handed
    /// another task in the wrong namespace, the bug kata-containers and containrs hit with
    /// `setns` around an `.await`). If the thread cannot get back, the process aborts rather
    /// than serve anything from a container's namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let enter_err = |message: String| NetnsError::Enter {
            path: self.path.clone(),
            message,
        };
        HOME.with(|home| {
            let home = home
                .as_ref()
                .map_err(|e| enter_err(format!("opening this thread's namespace: {e}")))?;
            setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| enter_err(format!("setns: {e}")))?;
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
                tracing::error!(error = %e, "cannot return to netd's namespace; aborting");
                std::process::abort();
            }
            out.map_err(|_| enter_err("namespace job panicked".into()))
        })
    }
}

thread_local! {
    /// The namespace each thread started in, where [`Netns::run`] brings it back.
    static HOME: Result<OwnedFd, std::io::Error> =
        File::open("/proc/thread-self/ns/net").map(OwnedFd::from);
}

/// Whether the namespace at `path` still exists and is the one identified by `id`.
pub fn still_exists(path: &Path, id: NetnsId) -> bool {
    match Netns::open(path) {
        Ok(ns) => ns.id() == id,
        Err(_) => false,
    }
}

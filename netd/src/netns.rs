//! Network namespaces as handles. A namespace is an open file (`OwnedFd`); to act inside it we
//! open a netlink socket on a dedicated thread that has `setns`ed into it, then use that socket
//! from async code. A tokio worker thread never switches namespace (kata-containers and
//! containrs both hit that bug: the worker keeps serving other tasks in the wrong netns).
//!
//! The dedicated threads are a small pool: spawning a thread per job cost ~0.1 ms of every
//! attach. A pool thread enters the job's namespace, runs it, and goes back to netd's own
//! namespace before it takes the next job, so it never pins a container's namespace (which would
//! keep the container's veth alive after the runtime deleted the namespace).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

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

    /// Runs `f` on a pool thread that has entered this namespace and returns its result.
    /// Sockets created by `f` stay bound to this namespace after `f` returns.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        let enter_err = |message: String| NetnsError::Enter {
            path: self.path.clone(),
            message,
        };
        let fd = self.fd.try_clone().map_err(|e| enter_err(e.to_string()))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let out = match setns(fd.as_fd(), CloneFlags::CLONE_NEWNET) {
                Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                    .map_err(|_| "namespace job panicked".to_string()),
                Err(e) => Err(format!("setns: {e}")),
            };
            // The caller may have given up (it never does today); nothing to do then.
            let _ = tx.send(out);
        });
        pool()
            .map_err(|e| enter_err(format!("starting the namespace threads: {e}")))?
            .submit(job)
            .map_err(enter_err)?;
        rx.recv()
            .map_err(|_| enter_err("namespace thread exited".into()))?
            .map_err(enter_err)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run jobs inside other namespaces (enough for the parallel attaches of one
/// runtime; a job is a socket open or a sysctl write, tens of microseconds).
const POOL_THREADS: usize = 4;

/// The namespace-job threads and netd's own namespace, which they return to after each job.
struct Pool {
    jobs: Mutex<Sender<Job>>,
    queue: Arc<Mutex<Receiver<Job>>>,
    home: Arc<OwnedFd>,
}

fn pool() -> Result<&'static Pool, std::io::Error> {
    static POOL: OnceLock<Pool> = OnceLock::new();
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    // The process's namespace, not the calling thread's: that is where netd lives.
    let home = Arc::new(OwnedFd::from(File::open("/proc/self/ns/net")?));
    let (tx, rx) = mpsc::channel();
    let p = POOL.get_or_init(|| Pool {
        jobs: Mutex::new(tx),
        queue: Arc::new(Mutex::new(rx)),
        home,
    });
    Ok(p)
}

impl Pool {
    /// Queues a job, starting the threads on first use and replacing any that died.
    fn submit(&self, job: Job) -> Result<(), String> {
        let alive = Arc::strong_count(&self.queue) - 1;
        for _ in alive..POOL_THREADS {
            let (queue, home) = (self.queue.clone(), self.home.clone());
            std::thread::Builder::new()
                .name("netd-netns".into())
                .spawn(move || worker(&queue, &home))
                .map_err(|e| format!("spawning a namespace thread: {e}"))?;
        }
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| "namespace threads are gone".to_string())
    }
}

/// Takes jobs until the pool is dropped; exits (and is replaced) if it cannot get home.
fn worker(queue: &Arc<Mutex<Receiver<Job>>>, home: &OwnedFd) {
    loop {
        let job = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
        if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
            tracing::error!(error = %e, "namespace thread cannot return to netd's namespace; exiting");
            return;
        }
    }
}

/// Whether the namespace at `path` still exists and is the one identified by `id`.
pub fn still_exists(path: &Path, id: NetnsId) -> bool {
    match Netns::open(path) {
        Ok(ns) => ns.id() == id,
        Err(_) => false,
    }
}

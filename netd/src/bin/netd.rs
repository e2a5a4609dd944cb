//! `netd`: the container networking daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use netd::daemon::{Config, Daemon};
use netd::server::{self, AccessPolicy};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// Container networking daemon: bridges, veths, IPAM, firewall and DNS over netlink.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// API socket path (also read from NETD_SOCKET).
    #[arg(long, env = "NETD_SOCKET", default_value = netd_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// State directory.
    #[arg(long, default_value = "/var/lib/netd")]
    state_dir: PathBuf,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Pool for automatic subnets, `BASE/LEN[:SIZE]` (repeatable; replaces the defaults).
    #[arg(long = "subnet-pool")]
    subnet_pools: Vec<netd_ipam::SubnetPool>,
    /// Extra uid allowed to use the API besides root (repeatable).
    #[arg(long = "allow-uid")]
    allow_uids: Vec<u32>,
    /// Do not program nftables (NAT, isolation, published ports).
    #[arg(long)]
    no_firewall: bool,
    /// Do not serve DNS on the gateways.
    #[arg(long)]
    no_dns: bool,
    /// Port of the DNS listeners on each gateway.
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    /// Upstream timeout of the DNS forwarder, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    dns_upstream_timeout_ms: u64,
    /// resolv.conf read for upstream DNS servers.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Seconds between sweeps that release endpoints whose namespace vanished.
    #[arg(long, default_value_t = 10)]
    gc_interval: u64,
}

fn init_logs(format: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `target=level` directives only (`Targets`): `EnvFilter`'s span and field filters pull in a
    // regex engine, 0.2 MB of code that would stay resident in the daemon.
    let filter = std::env::var("NETD_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        // hickory-server logs every query at info: far too loud for a daemon.
        .unwrap_or_else(|| {
            "info,hickory_server=warn"
                .parse()
                .expect("valid default directives")
        });
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry.with(layer.json()).init();
    } else {
        registry.with(layer).init();
    }
}

/// `pow` for the whole process, from the `libm` crate (a port of musl's), instead of libm.so.6.
///
/// tokio's multi-thread scheduler is compiled in (hickory's `tokio` feature asks for it) but
/// never runs: netd uses the current-thread runtime. Its statistics' one call to `pow` was the
/// only reason the daemon needed libm.so.6, and loading it cost 0.3 MiB resident: the loader
/// binds every import at start (full RELRO), which runs libm's IFUNC resolver for `pow` and
/// faults in the code around it (docs/benchmarks.md, sixth round).
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

// One thread runs the API, the DNS server and the netlink sockets: an attach is a chain of short
// steps, and on an idle machine every hand-off between threads costs a wake-up (0.15-0.9 ms
// scheduling delays measured with `perf sched`); store commits and firewall batches go to the
// blocking pool, interface deletions to a netlink thread of their own.
fn main() -> anyhow::Result<()> {
    netd::memory::one_arena();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(&args.log_format);
    let mut cfg = Config::new(&args.state_dir);
    if !args.subnet_pools.is_empty() {
        cfg.subnet_pools = args.subnet_pools.clone();
    }
    cfg.gc_interval = std::time::Duration::from_secs(args.gc_interval.max(1));
    cfg.firewall = !args.no_firewall;
    // The heap is trimmed a second after the last API request or DNS burst.
    let idle = netd::memory::IdleTrim::spawn(std::time::Duration::from_secs(1));
    let poke = idle.clone();
    cfg.dns = (!args.no_dns).then(|| netd_dns::DnsConfig {
        on_load: Some(netd_dns::LoadHook(std::sync::Arc::new(move || poke.poke()))),
        port: args.dns_port,
        upstream_timeout: std::time::Duration::from_millis(args.dns_upstream_timeout_ms.max(1)),
        resolv_conf: args.resolv_conf.clone(),
        ..Default::default()
    });
    let daemon = Daemon::start(cfg)
        .await
        .with_context(|| format!("starting netd with state in {}", args.state_dir.display()))?;
    let listener = server::bind(&args.socket)
        .with_context(|| format!("binding API socket {}", args.socket.display()))?;
    let gc = daemon.spawn_gc();
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("shutting down; kernel state stays in place");
    };
    info!(socket = %args.socket.display(), state_dir = %args.state_dir.display(), "netd ready");
    server::run(
        listener,
        daemon.clone(),
        AccessPolicy {
            allowed_uids: args.allow_uids,
        },
        idle,
        shutdown,
    )
    .await
    .context("serving the API")?;
    gc.abort();
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pow_is_libm_pow() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(10.0, -2.0), 0.01);
        assert!((super::pow(0.5, 0.5) - 0.5f64.sqrt()).abs() < 1e-15);
        assert!(super::pow(-1.0, 0.5).is_nan());
        assert_eq!(super::pow(f64::INFINITY, -1.0), 0.0);
    }
}

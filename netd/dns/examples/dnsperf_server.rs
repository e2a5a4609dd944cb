//! Benchmark server: netd's DNS serving N container names, for driving with `dnsperf`.
//!
//! Usage: `dnsperf_server LISTEN_IP PORT SUBNET NAMES [UPSTREAM_IP:PORT]`. Names are `c0` ..
//! `c<N-1>` on network `netdperf` (so `c7.netdperf` resolves), with IPv4 addresses taken in
//! order from SUBNET starting at its 10th address; a hosts file with the same names for dnsmasq
//! is printed by `--hosts`. Runs on a multi-thread tokio runtime like the daemon (`#[tokio::main]`)
//! until killed. Run it inside a network namespace that holds LISTEN_IP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use netd_dns::{Dns, DnsConfig, EndpointDns, NetworkDns};

/// The i-th endpoint address of the subnet (skipping the first 10 for gateways and clients).
fn addr(subnet: &IpNet, i: u32) -> IpAddr {
    let IpAddr::V4(base) = subnet.network() else {
        panic!("the benchmark uses an IPv4 subnet");
    };
    IpAddr::V4(Ipv4Addr::from(u32::from(base) + 10 + i))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: {} LISTEN_IP PORT SUBNET NAMES [UPSTREAM] [--hosts]",
            args[0]
        );
        std::process::exit(2);
    }
    let listen: IpAddr = args[1].parse().expect("LISTEN_IP");
    let port: u16 = args[2].parse().expect("PORT");
    let subnet: IpNet = args[3].parse().expect("SUBNET");
    let names: u32 = args[4].parse().expect("NAMES");
    let upstream: Option<SocketAddr> = args
        .get(5)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("UPSTREAM"));
    if args.iter().any(|a| a == "--hosts") {
        for i in 0..names {
            println!("{} c{i} c{i}.netdperf", addr(&subnet, i));
        }
        return;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let dns = Dns::new(DnsConfig {
            port,
            ..DnsConfig::default()
        });
        dns.add_network(NetworkDns {
            name: "netdperf".into(),
            subnets: vec![subnet],
            listen: vec![listen],
            domain: None,
            upstreams: upstream.into_iter().collect(),
            internal: false,
        })
        .await
        .expect("add_network");
        let t0 = std::time::Instant::now();
        for i in 0..names {
            dns.add_endpoint(
                "netdperf",
                EndpointDns {
                    key: format!("key{i}"),
                    names: vec![format!("c{i}")],
                    addrs: vec![addr(&subnet, i)],
                },
            )
            .expect("add_endpoint");
        }
        eprintln!(
            "serving {names} names on {listen}:{port} (registered in {:.1?})",
            t0.elapsed()
        );
        std::future::pending::<()>().await;
    });
}

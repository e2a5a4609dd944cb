//! `netctl`: the command-line client of netd.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use netd_api::{AttachRequest, Client, CreateNetwork, NetworkInspect, PortMapping, SubnetRequest};

/// Manage netd container networks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// netd socket (default: $NETD_SOCKET, else /run/netd/netd.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show a network and its endpoints.
    Inspect {
        /// Network name.
        name: String,
    },
    /// Remove networks (refused while they have endpoints, unless --force).
    #[command(alias = "remove")]
    Rm {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Detach every endpoint first.
        #[arg(long, short)]
        force: bool,
    },
    /// Remove every network without endpoints.
    Prune,
    /// Attach a container (network namespace) to a network.
    Connect(ConnectArgs),
    /// Detach a container from a network.
    Disconnect(DisconnectArgs),
    /// Show daemon status.
    Status,
    /// Show what a name resolves to on a network (netd's own records).
    Dns {
        /// Name (container name, alias, short id, name.network).
        name: String,
        /// Network.
        #[arg(long, short)]
        network: String,
    },
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Network name.
    name: String,
    /// Subnet (repeat for dual stack: one IPv4, one IPv6). Default: picked from the pools.
    #[arg(long)]
    subnet: Vec<IpNet>,
    /// Gateway (one per family; default the first host address).
    #[arg(long)]
    gateway: Vec<IpAddr>,
    /// Range dynamic addresses come from (one per family).
    #[arg(long)]
    ip_range: Vec<IpNet>,
    /// Address never handed out (repeatable).
    #[arg(long = "aux-address")]
    aux_address: Vec<IpAddr>,
    /// No route out, no NAT.
    #[arg(long)]
    internal: bool,
    /// MTU.
    #[arg(long)]
    mtu: Option<u32>,
    /// Bridge name (at most 15 bytes).
    #[arg(long)]
    bridge: Option<String>,
    /// Do not masquerade traffic leaving the host.
    #[arg(long)]
    no_masquerade: bool,
    /// Block traffic between containers of this network.
    #[arg(long)]
    disable_icc: bool,
    /// SNAT outgoing traffic to this host address instead of masquerading.
    #[arg(long)]
    snat: Option<IpAddr>,
    /// DNS search domain (e.g. mynet.netd).
    #[arg(long)]
    dns_domain: Option<String>,
    /// Upstream DNS server (repeatable).
    #[arg(long)]
    dns_upstream: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long)]
    label: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ConnectArgs {
    /// Network name.
    network: String,
    /// Path of the container's network namespace (e.g. /run/netns/c1).
    #[arg(long)]
    netns: String,
    /// Container name (resolvable by DNS).
    #[arg(long)]
    name: Option<String>,
    /// Container id (default: the name, else the namespace file name).
    #[arg(long)]
    container_id: Option<String>,
    /// Interface name inside the container.
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// Static address (one per family).
    #[arg(long)]
    ip: Vec<IpAddr>,
    /// MAC address.
    #[arg(long)]
    mac: Option<String>,
    /// DNS alias (repeatable).
    #[arg(long)]
    alias: Vec<String>,
    /// Publish a port: [hostIP:]hostPort[-end]:containerPort[-end][/tcp|udp|sctp].
    #[arg(long = "publish", short = 'p')]
    publish: Vec<netd_firewall::PortMapping>,
}

#[derive(clap::Args, Debug)]
struct DisconnectArgs {
    /// Network name.
    network: String,
    /// Detach the endpoint(s) in this namespace.
    #[arg(long, required_unless_present_any = ["container_id", "name"])]
    netns: Option<String>,
    /// Detach by container id.
    #[arg(long)]
    container_id: Option<String>,
    /// Detach by container name.
    #[arg(long)]
    name: Option<String>,
    /// Only this interface.
    #[arg(long)]
    ifname: Option<String>,
}

/// The firewall's parser reads Docker's `-p` syntax; the API carries the same fields.
fn api_port(p: &netd_firewall::PortMapping) -> PortMapping {
    PortMapping {
        host_ip: p.host_ip,
        host_port: p.host_port,
        container_port: p.container_port,
        count: p.count,
        protocol: match p.protocol {
            netd_firewall::Protocol::Tcp => netd_api::Protocol::Tcp,
            netd_firewall::Protocol::Udp => netd_api::Protocol::Udp,
            netd_firewall::Protocol::Sctp => netd_api::Protocol::Sctp,
        },
    }
}

fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn build_create(a: CreateArgs) -> Result<CreateNetwork> {
    let mut subnets = Vec::new();
    for s in &a.subnet {
        let fam = |ip: &IpAddr| ip.is_ipv4() == s.addr().is_ipv4();
        subnets.push(SubnetRequest {
            subnet: *s,
            gateway: a.gateway.iter().copied().find(fam),
            ip_range: a.ip_range.iter().copied().find(|r| s.contains(r)),
        });
    }
    if subnets.is_empty() && (!a.gateway.is_empty() || !a.ip_range.is_empty()) {
        bail!("--gateway and --ip-range need --subnet");
    }
    for g in &a.gateway {
        if !a.subnet.iter().any(|s| s.addr().is_ipv4() == g.is_ipv4()) {
            bail!("gateway {g} has no --subnet of its address family");
        }
    }
    for r in &a.ip_range {
        if !a.subnet.iter().any(|s| s.contains(r)) {
            bail!("ip range {r} is not inside any --subnet");
        }
    }
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.label {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow!("label {l:?} is not KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(CreateNetwork {
        name: a.name,
        subnets,
        aux_addresses: a.aux_address,
        internal: a.internal,
        mtu: a.mtu,
        bridge: a.bridge,
        masquerade: Some(!a.no_masquerade),
        icc: Some(!a.disable_icc),
        snat: a.snat,
        dns_domain: a.dns_domain,
        dns_upstreams: a.dns_upstream,
        labels,
    })
}

fn print_inspect(n: &NetworkInspect) {
    let net = &n.network;
    println!("Name:      {}", net.name);
    println!("Id:        {}", net.id);
    println!("Bridge:    {}", net.bridge);
    for s in &net.subnets {
        match s.ip_range {
            Some(r) => println!("Subnet:    {} gateway {} range {}", s.subnet, s.gateway, r),
            None => println!("Subnet:    {} gateway {}", s.subnet, s.gateway),
        }
    }
    println!("Internal:  {}", net.internal);
    println!("Masquerade:{}", if net.masquerade { " yes" } else { " no" });
    if let Some(d) = &net.dns_domain {
        println!("Domain:    {d}");
    }
    println!("Endpoints: {}", n.endpoints.len());
    if !n.endpoints.is_empty() {
        let mut rows = vec![vec![
            "CONTAINER".into(),
            "NAME".into(),
            "IFNAME".into(),
            "ADDRESSES".into(),
            "MAC".into(),
            "NETNS".into(),
        ]];
        for e in &n.endpoints {
            let mut names: Vec<String> = e.name.iter().cloned().collect();
            names.extend(e.aliases.iter().cloned());
            rows.push(vec![
                e.container_id.clone(),
                names.join(","),
                e.ifname.clone(),
                e.ips
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                e.mac.clone(),
                e.netns.clone(),
            ]);
        }
        print!("{}", table(rows));
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Cmd::Completions { shell } = &cli.cmd {
        let mut cmd = Cli::command();
        clap_complete::generate(*shell, &mut cmd, "netctl", &mut std::io::stdout());
        return Ok(());
    }
    let socket = netd_api::socket_path(cli.socket.as_deref());
    let c = Client::new(socket);
    let json = cli.format == Format::Json;
    match cli.cmd {
        Cmd::Create(a) => {
            let req = build_create(a)?;
            let net = c.create_network(&req)?;
            if json {
                print_json(&net)?;
            } else {
                println!("{}", net.name);
            }
        }
        Cmd::Ls => {
            let nets = c.list_networks()?;
            if json {
                return print_json(&nets);
            }
            let mut rows = vec![vec![
                "NAME".into(),
                "SUBNET".into(),
                "GATEWAY".into(),
                "BRIDGE".into(),
                "ENDPOINTS".into(),
            ]];
            for n in nets {
                let net = &n.network;
                rows.push(vec![
                    net.name.clone(),
                    net.subnets
                        .iter()
                        .map(|s| s.subnet.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    net.subnets
                        .iter()
                        .map(|s| s.gateway.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    net.bridge.clone(),
                    n.endpoints.to_string(),
                ]);
            }
            print!("{}", table(rows));
        }
        Cmd::Inspect { name } => {
            let n = c.inspect_network(&name)?;
            if json {
                print_json(&n)?;
            } else {
                print_inspect(&n);
            }
        }
        Cmd::Rm { names, force } => {
            let mut failed = false;
            for name in names {
                match c.remove_network(&name, force) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("netctl: removing network {name}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                std::process::exit(1);
            }
        }
        Cmd::Prune => {
            for n in c.list_networks()? {
                if n.endpoints == 0 {
                    c.remove_network(&n.network.name, false)?;
                    println!("{}", n.network.name);
                }
            }
        }
        Cmd::Connect(a) => {
            let cid = a
                .container_id
                .clone()
                .or_else(|| a.name.clone())
                .or_else(|| {
                    std::path::Path::new(&a.netns)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .ok_or_else(|| anyhow!("pass --container-id or --name"))?;
            let req = AttachRequest {
                container_id: cid,
                ifname: Some(a.ifname),
                netns: a.netns,
                name: a.name,
                aliases: a.alias,
                ips: a.ip,
                mac: a.mac,
                port_mappings: a.publish.iter().map(api_port).collect(),
                labels: Default::default(),
                expect: None,
            };
            let res = c.attach(&a.network, &req)?;
            if json {
                print_json(&res)?;
            } else {
                let ips: Vec<String> = res.endpoint.ips.iter().map(|i| i.to_string()).collect();
                println!(
                    "{} {} {} {}",
                    res.endpoint.container_id,
                    res.endpoint.ifname,
                    ips.join(","),
                    res.endpoint.mac
                );
            }
        }
        Cmd::Disconnect(a) => {
            let n = c.inspect_network(&a.network)?;
            let targets: Vec<_> = n
                .endpoints
                .iter()
                .filter(|e| a.netns.as_ref().is_none_or(|p| &e.netns == p))
                .filter(|e| {
                    a.container_id
                        .as_ref()
                        .is_none_or(|id| &e.container_id == id)
                })
                .filter(|e| a.name.as_ref().is_none_or(|nm| e.name.as_ref() == Some(nm)))
                .filter(|e| a.ifname.as_ref().is_none_or(|i| &e.ifname == i))
                .collect();
            if targets.is_empty() {
                bail!("no matching endpoint on network {}", a.network);
            }
            for e in targets {
                c.detach(&a.network, &e.container_id, &e.ifname)?;
                println!("{} {}", e.container_id, e.ifname);
            }
        }
        Cmd::Status => {
            let s = c.status()?;
            if json {
                print_json(&s)?;
            } else {
                println!("netd {} (pid {}), up {}s", s.version, s.pid, s.uptime_secs);
                println!("state:     {}", s.state_dir);
                println!("networks:  {}", s.networks);
                println!("endpoints: {}", s.endpoints);
            }
        }
        Cmd::Dns { name, network } => {
            let a = c.resolve(&network, &name)?;
            if json {
                print_json(&a)?;
            } else if a.addresses.is_empty() {
                bail!("{name} is not known on network {network}");
            } else {
                for ip in a.addresses {
                    println!("{ip}");
                }
            }
        }
        Cmd::Completions { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        let _ = std::io::stdout().flush();
        eprintln!("netctl: {e}");
        std::process::exit(1);
    }
}

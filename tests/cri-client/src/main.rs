//! `cri-client`: the few CRI calls kubelet makes to set up and tear down a pod's network
//! (`RunPodSandbox`, `PodSandboxStatus`, `StopPodSandbox`, `RemovePodSandbox`, `Status`),
//! spoken over a CRI runtime's gRPC Unix socket. Debian 12 ships no `crictl`; the runtime
//! end-to-end tests drive containerd's CRI plugin with this instead. Every answer is printed
//! as JSON on stdout so that tests can assert on it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    PortMapping, Protocol, RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest,
    StopPodSandboxRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Drive a CRI runtime's pod sandboxes like kubelet does.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The runtime's gRPC socket (containerd: `grpc.address`).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// `Version`.
    Version,
    /// `Status` (verbose): runtime and network conditions.
    Status,
    /// `RunPodSandbox`; prints `{"podSandboxId": …}`.
    RunPod(RunPodArgs),
    /// `PodSandboxStatus` (verbose) of a pod.
    PodStatus {
        /// Pod sandbox id.
        id: String,
    },
    /// `StopPodSandbox`.
    StopPod {
        /// Pod sandbox id.
        id: String,
    },
    /// `RemovePodSandbox`.
    RmPod {
        /// Pod sandbox id.
        id: String,
    },
}

#[derive(clap::Args, Debug)]
struct RunPodArgs {
    /// Pod name (`metadata.name`).
    #[arg(long)]
    name: String,
    /// Pod namespace (`metadata.namespace`).
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Pod UID (`metadata.uid`).
    #[arg(long)]
    uid: String,
    /// Hostname (default: the pod name).
    #[arg(long)]
    hostname: Option<String>,
    /// A hostPort: `[hostIP:]hostPort:containerPort[/tcp|udp|sctp]` (repeatable).
    #[arg(long = "port", short = 'p')]
    ports: Vec<String>,
    /// Runtime handler (RuntimeClass); empty for the default.
    #[arg(long, default_value = "")]
    runtime_handler: String,
}

/// Parses `[hostIP:]hostPort:containerPort[/proto]` into a CRI port mapping.
fn parse_port(s: &str) -> Result<PortMapping> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((spec, p)) => (spec, p),
        None => (s, "tcp"),
    };
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => bail!("port {s:?}: unknown protocol {other:?}"),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (container, host, host_ip) = match parts.as_slice() {
        [c, h] => (*c, *h, ""),
        [c, h, ip] => (*c, *h, *ip),
        _ => bail!("port {s:?}: expected [hostIP:]hostPort:containerPort[/proto]"),
    };
    Ok(PortMapping {
        protocol: protocol as i32,
        container_port: container
            .parse()
            .with_context(|| format!("port {s:?}: container port"))?,
        host_port: host
            .parse()
            .with_context(|| format!("port {s:?}: host port"))?,
        host_ip: host_ip.to_string(),
    })
}

async fn connect(socket: PathBuf) -> Result<RuntimeServiceClient<Channel>> {
    // The URI is a placeholder: every connection goes to the Unix socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .context("connecting to the CRI socket")?;
    Ok(RuntimeServiceClient::new(channel))
}

fn print(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let what = format!("{:?}", cli.cmd);
    let mut c = connect(cli.socket.clone())
        .await
        .with_context(|| format!("CRI socket {}", cli.socket.display()))?;
    match cli.cmd {
        Cmd::Version => {
            let r = c
                .version(VersionRequest {
                    version: "v1".into(),
                })
                .await?;
            print(r.get_ref())?;
        }
        Cmd::Status => {
            let r = c.status(StatusRequest { verbose: true }).await?;
            print(r.get_ref())?;
        }
        Cmd::RunPod(a) => {
            let port_mappings = a
                .ports
                .iter()
                .map(|p| parse_port(p))
                .collect::<Result<Vec<_>>>()?;
            let config = PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: a.name.clone(),
                    uid: a.uid,
                    namespace: a.namespace,
                    attempt: 0,
                }),
                hostname: a.hostname.unwrap_or(a.name),
                port_mappings,
                linux: Some(LinuxPodSandboxConfig::default()),
                ..Default::default()
            };
            let r = c
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: a.runtime_handler,
                })
                .await
                .with_context(|| format!("RunPodSandbox ({what})"))?;
            print(&serde_json::json!({ "podSandboxId": r.get_ref().pod_sandbox_id }))?;
        }
        Cmd::PodStatus { id } => {
            let r = c
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: true,
                })
                .await?;
            print(r.get_ref())?;
        }
        Cmd::StopPod { id } => {
            c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await?;
        }
        Cmd::RmPod { id } => {
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await?;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("cri-client: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_like_kubelet_host_ports() {
        let p = parse_port("8081:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (8081, 80, Protocol::Tcp as i32)
        );
        let p = parse_port("127.0.0.1:5353:53/UDP").unwrap();
        assert_eq!(p.host_ip, "127.0.0.1");
        assert_eq!(p.protocol, Protocol::Udp as i32);
        assert!(parse_port("80").is_err());
        assert!(parse_port("1:2/icmp").is_err());
    }
}

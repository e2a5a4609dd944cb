//! HTTP/1.1-over-Unix-socket client for netd's API, async and blocking.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::types::*;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";
/// Environment variable naming the socket.
pub const SOCKET_ENV: &str = "NETD_SOCKET";

/// The socket to use: the explicit one, else `$NETD_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Errors of an API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon's socket could not be connected.
    #[error("cannot reach netd at {}: {source}", socket.display())]
    Unreachable {
        /// Socket path tried.
        socket: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error("{}", body.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// Error body.
        body: ErrorBody,
    },
    /// The exchange failed part-way or the answer was not understood.
    #[error("talking to netd at {}: {message}", socket.display())]
    Protocol {
        /// Socket path.
        socket: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The daemon did not answer in time.
    #[error("netd at {} did not answer within {}s", socket.display(), timeout.as_secs())]
    Timeout {
        /// Socket path.
        socket: PathBuf,
        /// The limit.
        timeout: Duration,
    },
}

impl ClientError {
    /// The API error code, if the daemon answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

/// Async client. Each call uses a fresh connection, so a client is cheap and never stale.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// Percent-encodes a path segment (names are validated server-side; this keeps odd input intact).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for the daemon at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: Duration::from_secs(120),
        }
    }

    /// Sets the overall time limit of one call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a request with an optional JSON body and returns the raw response.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        match tokio::time::timeout(self.timeout, self.raw_inner(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                socket: self.socket.clone(),
                timeout: self.timeout,
            }),
        }
    }

    async fn raw_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let proto = |message: String| ClientError::Protocol {
            socket: self.socket.clone(),
            message,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| proto(format!("handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let has_body = body.is_some();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "netd");
        if has_body {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| proto(format!("building request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| proto(format!("sending request: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| proto(format!("reading response: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("API types serialize"));
        let (status, bytes) = self.raw(method, path, body).await?;
        if !(200..300).contains(&status) {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                code: ErrorCode::Internal,
                message: format!(
                    "netd answered HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
            });
            return Err(ClientError::Api { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            socket: self.socket.clone(),
            message: format!("decoding response: {e}"),
        })
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, "/v1/status", None::<&()>).await
    }

    /// `GET /v1/networks`.
    pub async fn list_networks(&self) -> Result<Vec<NetworkSummary>, ClientError> {
        self.call(Method::GET, "/v1/networks", None::<&()>).await
    }

    /// `POST /v1/networks`.
    pub async fn create_network(&self, req: &CreateNetwork) -> Result<Network, ClientError> {
        self.call(Method::POST, "/v1/networks", Some(req)).await
    }

    /// `GET /v1/networks/{name}`.
    pub async fn inspect_network(&self, name: &str) -> Result<NetworkInspect, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/networks/{}", seg(name)),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/networks/{name}?endpoints=false`: the definition only, cheap whatever the
    /// number of endpoints (what every CNI ADD needs).
    pub async fn get_network(&self, name: &str) -> Result<Network, ClientError> {
        let path = format!("/v1/networks/{}?endpoints=false", seg(name));
        self.call::<NetworkInspect>(Method::GET, &path, None::<&()>)
            .await
            .map(|i| i.network)
    }

    /// `DELETE /v1/networks/{name}[?force=true]`.
    pub async fn remove_network(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let path = format!("/v1/networks/{}?force={force}", seg(name));
        self.call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
            .await
            .map(|_| ())
    }

    /// `POST /v1/networks/{name}/endpoints`: attach a container.
    pub async fn attach(
        &self,
        network: &str,
        req: &AttachRequest,
    ) -> Result<AttachResult, ClientError> {
        let path = format!("/v1/networks/{}/endpoints", seg(network));
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `DELETE /v1/networks/{name}/endpoints/{container_id}/{ifname}`: detach (idempotent).
    pub async fn detach(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/v1/networks/{}/endpoints/{}/{}",
            seg(network),
            seg(container_id),
            seg(ifname)
        );
        self.call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
            .await
            .map(|_| ())
    }

    /// `GET /v1/networks/{name}/endpoints/{container_id}/{ifname}/check`: verify kernel state.
    pub async fn check(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Endpoint, ClientError> {
        let path = format!(
            "/v1/networks/{}/endpoints/{}/{}/check",
            seg(network),
            seg(container_id),
            seg(ifname)
        );
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/networks/{name}/dns/{qname}`: what a name resolves to on a network.
    pub async fn resolve(&self, network: &str, name: &str) -> Result<DnsAnswer, ClientError> {
        let path = format!("/v1/networks/{}/dns/{}", seg(network), seg(name));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `POST /v1/networks/{name}/gc`: release every attachment not listed.
    pub async fn gc(&self, network: &str, req: &GcRequest) -> Result<GcResult, ClientError> {
        let path = format!("/v1/networks/{}/gc", seg(network));
        self.call(Method::POST, &path, Some(req)).await
    }
}

/// Blocking wrapper around [`Client`] for command-line tools; runs a current-thread runtime.
#[derive(Debug)]
pub struct BlockingClient {
    inner: Client,
    rt: tokio::runtime::Runtime,
}

impl BlockingClient {
    /// A blocking client for the daemon at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(BlockingClient {
            inner: Client::new(socket),
            rt,
        })
    }

    /// Sets the overall time limit of one call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.with_timeout(timeout);
        self
    }

    /// Runs any async client call to completion.
    pub fn run<'a, T, F>(&'a self, f: impl FnOnce(&'a Client) -> F) -> Result<T, ClientError>
    where
        F: std::future::Future<Output = Result<T, ClientError>> + 'a,
    {
        self.rt.block_on(f(&self.inner))
    }

    /// The async client inside.
    pub fn client(&self) -> &Client {
        &self.inner
    }

    /// Blocking [`Client::status`].
    pub fn status(&self) -> Result<Status, ClientError> {
        self.rt.block_on(self.inner.status())
    }

    /// Blocking [`Client::list_networks`].
    pub fn list_networks(&self) -> Result<Vec<NetworkSummary>, ClientError> {
        self.rt.block_on(self.inner.list_networks())
    }

    /// Blocking [`Client::create_network`].
    pub fn create_network(&self, req: &CreateNetwork) -> Result<Network, ClientError> {
        self.rt.block_on(self.inner.create_network(req))
    }

    /// Blocking [`Client::inspect_network`].
    pub fn inspect_network(&self, name: &str) -> Result<NetworkInspect, ClientError> {
        self.rt.block_on(self.inner.inspect_network(name))
    }

    /// Blocking [`Client::get_network`].
    pub fn get_network(&self, name: &str) -> Result<Network, ClientError> {
        self.rt.block_on(self.inner.get_network(name))
    }

    /// Blocking [`Client::remove_network`].
    pub fn remove_network(&self, name: &str, force: bool) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.remove_network(name, force))
    }

    /// Blocking [`Client::attach`].
    pub fn attach(&self, network: &str, req: &AttachRequest) -> Result<AttachResult, ClientError> {
        self.rt.block_on(self.inner.attach(network, req))
    }

    /// Blocking [`Client::detach`].
    pub fn detach(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), ClientError> {
        self.rt
            .block_on(self.inner.detach(network, container_id, ifname))
    }

    /// Blocking [`Client::check`].
    pub fn check(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Endpoint, ClientError> {
        self.rt
            .block_on(self.inner.check(network, container_id, ifname))
    }

    /// Blocking [`Client::resolve`].
    pub fn resolve(&self, network: &str, name: &str) -> Result<DnsAnswer, ClientError> {
        self.rt.block_on(self.inner.resolve(network, name))
    }

    /// Blocking [`Client::gc`].
    pub fn gc(&self, network: &str, req: &GcRequest) -> Result<GcResult, ClientError> {
        self.rt.block_on(self.inner.gc(network, req))
    }
}

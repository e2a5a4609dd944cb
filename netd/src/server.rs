//! The API server: HTTP/1.1 + JSON on a Unix socket (mode 0600, peer credentials checked, never
//! TCP). Shaped like mini-redis's `run(listener, shutdown)`: it takes a bound listener and any
//! shutdown future, so tests drive the real server on a temporary socket.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{connect_info::Connected, ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use netd_api::{AttachRequest, CreateNetwork, ErrorBody, ErrorCode, GcRequest};
use serde::Deserialize;
use tokio::net::UnixListener;
use tracing::{info, warn, Instrument};

use crate::daemon::{Daemon, DaemonError};

/// Largest request body accepted; real requests are a few kilobytes.
pub const MAX_BODY: usize = 1 << 20;

/// Who may use the API.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Uids allowed besides root.
    pub allowed_uids: Vec<u32>,
}

/// Credentials of the connected peer (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    /// Peer uid, if the kernel told us.
    pub uid: Option<u32>,
    /// Peer pid.
    pub pid: Option<i32>,
}

impl Connected<axum::serve::IncomingStream<'_, UnixListener>> for PeerCred {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => PeerCred {
                uid: Some(c.uid()),
                pid: c.pid(),
            },
            Err(_) => PeerCred {
                uid: None,
                pid: None,
            },
        }
    }
}

/// An error response: stable code + message.
pub struct ApiError(ErrorBody);

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorBody {
            code,
            message: message.into(),
        })
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("decoding request body: {}", e.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("decoding query: {}", e.body_text()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            warn!(code = %self.0.code, message = %self.0.message, "request failed");
        }
        (status, Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn status(State(d): State<Daemon>) -> ApiResult<netd_api::Status> {
    Ok(Json(d.status().await?))
}

async fn list(State(d): State<Daemon>) -> ApiResult<Vec<netd_api::NetworkSummary>> {
    Ok(Json(d.list_networks().await?))
}

async fn create(
    State(d): State<Daemon>,
    body: Result<Json<CreateNetwork>, JsonRejection>,
) -> Result<(StatusCode, Json<netd_api::Network>), ApiError> {
    let Json(req) = body?;
    let net = to_the_end(async move { d.create_network(req).await }).await?;
    Ok((StatusCode::CREATED, Json(net)))
}

#[derive(Deserialize)]
struct InspectQuery {
    #[serde(default = "yes")]
    endpoints: bool,
}

fn yes() -> bool {
    true
}

async fn inspect(
    State(d): State<Daemon>,
    UrlPath(name): UrlPath<String>,
    q: Result<Query<InspectQuery>, QueryRejection>,
) -> ApiResult<netd_api::NetworkInspect> {
    let Query(q) = q?;
    Ok(Json(d.inspect_network(&name, q.endpoints).await?))
}

async fn remove(
    State(d): State<Daemon>,
    UrlPath(name): UrlPath<String>,
    q: Result<Query<RemoveQuery>, QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(q) = q?;
    to_the_end(async move { d.remove_network(&name, q.force).await }).await?;
    Ok(Json(serde_json::json!({})))
}

async fn attach(
    State(d): State<Daemon>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<AttachRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<netd_api::AttachResult>), ApiError> {
    let Json(req) = body?;
    let span = tracing::info_span!("attach", network = %name, container = %req.container_id, ifname = ?req.ifname);
    let res = to_the_end(async move { d.attach(&name, req).instrument(span).await }).await?;
    Ok((StatusCode::CREATED, Json(res)))
}

/// Runs an operation that changes state in a task of its own, so that it finishes even if its
/// client hangs up: hyper drops a request's handler when it sees the connection close, and an
/// operation dropped halfway would leave half its work behind (an attach: a stored endpoint
/// without its veth, or a veth without its record).
async fn to_the_end<T: Send + 'static>(
    op: impl Future<Output = Result<T, DaemonError>> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::spawn(op)
        .await
        .map_err(|e| DaemonError::Subsystem(format!("API task failed: {e}")))?
}

async fn detach(
    State(d): State<Daemon>,
    UrlPath((name, cid, ifname)): UrlPath<(String, String, String)>,
) -> ApiResult<serde_json::Value> {
    let span = tracing::info_span!("detach", network = %name, container = %cid, ifname = %ifname);
    to_the_end(async move { d.detach(&name, &cid, &ifname).instrument(span).await }).await?;
    Ok(Json(serde_json::json!({})))
}

async fn check(
    State(d): State<Daemon>,
    UrlPath((name, cid, ifname)): UrlPath<(String, String, String)>,
) -> ApiResult<netd_api::Endpoint> {
    Ok(Json(d.check(&name, &cid, &ifname).await?))
}

async fn gc(
    State(d): State<Daemon>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<GcRequest>, JsonRejection>,
) -> ApiResult<netd_api::GcResult> {
    let Json(req) = body?;
    Ok(Json(
        to_the_end(async move { d.gc(&name, &req.valid).await }).await?,
    ))
}

async fn resolve(
    State(d): State<Daemon>,
    UrlPath((name, qname)): UrlPath<(String, String)>,
) -> ApiResult<netd_api::DnsAnswer> {
    let addresses = d.resolve(&name, &qname)?;
    Ok(Json(netd_api::DnsAnswer {
        network: name,
        name: qname,
        addresses,
    }))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "no such API endpoint: {} {}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A known path with the wrong method: still the JSON error body every client expects (axum
/// would otherwise answer a bare 405 with no body).
async fn method_not_allowed(req: Request) -> Response {
    let body = ErrorBody {
        code: ErrorCode::InvalidRequest,
        message: format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn authorize(
    State(policy): State<std::sync::Arc<AccessPolicy>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    req: Request,
    next: Next,
) -> Response {
    let allowed =
        matches!(peer.uid, Some(0)) || peer.uid.is_some_and(|u| policy.allowed_uids.contains(&u));
    if !allowed {
        warn!(uid = ?peer.uid, pid = ?peer.pid, "refused API client");
        return ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "permission denied: uid {} may not use netd (root only unless allowed with --allow-uid)",
                peer.uid.map_or("unknown".to_string(), |u| u.to_string())
            ),
        )
        .into_response();
    }
    // Read the whole body here, bounded in size and time, so no handler ever waits on a
    // client: a request announcing more bytes than it sends gets an error instead of holding
    // its connection (and whatever the handler would hold) forever.
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return ApiError::new(
                ErrorCode::InvalidRequest,
                format!("reading request body (length limit {MAX_BODY} bytes): {e}"),
            )
            .into_response()
        }
        Err(_) => {
            let msg = format!(
                "reading request body: incomplete after {}s",
                BODY_TIMEOUT.as_secs()
            );
            let body = ErrorBody {
                code: ErrorCode::InvalidRequest,
                message: msg,
            };
            return (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// How long a client may take to send its request body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The API routes.
pub fn router(daemon: Daemon, policy: AccessPolicy) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/networks", get(list).post(create))
        .route("/v1/networks/{name}", get(inspect).delete(remove))
        .route("/v1/networks/{name}/endpoints", post(attach))
        .route(
            "/v1/networks/{name}/endpoints/{cid}/{ifname}",
            axum::routing::delete(detach),
        )
        .route(
            "/v1/networks/{name}/endpoints/{cid}/{ifname}/check",
            get(check),
        )
        .route("/v1/networks/{name}/gc", post(gc))
        .route("/v1/networks/{name}/dns/{qname}", get(resolve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(policy),
            authorize,
        ))
        .with_state(daemon)
}

/// Binds the API socket: refuses to steal a live daemon's socket, replaces a stale one, and
/// makes it mode 0600 before anyone can connect (the umask is tightened around `bind`).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another netd is already listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let res = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = res?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API on `listener` until `shutdown` completes; every request pokes `idle`, so
/// memory freed by a burst of requests goes back to the kernel after the burst.
pub async fn run(
    listener: UnixListener,
    daemon: Daemon,
    policy: AccessPolicy,
    idle: crate::memory::IdleTrim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(daemon, policy).layer(middleware::from_fn(move |req: Request, next: Next| {
        let idle = idle.clone();
        async move {
            let resp = next.run(req).await;
            idle.poke();
            resp
        }
    }));
    info!("API listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerCred>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

//! Blocking HTTP/1.1-over-Unix-socket client for netd's API (`netctl`, the CNI plugin).
//!
//! Plain `std` I/O, one connection per call (`connection: close`): the CNI plugin is exec'd for
//! every container operation and lives about a millisecond, so it pays for whatever a call sets
//! up. An async runtime and hyper cost the plugin 0.3 ms of CPU per ADD and 4 MB of binary
//! (docs/benchmarks.md); the only server is netd's own, which always sends `content-length`.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// Client. Each call uses a fresh connection, so a client is cheap and never stale.
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

/// Largest response accepted (an inspect of a network with thousands of endpoints fits).
const MAX_RESPONSE: usize = 64 << 20;

/// A parsed response head: status and the body's announced length.
struct Head {
    status: u16,
    len: Option<usize>,
    body_at: usize,
}

/// Parses the status line and headers once the blank line has arrived (`None` before that).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [v, code, ..] if v.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut len = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("unsupported transfer-encoding {value:?}"));
        }
    }
    Ok(Some(Head {
        status,
        len,
        body_at: end + 4,
    }))
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

    fn proto(&self, message: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            message: message.into(),
        }
    }

    /// Maps an I/O error of the exchange; a read or write that hit the deadline is a timeout.
    fn io(&self, doing: &str, e: std::io::Error) -> ClientError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout {
                socket: self.socket.clone(),
                timeout: self.timeout,
            },
            _ => self.proto(format!("{doing}: {e}")),
        }
    }

    /// Sends a request with an optional JSON body and returns the status and the body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            })?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: netd\r\nconnection: close\r\n");
        if let Some(b) = &body {
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut req = req.into_bytes();
        req.extend_from_slice(body.as_deref().unwrap_or_default());
        let left = |this: &Self| {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ClientError::Timeout {
                    socket: this.socket.clone(),
                    timeout: this.timeout,
                })
        };
        stream
            .set_write_timeout(Some(left(self)?))
            .and_then(|()| stream.write_all(&req))
            .map_err(|e| self.io("sending request", e))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 16 << 10];
        let mut head = None;
        loop {
            if head.is_none() {
                head =
                    parse_head(&buf).map_err(|m| self.proto(format!("reading response: {m}")))?;
            }
            if let Some(Head {
                status,
                len: Some(len),
                body_at,
            }) = head
            {
                if buf.len() >= body_at + len {
                    buf.truncate(body_at + len);
                    return Ok((status, buf.split_off(body_at)));
                }
            }
            stream
                .set_read_timeout(Some(left(self)?))
                .map_err(|e| self.io("reading response", e))?;
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io("reading response", e)),
            };
            if n == 0 {
                // Without a length the body ends with the connection.
                return match head {
                    Some(Head {
                        status,
                        len: None,
                        body_at,
                    }) => Ok((status, buf.split_off(body_at))),
                    _ => Err(self.proto("reading response: connection closed mid-response")),
                };
            }
            if buf.len() + n > MAX_RESPONSE {
                return Err(self.proto(format!(
                    "reading response: longer than {MAX_RESPONSE} bytes"
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("API types serialize"));
        let (status, bytes) = self.raw(method, path, body)?;
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
        serde_json::from_slice(&bytes).map_err(|e| self.proto(format!("decoding response: {e}")))
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.call("GET", "/v1/status", None::<&()>)
    }

    /// `GET /v1/networks`.
    pub fn list_networks(&self) -> Result<Vec<NetworkSummary>, ClientError> {
        self.call("GET", "/v1/networks", None::<&()>)
    }

    /// `POST /v1/networks`.
    pub fn create_network(&self, req: &CreateNetwork) -> Result<Network, ClientError> {
        self.call("POST", "/v1/networks", Some(req))
    }

    /// `GET /v1/networks/{name}`.
    pub fn inspect_network(&self, name: &str) -> Result<NetworkInspect, ClientError> {
        self.call("GET", &format!("/v1/networks/{}", seg(name)), None::<&()>)
    }

    /// `GET /v1/networks/{name}?endpoints=false`: the definition only, cheap whatever the
    /// number of endpoints (what every CNI ADD needs).
    pub fn get_network(&self, name: &str) -> Result<Network, ClientError> {
        let path = format!("/v1/networks/{}?endpoints=false", seg(name));
        self.call::<NetworkInspect>("GET", &path, None::<&()>)
            .map(|i| i.network)
    }

    /// `DELETE /v1/networks/{name}[?force=true]`.
    pub fn remove_network(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let path = format!("/v1/networks/{}?force={force}", seg(name));
        self.call::<serde_json::Value>("DELETE", &path, None::<&()>)
            .map(|_| ())
    }

    /// `POST /v1/networks/{name}/endpoints`: attach a container.
    pub fn attach(&self, network: &str, req: &AttachRequest) -> Result<AttachResult, ClientError> {
        let path = format!("/v1/networks/{}/endpoints", seg(network));
        self.call("POST", &path, Some(req))
    }

    /// `DELETE /v1/networks/{name}/endpoints/{container_id}/{ifname}`: detach (idempotent).
    pub fn detach(
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
        self.call::<serde_json::Value>("DELETE", &path, None::<&()>)
            .map(|_| ())
    }

    /// `GET /v1/networks/{name}/endpoints/{container_id}/{ifname}/check`: verify kernel state.
    pub fn check(
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
        self.call("GET", &path, None::<&()>)
    }

    /// `GET /v1/networks/{name}/dns/{qname}`: what a name resolves to on a network.
    pub fn resolve(&self, network: &str, name: &str) -> Result<DnsAnswer, ClientError> {
        let path = format!("/v1/networks/{}/dns/{}", seg(network), seg(name));
        self.call("GET", &path, None::<&()>)
    }

    /// `POST /v1/networks/{name}/gc`: release every attachment not listed.
    pub fn gc(&self, network: &str, req: &GcRequest) -> Result<GcResult, ClientError> {
        let path = format!("/v1/networks/{}/gc", seg(network));
        self.call("POST", &path, Some(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn response_heads_parse_or_wait_for_more() {
        let h = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\nx: y\r\n\r\n{\"a\":1}")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.len, h.body_at), (404, Some(7), 51));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
        let h = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.len, None);
        for bad in [
            &b"SMTP 220 hi\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// A one-connection server on a fresh socket that answers with `reply` (then closes), or
    /// holds the connection open without answering when `reply` is `None`.
    fn serve_once(
        tag: &str,
        reply: Option<&'static [u8]>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let path = std::env::temp_dir().join(format!("netd-api-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).unwrap();
            req.truncate(n);
            match reply {
                Some(r) => s.write_all(r).unwrap(),
                None => std::thread::sleep(Duration::from_millis(600)),
            }
            req
        });
        (path, t)
    }

    #[test]
    fn calls_send_one_request_and_read_the_body_by_its_length() {
        let (path, t) = serve_once(
            "ok",
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing junk"),
        );
        let (status, body) = Client::new(&path)
            .raw("POST", "/v1/x", Some(b"{}".to_vec()))
            .unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));
        let req = String::from_utf8(t.join().unwrap()).unwrap();
        assert!(req.starts_with("POST /v1/x HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains("content-length: 2\r\n") && req.ends_with("\r\n\r\n{}"),
            "{req}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn cut_answers_and_silent_daemons_are_errors() {
        let (path, t) = serve_once(
            "cut",
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"),
        );
        let e = Client::new(&path).status().unwrap_err();
        assert!(
            e.to_string().contains("connection closed mid-response"),
            "{e}"
        );
        t.join().unwrap();
        let (path2, t) = serve_once("silent", None);
        let e = Client::new(&path2)
            .with_timeout(Duration::from_millis(200))
            .status()
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        t.join().unwrap();
        let e = Client::new(&path).status().unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path2);
    }
}

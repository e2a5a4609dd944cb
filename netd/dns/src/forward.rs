//! Forwarding to upstream resolvers: pooled sockets, per-upstream timeout, failover, cache.
//!
//! Each upstream owns a few long-lived connected UDP sockets (so a query never costs a socket, a
//! bind and an ephemeral port, unlike aardvark-dns) with one reader task each that hands
//! responses to waiting queries by transaction ID; IDs are random per attempt so an off-path
//! spoofer must guess them. A truncated UDP answer is retried over TCP; a query that reached us
//! over TCP goes upstream over TCP, on a small pool of reused connections.
//!
//! An upstream is tried for at most `timeout`; on timeout, I/O error, SERVFAIL, REFUSED or a bogus
//! reply the next upstream is tried, and when all failed the caller answers SERVFAIL, so clients
//! are never left waiting for their own timeout. Upstreams that timed out are moved to the back
//! of the order for a while, so one dead server does not cost every query a timeout.
//! The number of forwards in flight is capped: past the cap a query fails at once rather than
//! queueing behind a dead upstream.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::cache::{Answer, Cache, CacheKey, Wire};
use crate::records::key_of;

/// UDP sockets per upstream: enough to spread reader work, few enough to be negligible.
const UDP_SOCKETS_PER_UPSTREAM: usize = 4;
/// Idle TCP connections kept per upstream.
const TCP_IDLE_PER_UPSTREAM: usize = 4;
/// Idle TCP connections older than this are not reused (servers close idle ones after seconds).
const TCP_IDLE_MAX_AGE: Duration = Duration::from_secs(5);
/// How long an upstream that timed out goes to the back of the order.
const PENALTY: Duration = Duration::from_secs(10);
/// EDNS payload we advertise upstream (DNS flag day 2020: avoids IP fragmentation).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// Why a forward produced no answer; the handler turns every case into SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The client's networks have no upstream at all.
    #[error("no upstream DNS servers configured")]
    NoUpstreams,
    /// The in-flight cap was reached.
    #[error("too many DNS forwards in flight (limit {0})")]
    Overloaded(usize),
    /// Every upstream failed; the text lists each failure.
    #[error("every upstream failed: {0}")]
    AllFailed(String),
    /// The query could not be encoded.
    #[error("encoding query for upstream: {0}")]
    Encode(String),
}

/// One attempt's failure, kept for the log line.
#[derive(Debug)]
enum Attempt {
    Io(io::Error),
    Rcode(ResponseCode),
    Bogus(&'static str),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Io(e) => write!(f, "{e}"),
            Attempt::Rcode(r) => write!(f, "answered {r}"),
            Attempt::Bogus(why) => write!(f, "bogus reply: {why}"),
        }
    }
}

/// Forwarder shared by every listener.
pub(crate) struct Forwarder {
    timeout: Duration,
    max_inflight: usize,
    inflight: AtomicUsize,
    cache: Cache,
    upstreams: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
    epoch: Instant,
}

struct InflightGuard<'a>(&'a AtomicUsize);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Forwarder {
    /// A forwarder with the given per-upstream timeout, in-flight cap and cache size.
    pub(crate) fn new(timeout: Duration, max_inflight: usize, cache_entries: usize) -> Self {
        Self {
            timeout,
            max_inflight,
            inflight: AtomicUsize::new(0),
            cache: Cache::new(cache_entries),
            upstreams: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn upstream(&self, addr: SocketAddr) -> Arc<Upstream> {
        self.upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr)
            .or_insert_with(|| Arc::new(Upstream::new(addr)))
            .clone()
    }

    /// Drops pooled sockets of upstreams no longer in `keep` (called when networks change).
    pub(crate) fn retain(&self, keep: &[SocketAddr]) {
        self.upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, _| keep.contains(addr));
    }

    /// The cache key of a question (lowercase `name`) asked of `upstreams`, in order.
    pub(crate) fn cache_key(
        &self,
        upstreams: &[SocketAddr],
        name: String,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> CacheKey {
        let mut h = DefaultHasher::new();
        upstreams.hash(&mut h);
        CacheKey {
            upstreams: h.finish(),
            name,
            qtype,
            qclass,
        }
    }

    /// Puts an answer in the cache as a successful forward would (tests of the fast path).
    #[cfg(test)]
    pub(crate) fn cache_put(&self, key: CacheKey, answer: &Answer) {
        self.cache.put(key, answer);
    }

    /// The pre-encoded cached answer for `key` and its age in seconds (UDP fast path).
    pub(crate) fn cached_wire(&self, key: &CacheKey) -> Option<(Arc<Wire>, u32)> {
        self.cache.get_wire(key)
    }

    /// Answers `q` from the cache or from the first upstream that gives a usable answer.
    pub(crate) async fn resolve(
        &self,
        q: &Query,
        upstreams: &[SocketAddr],
        tcp: bool,
    ) -> Result<Answer, ForwardError> {
        if upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let key = self.cache_key(upstreams, key_of(&q.name), q.query_type, q.query_class);
        if let Some(hit) = self.cache.get(&key) {
            debug!(name = %q.name, qtype = %q.query_type, "DNS cache hit");
            return Ok(hit);
        }

        if self.inflight.fetch_add(1, Ordering::AcqRel) >= self.max_inflight {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(ForwardError::Overloaded(self.max_inflight));
        }
        let _guard = InflightGuard(&self.inflight);

        let mut query = encode_query(q).map_err(ForwardError::Encode)?;
        let now = self.now_ms();
        let mut order: Vec<Arc<Upstream>> = upstreams.iter().map(|a| self.upstream(*a)).collect();
        // Healthy first, keeping the configured order among equals (stable sort).
        order.sort_by_key(|u| u.bad_until_ms.load(Ordering::Relaxed) > now);

        let mut failures = Vec::new();
        for up in order {
            let result = if tcp {
                up.tcp_exchange(&mut query, self.timeout).await
            } else {
                match up.udp_exchange(&mut query, self.timeout).await {
                    Ok(reply) if truncated(&reply) => {
                        debug!(upstream = %up.addr, name = %q.name, "truncated UDP answer, retrying over TCP");
                        up.tcp_exchange(&mut query, self.timeout).await
                    }
                    other => other,
                }
            };
            let attempt = match result {
                Ok(reply) => match check_reply(&reply, &query, q) {
                    Ok(answer) => match answer.rcode {
                        ResponseCode::NoError | ResponseCode::NXDomain => {
                            self.cache.put(key, &answer);
                            return Ok(answer);
                        }
                        // Upstream-specific failures (lame, policy, broken): try the next one,
                        // without penalising this one since the failure may be name-specific.
                        other => Attempt::Rcode(other),
                    },
                    Err(why) => Attempt::Bogus(why),
                },
                Err(e) => {
                    up.bad_until_ms.store(
                        now + u64::try_from(PENALTY.as_millis()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    Attempt::Io(e)
                }
            };
            debug!(upstream = %up.addr, name = %q.name, qtype = %q.query_type, cause = %attempt, "upstream attempt failed");
            failures.push(format!("{}: {attempt}", up.addr));
        }
        let all = failures.join("; ");
        warn!(name = %q.name, qtype = %q.query_type, causes = %all, "DNS forward failed on every upstream");
        Err(ForwardError::AllFailed(all))
    }
}

fn encode_query(q: &Query) -> Result<Vec<u8>, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    let mut query = Query::query(q.name.clone(), q.query_type);
    query.set_query_class(q.query_class);
    msg.add_query(query);
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    msg.set_edns(edns);
    msg.to_vec().map_err(|e| e.to_string())
}

fn set_id(query: &mut [u8], id: u16) {
    query[..2].copy_from_slice(&id.to_be_bytes());
}

/// TC bit of a raw reply (byte 2, bit 1).
fn truncated(reply: &[u8]) -> bool {
    reply.len() >= 12 && reply[2] & 0x02 != 0
}

/// Parses an upstream reply and checks it answers our query (ID, QR, question).
fn check_reply(reply: &[u8], query: &[u8], q: &Query) -> Result<Answer, &'static str> {
    let msg = Message::from_vec(reply).map_err(|_| "undecodable")?;
    if msg.metadata.id.to_be_bytes() != query[..2] {
        return Err("transaction ID mismatch");
    }
    if msg.metadata.message_type != MessageType::Response {
        return Err("not a response");
    }
    let [asked] = msg.queries.as_slice() else {
        return Err("question count is not 1");
    };
    if asked.query_type != q.query_type
        || asked.query_class != q.query_class
        || key_of(&asked.name) != key_of(&q.name)
    {
        return Err("question does not match");
    }
    if msg.metadata.truncation {
        return Err("truncated even over TCP");
    }
    let keep = |r: &hickory_proto::rr::Record| {
        !matches!(
            r.record_type(),
            RecordType::OPT | RecordType::TSIG | RecordType::SIG
        )
    };
    Ok(Answer {
        rcode: msg.metadata.response_code,
        answers: msg.answers,
        authorities: msg.authorities,
        additionals: msg.additionals.into_iter().filter(keep).collect(),
        authentic_data: msg.metadata.authentic_data,
    })
}

type Pending = Arc<Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>>;

/// A connected UDP socket plus its reader task.
struct UdpConn {
    sock: Arc<UdpSocket>,
    pending: Pending,
    reader: AbortHandle,
}

impl Drop for UdpConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Removes a waiter's ID when the attempt ends, whether answered, timed out or cancelled.
struct Registration<'a> {
    pending: &'a Pending,
    id: u16,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl UdpConn {
    fn open(upstream: SocketAddr) -> io::Result<Self> {
        let local = match upstream.ip() {
            IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let std_sock = std::net::UdpSocket::bind(local)?;
        std_sock.connect(upstream)?;
        std_sock.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        let pending: Pending = Arc::default();
        let reader =
            tokio::spawn(read_loop(sock.clone(), pending.clone(), upstream)).abort_handle();
        Ok(Self {
            sock,
            pending,
            reader,
        })
    }

    fn register(&self) -> (Registration<'_>, oneshot::Receiver<Vec<u8>>) {
        let (tx, rx) = oneshot::channel();
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let id = loop {
            let id: u16 = rand::random();
            if !map.contains_key(&id) {
                break id;
            }
        };
        map.insert(id, tx);
        (
            Registration {
                pending: &self.pending,
                id,
            },
            rx,
        )
    }
}

async fn read_loop(sock: Arc<UdpSocket>, pending: Pending, upstream: SocketAddr) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) if n >= 12 => {
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(buf[..n].to_vec());
                }
            }
            Ok(_) => {}
            // ICMP errors for earlier datagrams surface here; the waiting query times out and
            // fails over. Back off briefly on anything else so a broken socket cannot spin.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                debug!(%upstream, cause = %e, "receiving from upstream DNS socket");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Per-upstream state: UDP pool, idle TCP connections, health.
struct Upstream {
    addr: SocketAddr,
    udp: Mutex<Option<Arc<[UdpConn]>>>,
    next: AtomicUsize,
    tcp_idle: Mutex<Vec<(TcpStream, Instant)>>,
    bad_until_ms: AtomicU64,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            udp: Mutex::new(None),
            next: AtomicUsize::new(0),
            tcp_idle: Mutex::new(Vec::new()),
            bad_until_ms: AtomicU64::new(0),
        }
    }

    fn udp_pool(&self) -> io::Result<Arc<[UdpConn]>> {
        let mut slot = self.udp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = slot.as_ref() {
            return Ok(pool.clone());
        }
        let pool: Arc<[UdpConn]> = (0..UDP_SOCKETS_PER_UPSTREAM)
            .map(|_| UdpConn::open(self.addr))
            .collect::<io::Result<Vec<_>>>()?
            .into();
        *slot = Some(pool.clone());
        Ok(pool)
    }

    async fn udp_exchange(&self, query: &mut [u8], timeout: Duration) -> io::Result<Vec<u8>> {
        let pool = self.udp_pool()?;
        let conn = &pool[self.next.fetch_add(1, Ordering::Relaxed) % pool.len()];
        let (registration, rx) = conn.register();
        set_id(query, registration.id);
        conn.sock.send(query).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(io::Error::other("upstream socket reader stopped")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no UDP answer within {timeout:?}"),
            )),
        }
    }

    async fn tcp_exchange(&self, query: &mut [u8], timeout: Duration) -> io::Result<Vec<u8>> {
        set_id(query, rand::random());
        let attempt = async {
            let reused = {
                let mut idle = self.tcp_idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.retain(|(_, since)| since.elapsed() < TCP_IDLE_MAX_AGE);
                idle.pop()
            };
            if let Some((mut stream, _)) = reused {
                // The server may have closed it meanwhile; then fall through to a fresh one.
                if let Ok(reply) = tcp_roundtrip(&mut stream, query).await {
                    self.keep_tcp(stream);
                    return Ok(reply);
                }
            }
            let mut stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let reply = tcp_roundtrip(&mut stream, query).await?;
            self.keep_tcp(stream);
            Ok(reply)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TCP answer within {timeout:?}"),
                ))
            })
    }

    fn keep_tcp(&self, stream: TcpStream) {
        let mut idle = self.tcp_idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < TCP_IDLE_PER_UPSTREAM {
            idle.push((stream, Instant::now()));
        }
    }
}

async fn tcp_roundtrip(stream: &mut TcpStream, query: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let n = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(n)];
    stream.read_exact(&mut reply).await?;
    if reply.len() < 12 || reply[..2] != query[..2] {
        return Err(io::Error::other("TCP reply with wrong transaction ID"));
    }
    Ok(reply)
}

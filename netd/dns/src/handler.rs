//! The hickory-server `RequestHandler`: scope the client, answer locally or forward, reply.
//!
//! Every request gets exactly one reply (hickory-server itself drops only datagrams shorter than
//! a DNS header and messages that are responses): REFUSED for clients outside netd's networks,
//! FORMERR for anything but one question, NOTIMP for non-QUERY opcodes, SERVFAIL when forwarding
//! fails. UDP replies are sized to the client's EDNS buffer (512 without EDNS) and hickory sets TC
//! when an answer does not fit, so the client retries over TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::{debug, warn};

use crate::forward::Forwarder;
use crate::records::{Local, NetRecords, Records};
use crate::resolv::HostResolvers;

/// Largest UDP reply we send whatever the client advertises (DNS flag day 2020: no fragments).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;

/// State shared by every listener of every network.
pub(crate) struct Shared {
    /// The current records snapshot.
    pub(crate) records: ArcSwap<Records>,
    /// Upstream forwarder with its cache.
    pub(crate) forwarder: Forwarder,
    /// The host's resolv.conf upstreams.
    pub(crate) host: HostResolvers,
    /// TTL of local answers.
    pub(crate) local_ttl: u32,
    /// Rotation counter for multi-address answers.
    pub(crate) rotation: AtomicUsize,
    /// Told when a UDP listener is under load (see `DnsConfig::on_load`).
    pub(crate) on_load: Option<crate::LoadHook>,
}

/// Upstreams of a client whose scope is `scope`: the union, in order, of each non-internal
/// network's upstreams (the host's resolvers for networks that list none); None when every
/// network of the scope is internal, so nothing may be forwarded.
pub(crate) fn upstreams_of(shared: &Shared, scope: &[&Arc<NetRecords>]) -> Option<Vec<SocketAddr>> {
    if scope.iter().all(|n| n.internal) {
        return None;
    }
    let mut upstreams: Vec<SocketAddr> = Vec::new();
    let mut host = None;
    for net in scope.iter().filter(|n| !n.internal) {
        let list: &[SocketAddr] = if net.upstreams.is_empty() {
            host.get_or_insert_with(|| shared.host.get())
        } else {
            &net.upstreams
        };
        for a in list {
            if !upstreams.contains(a) {
                upstreams.push(*a);
            }
        }
    }
    Some(upstreams)
}

/// Cheap clonable handler given to each hickory `Server`.
#[derive(Clone)]
pub(crate) struct Handler(pub(crate) Arc<Shared>);

/// What to send back.
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    authentic_data: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn error(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            authoritative: false,
            authentic_data: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

impl Handler {
    async fn resolve(&self, request: &Request) -> Reply {
        let shared = &self.0;
        // Strangers first: whatever they send, they get REFUSED and learn nothing else (found
        // by the dns_query fuzz target: an unknown opcode from outside got NOTIMP).
        let records = shared.records.load();
        let src = request.src().ip();
        let scope = records.scope(src);
        if scope.is_empty() {
            debug!(%src, "DNS query from outside netd's networks refused");
            return Reply::error(ResponseCode::Refused);
        }
        if request.metadata.op_code != OpCode::Query {
            return Reply::error(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Reply::error(ResponseCode::FormErr);
        };
        let q: &Query = query.original();
        debug!(
            %src,
            name = %q.name,
            qtype = %q.query_type,
            networks = ?scope.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            "DNS query"
        );
        if q.query_class != DNSClass::IN
            || matches!(q.query_type, RecordType::AXFR | RecordType::IXFR)
        {
            return Reply::error(ResponseCode::Refused);
        }

        let rotate = shared.rotation.fetch_add(1, Ordering::Relaxed);
        match records.answer(&scope, &q.name, q.query_type, shared.local_ttl, rotate) {
            Local::Answer { rcode, records } => Reply {
                rcode,
                authoritative: true,
                authentic_data: false,
                answers: records,
                authorities: Vec::new(),
                additionals: Vec::new(),
            },
            Local::Forward => {
                let Some(upstreams) = upstreams_of(shared, &scope) else {
                    // Internal networks have no way out, and neither do their names.
                    return Reply::error(ResponseCode::Refused);
                };
                drop(records);
                let tcp = request.protocol() == Protocol::Tcp;
                match shared.forwarder.resolve(q, &upstreams, tcp).await {
                    Ok(a) => Reply {
                        rcode: a.rcode,
                        authoritative: false,
                        authentic_data: a.authentic_data,
                        answers: a.answers,
                        authorities: a.authorities,
                        additionals: a.additionals,
                    },
                    Err(e) => {
                        debug!(name = %q.name, cause = %e, "answering SERVFAIL");
                        Reply::error(ResponseCode::ServFail)
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.resolve(request).await;

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        metadata.authentic_data = reply.authentic_data;
        metadata.recursion_available = true;

        // Echo EDNS when the client used it; the payload we put there is also the size limit
        // hickory applies when encoding the UDP reply (truncating and setting TC beyond it).
        let edns = request.edns.as_ref().map(|client| {
            let mut e = Edns::new();
            e.set_max_payload(client.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                warn!(src = %request.src(), cause = %e, "sending DNS reply");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                Header {
                    metadata,
                    counts: HeaderCounts::default(),
                }
                .into()
            }
        }
    }
}

/// A response handler that keeps the encoded reply instead of sending it, sized the way
/// hickory's own UDP/TCP handle sizes it (EDNS payload or 512 over UDP, 64 KiB over TCP).
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    reply: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            reply: Arc::default(),
        }
    }

    /// The encoded reply, if the handler sent one.
    fn take(&self) -> Option<Vec<u8>> {
        self.reply.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = match (self.protocol, response.edns()) {
            (Protocol::Udp, Some(e)) => e.max_payload(),
            (Protocol::Udp, None) => 512,
            _ => u16::MAX,
        };
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(_) => {
                // As hickory's own handle does: an unencodable reply becomes a bare SERVFAIL.
                bytes.clear();
                let mut encoder = BinEncoder::new(&mut bytes);
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                header.emit(&mut encoder)?;
                ResponseInfo::from(header)
            }
        };
        *self.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// Runs one raw message through the same steps as a listener (decode, drop responses, handle,
/// encode) without any socket; see [`crate::Dns::answer_raw`].
pub(crate) async fn answer_raw(
    handler: &Handler,
    packet: &[u8],
    src: SocketAddr,
    tcp: bool,
) -> Option<Vec<u8>> {
    let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
    // hickory-server drops what is shorter than a header and answers undecodable bodies with
    // FORMERR itself, before our handler; neither reaches netd code.
    let request = Request::from_bytes(packet.to_vec(), src, protocol).ok()?;
    if request.metadata.message_type == MessageType::Response {
        return None;
    }
    let capture = Capture::new(protocol);
    handler
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    capture.take()
}

/// What hickory-server's UDP listener would send for `packet` from `src` (the fast path's
/// fallback): nothing for unanswerable sources, short datagrams and responses, FORMERR with the
/// bare header for undecodable bodies, else the handler's answer.
pub(crate) async fn answer_udp_slow(
    handler: &Handler,
    packet: &[u8],
    src: SocketAddr,
) -> Option<Vec<u8>> {
    if !answerable(src) {
        return None;
    }
    let mut decoder = BinDecoder::new(packet);
    let header = Header::read(&mut decoder).ok()?;
    if Request::from_bytes(packet.to_vec(), src, Protocol::Udp).is_ok() {
        return answer_raw(handler, packet, src, false).await;
    }
    let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
    let response = MessageResponseBuilder::new(&queries, None)
        .error_msg(&header.metadata, ResponseCode::FormErr);
    let capture = Capture::new(Protocol::Udp);
    capture.clone().send_response(response).await.ok()?;
    capture.take()
}

/// hickory-server's check of a source before answering it: not port 0, not an unspecified or
/// broadcast address.
pub(crate) fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            std::net::IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
            std::net::IpAddr::V6(v6) => !v6.is_unspecified(),
        }
}

#[cfg(test)]
mod tests {
    use crate::{Dns, DnsConfig, NetworkDns};

    /// A header (id 0x1234, given flags) with one question `web. IN A`.
    fn message(flags: [u8; 2], questions: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, flags[0], flags[1]];
        m.extend_from_slice(&questions.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        for _ in 0..questions {
            m.extend_from_slice(b"\x03web\x00\x00\x01\x00\x01");
        }
        m
    }

    /// Regression (fuzz target dns_query, fuzz/regressions/dns_query/): a stranger sending an
    /// unknown opcode or several questions got NOTIMP / FORMERR instead of REFUSED.
    #[tokio::test]
    async fn strangers_are_refused_whatever_they_send() {
        let dns = Dns::new(DnsConfig {
            resolv_conf: "/nonexistent/resolv.conf".into(),
            systemd_resolv_conf: "/nonexistent/resolv.conf".into(),
            ..DnsConfig::default()
        });
        dns.add_network(NetworkDns {
            name: "alpha".into(),
            subnets: vec!["10.89.0.0/24".parse().unwrap()],
            listen: Vec::new(),
            domain: None,
            upstreams: Vec::new(),
            internal: true,
        })
        .await
        .unwrap();
        let stranger = "192.0.2.1:40000".parse().unwrap();
        let member = "10.89.0.9:40000".parse().unwrap();
        // Opcode 11 (unassigned), one question; then a plain query with two questions.
        for (packet, member_rcode) in [
            (message([0x58, 0x00], 1), 4), // NOTIMP for members
            (message([0x01, 0x00], 2), 1), // FORMERR for members
        ] {
            let reply = dns
                .answer_raw(&packet, stranger, false)
                .await
                .expect("a reply");
            assert_eq!(reply[3] & 0x0f, 5, "stranger not REFUSED: {reply:?}");
            let reply = dns
                .answer_raw(&packet, member, false)
                .await
                .expect("a reply");
            assert_eq!(reply[3] & 0x0f, member_rcode, "{reply:?}");
        }
    }
}

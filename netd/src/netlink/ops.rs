//! The operations netd needs: bridges, veth pairs born in the container namespace, addresses,
//! routes and link lookups.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoPortKind, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::proto::Connection;
use rtnetlink::sys::AsyncSocket;
use tokio::sync::Semaphore;

use super::graveyard::{Graveyard, RETIRED_GROUP};
use super::NetlinkError;
use crate::netns::Netns;

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;

/// What netd needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (bridge, veth, …).
    pub kind: Option<String>,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// Index of the controller (bridge) it is enslaved to.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: Option<u32>,
}

/// A bridge as netd wants it.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// Bridge name.
    pub name: String,
    /// MTU, if set.
    pub mtu: Option<u32>,
    /// Pinned MAC: a bridge otherwise takes the lowest MAC of its ports, and every port change
    /// then changes the gateway's MAC under the containers' ARP caches (netavark pins it too).
    pub mac: [u8; 6],
    /// Gateway addresses with the subnet prefix.
    pub addrs: Vec<IpNet>,
}

/// A veth pair whose peer is created directly inside the container namespace.
#[derive(Debug)]
pub struct VethSpec<'a> {
    /// Host-side name.
    pub host_name: String,
    /// Container-side name (final name: no rename dance).
    pub peer_name: String,
    /// Container namespace.
    pub peer_netns: &'a Netns,
    /// Bridge index the host end is enslaved to.
    pub master: u32,
    /// MTU, if set.
    pub mtu: Option<u32>,
    /// Requested container-side MAC.
    pub peer_mac: Option<[u8; 6]>,
    /// Host-side MAC (chosen by netd so it need not be read back).
    pub host_mac: Option<[u8; 6]>,
}

/// A route as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination.
    pub dst: IpNet,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
}

/// A netlink route socket bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
    /// Bounds requests in flight on this socket: answers to more than that can overflow the
    /// socket's receive buffer, and the kernel then drops them silently (seen as a hang with
    /// 200 parallel attaches sharing the host socket).
    limit: Arc<Semaphore>,
    /// The socket again (a duplicate descriptor), for interface ioctls in its namespace.
    ioctl_fd: Arc<OwnedFd>,
    /// Where interface deletions go, if not through `handle` (see [`Netlink::current`]).
    deleter: Option<Arc<Netlink>>,
    /// Deletes retired interfaces in bulk (see [`Netlink::retire_link`]).
    graveyard: Option<Arc<Graveyard>>,
}

/// Requests one socket may have in flight.
const IN_FLIGHT: usize = 32;
/// Receive buffer asked for (SO_RCVBUFFORCE: root may exceed rmem_max).
const RCVBUF: libc::c_int = 4 << 20;
/// A request the kernel has not answered by then is reported, never waited on forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn open_connection() -> Result<(Connection<RouteNetlinkMessage>, Netlink), NetlinkError> {
    let (mut conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
    let fd = conn.socket_mut().socket_mut().as_raw_fd();
    // SAFETY: `fd` is the connection's open socket; the duplicate is ours alone.
    let ioctl_fd = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(NetlinkError::Socket)?;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&RCVBUF as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        // Not fatal: the in-flight bound alone keeps answers within the default buffer.
        tracing::debug!(error = %std::io::Error::last_os_error(), "SO_RCVBUFFORCE refused");
    }
    let nl = Netlink {
        handle,
        ioctl_fd: Arc::new(ioctl_fd),
        limit: Arc::new(Semaphore::new(IN_FLIGHT)),
        deleter: None,
        graveyard: None,
    };
    Ok((conn, nl))
}

impl Netlink {
    /// A socket in the calling thread's namespace, plus a second one for interface deletions
    /// driven by a thread of its own: the kernel completes a deletion inside the system call
    /// only after RCU grace periods (~20 ms here), which must hold neither the runtime thread
    /// (the API, DNS) nor the other requests on this socket. Needs a tokio runtime.
    pub fn current() -> Result<Netlink, NetlinkError> {
        let (conn, nl) = open_connection()?;
        tokio::spawn(conn);
        let deleter = Arc::new(Netlink::on_own_thread("netd-netlink-del")?);
        Ok(Netlink {
            graveyard: Some(Arc::new(Graveyard::start(deleter.clone()))),
            deleter: Some(deleter),
            ..nl
        })
    }

    /// A socket in the calling thread's namespace whose connection runs on a new thread with
    /// a runtime of its own; the thread ends when the last handle is dropped.
    fn on_own_thread(thread: &str) -> Result<Netlink, NetlinkError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(thread.to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(NetlinkError::Socket(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match open_connection() {
                        Ok((conn, nl)) => {
                            let _ = tx.send(Ok(nl));
                            conn.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(NetlinkError::Socket)?;
        rx.recv().map_err(|_| {
            NetlinkError::Socket(std::io::Error::other("netlink thread exited at start"))
        })?
    }

    /// A socket inside `ns` (opened by this thread from within `ns`; it registers with this
    /// runtime's reactor, which serves sockets of any namespace). Needs a tokio runtime.
    pub fn in_netns(ns: &Netns) -> Result<Netlink, NetlinkError> {
        let opened = ns
            .run(open_connection)
            .map_err(|e| NetlinkError::Socket(std::io::Error::other(e.to_string())))?;
        let (conn, nl) = opened?;
        tokio::spawn(conn);
        Ok(nl)
    }

    /// One request: bounded in flight and in time, errors carrying what and to what.
    async fn req<T>(
        &self,
        op: &'static str,
        target: impl Into<String>,
        fut: impl Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<T, NetlinkError> {
        let _permit = self.limit.acquire().await.expect("semaphore never closed");
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|e| NetlinkError::kernel(op, target, e)),
            Err(_) => Err(NetlinkError::Timeout {
                op,
                target: target.into(),
            }),
        }
    }

    /// Like [`Netlink::req`], treating `errno` as success (`Ok(false)`).
    async fn req_tolerating(
        &self,
        op: &'static str,
        target: impl Into<String>,
        errno: i32,
        fut: impl Future<Output = Result<(), rtnetlink::Error>>,
    ) -> Result<bool, NetlinkError> {
        match self.req(op, target, fut).await {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(errno) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// An interface's index and MAC address by name, `None` when it does not exist. Two ioctls
    /// on this namespace's socket instead of a netlink request: a lookup under RCU, without
    /// the 1.5 KB answer of a full link dump to build and parse (an attach looks up three
    /// names).
    pub fn index_and_mac(&self, name: &str) -> Result<Option<(u32, [u8; 6])>, NetlinkError> {
        let Some(index) = self.index_of(name)? else {
            return Ok(None);
        };
        let Some(hw) = self.ifreq(name, libc::SIOCGIFHWADDR)? else {
            return Ok(None);
        };
        // SAFETY: SIOCGIFHWADDR filled in the hardware address member of the union.
        let data = unsafe { hw.ifr_ifru.ifru_hwaddr.sa_data };
        let mac = std::array::from_fn(|i| data[i] as u8);
        Ok(Some((index, mac)))
    }

    /// An interface's index by name (one ioctl, see [`Netlink::index_and_mac`]); `None` when
    /// it does not exist.
    pub fn index_of(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        // SAFETY: SIOCGIFINDEX fills in the index member of the union.
        Ok(self
            .ifreq(name, libc::SIOCGIFINDEX)?
            .map(|r| unsafe { r.ifr_ifru.ifru_ifindex } as u32))
    }

    /// One interface ioctl by name; `None` on ENODEV.
    fn ifreq(&self, name: &str, request: libc::Ioctl) -> Result<Option<libc::ifreq>, NetlinkError> {
        let fail = |e: std::io::Error| NetlinkError::Kernel {
            op: "looking up interface",
            target: name.to_string(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        };
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() || name.as_bytes().contains(&0) {
            return Err(fail(std::io::Error::from_raw_os_error(libc::EINVAL)));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: valid socket, pointer to a live ifreq these requests read and write.
        if unsafe { libc::ioctl(self.ioctl_fd.as_raw_fd(), request, &mut req) } < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(ENODEV) => Ok(None),
                _ => Err(fail(e)),
            };
        }
        Ok(Some(req))
    }

    /// Looks an interface up by name; `None` when it does not exist.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut stream = self.handle.link().get().match_name(name).execute();
        match self
            .req("looking up interface", name, stream.try_next())
            .await
        {
            Ok(msg) => Ok(msg.as_ref().map(parse_link)),
            Err(err) if err.errno() == Some(ENODEV) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Every interface in the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let dump = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect::<Vec<LinkMessage>>();
        let msgs = self.req("listing interfaces", "", dump).await?;
        Ok(msgs.iter().map(parse_link).collect())
    }

    /// Creates the bridge, or validates and adopts an existing one of that name; then makes sure
    /// it is up and holds every gateway address. Returns it and whether it was created.
    pub async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(LinkInfo, bool), NetlinkError> {
        let (link, created) = match self.link_by_name(&spec.name).await? {
            Some(link) => {
                if link.kind.as_deref() != Some("bridge") {
                    return Err(NetlinkError::Conflict(format!(
                        "creating bridge {}: an interface of that name exists and is not a bridge (kind {})",
                        spec.name,
                        link.kind.as_deref().unwrap_or("unknown")
                    )));
                }
                if !link.up {
                    self.set_up(link.index, &spec.name).await?;
                }
                (link, false)
            }
            None => {
                // Without multicast snooping. With it, every port that comes up or goes down
                // re-arms two multicast query timers on every other port (the bridge's port
                // state selection walks them all), a cost that grows with each container: a
                // veth created, enslaved and set up on a bridge with 900 ports took 1.28 ms
                // instead of 0.96 (docs/benchmarks.md, eleventh round). Forwarding stays the
                // same: without an IGMP/MLD querier on the network, which netd does not run, a
                // snooping bridge floods multicast to every port anyway.
                let mut b = LinkBridge::new(&spec.name)
                    .mcast_snooping(false)
                    .address(spec.mac.to_vec())
                    .up();
                if let Some(mtu) = spec.mtu {
                    b = b.mtu(mtu);
                }
                let add = self.handle.link().add(b.build()).execute();
                self.req("creating bridge", &spec.name, add).await?;
                let link = self.link_by_name(&spec.name).await?.ok_or_else(|| {
                    NetlinkError::NoSuchLink {
                        op: "reading back bridge",
                        target: spec.name.clone(),
                    }
                })?;
                (link, true)
            }
        };
        for addr in &spec.addrs {
            self.add_address(link.index, &spec.name, *addr).await?;
        }
        Ok((link, created))
    }

    /// Sets an interface up.
    pub async fn set_up(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.req("setting up", name, self.handle.link().set(msg).execute())
            .await
    }

    /// Keeps an interface from generating an IPv6 link-local address (`addrgenmode none`),
    /// addressed by name; must precede the first "up". Without an address it sends no
    /// duplicate-address probes, router solicitations or MLD reports: IPv6 stays quiet without
    /// the `/proc/sys/net/ipv6/conf/<ifname>` write, whose lookup walks a hash chain as long as
    /// the machine's count of namespaces holding an interface of that name.
    pub async fn no_link_local(&self, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_name(name)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        self.req(
            "turning off IPv6 address generation",
            name,
            self.handle.link().set(msg).execute(),
        )
        .await
    }

    /// Sets a bridge port up with hairpin mode on, in one request addressed by name (so the
    /// port's index need not be looked up first).
    pub async fn activate_port(&self, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkMessageBuilder::<LinkBridgePort>::default()
            .name(name.to_string())
            .set_port_kind(InfoPortKind::Bridge)
            .hairpin(true)
            .up()
            .build();
        self.req(
            "setting up (hairpin mode on)",
            name,
            self.handle.link().set_port(msg).execute(),
        )
        .await
    }

    /// Enslaves an interface to a bridge.
    pub async fn set_master(
        &self,
        index: u32,
        name: &str,
        master: u32,
    ) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.req(
            "attaching to bridge",
            name,
            self.handle.link().set(msg).execute(),
        )
        .await
    }

    /// Adds an address (no DAD for IPv6, so it is usable at once); an existing one is fine.
    pub async fn add_address(
        &self,
        index: u32,
        name: &str,
        addr: IpNet,
    ) -> Result<(), NetlinkError> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let target = format!("{addr} to {name}");
        self.req_tolerating("adding address", target, EEXIST, req.execute())
            .await
            .map(|_| ())
    }

    /// Addresses on an interface.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        let dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect::<Vec<_>>();
        let msgs = self
            .req("listing addresses of", index.to_string(), dump)
            .await?;
        let mut out = Vec::new();
        for m in msgs {
            let plen = m.header.prefix_len;
            for a in &m.attributes {
                if let AddressAttribute::Address(ip) = a {
                    if let Ok(net) = IpNet::new(*ip, plen) {
                        out.push(net);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Creates a veth pair in one request: the host end enslaved to the bridge, the peer born
    /// inside the container namespace under its final name. Both stay down: the peer cannot be
    /// set up in the same request (veth_open fails with ENOTCONN before the pair is linked), and
    /// the host end must first lose IPv6 (see [`super::disable_ipv6`]).
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<(), NetlinkError> {
        let mut peer = one_queue(LinkMessageBuilder::<LinkUnspec>::new())
            .name(spec.peer_name.clone())
            .setns_by_fd(spec.peer_netns.fd().as_raw_fd());
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let mut host = one_queue(LinkMessageBuilder::<LinkVeth>::new_with_info_kind(
            InfoKind::Veth,
        ))
        .name(spec.host_name.clone())
        .controller(spec.master)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = spec.mtu {
            host = host.mtu(mtu);
        }
        if let Some(mac) = spec.host_mac {
            host = host.address(mac.to_vec());
        }
        let target = format!("{} <-> {}", spec.host_name, spec.peer_name);
        let add = self.handle.link().add(host.build()).execute();
        self.req("creating veth pair", target, add).await
    }

    /// Deletes an interface by name; `false` when it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let nl = self.deleter.as_deref().unwrap_or(self);
        let Some(link) = nl.link_by_name(name).await? else {
            return Ok(false);
        };
        let del = nl.handle.link().del(link.index).execute();
        nl.req_tolerating("deleting interface", name, ENODEV, del)
            .await
    }

    /// Cuts an interface off at once and leaves its deletion to the reaper, which deletes
    /// everything retired in one batch: the interface goes down, leaves its bridge (its port
    /// and forwarding entries go now) and joins [`RETIRED_GROUP`]. `false` when it did not
    /// exist. A socket without a reaper (in a container namespace) deletes at once.
    pub async fn retire_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(graveyard) = &self.graveyard else {
            return self.delete_link(name).await;
        };
        let msg = LinkUnspec::new_with_name(name)
            .down()
            .nocontroller()
            .link_group(RETIRED_GROUP)
            .build();
        let set = self.handle.link().set(msg).execute();
        let retired = self
            .req_tolerating("retiring interface", name, ENODEV, set)
            .await?;
        if retired {
            graveyard.wake();
        }
        Ok(retired)
    }

    /// Deletes every retired interface now, in one batch: for callers that need their names
    /// back before the reaper comes by.
    pub async fn flush_retired(&self) -> Result<(), NetlinkError> {
        self.deleter
            .as_deref()
            .unwrap_or(self)
            .delete_group(RETIRED_GROUP)
            .await
    }

    /// Deletes every interface of link group `group` in one batch (none is fine).
    pub(super) async fn delete_group(&self, group: u32) -> Result<(), NetlinkError> {
        let mut del = self.handle.link().del(0);
        del.message_mut()
            .attributes
            .push(LinkAttribute::Group(group));
        self.req_tolerating(
            "deleting retired interfaces",
            format!("link group {group:#x}"),
            ENODEV,
            del.execute(),
        )
        .await
        .map(drop)
    }

    /// Adds a default route via `gateway` out of interface `index` with `metric`. A container
    /// on several networks gets one default route per network, told apart by metric.
    pub async fn add_default_route(
        &self,
        index: u32,
        name: &str,
        gateway: IpAddr,
        metric: u32,
    ) -> Result<(), NetlinkError> {
        let any: IpAddr = match gateway {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(any, 0)
            .and_then(|b| b.gateway(gateway))
            .map_err(|e| NetlinkError::Conflict(format!("building route via {gateway}: {e}")))?
            .output_interface(index)
            .priority(metric)
            .build();
        let target = format!("via {gateway} dev {name}");
        let add = self.handle.route().add(msg).execute();
        self.req_tolerating("adding default route", target, EEXIST, add)
            .await
            .map(|_| ())
    }

    /// Unicast routes of the main table, both families.
    pub async fn routes(&self) -> Result<Vec<RouteEntry>, NetlinkError> {
        let mut out = Vec::new();
        for msg in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let dump = self
                .handle
                .route()
                .get(msg)
                .execute()
                .try_collect::<Vec<RouteMessage>>();
            let msgs = self.req("listing routes", "", dump).await?;
            out.extend(msgs.iter().filter_map(parse_route));
        }
        Ok(out)
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse_route(m: &RouteMessage) -> Option<RouteEntry> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut table = u32::from(m.header.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != 254 {
        return None;
    }
    let dst = match dst {
        Some(d) => IpNet::new(d, m.header.destination_prefix_length).ok()?,
        None => match m.header.address_family {
            netlink_packet_route::AddressFamily::Inet => "0.0.0.0/0".parse().ok()?,
            _ => "::/0".parse().ok()?,
        },
    };
    Some(RouteEntry { dst, gateway, oif })
}

fn parse_link(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                info.mac = Some(mac);
            }
            LinkAttribute::Controller(m) => info.master = Some(*m),
            LinkAttribute::Mtu(m) => info.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// One transmit and one receive queue, asked for at creation. A veth is created with a queue
/// per possible CPU and then cut back to one in use; cutting back a registered device waits
/// for an expedited RCU grace period with the RTNL lock held (`netif_set_real_num_tx_queues`,
/// every other netlink request on the machine waits too). Asked for explicitly, the count is
/// what veth would end up using anyway, without the wait.
fn one_queue<T>(b: LinkMessageBuilder<T>) -> LinkMessageBuilder<T> {
    b.append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
}

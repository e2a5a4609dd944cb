//! UDP conntrack flushing over ctnetlink (raw netlink messages on the same kind of socket as
//! nftables). UDP has no connection end: a stale entry for a published port keeps steering a
//! client that never stops sending (DNS, syslog, game servers) to the old container, or past
//! the DNAT for a port just published. Like CNI portmap, netd deletes the UDP entries whose
//! original destination is a host port being published or unpublished.

use std::io;
use std::net::IpAddr;

use crate::apply::{header, poll_readable, AlignedBuf, NlSocket};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;
const IPPROTO_UDP: u8 = 17;

/// What to flush: UDP entries to `port` (and to `addr`, if given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpTarget {
    /// Host address the port is published on (`None`: any).
    pub addr: Option<IpAddr>,
    /// Host port.
    pub port: u16,
}

/// Iterates netlink attributes: (type without flags, payload, whole attribute bytes).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let whole = &buf[..len];
        let payload = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((ty, payload, whole))
    })
}

fn find(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _, _)| *t == ty).map(|(_, p, _)| p)
}

/// (protocol, dst addr, dst port) of a CTA_TUPLE_* payload.
fn tuple_dst(tuple: &[u8]) -> Option<(u8, IpAddr, u16)> {
    let ip = find(tuple, CTA_TUPLE_IP)?;
    let addr = if let Some(a) = find(ip, CTA_IP_V4_DST) {
        IpAddr::from(<[u8; 4]>::try_from(a).ok()?)
    } else {
        IpAddr::from(<[u8; 16]>::try_from(find(ip, CTA_IP_V6_DST)?).ok()?)
    };
    let proto = find(tuple, CTA_TUPLE_PROTO)?;
    let num = *find(proto, CTA_PROTO_NUM)?.first()?;
    let port = find(proto, CTA_PROTO_DST_PORT)?;
    let port = u16::from_be_bytes(port.try_into().ok()?);
    Some((num, addr, port))
}

fn nlmsg(ty: u16, flags: u16, seq: u32, family: u8, attrs: &[&[u8]]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m.extend([family, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0
    for a in attrs {
        m.extend_from_slice(a);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// Deletes UDP conntrack entries whose original destination matches one of `targets`.
/// Returns how many were deleted.
pub(crate) fn flush_udp(sock: &NlSocket, targets: &[UdpTarget]) -> io::Result<usize> {
    if targets.is_empty() {
        return Ok(0);
    }
    let ty_get = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let seq = 0x5eed_0001;
    sock.send(&nlmsg(ty_get, flags, seq, libc::AF_UNSPEC as u8, &[]))?;
    // (family, CTA_TUPLE_ORIG attribute bytes, CTA_ZONE attribute bytes)
    let mut victims: Vec<(u8, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut buf = AlignedBuf::new(256 * 1024);
    'dump: loop {
        if !poll_readable(sock.fd(), 10_000)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "conntrack dump stalled",
            ));
        }
        let n = sock.recv(&mut buf)?;
        for msg in mnl::NlMessages::new(&buf.as_mut()[..n]) {
            let msg = msg?;
            let (ty, _, s, _) = header(msg);
            if s != seq {
                continue;
            }
            match ty {
                t if t == libc::NLMSG_DONE as u16 => break 'dump,
                t if t == libc::NLMSG_ERROR as u16 => {
                    let errno = -i32::from_ne_bytes(msg[16..20].try_into().expect("4 bytes"));
                    if errno == 0 {
                        break 'dump;
                    }
                    return Err(io::Error::from_raw_os_error(errno));
                }
                _ => {}
            }
            if msg.len() < 20 {
                continue;
            }
            let family = msg[16];
            let body = &msg[20..];
            let Some((_, orig, orig_whole)) = attrs(body).find(|(t, _, _)| *t == CTA_TUPLE_ORIG)
            else {
                continue;
            };
            let Some((proto, dst, dport)) = tuple_dst(orig) else {
                continue;
            };
            let hit = proto == IPPROTO_UDP
                && targets
                    .iter()
                    .any(|t| t.port == dport && t.addr.is_none_or(|a| a == dst));
            if hit {
                let zone = attrs(body)
                    .find(|(t, _, _)| *t == CTA_ZONE)
                    .map(|(_, _, w)| w.to_vec());
                victims.push((family, orig_whole.to_vec(), zone));
            }
        }
    }
    let ty_del = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    let mut deleted = 0;
    for (i, (family, orig, zone)) in victims.iter().enumerate() {
        let seq = 0x5eed_1000 + i as u32;
        let mut orig = orig.clone();
        // keep the nested flag the kernel expects on tuple attributes
        let t = u16::from_ne_bytes([orig[2], orig[3]]) | NLA_F_NESTED;
        orig[2..4].copy_from_slice(&t.to_ne_bytes());
        let mut parts: Vec<&[u8]> = vec![&orig];
        if let Some(z) = zone {
            parts.push(z);
        }
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        sock.send(&nlmsg(ty_del, flags, seq, *family, &parts))?;
        loop {
            if !poll_readable(sock.fd(), 10_000)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "conntrack delete stalled",
                ));
            }
            let n = sock.recv(&mut buf)?;
            let mut done = false;
            for msg in mnl::NlMessages::new(&buf.as_mut()[..n]) {
                let msg = msg?;
                let (ty, _, s, _) = header(msg);
                if s == seq && ty == libc::NLMSG_ERROR as u16 {
                    done = true;
                    match -i32::from_ne_bytes(msg[16..20].try_into().expect("4 bytes")) {
                        0 => deleted += 1,
                        // gone meanwhile (timed out or deleted by someone else)
                        libc::ENOENT => {}
                        e => return Err(io::Error::from_raw_os_error(e)),
                    }
                }
            }
            if done {
                break;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 4) as u16).to_ne_bytes().to_vec();
        v.extend(ty.to_ne_bytes());
        v.extend(payload);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn parses_a_tuple() {
        let ip = nla(
            CTA_TUPLE_IP | NLA_F_NESTED,
            &[nla(1, &[1, 2, 3, 4]), nla(CTA_IP_V4_DST, &[5, 6, 7, 8])].concat(),
        );
        let proto = nla(
            CTA_TUPLE_PROTO | NLA_F_NESTED,
            &[
                nla(CTA_PROTO_NUM, &[17]),
                nla(2, &1000u16.to_be_bytes()),
                nla(CTA_PROTO_DST_PORT, &53u16.to_be_bytes()),
            ]
            .concat(),
        );
        let tuple = [ip, proto].concat();
        assert_eq!(
            tuple_dst(&tuple),
            Some((17, "5.6.7.8".parse().unwrap(), 53))
        );
    }
}

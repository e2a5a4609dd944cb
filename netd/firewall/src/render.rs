//! Render: turns [`Op`]s into nftables netlink messages inside one `nftnl::Batch`.
//!
//! Tables, chains, rules and the batch framing come from the `nftnl` crate. What it lacks
//! (named sets and maps with concatenated keys, set elements with values and verdicts, and
//! the expressions `fib`, `lookup` with a destination register, `nat` with registers) is built
//! here over `nftnl-sys`, behind the small safe types [`RawExpr`], [`SetMsg`] and
//! [`ElemsMsg`]. Each owns its libnftnl object and frees it on drop.

use std::ffi::{c_void, CString};
use std::net::IpAddr;
use std::os::raw::c_char;
use std::ptr::NonNull;

use ipnet::IpNet;
use nftnl::expr::Expression;
use nftnl::{Batch, Chain, ChainType, FinalizedBatch, MsgType, NlMsg, ProtoFamily, Rule, Table};
use nftnl_sys as sys;

use crate::policy::{
    Action, ChainKind, ElemData, Element, Field, Hook, IpFamily, KeyType, Match, Op, RuleSpec,
    SetData, SetSpec, TableFamily, TableId, Value,
};

// Constants from linux/netfilter/nf_tables.h and linux/netfilter.h.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG32_00: u32 = 8;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_LL: u32 = 0;
const NFT_PAYLOAD_NH: u32 = 1;
const NFT_PAYLOAD_TH: u32 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const IPS_DST_NAT: u32 = 1 << 5;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const RTN_LOCAL: u32 = 2;
const NFT_LOOKUP_F_INV: u32 = 1;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_NAT_SNAT: u32 = 0;
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFT_SET_MAP: u32 = 0x8;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const IFNAMSIZ: usize = 16;

/// Elements per NEWSETELEM/DELSETELEM message: keeps every message far below the 64 KiB
/// netlink attribute limit even for the largest keys.
const ELEMS_PER_MSG: usize = 128;

fn proto_family(f: TableFamily) -> ProtoFamily {
    match f {
        TableFamily::Inet => ProtoFamily::Inet,
        TableFamily::Bridge => ProtoFamily::Bridge,
    }
}

fn cstring(s: &str) -> CString {
    // Names are validated (no NUL) before they reach the renderer; strip defensively.
    CString::new(s.replace('\0', "")).expect("NUL bytes removed")
}

fn round4(n: u32) -> u32 {
    n.div_ceil(4) * 4
}

/// Length of a (possibly concatenated) key: components are padded to 32-bit registers.
pub(crate) fn key_len(types: &[KeyType]) -> u32 {
    match types {
        [single] => single.byte_len(),
        many => many.iter().map(|t| round4(t.byte_len())).sum(),
    }
}

fn key_type(types: &[KeyType]) -> u32 {
    // nftables' userspace encoding of concatenated types: 6 bits per component.
    types.iter().fold(0u32, |acc, t| (acc << 6) | t.nft_type())
}

fn value_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Ifname(name) => {
            let mut b = name.as_bytes().to_vec();
            b.resize(IFNAMSIZ, 0);
            b
        }
        Value::Ipv4(ip) => ip.octets().to_vec(),
        Value::Ipv6(ip) => ip.octets().to_vec(),
        Value::Ether(mac) => mac.to_vec(),
        Value::Proto(p) => vec![*p],
        Value::Port(p) => p.to_be_bytes().to_vec(),
    }
}

/// Encodes element data as the kernel compares it: concatenations pad every component to a
/// multiple of four bytes (registers are 32 bits wide).
pub(crate) fn encode(values: &[Value]) -> Vec<u8> {
    match values {
        [single] => value_bytes(single),
        many => {
            let mut out = Vec::new();
            for v in many {
                let mut b = value_bytes(v);
                b.resize(round4(b.len() as u32) as usize, 0);
                out.extend(b);
            }
            out
        }
    }
}

// ---- expressions -------------------------------------------------------------------------

enum Attr {
    U32(u32),
    Data(Vec<u8>),
    Str(CString),
}

/// An nftables expression described by name and attributes, materialized as an
/// `nftnl_expr` when added to a rule.
pub(crate) struct RawExpr {
    name: &'static std::ffi::CStr,
    attrs: Vec<(u32, Attr)>,
}

impl Expression for RawExpr {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: nftnl_expr_alloc returns a fresh object or NULL; setters copy their input.
        unsafe {
            let Some(expr) = NonNull::new(sys::nftnl_expr_alloc(self.name.as_ptr())) else {
                // Same policy as nftnl's try_alloc: an allocation this small failing is fatal.
                std::process::abort();
            };
            for (attr, val) in &self.attrs {
                let attr = *attr as u16;
                match val {
                    Attr::U32(v) => sys::nftnl_expr_set_u32(expr.as_ptr(), attr, *v),
                    Attr::Data(d) => {
                        sys::nftnl_expr_set(
                            expr.as_ptr(),
                            attr,
                            d.as_ptr().cast::<c_void>(),
                            d.len() as u32,
                        );
                    }
                    Attr::Str(s) => {
                        sys::nftnl_expr_set_str(expr.as_ptr(), attr, s.as_ptr());
                    }
                }
            }
            expr
        }
    }
}

fn expr(name: &'static std::ffi::CStr, attrs: Vec<(u32, Attr)>) -> RawExpr {
    RawExpr { name, attrs }
}

fn meta(key: u32, dreg: u32) -> RawExpr {
    expr(
        c"meta",
        vec![
            (sys::NFTNL_EXPR_META_KEY, Attr::U32(key)),
            (sys::NFTNL_EXPR_META_DREG, Attr::U32(dreg)),
        ],
    )
}

fn payload(base: u32, offset: u32, len: u32, dreg: u32) -> RawExpr {
    expr(
        c"payload",
        vec![
            (sys::NFTNL_EXPR_PAYLOAD_DREG, Attr::U32(dreg)),
            (sys::NFTNL_EXPR_PAYLOAD_BASE, Attr::U32(base)),
            (sys::NFTNL_EXPR_PAYLOAD_OFFSET, Attr::U32(offset)),
            (sys::NFTNL_EXPR_PAYLOAD_LEN, Attr::U32(len)),
        ],
    )
}

fn cmp(op: u32, data: Vec<u8>) -> RawExpr {
    expr(
        c"cmp",
        vec![
            (sys::NFTNL_EXPR_CMP_SREG, Attr::U32(NFT_REG32_00)),
            (sys::NFTNL_EXPR_CMP_OP, Attr::U32(op)),
            (sys::NFTNL_EXPR_CMP_DATA, Attr::Data(data)),
        ],
    )
}

fn bitwise(mask: Vec<u8>) -> RawExpr {
    let len = mask.len() as u32;
    let xor = vec![0; mask.len()];
    expr(
        c"bitwise",
        vec![
            (sys::NFTNL_EXPR_BITWISE_SREG, Attr::U32(NFT_REG32_00)),
            (sys::NFTNL_EXPR_BITWISE_DREG, Attr::U32(NFT_REG32_00)),
            (sys::NFTNL_EXPR_BITWISE_LEN, Attr::U32(len)),
            (sys::NFTNL_EXPR_BITWISE_MASK, Attr::Data(mask)),
            (sys::NFTNL_EXPR_BITWISE_XOR, Attr::Data(xor)),
        ],
    )
}

fn ct(key: u32) -> RawExpr {
    expr(
        c"ct",
        vec![
            (sys::NFTNL_EXPR_CT_KEY, Attr::U32(key)),
            (sys::NFTNL_EXPR_CT_DREG, Attr::U32(NFT_REG32_00)),
        ],
    )
}

fn lookup(set: &str, dreg: Option<u32>, invert: bool) -> RawExpr {
    let mut attrs = vec![
        (sys::NFTNL_EXPR_LOOKUP_SREG, Attr::U32(NFT_REG32_00)),
        (sys::NFTNL_EXPR_LOOKUP_SET, Attr::Str(cstring(set))),
    ];
    if let Some(d) = dreg {
        attrs.push((sys::NFTNL_EXPR_LOOKUP_DREG, Attr::U32(d)));
    }
    if invert {
        attrs.push((sys::NFTNL_EXPR_LOOKUP_FLAGS, Attr::U32(NFT_LOOKUP_F_INV)));
    }
    expr(c"lookup", attrs)
}

fn verdict(code: i32, chain: Option<&str>) -> RawExpr {
    let mut attrs = vec![
        (sys::NFTNL_EXPR_IMM_DREG, Attr::U32(NFT_REG_VERDICT)),
        (sys::NFTNL_EXPR_IMM_VERDICT, Attr::U32(code as u32)),
    ];
    if let Some(c) = chain {
        attrs.push((sys::NFTNL_EXPR_IMM_CHAIN, Attr::Str(cstring(c))));
    }
    expr(c"immediate", attrs)
}

fn nat(kind: u32, family: IpFamily, proto_reg: Option<u32>) -> RawExpr {
    let fam = match family {
        IpFamily::V4 => NFPROTO_IPV4,
        IpFamily::V6 => NFPROTO_IPV6,
    };
    let mut attrs = vec![
        (sys::NFTNL_EXPR_NAT_TYPE, Attr::U32(kind)),
        (sys::NFTNL_EXPR_NAT_FAMILY, Attr::U32(u32::from(fam))),
        (sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, Attr::U32(NFT_REG32_00)),
    ];
    if let Some(r) = proto_reg {
        attrs.push((sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, Attr::U32(r)));
    }
    expr(c"nat", attrs)
}

fn ifname_bytes(name: &str) -> Vec<u8> {
    value_bytes(&Value::Ifname(name.to_string()))
}

fn load(field: Field, dreg: u32) -> RawExpr {
    match field {
        Field::IifName => meta(NFT_META_IIFNAME, dreg),
        Field::OifName => meta(NFT_META_OIFNAME, dreg),
        Field::L4Proto => meta(NFT_META_L4PROTO, dreg),
        Field::Ip4Saddr => payload(NFT_PAYLOAD_NH, 12, 4, dreg),
        Field::Ip4Daddr => payload(NFT_PAYLOAD_NH, 16, 4, dreg),
        Field::Ip6Saddr => payload(NFT_PAYLOAD_NH, 8, 16, dreg),
        Field::Ip6Daddr => payload(NFT_PAYLOAD_NH, 24, 16, dreg),
        Field::EtherSaddr => payload(NFT_PAYLOAD_LL, 6, 6, dreg),
        Field::ArpSha => payload(NFT_PAYLOAD_NH, 8, 6, dreg),
        Field::ArpSpa => payload(NFT_PAYLOAD_NH, 14, 4, dreg),
        Field::ThDport => payload(NFT_PAYLOAD_TH, 2, 2, dreg),
    }
}

/// Loads a concatenation into consecutive 32-bit registers starting at `NFT_REG32_00`.
fn load_concat(key: &[Field]) -> Vec<RawExpr> {
    let mut reg = NFT_REG32_00;
    key.iter()
        .map(|f| {
            let e = load(*f, reg);
            reg += f.byte_len().div_ceil(4);
            e
        })
        .collect()
}

fn prefix_match(fam_offset_v4: u32, fam_offset_v6: u32, net: &IpNet) -> Vec<RawExpr> {
    let (offset, len, addr, mask) = match net {
        IpNet::V4(n) => (
            fam_offset_v4,
            4,
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
        IpNet::V6(n) => (
            fam_offset_v6,
            16,
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
    };
    if net.prefix_len() == 0 {
        return vec![];
    }
    let mut out = vec![payload(NFT_PAYLOAD_NH, offset, len, NFT_REG32_00)];
    if net.prefix_len() != net.max_prefix_len() {
        out.push(bitwise(mask));
    }
    out.push(cmp(NFT_CMP_EQ, addr));
    out
}

fn render_match(m: &Match) -> Vec<RawExpr> {
    let eq_neq = |neg: bool| if neg { NFT_CMP_NEQ } else { NFT_CMP_EQ };
    match m {
        Match::NfProto(f) => vec![
            meta(NFT_META_NFPROTO, NFT_REG32_00),
            cmp(
                NFT_CMP_EQ,
                vec![match f {
                    IpFamily::V4 => NFPROTO_IPV4,
                    IpFamily::V6 => NFPROTO_IPV6,
                }],
            ),
        ],
        Match::EtherType(t) => vec![
            payload(NFT_PAYLOAD_LL, 12, 2, NFT_REG32_00),
            cmp(NFT_CMP_EQ, t.to_be_bytes().to_vec()),
        ],
        Match::IifName(n, neg) => vec![
            meta(NFT_META_IIFNAME, NFT_REG32_00),
            cmp(eq_neq(*neg), ifname_bytes(n)),
        ],
        Match::OifName(n, neg) => vec![
            meta(NFT_META_OIFNAME, NFT_REG32_00),
            cmp(eq_neq(*neg), ifname_bytes(n)),
        ],
        Match::L4Proto(p) => vec![
            meta(NFT_META_L4PROTO, NFT_REG32_00),
            cmp(NFT_CMP_EQ, vec![*p]),
        ],
        Match::ThDport(p) => vec![
            payload(NFT_PAYLOAD_TH, 2, 2, NFT_REG32_00),
            cmp(NFT_CMP_EQ, p.to_be_bytes().to_vec()),
        ],
        Match::Icmp6Type(t) => vec![
            payload(NFT_PAYLOAD_TH, 0, 1, NFT_REG32_00),
            cmp(NFT_CMP_EQ, vec![*t]),
        ],
        Match::Saddr(net) => prefix_match(12, 8, net),
        Match::Daddr(ip) => {
            let net = IpNet::from(*ip);
            prefix_match(16, 24, &net)
        }
        Match::CtState(mask) => vec![
            ct(NFT_CT_STATE),
            bitwise(mask.to_ne_bytes().to_vec()),
            cmp(NFT_CMP_NEQ, vec![0; 4]),
        ],
        Match::CtStatusDnat => vec![
            ct(NFT_CT_STATUS),
            bitwise(IPS_DST_NAT.to_ne_bytes().to_vec()),
            cmp(NFT_CMP_NEQ, vec![0; 4]),
        ],
        Match::FibDaddrLocal => vec![
            expr(
                c"fib",
                vec![
                    (sys::NFTNL_EXPR_FIB_FLAGS, Attr::U32(NFTA_FIB_F_DADDR)),
                    (
                        sys::NFTNL_EXPR_FIB_RESULT,
                        Attr::U32(NFT_FIB_RESULT_ADDRTYPE),
                    ),
                    (sys::NFTNL_EXPR_FIB_DREG, Attr::U32(NFT_REG32_00)),
                ],
            ),
            cmp(NFT_CMP_EQ, RTN_LOCAL.to_ne_bytes().to_vec()),
        ],
        Match::InSet { key, set, negate } => {
            let mut v = load_concat(key);
            v.push(lookup(set, None, *negate));
            v
        }
    }
}

fn render_action(a: &Action) -> Vec<RawExpr> {
    match a {
        Action::Accept => vec![verdict(NF_ACCEPT, None)],
        Action::Drop => vec![verdict(NF_DROP, None)],
        Action::Jump(c) => vec![verdict(NFT_JUMP, Some(c))],
        Action::Vmap { key, set } => {
            let mut v = load_concat(key);
            v.push(lookup(set, Some(NFT_REG_VERDICT), false));
            v
        }
        Action::Masquerade => vec![expr(c"masq", vec![])],
        Action::Snat(ip) => {
            let data = match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            vec![
                expr(
                    c"immediate",
                    vec![
                        (sys::NFTNL_EXPR_IMM_DREG, Attr::U32(NFT_REG32_00)),
                        (sys::NFTNL_EXPR_IMM_DATA, Attr::Data(data)),
                    ],
                ),
                nat(NFT_NAT_SNAT, IpFamily::of(ip), None),
            ]
        }
        Action::DnatMap { family, key, set } => {
            let mut v = load_concat(key);
            v.push(lookup(set, Some(NFT_REG32_00), false));
            // map value is address . port: the port sits in the register after the address
            let proto_reg = match family {
                IpFamily::V4 => NFT_REG32_00 + 1,
                IpFamily::V6 => NFT_REG32_00 + 4,
            };
            v.push(nat(NFT_NAT_DNAT, *family, Some(proto_reg)));
            v
        }
    }
}

/// All expressions of a rule, in order.
fn rule_exprs(r: &RuleSpec) -> Vec<RawExpr> {
    let mut v: Vec<RawExpr> = r.matches.iter().flat_map(render_match).collect();
    v.extend(render_action(&r.action));
    v
}

// ---- sets and elements -------------------------------------------------------------------

/// NEWSET message for a named set or map.
pub(crate) struct SetMsg {
    set: NonNull<sys::nftnl_set>,
    family: ProtoFamily,
}

impl SetMsg {
    fn new(table: &TableId, spec: &SetSpec, id: u32) -> Self {
        // SAFETY: fresh object; setters copy strings.
        unsafe {
            let Some(set) = NonNull::new(sys::nftnl_set_alloc()) else {
                std::process::abort();
            };
            let s = set.as_ptr();
            let family = proto_family(table.family);
            let tname = cstring(&table.name);
            let name = cstring(spec.name);
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, tname.as_ptr());
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, family as u32);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, key_type(&spec.key));
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, key_len(&spec.key));
            if spec.key == [KeyType::Ifname] {
                // Userspace-only hint (nftnl_udata TLV: NFTNL_UDATA_SET_KEYBYTEORDER = host
                // endian): without it `nft list` prints interface-name keys as "".
                let mut udata = vec![0u8, 4];
                udata.extend(1u32.to_ne_bytes());
                sys::nftnl_set_set_data(
                    s,
                    sys::NFTNL_SET_USERDATA as u16,
                    udata.as_ptr().cast(),
                    udata.len() as u32,
                );
            }
            match &spec.data {
                SetData::None => {
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, 0);
                }
                SetData::Verdict => {
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, NFT_SET_MAP);
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, NFT_DATA_VERDICT);
                }
                SetData::Value(types) => {
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, NFT_SET_MAP);
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, key_type(types));
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_LEN as u16, key_len(types));
                }
            }
            SetMsg { set, family }
        }
    }
}

// SAFETY: writes one NEWSET message; libnftnl bounds it far below nft_nlmsg_maxsize.
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                libc::NFT_MSG_NEWSET as u16,
                self.family as u16,
                (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16,
                seq,
            );
            sys::nftnl_set_nlmsg_build_payload(hdr, self.set.as_ptr());
        }
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        // SAFETY: owned, freed once (also frees the elements added to it).
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) }
    }
}

/// NEWSETELEM / DELSETELEM message carrying up to [`ELEMS_PER_MSG`] elements of one set.
pub(crate) struct ElemsMsg {
    set: NonNull<sys::nftnl_set>,
    family: ProtoFamily,
}

impl ElemsMsg {
    fn new(table: &TableId, set_name: &str, elems: &[Element]) -> Self {
        // SAFETY: fresh objects; element setters copy their data; the set takes ownership of
        // each element on nftnl_set_elem_add.
        unsafe {
            let Some(set) = NonNull::new(sys::nftnl_set_alloc()) else {
                std::process::abort();
            };
            let s = set.as_ptr();
            let family = proto_family(table.family);
            let tname = cstring(&table.name);
            let name = cstring(set_name);
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, tname.as_ptr());
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, family as u32);
            for el in elems {
                let e = sys::nftnl_set_elem_alloc();
                if e.is_null() {
                    std::process::abort();
                }
                let key = encode(&el.key);
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_KEY as u16,
                    key.as_ptr().cast(),
                    key.len() as u32,
                );
                match &el.data {
                    ElemData::None => {}
                    ElemData::Jump(chain) => {
                        let c = cstring(chain);
                        sys::nftnl_set_elem_set_u32(
                            e,
                            sys::NFTNL_SET_ELEM_VERDICT as u16,
                            NFT_JUMP as u32,
                        );
                        sys::nftnl_set_elem_set_str(
                            e,
                            sys::NFTNL_SET_ELEM_CHAIN as u16,
                            c.as_ptr(),
                        );
                    }
                    ElemData::Value(v) => {
                        let d = encode(v);
                        sys::nftnl_set_elem_set(
                            e,
                            sys::NFTNL_SET_ELEM_DATA as u16,
                            d.as_ptr().cast(),
                            d.len() as u32,
                        );
                    }
                }
                sys::nftnl_set_elem_add(s, e);
            }
            ElemsMsg { set, family }
        }
    }
}

// SAFETY: at most ELEMS_PER_MSG elements of at most 64+64 bytes: far below nft_nlmsg_maxsize.
unsafe impl NlMsg for ElemsMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK,
            ),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                ty as u16,
                self.family as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(hdr, self.set.as_ptr());
        }
    }
}

impl Drop for ElemsMsg {
    fn drop(&mut self) {
        // SAFETY: owned, freed once together with its elements.
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) }
    }
}

// ---- batch -------------------------------------------------------------------------------

/// A rendered batch plus, for each netlink message in it, the index of the [`Op`] it came
/// from (to name the failing step in errors).
pub(crate) struct Rendered {
    /// The batch, framed by BEGIN/END.
    pub batch: FinalizedBatch,
    /// `msg_ops[i]` = op index of the i-th message after BATCH_BEGIN.
    pub msg_ops: Vec<usize>,
}

impl Rendered {
    /// Maps an acknowledged sequence number to the op index (None for BEGIN/END).
    pub fn op_for_seq(&self, seq: u32) -> Option<usize> {
        let seqs = self.batch.sequence_numbers();
        let framed = seqs.len() == self.msg_ops.len() + 2;
        let first = seqs.start + u32::from(framed);
        seq.checked_sub(first)
            .and_then(|i| self.msg_ops.get(i as usize).copied())
    }

    /// Number of netlink messages (excluding BEGIN/END).
    pub fn messages(&self) -> usize {
        self.msg_ops.len()
    }
}

fn hook(h: Hook) -> nftnl::Hook {
    // bridge hooks share the numbers of the inet ones (NF_BR_PRE_ROUTING == 0, ...)
    match h {
        Hook::Prerouting => nftnl::Hook::PreRouting,
        Hook::Input => nftnl::Hook::In,
        Hook::Forward => nftnl::Hook::Forward,
        Hook::Output => nftnl::Hook::Out,
        Hook::Postrouting => nftnl::Hook::PostRouting,
    }
}

/// Renders ops into one atomic batch.
pub(crate) fn render(ops: &[Op]) -> Rendered {
    let mut batch = Batch::new();
    let mut msg_ops = Vec::new();
    let mut set_id = 1u32;
    for (i, op) in ops.iter().enumerate() {
        let before = msg_ops.len();
        match op {
            Op::AddTable(t) | Op::DelTable(t) => {
                let table = Table::new(cstring(&t.name), proto_family(t.family));
                let ty = if matches!(op, Op::AddTable(_)) {
                    MsgType::Add
                } else {
                    MsgType::Del
                };
                batch.add(&table, ty);
                msg_ops.push(i);
            }
            Op::AddSet(t, s) => {
                batch.add(&SetMsg::new(t, s, set_id), MsgType::Add);
                set_id += 1;
                msg_ops.push(i);
            }
            Op::AddChain(t, c) => {
                let table = Table::new(cstring(&t.name), proto_family(t.family));
                let mut chain = Chain::new(cstring(&c.name), &table);
                if let Some(b) = c.base {
                    chain.set_hook(hook(b.hook), b.priority);
                    chain.set_type(match b.kind {
                        ChainKind::Filter => ChainType::Filter,
                        ChainKind::Nat => ChainType::Nat,
                    });
                    chain.set_policy(nftnl::Policy::Accept);
                }
                batch.add(&chain, MsgType::Add);
                msg_ops.push(i);
            }
            Op::FlushChain(t, c) | Op::DelChain(t, c) => {
                let table = Table::new(cstring(&t.name), proto_family(t.family));
                let chain = Chain::new(cstring(c), &table);
                if matches!(op, Op::FlushChain(..)) {
                    // DELRULE without a handle deletes every rule of the chain.
                    batch.add(&Rule::new(&chain), MsgType::Del);
                } else {
                    batch.add(&chain, MsgType::Del);
                }
                msg_ops.push(i);
            }
            Op::AddRule(t, c, r) => {
                let table = Table::new(cstring(&t.name), proto_family(t.family));
                let chain = Chain::new(cstring(c), &table);
                let mut rule = Rule::new(&chain);
                for e in rule_exprs(r) {
                    rule.add_expr(&e);
                }
                batch.add(&rule, MsgType::Add);
                msg_ops.push(i);
            }
            Op::AddElements(t, s, elems) | Op::DelElements(t, s, elems) => {
                let ty = if matches!(op, Op::AddElements(..)) {
                    MsgType::Add
                } else {
                    MsgType::Del
                };
                for chunk in elems.chunks(ELEMS_PER_MSG) {
                    batch.add(&ElemsMsg::new(t, s, chunk), ty);
                    msg_ops.push(i);
                }
            }
        }
        debug_assert!(
            msg_ops.len() > before
                || matches!(op, Op::AddElements(_, _, e) | Op::DelElements(_, _, e) if e.is_empty())
        );
    }
    Rendered {
        batch: batch.finalize(),
        msg_ops,
    }
}

/// Total size in bytes of a rendered batch (for logs and benchmarks).
pub(crate) fn batch_bytes(r: &Rendered) -> usize {
    r.batch.iter().map(|p| p.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_keys_pad_each_component() {
        let key = [
            Value::Ifname("veth0".into()),
            Value::Ipv4("10.0.0.2".parse().unwrap()),
            Value::Ether([1, 2, 3, 4, 5, 6]),
        ];
        let b = encode(&key);
        assert_eq!(b.len(), 16 + 4 + 8);
        assert_eq!(&b[..5], b"veth0");
        assert_eq!(&b[16..20], &[10, 0, 0, 2]);
        assert_eq!(&b[20..], &[1, 2, 3, 4, 5, 6, 0, 0]);
        assert_eq!(
            key_len(&[KeyType::Ifname, KeyType::Ipv4, KeyType::Ether]),
            b.len() as u32
        );
        let b = encode(&[Value::Proto(6), Value::Port(8080)]);
        assert_eq!(b, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(encode(&[Value::Ifname("br0".into())]).len(), 16);
    }

    #[test]
    fn one_message_per_op_and_chunked_elements() {
        let t = crate::policy::table_ids("netd").0;
        let elems: Vec<Element> = (0..300u16)
            .map(|p| Element {
                key: vec![Value::Proto(6), Value::Port(p + 1)],
                data: ElemData::Value(vec![
                    Value::Ipv4("10.0.0.2".parse().unwrap()),
                    Value::Port(p + 1),
                ]),
            })
            .collect();
        let ops = vec![
            Op::AddTable(t.clone()),
            Op::AddElements(t.clone(), crate::policy::PUB4_ANY, elems),
        ];
        let r = render(&ops);
        assert_eq!(r.msg_ops, vec![0, 1, 1, 1]);
        assert!(batch_bytes(&r) > 300 * 16);
    }
}

//! The NAT for routed connections, spoken directly in nf_tables netlink (what `nft`
//! sends), without the nft binary or libnftnl.
//!
//! Each routed connection owns one table, `ip vpn_ns_<conn>`, holding
//! - chain `postrouting` (`type nat hook postrouting priority srcnat`):
//!   `ip saddr <transfer> oifname <uplink> masquerade`;
//! - chain `forward` (`type filter hook forward priority filter`):
//!   `ip saddr <transfer> oifname != <uplink> drop` and
//!   `ip daddr <transfer> iifname != <uplink> drop`, so the namespace reaches only the
//!   uplink, not other routed namespaces or other host interfaces, and nothing but the
//!   uplink reaches it.
//!
//! Nothing outside that table is read or changed, and down deletes exactly that table.

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::spec::IpNet;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 0x2;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

const NF_INET_POST_ROUTING: u32 = 4;
const NF_IP_PRI_NAT_SRC: i32 = 100;
const NF_ACCEPT: u32 = 1;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NF_INET_FORWARD: u32 = 2;
const NF_IP_PRI_FILTER: i32 = 0;
const NF_DROP: u32 = 0;
const NFT_REG_VERDICT: u32 = 0;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const IFNAMSIZ: usize = 16;

const NAT_CHAIN: &str = "postrouting";
const FILTER_CHAIN: &str = "forward";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nf_tables netlink socket")]
    Socket(#[source] io::Error),
    #[error("nf_tables refused {what}")]
    Refused {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The table a connection's NAT lives in.
pub fn table_name(conn: &str) -> String {
    format!("vpn_ns_{conn}")
}

/// Netlink attributes, appended in place (4-byte aligned, native-endian headers).
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn bytes(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(kind, &v)
    }
    fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }
    fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }
}

/// One expression of a rule: `NFTA_LIST_ELEM { NAME, DATA }`.
fn expr(name: &str, data: Attrs) -> Attrs {
    let mut e = Attrs::default();
    e.str(NFTA_EXPR_NAME, name);
    if !data.0.is_empty() {
        e.nested(NFTA_EXPR_DATA, &data);
    }
    e
}

fn data_value(v: &[u8]) -> Attrs {
    let mut d = Attrs::default();
    d.bytes(NFTA_DATA_VALUE, v);
    d
}

/// Which address of the IPv4 header a rule matches.
#[derive(Clone, Copy)]
enum Dir {
    /// `ip saddr <net>` with `oifname`.
    Out,
    /// `ip daddr <net>` with `iifname`.
    In,
}

/// `ip saddr|daddr <net> oifname|iifname ==|!= <dev>`, then `verdict`.
fn rule_exprs(transfer: &IpNet, dir: Dir, dev: &str, dev_op: u32, verdict: Attrs) -> Attrs {
    let net = match transfer.network().addr() {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => unreachable!("transfer networks are IPv4 (checked in config)"),
    };
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(transfer.prefix()))
            .unwrap_or(0),
    );
    let (offset, meta_key) = match dir {
        Dir::Out => (12, NFT_META_OIFNAME),
        Dir::In => (16, NFT_META_IIFNAME),
    };
    let mut payload = Attrs::default();
    payload
        .be32(1, NFT_REG_1) // NFTA_PAYLOAD_DREG
        .be32(2, NFT_PAYLOAD_NETWORK_HEADER) // NFTA_PAYLOAD_BASE
        .be32(3, offset) // NFTA_PAYLOAD_OFFSET: source or destination address
        .be32(4, 4); // NFTA_PAYLOAD_LEN
    let mut bitwise = Attrs::default();
    bitwise
        .be32(1, NFT_REG_1) // NFTA_BITWISE_SREG
        .be32(2, NFT_REG_1) // NFTA_BITWISE_DREG
        .be32(3, 4) // NFTA_BITWISE_LEN
        .nested(4, &data_value(&mask.octets())) // NFTA_BITWISE_MASK
        .nested(5, &data_value(&[0; 4])); // NFTA_BITWISE_XOR
    let mut cmp_net = Attrs::default();
    cmp_net
        .be32(1, NFT_REG_1) // NFTA_CMP_SREG
        .be32(2, NFT_CMP_EQ) // NFTA_CMP_OP
        .nested(3, &data_value(&net.octets())); // NFTA_CMP_DATA
    let mut meta = Attrs::default();
    meta.be32(1, NFT_REG_1) // NFTA_META_DREG
        .be32(2, meta_key); // NFTA_META_KEY
    let mut ifname = [0u8; IFNAMSIZ];
    ifname[..dev.len()].copy_from_slice(dev.as_bytes());
    let mut cmp_if = Attrs::default();
    cmp_if
        .be32(1, NFT_REG_1)
        .be32(2, dev_op)
        .nested(3, &data_value(&ifname));
    let mut list = Attrs::default();
    for e in [
        expr("payload", payload),
        expr("bitwise", bitwise),
        expr("cmp", cmp_net),
        expr("meta", meta),
        expr("cmp", cmp_if),
    ] {
        list.nested(NFTA_LIST_ELEM, &e);
    }
    list.nested(NFTA_LIST_ELEM, &verdict);
    list
}

/// `ip saddr <net> oifname <uplink> masquerade`
fn masquerade_exprs(transfer: &IpNet, uplink: &str) -> Attrs {
    rule_exprs(
        transfer,
        Dir::Out,
        uplink,
        NFT_CMP_EQ,
        expr("masq", Attrs::default()),
    )
}

/// `drop` as an immediate verdict expression.
fn drop_verdict() -> Attrs {
    let mut code = Attrs::default();
    code.be32(NFTA_VERDICT_CODE, NF_DROP);
    let mut data = Attrs::default();
    data.nested(NFTA_DATA_VERDICT, &code);
    let mut imm = Attrs::default();
    imm.be32(1, NFT_REG_VERDICT) // NFTA_IMMEDIATE_DREG
        .nested(2, &data); // NFTA_IMMEDIATE_DATA
    expr("immediate", imm)
}

/// A batch of nf_tables messages, applied by the kernel as one transaction.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Messages that will be acknowledged (all but BEGIN/END).
    acked: usize,
}

impl Batch {
    fn new() -> Self {
        let mut b = Batch {
            buf: Vec::new(),
            seq: 1,
            acked: 0,
        };
        b.push(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            &Attrs::default(),
        );
        b
    }

    fn push(&mut self, kind: u16, flags: u16, family: u8, attrs: &Attrs) {
        let len = 16 + 4 + attrs.0.len();
        self.buf.extend_from_slice(&(len as u32).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, res_id (the subsystem, for batch markers).
        self.buf.push(family);
        self.buf.push(0);
        self.buf
            .extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        self.buf.extend_from_slice(&attrs.0);
        self.seq += 1;
    }

    fn msg(&mut self, msg: u16, flags: u16, attrs: &Attrs) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        self.push(kind, NLM_F_REQUEST | NLM_F_ACK | flags, NFPROTO_IPV4, attrs);
        self.acked += 1;
    }

    fn finish(mut self) -> (Vec<u8>, usize) {
        self.push(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            &Attrs::default(),
        );
        (self.buf, self.acked)
    }
}

fn table_attrs(table: &str) -> Attrs {
    let mut a = Attrs::default();
    a.str(NFTA_TABLE_NAME, table);
    a
}

/// The batch that (re)creates the connection's table from scratch: adding then
/// deleting it first makes a leftover of a crashed run disappear in the same
/// transaction, so the rule is never duplicated.
fn masquerade_batch(table: &str, transfer: &IpNet, uplink: &str) -> (Vec<u8>, usize) {
    let mut b = Batch::new();
    b.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table_attrs(table));
    b.msg(NFT_MSG_DELTABLE, 0, &table_attrs(table));
    b.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table_attrs(table));
    b.msg(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        &base_chain(
            table,
            NAT_CHAIN,
            "nat",
            NF_INET_POST_ROUTING,
            NF_IP_PRI_NAT_SRC,
        ),
    );
    add_rule(&mut b, table, NAT_CHAIN, masquerade_exprs(transfer, uplink));
    // Forwarding is global: without these, another routed namespace (or anything
    // the host routes) could reach this one through the host, and it them.
    b.msg(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        &base_chain(
            table,
            FILTER_CHAIN,
            "filter",
            NF_INET_FORWARD,
            NF_IP_PRI_FILTER,
        ),
    );
    for dir in [Dir::Out, Dir::In] {
        let e = rule_exprs(transfer, dir, uplink, NFT_CMP_NEQ, drop_verdict());
        add_rule(&mut b, table, FILTER_CHAIN, e);
    }
    b.finish()
}

fn base_chain(table: &str, name: &str, kind: &str, hook: u32, priority: i32) -> Attrs {
    let mut h = Attrs::default();
    h.be32(NFTA_HOOK_HOOKNUM, hook)
        .be32(NFTA_HOOK_PRIORITY, priority as u32);
    let mut chain = Attrs::default();
    chain
        .str(NFTA_CHAIN_TABLE, table)
        .str(NFTA_CHAIN_NAME, name)
        .nested(NFTA_CHAIN_HOOK, &h)
        .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .str(NFTA_CHAIN_TYPE, kind);
    chain
}

fn add_rule(b: &mut Batch, table: &str, chain: &str, exprs: Attrs) {
    let mut rule = Attrs::default();
    rule.str(NFTA_RULE_TABLE, table)
        .str(NFTA_RULE_CHAIN, chain)
        .nested(NFTA_RULE_EXPRESSIONS, &exprs);
    b.msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &rule);
}

fn delete_batch(table: &str) -> (Vec<u8>, usize) {
    let mut b = Batch::new();
    b.msg(NFT_MSG_DELTABLE, 0, &table_attrs(table));
    b.finish()
}

/// Sends a batch and collects the kernel's answers. Netlink to the kernel is
/// synchronous: when `send` returns, every ack or error is already queued.
fn transact(what: &'static str, (buf, acked): (Vec<u8>, usize)) -> Result<(), NftError> {
    let mut s = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
    s.bind_auto().map_err(NftError::Socket)?;
    s.connect(&SocketAddr::new(0, 0))
        .map_err(NftError::Socket)?;
    s.send(&buf, 0).map_err(NftError::Socket)?;
    s.set_non_blocking(true).map_err(NftError::Socket)?;
    let mut seen = 0;
    let mut rx = vec![0u8; 65536];
    while seen < acked {
        let n = match s.recv(&mut &mut rx[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(NftError::Socket(e)),
        };
        for code in errors_in(&rx[..n]) {
            if code != 0 {
                return Err(NftError::Refused {
                    what,
                    source: io::Error::from_raw_os_error(-code),
                });
            }
            seen += 1;
        }
    }
    match seen == acked {
        true => Ok(()),
        false => Err(NftError::Refused {
            what,
            source: io::Error::other(format!("{seen} of {acked} messages acknowledged")),
        }),
    }
}

/// The error codes of the NLMSG_ERROR messages in a datagram (0 = ack).
fn errors_in(mut d: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    while d.len() >= 16 {
        let len = u32::from_ne_bytes(d[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(d[4..6].try_into().expect("2 bytes"));
        if len < 16 || len > d.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            out.push(i32::from_ne_bytes(d[16..20].try_into().expect("4 bytes")));
        }
        d = &d[len.next_multiple_of(4).min(d.len())..];
    }
    out
}

/// Installs (or re-installs) the connection's masquerade table.
pub fn add_masquerade(conn: &str, transfer: &IpNet, uplink: &str) -> Result<(), NftError> {
    transact(
        "the masquerade table",
        masquerade_batch(&table_name(conn), transfer, uplink),
    )
}

/// Deletes the connection's table; `Ok(false)` when it was not there.
pub fn delete_table(conn: &str) -> Result<bool, NftError> {
    match transact(
        "deleting the masquerade table",
        delete_batch(&table_name(conn)),
    ) {
        Ok(()) => Ok(true),
        Err(NftError::Refused { source, .. }) if source.raw_os_error() == Some(libc_enoent()) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a batch: every message length adds up and the types are in order.
    fn types(buf: &[u8]) -> Vec<u16> {
        let mut out = Vec::new();
        let mut d = buf;
        while !d.is_empty() {
            let len = u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize;
            assert!(
                len >= 20 && len.is_multiple_of(4) && len <= d.len(),
                "bad length {len}"
            );
            out.push(u16::from_ne_bytes(d[4..6].try_into().unwrap()));
            d = &d[len..];
        }
        out
    }

    #[test]
    fn masquerade_batch_is_one_transaction() {
        let (buf, acked) =
            masquerade_batch("vpn_ns_work", &"100.64.77.0/30".parse().unwrap(), "wlan0");
        let t = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
        assert_eq!(
            types(&buf),
            [
                NFNL_MSG_BATCH_BEGIN,
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_DELTABLE),
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_NEWCHAIN),
                t(NFT_MSG_NEWRULE),
                t(NFT_MSG_NEWCHAIN),
                t(NFT_MSG_NEWRULE),
                t(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END
            ]
        );
        assert_eq!(acked, 8);
        let has = |needle: &[u8]| buf.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[100, 64, 77, 0]) && has(&[255, 255, 255, 252]));
        assert!(has(b"wlan0\0\0\0\0\0\0\0\0\0\0\0"));
        assert!(has(b"masq\0") && has(b"nat\0") && has(b"vpn_ns_work\0"));
        assert!(has(b"immediate\0") && has(b"forward\0") && has(b"filter\0"));
    }

    #[test]
    fn delete_batch_is_one_message() {
        let (buf, acked) = delete_batch("vpn_ns_work");
        assert_eq!(types(&buf).len(), 3);
        assert_eq!(acked, 1);
    }

    #[test]
    fn acks_and_errors_are_parsed() {
        let mut d = Vec::new();
        for code in [0i32, -2] {
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&[0; 10]);
            d.extend_from_slice(&code.to_ne_bytes());
            d.extend_from_slice(&[0; 16]);
        }
        assert_eq!(errors_in(&d), [0, -2]);
        assert!(errors_in(&d[..10]).is_empty());
    }
}

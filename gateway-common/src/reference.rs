//! The XDP classifier's decision, written for the host from the parser's
//! rules (`gateway-ebpf/src/parse.rs`, `classify.rs`): the reference the
//! packet tests check the kernel against, frame by frame, on named
//! fixtures and on tens of thousands of random and mutated frames. The
//! kernel reads packet memory through the verifier's pointer rules, which
//! this code cannot share; what it shares is every decision after the
//! parse ([`find_listener_in`], `unlisted_local_verdict`, `policy_decision`).
use crate::{
    IPPROTO_TCP, IPPROTO_UDP, LISTENER_POLICY, ListenerKey, ListenerValue, PORT_BOUND,
    PORT_WILDCARD, PolicyKey, PolicyValue, PortValue, Reason, Settings, TCP_ACK, TCP_SYN,
    allowed_port_bit, ipv4_mapped, is_ipv4_mapped, policy_decision, port_index,
    unlisted_local_verdict,
};

/// The classifier's maps, as the reference reads them.
pub trait Tables {
    /// `PORTS[index]` (zero when unset).
    fn port(&self, index: u32) -> PortValue;
    /// `LISTENERS[key]`.
    fn listener(&self, key: &ListenerKey) -> Option<ListenerValue>;
    /// Whether `LOCAL_ADDRS` has `addr`.
    fn is_local(&self, addr: &[u8; 16]) -> bool;
    /// `SETTINGS[0]`.
    fn settings(&self) -> Settings;
    /// `ALLOWED_PORTS[word]`.
    fn allowed_word(&self, word: u32) -> u64;
    /// `POLICY_DENY`'s longest-prefix match for `key`; none by default
    /// (tables without AuthorizationPolicy).
    fn policy_deny(&self, _key: &PolicyKey) -> Option<PolicyValue> {
        None
    }
    /// Whether `POLICY_ALLOW` holds a prefix of `key`.
    fn policy_allowed(&self, _key: &PolicyKey) -> bool {
        false
    }
}

/// What the classifier decides for a frame: the reason it is counted
/// under (which gives the verdict) and the listener, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    pub listener: Option<u32>,
}

const ETH_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;
const UDP_LEN: usize = 8;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT_HEADERS: usize = 4;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// `len` bytes at `offset`, or `Malformed` when the frame is shorter.
fn bytes(frame: &[u8], offset: usize, len: usize) -> Result<&[u8], Reason> {
    frame.get(offset..offset + len).ok_or(Reason::Malformed)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// What the decision reads of a frame.
struct Parsed {
    dst: [u8; 16],
    /// IPv4 mapped.
    src: [u8; 16],
    ipv6: bool,
    protocol: u8,
    port: u16,
    /// SYN and ACK only.
    flags: u8,
}

fn parse(frame: &[u8]) -> Result<Parsed, Reason> {
    let eth = bytes(frame, 0, ETH_LEN)?;
    let mut ether_type = be16(eth, 12);
    let mut offset = ETH_LEN;
    let mut tags = 0;
    while ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        if tags == MAX_VLAN_TAGS {
            return Err(Reason::Unparsed);
        }
        ether_type = be16(bytes(frame, offset, VLAN_LEN)?, 2);
        offset += VLAN_LEN;
        tags += 1;
    }
    let (dst, src, protocol, l4) = match ether_type {
        ETH_P_IPV4 => {
            let ip = bytes(frame, offset, IPV4_LEN)?;
            let ihl = usize::from(ip[0] & 0x0f);
            if ip[0] >> 4 != 4 || ihl < 5 {
                return Err(Reason::Malformed);
            }
            if be16(ip, 6) & 0x1fff != 0 {
                return Err(Reason::Fragment);
            }
            let dst = ipv4_mapped([ip[16], ip[17], ip[18], ip[19]]);
            let src = ipv4_mapped([ip[12], ip[13], ip[14], ip[15]]);
            (dst, src, ip[9], offset + ihl * 4)
        }
        ETH_P_IPV6 => {
            let ip = bytes(frame, offset, IPV6_LEN)?;
            if ip[0] >> 4 != 6 {
                return Err(Reason::Malformed);
            }
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&ip[24..40]);
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            let mut next = ip[6];
            let mut offset = offset + IPV6_LEN;
            let mut walked = 0;
            loop {
                let len = match next {
                    IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT
                        if walked == MAX_IPV6_EXT_HEADERS =>
                    {
                        return Err(Reason::Unparsed);
                    }
                    IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                        let ext = bytes(frame, offset, 2)?;
                        next = ext[0];
                        (usize::from(ext[1]) + 1) * 8
                    }
                    IPV6_AUTH => {
                        let ext = bytes(frame, offset, 2)?;
                        next = ext[0];
                        (usize::from(ext[1]) + 2) * 4
                    }
                    IPV6_FRAGMENT => {
                        let ext = bytes(frame, offset, 4)?;
                        if be16(ext, 2) >> 3 != 0 {
                            return Err(Reason::Fragment);
                        }
                        next = ext[0];
                        8
                    }
                    _ => break,
                };
                offset += len;
                walked += 1;
            }
            (dst, src, next, offset)
        }
        _ => return Err(Reason::NotIp),
    };
    let parsed = |port: u16, flags: u8| Parsed {
        dst,
        src,
        ipv6: ether_type == ETH_P_IPV6,
        protocol,
        port,
        flags,
    };
    match protocol {
        IPPROTO_TCP => {
            let tcp = bytes(frame, l4, TCP_LEN)?;
            let flags = tcp[13] & (TCP_SYN | TCP_ACK);
            Ok(parsed(be16(tcp, 2), flags))
        }
        IPPROTO_UDP => {
            let udp = bytes(frame, l4, UDP_LEN)?;
            Ok(parsed(be16(udp, 2), 0))
        }
        _ => Err(Reason::NotTcpUdp),
    }
}

/// Whose (`dst`, `port`, `protocol`) is, as `classify::find_listener` decides.
pub fn find_listener_in<T: Tables + ?Sized>(
    tables: &T,
    dst: [u8; 16],
    port: u16,
    protocol: u8,
) -> Result<ListenerValue, bool> {
    let entry = port_index(protocol, port).map_or(PortValue::default(), |i| tables.port(i));
    if entry.flags & PORT_BOUND != 0 {
        let key = ListenerKey {
            addr: dst,
            port,
            protocol,
            pad: 0,
        };
        if let Some(listener) = tables.listener(&key) {
            return Ok(listener);
        }
    }
    if !tables.is_local(&dst) {
        return Err(false);
    }
    if entry.flags & PORT_WILDCARD != 0 {
        return Ok(entry.wildcard);
    }
    Err(true)
}

/// The classifier's decision for `frame` with the maps in `tables`.
pub fn classify_frame<T: Tables + ?Sized>(frame: &[u8], tables: &T) -> Decision {
    let Parsed {
        dst,
        src,
        ipv6,
        protocol,
        port,
        flags,
    } = match parse(frame) {
        Ok(parsed) => parsed,
        Err(reason) => {
            return Decision {
                reason,
                listener: None,
            };
        }
    };
    match find_listener_in(tables, dst, port, protocol) {
        Ok(listener) => {
            let checked = listener.flags & LISTENER_POLICY != 0
                && protocol == IPPROTO_TCP
                && flags == TCP_SYN
                && !(ipv6 && is_ipv4_mapped(&src));
            let key = PolicyKey::lookup(port, src);
            if checked {
                let deny = tables.policy_deny(&key);
                if policy_decision(listener.flags, deny, tables.policy_allowed(&key)).is_some() {
                    return Decision {
                        reason: Reason::PolicyDenied,
                        listener: None,
                    };
                }
            }
            Decision {
                reason: Reason::Listener,
                listener: Some(listener.id),
            }
        }
        Err(false) => Decision {
            reason: Reason::NotLocal,
            listener: None,
        },
        Err(true) => {
            let allowed = allowed_port_bit(protocol, port)
                .is_some_and(|(word, mask)| tables.allowed_word(word) & mask != 0);
            Decision {
                reason: unlisted_local_verdict(protocol, flags, port, &tables.settings(), allowed),
                listener: None,
            }
        }
    }
}

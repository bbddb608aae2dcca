//! Decide what a parsed packet is: listener traffic, someone else's
//! traffic, or an unwanted packet to the gateway. Reads maps, never writes
//! packet bytes.
use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use gateway_common::{
    IPPROTO_TCP, LISTENER_POLICY, LISTENER_POLICY_ALLOW_LIST, LISTENER_POLICY_DENY,
    LISTENER_POLICY_TABLE, ListenerKey, ListenerValue, LocalLookup, PORT_BOUND, PORT_WILDCARD,
    PolicyKey, Reason, Settings, TCP_ACK, TCP_SYN, addr_words, allowed_port_bit, code_slot,
    is_ipv4_mapped, policy_decision, policy_table_slot, port_index, unlisted_local_verdict,
    v4_code, v6_code,
};

use crate::{
    maps::{
        ALLOWED_PORTS, LISTENERS, LOCAL_ADDR_LIST, LOCAL_ADDRS, POLICY_ALLOW, POLICY_DENY,
        POLICY_TABLES, PORTS, SETTINGS,
    },
    parse::{Packet, parse_packet, source_address},
};

/// The decision for one packet: why, which listener it belongs to, and
/// for a listener's TCP segment with payload, where that payload lies (the
/// host classifier's input).
pub(crate) struct Outcome {
    pub reason: Reason,
    pub listener: Option<u32>,
    pub data: Option<ListenerData>,
    /// The `POLICY_STATS` slot of a SYN an AuthorizationPolicy denies.
    pub policy: Option<u32>,
}

/// A listener's TCP payload: the listener, the payload's start and end
/// offsets in the frame, and where its IP and TCP headers are.
pub(crate) struct ListenerData {
    pub listener: ListenerValue,
    pub payload: usize,
    pub payload_end: usize,
    pub ip: usize,
    pub tcp: usize,
    pub ipv6: bool,
}

impl Outcome {
    #[inline(always)]
    fn reason(reason: Reason) -> Self {
        Self {
            reason,
            listener: None,
            data: None,
            policy: None,
        }
    }

    /// A listener's SYN dropped by policy: counted under the reason and
    /// the policy's slot, not as the listener's traffic (it never gets
    /// there).
    #[inline(always)]
    fn policy_denied(slot: u32) -> Self {
        Self {
            reason: Reason::PolicyDenied,
            listener: None,
            data: None,
            policy: Some(slot),
        }
    }

    #[inline(always)]
    fn listener(packet: &Packet, listener: ListenerValue) -> Self {
        // Only segments with payload can name a host; pure ACKs, SYNs and
        // FINs are the bulk of a connection's packets and skip the parser.
        let data = (packet.protocol == IPPROTO_TCP && packet.payload < packet.payload_end)
            .then_some(ListenerData {
                listener,
                payload: packet.payload,
                payload_end: packet.payload_end,
                ip: packet.ip,
                tcp: packet.l4,
                ipv6: packet.ipv6,
            });
        Self {
            reason: Reason::Listener,
            listener: Some(listener.id),
            data,
            policy: None,
        }
    }
}

/// Parse, then find the destination's listener ([`find_listener`]), and
/// for a gateway address that has none, apply the unlisted-port rule.
#[inline(always)]
pub(crate) fn classify(ctx: &XdpContext) -> Outcome {
    let packet = match parse_packet(ctx) {
        Ok(packet) => packet,
        Err(reason) => return Outcome::reason(reason),
    };
    match find_listener(packet.dst, packet.dst_port, packet.protocol) {
        Destination::Listener(listener) => {
            // One flag test for ports without policy; then only a
            // connection attempt (SYN without ACK) is checked: the proxy
            // re-evaluates every request of an established connection.
            if listener.flags & LISTENER_POLICY != 0
                && packet.protocol == IPPROTO_TCP
                && packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
            {
                if let Some(slot) = policy_denies(ctx, &packet, listener.flags) {
                    return Outcome::policy_denied(slot);
                }
            }
            Outcome::listener(&packet, listener)
        }
        Destination::NotLocal => Outcome::reason(Reason::NotLocal),
        Destination::Unlisted => Outcome::reason(unlisted(&packet)),
    }
}

/// The `POLICY_STATS` slot if an AuthorizationPolicy the listener's port
/// carries (`flags`) denies this SYN's source: a `POLICY_DENY` entry for
/// (port, source), or an allow-listed port whose `POLICY_ALLOW` set lacks
/// it (`gateway_common::policy_decision`). On a port with a
/// `POLICY_TABLES` table, the table gives the same answer, precomputed
/// (for IPv6, if it holds IPv6 intervals). An IPv6 source in the
/// IPv4-mapped range is left to the proxy: the tries would take it for an
/// IPv4 source, which Envoy does not.
#[inline(always)]
fn policy_denies(ctx: &XdpContext, packet: &Packet, flags: u32) -> Option<u32> {
    let src = source_address(ctx, packet)?;
    if packet.ipv6 && is_ipv4_mapped(&src) {
        return None;
    }
    if flags & LISTENER_POLICY_TABLE != 0 {
        // A slot the daemon has not written reads as zeroes: a pass for
        // IPv4, the tries for IPv6 (the proxy decides again either way).
        if let Some(table) = POLICY_TABLES.get(policy_table_slot(flags)) {
            if !packet.ipv6 {
                let v4 = u32::from_be_bytes([src[12], src[13], src[14], src[15]]);
                return code_slot(v4_code(table, v4));
            }
            if let Some(code) = v6_code(table, &src) {
                return code_slot(code);
            }
        }
    }
    let lookup = PolicyKey::lookup(packet.dst_port, src);
    let key = Key::new(lookup.prefixlen, lookup.data);
    let deny = if flags & LISTENER_POLICY_DENY != 0 {
        POLICY_DENY.get(&key).copied()
    } else {
        None
    };
    let allowed = flags & LISTENER_POLICY_ALLOW_LIST == 0 || POLICY_ALLOW.get(&key).is_some();
    policy_decision(flags, deny, allowed)
}

/// Whose a destination is.
pub(crate) enum Destination {
    /// A listener's.
    Listener(ListenerValue),
    /// Not one of the gateway's addresses.
    NotLocal,
    /// A gateway address, on a port no listener owns there.
    Unlisted,
}

/// The listener of (`dst`, `port`, `protocol`), looked up in order: what
/// listens on the port (a `PORTS` array entry, no hashing), a listener
/// bound to the exact address if the port has any, whether the address is
/// the gateway's at all, and the port's listener on every gateway address.
/// XDP and sk_lookup decide with this same function.
#[inline(always)]
pub(crate) fn find_listener(dst: [u8; 16], port: u16, protocol: u8) -> Destination {
    let entry = port_index(protocol, port)
        .and_then(|index| PORTS.get(index).copied())
        .unwrap_or_default();
    if entry.flags & PORT_BOUND != 0 {
        let key = ListenerKey {
            addr: dst,
            port,
            protocol,
            pad: 0,
        };
        if let Some(listener) = lookup_listener(&key) {
            return Destination::Listener(listener);
        }
    }
    if !is_local(&dst) {
        return Destination::NotLocal;
    }
    if entry.flags & PORT_WILDCARD != 0 {
        return Destination::Listener(entry.wildcard);
    }
    Destination::Unlisted
}

/// Whether `dst` is one of the gateway's addresses: `LOCAL_ADDR_LIST`
/// first, the `LOCAL_ADDRS` hash map only when the list overflows (see
/// gateway-common's `local_addrs.rs`).
#[inline(always)]
fn is_local(dst: &[u8; 16]) -> bool {
    if let Some(list) = LOCAL_ADDR_LIST.get(0) {
        match list.find(addr_words(dst)) {
            LocalLookup::Local => return true,
            LocalLookup::NotLocal => return false,
            LocalLookup::Overflow => {}
        }
    }
    LOCAL_ADDRS.get_ptr(dst).is_some()
}

#[inline(always)]
fn lookup_listener(key: &ListenerKey) -> Option<ListenerValue> {
    // SAFETY: the value is copied out at once; userspace replaces entries
    // whole, so a concurrent update yields either the old or the new value.
    unsafe { LISTENERS.get(key) }.copied()
}

#[inline(always)]
fn unlisted(packet: &Packet) -> Reason {
    let settings = match SETTINGS.get(0) {
        Some(settings) => *settings,
        None => Settings::default(),
    };
    let allowed = allowed_port_bit(packet.protocol, packet.dst_port)
        .and_then(|(word, mask)| ALLOWED_PORTS.get(word).map(|bits| bits & mask != 0))
        .unwrap_or(false);
    unlisted_local_verdict(
        packet.protocol,
        packet.tcp_flags,
        packet.dst_port,
        &settings,
        allowed,
    )
}

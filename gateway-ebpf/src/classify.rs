//! Decide what a parsed packet is: listener traffic, someone else's
//! traffic, or an unwanted packet to the gateway. Reads maps, never writes
//! packet bytes.
use aya_ebpf::programs::XdpContext;
use gateway_common::{
    ADDR_ANY, ListenerKey, Reason, Settings, allowed_port_bit, unlisted_local_verdict,
};

use crate::{
    maps::{ALLOWED_PORTS, LISTENERS, LOCAL_ADDRS, SETTINGS},
    parse::{Packet, parse_packet},
};

/// The decision for one packet: why, and which listener it belongs to.
pub struct Outcome {
    pub reason: Reason,
    pub listener: Option<u32>,
}

impl Outcome {
    #[inline(always)]
    fn reason(reason: Reason) -> Self {
        Outcome {
            reason,
            listener: None,
        }
    }
}

/// Parse, then look up in order: a listener bound to the exact destination
/// address, whether the destination is a gateway address at all, a listener
/// bound to any gateway address, and finally the unlisted-port rule.
#[inline(always)]
pub fn classify(ctx: &XdpContext) -> Outcome {
    let packet = match parse_packet(ctx) {
        Ok(packet) => packet,
        Err(reason) => return Outcome::reason(reason),
    };
    let mut key = ListenerKey {
        addr: packet.dst,
        port: packet.dst_port,
        protocol: packet.protocol,
        pad: 0,
    };
    if let Some(id) = lookup_listener(&key) {
        return Outcome {
            reason: Reason::Listener,
            listener: Some(id),
        };
    }
    if LOCAL_ADDRS.get_ptr(packet.dst).is_none() {
        return Outcome::reason(Reason::NotLocal);
    }
    key.addr = ADDR_ANY;
    if let Some(id) = lookup_listener(&key) {
        return Outcome {
            reason: Reason::Listener,
            listener: Some(id),
        };
    }
    Outcome::reason(unlisted(&packet))
}

#[inline(always)]
fn lookup_listener(key: &ListenerKey) -> Option<u32> {
    // SAFETY: the value is copied out at once; userspace replaces entries
    // whole, so a concurrent update yields either the old or the new id.
    unsafe { LISTENERS.get(key) }.map(|value| value.id)
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

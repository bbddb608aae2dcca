//! Steering: every connection to a listener's (address, port) is handed to
//! the proxy's listening socket, whatever port that socket is bound to, so
//! the proxy binds nothing per listener (Cloudflare's tubular pattern).
use aya_ebpf::{bindings::sk_action, programs::SkLookupContext};
use gateway_common::{IPPROTO_TCP, ipv4_mapped};

use crate::{
    classify::{Destination, find_listener},
    maps::PROXY_SOCKETS,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// `PROXY_SOCKETS` slot of the proxy's IPv4 listening socket.
pub const SLOT_V4: u32 = 0;
/// `PROXY_SOCKETS` slot of the proxy's IPv6 listening socket.
pub const SLOT_V6: u32 = 1;

/// The verdict for one socket lookup: a TCP connection to a listener goes
/// to the proxy's socket of its address family; everything else takes the
/// kernel's own lookup. With no proxy socket in the slot (the daemon is
/// gone or restarting), a listener's connection is refused rather than
/// handed to whatever else listens on that port.
#[inline(always)]
pub fn steer(ctx: &SkLookupContext) -> u32 {
    // SAFETY: the context pointer is the kernel's, valid for this run.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != u32::from(IPPROTO_TCP) {
        return sk_action::SK_PASS;
    }
    let (addr, slot) = match lookup.family {
        // `local_ip4` holds the address in network byte order.
        AF_INET => (ipv4_mapped(lookup.local_ip4.to_ne_bytes()), SLOT_V4),
        AF_INET6 => (ipv6_bytes(lookup.local_ip6), SLOT_V6),
        _ => return sk_action::SK_PASS,
    };
    // `local_port` is in host byte order, and a port.
    let port = lookup.local_port as u16;
    match find_listener(addr, port, IPPROTO_TCP) {
        Destination::Listener(_) => match PROXY_SOCKETS.redirect_sk_lookup(ctx, slot, 0) {
            Ok(()) => sk_action::SK_PASS,
            Err(_) => sk_action::SK_DROP,
        },
        Destination::NotLocal | Destination::Unlisted => sk_action::SK_PASS,
    }
}

/// The 16 address bytes of `local_ip6` (four words in network byte order).
#[inline(always)]
fn ipv6_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, word) in words.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    out
}

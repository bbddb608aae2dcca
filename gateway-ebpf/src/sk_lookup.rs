//! Steering: every connection to a listener's (address, port) is handed to
//! the proxy's listening socket, whatever port that socket is bound to, so
//! the proxy binds nothing per listener (Cloudflare's tubular pattern).
use aya_ebpf::{bindings::sk_action, maps::lpm_trie::Key, programs::SkLookupContext};
use gateway_common::{IPPROTO_TCP, ListenerKind, ipv4_mapped, proxy_socket_slot};

use crate::{
    classify::{Destination, find_listener},
    maps::{EGRESS_EXCLUDE, EGRESS_IFACES, PROXY_SOCKETS},
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// The verdict for one socket lookup: a TCP connection to a listener goes
/// to the proxy's socket of its address family and of the listener's kind
/// (`proxy_socket_slot`); everything else takes the kernel's own lookup.
/// With no proxy socket in the slot (the daemon is gone or restarting), a
/// listener's connection is refused rather than handed to whatever else
/// listens on that port.
#[inline(always)]
pub(crate) fn steer(ctx: &SkLookupContext) -> u32 {
    // SAFETY: the context pointer is the kernel's, valid for this run.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != u32::from(IPPROTO_TCP) {
        return sk_action::SK_PASS;
    }
    let (addr, ipv6) = match lookup.family {
        // `local_ip4` holds the address in network byte order.
        AF_INET => (ipv4_mapped(lookup.local_ip4.to_ne_bytes()), false),
        AF_INET6 => (ipv6_bytes(local_ip6(ctx)), true),
        _ => return sk_action::SK_PASS,
    };
    // `local_port` is in host byte order, and a port.
    let port = lookup.local_port as u16;
    // Verifier rule: context fields are read at constant offsets only, and
    // LLVM otherwise merges this load with the address loads above into
    // one through a computed pointer; read here, on its own.
    // SAFETY: a field of the kernel's context, valid for this run.
    let ifindex = unsafe { core::ptr::read_volatile(&raw const (*ctx.lookup).ingress_ifindex) };
    match find_listener(addr, port, IPPROTO_TCP) {
        Destination::Listener(listener) => {
            let client_first = listener.kind == ListenerKind::Http as u32
                || listener.kind == ListenerKind::Tls as u32;
            to_proxy(ctx, proxy_socket_slot(ipv6, client_first))
        }
        Destination::Unlisted => sk_action::SK_PASS,
        Destination::NotLocal => egress(ctx, ifindex, addr, proxy_socket_slot(ipv6, false)),
    }
}

/// Hands the connection to the proxy's socket, or refuses it when the
/// proxy has none (never another socket on that port).
#[inline(always)]
fn to_proxy(ctx: &SkLookupContext, slot: u32) -> u32 {
    match PROXY_SOCKETS.redirect_sk_lookup(ctx, slot, 0) {
        Ok(()) => sk_action::SK_PASS,
        Err(_) => sk_action::SK_DROP,
    }
}

/// A workload's outbound connection to `addr`, arriving on `ifindex`.
/// The daemon routes everything the captured interfaces send as local
/// (`ip rule iif ... lookup` a `local 0/0` table) so it reaches this
/// lookup; every such connection goes to the proxy, which serves the
/// egress Gateway's ports and resets the others at once (the kernel
/// cannot: its reset would come from an address not the node's). Other
/// interfaces and excluded destinations are left alone.
#[inline(always)]
fn egress(ctx: &SkLookupContext, ifindex: u32, addr: [u8; 16], slot: u32) -> u32 {
    // SAFETY: copied out at once.
    if unsafe { EGRESS_IFACES.get(ifindex) }.is_none() {
        return sk_action::SK_PASS;
    }
    if EGRESS_EXCLUDE.get(Key::new(128, addr)).is_some() {
        return sk_action::SK_PASS;
    }
    to_proxy(ctx, slot)
}

/// `local_ip6`, word by word. Verifier rule: context fields are read at
/// constant offsets only; copied as an array, LLVM walks it with a
/// computed pointer, which the verifier refuses.
#[inline(always)]
fn local_ip6(ctx: &SkLookupContext) -> [u32; 4] {
    // SAFETY: fields of the kernel's context, valid for this run.
    unsafe {
        let words = &raw const (*ctx.lookup).local_ip6;
        [
            core::ptr::read_volatile(&raw const (*words)[0]),
            core::ptr::read_volatile(&raw const (*words)[1]),
            core::ptr::read_volatile(&raw const (*words)[2]),
            core::ptr::read_volatile(&raw const (*words)[3]),
        ]
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

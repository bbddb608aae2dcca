//! The egress guard: a TC ingress program on each captured workload
//! interface (`--egress-from`). It sees every workload's connection
//! attempt before routing does, counts it per workload, and under
//! REGISTRY_ONLY refuses a SYN to an address no registry entry resolves
//! to by reflecting a RST back out of the interface, so the workload's
//! `connect()` fails at once. Everything else passes on to the capture
//! (routing, then `sk_lookup.rs`) unchanged; the proxy stays
//! authoritative on hosts (SNI, `Host`).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_change_tail, bpf_skb_store_bytes},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use gateway_common::{
    EgressRefusal, IPPROTO_TCP, REFUSAL_V4_LEN, REFUSAL_V6_LEN, REFUSED_NOT_IN_REGISTRY, Syn,
    TCP_SYN, WorkloadCounters, WorkloadKey, egress_allowed, refusal_frame,
};
use network_types::{eth::EthHdr, tcp::TcpHdr};

use crate::{
    maps::{
        EGRESS_ALLOWED, EGRESS_EXCLUDE, EGRESS_OPEN_PORTS, EGRESS_POLICY, EGRESS_REFUSALS,
        EGRESS_WORKLOADS, LOCAL_ADDRS,
    },
    parse::{Packet, header_at, parse_packet, source_address},
};

/// The verdict for one packet from a workload.
#[inline(always)]
pub(crate) fn guard(ctx: &TcContext) -> i32 {
    // Fail open: what the guard cannot parse meets the proxy, which
    // still refuses hosts the egress Gateway does not serve.
    let Ok(packet) = parse_packet(ctx) else {
        return TC_ACT_OK;
    };
    if packet.protocol != IPPROTO_TCP || packet.tcp_flags != TCP_SYN {
        return TC_ACT_OK;
    }
    if !captured(packet.dst) {
        return TC_ACT_OK;
    }
    let Some(syn) = read_syn(ctx, &packet) else {
        return TC_ACT_OK;
    };
    // SAFETY: the kernel's context, valid for this run; at TC ingress
    // `ifindex` is the interface the packet arrived on.
    let ifindex = unsafe { core::ptr::read_volatile(&raw const (*ctx.skb.skb).ifindex) };
    let policy = EGRESS_POLICY.get(0).copied().unwrap_or_default();
    let registered = EGRESS_ALLOWED.get(Key::new(128, packet.dst)).is_some();
    // SAFETY: only the key's presence is read.
    let open_port = unsafe { EGRESS_OPEN_PORTS.get(u32::from(packet.dst_port)) }.is_some();
    let allowed = egress_allowed(policy, registered, open_port);
    count(
        WorkloadKey {
            addr: syn.src,
            ifindex,
        },
        allowed,
    );
    if allowed {
        return TC_ACT_OK;
    }
    let _ = EGRESS_REFUSALS.output::<EgressRefusal>(
        EgressRefusal {
            workload: syn.src,
            dst: syn.dst,
            ifindex,
            dst_port: syn.dst_port,
            reason: REFUSED_NOT_IN_REGISTRY,
        },
        0,
    );
    refuse(ctx, &syn, &packet, ifindex)
}

/// Whether the capture takes a connection to `dst`: not to the
/// gateway's addresses, not to the node's or an excluded range (the
/// daemon puts the node's addresses into `EGRESS_EXCLUDE`).
#[inline(always)]
fn captured(dst: [u8; 16]) -> bool {
    LOCAL_ADDRS.get_ptr(dst).is_none() && EGRESS_EXCLUDE.get(Key::new(128, dst)).is_none()
}

/// The fields of the SYN the reset is built from.
#[inline(always)]
fn read_syn(ctx: &TcContext, packet: &Packet) -> Option<Syn> {
    let eth: *const EthHdr = header_at(ctx, 0).ok()?;
    let tcp: *const TcpHdr = header_at(ctx, packet.l4).ok()?;
    let src = source_address(ctx, packet)?;
    // SAFETY: bounds checked by `header_at`.
    unsafe {
        Some(Syn {
            ipv6: packet.ipv6,
            src_mac: (*eth).src_addr,
            dst_mac: (*eth).dst_addr,
            src,
            dst: packet.dst,
            src_port: u16::from_be_bytes((*tcp).source),
            dst_port: packet.dst_port,
            seq: u32::from_be_bytes((*tcp).seq),
            payload_len: (packet.payload_end - packet.payload) as u32,
        })
    }
}

/// Counts the attempt, and the refusal, for the workload.
#[inline(always)]
fn count(key: WorkloadKey, allowed: bool) {
    let refused = u64::from(!allowed);
    match EGRESS_WORKLOADS.get_ptr_mut(key) {
        // SAFETY: this CPU's own value; nothing else writes it meanwhile.
        Some(counters) => unsafe {
            (*counters).connections += 1;
            (*counters).refused += refused;
        },
        None => {
            let first = WorkloadCounters {
                connections: 1,
                refused,
            };
            let _ = EGRESS_WORKLOADS.insert(key, first, 0);
        }
    }
}

/// Turns the SYN into the RST|ACK that refuses it and sends it back out
/// of the interface it came in on, towards the workload. A SYN with VLAN
/// tags in the frame is dropped instead (refused, but not fast).
///
/// A SYN a local workload sent through a veth may still be marked
/// CHECKSUM_PARTIAL; the reset keeps that mark, which the receiving stack
/// on the other end of the veth trusts, and carries full checksums for
/// any receiver that checks.
#[inline(always)]
fn refuse(ctx: &TcContext, syn: &Syn, packet: &Packet, ifindex: u32) -> i32 {
    if packet.ip != EthHdr::LEN {
        return TC_ACT_SHOT;
    }
    let mut frame = [0u8; REFUSAL_V6_LEN];
    let len = refusal_frame(syn, &mut frame);
    // Verifier rule: the size passed to `bpf_skb_store_bytes` must be a
    // known bound; each branch passes a constant.
    let len = if len == REFUSAL_V6_LEN {
        REFUSAL_V6_LEN as u32
    } else {
        REFUSAL_V4_LEN as u32
    };
    // SAFETY: helpers on the kernel's socket buffer; `frame` outlives the calls.
    unsafe {
        if bpf_skb_change_tail(ctx.skb.skb, len, 0) != 0 {
            return TC_ACT_SHOT;
        }
        if bpf_skb_store_bytes(ctx.skb.skb, 0, frame.as_ptr().cast(), len, 0) != 0 {
            return TC_ACT_SHOT;
        }
        bpf_redirect(ifindex, 0) as i32
    }
}

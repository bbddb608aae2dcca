//! Entry points: `xdp_ingress` and the host classification steps it
//! tail-calls (XDP), `sk_lookup_steer` (socket lookup) and
//! `tc_egress_guard` (TC, on captured workload interfaces).
#![no_std]
#![no_main]

mod classify;
mod egress_guard;
mod host;
mod maps;
mod parse;
mod sk_lookup;
mod stats;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, sk_lookup, xdp},
    programs::{SkLookupContext, TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use gateway_common::{HostClass, LISTENER_RESET_UNKNOWN_HOSTS};

/// Classifies every frame received on the interface it is attached to.
///
/// Passes traffic for listeners and anything that is not addressed to the
/// gateway, drops traffic to the gateway's addresses on ports no listener
/// owns, and counts each outcome by reason and by listener. A listener's
/// TCP segment with payload then goes on to `xdp_host` by tail call.
#[xdp]
pub(crate) fn xdp_ingress(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let outcome = classify::classify(&ctx);
    let action = stats::record_verdict(&outcome, frame_len);
    if action == xdp_action::XDP_DROP {
        // Diagnostic event, off unless the daemon runs with --ebpf-log:
        // the level is a load-time constant, so the verifier removes it.
        if let Some(slot) = outcome.policy {
            debug!(
                &ctx,
                "dropped: a connection attempt AuthorizationPolicy slot {} denies", slot
            );
        } else {
            debug!(
                &ctx,
                "dropped: a connection attempt to a port no listener owns"
            );
        }
    }
    if let Some(data) = outcome.data {
        host::hand_over(&ctx, &data, frame_len);
    }
    action
}

/// Host classification (TLS SNI, HTTP `Host`) of a listener's data
/// segment, first step: find the name, or where the `Host` value starts.
/// Reached only by tail call from `xdp_ingress`, which has already counted
/// the packet and decided to pass it; goes on to `xdp_host_value` or
/// `xdp_host_match`.
#[xdp]
pub(crate) fn xdp_host(ctx: XdpContext) -> u32 {
    if let Some((segment, class)) = host::find_segment_name(&ctx) {
        stats::record_host(segment.listener, class, None, segment.frame_len);
    }
    xdp_action::XDP_PASS
}

/// Host classification of a plaintext HTTP segment, second step: read
/// the `Host` value whose start `xdp_host` found.
#[xdp]
pub(crate) fn xdp_host_value(ctx: XdpContext) -> u32 {
    if let Some((segment, class)) = host::read_host_value(&ctx) {
        stats::record_host(segment.listener, class, None, segment.frame_len);
    }
    xdp_action::XDP_PASS
}

/// Host classification, last step: match the name found against the
/// listener's server hosts, and count it. A name no server accepts, on a
/// listener that asks for it, turns the segment into a reset.
#[xdp]
pub(crate) fn xdp_host_match(ctx: XdpContext) -> u32 {
    if let Some((segment, class, host)) = host::match_segment_name() {
        stats::record_host(segment.listener, class, host, segment.frame_len);
        if matches!(class, HostClass::Unknown) {
            debug!(
                &ctx,
                "listener {}: a host no server accepts", segment.listener
            );
            if segment.flags & LISTENER_RESET_UNKNOWN_HOSTS != 0 {
                host::hand_reset(&ctx);
            }
        }
    }
    xdp_action::XDP_PASS
}

/// Host classification, on a listener that asks for it: turn the data
/// segment of an unknown host into a reset for the local stack.
#[xdp]
pub(crate) fn xdp_host_reset(ctx: XdpContext) -> u32 {
    if let Some(segment) = host::segment() {
        if host::reset_segment(&ctx, &segment) {
            stats::record_reset(segment.listener);
            debug!(
                &ctx,
                "listener {}: reset a connection to an unknown host", segment.listener
            );
        }
    }
    xdp_action::XDP_PASS
}

/// Hands every TCP connection to a listener's (address, port) to the
/// proxy's listening socket (attached to the daemon's network namespace).
#[sk_lookup]
pub(crate) fn sk_lookup_steer(ctx: SkLookupContext) -> u32 {
    sk_lookup::steer(&ctx)
}

/// Counts each captured workload's connection attempts and, under
/// REGISTRY_ONLY, refuses those to addresses no registry entry resolves
/// to with a reset (TC ingress of each `--egress-from` interface).
#[classifier]
pub(crate) fn tc_egress_guard(ctx: TcContext) -> i32 {
    egress_guard::guard(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach a panic, so this is unreachable.
    loop {}
}

/// GPL-compatible licence, required for the kernel helpers the program calls.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

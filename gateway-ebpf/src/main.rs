//! XDP entry point: parse, decide, count, and return one verdict.
#![no_std]
#![no_main]

mod classify;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// Classifies every frame received on the interface it is attached to.
///
/// Passes traffic for listeners and anything that is not addressed to the
/// gateway, drops traffic to the gateway's addresses on ports no listener
/// owns, and counts each outcome by reason and by listener.
#[xdp]
pub fn xdp_ingress(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let outcome = classify::classify(&ctx);
    stats::record_verdict(outcome, frame_len)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is unreachable.
    loop {}
}

/// GPL-compatible licence, required for the kernel helpers the program calls.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

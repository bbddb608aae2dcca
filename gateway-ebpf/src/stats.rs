//! The single exit of the program: count the outcome, return the action.
use aya_ebpf::bindings::xdp_action;
use gateway_common::{Counter, HostClass, Verdict, host_class_index};

use crate::{
    classify::Outcome,
    maps::{HOST_CLASS_STATS, HOST_RESETS, HOST_STATS, LISTENER_STATS, POLICY_STATS, REASON_STATS},
};

/// Counts `outcome` by reason (and by listener when there is one) and turns
/// it into an XDP action.
#[inline(always)]
pub(crate) fn record_verdict(outcome: &Outcome, frame_len: u64) -> u32 {
    let Some(reason_counter) = REASON_STATS.get_ptr_mut(outcome.reason as u32) else {
        // Every reason code is below the array size; a failed lookup means a
        // broken build, which XDP_ABORTED makes visible in xdp tracepoints.
        return xdp_action::XDP_ABORTED;
    };
    bump(reason_counter, frame_len);
    if let Some(id) = outcome.listener {
        if let Some(listener_counter) = LISTENER_STATS.get_ptr_mut(id) {
            bump(listener_counter, frame_len);
        }
    }
    if let Some(slot) = outcome.policy {
        if let Some(policy_counter) = POLICY_STATS.get_ptr_mut(slot) {
            bump(policy_counter, frame_len);
        }
    }
    match outcome.reason.verdict() {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// Counts a listener's data segment by host class, and by host when known.
#[inline(always)]
pub(crate) fn record_host(listener: u32, class: HostClass, host: Option<u32>, frame_len: u64) {
    if let Some(class_counter) = HOST_CLASS_STATS.get_ptr_mut(host_class_index(listener, class)) {
        bump(class_counter, frame_len);
    }
    if let Some(host_counter) = host.and_then(|host| HOST_STATS.get_ptr_mut(host)) {
        bump(host_counter, frame_len);
    }
}

/// Counts a data segment of `listener` turned into a reset (its length
/// is then the headers', so only packets are counted).
#[inline(always)]
pub(crate) fn record_reset(listener: u32) {
    if let Some(counter) = HOST_RESETS.get_ptr_mut(listener) {
        bump(counter, 0);
    }
}

#[inline(always)]
fn bump(counter: *mut Counter, frame_len: u64) {
    // SAFETY: the pointer comes from a successful per-CPU map lookup, so it is
    // valid and only this CPU writes it (XDP runs with preemption disabled).
    unsafe {
        (*counter).packets += 1;
        (*counter).bytes += frame_len;
    }
}

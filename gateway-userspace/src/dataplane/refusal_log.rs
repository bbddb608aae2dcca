//! Logs every connection the egress guard refused in the kernel, with the
//! workload, the destination and the reason, as the guard reports them
//! (`EGRESS_REFUSALS`). A flood is summarised rather than logged line by
//! line: at most [`LINES_PER_SECOND`] lines a second, then a count.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use gateway_common::{EgressRefusal, REFUSED_NOT_IN_REGISTRY};
use tokio::io::{Interest, unix::AsyncFd};

use super::key_addr;

/// Refusal lines logged per second at most.
pub const LINES_PER_SECOND: u32 = 100;

/// Interface names by index, for the log.
pub type InterfaceNames = BTreeMap<u32, String>;

/// One refusal as a log line.
pub fn describe(refusal: &EgressRefusal, interfaces: &InterfaceNames) -> String {
    let workload = key_addr(refusal.workload);
    let destination = SocketAddr::new(key_addr(refusal.dst), refusal.dst_port);
    let interface = interfaces
        .get(&refusal.ifindex)
        .map_or_else(|| format!("interface {}", refusal.ifindex), Clone::clone);
    let reason = match refusal.reason {
        REFUSED_NOT_IN_REGISTRY => {
            "no ServiceEntry resolves to this address (outboundTrafficPolicy REGISTRY_ONLY)"
        }
        _ => "refused",
    };
    format!(
        "egress refused in the kernel: workload {workload} on {interface} -> {destination}: {reason}; reset sent"
    )
}

/// The refusal in an event's bytes (`#[repr(C)]`, native byte order),
/// if it is whole.
pub fn decode(bytes: &[u8]) -> Option<EgressRefusal> {
    Some(EgressRefusal {
        workload: bytes.get(0..16)?.try_into().ok()?,
        dst: bytes.get(16..32)?.try_into().ok()?,
        ifindex: u32::from_ne_bytes(bytes.get(32..36)?.try_into().ok()?),
        dst_port: u16::from_ne_bytes(bytes.get(36..38)?.try_into().ok()?),
        reason: u16::from_ne_bytes(bytes.get(38..40)?.try_into().ok()?),
    })
}

/// Reads the guard's refusals until the ring buffer fails, logging each.
#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
pub async fn log_refusals(ring: RingBuf<MapData>, interfaces: InterfaceNames) {
    // SAFETY: the ring buffer owns its descriptor, which stays open and
    // the same until the ring buffer (owned by the `AsyncFd`) is dropped.
    let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(ring) => ring,
        Err(err) => {
            log::warn!(
                "egress: cannot watch the kernel's refusals ({err}); they are counted but not logged"
            );
            return;
        }
    };
    let mut window = (Instant::now(), 0u32, 0u64);
    loop {
        let Ok(mut ready) = ring.readable_mut().await else {
            return;
        };
        let events = ready.get_inner_mut();
        while let Some(item) = events.next() {
            let Some(refusal) = decode(&item) else {
                continue;
            };
            let (started, _, skipped) = &mut window;
            if started.elapsed() >= Duration::from_secs(1) {
                if *skipped > 0 {
                    log::warn!(
                        "egress: {skipped} more refusals in the kernel not logged (over {LINES_PER_SECOND} a second)"
                    );
                }
                window = (Instant::now(), 0, 0);
            }
            let (_, lines, skipped) = &mut window;
            if *lines < LINES_PER_SECOND {
                *lines += 1;
                log::warn!("{}", describe(&refusal, &interfaces));
            } else {
                *skipped += 1;
            }
        }
        ready.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::ipv4_mapped;

    #[test]
    fn a_refusal_names_workload_interface_destination_and_reason() {
        let refusal = EgressRefusal {
            workload: ipv4_mapped([192, 0, 2, 2]),
            dst: ipv4_mapped([198, 51, 100, 9]),
            ifindex: 7,
            dst_port: 443,
            reason: REFUSED_NOT_IN_REGISTRY,
        };
        let names: InterfaceNames = [(7, "veth-w".to_string())].into();
        assert_eq!(
            describe(&refusal, &names),
            "egress refused in the kernel: workload 192.0.2.2 on veth-w -> 198.51.100.9:443: no ServiceEntry resolves to this address (outboundTrafficPolicy REGISTRY_ONLY); reset sent"
        );
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&refusal.workload);
        bytes.extend_from_slice(&refusal.dst);
        bytes.extend_from_slice(&7u32.to_ne_bytes());
        bytes.extend_from_slice(&443u16.to_ne_bytes());
        bytes.extend_from_slice(&REFUSED_NOT_IN_REGISTRY.to_ne_bytes());
        assert_eq!(decode(&bytes), Some(refusal));
        assert_eq!(decode(&bytes[..39]), None);
    }
}

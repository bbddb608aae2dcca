//! Text rendering of the kernel counters for the admin `/stats` endpoint.
use std::fmt::Write as _;

use crate::{compile::Plan, dataplane::Stats};

/// One `name value` line per counter, stable names for scripts and tests.
pub fn render(stats: &Stats, plan: &Plan) -> String {
    let mut out = String::new();
    for (reason, counter) in &stats.reasons {
        let name = reason.name();
        let _ = writeln!(out, "xdp.reason.{name}.packets {}", counter.packets);
        let _ = writeln!(out, "xdp.reason.{name}.bytes {}", counter.bytes);
    }
    for listener in &plan.listeners {
        let counter = stats
            .listeners
            .iter()
            .find(|(id, _)| *id == listener.id)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        let bind = listener.bind.map_or("*".to_string(), |ip| ip.to_string());
        let proto = if listener.ip_protocol == gateway_common::IPPROTO_UDP {
            "udp"
        } else {
            "tcp"
        };
        let label = format!("{bind}_{}_{proto}", listener.port);
        let _ = writeln!(out, "xdp.listener.{label}.packets {}", counter.packets);
        let _ = writeln!(out, "xdp.listener.{label}.bytes {}", counter.bytes);
    }
    out
}

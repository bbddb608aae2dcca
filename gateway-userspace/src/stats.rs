//! Text rendering of the kernel counters for the admin `/stats` endpoint.
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use gateway_common::{HostClass, IPPROTO_TCP, ListenerKind};

use crate::{compile::Plan, connection::Counters, dataplane::Stats};

/// One `name value` line per counter, stable names for scripts and tests:
/// the configuration's, the kernel's (`stats`), and each kind of
/// listener's connections (`proxy`, `admin`).
pub fn render(
    stats: &Stats,
    plan: &Plan,
    reloads: &ReloadCounters,
    connections: &[(&str, &Counters)],
) -> String {
    let mut out = String::new();
    // What the configuration lost in the merge or binding (Istio's
    // pilot_total_rejected_configs, but per gateway instance).
    let _ = writeln!(out, "config.servers_dropped {}", plan.dropped.len());
    let _ = writeln!(out, "config.route_warnings {}", plan.warnings.len());
    let _ = writeln!(
        out,
        "config.reloads {}",
        reloads.applied.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "config.reload_failures {}",
        reloads.failed.load(Ordering::Relaxed)
    );
    for (reason, counter) in &stats.reasons {
        let name = reason.name();
        let _ = writeln!(out, "xdp.reason.{name}.packets {}", counter.packets);
        let _ = writeln!(out, "xdp.reason.{name}.bytes {}", counter.bytes);
    }
    let hosts = plan.kernel_hosts();
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
        if listener.kind == ListenerKind::Tcp || listener.ip_protocol != IPPROTO_TCP {
            continue;
        }
        // What the first data segments said about the host (TLS SNI, HTTP Host).
        for class in HostClass::ALL {
            let counter = stats
                .host_classes
                .iter()
                .find(|(id, c, _)| *id == listener.id && *c == class)
                .map(|(_, _, c)| *c)
                .unwrap_or_default();
            let name = class.name();
            let _ = writeln!(
                out,
                "xdp.listener.{label}.host_class.{name}.packets {}",
                counter.packets
            );
        }
        if listener.reset_unknown_hosts {
            let resets = stats
                .resets
                .iter()
                .find(|(id, _)| *id == listener.id)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "xdp.listener.{label}.unknown_host_resets {}",
                resets.packets
            );
        }
        for host in hosts.iter().filter(|h| h.listener_id == listener.id) {
            let counter = stats
                .hosts
                .iter()
                .find(|(id, _)| *id == host.id)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            let pattern = &host.pattern;
            let _ = writeln!(
                out,
                "xdp.listener.{label}.host.{pattern}.packets {}",
                counter.packets
            );
        }
    }
    for (prefix, counters) in connections {
        render_connections(prefix, counters, &mut out);
    }
    out
}

/// Configuration reloads since start: applied, and refused (the previous
/// configuration kept serving).
#[derive(Debug, Default)]
pub struct ReloadCounters {
    pub applied: AtomicU64,
    pub failed: AtomicU64,
}

/// `<prefix>.connections.<name> <value>` lines, in a fixed order.
fn render_connections(prefix: &str, counters: &Counters, out: &mut String) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let lines = [
        ("accepted", load(&counters.accepted)),
        ("active", counters.active.load(Ordering::Relaxed) as u64),
        ("rejected_over_limit", load(&counters.rejected)),
        ("closed_head_timeout", load(&counters.head_timeouts)),
        ("closed_idle_timeout", load(&counters.idle_timeouts)),
        ("accept_errors", load(&counters.accept_errors)),
    ];
    for (name, value) in lines {
        let _ = writeln!(out, "{prefix}.connections.{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::DroppedServer;

    #[test]
    fn dropped_servers_and_route_warnings_are_counted() {
        let plan = Plan {
            listeners: Vec::new(),
            local_addrs: Vec::new(),
            http: Vec::new(),
            tls: Vec::new(),
            tcp: Vec::new(),
            clusters: Vec::new(),
            dropped: vec![DroppedServer {
                gateway: "ns/gw".into(),
                server: 1,
                reason: "conflict".into(),
            }],
            warnings: vec!["a".into(), "b".into()],
            host_ids: Default::default(),
        };
        let text = render(&Stats::default(), &plan, &ReloadCounters::default(), &[]);
        assert!(
            text.starts_with("config.servers_dropped 1\nconfig.route_warnings 2\n"),
            "{text}"
        );
    }
}

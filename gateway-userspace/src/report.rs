//! Human and machine renderings of a compiled [`Plan`] (`gateway compile`).
use std::fmt::Write as _;

use gateway_common::{IPPROTO_UDP, ListenerKind};
use serde_json::{Value, json};

use crate::compile::{Listener, Plan};

fn bind_text(listener: &Listener) -> String {
    listener.bind.map_or("*".to_string(), |ip| ip.to_string())
}

fn protocol_text(listener: &Listener) -> &'static str {
    if listener.ip_protocol == IPPROTO_UDP {
        "udp"
    } else {
        "tcp"
    }
}

fn kind_text(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Http => "http",
        ListenerKind::Tls => "tls",
        ListenerKind::Tcp => "tcp",
    }
}

/// The plan as an indented text table.
pub fn table(plan: &Plan) -> String {
    let mut out = String::from("listeners:\n");
    for listener in &plan.listeners {
        let _ = writeln!(
            out,
            "  {}:{}/{}  {}  (id {})",
            bind_text(listener),
            listener.port,
            protocol_text(listener),
            kind_text(listener.kind),
            listener.id
        );
        if let Some(http) = plan.http.iter().find(|h| h.listener_id == listener.id) {
            for host in http.hosts.hosts() {
                let action = if host.https_redirect {
                    "301 to https"
                } else {
                    "404 (no routes)"
                };
                let _ = writeln!(out, "    host {}  -> {action}", host.pattern);
            }
        }
    }
    if plan.listeners.is_empty() {
        out.push_str("  (none)\n");
    }
    if !plan.dropped.is_empty() {
        out.push_str("dropped servers:\n");
        for dropped in &plan.dropped {
            let _ = writeln!(
                out,
                "  Gateway {} spec.servers[{}]: {}",
                dropped.gateway, dropped.server, dropped.reason
            );
        }
    }
    out
}

/// The plan as JSON, for scripts and golden files.
pub fn json(plan: &Plan) -> Value {
    let listeners: Vec<Value> = plan
        .listeners
        .iter()
        .map(|listener| {
            let hosts: Vec<Value> = plan
                .http
                .iter()
                .filter(|h| h.listener_id == listener.id)
                .flat_map(|h| h.hosts.hosts())
                .map(|host| json!({"host": host.pattern.to_string(), "httpsRedirect": host.https_redirect}))
                .collect();
            json!({
                "id": listener.id,
                "bind": bind_text(listener),
                "port": listener.port,
                "protocol": protocol_text(listener),
                "kind": kind_text(listener.kind),
                "hosts": hosts,
            })
        })
        .collect();
    let dropped: Vec<Value> = plan
        .dropped
        .iter()
        .map(|d| json!({"gateway": d.gateway, "server": d.server, "reason": d.reason}))
        .collect();
    let addresses: Vec<String> = plan.local_addrs.iter().map(ToString::to_string).collect();
    json!({"listeners": listeners, "dropped": dropped, "addresses": addresses})
}

//! Human and machine renderings of a compiled [`Plan`] (`gateway compile`).
mod authz;

use std::fmt::Write as _;

use gateway_common::{IPPROTO_UDP, ListenerKind};
use serde_json::{Value, json};

use crate::{
    model::{EndpointAddress, HttpMatch, StringMatch},
    plan::{
        Cluster, ClusterId, Forward, HostTable, Listener, Plan, Route, RouteAction, TlsServerKind,
    },
};

/// What a client sees for an unresolvable destination of an HTTP route.
const HTTP_UNRESOLVED: &str = "503";
/// ... and of a TCP or TLS forward: there is no response to send.
const CONNECTION_UNRESOLVED: &str = "connection closed";

fn bind_text(bind: Option<std::net::IpAddr>) -> String {
    bind.map_or("*".to_string(), |ip| ip.to_string())
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

fn string_match_text(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => format!("= {v}"),
        StringMatch::Prefix(v) => format!("prefix {v}"),
        StringMatch::Regex(v) => format!("~ {v}"),
    }
}

fn match_text(m: &HttpMatch) -> String {
    let mut parts = Vec::new();
    for (name, value) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(value) = value {
            parts.push(format!("{name} {}", string_match_text(value)));
        }
    }
    for (kind, map) in [
        ("header", &m.headers),
        ("without header", &m.without_headers),
        ("query", &m.query_params),
    ] {
        for (name, value) in map {
            match value {
                Some(value) => parts.push(format!("{kind} {name} {}", string_match_text(value))),
                None => parts.push(format!("{kind} {name} present")),
            }
        }
    }
    if parts.is_empty() {
        "any".to_string()
    } else {
        parts.join(" and ")
    }
}

/// `unresolved` is what a client sees for a share without a backend:
/// `503` on an HTTP route, `connection closed` on a TCP or TLS forward.
fn forward_text(forward: &Forward, unresolved: &str, clusters: &[Cluster]) -> String {
    forward
        .0
        .iter()
        .map(|b| match &b.target {
            Ok(id) => format!("{} ({})", cluster_name(clusters, *id), b.weight),
            Err(reason) => format!("{unresolved}: {reason} ({})", b.weight),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name of the cluster `id` names.
fn cluster_name(clusters: &[Cluster], id: ClusterId) -> &str {
    clusters.get(id.index()).map_or("?", |c| c.name.as_str())
}

fn action_text(action: &RouteAction, clusters: &[Cluster]) -> String {
    match action {
        RouteAction::Forward { backends, .. } => forward_text(backends, HTTP_UNRESOLVED, clusters),
        RouteAction::Redirect(r) => format!(
            "{} to {}{}{}",
            r.code,
            r.scheme
                .as_deref()
                .map(|s| format!("{s}://"))
                .unwrap_or_default(),
            r.authority.as_deref().unwrap_or("<same host>"),
            r.uri.as_deref().unwrap_or("<same path>")
        ),
        RouteAction::DirectResponse { status, .. } => format!("respond {status}"),
    }
}

fn route_text(route: &Route, clusters: &[Cluster]) -> String {
    let matches = if route.matches.is_empty() {
        "any".to_string()
    } else {
        route
            .matches
            .iter()
            .map(match_text)
            .collect::<Vec<_>>()
            .join(" | ")
    };
    format!(
        "{matches} -> {}  [{}]",
        action_text(&route.action, clusters),
        route.source
    )
}

fn hosts_table(out: &mut String, hosts: &HostTable, indent: &str, clusters: &[Cluster]) {
    for host in hosts.hosts() {
        if host.https_redirect {
            let _ = writeln!(out, "{indent}host {}  -> 301 to https", host.pattern);
        } else if host.routes.is_empty() {
            let _ = writeln!(out, "{indent}host {}  -> 404 (no routes)", host.pattern);
        } else {
            let _ = writeln!(out, "{indent}host {}", host.pattern);
            for route in &host.routes {
                let _ = writeln!(out, "{indent}  {}", route_text(route, clusters));
            }
        }
    }
}

fn address_text(address: &EndpointAddress) -> String {
    match address {
        EndpointAddress::Ip(ip) if ip.is_ipv6() => format!("[{ip}]"),
        EndpointAddress::Ip(ip) => ip.to_string(),
        EndpointAddress::Dns(name) => name.clone(),
    }
}

/// The plan as an indented text table.
pub fn table(plan: &Plan) -> String {
    let mut out = String::from("listeners:\n");
    for listener in &plan.listeners {
        write_listener(&mut out, plan, listener);
    }
    if plan.listeners.is_empty() {
        out.push_str("  (none)\n");
    }
    if !plan.clusters.is_empty() {
        out.push_str("clusters:\n");
        for cluster in &plan.clusters {
            let mut endpoints: Vec<String> = cluster
                .endpoints
                .iter()
                .map(|e| format!("{}:{}", address_text(&e.address), e.port))
                .collect();
            // PASSTHROUGH: no endpoints, each connection's own destination.
            match cluster.original_destination.map(|o| o.port_override) {
                Some(Some(port)) => endpoints.push(format!("(original destination, port {port})")),
                Some(None) => endpoints.push("(original destination)".to_string()),
                None => {}
            }
            let _ = writeln!(out, "  {}  {}", cluster.name, endpoints.join(", "));
        }
    }
    out.push_str(&authz::table(&plan.authorization));
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
    if !plan.warnings.is_empty() {
        out.push_str("warnings:\n");
        for warning in &plan.warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    out
}

/// One listener of [`table`] and what it serves: HTTP hosts, TLS servers
/// by SNI, or a TCP forward.
fn write_listener(out: &mut String, plan: &Plan, listener: &Listener) {
    let _ = writeln!(
        out,
        "  {}:{}/{}  {}  (id {})",
        bind_text(listener.bind),
        listener.port,
        protocol_text(listener),
        kind_text(listener.kind),
        listener.id
    );
    if let Some(text) = kernel_policy_text(plan, listener) {
        let _ = writeln!(out, "    kernel policy: {text}");
    }
    if let Some(http) = plan.http.iter().find(|h| h.listener_id == listener.id) {
        hosts_table(out, &http.hosts, "    ", &plan.clusters);
    }
    if let Some(tls) = plan.tls.iter().find(|t| t.listener_id == listener.id) {
        for server in &tls.servers {
            let hosts: Vec<String> = server.hosts.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "    sni {}: {}  [{}]",
                hosts.join(", "),
                tls_server_text(&server.kind),
                server.source
            );
            write_tls_server_routes(out, &server.kind, &plan.clusters);
        }
    }
    if let Some(tcp) = plan.tcp.iter().find(|t| t.listener_id == listener.id) {
        let _ = writeln!(
            out,
            "    -> {}  [{}]",
            forward_text(&tcp.route, CONNECTION_UNRESOLVED, &plan.clusters),
            tcp.source
        );
    }
}

/// What the kernel enforces of AuthorizationPolicy on a listener's SYNs:
/// how many source blocks are denied, and whether the port is
/// allow-listed (and to how many blocks); `None` without any.
fn kernel_policy_text(plan: &Plan, listener: &Listener) -> Option<String> {
    if !listener.policy_deny && !listener.policy_allow_list {
        return None;
    }
    let entry = plan.ip_policy.ports.get(&listener.port)?;
    let allow = match &entry.allow {
        Some(blocks) => format!("allow-listed to {} source blocks", blocks.len()),
        None => "not allow-listed".to_string(),
    };
    Some(format!(
        "{} source blocks denied, {allow}",
        entry.deny.len()
    ))
}

/// What a TLS server does with a connection whose SNI it names.
fn tls_server_text(kind: &TlsServerKind) -> String {
    match kind {
        TlsServerKind::TerminateHttp { tls, .. } => {
            format!("terminate {} then HTTP", tls.mode.name())
        }
        TlsServerKind::TerminateTcp { tls, .. } => {
            format!("terminate {} then TCP", tls.mode.name())
        }
        TlsServerKind::Passthrough { .. } => "passthrough by SNI".to_string(),
        TlsServerKind::AutoPassthrough { .. } => {
            "auto passthrough (SNI names the mesh destination)".to_string()
        }
    }
}

/// Where a TLS server's connections go, indented under it.
fn write_tls_server_routes(out: &mut String, kind: &TlsServerKind, clusters: &[Cluster]) {
    match kind {
        TlsServerKind::TerminateHttp { hosts, .. } => hosts_table(out, hosts, "      ", clusters),
        TlsServerKind::TerminateTcp {
            route: Some((forward, source)),
            ..
        } => {
            let _ = writeln!(
                out,
                "      -> {}  [{source}]",
                forward_text(forward, CONNECTION_UNRESOLVED, clusters)
            );
        }
        TlsServerKind::TerminateTcp { route: None, .. } => {
            let _ = writeln!(out, "      -> no tcp route: connections are closed");
        }
        TlsServerKind::Passthrough { routes } => {
            for route in routes {
                let _ = writeln!(
                    out,
                    "      sni {} -> {}  [{}]",
                    route.sni,
                    forward_text(&route.forward, CONNECTION_UNRESOLVED, clusters),
                    route.source
                );
            }
        }
        TlsServerKind::AutoPassthrough { clusters } if clusters.is_empty() => {
            let _ = writeln!(out, "      -> no cluster to reach: connections are closed");
        }
        TlsServerKind::AutoPassthrough { clusters } => {
            for cluster in clusters.keys() {
                let _ = writeln!(out, "      may reach {cluster}");
            }
        }
    }
}

fn forward_json(forward: &Forward, clusters: &[Cluster]) -> Value {
    Value::Array(
        forward
            .0
            .iter()
            .map(|b| match &b.target {
                Ok(id) => json!({"cluster": cluster_name(clusters, *id), "weight": b.weight}),
                Err(reason) => json!({"unavailable": reason.to_string(), "weight": b.weight}),
            })
            .collect(),
    )
}

fn hosts_json(hosts: &HostTable, clusters: &[Cluster]) -> Value {
    Value::Array(
        hosts
            .hosts()
            .iter()
            .map(|host| {
                let routes: Vec<Value> = host
                    .routes
                    .iter()
                    .map(|r| json!({"source": r.source, "match": route_match_json(r), "action": action_text(&r.action, clusters), "catchAll": r.catch_all}))
                    .collect();
                json!({"host": host.pattern.to_string(), "httpsRedirect": host.https_redirect, "routes": routes})
            })
            .collect(),
    )
}

fn route_match_json(route: &Route) -> Value {
    Value::Array(
        route
            .matches
            .iter()
            .map(|m| Value::String(match_text(m)))
            .collect(),
    )
}

/// The plan as JSON, for scripts and golden files.
pub fn json(plan: &Plan) -> Value {
    let listeners: Vec<Value> = plan
        .listeners
        .iter()
        .map(|listener| {
            let mut value = json!({
                "id": listener.id,
                "bind": bind_text(listener.bind),
                "port": listener.port,
                "protocol": protocol_text(listener),
                "kind": kind_text(listener.kind),
            });
            if let Some(entry) = plan
                .ip_policy
                .ports
                .get(&listener.port)
                .filter(|_| listener.policy_deny || listener.policy_allow_list)
            {
                value["kernel_policy"] = json!({
                    "denied_blocks": entry.deny.len(),
                    "allow_listed": entry.allow.is_some(),
                    "allowed_blocks": entry.allow.as_ref().map(|b| b.len()),
                });
            }
            if let Some(http) = plan.http.iter().find(|h| h.listener_id == listener.id) {
                value["hosts"] = hosts_json(&http.hosts, &plan.clusters);
            }
            if let Some(tls) = plan.tls.iter().find(|t| t.listener_id == listener.id) {
                let servers: Vec<Value> = tls
                    .servers
                    .iter()
                    .map(|s| {
                        let hosts: Vec<String> = s.hosts.iter().map(ToString::to_string).collect();
                        let detail = match &s.kind {
                            TlsServerKind::TerminateHttp { tls, hosts } => json!({"terminate": tls.mode.name(), "hosts": hosts_json(hosts, &plan.clusters)}),
                            TlsServerKind::TerminateTcp { tls, route } => json!({
                                "terminate": tls.mode.name(),
                                "forward": route.as_ref().map(|(f, _)| forward_json(f, &plan.clusters)),
                            }),
                            TlsServerKind::Passthrough { routes } => json!({"passthrough": routes.iter().map(|r| json!({"sni": r.sni.to_string(), "forward": forward_json(&r.forward, &plan.clusters), "source": r.source})).collect::<Vec<_>>()}),
                            TlsServerKind::AutoPassthrough { clusters } => json!({"autoPassthrough": clusters.keys().collect::<Vec<_>>()}),
                        };
                        json!({"source": s.source, "sni": hosts, "server": detail})
                    })
                    .collect();
                value["servers"] = Value::Array(servers);
            }
            if let Some(tcp) = plan.tcp.iter().find(|t| t.listener_id == listener.id) {
                value["forward"] = forward_json(&tcp.route, &plan.clusters);
            }
            value
        })
        .collect();
    let clusters: Vec<Value> = plan
        .clusters
        .iter()
        .map(|c| {
            let endpoints: Vec<String> = c
                .endpoints
                .iter()
                .map(|e| format!("{}:{}", address_text(&e.address), e.port))
                .collect();
            let mut value = json!({"name": c.name, "endpoints": endpoints});
            if let Some(original) = c.original_destination {
                value["original_destination"] = json!({"port_override": original.port_override});
            }
            value
        })
        .collect();
    let dropped: Vec<Value> = plan
        .dropped
        .iter()
        .map(|d| json!({"gateway": d.gateway, "server": d.server, "reason": d.reason}))
        .collect();
    let addresses: Vec<String> = plan.local_addrs.iter().map(ToString::to_string).collect();
    json!({"listeners": listeners, "clusters": clusters, "dropped": dropped, "warnings": plan.warnings, "addresses": addresses, "authorization": authz::json(&plan.authorization)})
}

#[cfg(test)]
mod tests {
    use gateway_common::IPPROTO_TCP;

    use super::*;
    use crate::plan::PortPolicy;

    #[test]
    fn a_port_with_kernel_policy_shows_its_denied_blocks_and_allow_list() {
        let mut plan = Plan {
            listeners: vec![
                Listener {
                    id: 0,
                    bind: None,
                    port: 80,
                    ip_protocol: IPPROTO_TCP,
                    kind: ListenerKind::Http,
                    reset_unknown_hosts: false,
                    policy_deny: false,
                    policy_allow_list: false,
                },
                Listener {
                    id: 1,
                    bind: None,
                    port: 443,
                    ip_protocol: IPPROTO_TCP,
                    kind: ListenerKind::Tls,
                    reset_unknown_hosts: false,
                    policy_deny: false,
                    policy_allow_list: false,
                },
            ],
            ..Plan::default()
        };
        plan.ip_policy.ports.insert(
            80,
            PortPolicy {
                deny: [("192.0.2.0/24".parse().unwrap(), 1)].into(),
                allow: Some(["198.51.100.0/24".parse().unwrap()].into()),
            },
        );
        plan.set_policy_flags();
        let text = table(&plan);
        assert!(
            text.contains(
                "  *:80/tcp  http  (id 0)\n    kernel policy: 1 source blocks denied, allow-listed to 1 source blocks\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("kernel policy").count(), 1, "{text}");
        let value = json(&plan);
        assert_eq!(
            value["listeners"][0]["kernel_policy"],
            json!({"denied_blocks": 1, "allow_listed": true, "allowed_blocks": 1})
        );
        assert!(value["listeners"][1].get("kernel_policy").is_none());
    }
}

//! Model -> plan: a pure, deterministic function. The plan
//! ([`crate::plan`]) is everything the kernel maps and the proxy need;
//! nothing else decides what is served. This module holds only the
//! functions that build it.
mod auto_passthrough;
mod bind;
mod clusters;
mod ids;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use gateway_common::{
    IPPROTO_TCP, IPPROTO_UDP, ListenerKind, MAX_HOSTS, MAX_LISTENERS, MAX_LOCAL_ADDRS,
};

use crate::{
    model::{Bind, Gateway, HostPattern, Instance, Model, Protocol},
    plan::{
        ClusterId, DroppedServer, Forward, HostTable, HttpListener, Listener, Plan, RouteAction,
        TcpListener, TlsListener, TlsServerKind,
    },
};

impl Plan {
    /// Turns on the kernel's reset of unknown hosts for the HTTP and TLS
    /// listeners on each of `ports`. A port with no such listener is an
    /// error: the option would silently do nothing there.
    pub fn reset_unknown_hosts(&mut self, ports: &[u16]) -> Result<(), CompileError> {
        for port in ports {
            let mut found = false;
            for listener in self.listeners.iter_mut().filter(|l| {
                l.port == *port && l.ip_protocol == IPPROTO_TCP && l.kind != ListenerKind::Tcp
            }) {
                listener.reset_unknown_hosts = true;
                found = true;
            }
            if !found {
                return Err(CompileError::NoHostListener { port: *port });
            }
        }
        Ok(())
    }
}

/// Why a configuration cannot be compiled at all.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// More distinct (bind, port, protocol) listeners than the kernel map holds.
    #[error("{count} listeners exceed the limit of {limit}")]
    TooManyListeners { count: usize, limit: u32 },
    /// More server hosts than the kernel's host table holds.
    #[error(
        "{count} server hosts exceed the kernel host table's {limit}; the most are on port {port} ({on_port} hosts, from {gateways}): split them across gateway instances or use wildcard hosts"
    )]
    TooManyHosts {
        count: usize,
        limit: u32,
        port: u16,
        on_port: usize,
        gateways: String,
    },
    /// More gateway addresses than the kernel's address table holds.
    #[error("{count} gateway addresses exceed the kernel's limit of {limit}")]
    TooManyAddresses { count: usize, limit: u32 },
    /// `--reset-unknown-hosts` names a port no HTTP or TLS listener has.
    #[error(
        "--reset-unknown-hosts {port}: no HTTP or TLS server listens on port {port}, so no host could be checked there"
    )]
    NoHostListener { port: u16 },
}

/// One (bind, port, L4 protocol) while servers are being merged.
struct Slot<'m> {
    kind: ListenerKind,
    /// Servers that survived the merge, in order.
    servers: Vec<bind::Accepted<'m>>,
    /// The plaintext server that owns the port, if any: (protocol, who).
    plaintext: Option<(Protocol, String)>,
    /// Hosts (namespace stripped, lower-cased) claimed by TLS-bearing servers: host -> who.
    tls_hosts: BTreeMap<String, String>,
}

/// Compiles Gateways for an instance whose own addresses are `local_addrs`.
///
/// Merges servers as Istio does (semantics doc §8.3), taking Gateways in
/// Istio's order (creationTimestamp, name, namespace) and servers in list
/// order; every server left out is reported with the one it lost to:
/// - a server with a `tls` block whose host is already claimed on the same
///   (bind, port) by an earlier one is left out. Hosts are compared after
///   removing their namespace, so `a/*` and `b/*` collide instead of
///   producing two identical matchers (Istio bug §8.5);
/// - plaintext servers share a port only if both are HTTP-family;
/// - a TLS server cannot join a port a plaintext server owns, while a
///   plaintext server may join a port TLS servers own (Istio's asymmetry).
pub fn plan(
    model: &Model,
    instance: &Instance,
    local_addrs: &[IpAddr],
) -> Result<Plan, CompileError> {
    let mut ordered: Vec<&Gateway> = model
        .gateways
        .iter()
        .filter(|g| g.selects(&instance.labels))
        .collect();
    ordered.sort_by(|a, b| a.merge_order().cmp(&b.merge_order()));

    let mut slots: BTreeMap<(Option<IpAddr>, u16, u8), Slot<'_>> = BTreeMap::new();
    let mut dropped = Vec::new();
    for gateway in ordered {
        let gateway_id = format!("{}/{}", gateway.namespace, gateway.name);
        for (index, server) in gateway.servers.iter().enumerate() {
            let who = format!("Gateway {gateway_id} spec.servers[{index}]");
            let mut drop = |reason: String| {
                dropped.push(DroppedServer {
                    gateway: gateway_id.clone(),
                    server: index,
                    reason,
                });
            };
            if let Bind::Unix(path) = &server.bind {
                drop(format!("unix socket bind {path:?} is not served yet"));
                continue;
            }
            let protocol = server.port.protocol;
            let port = server.port.number;
            let slot = slots
                .entry((server.bind.ip(), port, protocol.ip_protocol()))
                .or_insert_with(|| Slot {
                    kind: protocol.listener_kind(),
                    servers: Vec::new(),
                    plaintext: None,
                    tls_hosts: BTreeMap::new(),
                });
            let hosts: Vec<String> = server
                .hosts
                .iter()
                .map(|h| HostPattern::from_server_host(h).to_string())
                .collect();
            if server.tls.is_some() {
                if let Some((host, owner)) =
                    hosts.iter().find_map(|h| slot.tls_hosts.get_key_value(h))
                {
                    drop(format!(
                        "duplicate host {host} on port {port}: already served by {owner}"
                    ));
                    continue;
                }
            }
            let is_tls = matches!(protocol, Protocol::Https | Protocol::Tls);
            match (&slot.plaintext, is_tls) {
                (Some((existing, owner)), true) => {
                    drop(format!(
                        "{protocol:?} cannot share port {port} with the {existing:?} server {owner}"
                    ));
                    continue;
                }
                (Some((existing, owner)), false)
                    if !(existing.is_http_family() && protocol.is_http_family()) =>
                {
                    drop(format!(
                        "{protocol:?} cannot share port {port} with the {existing:?} server {owner}"
                    ));
                    continue;
                }
                (None, false) if slot.kind == ListenerKind::Tls && !protocol.is_http_family() => {
                    drop(format!(
                        "plaintext {protocol:?} on port {port}, which TLS servers own, is not served: only HTTP is told apart from TLS there"
                    ));
                    continue;
                }
                // On a port TLS servers own, Istio accepts this too; the
                // proxy tells TLS and plaintext apart per connection.
                (None, false) => slot.plaintext = Some((protocol, who.clone())),
                _ => {}
            }
            if server.tls.is_some() {
                for host in &hosts {
                    slot.tls_hosts.insert(host.clone(), who.clone());
                }
            }
            if is_tls {
                slot.kind = ListenerKind::Tls;
            }
            slot.servers.push(bind::Accepted {
                gateway,
                index,
                server,
            });
        }
    }

    let mut binder = bind::Binder::new(model, instance);
    let mut udp_warnings = Vec::new();
    let mut listeners = Vec::new();
    let mut http = Vec::new();
    let mut tls = Vec::new();
    let mut tcp = Vec::new();
    for ((bind, port, ip_protocol), slot) in slots {
        let kind = slot.kind;
        match kind {
            ListenerKind::Http => {
                let hosts = binder.http_hosts(&slot.servers, port);
                http.push((bind, port, hosts));
            }
            ListenerKind::Tls => {
                let (encrypted, plaintext): (Vec<_>, Vec<_>) =
                    slot.servers.into_iter().partition(|a| {
                        matches!(a.server.port.protocol, Protocol::Https | Protocol::Tls)
                    });
                let servers = binder.tls_servers(&encrypted, port);
                let plaintext =
                    (!plaintext.is_empty()).then(|| binder.http_hosts(&plaintext, port));
                tls.push((bind, port, servers, plaintext));
            }
            ListenerKind::Tcp => match binder.tcp_route(&slot.servers, port) {
                // XDP passes the port's UDP traffic to the host, but the
                // proxy forwards TCP only (Istio's gateway would build a TCP
                // listener for a UDP server): said, not served by the proxy.
                Some(_) if ip_protocol == IPPROTO_UDP => udp_warnings.push(format!(
                    "UDP on port {port}: XDP passes it to the host, but the proxy forwards TCP only; nothing serves it"
                )),
                Some((route, source)) => tcp.push((bind, port, route, source)),
                None => {
                    for accepted in &slot.servers {
                        dropped.push(DroppedServer {
                            gateway: accepted.gateway_ref(),
                            server: accepted.index,
                            reason: format!("no VirtualService tcp route binds port {port}; Istio opens no listener"),
                        });
                    }
                    continue;
                }
            },
        }
        listeners.push(Listener {
            id: 0,
            bind,
            port,
            ip_protocol,
            kind,
            reset_unknown_hosts: false,
        });
    }
    if listeners.len() > MAX_LISTENERS as usize {
        return Err(CompileError::TooManyListeners {
            count: listeners.len(),
            limit: MAX_LISTENERS,
        });
    }
    // Dense ids in key order; the bound above makes every id fit.
    for (id, listener) in listeners.iter_mut().enumerate() {
        listener.id = u32::try_from(id).unwrap_or(u32::MAX);
    }
    // Every listener the proxy serves is TCP.
    let id_of = |bind: Option<IpAddr>, port: u16| {
        listeners
            .iter()
            .find(|l| l.bind == bind && l.port == port && l.ip_protocol == IPPROTO_TCP)
            .map_or(u32::MAX, |l| l.id)
    };
    let http = http
        .into_iter()
        .map(|(bind, port, hosts)| HttpListener {
            listener_id: id_of(bind, port),
            bind,
            port,
            hosts,
        })
        .collect();
    let tls = tls
        .into_iter()
        .map(|(bind, port, servers, plaintext)| TlsListener {
            listener_id: id_of(bind, port),
            bind,
            port,
            servers,
            plaintext,
        })
        .collect();
    let tcp = tcp
        .into_iter()
        .map(|(bind, port, route, source)| TcpListener {
            listener_id: id_of(bind, port),
            bind,
            port,
            route,
            source,
        })
        .collect();
    let (clusters, renumbered, mut warnings) = binder.finish();
    warnings.extend(udp_warnings);
    let local_addrs: BTreeSet<IpAddr> = local_addrs.iter().copied().collect();
    if local_addrs.len() > MAX_LOCAL_ADDRS as usize {
        return Err(CompileError::TooManyAddresses {
            count: local_addrs.len(),
            limit: MAX_LOCAL_ADDRS,
        });
    }
    let mut plan = Plan {
        listeners,
        local_addrs: local_addrs.into_iter().collect(),
        http,
        tls,
        tcp,
        clusters,
        dropped,
        warnings,
        host_ids: BTreeMap::new(),
    };
    check_host_capacity(&plan, model)?;
    renumber_clusters(&mut plan, &renumbered);
    Ok(plan)
}

/// Gives every backend the id of its cluster in the plan's (name) order,
/// from the id it was bound with (`renumbered[binding-time id]`).
fn renumber_clusters(plan: &mut Plan, renumbered: &[ClusterId]) {
    let id = |old: &mut ClusterId| {
        if let Some(new) = renumbered.get(old.index()) {
            *old = *new;
        }
    };
    let forward = |forward: &mut Forward| {
        for backend in &mut forward.0 {
            if let Ok(cluster) = &mut backend.target {
                id(cluster);
            }
        }
    };
    let hosts = |table: &mut HostTable| {
        for host in table.hosts_mut() {
            for route in &mut host.routes {
                if let RouteAction::Forward { backends, .. } = &mut route.action {
                    forward(backends);
                }
            }
        }
    };
    for listener in &mut plan.http {
        hosts(&mut listener.hosts);
    }
    for listener in &mut plan.tls {
        if let Some(table) = &mut listener.plaintext {
            hosts(table);
        }
        for server in &mut listener.servers {
            match &mut server.kind {
                TlsServerKind::TerminateHttp { hosts: table, .. } => hosts(table),
                TlsServerKind::TerminateTcp { route, .. } => {
                    if let Some((backends, _)) = route {
                        forward(backends);
                    }
                }
                TlsServerKind::Passthrough { routes } => {
                    for route in routes {
                        forward(&mut route.forward);
                    }
                }
                TlsServerKind::AutoPassthrough { clusters } => {
                    for cluster in clusters.values_mut() {
                        id(cluster);
                    }
                }
            }
        }
    }
    for listener in &mut plan.tcp {
        forward(&mut listener.route);
    }
}

/// Refuses a plan whose hosts the kernel's table cannot hold, naming the
/// port with the most and the Gateways that put them there: checked here,
/// so `check`, `compile` and a reload refuse it before anything switches.
fn check_host_capacity(plan: &Plan, model: &Model) -> Result<(), CompileError> {
    let hosts = plan.kernel_host_keys();
    if hosts.len() <= MAX_HOSTS as usize {
        return Ok(());
    }
    let mut per_listener: BTreeMap<u32, usize> = BTreeMap::new();
    for (listener_id, _) in &hosts {
        *per_listener.entry(*listener_id).or_default() += 1;
    }
    let (listener_id, on_port) = per_listener
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .unwrap_or_default();
    let port = plan
        .listeners
        .iter()
        .find(|l| l.id == listener_id)
        .map_or(0, |l| l.port);
    let gateways: Vec<String> = model
        .gateways
        .iter()
        .filter(|g| g.servers.iter().any(|s| s.port.number == port))
        .map(|g| match &g.defined_at {
            Some(at) => format!("Gateway {}/{} at {at}", g.namespace, g.name),
            None => format!("Gateway {}/{}", g.namespace, g.name),
        })
        .collect();
    Err(CompileError::TooManyHosts {
        count: hosts.len(),
        limit: MAX_HOSTS,
        port,
        on_port,
        gateways: gateways.join(", "),
    })
}

pub mod route_loss;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;

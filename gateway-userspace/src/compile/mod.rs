//! Model -> plan: a pure, deterministic function. The plan
//! ([`crate::plan`]) is everything the kernel maps and the proxy need;
//! nothing else decides what is served. This module holds only the
//! functions that build it.
pub(crate) mod authz;
mod auto_passthrough;
mod bind;
mod clusters;
mod delegate;
pub mod egress_registry;
mod gateway_ports;
mod ids;
mod ip_policy;
mod jwt;
mod merge;
pub mod references;
mod retry;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use gateway_common::{
    IPPROTO_TCP, IPPROTO_UDP, ListenerKind, MAX_HOSTS, MAX_LISTENERS, MAX_LOCAL_ADDRS,
};

use self::merge::{Slot, SlotKey, merge_servers, selected_gateways};
use crate::{
    model::{Instance, Model, Protocol},
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
    /// More AuthorizationPolicy (port, source block) entries than a kernel
    /// policy trie holds.
    #[error(
        "{count} AuthorizationPolicy {trie} entries (port x source block) exceed the kernel's {limit}; the most are on port {port} ({on_port}): merge blocks into wider CIDRs or split the ports across gateway instances"
    )]
    TooManyPolicyEntries {
        trie: &'static str,
        count: usize,
        limit: u32,
        port: u16,
        on_port: usize,
    },
    /// More DENY policies with kernel entries than the kernel counts.
    #[error(
        "more than {limit} AuthorizationPolicy DENY policies with source blocks: the kernel counts at most {limit}"
    )]
    TooManyKernelPolicies { limit: u32 },
    /// More gateway addresses than the kernel's address table holds.
    #[error("{count} gateway addresses exceed the kernel's limit of {limit}")]
    TooManyAddresses { count: usize, limit: u32 },
    /// `--reset-unknown-hosts` names a port no HTTP or TLS listener has.
    #[error(
        "--reset-unknown-hosts {port}: no HTTP or TLS server listens on port {port}, so no host could be checked there"
    )]
    NoHostListener { port: u16 },
}

/// The listeners built from the merged servers: the kernel's, and what
/// the proxy serves on each (its `listener_id` set by [`number_listeners`]).
struct Listeners {
    kernel: Vec<Listener>,
    http: Vec<HttpListener>,
    tls: Vec<TlsListener>,
    tcp: Vec<TcpListener>,
    /// UDP ports a TCP route binds, which the proxy does not serve.
    udp_warnings: Vec<String>,
}

/// Compiles Gateways for an instance whose own addresses are `local_addrs`.
///
/// Merges servers as Istio does, taking Gateways in
/// Istio's order (creationTimestamp, name, namespace) and servers in list
/// order; every server left out is reported with the one it lost to:
/// - a server with a `tls` block whose host is already claimed on the same
///   (bind, port) by an earlier one is left out. Hosts are compared after
///   removing their namespace, so `a/*` and `b/*` collide instead of
///   producing two identical matchers (Istio bug §8.5);
/// - plaintext servers share a port only if both are HTTP-family;
/// - a TLS server cannot join a port a plaintext server owns, while a
///   plaintext server may join a port TLS servers own (Istio's asymmetry).
///
/// The steps, in order; each capacity check refuses the whole plan.
pub fn plan(
    model: &Model,
    instance: &Instance,
    local_addrs: &[IpAddr],
) -> Result<Plan, CompileError> {
    let (listen_ports, port_warnings) = gateway_ports::listen_ports(model, instance);
    let (slots, mut dropped) = merge_servers(&selected_gateways(model, instance), &listen_ports);
    let mut binder = bind::Binder::new(model, instance);
    let mut listeners = bind_listeners(slots, &mut binder, &mut dropped);
    number_listeners(&mut listeners)?;
    let (clusters, renumbered, mut warnings) = binder.finish();
    warnings.extend(port_warnings);
    warnings.extend(listeners.udp_warnings);
    let local_addrs = gateway_addresses(local_addrs)?;
    let mut plan = Plan {
        listeners: listeners.kernel,
        local_addrs,
        http: listeners.http,
        tls: listeners.tls,
        tcp: listeners.tcp,
        clusters,
        dropped,
        warnings,
        host_ids: BTreeMap::new(),
        jwt: jwt::providers(model, instance),
        authorization: Default::default(),
        ip_policy: Default::default(),
    };
    let (authorization, authz_warnings) = authz::authorization(model, instance);
    if !plan.tcp.is_empty() || !plan.tls.is_empty() {
        plan.warnings.extend(authz_warnings);
    }
    plan.authorization = authorization;
    check_host_capacity(&plan, model)?;
    plan.ip_policy = ip_policy::ip_policy(
        &authz::applicable(model, instance),
        &plan.listeners,
        instance,
    )?;
    plan.set_policy_flags();
    renumber_clusters(&mut plan, &renumbered);
    Ok(plan)
}

/// Binds each slot's servers to what its listener serves (HTTP hosts, TLS
/// servers, a TCP route). A TCP slot no VirtualService `tcp` rule binds
/// opens no listener, as in Istio, and its servers are dropped; a UDP one
/// is passed by the kernel and only warned about.
fn bind_listeners<'m>(
    slots: BTreeMap<SlotKey, Slot<'m>>,
    binder: &mut bind::Binder<'m>,
    dropped: &mut Vec<DroppedServer>,
) -> Listeners {
    let mut out = Listeners {
        kernel: Vec::new(),
        http: Vec::new(),
        tls: Vec::new(),
        tcp: Vec::new(),
        udp_warnings: Vec::new(),
    };
    // Numbered by `number_listeners`, once every listener is known.
    let listener_id = u32::MAX;
    for ((bind, port, ip_protocol), slot) in slots {
        let kind = slot.kind;
        match kind {
            ListenerKind::Http => {
                let hosts = binder.http_hosts(&slot.servers, port);
                out.http.push(HttpListener {
                    listener_id,
                    bind,
                    port,
                    hosts,
                });
            }
            ListenerKind::Tls => {
                let (encrypted, plaintext): (Vec<_>, Vec<_>) =
                    slot.servers.into_iter().partition(|a| {
                        matches!(a.server.port.protocol, Protocol::Https | Protocol::Tls)
                    });
                let servers = binder.tls_servers(&encrypted, port);
                let plaintext =
                    (!plaintext.is_empty()).then(|| binder.http_hosts(&plaintext, port));
                out.tls.push(TlsListener {
                    listener_id,
                    bind,
                    port,
                    servers,
                    plaintext,
                });
            }
            ListenerKind::Tcp => match binder.tcp_route(&slot.servers, port) {
                // XDP passes the port's UDP traffic to the host, but the
                // proxy forwards TCP only (Istio's gateway would build a TCP
                // listener for a UDP server): said, not served by the proxy.
                Some(_) if ip_protocol == IPPROTO_UDP => out.udp_warnings.push(format!(
                    "UDP on port {port}: XDP passes it to the host, but the proxy forwards TCP only; nothing serves it"
                )),
                Some((route, source)) => out.tcp.push(TcpListener {
                    listener_id,
                    bind,
                    port,
                    route,
                    source,
                }),
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
        out.kernel.push(Listener {
            id: 0,
            bind,
            port,
            ip_protocol,
            kind,
            reset_unknown_hosts: false,
            policy_deny: false,
            policy_allow_list: false,
        });
    }
    out
}

/// Refuses more listeners than the kernel's table holds, gives the rest
/// dense ids in key order, and each listener the proxy serves (all TCP)
/// the id of its kernel listener.
fn number_listeners(listeners: &mut Listeners) -> Result<(), CompileError> {
    if listeners.kernel.len() > MAX_LISTENERS as usize {
        return Err(CompileError::TooManyListeners {
            count: listeners.kernel.len(),
            limit: MAX_LISTENERS,
        });
    }
    // Dense ids in key order; the bound above makes every id fit.
    for (id, listener) in listeners.kernel.iter_mut().enumerate() {
        listener.id = u32::try_from(id).unwrap_or(u32::MAX);
    }
    // Every listener the proxy serves is TCP.
    let kernel = &listeners.kernel;
    let id_of = |bind: Option<IpAddr>, port: u16| {
        kernel
            .iter()
            .find(|l| l.bind == bind && l.port == port && l.ip_protocol == IPPROTO_TCP)
            .map_or(u32::MAX, |l| l.id)
    };
    for listener in &mut listeners.http {
        listener.listener_id = id_of(listener.bind, listener.port);
    }
    for listener in &mut listeners.tls {
        listener.listener_id = id_of(listener.bind, listener.port);
    }
    for listener in &mut listeners.tcp {
        listener.listener_id = id_of(listener.bind, listener.port);
    }
    Ok(())
}

/// The gateway's own addresses, sorted and de-duplicated; more than the
/// kernel's address table holds refuses the plan.
fn gateway_addresses(local_addrs: &[IpAddr]) -> Result<Vec<IpAddr>, CompileError> {
    let local_addrs: BTreeSet<IpAddr> = local_addrs.iter().copied().collect();
    if local_addrs.len() > MAX_LOCAL_ADDRS as usize {
        return Err(CompileError::TooManyAddresses {
            count: local_addrs.len(),
            limit: MAX_LOCAL_ADDRS,
        });
    }
    Ok(local_addrs.into_iter().collect())
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
                if let RouteAction::Forward {
                    backends, mirrors, ..
                } = &mut route.action
                {
                    forward(backends);
                    for mirror in mirrors {
                        if let Ok(cluster) = &mut mirror.target {
                            id(cluster);
                        }
                    }
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
mod kubernetes_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;

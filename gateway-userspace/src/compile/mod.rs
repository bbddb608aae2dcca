//! Model -> plan: a pure, deterministic function. The plan is everything
//! the kernel maps and the proxy need; nothing else decides what is served.
mod auto_passthrough;
mod bind;
mod clusters;
pub mod egress_registry;
mod ids;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

pub use self::{
    bind::{Backend, Forward, Route, RouteAction, SniRoute, TlsServer, TlsServerKind},
    clusters::{Cluster, Endpoint, Unresolved},
};

use gateway_common::{
    ADDR_ANY, HOST_ANY, HOST_EXACT, HOST_SUFFIX, HostKey, HostValue, IPPROTO_TCP, IPPROTO_UDP,
    LISTENER_RESET_UNKNOWN_HOSTS, ListenerKey, ListenerKind, ListenerValue, MAX_HOSTS,
    MAX_LISTENERS, MAX_LOCAL_ADDRS, PORT_BOUND, PORT_WILDCARD, PortValue, host_hash, ipv4_mapped,
    port_index,
};

use crate::{
    hosts::{HostPattern, HostTable},
    model::{Bind, Gateway, Instance, Model, Protocol},
};

/// What to program into the kernel and the proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// One per (bind, port, L4 protocol), sorted; `id` is the index.
    pub listeners: Vec<Listener>,
    /// The gateway's own addresses, sorted and de-duplicated.
    pub local_addrs: Vec<IpAddr>,
    /// Plaintext HTTP listeners the proxy serves, sorted by (bind, port).
    pub http: Vec<HttpListener>,
    /// TLS listeners: per server, its SNI hosts and what happens after the handshake.
    pub tls: Vec<TlsListener>,
    /// Opaque TCP listeners and where they forward.
    pub tcp: Vec<TcpListener>,
    /// Every backend a route refers to, by name.
    pub clusters: Vec<Cluster>,
    /// Servers left out, each with the reason; never silent.
    pub dropped: Vec<DroppedServer>,
    /// Problems found while binding routes (unresolvable destinations,
    /// duplicate SNI hosts, ...): served, but not as written.
    pub warnings: Vec<String>,
    /// Kernel host ids kept from the plan this one replaces, by (listener
    /// id, pattern) ([`Plan::keep_ids_from`]); empty for a first plan.
    pub host_ids: BTreeMap<(u32, HostPattern), u32>,
}

/// A TLS port: one entry per server that shares it, matched by SNI.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsListener {
    pub listener_id: u32,
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub servers: Vec<TlsServer>,
    /// Plaintext HTTP servers sharing the port: connections that do not
    /// start with a TLS record are served by these virtual hosts.
    pub plaintext: Option<HostTable>,
}

/// An opaque TCP port.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpListener {
    pub listener_id: u32,
    pub bind: Option<IpAddr>,
    pub port: u16,
    /// Where connections go; from the first VirtualService `tcp` rule that binds.
    pub route: Forward,
    /// `VirtualService ns/name spec.tcp[i]` the route came from.
    pub source: String,
}

/// A destination the kernel passes to the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub id: u32,
    /// `None` = every gateway address.
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub ip_protocol: u8,
    pub kind: ListenerKind,
    /// The kernel resets connections whose first data segment names a
    /// host no server here accepts (`--reset-unknown-hosts`).
    pub reset_unknown_hosts: bool,
}

impl Listener {
    /// The `LISTENERS` map key.
    pub fn key(&self) -> ListenerKey {
        ListenerKey {
            addr: self.bind.map_or(ADDR_ANY, addr_key),
            port: self.port,
            protocol: self.ip_protocol,
            pad: 0,
        }
    }

    /// The `LISTENERS` map value.
    pub fn value(&self) -> ListenerValue {
        ListenerValue {
            id: self.id,
            kind: self.kind as u32,
            flags: if self.reset_unknown_hosts {
                LISTENER_RESET_UNKNOWN_HOSTS
            } else {
                0
            },
        }
    }
}

/// A server host of a listener, as the kernel classifies the listener's
/// first data segments (TLS SNI, HTTP `Host`) against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelHost {
    /// Index into the kernel's per-host counters.
    pub id: u32,
    pub listener_id: u32,
    pub pattern: HostPattern,
}

impl KernelHost {
    /// The `HOSTS` map key.
    pub fn key(&self) -> HostKey {
        let (kind, hash) = match &self.pattern {
            HostPattern::Exact(name) => (HOST_EXACT, host_hash(name.as_bytes())),
            HostPattern::Suffix(suffix) => (HOST_SUFFIX, host_hash(suffix.as_bytes())),
            HostPattern::Any => (HOST_ANY, 0),
        };
        HostKey {
            listener: self.listener_id,
            kind,
            hash,
        }
    }

    /// The `HOSTS` map value.
    pub fn value(&self) -> HostValue {
        HostValue {
            id: self.id,
            pad: 0,
        }
    }
}

impl Plan {
    /// The `PORTS` entries: per (protocol, port), the listener on every
    /// gateway address and whether address-bound listeners exist. Ports
    /// without listeners are absent (zero in the kernel's array).
    pub fn ports(&self) -> BTreeMap<u32, PortValue> {
        ports_of(self.listeners.iter().map(|l| (l.key(), l.value())))
    }

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

    /// Every listener's server hosts for the kernel: an HTTP port's
    /// virtual hosts, a TLS port's SNI hosts and the virtual hosts of the
    /// plaintext servers sharing it. De-duplicated per listener; ids count
    /// up in (listener, pattern) order, so the same plan gives the same ids.
    pub fn kernel_hosts(&self) -> Vec<KernelHost> {
        let wanted: BTreeSet<(u32, HostPattern)> = self
            .kernel_host_keys()
            .into_iter()
            .map(|(listener, pattern)| (listener, pattern.clone()))
            .collect();
        // Ids kept from the previous plan first, then the lowest free ones.
        let used: BTreeSet<u32> = wanted
            .iter()
            .filter_map(|key| self.host_ids.get(key).copied())
            .collect();
        let mut free = ids::FreeIds::new(used);
        wanted
            .into_iter()
            .map(|(listener_id, pattern)| {
                let id = match self.host_ids.get(&(listener_id, pattern.clone())) {
                    Some(id) => *id,
                    None => free.take(),
                };
                KernelHost {
                    id,
                    listener_id,
                    pattern,
                }
            })
            .collect()
    }

    /// The (listener, host pattern) pairs the kernel's host table holds,
    /// borrowed: counting them copies no name.
    fn kernel_host_keys(&self) -> BTreeSet<(u32, &HostPattern)> {
        let mut wanted = BTreeSet::new();
        for listener in &self.http {
            for host in listener.hosts.hosts() {
                wanted.insert((listener.listener_id, &host.pattern));
            }
        }
        for listener in &self.tls {
            for server in &listener.servers {
                for pattern in &server.hosts {
                    wanted.insert((listener.listener_id, pattern));
                }
            }
            for host in listener.plaintext.iter().flat_map(HostTable::hosts) {
                wanted.insert((listener.listener_id, &host.pattern));
            }
        }
        wanted
    }
}

/// A plaintext HTTP port and the virtual hosts it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpListener {
    pub listener_id: u32,
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub hosts: HostTable,
}

/// A server that is not served, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// Index in `spec.servers`.
    pub server: usize,
    pub reason: String,
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

/// The `PORTS` entries for `LISTENERS` entries: what [`Plan::ports`]
/// writes, and what a restarted daemon finds in the pinned maps it adopts.
pub fn ports_of(
    listeners: impl IntoIterator<Item = (ListenerKey, ListenerValue)>,
) -> BTreeMap<u32, PortValue> {
    let mut ports: BTreeMap<u32, PortValue> = BTreeMap::new();
    for (key, value) in listeners {
        let Some(index) = port_index(key.protocol, key.port) else {
            continue;
        };
        let entry = ports.entry(index).or_default();
        if key.addr == ADDR_ANY {
            entry.wildcard = value;
            entry.flags |= PORT_WILDCARD;
        } else {
            entry.flags |= PORT_BOUND;
        }
    }
    ports
}

/// The 16-byte map form of an address (IPv4 mapped into IPv6).
pub fn addr_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
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
    let (clusters, mut warnings) = binder.finish();
    warnings.extend(udp_warnings);
    let local_addrs: BTreeSet<IpAddr> = local_addrs.iter().copied().collect();
    if local_addrs.len() > MAX_LOCAL_ADDRS as usize {
        return Err(CompileError::TooManyAddresses {
            count: local_addrs.len(),
            limit: MAX_LOCAL_ADDRS,
        });
    }
    let plan = Plan {
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
    Ok(plan)
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

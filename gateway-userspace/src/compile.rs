//! Model -> plan: a pure, deterministic function. The plan is everything
//! the kernel maps and the proxy need; nothing else decides what is served.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use gateway_common::{
    ADDR_ANY, ListenerKey, ListenerKind, ListenerValue, MAX_LISTENERS, ipv4_mapped,
};

use crate::{
    hosts::{HostPattern, HostTable, VirtualHost},
    model::{Bind, Gateway, Protocol},
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
    /// Servers left out, each with the reason; never silent.
    pub dropped: Vec<DroppedServer>,
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
        }
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
}

/// The 16-byte map form of an address (IPv4 mapped into IPv6).
pub fn addr_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Compiles Gateways for an instance whose own addresses are `local_addrs`.
///
/// Servers are taken in Istio's Gateway order (creationTimestamp, name,
/// namespace), then list order; the first server on a (bind, port) fixes
/// its kind, and a later server of another kind is dropped and reported.
pub fn plan(gateways: &[Gateway], local_addrs: &[IpAddr]) -> Result<Plan, CompileError> {
    let mut ordered: Vec<&Gateway> = gateways.iter().collect();
    ordered.sort_by(|a, b| a.merge_order().cmp(&b.merge_order()));

    // (bind, port, ip_protocol) -> (kind, first protocol, http virtual hosts)
    type Slot = (ListenerKind, Protocol, Vec<VirtualHost>);
    let mut slots: BTreeMap<(Option<IpAddr>, u16, u8), Slot> = BTreeMap::new();
    let mut dropped = Vec::new();
    for gateway in ordered {
        for (index, server) in gateway.servers.iter().enumerate() {
            let protocol = server.port.protocol;
            if let Bind::Unix(path) = &server.bind {
                dropped.push(DroppedServer {
                    gateway: format!("{}/{}", gateway.namespace, gateway.name),
                    server: index,
                    reason: format!("unix socket bind {path:?} is not served yet"),
                });
                continue;
            }
            let slot_key = (server.bind.ip(), server.port.number, protocol.ip_protocol());
            let slot = slots
                .entry(slot_key)
                .or_insert_with(|| (protocol.listener_kind(), protocol, Vec::new()));
            if slot.0 != protocol.listener_kind() {
                dropped.push(DroppedServer {
                    gateway: format!("{}/{}", gateway.namespace, gateway.name),
                    server: index,
                    reason: format!(
                        "port {} is already served as {:?} by an earlier server; {:?} cannot share it",
                        server.port.number, slot.1, protocol
                    ),
                });
                continue;
            }
            if protocol.is_http_family() {
                let https_redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
                slot.2.extend(server.hosts.iter().map(|host| VirtualHost {
                    pattern: HostPattern::from_server_host(host),
                    https_redirect,
                }));
            }
        }
    }

    if slots.len() > MAX_LISTENERS as usize {
        return Err(CompileError::TooManyListeners {
            count: slots.len(),
            limit: MAX_LISTENERS,
        });
    }
    let mut listeners = Vec::new();
    let mut http = Vec::new();
    for (id, ((bind, port, ip_protocol), (kind, _, hosts))) in slots.into_iter().enumerate() {
        // Bounded by MAX_LISTENERS above, so the id fits.
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        listeners.push(Listener {
            id,
            bind,
            port,
            ip_protocol,
            kind,
        });
        if kind == ListenerKind::Http {
            http.push(HttpListener {
                listener_id: id,
                bind,
                port,
                hosts: HostTable::new(hosts),
            });
        }
    }
    let local_addrs: BTreeSet<IpAddr> = local_addrs.iter().copied().collect();
    Ok(Plan {
        listeners,
        local_addrs: local_addrs.into_iter().collect(),
        http,
        dropped,
    })
}

#[cfg(test)]
mod tests;

//! Merging servers: the Gateways that select the instance, in Istio's
//! order, and their servers merged per (bind, port, L4 protocol) by
//! Istio's rules, each server left out with the reason.
use std::{collections::BTreeMap, net::IpAddr};

use gateway_common::ListenerKind;

use super::bind;
use crate::{
    model::{Bind, Gateway, HostPattern, Instance, Model, Protocol},
    plan::DroppedServer,
};

/// A listener's key while servers are merged: (bind, port, L4 protocol).
pub(super) type SlotKey = (Option<IpAddr>, u16, u8);

/// One (bind, port, L4 protocol) while servers are being merged.
pub(super) struct Slot<'m> {
    pub(super) kind: ListenerKind,
    /// Servers that survived the merge, in order.
    pub(super) servers: Vec<bind::Accepted<'m>>,
    /// The plaintext server that owns the port, if any: (protocol, who).
    plaintext: Option<(Protocol, String)>,
    /// Hosts (namespace stripped, lower-cased) claimed by TLS-bearing servers: host -> who.
    tls_hosts: BTreeMap<String, String>,
}

/// The Gateways that select this instance, in Istio's merge order: the
/// order decides which of two conflicting servers is kept.
pub(super) fn selected_gateways<'m>(model: &'m Model, instance: &Instance) -> Vec<&'m Gateway> {
    let mut ordered: Vec<&Gateway> = model
        .gateways
        .iter()
        .filter(|g| g.selects(&instance.labels))
        .collect();
    ordered.sort_by(|a, b| a.merge_order().cmp(&b.merge_order()));
    ordered
}

/// Merges the servers of `gateways`, in order, into one slot per (bind,
/// port, L4 protocol), by Istio's rules ([`Slot::admit`]); every server
/// left out is returned with the reason. A server's port is looked up in
/// `listen_ports` (the gateway Service's translation) for the port its
/// listener takes.
pub(super) fn merge_servers<'m>(
    gateways: &[&'m Gateway],
    listen_ports: &BTreeMap<u16, u16>,
) -> (BTreeMap<SlotKey, Slot<'m>>, Vec<DroppedServer>) {
    let mut slots: BTreeMap<SlotKey, Slot<'_>> = BTreeMap::new();
    let mut dropped = Vec::new();
    for &gateway in gateways {
        let gateway_id = format!("{}/{}", gateway.namespace, gateway.name);
        for (index, server) in gateway.servers.iter().enumerate() {
            let unavailable = server.tls.as_ref().and_then(|tls| tls.unavailable.clone());
            let admitted = if let Bind::Unix(path) = &server.bind {
                Err(format!("unix socket bind {path:?} is not served yet"))
            } else if let Some(reason) = unavailable {
                Err(reason)
            } else {
                let who = format!("Gateway {gateway_id} spec.servers[{index}]");
                let protocol = server.port.protocol;
                let number = server.port.number;
                let listen_port = listen_ports.get(&number).copied().unwrap_or(number);
                slots
                    .entry((server.bind.ip(), listen_port, protocol.ip_protocol()))
                    .or_insert_with(|| Slot {
                        kind: protocol.listener_kind(),
                        servers: Vec::new(),
                        plaintext: None,
                        tls_hosts: BTreeMap::new(),
                    })
                    .admit(
                        bind::Accepted {
                            gateway,
                            index,
                            server,
                        },
                        who,
                    )
            };
            if let Err(reason) = admitted {
                dropped.push(DroppedServer {
                    gateway: gateway_id.clone(),
                    server: index,
                    reason,
                });
            }
        }
    }
    (slots, dropped)
}

impl<'m> Slot<'m> {
    /// Takes `accepted` (`who`, for the servers it wins over) into the
    /// slot, or says why Istio leaves it out: a TLS host already claimed,
    /// or a plaintext/TLS mix the port cannot serve.
    fn admit(&mut self, accepted: bind::Accepted<'m>, who: String) -> Result<(), String> {
        let server = accepted.server;
        let protocol = server.port.protocol;
        let port = server.port.number;
        let hosts: Vec<String> = server
            .hosts
            .iter()
            .map(|h| HostPattern::from_server_host(h).to_string())
            .collect();
        if server.tls.is_some() {
            if let Some((host, owner)) = hosts.iter().find_map(|h| self.tls_hosts.get_key_value(h))
            {
                return Err(format!(
                    "duplicate host {host} on port {port}: already served by {owner}"
                ));
            }
        }
        let is_tls = matches!(protocol, Protocol::Https | Protocol::Tls);
        match (&self.plaintext, is_tls) {
            (Some((existing, owner)), true) => {
                return Err(format!(
                    "{protocol:?} cannot share port {port} with the {existing:?} server {owner}"
                ));
            }
            (Some((existing, owner)), false)
                if !(existing.is_http_family() && protocol.is_http_family()) =>
            {
                return Err(format!(
                    "{protocol:?} cannot share port {port} with the {existing:?} server {owner}"
                ));
            }
            (None, false) if self.kind == ListenerKind::Tls && !protocol.is_http_family() => {
                return Err(format!(
                    "plaintext {protocol:?} on port {port}, which TLS servers own, is not served: only HTTP is told apart from TLS there"
                ));
            }
            // On a port TLS servers own, Istio accepts this too; the
            // proxy tells TLS and plaintext apart per connection.
            (None, false) => self.plaintext = Some((protocol, who.clone())),
            _ => {}
        }
        if server.tls.is_some() {
            for host in &hosts {
                self.tls_hosts.insert(host.clone(), who.clone());
            }
        }
        if is_tls {
            self.kind = ListenerKind::Tls;
        }
        self.servers.push(accepted);
        Ok(())
    }
}

//! TLS binding: a TLS listener's servers, terminated or passed through,
//! and the SNI routes of passthrough servers.
use std::collections::BTreeSet;

use super::{Accepted, Binder, Layer, subnets_not_applied};
use crate::{
    compile::auto_passthrough,
    model::{HostPattern, Protocol, TlsMode},
    plan::{SniRoute, TlsServer, TlsServerKind},
};

impl<'m> Binder<'m> {
    /// The servers of a TLS listener, with passthrough SNI routes unique
    /// across the listener.
    pub(crate) fn tls_servers(&mut self, servers: &[Accepted<'m>], port: u16) -> Vec<TlsServer> {
        let mut seen_sni: BTreeSet<HostPattern> = BTreeSet::new();
        let mut out = Vec::new();
        for accepted in servers {
            let Some(tls) = accepted.server.tls.clone() else {
                continue;
            };
            let source = format!(
                "Gateway {} spec.servers[{}]",
                accepted.gateway_ref(),
                accepted.index
            );
            let kind = match (tls.mode, accepted.server.port.protocol) {
                (TlsMode::Passthrough, _) => TlsServerKind::Passthrough {
                    routes: self.sni_routes(accepted, port, &mut seen_sni),
                },
                (TlsMode::AutoPassthrough, _) => {
                    let hosts: Vec<HostPattern> = accepted
                        .server
                        .hosts
                        .iter()
                        .map(|h| HostPattern::from_server_host(h))
                        .collect();
                    let (clusters, warnings) = auto_passthrough::reachable(
                        self.model,
                        self.namespace,
                        &mut self.clusters,
                        &hosts,
                        &source,
                    );
                    self.warnings.extend(warnings);
                    TlsServerKind::AutoPassthrough { clusters }
                }
                (_, Protocol::Tls) => TlsServerKind::TerminateTcp {
                    route: self.tcp_route(std::slice::from_ref(accepted), port),
                    tls,
                },
                _ => TlsServerKind::TerminateHttp {
                    hosts: self.http_hosts(std::slice::from_ref(accepted), port),
                    tls,
                },
            };
            out.push(TlsServer {
                source,
                hosts: accepted
                    .server
                    .hosts
                    .iter()
                    .map(|h| HostPattern::from_server_host(h))
                    .collect(),
                kind,
            });
        }
        out
    }

    fn sni_routes(
        &mut self,
        accepted: &Accepted<'m>,
        port: u16,
        seen: &mut BTreeSet<HostPattern>,
    ) -> Vec<SniRoute> {
        let gateway = accepted.gateway_ref();
        let (services, names) = match self.by_gateway.get(gateway.as_str()) {
            Some(bound) => bound.sni_names(accepted),
            None => return Vec::new(),
        };
        let mut routes = Vec::new();
        for (at, vs) in services {
            for (index, rule) in vs.tls.iter().enumerate() {
                let source = format!(
                    "VirtualService {}/{} spec.tls[{index}]",
                    vs.namespace, vs.name
                );
                for (match_index, m) in rule.matches.iter().enumerate() {
                    if m.port.is_some_and(|p| p != port)
                        || !(m.gateways.is_empty() || m.gateways.contains(&gateway))
                    {
                        continue;
                    }
                    if !m.destination_subnets.is_empty() {
                        self.warnings
                            .push(subnets_not_applied(&source, &m.destination_subnets));
                    }
                    for sni_index in 0..m.sni_hosts.len() {
                        let Some(name) = names.get(&(at, index, match_index, sni_index)).cloned()
                        else {
                            continue;
                        };
                        if !seen.insert(name.clone()) {
                            self.warnings.push(format!("{source}: duplicate SNI host {name} on port {port}; the earlier route wins"));
                            continue;
                        }
                        let forward =
                            self.forward(&rule.route, &vs.namespace, &source, Layer::Connection);
                        routes.push(SniRoute {
                            sni: name,
                            source: source.clone(),
                            forward,
                        });
                    }
                }
            }
        }
        routes
    }
}

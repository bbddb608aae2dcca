//! TCP binding: the one VirtualService `tcp` rule an opaque TCP listener
//! (or a TLS server terminated to TCP) forwards by.
use super::{Accepted, Binder, Layer, subnets_not_applied};
use crate::{
    model::{Subnet, TcpMatch},
    plan::Forward,
};

impl<'m> Binder<'m> {
    /// The first VirtualService `tcp` rule that binds one of `servers` on `port`.
    pub(crate) fn tcp_route(
        &mut self,
        servers: &[Accepted<'m>],
        port: u16,
    ) -> Option<(Forward, String)> {
        for accepted in servers {
            let gateway = accepted.gateway_ref();
            for (vs, _) in self.bindings(&gateway, accepted) {
                for (index, rule) in vs.tcp.iter().enumerate() {
                    let matching: Vec<&TcpMatch> = rule
                        .matches
                        .iter()
                        .filter(|m| {
                            m.port.is_none_or(|p| p == port)
                                && (m.gateways.is_empty() || m.gateways.contains(&gateway))
                        })
                        .collect();
                    if rule.matches.is_empty() || !matching.is_empty() {
                        let source = format!(
                            "VirtualService {}/{} spec.tcp[{index}]",
                            vs.namespace, vs.name
                        );
                        let subnets: Vec<Subnet> = matching
                            .iter()
                            .flat_map(|m| m.destination_subnets.iter().copied())
                            .collect();
                        if !subnets.is_empty() {
                            self.warnings.push(subnets_not_applied(&source, &subnets));
                        }
                        let forward =
                            self.forward(&rule.route, &vs.namespace, &source, Layer::Connection);
                        return Some((forward, source));
                    }
                }
            }
        }
        None
    }
}

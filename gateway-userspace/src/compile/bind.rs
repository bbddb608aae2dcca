//! Binding VirtualServices to the servers that survived the merge, and
//! building what each listener does with a request or connection: the
//! binder here, what it builds per listener kind in `http.rs`, `tls.rs`
//! and `tcp.rs`, the per-Gateway host index in `index.rs`.
mod http;
mod index;
mod tcp;
mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};

use self::index::Bound;
use super::clusters::Clusters;
use crate::{
    model::{
        Delegates, Destination, Gateway, HostPattern, Instance, Model, Server, Subnet,
        TunnelSettings, VirtualService,
    },
    plan::{Backend, Cluster, ClusterId, Forward},
};

/// A server that survived the merge.
pub(super) struct Accepted<'m> {
    pub gateway: &'m Gateway,
    pub index: usize,
    pub server: &'m Server,
}

impl Accepted<'_> {
    /// `namespace/name` of the Gateway, as VirtualServices reference it.
    pub(super) fn gateway_ref(&self) -> String {
        format!("{}/{}", self.gateway.namespace, self.gateway.name)
    }
}

/// Where a forward's unresolvable share fails: an HTTP route can answer
/// 503, a TCP or TLS forward can only close the connection.
#[derive(Clone, Copy)]
enum Layer {
    Http,
    Connection,
    /// A route's mirror: an unresolved one copies nothing.
    Mirror,
}

/// Binds VirtualServices and resolves their destinations.
pub(super) struct Binder<'m> {
    /// Visible VirtualServices by the gateway (`namespace/name`) they name.
    by_gateway: HashMap<&'m str, Bound<'m>>,
    model: &'m Model,
    /// The gateway workload's namespace, which resources must be exported to.
    namespace: &'m str,
    clusters: Clusters<'m>,
    /// Every VirtualService by name, where root rules find their delegates.
    delegates: Delegates<'m>,
    warnings: Vec<String>,
    /// The gateway workload's labels, which a match's `sourceLabels` select.
    labels: &'m BTreeMap<String, String>,
}

impl<'m> Binder<'m> {
    pub(super) fn new(model: &'m Model, instance: &'m Instance) -> Self {
        let mut visible: Vec<&VirtualService> = model
            .virtual_services
            .iter()
            .filter(|vs| {
                vs.export_to
                    .visible_from(&vs.namespace, &instance.namespace)
            })
            .collect();
        visible.sort_by(|a, b| a.merge_order().cmp(&b.merge_order()));
        let mut by_gateway: HashMap<&str, Bound<'_>> = HashMap::new();
        for vs in visible {
            for gateway in &vs.gateways {
                let bound = by_gateway.entry(gateway.as_str()).or_default();
                // A VirtualService naming the same gateway twice binds once.
                if !bound
                    .services
                    .last()
                    .is_some_and(|last| std::ptr::eq(*last, vs))
                {
                    bound.services.push(vs);
                }
            }
        }
        Binder {
            by_gateway,
            model,
            namespace: &instance.namespace,
            labels: &instance.labels,
            clusters: Clusters::new(model, instance),
            delegates: Delegates::new(&model.virtual_services),
            warnings: Vec::new(),
        }
    }

    /// The clusters built and the warnings collected, each once in the
    /// order first found (a VirtualService bound through two Gateways that
    /// merge into one listener is bound twice).
    pub(super) fn finish(self) -> (Vec<Cluster>, Vec<ClusterId>, Vec<String>) {
        let mut seen = HashSet::new();
        let warnings = self
            .warnings
            .into_iter()
            .filter(|warning| seen.insert(warning.clone()))
            .collect();
        let (clusters, renumbered) = self.clusters.into_clusters();
        (clusters, renumbered, warnings)
    }

    /// The VirtualServices bound to `gateway` that bind to the server
    /// `accepted`, in Istio's order, each with its virtual host names.
    fn bindings(
        &self,
        gateway: &str,
        accepted: &Accepted<'_>,
    ) -> Vec<(&'m VirtualService, Vec<HostPattern>)> {
        self.by_gateway
            .get(gateway)
            .map(|bound| bound.bindings(accepted))
            .unwrap_or_default()
    }

    /// A rule's destinations as backends; an unresolvable one is warned
    /// about, saying what `layer` does with the share routed there.
    /// Whether a cluster balances by consistent hash.
    fn hashes(&self, id: ClusterId) -> bool {
        self.clusters.hashes(id)
    }

    fn forward(
        &mut self,
        destinations: &[Destination],
        namespace: &str,
        source: &str,
        layer: Layer,
    ) -> Forward {
        let tunnel = match layer {
            Layer::Connection => self.tunnel(destinations, namespace),
            Layer::Http => {
                self.warn_tunnel_on_http(destinations, namespace, source);
                None
            }
            Layer::Mirror => None,
        };
        let backends = destinations
            .iter()
            .map(|dest| {
                let target = self.clusters.resolve(dest, namespace);
                if let Err(reason) = &target {
                    let outcome = match layer {
                        Layer::Http => "requests routed there get 503",
                        Layer::Mirror => "nothing is copied there",
                        Layer::Connection => "connections routed there are closed",
                    };
                    self.warnings.push(format!("{source}: {reason}; {outcome}"));
                }
                let original = target
                    .as_ref()
                    .ok()
                    .copied()
                    .filter(|id| self.clusters.original_destination(*id));
                if let Some(id) = original {
                    let outcome = match layer {
                        Layer::Http => "requests get 503 UH",
                        Layer::Mirror => "nothing is copied",
                        Layer::Connection => "connections are closed",
                    };
                    self.warnings.push(format!(
                        "{source}: {} is PASSTHROUGH (Envoy's ORIGINAL_DST): only a connection captured from a workload (`--egress-from`) has an original destination; on the gateway's own addresses {outcome}, as Envoy answers when the listener restored no original destination",
                        self.clusters.name(id)
                    ));
                }
                Backend {
                    weight: dest.weight,
                    target,
                    headers: dest.headers.clone(),
                    tunnel: tunnel.clone(),
                }
            })
            .collect();
        Forward(backends)
    }

    /// The tunnel of a TCP or TLS route, as Istio's `tunnelingconfig.Apply`
    /// sets it on the route's `tcp_proxy`: for one destination, its
    /// subset's `tunnel` when it names a subset (the rule's top level is
    /// not consulted then), else the rule's; for weighted destinations,
    /// the top-level `tunnel` of the first destination's rule, for all of
    /// them (`buildOutboundNetworkFiltersWithWeightedClusters`).
    fn tunnel(&self, destinations: &[Destination], namespace: &str) -> Option<TunnelSettings> {
        let first = destinations.first()?;
        let rule = self.clusters.rule_of(first, namespace)?;
        match (destinations, &first.subset) {
            ([_], Some(subset)) => rule
                .subsets
                .iter()
                .find(|s| &s.name == subset)
                .and_then(|s| s.traffic_policy.as_ref())
                .and_then(|p| p.tunnel.clone()),
            _ => rule.traffic_policy.tunnel.clone(),
        }
    }

    /// Istio sets `tunnel` on TCP proxies only: an HTTP route's requests
    /// to a destination whose rule has one are sent without it (`finish`
    /// keeps each warning once).
    fn warn_tunnel_on_http(&mut self, destinations: &[Destination], namespace: &str, source: &str) {
        for dest in destinations {
            let Some(rule) = self.clusters.rule_of(dest, namespace) else {
                continue;
            };
            let subset_tunnel = dest.subset.as_ref().and_then(|name| {
                rule.subsets
                    .iter()
                    .find(|s| &s.name == name)
                    .and_then(|s| s.traffic_policy.as_ref())
                    .and_then(|p| p.tunnel.as_ref())
            });
            if subset_tunnel.is_some() || rule.traffic_policy.tunnel.is_some() {
                let warning = format!(
                    "{source}: DestinationRule {}/{} sets tunnel for {}, which Istio applies to TCP and TLS routes only: this HTTP route's requests are sent without it",
                    rule.namespace, rule.name, dest.host
                );
                self.warnings.push(warning);
            }
        }
    }
}

/// The warning for a bound rule whose match names destination subnets:
/// Istio's gateway listeners match tls and tcp rules by SNI, port and
/// gateway only (`gateway.go::l4SingleMatch`), so the subnets change nothing.
fn subnets_not_applied(source: &str, subnets: &[Subnet]) -> String {
    let list: Vec<String> = subnets.iter().map(ToString::to_string).collect();
    format!(
        "{source}: destinationSubnets {} not applied: as in Istio, a gateway matches tls and tcp rules by SNI, port and gateway only, so the rule takes connections to any address",
        list.join(", ")
    )
}

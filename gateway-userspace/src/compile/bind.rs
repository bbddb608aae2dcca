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
        VirtualService,
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
                }
            })
            .collect();
        Forward(backends)
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

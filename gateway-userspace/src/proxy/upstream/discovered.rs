//! A Kubernetes Service's endpoints as its EndpointSlices say now: the
//! cluster follows [`Discovery`]'s channel and rebuilds its list only when
//! the Service's endpoints changed, keeping the pool of every address that
//! stays.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

use super::UpstreamEndpoint;
use crate::{
    discovery::{Discovery, EndpointList},
    model::DiscoveredEndpoint,
    plan::{DiscoveredEndpoints, LocalityPlan, Placed, with_topology},
};

#[derive(Debug)]
pub(in crate::proxy) struct Discovered {
    port_name: String,
    labels: BTreeMap<String, String>,
    /// Where each endpoint stands by locality, placed on every change.
    locality: LocalityPlan,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    changes: watch::Receiver<EndpointList>,
    endpoints: Vec<Arc<UpstreamEndpoint>>,
}

impl Discovered {
    pub(super) fn new(
        selection: &DiscoveredEndpoints,
        discovery: &Discovery,
        locality: &LocalityPlan,
    ) -> Self {
        let mut changes = discovery.subscribe(&selection.service);
        let list = changes.borrow_and_update().clone();
        let found = select(&list, &selection.port_name, &selection.labels, &[]);
        let endpoints = place(found, locality);
        Self {
            port_name: selection.port_name.clone(),
            labels: selection.labels.clone(),
            locality: locality.clone(),
            current: Mutex::new(Current { changes, endpoints }),
        }
    }

    /// Calls `f` with the endpoints to send to now, taking in the
    /// Service's latest list first if it changed.
    pub(super) fn with_current<R>(&self, f: impl FnOnce(&[Arc<UpstreamEndpoint>]) -> R) -> R {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // A closed channel (the Service is no longer routed to) keeps its last list.
        if current.changes.has_changed().unwrap_or(false) {
            let list = current.changes.borrow_and_update().clone();
            let found = select(&list, &self.port_name, &self.labels, &current.endpoints);
            current.endpoints = place(found, &self.locality);
        }
        f(&current.endpoints)
    }
}

/// Places each endpoint by its locality and labels; those `distribute`
/// leaves out are dropped.
fn place(
    found: Vec<(Arc<UpstreamEndpoint>, &DiscoveredEndpoint)>,
    plan: &LocalityPlan,
) -> Vec<Arc<UpstreamEndpoint>> {
    if *plan == LocalityPlan::Flat {
        return found.into_iter().map(|(ep, _)| ep).collect();
    }
    let labels: Vec<BTreeMap<String, String>> = found
        .iter()
        .map(|(_, d)| with_topology(&d.labels, &d.locality))
        .collect();
    let placed: Vec<Placed<'_>> = found
        .iter()
        .zip(&labels)
        .map(|((ep, d), labels)| Placed {
            locality: &d.locality,
            labels,
            weight: ep.weight,
        })
        .collect();
    let placements = plan.place(&placed);
    found
        .iter()
        .zip(placements)
        .filter_map(|((ep, d), placement)| {
            ep.place.set(placement?, &d.locality);
            Some(Arc::clone(ep))
        })
        .collect()
}

/// The endpoints a cluster sends to: those carrying every subset label
/// and a port under `port_name`, the ready ones, or when none is ready
/// those still serving while they terminate (Envoy under Istio sends to
/// draining endpoints only when no healthy one is left). An address in
/// `known` keeps its endpoint and pool.
fn select<'a>(
    list: &'a [DiscoveredEndpoint],
    port_name: &str,
    labels: &BTreeMap<String, String>,
    known: &[Arc<UpstreamEndpoint>],
) -> Vec<(Arc<UpstreamEndpoint>, &'a DiscoveredEndpoint)> {
    let usable: Vec<(SocketAddr, &DiscoveredEndpoint)> = list
        .iter()
        .filter(|ep| labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)))
        .filter_map(|ep| {
            let port = *ep.ports.get(port_name)?;
            Some((SocketAddr::new(ep.address, port), ep))
        })
        .collect();
    let best = usable.iter().map(|(_, ep)| ep.state).min();
    let mut chosen: Vec<(SocketAddr, &DiscoveredEndpoint)> = usable
        .into_iter()
        .filter(|(_, ep)| Some(ep.state) == best)
        .collect();
    chosen.sort_by_key(|(addr, _)| *addr);
    chosen.dedup_by_key(|(addr, _)| *addr);
    chosen
        .into_iter()
        .map(|(addr, ep)| {
            let endpoint = known
                .iter()
                .find(|known| known.addr == addr)
                .cloned()
                .unwrap_or_else(|| UpstreamEndpoint::new(addr, 1));
            (endpoint, ep)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::EndpointState;
    use crate::model::ServiceKey;

    fn endpoint(address: &str, state: EndpointState, version: &str) -> DiscoveredEndpoint {
        DiscoveredEndpoint {
            address: address.parse::<IpAddr>().expect("an address"),
            ports: BTreeMap::from([("http".to_string(), 8080), ("admin".to_string(), 9901)]),
            state,
            labels: BTreeMap::from([("version".to_string(), version.to_string())]),
            locality: Default::default(),
        }
    }

    fn urls(endpoints: &[Arc<UpstreamEndpoint>]) -> Vec<String> {
        endpoints.iter().map(|ep| ep.addr.to_string()).collect()
    }

    fn addrs<T>(endpoints: &[(Arc<UpstreamEndpoint>, T)]) -> Vec<String> {
        endpoints
            .iter()
            .map(|(ep, _)| ep.addr.to_string())
            .collect()
    }

    fn selection(port_name: &str, labels: &[(&str, &str)]) -> DiscoveredEndpoints {
        DiscoveredEndpoints {
            service: ServiceKey {
                namespace: "apps".into(),
                name: "web".into(),
            },
            port_name: port_name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn ready_endpoints_at_the_named_port_of_the_subset() {
        let list = [
            endpoint("192.0.2.2", EndpointState::Ready, "v1"),
            endpoint("192.0.2.1", EndpointState::Ready, "v1"),
            endpoint("192.0.2.3", EndpointState::Ready, "v2"),
            endpoint("192.0.2.4", EndpointState::ServingTerminating, "v1"),
        ];
        let none = BTreeMap::new();
        let v1 = selection("http", &[("version", "v1")]).labels;
        assert_eq!(
            addrs(&select(&list, "http", &none, &[])),
            ["192.0.2.1:8080", "192.0.2.2:8080", "192.0.2.3:8080"]
        );
        assert_eq!(
            addrs(&select(&list, "admin", &v1, &[])),
            ["192.0.2.1:9901", "192.0.2.2:9901"]
        );
        assert!(select(&list, "grpc", &none, &[]).is_empty());
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let list = [
            endpoint("192.0.2.1", EndpointState::ServingTerminating, "v1"),
            endpoint("192.0.2.2", EndpointState::ServingTerminating, "v1"),
            endpoint("192.0.2.3", EndpointState::Ready, "v2"),
        ];
        let v1 = selection("http", &[("version", "v1")]).labels;
        assert_eq!(
            addrs(&select(&list, "http", &v1, &[])),
            ["192.0.2.1:8080", "192.0.2.2:8080"]
        );
        assert_eq!(
            addrs(&select(&list, "http", &BTreeMap::new(), &[])),
            ["192.0.2.3:8080"]
        );
    }

    #[test]
    fn a_cluster_follows_the_services_endpoints_and_keeps_the_pool_of_an_address_that_stays() {
        let discovery = Discovery::default();
        let web = selection("http", &[]);
        discovery.publish(
            &web.service,
            vec![endpoint("192.0.2.1", EndpointState::Ready, "v1")],
        );
        let cluster = Discovered::new(&web, &discovery, &LocalityPlan::Flat);
        let first = cluster.with_current(|eps| eps.to_vec());
        assert_eq!(urls(&first), ["192.0.2.1:8080"]);
        discovery.publish(
            &web.service,
            vec![
                endpoint("192.0.2.1", EndpointState::Ready, "v1"),
                endpoint("192.0.2.5", EndpointState::Ready, "v1"),
            ],
        );
        let second = cluster.with_current(|eps| eps.to_vec());
        assert_eq!(urls(&second), ["192.0.2.1:8080", "192.0.2.5:8080"]);
        assert!(Arc::ptr_eq(&first[0], &second[0]));
        discovery.publish(&web.service, Vec::new());
        assert!(cluster.with_current(<[_]>::is_empty));
    }
}

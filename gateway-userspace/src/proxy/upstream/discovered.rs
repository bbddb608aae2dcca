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
    plan::{DiscoveredEndpoints, Locality, LocalityPlan, Placed, with_topology},
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
    let localities: Vec<Locality> = found
        .iter()
        .map(|(_, d)| plan.zone_in_gateway_region(&d.locality))
        .collect();
    let labels: Vec<BTreeMap<String, String>> = found
        .iter()
        .zip(&localities)
        .map(|((_, d), locality)| with_topology(&d.labels, locality))
        .collect();
    let placed: Vec<Placed<'_>> = found
        .iter()
        .zip(localities.iter().zip(&labels))
        .map(|((ep, _), (locality, labels))| Placed {
            locality,
            labels,
            weight: ep.weight,
        })
        .collect();
    let placements = plan.place(&placed);
    found
        .iter()
        .zip(placements.into_iter().zip(&localities))
        .filter_map(|((ep, _), (placement, locality))| {
            ep.place.set(placement?, locality);
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

    #[test]
    fn discovered_endpoints_are_placed_by_zone_in_the_gateways_region_as_they_change() {
        let discovery = Discovery::default();
        let web = selection("http", &[]);
        let zoned = |address: &str, zone: &str| DiscoveredEndpoint {
            locality: Locality {
                zone: zone.into(),
                ..Locality::default()
            },
            ..endpoint(address, EndpointState::Ready, "v1")
        };
        let gateway = crate::model::Instance {
            locality: Locality::parse("us/1a"),
            ..crate::model::Instance::default()
        };
        let policy = crate::model::TrafficPolicy {
            outlier_detection: Some(Default::default()),
            ..Default::default()
        };
        let plan = LocalityPlan::of(&policy, &gateway);
        discovery.publish(&web.service, vec![zoned("192.0.2.1", "1b")]);
        let cluster = Discovered::new(&web, &discovery, &plan);
        let priorities = || {
            cluster.with_current(|eps| {
                eps.iter()
                    .map(|ep| (ep.addr.ip().to_string(), ep.place.priority()))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(priorities(), [("192.0.2.1".to_string(), 0)]);
        // A Pod in the gateway's zone arrives: it comes first, the other
        // zone of the region (not another region) second.
        discovery.publish(
            &web.service,
            vec![zoned("192.0.2.1", "1b"), zoned("192.0.2.2", "1a")],
        );
        assert_eq!(
            priorities(),
            [("192.0.2.1".to_string(), 1), ("192.0.2.2".to_string(), 0)]
        );
        assert_eq!(
            plan.zone_in_gateway_region(&Locality {
                zone: "1b".into(),
                ..Locality::default()
            }),
            Locality::parse("us/1b")
        );
    }
}

//! The endpoints of Kubernetes Services as last discovered: written by the
//! watches of their EndpointSlices (`kubernetes`), read by the proxy's
//! clusters on each request. An endpoint change reaches the proxy here,
//! with no reload; a request already sent keeps its connection.
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

use crate::model::{DiscoveredEndpoint, ServiceKey};

/// One Service's endpoints, shared without a copy.
pub type EndpointList = Arc<[DiscoveredEndpoint]>;

/// Every Service's endpoints, each behind a channel its clusters hold.
#[derive(Debug, Default)]
pub struct Discovery {
    services: Mutex<HashMap<ServiceKey, watch::Sender<EndpointList>>>,
}

impl Discovery {
    /// Replaces the endpoints of `service`; its clusters see them on their
    /// next request. Unchanged lists wake nobody.
    pub fn publish(&self, service: &ServiceKey, endpoints: Vec<DiscoveredEndpoint>) {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = services
            .entry(service.clone())
            .or_insert_with(|| watch::channel(EndpointList::from([])).0);
        sender.send_if_modified(|current| {
            if current[..] == endpoints[..] {
                return false;
            }
            *current = endpoints.into();
            true
        });
    }

    /// The endpoints of `service`, now and as they change (none until its
    /// slices are listed).
    pub fn subscribe(&self, service: &ServiceKey) -> watch::Receiver<EndpointList> {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services
            .entry(service.clone())
            .or_insert_with(|| watch::channel(EndpointList::from([])).0)
            .subscribe()
    }

    /// Forgets the Services not in `keep` (no route names them any more);
    /// a cluster still holding one keeps its last list.
    pub fn retain(&self, keep: &BTreeSet<ServiceKey>) {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services.retain(|key, _| keep.contains(key));
    }
}

#[cfg(test)]
impl Discovery {
    /// The Services with endpoints known.
    fn services(&self) -> Vec<ServiceKey> {
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<ServiceKey> = services.keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::IpAddr};

    use super::*;
    use crate::model::EndpointState;

    fn key(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: "apps".into(),
            name: name.into(),
        }
    }

    fn endpoint(address: &str) -> DiscoveredEndpoint {
        DiscoveredEndpoint {
            address: address.parse::<IpAddr>().expect("an address"),
            ports: BTreeMap::from([("http".to_string(), 8080)]),
            state: EndpointState::Ready,
            labels: BTreeMap::new(),
            locality: Default::default(),
        }
    }

    #[test]
    fn a_subscriber_sees_each_new_list_and_is_not_woken_by_the_same_one() {
        let discovery = Discovery::default();
        let mut web = discovery.subscribe(&key("web"));
        assert!(web.borrow_and_update().is_empty());
        discovery.publish(&key("web"), vec![endpoint("192.0.2.1")]);
        assert!(web.has_changed().expect("open"));
        assert_eq!(web.borrow_and_update()[..], [endpoint("192.0.2.1")]);
        discovery.publish(&key("web"), vec![endpoint("192.0.2.1")]);
        assert!(!web.has_changed().expect("open"));
        discovery.publish(&key("other"), vec![endpoint("192.0.2.9")]);
        assert!(!web.has_changed().expect("open"));
    }

    #[test]
    fn published_before_anyone_subscribes_is_what_a_subscriber_sees_first() {
        let discovery = Discovery::default();
        discovery.publish(&key("web"), vec![endpoint("192.0.2.1")]);
        let web = discovery.subscribe(&key("web"));
        assert_eq!(web.borrow()[..], [endpoint("192.0.2.1")]);
    }

    #[test]
    fn a_forgotten_service_closes_its_channel_and_its_subscribers_keep_the_last_list() {
        let discovery = Discovery::default();
        discovery.publish(&key("web"), vec![endpoint("192.0.2.1")]);
        discovery.publish(&key("api"), vec![endpoint("192.0.2.2")]);
        let web = discovery.subscribe(&key("web"));
        discovery.retain(&BTreeSet::from([key("api")]));
        assert_eq!(discovery.services(), [key("api")]);
        assert!(web.has_changed().is_err());
        assert_eq!(web.borrow()[..], [endpoint("192.0.2.1")]);
    }
}

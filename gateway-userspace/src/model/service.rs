//! Kubernetes Services as route backends (Kubernetes mode): what a
//! Service declares, which routes resolve against like a ServiceEntry, and
//! what its EndpointSlices say, which the proxy reads as they change.
use std::{collections::BTreeMap, net::IpAddr};

/// The DNS domain of a cluster when `--cluster-domain` names none.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// The cluster's Services that routes name, and the domain short names
/// are qualified with. Empty outside Kubernetes mode.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesView {
    /// Whether the configuration came from a cluster (`--kubernetes`):
    /// only then is a missing Service worth naming.
    pub read: bool,
    /// `--cluster-domain`: `name.namespace.svc.<domain>`.
    pub domain: String,
    pub services: Vec<KubeService>,
    /// Services that may front the gateway workload itself: a server's
    /// port found on one of them is that Service's port, and the proxy
    /// listens on its `targetPort` (Istio's gateway port translation).
    /// Those selecting the instance are used, or only `gateway_service`.
    pub workload_services: Vec<KubeService>,
    /// `--service`: the gateway's own Service, named.
    pub gateway_service: Option<ServiceKey>,
}

impl Default for KubernetesView {
    fn default() -> Self {
        Self {
            read: false,
            domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            services: Vec::new(),
            workload_services: Vec::new(),
            gateway_service: None,
        }
    }
}

impl KubernetesView {
    /// The Service `host` names: `name.namespace.svc.<domain>`, or
    /// `name.namespace` (a form Kubernetes DNS answers through the search
    /// path and the issue asks for; Istio itself would not expand it).
    pub fn service_key(&self, host: &str) -> Option<ServiceKey> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let mut labels = host.splitn(3, '.');
        let name = labels.next()?;
        let namespace = labels.next()?;
        let rest = labels.next();
        let in_domain = rest.is_none_or(|rest| {
            rest.strip_prefix("svc.")
                .is_some_and(|domain| domain.eq_ignore_ascii_case(&self.domain))
        });
        (in_domain && !name.is_empty() && !namespace.is_empty() && name != "*").then(|| {
            ServiceKey {
                namespace: namespace.to_ascii_lowercase(),
                name: name.to_ascii_lowercase(),
            }
        })
    }

    /// The Service read under `key`.
    pub fn service(&self, key: &ServiceKey) -> Option<&KubeService> {
        self.services.iter().find(|s| &s.key == key)
    }
}

/// A Service by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a Service declares that routing needs.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeService {
    pub key: ServiceKey,
    pub ports: Vec<KubeServicePort>,
    /// `spec.type: ExternalName`: a DNS alias, `spec.externalName`.
    pub external_name: Option<String>,
    /// `spec.selector`: the Pods it fronts.
    pub selector: BTreeMap<String, String>,
    /// False when labelled `experimental.istio.io/disable-gateway-port-translation`.
    pub port_translation: bool,
}

/// The label with which a Service opts out of gateway port translation.
pub const NO_PORT_TRANSLATION_LABEL: &str =
    "experimental.istio.io/disable-gateway-port-translation";

impl KubeService {
    /// Whether it fronts a workload with `labels` in `namespace`: a
    /// non-empty selector all of whose labels the workload has.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.key.namespace == namespace
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A Service port's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A container port's name, resolved only by the Pod's spec.
    Name(String),
}

/// One `spec.ports[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeServicePort {
    /// `name`; empty for a Service's only, unnamed port. EndpointSlices
    /// name their ports after it.
    pub name: String,
    pub port: u16,
    /// `protocol` (TCP, UDP, SCTP).
    pub transport: String,
    /// `appProtocol`, which Istio reads before the name's prefix.
    pub app_protocol: Option<String>,
    /// `targetPort`; unset means the port itself.
    pub target_port: Option<TargetPort>,
}

/// One address of a Service, as its EndpointSlices (or Endpoints) say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredEndpoint {
    pub address: IpAddr,
    /// The slice's ports: the Service port's name to the target port.
    pub ports: BTreeMap<String, u16>,
    pub state: EndpointState,
    /// The labels of the Pod the endpoint's `targetRef` names, for
    /// DestinationRule subsets; empty when unknown.
    pub labels: BTreeMap<String, String>,
    /// Where it runs: the slice's `zone`, or the Pod's `istio-locality`.
    pub locality: super::Locality,
}

/// Which endpoints take requests: the ready ones, or, when none is ready,
/// those still serving while they terminate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointState {
    Ready,
    ServingTerminating,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> Option<ServiceKey> {
        Some(ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    #[test]
    fn a_service_is_named_by_its_cluster_name_or_name_dot_namespace() {
        let view = KubernetesView {
            read: true,
            domain: "corp.example".into(),
            ..KubernetesView::default()
        };
        assert_eq!(
            view.service_key("reviews.prod.svc.corp.example"),
            key("prod", "reviews")
        );
        assert_eq!(
            view.service_key("Reviews.Prod.svc.corp.example."),
            key("prod", "reviews")
        );
        assert_eq!(view.service_key("reviews.prod"), key("prod", "reviews"));
        assert_eq!(view.service_key("reviews.prod.svc.cluster.local"), None);
        assert_eq!(view.service_key("api.example.com"), None);
        assert_eq!(view.service_key("reviews"), None);
        assert_eq!(view.service_key("*.prod.svc.corp.example"), None);
        assert_eq!(view.service_key(".prod"), None);
    }
}

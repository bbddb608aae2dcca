//! Clusters: the backends routes send to, with their endpoints and policy.
use std::collections::BTreeMap;

use super::{LocalityPlan, Placement};
use crate::model::{EndpointAddress, Locality, Protocol, ServiceKey, TrafficPolicy};

/// How long a resolved DNS answer of a `resolution: DNS` host is used
/// before it is resolved again, by the proxy's clusters and the egress
/// guard's allow-list alike. The system resolver gives no TTL, so this is
/// Envoy's `dns_refresh_rate` default.
pub const DNS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A cluster's index in [`super::Plan::clusters`]: what a route's backend
/// names, so the proxy finds its cluster without a lookup by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u32);

impl ClusterId {
    /// The index into the plan's clusters.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A backend service at one port (and subset), with its endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// Istio's name: `outbound|<port>|<subset>|<host>`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    /// The ServiceEntry port's protocol (`HTTP`, `HTTP2`, `GRPC`, `TCP`, ...);
    /// `None` when it names none this gateway knows.
    pub protocol: Option<Protocol>,
    /// The endpoints known when the plan was compiled: a ServiceEntry's.
    /// Empty for a Kubernetes Service's cluster, whose endpoints are
    /// [`Cluster::discovered`].
    pub endpoints: Vec<Endpoint>,
    /// A Kubernetes Service's endpoints, read by the proxy as its
    /// EndpointSlices change (no reload).
    pub discovered: Option<DiscoveredEndpoints>,
    /// The DestinationRule policy, with the subset's policy in its place if it has one.
    pub policy: TrafficPolicy,
    /// How endpoints are ordered by locality: [`Cluster::endpoints`] are
    /// placed already; discovered ones are placed as they change.
    pub locality: LocalityPlan,
    /// Set when the effective `loadBalancer.simple` is PASSTHROUGH (Istio
    /// makes it Envoy's ORIGINAL_DST cluster): no endpoints, each
    /// connection goes to its own original destination.
    pub original_destination: Option<OriginalDestination>,
}

/// An original-destination cluster's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDestination {
    /// The port connected to in place of the original one: the
    /// ServiceEntry port's `targetPort` when its resolution is NONE
    /// (Istio's `PassthroughTargetPorts`, Envoy's `upstream_port_override`).
    pub port_override: Option<u16>,
}

/// One address a cluster connects to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub address: EndpointAddress,
    pub port: u16,
    pub weight: u32,
    pub locality: Locality,
    /// Its priority and locality weight ([`LocalityPlan::place`]).
    pub placement: Placement,
}

impl Endpoint {
    /// An endpoint with no locality, at priority 0.
    pub fn new(address: EndpointAddress, port: u16, weight: u32) -> Self {
        Self {
            address,
            port,
            weight,
            locality: Locality::default(),
            placement: Placement::default(),
        }
    }
}

/// Which of a Kubernetes Service's discovered endpoints a cluster sends
/// to, and at which port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredEndpoints {
    pub service: ServiceKey,
    /// The Service port's name: each endpoint's port is the one its
    /// EndpointSlice gives under this name (the resolved `targetPort`).
    pub port_name: String,
    /// The subset's labels, matched against each endpoint's Pod labels.
    pub labels: BTreeMap<String, String>,
}

/// Why a destination resolves to no cluster. The route keeps it: requests
/// routed there get 503 (HTTP), connections are closed (TCP, TLS).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("no ServiceEntry declares host {host}")]
    NoServiceEntry { host: String },
    #[error("destination port required: {host} has {ports} ports")]
    PortRequired { host: String, ports: usize },
    #[error("ServiceEntry {entry} has no port {port}")]
    NoSuchPort { entry: String, port: u16 },
    #[error("ServiceEntry {entry} declares no ports")]
    NoPorts { entry: String },
    #[error(
        "ServiceEntry {entry} has resolution DYNAMIC_DNS, which this gateway does not serve yet"
    )]
    DynamicDns { entry: String },
    #[error("subset {subset} needs a DestinationRule for {host}")]
    SubsetWithoutRule { subset: String, host: String },
    #[error("subset {subset} is not defined in DestinationRule {rule}")]
    UnknownSubset { subset: String, rule: String },
    #[error(
        "ServiceEntry {entry} has resolution NONE: at a gateway Istio builds its cluster from endpoints (EDS) and it has none; loadBalancer.simple PASSTHROUGH in a DestinationRule sends to the original destination"
    )]
    ResolutionNone { entry: String },
    #[error("subset {subset} of {host} selects no endpoints")]
    SubsetWithoutEndpoints { subset: String, host: String },
    #[error("no Kubernetes Service or ServiceEntry declares host {host}")]
    NoService { host: String },
    #[error("Service {service} has no port {port}")]
    NoSuchServicePort { service: String, port: u16 },
    #[error("Service {service} declares no ports")]
    NoServicePorts { service: String },
    #[error("TLS to {host} cannot be set up: {reason}")]
    OriginationUnavailable { host: String, reason: String },
    #[error("{host} has no endpoints")]
    NoEndpoints { host: String },
}

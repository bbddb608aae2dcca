//! Clusters: the backends routes send to, with their endpoints and policy.
use crate::model::{EndpointAddress, Protocol, TrafficPolicy};

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
    pub endpoints: Vec<Endpoint>,
    /// The DestinationRule policy, with the subset's policy in its place if it has one.
    pub policy: TrafficPolicy,
}

/// One address a cluster connects to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub address: EndpointAddress,
    pub port: u16,
    pub weight: u32,
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
        "ServiceEntry {entry} has resolution NONE: a gateway has no original destination to forward to"
    )]
    ResolutionNone { entry: String },
    #[error("subset {subset} of {host} selects no endpoints")]
    SubsetWithoutEndpoints { subset: String, host: String },
    #[error("{host} has no endpoints")]
    NoEndpoints { host: String },
}

//! The plan: the typed output of [`crate::compile`], everything the proxy
//! and the dataplane read. Proxy and dataplane import this module (and
//! `gateway-common`), never `config` or `compile`; the kernel's map keys
//! and values are in [`kernel`], the only place besides the dataplane that
//! knows the kernel's ABI.
pub mod authz;
mod cluster;
mod hosts;
mod jwt;
pub mod kernel;
mod locality;
mod policy_table;
mod retry;
mod route;

use std::{collections::BTreeMap, net::IpAddr};

pub use gateway_common::ListenerKind;

pub use self::{
    cluster::{
        Cluster, ClusterId, DNS_REFRESH, DiscoveredEndpoints, Endpoint, OriginalDestination,
        Unresolved,
    },
    hosts::{HostTable, VirtualHost},
    jwt::{
        ClaimToHeader, Jwk, JwkKey, Jwks, JwksSource, JwtProvider, TokenLocation, Verified,
        default_locations,
    },
    kernel::{IpPolicy, KernelHost, PortPolicy, addr_key, ports_of},
    locality::{FailoverPlan, LocalityPlan, Placed, Placement, with_topology},
    policy_table::{PolicyTables, PortTable},
    retry::{DEFAULT_BACKOFF_BASE, RetryOn, RetryPolicy},
    route::{Backend, Forward, Mirror, Route, RouteAction, SniRoute, TlsServer, TlsServerKind},
};
/// A route's fault injection and CORS policy, as the model holds them.
pub use crate::model::{AbortStatus, CorsPolicy, FaultAbort, FaultDelay, HttpFault, PerMillion};
/// The model's typed values a plan names, for its readers (who never
/// import the model themselves).
pub use crate::model::{
    ClientTls, ClientTlsMode, ConnectionPool, ConsistentHash, DestinationHeaders, EndpointAddress,
    H2UpgradePolicy, HashKey, HashTable, HeaderOperations, HostPattern, HttpMatch, HttpRedirect,
    LoadBalancer, Locality, OutlierDetection, Protocol, ProxyProtocolVersion, ServerTls, SimpleLb,
    StringMatch, Subnet, TcpKeepalive, TlsMode, TlsVersion, TrafficPolicy, TunnelProtocol,
    TunnelSettings, Warmup, authority_host, best_match,
};

/// What to program into the kernel and the proxy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// One per (bind, port, L4 protocol), sorted; `id` is the index.
    pub listeners: Vec<Listener>,
    /// The gateway's own addresses, sorted and de-duplicated.
    pub local_addrs: Vec<IpAddr>,
    /// Plaintext HTTP listeners the proxy serves, sorted by (bind, port).
    pub http: Vec<HttpListener>,
    /// TLS listeners: per server, its SNI hosts and what happens after the handshake.
    pub tls: Vec<TlsListener>,
    /// Opaque TCP listeners and where they forward.
    pub tcp: Vec<TcpListener>,
    /// Every backend a route refers to, sorted by name; a [`ClusterId`] is
    /// an index here.
    pub clusters: Vec<Cluster>,
    /// Servers left out, each with the reason; never silent.
    pub dropped: Vec<DroppedServer>,
    /// Problems found while binding routes (unresolvable destinations,
    /// duplicate SNI hosts, ...): served, but not as written.
    pub warnings: Vec<String>,
    /// Kernel host ids kept from the plan this one replaces, by (listener
    /// id, pattern) ([`Plan::keep_ids_from`]); empty for a first plan.
    pub host_ids: BTreeMap<(u32, HostPattern), u32>,
    /// JWT providers (RequestAuthentication), in Istio's order; empty: no
    /// JWT phase.
    pub jwt: Vec<JwtProvider>,
    /// The AuthorizationPolicies that apply to this gateway.
    pub authorization: authz::Authorization,
    /// The AuthorizationPolicy source-block rules the kernel enforces on
    /// listeners' connection attempts (`compile/ip_policy.rs`).
    pub ip_policy: IpPolicy,
}

impl Plan {
    /// The cluster a backend names.
    pub fn cluster(&self, id: ClusterId) -> Option<&Cluster> {
        self.clusters.get(id.index())
    }
}

/// A TLS port: one entry per server that shares it, matched by SNI.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsListener {
    pub listener_id: u32,
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub servers: Vec<TlsServer>,
    /// Plaintext HTTP servers sharing the port: connections that do not
    /// start with a TLS record are served by these virtual hosts.
    pub plaintext: Option<HostTable>,
}

/// An opaque TCP port.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpListener {
    pub listener_id: u32,
    pub bind: Option<IpAddr>,
    pub port: u16,
    /// Where connections go; from the first VirtualService `tcp` rule that binds.
    pub route: Forward,
    /// `VirtualService ns/name spec.tcp[i]` the route came from.
    pub source: String,
}

/// A destination the kernel passes to the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub id: u32,
    /// `None` = every gateway address.
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub ip_protocol: u8,
    pub kind: ListenerKind,
    /// The kernel resets connections whose first data segment names a
    /// host no server here accepts (`--reset-unknown-hosts`).
    pub reset_unknown_hosts: bool,
    /// The port has AuthorizationPolicy DENY entries in the kernel.
    pub policy_deny: bool,
    /// The port is allow-listed: the kernel drops SYNs from outside its
    /// ALLOW rules' source blocks.
    pub policy_allow_list: bool,
}

/// A plaintext HTTP port and the virtual hosts it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpListener {
    pub listener_id: u32,
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub hosts: HostTable,
}

/// A server that is not served, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// Index in `spec.servers`.
    pub server: usize,
    pub reason: String,
}

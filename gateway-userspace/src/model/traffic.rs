//! Routing resources: `VirtualService`, `DestinationRule`, `ServiceEntry`.
use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use super::Subnet;

/// Who may see a resource (`exportTo`); empty means everyone (`*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportTo(pub Vec<String>);

impl ExportTo {
    /// Whether a resource in `own_namespace` is visible from `namespace`.
    pub fn visible_from(&self, own_namespace: &str, namespace: &str) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|to| to == "*" || to == namespace || (to == "." && own_namespace == namespace))
    }
}

/// An Istio `VirtualService`, as far as a gateway needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualService {
    pub namespace: String,
    pub name: String,
    pub creation_timestamp: Option<String>,
    pub hosts: Vec<String>,
    /// Gateways as `namespace/name`, or `mesh`.
    pub gateways: Vec<String>,
    pub export_to: ExportTo,
    pub http: Vec<HttpRoute>,
    pub tls: Vec<TlsRoute>,
    pub tcp: Vec<TcpRoute>,
}

impl VirtualService {
    /// Istio's order for routes of the same host across VirtualServices.
    pub fn merge_order(&self) -> (&str, &str, &str) {
        (
            self.creation_timestamp.as_deref().unwrap_or(""),
            &self.name,
            &self.namespace,
        )
    }
}

/// How a string is matched.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    /// RE2 syntax, validated at load.
    Regex(String),
}

/// One `http[].match[]` entry; all present fields must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpMatch {
    pub uri: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    /// Header name (lower-case) -> match; `None` = presence only.
    pub headers: BTreeMap<String, Option<StringMatch>>,
    pub without_headers: BTreeMap<String, Option<StringMatch>>,
    pub query_params: BTreeMap<String, Option<StringMatch>>,
    pub ignore_uri_case: bool,
    pub port: Option<u16>,
    pub gateways: Vec<String>,
    /// `sourceLabels` and `sourceNamespace`: not matched by this gateway,
    /// but kept because Istio's delegate merge drops a delegate rule whose
    /// match conflicts with the root's on them (`virtualservice.go::hasConflict`).
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
}

impl HttpMatch {
    /// A match that accepts every request (`prefix: /`, regex `.*`, or nothing).
    pub fn is_catch_all(&self) -> bool {
        let uri_all = match &self.uri {
            None => true,
            Some(StringMatch::Prefix(p)) => p == "/",
            Some(StringMatch::Regex(r)) => r == ".*" || r == "/.*",
            Some(StringMatch::Exact(_)) => false,
        };
        uri_all
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
    }
}

/// Where a route sends traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    /// Relative weight; a single destination gets all traffic.
    pub weight: u32,
    /// `route[].headers`: this destination's header operations, after the
    /// rule's.
    pub headers: DestinationHeaders,
}

/// A destination's `headers.request` and `headers.response`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationHeaders {
    pub request: HeaderOperations,
    pub response: HeaderOperations,
}

/// `http[].redirect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRedirect {
    /// The whole path replaced (never together with `prefix_rewrite`).
    pub uri: Option<String>,
    /// `prefixRewrite`: the part of the path the rule's `uri` match
    /// matched (a prefix, or `/` without one) replaced, as Envoy's
    /// `RedirectAction.prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    /// `derivePort: FROM_REQUEST_PORT`: the port of the server the request
    /// came to (the compiler makes it `port`, as Istio does).
    pub derive_port_from_request: bool,
    pub scheme: Option<String>,
    /// 301 unless set (301, 302, 303, 307, 308).
    pub code: u16,
}

/// What an HTTP route does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpAction {
    Route(Vec<Destination>),
    Redirect(HttpRedirect),
    DirectResponse {
        status: u16,
        body: Option<String>,
    },
    /// `delegate`: the rule's matches are served by the rules of another
    /// VirtualService, merged with this rule at compile time
    /// (`compile/delegate.rs`). `direct_response` is the root rule's own,
    /// which Istio lets it set and gives to every delegate rule that sets
    /// none (and a direct response wins over a route).
    Delegate {
        to: DelegateRef,
        direct_response: Option<(u16, Option<String>)>,
    },
}

/// `http[].delegate`: which VirtualService serves a root rule's matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelegateRef {
    pub name: String,
    /// The root VirtualService's namespace when not written, as in Istio.
    pub namespace: String,
}

impl std::fmt::Display for DelegateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a root rule's `delegate` names no usable delegate: Istio then
/// drops the rule, and its matches are answered as if it were not there
/// (`virtualservice_controller.go::mergeVirtualServices`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DelegateMissing {
    /// No VirtualService of that namespace and name.
    #[error("delegate VirtualService {to} not found")]
    NotFound { to: DelegateRef },
    /// It has hosts, so it is a root of its own, never a delegate (Istio
    /// looks delegates up among the VirtualServices without hosts).
    #[error("VirtualService {to} has hosts, so it is not a delegate")]
    NotADelegate { to: DelegateRef },
    /// Its `exportTo` leaves out the root's namespace.
    #[error("delegate VirtualService {to} is not exported to namespace {namespace}")]
    NotExported { to: DelegateRef, namespace: String },
}

/// The VirtualServices by namespace and name, to find the delegate a root
/// rule names by Istio's rules; `config` (to report a missing delegate)
/// and `compile` (to merge) both look delegates up here.
pub struct Delegates<'m> {
    by_name: std::collections::HashMap<(&'m str, &'m str), &'m VirtualService>,
}

impl<'m> Delegates<'m> {
    pub fn new(services: &'m [VirtualService]) -> Self {
        let by_name = services
            .iter()
            .map(|vs| ((vs.namespace.as_str(), vs.name.as_str()), vs))
            .collect();
        Delegates { by_name }
    }

    /// The delegate `to` names for a root in `root_namespace`: a
    /// VirtualService without hosts, exported to the root's namespace.
    pub fn find(
        &self,
        to: &DelegateRef,
        root_namespace: &str,
    ) -> Result<&'m VirtualService, DelegateMissing> {
        let Some(&vs) = self.by_name.get(&(to.namespace.as_str(), to.name.as_str())) else {
            return Err(DelegateMissing::NotFound { to: to.clone() });
        };
        if !vs.hosts.is_empty() {
            return Err(DelegateMissing::NotADelegate { to: to.clone() });
        }
        if !vs.export_to.visible_from(&vs.namespace, root_namespace) {
            return Err(DelegateMissing::NotExported {
                to: to.clone(),
                namespace: root_namespace.to_string(),
            });
        }
        Ok(vs)
    }
}

/// Which of a rule's fields that a delegate rule inherits were written at
/// all, even empty (`rewrite: {}`, `headers: {}`) or zero (`timeout: 0s`):
/// Istio's merge gives a delegate rule the root rule's value only where
/// the delegate left the field unset (`virtualservice.go::mergeHTTPRoute`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub rewrite: bool,
    pub timeout: bool,
    pub headers: bool,
}

/// One `http[]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    pub name: Option<String>,
    /// OR'ed; empty matches everything.
    pub matches: Vec<HttpMatch>,
    pub action: HttpAction,
    pub rewrite_uri: Option<String>,
    /// `rewrite.uriRegexRewrite`: (RE2 pattern, substitution with `\1`
    /// groups); never together with `rewrite_uri`.
    pub rewrite_uri_regex: Option<(String, String)>,
    pub rewrite_authority: Option<String>,
    /// `timeout`; none (or `0s`) = no timeout at the gateway, as in Istio.
    pub timeout: Option<Duration>,
    /// `headers.request`: applied before the request is forwarded.
    pub request_headers: HeaderOperations,
    /// `headers.response`: applied before the response goes back.
    pub response_headers: HeaderOperations,
    /// `retries`; `None` when the rule sets none (Istio's default policy
    /// then applies).
    pub retries: Option<HttpRetry>,
    /// `fault`: delays and aborts injected before the action.
    pub fault: Option<super::HttpFault>,
    /// `corsPolicy`.
    pub cors: Option<super::CorsPolicy>,
    /// `mirror`/`mirrors`: where copies of the requests go, each with its
    /// share (none with a share of 0).
    pub mirrors: Vec<HttpMirror>,
    /// Which inheritable fields were written, for the delegate merge.
    pub written: Written,
}

/// One mirror of an http rule: a destination and its share of requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpMirror {
    pub destination: Destination,
    pub share: super::PerMillion,
}

/// `http[].retries`, validated as Istio validates it (`ValidateHTTPRetry`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRetry {
    /// `attempts`: retries after the first try; 0 disables retries.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// `retryOn` as written: Envoy policy names and status codes.
    pub retry_on: Option<String>,
    pub retry_remote_localities: Option<bool>,
    pub retry_ignore_previous_hosts: Option<bool>,
    /// `backoff`: the base interval of the exponential back-off.
    pub backoff: Option<Duration>,
}

/// Whether Go's `http.StatusText` names `code` (the codes of its table).
pub fn known_status_code(code: u16) -> bool {
    matches!(code,
        100..=103
        | 200..=208 | 226
        | 300..=305 | 307 | 308
        | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
        | 500..=508 | 510 | 511)
}

/// `headers.request` or `headers.response` of an HTTP rule: validated, names
/// lower-cased, in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderOperations {
    /// Replace the header with this value.
    pub set: Vec<(String, String)>,
    /// Append a value, keeping existing ones.
    pub add: Vec<(String, String)>,
    /// Remove the header.
    pub remove: Vec<String>,
}

impl HeaderOperations {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

impl HttpRoute {
    /// Whether the rule accepts every request it sees.
    pub fn is_catch_all(&self) -> bool {
        self.matches.is_empty() || self.matches.iter().any(HttpMatch::is_catch_all)
    }
}

/// One `tls[].match[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMatch {
    pub sni_hosts: Vec<String>,
    pub port: Option<u16>,
    pub gateways: Vec<String>,
    /// Validated and kept so the compiler can say it is not applied: Istio
    /// matches a gateway's tls rules by SNI, port and gateway only.
    pub destination_subnets: Vec<Subnet>,
}

/// One `tls[]` rule (SNI passthrough).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRoute {
    pub matches: Vec<TlsMatch>,
    pub route: Vec<Destination>,
}

/// One `tcp[].match[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpMatch {
    pub port: Option<u16>,
    pub gateways: Vec<String>,
    /// Validated and kept so the compiler can say it is not applied: Istio
    /// matches a gateway's tcp rules by port and gateway only.
    pub destination_subnets: Vec<Subnet>,
}

/// One `tcp[]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRoute {
    pub matches: Vec<TcpMatch>,
    pub route: Vec<Destination>,
}

/// `ServiceEntry.spec.resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    /// A dynamic forward proxy for wildcard hosts: valid, not served.
    DynamicDns,
}

/// A `ServiceEntry` port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Option<String>,
    pub target_port: Option<u16>,
}

/// Where an endpoint is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// A DNS name, resolved by the proxy at connect time.
    Dns(String),
}

/// A `ServiceEntry` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEntry {
    pub address: EndpointAddress,
    /// Port name -> port number on this endpoint.
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// `locality`: where it runs, for locality load balancing.
    pub locality: super::Locality,
}

/// An Istio `ServiceEntry`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    pub hosts: Vec<String>,
    /// `spec.addresses`: the entry's virtual IPs or CIDR blocks.
    pub addresses: Vec<Subnet>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub endpoints: Vec<WorkloadEntry>,
    pub mesh_internal: bool,
    pub export_to: ExportTo,
}

/// `trafficPolicy.loadBalancer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadBalancer {
    /// `simple`: ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH, ...
    Simple(SimpleLb),
    /// `consistentHash` on one key.
    ConsistentHash(ConsistentHash),
}

/// `loadBalancer.warmup` (or the deprecated `warmupDurationSecs`): Envoy's
/// slow start, an endpoint's weight scaled by
/// `max(minimum_percent / 100, (age / window) ^ (1 / aggression))` while
/// it is younger than `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warmup {
    pub window: Duration,
    pub minimum_percent: f64,
    pub aggression: f64,
}

impl Eq for Warmup {}

/// `loadBalancer.consistentHash`: what is hashed, and into which table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistentHash {
    pub key: HashKey,
    pub table: HashTable,
}

/// Envoy's consistent-hash balancers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashTable {
    /// Ketama: each endpoint at many points of a ring of at least this size.
    Ring { minimum_size: u64 },
    /// Maglev's lookup table of this (prime) size.
    Maglev { table_size: u64 },
}

/// `loadBalancer.simple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

impl SimpleLb {
    /// Parses the case-sensitive enum name Istio's CRD accepts.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "UNSPECIFIED" => Self::Unspecified,
            "LEAST_CONN" => Self::LeastConn,
            "RANDOM" => Self::Random,
            "PASSTHROUGH" => Self::Passthrough,
            "ROUND_ROBIN" => Self::RoundRobin,
            "LEAST_REQUEST" => Self::LeastRequest,
            _ => return None,
        })
    }
}

/// `connectionPool.http.h2UpgradePolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

impl H2UpgradePolicy {
    /// Parses the case-sensitive enum name Istio's CRD accepts.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "DEFAULT" => Self::Default,
            "DO_NOT_UPGRADE" => Self::DoNotUpgrade,
            "UPGRADE" => Self::Upgrade,
            _ => return None,
        })
    }
}

/// `trafficPolicy.tls.mode` (client side: TLS origination).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientTlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

impl ClientTlsMode {
    /// Parses the case-sensitive enum name Istio's CRD accepts.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "DISABLE" => Self::Disable,
            "SIMPLE" => Self::Simple,
            "MUTUAL" => Self::Mutual,
            "ISTIO_MUTUAL" => Self::IstioMutual,
            _ => return None,
        })
    }
}

/// What `consistentHash` hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    Header(String),
    /// Absent from a request and with a `ttl`, the gateway sets it.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
        /// `attributes`: (name, value) added to a cookie the gateway sets.
        attributes: Vec<(String, String)>,
    },
    SourceIp,
    QueryParameter(String),
}

/// `connectionPool.tcp.tcpKeepalive`: SO_KEEPALIVE with these settings
/// (each unset one the system's default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// `trafficPolicy.connectionPool`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `tcp.maxConnectionDuration`: an upstream connection's lifetime.
    pub max_connection_duration: Option<Duration>,
    /// `tcp.idleTimeout`: idle upstream connections (HTTP, when
    /// `http.idleTimeout` is unset) and TCP forwards; `0s` disables it.
    pub tcp_idle_timeout: Option<Duration>,
    pub max_concurrent_streams: Option<u32>,
    /// `http.http2KeepAlive`: (interval, timeout) of HTTP/2 PINGs.
    pub http2_keepalive: Option<(Duration, Duration)>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub idle_timeout: Option<Duration>,
    /// `http.h2UpgradePolicy`: DEFAULT, DO_NOT_UPGRADE or UPGRADE (HTTP/1.1
    /// upstream connections upgraded to HTTP/2).
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// `http.useClientProtocol`: speak the client's HTTP version upstream.
    pub use_client_protocol: bool,
}

/// `trafficPolicy.outlierDetection`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutlierDetection {
    pub consecutive_5xx_errors: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_local_origin_failures: Option<u32>,
    /// Connect failures, timeouts and resets counted apart from responses.
    pub split_external_local_origin_errors: bool,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<u32>,
    /// Below this share of healthy endpoints, balance over all (Envoy's
    /// panic threshold); unset is 0, as Istio sets it: never.
    pub min_health_percent: Option<u32>,
    /// `outlierDetectionHttpErrorCodes`: the responses counted as errors
    /// instead of 5xx.
    pub error_codes: Vec<u16>,
}

/// `trafficPolicy.tls`: TLS origination towards the backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub credential_name: Option<String>,
    pub sni: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
    /// `caCrl` (or the credential's `ca.crl`): revoked server
    /// certificates, refused.
    pub ca_crl: Option<String>,
    /// Why TLS to this destination cannot be set up although the rule is
    /// valid: its credential (Kubernetes Secret) missing or malformed.
    /// Clusters with this policy answer 503 rather than go plaintext.
    pub unavailable: Option<String>,
}

/// `trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancer>,
    /// `None` when unset: a subset's policy then keeps the rule's.
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTls>,
    /// `portLevelSettings`: the policy for one port, in place of this one.
    pub port_level: Vec<PortTrafficPolicy>,
    pub retry_budget: Option<RetryBudget>,
    /// `loadBalancer.warmup`: it moves with `load_balancer` in merges.
    pub warmup: Option<Warmup>,
    /// `loadBalancer.localityLbSetting` / `zoneAwareLbSetting`: they move
    /// with `load_balancer` in merges too.
    pub locality: Option<super::LocalitySetting>,
    /// `proxyProtocol`: each new connection to the cluster starts with a
    /// PROXY header (Envoy's `upstream_proxy_protocol` transport socket).
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// `tunnel`: TCP and TLS routes to the destination tunnel each
    /// connection through the endpoint with HTTP CONNECT or POST. A
    /// route reads it from the rule itself (Istio's
    /// `tunnelingconfig.Apply`), not from the merged cluster policy.
    pub tunnel: Option<TunnelSettings>,
}

/// `trafficPolicy.proxyProtocol.version` (Istio's default `V1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    #[default]
    V1,
    /// The binary header.
    V2,
}

/// `trafficPolicy.tunnel`: how a forwarded connection is tunneled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSettings {
    pub protocol: TunnelProtocol,
    /// An FQDN or an IP address (Istio's validation).
    pub target_host: String,
    pub target_port: u16,
}

/// `tunnel.protocol` (default `CONNECT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TunnelProtocol {
    #[default]
    Connect,
    /// Envoy's `use_post`: `POST /` and the raw bytes after the head.
    Post,
}

impl TunnelSettings {
    /// `targetHost:targetPort`, an IPv6 address in brackets (Go's
    /// `net.JoinHostPort`, as Istio builds Envoy's `hostname`).
    pub fn authority(&self) -> String {
        if self.target_host.contains(':') {
            format!("[{}]:{}", self.target_host, self.target_port)
        } else {
            format!("{}:{}", self.target_host, self.target_port)
        }
    }
}

/// `trafficPolicy.retryBudget`: retries in flight at most `percent` of the
/// requests in flight and waiting (or, with a `budget_interval`, of the
/// requests started within it), and never fewer than
/// `min_retry_concurrency` (Envoy's retry budget, replacing `maxRetries`).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    pub percent: f64,
    pub min_retry_concurrency: u32,
    /// `budgetInterval`; zero (the default) counts the requests in flight.
    pub budget_interval: Duration,
}

impl Eq for RetryBudget {}

/// One `portLevelSettings` entry: its port and its four fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortTrafficPolicy {
    pub port: u16,
    pub load_balancer: Option<LoadBalancer>,
    pub warmup: Option<Warmup>,
    pub locality: Option<super::LocalitySetting>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTls>,
}

impl TrafficPolicy {
    /// The policy for `port` (Istio's `GetPortLevelTrafficPolicy`): a
    /// port-level entry replaces the whole policy (a field it leaves out
    /// is unset, never inherited); `true` when one did.
    pub fn for_port(&self, port: u16) -> (Self, bool) {
        match self.port_level.iter().find(|p| p.port == port) {
            Some(level) => (
                Self {
                    load_balancer: level.load_balancer.clone(),
                    warmup: level.warmup,
                    locality: level.locality.clone(),
                    connection_pool: level.connection_pool.clone(),
                    outlier_detection: level.outlier_detection.clone(),
                    tls: level.tls.clone(),
                    port_level: Vec::new(),
                    // Istio's port-level copy keeps the four fields only
                    // (`shadowCopyPortTrafficPolicy`): a port-level entry
                    // drops the rule's retry budget, PROXY protocol and tunnel.
                    retry_budget: None,
                    proxy_protocol: None,
                    tunnel: None,
                },
                true,
            ),
            None => (
                Self {
                    port_level: Vec::new(),
                    ..self.clone()
                },
                false,
            ),
        }
    }

    /// A subset's policy over the rule's, for `port` (Istio's
    /// `MergeSubsetTrafficPolicy`): each of the four fields the subset
    /// sets replaces the rule's whole field; when the subset has a
    /// port-level entry for the port, all four are the subset's.
    pub fn with_subset(&self, subset: Option<&Self>, port: u16) -> Self {
        let (mut merged, _) = self.for_port(port);
        let Some(subset) = subset else {
            return merged;
        };
        let (subset, port_level) = subset.for_port(port);
        if subset.connection_pool.is_some() || port_level {
            merged.connection_pool = subset.connection_pool;
        }
        if subset.outlier_detection.is_some() || port_level {
            merged.outlier_detection = subset.outlier_detection;
        }
        // `loadBalancer` is one block in Istio: its warmup goes with it.
        let sets_load_balancer =
            subset.load_balancer.is_some() || subset.warmup.is_some() || subset.locality.is_some();
        if sets_load_balancer || port_level {
            merged.load_balancer = subset.load_balancer;
            merged.warmup = subset.warmup;
            merged.locality = subset.locality;
        }
        if subset.tls.is_some() || port_level {
            merged.tls = subset.tls;
        }
        if subset.retry_budget.is_some() {
            merged.retry_budget = subset.retry_budget;
        }
        // Istio's `MergeTrafficPolicy`: set on the subset, they replace
        // the rule's, whatever the port level.
        if subset.proxy_protocol.is_some() {
            merged.proxy_protocol = subset.proxy_protocol;
        }
        if subset.tunnel.is_some() {
            merged.tunnel = subset.tunnel;
        }
        merged
    }

    /// The connection pool, its defaults when unset.
    pub fn pool(&self) -> ConnectionPool {
        self.connection_pool.clone().unwrap_or_default()
    }
}

/// A `DestinationRule` subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<TrafficPolicy>,
}

/// An Istio `DestinationRule`.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRule {
    pub namespace: String,
    pub name: String,
    pub host: String,
    pub traffic_policy: TrafficPolicy,
    pub subsets: Vec<Subset>,
    pub export_to: ExportTo,
    /// `workloadSelector.matchLabels`: the rule applies only to workloads
    /// with these labels in its own namespace.
    pub workload_selector: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_to_defaults_to_everyone() {
        assert!(ExportTo::default().visible_from("a", "b"));
    }

    #[test]
    fn export_to_dot_means_own_namespace_only() {
        let dot = ExportTo(vec![".".into()]);
        assert!(dot.visible_from("a", "a"));
        assert!(!dot.visible_from("a", "istio-system"));
    }

    #[test]
    fn catch_all_matches_are_recognised() {
        let prefix_root = HttpMatch {
            uri: Some(StringMatch::Prefix("/".into())),
            ..Default::default()
        };
        assert!(prefix_root.is_catch_all());
        let with_header = HttpMatch {
            headers: BTreeMap::from([("x".into(), None)]),
            ..prefix_root
        };
        assert!(!with_header.is_catch_all());
        let exact = HttpMatch {
            uri: Some(StringMatch::Exact("/".into())),
            ..Default::default()
        };
        assert!(!exact.is_catch_all());
    }

    fn pool(max: u32) -> Option<ConnectionPool> {
        Some(ConnectionPool {
            max_connections: Some(max),
            ..ConnectionPool::default()
        })
    }

    fn random() -> Option<LoadBalancer> {
        Some(LoadBalancer::Simple(SimpleLb::Random))
    }

    fn outlier() -> Option<OutlierDetection> {
        Some(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            ..OutlierDetection::default()
        })
    }

    #[test]
    fn a_port_level_entry_replaces_the_whole_policy_for_its_port_only() {
        let policy = TrafficPolicy {
            connection_pool: pool(5),
            outlier_detection: outlier(),
            port_level: vec![PortTrafficPolicy {
                port: 8080,
                load_balancer: random(),
                ..PortTrafficPolicy::default()
            }],
            ..TrafficPolicy::default()
        };
        let (on_port, replaced) = policy.for_port(8080);
        assert!(replaced);
        assert_eq!(on_port.load_balancer, random());
        assert_eq!(on_port.connection_pool, None, "not inherited");
        assert_eq!(on_port.outlier_detection, None, "not inherited");
        let (elsewhere, replaced) = policy.for_port(80);
        assert!(!replaced);
        assert_eq!(elsewhere.connection_pool, pool(5));
        assert_eq!(elsewhere.load_balancer, None);
    }

    #[test]
    fn a_subset_replaces_only_the_fields_it_sets() {
        let rule = TrafficPolicy {
            connection_pool: pool(5),
            outlier_detection: outlier(),
            ..TrafficPolicy::default()
        };
        let subset = TrafficPolicy {
            load_balancer: random(),
            connection_pool: pool(9),
            ..TrafficPolicy::default()
        };
        let merged = rule.with_subset(Some(&subset), 80);
        assert_eq!(merged.connection_pool, pool(9), "the subset's, whole");
        assert_eq!(merged.load_balancer, random());
        assert_eq!(merged.outlier_detection, outlier(), "kept from the rule");
        assert_eq!(rule.with_subset(None, 80), rule);
    }

    #[test]
    fn a_subsets_port_level_entry_replaces_all_four_fields() {
        let rule = TrafficPolicy {
            connection_pool: pool(5),
            outlier_detection: outlier(),
            ..TrafficPolicy::default()
        };
        let subset = TrafficPolicy {
            port_level: vec![PortTrafficPolicy {
                port: 80,
                load_balancer: random(),
                ..PortTrafficPolicy::default()
            }],
            ..TrafficPolicy::default()
        };
        let merged = rule.with_subset(Some(&subset), 80);
        assert_eq!(merged.load_balancer, random());
        assert_eq!(merged.connection_pool, None);
        assert_eq!(merged.outlier_detection, None);
        // On another port the subset has nothing of its own: the rule's.
        assert_eq!(
            rule.with_subset(Some(&subset), 81).outlier_detection,
            outlier()
        );
    }

    #[test]
    fn the_rules_port_level_entry_applies_before_the_subset_merges() {
        let rule = TrafficPolicy {
            connection_pool: pool(5),
            port_level: vec![PortTrafficPolicy {
                port: 80,
                outlier_detection: outlier(),
                ..PortTrafficPolicy::default()
            }],
            ..TrafficPolicy::default()
        };
        let subset = TrafficPolicy {
            load_balancer: random(),
            ..TrafficPolicy::default()
        };
        let merged = rule.with_subset(Some(&subset), 80);
        assert_eq!(merged.connection_pool, None, "the port entry replaced it");
        assert_eq!(merged.outlier_detection, outlier());
        assert_eq!(merged.load_balancer, random());
    }

    #[test]
    fn proxy_protocol_is_the_subsets_when_set_and_a_port_level_entry_drops_it() {
        let rule = TrafficPolicy {
            proxy_protocol: Some(ProxyProtocolVersion::V1),
            port_level: vec![PortTrafficPolicy {
                port: 81,
                connection_pool: pool(1),
                ..PortTrafficPolicy::default()
            }],
            ..TrafficPolicy::default()
        };
        let v2 = TrafficPolicy {
            proxy_protocol: Some(ProxyProtocolVersion::V2),
            ..TrafficPolicy::default()
        };
        assert_eq!(
            rule.with_subset(Some(&v2), 80).proxy_protocol,
            Some(ProxyProtocolVersion::V2)
        );
        let silent = TrafficPolicy {
            connection_pool: pool(2),
            ..TrafficPolicy::default()
        };
        assert_eq!(
            rule.with_subset(Some(&silent), 80).proxy_protocol,
            Some(ProxyProtocolVersion::V1),
            "inherited from the rule"
        );
        // Istio's port-level copy has the four fields only.
        assert_eq!(rule.with_subset(None, 81).proxy_protocol, None);
        assert_eq!(
            rule.with_subset(Some(&v2), 81).proxy_protocol,
            Some(ProxyProtocolVersion::V2)
        );
    }

    #[test]
    fn a_tunnels_authority_brackets_an_ipv6_target() {
        let tunnel = |host: &str| TunnelSettings {
            protocol: TunnelProtocol::Connect,
            target_host: host.into(),
            target_port: 8443,
        };
        assert_eq!(tunnel("example.test").authority(), "example.test:8443");
        assert_eq!(tunnel("2001:db8::5").authority(), "[2001:db8::5]:8443");
    }
}

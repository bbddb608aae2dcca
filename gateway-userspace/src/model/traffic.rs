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
    pub scheme: Option<String>,
    /// 301 unless set (301, 302, 303, 307, 308).
    pub code: u16,
}

/// What an HTTP route does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpAction {
    Route(Vec<Destination>),
    Redirect(HttpRedirect),
    DirectResponse { status: u16, body: Option<String> },
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
    /// `fault`: delays and aborts injected before the action.
    pub fault: Option<super::HttpFault>,
    /// `corsPolicy`.
    pub cors: Option<super::CorsPolicy>,
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
    ConsistentHash(HashKey),
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
    Cookie { name: String, ttl: Option<Duration> },
    SourceIp,
    QueryParameter(String),
}

/// `trafficPolicy.connectionPool`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
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
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<u32>,
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
    /// Why TLS to this destination cannot be set up although the rule is
    /// valid: its credential (Kubernetes Secret) missing or malformed.
    /// Clusters with this policy answer 503 rather than go plaintext.
    pub unavailable: Option<String>,
}

/// `trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: ConnectionPool,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTls>,
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
}

use std::{collections::BTreeMap, net::IpAddr};

use gateway_common::{IPPROTO_TCP, IPPROTO_UDP, ListenerKind};

/// An Istio `Gateway` that passed decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct Gateway {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` (RFC 3339, UTC); absent sorts first, as
    /// Kubernetes' zero time does in Istio.
    pub creation_timestamp: Option<String>,
    /// Workload labels this Gateway applies to; empty applies to every gateway.
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<Server>,
    /// `file:line` of its document, for errors found after decoding (a plan
    /// past the kernel's limits); `None` when built in code.
    pub defined_at: Option<String>,
}

impl Gateway {
    /// Istio's processing order for merging: creationTimestamp, then name,
    /// then namespace (`configCompareByCreationTime`).
    pub fn merge_order(&self) -> (&str, &str, &str) {
        (
            self.creation_timestamp.as_deref().unwrap_or(""),
            &self.name,
            &self.namespace,
        )
    }

    /// Whether this Gateway applies to a gateway workload with `labels`:
    /// every selector label present with the same value; no selector selects all.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }
}

/// Who this gateway instance is: the workload labels and namespace Istio
/// matches Gateways and visibility against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub labels: BTreeMap<String, String>,
    pub namespace: String,
    /// Where the gateway runs (`--locality`): locality load balancing
    /// prefers endpoints near it.
    pub locality: super::Locality,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed
    /// (`--trusted-proxies`, Istio's `gatewayTopology.numTrustedProxies`,
    /// default 0): with 0, a client's remote address is its peer, which is
    /// what lets the kernel enforce `remoteIpBlocks` too.
    pub trusted_proxies: u32,
}

impl Default for Instance {
    /// Istio's default ingress gateway: `istio=ingressgateway` in `istio-system`.
    fn default() -> Self {
        Self {
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            namespace: "istio-system".to_string(),
            locality: super::Locality::default(),
            trusted_proxies: 0,
        }
    }
}

/// Parses `k=v,k2=v2` (the `--labels` flag).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                labels.insert(key.to_string(), value.to_string());
            }
            _ => return Err(format!("expected key=value, found {pair:?}")),
        }
    }
    Ok(labels)
}

/// One `spec.servers[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    pub port: Port,
    /// Hosts as written, including any `namespace/` prefix.
    pub hosts: Vec<String>,
    pub bind: Bind,
    pub tls: Option<ServerTls>,
}

/// `spec.servers[].bind`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bind {
    /// Absent (or `0.0.0.0` / `::`): every gateway address.
    Any,
    /// One address of the gateway.
    Ip(IpAddr),
    /// A Unix domain socket (`unix:///path` or `unix://@abstract`): gateway-internal.
    Unix(String),
}

impl Bind {
    /// The IP a listener is keyed by: `None` for every address.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(*ip),
            Self::Any | Self::Unix(_) => None,
        }
    }
}

/// `spec.servers[].port`.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
}

/// `spec.servers[].tls`, validated (cipher suites filtered as Istio does).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerTls {
    pub https_redirect: bool,
    pub mode: TlsMode,
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub ca_crl: Option<String>,
    /// `credentialName`, or the one or two `credentialNames`.
    pub credential_names: Vec<String>,
    pub ca_cert_credential_name: Option<String>,
    pub tls_certificates: Vec<TlsCertificate>,
    pub subject_alt_names: Vec<String>,
    pub verify_certificate_spki: Vec<String>,
    pub verify_certificate_hash: Vec<String>,
    pub min_protocol_version: Option<TlsVersion>,
    pub max_protocol_version: Option<TlsVersion>,
    /// As written, after Istio's filtering of unknown and duplicate names.
    pub cipher_suites: Vec<String>,
    /// The TLS 1.2 suites of `cipher_suites` the proxy's TLS library
    /// (rustls) offers, in order; empty means its defaults. TLS 1.3 suites
    /// are not restricted, as in Envoy.
    pub cipher_suites_resolved: Vec<rustls::CipherSuite>,
    /// Certificate chains and keys to serve, resolved from the fields above
    /// (credentials to files); checked to exist, parse and match at load.
    pub certificates: Vec<CertificateFiles>,
    /// Client CA bundle for MUTUAL / OPTIONAL_MUTUAL, resolved likewise.
    pub client_ca: Option<String>,
    /// Revoked client certificates for MUTUAL / OPTIONAL_MUTUAL: `caCrl`,
    /// else the CA credential's `ca.crl` when it has one.
    pub client_crl: Option<String>,
    /// Why the server cannot be served although its resource is valid: a
    /// credential (Kubernetes Secret) missing or malformed. Compile drops
    /// the server with this reason; the other servers are served.
    pub unavailable: Option<String>,
}

/// A certificate chain and its private key on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFiles {
    pub certificate: String,
    pub private_key: String,
}

/// One `tls.tlsCertificates[]` entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsCertificate {
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
}

/// `tls.mode`; Istio's default (field absent) is `Passthrough`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    #[default]
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

impl TlsMode {
    /// The enum name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Self::Passthrough => "PASSTHROUGH",
            Self::Simple => "SIMPLE",
            Self::Mutual => "MUTUAL",
            Self::AutoPassthrough => "AUTO_PASSTHROUGH",
            Self::IstioMutual => "ISTIO_MUTUAL",
            Self::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }

    /// Parses the case-sensitive enum name Istio's CRD accepts.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "PASSTHROUGH" => Self::Passthrough,
            "SIMPLE" => Self::Simple,
            "MUTUAL" => Self::Mutual,
            "AUTO_PASSTHROUGH" => Self::AutoPassthrough,
            "ISTIO_MUTUAL" => Self::IstioMutual,
            "OPTIONAL_MUTUAL" => Self::OptionalMutual,
            _ => return None,
        })
    }
}

/// `tls.minProtocolVersion` / `maxProtocolVersion`, in version order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS_AUTO`: the default of the field it is in.
    Auto,
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

impl TlsVersion {
    /// The lowest version the proxy's TLS library (rustls) speaks.
    pub const LOWEST_OFFERED: Self = Self::V1_2;
    /// Every version, as Istio names them.
    pub const ALL: [Self; 5] = [Self::Auto, Self::V1_0, Self::V1_1, Self::V1_2, Self::V1_3];

    /// The enum name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "TLS_AUTO",
            Self::V1_0 => "TLSV1_0",
            Self::V1_1 => "TLSV1_1",
            Self::V1_2 => "TLSV1_2",
            Self::V1_3 => "TLSV1_3",
        }
    }

    /// Parses the case-sensitive enum name Istio's CRD accepts.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == text)
    }
}

/// `port.protocol`, parsed case-insensitively as Istio does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Redis,
    Mysql,
    Udp,
}

impl Protocol {
    /// Parses every protocol Istio's `protocol.Parse` knows (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "http" => Self::Http,
            "http2" => Self::Http2,
            "grpc" => Self::Grpc,
            "grpc-web" => Self::GrpcWeb,
            "https" => Self::Https,
            "tls" => Self::Tls,
            "tcp" => Self::Tcp,
            "mongo" => Self::Mongo,
            "redis" => Self::Redis,
            "mysql" => Self::Mysql,
            "udp" => Self::Udp,
            _ => return None,
        })
    }

    /// HTTP, HTTP2, GRPC and GRPC-WEB share one plaintext listener.
    pub fn is_http_family(self) -> bool {
        matches!(self, Self::Http | Self::Http2 | Self::Grpc | Self::GrpcWeb)
    }

    /// How the kernel classifies this protocol's listener.
    pub fn listener_kind(self) -> ListenerKind {
        match self {
            _ if self.is_http_family() => ListenerKind::Http,
            Self::Https | Self::Tls => ListenerKind::Tls,
            _ => ListenerKind::Tcp,
        }
    }

    /// The L4 protocol number the listener is keyed by.
    pub fn ip_protocol(self) -> u8 {
        match self {
            Self::Udp => IPPROTO_UDP,
            _ => IPPROTO_TCP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_parse_is_case_insensitive() {
        assert_eq!(Protocol::parse("hTTp"), Some(Protocol::Http));
        assert_eq!(Protocol::parse("GRPC-WEB"), Some(Protocol::GrpcWeb));
        assert_eq!(Protocol::parse(""), None);
    }

    #[test]
    fn http_family_shares_the_http_listener_kind() {
        for p in [
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
            Protocol::GrpcWeb,
        ] {
            assert_eq!(p.listener_kind(), ListenerKind::Http);
        }
        assert_eq!(Protocol::Https.listener_kind(), ListenerKind::Tls);
        assert_eq!(Protocol::Mongo.listener_kind(), ListenerKind::Tcp);
    }

    fn gateway(selector: &[(&str, &str)]) -> Gateway {
        Gateway {
            defined_at: None,
            namespace: "ns".into(),
            name: "gw".into(),
            creation_timestamp: None,
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            servers: Vec::new(),
        }
    }

    #[test]
    fn selector_must_be_a_subset_of_the_instance_labels() {
        let labels = parse_labels("istio=ingressgateway,app=edge").unwrap();
        assert!(gateway(&[("istio", "ingressgateway")]).selects(&labels));
        assert!(!gateway(&[("istio", "egressgateway")]).selects(&labels));
        assert!(!gateway(&[("istio", "ingressgateway"), ("zone", "a")]).selects(&labels));
    }

    #[test]
    fn nil_selector_selects_every_gateway() {
        assert!(gateway(&[]).selects(&BTreeMap::new()));
    }

    #[test]
    fn labels_flag_rejects_pairs_without_equals() {
        assert_eq!(
            parse_labels("a=b,c"),
            Err("expected key=value, found \"c\"".into())
        );
        assert_eq!(parse_labels("").unwrap().len(), 0);
    }

    #[test]
    fn merge_order_is_creation_time_then_name_then_namespace() {
        let mut old = gateway(&[]);
        old.name = "zzz".into();
        old.creation_timestamp = Some("2024-01-01T00:00:00Z".into());
        let mut new = gateway(&[]);
        new.name = "aaa".into();
        new.creation_timestamp = Some("2025-01-01T00:00:00Z".into());
        assert!(old.merge_order() < new.merge_order());
    }

    #[test]
    fn tls_mode_is_case_sensitive() {
        assert_eq!(TlsMode::parse("SIMPLE"), Some(TlsMode::Simple));
        assert_eq!(TlsMode::parse("simple"), None);
    }
}

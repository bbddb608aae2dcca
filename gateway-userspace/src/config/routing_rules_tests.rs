//! One test per VirtualService, ServiceEntry and DestinationRule rule.
use std::path::PathBuf;

use super::*;
use crate::model::{
    DelegateRef, EndpointAddress, HashKey, HeaderOperations, HttpAction, LoadBalancer,
    OutlierDetection, Resolution, StringMatch,
};

fn load_kind(kind: &str, spec: &str) -> Config {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: r\n  namespace: apps\nspec:\n{spec}"
    );
    load_sources(&[(PathBuf::from("r.yaml"), text)])
}

fn vs(spec: &str) -> Config {
    load_kind("VirtualService", spec)
}

fn assert_has(config: &Config, severity: Severity, field: &str, message: &str) {
    let all: Vec<_> = config
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.field.clone(), d.message.clone()))
        .collect();
    assert!(
        all.iter()
            .any(|(s, f, m)| *s == severity && f == field && m == message),
        "missing {severity:?} {field}: {message}\nfound: {all:#?}"
    );
}

const ROUTE: &str = "  http:\n  - route:\n    - destination: {host: web.apps.svc.cluster.local}\n";

#[test]
fn virtual_service_is_decoded_with_resolved_gateways() {
    let config = vs(&format!(
        "  hosts: [a.example.com]\n  gateways: [istio-system/gw, local-gw]\n{ROUTE}"
    ));
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let vs = &config.model.virtual_services[0];
    assert_eq!(
        vs.gateways,
        vec!["istio-system/gw".to_string(), "apps/local-gw".to_string()]
    );
    let HttpAction::Route(dest) = &vs.http[0].action else {
        panic!("not a route")
    };
    assert_eq!(dest[0].weight, 100, "a single destination gets all traffic");
}

#[test]
fn virtual_service_needs_hosts() {
    // Without hosts it is a delegate, which may not name gateways.
    let config = vs(&format!("  gateways: [gw]\n{ROUTE}"));
    assert_has(
        &config,
        Severity::Error,
        "spec.gateways",
        "delegate virtual service must have no gateways specified",
    );
}

#[test]
fn a_virtual_service_without_hosts_is_an_accepted_delegate() {
    let config = vs(ROUTE);
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    assert_eq!(config.model.virtual_services.len(), 1);
    assert!(config.model.virtual_services[0].gateways.is_empty());
}

#[test]
fn a_delegate_may_not_have_tls_or_tcp_rules() {
    let tcp = "  tcp:\n  - route:\n    - destination: {host: db}\n";
    let tls = "  tls:\n  - match: [{sniHosts: [a.example.com]}]\n    route:\n    - destination: {host: web}\n";
    let config = vs(&format!("{ROUTE}{tcp}{tls}"));
    assert_has(
        &config,
        Severity::Error,
        "spec.tcp",
        "delegate virtual service must have no tcp route specified",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.tls",
        "delegate virtual service must have no tls route specified",
    );
}

const ROOT: &str =
    "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - delegate: {name: reviews}\n";

#[test]
fn a_root_route_with_delegate_needs_no_action_and_names_its_delegate() {
    let config = load_sources(&[(
        PathBuf::from("r.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: apps}}\nspec:\n{ROUTE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: apps}}\nspec:\n{ROOT}    directResponse: {{status: 418}}\n"
        ),
    )]);
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let root = &config.model.virtual_services[1];
    assert_eq!(
        root.http[0].action,
        HttpAction::Delegate {
            to: DelegateRef {
                name: "reviews".into(),
                namespace: "apps".into()
            },
            direct_response: Some((418, None)),
        }
    );
}

#[test]
fn a_root_route_with_delegate_must_not_specify_route_or_redirect() {
    let with_route = vs(&format!(
        "{ROOT}    route:\n    - destination: {{host: web}}\n"
    ));
    assert_has(
        &with_route,
        Severity::Error,
        "spec.http[0].route",
        "a root HTTP route with delegate must not specify route",
    );
    let with_redirect = vs(&format!("{ROOT}    redirect: {{uri: /x}}\n"));
    assert_has(
        &with_redirect,
        Severity::Error,
        "spec.http[0].redirect",
        "a root HTTP route with delegate must not specify redirect",
    );
}

#[test]
fn a_delegate_http_route_cannot_contain_delegate() {
    // No chain of delegates, so no cycle either.
    let config =
        vs("  http:\n  - delegate: {name: other}\n    route:\n    - destination: {host: web}\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].delegate",
        "delegate HTTP route cannot contain delegate",
    );
}

const DROPPED: &str = "as in Istio, this rule is dropped, so the requests it matches go to the rules after it (404 if none matches)";

#[test]
fn a_missing_delegate_is_reported_where_the_root_names_it() {
    let config = vs(ROOT);
    assert!(!config.has_errors(), "Istio accepts the root");
    assert_has(
        &config,
        Severity::Warning,
        "spec.http[0].delegate",
        &format!("delegate VirtualService apps/reviews not found: {DROPPED}"),
    );
    let diagnostic = config
        .diagnostics
        .iter()
        .find(|d| d.field == "spec.http[0].delegate")
        .expect("reported");
    assert_eq!(
        (diagnostic.line, diagnostic.resource.as_str()),
        (10, "VirtualService apps/r")
    );
}

#[test]
fn a_delegate_with_hosts_or_not_exported_to_the_root_is_reported() {
    let doc = |name: &str, spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: team}}\nspec:\n{spec}"
        )
    };
    let root = ROOT.replace("{name: reviews}", "{name: reviews, namespace: team}");
    let root = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: apps}}\nspec:\n{root}"
    );
    let with_hosts = doc("reviews", &format!("  hosts: [b.example.com]\n{ROUTE}"));
    let config = load_sources(&[(PathBuf::from("r.yaml"), format!("{root}---\n{with_hosts}"))]);
    assert_has(
        &config,
        Severity::Warning,
        "spec.http[0].delegate",
        &format!("VirtualService team/reviews has hosts, so it is not a delegate: {DROPPED}"),
    );
    let private = doc("reviews", &format!("  exportTo: [.]\n{ROUTE}"));
    let config = load_sources(&[(PathBuf::from("r.yaml"), format!("{private}---\n{root}"))]);
    assert_has(
        &config,
        Severity::Warning,
        "spec.http[0].delegate",
        &format!(
            "delegate VirtualService team/reviews is not exported to namespace apps: {DROPPED}"
        ),
    );
}

#[test]
fn an_invalid_gateway_name_is_not_taken_for_the_mesh() {
    let config = vs(&format!(
        "  hosts: [\"*\"]\n  gateways: [Not_A_Name]\n{ROUTE}"
    ));
    let errors: Vec<&str> = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(errors, ["invalid gateway \"Not_A_Name\""]);
    // Written `mesh` still is the mesh, next to a gateway.
    let with_mesh = vs(&format!(
        "  hosts: [\"*\"]\n  gateways: [gw, mesh]\n{ROUTE}"
    ));
    assert_has(
        &with_mesh,
        Severity::Error,
        "spec.hosts[0]",
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
    );
}

#[test]
fn wildcard_host_is_not_allowed_when_bound_to_mesh() {
    let config = vs(&format!("  hosts: [\"*\"]\n{ROUTE}"));
    assert_has(
        &config,
        Severity::Error,
        "spec.hosts[0]",
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
    );
    let at_gateway = vs(&format!("  hosts: [\"*\"]\n  gateways: [gw]\n{ROUTE}"));
    assert!(
        at_gateway.diagnostics.is_empty(),
        "{:?}",
        at_gateway.diagnostics
    );
}

#[test]
fn duplicate_hosts_in_one_virtual_service_are_rejected() {
    let config = vs(&format!(
        "  hosts: [a.example.com, A.example.com]\n  gateways: [gw]\n{ROUTE}"
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.hosts[1]",
        "duplicate hosts in virtual service: a.example.com & A.example.com",
    );
}

#[test]
fn overlapping_wildcard_hosts_in_one_virtual_service_are_duplicates() {
    let config = vs(&format!(
        "  hosts: [\"*.foo.com\", \"*.com\", bar.org]\n  gateways: [gw]\n{ROUTE}"
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.hosts[1]",
        "duplicate hosts in virtual service: *.foo.com & *.com",
    );
    assert_eq!(config.diagnostics.len(), 1, "bar.org overlaps nothing");
}

#[test]
fn gateway_references_with_wildcards_are_rejected() {
    let config = vs(&format!(
        "  hosts: [a.example.com]\n  gateways: [\"istio-system/*\"]\n{ROUTE}"
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.gateways[0]",
        "invalid value for gateway name: \"*\"",
    );
}

#[test]
fn a_dot_gateway_namespace_is_rejected_as_istio_does() {
    let config = vs(&format!(
        "  hosts: [a.example.com]\n  gateways: [./gw]\n{ROUTE}"
    ));
    assert_has(
        &config,
        Severity::Error,
        "spec.gateways[0]",
        "invalid value for namespace: \".\"",
    );
    assert!(config.model.virtual_services.is_empty());
}

#[test]
fn a_virtual_service_needs_http_tls_or_tcp() {
    let config = vs("  hosts: [a.example.com]\n  gateways: [gw]\n");
    assert_has(
        &config,
        Severity::Error,
        "spec",
        "http, tcp or tls must be provided in virtual service",
    );
}

#[test]
fn http_rule_needs_exactly_one_action() {
    let none = vs("  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - name: nothing\n");
    assert_has(
        &none,
        Severity::Error,
        "spec.http[0]",
        "HTTP route, redirect or direct response is required",
    );
    let both = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - redirect: {uri: /x}\n    directResponse: {status: 200}\n",
    );
    assert_has(
        &both,
        Severity::Error,
        "spec.http[0]",
        "only one of route, redirect and directResponse may be set",
    );
}

#[test]
fn rewrite_and_redirect_cannot_be_combined() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - redirect: {uri: /x}\n    rewrite: {uri: /y}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0]",
        "rewrite and redirect cannot be used together",
    );
}

#[test]
fn weights_of_several_destinations_must_not_all_be_zero() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].route",
        "total destination weight is 0; give the destinations weights",
    );
}

#[test]
fn destination_host_is_required() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {subset: v1}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].route[0].destination.host",
        "destination.host is required",
    );
}

#[test]
fn string_match_needs_exactly_one_kind() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {exact: /a, prefix: /b}\n    redirect: {uri: /x}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].match[0].uri",
        "exactly one of exact, prefix or regex must be set",
    );
}

#[test]
fn prefix_match_must_not_be_empty() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {prefix: \"\"}\n    redirect: {uri: /x}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].match[0].uri.prefix",
        "prefix match must not be empty",
    );
}

#[test]
fn regex_must_compile() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {regex: \"/a(\"}\n    redirect: {uri: /x}\n",
    );
    let error = config
        .diagnostics
        .iter()
        .find(|d| d.field == "spec.http[0].match[0].uri.regex")
        .expect("regex error");
    assert!(
        error.message.starts_with("invalid regex"),
        "{}",
        error.message
    );
}

#[test]
fn header_match_keys_must_be_lower_case() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - headers: {X-User: {exact: a}}\n    redirect: {uri: /x}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].match[0].headers.X-User",
        "header match key must be lowercase",
    );
}

#[test]
fn header_presence_match_is_an_empty_matcher() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - headers: {x-canary: {}}\n      uri: {prefix: /api}\n    redirect: {uri: /x}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let m = &config.model.virtual_services[0].http[0].matches[0];
    assert_eq!(m.headers.get("x-canary"), Some(&None));
    assert_eq!(m.uri, Some(StringMatch::Prefix("/api".into())));
}

#[test]
fn redirect_code_must_be_a_redirect_status() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - redirect: {uri: /x, redirectCode: 200}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].redirect.redirectCode",
        "redirect code 200 must be one of 301, 302, 303, 307, 308",
    );
}

#[test]
fn unsupported_http_features_warn_instead_of_passing_silently() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - redirect: {uri: /x}\n    internalActiveRedirect: {maxInternalRedirects: 1}\n",
    );
    assert_has(
        &config,
        Severity::Warning,
        "spec.http[0].internalActiveRedirect",
        "internalActiveRedirect is not applied by this gateway yet",
    );
    assert_eq!(config.model.virtual_services.len(), 1);
}

#[test]
fn tls_route_sni_hosts_must_be_within_the_virtual_service_hosts() {
    let config = vs(
        "  hosts: [\"*.example.com\"]\n  gateways: [gw]\n  tls:\n  - match:\n    - sniHosts: [a.example.com, other.org]\n    route:\n    - destination: {host: backend}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.tls[0].match[0].sniHosts[1]",
        "the SNI host other.org must match one of the virtual service hosts",
    );
}

#[test]
fn tls_route_needs_sni_hosts() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  tls:\n  - match:\n    - port: 443\n    route:\n    - destination: {host: backend}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.tls[0].match[0].sniHosts",
        "TLS match must have at least one SNI host",
    );
}

#[test]
fn tcp_route_needs_a_destination() {
    let config =
        vs("  hosts: [a.example.com]\n  gateways: [gw]\n  tcp:\n  - match:\n    - port: 9000\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.tcp[0].route",
        "TCP route must have at least one destination",
    );
}

#[test]
fn destination_subnets_of_tls_and_tcp_matches_are_decoded() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  tls:\n  - match:\n    - sniHosts: [a.example.com]\n      destinationSubnets: [10.0.0.0/8]\n    route:\n    - destination: {host: backend}\n  tcp:\n  - match:\n    - destinationSubnets: [192.0.2.1, \"2001:db8::/32\"]\n    route:\n    - destination: {host: backend}\n",
    );
    let vs = &config.model.virtual_services[0];
    let text = |subnets: &[crate::model::Subnet]| -> Vec<String> {
        subnets.iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        text(&vs.tls[0].matches[0].destination_subnets),
        ["10.0.0.0/8"]
    );
    assert_eq!(
        text(&vs.tcp[0].matches[0].destination_subnets),
        ["192.0.2.1/32", "2001:db8::/32"]
    );
}

#[test]
fn invalid_destination_subnets_are_rejected_with_istio_messages() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  tls:\n  - match:\n    - sniHosts: [a.example.com]\n      destinationSubnets: [10.0.0.0/33]\n    route:\n    - destination: {host: backend}\n  tcp:\n  - match:\n    - destinationSubnets: [10.0.0.0/8, example.com]\n    route:\n    - destination: {host: backend}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.tls[0].match[0].destinationSubnets[0]",
        "10.0.0.0/33 is not a valid CIDR block",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.tcp[0].match[0].destinationSubnets[1]",
        "example.com is not a valid IP",
    );
    assert!(config.model.virtual_services.is_empty());
}

const SE_PORTS: &str = "  ports:\n  - {number: 8080, name: http, protocol: HTTP}\n";

#[test]
fn service_entry_static_endpoints_are_decoded() {
    let config = load_kind(
        "ServiceEntry",
        &format!(
            "  hosts: [web.internal]\n{SE_PORTS}  resolution: STATIC\n  endpoints:\n  - address: 192.0.2.10\n    labels: {{version: v1}}\n    ports: {{http: 9080}}\n"
        ),
    );
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let se = &config.model.service_entries[0];
    assert_eq!(se.resolution, Resolution::Static);
    assert_eq!(
        se.endpoints[0].address,
        EndpointAddress::Ip("192.0.2.10".parse().unwrap())
    );
    assert_eq!(se.endpoints[0].ports.get("http"), Some(&9080));
}

#[test]
fn static_resolution_needs_ip_endpoints() {
    let config = load_kind(
        "ServiceEntry",
        &format!(
            "  hosts: [web.internal]\n{SE_PORTS}  resolution: STATIC\n  endpoints:\n  - address: web.example.com\n"
        ),
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.endpoints[0].address",
        "endpoint address \"web.example.com\" must be an IP address for STATIC resolution",
    );
}

#[test]
fn service_entry_ports_must_be_unique() {
    let config = load_kind(
        "ServiceEntry",
        "  hosts: [web.internal]\n  ports:\n  - {number: 80, name: a, protocol: HTTP}\n  - {number: 80, name: b, protocol: HTTP}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.ports[1].number",
        "port number 80 is declared twice",
    );
    let config = load_kind(
        "ServiceEntry",
        "  hosts: [web.internal]\n  ports:\n  - {number: 80, name: a, protocol: HTTP}\n  - {number: 81, name: a, protocol: HTTP}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.ports[1].name",
        "port name a is declared twice",
    );
}

#[test]
fn endpoint_port_names_must_be_declared() {
    let config = load_kind(
        "ServiceEntry",
        &format!(
            "  hosts: [web.internal]\n{SE_PORTS}  resolution: STATIC\n  endpoints:\n  - address: 192.0.2.10\n    ports: {{grpc: 9090}}\n"
        ),
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.endpoints[0].ports.grpc",
        "endpoint port name grpc is not declared in spec.ports",
    );
}

#[test]
fn dns_resolution_of_wildcard_hosts_needs_endpoints() {
    let config = load_kind(
        "ServiceEntry",
        &format!("  hosts: [\"*.example.com\"]\n{SE_PORTS}  resolution: DNS\n"),
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.hosts[0]",
        "wildcard host *.example.com cannot be resolved by DNS without endpoints",
    );
}

#[test]
fn invalid_resolution_is_named() {
    let config = load_kind(
        "ServiceEntry",
        &format!("  hosts: [web.internal]\n{SE_PORTS}  resolution: dns\n"),
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.resolution",
        "invalid resolution \"dns\", supported values are NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS",
    );
}

#[test]
fn destination_rule_subsets_and_policy_are_decoded() {
    let config = load_kind(
        "DestinationRule",
        "  host: web.internal\n  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: X-User}}\n    connectionPool: {tcp: {maxConnections: 100, connectTimeout: 2s}}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n",
    );
    assert_no_errors(&config);
    let dr = &config.model.destination_rules[0];
    assert_eq!(
        dr.traffic_policy.load_balancer,
        Some(LoadBalancer::ConsistentHash(crate::model::ConsistentHash {
            key: HashKey::Header("x-user".into()),
            table: crate::model::HashTable::Ring { minimum_size: 1024 },
        }))
    );
    assert_eq!(dr.traffic_policy.pool().max_connections, Some(100));
    assert_eq!(
        dr.subsets[0].labels.get("version").map(String::as_str),
        Some("v1")
    );
}

#[test]
fn destination_rule_needs_a_host() {
    let config = load_kind("DestinationRule", "  subsets: []\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.host",
        "destination rule must have a host",
    );
}

#[test]
fn subset_names_are_unique_dns_labels() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  subsets:\n  - {name: v1}\n  - {name: v1}\n  - {name: V2}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.subsets[1].name",
        "duplicate subset name v1",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.subsets[2].name",
        "subset name \"V2\" must be a DNS-1123 label",
    );
}

#[test]
fn consistent_hash_needs_exactly_one_key() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: x, useSourceIp: true}}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "consistentHash needs exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
    );
}

#[test]
fn simple_load_balancer_must_be_known() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n",
    );
    assert!(
        config
            .diagnostics
            .iter()
            .any(|d| d.field == "spec.trafficPolicy.loadBalancer.simple"),
        "{:?}",
        config.diagnostics
    );
}

#[test]
fn connection_limits_must_be_positive_and_durations_valid() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 0, connectTimeout: 5}}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "maxConnections must be greater than 0",
    );
    assert!(
        config
            .diagnostics
            .iter()
            .any(|d| d.field == "spec.trafficPolicy.connectionPool.tcp.connectTimeout"),
        "{:?}",
        config.diagnostics
    );
}

#[test]
fn mutual_origination_needs_certificate_and_key() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    tls: {mode: MUTUAL}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.trafficPolicy.tls.clientCertificate",
        "client certificate required for mutual tls",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.trafficPolicy.tls.privateKey",
        "private key required for mutual tls",
    );
}

#[test]
fn export_to_takes_star_dot_or_namespace_names() {
    let good = vs(&format!(
        "  hosts: [a.example.com]\n  exportTo: [\"*\", \".\", apps]\n{ROUTE}"
    ));
    assert!(good.diagnostics.is_empty(), "{:?}", good.diagnostics);
    let bad = vs(&format!(
        "  hosts: [a.example.com]\n  exportTo: [Bad_NS]\n{ROUTE}"
    ));
    assert_has(
        &bad,
        Severity::Error,
        "spec.exportTo[0]",
        "invalid exportTo value \"Bad_NS\": expected \"*\", \".\" or a namespace",
    );
}

#[test]
fn label_values_may_be_written_as_booleans_and_numbers() {
    let config = load_kind(
        "ServiceEntry",
        &format!(
            "  hosts: [web.internal]\n{SE_PORTS}  resolution: STATIC\n  endpoints:\n  - address: 192.0.2.10\n    labels: {{canary: true, tier: 1, version: v1}}\n  - address: 192.0.2.11\n    labels:\n"
        ),
    );
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let labels = &config.model.service_entries[0].endpoints[0].labels;
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![("canary", "true"), ("tier", "1"), ("version", "v1")]
    );
}

#[test]
fn regex_error_names_the_problem() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {regex: \"/a(\"}\n    redirect: {uri: /x}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].match[0].uri.regex",
        "invalid regex: error: unclosed group",
    );
}

#[test]
fn regex_length_limit_is_inclusive() {
    let with_regex = |len: usize| {
        vs(&format!(
            "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - uri: {{regex: \"{}\"}}\n    redirect: {{uri: /x}}\n",
            "a".repeat(len)
        ))
    };
    let at_limit = with_regex(1024);
    assert!(
        at_limit.diagnostics.is_empty(),
        "{:?}",
        at_limit.diagnostics
    );
    assert_has(
        &with_regex(1025),
        Severity::Error,
        "spec.http[0].match[0].uri.regex",
        "regex is 1025 characters, the limit is 1024",
    );
}

#[test]
fn null_mappings_and_lists_count_as_empty() {
    let config = load_kind(
        "DestinationRule",
        "  host: web.internal\n  trafficPolicy:\n  subsets:\n",
    );
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    assert_eq!(config.model.destination_rules.len(), 1);
}

#[test]
fn outlier_detection_is_decoded_and_max_ejection_percent_is_at_most_100() {
    let with_percent = |percent: u32| {
        load_kind(
            "DestinationRule",
            &format!(
                "  host: web\n  trafficPolicy:\n    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: {percent}}}\n"
            ),
        )
    };
    let config = with_percent(100);
    assert_no_errors(&config);
    let policy = &config.model.destination_rules[0].traffic_policy;
    assert_eq!(
        policy.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx_errors: Some(5),
            interval: Some(std::time::Duration::from_secs(10)),
            base_ejection_time: Some(std::time::Duration::from_secs(30)),
            max_ejection_percent: Some(100),
            ..OutlierDetection::default()
        })
    );
    assert_has(
        &with_percent(101),
        Severity::Error,
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "maxEjectionPercent 101 must be between 0 and 100",
    );
}

#[test]
fn only_mutual_origination_without_credential_name_needs_files() {
    for tls in ["{mode: SIMPLE}", "{mode: MUTUAL, credentialName: c}"] {
        let config = load_kind(
            "DestinationRule",
            &format!("  host: web\n  trafficPolicy:\n    tls: {tls}\n"),
        );
        assert_no_errors(&config);
    }
}

fn assert_no_errors(config: &Config) {
    assert!(
        config
            .diagnostics
            .iter()
            .all(|d| d.severity != Severity::Error),
        "{:?}",
        config.diagnostics
    );
}

#[test]
fn traffic_policy_fields_the_proxy_applies_get_no_warning() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true}}\n    connectionPool: {tcp: {maxConnections: 5, connectTimeout: 1s}, http: {maxRetries: 2, h2UpgradePolicy: UPGRADE}}\n    outlierDetection: {consecutive5xxErrors: 5}\n    tls: {mode: DISABLE, insecureSkipVerify: true}\n",
    );
    let warned: Vec<&str> = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.field.as_str())
        .collect();
    assert!(warned.is_empty(), "{warned:?}");
    assert!(!config.has_errors(), "{:?}", config.diagnostics);
    // Applied: connectTimeout, h2UpgradePolicy, and DISABLE origination;
    // SIMPLE and MUTUAL origination too (no warning).
    let simple = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: web.example}\n",
    );
    assert!(
        simple
            .diagnostics
            .iter()
            .all(|d| d.severity != Severity::Warning),
        "{:?}",
        simple.diagnostics
    );
    let applied = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    loadBalancer: {simple: LEAST_REQUEST}\n    connectionPool: {tcp: {connectTimeout: 1s}, http: {useClientProtocol: true}}\n    tls: {mode: DISABLE}\n",
    );
    assert!(applied.diagnostics.is_empty(), "{:?}", applied.diagnostics);
}

#[test]
fn destination_rule_with_an_error_is_left_out_of_the_model() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  subsets:\n  - {name: Bad_Name, labels: {version: v1}}\n",
    );
    assert!(config.has_errors());
    assert!(config.model.destination_rules.is_empty());
}

fn service_entry(spec: &str) -> Config {
    load_kind(
        "ServiceEntry",
        &format!("  hosts: [web.internal]\n{SE_PORTS}{spec}"),
    )
}

#[test]
fn dns_endpoint_addresses_are_names_with_a_dot() {
    let good = service_entry("  resolution: DNS\n  endpoints:\n  - address: web.example.com\n");
    assert!(good.diagnostics.is_empty(), "{:?}", good.diagnostics);
    assert_eq!(
        good.model.service_entries[0].endpoints[0].address,
        EndpointAddress::Dns("web.example.com".into())
    );
    for bad in ["web", "bad_name.example.com"] {
        let config = service_entry(&format!(
            "  resolution: DNS\n  endpoints:\n  - address: {bad}\n"
        ));
        assert_has(
            &config,
            Severity::Error,
            "spec.endpoints[0].address",
            &format!("endpoint address {bad:?} is neither an IP address nor a DNS name"),
        );
    }
}

#[test]
fn endpoint_port_zero_is_out_of_range() {
    let config = service_entry(
        "  resolution: STATIC\n  endpoints:\n  - address: 192.0.2.10\n    ports: {http: 0}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.endpoints[0].ports.http",
        "port 0 must be in the range 1..65535",
    );
}

#[test]
fn only_static_resolution_needs_an_endpoints_field() {
    let without = service_entry("  resolution: STATIC\n");
    assert_has(
        &without,
        Severity::Error,
        "spec.endpoints",
        "STATIC resolution needs endpoints",
    );
    for ok in [
        "  resolution: STATIC\n  endpoints: []\n",
        "  resolution: DNS\n",
    ] {
        let config = service_entry(ok);
        assert!(
            config.diagnostics.is_empty(),
            "{ok}: {:?}",
            config.diagnostics
        );
    }
}

#[test]
fn wildcard_service_entry_with_endpoints_is_valid_for_dns_too() {
    for resolution in ["STATIC", "DNS"] {
        let config = load_kind(
            "ServiceEntry",
            &format!(
                "  hosts: [\"*.example.com\"]\n{SE_PORTS}  resolution: {resolution}\n  endpoints:\n  - address: 192.0.2.10\n"
            ),
        );
        assert!(
            config.diagnostics.is_empty(),
            "{resolution}: {:?}",
            config.diagnostics
        );
    }
}

#[test]
fn service_entry_with_an_error_is_left_out_of_the_model() {
    let config = service_entry("  resolution: STATIC\n");
    assert!(config.has_errors());
    assert!(config.model.service_entries.is_empty());
}

#[test]
fn virtual_service_with_an_error_is_left_out_of_the_model() {
    let config = vs(&format!("  gateways: [gw]\n{ROUTE}"));
    assert!(config.has_errors());
    assert!(config.model.virtual_services.is_empty());
}

fn first_rule(config: &Config) -> &crate::model::HttpRoute {
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    &config.model.virtual_services[0].http[0]
}

#[test]
fn direct_response_status_and_body_are_decoded_within_200_to_599() {
    let with_status = |status: u16| {
        vs(&format!(
            "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - directResponse: {{status: {status}, body: {{string: down}}}}\n"
        ))
    };
    let config = with_status(503);
    assert_eq!(
        first_rule(&config).action,
        HttpAction::DirectResponse {
            status: 503,
            body: Some("down".into())
        }
    );
    assert_has(
        &with_status(600),
        Severity::Error,
        "spec.http[0].directResponse.status",
        "status 600 must be between 200 and 599",
    );
}

#[test]
fn redirect_code_is_decoded() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - redirect: {uri: /x, redirectCode: 308}\n",
    );
    let HttpAction::Redirect(redirect) = &first_rule(&config).action else {
        panic!("not a redirect")
    };
    assert_eq!(redirect.code, 308);
}

#[test]
fn header_match_with_an_empty_value_tests_presence_only() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match:\n    - headers: {x-user: {exact: a}, x-any: {}}\n    redirect: {uri: /x}\n",
    );
    let headers = &first_rule(&config).matches[0].headers;
    assert_eq!(
        headers.get("x-user"),
        Some(&Some(StringMatch::Exact("a".into())))
    );
    assert_eq!(headers.get("x-any"), Some(&None));
}

#[test]
fn header_names_do_not_hide_unknown_field_warnings_elsewhere() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  colour: blue\n  http:\n  - match:\n    - headers: {x-user: {exact: a}}\n    redirect: {uri: /x}\n",
    );
    assert_has(
        &config,
        Severity::Warning,
        "spec.colour",
        "unknown field, ignored",
    );
}

fn http_rule(rule: &str) -> Config {
    vs(&format!(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: web}}\n{rule}"
    ))
}

#[test]
fn header_operations_are_decoded_with_lower_case_names() {
    let config = http_rule(
        "    headers:\n      request:\n        set: {X-Env: prod, \":authority\": b.example.com}\n        add: {x-trace: \"1\"}\n        remove: [Cookie]\n      response:\n        remove: [server]\n",
    );
    let rule = first_rule(&config);
    assert_eq!(
        rule.request_headers,
        HeaderOperations {
            set: vec![
                ("x-env".into(), "prod".into()),
                (":authority".into(), "b.example.com".into())
            ],
            add: vec![("x-trace".into(), "1".into())],
            remove: vec!["cookie".into()],
        }
    );
    assert_eq!(rule.response_headers.remove, vec!["server".to_string()]);
    assert!(rule.response_headers.set.is_empty());
}

#[test]
fn header_operations_may_not_touch_host_or_pseudo_headers() {
    let config = http_rule(
        "    headers:\n      request:\n        remove: [host]\n      response:\n        set: {\":status\": \"200\"}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].headers.request.remove[0]",
        "invalid header \"host\": cannot set Host header",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].headers.response.set.:status",
        "invalid header \":status\": header cannot have \":\" prefix",
    );
    assert!(config.model.virtual_services.is_empty());
}

#[test]
fn uri_regex_rewrite_is_decoded_and_its_regex_checked() {
    let config = http_rule(
        "    rewrite:\n      uriRegexRewrite: {match: \"^/v1/(.*)\", rewrite: \"/\\\\1\"}\n",
    );
    assert_eq!(
        first_rule(&config).rewrite_uri_regex,
        Some(("^/v1/(.*)".to_string(), "/\\1".to_string()))
    );
    let bad = http_rule("    rewrite:\n      uriRegexRewrite: {match: \"(\", rewrite: /}\n");
    assert!(
        bad.diagnostics.iter().any(|d| d.severity == Severity::Error
            && d.field == "spec.http[0].rewrite.uriRegexRewrite.match"
            && d.message.starts_with("invalid regex")),
        "{:?}",
        bad.diagnostics
    );
}

#[test]
fn uri_and_uri_regex_rewrite_cannot_be_combined() {
    let config = http_rule(
        "    rewrite:\n      uri: /x\n      uriRegexRewrite: {match: \"^/\", rewrite: /}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].rewrite.uriRegexRewrite",
        "rewrite may only contain one of uri or uriRegexRewrite",
    );
}

#[test]
fn timeout_is_a_duration_and_zero_means_none() {
    let config = http_rule("    timeout: 1.5s\n");
    assert_eq!(
        first_rule(&config).timeout,
        Some(std::time::Duration::from_millis(1500))
    );
    assert_eq!(first_rule(&http_rule("    timeout: 0s\n")).timeout, None);
}

#[test]
fn h2_upgrade_policy_and_use_client_protocol_are_decoded() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let pool = &config.model.destination_rules[0].traffic_policy.pool();
    assert_eq!(
        pool.h2_upgrade_policy,
        Some(crate::model::H2UpgradePolicy::Upgrade)
    );
    assert!(pool.use_client_protocol);
    let bad = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    connectionPool: {http: {h2UpgradePolicy: upgrade}}\n",
    );
    assert_has(
        &bad,
        Severity::Error,
        "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
        "invalid h2UpgradePolicy \"upgrade\", supported are DEFAULT, DO_NOT_UPGRADE, UPGRADE",
    );
}

#[test]
fn header_operation_maps_may_be_null_but_not_lists() {
    let with = |request: &str| {
        vs(&format!(
            "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: web.apps.svc.cluster.local}}\n    headers:\n      request: {request}\n"
        ))
    };
    let config = with("{set: null}");
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let config = with("{add: [x-a]}");
    let error = config
        .diagnostics
        .iter()
        .find(|d| d.field == "spec.http[0].headers.request.add")
        .expect("an error for the list");
    assert_eq!(error.severity, Severity::Error);
    assert!(
        error.message.starts_with("expected a mapping"),
        "{}",
        error.message
    );
}

#[test]
fn istio_mutual_origination_is_an_error_never_plaintext() {
    for policy in [
        "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n",
        "  subsets:\n  - name: v1\n    trafficPolicy:\n      tls: {mode: ISTIO_MUTUAL, sni: web.example}\n",
    ] {
        let config = load_kind("DestinationRule", &format!("  host: web\n{policy}"));
        let field = if policy.contains("subsets") {
            "spec.subsets[0].trafficPolicy.tls.mode"
        } else {
            "spec.trafficPolicy.tls.mode"
        };
        assert_has(
            &config,
            Severity::Error,
            field,
            "TLS origination with ISTIO_MUTUAL needs the mesh's workload certificates, which this gateway does not have: refused, never sent in plaintext (use SIMPLE or MUTUAL with certificates)",
        );
        assert!(config.model.destination_rules.is_empty());
    }
}

/// A ServiceEntry `apps/r` with `spec` as written (no default ports).
fn bare_service_entry(spec: &str) -> Config {
    load_kind("ServiceEntry", spec)
}

fn errors(config: &Config) -> Vec<(String, String)> {
    config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.field.clone(), d.message.clone()))
        .collect()
}

#[test]
fn service_entry_ports_are_optional() {
    let config = bare_service_entry("  hosts: [api.example.com]\n  resolution: DNS\n");
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    assert!(config.model.service_entries[0].ports.is_empty());
}

#[test]
fn a_partial_wildcard_service_entry_host_is_a_warning() {
    let config = bare_service_entry(&format!("  hosts: [\"*x\"]\n{SE_PORTS}"));
    assert!(!config.has_errors(), "{:?}", config.diagnostics);
    assert_has(
        &config,
        Severity::Warning,
        "spec.hosts[0]",
        "partial wildcard \"*x\": Istio only warns; it matches every name that ends in \"x\"",
    );
    assert_eq!(config.model.service_entries[0].hosts, ["*x"]);
}

#[test]
fn a_unix_socket_endpoint_is_a_warning_and_left_out() {
    let config = service_entry(
        "  resolution: STATIC\n  endpoints:\n  - address: unix:///var/run/web.sock\n  - address: 192.0.2.10\n",
    );
    assert!(!config.has_errors(), "{:?}", config.diagnostics);
    assert_has(
        &config,
        Severity::Warning,
        "spec.endpoints[0].address",
        "unix domain socket endpoints are not supported by this gateway: unix:///var/run/web.sock is left out",
    );
    let endpoints = &config.model.service_entries[0].endpoints;
    assert_eq!(
        endpoints
            .iter()
            .map(|e| e.address.clone())
            .collect::<Vec<_>>(),
        [EndpointAddress::Ip("192.0.2.10".parse().unwrap())]
    );
    // Istio's rules for them still hold.
    let relative = service_entry(
        "  resolution: STATIC\n  endpoints:\n  - {address: \"unix://run/web.sock\", ports: {http: 80}}\n",
    );
    assert_eq!(
        errors(&relative),
        [
            (
                "spec.endpoints[0].address".to_string(),
                "run/web.sock is not an absolute path to a file".to_string()
            ),
            (
                "spec.endpoints[0].ports".to_string(),
                "unix endpoint unix://run/web.sock must not include ports".to_string()
            ),
        ]
    );
}

#[test]
fn a_wildcard_label_in_workload_selector_is_an_error() {
    let config =
        service_entry("  resolution: STATIC\n  workloadSelector:\n    labels: {app: \"*\"}\n");
    assert_eq!(
        errors(&config),
        [(
            "spec.workloadSelector.labels".to_string(),
            "wildcard is not supported in selector: \"app=*\"".to_string()
        )]
    );
    // A valid selector is accepted (and warned: not applied).
    let valid =
        service_entry("  resolution: STATIC\n  workloadSelector:\n    labels: {app: web}\n");
    assert!(!valid.has_errors(), "{:?}", valid.diagnostics);
    assert_has(
        &valid,
        Severity::Warning,
        "spec.workloadSelector",
        "workloadSelector needs a Kubernetes workload registry; ignored",
    );
}

#[test]
fn workload_selector_and_endpoints_together_are_an_error() {
    let config = service_entry(
        "  resolution: STATIC\n  workloadSelector:\n    labels: {app: web}\n  endpoints:\n  - address: 192.0.2.10\n",
    );
    assert_eq!(
        errors(&config),
        [(
            "spec.endpoints".to_string(),
            "only one of workloadSelector or endpoints is allowed in a service entry".to_string()
        )]
    );
}

#[test]
fn a_cidr_address_needs_none_or_static_resolution() {
    let config = service_entry("  addresses: [192.0.2.0/24]\n  resolution: DNS\n");
    assert_eq!(
        errors(&config),
        [(
            "spec.addresses".to_string(),
            "CIDR addresses are allowed only for NONE/STATIC resolution types".to_string()
        )]
    );
    for ok in ["NONE", "STATIC\n  endpoints: [{address: 192.0.2.10}]"] {
        let config = service_entry(&format!(
            "  addresses: [192.0.2.0/24]\n  resolution: {ok}\n"
        ));
        assert!(!config.has_errors(), "{ok}: {:?}", config.diagnostics);
    }
}

#[test]
fn none_resolution_takes_no_endpoints() {
    let config = service_entry("  resolution: NONE\n  endpoints:\n  - address: 192.0.2.10\n");
    assert_eq!(
        errors(&config),
        [(
            "spec.endpoints".to_string(),
            "no endpoints should be provided for resolution type NONE".to_string()
        )]
    );
}

#[test]
fn dns_round_robin_takes_at_most_one_endpoint() {
    let two = "  resolution: DNS_ROUND_ROBIN\n  endpoints:\n  - address: a.example.com\n  - address: b.example.com\n";
    assert_eq!(
        errors(&service_entry(two)),
        [(
            "spec.endpoints".to_string(),
            "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN".to_string()
        )]
    );
    let one = "  resolution: DNS_ROUND_ROBIN\n  endpoints:\n  - address: a.example.com\n";
    assert!(service_entry(one).diagnostics.is_empty());
}

#[test]
fn dynamic_dns_is_valid_istio_checked_and_warned_as_not_served() {
    let config = bare_service_entry(
        "  hosts: [\"*.example.com\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DYNAMIC_DNS\n",
    );
    assert!(!config.has_errors(), "{:?}", config.diagnostics);
    assert_eq!(
        config.model.service_entries[0].resolution,
        Resolution::DynamicDns
    );
    assert_has(
        &config,
        Severity::Warning,
        "spec.resolution",
        "DYNAMIC_DNS is not served by this gateway yet: destinations this entry resolves get 503",
    );
    let bad = bare_service_entry(
        "  hosts: [api.example.com]\n  addresses: [192.0.2.1]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DYNAMIC_DNS\n",
    );
    let fields: Vec<String> = errors(&bad).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["spec.hosts", "spec.addresses", "spec.ports"]);
}

#[test]
fn flow_style_addresses_with_an_ipv6_ending_in_colons_are_read_as_kubernetes_reads_them() {
    let config = service_entry(
        "  addresses: [1.2.3.4, 001:db8::]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.10}]\n",
    );
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let addresses: Vec<String> = config.model.service_entries[0]
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(addresses, ["1.2.3.4/32", "1:db8::/128"]);
}

fn load_balancer(lb: &str) -> Config {
    load_kind(
        "DestinationRule",
        &format!("  host: web\n  trafficPolicy:\n    loadBalancer: {lb}\n"),
    )
}

#[test]
fn warmup_ranges_istio_rejects_are_errors() {
    for (warmup, field, message) in [
        (
            "{duration: 60s, minimumPercent: 101}",
            "minimumPercent",
            "minimumPercent 101 must be between 0 and 100",
        ),
        ("{minimumPercent: 10}", "duration", "duration is required"),
        (
            "{duration: 60s, aggression: -1.5}",
            "aggression",
            "aggression -1.5 must be greater than 0",
        ),
        (
            "{duration: 60s, aggression: 0}",
            "aggression",
            "aggression 0 must be greater than 0",
        ),
    ] {
        let config = load_balancer(&format!("{{simple: ROUND_ROBIN, warmup: {warmup}}}"));
        assert_eq!(
            errors(&config),
            [(
                format!("spec.trafficPolicy.loadBalancer.warmup.{field}"),
                message.to_string()
            )],
            "{warmup}"
        );
    }
    let valid = load_balancer("{warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}}");
    assert!(valid.diagnostics.is_empty(), "{:?}", valid.diagnostics);
}

#[test]
fn zone_aware_lb_setting_is_decoded_and_exclusive_with_locality() {
    let zone = load_balancer("{zoneAwareLbSetting: {enabled: true, minClusterSize: 3}}");
    assert!(zone.diagnostics.is_empty(), "{:?}", zone.diagnostics);
    let policy = &zone.model.destination_rules[0].traffic_policy;
    assert!(matches!(
        &policy.locality,
        Some(crate::model::LocalitySetting::ZoneAware(z)) if z.min_cluster_size == Some(3)
    ));
    let both =
        load_balancer("{localityLbSetting: {enabled: true}, zoneAwareLbSetting: {enabled: true}}");
    assert_eq!(
        errors(&both),
        [(
            "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting".to_string(),
            "only one of localityLbSetting and zoneAwareLbSetting can be set".to_string()
        )]
    );
}

#[test]
fn locality_lb_setting_is_decoded_with_enabled_false_as_disabled() {
    let on = load_balancer(
        "{localityLbSetting: {distribute: [{from: us/*, to: {us/*: 80, eu/*: 20}}]}}",
    );
    assert!(on.diagnostics.is_empty(), "{:?}", on.diagnostics);
    let Some(crate::model::LocalitySetting::Locality(lb)) =
        &on.model.destination_rules[0].traffic_policy.locality
    else {
        panic!("a locality setting")
    };
    assert_eq!(lb.distribute[0].to.get("eu/*"), Some(&20));
    let off = load_balancer("{localityLbSetting: {enabled: false}}");
    assert_eq!(
        off.model.destination_rules[0].traffic_policy.locality,
        Some(crate::model::LocalitySetting::Disabled)
    );
}

#[test]
fn locality_lb_settings_istio_rejects_are_errors() {
    let at = "spec.trafficPolicy.loadBalancer.localityLbSetting";
    for (setting, field, message) in [
        (
            "{distribute: [{from: us/*, to: {us/*: 80}}]}",
            format!("{at}.distribute[0].to"),
            "total locality weight 80 != 100",
        ),
        (
            "{distribute: [{from: us/*, to: {us/*: 0, eu/*: 100}}]}",
            format!("{at}.distribute[0].to.us/*"),
            "locality weight must be in range [1, 100]",
        ),
        (
            "{distribute: [{from: us/*, to: {us/*: 50, us/1a: 50}}]}",
            format!("{at}.distribute[0].to"),
            "locality us/1a overlap with previous specified ones",
        ),
        (
            "{distribute: [{from: us, to: {us: 100}}, {from: us/1a, to: {us: 100}}]}",
            format!("{at}.distribute"),
            "locality us/1a overlap with previous specified ones",
        ),
        (
            "{distribute: [{from: us/*/x, to: {us: 100}}]}",
            format!("{at}.distribute"),
            "locality us/*/x wildcard '*' number can not exceed 1 and must be in the end",
        ),
        (
            "{failover: [{from: us, to: us}]}",
            format!("{at}.failover[0]"),
            "locality lb failover settings must specify different regions",
        ),
        (
            "{failover: [{from: us/1a, to: eu}]}",
            format!("{at}.failover[0]"),
            "locality lb failover only specify region",
        ),
        (
            "{failover: [{from: us, to: eu}], distribute: [{from: us, to: {eu: 100}}]}",
            at.to_string(),
            "can not simultaneously specify 'distribute' and 'failover'",
        ),
        (
            "{failover: [{from: us, to: eu}], failoverPriority: [topology.kubernetes.io/zone]}",
            format!("{at}.failoverPriority"),
            "can not simultaneously set 'failover' and topology label 'topology.kubernetes.io/zone' in 'failover_priority'",
        ),
    ] {
        let config = load_balancer(&format!("{{localityLbSetting: {setting}}}"));
        assert_has(&config, Severity::Error, &field, message);
    }
    let zone =
        load_balancer("{zoneAwareLbSetting: {failoverPriority: [topology.kubernetes.io/region]}}");
    assert_has(
        &zone,
        Severity::Error,
        "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failoverPriority",
        "'failover_priority' for zone aware lb must not use topology label 'topology.kubernetes.io/region'; region- and zone-level routing are handled automatically",
    );
}

#[test]
fn failover_without_outlier_detection_is_warned_as_istio_warns() {
    let config = load_balancer("{localityLbSetting: {failover: [{from: us, to: eu}]}}");
    assert_has(
        &config,
        Severity::Warning,
        "spec.trafficPolicy.loadBalancer",
        "outlier detection policy must be provided for failover",
    );
    let with_outlier = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {failover: [{from: us, to: eu}]}}\n    outlierDetection: {consecutive5xxErrors: 1}\n",
    );
    assert!(
        with_outlier.diagnostics.is_empty(),
        "{:?}",
        with_outlier.diagnostics
    );
}

fn http_pool(http: &str) -> Config {
    load_kind(
        "DestinationRule",
        &format!("  host: web\n  trafficPolicy:\n    connectionPool:\n      http: {http}\n"),
    )
}

#[test]
fn http2_keep_alive_is_decoded_and_validated() {
    let config = http_pool("{http2KeepAlive: {interval: 30s, timeout: 5s}}");
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let pool = &config.model.destination_rules[0].traffic_policy.pool();
    assert_eq!(
        pool.http2_keepalive,
        Some((
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(5)
        ))
    );
    assert_eq!(
        errors(&http_pool("{http2KeepAlive: {interval: 30s}}")),
        [(
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout".to_string(),
            "http2 keepalive timeout is required".to_string()
        )]
    );
    assert_eq!(
        errors(&http_pool("{http2KeepAlive: {interval: 0s, timeout: 5s}}")),
        [(
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval".to_string(),
            "must be a valid duration greater than 1ms".to_string()
        )]
    );
}

#[test]
fn outlier_detection_error_codes_are_http_statuses() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    outlierDetection: {outlierDetectionHttpErrorCodes: [503, 600]}\n",
    );
    assert_eq!(
        errors(&config),
        [(
            "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]".to_string(),
            "600 is not an HTTP status code (100..599)".to_string()
        )]
    );
}

#[test]
fn redirect_prefix_rewrite_is_decoded_with_istios_rules() {
    let config = vs(
        "  hosts: [a.example.com]\n  http:\n  - match: [{uri: {prefix: /foo/}}]\n    redirect: {authority: foo.example.com, prefixRewrite: /}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
    let HttpAction::Redirect(redirect) = &config.model.virtual_services[0].http[0].action else {
        panic!("not a redirect")
    };
    assert_eq!(redirect.prefix_rewrite.as_deref(), Some("/"));
    assert_eq!(redirect.uri, None);
    for (rule, message) in [
        (
            "  - match: [{uri: {prefix: /a}}]\n    redirect: {uri: /b, prefixRewrite: /c}\n",
            "redirect may only specify one of uri or prefixRewrite",
        ),
        (
            "  - match: [{uri: {prefix: /a}}, {uri: {exact: /b}}]\n    redirect: {prefixRewrite: /c}\n",
            "redirect prefixRewrite requires all URI matches to use prefix match type",
        ),
    ] {
        let config = vs(&format!("  hosts: [a.example.com]\n  http:\n{rule}"));
        assert_has(
            &config,
            Severity::Error,
            "spec.http[0].redirect.prefixRewrite",
            message,
        );
    }
}

#[test]
fn a_redirect_must_change_something_and_name_a_known_scheme() {
    let config = vs("  hosts: [a.example.com]\n  http:\n  - redirect: {redirectCode: 302}\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].redirect",
        "redirect must specify uri, prefixRewrite, authority, scheme, or port",
    );
    let config = vs("  hosts: [a.example.com]\n  http:\n  - redirect: {scheme: ftp}\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].redirect.scheme",
        "invalid redirect scheme, must be \"http\" or \"https\"",
    );
}

#[test]
fn current_crd_fields_are_known_never_unknown() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: web}\n      headers: {request: {set: {x-a: b}}}\n    mirror: {host: shadow}\n    mirror_percent: 5\n  tcp:\n  - match: [{port: 5432, sourceSubnet: 10.0.0.0/8}]\n    route:\n    - destination: {host: db}\n",
    );
    let warnings: Vec<(String, String)> = config
        .diagnostics
        .iter()
        .map(|d| (d.field.clone(), d.message.clone()))
        .collect();
    assert!(!config.has_errors(), "{warnings:#?}");
    assert!(
        warnings.iter().all(|(_, m)| m != "unknown field, ignored"),
        "{warnings:#?}"
    );
    // A destination's headers and `mirror_percent` are applied now; the
    // deprecated spelling is still warned, and `sourceSubnet` is ignored.
    for field in [
        "spec.http[0].mirror_percent",
        "spec.tcp[0].match[0].sourceSubnet",
    ] {
        assert!(
            warnings.iter().any(|(f, _)| f == field),
            "{field}: {warnings:#?}"
        );
    }
    // A tcp destination has no headers in Istio's schema.
    let tcp = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  tcp:\n  - route:\n    - destination: {host: db}\n      headers: {}\n",
    );
    assert_has(
        &tcp,
        Severity::Warning,
        "spec.tcp[0].route[0].headers",
        "unknown field, ignored",
    );
}

fn retries_of(spec_retries: &str) -> (Config, Option<crate::model::HttpRetry>) {
    let config = vs(&format!(
        "  hosts: [a.example.com]\n  gateways: [gw]\n{ROUTE}    retries: {spec_retries}\n"
    ));
    let retries = config
        .model
        .virtual_services
        .first()
        .and_then(|vs| vs.http.first())
        .and_then(|rule| rule.retries.clone());
    (config, retries)
}

#[test]
fn retries_are_decoded_with_every_field() {
    let (config, retries) = retries_of(
        "{attempts: 3, perTryTimeout: 2s, retryOn: \"5xx,503,cancelled\", retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 50ms}",
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let retries = retries.expect("retries");
    assert_eq!(retries.attempts, 3);
    assert_eq!(
        retries.per_try_timeout,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(retries.retry_on.as_deref(), Some("5xx,503,cancelled"));
    assert_eq!(retries.retry_remote_localities, Some(true));
    assert_eq!(retries.retry_ignore_previous_hosts, Some(false));
    assert_eq!(retries.backoff, Some(std::time::Duration::from_millis(50)));
}

#[test]
fn retry_attempts_cannot_be_negative() {
    let (config, _) = retries_of("{attempts: -1}");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].retries.attempts",
        "attempts cannot be negative",
    );
}

#[test]
fn a_retry_policy_with_zero_attempts_may_set_nothing_else() {
    let (config, _) = retries_of("{retryOn: 5xx}");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].retries",
        "http retry policy configured when attempts are set to 0 (disabled)",
    );
    let (config, retries) = retries_of("{attempts: 0}");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    assert_eq!(retries.map(|r| r.attempts), Some(0));
}

#[test]
fn retry_on_takes_envoy_policy_names_and_known_status_codes_only() {
    let (config, _) = retries_of("{attempts: 2, retryOn: \"gateway-error,429,retriable-4xx\"}");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    for (written, bad) in [
        ("\"5xx,bogus\"", "\"bogus\""),
        ("\"5xx, reset\"", "\" reset\""),
        ("\"599\"", "\"599\""),
    ] {
        let (config, _) = retries_of(&format!("{{attempts: 2, retryOn: {written}}}"));
        assert_has(
            &config,
            Severity::Error,
            "spec.http[0].retries.retryOn",
            &format!("{bad} is not a valid retryOn policy"),
        );
    }
}

#[test]
fn retry_durations_must_be_whole_milliseconds_of_at_least_one() {
    let (config, _) = retries_of("{attempts: 2, perTryTimeout: 0.5ms}");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].retries.perTryTimeout",
        "duration must be greater than 1ms",
    );
    let (config, _) = retries_of("{attempts: 2, backoff: 1.5ms}");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].retries.backoff",
        "only durations to ms precision are supported",
    );
}

#[test]
fn connection_pool_limits_timeouts_and_keepalives_are_decoded() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 5, connectTimeout: 2s, maxConnectionDuration: 1m, idleTimeout: 0s, tcpKeepalive: {probes: 3, time: 10s, interval: 2s}}\n      http: {http1MaxPendingRequests: 7, http2MaxRequests: 9, maxRequestsPerConnection: 11, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 13}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let pool = &config.model.destination_rules[0].traffic_policy.pool();
    let secs = std::time::Duration::from_secs;
    assert_eq!(pool.max_connections, Some(5));
    assert_eq!(pool.connect_timeout, Some(secs(2)));
    assert_eq!(pool.max_connection_duration, Some(secs(60)));
    assert_eq!(pool.tcp_idle_timeout, Some(secs(0)));
    assert_eq!(
        pool.tcp_keepalive,
        Some(crate::model::TcpKeepalive {
            probes: Some(3),
            time: Some(secs(10)),
            interval: Some(secs(2)),
        })
    );
    assert_eq!(pool.http1_max_pending_requests, Some(7));
    assert_eq!(pool.http2_max_requests, Some(9));
    assert_eq!(pool.max_requests_per_connection, Some(11));
    assert_eq!(pool.max_retries, Some(4));
    assert_eq!(pool.idle_timeout, Some(secs(30)));
    assert_eq!(pool.max_concurrent_streams, Some(13));
}

#[test]
fn tcp_keepalive_durations_are_at_least_a_millisecond() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    connectionPool:\n      tcp: {tcpKeepalive: {time: 0s}}\n",
    );
    assert_eq!(
        errors(&config),
        [(
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time".to_string(),
            "must be a valid duration greater than 1ms".to_string()
        )]
    );
}

#[test]
fn outlier_detection_is_decoded_with_every_field() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, consecutiveLocalOriginFailures: 4, splitExternalLocalOriginErrors: true, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 50, minHealthPercent: 30, outlierDetectionHttpErrorCodes: [500, 429]}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let outlier = config.model.destination_rules[0]
        .traffic_policy
        .outlier_detection
        .clone()
        .expect("outlier detection");
    let secs = std::time::Duration::from_secs;
    assert_eq!(
        outlier,
        OutlierDetection {
            consecutive_5xx_errors: Some(3),
            consecutive_gateway_errors: Some(2),
            consecutive_local_origin_failures: Some(4),
            split_external_local_origin_errors: true,
            interval: Some(secs(1)),
            base_ejection_time: Some(secs(2)),
            max_ejection_percent: Some(50),
            min_health_percent: Some(30),
            error_codes: vec![500, 429],
        }
    );
}

#[test]
fn local_origin_failures_need_split_external_local_origin_errors() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    outlierDetection: {consecutiveLocalOriginFailures: 4}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.trafficPolicy.outlierDetection",
        "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
    );
}

#[test]
fn min_health_percent_is_a_percentage_and_consecutive_errors_is_deprecated() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    outlierDetection: {minHealthPercent: 101, consecutiveErrors: 5}\n",
    );
    assert_has(
        &config,
        Severity::Error,
        "spec.trafficPolicy.outlierDetection.minHealthPercent",
        "minHealthPercent 101 must be between 0 and 100",
    );
    assert_has(
        &config,
        Severity::Warning,
        "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead (Istio gives it no effect)",
    );
}

fn hashing(consistent_hash: &str) -> Config {
    load_kind(
        "DestinationRule",
        &format!(
            "  host: web\n  trafficPolicy:\n    loadBalancer: {{consistentHash: {consistent_hash}}}\n"
        ),
    )
}

fn table_of(config: &Config) -> Option<crate::model::HashTable> {
    match &config
        .model
        .destination_rules
        .first()?
        .traffic_policy
        .load_balancer
    {
        Some(LoadBalancer::ConsistentHash(hash)) => Some(hash.table),
        _ => None,
    }
}

#[test]
fn consistent_hash_tables_are_ring_by_default_ring_or_maglev_as_written() {
    use crate::model::HashTable;
    assert_eq!(
        table_of(&hashing("{useSourceIp: true}")),
        Some(HashTable::Ring { minimum_size: 1024 })
    );
    assert_eq!(
        table_of(&hashing(
            "{useSourceIp: true, ringHash: {minimumRingSize: 4096}}"
        )),
        Some(HashTable::Ring { minimum_size: 4096 })
    );
    assert_eq!(
        table_of(&hashing("{useSourceIp: true, maglev: {tableSize: 65537}}")),
        Some(HashTable::Maglev { table_size: 65537 })
    );
    let deprecated = hashing("{useSourceIp: true, minimumRingSize: 2048}");
    assert_eq!(
        table_of(&deprecated),
        Some(HashTable::Ring { minimum_size: 2048 })
    );
    assert_has(
        &deprecated,
        Severity::Warning,
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
    );
}

#[test]
fn a_maglev_table_size_is_a_prime_below_5000011() {
    for (size, message) in [
        ("0", "tableSize must be set for maglev"),
        ("65536", "tableSize must be a prime number for maglev"),
        ("5000011", "tableSize must be less than 5000011 for maglev"),
    ] {
        assert_has(
            &hashing(&format!(
                "{{useSourceIp: true, maglev: {{tableSize: {size}}}}}"
            )),
            Severity::Error,
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            message,
        );
    }
}

#[test]
fn a_hash_cookie_needs_a_name_and_unique_attribute_names() {
    let config = hashing(
        "{httpCookie: {name: session, path: /, ttl: 60s, attributes: [{name: SameSite, value: Strict}, {name: Secure}]}}",
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let Some(LoadBalancer::ConsistentHash(hash)) = &config.model.destination_rules[0]
        .traffic_policy
        .load_balancer
    else {
        panic!("a consistent hash");
    };
    assert_eq!(
        hash.key,
        HashKey::Cookie {
            name: "session".into(),
            ttl: Some(std::time::Duration::from_secs(60)),
            path: Some("/".into()),
            attributes: vec![
                ("SameSite".into(), "Strict".into()),
                ("Secure".into(), String::new())
            ],
        }
    );
    assert_has(
        &hashing("{httpCookie: {name: s, attributes: [{name: A}, {name: A}]}}"),
        Severity::Error,
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1]",
        "duplicate cookie attribute name: A",
    );
}

#[test]
fn port_level_settings_are_decoded_and_need_a_port_and_a_field() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 5}}\n    portLevelSettings:\n    - port: {number: 8080}\n      loadBalancer: {simple: RANDOM}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let policy = &config.model.destination_rules[0].traffic_policy;
    assert_eq!(policy.port_level.len(), 1);
    assert_eq!(policy.port_level[0].port, 8080);
    let errors_of = |spec: &str| {
        errors(&load_kind(
            "DestinationRule",
            &format!("  host: web\n  trafficPolicy:\n    portLevelSettings:\n    - {spec}\n"),
        ))
    };
    assert_eq!(
        errors_of("{loadBalancer: {simple: RANDOM}}"),
        [(
            "spec.trafficPolicy.portLevelSettings[0]".to_string(),
            "portTrafficPolicy must have valid port".to_string()
        )]
    );
    assert_eq!(
        errors_of("{port: {number: 80}}"),
        [(
            "spec.trafficPolicy.portLevelSettings[0]".to_string(),
            "port traffic policy must have at least one field".to_string()
        )]
    );
}

fn mirrors_of(rule: &str) -> (Config, Vec<crate::model::HttpMirror>) {
    let config = vs(&format!(
        "  hosts: [a.example.com]\n  gateways: [gw]\n{ROUTE}{rule}"
    ));
    let mirrors = config
        .model
        .virtual_services
        .first()
        .and_then(|vs| vs.http.first())
        .map(|rule| rule.mirrors.clone())
        .unwrap_or_default();
    (config, mirrors)
}

#[test]
fn a_mirror_takes_all_requests_unless_a_share_says_otherwise_and_zero_is_none() {
    use crate::model::PerMillion;
    let (config, mirrors) = mirrors_of("    mirror: {host: shadow}\n");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    assert_eq!(mirrors.len(), 1);
    assert_eq!(mirrors[0].share, PerMillion::ALL);
    assert_eq!(mirrors[0].destination.host, "shadow");
    let (_, mirrors) =
        mirrors_of("    mirror: {host: shadow}\n    mirrorPercentage: {value: 12.5}\n");
    assert_eq!(mirrors[0].share, PerMillion(125_000));
    let (_, mirrors) = mirrors_of("    mirror: {host: shadow}\n    mirrorPercentage: {value: 0}\n");
    assert!(mirrors.is_empty(), "an explicit 0 mirrors nothing");
    let (config, mirrors) = mirrors_of("    mirror: {host: shadow}\n    mirrorPercent: 30\n");
    assert_eq!(mirrors[0].share, PerMillion(300_000));
    assert_has(
        &config,
        Severity::Warning,
        "spec.http[0].mirrorPercent",
        "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
    );
    let (_, mirrors) = mirrors_of(
        "    mirrors:\n    - destination: {host: one}\n    - destination: {host: two}\n      percentage: {value: 50}\n",
    );
    let shares: Vec<u32> = mirrors.iter().map(|m| m.share.0).collect();
    assert_eq!(shares, [1_000_000, 500_000]);
}

#[test]
fn mirror_and_mirrors_are_exclusive_and_shares_stay_within_0_and_100() {
    let (config, _) =
        mirrors_of("    mirror: {host: a}\n    mirrors:\n    - destination: {host: b}\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0]",
        "HTTP route cannot contain both mirror and mirrors",
    );
    let (config, _) = mirrors_of("    mirror: {host: a}\n    mirrorPercentage: {value: 101}\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].mirrorPercentage.value",
        "mirror_percentage must have a max value of 100 (it has 101.000000)",
    );
    let (config, _) = mirrors_of("    mirrors:\n    - percentage: {value: 5}\n");
    assert_has(
        &config,
        Severity::Error,
        "spec.http[0].mirrors[0]",
        "destination is required for mirrors",
    );
}

#[test]
fn a_retry_budget_is_decoded_with_istios_defaults() {
    let budget = |spec: &str| {
        load_kind(
            "DestinationRule",
            &format!("  host: web\n  trafficPolicy:\n    retryBudget: {spec}\n"),
        )
    };
    let config = budget("{percent: 50, minRetryConcurrency: 7}");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    assert_eq!(
        config.model.destination_rules[0]
            .traffic_policy
            .retry_budget,
        Some(crate::model::RetryBudget {
            percent: 50.0,
            min_retry_concurrency: 7,
            budget_interval: std::time::Duration::ZERO,
        })
    );
    assert_eq!(
        budget("{}").model.destination_rules[0]
            .traffic_policy
            .retry_budget,
        Some(crate::model::RetryBudget {
            percent: 20.0,
            min_retry_concurrency: 3,
            budget_interval: std::time::Duration::ZERO,
        })
    );
    assert_has(
        &budget("{percent: 150}"),
        Severity::Error,
        "spec.trafficPolicy.retryBudget.percent",
        "percent 150 must be between 0 and 100",
    );
}

#[test]
fn a_retry_budgets_interval_is_a_duration_applied_without_a_warning() {
    let budget = |spec: &str| {
        load_kind(
            "DestinationRule",
            &format!("  host: web\n  trafficPolicy:\n    retryBudget: {spec}\n"),
        )
    };
    let config = budget("{budgetInterval: 10s}");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    assert_eq!(
        config.model.destination_rules[0]
            .traffic_policy
            .retry_budget
            .as_ref()
            .map(|b| b.budget_interval),
        Some(std::time::Duration::from_secs(10))
    );
    assert_has(
        &budget("{budgetInterval: ten}"),
        Severity::Error,
        "spec.trafficPolicy.retryBudget.budgetInterval",
        "invalid duration \"ten\": expected a number with a unit such as 5s, 100ms or 1m",
    );
}

#[test]
fn a_destinations_headers_are_decoded_with_the_rules_checks() {
    let config = vs(
        "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: web}\n      headers: {request: {set: {x-a: b}}, response: {remove: [server]}}\n",
    );
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    let HttpAction::Route(destinations) = &config.model.virtual_services[0].http[0].action else {
        panic!("a route");
    };
    assert_eq!(
        destinations[0].headers.request.set,
        [("x-a".to_string(), "b".to_string())]
    );
    assert_eq!(destinations[0].headers.response.remove, ["server"]);
}

#[test]
fn derive_port_is_one_of_two_values_and_excludes_port() {
    let redirect = |spec: &str| {
        vs(&format!(
            "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - redirect: {spec}\n"
        ))
    };
    assert!(
        redirect("{authority: b, derivePort: FROM_REQUEST_PORT}")
            .diagnostics
            .is_empty()
    );
    assert_has(
        &redirect("{authority: b, derivePort: FROM_SOMEWHERE}"),
        Severity::Error,
        "spec.http[0].redirect.derivePort",
        "invalid derivePort \"FROM_SOMEWHERE\", supported are FROM_PROTOCOL_DEFAULT, FROM_REQUEST_PORT",
    );
    assert_has(
        &redirect("{authority: b, port: 8080, derivePort: FROM_REQUEST_PORT}"),
        Severity::Error,
        "spec.http[0].redirect.derivePort",
        "only one of port and derivePort may be set",
    );
}

#[test]
fn warmup_and_the_deprecated_warmup_duration_secs_are_decoded() {
    let lb = |spec: &str| {
        load_kind(
            "DestinationRule",
            &format!("  host: web\n  trafficPolicy:\n    loadBalancer: {spec}\n"),
        )
    };
    let config =
        lb("{simple: ROUND_ROBIN, warmup: {duration: 60s, minimumPercent: 20, aggression: 2}}");
    assert!(config.diagnostics.is_empty(), "{:#?}", config.diagnostics);
    assert_eq!(
        config.model.destination_rules[0].traffic_policy.warmup,
        Some(crate::model::Warmup {
            window: std::time::Duration::from_secs(60),
            minimum_percent: 20.0,
            aggression: 2.0,
        })
    );
    let old = lb("{warmupDurationSecs: 30s}");
    assert!(old.diagnostics.is_empty(), "{:#?}", old.diagnostics);
    assert_eq!(
        old.model.destination_rules[0].traffic_policy.warmup,
        Some(crate::model::Warmup {
            window: std::time::Duration::from_secs(30),
            minimum_percent: 10.0,
            aggression: 1.0,
        })
    );
}

#[test]
fn insecure_skip_verify_with_something_to_verify_by_is_an_error_as_in_istio() {
    let tls = |tls: &str| {
        load_kind(
            "DestinationRule",
            &format!("  host: web\n  trafficPolicy:\n    tls: {tls}\n"),
        )
    };
    let at = "spec.trafficPolicy.tls.insecureSkipVerify";
    assert_has(
        &tls("{mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [web]}"),
        Severity::Error,
        at,
        "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
    );
    assert_has(
        &tls(
            "{mode: MUTUAL, insecureSkipVerify: true, caCertificates: /ca.pem, clientCertificate: /c.pem, privateKey: /k.pem}",
        ),
        Severity::Error,
        at,
        "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
    );
    let alone = tls("{mode: SIMPLE, insecureSkipVerify: true}");
    assert!(alone.diagnostics.is_empty(), "{:?}", alone.diagnostics);
    assert!(
        alone.model.destination_rules[0]
            .traffic_policy
            .tls
            .as_ref()
            .is_some_and(|t| t.insecure_skip_verify)
    );
}

#[test]
fn passthrough_load_balancing_is_decoded_with_a_note_saying_where_it_has_an_original_destination() {
    let config = load_kind(
        "DestinationRule",
        "  host: web\n  trafficPolicy:\n    loadBalancer: {simple: PASSTHROUGH}\n",
    );
    assert_has(
        &config,
        Severity::Note,
        "spec.trafficPolicy.loadBalancer.simple",
        "PASSTHROUGH sends each connection to its original destination (Envoy's ORIGINAL_DST): only connections captured from workloads (an egress instance's --egress-from) have one; on a gateway's own addresses requests get 503 UH and connections are closed",
    );
    assert_eq!(config.diagnostics.len(), 1, "{:#?}", config.diagnostics);
    assert_eq!(
        config.model.destination_rules[0]
            .traffic_policy
            .load_balancer,
        Some(LoadBalancer::Simple(crate::model::SimpleLb::Passthrough))
    );
}

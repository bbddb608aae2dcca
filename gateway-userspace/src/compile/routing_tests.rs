//! VirtualService binding, route order and destination resolution, from
//! YAML through the whole pipeline.
use std::path::PathBuf;

use super::*;
#[allow(
    unused_imports,
    reason = "one import list shared by the test cases; not every case uses every name"
)]
use crate::plan::*;
use crate::{
    config::{Severity, load_sources},
    model::Instance,
};

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*.example.com\"]
";

const BACKENDS: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: apps}
spec:
  hosts: [web.apps.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 192.0.2.10, labels: {version: v1}}
  - {address: 192.0.2.11, labels: {version: v2}, ports: {http: 9080}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: apps}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

fn compile_yaml(docs: &[&str]) -> Plan {
    let text = docs.join("---\n");
    let config = load_sources(&[(PathBuf::from("t.yaml"), text)]);
    let errors: Vec<String> = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    plan(&config.model, &Instance::default(), &[]).expect("plan")
}

fn vs(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

/// Route sources of one host on the first HTTP listener.
fn routes_of(plan: &Plan, host: &str) -> Vec<String> {
    let vhost = plan.http[0].hosts.lookup(host).expect("virtual host");
    vhost.routes.iter().map(|r| r.source.clone()).collect()
}

fn first_forward(plan: &Plan, host: &str) -> Forward {
    let vhost = plan.http[0].hosts.lookup(host).expect("virtual host");
    match &vhost.routes[0].action {
        RouteAction::Forward { backends, .. } => backends.clone(),
        other => panic!("not a forward: {other:?}"),
    }
}

const ROUTE_WEB: &str = "  http:\n  - route:\n    - destination: {host: web}\n";

#[test]
fn bound_virtual_service_becomes_the_more_specific_virtual_host() {
    let plan = compile_yaml(&[
        GATEWAY,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert_eq!(
        routes_of(&plan, "a.example.com"),
        vec!["VirtualService apps/r spec.http[0]"]
    );
    assert!(
        routes_of(&plan, "b.example.com").is_empty(),
        "other hosts keep the server's route-less vhost"
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn virtual_service_without_gateways_is_mesh_only() {
    let plan = compile_yaml(&[
        GATEWAY,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n{ROUTE_WEB}"),
        ),
    ]);
    assert!(routes_of(&plan, "a.example.com").is_empty());
}

#[test]
fn virtual_service_hosts_must_intersect_server_hosts() {
    let plan = compile_yaml(&[
        GATEWAY,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.other.org]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert!(plan.http[0].hosts.lookup("a.other.org").is_none());
}

#[test]
fn namespace_scoped_server_host_binds_only_that_namespace() {
    let gateway = GATEWAY.replace(
        "hosts: [\"*.example.com\"]",
        "hosts: [\"apps/*.example.com\"]",
    );
    let bound = compile_yaml(&[
        &gateway,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert_eq!(routes_of(&bound, "a.example.com").len(), 1);
    let other = compile_yaml(&[
        &gateway,
        BACKENDS,
        &vs(
            "r",
            "shop",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert!(routes_of(&other, "a.example.com").is_empty());
}

#[test]
fn dot_namespace_server_host_binds_the_gateways_own_namespace() {
    let gateway = GATEWAY.replace("hosts: [\"*.example.com\"]", "hosts: [\"./*.example.com\"]");
    let own = compile_yaml(&[
        &gateway,
        BACKENDS,
        &vs(
            "r",
            "istio-system",
            "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: web.apps.svc.cluster.local}\n",
        ),
    ]);
    assert_eq!(routes_of(&own, "a.example.com").len(), 1);
}

#[test]
fn star_namespace_server_host_binds_every_namespace() {
    let gateway = GATEWAY.replace("hosts: [\"*.example.com\"]", "hosts: [\"*/*.example.com\"]");
    let plan = compile_yaml(&[
        &gateway,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert_eq!(routes_of(&plan, "a.example.com").len(), 1);
}

#[test]
fn export_to_dot_hides_a_virtual_service_from_the_gateway_namespace() {
    let plan = compile_yaml(&[
        GATEWAY,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!(
                "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  exportTo: [\".\"]\n{ROUTE_WEB}"
            ),
        ),
    ]);
    assert!(routes_of(&plan, "a.example.com").is_empty());
}

#[test]
fn routes_of_several_virtual_services_follow_creation_order_with_catch_alls_last() {
    let first = vs("zz-first", "apps", "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web}\n")
        .replace("metadata: {name: zz-first, namespace: apps}", "metadata: {name: zz-first, namespace: apps, creationTimestamp: \"2024-01-01T00:00:00Z\"}");
    let second = vs("aa-second", "apps", "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{uri: {prefix: /api}}]\n    route:\n    - destination: {host: web}\n")
        .replace("metadata: {name: aa-second, namespace: apps}", "metadata: {name: aa-second, namespace: apps, creationTimestamp: \"2025-01-01T00:00:00Z\"}");
    let plan = compile_yaml(&[GATEWAY, BACKENDS, &first, &second]);
    assert_eq!(
        routes_of(&plan, "a.example.com"),
        vec![
            "VirtualService apps/aa-second spec.http[0]",
            "VirtualService apps/zz-first spec.http[0]"
        ],
        "zz-first is older, but its catch-all moves after aa-second's /api"
    );
}

#[test]
fn a_virtual_service_bound_through_two_merged_gateways_routes_once() {
    let second_gateway = GATEWAY.replace("name: gw,", "name: gw2,");
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw, istio-system/gw2]\n  http:\n  - match: [{gateways: [istio-system/gw2], uri: {prefix: /two}}, {uri: {prefix: /both}}]\n    route:\n    - destination: {host: web}\n  - route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[GATEWAY, &second_gateway, BACKENDS, &vs("r", "apps", spec)]);
    let vhost = plan.http[0].hosts.lookup("a.example.com").expect("host");
    let routes: Vec<(&str, usize)> = vhost
        .routes
        .iter()
        .map(|r| (r.source.as_str(), r.matches.len()))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("VirtualService apps/r spec.http[0]", 1),
            ("VirtualService apps/r spec.http[0]", 2),
            ("VirtualService apps/r spec.http[1]", 0),
        ],
        "the same rule bound through both servers is one route; as each server sees it differently, it is two"
    );
}

#[test]
fn rules_after_a_catch_all_in_one_virtual_service_are_unreachable_and_left_out() {
    let plan = compile_yaml(&[
        GATEWAY,
        BACKENDS,
        &vs(
            "r",
            "apps",
            "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web}\n  - match: [{uri: {prefix: /never}}]\n    route:\n    - destination: {host: web}\n",
        ),
    ]);
    assert_eq!(
        routes_of(&plan, "a.example.com"),
        vec!["VirtualService apps/r spec.http[0]"]
    );
}

#[test]
fn match_port_and_gateways_filter_rules_per_server() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw, istio-system/other]\n  http:\n  - match: [{port: 443, uri: {prefix: /tls}}]\n    route:\n    - destination: {host: web}\n  - match: [{gateways: [istio-system/other], uri: {prefix: /other}}]\n    route:\n    - destination: {host: web}\n  - match: [{uri: {prefix: /here}}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    assert_eq!(
        routes_of(&plan, "a.example.com"),
        vec!["VirtualService apps/r spec.http[2]"]
    );
}

#[test]
fn match_gateways_resolve_like_top_level_gateways() {
    // `gw` in a match means `<VirtualService namespace>/gw`, as at the top level.
    let gateway = GATEWAY.replace("namespace: istio-system}", "namespace: apps}");
    let spec = "  hosts: [a.example.com]\n  gateways: [gw]\n  http:\n  - match: [{gateways: [gw], uri: {prefix: /mine}}]\n    route:\n    - destination: {host: web}\n  - match: [{gateways: [other], uri: {prefix: /other}}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[&gateway, BACKENDS, &vs("r", "apps", spec)]);
    assert_eq!(
        routes_of(&plan, "a.example.com"),
        vec!["VirtualService apps/r spec.http[0]"]
    );
}

#[test]
fn short_destination_hosts_resolve_in_the_virtual_service_namespace() {
    let plan = compile_yaml(&[
        GATEWAY,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert_eq!(
        first_forward(&plan, "a.example.com").0[0]
            .target
            .clone()
            .map(|id| plan.clusters[id.index()].name.clone())
            .map_err(|e| e.to_string()),
        Ok("outbound|8080||web.apps.svc.cluster.local".to_string())
    );
    let cluster = &plan.clusters[0];
    let endpoints: Vec<String> = cluster
        .endpoints
        .iter()
        .map(|e| format!("{:?}:{}", e.address, e.port))
        .collect();
    assert_eq!(
        endpoints,
        vec!["Ip(192.0.2.10):8080", "Ip(192.0.2.11):9080"],
        "endpoint port names override the service port"
    );
}

#[test]
fn service_entries_and_destination_rules_not_exported_to_the_gateway_are_not_used() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web, subset: v1}\n";
    let route = vs("r", "apps", spec);
    let hidden_entry = BACKENDS.replace(
        "  resolution: STATIC\n",
        "  resolution: STATIC\n  exportTo: [\".\"]\n",
    );
    let plan = compile_yaml(&[GATEWAY, &hidden_entry, &route]);
    assert!(plan.clusters.is_empty());
    assert!(
        plan.warnings[0].contains("no ServiceEntry declares host web.apps.svc.cluster.local"),
        "{:?}",
        plan.warnings
    );
    let hidden_rule = BACKENDS.replace("  host: web\n", "  host: web\n  exportTo: [\".\"]\n");
    let plan = compile_yaml(&[GATEWAY, &hidden_rule, &route]);
    assert!(plan.clusters.is_empty());
    assert!(
        plan.warnings[0]
            .contains("subset v1 needs a DestinationRule for web.apps.svc.cluster.local"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn subsets_select_endpoints_by_destination_rule_labels() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web, subset: v1}\n      weight: 90\n    - destination: {host: web, subset: v2}\n      weight: 10\n";
    let plan = compile_yaml(&[GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    let names: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "outbound|8080|v1|web.apps.svc.cluster.local",
            "outbound|8080|v2|web.apps.svc.cluster.local"
        ]
    );
    assert_eq!(plan.clusters[0].endpoints.len(), 1);
    let weights: Vec<u32> = first_forward(&plan, "a.example.com")
        .0
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, vec![90, 10]);
}

#[test]
fn unresolvable_destination_stays_as_a_503_route_with_a_warning() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: nowhere.example.org}\n";
    let plan = compile_yaml(&[GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    assert_eq!(
        first_forward(&plan, "a.example.com").0[0]
            .target
            .clone()
            .map(|id| plan.clusters[id.index()].name.clone())
            .map_err(|e| e.to_string()),
        Err("no ServiceEntry declares host nowhere.example.org".to_string())
    );
    assert_eq!(
        plan.warnings,
        vec!["VirtualService apps/r spec.http[0]: no ServiceEntry declares host nowhere.example.org; requests routed there get 503".to_string()]
    );
}

#[test]
fn undefined_subset_is_a_503_route() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web, subset: v9}\n";
    let plan = compile_yaml(&[GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    assert_eq!(
        first_forward(&plan, "a.example.com").0[0]
            .target
            .clone()
            .map(|id| plan.clusters[id.index()].name.clone())
            .map_err(|e| e.to_string()),
        Err("subset v9 is not defined in DestinationRule apps/web".to_string())
    );
}

#[test]
fn destination_port_is_required_when_the_service_has_several() {
    let two_ports = BACKENDS.replace("ports: [{number: 8080, name: http, protocol: HTTP}]", "ports: [{number: 8080, name: http, protocol: HTTP}, {number: 8443, name: https, protocol: HTTPS}]");
    let plan = compile_yaml(&[
        GATEWAY,
        &two_ports,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert_eq!(
        first_forward(&plan, "a.example.com").0[0]
            .target
            .clone()
            .map(|id| plan.clusters[id.index()].name.clone())
            .map_err(|e| e.to_string()),
        Err("destination port required: web.apps.svc.cluster.local has 2 ports".to_string())
    );
}

#[test]
fn redirect_server_redirects_bound_virtual_hosts_too() {
    let gateway = GATEWAY.replace(
        "    hosts: [\"*.example.com\"]\n",
        "    hosts: [\"*.example.com\"]\n    tls: {httpsRedirect: true}\n",
    );
    let plan = compile_yaml(&[
        &gateway,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n{ROUTE_WEB}"),
        ),
    ]);
    assert!(
        plan.http[0]
            .hosts
            .lookup("a.example.com")
            .unwrap()
            .https_redirect
    );
    assert!(
        plan.http[0]
            .hosts
            .lookup("b.example.com")
            .unwrap()
            .https_redirect
    );
}

const TLS_GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls, namespace: istio-system}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [\"*.example.com\"]
    tls: {mode: PASSTHROUGH}
";

#[test]
fn passthrough_server_routes_by_sni_and_reports_duplicates() {
    let tls_spec = "  hosts: [\"*.example.com\"]\n  gateways: [istio-system/tls]\n  tls:\n  - match: [{sniHosts: [a.example.com]}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[
        TLS_GATEWAY,
        BACKENDS,
        &vs("first", "apps", tls_spec),
        &vs("second", "apps", tls_spec),
    ]);
    let TlsServerKind::Passthrough { routes } = &plan.tls[0].servers[0].kind else {
        panic!("not passthrough")
    };
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].sni.to_string(), "a.example.com");
    assert_eq!(routes[0].source, "VirtualService apps/first spec.tls[0]");
    assert_eq!(
        plan.warnings,
        vec!["VirtualService apps/second spec.tls[0]: duplicate SNI host a.example.com on port 443; the earlier route wins".to_string()]
    );
}

#[test]
fn tcp_server_uses_the_first_tcp_route_and_without_one_opens_nothing() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    let without = compile_yaml(&[gateway, BACKENDS]);
    assert!(without.listeners.is_empty());
    assert_eq!(
        without.dropped[0].reason,
        "no VirtualService tcp route binds port 9000; Istio opens no listener"
    );
    let tcp_spec = "  hosts: [\"*\"]\n  gateways: [istio-system/tcp]\n  tcp:\n  - match: [{port: 9001}]\n    route:\n    - destination: {host: web, subset: v2}\n  - route:\n    - destination: {host: web, subset: v1}\n";
    let with = compile_yaml(&[gateway, BACKENDS, &vs("t", "apps", tcp_spec)]);
    assert_eq!(with.tcp[0].source, "VirtualService apps/t spec.tcp[1]");
    assert_eq!(
        with.tcp[0].route.0[0]
            .target
            .clone()
            .map(|id| with.clusters[id.index()].name.clone())
            .map_err(|e| e.to_string()),
        Ok("outbound|8080|v1|web.apps.svc.cluster.local".to_string())
    );
}

#[test]
fn an_unresolvable_tcp_forward_closes_connections_where_http_answers_503() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    let tcp_spec = "  hosts: [\"*\"]\n  gateways: [istio-system/tcp]\n  tcp:\n  - route:\n    - destination: {host: nowhere.example.org}\n";
    let http_spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: nowhere.example.org}\n";
    let plan = compile_yaml(&[
        GATEWAY,
        gateway,
        &vs("t", "apps", tcp_spec),
        &vs("h", "apps", http_spec),
    ]);
    assert_eq!(
        plan.warnings,
        vec![
            "VirtualService apps/h spec.http[0]: no ServiceEntry declares host nowhere.example.org; requests routed there get 503",
            "VirtualService apps/t spec.tcp[0]: no ServiceEntry declares host nowhere.example.org; connections routed there are closed",
        ]
    );
    let table = crate::report::table(&plan);
    assert!(
        table.contains("    -> connection closed: no ServiceEntry declares host nowhere.example.org (100)  [VirtualService apps/t spec.tcp[0]]\n"),
        "{table}"
    );
    assert!(
        table.contains("any -> 503: no ServiceEntry declares host nowhere.example.org (100)  [VirtualService apps/h spec.http[0]]\n"),
        "{table}"
    );
}

#[test]
fn a_virtual_service_bound_through_two_merged_gateways_warns_once() {
    let second = GATEWAY
        .replace("name: gw,", "name: gw2,")
        .replace("*.example.com", "*.example.org");
    let spec = "  hosts: [\"*\"]\n  gateways: [istio-system/gw, istio-system/gw2]\n  http:\n  - route:\n    - destination: {host: nowhere.example.org}\n";
    let plan = compile_yaml(&[GATEWAY, &second, &vs("r", "apps", spec)]);
    assert_eq!(plan.http.len(), 1, "the two servers share port 80");
    assert_eq!(
        plan.warnings,
        vec![
            "VirtualService apps/r spec.http[0]: no ServiceEntry declares host nowhere.example.org; requests routed there get 503"
        ]
    );
}

#[test]
fn https_server_terminates_and_routes_its_own_hosts() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert}\n";
    let plan = compile_yaml(&[
        gateway,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/web]\n{ROUTE_WEB}"),
        ),
    ]);
    let TlsServerKind::TerminateHttp { hosts, tls } = &plan.tls[0].servers[0].kind else {
        panic!("not terminating")
    };
    assert_eq!(tls.credential_names, vec!["a-cert".to_string()]);
    assert_eq!(hosts.lookup("a.example.com").unwrap().routes.len(), 1);
}

#[test]
fn https_redirect_on_a_terminating_server_routes_instead_of_redirecting() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert, httpsRedirect: true}\n";
    let plan = compile_yaml(&[
        gateway,
        BACKENDS,
        &vs(
            "r",
            "apps",
            &format!("  hosts: [a.example.com]\n  gateways: [istio-system/web]\n{ROUTE_WEB}"),
        ),
    ]);
    let TlsServerKind::TerminateHttp { hosts, .. } = &plan.tls[0].servers[0].kind else {
        panic!("not terminating")
    };
    for vhost in hosts.hosts() {
        assert!(!vhost.https_redirect, "{} redirects", vhost.pattern);
    }
    assert_eq!(hosts.lookup("a.example.com").unwrap().routes.len(), 1);
}

fn service_entry(name: &str, host: &str, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  hosts: [\"{host}\"]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: {address}}}]\n"
    )
}

/// The endpoint addresses of the one cluster a plan builds.
fn endpoint_addresses(plan: &Plan) -> Vec<String> {
    assert_eq!(plan.clusters.len(), 1, "{:?}", plan.clusters);
    plan.clusters[0]
        .endpoints
        .iter()
        .map(|e| format!("{:?}", e.address))
        .collect()
}

#[test]
fn most_specific_service_entry_host_wins_in_either_order() {
    // `a-wild` sorts first by name, so only specificity can pick `z-api`.
    let wild = service_entry("a-wild", "*.example.com", "192.0.2.20");
    let exact = service_entry("z-api", "api.example.com", "192.0.2.21");
    let route = vs(
        "r",
        "apps",
        "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: api.example.com}\n",
    );
    for entries in [[&wild, &exact], [&exact, &wild]] {
        let plan = compile_yaml(&[GATEWAY, entries[0], entries[1], &route]);
        assert_eq!(endpoint_addresses(&plan), vec!["Ip(192.0.2.21)"]);
    }
}

#[test]
fn subset_selects_only_endpoints_with_all_its_labels() {
    // Endpoint .10 has both labels of subset v1; .11 has only `version: v1`.
    let backends = BACKENDS
        .replace("labels: {version: v1}}", "labels: {version: v1, zone: a}}")
        .replace("labels: {version: v2}", "labels: {version: v1, zone: b}");
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web, subset: v1}\n";
    let plan = compile_yaml(&[GATEWAY, &backends, &vs("r", "apps", spec)]);
    assert_eq!(endpoint_addresses(&plan), vec!["Ip(192.0.2.10)"]);
}

#[test]
fn rule_with_any_catch_all_match_is_a_catch_all() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{uri: {prefix: /api}}, {uri: {prefix: /}}]\n    route:\n    - destination: {host: web}\n  - match: [{uri: {prefix: /never}}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    let vhost = plan.http[0].hosts.lookup("a.example.com").unwrap();
    let routes: Vec<(&str, bool)> = vhost
        .routes
        .iter()
        .map(|r| (r.source.as_str(), r.catch_all))
        .collect();
    assert_eq!(routes, vec![("VirtualService apps/r spec.http[0]", true)]);
}

#[test]
fn tls_server_kind_follows_mode_and_protocol() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tls, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 443, name: auto, protocol: TLS}\n    hosts: [auto.example.com]\n    tls: {mode: AUTO_PASSTHROUGH}\n  - port: {number: 443, name: tcp, protocol: TLS}\n    hosts: [tcp.example.com]\n    tls: {mode: SIMPLE, credentialName: c}\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [https.example.com]\n    tls: {mode: SIMPLE, credentialName: c}\n";
    let plan = compile_yaml(&[gateway]);
    let kinds: Vec<&str> = plan.tls[0]
        .servers
        .iter()
        .map(|s| match s.kind {
            TlsServerKind::AutoPassthrough { .. } => "auto",
            TlsServerKind::TerminateTcp { .. } => "tcp",
            TlsServerKind::TerminateHttp { .. } => "http",
            TlsServerKind::Passthrough { .. } => "passthrough",
        })
        .collect();
    assert_eq!(kinds, vec!["auto", "tcp", "http"]);
}

#[test]
fn tls_route_match_port_must_be_the_listener_port() {
    let spec = "  hosts: [\"*.example.com\"]\n  gateways: [istio-system/tls]\n  tls:\n  - match: [{port: 8443, sniHosts: [a.example.com]}]\n    route:\n    - destination: {host: web}\n  - match: [{port: 443, sniHosts: [a.example.com]}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[TLS_GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    let TlsServerKind::Passthrough { routes } = &plan.tls[0].servers[0].kind else {
        panic!("not passthrough")
    };
    let sources: Vec<&str> = routes.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(sources, vec!["VirtualService apps/r spec.tls[1]"]);
}

#[test]
fn tcp_route_match_needs_the_port_and_gateway_of_the_server() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    let tcp_spec = "  hosts: [\"*\"]\n  gateways: [istio-system/tcp, istio-system/other]\n  tcp:\n  - match: [{gateways: [istio-system/other]}]\n    route:\n    - destination: {host: web}\n  - match: [{port: 9000}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[gateway, BACKENDS, &vs("t", "apps", tcp_spec)]);
    assert_eq!(plan.tcp[0].source, "VirtualService apps/t spec.tcp[1]");
}

#[test]
fn dns_service_entry_without_endpoints_resolves_its_host() {
    let dns = service_entry("api", "api.example.com", "192.0.2.21").replace(
        "resolution: STATIC\n  endpoints: [{address: 192.0.2.21}]\n",
        "resolution: DNS\n",
    );
    let route = vs(
        "r",
        "apps",
        "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: api.example.com}\n",
    );
    let plan = compile_yaml(&[GATEWAY, &dns, &route]);
    assert_eq!(endpoint_addresses(&plan), vec!["Dns(\"api.example.com\")"]);
}

#[test]
fn service_entry_with_resolution_none_is_a_503_route() {
    let none = service_entry("api", "api.example.com", "192.0.2.21").replace(
        "resolution: STATIC\n  endpoints: [{address: 192.0.2.21}]\n",
        "resolution: NONE\n",
    );
    let route = vs(
        "r",
        "apps",
        "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: api.example.com}\n",
    );
    let plan = compile_yaml(&[GATEWAY, &none, &route]);
    assert_eq!(
        first_forward(&plan, "a.example.com").0[0].target.clone().map(|id| plan.clusters[id.index()].name.clone()).map_err(|e| e.to_string()),
        Err("ServiceEntry apps/api has resolution NONE: at a gateway Istio builds its cluster from endpoints (EDS) and it has none; loadBalancer.simple PASSTHROUGH in a DestinationRule sends to the original destination".to_string())
    );
}

#[test]
fn service_entries_without_ports_or_with_dynamic_dns_are_503_routes_saying_why() {
    let route = vs(
        "r",
        "apps",
        "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: api.example.com, port: {number: 443}}\n",
    );
    let no_ports = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: apps}\nspec:\n  hosts: [api.example.com]\n  resolution: DNS\n";
    let plan = compile_yaml(&[GATEWAY, no_ports, &route]);
    assert_eq!(
        first_forward(&plan, "a.example.com").0[0]
            .target
            .clone()
            .map(|id| plan.clusters[id.index()].name.clone())
            .map_err(|e| e.to_string()),
        Err("ServiceEntry apps/api declares no ports".to_string())
    );
    let dynamic = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: apps}\nspec:\n  hosts: [\"*.example.com\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DYNAMIC_DNS\n";
    let plan = compile_yaml(&[GATEWAY, dynamic, &route]);
    assert_eq!(
        first_forward(&plan, "a.example.com").0[0].target.clone().map(|id| plan.clusters[id.index()].name.clone()).map_err(|e| e.to_string()),
        Err("ServiceEntry apps/api has resolution DYNAMIC_DNS, which this gateway does not serve yet".to_string())
    );
}

#[test]
fn header_operations_rewrites_and_timeouts_reach_every_route_kind() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{uri: {prefix: /old}}]\n    redirect: {uri: /new}\n    headers: {response: {set: {x-moved: \"yes\"}}}\n  - route:\n    - destination: {host: web}\n    timeout: 2s\n    rewrite: {uriRegexRewrite: {match: \"^/api/(.*)\", rewrite: \"/\\\\1\"}}\n    headers: {request: {remove: [cookie]}, response: {add: {x-served-by: gw}}}\n";
    let plan = compile_yaml(&[GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    let routes = &plan.http[0].hosts.lookup("a.example.com").unwrap().routes;
    assert_eq!(
        routes[0].response_headers.set,
        vec![("x-moved".to_string(), "yes".to_string())]
    );
    assert!(matches!(routes[0].action, RouteAction::Redirect(_)));
    assert_eq!(routes[1].request_headers.remove, vec!["cookie".to_string()]);
    assert_eq!(
        routes[1].response_headers.add,
        vec![("x-served-by".to_string(), "gw".to_string())]
    );
    let RouteAction::Forward {
        timeout,
        rewrite_uri_regex,
        ..
    } = &routes[1].action
    else {
        panic!("not a forward: {:?}", routes[1].action)
    };
    assert_eq!(*timeout, Some(std::time::Duration::from_secs(2)));
    assert_eq!(
        rewrite_uri_regex.as_ref(),
        Some(&("^/api/(.*)".to_string(), "/\\1".to_string()))
    );
}

#[test]
fn a_redirect_prefix_rewrite_reaches_the_plan_and_the_location() {
    // istio/api's HTTPRedirect example.
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{uri: {prefix: /foo/}}]\n    redirect: {authority: foo.example.com, prefixRewrite: /}\n";
    let plan = compile_yaml(&[GATEWAY, &vs("r", "apps", spec)]);
    let routes = &plan.http[0].hosts.lookup("a.example.com").unwrap().routes;
    let RouteAction::Redirect(redirect) = &routes[0].action else {
        panic!("not a redirect: {:?}", routes[0].action)
    };
    assert_eq!(redirect.prefix_rewrite.as_deref(), Some("/"));
    let request = crate::proxy::rewrite::RedirectRequest {
        scheme: "http",
        authority: "a.example.com",
        path_and_query: "/foo/bar?x=1",
        matched_uri: routes[0].matches[0].uri.as_ref(),
    };
    assert_eq!(
        crate::proxy::rewrite::redirect_location(redirect, request, false),
        "http://foo.example.com/bar?x=1"
    );
}

#[test]
fn destination_subnets_do_not_change_which_tcp_rule_a_gateway_takes() {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    let spec = "  hosts: [\"*\"]\n  gateways: [istio-system/tcp]\n  tcp:\n  - match: [{destinationSubnets: [198.51.100.0/24]}]\n    route:\n    - destination: {host: web, subset: v1}\n  - route:\n    - destination: {host: web, subset: v2}\n";
    let plan = compile_yaml(&[gateway, BACKENDS, &vs("t", "apps", spec)]);
    assert_eq!(plan.tcp[0].source, "VirtualService apps/t spec.tcp[0]");
    assert_eq!(
        plan.warnings,
        vec!["VirtualService apps/t spec.tcp[0]: destinationSubnets 198.51.100.0/24 not applied: as in Istio, a gateway matches tls and tcp rules by SNI, port and gateway only, so the rule takes connections to any address".to_string()]
    );
}

#[test]
fn destination_subnets_of_a_passthrough_match_are_reported_not_applied() {
    let spec = "  hosts: [\"*.example.com\"]\n  gateways: [istio-system/tls]\n  tls:\n  - match: [{sniHosts: [a.example.com], destinationSubnets: [\"2001:db8::/32\"]}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[TLS_GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    let TlsServerKind::Passthrough { routes } = &plan.tls[0].servers[0].kind else {
        panic!("not passthrough")
    };
    assert_eq!(routes.len(), 1);
    assert_eq!(
        plan.warnings,
        vec!["VirtualService apps/r spec.tls[0]: destinationSubnets 2001:db8::/32 not applied: as in Istio, a gateway matches tls and tcp rules by SNI, port and gateway only, so the rule takes connections to any address".to_string()]
    );
}

#[test]
fn destination_subnets_of_a_passthrough_match_are_reported_even_when_no_sni_binds() {
    let spec = "  hosts: [\"*.example.org\"]\n  gateways: [istio-system/tls]\n  tls:\n  - match: [{sniHosts: [a.example.org], destinationSubnets: [\"2001:db8::/32\"]}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[TLS_GATEWAY, BACKENDS, &vs("r", "apps", spec)]);
    let TlsServerKind::Passthrough { routes } = &plan.tls[0].servers[0].kind else {
        panic!("not passthrough")
    };
    assert!(routes.is_empty());
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(plan.warnings[0].starts_with(
        "VirtualService apps/r spec.tls[0]: destinationSubnets 2001:db8::/32 not applied"
    ));
}

#[test]
fn a_wildcard_sni_host_binds_once_through_the_first_server_host_it_intersects() {
    let gateway = TLS_GATEWAY.replace("[\"*.example.com\"]", "[b.example.com, a.example.com]");
    let spec = "  hosts: [\"*.example.com\"]\n  gateways: [istio-system/tls]\n  tls:\n  - match: [{sniHosts: [\"*.example.com\"]}]\n    route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[&gateway, BACKENDS, &vs("r", "apps", spec)]);
    let TlsServerKind::Passthrough { routes } = &plan.tls[0].servers[0].kind else {
        panic!("not passthrough")
    };
    let snis: Vec<String> = routes.iter().map(|r| r.sni.to_string()).collect();
    assert_eq!(snis, vec!["b.example.com"]);
}

const AUTO_GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: east-west, namespace: istio-system}
spec:
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: [\"*.apps.svc.cluster.local\"]
    tls: {mode: AUTO_PASSTHROUGH}
";

/// The clusters the one AUTO_PASSTHROUGH server of a plan may reach.
fn auto_clusters(plan: &Plan) -> Vec<&str> {
    let TlsServerKind::AutoPassthrough { clusters } = &plan.tls[0].servers[0].kind else {
        panic!("not auto passthrough")
    };
    clusters.keys().map(String::as_str).collect()
}

#[test]
fn auto_passthrough_reaches_every_port_and_subset_of_covered_mesh_services() {
    let mesh = BACKENDS.replace("resolution: STATIC", "location: MESH_INTERNAL\n  resolution: STATIC")
        .replace("ports: [{number: 8080, name: http, protocol: HTTP}]", "ports: [{number: 8080, name: http, protocol: HTTP}, {number: 53, name: dns, protocol: UDP}]");
    let plan = compile_yaml(&[AUTO_GATEWAY, &mesh]);
    assert_eq!(
        auto_clusters(&plan),
        [
            "outbound|8080|v1|web.apps.svc.cluster.local",
            "outbound|8080|v2|web.apps.svc.cluster.local",
            "outbound|8080||web.apps.svc.cluster.local",
        ]
    );
    let names: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, auto_clusters(&plan));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn auto_passthrough_leaves_out_external_uncovered_wildcard_and_unresolved_services() {
    let se = |name: &str, host: &str, extra: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  hosts: [\"{host}\"]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n{extra}"
        )
    };
    let internal =
        "  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.1}]\n";
    let plan = compile_yaml(&[
        AUTO_GATEWAY,
        &se("ok", "ok.apps.svc.cluster.local", internal),
        &se(
            "external",
            "ext.apps.svc.cluster.local",
            "  resolution: STATIC\n  endpoints: [{address: 192.0.2.2}]\n",
        ),
        &se("elsewhere", "web.other.svc.cluster.local", internal),
        &se("wild", "*.wild.apps.svc.cluster.local", internal),
        &se(
            "none",
            "none.apps.svc.cluster.local",
            "  location: MESH_INTERNAL\n  resolution: NONE\n",
        ),
    ]);
    assert_eq!(
        auto_clusters(&plan),
        ["outbound|80||ok.apps.svc.cluster.local"]
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn auto_passthrough_warns_about_a_subset_without_endpoints() {
    let mesh = BACKENDS
        .replace(
            "resolution: STATIC",
            "location: MESH_INTERNAL\n  resolution: STATIC",
        )
        .replace(
            "- {name: v2, labels: {version: v2}}",
            "- {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}",
        );
    let plan = compile_yaml(&[AUTO_GATEWAY, &mesh]);
    assert!(!auto_clusters(&plan).contains(&"outbound|8080|v3|web.apps.svc.cluster.local"));
    assert_eq!(
        plan.warnings,
        vec!["Gateway istio-system/east-west spec.servers[0]: AUTO_PASSTHROUGH cannot reach outbound_.8080_.v3_.web.apps.svc.cluster.local: subset v3 of web.apps.svc.cluster.local selects no endpoints; connections naming it are closed".to_string()]
    );
}

/// A DestinationRule `name` in `namespace` for `web` with a load balancer.
fn rule_with(name: &str, namespace: &str, simple: &str, export: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  host: web.apps.svc.cluster.local\n{export}  trafficPolicy:\n    loadBalancer: {{simple: {simple}}}\n"
    )
}

/// The load balancer of the plan's only cluster.
fn balancer(plan: &Plan) -> Option<LoadBalancer> {
    plan.clusters.first()?.policy.load_balancer.clone()
}

#[test]
fn a_destination_rule_applies_from_the_services_namespace_then_the_root_never_another() {
    let entry = BACKENDS.split("---").next().expect("the entry").to_string();
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web.apps.svc.cluster.local}\n";
    let route = vs("r", "apps", spec);
    let random = Some(LoadBalancer::Simple(SimpleLb::Random));
    let round_robin = Some(LoadBalancer::Simple(SimpleLb::RoundRobin));
    // A rule in a third namespace never applies, exported or not.
    let elsewhere = rule_with("x", "elsewhere", "RANDOM", "");
    let plan = compile_yaml(&[GATEWAY, &entry, &elsewhere, &route]);
    assert_eq!(balancer(&plan), None);
    // The root namespace's exported rule applies when the service's
    // namespace has none; the service's namespace's wins over it.
    let root = rule_with("root", "istio-system", "RANDOM", "");
    let plan = compile_yaml(&[GATEWAY, &entry, &root, &route]);
    assert_eq!(balancer(&plan), random);
    let own = rule_with("own", "apps", "ROUND_ROBIN", "");
    let plan = compile_yaml(&[GATEWAY, &entry, &root, &own, &route]);
    assert_eq!(balancer(&plan), round_robin);
    // A root-namespace rule exported to `.` is the root gateway's own:
    // it comes first.
    let private = rule_with("private", "istio-system", "RANDOM", "  exportTo: [\".\"]\n");
    let plan = compile_yaml(&[GATEWAY, &entry, &own, &private, &route]);
    assert_eq!(balancer(&plan), random);
}

#[test]
fn a_subsets_policy_merges_over_the_rules_and_port_level_settings_pick_by_port() {
    let rule = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: apps}
spec:
  host: web
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 7}}
    outlierDetection: {consecutive5xxErrors: 2}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
";
    let entry = BACKENDS
        .split("---")
        .next()
        .expect("the entry")
        .replace(
            "  ports: [{number: 8080, name: http, protocol: HTTP}]",
            "  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: http2, protocol: HTTP}]",
        );
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{uri: {prefix: /v1}}]\n    route:\n    - destination: {host: web, subset: v1, port: {number: 8080}}\n  - route:\n    - destination: {host: web, port: {number: 9090}}\n";
    let route = vs("r", "apps", spec);
    let plan = compile_yaml(&[GATEWAY, &entry, rule, &route]);
    let cluster = |name: &str| {
        plan.clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", plan.clusters))
    };
    let subset = cluster("outbound|8080|v1|web.apps.svc.cluster.local");
    assert_eq!(
        subset.policy.load_balancer,
        Some(LoadBalancer::Simple(SimpleLb::Random))
    );
    assert_eq!(
        subset.policy.pool().max_connections,
        Some(7),
        "kept from the rule"
    );
    assert!(
        subset.policy.outlier_detection.is_some(),
        "kept from the rule"
    );
    let port = cluster("outbound|9090||web.apps.svc.cluster.local");
    assert_eq!(
        port.policy.load_balancer,
        Some(LoadBalancer::Simple(SimpleLb::RoundRobin))
    );
    assert_eq!(
        port.policy.connection_pool, None,
        "port level replaces the whole"
    );
    assert_eq!(port.policy.outlier_detection, None);
}

#[test]
fn source_labels_and_namespace_select_the_gateway_workload_as_istio_matches_them() {
    let entry = BACKENDS.split("---").next().expect("the entry").to_string();
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{uri: {prefix: /ours}, sourceLabels: {istio: ingressgateway}, sourceNamespace: istio-system}]\n    route: [{destination: {host: web}}]\n  - match: [{uri: {prefix: /theirs}, sourceLabels: {app: sidecar}}]\n    route: [{destination: {host: web}}]\n  - match: [{uri: {prefix: /elsewhere}, sourceNamespace: apps}]\n    route: [{destination: {host: web}}]\n";
    let plan = compile_yaml(&[GATEWAY, &entry, &vs("r", "apps", spec)]);
    let vhost = plan.http[0]
        .hosts
        .lookup("a.example.com")
        .expect("virtual host");
    let prefixes: Vec<Option<StringMatch>> = vhost
        .routes
        .iter()
        .flat_map(|r| r.matches.iter().map(|m| m.uri.clone()))
        .collect();
    assert_eq!(prefixes, [Some(StringMatch::Prefix("/ours".into()))]);
}

#[test]
fn a_rule_with_a_workload_selector_applies_only_to_the_workloads_it_selects() {
    let entry = BACKENDS.split("---").next().expect("the entry").to_string();
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web.apps.svc.cluster.local}\n";
    let route = vs("r", "apps", spec);
    let selecting = |labels: &str| {
        rule_with("sel", "istio-system", "RANDOM", "").replace(
            "spec:\n",
            &format!("spec:\n  workloadSelector: {{matchLabels: {labels}}}\n"),
        )
    };
    let ours = compile_yaml(&[
        GATEWAY,
        &entry,
        &selecting("{istio: ingressgateway}"),
        &route,
    ]);
    assert_eq!(
        balancer(&ours),
        Some(LoadBalancer::Simple(SimpleLb::Random))
    );
    let theirs = compile_yaml(&[GATEWAY, &entry, &selecting("{app: other}"), &route]);
    assert_eq!(balancer(&theirs), None);
}

#[test]
fn a_redirect_deriving_its_port_from_the_request_gets_the_servers_port() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{uri: {prefix: /req}}]\n    redirect: {authority: b.example.com, derivePort: FROM_REQUEST_PORT}\n  - redirect: {authority: b.example.com, derivePort: FROM_PROTOCOL_DEFAULT}\n";
    let plan = compile_yaml(&[GATEWAY, &vs("r", "apps", spec)]);
    let vhost = plan.http[0]
        .hosts
        .lookup("a.example.com")
        .expect("virtual host");
    let ports: Vec<Option<u16>> = vhost
        .routes
        .iter()
        .map(|r| match &r.action {
            RouteAction::Redirect(redirect) => redirect.port,
            other => panic!("not a redirect: {other:?}"),
        })
        .collect();
    assert_eq!(ports, [Some(80), None]);
}

/// A DestinationRule for api.example.com with `policy` under `spec:`.
fn api_rule(policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: apps}}\nspec:\n  host: api.example.com\n{policy}"
    )
}

const ROUTE_API: &str = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: api.example.com}\n      weight: 50\n    - destination: {host: api.example.com, subset: v1}\n      weight: 50\n";

#[test]
fn passthrough_makes_an_original_destination_cluster_without_endpoints_and_a_warning() {
    let entry = service_entry("api", "api.example.com", "192.0.2.21")
        .replace("protocol: HTTP}", "protocol: HTTP, targetPort: 8080}");
    let rule = api_rule(
        "  trafficPolicy:\n    loadBalancer: {simple: PASSTHROUGH}\n  subsets:\n  - name: v1\n",
    );
    let plan = compile_yaml(&[GATEWAY, &entry, &rule, &vs("r", "apps", ROUTE_API)]);
    for cluster in &plan.clusters {
        // Istio wipes a STATIC entry's endpoints for ORIGINAL_DST, and
        // applies no target port override (the entry is not NONE), though
        // its port names one.
        assert!(cluster.endpoints.is_empty(), "{cluster:?}");
        assert_eq!(
            cluster.original_destination,
            Some(OriginalDestination {
                port_override: None
            }),
            "{}",
            cluster.name
        );
    }
    assert_eq!(plan.clusters.len(), 2);
    assert!(
        plan.warnings.iter().any(|w| w.contains(
            "outbound|80||api.example.com is PASSTHROUGH (Envoy's ORIGINAL_DST): only a connection captured from a workload (`--egress-from`) has an original destination; on the gateway's own addresses requests get 503 UH"
        )),
        "{:#?}",
        plan.warnings
    );
}

#[test]
fn a_subsets_passthrough_makes_only_its_cluster_an_original_destination() {
    let entry = service_entry("api", "api.example.com", "192.0.2.21");
    let rule = api_rule(
        "  subsets:\n  - name: v1\n    trafficPolicy:\n      loadBalancer: {simple: PASSTHROUGH}\n",
    );
    let plan = compile_yaml(&[GATEWAY, &entry, &rule, &vs("r", "apps", ROUTE_API)]);
    let kinds: Vec<(String, bool)> = plan
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.original_destination.is_some()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("outbound|80|v1|api.example.com".to_string(), true),
            ("outbound|80||api.example.com".to_string(), false),
        ]
    );
}

#[test]
fn resolution_none_with_passthrough_connects_to_the_ports_target_port() {
    let none = service_entry("api", "api.example.com", "192.0.2.21").replace(
        "ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.21}]\n",
        "ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]\n  resolution: NONE\n",
    );
    let rule = api_rule("  trafficPolicy:\n    loadBalancer: {simple: PASSTHROUGH}\n");
    let route = vs(
        "r",
        "apps",
        "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: api.example.com}\n",
    );
    let plan = compile_yaml(&[GATEWAY, &none, &rule, &route]);
    assert_eq!(
        plan.clusters[0].original_destination,
        Some(OriginalDestination {
            port_override: Some(8080)
        })
    );
    // `gateway compile` shows it in place of endpoints.
    assert!(
        crate::report::table(&plan)
            .contains("  outbound|80||api.example.com  (original destination, port 8080)\n"),
        "{}",
        crate::report::table(&plan)
    );
    assert_eq!(
        crate::report::json(&plan)["clusters"][0]["original_destination"]["port_override"],
        8080
    );
}

/// `web` with a top-level tunnel and subsets with and without their own.
const TUNNELED: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: apps}
spec:
  hosts: [web.apps.svc.cluster.local]
  ports: [{number: 8080, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 192.0.2.10, labels: {version: v1}}
  - {address: 192.0.2.11, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: apps}
spec:
  host: web
  trafficPolicy:
    tunnel: {targetHost: top.example.test, targetPort: 443}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tunnel: {protocol: POST, targetHost: v1.example.test, targetPort: 8443}
  - {name: v2, labels: {version: v2}}
";

/// The tunnel targets of the TCP route of port 9000 to `destinations`.
fn tcp_tunnels(destinations: &str) -> Vec<Option<String>> {
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    let spec = format!(
        "  hosts: [\"*\"]\n  gateways: [istio-system/tcp]\n  tcp:\n  - route:\n{destinations}"
    );
    let plan = compile_yaml(&[gateway, TUNNELED, &vs("t", "apps", &spec)]);
    plan.tcp[0]
        .route
        .0
        .iter()
        .map(|backend| backend.tunnel.as_ref().map(TunnelSettings::authority))
        .collect()
}

#[test]
fn a_tcp_routes_tunnel_is_its_subsets_alone_or_the_rules_as_istio_applies_it() {
    let top = Some("top.example.test:443".to_string());
    let v1 = Some("v1.example.test:8443".to_string());
    assert_eq!(
        tcp_tunnels("    - destination: {host: web}\n"),
        vec![top.clone()]
    );
    assert_eq!(
        tcp_tunnels("    - destination: {host: web, subset: v1}\n"),
        vec![v1]
    );
    // A subset without its own tunnel gets none: `tunnelingconfig.Apply`
    // reads the subset's policy alone.
    assert_eq!(
        tcp_tunnels("    - destination: {host: web, subset: v2}\n"),
        vec![None]
    );
    // Weighted: the first destination's rule, top level, for every share.
    assert_eq!(
        tcp_tunnels(
            "    - destination: {host: web, subset: v1}\n      weight: 50\n    - destination: {host: web, subset: v2}\n      weight: 50\n"
        ),
        vec![top.clone(), top]
    );
}

#[test]
fn an_http_route_to_a_tunneled_destination_is_warned_and_not_tunneled() {
    let spec = "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: web}\n";
    let plan = compile_yaml(&[GATEWAY, TUNNELED, &vs("h", "apps", spec)]);
    assert_eq!(
        plan.warnings,
        vec![
            "VirtualService apps/h spec.http[0]: DestinationRule apps/web sets tunnel for web, which Istio applies to TCP and TLS routes only: this HTTP route's requests are sent without it"
        ]
    );
    assert!(
        first_forward(&plan, "a.example.com").0[0].tunnel.is_none(),
        "never tunneled"
    );
}

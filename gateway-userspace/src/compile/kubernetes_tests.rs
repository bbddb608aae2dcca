//! Route destinations resolved to Kubernetes Services, as Istio resolves
//! them: the Service port, the protocol from `appProtocol` or the port
//! name, the endpoints left to discovery, and beside ServiceEntries.
use std::{collections::BTreeMap, path::PathBuf};

use super::*;
use crate::{
    config::{Severity, load_sources},
    model::{Instance, KubeService, KubeServicePort, KubernetesView, ServiceKey},
    plan::{Cluster, DiscoveredEndpoints, EndpointAddress},
};

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: apps}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
";

fn port(name: &str, number: u16, app_protocol: Option<&str>) -> KubeServicePort {
    KubeServicePort {
        name: name.into(),
        port: number,
        transport: "TCP".into(),
        app_protocol: app_protocol.map(Into::into),
        target_port: None,
    }
}

fn service(namespace: &str, name: &str, ports: Vec<KubeServicePort>) -> KubeService {
    KubeService {
        key: ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        },
        ports,
        external_name: None,
        selector: BTreeMap::new(),
        port_translation: true,
    }
}

/// The plan of GATEWAY and a VirtualService in `apps` routing to `dest`,
/// in a cluster with `services` under `domain`.
fn compile(dest: &str, services: Vec<KubeService>, domain: &str, extra: &str) -> Plan {
    let text = format!(
        "{GATEWAY}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: apps}}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {dest}\n{extra}"
    );
    let mut config = load_sources(&[(PathBuf::from("t.yaml"), text)]);
    let errors: Vec<String> = config
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    config.model.kubernetes = KubernetesView {
        read: true,
        domain: domain.into(),
        services,
        ..KubernetesView::default()
    };
    plan(&config.model, &Instance::default(), &[]).expect("plan")
}

fn web() -> Vec<KubeService> {
    vec![service(
        "apps",
        "web",
        vec![
            port("http-web", 80, None),
            port("metrics", 9090, Some("http2")),
        ],
    )]
}

fn only_cluster(plan: &Plan) -> &Cluster {
    assert_eq!(plan.clusters.len(), 1, "{:?}", plan.warnings);
    &plan.clusters[0]
}

#[test]
fn each_form_of_a_service_name_is_the_same_cluster_at_the_named_service_port() {
    for dest in [
        "{host: web, port: {number: 80}}",
        "{host: web.apps, port: {number: 80}}",
        "{host: web.apps.svc.cluster.local, port: {number: 80}}",
    ] {
        let plan = compile(dest, web(), "cluster.local", "");
        let cluster = only_cluster(&plan);
        assert_eq!(
            cluster.name, "outbound|80||web.apps.svc.cluster.local",
            "{dest}"
        );
        assert_eq!(cluster.protocol, Some(Protocol::Http));
        assert!(cluster.endpoints.is_empty());
        assert_eq!(
            cluster.discovered,
            Some(DiscoveredEndpoints {
                service: ServiceKey {
                    namespace: "apps".into(),
                    name: "web".into()
                },
                port_name: "http-web".into(),
                labels: BTreeMap::new(),
            })
        );
    }
    let plan = compile(
        "{host: web, port: {number: 9090}}",
        web(),
        "cluster.local",
        "",
    );
    let cluster = only_cluster(&plan);
    assert_eq!(cluster.protocol, Some(Protocol::Http2), "appProtocol first");
    assert_eq!(
        cluster.discovered.as_ref().map(|d| d.port_name.as_str()),
        Some("metrics")
    );
}

#[test]
fn a_subset_selects_by_its_labels_and_the_cluster_domain_is_the_one_given() {
    let plan = compile(
        "{host: web, subset: v1, port: {number: 80}}",
        web(),
        "corp.example",
        "",
    );
    let cluster = only_cluster(&plan);
    assert_eq!(cluster.name, "outbound|80|v1|web.apps.svc.corp.example");
    assert_eq!(
        cluster.discovered.as_ref().map(|d| d.labels.clone()),
        Some(BTreeMap::from([("version".into(), "v1".into())]))
    );
}

#[test]
fn a_port_must_be_named_on_a_service_with_several_and_must_exist() {
    let plan = compile("{host: web}", web(), "cluster.local", "");
    assert!(plan.clusters.is_empty());
    assert!(
        plan.warnings[0]
            .contains("destination port required: web.apps.svc.cluster.local has 2 ports"),
        "{:?}",
        plan.warnings
    );
    let plan = compile(
        "{host: web, port: {number: 81}}",
        web(),
        "cluster.local",
        "",
    );
    assert!(
        plan.warnings[0].contains("Service apps/web has no port 81"),
        "{:?}",
        plan.warnings
    );
    let one_port = vec![service("apps", "web", vec![port("", 8080, None)])];
    let plan = compile("{host: web}", one_port, "cluster.local", "");
    let cluster = only_cluster(&plan);
    assert_eq!(cluster.port, 8080);
    assert_eq!(cluster.protocol, None, "an unnamed port is plain TCP");
}

#[test]
fn a_missing_service_is_named_as_such_and_an_external_name_is_resolved_by_dns() {
    let plan = compile(
        "{host: api, port: {number: 80}}",
        web(),
        "cluster.local",
        "",
    );
    assert!(
        plan.warnings[0].contains(
            "no Kubernetes Service or ServiceEntry declares host api.apps.svc.cluster.local"
        ),
        "{:?}",
        plan.warnings
    );
    let mut external = service("apps", "db", vec![port("tcp", 5432, None)]);
    external.external_name = Some("db.example.com".into());
    let plan = compile("{host: db}", vec![external], "cluster.local", "");
    let cluster = only_cluster(&plan);
    assert_eq!(cluster.discovered, None);
    assert_eq!(
        cluster.endpoints[0].address,
        EndpointAddress::Dns("db.example.com".into())
    );
    assert_eq!(cluster.endpoints[0].port, 5432);
}

#[test]
fn a_service_owns_its_cluster_name_and_a_service_entry_owns_a_two_label_name() {
    let entries = "\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: apps}
spec:
  hosts: [web.apps.svc.cluster.local, web.apps]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.10}]
";
    let plan = compile(
        "{host: web, port: {number: 80}}",
        web(),
        "cluster.local",
        entries,
    );
    assert!(only_cluster(&plan).discovered.is_some(), "the Service");
    let plan = compile(
        "{host: web.apps, port: {number: 80}}",
        web(),
        "cluster.local",
        entries,
    );
    let cluster = only_cluster(&plan);
    assert_eq!(cluster.discovered, None, "the ServiceEntry");
    assert_eq!(cluster.name, "outbound|80||web.apps");
}

#[test]
fn a_server_or_origination_whose_credential_cannot_be_read_is_dropped_and_says_why() {
    use crate::{
        config::{Environment, MemoryFiles, load_sources_with},
        plan::Unresolved,
    };
    let text = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"*\"]
    tls: {mode: SIMPLE, credentialName: missing}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: apps}
spec:
  host: web
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: gone}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: apps}
spec:
  hosts: [\"*\"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: web, port: {number: 80}}}]
";
    let files = MemoryFiles::default();
    let env = Environment {
        files: &files,
        credentials_dir: Some(std::path::Path::new("/creds")),
        unreadable_credential_drops_server: true,
    };
    let mut config = load_sources_with(&[(PathBuf::from("t.yaml"), text.into())], Some(&env));
    config.model.kubernetes = KubernetesView {
        read: true,
        domain: "cluster.local".into(),
        services: web(),
        ..KubernetesView::default()
    };
    let plan = plan(&config.model, &Instance::default(), &[]).expect("plan");
    assert_eq!(plan.dropped.len(), 1, "{:?}", plan.dropped);
    assert_eq!(
        (plan.dropped[0].gateway.as_str(), plan.dropped[0].server),
        ("istio-system/gw", 0)
    );
    assert!(
        plan.dropped[0]
            .reason
            .contains("server not served: cannot read /creds/missing/tls.crt")
    );
    assert_eq!(plan.http.len(), 1, "the plaintext server is served");
    assert!(
        plan.clusters.is_empty(),
        "no plaintext cluster in place of TLS"
    );
    let unresolved = Unresolved::OriginationUnavailable {
        host: "web.apps.svc.cluster.local".into(),
        reason: String::new(),
    };
    let prefix = unresolved.to_string();
    assert!(
        plan.warnings.iter().any(|w| w.contains(prefix.trim_end())),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn a_gateway_server_on_its_services_port_listens_on_the_target_port() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
  - port: {number: 9000, name: other, protocol: HTTP}
    hosts: [\"*\"]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports: [{name: http2, port: 80, targetPort: 8080}]
";
    let config = load_sources(&[(PathBuf::from("t.yaml"), text.into())]);
    let served = plan(&config.model, &Instance::default(), &[]).expect("plan");
    let ports: Vec<u16> = served.http.iter().map(|l| l.port).collect();
    assert_eq!(ports, [8080, 9000], "{:?}", served.warnings);
    // A Service in another namespace does not front this gateway.
    let elsewhere = text.replace(
        "metadata: {name: istio-ingressgateway, namespace: istio-system}",
        "metadata: {name: istio-ingressgateway, namespace: apps}",
    );
    let config = load_sources(&[(PathBuf::from("t.yaml"), elsewhere)]);
    let served = plan(&config.model, &Instance::default(), &[]).expect("plan");
    let ports: Vec<u16> = served.http.iter().map(|l| l.port).collect();
    assert_eq!(ports, [80, 9000]);
}

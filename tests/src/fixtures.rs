//! Configurations shared by the packet tests and the XDP benchmark.
use std::{net::IpAddr, path::PathBuf};

use gateway_userspace::{compile, config, model::Instance, plan::Plan};

/// HTTP on 80 and TLS passthrough on 443, both for `dataengine.com` and
/// `*.example.com`; TCP on 9000.
pub const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: hosts, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["dataengine.com", "*.example.com"]
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["dataengine.com", "*.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: istio-system}
spec:
  hosts: ["dataengine.com", "*.example.com"]
  gateways: ["hosts"]
  http:
  - route: [{destination: {host: backend.internal, port: {number: 80}}}]
  tls:
  - match: [{sniHosts: ["dataengine.com", "*.example.com"]}]
    route: [{destination: {host: backend.internal, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: opaque, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: ["hosts"]
  tcp:
  - route: [{destination: {host: backend.internal, port: {number: 9000}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: istio-system}
spec:
  hosts: [backend.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: tls, protocol: TLS}
  - {number: 9000, name: tcp, protocol: TCP}
  endpoints: [{address: 198.51.100.50}]
"#;

/// The plan of [`CONFIG`] for a gateway owning `addresses`; panics on any
/// error, since the fixture is fixed.
pub fn hosts_plan(addresses: &[IpAddr]) -> Plan {
    plan_of(CONFIG, addresses)
}

/// The plan of the configuration `yaml` for a gateway owning `addresses`;
/// panics on any error, since test configurations are fixed.
pub fn plan_of(yaml: &str, addresses: &[IpAddr]) -> Plan {
    let loaded = config::load_sources(&[(PathBuf::from("hosts.yaml"), yaml.to_string())]);
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.severity != config::Severity::Error),
        "{:?}",
        loaded.diagnostics
    );
    let plan = compile::plan(&loaded.model, &Instance::default(), addresses).expect("plan");
    assert!(plan.dropped.is_empty(), "{:?}", plan.dropped);
    plan
}

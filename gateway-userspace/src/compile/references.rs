//! Which Kubernetes Services the routes name: what Kubernetes mode
//! watches, so the API server's load grows with what this gateway routes
//! to, not with the cluster.
use std::collections::BTreeMap;

use super::clusters::qualify;
use crate::model::{Delegates, Destination, HttpAction, Model, ServiceKey};

/// Every Service a gateway-bound VirtualService routes to, each with
/// whether a route names a subset of it (its endpoints then need their
/// Pods' labels). Hosts are read as compile reads them: a short name in
/// the VirtualService's namespace, `name.namespace`, or the cluster name.
/// VirtualServices bound only to `mesh` route sidecars, not gateways; a
/// delegate's routes count when a gateway-bound root delegates to it, its
/// hosts read in its own namespace.
pub fn kubernetes_services(model: &Model) -> BTreeMap<ServiceKey, bool> {
    let mut services = BTreeMap::new();
    let kubernetes = &model.kubernetes;
    let delegates = Delegates::new(&model.virtual_services);
    let mut add = |dest: &Destination, namespace: &str| {
        let host = qualify(&dest.host, namespace, &kubernetes.domain);
        if let Some(key) = kubernetes.service_key(&host) {
            *services.entry(key).or_insert(false) |= names_subset(dest);
        }
    };
    for vs in &model.virtual_services {
        // No `gateways` means `mesh` only, as in Istio.
        if !vs.gateways.iter().any(|g| g != "mesh") {
            continue;
        }
        for route in &vs.http {
            if let HttpAction::Delegate { to, .. } = &route.action {
                let Ok(delegate) = delegates.find(to, &vs.namespace) else {
                    continue;
                };
                for rule in &delegate.http {
                    if let HttpAction::Route(destinations) = &rule.action {
                        for dest in destinations {
                            add(dest, &delegate.namespace);
                        }
                    }
                }
            }
        }
        let http = vs.http.iter().flat_map(|route| match &route.action {
            HttpAction::Route(destinations) => destinations.as_slice(),
            _ => &[],
        });
        let tls = vs.tls.iter().flat_map(|route| route.route.iter());
        let tcp = vs.tcp.iter().flat_map(|route| route.route.iter());
        for dest in http.chain(tls).chain(tcp) {
            add(dest, &vs.namespace);
        }
    }
    services
}

fn names_subset(dest: &Destination) -> bool {
    dest.subset.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn model(yaml: &str) -> Model {
        let config = config::load_sources(&[("vs.yaml".into(), yaml.to_string())]);
        assert!(
            config
                .diagnostics
                .iter()
                .all(|d| d.severity != config::Severity::Error),
            "{:?}",
            config.diagnostics
        );
        config.model
    }

    fn key(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn every_form_of_a_service_name_in_every_kind_of_route_of_a_gateway_bound_virtual_service() {
        let model = model(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: apps}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: web}
      weight: 50
    - destination: {host: api.prod, subset: v2}
      weight: 50
  - redirect: {uri: /elsewhere}
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: tls-backend.apps.svc.cluster.local}}]
  tcp:
  - route: [{destination: {host: db.data.svc.cluster.local, subset: primary}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: external, namespace: apps}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: api.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sidecars, namespace: apps}
spec:
  hosts: [web]
  gateways: [mesh]
  http:
  - route: [{destination: {host: only-for-sidecars}}]
"#,
        );
        assert_eq!(
            kubernetes_services(&model),
            BTreeMap::from([
                (key("apps", "tls-backend"), false),
                (key("apps", "web"), false),
                (key("data", "db"), true),
                (key("prod", "api"), true),
            ])
        );
    }

    #[test]
    fn a_delegates_services_count_in_its_namespace_once_a_gateway_bound_root_delegates_to_it() {
        let model = model(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: apps}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: api, namespace: team}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team}
spec:
  http:
  - route: [{destination: {host: api, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unused, namespace: team}
spec:
  http:
  - route: [{destination: {host: nobody-delegates-here}}]
"#,
        );
        assert_eq!(
            kubernetes_services(&model),
            BTreeMap::from([(key("team", "api"), true)])
        );
    }
}

//! The configuration `cargo xtask bench kubernetes` creates: Gateways with
//! one HTTP server each, ten VirtualServices per Gateway (every other one a
//! direct response, the rest routed to a Service), and one Service per
//! Gateway with ten endpoints; as API objects (Services with their
//! EndpointSlices) or as files (ServiceEntries in their place), so both
//! modes serve the same routes.

/// VirtualServices per Gateway (each one host).
pub const HOSTS_PER_GATEWAY: usize = 10;
/// Endpoints in each Service's slice.
pub const ENDPOINTS_PER_SERVICE: usize = 10;
/// Namespaces the VirtualServices and Services are spread over, as a
/// cluster's teams would spread them (the Gateways are in istio-system).
pub const NAMESPACES: usize = 10;
/// Gateway `i` listens on this port plus `i`.
pub const FIRST_PORT: u16 = 20000;
/// The one endpoint that answers traffic: the test-backend.
pub const ANSWERING: &str = "198.51.100.2";

/// Where routed VirtualServices send their requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A Kubernetes Service `svc-<i>` by its short name.
    Service,
    /// A ServiceEntry host `svc-<i>.internal` (file mode).
    ServiceEntry,
}

/// The namespace of Gateway `i`'s VirtualServices and Service.
pub fn namespace(gateway: usize) -> String {
    format!("bench-{}", gateway % NAMESPACES)
}

/// The port of Gateway `i`'s server (the bench stays below 45,000 Gateways).
pub fn port(gateway: usize) -> u16 {
    FIRST_PORT.saturating_add(u16::try_from(gateway).unwrap_or(u16::MAX))
}

/// The host of VirtualService `j` of Gateway `i`.
pub fn host(gateway: usize, vs: usize) -> String {
    format!("h{vs}.g{gateway}.example")
}

/// Whether VirtualService `j` routes to its Gateway's Service (odd ones)
/// rather than answering directly (even ones).
pub fn routed(vs: usize) -> bool {
    vs % 2 == 1
}

/// The body the direct response of VirtualService `j` of Gateway `i`
/// answers in its `version`.
pub fn body(gateway: usize, vs: usize, version: usize) -> String {
    format!("g{gateway}-h{vs}-v{version}")
}

/// Gateway `i`, selecting the default instance, in istio-system.
pub fn gateway(i: usize) -> String {
    let port = port(i);
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: g{i}, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}
    hosts: [\"*/*.g{i}.example\"]
"
    )
}

/// VirtualService `j` of Gateway `i`, its direct response at `version`.
pub fn virtual_service(i: usize, j: usize, destination: Destination, version: usize) -> String {
    let action = if routed(j) {
        let host = match destination {
            Destination::Service => format!("svc-{i}"),
            Destination::ServiceEntry => format!("svc-{i}.internal"),
        };
        format!("route: [{{destination: {{host: {host}, port: {{number: 80}}}}}}]")
    } else {
        format!(
            "directResponse: {{status: 200, body: {{string: \"{}\"}}}}",
            body(i, j, version)
        )
    };
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs-{i}-{j}, namespace: {ns}}}
spec:
  hosts: [\"{host}\"]
  gateways: [istio-system/g{i}]
  http:
  - {action}
",
        ns = namespace(i),
        host = host(i, j),
    )
}

/// The endpoint addresses of Service `i`: ten in 198.51.100.0/24 that
/// never answer, but for the `last` Service, whose only one is
/// [`ANSWERING`] (the one the bench sends traffic to).
fn addresses(i: usize, last: bool) -> Vec<String> {
    if last {
        return vec![ANSWERING.to_string()];
    }
    (0..ENDPOINTS_PER_SERVICE)
        .map(|e| format!("198.51.100.{}", 10 + (i * ENDPOINTS_PER_SERVICE + e) % 240))
        .collect()
}

/// Service `svc-<i>` (port 80 `http` to 8080) and its EndpointSlice, as
/// the endpoint controller would write it (v1beta1: the 1.20 server has
/// no v1).
pub fn service(i: usize, last: bool) -> String {
    let endpoints: String = addresses(i, last)
        .iter()
        .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  selector: {{app: svc-{i}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata:
  name: svc-{i}-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: svc-{i}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{endpoints}",
        ns = namespace(i),
    )
}

/// The ServiceEntry `svc-<i>.internal` that stands for Service `i` in file
/// mode, with the same endpoints.
pub fn service_entry(i: usize, last: bool) -> String {
    let endpoints: Vec<String> = addresses(i, last)
        .iter()
        .map(|ip| format!("{{address: {ip}}}"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: {ns}}}
spec:
  hosts: [svc-{i}.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 8080}}]
  endpoints: [{}]
",
        endpoints.join(", "),
        ns = namespace(i),
    )
}

/// `documents` joined as one multi-document YAML text.
pub fn join(documents: impl IntoIterator<Item = String>) -> String {
    documents.into_iter().collect::<Vec<_>>().join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_service_has_only_the_answering_endpoint_and_the_others_ten() {
        assert_eq!(addresses(999, true), [ANSWERING]);
        let others = addresses(3, false);
        assert_eq!(others.len(), ENDPOINTS_PER_SERVICE);
        assert!(!others.iter().any(|ip| ip == ANSWERING));
    }

    #[test]
    fn a_virtual_service_routes_or_answers_in_its_gateways_namespace() {
        let routed_vs = virtual_service(12, 1, Destination::Service, 0);
        assert!(routed_vs.contains("namespace: bench-2"), "{routed_vs}");
        assert!(routed_vs.contains("host: svc-12,"), "{routed_vs}");
        let direct = virtual_service(12, 0, Destination::ServiceEntry, 3);
        assert!(direct.contains("\"g12-h0-v3\""), "{direct}");
        assert!(direct.contains("gateways: [istio-system/g12]"), "{direct}");
    }
}

//! Services, EndpointSlices and Endpoints as the API server returns them,
//! read into the model's terms. Pure functions: the watches feed them.
//!
//! The facts relied on (Kubernetes' API reference for
//! `discovery.k8s.io/v1` EndpointSlice, which `v1beta1` shares for every
//! field read here):
//! - a slice names its Service in the label `kubernetes.io/service-name`;
//! - its `ports[].name` is the Service port's name (empty for an unnamed
//!   port) and `ports[].port` the resolved `targetPort`; `ports: null`
//!   means "all ports", which only headless Services without ports have;
//! - `conditions.ready` unset means ready; `serving` unset means what
//!   `ready` says; `terminating` unset means not terminating; a ready
//!   endpoint is never terminating;
//! - `addressType: FQDN` slices are skipped, as Istio skips them.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::util::intstr::IntOrString};
use serde::Deserialize;
use serde_json::Value;

use crate::model::{
    DiscoveredEndpoint, EndpointState, KubeService, KubeServicePort, LOCALITY_LABEL, Locality,
    NO_PORT_TRANSLATION_LABEL, ServiceKey, TargetPort,
};

/// The label a slice names its Service in.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What routing needs of a Service; `None` for a Service with no name.
pub fn service(service: &Service) -> Option<KubeService> {
    let key = ServiceKey {
        namespace: service.metadata.namespace.clone()?,
        name: service.metadata.name.clone()?,
    };
    let spec = service.spec.as_ref();
    let ports = spec
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|port| {
            Some(KubeServicePort {
                name: port.name.clone().unwrap_or_default(),
                port: u16::try_from(port.port).ok()?,
                transport: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: port.app_protocol.clone(),
                target_port: match &port.target_port {
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok().map(TargetPort::Number),
                    Some(IntOrString::String(name)) => Some(TargetPort::Name(name.clone())),
                    None => None,
                },
            })
        })
        .collect();
    let external_name = spec
        .filter(|spec| spec.type_.as_deref() == Some("ExternalName"))
        .and_then(|spec| spec.external_name.clone());
    let labels = service.metadata.labels.as_ref();
    Some(KubeService {
        key,
        ports,
        external_name,
        selector: spec
            .and_then(|spec| spec.selector.clone())
            .unwrap_or_default(),
        port_translation: !labels.is_some_and(|l| l.contains_key(NO_PORT_TRANSLATION_LABEL)),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Slice {
    #[serde(default)]
    address_type: String,
    #[serde(default)]
    endpoints: Vec<SliceEndpoint>,
    #[serde(default)]
    ports: Option<Vec<Port>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceEndpoint {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Conditions,
    #[serde(default)]
    target_ref: Option<TargetRef>,
    /// The zone of the node it runs on.
    #[serde(default)]
    zone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Conditions {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct TargetRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct Port {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    protocol: Option<String>,
}

/// Labels of Pods by name, in one namespace.
pub type PodLabels = HashMap<String, BTreeMap<String, String>>;

/// The endpoints one EndpointSlice (`v1` or `v1beta1`, as JSON) gives,
/// with the labels of the Pods they name; what cannot be read is skipped.
pub fn slice_endpoints(slice: &Value, pods: &PodLabels) -> Vec<DiscoveredEndpoint> {
    let Ok(slice) = Slice::deserialize(slice) else {
        return Vec::new();
    };
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Vec::new();
    }
    let ports = tcp_ports(slice.ports.as_deref().unwrap_or_default());
    let mut out = Vec::new();
    for endpoint in &slice.endpoints {
        let Some(state) = state(&endpoint.conditions) else {
            continue;
        };
        let labels = pod_labels(endpoint.target_ref.as_ref(), pods);
        let locality = endpoint_locality(&labels, endpoint.zone.as_deref());
        for address in &endpoint.addresses {
            let Ok(address) = address.parse::<IpAddr>() else {
                continue;
            };
            out.push(DiscoveredEndpoint {
                address,
                ports: ports.clone(),
                state,
                labels: labels.clone(),
                locality: locality.clone(),
            });
        }
    }
    out
}

/// An endpoint's locality: its Pod's `istio-locality` label (Istio's
/// override), else the slice's `zone` with region and subzone unknown
/// (Istio reads those from the Node's labels, which are not watched).
fn endpoint_locality(labels: &BTreeMap<String, String>, zone: Option<&str>) -> Locality {
    match labels.get(LOCALITY_LABEL) {
        Some(label) => Locality::from_label(label),
        None => Locality {
            zone: zone.unwrap_or_default().to_string(),
            ..Locality::default()
        },
    }
}

/// Whether an endpoint takes requests, and when.
fn state(conditions: &Conditions) -> Option<EndpointState> {
    let ready = conditions.ready.unwrap_or(true);
    let serving = conditions.serving.unwrap_or(ready);
    let terminating = conditions.terminating.unwrap_or(false);
    if ready && !terminating {
        Some(EndpointState::Ready)
    } else if serving && terminating {
        Some(EndpointState::ServingTerminating)
    } else {
        None
    }
}

/// Port name to number, TCP ports only (UDP and SCTP are not proxied).
fn tcp_ports(ports: &[Port]) -> BTreeMap<String, u16> {
    ports
        .iter()
        .filter(|port| {
            port.protocol
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
        })
        .filter_map(|port| {
            let number = u16::try_from(port.port?).ok().filter(|n| *n != 0)?;
            Some((port.name.clone().unwrap_or_default(), number))
        })
        .collect()
}

fn pod_labels(target: Option<&TargetRef>, pods: &PodLabels) -> BTreeMap<String, String> {
    target
        .filter(|target| target.kind == "Pod")
        .and_then(|target| pods.get(&target.name))
        .cloned()
        .unwrap_or_default()
}

#[derive(Debug, Default, Deserialize)]
struct EndpointsObject {
    #[serde(default)]
    subsets: Vec<Subset>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subset {
    #[serde(default)]
    addresses: Vec<Address>,
    #[serde(default)]
    ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    ip: String,
    #[serde(default)]
    target_ref: Option<TargetRef>,
}

/// The ready endpoints of a core `v1` Endpoints object (the last resort
/// of a server with no EndpointSlices): its `notReadyAddresses` are not
/// read, and it says nothing of terminating ones.
pub fn endpoints_object(object: &Value, pods: &PodLabels) -> Vec<DiscoveredEndpoint> {
    let Ok(object) = EndpointsObject::deserialize(object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for subset in &object.subsets {
        let ports = tcp_ports(&subset.ports);
        for address in &subset.addresses {
            let Ok(ip) = address.ip.parse::<IpAddr>() else {
                continue;
            };
            let labels = pod_labels(address.target_ref.as_ref(), pods);
            out.push(DiscoveredEndpoint {
                address: ip,
                ports: ports.clone(),
                state: EndpointState::Ready,
                locality: endpoint_locality(&labels, None),
                labels,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pods() -> PodLabels {
        HashMap::from([(
            "web-1".to_string(),
            BTreeMap::from([("version".to_string(), "v1".to_string())]),
        )])
    }

    fn found(endpoints: &[DiscoveredEndpoint]) -> Vec<(String, EndpointState, Option<u16>, usize)> {
        endpoints
            .iter()
            .map(|ep| {
                (
                    ep.address.to_string(),
                    ep.state,
                    ep.ports.get("http").copied(),
                    ep.labels.len(),
                )
            })
            .collect()
    }

    #[test]
    fn a_slice_gives_ready_and_serving_terminating_endpoints_with_their_pod_labels() {
        let slice = json!({
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ],
            "endpoints": [
                {"addresses": ["192.0.2.1"], "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["192.0.2.2"], "conditions": {"ready": true}},
                {"addresses": ["192.0.2.3"], "conditions": {"ready": false}},
                {"addresses": ["192.0.2.4"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["192.0.2.5"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                {"addresses": ["not an address"]}
            ]
        });
        let endpoints = slice_endpoints(&slice, &pods());
        assert_eq!(
            found(&endpoints),
            [
                ("192.0.2.1".into(), EndpointState::Ready, Some(8080), 1),
                ("192.0.2.2".into(), EndpointState::Ready, Some(8080), 0),
                (
                    "192.0.2.4".into(),
                    EndpointState::ServingTerminating,
                    Some(8080),
                    0
                ),
            ]
        );
        assert!(endpoints.iter().all(|ep| !ep.ports.contains_key("dns")));
    }

    #[test]
    fn an_endpoints_locality_is_its_pods_istio_locality_else_its_slice_zone() {
        let slice = json!({
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["192.0.2.1"], "zone": "us-east-1a"},
                {"addresses": ["192.0.2.2"], "zone": "us-east-1a",
                 "targetRef": {"kind": "Pod", "name": "placed"}},
                {"addresses": ["192.0.2.3"]}
            ]
        });
        let pods = PodLabels::from([(
            "placed".to_string(),
            BTreeMap::from([(
                LOCALITY_LABEL.to_string(),
                "eu.eu-west-1b.rack2".to_string(),
            )]),
        )]);
        let localities: Vec<String> = slice_endpoints(&slice, &pods)
            .iter()
            .map(|ep| {
                format!(
                    "{}|{}|{}",
                    ep.locality.region, ep.locality.zone, ep.locality.subzone
                )
            })
            .collect();
        assert_eq!(localities, ["|us-east-1a|", "eu|eu-west-1b|rack2", "||"]);
    }

    #[test]
    fn an_fqdn_slice_or_one_that_is_no_slice_gives_nothing() {
        let fqdn = json!({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com"]}]});
        assert!(slice_endpoints(&fqdn, &pods()).is_empty());
        assert!(slice_endpoints(&json!({"endpoints": 3}), &pods()).is_empty());
        assert!(slice_endpoints(&json!("text"), &pods()).is_empty());
    }

    #[test]
    fn an_endpoints_object_gives_its_ready_addresses_only() {
        let object = json!({
            "subsets": [{
                "addresses": [{"ip": "2001:db8::1", "targetRef": {"kind": "Pod", "name": "web-1"}}],
                "notReadyAddresses": [{"ip": "2001:db8::2"}],
                "ports": [{"name": "http", "port": 8080}]
            }]
        });
        assert_eq!(
            found(&endpoints_object(&object, &pods())),
            [("2001:db8::1".into(), EndpointState::Ready, Some(8080), 1)]
        );
    }

    #[test]
    fn a_service_gives_its_ports_and_an_external_name() {
        let service: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"ports": [
                {"name": "http-web", "port": 80, "targetPort": "web"},
                {"port": 9000, "protocol": "UDP", "appProtocol": "dns"}
            ]}
        }))
        .expect("a Service");
        let read = super::service(&service).expect("named");
        assert_eq!(read.key.to_string(), "apps/web");
        assert_eq!(
            read.ports,
            [
                KubeServicePort {
                    name: "http-web".into(),
                    port: 80,
                    transport: "TCP".into(),
                    app_protocol: None,
                    target_port: Some(TargetPort::Name("web".into())),
                },
                KubeServicePort {
                    name: String::new(),
                    port: 9000,
                    transport: "UDP".into(),
                    app_protocol: Some("dns".into()),
                    target_port: None,
                },
            ]
        );
        assert_eq!(read.external_name, None);
        let external: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]}
        }))
        .expect("a Service");
        assert_eq!(
            super::service(&external).and_then(|s| s.external_name),
            Some("db.example.com".into())
        );
        assert!(read.port_translation);
        let opted_out: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "knative", "namespace": "apps",
                "labels": {NO_PORT_TRANSLATION_LABEL: "true"}
            },
            "spec": {"selector": {"app": "gw"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .expect("a Service");
        let opted_out = super::service(&opted_out).expect("named");
        assert!(!opted_out.port_translation);
        assert_eq!(
            opted_out.selector.get("app").map(String::as_str),
            Some("gw")
        );
        assert_eq!(
            opted_out.ports[0].target_port,
            Some(TargetPort::Number(8080))
        );
    }
}

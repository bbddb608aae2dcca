//! Istio's gateway port translation: a server whose port is a port of the
//! gateway's own Service is that Service's port, and the proxy listens on
//! the Service's `targetPort` (`resolvePorts` in istio's
//! `pilot/pkg/model/gateway.go`; the first Service with the port wins).
//! The Services are those that select the gateway workload (their
//! selector a subset of its labels, in its namespace), or only the one
//! `--service` names; a Service labelled
//! `experimental.istio.io/disable-gateway-port-translation` is skipped.
use std::collections::BTreeMap;

use crate::model::{Instance, KubeService, Model, TargetPort};

/// Gateway port to the port the proxy listens on, for each port the
/// gateway's Services translate; and a warning for each they cannot.
pub(super) fn listen_ports(
    model: &Model,
    instance: &Instance,
) -> (BTreeMap<u16, u16>, Vec<String>) {
    let kubernetes = &model.kubernetes;
    let mut fronting: Vec<&KubeService> = kubernetes
        .workload_services
        .iter()
        .filter(|service| match &kubernetes.gateway_service {
            Some(named) => &service.key == named,
            None => service.selects(&instance.namespace, &instance.labels),
        })
        .filter(|service| service.port_translation)
        .collect();
    fronting.sort_by(|a, b| a.key.cmp(&b.key));
    let mut ports = BTreeMap::new();
    let mut warnings = Vec::new();
    for service in fronting {
        for port in &service.ports {
            if ports.contains_key(&port.port) || !port.transport.eq_ignore_ascii_case("TCP") {
                continue;
            }
            match &port.target_port {
                Some(TargetPort::Number(target)) => {
                    ports.insert(port.port, *target);
                }
                Some(TargetPort::Name(name)) => {
                    warnings.push(format!(
                        "Service {} port {} has the named targetPort {name:?}, which only the gateway Pod's spec resolves: listening on {} as written",
                        service.key, port.port, port.port
                    ));
                    ports.insert(port.port, port.port);
                }
                None => {
                    ports.insert(port.port, port.port);
                }
            }
        }
    }
    ports.retain(|from, to| from != to);
    (ports, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KubeServicePort, NO_PORT_TRANSLATION_LABEL, ServiceKey};

    fn service(
        name: &str,
        selector: &[(&str, &str)],
        ports: &[(u16, Option<TargetPort>)],
    ) -> KubeService {
        KubeService {
            key: ServiceKey {
                namespace: "istio-system".into(),
                name: name.into(),
            },
            ports: ports
                .iter()
                .map(|(port, target)| KubeServicePort {
                    name: format!("p{port}"),
                    port: *port,
                    transport: "TCP".into(),
                    app_protocol: None,
                    target_port: target.clone(),
                })
                .collect(),
            external_name: None,
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port_translation: true,
        }
    }

    fn model(services: Vec<KubeService>, named: Option<&str>) -> Model {
        let mut model = Model::default();
        model.kubernetes.workload_services = services;
        model.kubernetes.gateway_service = named.map(|name| ServiceKey {
            namespace: "istio-system".into(),
            name: name.into(),
        });
        model
    }

    const GATEWAY: &[(&str, &str)] = &[("istio", "ingressgateway")];

    #[test]
    fn a_service_selecting_the_gateway_moves_its_ports_to_their_target_ports() {
        let ingress = service(
            "ingress",
            GATEWAY,
            &[
                (80, Some(TargetPort::Number(8080))),
                (443, Some(TargetPort::Number(8443))),
                (15021, None),
            ],
        );
        let other = service(
            "other",
            &[("app", "web")],
            &[(81, Some(TargetPort::Number(9090)))],
        );
        let (ports, warnings) =
            listen_ports(&model(vec![other, ingress], None), &Instance::default());
        assert_eq!(ports, BTreeMap::from([(80, 8080), (443, 8443)]));
        assert!(warnings.is_empty());
    }

    #[test]
    fn the_first_service_by_name_wins_and_a_named_one_is_the_only_one() {
        let a = service("a", GATEWAY, &[(80, Some(TargetPort::Number(8080)))]);
        let b = service("b", GATEWAY, &[(80, Some(TargetPort::Number(9080)))]);
        let (ports, _) = listen_ports(
            &model(vec![b.clone(), a.clone()], None),
            &Instance::default(),
        );
        assert_eq!(ports, BTreeMap::from([(80, 8080)]));
        let unselecting = service("c", &[], &[(80, Some(TargetPort::Number(7080)))]);
        let (ports, _) = listen_ports(
            &model(vec![a, b, unselecting], Some("c")),
            &Instance::default(),
        );
        assert_eq!(ports, BTreeMap::from([(80, 7080)]));
    }

    #[test]
    fn an_opted_out_service_or_a_named_target_port_leaves_the_port_as_written() {
        let mut opted_out = service("ingress", GATEWAY, &[(80, Some(TargetPort::Number(8080)))]);
        opted_out.port_translation = false;
        let (ports, _) = listen_ports(&model(vec![opted_out], None), &Instance::default());
        assert!(ports.is_empty(), "{NO_PORT_TRANSLATION_LABEL}");
        let named = service(
            "ingress",
            GATEWAY,
            &[(80, Some(TargetPort::Name("http".into())))],
        );
        let (ports, warnings) = listen_ports(&model(vec![named], None), &Instance::default());
        assert!(ports.is_empty());
        assert!(
            warnings[0].contains("named targetPort \"http\""),
            "{warnings:?}"
        );
    }
}

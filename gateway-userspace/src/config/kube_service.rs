//! Kubernetes `Service` documents among the configuration: read for
//! Istio's gateway port translation only (a Service that selects the
//! gateway workload moves a server's port to its `targetPort`; compile
//! decides which Services select it). Services are not route backends in
//! file mode: that needs their endpoints, which only Kubernetes mode has.
use std::collections::BTreeMap;

use super::yaml::{Node, Value};
use crate::model::{
    KubeService, KubeServicePort, NO_PORT_TRANSLATION_LABEL, ServiceKey, TargetPort,
};

/// The Service a `v1` `Service` document declares, as far as port
/// translation needs it; ports that are not numbers are left out.
pub(super) fn decode(doc: &Node) -> KubeService {
    let metadata = doc.get("metadata");
    let text_at = |node: Option<&Node>, key: &str| node.and_then(|n| n.get(key)).and_then(text);
    let spec = doc.get("spec");
    let ports = match spec.and_then(|s| s.get("ports")) {
        Some(Node {
            value: Value::Seq(ports),
            ..
        }) => ports.iter().filter_map(port).collect(),
        _ => Vec::new(),
    };
    let labels = string_map(metadata.and_then(|m| m.get("labels")));
    KubeService {
        key: ServiceKey {
            namespace: text_at(metadata, "namespace").unwrap_or_else(|| "default".into()),
            name: text_at(metadata, "name").unwrap_or_default(),
        },
        ports,
        external_name: None,
        selector: string_map(spec.and_then(|s| s.get("selector"))),
        port_translation: !labels.contains_key(NO_PORT_TRANSLATION_LABEL),
    }
}

/// `port 443 (https) to targetPort 8443` for each port whose targetPort is set.
pub(super) fn mappings(service: &KubeService) -> Vec<String> {
    service
        .ports
        .iter()
        .filter_map(|p| {
            let target = match p.target_port.as_ref()? {
                TargetPort::Number(n) => n.to_string(),
                TargetPort::Name(name) => name.clone(),
            };
            let name = if p.name.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.name)
            };
            Some(format!("port {}{name} to targetPort {target}", p.port))
        })
        .collect()
}

fn port(node: &Node) -> Option<KubeServicePort> {
    let number = match node.get("port")?.value {
        Value::Int(n) => u16::try_from(n).ok()?,
        _ => return None,
    };
    let target_port = node.get("targetPort").and_then(|t| match &t.value {
        Value::Int(n) => u16::try_from(*n).ok().map(TargetPort::Number),
        Value::Str(name) => Some(TargetPort::Name(name.clone())),
        _ => None,
    });
    Some(KubeServicePort {
        name: node.get("name").and_then(text).unwrap_or_default(),
        port: number,
        transport: node
            .get("protocol")
            .and_then(text)
            .unwrap_or_else(|| "TCP".into()),
        app_protocol: node.get("appProtocol").and_then(text),
        target_port,
    })
}

fn string_map(node: Option<&Node>) -> BTreeMap<String, String> {
    match node {
        Some(Node {
            value: Value::Map(entries),
            ..
        }) => entries
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A scalar as text: ports and targetPorts are numbers or names.
fn text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

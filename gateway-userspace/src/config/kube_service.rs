//! Kubernetes `Service` documents found among the configuration: not read,
//! but a warning, because in Istio a Service's `targetPort` moves where the
//! gateway listens and here it does not.
use super::yaml::{Node, Value};

/// The warning for a `v1` `Service` document, naming its port mappings.
pub(super) fn warning(doc: &Node) -> String {
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(text)
        .unwrap_or_default();
    let mappings: Vec<String> = match doc.get("spec").and_then(|s| s.get("ports")) {
        Some(Node {
            value: Value::Seq(ports),
            ..
        }) => ports.iter().filter_map(mapping).collect(),
        _ => Vec::new(),
    };
    let mut message = format!(
        "Kubernetes Service {name} is not read: the gateway listens on each Gateway server's port number, not on a Service's targetPort"
    );
    if !mappings.is_empty() {
        message.push_str(&format!(
            " (this Service maps {}; the gateway does not)",
            mappings.join(", ")
        ));
    }
    message
}

/// `port 443 (https) to targetPort 8443` for a port whose targetPort is set.
fn mapping(port: &Node) -> Option<String> {
    let number = port.get("port").and_then(text)?;
    let target = port.get("targetPort").and_then(text)?;
    let name = port
        .get("name")
        .and_then(text)
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    Some(format!("port {number}{name} to targetPort {target}"))
}

/// A scalar as text: ports and targetPorts are numbers or names.
fn text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

//! Decodes `networking.istio.io` `Gateway` documents into [`model::Gateway`],
//! applying Istio's validation rules (istio/istio `pkg/config/validation`)
//! with positions.
//!
//! The `tls` block of a server is decoded in `tls`, checked against
//! Istio's rules in `tls_checks`, and its certificate files found and
//! read in `certificates`.
mod certificates;
mod tls;
mod tls_checks;

use std::collections::{BTreeMap, HashSet};

use self::{tls::decode_tls, tls_checks::check_tls_fits_protocol};
use super::{
    common::string_map,
    decode::{self, Decoder, field, join},
    rules,
    yaml::{Node, Value},
};
use crate::model::{Bind, Gateway, Port, Protocol, Server};

const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "creationTimestamp",
    "uid",
    "resourceVersion",
    "generation",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];
const SPEC_FIELDS: &[&str] = &["servers", "selector"];
const SERVER_FIELDS: &[&str] = &["port", "hosts", "bind", "tls", "name", "defaultEndpoint"];
const PORT_FIELDS: &[&str] = &["number", "protocol", "name", "targetPort"];

/// The namespace of a resource whose `metadata.namespace` is absent.
pub(super) const DEFAULT_NAMESPACE: &str = "default";

/// `metadata.creationTimestamp`, if present and a string.
pub(super) fn creation_timestamp(d: &mut Decoder<'_>, doc: &Node) -> Option<String> {
    let node = doc.get("metadata")?.get("creationTimestamp")?;
    d.string(node, "metadata.creationTimestamp")
}

/// Reads `metadata.name` and `metadata.namespace` so diagnostics can name
/// the resource before the rest is decoded.
pub(super) fn identity(d: &mut Decoder<'_>, doc: &Node) -> Option<(String, String)> {
    let Some(meta) = doc.get("metadata") else {
        d.error(doc, "metadata", "missing metadata");
        return None;
    };
    let entries = d.mapping(meta, "metadata", METADATA_FIELDS)?;
    let namespace = match field(entries, "namespace") {
        Some(node) => d.string(node, "metadata.namespace")?,
        None => DEFAULT_NAMESPACE.to_string(),
    };
    let Some(name_node) = field(entries, "name") else {
        d.error(meta, "metadata.name", "missing name");
        return None;
    };
    let name = d.string(name_node, "metadata.name")?;
    Some((namespace, name))
}

/// Decodes a Gateway document whose identity is already known. Returns
/// `None` if any error was reported for it.
pub(super) fn decode(
    d: &mut Decoder<'_>,
    doc: &Node,
    namespace: String,
    name: String,
) -> Option<Gateway> {
    if let (Err(message), Some(name_node)) = (
        rules::gateway_name(&name),
        doc.get("metadata").and_then(|m| m.get("name")),
    ) {
        d.error(name_node, "metadata.name", message);
    }
    let Some(spec) = doc.get("spec") else {
        d.error(doc, "spec", "missing spec");
        return None;
    };
    let entries = d.mapping(spec, "spec", SPEC_FIELDS)?;
    let selector = match field(entries, "selector") {
        Some(node) => string_map(d, node, "spec.selector"),
        None => BTreeMap::new(),
    };
    let mut servers = Vec::new();
    match field(entries, "servers") {
        Some(node) => {
            let items = d.sequence(node, "spec.servers").unwrap_or_default();
            if items.is_empty() {
                d.error(
                    node,
                    "spec.servers",
                    "gateway must have at least one server",
                );
            }
            let mut port_names: HashSet<String> = HashSet::new();
            for (index, item) in items.iter().enumerate() {
                let path = format!("spec.servers[{index}]");
                if let Some(server) = decode_server(d, item, &path) {
                    check_port_name_unique(d, item, &path, &server.port.name, &mut port_names);
                    servers.push(server);
                }
            }
        }
        None => d.error(
            spec,
            "spec.servers",
            "gateway must have at least one server",
        ),
    }
    if d.has_errors() {
        return None;
    }
    Some(Gateway {
        defined_at: Some(d.position(doc)),
        creation_timestamp: creation_timestamp(d, doc),
        namespace,
        name,
        selector,
        servers,
    })
}

/// Rule 10.1.4: port names are unique across a Gateway's servers.
fn check_port_name_unique(
    d: &mut Decoder<'_>,
    server: &Node,
    path: &str,
    name: &str,
    seen: &mut HashSet<String>,
) {
    if seen.contains(name) {
        let node = server
            .get("port")
            .and_then(|p| p.get("name"))
            .unwrap_or(server);
        d.error(
            node,
            &format!("{path}.port.name"),
            format!("port names in servers must be unique: duplicate name {name}"),
        );
    } else {
        seen.insert(name.to_string());
    }
}

fn decode_server(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Server> {
    let entries = d.mapping(node, path, SERVER_FIELDS)?;
    let errors_before = d.error_count();
    let bind = match field(entries, "bind") {
        Some(bind) => decode_bind(d, bind, &join(path, "bind")),
        None => Bind::Any,
    };
    let port = match field(entries, "port") {
        Some(port) => decode_port(d, port, &join(path, "port"), &bind),
        None => {
            d.error(node, &join(path, "port"), "port is required");
            None
        }
    };
    let hosts = decode_hosts(d, node, entries, path);
    // `tls:` with nothing under it is YAML null, which Istio reads as no TLS settings.
    let tls_node = field(entries, "tls").filter(|tls| tls.value != Value::Null);
    let tls = tls_node.and_then(|tls| decode_tls(d, tls, &join(path, "tls")));
    if let Some(port) = &port {
        check_tls_fits_protocol(d, node, tls_node, tls.as_ref(), port.protocol, path);
    }
    if d.error_count() > errors_before {
        return None;
    }
    Some(Server {
        port: port?,
        hosts,
        bind,
        tls,
    })
}

fn decode_port(d: &mut Decoder<'_>, node: &Node, path: &str, bind: &Bind) -> Option<Port> {
    let entries = d.mapping(node, path, PORT_FIELDS)?;
    let number_path = join(path, "number");
    let number = match field(entries, "number") {
        Some(n) => match (d.integer(n, &number_path), bind) {
            (Some(0), Bind::Unix(_)) => Some(0),
            (Some(value), Bind::Unix(_)) => {
                d.error(
                    n,
                    &number_path,
                    format!("port number {value} must be 0 for unix domain socket"),
                );
                None
            }
            (Some(value @ 1..=65535), _) => u16::try_from(value).ok(),
            (Some(value), _) => {
                d.error(
                    n,
                    &number_path,
                    format!("port number {value} must be in the range 1..65535"),
                );
                None
            }
            (None, _) => None,
        },
        None => {
            d.error(node, &number_path, "port number is required");
            None
        }
    };
    if let Some(target) = field(entries, "targetPort") {
        if d.integer(target, &join(path, "targetPort"))
            .is_some_and(|t| t > 0)
        {
            d.error(
                target,
                &join(path, "targetPort"),
                "targetPort has no impact on Gateways",
            );
        }
    }
    // `protocol:` and `name:` with nothing after them are YAML null: unset,
    // reported once as missing rather than also as a type error.
    let protocol = match field(entries, "protocol").filter(|p| p.value != Value::Null) {
        Some(p) => d.string(p, &join(path, "protocol")).and_then(|text| {
            let parsed = Protocol::parse(&text);
            if parsed.is_none() {
                d.error(
                    p,
                    &join(path, "protocol"),
                    format!("invalid protocol {text:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO, REDIS, MYSQL, UDP"),
                );
            }
            parsed
        }),
        None => {
            let at = node.key("protocol").unwrap_or(node);
            d.error(at, &join(path, "protocol"), "port protocol is required");
            None
        }
    };
    let name = match field(entries, "name").filter(|n| n.value != Value::Null) {
        Some(n) => {
            let name = d.string(n, &join(path, "name")).unwrap_or_default();
            if name.is_empty() && matches!(n.value, Value::Str(_)) {
                d.error(n, &join(path, "name"), "port name must be set");
            }
            name
        }
        None => {
            let at = node.key("name").unwrap_or(node);
            d.error(at, &join(path, "name"), "port name must be set");
            String::new()
        }
    };
    Some(Port {
        number: number?,
        name,
        protocol: protocol?,
    })
}

fn decode_hosts(
    d: &mut Decoder<'_>,
    server: &Node,
    entries: &[(Node, Node)],
    path: &str,
) -> Vec<String> {
    let hosts_path = join(path, "hosts");
    let Some(node) = field(entries, "hosts") else {
        d.error(
            server,
            &hosts_path,
            "server config must contain at least one host",
        );
        return Vec::new();
    };
    let items = d.sequence(node, &hosts_path).unwrap_or_default();
    if items.is_empty() && matches!(node.value, Value::Seq(_) | Value::Null) {
        d.error(
            node,
            &hosts_path,
            "server config must contain at least one host",
        );
    }
    let mut hosts = Vec::new();
    for (index, host) in items.iter().enumerate() {
        let host_path = decode::item(&hosts_path, index);
        let Some(text) = d.string(host, &host_path) else {
            continue;
        };
        match rules::server_host(&text) {
            Ok(()) => hosts.push(text),
            Err(message) => d.error(host, &host_path, message),
        }
    }
    hosts
}

fn decode_bind(d: &mut Decoder<'_>, node: &Node, path: &str) -> Bind {
    let Some(text) = d.string(node, path) else {
        return Bind::Any;
    };
    if text.is_empty() {
        return Bind::Any;
    }
    match rules::bind(&text) {
        Ok(rules::Bind::Ip(ip)) if ip.is_unspecified() => Bind::Any,
        Ok(rules::Bind::Ip(ip)) => Bind::Ip(ip),
        Ok(rules::Bind::Unix(path)) => Bind::Unix(path),
        Err(message) => {
            d.error(node, path, message);
            Bind::Any
        }
    }
}

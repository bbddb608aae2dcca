//! Decodes `networking.istio.io` `Gateway` documents into [`model::Gateway`].
use std::{collections::BTreeMap, net::IpAddr};

use super::{
    decode::{Decoder, field, join},
    yaml::{Node, Value},
};
use crate::model::{Gateway, Port, Protocol, Server, ServerTls, TlsMode};

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
/// Every `ServerTLSSettings` field Istio defines; only some are acted on today.
const TLS_FIELDS: &[&str] = &[
    "httpsRedirect",
    "mode",
    "serverCertificate",
    "privateKey",
    "caCertificates",
    "caCrl",
    "credentialName",
    "credentialNames",
    "caCertCredentialName",
    "tlsCertificates",
    "subjectAltNames",
    "verifyCertificateSpki",
    "verifyCertificateHash",
    "minProtocolVersion",
    "maxProtocolVersion",
    "cipherSuites",
    "insecureSkipVerify",
    "ecdhCurves",
];

/// The namespace of a resource whose `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Reads `metadata.name` and `metadata.namespace` so diagnostics can name
/// the resource before the rest is decoded.
pub fn identity(d: &mut Decoder<'_>, doc: &Node) -> Option<(String, String)> {
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
pub fn decode(d: &mut Decoder<'_>, doc: &Node, namespace: String, name: String) -> Option<Gateway> {
    let Some(spec) = doc.get("spec") else {
        d.error(doc, "spec", "missing spec");
        return None;
    };
    let entries = d.mapping(spec, "spec", SPEC_FIELDS)?;
    let selector = match field(entries, "selector") {
        Some(node) => decode_labels(d, node, "spec.selector"),
        None => BTreeMap::new(),
    };
    let mut servers = Vec::new();
    match field(entries, "servers") {
        Some(node) => {
            for (index, server) in d
                .sequence(node, "spec.servers")
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if let Some(server) = decode_server(d, server, &format!("spec.servers[{index}]")) {
                    servers.push(server);
                }
            }
            if servers.is_empty() && !d.has_errors() {
                d.error(
                    node,
                    "spec.servers",
                    "gateway must have at least one server",
                );
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
        namespace,
        name,
        selector,
        servers,
    })
}

fn decode_labels(d: &mut Decoder<'_>, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(entries) = d.mapping(node, path, &[]) else {
        return labels;
    };
    // Every key is a label, so the "unknown field" warnings from `mapping`
    // do not apply here: drop them.
    d.diagnostics
        .retain(|diag| !(diag.field.starts_with(path) && diag.message == "unknown field, ignored"));
    for (key, value) in entries {
        let Some(key) = d.string(key, path) else {
            continue;
        };
        let field_path = join(path, &key);
        if let Some(value) = d.string(value, &field_path) {
            labels.insert(key, value);
        }
    }
    labels
}

fn decode_server(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Server> {
    let entries = d.mapping(node, path, SERVER_FIELDS)?;
    let errors_before = d.diagnostics.len();
    let port = match field(entries, "port") {
        Some(port) => decode_port(d, port, &join(path, "port")),
        None => {
            d.error(node, &join(path, "port"), "port is required");
            None
        }
    };
    let hosts = decode_hosts(d, node, entries, path);
    let bind = match field(entries, "bind") {
        Some(bind) => decode_bind(d, bind, &join(path, "bind")),
        None => None,
    };
    // `tls:` with nothing under it is YAML null, which Istio reads as no TLS settings.
    let tls = match field(entries, "tls") {
        Some(tls) if tls.value != Value::Null => decode_tls(d, tls, &join(path, "tls")),
        _ => None,
    };
    let port = port?;
    if matches!(port.protocol, Protocol::Https | Protocol::Tls) && tls.is_none() {
        d.error(
            field(entries, "tls").unwrap_or(node),
            &join(path, "tls"),
            "server must have TLS settings for HTTPS/TLS protocols",
        );
    }
    let new_errors = d.diagnostics[errors_before..]
        .iter()
        .any(|diag| diag.severity == super::diagnostic::Severity::Error);
    if new_errors {
        return None;
    }
    Some(Server {
        port,
        hosts,
        bind,
        tls,
    })
}

fn decode_port(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Port> {
    let entries = d.mapping(node, path, PORT_FIELDS)?;
    let number = match field(entries, "number") {
        Some(n) => match d.integer(n, &join(path, "number")) {
            Some(value @ 1..=65535) => u16::try_from(value).ok(),
            Some(value) => {
                d.error(
                    n,
                    &join(path, "number"),
                    format!("port number {value} is not in 1..65535"),
                );
                None
            }
            None => None,
        },
        None => {
            d.error(node, &join(path, "number"), "port number is required");
            None
        }
    };
    let protocol = match field(entries, "protocol") {
        Some(p) => {
            let text = d.string(p, &join(path, "protocol"))?;
            let parsed = Protocol::parse(&text);
            if parsed.is_none() {
                d.error(
                    p,
                    &join(path, "protocol"),
                    format!("invalid protocol {text:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO, REDIS, MYSQL, UDP"),
                );
            }
            parsed
        }
        None => {
            d.error(node, &join(path, "protocol"), "port protocol is required");
            None
        }
    };
    let name = match field(entries, "name") {
        Some(n) => {
            let name = d.string(n, &join(path, "name"))?;
            if name.is_empty() {
                d.error(n, &join(path, "name"), "port name must be set");
            }
            name
        }
        None => {
            d.error(node, &join(path, "name"), "port name must be set");
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
    let mut hosts = Vec::new();
    for (index, host) in d
        .sequence(node, &hosts_path)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let host_path = format!("{hosts_path}[{index}]");
        if let Some(text) = d.string(host, &host_path) {
            if text.is_empty() {
                d.error(host, &host_path, "host must not be empty");
            } else {
                hosts.push(text);
            }
        }
    }
    if hosts.is_empty() && matches!(&node.value, Value::Seq(items) if items.is_empty()) {
        d.error(
            node,
            &hosts_path,
            "server config must contain at least one host",
        );
    }
    hosts
}

fn decode_bind(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<IpAddr> {
    let text = d.string(node, path)?;
    if text.is_empty() {
        return None;
    }
    match text.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => None,
        Ok(ip) => Some(ip),
        Err(_) => {
            d.error(node, path, format!("{text} is not a valid IP"));
            None
        }
    }
}

fn decode_tls(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<ServerTls> {
    let entries = d.mapping(node, path, TLS_FIELDS)?;
    let https_redirect = match field(entries, "httpsRedirect") {
        Some(b) => d.boolean(b, &join(path, "httpsRedirect")).unwrap_or(false),
        None => false,
    };
    let mode = match field(entries, "mode") {
        Some(m) => {
            let text = d.string(m, &join(path, "mode"))?;
            match TlsMode::parse(&text) {
                Some(mode) => mode,
                None => {
                    d.error(
                        m,
                        &join(path, "mode"),
                        format!("invalid TLS mode {text:?}, supported modes are PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, OPTIONAL_MUTUAL"),
                    );
                    return None;
                }
            }
        }
        None => TlsMode::Passthrough,
    };
    Some(ServerTls {
        https_redirect,
        mode,
    })
}

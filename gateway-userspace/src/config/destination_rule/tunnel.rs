//! A traffic policy's `proxyProtocol` and `tunnel`: what wraps each
//! connection to the destination, checked as Istio's `validateProxyProtocol`
//! and `validateTunnelSettings` check them (pkg/config/validation).
use crate::{
    config::{
        decode::{Decoder, field, join},
        rules,
        yaml::{Node, Value},
    },
    model::{ProxyProtocolVersion, TunnelProtocol, TunnelSettings},
};

/// `proxyProtocol`: `version` `V1` (the default) or `V2`, by name or by
/// the enum's number (0, 1) as protobuf's JSON reads it. Null is unset.
pub(super) fn proxy_protocol(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
) -> Option<ProxyProtocolVersion> {
    if matches!(node.value, Value::Null) {
        return None;
    }
    let entries = d.mapping(node, path, &["version"])?;
    let Some(at) = field(entries, "version") else {
        return Some(ProxyProtocolVersion::V1);
    };
    let version_path = join(path, "version");
    match &at.value {
        Value::Str(name) if name == "V1" => Some(ProxyProtocolVersion::V1),
        Value::Str(name) if name == "V2" => Some(ProxyProtocolVersion::V2),
        Value::Int(0) | Value::Null => Some(ProxyProtocolVersion::V1),
        Value::Int(1) => Some(ProxyProtocolVersion::V2),
        Value::Int(number) => {
            d.error(
                at,
                &version_path,
                format!("proxy protocol version is invalid: {number}"),
            );
            None
        }
        Value::Str(name) => {
            d.error(
                at,
                &version_path,
                format!("invalid proxy protocol version {name:?}, supported versions are V1, V2"),
            );
            None
        }
        _ => {
            d.error(
                at,
                &version_path,
                format!("expected V1 or V2, found {}", at.type_name()),
            );
            None
        }
    }
}

/// `tunnel`: `protocol` `CONNECT` (the default) or `POST`, a `targetHost`
/// that is an FQDN or an IP address, a `targetPort` in 1..65535, all as
/// Istio requires. Null is unset.
pub(super) fn tunnel(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<TunnelSettings> {
    if matches!(node.value, Value::Null) {
        return None;
    }
    let entries = d.mapping(node, path, &["protocol", "targetHost", "targetPort"])?;
    let protocol = match d.opt_string(entries, "protocol", path).as_deref() {
        None | Some("CONNECT") => Some(TunnelProtocol::Connect),
        Some("POST") => Some(TunnelProtocol::Post),
        Some(_) => {
            let at = field(entries, "protocol").unwrap_or(node);
            d.error(
                at,
                &join(path, "protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
            None
        }
    };
    let host_path = join(path, "targetHost");
    let target_host = match field(entries, "targetHost") {
        Some(at) => {
            d.string(at, &host_path)
                .and_then(|host| match rules::tunnel_target_host(&host) {
                    Ok(()) => Some(host),
                    Err(message) => {
                        d.error(at, &host_path, message);
                        None
                    }
                })
        }
        None => {
            d.error(
                node,
                &host_path,
                "tunnel target host must be valid FQDN or IP address: targetHost is required",
            );
            None
        }
    };
    let port_path = join(path, "targetPort");
    let target_port = match field(entries, "targetPort") {
        Some(at) => match d.integer(at, &port_path) {
            Some(port @ 1..=65535) => u16::try_from(port).ok(),
            Some(port) => {
                d.error(
                    at,
                    &port_path,
                    format!(
                        "tunnel target port is invalid: port number {port} must be in the range 1..65535"
                    ),
                );
                None
            }
            None => None,
        },
        None => {
            d.error(
                node,
                &port_path,
                "tunnel target port is invalid: port number 0 must be in the range 1..65535",
            );
            None
        }
    };
    Some(TunnelSettings {
        protocol: protocol?,
        target_host: target_host?,
        target_port: target_port?,
    })
}

#[cfg(test)]
mod tests;

//! Decodes `ServiceEntry` documents: the backends routes resolve to.
//! Their `endpoints` are decoded in `endpoints`.
mod endpoints;

use std::collections::HashSet;

use super::{
    common::{export_to, port_number, string_map},
    decode::{Decoder, field, join},
    diagnostic::Severity,
    rules,
    yaml::Node,
};
use crate::model::{Protocol, Resolution, ServiceEntry, ServicePort, Subnet};

const SPEC_FIELDS: &[&str] = &[
    "hosts",
    "addresses",
    "ports",
    "location",
    "resolution",
    "endpoints",
    "workloadSelector",
    "exportTo",
    "subjectAltNames",
];

/// `workloadSelector`: Istio refuses an empty or wildcard label key and a
/// wildcard value, and warns about no labels. It is not applied either way
/// (the workloads it selects are in a registry this gateway does not read).
fn workload_selector(d: &mut Decoder<'_>, node: &Node) {
    let path = "spec.workloadSelector";
    let labels = d
        .mapping(node, path, &["labels"])
        .and_then(|entries| field(entries, "labels"))
        .map(|labels| string_map(d, labels, &join(path, "labels")))
        .unwrap_or_default();
    for (key, value) in &labels {
        if key.is_empty() {
            d.error(
                node,
                &join(path, "labels"),
                format!("empty key is not supported in selector: \"{key}={value}\""),
            );
        }
        if key.contains('*') || value.contains('*') {
            d.error(
                node,
                &join(path, "labels"),
                format!("wildcard is not supported in selector: \"{key}={value}\""),
            );
        }
    }
    let message = if labels.is_empty() {
        "workloadSelector without labels selects every workload in the namespace; it needs a Kubernetes workload registry and is ignored"
    } else {
        "workloadSelector needs a Kubernetes workload registry; ignored"
    };
    d.report(Severity::Warning, node, path, message.into());
}

/// Istio's rules for DYNAMIC_DNS (a dynamic forward proxy for wildcard
/// hosts), which this gateway does not serve: valid, and warned.
fn dynamic_dns_rules(
    d: &mut Decoder<'_>,
    at: &Node,
    hosts: &[String],
    addresses: &[Subnet],
    endpoints: &[(String, &Node)],
    ports: &[ServicePort],
) {
    let errors = d.error_count();
    if hosts.iter().any(|h| !h.starts_with('*')) {
        d.error(
            at,
            "spec.hosts",
            "host must be wildcarded for resolution mode DYNAMIC_DNS",
        );
    }
    if !addresses.is_empty() {
        d.error(
            at,
            "spec.addresses",
            "addresses cannot be set for resolution type DYNAMIC_DNS",
        );
    }
    if !endpoints.is_empty() {
        d.error(
            at,
            "spec.endpoints",
            "endpoints cannot be set for resolution type DYNAMIC_DNS",
        );
    }
    let served = |p: &ServicePort| {
        p.protocol
            .as_deref()
            .and_then(Protocol::parse)
            .is_some_and(|p| {
                matches!(
                    p,
                    Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2
                )
            })
    };
    if !ports.iter().all(served) {
        d.error(
            at,
            "spec.ports",
            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS",
        );
    }
    if d.error_count() == errors {
        d.report(
            Severity::Warning,
            at,
            "spec.resolution",
            "DYNAMIC_DNS is not served by this gateway yet: destinations this entry resolves get 503".into(),
        );
    }
}

/// Decodes a ServiceEntry whose identity is known; `None` on any error.
pub(super) fn decode(
    d: &mut Decoder<'_>,
    doc: &Node,
    namespace: String,
    name: String,
) -> Option<ServiceEntry> {
    let Some(spec) = doc.get("spec") else {
        d.error(doc, "spec", "missing spec");
        return None;
    };
    let entries = d.mapping(spec, "spec", SPEC_FIELDS)?;
    let hosts = decode_hosts(d, spec, entries);
    let (addresses, cidr) = decode_addresses(d, entries);
    let selector = field(entries, "workloadSelector");
    if let Some(at) = selector {
        workload_selector(d, at);
    }
    let endpoint_items = d.items(entries, "endpoints", "spec");
    check_selector_or_endpoints(d, entries, selector, &endpoint_items);
    let ports = decode_ports(d, entries);
    let resolution_at = field(entries, "resolution").unwrap_or(spec);
    let resolution = decode_resolution(d, entries, resolution_at);
    if let Some(at) = cidr {
        if !matches!(resolution, Resolution::None | Resolution::Static) {
            d.error(
                at,
                "spec.addresses",
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
    }
    let endpoints_at = field(entries, "endpoints").unwrap_or(spec);
    match resolution {
        Resolution::None if !endpoint_items.is_empty() => d.error(
            endpoints_at,
            "spec.endpoints",
            "no endpoints should be provided for resolution type NONE",
        ),
        Resolution::None => {
            if let Some(at) = selector {
                d.report(
                    Severity::Warning,
                    at,
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is NONE".into(),
                );
            }
        }
        Resolution::DnsRoundRobin if endpoint_items.len() > 1 => d.error(
            endpoints_at,
            "spec.endpoints",
            "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
        ),
        Resolution::DynamicDns => dynamic_dns_rules(
            d,
            resolution_at,
            &hosts,
            &addresses,
            &endpoint_items,
            &ports,
        ),
        _ => {}
    }
    let mesh_internal = decode_location(d, spec, entries);
    let endpoints = endpoints::decode_endpoints(d, endpoint_items, resolution, &ports);
    // Endpoints named by a workloadSelector come from WorkloadEntries or
    // pods, which are not read (warned above), not from `endpoints`.
    if resolution == Resolution::Static
        && endpoints.is_empty()
        && field(entries, "endpoints").is_none()
        && selector.is_none()
    {
        d.error(spec, "spec.endpoints", "STATIC resolution needs endpoints");
    }
    if resolution == Resolution::Dns && endpoints.is_empty() {
        check_hosts_resolvable(d, spec, entries, &hosts);
    }
    let export_to = export_to(d, entries, "spec");
    Some(ServiceEntry {
        namespace,
        name,
        hosts,
        addresses,
        ports,
        resolution,
        endpoints,
        mesh_internal,
        export_to,
    })
}

/// `hosts`: at least one, each a name or a wildcard domain (`*` alone is
/// refused).
fn decode_hosts(d: &mut Decoder<'_>, spec: &Node, entries: &[(Node, Node)]) -> Vec<String> {
    let host_items = d.items(entries, "hosts", "spec");
    if host_items.is_empty() {
        d.error(
            spec,
            "spec.hosts",
            "service entry must have at least one host",
        );
    }
    let mut hosts = Vec::new();
    for (item_path, item) in host_items {
        let Some(host) = d.string(item, &item_path) else {
            continue;
        };
        if host == "*" {
            d.error(
                item,
                &item_path,
                "invalid host *: a service entry needs a name or a wildcard domain",
            );
            continue;
        }
        match rules::service_entry_host(&host) {
            Ok(warning) => {
                if let Some(warning) = warning {
                    d.report(Severity::Warning, item, &item_path, warning);
                }
                hosts.push(host);
            }
            Err(message) => d.error(item, &item_path, message),
        }
    }
    hosts
}

/// `addresses` as subnets, and the first one written as a CIDR (which
/// only some resolutions allow).
fn decode_addresses<'n>(
    d: &mut Decoder<'_>,
    entries: &'n [(Node, Node)],
) -> (Vec<Subnet>, Option<&'n Node>) {
    let mut addresses = Vec::new();
    let mut cidr = None;
    for (item_path, item) in d.items(entries, "addresses", "spec") {
        let Some(text) = d.string(item, &item_path) else {
            continue;
        };
        if text.contains('/') && cidr.is_none() {
            cidr = Some(item);
        }
        match text.parse::<Subnet>() {
            Ok(subnet) => addresses.push(subnet),
            Err(err) => d.error(item, &item_path, err.to_string()),
        }
    }
    (addresses, cidr)
}

/// Istio: `endpoints` and `workloadSelector` are two ways to name the
/// workloads; one of them.
fn check_selector_or_endpoints(
    d: &mut Decoder<'_>,
    entries: &[(Node, Node)],
    selector: Option<&Node>,
    endpoint_items: &[(String, &Node)],
) {
    if let (Some(_), Some(at)) = (selector, field(entries, "endpoints")) {
        if !endpoint_items.is_empty() {
            d.error(
                at,
                "spec.endpoints",
                "only one of workloadSelector or endpoints is allowed in a service entry",
            );
        }
    }
}

/// `ports`, optional in Istio: an entry without ports declares hosts (and
/// addresses) but no port a destination could name. Numbers and names
/// are unique.
fn decode_ports(d: &mut Decoder<'_>, entries: &[(Node, Node)]) -> Vec<ServicePort> {
    let mut ports: Vec<ServicePort> = Vec::new();
    // Numbers and names taken, so each port is checked without a scan.
    let mut numbers: HashSet<u16> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    for (port_path, item) in d.items(entries, "ports", "spec") {
        let Some(port) = decode_port(d, item, &port_path) else {
            continue;
        };
        if numbers.contains(&port.number) {
            d.error(
                item,
                &join(&port_path, "number"),
                format!("port number {} is declared twice", port.number),
            );
        } else if names.contains(&port.name) {
            d.error(
                item,
                &join(&port_path, "name"),
                format!("port name {} is declared twice", port.name),
            );
        } else {
            numbers.insert(port.number);
            names.insert(port.name.clone());
            ports.push(port);
        }
    }
    ports
}

/// One item of `ports`; `None` without a valid number or a name.
fn decode_port(d: &mut Decoder<'_>, item: &Node, port_path: &str) -> Option<ServicePort> {
    let p = d.mapping(
        item,
        port_path,
        &["number", "protocol", "name", "targetPort"],
    )?;
    let number = match field(p, "number") {
        Some(n) => port_number(d, n, &join(port_path, "number")),
        None => {
            d.error(item, &join(port_path, "number"), "port number is required");
            None
        }
    };
    let name = d.opt_string(p, "name", port_path);
    let protocol = d.opt_string(p, "protocol", port_path);
    if let Some(protocol) = &protocol {
        if Protocol::parse(protocol).is_none() {
            let at = field(p, "protocol").unwrap_or(item);
            d.error(
                at,
                &join(port_path, "protocol"),
                format!("invalid protocol {protocol:?}"),
            );
        }
    }
    let target_port =
        field(p, "targetPort").and_then(|n| port_number(d, n, &join(port_path, "targetPort")));
    let (Some(number), Some(name)) = (number, name) else {
        if field(p, "name").is_none() {
            d.error(item, &join(port_path, "name"), "port name must be set");
        }
        return None;
    };
    Some(ServicePort {
        number,
        name,
        protocol,
        target_port,
    })
}

/// `resolution`, `NONE` when absent.
fn decode_resolution(d: &mut Decoder<'_>, entries: &[(Node, Node)], at: &Node) -> Resolution {
    match d.opt_string(entries, "resolution", "spec").as_deref() {
        None | Some("NONE") => Resolution::None,
        Some("STATIC") => Resolution::Static,
        Some("DNS") => Resolution::Dns,
        Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
        Some("DYNAMIC_DNS") => Resolution::DynamicDns,
        Some(other) => {
            d.error(at, "spec.resolution", format!("invalid resolution {other:?}, supported values are NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS"));
            Resolution::None
        }
    }
}

/// `location`: whether the entry is `MESH_INTERNAL` (default external).
fn decode_location(d: &mut Decoder<'_>, spec: &Node, entries: &[(Node, Node)]) -> bool {
    match d.opt_string(entries, "location", "spec").as_deref() {
        None | Some("MESH_EXTERNAL") => false,
        Some("MESH_INTERNAL") => true,
        Some(other) => {
            let at = field(entries, "location").unwrap_or(spec);
            d.error(
                at,
                "spec.location",
                format!(
                    "invalid location {other:?}, supported values are MESH_EXTERNAL, MESH_INTERNAL"
                ),
            );
            false
        }
    }
}

/// DNS resolution without endpoints resolves the hosts themselves, so
/// none may be a wildcard.
fn check_hosts_resolvable(
    d: &mut Decoder<'_>,
    spec: &Node,
    entries: &[(Node, Node)],
    hosts: &[String],
) {
    for (i, host) in hosts.iter().enumerate() {
        if host.starts_with('*') {
            let at = field(entries, "hosts").unwrap_or(spec);
            d.error(
                at,
                &format!("spec.hosts[{i}]"),
                format!("wildcard host {host} cannot be resolved by DNS without endpoints"),
            );
        }
    }
}

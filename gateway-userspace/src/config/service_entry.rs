//! Decodes `ServiceEntry` documents: the backends routes resolve to.
use std::collections::{BTreeMap, HashSet};

use super::{
    common::{count, export_to, port_number, string_map},
    decode::{Decoder, field, join},
    diagnostic::Severity,
    rules,
    yaml::Node,
};
use crate::model::{
    EndpointAddress, Protocol, Resolution, ServiceEntry, ServicePort, Subnet, WorkloadEntry,
};

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

/// A `unix://` endpoint: checked as Istio checks it (STATIC resolution
/// only, an absolute path or `@name`, no ports, exactly one service port),
/// then left out with a warning: this gateway does not connect to sockets.
fn unix_endpoint(
    d: &mut Decoder<'_>,
    at: &Node,
    entries: &[(Node, Node)],
    ep_path: &str,
    path: &str,
    resolution: Resolution,
    service_ports: usize,
) {
    let address_path = join(ep_path, "address");
    let errors = d.error_count();
    if resolution != Resolution::Static {
        d.error(
            at,
            &address_path,
            format!("endpoint address \"unix://{path}\" is a unix domain socket, which only STATIC resolution takes"),
        );
    } else if let Err(message) = rules::unix_address(path) {
        d.error(at, &address_path, message);
    }
    if let Some(ports) = field(entries, "ports") {
        d.error(
            ports,
            &join(ep_path, "ports"),
            format!("unix endpoint unix://{path} must not include ports"),
        );
    }
    if resolution == Resolution::Static && service_ports != 1 {
        d.error(
            at,
            &address_path,
            "exactly 1 service port required for unix endpoints",
        );
    }
    if d.error_count() == errors {
        d.report(
            Severity::Warning,
            at,
            &address_path,
            format!("unix domain socket endpoints are not supported by this gateway: unix://{path} is left out"),
        );
    }
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
pub fn decode(
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
    let selector = field(entries, "workloadSelector");
    if let Some(at) = selector {
        workload_selector(d, at);
    }
    // Istio: `endpoints` and `workloadSelector` are two ways to name the
    // workloads; one of them.
    let endpoint_items = d.items(entries, "endpoints", "spec");
    if let (Some(_), Some(at)) = (selector, field(entries, "endpoints")) {
        if !endpoint_items.is_empty() {
            d.error(
                at,
                "spec.endpoints",
                "only one of workloadSelector or endpoints is allowed in a service entry",
            );
        }
    }

    // Optional in Istio: an entry without ports declares hosts (and
    // addresses) but no port a destination could name.
    let mut ports: Vec<ServicePort> = Vec::new();
    // Numbers and names taken, so each port is checked without a scan.
    let mut numbers: HashSet<u16> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    let port_items = d.items(entries, "ports", "spec");
    for (port_path, item) in port_items {
        let Some(p) = d.mapping(
            item,
            &port_path,
            &["number", "protocol", "name", "targetPort"],
        ) else {
            continue;
        };
        let number = match field(p, "number") {
            Some(n) => port_number(d, n, &join(&port_path, "number")),
            None => {
                d.error(item, &join(&port_path, "number"), "port number is required");
                None
            }
        };
        let name = d.opt_string(p, "name", &port_path);
        let protocol = d.opt_string(p, "protocol", &port_path);
        if let Some(protocol) = &protocol {
            if Protocol::parse(protocol).is_none() {
                let at = field(p, "protocol").unwrap_or(item);
                d.error(
                    at,
                    &join(&port_path, "protocol"),
                    format!("invalid protocol {protocol:?}"),
                );
            }
        }
        let target_port =
            field(p, "targetPort").and_then(|n| port_number(d, n, &join(&port_path, "targetPort")));
        let (Some(number), Some(name)) = (number, name) else {
            if field(p, "name").is_none() {
                d.error(item, &join(&port_path, "name"), "port name must be set");
            }
            continue;
        };
        if numbers.contains(&number) {
            d.error(
                item,
                &join(&port_path, "number"),
                format!("port number {number} is declared twice"),
            );
        } else if names.contains(&name) {
            d.error(
                item,
                &join(&port_path, "name"),
                format!("port name {name} is declared twice"),
            );
        } else {
            numbers.insert(number);
            names.insert(name.clone());
            ports.push(ServicePort {
                number,
                name,
                protocol,
                target_port,
            });
        }
    }

    let resolution_at = field(entries, "resolution").unwrap_or(spec);
    let resolution = match d.opt_string(entries, "resolution", "spec").as_deref() {
        None | Some("NONE") => Resolution::None,
        Some("STATIC") => Resolution::Static,
        Some("DNS") => Resolution::Dns,
        Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
        Some("DYNAMIC_DNS") => Resolution::DynamicDns,
        Some(other) => {
            d.error(resolution_at, "spec.resolution", format!("invalid resolution {other:?}, supported values are NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS"));
            Resolution::None
        }
    };
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
    let mesh_internal = match d.opt_string(entries, "location", "spec").as_deref() {
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
    };

    let mut endpoints = Vec::new();
    for (ep_path, item) in endpoint_items {
        let Some(ep) = d.mapping(
            item,
            &ep_path,
            &[
                "address",
                "ports",
                "labels",
                "network",
                "locality",
                "weight",
                "serviceAccount",
            ],
        ) else {
            continue;
        };
        let Some(address) = d.opt_string(ep, "address", &ep_path) else {
            d.error(
                item,
                &join(&ep_path, "address"),
                "endpoint address is required",
            );
            continue;
        };
        let at = field(ep, "address").unwrap_or(item);
        if let Some(path) = address.strip_prefix("unix://") {
            unix_endpoint(d, at, ep, &ep_path, path, resolution, ports.len());
            continue;
        }
        let address = match (address.parse(), resolution) {
            (Ok(ip), _) => EndpointAddress::Ip(ip),
            (Err(_), Resolution::Static) => {
                d.error(
                    at,
                    &join(&ep_path, "address"),
                    format!(
                        "endpoint address {address:?} must be an IP address for STATIC resolution"
                    ),
                );
                continue;
            }
            (Err(_), _) if rules::service_host(&address).is_ok() && address.contains('.') => {
                EndpointAddress::Dns(address)
            }
            (Err(_), _) => {
                d.error(
                    at,
                    &join(&ep_path, "address"),
                    format!("endpoint address {address:?} is neither an IP address nor a DNS name"),
                );
                continue;
            }
        };
        let mut endpoint_ports = BTreeMap::new();
        if let Some(ports_node) = field(ep, "ports") {
            let ports_path = join(&ep_path, "ports");
            for (key, value) in string_map(d, ports_node, &ports_path) {
                let declared = names.contains(&key);
                match value.parse::<u16>() {
                    Ok(number) if number > 0 && declared => {
                        endpoint_ports.insert(key, number);
                    }
                    Ok(_) if !declared => d.error(
                        ports_node,
                        &join(&ports_path, &key),
                        format!("endpoint port name {key} is not declared in spec.ports"),
                    ),
                    _ => d.error(
                        ports_node,
                        &join(&ports_path, &key),
                        format!("port {value} must be in the range 1..65535"),
                    ),
                }
            }
        }
        let labels = field(ep, "labels")
            .map(|n| string_map(d, n, &join(&ep_path, "labels")))
            .unwrap_or_default();
        endpoints.push(WorkloadEntry {
            address,
            ports: endpoint_ports,
            labels,
            weight: count(d, ep, "weight", &ep_path).unwrap_or(1),
        });
    }
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

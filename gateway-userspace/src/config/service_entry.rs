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
        } else if let Err(message) = rules::service_host(&host) {
            d.error(item, &item_path, message);
        } else {
            hosts.push(host);
        }
    }
    let mut addresses = Vec::new();
    for (item_path, item) in d.items(entries, "addresses", "spec") {
        let Some(text) = d.string(item, &item_path) else {
            continue;
        };
        match text.parse::<Subnet>() {
            Ok(subnet) => addresses.push(subnet),
            Err(err) => d.error(item, &item_path, err.to_string()),
        }
    }
    if let Some(at) = field(entries, "workloadSelector") {
        d.report(
            Severity::Warning,
            at,
            "spec.workloadSelector",
            "workloadSelector needs a Kubernetes workload registry; ignored".into(),
        );
    }

    let mut ports: Vec<ServicePort> = Vec::new();
    // Numbers and names taken, so each port is checked without a scan.
    let mut numbers: HashSet<u16> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    let port_items = d.items(entries, "ports", "spec");
    if port_items.is_empty() {
        d.error(
            spec,
            "spec.ports",
            "service entry must have at least one port",
        );
    }
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

    let resolution = match d.opt_string(entries, "resolution", "spec").as_deref() {
        None | Some("NONE") => Resolution::None,
        Some("STATIC") => Resolution::Static,
        Some("DNS") => Resolution::Dns,
        Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
        Some(other) => {
            let at = field(entries, "resolution").unwrap_or(spec);
            d.error(at, "spec.resolution", format!("invalid resolution {other:?}, supported values are NONE, STATIC, DNS, DNS_ROUND_ROBIN"));
            Resolution::None
        }
    };
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
    for (ep_path, item) in d.items(entries, "endpoints", "spec") {
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
    if resolution == Resolution::Static
        && endpoints.is_empty()
        && field(entries, "endpoints").is_none()
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

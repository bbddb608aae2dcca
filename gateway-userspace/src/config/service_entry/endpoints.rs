//! A ServiceEntry's `endpoints`: each an IP address, a DNS name or a
//! (checked, then left out) `unix://` socket, with its named ports.
use std::collections::{BTreeMap, HashSet};

use crate::{
    config::{
        common::{count, string_map},
        decode::{Decoder, field, join},
        diagnostic::Severity,
        rules,
        yaml::Node,
    },
    model::{EndpointAddress, LOCALITY_LABEL, Locality, Resolution, ServicePort, WorkloadEntry},
};

/// `endpoints` items that decode without error, in order.
pub(super) fn decode_endpoints(
    d: &mut Decoder<'_>,
    endpoint_items: Vec<(String, &Node)>,
    resolution: Resolution,
    ports: &[ServicePort],
) -> Vec<WorkloadEntry> {
    let names: HashSet<&str> = ports.iter().map(|p| p.name.as_str()).collect();
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
        let Some(address) = endpoint_address(d, at, &ep_path, address, resolution) else {
            continue;
        };
        let endpoint_ports = field(ep, "ports")
            .map(|node| endpoint_ports(d, node, &join(&ep_path, "ports"), &names))
            .unwrap_or_default();
        let labels = field(ep, "labels")
            .map(|n| string_map(d, n, &join(&ep_path, "labels")))
            .unwrap_or_default();
        endpoints.push(WorkloadEntry {
            address,
            ports: endpoint_ports,
            weight: count(d, ep, "weight", &ep_path).unwrap_or(1),
            // Istio's `locality`, else the `istio-locality` label's.
            locality: d
                .opt_string(ep, "locality", &ep_path)
                .map(|text| Locality::parse(&text))
                .or_else(|| labels.get(LOCALITY_LABEL).map(|l| Locality::from_label(l)))
                .unwrap_or_default(),
            labels,
        });
    }
    endpoints
}

/// An endpoint's `address`: an IP, or (except for STATIC resolution) a
/// DNS name.
fn endpoint_address(
    d: &mut Decoder<'_>,
    at: &Node,
    ep_path: &str,
    address: String,
    resolution: Resolution,
) -> Option<EndpointAddress> {
    match (address.parse(), resolution) {
        (Ok(ip), _) => Some(EndpointAddress::Ip(ip)),
        (Err(_), Resolution::Static) => {
            d.error(
                at,
                &join(ep_path, "address"),
                format!("endpoint address {address:?} must be an IP address for STATIC resolution"),
            );
            None
        }
        (Err(_), _) if rules::service_host(&address).is_ok() && address.contains('.') => {
            Some(EndpointAddress::Dns(address))
        }
        (Err(_), _) => {
            d.error(
                at,
                &join(ep_path, "address"),
                format!("endpoint address {address:?} is neither an IP address nor a DNS name"),
            );
            None
        }
    }
}

/// An endpoint's `ports`: service port names (declared in `spec.ports`)
/// to port numbers.
fn endpoint_ports(
    d: &mut Decoder<'_>,
    ports_node: &Node,
    ports_path: &str,
    declared_names: &HashSet<&str>,
) -> BTreeMap<String, u16> {
    let mut endpoint_ports = BTreeMap::new();
    for (key, value) in string_map(d, ports_node, ports_path) {
        let declared = declared_names.contains(key.as_str());
        match value.parse::<u16>() {
            Ok(number) if number > 0 && declared => {
                endpoint_ports.insert(key, number);
            }
            Ok(_) if !declared => d.error(
                ports_node,
                &join(ports_path, &key),
                format!("endpoint port name {key} is not declared in spec.ports"),
            ),
            _ => d.error(
                ports_node,
                &join(ports_path, &key),
                format!("port {value} must be in the range 1..65535"),
            ),
        }
    }
    endpoint_ports
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

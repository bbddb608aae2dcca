//! What the registry (the ServiceEntries) lets captured workloads reach,
//! compiled for the egress guard: fixed addresses and ranges, names whose
//! DNS answers count too, and ports left to the proxy because an entry
//! on them has no address to know it by. Pure, so it is tested without
//! a kernel or a resolver.
use std::{collections::BTreeSet, net::IpAddr};

use crate::model::{EndpointAddress, Model, Resolution, Subnet};

/// The registry's destinations for REGISTRY_ONLY.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    /// `spec.addresses` and IP endpoints.
    pub fixed: BTreeSet<Subnet>,
    /// Hosts (DNS resolution without endpoints) and DNS endpoints whose
    /// current answers are allowed too.
    pub names: BTreeSet<String>,
    /// Ports of entries with no address and no endpoint (resolution NONE,
    /// wildcard hosts): any address on them, the proxy checking SNI/Host.
    pub open_ports: BTreeSet<u16>,
}

/// A single address as a range.
pub fn host_cidr(addr: IpAddr) -> Subnet {
    Subnet {
        addr,
        prefix: if addr.is_ipv4() { 32 } else { 128 },
    }
}

/// The registry of every ServiceEntry in `model`.
pub fn registry(model: &Model) -> Registry {
    let mut registry = Registry::default();
    for entry in &model.service_entries {
        registry.fixed.extend(entry.addresses.iter().copied());
        for endpoint in &entry.endpoints {
            match &endpoint.address {
                EndpointAddress::Ip(ip) => {
                    registry.fixed.insert(host_cidr(*ip));
                }
                EndpointAddress::Dns(name) => {
                    registry.names.insert(name.clone());
                }
            }
        }
        let resolved_by_name = matches!(
            entry.resolution,
            Resolution::Dns | Resolution::DnsRoundRobin
        ) && entry.endpoints.is_empty();
        if resolved_by_name {
            registry.names.extend(
                entry
                    .hosts
                    .iter()
                    .filter(|host| !host.starts_with('*'))
                    .cloned(),
            );
        }
        let wildcard = entry.hosts.iter().any(|host| host.starts_with('*'));
        let unaddressed = entry.addresses.is_empty() && entry.endpoints.is_empty();
        if unaddressed && (entry.resolution == Resolution::None || wildcard) {
            registry
                .open_ports
                .extend(entry.ports.iter().map(|port| port.number));
        }
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;
    fn model(yaml: &str) -> Model {
        let config = crate::config::load_sources(&[("entries.yaml".into(), yaml.to_string())]);
        assert!(
            config
                .diagnostics
                .iter()
                .all(|d| d.severity != crate::config::Severity::Error),
            "{:?}",
            config.diagnostics
        );
        config.model
    }

    const ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: default}
spec:
  hosts: [dataengine.com, api.dataengine.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static, namespace: default}
spec:
  hosts: [billing.example]
  addresses: [203.0.113.0/28]
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 198.51.100.7}, {address: "2001:db8::7"}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-endpoints, namespace: default}
spec:
  hosts: [mirror.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: origin.mirror.example}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wildcard, namespace: default}
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 8080, name: http, protocol: HTTP}]
  resolution: NONE
"#;

    #[test]
    fn addresses_endpoints_and_dns_names_make_the_registry() {
        let registry = registry(&model(ENTRIES));
        let fixed: Vec<String> = registry.fixed.iter().map(ToString::to_string).collect();
        assert_eq!(
            fixed,
            ["198.51.100.7/32", "203.0.113.0/28", "2001:db8::7/128"]
        );
        let names: Vec<&str> = registry.names.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "api.dataengine.com",
                "dataengine.com",
                "origin.mirror.example"
            ],
            "hosts of DNS entries without endpoints, and DNS endpoints (not the host they serve)"
        );
        assert_eq!(
            registry.open_ports.into_iter().collect::<Vec<_>>(),
            [443, 8080],
            "a wildcard entry with no address leaves its ports to the proxy"
        );
    }

    #[test]
    fn an_entry_with_addresses_opens_no_port() {
        let yaml = ENTRIES.replace(
            "  resolution: NONE",
            "  addresses: [192.0.2.0/24]\n  resolution: NONE",
        );
        let registry = registry(&model(&yaml));
        assert!(registry.open_ports.is_empty());
        assert!(registry.fixed.contains(&"192.0.2.0/24".parse().unwrap()));
    }
}

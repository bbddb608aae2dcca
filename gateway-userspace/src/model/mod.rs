//! The validated configuration the compiler works from: plain Rust values,
//! no YAML, no kernel types beyond the listener kind.
mod gateway;
mod subnet;
mod traffic;

pub use gateway::*;
pub use subnet::*;
pub use traffic::*;

/// Every resource read, the input of [`crate::compile::plan`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub gateways: Vec<Gateway>,
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
    pub service_entries: Vec<ServiceEntry>,
}

/// How long a resolved DNS answer of a `resolution: DNS` host is used
/// before it is resolved again, by the proxy's clusters and the egress
/// guard's allow-list alike. The system resolver gives no TTL, so this is
/// Envoy's `dns_refresh_rate` default.
pub const DNS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

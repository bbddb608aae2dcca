//! The validated configuration the compiler works from: plain Rust values,
//! no YAML, no kernel types beyond the listener kind.
mod authz;
mod cors;
mod fault;
mod gateway;
mod host;
mod jwks;
mod locality;
mod request_auth;
mod service;
mod subnet;
mod traffic;

pub use authz::*;
pub use cors::*;
pub use fault::*;
pub use gateway::*;
pub use host::*;
#[cfg(test)]
pub(crate) use jwks::test_keys;
pub use jwks::*;
pub use locality::*;
pub use request_auth::*;
pub use service::*;
pub use subnet::*;
pub use traffic::*;

/// Every resource read, the input of [`crate::compile::plan`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub gateways: Vec<Gateway>,
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
    pub service_entries: Vec<ServiceEntry>,
    /// `security.istio.io` AuthorizationPolicies, every namespace: compile
    /// keeps those that apply to this gateway.
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// `security.istio.io` RequestAuthentications, every namespace: compile
    /// keeps those that apply to this gateway.
    pub request_authentications: Vec<RequestAuthentication>,
    /// Kubernetes Services (Kubernetes mode), read beside the Istio kinds.
    pub kubernetes: KubernetesView,
}

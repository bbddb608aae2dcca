//! The userspace proxy for what needs a TCP stack: plaintext HTTP
//! (HTTP/1.1 and h2c, as Envoy's codec AUTO), TLS termination with rustls,
//! TLS passthrough by SNI and opaque TCP, all from the compiled plan.
//!
//! A connection goes through named phases, listed and called in one file,
//! `phases.rs`: accept (`listener.rs`), claim, listener kind, TLS/SNI, HTTP
//! route, upstream, log. The gateway path serves what the plan's listeners
//! name; the egress capture ([`egress`]) is a plug-in beside it, reached
//! only through the narrow [`context::Hook`] (unserved port, unknown SNI, serve
//! HTTP or pass, the log entry's verdict), as linkerd2-proxy's outbound
//! stands beside its inbound.
pub mod access_log;
pub mod authz;
pub mod auto_passthrough;
mod body;
pub mod client_cert;
pub mod client_hello;
pub mod context;
mod downstream;
pub mod egress;
mod error;
pub mod http;
pub mod jwks;
mod lean_redirect;
mod listener;
pub mod metrics;
pub mod origination;
mod phases;
pub mod proxy_protocol;
pub mod redirect;
pub mod rewrite;
pub mod route;
mod served;
mod stream;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use self::{
    error::ProxyError,
    listener::{BoundListener, serve, steering_sockets},
    served::{ListenerMap, Options, PortService, Served, TlsAction, TlsEntry},
    stream::Rewind,
};

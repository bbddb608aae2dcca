//! The userspace proxy for what needs a TCP stack: plaintext HTTP
//! (HTTP/1.1 and h2c, as Envoy's codec AUTO), TLS termination with rustls,
//! TLS passthrough by SNI and opaque TCP, all from the compiled plan.
//!
//! Per connection: accept ([`crate::connection`] caps and deadlines), then
//! by listener kind: HTTP ([`http`]); TLS: read the ClientHello
//! ([`client_hello`]), pick the server by SNI ([`tls::select`]), then
//! terminate ([`tls`]) and serve HTTP or forward, or pass the bytes
//! through ([`tcp`]); TCP: forward ([`tcp`]).
pub mod access_log;
pub mod auto_passthrough;
pub mod client_cert;
pub mod client_hello;
mod downstream;
pub mod egress;
pub mod http;
mod lean_redirect;
mod listener;
pub mod metrics;
pub mod origination;
pub mod redirect;
pub mod rewrite;
pub mod route;
mod served;
mod stream;
pub mod tcp;
pub mod tls;
pub mod upstream;

use std::{io, net::SocketAddr};

pub use self::{
    listener::{BoundListener, serve, steering_sockets},
    served::{ListenerMap, Options, PortService, Served, TlsAction, TlsEntry},
    stream::Rewind,
};

/// Failure to open a listening socket or to build what it serves.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `bind`/`listen` failed for this address.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A route table whose regexes do not compile.
    #[error("routes")]
    Routes(#[from] http::RoutesError),
    /// A cluster's TLS origination (DestinationRule `tls`) cannot be set up.
    #[error("{cluster}: TLS origination")]
    Origination {
        cluster: String,
        #[source]
        source: tls::TlsSetupError,
    },
    /// A terminating server's certificate or settings cannot be used.
    #[error("{server}: TLS")]
    Tls {
        server: String,
        #[source]
        source: tls::TlsSetupError,
    },
}

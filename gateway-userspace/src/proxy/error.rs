//! What can fail when the proxy opens its sockets or builds what it serves.
use std::{io, net::SocketAddr};

use super::{route::RoutesError, tls};

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
    /// An AuthorizationPolicy path template whose regex does not compile.
    #[error("AuthorizationPolicy path template")]
    Authorization(#[source] regex::Error),
    /// A route table whose regexes do not compile.
    #[error("routes")]
    Routes(#[from] RoutesError),
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

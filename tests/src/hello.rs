//! Real first flights for host-classification tests: a rustls client's
//! ClientHello record, and hand-made variants the kernel must survive.
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};

/// The first bytes a rustls client sends for `server_name` (a DNS name
/// gives an SNI; an IP address gives none, as in every TLS client).
pub fn client_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let mut connection = ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    connection.write_tls(&mut out).expect("first flight");
    out
}

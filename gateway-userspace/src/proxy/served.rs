//! What the proxy serves, built once from a plan: per listener, its
//! virtual hosts, TLS servers (with their rustls configurations) or TCP
//! forward, and what every connection shares (upstreams, access log).
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use rustls::ServerConfig;

use super::{
    ProxyError, access_log, auto_passthrough,
    http::{Shared, VirtualHosts},
    tls, upstream,
};
use crate::{
    compile::{Forward, Plan, SniRoute, TlsServerKind},
    hosts::HostPattern,
};

/// What one listener serves.
#[derive(Debug)]
pub enum PortService {
    /// Plaintext HTTP.
    Http(Arc<VirtualHosts>),
    /// TLS servers chosen by SNI, and the plaintext HTTP servers that share
    /// the port, for connections that do not start with a TLS record.
    Tls {
        servers: Vec<TlsEntry>,
        plaintext: Option<Arc<VirtualHosts>>,
    },
    /// Opaque TCP to the first matching `tcp` route.
    Tcp(Forward),
}

/// One server of a TLS listener.
#[derive(Debug)]
pub struct TlsEntry {
    /// `Gateway ns/name spec.servers[i]`.
    pub source: String,
    pub hosts: Vec<HostPattern>,
    pub action: TlsAction,
}

/// What happens after SNI picked a TLS server.
#[derive(Debug)]
pub enum TlsAction {
    TerminateHttp {
        config: Arc<ServerConfig>,
        hosts: Arc<VirtualHosts>,
    },
    TerminateTcp {
        config: Arc<ServerConfig>,
        forward: Option<Forward>,
    },
    Passthrough(Vec<SniRoute>),
    /// AUTO_PASSTHROUGH: the SNI names one of these clusters
    /// ([`auto_passthrough::forward`]); other connections are closed and logged.
    AutoPassthrough(BTreeSet<String>),
}

/// Everything the proxy serves, built from one plan. Connections read it
/// through a `watch` channel, so a reload swaps one pointer.
#[derive(Debug)]
pub struct Served {
    pub shared: Arc<Shared>,
    /// By listener id.
    pub ports: HashMap<u32, Arc<PortService>>,
}

/// Settings the plan does not carry.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub trusted_proxies: u32,
    pub access_log: access_log::Format,
}

impl Served {
    /// Builds what every listener of `plan` serves, loading certificates.
    pub fn new(plan: &Plan, options: Options) -> Result<Self, ProxyError> {
        let shared = Arc::new(Shared {
            upstreams: upstream::Upstreams::new(&plan.clusters),
            access_log: access_log::AccessLog::new(options.access_log),
            trusted_proxies: options.trusted_proxies,
        });
        let mut ports = HashMap::new();
        for listener in &plan.http {
            let hosts = Arc::new(VirtualHosts::new(listener.hosts.clone())?);
            ports.insert(listener.listener_id, Arc::new(PortService::Http(hosts)));
        }
        for listener in &plan.tls {
            let mut entries = Vec::new();
            for server in &listener.servers {
                let config = |tls| {
                    tls::server_config(tls).map_err(|source| ProxyError::Tls {
                        server: server.source.clone(),
                        source,
                    })
                };
                let action = match &server.kind {
                    TlsServerKind::TerminateHttp { tls, hosts } => TlsAction::TerminateHttp {
                        config: config(tls)?,
                        hosts: Arc::new(VirtualHosts::new(hosts.clone())?),
                    },
                    TlsServerKind::TerminateTcp { tls, route } => TlsAction::TerminateTcp {
                        config: config(tls)?,
                        forward: route.as_ref().map(|(forward, _)| forward.clone()),
                    },
                    TlsServerKind::Passthrough { routes } => TlsAction::Passthrough(routes.clone()),
                    TlsServerKind::AutoPassthrough { clusters } => {
                        TlsAction::AutoPassthrough(clusters.clone())
                    }
                };
                let hosts = match &action {
                    TlsAction::AutoPassthrough(clusters) => {
                        auto_passthrough::server_names(&server.hosts, clusters)
                    }
                    _ => server.hosts.clone(),
                };
                entries.push(TlsEntry {
                    source: server.source.clone(),
                    hosts,
                    action,
                });
            }
            let plaintext = match &listener.plaintext {
                Some(hosts) => Some(Arc::new(VirtualHosts::new(hosts.clone())?)),
                None => None,
            };
            ports.insert(
                listener.listener_id,
                Arc::new(PortService::Tls {
                    servers: entries,
                    plaintext,
                }),
            );
        }
        for listener in &plan.tcp {
            ports.insert(
                listener.listener_id,
                Arc::new(PortService::Tcp(listener.route.clone())),
            );
        }
        Ok(Served { shared, ports })
    }
}
